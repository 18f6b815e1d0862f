"""Messages name where a problem came from: a --set or a flag (not a file line), the file that failed."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli.cli import app

runner = CliRunner()

CFG = """\
data: {{path: {data}}}
model:
  layers: [flatten, {{linear: {{out_features: 10}}}}]
train:
  epochs: 1
  batch_size: 32
"""


def error(result):
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


def test_a_key_created_by_set_is_reported_as_set_not_at_a_file_line(write_config, mnist_slice):
    cfg = write_config(CFG.format(data=mnist_slice))
    out = error(runner.invoke(app, ["train", str(cfg), "--set", "train.optimizr.lr=0.1"]))
    assert "train.optimizr: unknown key" in out and "(set by --set)" in out
    assert not re.search(r"config\.yaml:\d", out), out


def test_a_flag_is_named_as_the_flag(write_config, mnist_slice):
    cfg = write_config(CFG.format(data=mnist_slice))
    out = error(runner.invoke(app, ["train", str(cfg), "--lr", "0"]))
    assert "train.optimizer.lr: must be > 0" in out and "(set by --lr)" in out and "--set" not in out, out
    assert not re.search(r"config\.yaml:\d", out), out
    # --lr on a config without an optimizer sets the default optimizer's lr
    ok = runner.invoke(app, ["summary", str(cfg), "--set", "train.optimizer.lr=0.2"])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("name, text, needle", [
    ("mnist.yaml", "data: {path: x}\n", "not a dataset file"),
    ("x.npz", "a b c\n1 2 3\n", "named .npz but not an NPZ archive"),
    ("notes.md", "1,2,3\n", "not a dataset file"),
])
def test_data_info_detects_by_extension_first(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    out = error(runner.invoke(app, ["data", "info", str(path)]))
    assert needle in out and str(path) in out and "CSV" not in out.split("A dataset is")[0], out


def test_predict_names_the_file_that_failed(write_config, mnist_slice, tmp_path):
    cfg = write_config(CFG.format(data=mnist_slice))
    assert runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r"), "-q"]).exit_code == 0
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.zeros((28, 28), np.uint8))
    np.save(bad, np.zeros((5, 5), np.uint8))
    out = error(runner.invoke(app, ["predict", str(tmp_path / "r" / "best.npz"), str(good), str(bad)]))
    assert out.startswith(f"error: {bad}:") or f"{bad}:" in out, out
