"""Issue 15, config side: bounded YAML (alias bombs), capped messages, no tracebacks (huge
integers, lone surrogates, a second Ctrl-C) and no lies (NaN from predict/eval, a head that
does not match data.num_classes in ``summary``, a stored model larger than memory).

Every hostile input is small and bounded: bombs that would expand to millions of values are
either refused before expansion (the fix) or run in a subprocess under a 1 GiB address-space
limit and a timeout (the old code), never expanded in the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli import checkpoint
from cnncli import config as C
from cnncli.cli import app
from cnncli.errors import MAX_PROBLEMS, CheckpointError, ConfigError, NonFiniteError
from cnncli.yamlio import ALIAS_BUDGET, parse_yaml

REPO = Path(__file__).resolve().parents[1]
TINY = (REPO / "configs" / "tiny.yaml").read_text()
runner = CliRunner()


def tiny(write_config, data: Path | str = "/nonexistent/data", **replace: str) -> Path:
    """configs/tiny.yaml with ``data.path`` = ``data`` and each ``old=new`` text replaced."""
    text = TINY.replace("path: data/mnist", f"path: {data}")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return write_config(text)


def bomb(levels: int, width: int = 9) -> str:
    """YAML anchors a0..a{levels}: a{k} holds ``width`` aliases of a{k-1}, so a{levels}
    expands to width**(levels+1) values (the "billion laughs")."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * width)}]" for k in range(1, levels + 1)]
    return "\n".join(lines)


def run_limited(args: list[str], cwd: Path, timeout: float = 20) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m cnncli ARGS`` under a 1 GiB address-space limit; (result, seconds)."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30)); "
            "sys.argv = ['cnncli', *sys.argv[1:]]; from cnncli.cli import main; main()")
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250", "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                                timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"cnncli {' '.join(args)} still running after {timeout} s")
    return result, time.perf_counter() - t


# ------------------------------------------------------------------ 1. alias bombs, capped messages

BOMB_SITES = {
    # where the alias goes -> (config text replaced, by what)
    "model.layers": ("  layers:\n    - avgpool2d: {kernel_size: 4}", "  layers: *top\n  unused:\n    - {}"),
    "data.val_split": ("val_split: 0.1", "val_split: *top"),
    "layer options": ("avgpool2d: {kernel_size: 4}", "avgpool2d: {kernel_size: 4, padding: *top}"),
    "data.classes": ("val_split: 0.1", "val_split: 0.1\n  classes: *top"),
}


@pytest.mark.parametrize("site", sorted(BOMB_SITES))
def test_an_alias_bomb_is_refused_at_the_alias_before_expansion(site, write_config):
    # 9**6 = 531,441 values: 50 times the budget, yet small enough that the old code (which
    # expanded it while validating) stayed within seconds here
    old, new = BOMB_SITES[site]
    text = "bombs:\n" + textwrap.indent(bomb(5), "  ") + "\n" + TINY.replace(old, new.replace("*top", "*a5"))
    path = write_config(text)
    t = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        C.load(path)
    assert time.perf_counter() - t < 1.0
    msg = str(e.value)
    # the alias that crosses the budget: a4's second *a3 on line 6 (9*10 + 9*91 + 9*820 + 2*6561)
    assert msg.startswith(f"{path}:6: YAML error, column 12: aliases repeat more than {ALIAS_BUDGET:,} values "
                          f"by alias *a3 (an alias bomb?)"), msg
    assert len(msg) < 500


