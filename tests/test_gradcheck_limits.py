"""The gradient check knows its limits (issue 15): it refuses float32 models, skips entries
whose central difference straddles a kink (ReLU / leaky-ReLU / ELU inputs at 0, max-pool
ties) instead of failing correct layers, checks at given inputs (``--input FILE.npy``), and
still fails a broken backward."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cnncli
from cnncli import gradcheck as G
from cnncli.cli import app
from cnncli.layers.activation import ELU, LeakyReLU, ReLU
from cnncli.layers.base import Layer
from cnncli.layers.pool import MaxPool2d
from cnncli.layers.windows import to_chwn

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

KINKY = f"""
data: {{path: {REPO / 'data' / 'mnist'}, mean: 0.5, std: 0.25}}
model:
  input_shape: [1, 6, 6]
  layers:
    - relu
    - maxpool2d: {{kernel_size: 2}}
    - flatten
    - linear: {{out_features: 3}}
"""


def kinky_inputs(n: int = 2) -> np.ndarray:
    """(n, 1, 6, 6): in every 2x2 window the top two values tie exactly (positive), the
    bottom-left is exactly 0 (a ReLU kink) and the bottom-right negative."""
    rng = np.random.default_rng(7)
    x = np.empty((n, 1, 6, 6))
    top = rng.uniform(0.5, 1.5, (n, 1, 3, 3))
    x[..., 0::2, 0::2] = top
    x[..., 0::2, 1::2] = top
    x[..., 1::2, 0::2] = 0.0
    x[..., 1::2, 1::2] = -rng.uniform(0.5, 1.5, (n, 1, 3, 3))
    return x


@pytest.fixture
def kinky(tmp_path):
    cfg = tmp_path / "kinky.yaml"
    cfg.write_text(KINKY)
    inputs = tmp_path / "x.npy"
    np.save(inputs, kinky_inputs())
    return cfg, inputs


def _row(output: str, layer: str, tensor: str) -> str:
    return next(line for line in output.splitlines() if re.match(rf"│ {layer} +│ {tensor} +│", line))


def test_relu_zeros_and_maxpool_ties_pass_with_the_kinks_skipped(kinky):
    cfg, inputs = kinky
    result = runner.invoke(app, ["gradcheck", str(cfg), "--input", str(inputs)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # 72 ReLU inputs, 18 of them exactly 0; 72 max-pool inputs, 36 in tied pairs
    assert "54/72, 18 skipped (kink)" in _row(result.output, "0 relu", "input")
    assert "36/72, 36 skipped (kink)" in _row(result.output, "1 maxpool2d", "input")
    # the whole model: a zero moves a ReLU input across 0, a tied value moves an argmax
    assert "18/72, 54 skipped (kink)" in _row(result.output, "model", "input")
    assert "skipped" not in _row(result.output, "model: 3 linear", "weight")
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("9 tensors checked, all passed;"), summary
    assert summary.endswith("; 108 entries skipped at kinks (in 3 tensors), not judged"), summary
    assert "FAIL" not in result.output


def test_without_kink_detection_the_same_check_fails(kinky, monkeypatch):
    """What the old checker did: the central differences at the kinks fail correct layers."""
    cfg, inputs = kinky
    for cls in (ReLU, MaxPool2d):
        monkeypatch.setattr(cls, "pieces", Layer.pieces)
    result = runner.invoke(app, ["gradcheck", str(cfg), "--input", str(inputs)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "FAIL" in _row(result.output, "0 relu", "input")
    assert "FAIL" in _row(result.output, "1 maxpool2d", "input")


def test_a_broken_relu_backward_still_fails_at_kinky_inputs(kinky, monkeypatch):
    cfg, inputs = kinky
    monkeypatch.setattr(ReLU, "backward", lambda self, dy: dy)    # forgets the mask
    result = runner.invoke(app, ["gradcheck", str(cfg), "--input", str(inputs)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "FAIL" in _row(result.output, "0 relu", "input")


def test_a_broken_maxpool_backward_still_fails_at_ties(kinky, monkeypatch):
    cfg, inputs = kinky
    # sends each window's gradient to every position of the window
    monkeypatch.setattr(MaxPool2d, "backward", lambda self, dy: np.repeat(np.repeat(dy, 2, axis=2), 2, axis=3))
    result = runner.invoke(app, ["gradcheck", str(cfg), "--input", str(inputs)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "FAIL" in _row(result.output, "1 maxpool2d", "input")


def test_a_float32_model_is_refused_with_the_fix():
    cfg = cnncli.load_config(REPO / "configs" / "tiny.yaml")
    model = cnncli.build_model(cfg, (1, 28, 28), dtype=np.float32)
    for check in (G.check_layers, G.check_model):
        with pytest.raises(ValueError, match=r"float64 model; this one is float32.*dtype=np\.float64"):
            check(model, max_checks=8)
    # the fix the message gives: a float64 copy of the same weights passes
    model64 = cnncli.build_model(cfg, (1, 28, 28), dtype=np.float64)
    model64.load_arrays(model.params(), model.buffers())
    results = G.check_layers(model64, max_checks=8) + G.check_model(model64, max_checks=8)
    assert all(r.passed(G.DEFAULT_TOL) for r in results)


LEAKY_ELU = f"""
data: {{path: {REPO / 'data' / 'mnist'}, mean: 0.5, std: 0.25}}
model:
  input_shape: [2, 4, 4]
  layers:
    - leaky_relu: {{negative_slope: 0.2}}
    - elu: {{alpha: 2.0}}
    - maxpool2d: {{kernel_size: 3, stride: 1, padding: 1}}
    - flatten
    - linear: {{out_features: 2}}
