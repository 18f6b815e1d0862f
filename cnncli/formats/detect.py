"""Telling a dataset's format from its files: ``detect_format`` and the folder layout helpers."""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

from cnncli import files
from cnncli.datasets import _exists, find_split_files, listing
from cnncli.errors import DataError, did_you_mean
from cnncli.formats.csv_text import CSV_SUFFIXES

SPLIT_DIRS = {"train": ("train", "training"), "test": ("test", "testing")}
SPLIT_WORDS = {"train": ("train", "training"), "test": ("test", "testing", "t10k")}

def _sniff(path: Path) -> bytes:
    """The first bytes of a file, gunzipped when it is gzip (a regular file only: never a device or FIFO)."""
    try:
        stream, _, _ = files.open_unpacked(path, DataError, "a dataset file")
        with stream:
            head = stream.read(64)
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
        DataError: Missing path, a device, FIFO or socket (never opened), or nothing recognizable (the folder's contents are listed).
    """
    path = Path(path)
    _check_exists(path)
    if not path.is_dir():
        files.check_regular(path, DataError, "a dataset file or folder")     # a device or FIFO: say so
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
                    f"The folder contains: {listing(path)}.")

