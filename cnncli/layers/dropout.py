"""Inverted dropout, element-wise and channel-wise."""

from __future__ import annotations

import numpy as np

from cnncli.checks import check_float, check_ndim
from cnncli.layers.base import Layer
from cnncli.layers.registry import LAYERS


@LAYERS.register("dropout")
class Dropout(Layer):
    """Inverted dropout: zero elements with probability p in training, scale the rest by 1/(1-p).

    As ``torch.nn.Dropout``; identity in evaluation.

    Masks come from the model's seeded generator, so a run is reproducible.

    Args:
        p: Drop probability in [0, 1) (CS231n's ``p`` is the keep probability; this is not). Default: 0.5.

    Shape:
        Any input; output same shape and dtype.

    References:
        Srivastava et al. 2014, JMLR 15; https://pytorch.org/docs/stable/generated/torch.nn.Dropout.html
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None):
        super().__init__()
        self.p = check_float("p", p, 0.0, 1.0, high_open=True)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.keep: np.ndarray | None = None     # the next forward's mask, when drawn ahead (draw_mask)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def _mask_shape(self, shape):
        return shape

    def forward(self, x, training=False):
        if not training or self.p == 0.0:
            self._cache = False
            return x
        shape = self._mask_shape(x.shape)
        keep, self.keep = self.keep, None
        if keep is None:
            keep = self.draw_mask(x.shape)
        # the mask takes x's memory order (CHWN inside a model), so x * mask and dy * mask
        # run in that order and the same seed gives the same mask whatever the layout
        mask = np.empty_like(x) if shape == x.shape else np.empty(shape, dtype=x.dtype)
        np.multiply(keep, 1.0 / (1.0 - self.p), out=mask)
        self._cache = mask
        return np.multiply(x, mask, out=np.empty_like(x))

    def draw_mask(self, shape):
        """Keep mask (True: kept) for input of ``shape`` (N, ...), drawn in logical order from
        the model's generator; None when p is 0 (nothing is drawn)."""
        if self.p == 0.0:
            return None
        return self.rng.random(self._mask_shape(shape), dtype=np.float32) >= self.p

    def backward(self, dy):
        mask = self._cached()
        return dy if mask is False else dy * mask


@LAYERS.register("dropout2d", "spatial_dropout2d")
class Dropout2d(Dropout):
    """Channel dropout: zero whole channels with probability p in training, scale the rest by 1/(1-p).

    As ``torch.nn.Dropout2d``; identity in evaluation.

    Args:
        p: Drop probability per channel, in [0, 1). Default: 0.5.

    Shape:
        Input (N, C, H, W); output same shape and dtype.

    References:
        Tompson et al. 2015, https://arxiv.org/abs/1411.4280
    """

    def output_shape(self, input_shape):
        check_ndim("dropout2d", input_shape, (3,), "images (C, H, W)")
        return tuple(input_shape)

    def _mask_shape(self, shape):
        return (shape[0], shape[1], 1, 1)
