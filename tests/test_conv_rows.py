"""Convolution trained by rows (MEC lowering in the forward pass, per-row GEMMs in the
backward pass): the same values and gradients as the im2col path, as numerical gradients,
and the same bits for any thread count. PyTorch parity is in ``test_layers_parity.py``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnncli import threads
from cnncli.layers.conv import Conv2d
from cnncli.layers.windows import to_chwn


def by_rows(conv: Conv2d) -> Conv2d:
    """``conv`` with the per-layer rule opened up, so any geometry trains by rows."""
    conv.ROWS_MAX_OUT_CHANNELS = 10**9
    conv.ROWS_MIN_ROW_LENGTH = 1
    return conv


def step(conv: Conv2d, x: np.ndarray, dy: np.ndarray, rows: bool):
    """Forward and backward by rows or by im2col: output, input gradient, parameter gradients."""
    y = conv.forward(x, True) if rows else conv._forward_im2col(x)
    assert conv._cache[0] == ("rows" if rows else "im2col")
    dx = conv.backward(dy)
    return y, dx, {k: v.copy() for k, v in conv.grads.items()}


@settings(max_examples=60, deadline=None)
@given(C=st.integers(1, 4), O=st.integers(1, 5), kh=st.integers(1, 5), kw=st.integers(2, 5),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
       dw=st.integers(1, 2), H=st.integers(3, 10), W=st.integers(3, 10), bias=st.booleans())
def test_training_by_rows_equals_im2col_for_any_geometry(C, O, kh, kw, sh, sw, ph, pw, dw, H, W, bias):
    """Property (float64): output, input gradient and weight/bias gradients by rows equal the
    im2col path's, for any stride, padding, kernel and column dilation; among them strides
    larger than the kernel (input rows no output reads) and padding rows."""
    assume(C * kh * kw >= 16)
    conv = by_rows(Conv2d(C, O, (kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(1, dw), bias=bias,
                          dtype=np.float64, rng=np.random.default_rng(0)))
    try:
        _, H_out, W_out = conv.output_shape((C, H, W))
    except ValueError:
        assume(False)                                 # no output: the config check refuses it
    n = -(-1024 // W_out)                             # the smallest batch that lowers by rows
    assert conv.trains_by_rows(C, W_out, n) and not conv.trains_by_rows(C, W_out, n - 1)
    rng = np.random.default_rng(1)
    x, dy = rng.normal(size=(n, C, H, W)), rng.normal(size=(n, O, H_out, W_out))
    y1, dx1, g1 = step(conv, x, dy, rows=True)
    y2, dx2, g2 = step(conv, x, dy, rows=False)
    assert all(a.transpose(1, 2, 3, 0).flags.c_contiguous for a in (y1, dx1)) and dx1.shape == x.shape  # CHWN
    for a, b in [(y1, y2), (dx1, dx2)] + [(g1[k], g2[k]) for k in g2]:
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
    assert set(g1) == set(g2) == ({"weight", "bias"} if bias else {"weight"})


def test_training_by_rows_matches_numerical_gradients():
    """Central differences (float64) of sum(y * dy) at sampled weights, biases and inputs of a
    strided, padded conv trained by rows: an independent check of the row-wise gradients."""
    rng = np.random.default_rng(2)
    conv = by_rows(Conv2d(2, 3, (3, 4), stride=(2, 1), padding=(1, 2), bias=True, dtype=np.float64, rng=rng))
    n = 160                                           # W_out = 8: 1,280 GEMM columns per row
    x, dy = rng.normal(size=(n, 2, 7, 7)), rng.normal(size=(n, 3, 4, 8))
    assert conv.output_shape((2, 7, 7)) == (3, 4, 8)
    _, dx, grads = step(conv, x, dy, rows=True)
    h = 1e-6

    def loss(xv):
        return float(np.sum(conv.forward(xv, True) * dy))
    for name, index in [("weight", (0, 0, 0, 0)), ("weight", (2, 1, 2, 3)), ("weight", (1, 0, 1, 2)),
                        ("bias", (1,))]:
        p = conv.params[name]
        old = p[index]
        p[index] = old + h
        up = loss(x)
        p[index] = old - h
        down = loss(x)
        p[index] = old
        assert grads[name][index] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-6)
    for index in [(0, 0, 0, 0), (7, 1, 6, 6), (100, 0, 3, 2), (159, 1, 0, 5)]:
        xp, xm = x.copy(), x.copy()
        xp[index] += h
        xm[index] -= h
        assert dx[index] == pytest.approx((loss(xp) - loss(xm)) / (2 * h), rel=1e-6, abs=1e-6)


def test_training_by_rows_gives_the_same_bits_for_any_thread_count():
    """float32: the output rows, the weight gradient's fixed parts and the input rows run on
    the threads, each on one BLAS thread (``cnncli train --threads 1`` runs BLAS on one), so
    1, 2 and 3 threads give identical bits."""
    rng = np.random.default_rng(3)
    conv = Conv2d(32, 32, 5, stride=2, padding=2, dtype=np.float32, rng=rng)   # configs/mnist.yaml's
    x = to_chwn(rng.normal(size=(128, 32, 24, 24)).astype(np.float32))
    dy = to_chwn(rng.normal(size=(128, 32, 12, 12)).astype(np.float32))
    assert conv.trains_by_rows(32, 12, 128)
    results = []
    for n in (1, 2, 3):
        with threads.limit(n):                        # as cnncli train --threads n
            results.append(step(conv, x, dy, rows=True))
    for y, dx, grads in results[1:]:
        assert np.array_equal(y, results[0][0]) and np.array_equal(dx, results[0][1])
        assert all(np.array_equal(grads[k], results[0][2][k]) for k in grads)
    assert results[0][1].dtype == np.float32 and results[0][2]["weight"].dtype == np.float32


@pytest.mark.parametrize("C, O, k, s, p, hw, n, rows", [
    (32, 32, 3, 1, 0, 26, 128, True),       # configs/mnist.yaml's second conv
    (32, 32, 5, 2, 2, 24, 128, True),       # its strided 5x5 conv
    (32, 32, 3, 1, 1, 28, 128, True),       # configs/fashion-mnist.yaml's second conv
    (32, 32, 3, 1, 1, 28, 16, False),       # 28 * 16 = 448 GEMM columns per row: too few
    (32, 64, 3, 1, 1, 14, 128, False),      # configs/mnist-small.yaml's second conv: 64 output channels
    (1, 32, 3, 1, 1, 28, 128, False),       # a first conv on grey images: C * kw = 3
    (6, 16, 5, 1, 0, 14, 128, False),       # LeNet-5's C3: C * kw = 30
])
def test_which_convs_train_by_rows(C, O, k, s, p, hw, n, rows):
    """The rule (``Conv2d.trains_by_rows``) on the shipped networks' convs; trained by rows a
    conv keeps only its input for backward (no im2col matrix: C*k*k times fewer values)."""
    conv = Conv2d(C, O, k, stride=s, padding=p, dtype=np.float32, rng=np.random.default_rng(0))
    W_out = conv.output_shape((C, hw, hw))[2]
    assert conv.trains_by_rows(C, W_out, n) == rows
    if rows:
        x = to_chwn(np.zeros((n, C, hw, hw), dtype=np.float32))
        conv.forward(x, True)
        kind, shape, kept = conv._cache
        assert kind == "rows" and shape == x.shape and kept.size == x.size
        assert np.shares_memory(kept, x)              # the input itself, not a copy


def test_a_training_step_of_the_shipped_network_by_rows_equals_im2col(monkeypatch):
    """configs/mnist.yaml's network (float64, a batch of 96 so both of its 32-channel convs
    train by rows; dropout drawn alike): the logits and the loss gradients of every parameter
    equal those of the same step with every conv by im2col. A layer that changed a conv's
    kept input in place between forward and backward would show here."""
    from pathlib import Path

    from cnncli import assemble
    from cnncli.config import load
    from cnncli.losses import softmax_cross_entropy

    cfg = load(Path(__file__).resolve().parents[1] / "configs" / "mnist.yaml")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(96, 1, 28, 28))
    labels = rng.integers(0, 10, 96)
    calls = []
    by_rows_grad = Conv2d._input_grad_rows
    monkeypatch.setattr(Conv2d, "_input_grad_rows", lambda self, *a: calls.append(1) or by_rows_grad(self, *a))

    def one_step():
        calls.clear()
        model = assemble.build_model(cfg, (1, 28, 28), dtype=np.float64, rng=np.random.default_rng(0))
        logits = model.forward(x, training=True)
        _, dlogits = softmax_cross_entropy(logits, labels)
        model.backward(dlogits)
        return logits, {k: v.copy() for k, v in model.grads().items()}, len(calls)

    logits1, grads1, rows1 = one_step()
    monkeypatch.setattr(Conv2d, "ROWS_MAX_OUT_CHANNELS", 0)          # every conv by im2col
    logits2, grads2, rows2 = one_step()
    assert (rows1, rows2) == (2, 0)
    np.testing.assert_allclose(logits1, logits2, rtol=1e-10, atol=1e-12)
    assert grads1.keys() == grads2.keys() and len(grads1) > 20
    for k in grads1:
        np.testing.assert_allclose(grads1[k], grads2[k], rtol=1e-8, atol=1e-12, err_msg=k)
