"""MNIST-style datasets stored as IDX files, read with NumPy only.

The IDX format (Y. LeCun, "FILE FORMATS FOR THE MNIST DATABASE",
http://yann.lecun.com/exdb/mnist/) is a tiny header followed by raw data::

    bytes 0-1   0x00 0x00
    byte  2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64 (all multi-byte values big-endian)
    byte  3     number of dimensions, ndim
    4*ndim      the size of each dimension, big-endian uint32
    ...         prod(sizes) values in C (row-major) order

Files may be gzip-compressed (detected by the gzip magic bytes ``1f 8b``,
whatever the file is called). Datasets stay ``uint8`` in memory; batches are
converted to float and normalized by the trainer (see DESIGN.md, "Data
conventions"). Every problem with a data file raises
:class:`cnncli.errors.DataError` naming the file and saying how to fix it.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = [
    "IDX_TYPES",
    "Dataset",
    "MAX_LISTED",
    "find_split_files",
    "listing",
    "load_images",
    "load_labels",
    "load_pair",
    "load_split",
    "read_idx",
]

IDX_REFERENCE = 'http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE")'

#: IDX type code -> big-endian NumPy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_REDOWNLOAD = "Re-download it (or copy it again from its source)."
_SPLIT_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}
# (kind, idx tags accepted); 4-D channels-last images are usually named idx4.
_KINDS = {"images": ("idx3", "idx4"), "labels": ("idx1",)}
#: Messages list at most this many entries of a folder (or names of a list).
MAX_LISTED = 12


def _type_name(code: int) -> str:
    dtype = IDX_TYPES.get(code)
    return f"{dtype.newbyteorder('=').name} (0x{code:02X})" if dtype is not None else f"0x{code:02X}"


def _exists(path: Path) -> bool:
    """``path.exists()``, but a path that cannot even be looked at (a folder on the way that
    is not readable, a NUL byte in the name) is reported as a DataError, not an OSError."""
    try:
        return path.exists()
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot access the path ({getattr(e, 'strerror', None) or e}). "
                        "Check the path and the permissions of the folders on it.") from None


def listing(folder: Path) -> str:
    """What ``folder`` holds, for messages: the sorted names (folders marked ``/``), the first
    :data:`MAX_LISTED` of them and the count when there are more; ``nothing`` for an empty
    folder, and the reason when it cannot be listed (never raises)."""
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError as e:
        return f"(cannot list it: {e.strerror or e})"
    text = ", ".join(entries[:MAX_LISTED]) or "nothing"
    return text + (f", ... ({len(entries)} entries)" if len(entries) > MAX_LISTED else "")


def _read_bytes(path: Path) -> bytes:
    """Return the file's bytes, gunzipped if they start with the gzip magic."""
    if not _exists(path):
        raise DataError(f"file not found: {path} (absolute: {path.absolute()}). "
                        "Check the path, or download the dataset into that folder.")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an IDX file.")
    try:
        with open(path, "rb") as f:
            raw = f.read()  # one read: the whole file
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e}). "
                        "Check its permissions.") from e
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except MemoryError:
        raise DataError(f"{path}: the gzip data expands to more than fits in memory; the file is "
                        f"corrupt or not a dataset. {_REDOWNLOAD}") from None
    except EOFError as e:
        raise DataError(f"{path}: the gzip stream is truncated ({len(raw)} compressed bytes, "
                        f"ends before the end-of-stream marker). The file is incomplete. "
                        f"{_REDOWNLOAD}") from e
    except (OSError, zlib.error, ValueError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt gzip data ({e}). {_REDOWNLOAD}") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed, into an array.

    The format is described in the module docstring and at
    http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
    Compression is detected from the gzip magic bytes ``1f 8b``, not from the
    file name, so a decompressed file that kept its ``.gz`` name still loads.

    Args:
        path: The IDX file.

    Returns:
        An array of the shape stored in the header. ``uint8``/``int8`` data is
        a read-only view of the file's bytes (no copy); multi-byte types
        (int16, int32, float32, float64) are converted from big-endian to
        native byte order (one copy). Dimensions of size 0 are allowed here
        (an empty dataset is rejected by :func:`load_split`).

    Raises:
        DataError: If the file is missing or unreadable, the gzip stream is
            corrupt or truncated, the magic number is wrong, the type code is
            unsupported, the header declares no dimensions or is cut short, or
            the payload is not exactly ``prod(dims) * itemsize`` bytes
            (truncated file or trailing bytes). The message names the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if not data:
        raise DataError(f"{path}: the file is empty (0 bytes). {_REDOWNLOAD}")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        got = data[:4].hex(" ")
        hint = ""
        if data.lstrip()[:1] == b"<":
            hint = " It looks like an HTML/XML page, e.g. an error page saved by a failed download."
        raise DataError(
            f"{path}: not an IDX file: it must start with the magic number 00 00 <type> <ndim>, "
            f"got '{got}'.{hint} {_REDOWNLOAD} Format: {IDX_REFERENCE}.")
    code, ndim = data[2], data[3]
    dtype = IDX_TYPES.get(code)
    if dtype is None:
        known = ", ".join(_type_name(c) for c in IDX_TYPES)
        raise DataError(f"{path}: unsupported IDX type code 0x{code:02X} (supported: {known}). "
                        f"The file is corrupt or not an IDX file. {_REDOWNLOAD}")
    if ndim == 0:
        raise DataError(f"{path}: the IDX header declares 0 dimensions; the file is corrupt. "
                        f"{_REDOWNLOAD}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: the IDX header is truncated: {ndim} dimensions need "
                        f"{header} header bytes, the file has {len(data)}. {_REDOWNLOAD}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else f"{got - expected} extra bytes after the data"
        raise DataError(
            f"{path}: {what}: shape {shape} of {_type_name(code)} needs {expected} bytes of data, "
            f"the file has {got}. The file is incomplete or corrupt. {_REDOWNLOAD}")
    try:
        array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    except ValueError:
        # an empty shape whose other sizes multiply beyond what numpy can index, e.g. (0, 2**25, 2**30)
        raise DataError(f"{path}: the IDX header declares shape {shape}, which no array can have; "
                        f"the file is corrupt. {_REDOWNLOAD}") from None
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array


def load_images(path: str | os.PathLike) -> np.ndarray:
    """Load images from an IDX file as ``uint8`` NCHW.

    Args:
        path: An idx3 file ``(N, H, W)`` (grayscale, as MNIST), or a 4-D file
            ``(N, H, W, C)`` stored channels-last.

    Returns:
        ``uint8`` array of shape ``(N, C, H, W)``: ``(N, 1, H, W)`` for idx3
        (a read-only view, no copy), or the channels-last data transposed to
        NCHW (one contiguous copy).

    Raises:
        DataError: Anything :func:`read_idx` raises; data that is not uint8
            (type 0x08); a number of dimensions other than 3 or 4; or an
            image dimension (H, W, C) of size 0. Format:
            http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
    """
    path = Path(path)
    array = read_idx(path)
    if array.dtype != np.uint8:
        raise DataError(f"{path}: images are {array.dtype.name}, cnncli keeps datasets as uint8 "
                        "(IDX type 0x08). Convert the images to 0..255 uint8.")
    if array.ndim not in (3, 4):
        hint = " This looks like a labels file." if array.ndim == 1 else ""
        raise DataError(f"{path}: images must have 3 dimensions (N, H, W) or 4 (N, H, W, C), "
                        f"got shape {array.shape}.{hint} Check which file the images path points to.")
    if 0 in array.shape[1:]:
        raise DataError(f"{path}: images have an empty dimension: shape {array.shape}. "
                        f"The file is corrupt. {_REDOWNLOAD}")
    if array.ndim == 3:
        n, h, w = array.shape
        return array.reshape(n, 1, h, w)  # view
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)


def load_labels(path: str | os.PathLike) -> np.ndarray:
    """Load class labels from an idx1 file.

    Args:
        path: An idx1 file ``(N,)`` of integer labels (any IDX integer type).

    Returns:
        ``int64`` array of shape ``(N,)``.

    Raises:
        DataError: Anything :func:`read_idx` raises; a number of dimensions
            other than 1; float data; or a negative label. Format:
            http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
    """
    path = Path(path)
    array = read_idx(path)
    if array.ndim != 1:
        hint = " This looks like an images file." if array.ndim >= 3 else ""
        raise DataError(f"{path}: labels must have 1 dimension (N,), got shape {array.shape}."
                        f"{hint} Check which file the labels path points to.")
    if array.dtype.kind != "i" and array.dtype.kind != "u":
        raise DataError(f"{path}: labels are {array.dtype.name}, expected integer class indices "
                        "(IDX type 0x08 uint8, 0x09, 0x0B or 0x0C).")
    labels = array.astype(np.int64)
    if labels.size and labels.min() < 0:
        i = int(np.argmax(labels < 0))
        raise DataError(f"{path}: label {i} is {int(labels[i])}; labels must be class indices >= 0.")
    return labels


@dataclass
class Dataset:
    """Images and labels of one split, as stored (uint8).

    Attributes:
        images: ``uint8`` array ``(N, C, H, W)``; may be a read-only view of
            the file's bytes, so never modify it in place.
        labels: ``int64`` array ``(N,)`` of class indices in ``[0, num_classes)``.
        source: Where the data came from (the images file path).

    Raises:
        ValueError: If ``images`` is not 4-D, ``labels`` not 1-D, or their
            lengths differ (a programming error, not a data-file problem).
    """

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.ndim != 1:
            raise ValueError(f"Dataset needs images (N, C, H, W) and labels (N,), "
                             f"got {self.images.shape} and {self.labels.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"Dataset has {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        """``labels.max() + 1``, or 0 for an empty dataset."""
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def _candidates(split: str, kind: str) -> list[str]:
    names = []
    for prefix in _SPLIT_PREFIXES[split]:
        for tag in _KINDS[kind]:
            for stem in (f"{prefix}-{kind}-{tag}-ubyte", f"{prefix}-{kind}.{tag}-ubyte"):
                names += [stem, stem + ".gz"]
    return names


def find_split_files(folder: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """Find the images and labels files of a split in an MNIST-style folder.

    Looks for the standard MNIST names (http://yann.lecun.com/exdb/mnist/),
    plain or ``.gz``: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; also the variants
    with a dot (``train-images.idx3-ubyte``), ``test-`` instead of ``t10k-``,
    and ``idx4`` for 4-D channels-last images. The first match in that order
    wins (the plain file before its ``.gz``).

    Args:
        folder: The dataset folder.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images_path, labels_path)``.

    Raises:
        ValueError: If ``split`` is not ``"train"`` or ``"test"``.
        DataError: If the folder or a file is missing; the message lists the
            names looked for and what the folder contains.
    """
    if split not in _SPLIT_PREFIXES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(folder)
    if not _exists(folder):
        raise DataError(f"dataset folder not found: {folder} (absolute: {folder.absolute()}). "
                        "Relative paths are resolved from the current directory; "
                        "check data.path or download the dataset there.")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, expected a dataset folder holding IDX files. "
                        "Set data.path to the folder.")
    found = []
    for kind in _KINDS:
        names = _candidates(split, kind)
        try:
            path = next((folder / n for n in names if (folder / n).is_file()), None)
        except OSError as e:   # e.g. a folder without search (x) permission
            raise DataError(f"{folder}: cannot look into the folder ({e.strerror or e}). "
                            "Check its permissions.") from None
        if path is None:
            plain = ", ".join(n for n in names if not n.endswith(".gz"))
            raise DataError(f"{folder}: no {split} {kind} file. Looked for: {plain} "
                            f"(each also with .gz). The folder contains: {listing(folder)}. "
                            f"Download or rename the file.")
        found.append(path)
    return found[0], found[1]


def load_split(folder: str | os.PathLike, split: str, limit: int | None = None) -> Dataset:
    """Load one split (``"train"`` or ``"test"``) of an MNIST-style IDX folder.

    Files are found by :func:`find_split_files` and read by :func:`load_images`
    and :func:`load_labels`; the IDX format is documented at
    http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").

    Args:
        folder: The dataset folder.
        split: ``"train"`` or ``"test"``.
        limit: Keep only the first ``limit`` samples (quick runs, tests);
            ``None`` keeps all. Slicing is a view, not a copy.

    Returns:
        A :class:`Dataset` with ``uint8`` images ``(N, C, H, W)`` and
        ``int64`` labels ``(N,)``; ``source`` is the images file path.

    Raises:
        ValueError: If ``split`` is unknown or ``limit`` is not a positive int.
        DataError: Anything the functions above raise; image and label counts
            that differ (both files and counts are named); an empty dataset.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    images_path, labels_path = find_split_files(folder, split)
    return load_pair(images_path, labels_path, split, limit)


def load_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike, split: str = "train",
              limit: int | None = None) -> Dataset:
    """Load one split from an images file and a labels file (see :func:`load_split`).

    Raises:
        DataError: As :func:`load_split`: unreadable files, counts that differ, an empty split.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = load_images(images_path)
    labels = load_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has "
                        f"{len(labels)} labels. The two files must come from the same dataset "
                        f"and split. {_REDOWNLOAD}")
    if len(images) == 0:
        raise DataError(f"{images_path} and {labels_path}: the {split} split is empty (0 samples). "
                        f"{_REDOWNLOAD}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Dataset(images=images, labels=labels, source=str(images_path))
