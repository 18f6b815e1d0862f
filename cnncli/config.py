"""YAML config -> frozen dataclasses, with every problem located.

A config has four sections::

    data:   {name | path | train + test, format, root, image_shape, npz_keys, classes,
             num_classes, val_split, mean, std, train_limit, test_limit}
    model:  {input_shape (optional), layers: [...]}
    train:  {epochs, batch_size, eval_batch_size, seed, optimizer, label_smoothing,
             schedule, grad_clip_norm, early_stopping, checkpoint}

(``data`` also takes ``augment: {translate, hflip}``.)
    output: {dir}

Loading uses ``yaml.safe_load`` semantics (plus YAML 1.2 floats such as ``1e-3``,
which YAML 1.1 reads as strings) and records the line of every key, so each
problem is reported as ``file:line key.path: what is wrong. How to fix it.``
All problems of a file are collected and raised together as one
:class:`~cnncli.errors.ConfigError` (confection's key-path errors, catalogue's
"did you mean").
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from cnncli.errors import ConfigError, Problem, did_you_mean
from cnncli.layers.base import check_float, check_int, check_size
from cnncli.model import LayerSpec, check_options, check_specs


# ------------------------------------------------------------------ YAML with lines

DEFAULT_OPTIMIZER = "adam"


class LineDict(dict):
    """A mapping that remembers the 1-based line of each key (``lines``) and of itself (``line``)."""

    line: int | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines: dict[Any, int] = {}


class LineList(list):
    """A sequence that remembers the 1-based line of each item (``lines``)."""

    line: int | None = None

    def __init__(self, *args):
        super().__init__(*args)
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds LineDict/LineList and refuses duplicate keys."""

    def construct_object(self, node, deep=False):
        # PyYAML's scalar constructors raise bare ValueError/KeyError/... on values such as
        # `!!int abc`, `!!bool maybe` or the impossible date `2020-02-30`; locate them instead.
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError) as e:
            tag = str(node.tag).rsplit(":", 1)[-1]
            value = node.value if isinstance(node, yaml.ScalarNode) else None
            what = f"cannot read {value!r} as {tag}" if value is not None else f"cannot build a {tag} here"
            detail = f" ({e})" if str(e) and not isinstance(e, (KeyError, IndexError, AttributeError)) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{what}{detail}. Quote the value to keep it as text, or fix it", node.start_mark) from None


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    d = LineDict()
    d.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value",
                                                    key_node.start_mark)
        if key in d:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {d.lines[key]})", key_node.start_mark)
        d[key] = loader.construct_object(value_node, deep=True)
        d.lines[key] = key_node.start_mark.line + 1
    return d


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.lines = [n.start_mark.line + 1 for n in node.value]
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)
# YAML 1.2 floats: 1e-3, 5E+4 (PyYAML's 1.1 resolver needs a dot and reads these as strings)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str, source: str | None = None) -> Any:
    """Parse YAML text with line tracking.

    Raises:
        ConfigError: On a syntax error, with line and column.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        col = f", column {mark.column + 1}" if mark else ""
        what = e.problem or str(e)
        if e.context:
            what = f"{e.context}: {what}" if e.problem else e.context
        kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ConfigError([Problem("", f"{kind}{col}: {what}", line)], source) from None
    except yaml.reader.ReaderError as e:   # a control character, e.g. a NUL byte
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1 if isinstance(e.position, int) else None
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise ConfigError([Problem("", f"YAML error, column {col}: character {char} is not allowed in YAML "
                                   f"({e.reason})", line)], source) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem("", f"YAML error: {e}")], source) from None
    except RecursionError:
        raise ConfigError([Problem("", "YAML nested too deeply (thousands of levels of [ or {); "
                                   "a config needs a few")], source) from None


def plain(value: Any) -> Any:
    """``value`` with every LineDict/LineList (and tuple) turned into a plain dict/list, so
    ``yaml.safe_dump`` and ``json.dumps`` can write it."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# ------------------------------------------------------------------ the dataclasses

@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation of training batches (``cnncli.augment.Augment``): shift by up to
    ``translate`` pixels (zero fill), horizontal flip with probability 0.5 if ``hflip``."""

    translate: int = 0
    hflip: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how each batch is normalized: x = (pixel/255 - mean) / std.

    Exactly one of ``name`` (a named dataset, see ``cnncli.catalog``), ``path`` (a dataset
    folder or file) or ``train`` (with optional ``test``) says where the data is; the
    readers are in ``cnncli.formats``. ``mean``/``std`` are a number, one per channel, or
    ``"auto"`` (computed from the training split by ``training.prepare_data`` and recorded
    in the resolved config, so eval and predict use the same numbers).
    """

    path: str | None = None
    num_classes: int | None = None
    val_split: float | int = 0.1
    mean: float | tuple[float, ...] | str = "auto"
    std: float | tuple[float, ...] | str = "auto"
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


