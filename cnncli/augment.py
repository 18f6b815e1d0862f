"""Random data augmentation of uint8 image batches, vectorized over the batch.

Applied to training batches only, in raw pixel space (before normalization), with a
generator of its own derived from the run seed, so a run is reproducible and its
state can be saved and restored with the rest of a checkpoint.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def translate_batch(images: np.ndarray, shifts_y: np.ndarray, shifts_x: np.ndarray, n: int) -> np.ndarray:
    """Shift each image by (dy, dx) in [-n, n] pixels, filling with 0: torchvision's
    ``RandomCrop(size=(H, W), padding=n)`` with the crop's top-left corner at (n + dy, n + dx)
    of the zero-padded image.

    The batch is padded once; ``sliding_window_view`` sees every (H, W) window of the padded
    images (no copy) and one fancy index gathers each image's window.

    Args:
        images: (N, C, H, W), any dtype.
        shifts_y, shifts_x: (N,) integers in [-n, n].
        n: Padding (the largest shift), >= 0.

    Returns:
        A new (N, C, H, W) array of the same dtype.
    """
    N, _, H, W = images.shape
    if n == 0 or N == 0:
        return images.copy()
    padded = np.pad(images, ((0, 0), (0, 0), (n, n), (n, n)))          # (N, C, H + 2n, W + 2n)
    windows = sliding_window_view(padded, (H, W), axis=(2, 3))         # (N, C, 2n+1, 2n+1, H, W), a view
    # the fancy indices on axes 0, 2, 3 are split by the slice on axis 1, so numpy puts their
    # broadcast axis (N) first: the result is (N, C, H, W)
    return windows[np.arange(N), :, shifts_y + n, shifts_x + n]


class Augment:
    """Random pad-and-crop translation and horizontal flip of uint8 NCHW batches.

    Per image: a shift (dy, dx), each uniform in [-translate, translate] (zero fill, as
    torchvision ``RandomCrop(H, padding=translate)``), then with ``hflip`` a left-right flip
    with probability 0.5 (``RandomHorizontalFlip()``). Every batch draws, in this order,
    N values of dy, N of dx, then N flip coins, from ``rng``.

    Args:
        translate: Largest shift in pixels (>= 0). Default: 0 (off).
        hflip: Random horizontal flips (leave off for digits). Default: false.
        rng: The generator (the trainer derives it from the run seed).

    Shape:
        Input (N, C, H, W); output a new array of the same shape and dtype.
    """

    def __init__(self, translate: int = 0, hflip: bool = False, *, rng: np.random.Generator):
        self.translate = int(translate)
        self.hflip = bool(hflip)
        self.rng = rng

    @property
    def active(self) -> bool:
        return self.translate > 0 or self.hflip

    def __call__(self, images: np.ndarray) -> np.ndarray:
        N = len(images)
        out = images
        if self.translate:
            n = self.translate
            dy = self.rng.integers(-n, n + 1, size=N)
            dx = self.rng.integers(-n, n + 1, size=N)
            out = translate_batch(images, dy, dx, n)
        if self.hflip:
            flip = self.rng.random(N) < 0.5
            if out is images:
                out = images.copy()
            out[flip] = out[flip, ..., ::-1]
        return out