"""


def test_leaky_relu_elu_and_overlapping_maxpool_kinks_through_the_python_api(tmp_path, monkeypatch):
    (tmp_path / "c.yaml").write_text(LEAKY_ELU)
    cfg = cnncli.load_config(tmp_path / "c.yaml")
    model = cnncli.build_model(cfg, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((3, 2, 4, 4))
    x[:, :, ::2, ::2] = 0.0                  # leaky-ReLU and ELU kinks (and max-pool ties at 0)

    def check():
        return (G.check_layers(model, inputs=x, max_checks=None)
                + G.check_model(model, inputs=x, max_checks=None))

    results = check()
    assert all(r.passed(G.DEFAULT_TOL) for r in results), [r for r in results if not r.passed(G.DEFAULT_TOL)]
    skipped = {(r.layer, r.tensor): r.skipped for r in results}
    assert skipped[("0 leaky_relu", "input")] == 24
    assert skipped[("1 elu", "input")] == 24
    assert skipped[("model", "input")] >= 24
    for cls in (LeakyReLU, ELU):
        monkeypatch.setattr(cls, "pieces", Layer.pieces)
    failed = {(r.layer, r.tensor) for r in check() if not r.passed(G.DEFAULT_TOL)}
    assert {("0 leaky_relu", "input"), ("1 elu", "input"), ("model", "input")} <= failed


def test_sampled_entries_at_kinks_are_replaced(kinky):
    cfg = cnncli.load_config(kinky[0])
    model = cnncli.build_model(cfg, dtype=np.float64)
    results = {(r.layer, r.tensor): r for r in G.check_layers(model, inputs=kinky_inputs(), max_checks=20)}
    relu, pool = results[("0 relu", "input")], results[("1 maxpool2d", "input")]
    assert relu.skipped > 0 and relu.checked == 20          # 54 of 72 entries are off kinks
    assert pool.skipped > 0 and pool.checked == 20          # 36 of 72
    assert relu.passed(G.DEFAULT_TOL) and pool.passed(G.DEFAULT_TOL)


def test_resampling_is_bounded_when_every_entry_is_a_kink(kinky):
    cfg = cnncli.load_config(kinky[0])
    model = cnncli.build_model(cfg, dtype=np.float64)
    x = np.zeros((40, 1, 6, 6))                   # 1440 ReLU inputs, every one at 0
    results = {(r.layer, r.tensor): r for r in G.check_layers(model, inputs=x, max_checks=5)}
    relu = results[("0 relu", "input")]
    assert relu.checked == 0 and relu.skipped == G.RESAMPLE_TRIES * 5
    assert relu.all_kinks and relu.passed(G.DEFAULT_TOL)


def test_a_tensor_with_nothing_but_kinks_is_shown_apart(tmp_path):
    (tmp_path / "c.yaml").write_text(KINKY)
    np.save(tmp_path / "zeros.npy", np.zeros((2, 1, 6, 6)))
    result = runner.invoke(app, ["gradcheck", str(tmp_path / "c.yaml"), "--input", str(tmp_path / "zeros.npy")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "SKIP (kink)" in _row(result.output, "0 relu", "input")
    assert "0/72, 72 skipped (kink)" in _row(result.output, "0 relu", "input")
    assert "with every entry tried at a kink (SKIP (kink))" in result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("x", [
    pytest.param(np.ones((2, 1, 28, 28)), id="float64"),
    pytest.param(np.ones((2, 1, 28, 28), np.float32), id="float32"),
    pytest.param(np.ones((1, 28, 28)), id="one-sample"),
])
def test_float_inputs_are_the_model_input(tmp_path, x):
    np.save(tmp_path / "x.npy", x)
    cfg = cnncli.load_config(REPO / "configs" / "tiny.yaml")
    got = G.read_inputs(tmp_path / "x.npy", cfg, (1, 28, 28), 4)
    assert got.dtype == np.float64 and got.shape == (len(x) if x.ndim == 4 else 1, 1, 28, 28)
    assert np.array_equal(got.reshape(-1), x.reshape(-1).astype(np.float64))


def test_uint8_inputs_are_normalized_as_training_does(tmp_path):
    cfg = cnncli.load_config(REPO / "configs" / "tiny.yaml")           # mean 0.1307, std 0.3081
    u8 = np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28)).astype(np.uint8)
    np.save(tmp_path / "u8.npy", u8)
    got = G.read_inputs(tmp_path / "u8.npy", cfg, (1, 28, 28), 3)        # the first 3 samples
    assert got.dtype == np.float64 and got.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(got, (u8[:3] / 255.0 - 0.1307) / 0.3081, rtol=1e-12)
    result = runner.invoke(app, ["gradcheck", str(REPO / "configs" / "tiny.yaml"), "--input",
                                 str(tmp_path / "u8.npy"), "--max-checks", "16"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "all passed" in result.output


BAD = [
    ("shape", lambda p: np.save(p, np.zeros((2, 28, 28, 1))), r"an array of shape \(2, 28, 28, 1\), but the model "
                                                              r"takes \(1, 28, 28\)"),
    ("dtype", lambda p: np.save(p, np.zeros((2, 1, 28, 28), np.int64)), "holds int64 values"),
    ("nan", lambda p: np.save(p, np.full((2, 1, 28, 28), np.nan)), "NaN or infinite"),
    ("empty", lambda p: np.save(p, np.zeros((0, 1, 28, 28))), r"an array of shape \(0, 1, 28, 28\)"),
    ("not-npy", lambda p: p.write_text("hello"), "not a .npy file"),
    ("pickle", lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "holds pickled Python objects"),
    ("missing", lambda p: None, "not found"),
]


@pytest.mark.parametrize("make,message", [pytest.param(m, msg, id=i) for i, m, msg in BAD])
def test_a_bad_input_file_is_exit_2_naming_it(tmp_path, make, message):
    path = tmp_path / "bad.npy"
    make(path)
    result = runner.invoke(app, ["gradcheck", str(REPO / "configs" / "tiny.yaml"), "--input", str(path)],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert str(path) in text and re.search(message, text), text
    assert "Traceback" not in result.output


def test_one_sample_is_refused_where_batchnorm_needs_two_values(tmp_path):
    (tmp_path / "c.yaml").write_text(f"""
