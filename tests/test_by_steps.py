"""Training by steps (issue 16): ``train.max_steps`` instead of ``train.epochs``, validation
every ``train.val_every`` steps, the schedules' horizon, and the resume rules that go with them.
(Bit-exact resume of such runs: tests/test_resume_steps.py.)"""

from __future__ import annotations

import json
import math

import pytest

from cnncli import checkpoint
from cnncli import config as C
from cnncli.assemble import make_schedule
from cnncli.errors import ConfigError
from test_config import GOOD, problems


def test_max_steps_and_epochs_are_mutually_exclusive(write_config):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD + "  epochs: 3\n  max_steps: 100\n"))
    assert problems(e.value) == [("train.epochs", 11)]
    assert "not both" in str(e.value) and "Remove one" in str(e.value)
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD + "  epochs: null\n"))
    assert problems(e.value) == [("train.epochs", 11)] and "max_steps: 10000" in str(e.value)
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD + "  max_steps: 0\n  val_every: -5\n"))
    assert [p for p, _ in problems(e.value)] == ["train.max_steps", "train.val_every"]


def test_max_steps_drops_the_default_epochs_and_the_resolved_config_validates_again(write_config):
    cfg = C.load(write_config(GOOD + "  max_steps: 10000\n  val_every: 500\n"))
    assert (cfg.train.epochs, cfg.train.max_steps, cfg.train.val_every) == (None, 10000, 500)
    again = C.from_dict(cfg.to_dict())
    assert again.train == cfg.train
    assert C.load(write_config(GOOD)).train.epochs == 10          # without max_steps the default stays
    # `--set train.epochs=null` is how a config counted in epochs is switched to steps
    switched = C.load(write_config(GOOD + "  epochs: 4\n"), ["train.epochs=null", "train.max_steps=50"])
    assert (switched.train.epochs, switched.train.max_steps) == (None, 50)


@pytest.mark.parametrize("n_train, batch, max_steps, epochs", [(600, 64, 21, 3), (600, 64, 20, 2), (60000, 64, 10000, 11)])
def test_schedules_span_max_steps(write_config, n_train, batch, max_steps, epochs):
    """600 images at 64: 10 steps per epoch (the last of 24). OneCycle's horizon is max_steps: its
    lr is max_lr / div_factor / final_div_factor at step max_steps - 1 (torch's last step); a
    cosine over epochs spans ceil(max_steps / steps per epoch) epochs."""
    text = GOOD + f"  max_steps: {max_steps}\n  batch_size: {batch}\n  schedule: {{type: onecycle, max_lr: 0.1}}\n"
    one = make_schedule(C.load(write_config(text)), 1e-3, n_train)
    assert one.total_steps == max_steps and one.epochs == epochs == math.ceil(max_steps / one.steps_per_epoch)
    assert one.lr(0, max_steps - 1) == pytest.approx(0.1 / 25 / 1e4)
    assert one.lr(0, 0) == pytest.approx(0.1 / 25)
    cos = make_schedule(C.load(write_config(text.replace("{type: onecycle, max_lr: 0.1}", "cosine"))), 1.0, n_train)
    assert cos.epochs == epochs and cos.lr(epochs, 0) == pytest.approx(0.0, abs=1e-12)


def run(write_config, mnist_slice, tmp_path, train, *args):
    from typer.testing import CliRunner
    from cnncli.cli import app

    cfg = write_config(f"""data: {{path: {mnist_slice}, val_split: 100}}
model:
  layers: [{{avgpool2d: {{kernel_size: 4}}}}, flatten, {{linear: {{out_features: 10}}}}]
train:
  batch_size: 50
  optimizer: {{type: sgd, lr: 0.1}}
{train}""", "s.yaml")
    r = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r"), *args])
    return r, tmp_path / "r"


def test_val_every_writes_one_line_per_validation_with_step_and_epoch(write_config, mnist_slice, tmp_path):
    """500 training images at 50: 10 steps per epoch; 25 steps, validated at 7, 14, 21 and 25."""
    r, folder = run(write_config, mnist_slice, tmp_path, "  max_steps: 25\n  val_every: 7\n")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [(x["epoch"], x["step"]) for x in rows] == [(1, 7), (2, 14), (3, 21), (3, 25)]
    assert "step 14/25 (epoch 2)" in r.output and "3 epochs of 10 batches (25 steps in all)" in r.output
    last = checkpoint.load(folder / "last.npz").meta
    assert (last["step"], last["epoch"], last["position"]["batch"]) == (25, 2, 5)
    best = checkpoint.load(folder / "best.npz").meta
    assert best["step"] == best["best"]["best_step"] == max(rows, key=lambda x: x["val_accuracy"])["step"]
    assert f"best epoch: {best['best']['best_epoch']}, step {best['best']['best_step']}" in r.output
    assert any(line.split() == ["step", "7", "step", "25"] for line in r.output.splitlines())    # the plots' x axis
    timing = [json.loads(x) for x in (folder / "timing.jsonl").read_text().splitlines()]
    assert [t["step"] for t in timing] == [7, 14, 21, 25]
    # finished: nothing left to do, and the fix names max_steps
    from typer.testing import CliRunner
    from cnncli.cli import app
    r2 = CliRunner().invoke(app, ["train", str(folder / "config.yaml"), "--resume", str(folder / "last.npz")])
    assert r2.exit_code == 2 and "train.max_steps is 25: nothing left to do" in " ".join(r2.output.split())


