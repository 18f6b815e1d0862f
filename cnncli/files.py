"""Reading the files a config or a checkpoint names, with bounds: the one place that opens them.

Every dataset file (IDX, NPZ, CSV, PGM, .npy, image files) and every checkpoint is opened
through :func:`open_regular`: it must be a regular file (not a folder, a device such as
``/dev/zero``, a named pipe or a socket) no larger than :data:`MAX_FILE_BYTES`. The type is
checked with ``os.stat`` before the file is opened, so a FIFO is never opened (opening one
for reading blocks until a writer appears), and again with ``fstat`` on the open descriptor
(opened non-blocking), so a path swapped in between is caught too.

Compressed data (gzip IDX and CSV, deflated NPZ members) is unpacked only as far as the
declared shape needs, and never beyond :func:`inflate_limit` of the compressed size: real
image data compresses 2-10 times (MNIST's gzip: 4.7), so a file that claims to unpack to more
than :data:`MAX_INFLATE_RATIO` times its size (plus :data:`INFLATE_SLACK`) is a decompression
bomb or corrupt, and is refused before anything is unpacked.

NPZ archives (:func:`npz_members`, :func:`read_member`) are read member by member with
``zipfile``: each member must be a ``.npy`` file whose header (dtype, shape; format:
https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html) is checked against
the zip's declared sizes before a byte of data is read; object dtypes (pickles) are refused.
Errors are raised as the caller's error class (:class:`~cnncli.errors.DataError` or
:class:`~cnncli.errors.CheckpointError`) and name the path.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.lib.format as npy_format

from cnncli.errors import CnncliError

__all__ = ["INFLATE_SLACK", "MAX_FILE_BYTES", "MAX_INFLATE_RATIO", "NpyHeader", "check_regular", "inflate_limit",
           "Limited", "npz_members", "npy_header", "open_regular", "open_unpacked", "read_member", "read_npy", "read_regular"]

#: The largest file read (and the most any compressed file or NPZ member may unpack to): 4 GiB.
MAX_FILE_BYTES = 4 << 30
#: Compressed data may unpack to at most this many times its compressed size (plus the slack).
MAX_INFLATE_RATIO = 100
#: Unpacked bytes always allowed, whatever the compressed size (small files of zeros): 16 MiB.
INFLATE_SLACK = 16 << 20
#: Bytes read per call when filling an array, so no second full-size buffer is ever made.
_CHUNK = 1 << 20

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _size(n: int) -> str:
    return f"{n:,} bytes" + (f" ({n / 2**30:,.1f} GiB)" if n >= 2**30 else f" ({n / 2**20:,.1f} MiB)" if n >= 2**20 else "")


def inflate_limit(compressed: int) -> int:
    """The most ``compressed`` bytes of gzip/deflate data may unpack to:
    ``min(MAX_INFLATE_RATIO * compressed + INFLATE_SLACK, MAX_FILE_BYTES)``."""
    return min(MAX_INFLATE_RATIO * compressed + INFLATE_SLACK, MAX_FILE_BYTES)


def _refuse_kind(path: Path, mode: int, error: type[CnncliError], expected: str) -> None:
    for test, kind in _KINDS:
        if test(mode):
            raise error(f"{path}: is {kind}, not a regular file; expected {expected}. Give the path of the file itself.")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: not a regular file; expected {expected}.")


def check_regular(path: str | os.PathLike, error: type[CnncliError], expected: str = "a file") -> int:
    """The size of ``path`` if it is a regular file (symlinks followed) of at most
    :data:`MAX_FILE_BYTES`; nothing is opened.

    Args:
        path: The file.
        error: The error class to raise (DataError, CheckpointError).
        expected: What the file should be, for messages (``"an IDX file"``).

    Raises:
        error: Missing or inaccessible path, a folder, device, FIFO or socket, or too large a file.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: file not found (absolute: {path.absolute()}). Check the path.") from None
    except (OSError, ValueError) as e:
        raise error(f"{path}: cannot access the path ({getattr(e, 'strerror', None) or e}). "
                    "Check the path and the permissions of the folders on it.") from None
    _refuse_kind(path, st.st_mode, error, expected)
    if st.st_size > MAX_FILE_BYTES:
        raise error(f"{path}: is {_size(st.st_size)}, more than the {_size(MAX_FILE_BYTES)} cnncli reads from one "
                    f"file; expected {expected}. Check the path.")
    return st.st_size


