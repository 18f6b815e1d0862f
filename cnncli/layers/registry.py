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
#: Layer options as Keras (or PyTorch) spells them -> cnncli's option, or None and the whole hint:
#: the hint on an unknown option (``Registry.habits``).
HABITS: dict[str, tuple[str | None, str]] = {
    "units": ("out_features", "Keras's name (Dense(units))"),
    "filters": ("out_channels", "Keras's name (Conv2D(filters))"),
    "pool_size": ("kernel_size", "Keras's name (MaxPooling2D(pool_size))"),
    "rate": ("p", "Keras's name (Dropout(rate), the drop probability)"),
    "strides": ("stride", "Keras's name"),
    "kernel_initializer": ("init", "Keras's name"),
    "use_bias": ("bias", "Keras's name"),
    "epsilon": ("eps", "Keras's name"),
    "activation": (None, "Layers have no activation option in cnncli: add the activation as the next layer, "
                         "e.g. '- {value}' after this one."),
    "input_shape": (None, "The input shape is model.input_shape (optional: it is inferred from the data), "
                          "channels first: [C, H, W], e.g. [1, 28, 28] for MNIST, not Keras's [28, 28, 1]."),
    "inplace": (None, "No layer needs an inplace option (PyTorch's ReLU(inplace=True)); remove it."),
}

LAYERS = Registry("layer", supplied=("rng", "dtype"), listing="Run 'cnncli layers' to list them.", habits=HABITS)
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
