"""``cnncli data info`` as a library call: what a dataset holds, and a few images to show."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnncli import config as C
from cnncli import formats
from cnncli import catalog
from cnncli.datasets import Dataset
from cnncli.errors import DataError


@dataclass(frozen=True)
class DataInfo:
    """A dataset described.

    Attributes:
        info: JSON-ready: ``dataset`` (where it was read), ``format``, ``classes`` (names or
            None) and ``splits``: per split, :func:`cnncli.formats.describe` (n, image_shape,
            class_counts, mean, std per channel of pixel/255, source).
        sample_split: The split the samples come from (train, else test).
        samples: (index in that split, image (C, H, W) uint8, label) for each sample.
    """

    info: dict[str, Any]
    sample_split: str
    samples: list[tuple[int, np.ndarray, int]]


def pick_samples(ds: Dataset, count: int) -> list[int]:
    """Indices of the first image of each class, in class order, then (fewer classes than
    ``count``) the next images in order; at most ``count``."""
    picks = [int(np.argmax(ds.labels == c)) for c in range(ds.num_classes) if (ds.labels == c).any()][:count]
    for i in range(len(ds)):
        if len(picks) >= count:
            break
        if i not in picks:
            picks.append(i)
    return picks


def data_info(path: str, fmt: str = "auto", image_shape: Sequence[int] | None = None, root: str | Path | None = None,
              samples: int = 10) -> DataInfo:
    """Read a dataset and describe its splits.

    Args:
        path: A dataset folder or file (IDX, NPZ, CSV, image folders), or a dataset name such
            as ``mnist`` (when no such path exists).
        fmt: ``auto`` (detect), ``idx``, ``npz``, ``csv`` or ``folder``. Default: auto.
        image_shape: (H, W) or (C, H, W) of CSV rows or flat NPZ arrays; square ones are
            inferred. Default: None.
        root: Also look for named datasets in this folder. Default: None.
        samples: How many sample images to pick (0: none). Default: 10.

    Raises:
        ConfigError: An invalid format or image shape (as the config's ``data`` section).
        DataError: The dataset cannot be found or read.
    """
    raw: dict[str, Any] = {"format": fmt}
    if path in catalog.NAMES and not Path(path).exists():
        raw["name"] = path
        if root is not None:
            raw["root"] = str(root)
    else:
        raw["path"] = path
    if image_shape is not None:
        raw["image_shape"] = list(image_shape)
    d = C.validate_data(raw, "command line")
    loaded = formats.load(d)
    splits = {name: ds for name, ds in (("train", loaded.train), ("test", loaded.test)) if ds is not None}
    k = max(ds.num_classes for ds in splits.values())
    k = max(k, len(loaded.classes) if loaded.classes else 0)
    info = {"dataset": loaded.where, "format": loaded.format,
            "classes": list(loaded.classes) if loaded.classes else None,
            "splits": {name: formats.describe(ds, k) for name, ds in splits.items()}}
    sample_split, ds = next(iter(splits.items()))
    picks = pick_samples(ds, samples) if samples else []
    return DataInfo(info, sample_split, [(i, ds.images[i], int(ds.labels[i])) for i in picks])


def named_datasets(root: str | Path | None = None) -> list[tuple[str, str, str]]:
    """``cnncli data list``: (name, where it was found or how to get it, description) of
    every named dataset, looked for in the data roots (and ``root``)."""
    rows = []
    for name, entry in catalog.DATASETS.items():
        try:
            where = str(catalog.find_named(name, root))
        except DataError:
            where = f"- (cnncli data download {name})"
        rows.append((name, where, entry.description))
    return rows