@dataclass(frozen=True)
class ModelConfig:
    layers: tuple[LayerSpec, ...]
    input_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class OptimizerConfig:
    type: str = "adam"
    options: dict = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleConfig:
    """``train.schedule``: a name of ``cnncli.schedules.SCHEDULES`` and its options."""

    type: str = "constant"
    options: dict = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """``train.early_stopping`` (``cnncli.callbacks.EarlyStopping``)."""

    monitor: str = "val_loss"
    mode: str = "auto"
    patience: int = 5
    min_delta: float = 0.0


@dataclass(frozen=True)
class CheckpointConfig:
    """``train.checkpoint``: best.npz by ``monitor``; ``epoch_{k}.npz`` every ``every`` epochs (0: never)."""

    monitor: str = "val_accuracy"
    mode: str = "auto"
    every: int = 0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    optimizer: OptimizerConfig = OptimizerConfig()
    label_smoothing: float = 0.0
    schedule: ScheduleConfig = ScheduleConfig()
    grad_clip_norm: float | None = None
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()


@dataclass(frozen=True)
class OutputConfig:
    dir: str | None = None


@dataclass(frozen=True)
class Config:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    output: OutputConfig
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (JSON/YAML-safe); ``from_dict`` reads it back."""
        return plain({
            "data": dataclasses.asdict(self.data),
            "model": {
                **({"input_shape": list(self.model.input_shape)} if self.model.input_shape else {}),
                "layers": [{s.type: dict(s.options)} if s.options else s.type for s in self.model.layers],
            },
            "train": {
                **{f.name: getattr(self.train, f.name) for f in dataclasses.fields(self.train)
                   if f.name not in ("optimizer", "schedule", "early_stopping", "checkpoint")},
                "optimizer": {"type": self.train.optimizer.type, **self.train.optimizer.options},
                "schedule": {"type": self.train.schedule.type, **self.train.schedule.options},
                "early_stopping": None if self.train.early_stopping is None
                else dataclasses.asdict(self.train.early_stopping),
                "checkpoint": dataclasses.asdict(self.train.checkpoint),
            },
            "output": dataclasses.asdict(self.output),
        })


# ------------------------------------------------------------------ checks

REQUIRED = object()


def _positive_int(name):
    return lambda v: check_int(name, v, 1)


#: Largest batch size accepted: far beyond any dataset, small enough that n / batch_size
#: never underflows to 0 batches.
MAX_BATCH_SIZE = 2 ** 31


def _batch_size(name):
    return lambda v: check_int(name, v, 1, MAX_BATCH_SIZE)


def _optional_positive_int(name):
    return lambda v: None if v is None else check_int(name, v, 1)


def _non_negative_int(name):
    return lambda v: check_int(name, v, 0)


def _path(v):
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a path (text), got {v!r}")
    if "\0" in v:
        raise ValueError(f"a path cannot contain a NUL character, got {v!r}")
    return v


def _val_split(v):
    if isinstance(v, bool):
        raise ValueError(f"val_split must be a fraction in [0, 1) or a count of images, got {v!r}")
    if isinstance(v, int):
        return check_int("val_split", v, 0)
    return check_float("val_split", v, 0.0, 1.0, high_open=True)


def _shape(v, name: str, lengths: tuple[int, ...], forms: str, what: str) -> tuple[int, ...]:
    """A list of ``lengths`` positive ints holding at most ``MAX_ELEMENTS`` values, as a tuple."""
    if not isinstance(v, list) or len(v) not in lengths:
        raise ValueError(f"{name} must be {forms}, got {v!r}")
    shape = tuple(check_int(name, s, 1) for s in v)
    check_size(what, shape)
    return shape


def _input_shape(v):
    return _shape(v, "input_shape", (1, 3), "[C, H, W] or [F]", "an input")


def _output_dir(v):
    return None if v is None else _path(v)


def _optional_path(v):
    return None if v is None else _path(v)


def _location(v):
    """``data.train`` / ``data.test``: a file or folder, or an ``[images, labels]`` pair of IDX files."""
    if v is None:
        return None
    if isinstance(v, list):
        if len(v) != 2:
            raise ValueError(f"must be a path, or a pair [images, labels] of IDX files, got {v!r}")
        return tuple(_path(p) for p in v)
    return _path(v)


def _dataset_name(v):
    from cnncli.catalog import NAMES

    if v is None:
        return None
    if not isinstance(v, str) or v not in NAMES:
        raise ValueError(f"unknown dataset name {v!r}.{did_you_mean(str(v), NAMES)} Known names: "
                         f"{', '.join(NAMES)}; or give data.path")
    return v


def _data_format(v):
    from cnncli.formats import FORMATS
    from cnncli.layers.base import check_choice

    return check_choice("format", v, FORMATS)


def _image_shape(v):
    return None if v is None else _shape(v, "image_shape", (2, 3), "[H, W] or [C, H, W]", "an image")


def _npz_keys(v):
    from cnncli.formats import NPZ_KEYS

    if v is None:
        return None
    if not isinstance(v, dict):
        raise ValueError(f"must be a mapping such as {{x_train: images, y_train: labels}}, got {v!r}")
    for k, name in v.items():
        if k not in NPZ_KEYS:
            raise ValueError(f"unknown key {k!r}.{did_you_mean(str(k), NPZ_KEYS)} Keys: {', '.join(NPZ_KEYS)}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{k} must name an array of the archive (text), got {name!r}")
    return {str(k): str(name) for k, name in v.items()}


def _classes(v):
    if v is None:
        return None
    if not isinstance(v, list) or len(v) < 2:
        raise ValueError(f"must be a list of at least 2 class names, got {v!r}")
    names = []
    for c in v:
        if isinstance(c, bool) or not isinstance(c, (str, int)) or not str(c).strip():
            raise ValueError(f"class names are text, got {c!r}")
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
            raise ValueError(f"{name} must be a number, a list of numbers (one per channel) or 'auto', got {v!r}")
        # pixels are scaled to [0, 1] before normalizing: a mean outside it, or a std above 1,
        # is almost surely given in 0-255 units
        bounds = dict(low=0.0, low_open=True, high=1.0) if positive else dict(low=0.0, high=1.0)

        def one(x):
            try:
                return check_float(name, x, **bounds)
            except ValueError as e:
                if isinstance(x, numbers.Real) and not isinstance(x, bool) and x > 1:
                    raise ValueError(f"{e}: {name} is for pixels scaled to [0, 1] (MNIST: mean 0.1307, std "
                                     f"0.3081); for a value in 0-255 units divide it by 255, or use 'auto'") from None
                raise
        if isinstance(v, list):
            if not v:
                raise ValueError(f"{name} must list one number per channel, got []")
            return tuple(one(x) for x in v)
        return one(v)
    return check


SECTIONS: dict[str, dict[str, tuple[Any, Callable]]] = {
    "data": {
        "path": (None, _optional_path),
        "num_classes": (None, lambda v: None if v is None else check_int("num_classes", v, 2)),
        "val_split": (0.1, _val_split),
        "mean": ("auto", _normalizer("mean", positive=False)),
        "std": ("auto", _normalizer("std", positive=True)),
        "train_limit": (None, _optional_positive_int("train_limit")),
        "test_limit": (None, _optional_positive_int("test_limit")),
        "augment": (None, None),          # checked by _augment
        "name": (None, _dataset_name),
        "train": (None, _location),
        "test": (None, _location),
        "format": ("auto", _data_format),
        "root": (None, _optional_path),
        "image_shape": (None, _image_shape),
        "npz_keys": (None, _npz_keys),
        "classes": (None, _classes),
    },
    "model": {
        "input_shape": (None, lambda v: None if v is None else _input_shape(v)),
        "layers": (REQUIRED, None),       # checked by _layers
    },
    "train": {
        "epochs": (10, _positive_int("epochs")),
        "batch_size": (128, _batch_size("batch_size")),
        "eval_batch_size": (1000, _batch_size("eval_batch_size")),
        "seed": (0, _non_negative_int("seed")),
        "optimizer": ({"type": DEFAULT_OPTIMIZER}, None),  # checked by _optimizer
        "label_smoothing": (0.0, lambda v: check_float("label_smoothing", v, 0.0, 1.0)),
        "schedule": (None, None),         # checked by _schedule
        "grad_clip_norm": (None, lambda v: None if v is None else check_float("grad_clip_norm", v, 0.0,
                                                                               low_open=True)),
        "early_stopping": (None, None),   # checked by _callbacks
        "checkpoint": (None, None),       # checked by _callbacks
    },
    "output": {
        "dir": (None, _output_dir),
    },
}
REQUIRED_SECTIONS = ("data", "model")


def _line(container, key) -> int | None:
    lines = getattr(container, "lines", None)
    if isinstance(lines, dict):
        return lines.get(key, getattr(container, "line", None))
    if isinstance(lines, list) and isinstance(key, int) and key < len(lines):
        return lines[key]
    return getattr(container, "line", None)


def _layers(raw, problems: list[Problem], line: int | None = None) -> tuple[LayerSpec, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(Problem("model.layers", f"must be a non-empty list of layers, e.g. "
                                f"'- conv2d: {{out_channels: 8, kernel_size: 3}}', got {raw!r}",
                                getattr(raw, "line", None) or line))
        return ()
    specs = []
    for i, item in enumerate(raw):
        path, line = f"model.layers[{i}]", _line(raw, i)
        if isinstance(item, str):
            specs.append(LayerSpec(item, {}, path, line))
            continue
        if isinstance(item, dict) and "type" in item:          # {type: conv2d, out_channels: 8}
            opts = {k: plain(v) for k, v in item.items() if k != "type"}
            lines = {k: _line(item, k) for k in opts}
            specs.append(LayerSpec(str(item["type"]), opts, path, line, lines))
            continue
        if isinstance(item, dict) and len(item) == 1:           # {conv2d: {out_channels: 8}}
            (name, opts), = item.items()
            if opts is None:
                opts = {}
            if not isinstance(opts, dict):
                problems.append(Problem(path, f"options of '{name}' must be a mapping like "
                                        f"{_options_example(str(name))}, got {opts!r}", line))
                continue
            specs.append(LayerSpec(str(name), plain(opts), path, line, {k: _line(opts, k) for k in opts}))
            continue
        problems.append(Problem(path, f"a layer is a name ('relu') or one name with its options "
                                f"('conv2d: {{out_channels: 8, kernel_size: 3}}'), got {item!r}", line))
    problems.extend(check_specs(specs))
    problems.extend(check_options(specs))
    return tuple(specs)


def _typed(raw, path: str, line: int | None, registry: dict, what: str, example: str,
           problems: list[Problem]) -> dict | None:
    """A bare registered name or a mapping with a registered ``type``, as a mapping; None
    (after recording the problem) otherwise."""
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict) or "type" not in raw:
        problems.append(Problem(path, f"must be a name ({', '.join(registry)}) or a mapping with 'type', "
                                f"e.g. {example}", line))
        return None
    name = raw["type"]
    if not isinstance(name, str) or name not in registry:
        problems.append(Problem(f"{path}.type", f"unknown {what} {name!r}.{did_you_mean(str(name), registry)} "
                                f"Choose one of {', '.join(registry)}.", _line(raw, "type") or line))
        return None
    return raw


def _known_options(raw, opts: dict, allowed, path: str, name: str, line: int | None,
                   problems: list[Problem]) -> bool:
    """Record an "unknown option" problem (with the closest name) for each key of ``opts``
    not in ``allowed``; True when there was none."""
    ok = True
    for k in opts:
        if k not in allowed:
            ok = False
            problems.append(Problem(f"{path}.{k}", f"unknown option '{k}' for {name}.{did_you_mean(str(k), allowed)} "
                                    f"Options: {', '.join(allowed) or 'none'}.", _line(raw, k) or line))
    return ok


def _optimizer(raw, container, problems: list[Problem]) -> OptimizerConfig:
    from cnncli.optim import OPTIMIZERS

    path, line = "train.optimizer", _line(container, "optimizer")
    raw = _typed(raw, path, line, OPTIMIZERS, "optimizer", "{type: adam, lr: 0.001}", problems)
    if raw is None:
        return OptimizerConfig()
    name = raw["type"]
    cls = OPTIMIZERS[name]
    opts = {k: plain(v) for k, v in raw.items() if k != "type"}
    # keyword-only arguments (norm_keys) are filled by the trainer, not options
    allowed = [n for n, p in inspect.signature(cls.__init__).parameters.items()
               if n not in ("self", "params") and p.kind is not p.KEYWORD_ONLY]
    if _known_options(raw, opts, allowed, path, name, line, problems):
        try:
            cls({}, **opts)
        except (ValueError, TypeError) as e:
            msg = str(e)
            bad = next((k for k in sorted(opts, key=len, reverse=True)
                        if re.match(rf"{re.escape(k)}\b", msg)), None)
            if bad is not None and msg.startswith(f"{bad} "):
                msg = msg[len(bad) + 1:]
            problems.append(Problem(f"{path}.{bad}" if bad else path, msg, (_line(raw, bad) if bad else None) or line))
    return OptimizerConfig(name, opts)


def _schedule(raw, container, problems: list[Problem], optimizer: OptimizerConfig, epochs: Any) -> ScheduleConfig:
    """``train.schedule``: absent/null (constant), a bare name, or ``{type: name, option: value}``.
    Options are checked by building the schedule for the configured lr and epochs."""
    from cnncli.optim import OPTIMIZERS
    from cnncli.schedules import SCHEDULES, make_schedule, schedule_options

    path, line = "train.schedule", _line(container, "schedule")
    if raw is None:
        return ScheduleConfig()
    raw = _typed(raw, path, line, SCHEDULES, "schedule", "{type: cosine, warmup_epochs: 1}", problems)
    if raw is None:
        return ScheduleConfig()
    name = raw["type"]
    opts = {k: plain(v) for k, v in raw.items() if k != "type"}
    allowed = schedule_options(SCHEDULES[name])
    ok = _known_options(raw, opts, allowed, path, name, line, problems)
    for k, default in allowed.items():
        if default is inspect.Parameter.empty and k not in opts:
            ok = False
            problems.append(Problem(path, f"schedule {name} needs the option '{k}', e.g. "
                                    f"{{type: {name}, {k}: ...}}", line))
    if ok:
        lr = optimizer.options.get("lr", inspect.signature(OPTIMIZERS[optimizer.type].__init__).parameters["lr"].default)
        lr = lr if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 else 1.0  # else reported
        epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1 else 10
        try:
            make_schedule(name, opts, float(lr), epochs, 1)
            if name == "cosine":
                _cosine_limits(opts, raw, line, float(lr), epochs, problems)
        except (ValueError, TypeError, OverflowError) as e:
            msg = str(e)
            bad = next((k for k in sorted(opts, key=len, reverse=True) if re.match(rf"{re.escape(k)}\b", msg)), None)
            if bad is not None and msg.startswith(f"{bad} "):
                msg = msg[len(bad) + 1:]
            problems.append(Problem(f"{path}.{bad}" if bad else path, msg, (_line(raw, bad) if bad else None) or line))
    return ScheduleConfig(name, opts)


def _cosine_limits(opts: dict[str, Any], raw: Any, line: int | None, lr: float, epochs: int,
                   problems: list[Problem]) -> None:
    """A cosine schedule must anneal: ``eta_min`` at most the optimizer's lr, and the warmup
    shorter than the run (else the run ends inside it and the cosine never starts)."""
    path = "train.schedule"
    eta_min = opts.get("eta_min", 0.0)
    if eta_min > lr:
        problems.append(Problem(f"{path}.eta_min", f"is {eta_min:g}, above train.optimizer.lr {lr:g}: the lr would "
                                f"rise instead of anneal. Use a final lr below the start, e.g. eta_min: {lr / 100:g}",
                                _line(raw, "eta_min") or line))
    warmup = opts.get("warmup_epochs", 0)
    if warmup and warmup >= epochs:
        problems.append(Problem(f"{path}.warmup_epochs", f"is {warmup}, but train.epochs is {epochs}: the run would "
                                f"end inside the warmup and never anneal. " + (
                                f"Use fewer warmup epochs (at most {epochs - 1}) or more epochs" if epochs > 1 else
                                "Use warmup_epochs: 0 (no warmup) or more epochs"), _line(raw, "warmup_epochs") or line))


def _augment(raw, container, problems: list[Problem]) -> AugmentConfig:
    """``data.augment``: absent/null (off) or ``{translate: pixels, hflip: bool}``."""
    from cnncli.layers.base import check_bool

    if raw is None:
        return AugmentConfig()
    schema = {"translate": (0, lambda v: check_int("translate", v, 0, 64)),
              "hflip": (False, lambda v: check_bool("hflip", v))}
    return AugmentConfig(**_section("data.augment", raw, problems, _line(container, "augment"), schema=schema))


def _callbacks(values: dict[str, Any], container, problems: list[Problem]
               ) -> tuple[EarlyStoppingConfig | None, CheckpointConfig]:
    """``train.early_stopping`` (absent/null: off) and ``train.checkpoint``; a ``val_*`` monitor
    given explicitly is refused when ``data.val_split`` is 0 (there is no validation split)."""
    from cnncli.callbacks import MODES, MONITORS, resolve_monitor
    from cnncli.layers.base import check_choice

    mode = ("auto", lambda v: check_choice("mode", v, MODES))
    no_val = values["data"].get("val_split") == 0

    def monitor(default):
        # without a validation split the default reads the training metric, and says so in
        # the resolved config (which must validate again as it is)
        return resolve_monitor(default, not no_val), lambda v: check_choice("monitor", v, MONITORS)

    train = values["train"]
    early = None
    es_raw = train.get("early_stopping")
    if es_raw is not None:
        schema = {"monitor": monitor("val_loss"), "mode": mode,
                  "patience": (5, lambda v: check_int("patience", v, 1)),
                  "min_delta": (0.0, lambda v: check_float("min_delta", v, 0.0))}
        early = EarlyStoppingConfig(**_section("train.early_stopping", es_raw, problems,
                                               _line(container, "early_stopping"), schema=schema))
    ck_raw = train.get("checkpoint")
    schema = {"monitor": monitor("val_accuracy"), "mode": mode, "every": (0, lambda v: check_int("every", v, 0))}
    ckpt = CheckpointConfig(**_section("train.checkpoint", ck_raw, problems, _line(container, "checkpoint"),
                                       present=ck_raw is not None, schema=schema))
    sched_raw = train.get("schedule")
    for key, raw in (("early_stopping", es_raw), ("checkpoint", ck_raw), ("schedule", sched_raw)):
        given = raw.get("monitor") if isinstance(raw, dict) else None
        if no_val and isinstance(given, str) and given.startswith("val_"):
            problems.append(Problem(f"train.{key}.monitor", f"is {given} but data.val_split is 0, so there is no "
                                    f"validation split. Monitor train_{given[4:]} or set data.val_split.",
                                    _line(raw, "monitor")))
    return early, ckpt


def _section(name: str, raw: Any, problems: list[Problem], line: int | None = None,
             present: bool = True, schema: dict[str, tuple[Any, Callable]] | None = None) -> dict[str, Any]:
    """Check one section's keys and values; return {key: value} with defaults filled.

    ``line`` is the line of the section's key; ``present`` is False when the section is
    absent (its required keys are then not reported again: the missing section is).
    ``schema`` checks a nested mapping such as ``train.early_stopping`` (``name`` is then
    its key path) instead of ``SECTIONS[name]``."""
    schema = SECTIONS[name] if schema is None else schema
    defaults = {key: default for key, (default, _) in schema.items() if default is not REQUIRED}
    if raw is None and not present:
        return defaults
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(Problem(name, f"must be a mapping of keys ({', '.join(schema)}), got {raw!r}",
                                getattr(raw, "line", None) or line))
        return defaults
    for key in raw:
        if key not in schema:
            problems.append(Problem(f"{name}.{key}", f"unknown key '{key}'.{did_you_mean(str(key), schema)} "
                                    f"Keys of '{name}': {', '.join(schema)}.", _line(raw, key)))
    out = {}
    for key, (default, check) in schema.items():
        if key not in raw:
            if default is REQUIRED:
                problems.append(Problem(name, f"missing required key '{key}'", getattr(raw, "line", None) or line))
            else:
                out[key] = default
            continue
        value = raw[key]
        if check is None:
            out[key] = value
            continue
        try:
            out[key] = check(value)
        except ValueError as e:
            msg = str(e)
            if msg.startswith(f"{key} "):
                msg = msg[len(key) + 1:]
            problems.append(Problem(f"{name}.{key}", msg, _line(raw, key)))
    return out


#: Largest magnitude a normalized pixel (pixel/255 - mean) / std may reach.
MAX_NORMALIZED = 1e6


def _normalization(values: dict[str, Any], raw: Any, problems: list[Problem]) -> None:
    """Refuse a mean/std that maps pixels to absurd values (a std of 1e-300 would turn every
    batch into inf and the run into NaN, reported as divergence instead of as the config's fault),
    and per-channel lists of different lengths. ``auto`` is checked when it is computed."""
    mean, std = values.get("mean"), values.get("std")
    if "auto" in (mean, std) or not isinstance(mean, (float, tuple)) or not isinstance(std, (float, tuple)):
        return                                           # computed later, or already reported
    means = mean if isinstance(mean, tuple) else (mean,)
    stds = std if isinstance(std, tuple) else (std,)
    if len(means) != len(stds) and 1 not in (len(means), len(stds)):
        problems.append(Problem("data.std", f"has {len(stds)} values but data.mean has {len(means)}; give one "
                                f"number, or one per channel in both",
                                _line(raw, "std") if isinstance(raw, dict) else None))
        return
    n = max(len(means), len(stds))
    for m, s in zip(means * (n // len(means)), stds * (n // len(stds))):
        reach = max(abs((0.0 - m) / s), abs((1.0 - m) / s))
        if reach > MAX_NORMALIZED:
            key = "std" if isinstance(raw, dict) and "std" in raw else "mean"
            problems.append(Problem(f"data.{key}", f"mean {m:g} and std {s:g} map pixels to values up to "
                                    f"{reach:.3g}; pixels are scaled to [0, 1] first, so use the dataset's "
                                    f"mean and std of those (MNIST: mean 0.1307, std 0.3081), or 'auto'",
                                    _line(raw, key) if isinstance(raw, dict) else None))
            return


def _data_source(values: dict[str, Any], raw: Any, problems: list[Problem], present: bool,
                 overridden: Any = ()) -> None:
    """Exactly one of data.name, data.path, data.train says where the data is. One given with
    ``--set`` replaces the file's (``--set data.path=x.npz`` on a config with ``data.name``)."""
    if not present or not isinstance(raw, dict):
        return                                           # the missing section is reported
    given = [k for k in ("name", "path", "train") if values.get(k) is not None]
    from_cli = {o.removeprefix("data.") for o in overridden if o.startswith("data.")}
    if len(given) > 1 and from_cli & set(given) and not set(given) <= from_cli:
        for k in given:
            if k not in from_cli:
                values[k] = None
                follower = {"name": "root", "train": "test"}.get(k)
                if follower and follower not in from_cli:
                    values[follower] = None
        given = [k for k in given if k in from_cli]
    if not given and not any(k in raw for k in ("name", "path", "train")):
        problems.append(Problem("data", "no dataset: give data.path (a dataset folder or file), data.name "
                                "(mnist, fashion-mnist, kmnist, emnist-...) or data.train (and data.test)",
                                getattr(raw, "line", None)))
    elif len(given) > 1:
        problems.append(Problem(f"data.{given[1]}", f"give only one of data.{given[0]} and data.{given[1]}: "
                                f"data.name or data.path find both splits, data.train/data.test name them",
                                _line(raw, given[1])))
    if values.get("test") is not None and values.get("train") is None:
        problems.append(Problem("data.test", "needs data.train (with data.name or data.path, the test split "
                                "is found in the dataset)", _line(raw, "test")))
    if values.get("root") is not None and values.get("name") is None:
        problems.append(Problem("data.root", "is where named datasets are looked up; it needs data.name",
                                _line(raw, "root")))


def _kind(value: Any) -> str:
    """What a YAML value is, in the user's words."""
    if value is None:
        return "nothing"
    for types, word in ((bool, "true/false"), (str, "text"), ((int, float), "a number"),
                        (list, "a list"), (dict, "a mapping")):
        if isinstance(value, types):
            return word
    return type(value).__name__


def validate(raw: Any, source: str | None = None, stem: str = "run") -> Config:
    """Check a parsed config completely and return the frozen :class:`Config`.

    Raises:
        ConfigError: With every problem found, in file order.
    """
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", "a config is a mapping with the sections "
                                   f"{', '.join(SECTIONS)}; this file has {_kind(raw)}. "
                                   "See configs/mnist.yaml.")], source)
    for key in raw:
        if key not in SECTIONS:
            problems.append(Problem(str(key), f"unknown section '{key}'.{did_you_mean(str(key), SECTIONS)} "
                                    f"Sections: {', '.join(SECTIONS)}.", _line(raw, key)))
    for name in REQUIRED_SECTIONS:
        if name not in raw:
            problems.append(Problem(name, f"missing section '{name}'", 1 if source else None))
    values = {name: _section(name, raw.get(name), problems, _line(raw, name), name in raw) for name in SECTIONS}
    model_raw = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    layers = _layers(model_raw["layers"], problems, _line(model_raw, "layers")) if "layers" in model_raw else ()
    train_raw = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    optimizer = _optimizer(values["train"]["optimizer"], train_raw, problems)
    schedule = _schedule(values["train"].get("schedule"), train_raw, problems, optimizer, values["train"].get("epochs"))
    early_stopping, checkpoint = _callbacks(values, train_raw, problems)
    data_raw = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    values["data"]["augment"] = _augment(values["data"].get("augment"), data_raw, problems)
    _normalization(values["data"], raw.get("data"), problems)
    _data_source(values["data"], raw.get("data"), problems, "data" in raw, getattr(raw, "overridden", ()))
    if problems:
        # a value that came from --set is reported as such, not at the file line it replaced
        overridden = getattr(raw, "overridden", {})
        origins = getattr(raw, "origins", {})

        def origin(path: str) -> str | None:
            for o in sorted(overridden, key=len, reverse=True):
                if path == o or path.startswith((o + ".", o + "[")):
                    return origins.get(o, "--set")
            return None

        problems = [Problem(p.path, f"{p.message} (set by {origin(p.path)})", None) if origin(p.path) else p
                    for p in problems]
        problems.sort(key=lambda p: (p.line or 0))
        raise ConfigError(problems, source)
    out = values["output"]
    if out["dir"] is None:
        out["dir"] = f"runs/{stem}"
    return Config(
        data=DataConfig(**values["data"]),
        model=ModelConfig(layers=layers, input_shape=values["model"]["input_shape"]),
        train=TrainConfig(**{**values["train"], "optimizer": optimizer, "schedule": schedule,
                             "early_stopping": early_stopping, "checkpoint": checkpoint}),
        output=OutputConfig(**out),
        source=source,
    )


