"""Every form MNIST-style data comes in, read into the same uint8 NCHW arrays.

Formats (``data.format``; ``auto`` detects them from the files):

``idx``
    MNIST's own format (see :mod:`cnncli.datasets`), plain or gzip, ``(N, H, W)`` or
    channels-last ``(N, H, W, C)``: a folder with MNIST's file names, or an images file
    whose labels file lies beside it (``train-images-idx3-ubyte`` ->
    ``train-labels-idx1-ubyte``), or an explicit ``[images, labels]`` pair.
``npz``
    A NumPy archive in the Keras layout (``keras.datasets.mnist.load_data``): ``x_train``,
    ``y_train``, ``x_test``, ``y_test`` (names configurable with ``data.npz_keys``). Images
    ``(N, H, W)``, channels-last ``(N, H, W, C)`` (Keras), channels-first ``(N, C, H, W)``
    when unambiguous (C in 1, 3, 4 and the last axis is not), or flat ``(N, H*W*C)`` with
    ``data.image_shape``. Labels ``(N,)``, ``(N, 1)`` or one-hot ``(N, K)``. Read with
    ``allow_pickle=False``.
``csv``
    One image per line, the label first and the pixels after it (Kaggle's
    ``mnist_train.csv`` layout), comma-separated, optional header line (detected: a first
    line that is not all numbers), optionally gzip-compressed. Pixels run row by row,
    channels last (``(H, W, C)`` flattened). The image shape is ``data.image_shape``
    (``[H, W]`` or ``[C, H, W]``), or ``1 x s x s`` when the pixel count is a square ``s*s``.
``folder``
    One folder per class holding image files (PNG, or anything Pillow reads; needs the
    ``images`` extra: ``pip install 'cnncli[images]'``). A dataset folder holds ``train/``
    (or ``training/``) and ``test/`` (or ``testing/``), each with the same class folders;
    a folder of class folders alone is a training split. Classes are the sorted folder
    names (or ``data.classes``, in that order); they are stored in the checkpoint.
    Grayscale images give 1 channel; if any image has colour, all get 3 (RGB, alpha
    dropped). Samples are ordered by file name (digits compared as numbers) across the
    classes, then by class, so exports named by index keep their order and the
    validation split taken from the end mixes the classes.

Pixels must be whole numbers in 0..255 (datasets stay uint8 in memory, as Keras's
``mnist.npz`` stores them); floats scaled to [0, 1] are refused with the conversion to
use. Every problem raises :class:`~cnncli.errors.DataError` naming the file (and, for
CSV, the line).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncli.datasets import Dataset, _exists, find_split_files, load_pair, load_split
from cnncli.errors import DataError, did_you_mean

__all__ = ["FORMATS", "NPZ_KEYS", "Loaded", "describe", "detect_format", "label_where", "load", "pixel_stats",
           "read_csv", "read_folder", "read_npz"]

FORMATS = ("auto", "idx", "npz", "csv", "folder")
NPZ_KEYS = {"x_train": "x_train", "y_train": "y_train", "x_test": "x_test", "y_test": "y_test"}
SPLIT_DIRS = {"train": ("train", "training"), "test": ("test", "testing")}
SPLIT_WORDS = {"train": ("train", "training"), "test": ("test", "testing", "t10k")}
CSV_SUFFIXES = (".csv", ".csv.gz")
_GRAY_MODES = ("1", "L", "LA")
_MAX_LISTED = 12
KERAS_NPZ = "keras.datasets.mnist (x_train, y_train, x_test, y_test)"


# ------------------------------------------------------------------ values

def _listing(folder: Path) -> str:
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError as e:
        return f"(cannot list it: {e.strerror or e})"
    text = ", ".join(entries[:_MAX_LISTED]) or "nothing"
    return text + (f", ... ({len(entries)} entries)" if len(entries) > _MAX_LISTED else "")


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


def _nchw(x: np.ndarray, where: str, image_shape: Sequence[int] | None) -> np.ndarray:
    """uint8 images of any accepted layout -> (N, C, H, W)."""
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


# ------------------------------------------------------------------ NPZ

def read_npz(path: str | os.PathLike, split: str, keys: dict[str, str] | None = None,
             image_shape: Sequence[int] | None = None, limit: int | None = None,
             required: bool = True) -> Dataset | None:
    """One split of a Keras-layout ``.npz`` (read with ``allow_pickle=False``).

    Args:
        path: The archive.
        split: ``"train"`` (keys ``x_train``/``y_train``) or ``"test"``.
        keys: Other key names, e.g. ``{"x_train": "images"}``.
        image_shape: For flat images ``(N, H*W*C)``.
        limit: Keep the first ``limit`` samples.
        required: If False, an archive without the split's images gives None.

    Raises:
        DataError: Not a readable archive, a missing key (the keys present are listed), bad
            shapes, pixels or labels.
    """
    path = Path(path)
    names = {**NPZ_KEYS, **(keys or {})}
    x_key, y_key = names[f"x_{split}"], names[f"y_{split}"]
    if not _exists(path):
        raise DataError(f"file not found: {path} (absolute: {path.absolute()}).")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            f.seek(0)
            if magic[:2] != b"PK":
                raise DataError(f"{path}: not an .npz archive (it does not start with the zip signature PK). "
                                f"Save the arrays with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
            with np.load(f, allow_pickle=False) as z:
                files = list(z.files)
                if x_key not in files:
                    if not required:
                        return None
                    raise DataError(f"{path}: no array '{x_key}' for the {split} images; the archive holds "
                                    f"{', '.join(files) or 'nothing'}. Set data.npz_keys, e.g. "
                                    f"{{x_{split}: {files[0] if files else 'images'}}}.")
                if y_key not in files:
                    raise DataError(f"{path}: no array '{y_key}' for the {split} labels; the archive holds "
                                    f"{', '.join(files)}. Set data.npz_keys, e.g. {{y_{split}: NAME}}.")
                x, y = z[x_key], z[y_key]
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: holds pickled Python objects; cnncli never unpickles files. Save plain "
                            f"numeric arrays (np.savez with uint8 images and integer labels).") from None
        raise DataError(f"{path}: not a readable .npz archive ({e}).") from None
    except MemoryError:
        raise DataError(f"{path}: an array's header declares more than fits in memory; the file is corrupt.") from None
    except Exception as e:  # noqa: BLE001 - zipfile/zlib/numpy header parsing raise many kinds on damaged bytes
        raise DataError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e}). It may be truncated; "
                        f"save or download it again.") from None
    where_x, where_y = f"{path} ({x_key})", f"{path} ({y_key})"
    images = _nchw(to_pixels(x, where_x), where_x, image_shape)
    labels = to_labels(y, where_y)
    return _dataset(images, labels, str(path), split, limit)


# ------------------------------------------------------------------ CSV

def _open_text(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_head(path: Path) -> tuple[int, int, str]:
    """(header lines 0/1, columns, first line) of a CSV file."""
    try:
        with _open_text(path) as f:
            first = ""
            for line in f:
                if line.strip():
                    first = line.strip()
                    break
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (not UTF-8); a CSV dataset is text: label,pixel,pixel,...") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read the file ({getattr(e, 'strerror', None) or e}).") from None
    if not first:
        raise DataError(f"{path}: the file is empty; expected lines of label,pixel,pixel,...")
    fields = first.split(",")
    header = 0 if all(_is_number(v) for v in fields) else 1
    return header, len(fields), first


def _csv_lines(path: Path):
    """(line number, stripped line) of every non-blank line."""
    number = 0
    with _open_text(path) as f:
        try:
            for number, line in enumerate(f, 1):
                s = line.strip()
                if s:
                    yield number, s
        except UnicodeDecodeError:
            raise DataError(f"{path}:{number + 1}: not UTF-8 text; a CSV dataset must be a text file "
                            f"of label,pixel,pixel,... lines.") from None


def _csv_line_of_row(path: Path, header: int, row: int) -> int:
    """The file line of data row ``row`` (0-based; blank lines are skipped, as the reader does)."""
    for i, (number, _) in enumerate(_csv_lines(path)):
        if i == row + header:
            return number
    return -1


def _csv_problem(path: Path, header: int, columns: int) -> DataError | None:
    """The first malformed line: a row of another length, or a value that is not a number."""
    for i, (number, line) in enumerate(_csv_lines(path)):
        if i < header:
            continue
        values = line.split(",")
        if len(values) != columns:
            return DataError(f"{path}:{number}: {len(values)} values, but the first row has {columns}; every row "
                             f"holds the label then the same number of pixels.")
        for j, v in enumerate(values):
            if not _is_number(v):
                what = "the label" if j == 0 else f"pixel {j}"
                return DataError(f"{path}:{number}: column {j + 1} ({what}) is {v.strip()[:20]!r}, not a number.")
    return None


def read_csv(path: str | os.PathLike, image_shape: Sequence[int] | None = None, limit: int | None = None,
             split: str = "train") -> Dataset:
    """A CSV file of ``label,pixel,pixel,...`` lines (Kaggle's MNIST layout).

    The header line is detected (a first line that is not all numbers); blank lines are
    skipped; a gzip-compressed file is read as such. Pixels run row by row, channels last.

    Args:
        path: The CSV file.
        image_shape: ``(H, W)`` or ``(C, H, W)``; inferred as ``(1, s, s)`` when the pixel
            count is a square.
        limit: Read only the first ``limit`` rows.
        split: Named in messages.

    Raises:
        DataError: Naming the file and the line: a ragged row, a value that is not a number,
            a pixel outside 0..255, a negative or fractional label, a row count of 0, a pixel
            count that fits no image shape.
    """
    path = Path(path)
    if not _exists(path):
        raise DataError(f"file not found: {path} (absolute: {path.absolute()}).")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a CSV file.")
    header, columns, _ = _csv_head(path)
    if columns < 2:
        raise DataError(f"{path}: lines hold {columns} value; expected the label then the pixels "
                        f"(label,pixel,pixel,...).")
    table = None
    for dtype in (np.int32, np.float64):
        try:
            # the reader gets exactly the data rows (blank lines and the header dropped here), so row i
            # is the i-th non-blank line after the header, as _csv_line_of_row counts
            rows = (line for i, (_, line) in enumerate(_csv_lines(path)) if i >= header)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # "input contained no data": reported below
                table = np.loadtxt(rows, delimiter=",", dtype=dtype, comments=None, max_rows=limit, ndmin=2)
            break
        except UnicodeDecodeError:        # a ValueError too: catch it first
            raise DataError(f"{path}: not a text file (not UTF-8).") from None
        except ValueError:
            continue
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: cannot read the file ({getattr(e, 'strerror', None) or e}); it may be "
                            f"truncated.") from None
    if table is None:
        problem = _csv_problem(path, header, columns)
        raise problem or DataError(f"{path}: not a CSV table of numbers.")
    if table.shape[0] == 0:
        raise DataError(f"{path}: no data rows{' after the header' if header else ''}.")
    if table.shape[1] != columns:       # loadtxt reads whole rows; a guard for odd separators
        raise DataError(f"{path}: rows hold {table.shape[1]} values, the first line {columns}.")
    n_pixels = columns - 1
    if image_shape is None and math.isqrt(n_pixels) ** 2 != n_pixels and math.isqrt(columns) ** 2 == columns:
        raise DataError(f"{path}: rows hold {columns} values, a square number of pixels with no room for a label: "
                        f"this looks like a file without labels (such as Kaggle's test.csv). cnncli needs the "
                        f"label in the first column; to leave this file out, give only data.train.")
    c, h, w = _image_shape(n_pixels, image_shape, str(path), "rows hold")
    labels_raw, pixels_raw = table[:, 0], table[:, 1:]

    def bad_row(mask: np.ndarray) -> tuple[int, int]:
        row = int(np.argmax(mask.any(axis=1) if mask.ndim == 2 else mask))
        return row, _csv_line_of_row(path, header, row)

    bad = (pixels_raw < 0) | (pixels_raw > 255)
    if table.dtype.kind == "f":
        bad |= ~np.isfinite(pixels_raw) | (pixels_raw != np.round(pixels_raw))
    if bad.any():
        row, line = bad_row(bad)
        j = int(np.argmax(bad[row]))
        raise DataError(f"{path}:{line}: pixel {j + 1} is {pixels_raw[row, j]:g}; pixels are whole numbers 0..255.")
    bad_label = labels_raw < 0
    if table.dtype.kind == "f":
        bad_label |= ~np.isfinite(labels_raw) | (labels_raw != np.round(labels_raw))
    if bad_label.any():
        row, line = bad_row(bad_label)
        raise DataError(f"{path}:{line}: the label is {labels_raw[row]:g}; labels are class indices 0, 1, 2, ...")
    images = pixels_raw.astype(np.uint8).reshape(len(table), h, w, c).transpose(0, 3, 1, 2)
    return _dataset(np.ascontiguousarray(images), labels_raw.astype(np.int64), str(path), split, None)


def csv_line_of_label(path: str | os.PathLike, row: int) -> int:
    """The file line of the ``row``-th data row of a CSV file (for label errors found later)."""
    path = Path(path)
    header, _, _ = _csv_head(path)
    return _csv_line_of_row(path, header, row)


# ------------------------------------------------------------------ image folders

def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: ``2.png`` < ``10.png``."""
    return tuple(int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", name)))


def _pillow(where: Path):
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{where}: reading image folders needs Pillow, which is not installed. Install the "
                        f"images extra: pip install 'cnncli[images]' (or convert the images to IDX, NPZ or CSV).") \
            from None
    return Image


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
                        f"({folder}/CLASS/IMAGE.png). The folder contains: {_listing(folder)}.")
    return names


