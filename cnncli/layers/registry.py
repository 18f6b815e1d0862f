"""The layer registry: YAML type name -> layer class (a :class:`cnncli.registry.Registry`).

Adding a layer is one class in one module plus its ``@register`` line.
"""

from __future__ import annotations

import inspect
from typing import Any

from cnncli.registry import Registry

#: Canonical type name -> class; ``LAYERS.aliases`` maps Keras/PyTorch spellings to it.
#: ``rng`` and ``dtype`` are passed by ``model.build``; ``cls.inferred`` sizes come from
#: the running shape: neither is a YAML option.
LAYERS = Registry("layer", supplied=("rng", "dtype"), listing="Run 'cnncli layers' to list them.")
#: Alternative spellings a user may know from Keras or PyTorch -> canonical name.
ALIASES = LAYERS.aliases
register = LAYERS.register
resolve = LAYERS.get
options = LAYERS.options


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
