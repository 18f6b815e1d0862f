"""The option grid shared by the layer gradcheck and torch parity tests, and helpers
to build a layer and its inputs the way ``model.build`` would (inferred sizes filled in)."""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import numpy as np
import pytest

from cnncli.layers import LAYERS


class Case(NamedTuple):
    name: str
    options: dict[str, Any]
    in_shape: tuple[int, ...]      # one sample, no batch axis
    training: bool = True
    batch: int = 2


def _case(name, options, in_shape, training=True, batch=2):
    c = Case(name, options, tuple(in_shape), training, batch)
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    shape = "x".join(map(str, (batch, *in_shape)))
    return pytest.param(c, id=f"{name}[{opts}]-{shape}-{'train' if training else 'eval'}")


_CONV = [
    ({"out_channels": 2, "kernel_size": 3, "padding": 0}, (3, 5, 5)),
    ({"out_channels": 2, "kernel_size": 3, "padding": 1}, (2, 4, 5)),
    ({"out_channels": 3, "kernel_size": 3, "padding": "same"}, (2, 5, 4)),
    ({"out_channels": 2, "kernel_size": [2, 4], "padding": "same"}, (2, 5, 6)),   # odd total: extra bottom/right
    ({"out_channels": 2, "kernel_size": 3, "padding": "same", "dilation": 2}, (1, 6, 5)),
    ({"out_channels": 2, "kernel_size": 3, "padding": "valid"}, (2, 5, 5)),
    ({"out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1}, (1, 6, 7)),
    ({"out_channels": 2, "kernel_size": 3, "stride": 2}, (2, 7, 6)),
    ({"out_channels": 2, "kernel_size": 2, "stride": 3}, (2, 7, 8)),              # stride > kernel
    ({"out_channels": 3, "kernel_size": [4, 3]}, (2, 4, 3)),                      # kernel = input
    ({"out_channels": 2, "kernel_size": 3, "dilation": 2}, (2, 7, 6)),
    ({"out_channels": 2, "kernel_size": 3, "dilation": [2, 1], "padding": [2, 1], "stride": [1, 2]}, (1, 6, 7)),
    ({"out_channels": 6, "kernel_size": 3, "groups": 2, "padding": 1}, (4, 4, 5)),
    ({"out_channels": 3, "kernel_size": 3, "groups": 3, "padding": 1}, (3, 5, 4)),  # depthwise
    ({"out_channels": 6, "kernel_size": 2, "groups": 3}, (3, 4, 4)),              # depthwise x2
    ({"out_channels": 2, "kernel_size": 3, "padding": 1, "bias": False}, (2, 4, 4)),
    ({"out_channels": 2, "kernel_size": [2, 3], "stride": [2, 1], "padding": [1, 0]}, (2, 5, 7)),
    ({"out_channels": 2, "kernel_size": 1}, (3, 1, 1)),                           # 1x1 input
    ({"out_channels": 2, "kernel_size": 3, "padding": 1}, (2, 1, 1)),             # 1x1 input, padded
    ({"out_channels": 4, "kernel_size": 1, "stride": 2, "init": "torch_default"}, (3, 5, 5)),
]

_MAXPOOL = [
    ({"kernel_size": 2}, (2, 4, 4)),
    ({"kernel_size": 2}, (2, 5, 5)),                                              # odd: floor drops a row
    ({"kernel_size": 3, "stride": 1}, (2, 5, 5)),                                 # overlapping
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
    ({"kernel_size": 2, "stride": 2, "ceil_mode": True}, (2, 5, 5)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (1, 6, 7)),
    ({"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}, (1, 4, 5)),  # last ceil window dropped
    ({"kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 1]}, (2, 5, 7)),
    ({"kernel_size": 2, "stride": 1, "dilation": 2}, (1, 5, 6)),
    ({"kernel_size": 3}, (1, 3, 3)),                                              # kernel = input
    ({"kernel_size": 1}, (2, 1, 1)),
    ({"kernel_size": 2, "ceil_mode": True}, (2, 1, 3)),                           # window overhangs a 1-row input
]

_AVGPOOL = [
    ({"kernel_size": 2}, (2, 4, 4)),
    ({"kernel_size": 2}, (2, 5, 5)),
    ({"kernel_size": 3, "stride": 1}, (2, 5, 5)),
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, (2, 5, 6)),
    ({"kernel_size": 2, "ceil_mode": True}, (2, 5, 5)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (1, 6, 7)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}, (1, 6, 7)),
    ({"kernel_size": 2, "stride": 3, "padding": 1, "ceil_mode": True}, (1, 4, 5)),
    ({"kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 1], "count_include_pad": False}, (2, 5, 7)),
    ({"kernel_size": 2, "stride": 1, "divisor_override": 3}, (1, 4, 5)),
    ({"kernel_size": 2, "padding": 1}, (2, 1, 1)),
    ({"kernel_size": 2, "ceil_mode": True}, (2, 3, 1)),                           # window overhangs a 1-column input
]

CASES = [
    *[_case("conv2d", o, s) for o, s in _CONV],
    *[_case("maxpool2d", o, s) for o, s in _MAXPOOL],
    *[_case("avgpool2d", o, s) for o, s in _AVGPOOL],
    _case("global_avgpool", {}, (3, 4, 5)),
    _case("global_avgpool", {"keepdims": True}, (3, 4, 5)),
    _case("global_avgpool", {"keepdims": True}, (2, 1, 1)),
    _case("batchnorm", {}, (3, 3, 4)),
    _case("batchnorm", {}, (4,), batch=5),
    _case("batchnorm", {}, (2, 1, 1), batch=3),
    _case("batchnorm", {}, (3, 2, 3), training=False),
    _case("batchnorm", {}, (4,), training=False, batch=3),
    _case("batchnorm", {"affine": False}, (2, 3, 3)),
    _case("batchnorm", {"affine": False}, (3,), batch=4),
    _case("batchnorm", {"affine": False}, (2, 2, 3), training=False),
    _case("batchnorm", {"track_running_stats": False}, (2, 3, 3)),
    _case("batchnorm", {"track_running_stats": False}, (2, 3, 3), training=False),
    _case("batchnorm", {"track_running_stats": False}, (3,), training=False, batch=4),
    _case("batchnorm", {"momentum": None}, (2, 3, 3)),
    _case("batchnorm", {"momentum": None}, (3,), batch=4),
    _case("batchnorm", {"eps": 1e-3, "momentum": 0.3}, (3,), batch=4),
    _case("dropout", {"p": 0.5}, (3, 4)),
    _case("dropout", {"p": 0.3}, (2, 3, 3)),
    _case("dropout", {"p": 0.0}, (5,)),
    _case("dropout", {"p": 0.5}, (2, 3, 3), training=False),
    _case("dropout2d", {"p": 0.5}, (4, 2, 3), batch=3),
    _case("dropout2d", {"p": 0.5}, (4, 2, 3), training=False),
    _case("linear", {"out_features": 3}, (5,), batch=3),
    _case("linear", {"out_features": 4, "bias": False}, (3,)),
    _case("linear", {"out_features": 1, "init": "torch_default"}, (6,)),
    _case("flatten", {}, (2, 3, 4)),
    _case("flatten", {}, (5,)),
    _case("relu", {}, (3, 4)),
    _case("relu", {}, (2, 3, 3)),
    _case("leaky_relu", {}, (2, 3, 3)),
    _case("leaky_relu", {"negative_slope": 0.2}, (7,)),
    _case("elu", {}, (2, 3, 3)),
    _case("elu", {"alpha": 0.5}, (7,)),
    _case("elu", {"alpha": 2.0}, (7,)),
    _case("gelu", {}, (2, 3, 3)),
    _case("gelu", {"approximate": "tanh"}, (2, 3, 3)),
    _case("sigmoid", {}, (2, 3, 3)),
    _case("tanh", {}, (2, 3, 3)),
    _case("softmax", {}, (5,), batch=3),
    _case("softmax", {"dim": 1}, (3, 2, 2)),
    _case("softmax", {"dim": -1}, (2, 2, 4)),
    _case("log_softmax", {}, (5,), batch=3),
    _case("log_softmax", {"dim": 2}, (3, 4, 2)),
    _case("log_softmax", {"dim": -1}, (2, 2, 4)),
]

#: Layers with a kink at 0 (inputs are kept away from it).
KINKED = {"relu", "leaky_relu", "elu"}


def build_layer(case: Case, dtype=np.float64, seed: int = 0):
    """Construct the layer as ``model.build`` does: inferred sizes from ``in_shape``,
    ``rng``/``dtype`` when the constructor takes them; check ``output_shape`` accepts it."""
    cls = LAYERS[case.name]
    kwargs = dict(case.options)
    for arg, infer in cls.inferred.items():
        kwargs[arg] = infer(case.in_shape)
    accepted = inspect.signature(cls.__init__).parameters
    if "rng" in accepted:
        kwargs["rng"] = np.random.default_rng(seed)
    if "dtype" in accepted:
        kwargs["dtype"] = dtype
    layer = cls(**kwargs)
    layer.output_shape(case.in_shape)
    return layer


def randomize_state(layer, rng: np.random.Generator) -> None:
    """Random params (biases and batchnorm's gamma/beta start at 0/1) and running stats."""
    for p in layer.params.values():
        p[...] = rng.uniform(-1.5, 1.5, p.shape)
    if "running_mean" in layer.buffers:
        layer.buffers["running_mean"][...] = rng.normal(0.0, 0.5, layer.buffers["running_mean"].shape)
        layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, layer.buffers["running_var"].shape)


def make_input(case: Case, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Continuous input: distinct values for max pooling (no ties), away from 0 for kinks."""
    shape = (case.batch, *case.in_shape)
    size = int(np.prod(shape))
    if case.name == "maxpool2d":
        # distinct by at least ~0.2, so a finite-difference step never reorders a window
        x = (rng.permutation(size) - size / 2) * 0.25 + rng.uniform(0.0, 0.05, size)
    elif case.name in KINKED:
        u = rng.normal(0.0, 1.0, size)
        x = np.sign(u) * (0.1 + np.abs(u))
    else:
        x = rng.normal(0.0, 1.0, size)
    return x.reshape(shape).astype(dtype)
