"""``load``: the data section of a config, read into train and test splits by the right reader."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncli import files
from cnncli.datasets import MAX_LISTED, Dataset, listing, load_pair, load_split
from cnncli.errors import DataError
from cnncli.formats.csv_text import CSV_SUFFIXES, csv_line_of_label, read_csv
from cnncli.formats.detect import _check_exists, _named_for, _split_dir, _split_files, detect_format
from cnncli.formats.folders import class_folders, read_folder
from cnncli.formats.npz import read_npz

FORMATS = ("auto", "idx", "npz", "csv", "folder")

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
        raise DataError(f"{root}: no {kind} file. The folder contains: {listing(root)}.")
    if fmt == "npz" and len(files) == 1:
        return files[0], files[0]
    train, test = _named_for(files, "train"), _named_for(files, "test")
    if len(files) == 1:
        return files[0], None
    if len(train) != 1 or len(test) > 1:
        raise DataError(f"{root}: {len(files)} {kind} files ({', '.join(p.name for p in files[:MAX_LISTED])}) "
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
    splits = tuple(splits)
    fmt = d.format or "auto"
    classes = tuple(d.classes) if d.classes else None
    root, where, resolved, catalog_classes = _locate(d)
    if root is None:
        locations = (d.train, d.test)
    else:
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
    if "folder" in formats:
        train, test = _same_channels(train, test)
    if classes is None and catalog_classes is not None:
        classes = tuple(catalog_classes)
    if classes is not None:
        _check_class_names(train, test, classes)
        resolved["classes"] = list(classes)
    if len(formats) == 1:
        fmt = formats.pop()
    resolved["format"] = fmt
    return Loaded(train, test, classes, fmt, where, resolved)


def _locate(d: Any) -> tuple[Path | None, str, dict[str, Any], tuple[str, ...] | None]:
    """(dataset root or None for train/test locations, description for messages, resolved
    data-section values, the catalog's class names) of a data section."""
    from cnncli import catalog

    if d.name:
        info = catalog.lookup(d.name)
        root = catalog.find_named(d.name, d.root)
        return root, f"{d.name} ({root})", {"root": str(root.parent)}, info.classes or _emnist_classes(root)
    if d.path:
        root = Path(d.path).expanduser()
        _check_exists(root)                      # also when data.format is given (no detection)
        return root, str(root), {"path": _abs(root)}, None
    resolved = {"train": _abs(d.train) if d.train else None, "test": _abs(d.test) if d.test else None}
    return None, str(d.train if not isinstance(d.train, (list, tuple)) else d.train[0]), resolved, None


def _same_channels(train: Dataset | None, test: Dataset | None) -> tuple[Dataset | None, Dataset | None]:
    """Image folders: one colour image makes a split RGB; then both splits are read as RGB
    (the grey split's channel repeated)."""
    if train is None or test is None or {train.image_shape[0], test.image_shape[0]} != {1, 3}:
        return train, test
    grey = "train" if train.image_shape[0] == 1 else "test"
    ds = train if grey == "train" else test
    ds = Dataset(np.repeat(ds.images, 3, axis=1), ds.labels, ds.source, ds.labels_source)
    return (ds, test) if grey == "train" else (train, ds)


def _check_class_names(train: Dataset | None, test: Dataset | None, classes: Sequence[str]) -> None:
    """Raises DataError for a label with no class name, naming its file (and line) and the classes."""
    for ds in (train, test):
        if ds is not None and len(ds) and int(ds.labels.max()) >= len(classes):
            i = int(np.argmax(ds.labels >= len(classes)))
            raise DataError(f"{label_where(ds, i)}: label {int(ds.labels[i])} has no class name: there are "
                            f"{len(classes)} classes ({', '.join(classes[:MAX_LISTED])}{', ...' if len(classes) > MAX_LISTED else ''}). "
                            f"Fix the label or data.classes.")


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
    """``file:line`` for a CSV row, ``file (sample i)`` otherwise, naming the file that holds the
    labels (an IDX pair's labels file, not its images file)."""
    if ds.labels_source is not None:
        return f"{ds.labels_source} (sample {row})"
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
        text = files.read_regular(mapping, DataError, "EMNIST's mapping.txt").decode()
        rows = [line.split() for line in text.splitlines() if line.strip()]
        table = {int(r[0]): "".join(chr(int(c)) for c in r[1:]) for r in rows}
    except (ValueError, IndexError):     # UnicodeDecodeError is a ValueError
        return None
    if not table:
        return None
    return tuple(table.get(i, "-") for i in range(max(table) + 1))