def _read_image(Image, path: Path) -> np.ndarray:
    """(H, W) uint8 for grayscale, (H, W, 3) for colour."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise DataError(f"{path}: a {mode} image (16-bit or float); cnncli reads 8-bit images. "
                                f"Save it as 8-bit grayscale or RGB.")
            if mode in _GRAY_MODES:
                return np.asarray(im.convert("L"), dtype=np.uint8)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise DataError(f"{path}: not an image Pillow can read ({type(e).__name__}: {e}). Class folders must hold "
                        f"only images; move or remove this file.") from None
    if mode == "P" and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])       # a grey palette
    return rgb


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
            that is not an 8-bit image, images of different sizes, no images at all, a folder
            that is not one of ``classes``.
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
    Image = _pillow(folder)
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
        raise DataError(f"{folder}: the class folders ({', '.join(found[:_MAX_LISTED])}) hold no images; the "
                        f"{split} split is empty.")
    if empty:
        cdir, name = empty[0]
        raise DataError(f"{cdir}: the class folder '{name}' holds no images, so class {index[name]} would have "
                        f"no examples. Add its images or remove the empty folder (or list the classes in "
                        f"data.classes).")
    entries.sort(key=lambda e: (e[0], e[1]))
    if limit is not None:
        entries = entries[:limit]
    arrays = []
    first: tuple[Path, tuple[int, int]] | None = None
    for _, _, p in entries:
        a = _read_image(Image, p)
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
    labels = np.fromiter((e[1] for e in entries), np.int64, len(entries))
    return Dataset(images=images, labels=labels, source=str(folder)), classes


# ------------------------------------------------------------------ detection

def _sniff(path: Path) -> bytes:
    """The first bytes of a file, gunzipped when it is gzip."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as g:
                head = g.read(64)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read the file ({getattr(e, 'strerror', None) or e}).") from None
    return head


