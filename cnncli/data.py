"""Data for a run: the splits a config points at, their normalization, and batches of them.

Datasets stay ``uint8`` in memory (DESIGN.md); each batch is gathered and normalized
on the fly through a lookup table (:func:`pixel_lut`, :func:`normalize_batch`), so
training, evaluation and ``predict`` share one conversion and none of them imports the
trainer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncli import formats
from cnncli.config import Config
from cnncli.datasets import Dataset
from cnncli.errors import ConfigError, DataError, Problem


@dataclass
class Data:
    """The three splits; ``val`` is carved from the end of the training file (as Keras's
    ``validation_split``), ``test`` is the test file. ``num_classes`` is ``data.num_classes``
    or, when not given, the largest label + 1 (or the number of class names, when known).

    ``mean``/``std`` are the normalization in force (``data.mean``/``data.std``, or computed
    from ``train`` for ``auto``); ``classes`` the class names when known; ``resolved`` the
    data-section values found while reading (absolute paths, format, classes) that
    :func:`resolved_config` records. Left None, they are filled from the config."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None
    resolved: dict[str, Any] = field(default_factory=dict)


def resolve_data_path(path: str) -> Path:
    """Relative data paths are taken from the current directory."""
    return Path(path).expanduser().resolve()


def prepare_data(cfg: Config) -> Data:
    """Load the training (and test) split the data section points at, carve the validation
    split (or, with ``data.validate_on: test``, validate on the test split), and settle the
    class count and the normalization.

    Raises:
        DataError: For any problem with the files (see :mod:`cnncli.formats`), labels beyond
            ``data.num_classes``, or a split that leaves no training data.
        ConfigError: A per-channel ``data.mean``/``data.std`` whose length is not the images'
            channel count.
    """
    d = cfg.data
    loaded = formats.load(d, ("train", "test"), d.train_limit, d.test_limit)
    full, test = loaded.train, loaded.test
    n = len(full)
    n_val = d.val_split if isinstance(d.val_split, int) else int(round(n * d.val_split))
    if n_val >= n:
        raise DataError(f"data.val_split {d.val_split} keeps {n_val} of the {n} training images for "
                        f"validation, leaving none to train on. Lower data.val_split.")
    train = Dataset(full.images[:n - n_val], full.labels[:n - n_val], full.source)
    val = Dataset(full.images[n - n_val:], full.labels[n - n_val:], full.source + " (validation)") \
        if n_val else None
    if d.validate_on == "test":         # Keras's validation_data: the test split, each epoch
        if test is None:
            raise DataError(f"data.validate_on is test but {full.source} has no test split; give one "
                            f"(data.test) or validate on a split of the training images (data.validate_on: val)")
        val = Dataset(test.images, test.labels, test.source + " (test, as validation)")
    if test is not None and test.image_shape != train.image_shape:
        raise DataError(f"{test.source}: test images are {test.image_shape}, training images ({full.source}) "
                        f"{train.image_shape}; both splits must come from the same dataset")
    found = max(full.num_classes, test.num_classes if test is not None else 0)
    if d.num_classes is not None and found > d.num_classes:
        split = full if full.num_classes == found else test
        where = formats.label_where(split, int(np.argmax(split.labels == found - 1)))
        raise DataError(f"{where}: label {found - 1} is outside [0, {d.num_classes}) "
                        f"(data.num_classes is {d.num_classes}). Raise data.num_classes or check the labels file.")
    names = loaded.classes
    if names is not None and d.num_classes is not None and len(names) > d.num_classes:
        raise DataError(f"{loaded.where}: {len(names)} classes ({', '.join(names[:12])}{', ...' if len(names) > 12 else ''}) "
                        f"but data.num_classes is {d.num_classes}. Raise or remove data.num_classes.")
    num_classes = d.num_classes or max(found, len(names) if names is not None else 0)
    mean, std = resolve_normalization(cfg, train)
    return Data(train, val, test, num_classes, mean=mean, std=std, classes=names, resolved=loaded.resolved)


