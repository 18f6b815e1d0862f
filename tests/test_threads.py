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


@pytest.mark.parametrize("layer, shape", [("batchnorm", (64, 32, 14, 14)), ("batchnorm", (512, 300)),
                                          ("relu", (64, 32, 14, 14)), ("relu", (512, 300)),
                                          ("tanh", (64, 32, 14, 14)), ("tanh", (512, 300)),
                                          ("maxpool2d", (64, 32, 14, 14)), ("maxpool2d", (16, 8, 15, 13)),
                                          ("maxpool2d_overlapping", (16, 8, 15, 13)),
                                          ("avgpool2d", (64, 32, 14, 14)), ("avgpool2d_padded", (16, 8, 15, 13)),
                                          ("conv2d", (16, 8, 15, 13)), ("conv2d_grouped", (16, 8, 15, 13))])
def test_channel_split_layers_give_the_same_bits_on_any_thread_count(layer, shape, monkeypatch):
    """Batchnorm, ReLU, tanh, max-pooling (tiled and by windows), average pooling and the
    convolution's lowering (by kernel offset) and col2im (by channel) split their channels over threads (layers.parallel): forward, backward,
    running statistics and parameter gradients are the same bits with 1, 2 and 3 threads, in CHWN
    and NCHW memory order."""
    from cnncli.layers import LAYERS, parallel
    from cnncli.layers.windows import to_chwn

    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 1024)       # split these small arrays too
    monkeypatch.setattr(parallel, "SMALL_GEMM", 0)            # the BLAS threads stay as they are
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(shape).astype(np.float32)

    def rng_dy(s):
        return np.random.default_rng(1).standard_normal(s).astype(np.float32)
    results = {}
    for n in (1, 2, 3):
        parallel.workers(n)
        try:
            for k, order in enumerate(((lambda a: a), to_chwn) if len(shape) == 4 else ((lambda a: a),)):
                make = {"batchnorm": lambda: LAYERS.get("batchnorm")(shape[1]),
                        "maxpool2d": lambda: LAYERS.get("maxpool2d")(2),
                        "maxpool2d_overlapping": lambda: LAYERS.get("maxpool2d")(3, stride=2, padding=1),
                        "avgpool2d": lambda: LAYERS.get("avgpool2d")(2),
                        "avgpool2d_padded": lambda: LAYERS.get("avgpool2d")(3, stride=2, padding=1,
                                                                            count_include_pad=False),
                        "conv2d": lambda: LAYERS.get("conv2d")(8, 6, 3, padding=1, rng=np.random.default_rng(2)),
                        "conv2d_grouped": lambda: LAYERS.get("conv2d")(8, 4, 3, stride=2, padding=2, dilation=2,
                                                                       groups=2, rng=np.random.default_rng(2))}
                lay = make.get(layer, lambda: LAYERS.get(layer)())()
                x = order(x0.copy())
                y = lay.forward(x, training=True)
                dx = lay.backward(order(rng_dy(y.shape)))
                results[n, k] = [np.array(a) for a in (y, dx, *lay.grads.values(), *lay.buffers.values())]
        finally:
            parallel.workers(1)
    for (n, k), arrays in results.items():
        assert len(arrays) == len(results[1, k]) >= 2
        assert all(np.array_equal(a, b) for a, b in zip(results[1, k], arrays)), (n, k)