#: Files that are certainly not datasets: say so rather than try to read them as CSV.
NOT_DATASET_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".ini", ".cfg", ".md", ".rst", ".py", ".sh",
                        ".html", ".xml", ".log", ".jsonl")


def _not_a_dataset(path: Path, what: str) -> DataError:
    return DataError(f"{path}: not a dataset file ({what}). A dataset is an IDX pair (train-images-idx3-ubyte.gz, "
                     f"...), an .npz archive, a .csv file, or a folder of class folders"
                     + (" - a YAML file is a config: cnncli train CONFIG." if path.suffix.lower() in (".yaml", ".yml")
                        else "."))


def _file_format(path: Path) -> str:
    """The format of a dataset file: by its name first (``.npz``, ``.csv``, ``-ubyte``), checked
    against its first bytes; a name that says nothing is decided by the bytes."""
    name = path.name.lower()
    inner = name[:-3] if name.endswith(".gz") else name
    suffix = Path(inner).suffix
    if suffix in NOT_DATASET_SUFFIXES:
        raise _not_a_dataset(path, f"a {suffix} file")
    head = _sniff(path)
    if not head:
        raise DataError(f"{path}: the file is empty.")
    text = head.decode("utf-8-sig", errors="ignore")
    is_text = bool(text.strip()) and all(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if suffix == ".npz" and head[:2] != b"PK":
        what = "it holds text" if is_text else f"it starts with {head[:8].hex(' ')}"
        raise DataError(f"{path}: named .npz but not an NPZ archive (a zip written by numpy.savez): {what}. "
                        f"Check the file, or rename it if it is another kind.")
    if inner.endswith(CSV_SUFFIXES) or suffix == ".csv":
        return "csv"
    if head[:2] == b"PK":
        return "npz"
    if head[:6] == b"\x93NUMPY":
        raise DataError(f"{path}: a single .npy array; a dataset needs images and labels: save them with "
                        f"np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
    if head[:2] == b"\x00\x00":
        return "idx"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        raise DataError(f"{path}: a single image; an image dataset is a folder of class folders "
                        f"(train/CLASS/IMAGE.png).")
    if is_text:
        if suffix in ("", ".txt", ".tsv", ".data") or "," in text.splitlines()[0]:
            return "csv"
        raise _not_a_dataset(path, f"a text file named {suffix} that is not comma-separated")
    raise DataError(f"{path}: cannot tell the format (not IDX, NPZ or CSV: it starts with {head[:8].hex(' ')}). "
                    f"Set data.format, or check the file.")


def _split_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)
                      and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"{folder}: cannot list the folder ({e.strerror or e}).") from None


