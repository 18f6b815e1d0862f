"""YAML config -> frozen dataclasses, with every problem located.

A config has four sections::

    data:   {name | path | train + test, format, root, image_shape, npz_keys, classes,
             num_classes, val_split, mean, std, train_limit, test_limit}
    model:  {input_shape (optional), layers: [...]}
    train:  {epochs | max_steps, val_every, batch_size, eval_batch_size, seed, optimizer, label_smoothing,
             schedule, grad_clip_norm, early_stopping, checkpoint, threads}
    output: {dir}

(``data`` also takes ``augment: {translate, hflip, rotate, zoom, erase}``.)

Loading (``cnncli.yamlio``) uses ``yaml.safe_load`` semantics and records the line of
every key, so each problem is reported as ``file:line key.path: what is wrong. How to fix
it.`` All problems of a file are collected and raised together as one
:class:`~cnncli.errors.ConfigError` (confection's key-path errors, catalogue's
"did you mean"). The defaults are the dataclasses' (their single source); ``--set``
overrides are in ``cnncli.overrides``, the ``data`` section in ``cnncli.config_data``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncli.checks import OptionError, check_choice, check_float, check_int
from cnncli.config_data import (DATA_CHECKS, AugmentConfig, DataConfig, check_data, check_path, check_shape,
                                validate_data)
from cnncli.config_sections import Checks, check_section, defaults_of, kind_of, raise_problems
from cnncli.errors import ConfigError, Problem, did_you_mean, shown
from cnncli.model import LayerSpec, check_specs
from cnncli.overrides import Override, apply_overrides
from cnncli.registry import check_block
from cnncli.yamlio import LineDict, LineList, line_of, parse_yaml, plain

__all__ = ["AugmentConfig", "CheckpointConfig", "Config", "DataConfig", "EarlyStoppingConfig", "LineDict",
           "LineList", "ModelConfig", "OptimizerConfig", "OutputConfig", "Override", "ScheduleConfig",
           "TrainConfig", "apply_overrides", "from_dict", "load", "parse_yaml", "plain", "validate",
           "validate_data"]


# ------------------------------------------------------------------ the dataclasses

@dataclass(frozen=True)
class ModelConfig:
    """``model``: the layers (in order) and one sample's input shape (None: from the data)."""

    layers: tuple[LayerSpec, ...]
    input_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class OptimizerConfig:
    """``train.optimizer``: a name of ``cnncli.optim.OPTIMIZERS`` and its options."""

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
    """``train.checkpoint``: best.npz by ``monitor``; ``epoch_{k}.npz`` every ``every`` epochs (0: never);
    ``last.npz`` also every ``every_steps`` optimizer steps (0: only at validations), a state
    ``--resume`` continues exactly from the middle of an epoch."""

    monitor: str = "val_accuracy"
    mode: str = "auto"
    every: int = 0
    every_steps: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """``train``: how long, in which batches, with which optimizer, schedule and callbacks;
    ``threads``: BLAS threads while training (None: every core this process may use; see
    ``cnncli.threads``)."""

    epochs: int | None = 10
    max_steps: int | None = None
    val_every: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    optimizer: OptimizerConfig = OptimizerConfig()
    label_smoothing: float = 0.0
    schedule: ScheduleConfig = ScheduleConfig()
    grad_clip_norm: float | None = None
    early_stopping: EarlyStoppingConfig | None = None
    checkpoint: CheckpointConfig = CheckpointConfig()
    threads: int | None = None


@dataclass(frozen=True)
class OutputConfig:
    """``output``: the run folder (None: ``runs/<config file stem>``)."""

    dir: str | None = None


@dataclass(frozen=True)
class Config:
    """A validated config: the four sections and the file it came from."""

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

def _positive_int(name):
    """A check of an int >= 1, or null (``train.epochs`` / ``max_steps`` / ``val_every``: see ``_duration``)."""
    return lambda v: None if v is None else check_int(name, v, 1)




#: Largest batch size accepted: far beyond any dataset, small enough that n / batch_size
#: never underflows to 0 batches.
MAX_BATCH_SIZE = 2 ** 31


def _batch_size(name):
    return lambda v: check_int(name, v, 1, MAX_BATCH_SIZE)



def _non_negative_int(name):
    return lambda v: check_int(name, v, 0)