def test_max_steps_without_val_every_validates_per_epoch_and_after_the_last_step(write_config, mnist_slice,
                                                                                  tmp_path):
    r, folder = run(write_config, mnist_slice, tmp_path, "  max_steps: 15\n")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [(x["epoch"], x["step"]) for x in rows] == [(1, 10), (2, 15)]


def test_a_layer_option_at_its_default_is_no_model_change_on_resume(write_config, mnist_slice, tmp_path):
    """``trainable: true`` / ``lr_mult: 1`` written out equal the defaults (rundir._layer_signature)."""
    from cnncli.rundir import check_resume

    r, folder = run(write_config, mnist_slice, tmp_path, "  epochs: 1\n")
    assert r.exit_code == 0, r.output
    ck = checkpoint.load(folder / "last.npz")
    at = "model.layers[2].linear"
    same = C.load(folder / "config.yaml", ["train.epochs=2", f"{at}.trainable=true", f"{at}.lr_mult=1"])
    assert same.to_dict()["model"]["layers"][2]["linear"]["trainable"] is True
    assert check_resume(same, ck) == 1
    from cnncli.errors import CheckpointError
    with pytest.raises(CheckpointError, match="differs from the config's: model.layers.2."):
        check_resume(C.load(folder / "config.yaml", ["train.epochs=2", f"{at}.trainable=false"]), ck)


def test_validation_windows_of_one_epoch_equal_the_per_epoch_lines(write_config, mnist_slice, tmp_path):
    """500 images at 50 are 10 steps per epoch: validating every 10 steps, each window is an
    epoch, so the lines equal those of the same run counted in epochs (the training means are
    taken over the window since the previous validation, not over the run)."""
    by_epochs, a = run(write_config, mnist_slice, tmp_path / "a", "  epochs: 3\n")
    by_steps, b = run(write_config, mnist_slice, tmp_path / "b", "  max_steps: 30\n  val_every: 10\n")
    assert by_epochs.exit_code == 0 and by_steps.exit_code == 0, by_steps.output
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    rows = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    assert [(x["epoch"], x["step"]) for x in rows] == [(1, 10), (2, 20), (3, 30)]
    assert len({x["train_loss"] for x in rows}) == 3


def test_a_run_ended_at_an_epochs_last_step_is_finished_and_branches_carry_the_best(write_config, mnist_slice,
                                                                                      tmp_path):
    from typer.testing import CliRunner
    from cnncli.cli import app

    # best.npz by the largest validation loss: the first validation's (step 6) stays best
    r, folder = run(write_config, mnist_slice, tmp_path,
                    "  epochs: 2\n  val_every: 6\n  checkpoint: {monitor: val_loss, mode: max}\n")    # 6, 12, 18, 20
    assert r.exit_code == 0, r.output
    last = checkpoint.load(folder / "last.npz").meta
    assert (last["epoch"], last["step"], "position" in last) == (2, 20, False)
    again = CliRunner().invoke(app, ["train", str(folder / "config.yaml"), "--resume", str(folder / "last.npz")])
    assert again.exit_code == 2 and "nothing left to do" in again.output, again.output
    # a branch into a new folder carries the lines and the best checkpoint over
    best = checkpoint.load(folder / "best.npz").meta
    new = tmp_path / "branch"
    b = CliRunner().invoke(app, ["train", str(folder / "config.yaml"), "--resume", str(folder / "last.npz"),
                                 "--out", str(new), "--set", "train.epochs=3"])
    assert b.exit_code == 0, b.output
    rows = (folder / "metrics.jsonl").read_text().splitlines()
    assert (new / "metrics.jsonl").read_text().splitlines()[:4] == rows
    assert [json.loads(x)["step"] for x in (new / "metrics.jsonl").read_text().splitlines()] == [6, 12, 18, 20, 24,
                                                                                               30]
    kept = checkpoint.load(new / "best.npz").meta
    assert best["step"] == best["best"]["best_step"] == 6
    assert (new / "best.npz").read_bytes() == (folder / "best.npz").read_bytes()     # still the best


def test_json_reports_each_validation_and_the_best_step(write_config, mnist_slice, tmp_path):
    r, folder = run(write_config, mnist_slice, tmp_path, "  max_steps: 12\n  val_every: 4\n", "--json")
    assert r.exit_code == 0, r.output
    events = [json.loads(x) for x in r.output.strip().splitlines()]
    assert [(e["event"], e.get("step")) for e in events] == [("validation", 4), ("validation", 8),
                                                             ("validation", 12), ("end", None)]
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    best = max(lines, key=lambda x: x["val_accuracy"])       # first of equals, as the tracker keeps it
    assert (events[-1]["best_step"], events[-1]["best_epoch"]) == (best["step"], best["epoch"])


def test_step_schedules_and_their_warmup_span_max_steps():
    """A schedule counting steps ends at ``max_steps`` (not at the epochs' steps), after its
    warmup: poly with power 1 is the closed form base (1 - t / T), T = max_steps - warmup."""
    from cnncli.schedules import make_schedule

    poly = make_schedule("poly", {"power": 1.0, "warmup_steps": 5}, 1.0, None, 10, max_steps=25)
    assert poly.total_steps == 25 and poly.length == 20 and poly.epochs == 3
    assert poly.lr(0, 0) == pytest.approx(1.0 / 6)            # warmup: start (k + 1) / (W + 1)
    assert poly.lr(0, 5) == 1.0 and poly.lr(2, 24) == pytest.approx(1 - 19 / 20)
    one = make_schedule("onecycle", {"max_lr": 0.1, "warmup_steps": 5}, 0.1, None, 10, max_steps=25)
    assert one.lr(2, 24) == pytest.approx(one.min_lr)           # the cycle's last step is the run's