def _named_for(files: list[Path], split: str) -> list[Path]:
    words = SPLIT_WORDS[split]
    return [p for p in files if any(w in re.split(r"[^a-z0-9]+", p.name.lower()) for w in words)]


def _split_dir(folder: Path, split: str) -> Path | None:
    for name in SPLIT_DIRS[split]:
        if (folder / name).is_dir():
            return folder / name
    return None


def _check_exists(path: Path) -> None:
    """Raise DataError for a dataset path that does not exist (with a dataset name it may mean)."""
    if not _exists(path):
        from cnncli.catalog import NAMES

        kind = "file" if path.suffix else "folder"
        hint = did_you_mean(str(path), NAMES) if len(path.parts) == 1 else ""
        raise DataError(f"dataset {kind} not found: {path} (absolute: {path.absolute()}).{hint} Relative paths are "
                        f"taken from the current directory; check the path, or download the dataset there.")


def detect_format(path: str | os.PathLike) -> str:
    """``idx``, ``npz``, ``csv`` or ``folder`` for a dataset file or folder.

    A file: by its first bytes (gzip is looked through): ``PK`` zip -> npz, ``00 00`` -> IDX,
    text -> CSV. A folder: MNIST's IDX names -> idx; a ``train/`` (or ``training/``) folder,
    or folders only -> folder; ``.npz`` files -> npz; ``.csv`` files -> csv.

    Raises:
        DataError: Missing path, or nothing recognizable (the folder's contents are listed).
    """
    path = Path(path)
    _check_exists(path)
    if path.is_file():
        return _file_format(path)
    try:
        find_split_files(path, "train")
        return "idx"
    except DataError:
        pass
    if _split_dir(path, "train") is not None or _split_dir(path, "test") is not None:
        return "folder"
    if _split_files(path, (".npz",)):
        return "npz"
    if _split_files(path, CSV_SUFFIXES):
        return "csv"
    if any(_split_files(path, ("-ubyte", "-ubyte.gz"))):
        return "idx"
    try:
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
    except OSError as e:
        raise DataError(f"{path}: cannot list the folder ({e.strerror or e}).") from None
    if subdirs:
        return "folder"
    raise DataError(f"{path}: no dataset found: expected MNIST's IDX files (train-images-idx3-ubyte.gz, ...), "
                    f"an .npz archive, CSV files, or train/ and test/ folders of class folders. "
                    f"The folder contains: {_listing(path)}.")