def resolve_normalization(cfg: Config, train: Dataset) -> tuple[float | tuple[float, ...], float | tuple[float, ...]]:
    """``data.mean``/``data.std`` as numbers: given ones checked against the channel count,
    ``auto`` ones computed from ``train`` (the images actually trained on, validation split
    excluded): per channel, mean and population std of pixel/255. A channel whose pixels
    are all equal gets std 1 (as scikit-learn's StandardScaler does). One channel gives
    plain numbers, several give one per channel.

    Raises:
        ConfigError: A list whose length is neither 1 nor the channel count.
    """
    d = cfg.data
    channels = train.image_shape[0]
    stats = None
    out = []
    for key in ("mean", "std"):
        v = getattr(d, key)
        if v == "auto":
            if stats is None:
                stats = formats.pixel_stats(train.images)
            values = stats[0] if key == "mean" else [s if s > 0 else 1.0 for s in stats[1]]
        else:
            values = list(v) if isinstance(v, (tuple, list)) else [v]
            if len(values) not in (1, channels):
                raise ConfigError([Problem(f"data.{key}", f"has {len(values)} values but the images have {channels} "
                                           f"channel{'s' if channels > 1 else ''}; give one number, one per "
                                           f"channel, or 'auto'")], cfg.source)
        out.append(float(values[0]) if len(values) == 1 else tuple(float(x) for x in values))
    return out[0], out[1]


def resolved_config(cfg: Config, data: Data) -> Config:
    """``cfg`` with its data section as found: the normalization numbers in force (computed for
    ``auto``), absolute paths, the format read and the class names. This is what the run
    folder's config.yaml and every checkpoint record, so eval and predict use the same numbers."""
    mean, std = data.mean, data.std
    if mean is None or std is None:
        mean, std = resolve_normalization(cfg, data.train)
    changes: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.resolved.items()}
    changes.update(mean=mean, std=std)
    if cfg.data.path is not None and "path" not in changes:
        changes["path"] = str(resolve_data_path(cfg.data.path))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes))


def pixel_lut(mean: float | tuple[float, ...], std: float | tuple[float, ...], dtype=np.float32,
              scale: float | None = None) -> np.ndarray:
    """The normalized values (v * scale - mean)/std of a uint8 pixel v: a batch is one gather.

    ``scale`` is ``data.scale``; None is 1/255 (computed as v / 255).

    Returns:
        ``(256,)`` for one mean and std; ``(C, 256)`` when either is a per-channel list.

    Raises:
        ValueError: If mean or std is not numeric (``auto`` must be resolved first).
    """
    if isinstance(mean, str) or isinstance(std, str):
        raise ValueError(f"normalization {mean!r}/{std!r} is not resolved to numbers")
    m = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    s = np.atleast_1d(np.asarray(std, dtype=np.float64))
    levels = np.arange(256, dtype=np.float64)
    levels = levels / 255.0 if scale is None else levels * float(scale)
    if m.size == 1 and s.size == 1:
        return ((levels - m[0]) / s[0]).astype(dtype)
    return ((levels[None, :] - m[:, None]) / s[:, None]).astype(dtype)


def normalize_batch(lut: np.ndarray, images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 images (N, C, H, W) -> normalized floats through ``lut`` (see :func:`pixel_lut`),
    written into ``out`` when given. A per-channel ``lut`` (C, 256) gathers each channel
    from its own row."""
    if lut.ndim == 1:
        return np.take(lut, images, out=out)
    if out is None:
        out = np.empty(images.shape, dtype=lut.dtype)
    if lut.shape[0] != images.shape[1]:
        raise ValueError(f"normalization has {lut.shape[0]} channels, the images {images.shape[1]}")
    for c in range(images.shape[1]):
        np.take(lut[c], images[:, c], out=out[:, c])
    return out


def input_shape(cfg: Config) -> tuple[int, ...]:
    """``model.input_shape``, or the image shape of the training file when it is not given.

    Raises:
        DataError: If the shape must come from the data and the data cannot be read.
    """
    if cfg.model.input_shape is not None:
        return tuple(cfg.model.input_shape)
    return formats.load(cfg.data, ("train",), train_limit=1).train.image_shape

