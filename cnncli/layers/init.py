"""Weight initialisers, selectable per layer with ``init:``.

Each is registered in :data:`INITIALIZERS` and takes ``(rng, weight_shape, fan_in,
fan_out, bias_shape)``, returning ``(weight, bias)`` (bias None: zeros). The bias fill:
zeros for every initialiser but ``torch_default``, which draws it as PyTorch does (Keras's
``bias_initializer="zeros"``, Caffe's default ``bias_filler`` constant 0).
fan_in/fan_out follow PyTorch's ``_calculate_fan_in_and_fan_out``:
conv ``in_channels/groups * kh * kw`` and ``out_channels * kh * kw``; linear
``in_features`` and ``out_features``.

References:
    He et al. 2015, https://arxiv.org/abs/1502.01852 (he_*);
    Glorot & Bengio 2010 (xavier_*);
    torch/nn/modules/conv.py and linear.py ``reset_parameters`` (torch_default:
    kaiming_uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), same bound for the bias);
    LeCun et al. 1998, "Efficient BackProp" (lecun_*: variance 1 / fan_in), as Keras's
    ``lecun_uniform`` / ``lecun_normal`` (keras/src/initializers/random_initializers.py);
    Caffe ``include/caffe/filler.hpp`` ``XavierFiller`` (xavier_caffe).
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import numpy as np

from cnncli.checks import check_size
from cnncli.registry import Registry

#: Initializer name -> function ``(rng, shape, fan_in, fan_out, bias_shape) -> (weight, bias)``
#: (float64 values, ``bias`` None for a zero bias; :func:`initialize` casts them). None of
#: their arguments is a YAML option: ``init: NAME`` picks one.
INITIALIZERS = Registry("initializer", supplied=("rng", "shape", "fan_in", "fan_out", "bias_shape"))


@INITIALIZERS.register("he_normal")
def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
              bias_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """N(0, 2 / fan_in) (He et al. 2015, torch ``kaiming_normal_``)."""
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape), None


@INITIALIZERS.register("he_uniform")
def he_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
               bias_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """U(-b, b) with b = sqrt(6 / fan_in) (torch ``kaiming_uniform_``)."""
    bound = math.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, shape), None


@INITIALIZERS.register("xavier_normal")
def xavier_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
                  bias_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """N(0, 2 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape), None


@INITIALIZERS.register("xavier_uniform")
def xavier_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
                   bias_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """U(-b, b) with b = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape), None


@INITIALIZERS.register("torch_default")
def torch_default(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
                  bias_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's ``reset_parameters`` (kaiming_uniform with
    a=sqrt(5)); the bias is drawn from the same range, after the weight."""
    bound = 1.0 / math.sqrt(fan_in)
    w = rng.uniform(-bound, bound, shape)
    return w, None if bias_shape is None else rng.uniform(-bound, bound, bias_shape)

@INITIALIZERS.register("lecun_uniform", "xavier_caffe")
def lecun_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
                  bias_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """U(-b, b) with b = sqrt(3 / fan_in), variance 1 / fan_in; zero bias.

    Keras's ``lecun_uniform``, and Caffe's ``xavier`` filler with its default
    ``variance_norm: FAN_IN`` (scale = sqrt(3 / n), n = fan_in = the blob's count / num,
    i.e. in_channels * kh * kw or in_features), hence the alias ``xavier_caffe``. Caffe's
    ``xavier`` is not Glorot's (that is ``xavier_uniform`` here, fan_in + fan_out)."""
    bound = math.sqrt(3.0 / fan_in)
    return rng.uniform(-bound, bound, shape), None


#: A truncated standard normal cut at +-2 has standard deviation 0.8796... (Keras's constant).
_TRUNCATED_STD = 0.87962566103423978


@INITIALIZERS.register("lecun_normal")
def lecun_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
                 bias_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Keras's ``lecun_normal``: a normal of standard deviation s = sqrt(1 / fan_in) / 0.8796...
    truncated at +-2 s (draws outside are drawn again), so the variance is 1 / fan_in; zero bias."""
    s = math.sqrt(1.0 / fan_in) / _TRUNCATED_STD
    w = rng.normal(0.0, s, shape)
    out = np.abs(w) > 2 * s
    while out.any():                             # about 4.6 % per round: a few rounds
        w[out] = rng.normal(0.0, s, int(out.sum()))
        out = np.abs(w) > 2 * s
    return w, None


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
    try:
        draw = INITIALIZERS.get(name)
    except KeyError:
        raise ValueError(f"unknown init {name!r}; choose one of {', '.join(INITIALIZERS)}") from None
    w, bias = draw(rng, shape, fan_in, fan_out, bias_shape)
    if bias is None and bias_shape is not None:
        bias = np.zeros(bias_shape, dtype=dtype)
    return w.astype(dtype), None if bias is None else bias.astype(dtype)