# ------------------------------------------------------------------ the data section

@dataclass
class Loaded:
    """What the data section points at, loaded.

    Attributes:
        train, test: The splits asked for (None when not asked for, or absent).
        classes: Class names when known (image folders, named datasets, ``data.classes``).
        format: The format read (of the training split when the two differ).
        where: A short description for messages (``mnist (data/mnist)``).
        resolved: Data-section values to record in the resolved config: absolute paths,
            the detected format, the class names.
    """

    train: Dataset | None
    test: Dataset | None
    classes: tuple[str, ...] | None
    format: str
    where: str
    resolved: dict[str, Any] = field(default_factory=dict)


def _abs(p: Any) -> Any:
    if isinstance(p, (list, tuple)):
        return [_abs(q) for q in p]
    return str(Path(p).expanduser().resolve())


def _labels_beside(images: Path) -> Path:
    """The labels file of an IDX images file: images -> labels, idx3/idx4 -> idx1, with or without .gz."""
    name = images.name
    base = re.sub(r"idx[34]", "idx1", name.replace("images", "labels"))
    stem = base.removesuffix(".gz")
    tried = []
    for candidate in (base, stem, stem + ".gz"):
        if candidate != name and candidate not in tried:
            tried.append(candidate)
            if (images.parent / candidate).is_file():
                return images.parent / candidate
    looked = f"looked for {', '.join(tried)}" if tried else "its name has no 'images' to turn into 'labels'"
    raise DataError(f"{images}: an IDX file; cannot find its labels file beside it ({looked}). "
                    f"Give both as a pair: data.train: [IMAGES, LABELS].")


