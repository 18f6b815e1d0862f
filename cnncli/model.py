"""A sequential stack of registered layers: build from specs, forward, backward, state.

``build`` checks every layer's type and options, then runs the shapes through each
layer's own ``output_shape`` before any data is touched; every problem comes back
as a :class:`~cnncli.errors.ConfigError` located at ``model.layers[i]``, or at
``model.layers[i].option`` when a layer refuses an option's value
(the pattern of keras ``base_conv.py`` ``compute_output_shape``). No weight array,
padded input or activation may exceed ``layers.base.MAX_ELEMENTS`` values.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncli.errors import ConfigError, Problem, did_you_mean
from cnncli.layers import Layer, options, resolve
from cnncli.layers.base import check_int, check_size
from cnncli.layers.registry import BUILD_ARGS
from cnncli.layers.windows import to_chwn


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


def _option_of(message: str, given: dict[str, Any]) -> str | None:
    """The YAML option a layer's ValueError is about: layers start their messages with the
    option's name (``kernel_size must be ...``, ``betas[0] must be ...``)."""
    for name in sorted((n for n in given if isinstance(n, str)), key=len, reverse=True):
        if re.match(rf"{re.escape(name)}\b", message):
            return name
    return None


def _locate(spec: LayerSpec, cls: type, e: Exception) -> Problem:
    """A layer's error as a Problem at ``model.layers[i].option`` (its line) when it names an
    option the YAML gave, else at ``model.layers[i]``."""
    msg = str(e)
    name = _option_of(msg, spec.options)
    if name is None:
        return Problem(spec.path, f"({cls.type_name}) {msg}", spec.line)
    return Problem(f"{spec.path}.{name}", f"{msg[len(name):].lstrip()} ({cls.type_name})",
                   spec.option_lines.get(name, spec.line))


def _spec_ok(spec: LayerSpec) -> type | None:
    """The layer class if ``check_specs`` finds nothing wrong with ``spec``, else None."""
    try:
        cls = resolve(spec.type)
    except KeyError:
        return None
    opts = options(cls)
    if any(n not in opts for n in spec.options):
        return None
    if any(p.default is inspect.Parameter.empty and n not in spec.options for n, p in opts.items()):
        return None
    return cls


