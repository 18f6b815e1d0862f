"""The speed work must not change results: CHWN memory order inside a model, chunked
evaluation, released caches, and float32 end to end in a training step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnncli.datasets import Dataset
from cnncli.layers.windows import is_chwn
from cnncli.model import LayerSpec, build
from cnncli.optim import OPTIMIZERS
from cnncli.data import pixel_lut
from cnncli.loop import run_batches

# the shape of configs/mnist-small.yaml, smaller
SPECS = [
    ("conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}),
    ("batchnorm", {}),
    ("relu", {}),
    ("maxpool2d", {"kernel_size": 2}),
    ("conv2d", {"out_channels": 6, "kernel_size": 3, "padding": 1}),
    ("batchnorm", {}),
    ("relu", {}),
    ("maxpool2d", {"kernel_size": 2}),
    ("dropout", {"p": 0.25}),
    ("flatten", {}),
    ("linear", {"out_features": 16}),
    ("relu", {}),
    ("dropout", {"p": 0.5}),
    ("linear", {"out_features": 10}),
]


def make_model(dtype=np.float64, seed=0, specs=SPECS, shape=(1, 12, 12)):
    layer_specs = [LayerSpec(t, o, f"model.layers[{i}]") for i, (t, o) in enumerate(specs)]
    return build(layer_specs, shape, dtype=dtype, seed=seed)


def _chain_nchw(model, x, training, dy):
    """Forward and backward layer by layer, every array C-contiguous NCHW between layers."""
    for layer in model.layers:
        x = np.ascontiguousarray(layer.forward(np.ascontiguousarray(x), training))
    out = x
    for layer in model.layers[::-1]:
        dy = np.ascontiguousarray(layer.backward(np.ascontiguousarray(dy)))
    return out, dy


def test_model_in_chwn_order_matches_the_plain_nchw_chain():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 1, 12, 12))
    dy = rng.normal(size=(6, 10))
    a, b = make_model(), make_model()
    y_ref, dx_ref = _chain_nchw(a, x, True, dy)
    y = b.forward(x, training=True)
    dx = b.backward(dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    for la, lb in zip(a.layers, b.layers):
        for k in la.grads:
            np.testing.assert_allclose(lb.grads[k], la.grads[k], rtol=1e-12, atol=1e-12)
        for k in la.buffers:
            np.testing.assert_allclose(lb.buffers[k], la.buffers[k], rtol=1e-12, atol=1e-12)


def test_activations_stay_in_chwn_order_through_the_conv_stack():
    model = make_model()
    x = np.random.default_rng(2).normal(size=(5, 1, 12, 12))
    seen = []
    for layer in model.layers:
        original = layer.forward

        def spy(h, training, _f=original, _name=layer.type_name):
            out = _f(h, training)
            if out.ndim == 4:
                seen.append((_name, is_chwn(out)))
            return out
        layer.forward = spy
    model.forward(x, training=True)
    assert seen and all(ok for _, ok in seen), seen


def test_chunked_evaluation_equals_one_pass():
    model = make_model(dtype=np.float32)
    n = 4 * model.EVAL_MIN_CHUNK + 37
    assert len(model.eval_chunks(n)) == 5                # 4 chunks
    x = np.random.default_rng(3).normal(size=(n, 1, 12, 12)).astype(np.float32)
    whole = x.copy()
    for layer in model.layers:                       # one pass, no chunking
        whole = layer.forward(whole, False)
    chunked = model.forward(x, training=False)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    assert all(layer._cache is None for layer in model.layers)


@pytest.mark.parametrize("n, out_channels, stride, bias, rows", [
    (3, 5, (1, 2), True, 4), (200, 5, (1, 2), True, 4),
    (200, 6, (2, 1), False, 4),          # 4 output rows per GEMM, 2 input rows apart; 5 = 4 + 1 rows
    (200, 11, (1, 1), True, 2), (200, 16, (1, 2), False, 1), (200, 16, (1, 1), True, 1)])
def test_conv_evaluation_path_matches_forward(n, out_channels, stride, bias, rows):
    """``Conv2d.infer`` lowers by rows (MEC) for large batches, R output rows per GEMM (the
    last group shorter), and falls back to the im2col forward for small ones; all give
    forward's values, dtype and CHWN order."""
    from cnncli.layers.conv import Conv2d
    rng = np.random.default_rng(6)
    for dtype in (np.float64, np.float32):
        conv = Conv2d(3, out_channels, 3, stride=stride, padding=1, bias=bias, dtype=dtype, rng=rng)
        assert conv.rows_per_gemm() == rows
        x = rng.normal(size=(n, 3, 10, 12)).astype(dtype)
        if not bias:                         # forward without a bias: the reference must not have one
            assert "bias" not in conv.params
        assert conv.lowers_by_rows(3, conv._out_hw(10, 12)[1], n) == (n == 200)
        y = conv.infer(x)
        assert y.dtype == dtype and is_chwn(y) and conv._cache is None
        tol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(y, conv.forward(x, False), rtol=tol, atol=tol)


