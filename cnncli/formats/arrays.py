"""Array checks shared by the dataset readers: pixels, labels, image layouts, statistics.

Every reader turns what it read into uint8 images ``(N, C, H, W)`` and int64 labels
``(N,)`` through these functions, so a value is accepted or refused the same way in every
format (see :mod:`cnncli.formats`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncli.datasets import Dataset
from cnncli.errors import DataError

def to_pixels(a: np.ndarray, where: str) -> np.ndarray:
    """``a`` as uint8 if every value is a whole number in 0..255 (a view when already uint8).

    Raises:
        DataError: Naming ``where`` for other types or values, with the conversion to use.
    """
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "b":
        raise DataError(f"{where}: pixels are booleans; save them as uint8 0..255 (x.astype('uint8') * 255).")
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DataError(f"{where}: pixel values must lie in 0..255 (uint8), got {a.min()}..{a.max()}.")
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        if a.size and not np.isfinite(a).all():
            raise DataError(f"{where}: pixels include NaN or infinity; pixels are whole numbers 0..255.")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0 or hi > 255 or (a.size and not np.array_equal(a, np.round(a))):
            hint = (" They look scaled to [0, 1]: save (x * 255).round().astype('uint8') instead, as Keras's "
                    "mnist.npz does; cnncli normalizes with data.mean/data.std itself.") if lo >= 0 and hi <= 1 else ""
            raise DataError(f"{where}: pixels are {a.dtype.name} values in [{lo:g}, {hi:g}]; cnncli keeps datasets "
                            f"as uint8 and needs whole numbers 0..255.{hint}")
        return a.astype(np.uint8)
    raise DataError(f"{where}: pixels are of type {a.dtype}; expected uint8 numbers 0..255.")


def to_labels(a: np.ndarray, where: str) -> np.ndarray:
    """Class indices ``(N,)`` int64 from ``(N,)``, ``(N, 1)`` or one-hot ``(N, K)`` integer
    (or whole-number float) labels.

    Raises:
        DataError: Naming ``where`` for other shapes, types, negative or fractional values.
    """
    a = np.asarray(a)
    if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
        raise DataError(f"{where}: labels are of type {a.dtype}; expected integer class indices.")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2 and a.shape[1] > 1:
        if a.size and (((a != 0) & (a != 1)).any() or not (a.sum(axis=1) == 1).all()):
            raise DataError(f"{where}: labels of shape {a.shape} are neither class indices (N,) nor one-hot "
                            f"rows (exactly one 1 per row).")
        return a.argmax(axis=1).astype(np.int64)
    if a.ndim != 1:
        raise DataError(f"{where}: labels must have shape (N,), (N, 1) or one-hot (N, K), got {a.shape}.")
    if a.dtype.kind == "f":
        if a.size and (not np.isfinite(a).all() or not np.array_equal(a, np.round(a))):
            i = int(np.argmax(~np.isfinite(a) | (a != np.round(a))))
            raise DataError(f"{where}: the label at index {i} is {a[i].item()!r}; labels must be whole numbers "
                            f"(class indices).")
    labels = a.astype(np.int64)
    if labels.size and labels.min() < 0:
        i = int(np.argmax(labels < 0))
        raise DataError(f"{where}: the label at index {i} is {int(labels[i])}; labels must be class indices >= 0.")
    return labels


def _image_shape(n_values: int, image_shape: Sequence[int] | None, where: str, what: str) -> tuple[int, int, int]:
    """(C, H, W) for ``n_values`` flat pixel values: ``image_shape`` or a square."""
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        chw = (1, *shape) if len(shape) == 2 else shape
        if math.prod(chw) != n_values:
            raise DataError(f"{where}: {what} {n_values} pixel values, but data.image_shape {list(shape)} needs "
                            f"{math.prod(chw)}. Fix data.image_shape.")
        return chw  # type: ignore[return-value]
    side = math.isqrt(n_values)
    if side * side == n_values and side > 0:
        return (1, side, side)
    raise DataError(f"{where}: {what} {n_values} pixel values, which is not a square image; set "
                    f"data.image_shape: [H, W] or [C, H, W] (pixels row by row, channels last).")


def to_nchw(x: np.ndarray, where: str, image_shape: Sequence[int] | None) -> np.ndarray:
    """uint8 images of any accepted layout as ``(N, C, H, W)`` (a view when no transpose is needed).

    Shape:
        Input ``(N, H*W*C)`` flat rows, channels last (shaped by ``image_shape`` or as a
        square); ``(N, H, W)``; ``(N, H, W, C)``; or ``(N, C, H, W)`` when unambiguous (C in
        1, 3, 4 and the last axis is not). When both 4-D readings fit, channels last (Keras).

    Raises:
        DataError: Naming ``where`` for other shapes or a flat size that fits no image shape.
    """
    if x.ndim == 2:                                   # flat (N, H*W*C), channels last
        c, h, w = _image_shape(x.shape[1], image_shape, where, "images hold")
        return np.ascontiguousarray(x.reshape(len(x), h, w, c).transpose(0, 3, 1, 2))
    if x.ndim == 3:
        return x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])
    if x.ndim == 4:
        if x.shape[3] not in (1, 3, 4) and x.shape[1] in (1, 3, 4):
            return x                                  # channels first, as PyTorch saves them
        if x.shape[3] == 1:
            return x.reshape(x.shape[:3])[:, None]
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise DataError(f"{where}: images must be (N, H, W), (N, H, W, C) or flat (N, H*W*C), got shape {x.shape}.")


def _dataset(images: np.ndarray, labels: np.ndarray, source: str, split: str, limit: int | None) -> Dataset:
    if len(images) != len(labels):
        raise DataError(f"{source}: {len(images)} images but {len(labels)} labels in the {split} split; "
                        f"they must be the same count.")
    if len(images) == 0:
        raise DataError(f"{source}: the {split} split is empty (0 samples).")
    if 0 in images.shape[1:]:
        raise DataError(f"{source}: images have an empty dimension: shape {images.shape}.")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Dataset(images=images, labels=labels, source=source)


def pixel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) standard deviation of ``pixel / 255`` over N, H, W.

    Exact: computed from each channel's 256-bin histogram, so no float image copy is made.
    """
    means, stds = [], []
    levels = np.arange(256, dtype=np.float64) / 255.0
    for c in range(images.shape[1]):
        counts = np.bincount(np.ascontiguousarray(images[:, c]).ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        if total == 0:
            means.append(0.0)
            stds.append(0.0)
            continue
        mean = float(counts @ levels / total)
        var = float(counts @ (levels - mean) ** 2 / total)
        means.append(mean)
        stds.append(math.sqrt(max(var, 0.0)))
    return means, stds


def describe(ds: Dataset, num_classes: int | None = None) -> dict[str, Any]:
    """Count, image shape, images per class and pixel mean/std per channel of one split."""
    k = max(num_classes or 0, ds.num_classes)
    counts = np.bincount(ds.labels, minlength=k) if len(ds) else np.zeros(k, np.int64)
    mean, std = pixel_stats(ds.images)
    return {"n": len(ds), "image_shape": list(ds.image_shape), "class_counts": [int(c) for c in counts],
            "mean": mean, "std": std, "source": ds.source}