# ------------------------------------------------------------------ overrides

_KEY = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_PATH = re.compile(r"[^.\[\]\s]+(?:\.[^.\[\]\s]+|\[\d+\])*")


def _child(node: Any, k: str | int, next_key: str | int) -> Any:
    """``node[k]`` for an override that goes on with ``next_key``; a shorthand written as
    text is expanded first: a bare layer name (``- batchnorm``) becomes ``{batchnorm: {}}``,
    ``optimizer: sgd`` becomes ``{type: sgd}``."""
    child = node[k]
    if isinstance(child, str) and isinstance(next_key, str):
        if isinstance(k, int) and next_key == child:
            node[k] = child = LineDict({child: LineDict()})
        elif k in ("optimizer", "schedule"):
            node[k] = child = LineDict(type=child)
    return child


def _forget_lines(value: Any) -> Any:
    """Drop the line numbers of a value parsed from a ``--set`` text: they count lines of the
    override, not of the config file, so problems with it must not point into the file."""
    if isinstance(value, (LineDict, LineList)):
        value.line = None
        value.lines = {} if isinstance(value, LineDict) else []
        for v in (value.values() if isinstance(value, dict) else value):
            _forget_lines(v)
    return value


class Override(str):
    """A ``key.path=value`` override made by a command-line flag (``--lr``): ``flag`` names it in
    messages instead of ``--set``."""

    flag: str = "--set"

    def __new__(cls, text: str, flag: str = "--set"):
        self = super().__new__(cls, text)
        self.flag = flag
        return self


