"""``--set key.path=value`` overrides (and the flags that make them, such as ``--lr``),
applied to a parsed config before it is validated."""

from __future__ import annotations

import re
from typing import Any

from cnncli.errors import ConfigError, Problem
from cnncli.yamlio import LineDict, LineList, parse_yaml

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


def _default_optimizer() -> str:
    """The optimizer of a config without ``train.optimizer`` (``OptimizerConfig``'s default)."""
    from cnncli.config import OptimizerConfig

    return OptimizerConfig.type


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
                        node[k] = LineDict(type=_default_optimizer()) if prefix == "train.optimizer" else LineDict()
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
