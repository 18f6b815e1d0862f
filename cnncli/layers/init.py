"""Weight initialisers, selectable per layer with ``init:``.

Each takes ``(rng, weight_shape, fan_in, fan_out, dtype)`` and returns
``(weight, bias_fill)`` where ``bias_fill(shape)`` makes the bias.
fan_in/fan_out follow PyTorch's ``_calculate_fan_in_and_fan_out``:
conv ``in_channels/groups * kh * kw`` and ``out_channels * kh * kw``; linear
``in_features`` and ``out_features``.

References:
    He et al. 2015, https://arxiv.org/abs/1502.01852 (he_*);
    Glorot & Bengio 2010 (xavier_*);
    torch/nn/modules/conv.py and linear.py ``reset_parameters`` (torch_default:
    kaiming_uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), same bound for the bias).
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import numpy as np

from cnncli.layers.base import check_size

INITIALIZERS = ("he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "torch_default")

_SHAPES_ONLY = contextvars.ContextVar("cnncli_init_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only():
    """Within this block :func:`initialize` returns read-only zero views of the right shape
    and dtype instead of drawing weights: constructing a layer then checks its options
    without allocating (``model.check_options`` validates a config this way)."""
    token = _SHAPES_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def initialize(name: str, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int,
               fan_out: int, dtype: np.dtype, bias_shape: tuple[int, ...] | None):
    """Return ``(weight, bias)`` arrays of ``dtype``; ``bias`` is None when ``bias_shape`` is None.

    Biases are zero except for ``torch_default``, which draws them like PyTorch.

    Raises:
        ValueError: For an unknown initialiser name, or a weight larger than
            ``base.MAX_ELEMENTS`` (checked before anything is allocated).
    """
    check_size("weight", shape)
    if _SHAPES_ONLY.get():
        zero = np.zeros((), dtype=dtype)
        return np.broadcast_to(zero, shape), None if bias_shape is None else np.broadcast_to(zero, bias_shape)
    bias = None if bias_shape is None else np.zeros(bias_shape, dtype=dtype)
    if name == "he_normal":
        w = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    elif name == "he_uniform":
        bound = math.sqrt(6.0 / fan_in)
        w = rng.uniform(-bound, bound, shape)
    elif name == "xavier_normal":
        w = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)
    elif name == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-bound, bound, shape)
    elif name == "torch_default":
        bound = 1.0 / math.sqrt(fan_in)
        w = rng.uniform(-bound, bound, shape)
        if bias_shape is not None:
            bias = rng.uniform(-bound, bound, bias_shape).astype(dtype)
    else:
        raise ValueError(f"unknown init {name!r}; choose one of {', '.join(INITIALIZERS)}")
    return w.astype(dtype), bias