def open_regular(path: str | os.PathLike, error: type[CnncliError], expected: str = "a file") -> BinaryIO:
    """``path`` opened for binary reading after :func:`check_regular`; re-checked with ``fstat``
    on the descriptor (opened non-blocking, so even a FIFO swapped in after the check does not hang).

    Raises:
        error: As :func:`check_regular`, or the file cannot be opened.
    """
    path = Path(path)
    check_regular(path, error, expected)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{path}: cannot read the file ({e.strerror or e}). Check its permissions.") from None
    try:
        _refuse_kind(path, os.fstat(fd).st_mode, error, expected)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_regular(path: str | os.PathLike, error: type[CnncliError], expected: str = "a file") -> bytes:
    """The bytes of a regular file (:func:`open_regular`), at most :data:`MAX_FILE_BYTES` of them.

    Raises:
        error: As :func:`open_regular`; a read error; a file that grew beyond the limit while read.
    """
    try:
        with open_regular(path, error, expected) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise error(f"{path}: cannot read the file ({e.strerror or e}).") from None
    if len(data) > MAX_FILE_BYTES:
        raise error(f"{path}: holds more than the {_size(MAX_FILE_BYTES)} cnncli reads from one file.")
    return data


class Limited(io.RawIOBase):
    """A binary stream that raises ``error(message)`` once more than ``limit`` bytes were read
    from ``raw`` (a gzip reader: unpacked bytes beyond :func:`inflate_limit` are never kept)."""

    def __init__(self, raw: BinaryIO, limit: int, error: type[CnncliError], message: str,
                 underlying: BinaryIO | None = None):
        self.raw, self.limit, self.error, self.message, self.done = raw, limit, error, message, 0
        self.underlying = underlying      # closed with this stream (GzipFile leaves its fileobj open)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.raw.readinto(memoryview(b)[:_CHUNK])       # chunks: no full-size temporary inside gzip
        self.done += n or 0
        if self.done > self.limit:
            raise self.error(self.message)
        return n

    def close(self) -> None:
        try:
            self.raw.close()
            if self.underlying is not None:
                self.underlying.close()
        finally:
            super().close()


def open_unpacked(path: str | os.PathLike, error: type[CnncliError],
                  expected: str = "a file") -> tuple[BinaryIO, int, bool]:
    """A regular file (:func:`open_regular`) opened for binary reading, gunzipped when it starts
    with the gzip magic (whatever its name), unpacking at most :func:`inflate_limit` of its size.

    Returns:
        ``(stream, limit, gzipped)``: the stream (closing it closes the file), the most bytes
        it yields (the file's size, or the inflate limit), and whether it is gzip.

    Raises:
        error: As :func:`open_regular`; when read, more unpacked data than the limit.
    """
    f = open_regular(path, error, expected)
    try:
        gz = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
    except BaseException:
        f.close()
        raise
    if not gz:
        return f, size, False
    limit = inflate_limit(size)
    message = (f"{path}: the gzip data unpacks to more than {_size(limit)}, {MAX_INFLATE_RATIO} times its "
               f"{size:,} bytes: a decompression bomb or a corrupt file; refused.")
    return io.BufferedReader(Limited(gzip.GzipFile(fileobj=f, mode="rb"), limit, error, message, f)), limit, True


# ---------------------------------------------------------------- .npy and .npz


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares: ``shape``, ``dtype``, ``fortran_order``, and ``nbytes``
    (of the data) and ``offset`` (where the data starts)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize      # Python ints: no overflow


def npy_header(f: BinaryIO, where: str, error: type[CnncliError]) -> NpyHeader:
    """Parse the ``.npy`` header at the start of ``f`` (left at the first data byte).

    Raises:
        error: Not a .npy header (bad magic, unreadable or unsupported header), or an object
            dtype (pickled Python objects: never read).
    """
    try:
        version = npy_format.read_magic(f)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read(f)
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError, TokenError, ...
        raise error(f"{where}: not a readable .npy array header ({type(e).__name__}: {e}).") from None
    if dtype.hasobject:
        raise error(f"{where}: holds pickled Python objects; cnncli never unpickles files. Save plain numeric "
                    f"arrays.")
    return NpyHeader(tuple(int(s) for s in shape), dtype, bool(fortran_order), f.tell())


