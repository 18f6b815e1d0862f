"""The pure helpers of benchmarks/bench_epochs.py and the network translation of
benchmarks/torch_loop.py (no timing: speed is measured by the scripts, not by tests)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cnncli import assemble, config
from cnncli.data import pixel_lut
from cnncli.layers.registry import LAYERS

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def b():
    return _module("bench_epochs")


def test_spread_is_median_min_max(b):
    assert b.spread([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert b.spread([5.0]) == (5.0, 5.0, 5.0)


def test_train_limit_leaves_the_asked_training_images(b):
    assert b.train_limit_for(5000, 2000) == 7000
    for f, n in ((0.1, 2000), (0.1, 7), (0.25, 999), (0.0, 5)):
        total = b.train_limit_for(f, n)
        assert total - int(round(total * f)) == n       # as data.prepare_data carves it


def test_bench_sets_are_accepted_by_the_config_loader(b):
    sets = b.bench_sets(5000, no_augment=True, train_limit=2000, test_limit=1000)
    assert sets == ["data.augment=null", "data.train_limit=7000", "data.test_limit=1000"]
    cfg = config.load("configs/mnist-small.yaml", sets)
    assert (cfg.data.augment.translate, cfg.data.augment.hflip) == (0, False)
    assert (cfg.data.train_limit, cfg.data.test_limit) == (7000, 1000)
    assert b.bench_sets(5000, no_augment=False, train_limit=None, test_limit=None) == []


def test_train_command_is_the_users_command(b):
    cmd = b.train_command(["cnncli"], "configs/mnist.yaml", 2, Path("/tmp/r"), ["data.augment=null"], 2,
                          threads_flag=False, output="tty")
    assert cmd == ["cnncli", "train", "configs/mnist.yaml", "--epochs", "2", "--out", "/tmp/r",
                   "--set", "data.augment=null"]
    cmd = b.train_command(["cnncli"], "c.yaml", 1, Path("o"), [], 3, threads_flag=True, output="json")
    assert cmd[-3:] == ["--threads", "3", "--json"]


def test_child_env_sets_every_thread_pool_and_this_checkout(b):
    env = b.child_env(3, {"PYTHONPATH": "/elsewhere", "NO_COLOR": "1", "CI": "true", "OMP_NUM_THREADS": "8"},
                      tty=True)
    assert [env[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")] == ["3", "3", "3"]
    assert env["PYTHONPATH"].split(os.pathsep) == [str(BENCH.parent), "/elsewhere"]
    assert "NO_COLOR" not in env and "CI" not in env
    assert b.child_env(1, {"CI": "true"}, tty=False)["CI"] == "true"


def test_run_rate_weighs_epochs_by_their_seconds(b):
    rows = [{"images_per_s": 1000.0, "train_seconds": 10.0}, {"images_per_s": 2000.0, "train_seconds": 5.0}]
    assert b.run_rate(rows) == pytest.approx(20000 / 15)      # not the mean of the rates (1500)


def test_json_rows_skip_other_lines(b):
    assert b.json_rows('run folder: x\n{"a": 1}\n{broken\n  {"b": 2}\n') == [{"a": 1}, {"b": 2}]


def test_table_ratios(b):
    ours = {"train": [100.0, 200.0, 300.0], "epoch_seconds": [3.0, 2.0, 1.0], "eval": [400.0, 500.0, 600.0],
            "rss": [200.0, 210.0, 220.0]}
    torch = {"train": [200.0, 300.0, 600.0], "epoch_seconds": [1.0, 1.0, 1.0], "eval": [200.0, 250.0, 400.0],
             "rss": [800.0, 800.0, 800.0]}
    text = b.table({"c.yaml": {"cnncli": ours, "pytorch": torch}}, ["head"])
    lines = text.splitlines()
    assert lines[0] == "head"
    assert "| `c.yaml` | cnncli | 200 (100-300) | 2.00 (1.00-3.00) | 500 (400-600) | 210 MiB (200 MiB-220 MiB) |" in lines
    ratio = next(line for line in lines if "| ratio |" in line)
    assert "PyTorch / cnncli 1.50x (pairs 1.50-2.00)" in ratio
    assert "cnncli / PyTorch 2.00x (pairs 1.50-2.00)" in ratio
    assert "cnncli / PyTorch 0.26x (pairs 0.25-0.28)" in ratio


def test_run_child_gives_a_terminal_only_when_asked(b):
    code = "import sys; print(sys.stdout.isatty()); sys.exit(3)"
    env = b.child_env(1, dict(os.environ), tty=True)
    tty = b.run_child([sys.executable, "-c", code], env, tty=True)
    piped = b.run_child([sys.executable, "-c", code], env, tty=False)
    assert (tty.returncode, tty.output.strip()) == (3, "True")
    assert (piped.returncode, piped.output.strip()) == (3, "False")
    assert piped.max_rss_mib > 1


@pytest.fixture
def no_runs(b, monkeypatch):
    """No child process may start: a refusal must come first (and a regression stays fast)."""
    def refuse(*a, **k):
        raise AssertionError("a child process started before the input was checked")
    monkeypatch.setattr(b, "bench_config", refuse)
    monkeypatch.setattr(b, "has_threads_flag", refuse)


def test_bad_flag_values_exit_2(b, no_runs, capsys, tmp_path):
    assert b.main(["--pairs", "0"]) == 2
    assert "--pairs must be at least 1, got 0" in capsys.readouterr().err
    assert b.main(["--configs", "configs/tiny.yaml", "--save", str(tmp_path / "missing" / "x.json")]) == 2
    assert f"folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    assert b.main(["--load", "-1"]) == 2
    assert "--load must be at least 0, got -1" in capsys.readouterr().err


def test_busy_processes_load_a_core_each_and_end_with_the_block(b):
    import time

    with b.busy_processes(2):
        procs = [p for p in _children() if "while True: pass" in p[1]]
        assert len(procs) == 2
        t0 = {pid: _cpu_seconds(pid) for pid, _ in procs}
        time.sleep(1.0)
        # busy, not sleeping (a sleeping process gains ~0 s; a loaded machine still gives a busy
        # loop far more than 0.05 s of a second)
        assert all(_cpu_seconds(pid) - t0[pid] > 0.05 for pid, _ in procs)
    assert not [p for p in _children() if "while True: pass" in p[1]]


def _children():
    """(pid, command line) of this process's live children (Linux /proc)."""
    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == me:
                out.append((int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            pass
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_every_config_is_checked_before_the_first_run(b, no_runs, capsys):
    assert b.main(["--configs", "configs/tiny.yaml", "nope.yaml"]) == 2
    assert "nope.yaml: config file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def t():
    pytest.importorskip("torch")
    return _module("torch_loop")


def test_every_layer_has_a_torch_translation(t):
    assert set(LAYERS) <= set(t.TORCH_LAYERS)


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.yaml")))
def test_translated_network_computes_the_same_logits(t, path):
    import torch

    cfg = config.load(path)
    model = assemble.build_model(cfg, (1, 28, 28))
    net = t.torch_network(model).eval()
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x.copy(), training=False), theirs, atol=1e-5, rtol=1e-4)


def test_even_same_padding_pads_one_more_at_the_end(t):
    import torch

    cfg = config.load("configs/mnist-small.yaml", ["model.layers[0].conv2d.kernel_size=4"])
    model = assemble.build_model(cfg, (1, 28, 28))
    net = t.torch_network(model).eval()
    pad, conv = net[0]                                     # "same", kernel 4: 1 before, 2 after
    assert tuple(pad.padding) == (1, 2, 1, 2) and conv.kernel_size == (4, 4) and conv.padding == (0, 0)
    x = np.take(pixel_lut(0.1307, 0.3081), np.random.default_rng(1).integers(0, 256, (2, 1, 28, 28)))
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x.copy(), training=False), theirs, atol=1e-5, rtol=1e-4)
