"""Resuming never destroys work: not in a folder that is not the run's, not by rewinding a run
past later checkpoints; --out NEWDIR branches instead. Also the optimizer-state checks on resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli import checkpoint
from cnncli.cli import app

from test_resume import make_config

runner = CliRunner()


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def train(*args):
    return runner.invoke(app, ["train", *map(str, args)])


def refused(*args):
    r = train(*args)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    return " ".join(r.output.split())


@pytest.fixture
def run4(write_config, mnist_slice, tmp_path):
    """A finished 4-epoch run with epoch_2.npz and epoch_4.npz, best.npz by the worst val loss (epoch 1)."""
    cfg = make_config(write_config, mnist_slice, epochs=4, setup="sgd-onecycle-every",
                      extra="  checkpoint: {every: 2, monitor: val_loss, mode: max}\n")
    r = train(cfg, "--out", tmp_path / "r3", "-q")
    assert r.exit_code == 0, r.output
    return cfg, tmp_path / "r3"


def test_resume_from_a_copied_checkpoint_never_touches_the_users_folder(run4, tmp_path):
    cfg, run = run4
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.yaml").write_text(cfg.read_text())
    (proj / "metrics.jsonl").write_text('{"mine": 1}\n')
    (proj / "best.npz").write_bytes(b"user's own file")
    shutil.copyfile(run / "last.npz", proj / "model.npz")
    before = digest(proj)
    out = refused(proj / "config.yaml", "--resume", proj / "model.npz", "--epochs", "6")
    assert "is not this checkpoint's run folder" in out and "--out NEWDIR" in out
    assert digest(proj) == before
    # with a last.npz of the run copied in but the user's config.yaml: still refused
    shutil.copyfile(run / "last.npz", proj / "last.npz")
    before = digest(proj)
    out = refused(proj / "config.yaml", "--resume", proj / "last.npz", "--epochs", "6")
    assert "is not the config of this checkpoint's run" in out and digest(proj) == before
    # --out branches into a new folder and leaves proj/ alone
    ok = train(proj / "config.yaml", "--resume", proj / "model.npz", "--epochs", "5", "--out", tmp_path / "b", "-q")
    assert ok.exit_code == 0, ok.output
    assert digest(proj) == before
    assert checkpoint.load(tmp_path / "b" / "last.npz").meta["epoch"] == 5


def test_resume_from_an_earlier_checkpoint_refuses_to_rewind_and_branches_with_out(run4, tmp_path):
    cfg, run = run4
    before = digest(run)
    for name in ("epoch_2.npz", "best.npz"):
        out = refused(cfg, "--resume", run / name, "--epochs", "6")
        assert "rewind" in out and f"Resume from {run / 'last.npz'}" in out and "--out NEWDIR" in out, out
    assert digest(run) == before
    assert "drop --overwrite" in refused(cfg, "--resume", run / "epoch_2.npz", "--out", tmp_path / "x", "--overwrite")
    # the branch: epochs 3..4 again from epoch 2, in a new folder, with the earlier metrics carried over
    branch = tmp_path / "from2"
    ok = train(cfg, "--resume", run / "epoch_2.npz", "--out", branch, "-q")
    assert ok.exit_code == 0, ok.output
    assert digest(run) == before
    assert (branch / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()   # same seed: same run
    for name in ("last.npz", "best.npz"):
        a, b = checkpoint.load(run / name), checkpoint.load(branch / name)
        assert a.meta["epoch"] == b.meta["epoch"]
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    # the branch is a run of its own: it resumes in place, and records its own folder
    assert checkpoint.load(branch / "last.npz").meta["run_id"] != checkpoint.load(run / "last.npz").meta["run_id"]
    more = train(cfg, "--resume", branch / "last.npz", "--epochs", "5", "-q")
    assert more.exit_code == 0, more.output
    assert checkpoint.load(branch / "last.npz").config["output"]["dir"] == str(branch)


def test_resumed_run_records_its_folder_and_drops_a_stale_interrupted_checkpoint(write_config, mnist_slice, tmp_path):
    from test_resume import run_fit
    from cnncli import training

    cfg = make_config(write_config, mnist_slice, epochs=3, extra="output: {dir: somewhere/else}\n")
    run = tmp_path / "r"
    with pytest.raises(training.TrainingInterrupted):
        run_fit(cfg, run, stop_after=1)
    assert (run / "interrupted.npz").is_file()
    r = train(cfg, "--resume", run / "last.npz", "--epochs", "2", "-q")
    assert r.exit_code == 0, r.output
    assert not (run / "interrupted.npz").exists()
    import yaml
    assert yaml.safe_load((run / "config.yaml").read_text())["output"]["dir"] == str(run)


@pytest.mark.parametrize("setup, change, missing", [
    ("rmsprop-plateau-early-stop", "train.optimizer.centered=true", "grad_avg"),
    ("rmsprop-plateau-early-stop", "train.optimizer.momentum=0.9", "momentum_buffer"),
    ("sgd-onecycle-every", "train.optimizer.momentum=0.9", "momentum_buffer"),
    ("adamw-cosine-warmup", None, "exp_avg_sq"),
])
def test_resume_with_optimizer_state_it_never_kept_exits_2(write_config, mnist_slice, tmp_path, setup, change, missing):
    over = {"rmsprop-plateau-early-stop": {"optimizer": "{type: rmsprop, lr: 0.005}", "extra": ""},
            "sgd-onecycle-every": {"optimizer": "{type: sgd, lr: 0.05}"},
            "adamw-cosine-warmup": {"schedule": "{type: step, step_size: 1}"}}[setup]
    cfg = make_config(write_config, mnist_slice, epochs=2, setup=setup, **over)
    run = tmp_path / "r"
    assert train(cfg, "--out", run, "--epochs", "1", "-q").exit_code == 0
    args = ["--set", change] if change else []
    if change is None:   # a damaged checkpoint: one optim/ array removed
        ck = dict(np.load(run / "last.npz"))
        del ck[next(k for k in ck if k.endswith("/exp_avg_sq"))]
        np.savez(run / "last.npz", **ck)
    out = refused(cfg, "--resume", run / "last.npz", *args)
    assert f"no optimizer state '{missing}'" in out and "Keep the run's train.optimizer" in out, out


@pytest.mark.parametrize("schedule, where, hint", [
    ("{type: cosine, eta_min: 0.1}", "train.schedule.eta_min", "above train.optimizer.lr 0.01"),
])
def test_cosine_limits_are_config_errors(write_config, mnist_slice, tmp_path, schedule, where, hint):
    cfg = make_config(write_config, mnist_slice, epochs=3, schedule=schedule)
    out = refused(cfg, "--out", tmp_path / "r")
    assert f"c.yaml:" in out and f" {where}: " in out and hint in out, out
    assert not (tmp_path / "r").exists()


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_every_shipped_config_is_trained_below():
    """The parametrized test below would pass vacuously if no config were found."""
    assert {p.stem for p in SHIPPED} >= {"mnist", "lenet5", "tiny", "fashion-mnist", "caffe-lenet"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_train_one_epoch(path, mnist_slice, tmp_path):
    """Each shipped config trains one epoch as the README suggests for a first look
    (``--epochs 1``, in batches of 32; a config counted in steps, ``train.max_steps``: 8 steps,
    validated once),
    on a small real slice in its place: a run folder with one metrics line, a last checkpoint
    and a test accuracy above chance (10 classes: 10 %)."""
    run = tmp_path / "run"
    by_steps = "max_steps:" in path.read_text()
    # by epochs in batches of 32: the 400 training images give 13 steps, where batches of 128
    # gave configs/mnist.yaml (then mnist-deep.yaml) 4 steps, too few for its 7 batchnorm layers to learn
    length = (["--set", "train.max_steps=8", "--set", "train.val_every=8"] if by_steps
              else ["--epochs", "1", "--set", "train.batch_size=32"])
    if "validate_on: test" not in path.read_text():
        length += ["--set", "data.val_split=100"]
    r = runner.invoke(app, ["train", str(path), *length, "--out", str(run), "--json",
                            "--set", f"data.path={mnist_slice}"])
    assert r.exit_code == 0, r.output
    end = json.loads(r.output.strip().splitlines()[-1])
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["epoch"] for row in rows] == [1] and (rows[0]["step"] == 8 or not by_steps), rows
    assert checkpoint.load(run / "last.npz").meta["step"] == rows[0]["step"]
    assert end["event"] == "end" and end["test"]["n"] == 200 and end["test"]["accuracy"] > 0.2, end