def _input_shape(v):
    shape = check_shape(v, "input_shape", (1, 3), "[C, H, W] or [F]", "an input")
    if len(shape) == 3 and shape[2] in (1, 3, 4) and min(shape[0], shape[1]) > 4:
        # [28, 28, 1] would be 28 channels of 28x1 images: Keras's channels-last habit
        raise OptionError("input_shape", f"{list(shape)} is channels-last (Keras's [H, W, C]); cnncli is "
                          f"channels-first, [C, H, W]: write [{shape[2]}, {shape[0]}, {shape[1]}] (or leave "
                          f"model.input_shape out: it is inferred from the data)")
    return shape



def _output_dir(v):
    return None if v is None else check_path(v)



#: Section -> key -> check (None: checked by its own function below). The defaults are the
#: dataclasses': ``SECTION_TYPES``.
SECTIONS: dict[str, Checks] = {
    "data": DATA_CHECKS,
    "model": {
        "input_shape": lambda v: None if v is None else _input_shape(v),
        "layers": None,           # checked by _layers
    },
    "train": {
        "epochs": _positive_int("epochs"),
        "max_steps": _positive_int("max_steps"),
        "val_every": _positive_int("val_every"),
        "batch_size": _batch_size("batch_size"),
        "eval_batch_size": _batch_size("eval_batch_size"),
        "seed": _non_negative_int("seed"),
        "optimizer": None,        # checked by _optimizer
        "label_smoothing": lambda v: check_float("label_smoothing", v, 0.0, 1.0),
        "schedule": None,         # checked by _schedule
        "grad_clip_norm": lambda v: None if v is None else check_float("grad_clip_norm", v, 0.0, low_open=True),
        "early_stopping": None,   # checked by _callbacks
        "checkpoint": None,       # checked by _callbacks
        "threads": lambda v: None if v is None else check_int("threads", v, 1, 1024),
    },
    "output": {
        "dir": _output_dir,
    },
}
SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "output": OutputConfig}
REQUIRED_SECTIONS = ("data", "model")


def _options_example(name: str) -> str:
    """An options mapping for layer ``name`` to show in a message: its required options (or its
    first option) with placeholder values, e.g. ``{out_features: ...}``."""
    from cnncli.layers import LAYERS

    try:
        cls = LAYERS.get(name)
    except KeyError:
        return "{kernel_size: 3}"
    required = LAYERS.required(cls) or list(LAYERS.options(cls))[:1]
    return "{" + ", ".join(f"{n}: ..." for n in required) + "}" if required else "{}"


def _layers(raw, problems: list[Problem], line: int | None = None) -> tuple[LayerSpec, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(Problem("model.layers", f"must be a non-empty list of layers, e.g. "
                                f"'- conv2d: {{out_channels: 8, kernel_size: 3}}', got {shown(raw)}",
                                getattr(raw, "line", None) or line))
        return ()
    specs = []
    for i, item in enumerate(raw):
        path, line = f"model.layers[{i}]", line_of(raw, i)
        if isinstance(item, str):
            specs.append(LayerSpec(item, {}, path, line))
            continue
        if isinstance(item, dict) and "type" in item:          # {type: conv2d, out_channels: 8}
            opts = {k: plain(v) for k, v in item.items() if k != "type"}
            lines = {k: line_of(item, k) for k in opts}
            specs.append(LayerSpec(str(item["type"]), opts, path, line, lines))
            continue
        if isinstance(item, dict) and len(item) == 1:           # {conv2d: {out_channels: 8}}
            (name, opts), = item.items()
            if opts is None:
                opts = {}
            if not isinstance(opts, dict):
                problems.append(Problem(path, f"options of '{name}' must be a mapping like "
                                        f"{_options_example(str(name))}, got {shown(opts)}", line))
                continue
            specs.append(LayerSpec(str(name), plain(opts), path, line, {k: line_of(opts, k) for k in opts}))
            continue
        problems.append(Problem(path, f"a layer is a name ('relu') or one name with its options "
                                f"('conv2d: {{out_channels: 8, kernel_size: 3}}'), got {shown(item)}", line))
    problems.extend(check_specs(specs))
    return tuple(specs)


def _typed(raw: Any, path: str, line: int | None, registry, example: str, problems: list[Problem]) -> dict | None:
    """A bare name or a mapping with ``type``, as a mapping; None (after recording the
    problem) otherwise. Whether the name is registered is :func:`_block`'s to check."""
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict) or "type" not in raw:
        problems.append(Problem(path, f"must be a name ({', '.join(registry)}) or a mapping with 'type', "
                                f"e.g. {example}", line))
        return None
    return raw


