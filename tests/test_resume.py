"""Exact resume, reproducibility, callbacks, divergence and config validation of the training
features (schedules, clipping, augmentation, early stopping, checkpoints) on the MNIST slice."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli import checkpoint, training
from cnncli.assemble import build_model
from cnncli.data import prepare_data
from cnncli.rundir import resume_changes
from cnncli import config as C
from cnncli.cli import app

runner = CliRunner()

# dropout + batchnorm + augmentation + a schedule + clipping: every source of state a resume must restore
BASE = """\
data:
  path: {data}
  val_split: 100
  mean: 0.1307
  std: 0.3081
  augment: {augment}
model:
  layers:
    - avgpool2d: {{kernel_size: 4}}
    - conv2d: {{out_channels: 4, kernel_size: 3, padding: 1}}
    - batchnorm
    - relu
    - dropout: {{p: 0.25}}
    - flatten
    - linear: {{out_features: 10}}
train:
  epochs: {epochs}
  batch_size: 64
  seed: 5
  grad_clip_norm: 1.0
  optimizer: {optimizer}
  schedule: {schedule}
{extra}"""

SETUPS = {
    # best.npz by the *largest* validation loss: an early epoch stays best, so the resumed run must
    # remember the best value rather than start over
    "adamw-cosine-warmup": {"optimizer": "{type: adamw, lr: 0.01, exclude_bias_and_norm: true}",
                            "schedule": "{type: cosine, warmup_epochs: 1, eta_min: 0.0001}",
                            "extra": "  checkpoint: {monitor: val_loss, mode: max}\n"},
    "sgd-onecycle-every": {"optimizer": "{type: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0005}",
                           "schedule": "{type: onecycle, max_lr: 0.2}", "extra": "  checkpoint: {every: 2}\n"},
    "rmsprop-plateau-early-stop": {
        "optimizer": "{type: rmsprop, lr: 0.005, momentum: 0.5, centered: true}",
        # mode max on a falling loss: lr halves after every epoch, so the resumed run needs the schedule state
        "schedule": "{type: reduce_on_plateau, monitor: val_loss, mode: max, patience: 0, factor: 0.5}",
        # min_delta 10 never counts as improvement after epoch 1: the run stops at epoch 1 + patience
        "extra": "  early_stopping: {monitor: val_loss, patience: 3, min_delta: 10}\n"},
    # the optimizers and schedules of issue 16, with rotation, scaling and random erasing on
    "nadam-inv-warmup-rotate": {"optimizer": "{type: nadam, lr: 0.005}",
                                "schedule": "{type: inv, gamma: 0.01, power: 0.75, warmup_steps: 5}",
                                "augment": "{translate: 1, rotate: 12, zoom: 0.1, erase: 0.5}"},
    "adadelta-poly": {"optimizer": "{type: adadelta, lr: 1.0, rho: 0.95, eps: 1.0e-7}",
                      "schedule": "{type: poly, power: 0.9, interval: epoch}"},
}


def make_config(write_config, data, name="c.yaml", epochs=5, setup="adamw-cosine-warmup", **over):
    opts = {"augment": "{translate: 2, hflip: true}", "extra": "", **SETUPS[setup], **over}
    return write_config(BASE.format(data=data, epochs=epochs, **opts), name)


def run_fit(cfg_path, run_dir, stop_after=None, resume=None, overrides=()):
    """Train through the library; ``stop_after=k`` raises KeyboardInterrupt once epoch k has ended
    (what Ctrl-C then does), so the run stops exactly after epoch k."""
    cfg = C.load(cfg_path, list(overrides))
    data = prepare_data(cfg)
    model = build_model(cfg, data.train.image_shape, num_classes=data.num_classes)
    run_dir.mkdir(parents=True, exist_ok=True)
    events = []

    def on_event(e):
        events.append(e)
        if stop_after is not None and isinstance(e, training.EpochEnded) and e.epoch == stop_after:
            raise KeyboardInterrupt

    ck = checkpoint.load(resume) if resume is not None else None
    return training.fit(cfg, model, data, run_dir, on_event, resume=ck), events


def assert_same_state(a, b):
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    for kind in ("params", "buffers", "optim"):
        x, y = getattr(ca, kind), getattr(cb, kind)
        assert x.keys() == y.keys() and x, kind
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), f"{kind} {k} differs"
    for key in ("epoch", "step", "rng", "optimizer", "schedule", "best", "early_stopping", "metrics"):
        assert ca.meta[key] == cb.meta[key], key


@pytest.mark.parametrize("setup", list(SETUPS))
def test_stopped_after_epoch_k_and_resumed_is_bit_identical(write_config, mnist_slice, tmp_path, setup):
    cfg = make_config(write_config, mnist_slice, epochs=5, setup=setup)
    full, _ = run_fit(cfg, tmp_path / "full")
    with pytest.raises(training.TrainingInterrupted) as info:
        run_fit(cfg, tmp_path / "split", stop_after=2)
    assert info.value.resume_from == tmp_path / "split" / "last.npz"
    assert checkpoint.load(tmp_path / "split" / "last.npz").meta["epoch"] == 2
    resumed, events = run_fit(cfg, tmp_path / "split", resume=tmp_path / "split" / "last.npz")
    assert events[0].start_epoch == 2
    assert next(e.epoch for e in events if isinstance(e, training.EpochEnded)) == 3
    assert_same_state(tmp_path / "full" / "last.npz", tmp_path / "split" / "last.npz")
    assert_same_state(tmp_path / "full" / "best.npz", tmp_path / "split" / "best.npz")
    assert (tmp_path / "full" / "metrics.jsonl").read_bytes() == (tmp_path / "split" / "metrics.jsonl").read_bytes()
    assert resumed.best_epoch == full.best_epoch and resumed.stopped_early == full.stopped_early
    assert resumed.test.accuracy == full.test.accuracy
    if setup == "rmsprop-plateau-early-stop":
        assert full.stopped_early and "has not improved for 3 epoch(s)" in full.stopped_early
        assert len((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()) == 4
    if setup == "sgd-onecycle-every":
        assert sorted(p.name for p in (tmp_path / "full").glob("epoch_*.npz")) == ["epoch_2.npz", "epoch_4.npz"]


def test_same_seed_same_files_and_lr_follows_the_schedule(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=3, setup="sgd-onecycle-every")
    run_fit(cfg, tmp_path / "a")
    _, events = run_fit(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert {"seconds", "images_per_s", "train_seconds"}.isdisjoint(rows[0])
    timing = [json.loads(line) for line in (tmp_path / "a" / "timing.jsonl").read_text().splitlines()]
    assert [t["epoch"] for t in timing] == [1, 2, 3] and all(t["seconds"] >= 0 for t in timing)
    # batch events carry the lr of each step: onecycle rises to max_lr then anneals
    lrs = [e.lr for e in events if isinstance(e, training.BatchEnded)]
    assert len(set(lrs)) == len(lrs) and max(lrs) == pytest.approx(0.2, rel=0.05)
    assert lrs[0] == pytest.approx(0.2 / 25, rel=0.05) and lrs[-1] < lrs[0]
    assert rows[-1]["lr"] == lrs[-1]
    # a different seed changes the numbers
    run_fit(cfg, tmp_path / "c", overrides=["train.seed=6"])
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() != (tmp_path / "c" / "metrics.jsonl").read_bytes()


def test_cli_resume_raises_the_epoch_total_and_refuses_what_it_cannot_continue(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=3, setup="adamw-cosine-warmup",
                      schedule="{type: step, step_size: 1, gamma: 0.5}")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(straight), "-q"]).exit_code == 0
    first = runner.invoke(app, ["train", str(cfg), "--out", str(split), "--epochs", "2", "-q"])
    assert first.exit_code == 0, first.output
    result = runner.invoke(app, ["train", str(cfg), "--resume", str(split / "last.npz")])
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 2 of 3" in result.output and "epoch 3/3" in result.output
    assert "epoch 1/3" not in result.output
    changed = " ".join(result.output.split())
    assert "differ from the checkpoint's run" in changed and "train.epochs: 2 -> 3" in changed
    assert "data." not in changed.split("differ from the checkpoint's run")[1].split("epoch 3/3")[0]
    assert_same_state(straight / "last.npz", split / "last.npz")
    assert (straight / "metrics.jsonl").read_bytes() == (split / "metrics.jsonl").read_bytes()
    assert not (tmp_path / "split-2").exists()

    def refused(*args):
        r = runner.invoke(app, ["train", str(cfg), *args])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        return r.output

    assert "nothing left to do" in refused("--resume", str(split / "last.npz"))
    out = refused("--resume", str(split / "last.npz"), "--epochs", "4",
                  "--set", "model.layers[1].conv2d.out_channels=5")
    assert "differs from the config's: model.layers[1]" in out
    assert "drop --overwrite" in refused("--resume", str(split / "last.npz"), "--out", str(tmp_path / "x"),
                                         "--overwrite")
    assert "not found" in refused("--resume", str(tmp_path / "nope.npz"))


def test_an_early_stopped_run_has_nothing_left_to_resume(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=6, setup="rmsprop-plateau-early-stop")
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "early stopping: val_loss has not improved for 3 epoch(s)" in result.output
    again = runner.invoke(app, ["train", str(cfg), "--resume", str(tmp_path / "r" / "last.npz")])
    assert again.exit_code == 2 and "early stopping ended this run" in again.output
    more = runner.invoke(app, ["train", str(cfg), "--resume", str(tmp_path / "r" / "last.npz"), "-q",
                               "--set", "train.early_stopping.patience=4"])
    assert more.exit_code == 0, more.output
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 5


def test_interrupted_checkpoint_resumes_the_run(write_config, mnist_slice, tmp_path):
    """(Issue 16: interrupted.npz was refused; it now continues the run exactly, see
    tests/test_resume_steps.py for mid-epoch states; the refusal of a partial one is tested there.)"""
    cfg = make_config(write_config, mnist_slice, epochs=4)
    with pytest.raises(training.TrainingInterrupted) as info:
        run_fit(cfg, tmp_path / "r", stop_after=1)
    assert info.value.resume_from == tmp_path / "r" / "last.npz"     # nothing trained since its commit
    r = runner.invoke(app, ["train", str(cfg), "--resume", str(tmp_path / "r" / "interrupted.npz"), "-q"])
    assert r.exit_code == 0, r.output
    run_fit(cfg, tmp_path / "full")
    assert (tmp_path / "r" / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()
    assert_same_state(tmp_path / "full" / "last.npz", tmp_path / "r" / "last.npz")
    assert not (tmp_path / "r" / "interrupted.npz").exists()


def test_best_checkpoint_follows_the_monitor(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=3,
                      extra="  checkpoint: {monitor: val_loss, mode: max}\n")   # keep the worst loss: epoch 1
    run_fit(cfg, tmp_path / "r")
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    worst = max(rows, key=lambda r: r["val_loss"])["epoch"]
    assert checkpoint.load(tmp_path / "r" / "best.npz").meta["epoch"] == worst


def test_divergence_names_the_step_and_keeps_the_last_good_epoch(write_config, mnist_slice, tmp_path):
    # lr 0.01 in epoch 1, then 0.01 * 1e30: the loss becomes NaN/inf in epoch 2
    cfg = make_config(write_config, mnist_slice, epochs=3, optimizer="{type: sgd, lr: 0.01}",
                      schedule="{type: exponential, gamma: 1.0e+30}", extra="")
    text = cfg.read_text().replace("  grad_clip_norm: 1.0\n", "")
    cfg.write_text(text)
    out = tmp_path / "r"
    result = runner.invoke(app, ["train", str(cfg), "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    msg = " ".join(result.output.split())
    assert re.search(r"epoch 2, step \d+: the loss became (nan|inf)", msg), msg
    assert f"{out / 'last.npz'} keeps epoch 1" in msg
    assert "lower train.optimizer.lr" in msg and "train.grad_clip_norm" in msg
    assert checkpoint.load(out / "last.npz").meta["epoch"] == 1       # intact and loadable
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("set_, where, hint", [
    ("train.schedule=cosin", "train.schedule.type", "Did you mean 'cosine'?"),
    ("train.schedule={type: step, step_sise: 2}", "train.schedule.step_sise", "Did you mean 'step_size'?"),
    ("train.schedule=multistep", "train.schedule", "needs the option 'milestones'"),
    ("train.schedule={type: cosine, warmup_epochs: -1}", "train.schedule.warmup_epochs", "must be >= 0"),
    ("train.schedule={type: onecycle, pct_start: 2}", "train.schedule.pct_start", "must be < 1"),
    ("train.schedule=[1]", "train.schedule", "must be a name"),
    ("data.augment={translat: 2}", "data.augment.translat", "Did you mean 'translate'?"),
    ("data.augment={translate: -1}", "data.augment.translate", "must be >= 0"),
    ("data.augment={hflip: yes please}", "data.augment.hflip", "true or false"),
    ("data.augment=3", "data.augment", "must be a mapping"),
    ("train.early_stopping={patience: 0}", "train.early_stopping.patience", "must be >= 1"),
    ("train.early_stopping={monitor: val_acc}", "train.early_stopping.monitor", "Did you mean 'val_accuracy'?"),
    ("train.early_stopping={mode: maximum}", "train.early_stopping.mode", "one of auto, min, max"),
    ("train.early_stopping={min_delta: -1}", "train.early_stopping.min_delta", "must be >= 0"),
    ("train.checkpoint={every: -2}", "train.checkpoint.every", "must be >= 0"),
    ("train.checkpoint={monitr: val_loss}", "train.checkpoint.monitr", "Did you mean 'monitor'?"),
    ("train.grad_clip_norm=0", "train.grad_clip_norm", "must be > 0"),
    ("train.optimizer={type: rmsprop, centred: true}", "train.optimizer.centred", "Did you mean 'centered'?"),
    ("train.optimizer={type: sgd, exclude_bias_and_norm: 1}", "train.optimizer.exclude_bias_and_norm",
     "true or false"),
])
def test_bad_training_options_exit_2_with_key_path(write_config, mnist_slice, tmp_path, set_, where, hint):
    cfg = make_config(write_config, mnist_slice, epochs=3)
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r"), "--set", set_])
    assert result.exit_code == 2, result.output
    assert f" {where}: " in result.output and hint in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_bad_options_in_the_file_are_located_by_line(write_config, mnist_slice):
    text = make_config(write_config, mnist_slice).read_text().replace(
        "  augment: {translate: 2, hflip: true}", "  augment: {translate: 2, flip: true}")
    result = runner.invoke(app, ["train", str(write_config(text, "bad.yaml"))])
    assert result.exit_code == 2
    assert re.search(r"bad\.yaml:6 data\.augment\.flip: unknown key 'flip'\. Did you mean 'hflip'\?", result.output)


def test_val_monitor_without_validation_split_is_refused(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, setup="sgd-onecycle-every")      # default checkpoint monitor
    result = runner.invoke(app, ["train", str(cfg), "--set", "data.val_split=0",
                                 "--set", "train.early_stopping={monitor: val_loss}"])
    assert result.exit_code == 2 and "train.early_stopping.monitor" in result.output and "train_loss" in result.output
    # the default monitor (val_accuracy) falls back to train_accuracy, and the stored config says so
    ok = runner.invoke(app, ["train", str(cfg), "--set", "data.val_split=0", "--out", str(tmp_path / "r"),
                             "--epochs", "1", "-q"])
    assert ok.exit_code == 0, ok.output
    assert checkpoint.load(tmp_path / "r" / "best.npz").config["train"]["checkpoint"]["monitor"] == "train_accuracy"


def test_translate_larger_than_the_image_is_refused(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice)
    result = runner.invoke(app, ["train", str(cfg), "--set", "data.augment.translate=28", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "data.augment.translate" in result.output and "at most 27" in result.output


def test_resume_command_printed_on_interrupt_is_runnable(write_config, mnist_slice, tmp_path, monkeypatch):
    """The message of a Ctrl-C names the command that continues the run; running it finishes the run."""
    cfg = make_config(write_config, mnist_slice, epochs=3)
    real_fit = training.fit

    def fit_stopping_after_epoch_1(cfg_, model, data, run_dir, on_event, shuffle_rng=None, resume=None):
        def handler(e):
            on_event(e)
            if isinstance(e, training.EpochEnded) and e.epoch == 1:
                raise KeyboardInterrupt
        return real_fit(cfg_, model, data, run_dir, handler, shuffle_rng, resume)

    monkeypatch.setattr(training, "fit", fit_stopping_after_epoch_1)
    out = tmp_path / "r"
    stopped = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--seed", "5"])
    assert stopped.exit_code == 130, stopped.output
    line = next(l for l in stopped.output.splitlines() if l.startswith("resume with: "))
    args = shlex.split(line[len("resume with: "):])
    assert args[:3] == ["cnncli", "train", str(cfg)] and args[-2:] == ["--resume", str(out / "last.npz")]
    assert "train.seed=5" in args and not any(a.startswith("output.dir") for a in args)
    monkeypatch.setattr(training, "fit", real_fit)
    resumed = runner.invoke(app, args[1:] + ["-q"])
    assert resumed.exit_code == 0, resumed.output
    assert [json.loads(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_batchnorm_statistics_that_overflow_stop_the_epoch_with_the_divergence_hint(write_config, mnist_slice,
                                                                                    tmp_path):
    """With sgd at lr 1e4, batchnorm's running variance overflows while the loss (batch
    statistics) stays finite; the run stops at the end of that epoch with the divergence
    message, not a failed checkpoint save that claims a previous checkpoint exists."""
    text = (Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml").read_text()
    cfg = write_config(text.replace("path: data/mnist", f"path: {mnist_slice}"))
    out = tmp_path / "r"
    result = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--epochs", "3",
                                 "--set", "train.optimizer=sgd", "--lr", "1e4"])
    msg = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output, msg
    assert re.search(r"epoch 1: (buffer 2\.running_\w+|parameter [\w.]+) became NaN or infinite", msg) or \
        re.search(r"epoch 1, step \d+: the loss became", msg), msg
    assert "no checkpoint was written" in msg and "lower train.optimizer.lr" in msg
    assert "previous checkpoint is kept" not in msg and not (out / "last.npz").exists()


def test_resume_lists_the_settings_that_differ_from_the_checkpoints_run(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=3, setup="adamw-cosine-warmup",
                      schedule="{type: step, step_size: 1, gamma: 0.5}")
    run_fit(cfg, tmp_path / "r", overrides=["data.train_limit=300", "train.epochs=2"])
    ck = checkpoint.load(tmp_path / "r" / "last.npz")
    assert resume_changes(C.load(cfg, ["data.train_limit=300", "train.epochs=2"]), ck) == []
    changes = resume_changes(C.load(cfg, ["train.optimizer.lr=0.5"]), ck)
    assert changes[:2] == ["data.train_limit: 300 -> null", "train.epochs: 2 -> 3"]
    assert len(changes) == 3 and changes[2].startswith("train.optimizer.lr: ") and changes[2].endswith("-> 0.5")
    # the seed does nothing on resume (the generators come back), and auto normalization is computed
    assert resume_changes(C.load(cfg, ["data.train_limit=300", "train.epochs=2", "train.seed=9",
                                               "data.mean=auto", "data.std=auto"]), ck) == []
    assert resume_changes(C.load(cfg, ["data.train_limit=300", "train.epochs=2", "data.std=0.5"]),
                                   ck)[0].endswith("-> 0.5")
    # a run from before an augmentation key existed: the missing key counts as off
    same = C.load(cfg, ["data.train_limit=300", "train.epochs=2"])
    del ck.config["data"]["augment"]["erase"]
    assert resume_changes(same, ck) == []
    assert resume_changes(C.load(cfg, ["data.train_limit=300", "train.epochs=2", "data.augment.erase=0.5"]),
                          ck) == ["data.augment.erase: 0.0 -> 0.5"]

