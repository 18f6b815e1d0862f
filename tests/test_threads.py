"""train.threads / --threads: the BLAS threads a run computes with, and runs that repeat
themselves bit for bit with the same seed and threads (issue 14)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli import threads
from cnncli.cli import app
from cnncli.timing import blas_threads
from test_resume import make_config

runner = CliRunner()


def test_limit_sets_and_restores_the_blas_threads():
    before = blas_threads()
    if before is None:
        pytest.skip("threadpoolctl finds no BLAS in this NumPy")
    with threads.limit(1) as n:
        assert n == 1 and blas_threads() == 1
    assert blas_threads() == before
    with threads.limit(None) as n:
        assert n == threads.available_cores() and blas_threads() == n


def test_time_reports_the_threads_it_ran_with(write_config, mnist_slice):
    if blas_threads() is None:
        pytest.skip("threadpoolctl finds no BLAS in this NumPy")
    cfg = make_config(write_config, mnist_slice, epochs=1)
    r = runner.invoke(app, ["time", str(cfg), "--threads", "1", "-n", "2", "--warmup", "0", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["blas_threads"] == 1


def test_train_threads_is_a_checked_option(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=1)
    r = runner.invoke(app, ["train", str(cfg), "--set", "train.threads=0", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "train.threads: must be >= 1, got 0" in " ".join(r.output.split()), r.output
    r = runner.invoke(app, ["train", str(cfg), "--threads", "1", "--out", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 0, r.output
    assert "threads: 1" in (tmp_path / "r" / "config.yaml").read_text()


@pytest.mark.parametrize("n", [1, 2])
def test_same_seed_and_threads_give_byte_identical_runs(write_config, mnist_slice, tmp_path, n):
    """Augmentation, dropout, batchnorm and the background batch preparation: two runs with the
    same seed and thread count write the same metrics.jsonl bytes and the same weights."""
    cfg = make_config(write_config, mnist_slice, epochs=2)
    for name in ("a", "b"):
        r = runner.invoke(app, ["train", str(cfg), "--threads", str(n), "--out", str(tmp_path / name), "-q"])
        assert r.exit_code == 0, r.output
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    with np.load(a / "last.npz") as za, np.load(b / "last.npz") as zb:
        keys = [k for k in za.files if k.split("/")[0] in ("param", "buffer", "optim")]
        assert keys and all(np.array_equal(za[k], zb[k]) for k in keys)