def test_evaluation_splits_batches_over_threads_with_the_same_bits(monkeypatch):
    """In evaluation a batch is cut into chunks that run on all threads (parallel.over_items),
    each with one BLAS thread: the logits are the same bits with 1, 2 and 3 threads, and equal
    those of each sample run alone (to float rounding: a GEMM's blocking may differ)."""
    from cnncli.layers import parallel
    from cnncli.model import LayerSpec, build

    specs = [LayerSpec(t, o) for t, o in [
        ("conv2d", {"out_channels": 6, "kernel_size": 3, "padding": 1}), ("batchnorm", {}), ("tanh", {}),
        ("maxpool2d", {"kernel_size": 2}), ("conv2d", {"out_channels": 8, "kernel_size": 3}), ("relu", {}),
        ("avgpool2d", {"kernel_size": 2}), ("dropout", {"p": 0.5}), ("flatten", {}), ("linear", {"out_features": 10})]]
    model = build(specs, (1, 12, 12), seed=0)
    x = np.random.default_rng(0).standard_normal((203, 1, 12, 12)).astype(np.float32)
    single = np.concatenate([model.forward(x[i:i + 1]) for i in range(len(x))])
    monkeypatch.setattr(model, "EVAL_MIN_CHUNK", 16)
    bounds = model.eval_chunks(len(x))
    assert bounds == [0, 50, 101, 152, 203]          # 4 chunks, whatever the thread count
    logits = {}
    for n in (1, 2, 3):
        with threads.limit(n):
            assert model.eval_chunks(len(x)) == bounds
            logits[n] = model.forward(x)
    assert logits[1].shape == (203, 10)
    assert np.array_equal(logits[1], logits[2]) and np.array_equal(logits[1], logits[3])
    np.testing.assert_allclose(logits[1], single, rtol=1e-5, atol=1e-5)


def test_over_items_runs_each_item_once_on_several_threads_with_one_blas_thread():
    import threading

    from cnncli.layers import parallel

    if blas_threads() is None:
        pytest.skip("threadpoolctl finds no BLAS in this NumPy")
    seen, blas, names = [], [], set()

    def fn(i):
        seen.append(i)
        blas.append(blas_threads())
        names.add(threading.current_thread().name)
        x = np.ones((256, 256), np.float32)
        for _ in range(20):
            x = np.tanh(x @ x)              # work long enough for the other thread to take items
    with threads.limit(2):
        parallel.over_items(fn, 9)
        assert blas_threads() == 2                      # restored after the calls
    assert sorted(seen) == list(range(9))
    assert len(names) == 2 and set(blas) == {1}


def test_the_command_line_lets_idle_blas_threads_sleep():
    """cnncli's console script sets OPENBLAS_THREAD_TIMEOUT before NumPy loads (idle OpenBLAS
    threads otherwise spin for ~0.1 s, taking the core from the channel-split layers), and
    keeps a value the user set."""
    import os
    import subprocess
    import sys

    code = "import cnncli.cli, os, sys; print(os.environ['OPENBLAS_THREAD_TIMEOUT'], 'numpy' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.split() == ["4", "False"], r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**env, "OPENBLAS_THREAD_TIMEOUT": "20"})
    assert r.stdout.split() == ["20", "False"], r.stderr


def test_small_products_run_on_one_blas_thread_large_ones_on_all(monkeypatch):
    """``parallel.matmul``: below SMALL_GEMM multiply-adds one BLAS thread (a multi-threaded
    call waits a time slice for a busy core), at or above it every thread; the values of
    ``np.matmul`` on that many threads, and the thread count restored after."""
    from cnncli.layers import parallel

    if blas_threads() is None:
        pytest.skip("threadpoolctl finds no BLAS in this NumPy")
    original, during = np.matmul, []

    def recording(a, b, out=None):
        during.append(blas_threads())
        return original(a, b, out=out)
    rng = np.random.default_rng(0)
    small = rng.random((128, 400), dtype=np.float32), rng.random((400, 120), dtype=np.float32)
    large = rng.random((64, 288), dtype=np.float32), rng.random((288, 25088), dtype=np.float32)
    assert small[0].shape[0] * 400 * 120 < parallel.SMALL_GEMM <= 64 * 288 * 25088
    with threads.limit(1):
        expected = [original(*small)]
    with threads.limit(2):
        expected.append(original(*large))
        monkeypatch.setattr(np, "matmul", recording)
        got = [parallel.matmul(*small), parallel.matmul(*large)]
        monkeypatch.setattr(np, "matmul", original)
        assert blas_threads() == 2
    assert during == [1, 2]
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