data: {{path: {REPO / 'data' / 'mnist'}, mean: 0.5, std: 0.25}}
model:
  input_shape: [5]
  layers: [linear: {{out_features: 4}}, batchnorm, linear: {{out_features: 2}}]
""")
    np.save(tmp_path / "one.npy", np.ones((1, 5)))
    result = runner.invoke(app, ["gradcheck", str(tmp_path / "c.yaml"), "--input", str(tmp_path / "one.npy")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "layer 1 (batchnorm) needs two or more values per channel" in " ".join(result.output.split())


@pytest.mark.parametrize("chwn", [False, True], ids=["nchw", "chwn"])
@pytest.mark.parametrize("padding", [0, 1], ids=["tiled", "windows"])
def test_maxpool_pieces_are_each_windows_first_maximum(chwn, padding):
    x = np.random.default_rng(1).integers(0, 3, (3, 2, 6, 8)).astype(np.float64)    # many exact ties
    pool = MaxPool2d(2, padding=padding)
    pool.forward(to_chwn(x) if chwn else x, True)
    assert pool._cache[0] == ("tiled" if padding == 0 else "windows")
    xp = np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), constant_values=-np.inf)
    N, C, H, W = xp.shape
    windows = xp[:, :, :H // 2 * 2, :W // 2 * 2].reshape(N, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    assert np.array_equal(pool.pieces(), windows.reshape(N, C, H // 2, W // 2, 4).argmax(-1))


def test_activation_pieces_split_at_zero():
    x = np.array([[-1.0, 0.0, 1e-300, 2.0]])
    for layer in (ReLU(), LeakyReLU(0.1), ELU(2.0)):
        layer.forward(x, True)
        assert layer.pieces().tolist() == [[False, False, True, True]], layer
