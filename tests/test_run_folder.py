"""Run folders that survive any kill, one writer at a time, and truthful start and stop lines
(issue 15): the commit order of an epoch's files, what ``--resume`` mends, the folder lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnncli import checkpoint, training
from cnncli.cli import app
from cnncli.events import EpochEnded
from cnncli.rundir import RunWriter
from test_resume import assert_same_state, make_config, run_fit

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def train(*args):
    return runner.invoke(app, ["train", *map(str, args)])


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def cfg4(write_config, mnist_slice):
    """4 epochs, epoch_k.npz every 2 epochs, best.npz by the largest validation loss."""
    return make_config(write_config, mnist_slice, epochs=4, setup="adamw-cosine-warmup",
                       extra="  checkpoint: {monitor: val_loss, mode: max, every: 2}\n")


@pytest.fixture
def full4(cfg4, tmp_path):
    """The uninterrupted run of ``cfg4``."""
    r = train(cfg4, "--out", tmp_path / "full", "-q")
    assert r.exit_code == 0, r.output
    return tmp_path / "full"


def test_an_epoch_commits_with_last_npz_after_its_lines_and_before_best(tmp_path, monkeypatch, cfg4):
    """The order of an epoch's writes: epoch_k.npz, metrics.jsonl, timing.jsonl, last.npz (the commit
    record), then best.npz. (Before, last.npz came first: a kill then lost the metrics line, or left
    last.npz naming a best epoch that best.npz did not hold.)"""
    from cnncli import rundir, state

    order = []
    real_save, real_rows = state.TrainState.save, rundir.write_rows

    def save(self, path, **extra):
        order.append(path.name)
        real_save(self, path, **extra)

    def write_rows(path, rows):
        order.append(path.name)
        real_rows(path, rows)

    monkeypatch.setattr(state.TrainState, "save", save)
    monkeypatch.setattr(rundir, "write_rows", write_rows)
    r = train(cfg4, "--out", tmp_path / "r", "-q")
    assert r.exit_code == 0, r.output
    commits = [i for i, name in enumerate(order) if name == "last.npz"]
    assert len(commits) == 4 and order.count("best.npz") >= 1, order
    for k, i in enumerate(commits, 1):
        before = ["epoch_2.npz" if k == 2 else "epoch_4.npz"] if k % 2 == 0 else []
        start = commits[k - 2] + 1 if k > 1 else 0
        start += order[start] == "best.npz" if start < len(order) else 0
        assert order[start:i + 1] == [*before, "metrics.jsonl", "timing.jsonl", "last.npz"], order
    assert all(order[j - 1] == "last.npz" for j, name in enumerate(order) if name == "best.npz"), order


def test_resume_mends_what_a_kill_left_half_done(cfg4, full4, tmp_path):
    """A folder as a kill after epoch 3's epoch_4/metrics writes but before its last.npz, and from
    the old order (epoch 2's metrics line missing, best.npz not yet updated), plus a cut
    temporary: --resume ends with the uninterrupted run's files."""
    run = tmp_path / "run"
    r = train(cfg4, "--out", run, "-q", "--epochs", "2")
    assert r.exit_code == 0, r.output
    lines = (full4 / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n" + lines[2] + "\n")   # line 2 lost, line 3 uncommitted
    shutil.copyfile(full4 / "epoch_4.npz", run / "epoch_4.npz")            # an uncommitted epoch's file
    (run / ".last.npz.abcd1234.tmp").write_bytes(b"half")                  # a write cut short
    best_epoch = checkpoint.load(run / "last.npz").meta["best"]["best_epoch"]
    if best_epoch == 2:
        (run / "best.npz").unlink()                                         # killed before best.npz
    r = train(cfg4, "--resume", run / "last.npz")
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "resume repaired the run folder: metrics.jsonl: the line of epoch 2 restored from last.npz" in out
    assert "epoch_4.npz removed (its epoch never committed)" in out
    assert (run / "metrics.jsonl").read_bytes() == (full4 / "metrics.jsonl").read_bytes()
    for name in ("best.npz", "last.npz", "epoch_2.npz", "epoch_4.npz"):
        assert_same_state(full4 / name, run / name)
    assert not list(run.glob(".*.tmp"))


def test_resume_of_a_finished_run_mends_a_best_npz_the_kill_left_behind(write_config, mnist_slice, tmp_path):
    """Killed after the last epoch's last.npz, before its best.npz: nothing is left to train, and
    --resume says so (exit 2) after putting the best state back."""
    cfg = make_config(write_config, mnist_slice, epochs=3, extra="  checkpoint: {monitor: train_loss, every: 1}\n")
    run = tmp_path / "run"
    assert train(cfg, "--out", run, "-q").exit_code == 0
    assert checkpoint.load(run / "last.npz").meta["best"]["best_epoch"] == 3     # the training loss fell each epoch
    shutil.copyfile(run / "epoch_2.npz", run / "best.npz")                      # best.npz as the kill left it
    r = train(cfg, "--resume", run / "last.npz")
    assert r.exit_code == 2, r.output
    out = flat(r.output)
    assert "nothing left to do" in out and "best.npz restored from last.npz (epoch 3)" in out, out
    assert_same_state(run / "epoch_3.npz", run / "best.npz")
    r = train(cfg, "--resume", run / "last.npz")                                 # mended: nothing more to say
    assert r.exit_code == 2 and "mended" not in r.output, r.output


def test_ctrl_c_after_the_last_epoch_says_the_run_is_complete(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=2)
    with pytest.raises(training.TrainingInterrupted) as info:
        run_fit(cfg, tmp_path / "r", stop_after=2)
    e = info.value
    assert e.complete and e.resume_from is None and e.path == tmp_path / "r" / "last.npz"
    assert "the run is complete (2 epochs" in str(e) and "cnncli eval" in str(e)
    assert not (tmp_path / "r" / "interrupted.npz").exists()
    # before the last epoch it is still a resumable stop
    with pytest.raises(training.TrainingInterrupted) as info:
        run_fit(cfg, tmp_path / "s", stop_after=1)
    assert not info.value.complete and info.value.resume_from == tmp_path / "s" / "last.npz"


def test_the_start_line_counts_the_batches_that_run_and_the_image_left_out(write_config, mnist_slice, tmp_path):
    """65 training images at batch 64: one batch runs (a batch of one cannot be batch-normalized);
    it said "2 batches" and never mentioned the image left out."""
    cfg = make_config(write_config, mnist_slice, epochs=1)
    r = train(cfg, "--out", tmp_path / "r", "--set", "data.train_limit=165", "--set", "train.batch_size=64")
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "65 train, 100 validation" in out and "1 epoch of 1 batch" in out, out
    assert "each epoch leaves out 1 training image" in out
    r = train(cfg, "--out", tmp_path / "t", "--set", "data.train_limit=164", "--set", "train.batch_size=64")
    assert r.exit_code == 0 and "64 train" in r.output, r.output
    assert "1 epoch of 1 batch" in flat(r.output) and "leaves out" not in r.output


HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(60)
""")


def hold_lock(folder: Path) -> subprocess.Popen:
    """A process that holds the run folder's lock (as a run still training does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_run_folder_is_never_written_by_a_second_process(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=1)
    run = tmp_path / "run"
    assert train(cfg, "--out", run, "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    holder = hold_lock(run)
    try:
        for args in (["--resume", run / "last.npz", "--epochs", "2"], ["--out", run, "--overwrite"]):
            r = train(cfg, *args)
            assert r.exit_code == 2 and "Traceback" not in r.output, r.output
            assert f"is being written by process {holder.pid}" in flat(r.output), r.output
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before
        r = train(cfg, "--out", run, "-q")                # a new run goes beside it
        assert r.exit_code == 0 and (tmp_path / "run-2" / "last.npz").exists(), r.output
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder was killed: its lock went with it, a stale lock never blocks
    r = train(cfg, "--resume", run / "last.npz", "--epochs", "2", "-q")
    assert r.exit_code == 0, r.output


CLAIM = textwrap.dedent("""
    import sys, time
    from cnncli.rundir import new_run_dir
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    print(new_run_dir(sys.argv[1]), flush=True)
    time.sleep(0.3)
""")


def test_two_runs_asking_for_one_folder_get_two(tmp_path):
    """Picking a fresh folder is atomic: pairs of processes that ask for the same --out at the same
    instant (an existing empty folder, or none) always get distinct folders."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for trial in range(6):
        base = tmp_path / f"out{trial}"
        if trial % 2:
            base.mkdir()
        start = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(base), str(start)], stdout=subprocess.PIPE,
                                  text=True, env=env) for _ in range(2)]
        got = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert all(p.returncode == 0 for p in procs)
        assert len(set(got)) == 2 and set(got) == {str(base), str(base) + "-2"}, got


def test_run_writer_commit_record_comes_after_the_lines(tmp_path):
    """RunWriter alone: with a save that fails at last.npz, the epoch's lines are written but
    last.npz (the commit record) is not, so resume drops them (see repair)."""
    class State:
        run_dir, epoch, step, run_id, config = tmp_path, 0, 0, "x", {}

        def save(self, path, **extra):
            if path.name == "last.npz":
                raise OSError("disk full")
            path.write_bytes(b"")

    writer = RunWriter(State(), every=1)
    with pytest.raises(OSError):
        writer(EpochEnded(1, 3, {"epoch": 1, "train_loss": 1.0}, 1.0, True, 10.0, 0.5))
    assert writer.committed == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.npz", "metrics.jsonl", "timing.jsonl"]
