"""``data.validate_on: test`` validates on the test split each epoch (Keras ``validation_data``)
and "best" tracks it; an explicit ``val_split`` beside it is refused."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cnncli import checkpoint
from cnncli.cli import app
from cnncli.evaluation import evaluate_checkpoint

runner = CliRunner()

CONFIG = """\
data: {{path: {data}, mean: 0.1307, std: 0.3081, validate_on: test{extra}}}
model:
  layers:
    - conv2d: {{out_channels: 4, kernel_size: 3}}
    - relu
    - maxpool2d: {{kernel_size: 2}}
    - flatten
    - linear: {{out_features: 10}}
train: {{epochs: 2, batch_size: 50, optimizer: {{type: sgd, lr: 0.05}}}}
"""


def test_validation_on_the_test_split_each_epoch(write_config, mnist_slice, tmp_path):
    cfg = write_config(CONFIG.format(data=mnist_slice, extra=""))
    r = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    ck = checkpoint.load(tmp_path / "r" / "last.npz")
    assert ck.config["data"]["val_split"] == 0 and ck.config["train"]["checkpoint"]["monitor"] == "val_accuracy"
    # the epoch's val_* are the test split's, as `cnncli eval` measures it
    test = evaluate_checkpoint(tmp_path / "r" / "last.npz")[0]
    assert rows[-1]["val_accuracy"] == test.accuracy and rows[-1]["val_loss"] == test.loss
    best = max(rows, key=lambda row: row["val_accuracy"])["epoch"]
    assert checkpoint.load(tmp_path / "r" / "best.npz").meta["epoch"] == best


def test_an_explicit_val_split_beside_it_is_refused(write_config, mnist_slice):
    cfg = write_config(CONFIG.format(data=mnist_slice, extra=", val_split: 0.1"))
    r = runner.invoke(app, ["train", str(cfg)])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "data.val_split: is 0.1 but data.validate_on is test" in said
