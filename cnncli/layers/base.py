"""The layer protocol (DESIGN.md).

Layers refuse their own arguments with ``cnncli.checks.OptionError`` (a ``ValueError``
that names the option), shape problems with a plain ``ValueError``; ``model.build`` adds
the key path. They preserve dtype: float32 to train, float64 for gradcheck.
"""

from __future__ import annotations

import math
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
        normalizes_over_batch: In training the layer computes statistics over the batch,
            so it needs two or more values per channel (batchnorm). Default: False.
        is_normalization: Its ``params`` are normalization parameters, which
            ``exclude_bias_and_norm`` exempts from weight decay (batchnorm). Default: False.
        outputs_probabilities: Its output is (log-)probabilities (softmax, log_softmax): it
            cannot end a model, whose output the loss, eval and predict take as logits. Default: False.
    """

    type_name = "layer"
    inferred: dict[str, Callable[[tuple[int, ...]], int]] = {}
    normalizes_over_batch: bool = False
    is_normalization: bool = False
    outputs_probabilities: bool = False

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

    def draw_mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The random draws a training ``forward`` of input ``shape`` (with batch axis) would
        make, for a layer that draws any (dropout), else None (the default). ``Model``
        draws them for a whole batch before splitting it over threads, and hands each part
        its rows through the layer's ``keep`` attribute, which ``forward`` then uses (once)
        instead of drawing: the same draws in the same order as an unsplit batch."""
        return None

    def pieces(self) -> np.ndarray | None:
        """After a training ``forward``: which piece of its piecewise-smooth definition each
        output entry took (ReLU: whether its input is > 0; max-pool: each window's winning
        position), or None for a layer smooth everywhere (the default).

        Gradient checks compare it after forwards at v + h and v - h: where it differs, the
        central difference straddled a kink (a ReLU input within h of 0, a max-pool near-tie)
        and measures no derivative, so that entry is skipped (``cnncli.gradcheck``). A layer
        with a kink overrides this; the array returned is never modified by a later forward.
        """
        return None

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