def _read_location(location: Any, split: str, fmt: str, d: Any, limit: int | None,
                   classes: Sequence[str] | None, required: bool) -> tuple[Dataset | None, tuple | None, str]:
    """One split from an explicit location: a file, a folder, or an [images, labels] pair."""
    if isinstance(location, (list, tuple)):
        images, labels = (Path(p).expanduser() for p in location)
        return load_pair(images, labels, split, limit), None, "idx"
    path = Path(location).expanduser()
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "idx":
        if path.is_dir():
            return load_split(path, split, limit), None, fmt
        return load_pair(path, _labels_beside(path), split, limit), None, fmt
    if fmt == "npz":
        ds = read_npz(path, split, d.npz_keys, d.image_shape, limit, required=required)
        return ds, None, fmt
    if fmt == "csv":
        return read_csv(path, d.image_shape, limit, split), None, fmt
    folder = path
    if path.is_dir() and _split_dir(path, split) is not None:
        folder = _split_dir(path, split)
    ds, names = read_folder(folder, classes, limit, split)
    return ds, names, fmt


def _root_locations(root: Path, fmt: str) -> tuple[Any, Any]:
    """(train location, test location or None) inside a dataset file or folder ``root``."""
    if root.is_file():
        if fmt == "npz":
            return root, root
        return root, None
    if fmt == "idx":
        return root, root
    if fmt == "folder":
        train = _split_dir(root, "train")
        test = _split_dir(root, "test")
        if train is None and test is None:
            return root, None                     # a folder of class folders alone: training data
        if train is None:
            raise DataError(f"{root}: has a test folder but no train/ (or training/) folder of class folders.")
        return train, test
    suffixes = (".npz",) if fmt == "npz" else CSV_SUFFIXES
    files = _split_files(root, suffixes)
    kind = "npz" if fmt == "npz" else "CSV"
    if not files:
        raise DataError(f"{root}: no {kind} file. The folder contains: {_listing(root)}.")
    if fmt == "npz" and len(files) == 1:
        return files[0], files[0]
    train, test = _named_for(files, "train"), _named_for(files, "test")
    if len(files) == 1:
        return files[0], None
    if len(train) != 1 or len(test) > 1:
        raise DataError(f"{root}: {len(files)} {kind} files ({', '.join(p.name for p in files[:_MAX_LISTED])}) "
                        f"and no single one named for training (train.csv, mnist_train.csv, ...). "
                        f"Give them as data.train and data.test.")
    return train[0], (test[0] if test else None)


