"""One registry mechanism for every named thing a config picks: layers, optimizers,
schedules, weight initializers (in the spirit of explosion/catalogue ``catalogue/__init__.py``).

A :class:`Registry` is filled by its ``register(name, *aliases)`` decorator and read as a
mapping of canonical names; ``get(name)`` also takes aliases and any letter case, and
raises a ``KeyError`` with the closest name. One rule says which constructor arguments
are YAML options (:meth:`Registry.options`), and one function checks a config block
that picks an entry with its options (:func:`check_block`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from cnncli.checks import OptionError
from cnncli.errors import Problem, did_you_mean


class Registry(Mapping):
    """Canonical name -> registered class or function (a read-only mapping).

    Args:
        kind: What is registered, as messages name it: ``layer``, ``optimizer``, ...
        supplied: Constructor arguments the builder passes itself (``rng``, ``dtype`` of a
            layer; ``params`` of an optimizer; ``base_lr``, ``epochs``, ``steps_per_epoch``
            of a schedule): never YAML options.
        listing: How an "unknown name" message ends. Default: ``Choose one of a, b, c.``
        habits: Option names of other frameworks -> (the option that means the same here, or
            None; how to say the foreign name), for the hint on an unknown option. With an
            option, the hint names it when the entry has it (``units`` -> ``out_features``);
            with None, the text is the whole hint and ``{value}`` in it is the given value.
    """

    def __init__(self, kind: str, supplied: tuple[str, ...] = (), listing: str | None = None,
                 habits: Mapping[str, tuple[str | None, str]] | None = None):
        self.kind = kind
        self.supplied = tuple(supplied)
        self.listing = listing
        self.habits = dict(habits or {})
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    # -- the mapping of canonical names
    def __getitem__(self, name: str) -> Any:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    @property
    def aliases(self) -> Mapping[str, str]:
        """Alternative spelling -> canonical name (read-only)."""
        return MappingProxyType(self._aliases)

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        """Decorator: make a class or function available as ``name`` (and ``aliases``);
        a class gets ``type_name = name``.

        Raises:
            ValueError: If ``name`` or an alias is already registered (two entries must
                never share a name).
        """

        def add(obj: Any) -> Any:
            for key in (name, *aliases):
                if key in self._entries or key in self._aliases:
                    raise ValueError(f"{self.kind} name {key!r} is registered twice")
            self._entries[name] = obj
            self._aliases.update(dict.fromkeys(aliases, name))
            if isinstance(obj, type):
                obj.type_name = name
            return obj

        return add

    def canonical(self, name: Any) -> str:
        """The canonical name of ``name`` (an alias, any letter case, surrounding spaces).

        Raises:
            KeyError: ``unknown layer 'x'. Did you mean 'y'? ...`` (the closest name or alias).
        """
        key = str(name).strip().lower()
        if key in self._entries:
            return key
        if key in self._aliases:
            return self._aliases[key]
        listing = self.listing or f"Choose one of {', '.join(self._entries)}."
        raise KeyError(f"unknown {self.kind} {name!r}.{did_you_mean(key, [*self._entries, *self._aliases])} "
                       f"{listing}")

    def get(self, name: Any) -> Any:  # type: ignore[override]  # raises, unlike Mapping.get
        """The entry registered as ``name`` or one of its aliases.

        Raises:
            KeyError: See :meth:`canonical`.
        """
        return self._entries[self.canonical(name)]

    def options(self, obj: Any) -> dict[str, inspect.Parameter]:
        """The YAML options of a registered class or function: its constructor's (or its own)
        parameters, less ``self``, ``*args``/``**kwargs``, the registry's ``supplied``
        arguments and a layer's ``inferred`` sizes, in signature order. A class constructor
        with ``**kwargs`` forwards them to its base class: the base's keyword-only options
        follow (the warmup options every schedule shares)."""
        sig = inspect.signature(obj.__init__ if isinstance(obj, type) else obj)
        skip = {"self", *self.supplied, *getattr(obj, "inferred", {})}
        out = {n: p for n, p in sig.parameters.items()
               if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if isinstance(obj, type) and any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            base = next((b for b in obj.__mro__[1:] if "__init__" in vars(b)), object)
            if base is not object:
                out.update({n: p for n, p in self.options(base).items()
                            if n not in out and p.kind is p.KEYWORD_ONLY})
        return out

    def required(self, obj: Any) -> list[str]:
        """The options of ``obj`` without a default."""
        return [n for n, p in self.options(obj).items() if p.default is inspect.Parameter.empty]


def _habit(registry: Registry, key: str, value: Any, allowed: Mapping[str, Any]) -> str:
    """The hint for an option spelt as another framework spells it (``registry.habits``), or ""."""
    if key not in registry.habits:
        return ""
    option, said = registry.habits[key]
    if option is None:
        return " " + said.replace("{value}", str(value) if isinstance(value, str) else "...")
    if option in allowed:
        return f" '{key}' is {said}; cnncli calls it '{option}'."
    return ""


def locate(e: Exception, type_name: str, path: str, line: int | None, options: dict[str, Any],
           option_lines: dict[str, int] | None = None) -> Problem:
    """A constructor's error as a Problem: at ``path.OPTION`` (that option's line) when it is an
    :class:`~cnncli.checks.OptionError` on an option the block gives, else at ``path``."""
    if isinstance(e, OptionError) and e.option in options:
        return Problem(f"{path}.{e.option}", f"{e.detail} ({type_name})",
                       (option_lines or {}).get(e.option) or line)
    return Problem(path, f"({type_name}) {e}", line)


def check_block(registry: Registry, name: Any, options: dict[str, Any], *, path: str,
                line: int | None = None, option_lines: dict[str, int] | None = None,
                name_path: str | None = None, name_line: int | None = None, typed: bool = True,
                construct: Callable[[Any, dict[str, Any]], Any] | None = None) -> tuple[Any, list[Problem]]:
    """Check one config block that picks ``name`` from ``registry`` with ``options``.

    In order: an unknown name (with the closest one), unknown options (with the closest
    one; a layer's ``inferred`` sizes are refused as such), missing required options (a
    misspelt one is reported once, as the misspelling); then, if all that is right,
    ``construct(entry, options)`` runs the constructor without allocating. Each
    :class:`~cnncli.checks.OptionError` on a given option becomes a problem at
    ``path.OPTION``, and the constructor runs again with that option at its default, so
    two bad values are both reported. Any other error (one that depends on what the
    builder supplies, such as a layer's input shape) is left to the real build.

    Args:
        path: Key path of the block (``train.optimizer``, ``model.layers[3]``).
        line: Its YAML line; ``option_lines`` the line of each option.
        name_path, name_line: Where an unknown name is reported. Default: ``path``, ``line``.
        typed: The block is written ``{type: NAME, option: ...}`` (else ``NAME: {option: ...}``),
            for the example of a missing option.
        construct: Runs the constructor with the builder's arguments; None checks names only.

    Returns:
        The registered entry (None for an unknown name) and the problems found.
    """
    option_lines = option_lines or {}
    try:
        entry = registry.get(name)
    except KeyError as e:
        return None, [Problem(name_path or path, e.args[0], name_line or line)]
    type_name = getattr(entry, "type_name", registry.canonical(name))
    allowed = registry.options(entry)
    problems, hinted = [], set()
    for k in options:
        if k in getattr(entry, "inferred", {}):
            problems.append(Problem(f"{path}.{k}", f"'{k}' of {type_name} is inferred from the previous layer's "
                                    f"output; remove it", option_lines.get(k) or line))
        elif k not in allowed:
            hint = _habit(registry, str(k), options[k], allowed) or did_you_mean(str(k), allowed)
            hinted.add(hint.split("'")[-2] if hint else None)
            problems.append(Problem(f"{path}.{k}", f"unknown option '{k}' for {type_name}.{hint} "
                                    f"Options: {', '.join(allowed) or 'none'}.", option_lines.get(k) or line))
    for k in registry.required(entry):
        if k not in options and k not in hinted:
            example = f"{{type: {type_name}, {k}: ...}}" if typed else f"{type_name}: {{{k}: ...}}"
            problems.append(Problem(path, f"{type_name} needs the option '{k}' (e.g. {example})", line))
    if problems or construct is None:
        return entry, problems
    kwargs = dict(options)
    for _ in range(len(options) + 1):
        try:
            construct(entry, kwargs)
            break
        except (ValueError, TypeError, OverflowError) as e:
            k = e.option if isinstance(e, OptionError) else None
            if k not in options or kwargs[k] is not options[k]:
                break
            problems.append(locate(e, type_name, path, line, options, option_lines))
            default = allowed[k].default
            kwargs[k] = 1 if default is inspect.Parameter.empty else default
    return entry, problems