def npz_members(z: zipfile.ZipFile, where: str, error: type[CnncliError]) -> dict[str, zipfile.ZipInfo]:
    """The arrays of an NPZ archive by key (member name without ``.npy``), as ``np.load`` names them.

    Raises:
        error: A member that is not a ``.npy`` file (named), or an encrypted one.
    """
    members = {}
    for info in z.infolist():
        if info.is_dir():
            continue
        if not info.filename.endswith(".npy"):
            raise error(f"{where}: the member '{info.filename[:200]}' is not a .npy array; an .npz archive holds "
                        f".npy files only (as np.savez writes them).")
        if info.flag_bits & 0x1:
            raise error(f"{where}: the member '{info.filename[:200]}' is encrypted; save the arrays with np.savez.")
        members[info.filename[:-4]] = info
    return members


def _check_member(info: zipfile.ZipInfo, header: NpyHeader, where: str, error: type[CnncliError]) -> None:
    """The member's declared sizes agree with its header, and unpacking it is bounded."""
    need = header.offset + header.nbytes
    if header.nbytes > MAX_FILE_BYTES:
        raise error(f"{where}: its header declares shape {header.shape} of {header.dtype}, {_size(header.nbytes)}, "
                    f"more than the {_size(MAX_FILE_BYTES)} cnncli reads from one array; the file is corrupt.")
    if info.file_size < need:
        raise error(f"{where}: truncated: shape {header.shape} of {header.dtype} needs {need:,} bytes, the archive "
                    f"declares {info.file_size:,} for it. Save or download the file again.")
    if info.compress_type != zipfile.ZIP_STORED and need > inflate_limit(info.compress_size):
        raise error(f"{where}: {info.compress_size:,} compressed bytes declared to unpack to {_size(need)}, more than "
                    f"{MAX_INFLATE_RATIO} times their size: a decompression bomb or a corrupt file; refused.")


def read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, error: type[CnncliError],
                rows: int | None = None, check=None) -> np.ndarray:
    """One array of an NPZ archive, its header checked before its data is read.

    Args:
        z, info: The open archive and the member (from :func:`npz_members`).
        where: Names the member in messages (``"data.npz (x_train)"``).
        error: The error class to raise.
        rows: Read only the first ``rows`` entries along the first axis (C-order arrays; a
            Fortran-order array is read whole, then sliced).
        check: Optional ``check(header)`` called before any data is read (raise to refuse).

    Returns:
        A writable array in the stored dtype (byte order as stored) and shape.

    Raises:
        error: As :func:`npy_header`; sizes that disagree with the zip's (truncated), more
            unpacked data than :func:`inflate_limit` allows, data that ends early or is corrupt.
    """
    try:
        with z.open(info) as m:
            header = npy_header(m, where, error)
            if check is not None:
                check(header)
            _check_member(info, header, where, error)
            shape = header.shape
            if rows is not None and not header.fortran_order and len(shape) >= 1 and rows < shape[0]:
                shape = (rows, *shape[1:])
            array = np.empty(shape[::-1] if header.fortran_order else shape, header.dtype)
            _fill(m, array, where, error)
    except CnncliError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/zlib raise BadZipFile, zlib.error, EOFError, ... on damaged bytes
        raise error(f"{where}: cannot read the array ({type(e).__name__}: {e}). The file may be truncated or "
                    f"corrupt; save or download it again.") from None
    if header.fortran_order:
        array = array.transpose()
        if rows is not None and array.ndim >= 1:
            array = array[:rows]
    return array


def _fill(f: BinaryIO, array: np.ndarray, where: str, error: type[CnncliError]) -> None:
    """Fill ``array`` from ``f`` in chunks (no second full-size buffer)."""
    view = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
    done = 0
    while done < len(view):
        n = f.readinto(view[done:done + _CHUNK])
        if not n:
            raise error(f"{where}: truncated: the data ends after {done:,} of {len(view):,} bytes. Save or download "
                        f"the file again.")
        done += n


def read_npy(path: str | os.PathLike, error: type[CnncliError], expected: str = "a .npy file") -> np.ndarray:
    """A single ``.npy`` file: regular-file checks, then its header (size against the file's)
    before any data is read.

    Raises:
        error: As :func:`open_regular` and :func:`npy_header`; data shorter than declared.
    """
    path = Path(path)
    size = check_regular(path, error, expected)
    with open_regular(path, error, expected) as f:
        header = npy_header(f, str(path), error)
        if header.offset + header.nbytes > size:
            raise error(f"{path}: truncated: its header declares shape {header.shape} of {header.dtype}, "
                        f"{header.nbytes:,} bytes of data, the file has {size - header.offset:,}.")
        array = np.empty(header.shape[::-1] if header.fortran_order else header.shape, header.dtype)
        _fill(f, array, str(path), error)
    return array.transpose() if header.fortran_order else array