def load(d: Any, splits: Iterable[str] = ("train", "test"), train_limit: int | None = None,
         test_limit: int | None = None) -> Loaded:
    """Load the splits a data section (:class:`cnncli.config.DataConfig`) points at.

    The section gives exactly one of ``name`` (a named dataset, looked up under the data
    roots, see :mod:`cnncli.catalog`), ``path`` (a dataset folder or file) or ``train``
    (plus optional ``test``) locations; ``format`` is ``auto`` or forces a reader.

    Args:
        d: The data section.
        splits: Which splits to read (``("test",)`` for evaluation).
        train_limit, test_limit: Keep the first N samples of each split.

    Returns:
        The :class:`Loaded` splits (``test`` None when the dataset has none).

    Raises:
        DataError: Anything the readers raise; a named dataset that is not downloaded; label
            indices beyond the class names; a folder dataset whose splits disagree.
    """
    from cnncli import catalog

    splits = tuple(splits)
    fmt = d.format or "auto"
    resolved: dict[str, Any] = {}
    classes = tuple(d.classes) if d.classes else None
    catalog_classes = None
    if d.name:
        info = catalog.lookup(d.name)
        root = catalog.find_named(d.name, d.root)
        resolved["root"] = str(root.parent)
        catalog_classes = info.classes or _emnist_classes(root)
        where = f"{d.name} ({root})"
        locations = None
    elif d.path:
        root = Path(d.path).expanduser()
        _check_exists(root)                      # also when data.format is given (no detection)
        resolved["path"] = _abs(root)
        where = str(root)
        locations = None
    else:
        root = None
        locations = (d.train, d.test)
        resolved["train"] = _abs(d.train) if d.train else None
        resolved["test"] = _abs(d.test) if d.test else None
        where = str(d.train if not isinstance(d.train, (list, tuple)) else d.train[0])
    if locations is None:
        if fmt == "auto":
            fmt = detect_format(root)
        locations = _root_locations(root, fmt)
    train_loc, test_loc = locations
    explicit_test = d.train is not None and d.test is not None and not d.name and not d.path
    train = test = None
    formats = set()
    if "train" in splits:
        train, names, f = _read_location(train_loc, "train", fmt, d, train_limit, classes, True)
        _check_image_shape(train, d.image_shape)
        formats.add(f)
        classes = names if names is not None else classes
    if "test" in splits and test_loc is not None:
        if classes is None and "train" not in splits and _is_folder_format(test_loc, fmt):
            # the test split's labels follow the training split's class folders
            classes = tuple(class_folders(_class_root(Path(train_loc).expanduser())))
        test, names, f = _read_location(test_loc, "test", fmt, d, test_limit, classes, explicit_test or fmt != "npz")
        _check_image_shape(test, d.image_shape)
        formats.add(f)
        classes = names if names is not None else classes
    for ds in (train, test):
        check_label_range(ds, getattr(d, "num_classes", None), classes)
    if train is not None and test is not None and {train.image_shape[0], test.image_shape[0]} == {1, 3} \
            and "folder" in formats:
        # image folders: one colour image makes a split RGB; then both splits are read as RGB
        grey = "train" if train.image_shape[0] == 1 else "test"
        ds = train if grey == "train" else test
        ds = Dataset(np.repeat(ds.images, 3, axis=1), ds.labels, ds.source)
        train, test = (ds, test) if grey == "train" else (train, ds)
    if classes is None and catalog_classes is not None:
        classes = tuple(catalog_classes)
    if classes is not None:
        for ds in (train, test):
            if ds is not None and len(ds) and int(ds.labels.max()) >= len(classes):
                i = int(np.argmax(ds.labels >= len(classes)))
                raise DataError(f"{label_where(ds, i)}: label {int(ds.labels[i])} has no class name: there are "
                                f"{len(classes)} classes ({', '.join(classes[:_MAX_LISTED])}{', ...' if len(classes) > _MAX_LISTED else ''}). "
                                f"Fix the label or data.classes.")
        resolved["classes"] = list(classes)
    if len(formats) == 1:
        fmt = formats.pop()
    resolved["format"] = fmt
    return Loaded(train, test, classes, fmt, where, resolved)


