"""A sequential stack of registered layers: build from specs, forward, backward, state.

``build`` checks every layer's type and options, then runs the shapes through each
layer's own ``output_shape`` before any data is touched; every problem comes back
as a :class:`~cnncli.errors.ConfigError` located at ``model.layers[i]``
(the pattern of keras ``base_conv.py`` ``compute_output_shape``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncli.errors import ConfigError, Problem, did_you_mean
from cnncli.layers import Layer, options, resolve
from cnncli.layers.registry import BUILD_ARGS


@dataclass(frozen=True)
class LayerSpec:
    """One ``model.layers`` item: registered type name, YAML options, and where it came from."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    line: int | None = None
    option_lines: dict[str, int] = field(default_factory=dict)


def check_specs(specs: list[LayerSpec]) -> list[Problem]:
    """Problems that need no shapes: unknown types, unknown or missing options."""
    problems = []
    for spec in specs:
        try:
            cls = resolve(spec.type)
        except KeyError as e:
            problems.append(Problem(spec.path, e.args[0], spec.line))
            continue
        opts = options(cls)
        inferred = getattr(cls, "inferred", {})
        hinted = set()
        for name in spec.options:
            if name in inferred:
                problems.append(Problem(f"{spec.path}.{name}", f"'{name}' of {cls.type_name} is inferred from "
                                        f"the previous layer's output; remove it", spec.option_lines.get(name, spec.line)))
            elif name not in opts:
                hint = did_you_mean(name, opts)
                hinted.add(hint.split("'")[1] if hint else None)
                problems.append(Problem(
                    f"{spec.path}.{name}",
                    f"unknown option '{name}' for {cls.type_name}.{hint} "
                    f"Options: {', '.join(opts) or 'none'}.", spec.option_lines.get(name, spec.line)))
        for name, p in opts.items():
            # a misspelt required option is reported once, as the misspelling
            if p.default is inspect.Parameter.empty and name not in spec.options and name not in hinted:
                problems.append(Problem(spec.path, f"{cls.type_name} needs the option '{name}' "
                                        f"(e.g. {cls.type_name}: {{{name}: ...}})", spec.line))
    return problems


class Model:
    """Sequential model over NCHW batches.

    Attributes:
        layers: The layer objects, in order.
        specs: The specs they were built from.
        input_shape: One sample's shape (C, H, W) or (F,).
        shapes: Output shape of each layer (no batch axis).
        rng: The generator that drew the initial weights and draws dropout masks.
    """

    def __init__(self, layers: list[Layer], specs: list[LayerSpec], input_shape: tuple[int, ...],
                 shapes: list[tuple[int, ...]], rng: np.random.Generator, dtype):
        self.layers = layers
        self.specs = specs
        self.input_shape = tuple(input_shape)
        self.shapes = shapes
        self.rng = rng
        self.dtype = np.dtype(dtype)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1] if self.shapes else self.input_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """(N, *input_shape) -> (N, *output_shape) logits, same dtype."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate d loss / d output; fills every layer's ``grads``.

        Returns d loss / d input, or None with ``input_grad=False`` (training needs no
        input gradient, so a first layer with ``backward_params`` skips computing it).
        """
        for layer in self.layers[:0:-1]:
            dy = layer.backward(dy)
        if not self.layers:
            return dy
        first = self.layers[0]
        if not input_grad and hasattr(first, "backward_params"):
            first.backward_params(dy)
            return None
        return first.backward(dy)

    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays keyed ``"{index}.{name}"`` (the arrays themselves, not copies)."""
        return {f"{i}.{n}": a for i, l in enumerate(self.layers) for n, a in l.params.items()}

    def grads(self) -> dict[str, np.ndarray]:
        return {f"{i}.{n}": l.grads[n] for i, l in enumerate(self.layers) for n in l.params}

    def buffers(self) -> dict[str, np.ndarray]:
        return {f"{i}.{n}": a for i, l in enumerate(self.layers) for n, a in l.buffers.items()}

    def num_params(self) -> int:
        return sum(a.size for a in self.params().values())

    def load_arrays(self, params: dict[str, np.ndarray], buffers: dict[str, np.ndarray]) -> None:
        """Copy saved arrays into the model in place (optimizer references stay valid).

        Raises:
            ValueError: Naming the first missing, unexpected or mis-shaped array.
        """
        for kind, mine, theirs in (("parameter", self.params(), params), ("buffer", self.buffers(), buffers)):
            missing = sorted(set(mine) - set(theirs))
            extra = sorted(set(theirs) - set(mine))
            if missing or extra:
                raise ValueError(f"{kind}s do not match the model: missing {missing or 'none'}, "
                                 f"unexpected {extra or 'none'}")
            for key, a in theirs.items():
                if a.shape != mine[key].shape:
                    raise ValueError(f"{kind} {key} has shape {a.shape}, the model needs {mine[key].shape}")
                mine[key][...] = a


def summarize(model: "Model") -> list[dict[str, Any]]:
    """One row per layer: index, type, output shape, trainable parameters, non-trainable
    values (float buffers such as running statistics), forward FLOPs per sample.

    Shapes and FLOPs come from each layer's own ``output_shape`` and ``flops``.
    """
    rows, shape = [], model.input_shape
    for i, layer in enumerate(model.layers):
        rows.append({"index": i, "type": layer.type_name, "output_shape": model.shapes[i],
                     "params": sum(a.size for a in layer.params.values()),
                     "non_trainable": sum(a.size for a in layer.buffers.values() if a.dtype.kind == "f"),
                     "flops": int(layer.flops(shape))})
        shape = model.shapes[i]
    return rows


def build(specs: list[LayerSpec], input_shape: tuple[int, ...], *, seed: int = 0,
          dtype=np.float32, rng: np.random.Generator | None = None) -> Model:
    """Build a :class:`Model` from layer specs for inputs of ``input_shape`` (no batch axis).

    Fills each layer's inferred sizes (``in_channels``, ``in_features``, ``num_features``)
    from the running shape and validates geometry with ``output_shape``.

    Args:
        specs: The layers, in order.
        input_shape: One sample's shape, e.g. (1, 28, 28).
        seed: Seeds the generator for initial weights and dropout masks (ignored if ``rng``).
        dtype: float32 to train, float64 for gradcheck.

    Raises:
        ConfigError: Every type/option problem, or the first shape problem, with key paths.
    """
    problems = check_specs(specs)
    if problems:
        raise ConfigError(problems)
    rng = rng if rng is not None else np.random.default_rng(seed)
    shape = tuple(int(s) for s in input_shape)
    layers, shapes = [], []
    for spec in specs:
        cls = resolve(spec.type)
        kwargs = dict(spec.options)
        try:
            for name, infer in getattr(cls, "inferred", {}).items():
                kwargs[name] = infer(shape)
            accepted = inspect.signature(cls.__init__).parameters
            extra = {"rng": rng, "dtype": dtype}
            kwargs.update({k: v for k, v in extra.items() if k in accepted and k in BUILD_ARGS})
            layer = cls(**kwargs)
        except (ValueError, TypeError) as e:
            raise ConfigError([Problem(spec.path, f"({cls.type_name}) {e}", spec.line)]) from None
        try:
            shape = tuple(layer.output_shape(shape))
        except ValueError as e:
            raise ConfigError([Problem(spec.path, f"({cls.type_name}) {e}", spec.line)]) from None
        layers.append(layer)
        shapes.append(shape)
    return Model(layers, list(specs), tuple(int(s) for s in input_shape), shapes, rng, dtype)
