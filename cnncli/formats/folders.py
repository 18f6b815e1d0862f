"""Image-folder datasets: one folder per class holding image files (read through Pillow)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from cnncli.datasets import MAX_LISTED, Dataset, _exists, listing
from cnncli.errors import DataError
from cnncli.images import pillow, read_image_file

def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: ``2.png`` < ``10.png``."""
    return tuple(int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", name)))


def class_folders(folder: Path) -> list[str]:
    """The sorted names of the class folders in ``folder`` (hidden ones skipped).

    Raises:
        DataError: If the folder is missing, unreadable or holds no folders.
    """
    if not _exists(folder):
        raise DataError(f"folder not found: {folder} (absolute: {folder.absolute()}).")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, expected a folder of class folders.")
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder ({e.strerror or e}).") from None
    if not names:
        raise DataError(f"{folder}: no class folders; an image-folder dataset holds one folder per class "
                        f"({folder}/CLASS/IMAGE.png). The folder contains: {listing(folder)}.")
    return names


def read_folder(folder: str | os.PathLike, classes: Sequence[str] | None = None, limit: int | None = None,
                split: str = "train") -> tuple[Dataset, tuple[str, ...]]:
    """A split stored as one folder per class of image files.

    Args:
        folder: Holds ``CLASS/IMAGE`` files.
        classes: The class order (label i = ``classes[i]``); default the sorted folder names.
            Every folder must be one of them; a class may have no folder (no images).
        limit: Read only the first ``limit`` images (in the order of the module docstring).
        split: Named in messages.

    Returns:
        The dataset (uint8 (N, C, H, W), C = 1 or 3) and the class names.

    Raises:
        DataError: Pillow missing, no class folders, a folder inside a class folder, a file
            that :func:`cnncli.images.read_image_file` cannot read or refuses, images of
            different sizes, no images at all, a folder that is not one of ``classes``.
    """
    folder = Path(folder)
    found = class_folders(folder)
    if classes is None:
        classes = tuple(found)
    else:
        classes = tuple(classes)
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DataError(f"{folder}: class folder '{unknown[0]}' is not one of the classes {list(classes)} "
                            f"(data.classes, or the training split's folders). Rename or remove it.")
    pillow(folder, "image folders", "convert the images to IDX, NPZ or CSV")
    entries = _image_files(folder, found, classes, split)
    if limit is not None:
        entries = entries[:limit]
    images = _stack_images(p for _, _, p in entries)
    labels = np.fromiter((e[1] for e in entries), np.int64, len(entries))
    return Dataset(images=images, labels=labels, source=str(folder)), classes


def _image_files(folder: Path, found: list[str], classes: tuple[str, ...],
                 split: str) -> list[tuple[tuple, int, Path]]:
    """(sort key, label, path) of every image file in the class folders ``found``, in the
    order of the module docstring: by file name (digits as numbers), then by class.

    Raises:
        DataError: A folder inside a class folder, no images at all, or (when the classes
            are these folders) an empty class folder.
    """
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    derived = classes == tuple(found)       # the class list is these folders: an empty one adds a phantom class
    empty: list[tuple[Path, str]] = []
    for name in found:
        cdir = folder / name
        try:
            children = list(cdir.iterdir())
        except OSError as e:
            raise DataError(f"{cdir}: cannot list the folder ({e.strerror or e}).") from None
        for p in children:
            if p.name.startswith("."):
                continue
            if p.is_dir():
                raise DataError(f"{p}: a folder inside the class folder '{name}'; class folders hold image "
                                f"files only ({folder}/CLASS/IMAGE.png).")
            entries.append((natural_key(p.name), index[name], p))
        if derived and not any(not p.name.startswith(".") for p in children):
            empty.append((cdir, name))
    if not entries:
        raise DataError(f"{folder}: the class folders ({', '.join(found[:MAX_LISTED])}) hold no images; the "
                        f"{split} split is empty.")
    if empty:
        cdir, name = empty[0]
        raise DataError(f"{cdir}: the class folder '{name}' holds no images, so class {index[name]} would have "
                        f"no examples. Add its images or remove the empty folder (or list the classes in "
                        f"data.classes).")
    entries.sort(key=lambda e: (e[0], e[1]))
    return entries


def _stack_images(paths: Iterable[Path]) -> np.ndarray:
    """uint8 (N, C, H, W) from image files of one size: C = 3 if any has colour (grey ones
    repeated in every channel), else 1.

    Raises:
        DataError: A file :func:`cnncli.images.read_image_file` cannot read or refuses;
            images of different sizes.
    """
    arrays = []
    first: tuple[Path, tuple[int, int]] | None = None
    for p in paths:
        a = read_image_file(p, hint=" Class folders must hold only images; move or remove this file.")
        if first is None:
            first = (p, a.shape[:2])
        elif a.shape[:2] != first[1]:
            raise DataError(f"{p}: the image is {a.shape[1]}x{a.shape[0]} (width x height) but {first[0]} is "
                            f"{first[1][1]}x{first[1][0]}; all images of a dataset must have one size.")
        arrays.append(a)
    color = any(a.ndim == 3 for a in arrays)
    n, (h, w) = len(arrays), first[1]
    images = np.empty((n, 3 if color else 1, h, w), np.uint8)
    for i, a in enumerate(arrays):
        images[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a      # grey broadcasts to 3 channels
    return images
