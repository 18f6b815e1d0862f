"""CSV datasets: one ``label,pixel,pixel,...`` line per image (Kaggle's MNIST layout)."""

from __future__ import annotations

import io
import math
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnncli import files
from cnncli.datasets import Dataset, _exists
from cnncli.errors import DataError
from cnncli.formats.arrays import _dataset, _image_shape

CSV_SUFFIXES = (".csv", ".csv.gz")

#: The longest CSV line read, in characters: 4 Mi, room for a 512 x 512 RGB image ("255," per value).
MAX_LINE = 4 << 20


def _open_text(path: Path):
    """The file as text: a regular file (never a device or FIFO), gunzipped within
    :func:`cnncli.files.inflate_limit` when it starts with the gzip magic."""
    raw, _, _ = files.open_unpacked(path, DataError, "a CSV file")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None)


def _lines(path: Path, f):
    """The lines of text file ``f``, each at most :data:`MAX_LINE` characters (a longer one, such
    as a file without line breaks, is refused before it is held in memory)."""
    number = 0
    while line := f.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE and not line.endswith("\n"):
            raise DataError(f"{path}:{number}: a line longer than {MAX_LINE:,} characters; a CSV dataset holds "
                            f"one image per line (label,pixel,pixel,...). Check the file.")
        yield line


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
            for line in _lines(path, f):
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
            for number, line in enumerate(_lines(path, f), 1):
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
    files.check_regular(path, DataError, "a CSV file")
    header, columns, _ = _csv_head(path)
    if columns < 2:
        raise DataError(f"{path}: lines hold {columns} value; expected the label then the pixels "
                        f"(label,pixel,pixel,...).")
    table = _csv_table(path, header, columns, limit)
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
    _check_values(path, header, table)
    labels_raw, pixels_raw = table[:, 0], table[:, 1:]
    images = pixels_raw.astype(np.uint8).reshape(len(table), h, w, c).transpose(0, 3, 1, 2)
    return _dataset(np.ascontiguousarray(images), labels_raw.astype(np.int64), str(path), split, None)


def _csv_table(path: Path, header: int, columns: int, limit: int | None) -> np.ndarray:
    """The data rows as a 2-D int32 table, or float64 when a value is not an integer.

    Raises:
        DataError: Not UTF-8, unreadable or truncated, or not a table of numbers (naming the
            first malformed line).
    """
    table = None
    for dtype in (np.int32, np.float64):
        try:
            # the reader gets exactly the data rows (blank lines and the header dropped here), so row i
            # is the i-th non-blank line after the header, as _csv_line_of_row counts
            rows = (line for i, (_, line) in enumerate(_csv_lines(path)) if i >= header)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")          # "input contained no data": read_csv reports it
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
    return table


#: The largest label a CSV file may hold (int32's largest): a class index, never beyond it.
MAX_CSV_LABEL = 2**31 - 1


def _check_values(path: Path, header: int, table: np.ndarray) -> None:
    """Pixels must be whole numbers 0..255 and labels whole numbers in 0..:data:`MAX_CSV_LABEL`.

    Raises:
        DataError: Naming the file and line of the first bad value.
    """
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
    huge = labels_raw > MAX_CSV_LABEL            # int32 parsing failed: beyond int64's exact range too, perhaps
    if huge.any():
        row, line = bad_row(huge)
        raise DataError(f"{path}:{line}: the label is {labels_raw[row]:.0f}, too large for a class index (at most "
                        f"{MAX_CSV_LABEL:,}); labels are class indices 0, 1, 2, ...")


def csv_line_of_label(path: str | os.PathLike, row: int) -> int:
    """The file line of the ``row``-th data row of a CSV file (for label errors found later)."""
    path = Path(path)
    header, _, _ = _csv_head(path)
    return _csv_line_of_row(path, header, row)

