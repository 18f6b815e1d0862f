"""The ``data`` section of a config: where the data is and how batches are normalized.

:func:`validate_data` checks a data section alone (``cnncli data info``); ``config.validate``
checks it as part of a whole config with the same function.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncli.checks import OptionError, check_bool, check_choice, check_float, check_int, check_size
from cnncli.config_sections import Checks, check_section, defaults_of, raise_problems
from cnncli.errors import Problem, did_you_mean, shown
from cnncli.yamlio import line_of


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of training batches (``cnncli.augment.Augment``): rotate by up to
    ``rotate`` degrees and scale by a factor in [1 - zoom, 1 + zoom] (bilinear, zero fill),
    shift by up to ``translate`` pixels (zero fill), horizontal flip with probability 0.5 if
    ``hflip``, and with probability ``erase`` set a random rectangle to 0 (random erasing)."""

    translate: int = 0
    hflip: bool = False
    rotate: float = 0.0
    zoom: float = 0.0
    erase: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how each batch is normalized: x = (pixel * scale - mean) / std,
    ``scale`` 1/255 unless ``data.scale`` is given (Caffe's ``transform_param scale``: with
    it, ``mean`` and ``std`` are numbers in the scaled units, e.g. 0 and 1 for Caffe's plain
    multiplier; ``auto`` would cancel the scale and is refused).

    Exactly one of ``name`` (a named dataset, see ``cnncli.catalog``), ``path`` (a dataset
    folder or file) or ``train`` (with optional ``test``) says where the data is; the
    readers are in ``cnncli.formats``. ``mean``/``std`` are a number, one per channel, or
    ``"auto"`` (computed from the training split by ``training.prepare_data`` and recorded
    in the resolved config, so eval and predict use the same numbers). ``validate_on``:
    ``val`` (the ``val_split`` carved from the training images) or ``test`` (the test split,
    Keras's ``validation_data``; ``val_split`` is then 0).
    """

    path: str | None = None
    num_classes: int | None = None
    val_split: float | int = 0.1
    mean: float | tuple[float, ...] | str = "auto"
    std: float | tuple[float, ...] | str = "auto"
    scale: float | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    augment: AugmentConfig = AugmentConfig()
    name: str | None = None
    train: str | tuple[str, str] | None = None
    test: str | tuple[str, str] | None = None
    format: str = "auto"
    root: str | None = None
    image_shape: tuple[int, ...] | None = None
    npz_keys: dict | None = None
    classes: tuple[str, ...] | None = None
    validate_on: str = "val"


# ------------------------------------------------------------------ checks

def _optional_positive_int(name: str):
    return lambda v: None if v is None else check_int(name, v, 1)


def check_path(v: Any) -> str:
    """``v`` if it is a path: non-empty text without a NUL character (else ValueError)."""
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a path (text), got {shown(v)}")
    if "\0" in v:
        raise ValueError(f"a path cannot contain a NUL character, got {shown(v)}")
    try:
        Path(v).expanduser()
    except RuntimeError:                 # ~user of a user this system does not know
        raise ValueError(f"starts with '{v.split('/', 1)[0]}', but there is no such user's home folder to "
                         f"expand it to; write the folder out, or ./{v} for a folder named so") from None
    return v


def _val_split(v):
    if isinstance(v, bool):
        raise OptionError("val_split", f"must be a fraction in [0, 1) or a count of images, got {shown(v)}")
    if isinstance(v, int):
        return check_int("val_split", v, 0)
    return check_float("val_split", v, 0.0, 1.0, high_open=True)


def check_shape(v, name: str, lengths: tuple[int, ...], forms: str, what: str) -> tuple[int, ...]:
    """A list of ``lengths`` positive ints holding at most ``MAX_ELEMENTS`` values, as a tuple."""
    if not isinstance(v, list) or len(v) not in lengths:
        raise OptionError(name, f"must be {forms}, got {shown(v)}")
    shape = tuple(check_int(name, s, 1) for s in v)
    check_size(what, shape)
    return shape


def _optional_path(v):
    return None if v is None else check_path(v)


def _location(v):
    """``data.train`` / ``data.test``: a file or folder, or an ``[images, labels]`` pair of IDX files."""
    if v is None:
        return None
    if isinstance(v, list):
        if len(v) != 2:
            raise ValueError(f"must be a path, or a pair [images, labels] of IDX files, got {shown(v)}")
        return tuple(check_path(p) for p in v)
    return check_path(v)


def _dataset_name(v):
    from cnncli.catalog import NAMES

    if v is None:
        return None
    if not isinstance(v, str) or v not in NAMES:
        raise ValueError(f"unknown dataset name {shown(v)}.{did_you_mean(str(v), NAMES)} Known names: "
                         f"{', '.join(NAMES)}; or give data.path")
    return v


def _data_format(v):
    from cnncli.formats import FORMATS

    return check_choice("format", v, FORMATS)


def _image_shape(v):
    return None if v is None else check_shape(v, "image_shape", (2, 3), "[H, W] or [C, H, W]", "an image")


def _npz_keys(v):
    from cnncli.formats import NPZ_KEYS

    if v is None:
        return None
    if not isinstance(v, dict):
        raise ValueError(f"must be a mapping such as {{x_train: images, y_train: labels}}, got {shown(v)}")
    for k, name in v.items():
        if k not in NPZ_KEYS:
            raise ValueError(f"unknown key {k!r}.{did_you_mean(str(k), NPZ_KEYS)} Keys: {', '.join(NPZ_KEYS)}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{k} must name an array of the archive (text), got {shown(name)}")
    return {str(k): str(name) for k, name in v.items()}


def _classes(v):
    if v is None:
        return None
    if not isinstance(v, list) or len(v) < 2:
        raise ValueError(f"must be a list of at least 2 class names, got {shown(v)}")
    names = []
    for c in v:
        if isinstance(c, bool) or not isinstance(c, (str, int)) or not str(c).strip():
            raise ValueError(f"class names are text, got {shown(c)}")
        names.append(str(c))
    dup = next((c for c in names if names.count(c) > 1), None)
    if dup is not None:
        raise ValueError(f"class '{dup}' is listed twice")
    return tuple(names)


def _normalizer(name: str, positive: bool):
    """``data.mean`` / ``data.std``: ``auto`` (or null), a number, or a list of one per channel."""
    def check(v):
        if v is None or v == "auto":
            return "auto"
        if isinstance(v, str):
            raise OptionError(name, f"must be a number, a list of numbers (one per channel) or 'auto', got {shown(v)}")
        # pixels are scaled to [0, 1] before normalizing: a mean outside it, or a std above 1,
        # is almost surely given in 0-255 units
        bounds = dict(low=0.0, low_open=True, high=1.0) if positive else dict(low=0.0, high=1.0)

        def one(x):
            try:
                return check_float(name, x, **bounds)
            except OptionError as e:
                if isinstance(x, numbers.Real) and not isinstance(x, bool) and x > 1:
                    raise OptionError(name, f"{e.reason}: {name} is for pixels scaled to [0, 1] (MNIST: mean 0.1307, std "
                                     f"0.3081); for a value in 0-255 units divide it by 255, or use 'auto'") from None
                raise
        if isinstance(v, list):
            if not v:
                raise OptionError(name, "must list one number per channel, got []")
            return tuple(one(x) for x in v)
        return one(v)
    return check


#: ``data`` keys -> checks (the defaults are :class:`DataConfig`'s).
DATA_CHECKS: Checks = {
    "path": _optional_path,
    "num_classes": lambda v: None if v is None else check_int("num_classes", v, 2),
    "val_split": _val_split,
    "validate_on": lambda v: check_choice("validate_on", v, ("val", "test")),
    "mean": _normalizer("mean", positive=False),
    "std": _normalizer("std", positive=True),
    "scale": lambda v: None if v is None else check_float("scale", v, 0.0, 1.0, low_open=True),
    "train_limit": _optional_positive_int("train_limit"),
    "test_limit": _optional_positive_int("test_limit"),
    "augment": None,          # checked by _augment
    "name": _dataset_name,
    "train": _location,
    "test": _location,
    "format": _data_format,
    "root": _optional_path,
    "image_shape": _image_shape,
    "npz_keys": _npz_keys,
    "classes": _classes,
}

#: ``data.augment`` keys -> checks.
AUGMENT_CHECKS: Checks = {"translate": lambda v: check_int("translate", v, 0, 64),
                          "hflip": lambda v: check_bool("hflip", v),
                          "rotate": lambda v: check_float("rotate", v, 0.0, 180.0),
                          "zoom": lambda v: check_float("zoom", v, 0.0, 0.9),
                          "erase": lambda v: check_float("erase", v, 0.0, 1.0)}


def _augment(raw, container, problems: list[Problem]) -> AugmentConfig:
    """``data.augment``: absent/null (off) or ``{translate: pixels, hflip: bool, rotate: degrees,
    zoom: fraction, erase: probability}``."""
    if raw is None:
        return AugmentConfig()
    return AugmentConfig(**check_section("data.augment", raw, problems, line_of(container, "augment"),
                                         AUGMENT_CHECKS, defaults_of(AugmentConfig)))


MAX_NORMALIZED = 1e6



def _normalization(values: dict[str, Any], raw: Any, problems: list[Problem]) -> None:
    """Refuse a mean/std that maps pixels to absurd values (a std of 1e-300 would turn every
    batch into inf and the run into NaN, reported as divergence instead of as the config's fault),
    and per-channel lists of different lengths. ``auto`` is checked when it is computed."""
    mean, std, scale = values.get("mean"), values.get("std"), values.get("scale")
    if scale is not None and "auto" in (mean, std):
        problems.append(Problem("data.scale", f"is {scale:g} but data.{'mean' if mean == 'auto' else 'std'} is "
                                f"'auto', which would standardize the scaled pixels and cancel the scale. Give "
                                f"data.mean and data.std in the scaled units: mean: 0, std: 1 for Caffe's plain "
                                f"multiplier (x = pixel * scale); or remove data.scale",
                                line_of(raw, "scale") if isinstance(raw, dict) else None))
        return
    top = 1.0 if scale is None else 255.0 * scale               # the largest scaled pixel
    if "auto" in (mean, std) or not isinstance(mean, (float, tuple)) or not isinstance(std, (float, tuple)):
        return                                           # computed later, or already reported
    means = mean if isinstance(mean, tuple) else (mean,)
    stds = std if isinstance(std, tuple) else (std,)
    if len(means) != len(stds) and 1 not in (len(means), len(stds)):
        problems.append(Problem("data.std", f"has {len(stds)} values but data.mean has {len(means)}; give one "
                                f"number, or one per channel in both",
                                line_of(raw, "std") if isinstance(raw, dict) else None))
        return
    n = max(len(means), len(stds))
    for m, s in zip(means * (n // len(means)), stds * (n // len(stds))):
        reach = max(abs((0.0 - m) / s), abs((top - m) / s))
        if reach > MAX_NORMALIZED:
            key = "std" if isinstance(raw, dict) and "std" in raw else "mean"
            problems.append(Problem(f"data.{key}", f"mean {m:g} and std {s:g} map pixels to values up to "
                                    f"{reach:.3g}; pixels are scaled to [0, 1] first, so use the dataset's "
                                    f"mean and std of those (MNIST: mean 0.1307, std 0.3081), or 'auto'",
                                    line_of(raw, key) if isinstance(raw, dict) else None))
            return



def _named_classes(name: str) -> tuple[str, ...] | None:
    """The class names the catalog gives the named dataset (None for EMNIST's, read from its files)."""
    from cnncli.catalog import DATASETS

    return DATASETS[name].classes


def _data_source(values: dict[str, Any], raw: Any, problems: list[Problem], present: bool,
                 overridden: Any = (), line: int | None = None) -> None:
    """Exactly one of data.name, data.path, data.train says where the data is. One given with
    ``--set`` replaces the file's (``--set data.path=x.npz`` on a config with ``data.name``);
    a replaced ``data.name`` leaves its class names as ``data.classes`` (unless given): the
    file says which dataset, the command line where another copy of it is."""
    if not present or (raw is not None and not isinstance(raw, dict)):
        return                                           # the missing or malformed section is reported
    if raw is None:                                      # `data:` with nothing under it (or --set data=)
        raw = {}
    given = [k for k in ("name", "path", "train") if values.get(k) is not None]
    from_cli = {o.removeprefix("data.") for o in overridden if o.startswith("data.")}
    if len(given) > 1 and from_cli & set(given) and not set(given) <= from_cli:
        for k in given:
            if k not in from_cli:
                if k == "name" and values.get("classes") is None:
                    values["classes"] = _named_classes(values["name"])
                values[k] = None
                follower = {"name": "root", "train": "test"}.get(k)
                if follower and follower not in from_cli:
                    values[follower] = None
        given = [k for k in given if k in from_cli]
    if not given and not any(raw.get(k) is not None for k in ("name", "path", "train")):
        problems.append(Problem("data", "no dataset: give data.path (a dataset folder or file), data.name "
                                "(mnist, fashion-mnist, kmnist, emnist-...) or data.train (and data.test)",
                                getattr(raw, "line", None) or line))
    elif len(given) > 1:
        problems.append(Problem(f"data.{given[1]}", f"give only one of data.{given[0]} and data.{given[1]}: "
                                f"data.name or data.path find both splits, data.train/data.test name them",
                                line_of(raw, given[1])))
    if values.get("test") is not None and values.get("train") is None:
        problems.append(Problem("data.test", "needs data.train (with data.name or data.path, the test split "
                                "is found in the dataset)", line_of(raw, "test")))
    if values.get("root") is not None and values.get("name") is None:
        problems.append(Problem("data.root", "is where named datasets are looked up; it needs data.name",
                                line_of(raw, "root")))



def check_data(raw: Any, problems: list[Problem], line: int | None = None, present: bool = True,
               overridden: Any = ()) -> dict[str, Any]:
    """Check a ``data`` section, recording problems; return the values for :class:`DataConfig`.

    Args:
        line: The line of the ``data`` key. ``present``: False when the section is absent.
        overridden: Key paths set by ``--set`` (one given there replaces the file's source).
    """
    values = check_section("data", raw, problems, line, DATA_CHECKS, defaults_of(DataConfig), present)
    data_raw = raw if isinstance(raw, dict) else {}
    values["augment"] = _augment(values.get("augment"), data_raw, problems)
    _normalization(values, raw, problems)
    _data_source(values, raw, problems, present, overridden, line)
    if values.get("validate_on") == "test":
        if "val_split" in data_raw and values.get("val_split") not in (0, None):
            problems.append(Problem("data.val_split", f"is {values['val_split']} but data.validate_on is test, "
                                    f"which validates on the test split instead; remove data.val_split (or set "
                                    f"it to 0), or validate on it with data.validate_on: val",
                                    line_of(data_raw, "val_split")))
        values["val_split"] = 0
    return values


def validate_data(raw: dict, source: str | None = None) -> DataConfig:
    """Check a ``data`` section alone (e.g. ``{path: data/mnist}``) and return its :class:`DataConfig`.

    Raises:
        ConfigError: With every problem found, at ``data.KEY`` paths.
    """
    problems: list[Problem] = []
    values = check_data(raw, problems)
    raise_problems(problems, raw, source)
    return DataConfig(**values)