def test_eval_chunks_by_hand():
    """Bounds from the largest layer output (EVAL_CHUNK_BYTES), a multiple of 4 chunks while
    each keeps EVAL_MIN_CHUNK images, otherwise one pass."""
    from cnncli.model import LayerSpec, build
    lenet = build([LayerSpec("conv2d", {"out_channels": 6, "kernel_size": 5, "padding": 2}), LayerSpec("tanh", {}),
                   LayerSpec("flatten", {}), LayerSpec("linear", {"out_features": 10})], (1, 28, 28), seed=0)
    # 6*28*28*4 = 18,816 bytes an image: 16 MiB holds 891 images
    assert lenet.eval_chunks(1000) == [0, 250, 500, 750, 1000]      # 2 chunks by memory, rounded up to 4
    assert lenet.eval_chunks(256) == [0, 64, 128, 192, 256]
    assert lenet.eval_chunks(255) is None                             # 4 chunks would hold 63 images
    assert lenet.eval_chunks(3565) == [3565 * i // 8 for i in range(9)]   # 5 by memory -> 8
    wide = build([LayerSpec("conv2d", {"out_channels": 32, "kernel_size": 3, "padding": 1}),
                  LayerSpec("flatten", {}), LayerSpec("linear", {"out_features": 10})], (1, 28, 28), seed=0)
    # 32*28*28*4 = 100,352 bytes: 167 images a chunk, so 1000 takes 6 -> 8 chunks of 125
    assert wide.eval_chunks(1000) == [125 * i for i in range(9)]
    assert wide.eval_chunks(300) == [0, 75, 150, 225, 300]            # 2 by memory -> 4 of 75
    assert wide.eval_chunks(200) == [0, 100, 200]                     # 2 by memory; 4 would hold 50


def test_batch_statistics_in_evaluation_are_not_chunked():
    specs = [("conv2d", {"out_channels": 2, "kernel_size": 3}),
             ("batchnorm", {"track_running_stats": False}), ("flatten", {}), ("linear", {"out_features": 3})]
    model = make_model(specs=specs, shape=(1, 5, 5))
    n = 4 * model.EVAL_MIN_CHUNK + 10
    assert model.eval_chunks(n) is not None              # chunked, were it not for the batchnorm
    x = np.random.default_rng(4).normal(size=(n, 1, 5, 5))
    whole = x
    for layer in model.layers:
        whole = layer.forward(whole, False)
    np.testing.assert_allclose(model.forward(x, training=False), whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_a_training_step_never_upcasts_to_float64(optimizer):
    """Every activation, cache, gradient, buffer and optimizer state of a float32 training
    step is float32 (integer/bool masks aside)."""
    model = make_model(dtype=np.float32)
    opts = {"momentum": 0.9} if optimizer == "sgd" else {}
    opt = OPTIMIZERS[optimizer](model.params(), **opts)
    floats = []

    def record(a):
        if isinstance(a, np.ndarray):
            floats.append(a.dtype)
        elif isinstance(a, (tuple, list)):
            for item in a:
                record(item)

    for layer in model.layers:
        f, b = layer.forward, layer.backward

        def fwd(h, training, _f=f, _l=layer):
            out = _f(h, training)
            record(out)
            record(_l._cache)
            return out

        def bwd(dy, _b=b):
            record(dy)
            out = _b(dy)
            record(out)
            return out
        layer.forward, layer.backward = fwd, bwd
    rng = np.random.default_rng(5)
    ds = Dataset(rng.integers(0, 256, (40, 1, 12, 12), dtype=np.uint8), rng.integers(0, 10, 40), "generated")
    run_batches(model, ds, 16, pixel_lut(0.1307, 0.3081), training=True, optimizer=opt)
    record(list(model.params().values()))
    record(list(model.grads().values()))
    record([a for a in model.buffers().values() if a.dtype.kind == "f"])
    record(list(opt.state_arrays().values()))
    bad = {str(d) for d in floats if d.kind == "f" and d != np.float32}
    assert floats and not bad, bad


def test_time_command_reports_every_layer(tmp_path):
    import json

    from typer.testing import CliRunner

    from cnncli.cli import app

    result = CliRunner().invoke(app, ["time", "configs/tiny.yaml", "--batch-size", "16", "--iterations", "3",
                                      "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [l["type"] for l in out["layers"]] == ["avgpool2d", "conv2d", "batchnorm", "relu", "maxpool2d",
                                                   "dropout", "flatten", "linear"]
    assert all(l["forward_ms"] > 0 and l["backward_ms"] >= 0 for l in out["layers"])
    assert out["step_ms"] > 0
    assert out["images_per_s"] == pytest.approx(16 / (out["step_ms"] / 1e3))
    table = CliRunner().invoke(app, ["time", "configs/tiny.yaml", "-b", "8", "-n", "2"])
    assert table.exit_code == 0 and "images/s" in table.output and "maxpool2d" in table.output
    bad = CliRunner().invoke(app, ["time", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


@settings(max_examples=60, deadline=None)
@given(C=st.integers(2, 4), O=st.integers(1, 5), kh=st.integers(2, 4), kw=st.integers(2, 4),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
       dw=st.integers(1, 2), H=st.integers(4, 9), W=st.integers(4, 9), bias=st.booleans())
def test_conv_evaluation_by_rows_equals_forward_for_any_geometry(C, O, kh, kw, sh, sw, ph, pw, dw, H, W, bias):
    """Property: wherever MEC lowering applies, ``infer`` gives ``forward``'s values (float64)."""
    from cnncli.layers.conv import Conv2d
    assume(C * kh * kw >= 16)
    conv = Conv2d(C, O, (kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(1, dw), bias=bias,
                  dtype=np.float64, rng=np.random.default_rng(0))
    try:
        _, H_out, W_out = conv.output_shape((C, H, W))
    except ValueError:
        assume(False)                                 # no output: the config check refuses it
    n = -(-1024 // W_out)                             # the smallest batch that takes the MEC path
    assert conv.lowers_by_rows(C, W_out, n)
    x = np.random.default_rng(1).normal(size=(n, C, H, W))
    np.testing.assert_allclose(conv.infer(x), conv.forward(x, False), rtol=1e-12, atol=1e-12)
