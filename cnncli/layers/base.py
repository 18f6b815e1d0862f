"""The layer protocol (DESIGN.md) and argument checks shared by the layers.

Layers raise ``ValueError`` on their own arguments; ``model.build`` adds the
key path. They preserve dtype: float32 to train, float64 for gradcheck.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np


class Layer:
    """Base class of every registered layer.

    Attributes:
        params: Trainable arrays by name (``weight``, ``bias``).
        grads: Same keys and shapes as ``params``; overwritten by ``backward``.
        buffers: Non-trainable state (``running_mean``, ...); never optimized.
        inferred: Constructor arguments ``model.build`` fills from the input shape
            (without batch axis), e.g. ``{"in_channels": lambda s: s[0]}``.
        normalizes_over_batch: In training it computes statistics over the batch, so it
            needs two or more values per channel (batchnorm). Default: False.
        is_normalization: Its parameters are normalization parameters, which
            ``exclude_bias_and_norm`` exempts from weight decay. Default: False.
    """

    type_name = "layer"
    inferred: dict[str, Callable[[tuple[int, ...]], int]] = {}
    normalizes_over_batch = False
    is_normalization = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._cache: Any = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output sample for one input sample (no batch axis).

        Raises:
            ValueError: If the layer cannot take that input.
        """
        return tuple(input_shape)

    def flops(self, input_shape: tuple[int, ...]) -> int:
        """Forward floating-point operations for one sample (multiply and add counted
        separately). Default: one per output element (element-wise layers)."""
        return math.prod(self.output_shape(input_shape))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_values(self, output_shape: tuple[int, ...]) -> int:
        """Values one image adds to a training step in this layer (no batch axis): its output
        and the output's gradient. Layers that cache more for backward add it (``Conv2d``)."""
        return 2 * math.prod(output_shape)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Evaluation forward pass that no backward will follow: the same values as
        ``forward(x, training=False)``, with nothing cached. Layers may override it with a
        path that is faster because it keeps nothing for backward (``Conv2d``)."""
        y = self.forward(x, False)
        self._cache = None
        return y

    # Layers with parameters may also define ``backward_params(dy) -> None``: fill ``grads``
    # without computing the input gradient (used for a model's first layer in training).

    def _cached(self) -> Any:
        """Return what ``forward`` cached, or raise ``RuntimeError`` if it never ran."""
        if self._cache is None:
            raise RuntimeError(f"{self.type_name}: backward() called before forward(training=True)")
        return self._cache

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


# ---------------------------------------------------------------- argument checks

#: Largest number of elements cnncli accepts for one parameter array, for one sample's
#: output of a layer, and for one sample's padded input or im2col matrix of a conv/pool
#: layer: 2**28 (1 GiB of float32). A YAML value like ``out_channels: 1e12`` is refused
#: with a message before anything is allocated, instead of failing with MemoryError.
MAX_ELEMENTS = 2 ** 28


def check_size(what: str, shape: tuple[int, ...]) -> None:
    """Refuse an array of ``shape`` with more than :data:`MAX_ELEMENTS` elements.

    Raises:
        ValueError: Naming ``what``, its shape and size, and the limit.
    """
    n = math.prod(int(s) for s in shape)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{what} of shape {tuple(int(s) for s in shape)} would hold {n:,} values, more than "
                         f"cnncli's limit of {MAX_ELEMENTS:,} (1 GiB of float32). Use smaller sizes.")


def check_int(name: str, value: Any, minimum: int = 0, maximum: int | None = None) -> int:
    """Return ``value`` as int if it is an integer in [``minimum``, ``maximum``] (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_pair(name: str, value: Any, minimum: int = 0) -> tuple[int, int]:
    """Return ``(h, w)`` from an int or a pair of ints, each >= ``minimum``."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair [h, w], got {list(value)!r}")
        return check_int(name, value[0], minimum), check_int(name, value[1], minimum)
    v = check_int(name, value, minimum)
    return v, v


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as float if it is a real number in the given interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an integer beyond float range, e.g. 10**400
        raise ValueError(f"{name} must be finite, got an integer of {len(str(abs(int(value))))} digits") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return v


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    from cnncli.errors import did_you_mean

    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(str(value), choices)
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}.{hint}".rstrip("."))
    return value


def check_ndim(layer: str, input_shape: tuple[int, ...], ndims: tuple[int, ...], what: str) -> None:
    """Refuse an input (without batch axis) whose rank is not in ``ndims``."""
    if len(input_shape) not in ndims:
        raise ValueError(f"{layer} expects {what}, got input shape {tuple(input_shape)}")
