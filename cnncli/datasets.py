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
from typing import BinaryIO

import numpy as np

from . import files
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


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the data)."""
    parts, got = [], 0
    while got < n:
        block = stream.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _count_rest(stream: BinaryIO) -> int:
    """Bytes left in ``stream``, counted, not kept (a gzip stream from :func:`cnncli.files.open_unpacked`
    stops at its inflate limit)."""
    n = 0
    while block := stream.read(1 << 20):
        n += len(block)
    return n


#: The magic numbers of uint8 MNIST files (``00 00 08 <ndim>`` read as one big-endian int).
_MAGIC = {"images": "2051 (00 00 08 03) for images (N, H, W), or 2052 (00 00 08 04) for (N, H, W, C)",
          "labels": "2049 (00 00 08 01) for labels"}


def _bad_magic(path: Path, head: bytes, kind: str | None) -> DataError:
    """The message for a file whose first 4 bytes are not an IDX magic number: the magic
    expected (for ``kind``), what was found, and a hint for a byte-swapped header or a web page."""
    got = head[:4].hex(" ")
    found = f"{int.from_bytes(head[:4], 'big')} ('{got}')" if len(head) >= 4 else f"only '{got}'"
    expected = _MAGIC[kind] if kind in _MAGIC else f"{_MAGIC['images']}; {_MAGIC['labels']}"
    hint = ""
    if len(head) >= 4 and head[2:4] == b"\x00\x00" and head[::-1][:4][2] in IDX_TYPES:
        swapped = int.from_bytes(head[:4], "little")
        hint = (f" The bytes are those of {swapped} in reverse (little-endian) order: IDX headers (the magic "
                f"number and every size) are big-endian; write them with '>u4'.")
    elif head.lstrip()[:1] == b"<":
        hint = " It looks like an HTML/XML page, e.g. an error page saved by a failed download."
    return DataError(
        f"{path}: not an IDX file: it must start with the magic number 00 00 <type> <ndim>, expected "
        f"{expected}; found {found}.{hint} {_REDOWNLOAD} Format: {IDX_REFERENCE}.")


def _idx_header(path: Path, head: bytes, kind: str | None = None) -> tuple[int, np.dtype, int]:
    """(type code, dtype, ndim) from the first 4 bytes of an IDX file."""
    if not head:
        raise DataError(f"{path}: the file is empty (0 bytes). {_REDOWNLOAD}")
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise _bad_magic(path, head, kind)
    code, ndim = head[2], head[3]
    dtype = IDX_TYPES.get(code)
    if dtype is None:
        known = ", ".join(_type_name(c) for c in IDX_TYPES)
        raise DataError(f"{path}: unsupported IDX type code 0x{code:02X} (supported: {known}). "
                        f"The file is corrupt or not an IDX file. {_REDOWNLOAD}")
    if ndim == 0:
        raise DataError(f"{path}: the IDX header declares 0 dimensions; the file is corrupt. "
                        f"{_REDOWNLOAD}")
    return code, dtype, ndim


def _read_idx_data(path: Path, stream: BinaryIO, bound: int, gz: bool,
                   kind: str | None) -> tuple[int, tuple[int, ...], bytes]:
    """(type code, shape, payload) of an IDX stream, reading no more than the header declares
    (plus the count of any extra bytes, up to ``bound``)."""
    head = _read_exactly(stream, 4)
    code, dtype, ndim = _idx_header(path, head, kind)
    header = 4 + 4 * ndim
    dims = _read_exactly(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: the IDX header is truncated: {ndim} dimensions need "
                        f"{header} header bytes, the file has {4 + len(dims)}. {_REDOWNLOAD}")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4", count=ndim))
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if expected > bound - header:
        if not gz:   # the file's size is known: it is short
            raise DataError(
                f"{path}: truncated: shape {shape} of {_type_name(code)} needs {expected} bytes of data, "
                f"the file has {bound - header}. The file is incomplete or corrupt. {_REDOWNLOAD}")
        raise DataError(
            f"{path}: the IDX header declares shape {shape} of {_type_name(code)}, {expected:,} bytes of data, "
            f"but the gzip file cannot hold that much real data (refused above {bound:,} unpacked bytes, "
            f"{files.MAX_INFLATE_RATIO} times its size): it is corrupt or a decompression bomb. {_REDOWNLOAD}")
    data = _read_exactly(stream, expected)
    got = len(data)
    if got == expected:
        got += _count_rest(stream)
    if got != expected:
        what = "truncated" if got < expected else f"{got - expected} extra bytes after the data"
        raise DataError(
            f"{path}: {what}: shape {shape} of {_type_name(code)} needs {expected} bytes of data, "
            f"the file has {got}. The file is incomplete or corrupt. {_REDOWNLOAD}")
    return code, shape, data


def read_idx(path: str | os.PathLike, kind: str | None = None) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed, into an array.

    The format is described in the module docstring and at
    http://yann.lecun.com/exdb/mnist/ ("FILE FORMATS FOR THE MNIST DATABASE").
    Compression is detected from the gzip magic bytes ``1f 8b``, not from the
    file name, so a decompressed file that kept its ``.gz`` name still loads.
    The file must be a regular file (:func:`cnncli.files.open_regular`: not a
    device or FIFO); the header is read first and only the data it declares is
    read (or unpacked): gzip data declared to unpack to more than
    :func:`cnncli.files.inflate_limit` of the file's size is refused unread,
    and extra data after the declared payload is counted, never kept.

    Args:
        path: The IDX file.
        kind: ``"images"`` or ``"labels"``: names the magic number expected in a message
            about a file that does not start with one (2051 / 2049). Default: None (both).

    Returns:
        An array of the shape stored in the header. ``uint8``/``int8`` data is
        a read-only view of the bytes read (no copy); multi-byte types
        (int16, int32, float32, float64) are converted from big-endian to
        native byte order (one copy). Dimensions of size 0 are allowed here
        (an empty dataset is rejected by :func:`load_split`).

    Raises:
        DataError: If the file is missing, not a regular file, or unreadable,
            the gzip stream is corrupt or truncated, the magic number is wrong,
            the type code is unsupported, the header declares no dimensions or
            is cut short, the payload is not exactly ``prod(dims) * itemsize``
            bytes (truncated file or trailing bytes), or a gzip file declares
            more data than it can hold. The message names the file.
    """
    path = Path(path)
    if not _exists(path):
        raise DataError(f"file not found: {path} (absolute: {path.absolute()}). "
                        "Check the path, or download the dataset into that folder.")
    size = files.check_regular(path, DataError, "an IDX file")
    try:
        stream, bound, gz = files.open_unpacked(path, DataError, "an IDX file")
        with stream:
            code, shape, data = _read_idx_data(path, stream, bound, gz, kind)
    except DataError:
        raise
    except EOFError as e:
        raise DataError(f"{path}: the gzip stream is truncated ({size} compressed bytes, "
                        f"ends before the end-of-stream marker). The file is incomplete. "
                        f"{_REDOWNLOAD}") from e
    except (OSError, zlib.error, ValueError) as e:  # gzip.BadGzipFile is an OSError
        if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile) and e.strerror:
            raise DataError(f"{path}: cannot read the file ({e.strerror}). Check its permissions.") from e
        raise DataError(f"{path}: corrupt gzip data ({e}). {_REDOWNLOAD}") from e
    dtype = IDX_TYPES[code]
    try:
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
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
    array = read_idx(path, "images")
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
    array = read_idx(path, "labels")
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
        labels_source: The file holding the labels when it is not ``source`` (an IDX
            labels file), for messages about a label. Default: None (``source``).

    Raises:
        ValueError: If ``images`` is not 4-D, ``labels`` not 1-D, or their
            lengths differ (a programming error, not a data-file problem).
    """

    images: np.ndarray
    labels: np.ndarray
    source: str
    labels_source: str | None = None

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
    return Dataset(images=images, labels=labels, source=str(images_path), labels_source=str(labels_path))