def _block(registry, raw: dict, path: str, line: int | None, problems: list[Problem],
           construct) -> tuple[str | None, dict[str, Any]]:
    """Check a ``{type: NAME, option: value}`` block of ``registry`` (``registry.check_block``);
    return its canonical name (None if unknown) and its options."""
    opts = {k: plain(v) for k, v in raw.items() if k != "type"}
    entry, found = check_block(registry, raw["type"], opts, path=path, line=line,
                               option_lines={k: line_of(raw, k) for k in opts}, name_path=f"{path}.type",
                               name_line=line_of(raw, "type") or line, construct=construct)
    problems.extend(found)
    return (None if entry is None else entry.type_name), opts


def _optimizer(train: dict[str, Any], container, problems: list[Problem]) -> OptimizerConfig:
    """``train.optimizer``: absent (the default), a bare name, or ``{type: name, option: value}``;
    the options are checked by constructing the optimizer over no parameters."""
    from cnncli.optim import OPTIMIZERS

    if "optimizer" not in train:
        return OptimizerConfig()
    path, line = "train.optimizer", line_of(container, "optimizer")
    raw = _typed(train["optimizer"], path, line, OPTIMIZERS, "{type: adam, lr: 0.001}", problems)
    if raw is None:
        return OptimizerConfig()
    name, opts = _block(OPTIMIZERS, raw, path, line, problems, lambda cls, kw: cls(params={}, **kw))
    return OptimizerConfig(name or OptimizerConfig.type, opts)


def _schedule(train: dict[str, Any], container, problems: list[Problem], optimizer: OptimizerConfig) -> ScheduleConfig:
    """``train.schedule``: absent/null (constant), a bare name, or ``{type: name, option: value}``.
    Options are checked by building the schedule for the configured lr and epochs."""
    from cnncli.optim import OPTIMIZERS
    from cnncli.schedules import SCHEDULES

    path, line = "train.schedule", line_of(container, "schedule")
    if train.get("schedule") is None:
        return ScheduleConfig()
    raw = _typed(train["schedule"], path, line, SCHEDULES, "{type: cosine, warmup_epochs: 1}", problems)
    if raw is None:
        return ScheduleConfig()
    lr = optimizer.options.get("lr", OPTIMIZERS.options(OPTIMIZERS[optimizer.type])["lr"].default)
    lr = lr if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 else 1.0  # else reported
    epochs = train.get("epochs")
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1 else 10
    name, opts = _block(SCHEDULES, raw, path, line, problems,
                        lambda cls, kw: cls(base_lr=float(lr), epochs=epochs, steps_per_epoch=1, **kw))
    return ScheduleConfig(name or ScheduleConfig.type, opts)


def _duration(train: dict[str, Any], container, problems: list[Problem]) -> None:
    """``train.epochs`` or ``train.max_steps``: a run is counted in one of them. ``epochs``'
    default (10) applies only when ``max_steps`` is absent; with ``max_steps``, ``epochs``
    becomes None (the resolved config says ``epochs: null``, which validates again)."""
    given = container.get("epochs") if isinstance(container, dict) else None
    if train.get("max_steps") is not None:
        if given is not None:
            problems.append(Problem("train.epochs", f"is {given!r} and train.max_steps is {train['max_steps']!r}: "
                                    f"a run is counted in epochs or in optimizer steps, not both. Remove one, "
                                    f"or set it to null (e.g. --set train.max_steps=null)", line_of(container, "epochs")))
        train["epochs"] = None
    elif isinstance(container, dict) and "epochs" in container and given is None:     # (a bad value is reported)
        problems.append(Problem("train.epochs", "is null and train.max_steps is not set: say how long to train, "
                                "e.g. epochs: 10 or max_steps: 10000", line_of(container, "epochs")))