def test_a_billion_laughs_config_ends_within_a_second_in_bounded_memory(tmp_path):
    # nine levels: 3.5 billion values; the old code ran for minutes at GBs (here: killed by
    # the 1 GiB limit or the timeout, so the test fails instead of hanging)
    text = "bombs:\n" + textwrap.indent(bomb(9), "  ") + "\n" + \
        TINY.replace("val_split: 0.1", "val_split: 0.1\n  classes: *a9")
    (tmp_path / "bomb.yaml").write_text(text)
    result, seconds = run_limited(["summary", "bomb.yaml"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "bomb.yaml:6: YAML error" in result.stderr and "alias bomb" in result.stderr
    assert seconds < 5 and len(result.stderr) < 1000


def test_aliases_within_the_budget_still_work_and_loops_are_refused():
    ok = parse_yaml("base: &b {lr: 0.1}\nsgd: {<<: *b, momentum: 0.9}\npair: &p [1, 2]\nboth: [*p, *p]\n")
    assert ok == {"base": {"lr": 0.1}, "sgd": {"lr": 0.1, "momentum": 0.9}, "pair": [1, 2], "both": [[1, 2], [1, 2]]}
    # exactly at the budget passes, one value more is refused
    at = f"a: &a [{', '.join(['1'] * (ALIAS_BUDGET - 1))}]\nb: *a\n"
    assert len(parse_yaml(at)["b"]) == ALIAS_BUDGET - 1
    with pytest.raises(ConfigError, match=r"f.yaml:2: YAML error, column 4: aliases repeat more than 10,000"):
        parse_yaml(f"a: &a [{', '.join(['1'] * ALIAS_BUDGET)}]\nb: *a\n", "f.yaml")
    with pytest.raises(ConfigError, match=r"f.yaml:1: .*alias \*a is inside the node it names"):
        parse_yaml("a: &a [1, *a]", "f.yaml")


def test_a_huge_value_in_a_message_is_cut_with_its_item_count(write_config):
    # a literal (no alias) list of 100,000 items where a list of layers is expected as a
    # mapping: the old message repeated all of it (about 600 kB)
    items = ", ".join(["relu"] * 100_000)
    path = tiny(write_config, **{"  layers:\n    - avgpool2d: {kernel_size: 4}":
                                 f"  layers: {{many: [{items}]}}\n  unused:\n    - avgpool2d: {{kernel_size: 4}}"})
    with pytest.raises(ConfigError) as e:
        C.load(path)
    msg = str(e.value)
    assert "model.layers: must be a non-empty list of layers" in msg
    assert "{'many': ['relu', 'relu', 'relu', 'relu', 'relu', 'relu', ... (100,000 items)]}" in msg
    assert len(msg) < 1000


def test_a_config_error_prints_its_first_problems_and_counts_the_rest(write_config):
    layers = "".join(f"    - nosuchlayer{i}\n" for i in range(MAX_PROBLEMS + 150))
    path = tiny(write_config, **{"  layers:\n": f"  layers:\n{layers}"})
    with pytest.raises(ConfigError) as e:
        C.load(path)
    lines = str(e.value).splitlines()
    assert len(e.value.problems) >= MAX_PROBLEMS + 150            # all kept for the API
    assert len(lines) == MAX_PROBLEMS + 1
    assert lines[-1] == f"... and {len(e.value.problems) - MAX_PROBLEMS:,} more problems"


# ------------------------------------------------------------------ 2. tracebacks -> exit 2

HUGE = "99999999999999999999999"


def test_a_huge_integer_option_is_a_config_error_in_summary_and_train(write_config, tmp_path):
    path = tiny(write_config, **{"maxpool2d: {kernel_size: 2, stride: 2}": f"maxpool2d: {{kernel_size: 2, stride: {HUGE}}}"})
    result = runner.invoke(app, ["summary", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}:18 model.layers[4].stride: must be <= 268,435,456, got {HUGE} (maxpool2d)" in result.output
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "model.layers[4].stride: must be <= " in result.output
    assert not out.exists()                        # refused by the config: no folder made


def test_every_integer_option_refuses_what_numpy_cannot_hold(write_config):
    path = tiny(write_config, **{"seed: 0": f"seed: {2 ** 63}"})
    with pytest.raises(ConfigError, match=r"train.seed: must be <= 9,223,372,036,854,775,807, got 9223372036854775808"):
        C.load(path)


@pytest.mark.parametrize("args", [["--set", 'output.dir="\\udc80"'], ["--out", "run-\udc80"]])
def test_a_lone_surrogate_in_a_config_value_is_a_located_error(args, write_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tiny(write_config)
    result = runner.invoke(app, ["train", str(path), *args])
    assert result.exit_code == 2, result.output
    assert "lone surrogate" in result.output and "Use valid UTF-8 text" in result.output
    assert ("--set output.dir" if args[0] == "--set" else "--out") in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]      # no run folder


def test_a_lone_surrogate_in_the_file_is_located_at_its_line(write_config):
    path = tiny(write_config, **{"dir: runs/tiny": 'dir: "runs/\\udc80"'})
    with pytest.raises(ConfigError, match=rf"{path}:30: YAML error, column 8: text 'runs/\\udc80' holds "
                                          r"'\\udc80' at position 5, a lone surrogate"):
        C.load(path)


DOUBLE_CTRL_C = """
import atexit, os, signal, sys, time
import typer
from cnncli import config

def second_ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)

real_echo = typer.echo

def echo(message=None, *args, **kwargs):
    if message == "interrupted" and WHEN == "reporting":    # while the first one is reported
        second_ctrl_c()
    real_echo(message, *args, **kwargs)

def load(*args, **kwargs):                                   # the first Ctrl-C, during start-up
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)

if WHEN == "exiting":                                        # while the process exits (atexit, threads)
    atexit.register(second_ctrl_c)
typer.echo = echo
config.load = load
sys.argv = ["cnncli", "train", "any.yaml"]
from cnncli.cli import main
main()
"""


@pytest.mark.parametrize("when", ["reporting", "exiting"])
def test_a_second_ctrl_c_while_the_first_is_handled_still_exits_130_without_a_traceback(when, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", f"WHEN = {when!r}\n{DOUBLE_CTRL_C}"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60, env=env, check=False)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "interrupted"


# ------------------------------------------------------------------ 3. no lies

@pytest.fixture(scope="module")
def huge_checkpoint(mnist_slice, tmp_path_factory):
    """A checkpoint of configs/tiny.yaml whose finite weights are scaled to 1e30: float32
    logits overflow to infinity, probabilities to NaN."""
    from cnncli.assemble import build_model

    tmp = tmp_path_factory.mktemp("huge")
    cfg_path = tmp / "tiny.yaml"
    cfg_path.write_text(TINY.replace("path: data/mnist", f"path: {mnist_slice}\n  test_limit: 20"))
    cfg = C.load(cfg_path)
    model = build_model(cfg)
    params = {k: (v * np.float32(1e30) if v.ndim > 1 else v) for k, v in model.params().items()}
    path = tmp / "huge.npz"
    checkpoint.save(path, params=params, buffers=model.buffers(), optim={}, config=cfg.to_dict(),
                    meta={"epoch": 1, "input_shape": [1, 28, 28]})
    image = tmp / "digit.npy"
    np.save(image, np.full((28, 28), 200, np.uint8))
    return path, image


def test_predict_on_overflowing_weights_is_an_error_not_nan_json(huge_checkpoint):
    path, image = huge_checkpoint
    result = runner.invoke(app, ["predict", str(path), str(image), "--json"])
    assert result.exit_code == 1, result.output
    assert '"probability"' not in result.output
    assert f"{image}: image 0: the model's outputs are not finite numbers" in result.output
    assert "the checkpoint's weights overflow" in result.output
    from cnncli.evaluation import load_model, predict_proba

    model, cfg, _ = load_model(path)
    with pytest.raises(NonFiniteError):
        predict_proba(model, cfg, np.zeros((3, 1, 28, 28), np.uint8))


def test_eval_on_overflowing_weights_is_an_error_not_nan_json(huge_checkpoint):
    path, _ = huge_checkpoint
    result = runner.invoke(app, ["eval", str(path), "--json"])
    assert result.exit_code == 1, result.output
    assert '"accuracy"' not in result.output
    assert f"{path}: on " in result.output and "the loss became nan at batch 1 (the model's outputs are not " \
        "all finite numbers); the checkpoint's weights overflow" in result.output


def test_summary_refuses_a_head_that_does_not_match_data_num_classes(write_config):
    path = tiny(write_config, **{"val_split: 0.1": "val_split: 0.1\n  num_classes: 10",
                                 "linear: {out_features: 10}": "linear: {out_features: 8}"})
    result = runner.invoke(app, ["summary", str(path)])
    assert result.exit_code == 2, result.output
    # the message train gives (assemble._check_outputs)
    assert f"{path}:22 model.layers[7]: the model has 8 outputs but the data has 10 classes; " \
           f"set out_features: 10" in " ".join(result.output.split())
    ok = tiny(write_config, **{"val_split: 0.1": "val_split: 0.1\n  num_classes: 10"})
    assert runner.invoke(app, ["summary", str(ok)]).exit_code == 0


# ------------------------------------------------------------------ 4. a stored model larger than memory

def _eight_wide_layers(tmp_path) -> tuple[Path, C.Config]:
    """A checkpoint of a few bytes whose stored config is eight 16384-wide linear layers (8 GiB)."""
    layers = [{"flatten": {}}, *[{"linear": {"out_features": 16384}}] * 8, {"linear": {"out_features": 10}}]
    raw = {"data": {"path": str(tmp_path), "mean": 0.5, "std": 0.5},
           "model": {"input_shape": [1, 128, 128], "layers": layers}, "train": {"epochs": 1}}
    cfg = C.validate(raw, "big.yaml")
    path = tmp_path / "big.npz"
    checkpoint.save(path, params={}, buffers={}, optim={}, config=cfg.to_dict(), meta={"epoch": 1})
    return path, cfg


def _only_shapes_built(monkeypatch):
    """Make building a model for real fail the test; building it from shapes alone is allowed."""
    from cnncli import assemble, model
    from cnncli.layers.init import _SHAPES_ONLY

    real_build = model.build
    monkeypatch.setattr(assemble, "build", lambda *a, **k: real_build(*a, **k) if _SHAPES_ONLY.get() else
                        pytest.fail("the model was built"))


def test_a_stored_model_larger_than_memory_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from cnncli import assemble, evaluation

    path, _ = _eight_wide_layers(tmp_path)
    monkeypatch.setattr(assemble, "available_memory", lambda: 2 * 2**30)
    _only_shapes_built(monkeypatch)
    with pytest.raises(CheckpointError) as e:
        evaluation.load_model(path)
    # 4 bytes * (8 * 16384 * 16384 + 8 * 16384 + 16384 * 10 + 10): the model's own arrays
    assert f"{path}: the model of {path} (stored config) needs 8,193 MiB for its weights but 2,048 MiB " \
           f"of memory is available; it was not built" in str(e.value)


def test_a_stored_model_is_matched_against_the_arrays_before_it_is_built(tmp_path, monkeypatch):
    # with memory enough for it (any machine's figure), the 8 GiB model is still never built:
    # its shapes-only twin finds the checkpoint's arrays missing first
    from cnncli import assemble, evaluation

    path, _ = _eight_wide_layers(tmp_path)
    monkeypatch.setattr(assemble, "available_memory", lambda: 2**40)
    _only_shapes_built(monkeypatch)
    with pytest.raises(CheckpointError, match=r"big.npz: parameters do not match the model: missing \['1.bias'"):
        evaluation.load_model(path)


def test_the_eval_command_refuses_it_with_exit_2(tmp_path, monkeypatch):
    from cnncli import assemble

    layers = [{"flatten": {}}, {"linear": {"out_features": 4096}}, {"linear": {"out_features": 10}}]
    cfg = C.validate({"data": {"path": str(tmp_path), "mean": 0.5, "std": 0.5},
                      "model": {"input_shape": [1, 64, 64], "layers": layers}, "train": {"epochs": 1}}, "m.yaml")
    path = tmp_path / "m.npz"
    checkpoint.save(path, params={}, buffers={}, optim={}, config=cfg.to_dict(), meta={"epoch": 1})
    monkeypatch.setattr(assemble, "available_memory", lambda: 2**20)
    result = runner.invoke(app, ["eval", str(path), "--json"])
    assert result.exit_code == 2, result.output
    assert "needs 64 MiB for its weights but 1 MiB of memory is available; it was not built" in result.output