def _options_example(name: str) -> str:
    """An options mapping for layer ``name`` to show in a message: its required options (or its
    first option) with placeholder values, e.g. ``{out_features: ...}``."""
    from cnncli.layers.registry import options, resolve

    try:
        opts = options(resolve(name))
    except KeyError:
        return "{kernel_size: 3}"
    required = [n for n, p in opts.items() if p.default is inspect.Parameter.empty] or list(opts)[:1]
    return "{" + ", ".join(f"{n}: ..." for n in required) + "}" if required else "{}"


def _layer_option_path(raw: Any, path: str) -> str:
    """``model.layers[i].OPTION`` (the form error messages print) as the full
    ``model.layers[i].TYPE.OPTION`` of that layer's item; a bare ``- relu`` item becomes
    ``- relu: {}`` to take it. Other paths are returned unchanged."""
    m = re.fullmatch(r"model\.layers\[(\d+)\]\.([A-Za-z_][\w-]*)", path)
    layers = raw.get("model", {}).get("layers") if isinstance(raw, dict) and isinstance(raw.get("model"), dict) \
        else None
    if not m or not isinstance(layers, list) or int(m[1]) >= len(layers):
        return path
    i, option = int(m[1]), m[2]
    item = layers[i]
    if isinstance(item, str) and item != option:
        layers[i] = item = LineDict({item: LineDict()})
    if isinstance(item, dict) and len(item) == 1 and option not in item:
        kind = next(iter(item))
        if item[kind] is None:
            item[kind] = LineDict()
        if isinstance(item[kind], dict):
            return f"model.layers[{i}].{kind}.{option}"
    return path


