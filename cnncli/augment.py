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


#: torchvision ``RandomErasing``'s defaults: the erased area is a fraction of the image in
#: ``ERASE_SCALE`` and its aspect ratio (height / width) log-uniform in ``ERASE_RATIO``;
#: ``ERASE_ATTEMPTS`` tries per image for a rectangle that fits inside it.
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
ERASE_ATTEMPTS = 10


def erase_boxes(rng: np.random.Generator, n: int, height: int, width: int, p: float) -> np.ndarray:
    """Draw the rectangles of random erasing (Zhong et al. 2020, "Random Erasing Data
    Augmentation", AAAI; torchvision ``RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3))``)
    for ``n`` images of ``height`` x ``width`` pixels, vectorized over the images.

    Per image: erase with probability ``p``; then up to :data:`ERASE_ATTEMPTS` tries, each an
    area ``height * width * U(0.02, 0.33)`` and an aspect ratio ``r = exp(U(log 0.3, log 3.3))``,
    giving ``h = round(sqrt(area * r))``, ``w = round(sqrt(area / r))``; the first try with
    ``h < height`` and ``w < width`` is kept (none: the image is left as it is), and its top-left
    corner is uniform over the positions where it fits. Draws, in this order: ``n`` coins, then
    ``n * ERASE_ATTEMPTS`` areas and as many log-ratios, then ``n`` tops and ``n`` lefts.

    Returns:
        (n, 4) int64 array of (top, left, h, w); h = w = 0 for an image left as it is.
    """
    coin = rng.random(n) < p
    area = height * width * rng.uniform(ERASE_SCALE[0], ERASE_SCALE[1], (n, ERASE_ATTEMPTS))
    ratio = np.exp(rng.uniform(np.log(ERASE_RATIO[0]), np.log(ERASE_RATIO[1]), (n, ERASE_ATTEMPTS)))
    hs = np.rint(np.sqrt(area * ratio)).astype(np.int64)   # round half to even, as Python's round
    ws = np.rint(np.sqrt(area / ratio)).astype(np.int64)
    fits = (hs < height) & (ws < width) & (hs > 0) & (ws > 0)
    first = np.argmax(fits, axis=1)                         # the first try that fits
    rows = np.arange(n)
    ok = coin & fits[rows, first]
    h, w = np.where(ok, hs[rows, first], 0), np.where(ok, ws[rows, first], 0)
    top = np.floor(rng.random(n) * (height - h + 1)).astype(np.int64)
    left = np.floor(rng.random(n) * (width - w + 1)).astype(np.int64)
    return np.stack([np.where(ok, top, 0), np.where(ok, left, 0), h, w], axis=1)


def erase_batch(images: np.ndarray, boxes: np.ndarray, value: int = 0) -> np.ndarray:
    """Fill each image's rectangle (top, left, h, w) with ``value`` in every channel.

    Args:
        images: (N, C, H, W), any dtype; not modified.
        boxes: (N, 4) integers, as :func:`erase_boxes` returns (h = 0: nothing erased).
        value: The fill. Default 0: black, the background of MNIST-style images (torchvision
            fills 0 after normalization, i.e. the mean; Cutout likewise).

    Returns:
        A new (N, C, H, W) array of the same dtype.
    """
    N, _, H, W = images.shape
    top, left, h, w = (boxes[:, k, None, None] for k in range(4))
    i = np.arange(H)[None, :, None]
    j = np.arange(W)[None, None, :]
    inside = (i >= top) & (i < top + h) & (j >= left) & (j < left + w)      # (N, H, W)
    return np.where(inside[:, None], np.asarray(value, dtype=images.dtype), images)


class Augment:
    """Random rotation and scaling, pad-and-crop translation, horizontal flip and random
    erasing of uint8 NCHW batches.

    Per image: with ``rotate`` or ``zoom``, an angle uniform in [-rotate, rotate] degrees and a
    scale factor uniform in [1 - zoom, 1 + zoom] (:func:`affine_batch`); then a shift (dy, dx),
    each uniform in [-translate, translate] (zero fill, as torchvision ``RandomCrop(H,
    padding=translate)``); then with ``hflip`` a left-right flip with probability 0.5
    (``RandomHorizontalFlip()``); then with ``erase`` = p > 0, with probability p a random
    rectangle set to 0 (:func:`erase_boxes`, torchvision ``RandomErasing(p)``). Every batch
    draws, in this order and only for the parts that are on, N angles, N factors, N values of
    dy, N of dx, N flip coins, then the erasing draws, from ``rng`` (so a config without
    rotate/zoom/erase draws what it drew before they existed).

    Args:
        translate: Largest shift in pixels (>= 0). Default: 0 (off).
        hflip: Random horizontal flips (leave off for digits). Default: false.
        rotate: Largest rotation in degrees (>= 0). Default: 0 (off).
        zoom: Largest relative change of scale, in [0, 1) (Keras's ``zoom_range``). Default: 0 (off).
        erase: Probability of erasing a rectangle of each image, in [0, 1]. Default: 0 (off).
        rng: The generator (the trainer derives it from the run seed).

    Shape:
        Input (N, C, H, W); output a new array of the same shape and dtype.
    """

    def __init__(self, translate: int = 0, hflip: bool = False, rotate: float = 0.0, zoom: float = 0.0,
                 erase: float = 0.0, *, rng: np.random.Generator):
        self.translate = int(translate)
        self.hflip = bool(hflip)
        self.rotate = float(rotate)
        self.zoom = float(zoom)
        self.erase = float(erase)
        self.rng = rng

    @property
    def active(self) -> bool:
        return self.translate > 0 or self.hflip or self.rotate > 0 or self.zoom > 0 or self.erase > 0

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
        if self.erase:
            out = erase_batch(out, erase_boxes(self.rng, N, out.shape[2], out.shape[3], self.erase))
        return out
