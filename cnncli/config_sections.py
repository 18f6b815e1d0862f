"""The generic part of config validation: check one section's keys and values against a
table of checks, with defaults from the section's frozen dataclass (their single source),
and raise every problem found at once."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from cnncli.checks import OptionError
from cnncli.errors import ConfigError, Problem, did_you_mean, shown
from cnncli.yamlio import line_of

#: A section's checks: key -> function returning the checked value (raising ValueError),
#: or None for a key its own function checks (such as ``train.optimizer``).
Checks = dict[str, Callable[[Any], Any] | None]


def defaults_of(cls: type) -> dict[str, Any]:
    """The default of every field of the dataclass ``cls`` that has one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def check_section(name: str, raw: Any, problems: list[Problem], line: int | None, checks: Checks,
                  defaults: dict[str, Any], present: bool = True) -> dict[str, Any]:
    """Check one section's keys and values; return {key: value} with defaults filled.

    A key without a default is required. A key whose check is None is returned as given,
    and left out when absent (its own function applies its default).

    Args:
        name: The section's key path (``data``, ``train.early_stopping``).
        line: The line of the section's key.
        present: False when the section is absent: its required keys are then not
            reported again (the missing section is).
    """
    filled = {k: v for k, v in defaults.items() if checks.get(k) is not None}
    if raw is None and not present:
        return filled
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(Problem(name, f"must be a mapping of keys ({', '.join(checks)}), got {shown(raw)}",
                                getattr(raw, "line", None) or line))
        return filled
    for key in raw:
        if key not in checks:
            problems.append(Problem(f"{name}.{key}", f"unknown key '{key}'.{did_you_mean(str(key), checks)} "
                                    f"Keys of '{name}': {', '.join(checks)}.", line_of(raw, key)))
    out = {}
    for key, check in checks.items():
        if key not in raw:
            if key not in defaults:
                problems.append(Problem(name, f"missing required key '{key}'", getattr(raw, "line", None) or line))
            elif check is not None:
                out[key] = defaults[key]
            continue
        value = raw[key]
        if check is None:
            out[key] = value
            continue
        try:
            out[key] = check(value)
        except ValueError as e:
            msg = e.detail if isinstance(e, OptionError) and e.option == key else str(e)
            problems.append(Problem(f"{name}.{key}", msg, line_of(raw, key)))
    return out


def kind_of(value: Any) -> str:
    """What a YAML value is, in the user's words."""
    if value is None:
        return "nothing"
    for types, word in ((bool, "true/false"), (str, "text"), ((int, float), "a number"),
                        (list, "a list"), (dict, "a mapping")):
        if isinstance(value, types):
            return word
    return type(value).__name__


def raise_problems(problems: list[Problem], raw: Any, source: str | None) -> None:
    """Raise a ConfigError with ``problems`` in file order, if there are any. A value that
    came from ``--set`` (``raw.overridden``) is reported as such, not at the file line it replaced."""
    if not problems:
        return
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