def apply_overrides(raw: Any, overrides: list[str]) -> Any:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a parsed config.

    ``model.layers[0].conv2d.out_channels=16`` reaches into lists; so does
    ``model.layers[0].out_channels=16``, the form error messages print. Missing mappings
    are created.

    Raises:
        ConfigError: For a malformed override or a path through a non-mapping.
    """
    if raw is None:
        raw = LineDict()
    problems = []
    overridden: set[str] = set(getattr(raw, "overridden", ()))
    origins: dict[str, str] = dict(getattr(raw, "origins", {}))
    for item in overrides:
        flag = getattr(item, "flag", "--set")
        where = f"--set {item}" if flag == "--set" else f"{flag} ({item})"
        if "=" not in item:
            problems.append(Problem(where, "expected key.path=value, e.g. --set train.epochs=3"))
            continue
        path, _, text = item.partition("=")
        path = path.strip()
        if not _PATH.fullmatch(path):
            problems.append(Problem(where, f"'{path}' is not a key path; write it like train.epochs or "
                                    f"model.layers[0].conv2d.out_channels"))
            continue
        path = _layer_option_path(raw, path)
        keys = [m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _KEY.finditer(path)]
        try:
            value = _forget_lines(parse_yaml(text)) if text.strip() else None
        except ConfigError as e:
            problems.append(Problem(where, e.problems[0].message))
            continue
        node = raw
        created: list[str] = []
        prefix = ""
        try:
            for k, next_key in zip(keys[:-1], keys[1:]):
                prefix = f"{prefix}[{k}]" if isinstance(k, int) else (f"{prefix}.{k}" if prefix else k)
                if isinstance(k, int):
                    if not isinstance(node, list):
                        raise TypeError
                    node = _child(node, k, next_key)
                else:
                    if not isinstance(node, dict):
                        raise TypeError
                    if k not in node:            # a key the file does not have: --set creates it
                        created.append(prefix)
                        # --lr on a config without an optimizer sets the lr of the default one
                        node[k] = LineDict(type=DEFAULT_OPTIMIZER) if prefix == "train.optimizer" else LineDict()
                    node = _child(node, k, next_key)
            last = keys[-1]
            if isinstance(last, int) and isinstance(node, list):
                node[last] = value
            elif isinstance(node, dict) and isinstance(last, str):
                node[last] = value
            else:
                raise TypeError
        except (TypeError, IndexError, KeyError):
            problems.append(Problem(where, f"'{path}' does not lead to a key of the config"))
            continue
        for o in [path, *created]:
            overridden.add(o)
            origins[o] = flag
        layer_option = re.fullmatch(r"(model\.layers\[\d+\])\.[^.\[]+\.(.+)", path)
        if layer_option:       # problems name layer options without the type: model.layers[0].stride
            overridden.add(f"{layer_option[1]}.{layer_option[2]}")
            origins[f"{layer_option[1]}.{layer_option[2]}"] = flag
    if problems:
        raise ConfigError(problems)
    if isinstance(raw, LineDict):
        raw.overridden = overridden
        raw.origins = origins
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file.

    Raises:
        ConfigError: Missing or unreadable file, YAML syntax, or any invalid value.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("", "config file not found. Ready-made ones are in configs/, "
                                   "e.g. configs/mnist.yaml.")], source) from None
    except IsADirectoryError:
        raise ConfigError([Problem("", "is a folder, not a YAML file")], source) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem("", f"cannot read: {e}")], source) from None
    raw = parse_yaml(text, source)
    if overrides:
        if raw is not None and not isinstance(raw, dict):
            validate(raw, source)            # the file itself is wrong: say that, not "--set ... no key"
        raw = apply_overrides(raw, overrides)
    return validate(raw, source, stem=path.stem)


def from_dict(raw: dict[str, Any], source: str = "checkpoint") -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. stored in a checkpoint)."""
    return validate(raw, source)
