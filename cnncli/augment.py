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


def affine_batch(images: np.ndarray, angles: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Rotate each image by its angle (degrees, counter-clockwise as displayed, row 0 on top)
    and scale it by its factor (> 1 enlarges) about the image centre, sampling bilinearly with
    zero fill, rounded back to the input's integer dtype (torchvision's ``RandomAffine(degrees,
    scale=...)`` with bilinear interpolation; 90 degrees is ``np.rot90`` for a square image).

    Output pixel (i, j), centred as u = i - (H-1)/2, v = j - (W-1)/2, reads the input at
    ((cos a * u + sin a * v) / s + (H-1)/2, (-sin a * u + cos a * v) / s + (W-1)/2).

    Args:
        images: (N, C, H, W) uint8 (or any integer dtype of values 0-255).
        angles, factors: (N,) floats.

    Returns:
        A new (N, C, H, W) array of the input's dtype; angle 0 and factor 1 give the image.
    """
    N, C, H, W = images.shape
    a = np.deg2rad(np.asarray(angles, dtype=np.float64))[:, None, None]          # (N, 1, 1)
    s = np.asarray(factors, dtype=np.float64)[:, None, None]
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    u = (np.arange(H, dtype=np.float64) - cy)[None, :, None]                      # (1, H, 1)
    v = (np.arange(W, dtype=np.float64) - cx)[None, None, :]                      # (1, 1, W)
    sy = (np.cos(a) * u + np.sin(a) * v) / s + cy                                # (N, H, W)
    sx = (-np.sin(a) * u + np.cos(a) * v) / s + cx
    y0, x0 = np.floor(sy), np.floor(sx)
    wy, wx = (sy - y0).astype(np.float32), (sx - x0).astype(np.float32)           # (N, H, W)
    # channel-major copy with a zero ring, flat per channel: every read is one np.take of
    # (N, H, W) flat indices (indices outside the image are clipped onto the ring, which reads 0)
    Hp, Wp = H + 2, W + 2
    padded = np.zeros((C, N, Hp, Wp), dtype=np.float32)
    padded[:, :, 1:-1, 1:-1] = images.transpose(1, 0, 2, 3)
    flat = padded.reshape(C, N * Hp * Wp)
    base = (np.arange(N) * (Hp * Wp))[:, None, None]
    rows = [(np.clip(y0 + k, -1, H).astype(np.intp) + 1) * Wp + base for k in (0, 1)]
    cols = [np.clip(x0 + k, -1, W).astype(np.intp) + 1 for k in (0, 1)]

    def at(k: int, m: int) -> np.ndarray:                                        # (C, N, H, W)
        return np.take(flat, rows[k] + cols[m], axis=1)

    out = (1 - wy) * ((1 - wx) * at(0, 0) + wx * at(0, 1)) + wy * ((1 - wx) * at(1, 0) + wx * at(1, 1))
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return np.ascontiguousarray(out.astype(images.dtype).transpose(1, 0, 2, 3))


class Augment:
    """Random rotation and scaling, pad-and-crop translation and horizontal flip of uint8 NCHW batches.

    Per image: with ``rotate`` or ``zoom``, an angle uniform in [-rotate, rotate] degrees and a
    scale factor uniform in [1 - zoom, 1 + zoom] (:func:`affine_batch`); then a shift (dy, dx),
    each uniform in [-translate, translate] (zero fill, as torchvision ``RandomCrop(H,
    padding=translate)``); then with ``hflip`` a left-right flip with probability 0.5
    (``RandomHorizontalFlip()``). Every batch draws, in this order and only for the parts
    that are on, N angles, N factors, N values of dy, N of dx, then N flip coins, from ``rng``
    (so a config without rotate/zoom draws what it drew before they existed).

    Args:
        translate: Largest shift in pixels (>= 0). Default: 0 (off).
        hflip: Random horizontal flips (leave off for digits). Default: false.
        rotate: Largest rotation in degrees (>= 0). Default: 0 (off).
        zoom: Largest relative change of scale, in [0, 1) (Keras's ``zoom_range``). Default: 0 (off).
        rng: The generator (the trainer derives it from the run seed).

    Shape:
        Input (N, C, H, W); output a new array of the same shape and dtype.
    """

    def __init__(self, translate: int = 0, hflip: bool = False, rotate: float = 0.0, zoom: float = 0.0,
                 *, rng: np.random.Generator):
        self.translate = int(translate)
        self.hflip = bool(hflip)
        self.rotate = float(rotate)
        self.zoom = float(zoom)
        self.rng = rng

    @property
    def active(self) -> bool:
        return self.translate > 0 or self.hflip or self.rotate > 0 or self.zoom > 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        N = len(images)
        out = images
        if self.rotate or self.zoom:
            angles = self.rng.uniform(-self.rotate, self.rotate, N) if self.rotate else np.zeros(N)
            factors = self.rng.uniform(1 - self.zoom, 1 + self.zoom, N) if self.zoom else np.ones(N)
            out = affine_batch(images, angles, factors)
        if self.translate:
            n = self.translate
            dy = self.rng.integers(-n, n + 1, size=N)
            dx = self.rng.integers(-n, n + 1, size=N)
            out = translate_batch(out, dy, dx, n)
        if self.hflip:
            flip = self.rng.random(N) < 0.5
            if out is images:
                out = images.copy()
            out[flip] = out[flip, ..., ::-1]
        return out