#: Without data.num_classes, a label above this is taken for a mistake (a class count this large
#: would not fit a classifier's output layer anyway).
MAX_LABEL = 65535


def check_label_range(ds: Dataset | None, num_classes: int | None = None,
                      classes: Sequence[str] | None = None) -> None:
    """Call out a stray label before it becomes the class count: with neither ``data.num_classes``
    nor class names, a label above :data:`MAX_LABEL`, or one above 1000 and more than ten times
    the next largest label, is reported with its sample (labels beyond ``data.num_classes`` are
    checked by the trainer).

    Raises:
        DataError: Naming the sample, its label and the fix.
    """
    if ds is None or not len(ds) or num_classes is not None or classes is not None:
        return
    top = int(ds.labels.max())
    if top <= 1000:
        return
    below = ds.labels[ds.labels < top]
    second = int(below.max()) if below.size else -1
    if top > MAX_LABEL or top > 10 * (second + 1):
        i = int(np.argmax(ds.labels == top))
        others = f"the other labels are at most {second}" if second >= 0 else "it is the only label"
        raise DataError(f"{label_where(ds, i)}: label {top} looks like a mistake ({others}); it would make "
                        f"{top + 1} classes. Check the labels, or set data.num_classes if there really are "
                        f"that many classes.")


def _check_image_shape(ds: Dataset | None, image_shape: Sequence[int] | None) -> None:
    """``data.image_shape`` shapes flat data; data that has a shape of its own must agree with it.

    Raises:
        DataError: Naming data.image_shape and the shape found.
    """
    if ds is None or image_shape is None:
        return
    shape = tuple(int(s) for s in image_shape)
    want = (1, *shape) if len(shape) == 2 else shape
    if tuple(ds.image_shape) != want:
        found = list(ds.image_shape)
        raise DataError(f"{ds.source}: images are {found} (C, H, W), but data.image_shape is {list(shape)}. "
                        f"data.image_shape only shapes flat data (CSV rows, flat NPZ arrays); set it to "
                        f"{found if len(shape) == 3 else found[1:]} or remove it.")


def _class_root(path: Path) -> Path:
    """The folder of class folders: ``path/train`` when ``path`` is a whole dataset."""
    return _split_dir(path, "train") or path if path.is_dir() else path


def _is_folder_format(location: Any, fmt: str) -> bool:
    if isinstance(location, (list, tuple)):
        return False
    if fmt != "auto":
        return fmt == "folder"
    path = Path(location).expanduser()
    return path.is_dir() and detect_format(path) == "folder"


def label_where(ds: Dataset, row: int) -> str:
    """``file:line`` for a CSV row, ``file`` (with the sample index) otherwise."""
    source = Path(ds.source)
    if source.is_file() and source.name.lower().endswith(CSV_SUFFIXES):
        return f"{source}:{csv_line_of_label(source, row)}"
    return f"{source} (sample {row})"


def _emnist_classes(folder: Path) -> tuple[str, ...] | None:
    """Class names from EMNIST's mapping.txt (``label ascii [ascii]`` per line), when present."""
    mapping = folder / "mapping.txt"
    if not mapping.is_file():
        return None
    try:
        rows = [line.split() for line in mapping.read_text().splitlines() if line.strip()]
        table = {int(r[0]): "".join(chr(int(c)) for c in r[1:]) for r in rows}
    except (OSError, ValueError, IndexError):
        return None
    if not table:
        return None
    return tuple(table.get(i, "-") for i in range(max(table) + 1))


# ------------------------------------------------------------------ statistics

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