def check_options(specs: list[LayerSpec]) -> list[Problem]:
    """Problems with option values that need no shapes (``kernel_size: "3"``, ``p: 1.5``,
    ``stride: 0``), each located at its option: every layer's constructor is run without
    allocating weights (``init.shapes_only``), the inferred sizes set to 1. A refused
    option is replaced by its default and the layer tried again, so a layer with two bad
    options reports both. Errors that depend on the real input shape are left to :func:`build`.
    """
    from cnncli.layers.init import shapes_only

    problems = []
    for spec in specs:
        cls = _spec_ok(spec)
        if cls is None:
            continue
        opts = options(cls)
        kwargs = dict(spec.options)
        kwargs.update({name: 1 for name in getattr(cls, "inferred", {})})
        accepted = inspect.signature(cls.__init__).parameters
        extra = {"rng": np.random.default_rng(0), "dtype": np.float32}
        kwargs.update({k: v for k, v in extra.items() if k in accepted and k in BUILD_ARGS})
        for _ in range(len(spec.options) + 1):
            try:
                with shapes_only():
                    cls(**kwargs)
                break
            except (ValueError, TypeError, OverflowError) as e:
                name = _option_of(str(e), {n: v for n, v in spec.options.items() if kwargs.get(n) is v})
                if name is None:
                    break                      # shape-dependent (e.g. groups vs in_channels): build reports it
                problems.append(_locate(spec, cls, e))
                default = opts[name].default
                kwargs[name] = 1 if default is inspect.Parameter.empty else default
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

    def training_bytes_per_image(self) -> int:
        """Bytes one image adds to a training step: the sum of the layers'
        ``training_values`` (each output and its gradient, plus a convolution's im2col
        matrix kept for backward) at the model's dtype. A rough estimate, used to
        refuse batches that cannot fit before any memory is touched (for configs/mnist.yaml
        at batch 1,500 it gives 1.8 GiB; the measured peak of such a run was 1.27 GB)."""
        values = sum(layer.training_values(out) for layer, out in zip(self.layers, self.shapes))
        return values * self.dtype.itemsize

    #: Evaluation runs large batches in chunks of this many images (bounded memory: a conv's
    #: im2col matrix grows with the batch), unless a layer mixes samples in evaluation.
    EVAL_CHUNK = 256

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """(N, *input_shape) -> (N, *output_shape) logits, same dtype.

        Image batches are copied once into CHWN memory order (still logically NCHW; see
        ``layers/windows.py``), which every layer keeps and the heavy ones are fast in.
        In evaluation (``training=False``) the layers keep nothing for a backward pass and
        batches larger than ``EVAL_CHUNK`` run in chunks; results are the same as one pass
        (each sample is computed independently in evaluation). Call a layer's own
        ``forward`` to back-propagate through evaluation mode.
        """
        if training:
            return self._run(x, True)
        n = x.shape[0]
        chunk = self.EVAL_CHUNK
        if n <= chunk or any(getattr(l, "mixes_samples_in_eval", False) for l in self.layers):
            return self._run(x, False)
        first = self._run(x[:chunk], False)
        out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
        out[:chunk] = first
        for start in range(chunk, n, chunk):
            out[start:start + chunk] = self._run(x[start:start + chunk], False)
        return out

    def _run(self, x: np.ndarray, training: bool) -> np.ndarray:
        if x.ndim == 4:
            x = to_chwn(x)
        if not training:                   # nothing kept for a backward pass
            for layer in self.layers:
                x = layer.infer(x)
            return x
        for layer in self.layers:
            x = layer.forward(x, True)
        return x

    def backward(self, dy: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate d loss / d output; fills every layer's ``grads``.

        Returns d loss / d input, or None with ``input_grad=False`` (training needs no
        input gradient, so a first layer with ``backward_params`` skips computing it).
        Each layer's forward cache is released once used: one backward per forward.
        """
        for layer in self.layers[:0:-1]:
            dy = layer.backward(dy)
            layer._cache = None            # its forward cache is spent: free it before the next step
        if not self.layers:
            return dy
        first = self.layers[0]
        if not input_grad and hasattr(first, "backward_params"):
            first.backward_params(dy)
            dx = None
        else:
            dx = first.backward(dy)
        first._cache = None
        return dx

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

        Nothing is copied unless every array fits: same keys, same shapes, and the same
        kind of number (floating-point for float arrays, integers for integer counters).

        Raises:
            ValueError: Naming the first missing, unexpected, mis-shaped or mis-typed array.
        """
        pairs = []
        for kind, mine, theirs in (("parameter", self.params(), params), ("buffer", self.buffers(), buffers)):
            missing = sorted(set(mine) - set(theirs))
            extra = sorted(set(theirs) - set(mine))
            if missing or extra:
                raise ValueError(f"{kind}s do not match the model: missing {missing or 'none'}, "
                                 f"unexpected {extra or 'none'}")
            for key, a in theirs.items():
                a = np.asarray(a)
                if a.shape != mine[key].shape:
                    raise ValueError(f"{kind} {key} has shape {a.shape}, the model needs {mine[key].shape}")
                want = "f" if mine[key].dtype.kind == "f" else "iu"
                if a.dtype.kind not in want or a.dtype.names is not None:
                    raise ValueError(f"{kind} {key} holds {a.dtype} values, the model needs {mine[key].dtype}")
                pairs.append((mine[key], a))
        for target, a in pairs:
            target[...] = a


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
    problems += check_options(specs)
    if problems:
        raise ConfigError(problems)
    shape = check_input_shape(input_shape)
    rng = rng if rng is not None else np.random.default_rng(seed)
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
            shape = tuple(layer.output_shape(shape))
            check_size("its output (one sample)", shape)
        except (ValueError, TypeError, OverflowError) as e:
            raise ConfigError([_locate(spec, cls, e)]) from None
        except MemoryError:
            raise ConfigError([Problem(spec.path, f"({cls.type_name}) not enough memory for its weights; "
                                       f"use smaller sizes", spec.line)]) from None
        layers.append(layer)
        shapes.append(shape)
    return Model(layers, list(specs), tuple(int(s) for s in input_shape), shapes, rng, dtype)


def check_input_shape(input_shape: Any) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints if it is (C, H, W) or (F,) of positive integers
    holding at most ``MAX_ELEMENTS`` values.

    Raises:
        ConfigError: At ``model.input_shape`` otherwise.
    """
    try:
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (1, 3):
            raise ValueError(f"must be [C, H, W] or [F], got {input_shape!r}")
        shape = tuple(check_int("input_shape", s, 1) for s in input_shape)
        check_size("an input", shape)
    except ValueError as e:
        msg = str(e)
        raise ConfigError([Problem("model.input_shape", msg.removeprefix("input_shape "))]) from None
    return shape
