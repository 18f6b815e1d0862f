"""Forward (and a few backward) results of every layer on small hand-computed cases.

Expected numbers are written out by hand or in closed form, never produced by
the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnncli.layers import LAYERS
from cnncli.layers.activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from cnncli.layers.conv import Conv2d
from cnncli.layers.dropout import Dropout, Dropout2d
from cnncli.layers.linear import Flatten, Linear
from cnncli.layers.norm import BatchNorm
from cnncli.layers.pool import AvgPool2d, GlobalAvgPool, MaxPool2d
from cnncli.layers.windows import to_chwn

try:  # tests/ is a rootdir (no __init__.py); fall back if it ever becomes a package
    from layer_cases import CASES, build_layer, make_input, randomize_state
except ImportError:  # pragma: no cover
    from tests.layer_cases import CASES, build_layer, make_input, randomize_state

F64 = np.float64
X33 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)   # [[1,2,3],[4,5,6],[7,8,9]]


def conv(in_channels, out_channels, kernel_size, weight, bias=None, **kw):
    layer = Conv2d(in_channels, out_channels, kernel_size, bias=bias is not None, dtype=F64, **kw)
    layer.params["weight"][...] = weight
    if bias is not None:
        layer.params["bias"][...] = bias
    return layer


# ------------------------------------------------------------------ conv2d

def test_conv_stride2_padding1_is_cross_correlation():
    # padded 5x5 input, asymmetric kernel (a flipped kernel would give other numbers)
    w = np.array([[1.0, 0, 2], [0, 3, 0], [4, 0, 5]]).reshape(1, 1, 3, 3)
    layer = conv(1, 1, 3, w, bias=[0.5], stride=2, padding=1)
    y = layer.forward(X33, training=True)
    # (0,0): 3*1 + 5*5 = 28; (0,1): 3*3 + 4*5 = 29; (1,0): 2*5 + 3*7 = 31; (1,1): 1*5 + 3*9 = 32
    np.testing.assert_allclose(y, [[[[28.5, 29.5], [31.5, 32.5]]]], rtol=0, atol=1e-12)
    assert layer.output_shape((1, 3, 3)) == (1, 2, 2)


def test_conv_no_padding_forward_and_backward():
    w = np.array([[1.0, 2], [3, 4]]).reshape(1, 1, 2, 2)
    layer = conv(1, 1, 2, w, bias=[0.0], padding=0)
    y = layer.forward(X33, training=True)
    np.testing.assert_allclose(y, [[[[37, 47], [67, 77]]]], atol=1e-12)
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    # each input pixel receives the kernel taps of every window covering it
    np.testing.assert_allclose(dx, [[[[1, 3, 2], [4, 10, 6], [3, 7, 4]]]], atol=1e-12)
    # dW[a, b] = sum of the 2x2 block of x starting at (a, b)
    np.testing.assert_allclose(layer.grads["weight"], [[[[12, 16], [24, 28]]]], atol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], [4], atol=1e-12)


def test_conv_same_even_kernel_pads_bottom_right():
    w = np.array([[1.0, 2], [3, 4]]).reshape(1, 1, 2, 2)
    layer = conv(1, 1, 2, w, padding="same")
    y = layer.forward(X33, training=True)
    expected = [[37, 47, 1 * 3 + 3 * 6],
                [67, 77, 1 * 6 + 3 * 9],
                [1 * 7 + 2 * 8, 1 * 8 + 2 * 9, 9]]
    np.testing.assert_allclose(y[0, 0], expected, atol=1e-12)


def test_conv_dilation_and_kernel_equal_to_input():
    w = np.array([[1.0, 2], [3, 4]]).reshape(1, 1, 2, 2)
    y = conv(1, 1, 2, w, dilation=2).forward(X33, training=True)
    np.testing.assert_allclose(y, [[[[1 * 1 + 2 * 3 + 3 * 7 + 4 * 9]]]], atol=1e-12)
    w3 = np.ones((2, 1, 3, 3))
    w3[1] *= -1
    y = conv(1, 2, 3, w3).forward(X33, training=True)
    np.testing.assert_allclose(y, [[[[45]], [[-45]]]], atol=1e-12)


def test_conv_groups_and_channel_sum():
    x = np.array([1.0, 2, 3, 4]).reshape(1, 2, 1, 2)          # ch0 [1, 2], ch1 [3, 4]
    grouped = conv(2, 2, 1, np.array([2.0, -1]).reshape(2, 1, 1, 1), groups=2)
    np.testing.assert_allclose(grouped.forward(x, training=True), [[[[2, 4]], [[-3, -4]]]], atol=1e-12)
    full = conv(2, 1, 1, np.array([2.0, -1]).reshape(1, 2, 1, 1))
    np.testing.assert_allclose(full.forward(x, training=True), [[[[2 - 3, 4 - 4]]]], atol=1e-12)


def test_conv_parameter_shapes():
    layer = Conv2d(4, 6, (3, 2), groups=2, dtype=F64)
    assert layer.params["weight"].shape == (6, 2, 3, 2)
    assert layer.params["bias"].shape == (6,)
    assert "bias" not in Conv2d(4, 6, 3, bias=False).params


def test_conv_output_shape():
    assert Conv2d(1, 4, 3).output_shape((1, 5, 5)) == (4, 3, 3)
    assert Conv2d(1, 2, 3, stride=2, padding=1).output_shape((1, 6, 7)) == (2, 3, 4)
    assert Conv2d(1, 2, (2, 4), padding="same").output_shape((1, 5, 6)) == (2, 5, 6)
    assert Conv2d(1, 2, 3, padding="valid").output_shape((1, 5, 6)) == (2, 3, 4)
    assert Conv2d(1, 2, 5, padding=1).output_shape((1, 3, 3)) == (2, 1, 1)   # 5x5 padded input
    assert Conv2d(1, 2, 2, stride=3).output_shape((1, 7, 8)) == (2, 2, 3)
    assert Conv2d(1, 2, 3, dilation=2).output_shape((1, 5, 6)) == (2, 1, 2)


@pytest.mark.parametrize("kwargs,in_shape", [
    ({"kernel_size": 5}, (1, 3, 3)),                        # kernel larger than the input
    ({"kernel_size": 5, "padding": [1, 0]}, (1, 3, 4)),     # ... than the padded input
    ({"kernel_size": 3, "dilation": 2}, (1, 4, 4)),         # dilated span 5 > 4
    ({"kernel_size": 3}, (2, 5, 5)),                        # wrong channel count
    ({"kernel_size": 3}, (1, 5)),                           # not an image
])
def test_conv_output_shape_rejects_impossible_geometry(kwargs, in_shape):
    with pytest.raises(ValueError):
        Conv2d(1, 2, **kwargs).output_shape(in_shape)


@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 3, "padding": "same", "stride": 2},     # torch refuses it too
    {"kernel_size": 3, "padding": "full"},
    {"kernel_size": 0},
    {"kernel_size": 3, "stride": 0},
    {"kernel_size": 3, "padding": -1},
    {"kernel_size": [3, 3, 3]},
    {"kernel_size": 3, "groups": 4},                        # 2 in / 2 out not divisible by 4
    {"kernel_size": 3, "padding_mode": "reflect"},
    {"kernel_size": 3, "init": "glorot"},
])
def test_conv_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        Conv2d(2, 2, **kwargs)


# ------------------------------------------------------------------ pooling

def test_maxpool_ties_send_gradient_to_first_maximum():
    layer = MaxPool2d(2)
    x = np.ones((1, 1, 2, 2))
    assert layer.forward(x, training=True)[0, 0, 0, 0] == 1
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 1, 1))), [[[[1, 0], [0, 0]]]])
    x = np.array([[0.0, 3], [3, 1]]).reshape(1, 1, 2, 2)
    layer.forward(x, training=True)
    np.testing.assert_array_equal(layer.backward(np.full((1, 1, 1, 1), 2.0)), [[[[0, 2], [0, 0]]]])


def test_maxpool_overlapping_windows_with_ties_accumulate():
    x = np.array([[1.0, 5, 5], [5, 5, 1], [1, 1, 1]]).reshape(1, 1, 3, 3)
    layer = MaxPool2d(2, stride=1)
    np.testing.assert_array_equal(layer.forward(x, training=True), np.full((1, 1, 2, 2), 5.0))
    # windows pick (0,1), (0,1), (1,0), (1,1): the first 5 in row-major order of each
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 2, 2))),
                                  [[[[0, 2, 0], [1, 1, 0], [0, 0, 0]]]])


def test_maxpool_padding_is_minus_infinity():
    x = -np.array([[1.0, 2], [3, 4]]).reshape(1, 1, 2, 2)
    layer = MaxPool2d(2, stride=2, padding=1)
    np.testing.assert_array_equal(layer.forward(x, training=True), x)   # each window holds one pixel
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 2, 2))), np.ones((1, 1, 2, 2)))


def test_maxpool_ceil_mode():
    np.testing.assert_array_equal(MaxPool2d(2).forward(X33, training=True), [[[[5]]]])
    layer = MaxPool2d(2, ceil_mode=True)
    np.testing.assert_array_equal(layer.forward(X33, training=True), [[[[5, 6], [8, 9]]]])
    dx = layer.backward(np.array([1.0, 2, 3, 4]).reshape(1, 1, 2, 2))
    np.testing.assert_array_equal(dx, [[[[0, 0, 0], [0, 1, 2], [0, 3, 4]]]])


def test_maxpool_dilation():
    x = np.arange(16.0).reshape(1, 1, 4, 4)[..., ::-1].copy()    # rows [3,2,1,0], [7,6,5,4], ...
    y = MaxPool2d(2, stride=1, dilation=2).forward(x, training=True)
    # window (i, j) reads x[i, j], x[i, j+2], x[i+2, j], x[i+2, j+2]; max is x[i+2, j]
    np.testing.assert_array_equal(y, [[[[11, 10], [15, 14]]]])


def test_avgpool_count_include_pad():
    # windows of the 5x5 padded input: {1}, {2,3}, {4,7}, {5,6,8,9}
    include = AvgPool2d(2, stride=2, padding=1, count_include_pad=True)
    exclude = AvgPool2d(2, stride=2, padding=1, count_include_pad=False)
    np.testing.assert_allclose(include.forward(X33, training=True), [[[[1 / 4, 5 / 4], [11 / 4, 28 / 4]]]])
    np.testing.assert_allclose(exclude.forward(X33, training=True), [[[[1, 5 / 2], [11 / 2, 28 / 4]]]])
    np.testing.assert_allclose(include.backward(np.ones((1, 1, 2, 2))), np.full((1, 1, 3, 3), 0.25))
    np.testing.assert_allclose(exclude.backward(np.ones((1, 1, 2, 2))),
                               [[[[1, 0.5, 0.5], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]]])


def test_avgpool_ceil_mode_overhang_is_never_counted():
    for count_include_pad in (True, False):
        layer = AvgPool2d(2, ceil_mode=True, count_include_pad=count_include_pad)
        # windows {1,2,4,5}, {3,6}, {7,8}, {9}: divisors 4, 2, 2, 1
        np.testing.assert_allclose(layer.forward(X33, training=True), [[[[3, 4.5], [7.5, 9]]]])


def test_avgpool_ceil_mode_with_padding():
    # one row [1, 2, 3, 4], kernel 3, stride 2, pad 1, ceil: windows start at -1, 1, 3
    x = np.array([1.0, 2, 3, 4]).reshape(1, 1, 1, 4)
    include = AvgPool2d((1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True, count_include_pad=True)
    exclude = AvgPool2d((1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True, count_include_pad=False)
    # sums 0+1+2, 2+3+4, 4+0(+overhang): include divides by 3, 3, 2 (overhang not counted)
    np.testing.assert_allclose(include.forward(x, training=True), [[[[3 / 3, 9 / 3, 4 / 2]]]])
    np.testing.assert_allclose(exclude.forward(x, training=True), [[[[3 / 2, 9 / 3, 4 / 1]]]])
    assert include.output_shape((1, 1, 4)) == (1, 1, 3)


def test_ceil_mode_window_may_overhang_an_input_smaller_than_the_kernel():
    # one row [1, 2, 3], kernel 2, stride 2, ceil: windows {1, 2} and {3}; the first
    # window's second row and the last one's second column lie past the input (torch gives
    # this 1x2 output too, although floor mode has none)
    x = np.array([1.0, 2, 3]).reshape(1, 1, 1, 3)
    mx, avg = MaxPool2d(2, ceil_mode=True), AvgPool2d(2, ceil_mode=True)
    assert mx.output_shape((1, 1, 3)) == avg.output_shape((1, 1, 3)) == (1, 1, 2)
    np.testing.assert_array_equal(mx.forward(x, training=True), [[[[2, 3]]]])
    np.testing.assert_allclose(avg.forward(x, training=True), [[[[1.5, 3]]]])
    np.testing.assert_allclose(avg.backward(np.ones((1, 1, 1, 2))), [[[[0.5, 0.5, 1]]]])
    assert MaxPool2d(2, ceil_mode=True).output_shape((4, 1, 1)) == (4, 1, 1)
    with pytest.raises(ValueError):
        MaxPool2d(2).output_shape((1, 1, 3))
    with pytest.raises(ValueError):
        MaxPool2d(3, stride=2, ceil_mode=True).output_shape((1, 1, 3))   # overhang of 2 >= stride


def test_avgpool_divisor_override():
    y = AvgPool2d(2, stride=1, divisor_override=3).forward(X33, training=True)
    np.testing.assert_allclose(y, [[[[12 / 3, 16 / 3], [24 / 3, 28 / 3]]]])


def test_global_avgpool():
    x = np.arange(12.0).reshape(1, 2, 2, 3)
    np.testing.assert_allclose(GlobalAvgPool().forward(x, training=True), [[2.5, 8.5]])
    layer = GlobalAvgPool(keepdims=True)
    np.testing.assert_allclose(layer.forward(x, training=True), [[[[2.5]], [[8.5]]]])
    np.testing.assert_allclose(layer.backward(np.array([6.0, 12]).reshape(1, 2, 1, 1)),
                               np.concatenate([np.ones((1, 1, 2, 3)), 2 * np.ones((1, 1, 2, 3))], axis=1))
    assert GlobalAvgPool().output_shape((3, 4, 5)) == (3,)
    assert GlobalAvgPool(keepdims=True).output_shape((3, 4, 5)) == (3, 1, 1)


def test_pool_output_shape():
    assert MaxPool2d(2).output_shape((3, 5, 5)) == (3, 2, 2)
    assert MaxPool2d(2, ceil_mode=True).output_shape((3, 5, 5)) == (3, 3, 3)
    assert MaxPool2d(3, stride=2, padding=1).output_shape((3, 5, 6)) == (3, 3, 3)
    # ceil mode: a last window that would start in the bottom/right padding is dropped
    assert MaxPool2d(2, stride=3, padding=1, ceil_mode=True).output_shape((1, 4, 5)) == (1, 2, 2)
    assert AvgPool2d(2, padding=1).output_shape((2, 1, 1)) == (2, 1, 1)
    assert MaxPool2d(2, stride=1, dilation=2).output_shape((1, 5, 6)) == (1, 3, 4)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_pool_rejects_impossible_geometry(cls):
    with pytest.raises(ValueError):
        cls(3).output_shape((1, 2, 2))
    with pytest.raises(ValueError):
        cls(2).output_shape((4, 4))                 # not an image
    with pytest.raises(ValueError):
        cls(2, padding=2)                           # padding more than half the kernel
    with pytest.raises(ValueError):
        cls(2, stride=0)


# ------------------------------------------------------------------ batchnorm

X_BN = np.array([[1.0, 0], [2, 0], [3, 4], [4, 4]])   # feature 0: mean 2.5, var 1.25; feature 1: mean 2, var 4


def test_batchnorm_training_statistics_and_running_update():
    layer = BatchNorm(2, dtype=F64)
    layer.params["weight"][...] = [2.0, -1.0]
    layer.params["bias"][...] = [0.5, 1.0]
    y = layer.forward(X_BN, training=True)
    xhat0 = (X_BN[:, 0] - 2.5) / math.sqrt(1.25 + 1e-5)      # biased variance normalizes
    xhat1 = (X_BN[:, 1] - 2.0) / math.sqrt(4.0 + 1e-5)
    np.testing.assert_allclose(y[:, 0], 2 * xhat0 + 0.5, rtol=1e-12)
    np.testing.assert_allclose(y[:, 1], -1 * xhat1 + 1.0, rtol=1e-12)
    # running = 0.9 * running + 0.1 * batch; running_var takes the unbiased variance (n - 1 = 3)
    np.testing.assert_allclose(layer.buffers["running_mean"], [0.25, 0.2], rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], [0.9 + 0.1 * 5 / 3, 0.9 + 0.1 * 16 / 3], rtol=1e-12)
    assert int(layer.buffers["num_batches_tracked"]) == 1


def test_batchnorm_eval_uses_running_statistics_and_leaves_them():
    layer = BatchNorm(2, dtype=F64)
    layer.forward(X_BN, training=True)
    x = np.array([[2.5, 2.0], [0.25, 0.2]])
    y = layer.forward(x, training=False)
    rm, rv = [0.25, 0.2], [0.9 + 0.1 * 5 / 3, 0.9 + 0.1 * 16 / 3]
    np.testing.assert_allclose(y, (x - rm) / np.sqrt(np.add(rv, 1e-5)), rtol=1e-12)
    np.testing.assert_allclose(y[1], [0, 0], atol=1e-15)
    np.testing.assert_allclose(layer.buffers["running_mean"], rm, rtol=1e-12)
    assert int(layer.buffers["num_batches_tracked"]) == 1
    # a single sample is fine in evaluation
    assert layer.forward(x[:1], training=False).shape == (1, 2)


def test_batchnorm_4d_statistics_over_batch_and_space():
    x = np.array([[[[1.0, 3]], [[0, 0]]], [[[5, 7]], [[0, 8]]]])   # (2, 2, 1, 2)
    layer = BatchNorm(2, dtype=F64)
    y = layer.forward(x, training=True)
    # channel 0: {1,3,5,7} mean 4 var 5; channel 1: {0,0,0,8} mean 2 var 12
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 4) / math.sqrt(5 + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(y[:, 1], (x[:, 1] - 2) / math.sqrt(12 + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_mean"], [0.4, 0.2], rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], [0.9 + 0.1 * 20 / 3, 0.9 + 0.1 * 16], rtol=1e-12)


def test_batchnorm_momentum_none_is_cumulative_average():
    b1 = np.array([1.0, 2, 3, 4]).reshape(4, 1)      # mean 2.5, unbiased var 5/3
    b2 = np.array([3.0, 5, 7, 3]).reshape(4, 1)      # mean 4.5, unbiased var 11/3
    layer = BatchNorm(1, momentum=None, dtype=F64)
    layer.forward(b1, training=True)
    layer.forward(b2, training=True)
    np.testing.assert_allclose(layer.buffers["running_mean"], [3.5], rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], [(5 / 3 + 11 / 3) / 2], rtol=1e-12)
    assert int(layer.buffers["num_batches_tracked"]) == 2
    ema = BatchNorm(1, dtype=F64)
    ema.forward(b1, training=True)
    ema.forward(b2, training=True)
    np.testing.assert_allclose(ema.buffers["running_mean"], [0.9 * 0.25 + 0.1 * 4.5], rtol=1e-12)


def test_batchnorm_without_running_stats_uses_batch_in_eval():
    layer = BatchNorm(2, track_running_stats=False, affine=False, dtype=F64)
    assert layer.buffers == {} and layer.params == {}
    y = layer.forward(X_BN, training=False)
    np.testing.assert_allclose(y[:, 0], (X_BN[:, 0] - 2.5) / math.sqrt(1.25 + 1e-5), rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 3), (1, 2, 1, 1)])
def test_batchnorm_single_value_per_channel_in_training_raises(shape):
    layer = BatchNorm(shape[1], dtype=F64)
    with pytest.raises(ValueError):
        layer.forward(np.ones(shape), training=True)
    assert int(layer.buffers["num_batches_tracked"]) == 0


def test_batchnorm_output_shape_and_options():
    assert BatchNorm(3).output_shape((3, 4, 4)) == (3, 4, 4)
    assert BatchNorm(3).output_shape((3,)) == (3,)
    for bad in [(3, 4), (2, 4, 4), (4,)]:
        with pytest.raises(ValueError):
            BatchNorm(3).output_shape(bad)
    for kwargs in [{"eps": 0}, {"momentum": 1.5}, {"momentum": -0.1}, {"affine": "yes"}]:
        with pytest.raises(ValueError):
            BatchNorm(3, **kwargs)


# ------------------------------------------------------------------ dropout

def test_dropout_identity_cases():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(Dropout(0.0).forward(x, training=True), x)
    for cls in (Dropout, Dropout2d):
        layer = cls(0.5)
        x4 = np.arange(24.0).reshape(2, 3, 2, 2)
        np.testing.assert_array_equal(layer.forward(x4, training=False), x4)
        np.testing.assert_array_equal(layer.backward(np.ones_like(x4)), np.ones_like(x4))


def test_dropout_scales_kept_elements():
    layer = Dropout(0.25, rng=np.random.default_rng(0))
    x = np.full((100, 100), 3.0)
    y = layer.forward(x, training=True)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 3.0 / 0.75, rtol=1e-15)
    # 10^4 Bernoulli(0.75) draws: sd 0.0043 of the kept fraction
    assert abs(kept.mean() - 0.75) < 0.03
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, np.where(kept, 1 / 0.75, 0.0))


def test_dropout2d_drops_whole_channels():
    layer = Dropout2d(0.5, rng=np.random.default_rng(1))
    x = np.ones((8, 16, 3, 3))
    y = layer.forward(x, training=True)
    per_channel = y.reshape(8, 16, 9)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))   # constant per (n, c)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 0.3 < (per_channel[:, :, 0] == 0).mean() < 0.7
    with pytest.raises(ValueError):
        layer.output_shape((5,))


def test_dropout_rejects_bad_p():
    for p in (-0.1, 1.0, 2, "half"):
        with pytest.raises(ValueError):
            Dropout(p)


# ------------------------------------------------------------------ linear, flatten

def test_linear_forward_and_backward():
    layer = Linear(3, 2, dtype=F64)
    assert layer.params["weight"].shape == (3, 2) and layer.params["bias"].shape == (2,)
    layer.params["weight"][...] = [[1, 0], [0, 1], [1, 1]]
    layer.params["bias"][...] = [0.5, -1]
    x = np.array([[1.0, 2, 3], [0, -1, 1]])
    np.testing.assert_allclose(layer.forward(x, training=True), [[4.5, 4], [1.5, -1]])
    dx = layer.backward(np.ones((2, 2)))
    np.testing.assert_allclose(dx, [[1, 1, 2], [1, 1, 2]])
    np.testing.assert_allclose(layer.grads["weight"], [[1, 1], [1, 1], [4, 4]])
    np.testing.assert_allclose(layer.grads["bias"], [2, 2])


def test_linear_output_shape():
    assert Linear(5, 3).output_shape((5,)) == (3,)
    assert Linear.inferred["in_features"]((2, 3, 4)) == 24
    with pytest.raises(ValueError):
        Linear(24, 3).output_shape((2, 3, 4))      # needs a flatten first
    with pytest.raises(ValueError):
        Linear(5, 3).output_shape((4,))


def test_flatten():
    x = np.arange(12.0).reshape(2, 2, 3)
    layer = Flatten()
    np.testing.assert_array_equal(layer.forward(x, training=True), [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    np.testing.assert_array_equal(layer.backward(np.arange(12.0).reshape(2, 6)), x)
    assert layer.output_shape((2, 3, 4)) == (24,)


# ------------------------------------------------------------------ activations

def _fb(layer, x, dy=None):
    x = np.asarray(x, dtype=F64)
    y = layer.forward(x, training=True)
    return y, layer.backward(np.ones_like(y) if dy is None else np.asarray(dy, dtype=F64))


def test_relu_and_leaky_relu():
    y, dx = _fb(ReLU(), [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(y, [0, 0, 2])
    np.testing.assert_array_equal(dx, [0, 0, 1])                 # gradient 0 at the kink, as torch
    y, dx = _fb(LeakyReLU(0.1), [-2.0, 0.0, 3.0])
    np.testing.assert_allclose(y, [-0.2, 0, 3])
    np.testing.assert_allclose(dx, [0.1, 0.1, 1])
    y, _ = _fb(LeakyReLU(), [-100.0])
    np.testing.assert_allclose(y, [-1.0])                        # default slope 0.01


def test_elu():
    y, dx = _fb(ELU(), [-1.0, 0.0, 2.0])
    np.testing.assert_allclose(y, [math.exp(-1) - 1, 0, 2], rtol=1e-15)
    np.testing.assert_allclose(dx, [math.exp(-1), 1, 1], rtol=1e-15)
    y, dx = _fb(ELU(alpha=2.0), [-1.0])
    np.testing.assert_allclose(y, [2 * (math.exp(-1) - 1)], rtol=1e-15)
    np.testing.assert_allclose(dx, [2 * math.exp(-1)], rtol=1e-15)


def test_gelu_exact_and_tanh():
    phi1, phi2 = 0.8413447460685429, 0.9772498680518208          # standard normal CDF at 1 and 2
    pdf1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    y, dx = _fb(GELU(), [-1.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(y, [-(1 - phi1), 0, phi1, 2 * phi2], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dx[1:3], [0.5, phi1 + pdf1], rtol=1e-14)
    c = math.sqrt(2 / math.pi)
    y, dx = _fb(GELU(approximate="tanh"), [1.0, 0.0])
    t = math.tanh(c * 1.044715)
    np.testing.assert_allclose(y, [0.5 * (1 + t), 0], rtol=1e-14)
    np.testing.assert_allclose(dx, [0.5 * (1 + t) + 0.5 * (1 - t * t) * c * (1 + 3 * 0.044715), 0.5], rtol=1e-14)


def test_sigmoid_and_tanh():
    with np.errstate(over="raise", invalid="raise"):             # no overflow at large |x|
        y, dx = _fb(Sigmoid(), [0.0, math.log(3), -math.log(3), 1000.0, -1000.0])
    np.testing.assert_allclose(y, [0.5, 0.75, 0.25, 1, 0], rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(dx, [0.25, 0.1875, 0.1875, 0, 0], rtol=1e-14, atol=1e-300)
    y, dx = _fb(Tanh(), [0.0, math.log(2)])
    np.testing.assert_allclose(y, [0, 0.6], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dx, [1, 0.64], rtol=1e-14)


def test_softmax_and_log_softmax():
    x = [[0.0, math.log(2), math.log(3)], [1000.0, 1000.0, 1000.0]]
    y, dx = _fb(Softmax(), x, dy=[[1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(y, [[1 / 6, 2 / 6, 3 / 6], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-14)
    np.testing.assert_allclose(dx[0], [5 / 36, -2 / 36, -3 / 36], rtol=1e-14)
    y, dx = _fb(LogSoftmax(), x, dy=[[1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(y, np.log([[1 / 6, 2 / 6, 3 / 6], [1 / 3, 1 / 3, 1 / 3]]), rtol=1e-14)
    np.testing.assert_allclose(dx[0], [5 / 6, -2 / 6, -3 / 6], rtol=1e-14)


def test_softmax_over_channels_of_images_and_dim_checks():
    x = np.zeros((1, 2, 1, 2))
    x[0, 1, 0, 0] = math.log(3)                                  # channel probabilities 1/4, 3/4 at (0, 0)
    y = Softmax(dim=1).forward(x, training=True)
    np.testing.assert_allclose(y[0, :, 0, 0], [0.25, 0.75], rtol=1e-14)
    np.testing.assert_allclose(y[0, :, 0, 1], [0.5, 0.5], rtol=1e-14)
    y = Softmax(dim=-1).forward(x, training=True)
    np.testing.assert_allclose(y[0, 1, 0], [0.75, 0.25], rtol=1e-14)
    for cls in (Softmax, LogSoftmax):
        assert cls(dim=-1).output_shape((2, 3)) == (2, 3)
        for dim in (0, 2, -2):                                   # batch axis, or out of range
            with pytest.raises(ValueError):
                cls(dim=dim).output_shape((5,))


# ------------------------------------------------------------------ initialisers

@pytest.mark.parametrize("init,spread", [
    ("he_normal", lambda fi, fo: ("std", math.sqrt(2 / fi))),
    ("xavier_normal", lambda fi, fo: ("std", math.sqrt(2 / (fi + fo)))),
    ("he_uniform", lambda fi, fo: ("bound", math.sqrt(6 / fi))),
    ("xavier_uniform", lambda fi, fo: ("bound", math.sqrt(6 / (fi + fo)))),
    ("torch_default", lambda fi, fo: ("bound", 1 / math.sqrt(fi))),
])
def test_initialisers_use_torch_fans(init, spread):
    # conv fans: in_channels/groups*kh*kw = 2*3*3 and out_channels*kh*kw = 400*3*3
    layers = [(Linear(300, 200, init=init, rng=np.random.default_rng(0), dtype=F64), 300, 200),
              (Conv2d(8, 400, 3, groups=4, init=init, rng=np.random.default_rng(0), dtype=F64), 18, 3600)]
    for layer, fan_in, fan_out in layers:
        w, b = layer.params["weight"], layer.params["bias"]
        kind, value = spread(fan_in, fan_out)
        if kind == "std":
            assert abs(w.mean()) < 0.02 * value
            assert w.std() == pytest.approx(value, rel=0.02)
        else:
            assert np.abs(w).max() <= value and np.abs(w).max() > 0.98 * value
            assert w.std() == pytest.approx(value / math.sqrt(3), rel=0.02)
        if init == "torch_default":                        # torch draws the bias with the same bound
            assert np.abs(b).max() <= value and np.any(b != 0)
        else:
            assert np.all(b == 0)


# ------------------------------------------------------------------ every layer

FIRST_CASE = {}
for _p in CASES:
    FIRST_CASE.setdefault(_p.values[0].name, _p.values[0])


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backward_before_forward_raises(name):
    layer = build_layer(FIRST_CASE[name])
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((2, *layer.output_shape(FIRST_CASE[name].in_shape))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_dtype_is_preserved(case, dtype):
    rng = np.random.default_rng(0)
    layer = build_layer(case, dtype)
    randomize_state(layer, rng)
    for arr in (*layer.params.values(), layer.buffers.get("running_mean"), layer.buffers.get("running_var")):
        assert arr is None or arr.dtype == dtype
    x = make_input(case, rng, dtype)
    y = layer.forward(x, training=case.training)
    assert y.dtype == dtype
    assert y.shape == (case.batch, *layer.output_shape(case.in_shape))
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == dtype and dx.shape == x.shape
    for name, g in layer.grads.items():
        assert g.dtype == dtype, name
    for name in ("running_mean", "running_var"):
        if name in layer.buffers:
            assert layer.buffers[name].dtype == dtype


def _strided(a):
    """A non-contiguous copy of ``a`` (every other element of a wider last axis)."""
    wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def _chwn(a):
    """``a`` stored in CHWN memory order, the order a model keeps image activations in."""
    return to_chwn(a) if a.ndim == 4 else a


@pytest.mark.parametrize("case", CASES)
def test_strided_inputs_and_no_mutation(case):
    """Layers see views and, inside a model, CHWN-ordered arrays: results must not depend
    on memory layout, and neither x nor dy may be modified in place."""
    results = []
    for make in (np.ascontiguousarray, _strided, _chwn):
        rng = np.random.default_rng(5)
        layer = build_layer(case, np.float64, seed=1)          # same dropout mask both times
        randomize_state(layer, rng)
        x = make(make_input(case, rng))
        x_before = x.copy()
        y = layer.forward(x, training=case.training)
        dy = make(rng.normal(0.0, 1.0, y.shape))
        dy_before = dy.copy()
        dx = layer.backward(dy)
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(dy, dy_before)
        results.append((y.copy(), dx.copy(), {k: g.copy() for k, g in layer.grads.items()}))
    y0, dx0, g0 = results[0]
    for y1, dx1, g1 in results[1:]:
        np.testing.assert_allclose(y1, y0, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(dx1, dx0, rtol=1e-13, atol=1e-14)
        for k in g0:
            np.testing.assert_allclose(g1[k], g0[k], rtol=1e-13, atol=1e-14)