def _callbacks(values: dict[str, Any], container, problems: list[Problem]
               ) -> tuple[EarlyStoppingConfig | None, CheckpointConfig]:
    """``train.early_stopping`` (absent/null: off) and ``train.checkpoint``; a ``val_*`` monitor
    given explicitly is refused when ``data.val_split`` is 0 (there is no validation split)."""
    from cnncli.callbacks import MODES, MONITORS, resolve_monitor

    no_val = values["data"].get("val_split") == 0 and values["data"].get("validate_on") != "test"
    checks: Checks = {"monitor": lambda v: check_choice("monitor", v, MONITORS),
                      "mode": lambda v: check_choice("mode", v, MODES),
                      "patience": lambda v: check_int("patience", v, 1),
                      "min_delta": lambda v: check_float("min_delta", v, 0.0),
                      "every": lambda v: check_int("every", v, 0),
                      "every_steps": lambda v: check_int("every_steps", v, 0)}

    def section(name: str, raw: Any, cls: type, present: bool = True) -> dict[str, Any]:
        defaults = defaults_of(cls)
        # without a validation split the default monitor reads the training metric, and says
        # so in the resolved config (which must validate again as it is)
        defaults["monitor"] = resolve_monitor(defaults["monitor"], not no_val)
        own = {k: checks[k] for k in defaults}
        return check_section(f"train.{name}", raw, problems, line_of(container, name), own, defaults, present)

    train = values["train"]
    early = None
    es_raw = train.get("early_stopping")
    if es_raw is not None:
        early = EarlyStoppingConfig(**section("early_stopping", es_raw, EarlyStoppingConfig))
    ck_raw = train.get("checkpoint")
    ckpt = CheckpointConfig(**section("checkpoint", ck_raw, CheckpointConfig, present=ck_raw is not None))
    sched_raw = train.get("schedule")
    for key, raw in (("early_stopping", es_raw), ("checkpoint", ck_raw), ("schedule", sched_raw)):
        given = raw.get("monitor") if isinstance(raw, dict) else None
        if no_val and isinstance(given, str) and given.startswith("val_"):
            problems.append(Problem(f"train.{key}.monitor", f"is {given} but data.val_split is 0, so there is no "
                                    f"validation split. Monitor train_{given[4:]}, or set data.val_split or "
                                    f"data.validate_on: test.",
                                    line_of(raw, "monitor")))
    return early, ckpt



def validate(raw: Any, source: str | None = None, stem: str = "run") -> Config:
    """Check a parsed config completely and return the frozen :class:`Config`.

    Raises:
        ConfigError: With every problem found, in file order.
    """
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", "a config is a mapping with the sections "
                                   f"{', '.join(SECTIONS)}; this file has {kind_of(raw)}. "
                                   "See configs/mnist.yaml.")], source)
    for key in raw:
        if key not in SECTIONS:
            problems.append(Problem(str(key), f"unknown section '{key}'.{did_you_mean(str(key), SECTIONS)} "
                                    f"Sections: {', '.join(SECTIONS)}.", line_of(raw, key)))
    for name in REQUIRED_SECTIONS:
        if name not in raw:
            problems.append(Problem(name, f"missing section '{name}'", 1 if source else None))
    values = {"data": check_data(raw.get("data"), problems, line_of(raw, "data"), "data" in raw,
                                 getattr(raw, "overridden", ()))}
    values.update({name: check_section(name, raw.get(name), problems, line_of(raw, name), SECTIONS[name],
                                       defaults_of(SECTION_TYPES[name]), name in raw)
                   for name in ("model", "train", "output")})
    model_raw = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    layers = _layers(model_raw["layers"], problems, line_of(model_raw, "layers")) if "layers" in model_raw else ()
    train_raw = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    _duration(values["train"], train_raw, problems)
    optimizer = _optimizer(values["train"], train_raw, problems)
    schedule = _schedule(values["train"], train_raw, problems, optimizer)
    early_stopping, checkpoint = _callbacks(values, train_raw, problems)
    raise_problems(problems, raw, source)
    out = values["output"]
    if out["dir"] is None:
        out["dir"] = f"runs/{stem}"
    return Config(
        data=DataConfig(**values["data"]),
        model=ModelConfig(layers=tuple(dataclasses.replace(s, checked=True) for s in layers),
                          input_shape=values["model"]["input_shape"]),
        train=TrainConfig(**{**values["train"], "optimizer": optimizer, "schedule": schedule,
                             "early_stopping": early_stopping, "checkpoint": checkpoint}),
        output=OutputConfig(**out),
        source=source,
    )


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

