"""The layer registry: YAML type name -> layer class.

Adding a layer is one class in one module plus its ``@register`` line
(the decorator-fills-a-dict pattern of explosion/catalogue and thinc).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from cnncli.errors import did_you_mean

#: Canonical type name -> class.
LAYERS: dict[str, type] = {}
#: Alternative spellings a user may know from Keras or PyTorch -> canonical name.
ALIASES: dict[str, str] = {}

#: Constructor arguments that are not YAML options: filled by ``model.build``.
BUILD_ARGS = ("rng", "dtype")


def register(name: str, *aliases: str) -> Callable[[type], type]:
    """Class decorator: make the layer available in YAML as ``name`` (and ``aliases``).

    Raises:
        ValueError: If the name is taken (two layers must never share one).
    """

    def add(cls: type) -> type:
        for key in (name, *aliases):
            if key in LAYERS or key in ALIASES:
                raise ValueError(f"layer name {key!r} is registered twice")
        LAYERS[name] = cls
        for alias in aliases:
            ALIASES[alias] = name
        cls.type_name = name
        return cls

    return add


def resolve(name: str) -> type:
    """Return the class registered as ``name`` (or one of its aliases).

    Raises:
        KeyError: With a message naming the closest registered name.
    """
    key = str(name).strip().lower()
    if key in LAYERS:
        return LAYERS[key]
    if key in ALIASES:
        return LAYERS[ALIASES[key]]
    raise KeyError(f"unknown layer '{name}'.{did_you_mean(key, [*LAYERS, *ALIASES])}"
                   f" Run 'cnncli layers' to list them.")


def options(cls: type) -> dict[str, inspect.Parameter]:
    """The YAML options of a layer class: its constructor arguments, less the ones
    ``model.build`` infers from the input shape (``cls.inferred``) or passes itself."""
    sig = inspect.signature(cls.__init__)
    skip = {"self", *BUILD_ARGS, *getattr(cls, "inferred", {})}
    return {n: p for n, p in sig.parameters.items()
            if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def describe(cls: type) -> dict[str, Any]:
    """Name, one-line summary, options with defaults, inferred arguments and the first line of the
    docstring's ``Shape:`` section: for ``cnncli layers``."""
    doc = inspect.getdoc(cls) or ""
    opts = {}
    for n, p in options(cls).items():
        opts[n] = "required" if p.default is inspect.Parameter.empty else p.default
    lines = doc.splitlines()
    shape = next((lines[i + 1].strip() for i, line in enumerate(lines[:-1]) if line.strip() == "Shape:"), "")
    return {
        "name": cls.type_name,
        "shape": shape,
        "aliases": sorted(a for a, c in ALIASES.items() if c == cls.type_name),
        "summary": doc.splitlines()[0] if doc else "",
        "options": opts,
        "inferred": list(getattr(cls, "inferred", {})),
        "doc": doc,
    }


def reference_markdown() -> str:
    """The layer reference as a Markdown table (README's "Layers" section is this text)."""
    rows = ["| type | aliases | options (default) | inferred | shape | description |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in sorted(LAYERS):
        d = describe(LAYERS[name])
        opts = ", ".join(f"`{n}`" if v == "required" else f"`{n}={v!r}`" for n, v in d["options"].items())
        rows.append(f"| `{name}` | {', '.join(d['aliases']) or '-'} | {opts or '-'} | "
                    f"{', '.join(d['inferred']) or '-'} | {d['shape']} | {d['summary']} |")
    return "\n".join(rows) + "\n"
