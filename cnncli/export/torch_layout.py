"""Every registered layer type as the ``torch.nn`` module with the same options, and the
arrays of a model in PyTorch's names and layouts.

One table, :data:`TORCH_LAYERS`, serves three users: the PyTorch export writes each entry as
source text into a generated ``model.py`` (:meth:`TorchModule.source`),
``benchmarks/torch_loop.py`` instantiates it (:meth:`TorchModule.build`), and ``--weights``
reads PyTorch's arrays back (:func:`from_torch`). Nothing here imports torch.

Names: layer ``i`` of a cnncli model is module ``i`` of the ``torch.nn.Sequential``, so its
arrays are ``f"{i}.{name}"`` in both (``0.weight``, ``1.running_mean``,
``1.num_batches_tracked``). Layouts are PyTorch's: conv weight (out_channels,
in_channels/groups, kh, kw) as cnncli's; linear weight (out_features, in_features), the
transpose of cnncli's (in_features, out_features) (DESIGN.md, "Layer protocol").

References:
    https://pytorch.org/docs/stable/nn.html (the module signatures);
    ``torch.nn.Module.state_dict`` for the key names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class TorchModule:
    """One ``torch.nn`` constructor call: ``nn.{name}(*children, *args, **kwargs)``.

    Attributes:
        name: The class in ``torch.nn`` (``Conv2d``, ``Sequential``).
        args: Positional arguments (plain Python values: ints, floats, bools, str, tuples).
        kwargs: Keyword arguments, same kinds of values.
        children: Modules passed first (a ``Sequential``'s members).
        params_at: Where the layer's arrays live inside this module, as a ``state_dict`` key
            prefix: ``""`` (the module itself), ``"1."`` (its second child).
    """

    name: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    children: tuple["TorchModule", ...] = ()
    params_at: str = ""

    def source(self) -> str:
        """Python source of the call, e.g. ``nn.Conv2d(1, 32, (3, 3), stride=(1, 1))``."""
        parts = [c.source() for c in self.children] + [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"nn.{self.name}({', '.join(parts)})"

    def build(self, nn: Any) -> Any:
        """The module itself, made with the ``torch.nn`` namespace ``nn``."""
        return getattr(nn, self.name)(*(c.build(nn) for c in self.children), *self.args, **self.kwargs)


@dataclass(frozen=True)
class TorchForm:
    """How one cnncli layer type looks in PyTorch.

    Attributes:
        module: ``(layer, in_shape) -> TorchModule`` for the built cnncli ``layer`` whose input
            is ``in_shape`` (one sample, no batch axis).
        transposed: Names of 2-D arrays PyTorch stores transposed (linear ``weight``).
    """

    module: Callable[[Any, tuple[int, ...]], TorchModule]
    transposed: frozenset[str] = frozenset()


def _conv2d(layer, in_shape) -> TorchModule:
    t, b, l, r = layer.pads
    symmetric = (t, l) == (b, r)
    conv = TorchModule("Conv2d", (layer.in_channels, layer.out_channels, layer.kernel_size),
                       {"stride": layer.stride, "padding": (t, l) if symmetric else (0, 0),
                        "dilation": layer.dilation, "groups": layer.groups, "bias": "bias" in layer.params})
    # "same" with an even kernel pads one more bottom/right: an explicit zero pad (torch's own
    # padding="same" pads so too, but copies the input and warns on every such layer)
    return conv if symmetric else TorchModule("Sequential", children=(TorchModule("ZeroPad2d", ((l, r, t, b),)), conv),
                                              params_at="1.")


def _batchnorm(layer, in_shape) -> TorchModule:
    return TorchModule("BatchNorm2d" if len(in_shape) == 3 else "BatchNorm1d", (layer.num_features,),
                       {"eps": layer.eps, "momentum": layer.momentum, "affine": layer.affine,
                        "track_running_stats": layer.track_running_stats})


def _global_avgpool(layer, in_shape) -> TorchModule:
    pool = TorchModule("AdaptiveAvgPool2d", (1,))
    return pool if layer.keepdims else TorchModule("Sequential", children=(pool, TorchModule("Flatten")))


def _pool(name: str, *options: str) -> Callable:
    return lambda layer, s: TorchModule(name, (layer.kernel_size,), {o: getattr(layer, o) for o in options})


def _plain(name: str, *options: str) -> Callable:
    return lambda layer, s: TorchModule(name, tuple(getattr(layer, o) for o in options))


#: cnncli layer type -> its PyTorch form (every registered type has one; see
#: ``tests/test_export.py``).
TORCH_LAYERS: dict[str, TorchForm] = {
    "conv2d": TorchForm(_conv2d),
    "batchnorm": TorchForm(_batchnorm),
    "linear": TorchForm(lambda layer, s: TorchModule("Linear", (layer.in_features, layer.out_features),
                                                     {"bias": "bias" in layer.params}), frozenset({"weight"})),
    "maxpool2d": TorchForm(_pool("MaxPool2d", "stride", "padding", "dilation", "ceil_mode")),
    "avgpool2d": TorchForm(_pool("AvgPool2d", "stride", "padding", "ceil_mode", "count_include_pad",
                                 "divisor_override")),
    "global_avgpool": TorchForm(_global_avgpool),
    "dropout": TorchForm(_plain("Dropout", "p")),
    "dropout2d": TorchForm(_plain("Dropout2d", "p")),
    "flatten": TorchForm(_plain("Flatten")),
    "relu": TorchForm(_plain("ReLU")),
    "leaky_relu": TorchForm(_plain("LeakyReLU", "negative_slope")),
    "elu": TorchForm(_plain("ELU", "alpha")),
    "gelu": TorchForm(lambda layer, s: TorchModule("GELU", kwargs={"approximate": layer.approximate})),
    "sigmoid": TorchForm(_plain("Sigmoid")),
    "tanh": TorchForm(_plain("Tanh")),
    "softmax": TorchForm(lambda layer, s: TorchModule("Softmax", kwargs={"dim": layer.dim})),
    "log_softmax": TorchForm(lambda layer, s: TorchModule("LogSoftmax", kwargs={"dim": layer.dim})),
}


def torch_form(layer, index: int) -> TorchForm:
    """The PyTorch form of ``layer`` (model.layers[``index``]).

    Raises:
        ExportError: Its type has no entry in :data:`TORCH_LAYERS`.
    """
    from cnncli.errors import ExportError

    form = TORCH_LAYERS.get(layer.type_name)
    if form is None:
        raise ExportError(f"model.layers[{index}] ({layer.type_name}) has no PyTorch form; "
                          f"add it to TORCH_LAYERS in cnncli/export/torch_layout.py")
    return form


def torch_modules(model) -> list[TorchModule]:
    """One :class:`TorchModule` per layer of ``model`` (a ``cnncli.model.Model``), in order:
    the members of the equivalent ``torch.nn.Sequential``.

    Raises:
        ExportError: A layer type without a PyTorch form.
    """
    shapes = [model.input_shape, *model.shapes]
    return [torch_form(layer, i).module(layer, shapes[i]) for i, layer in enumerate(model.layers)]


def torch_shapes(model) -> dict[str, tuple[str, tuple[int, ...], bool]]:
    """PyTorch key -> (cnncli key, the shape PyTorch stores, whether it is cnncli's array
    transposed), for every parameter and buffer of ``model``; reads only shapes (a
    ``shapes_only`` model will do). Keys are ``f"{i}.{name}"`` but for a layer whose module
    keeps them in a child (:attr:`TorchModule.params_at`)."""
    out = {}
    shapes = [model.input_shape, *model.shapes]
    for i, layer in enumerate(model.layers):
        form = torch_form(layer, i)
        at = form.module(layer, shapes[i]).params_at
        for name, a in {**layer.params, **layer.buffers}.items():
            flip = name in form.transposed
            out[f"{i}.{at}{name}"] = (f"{i}.{name}", tuple(a.shape[::-1]) if flip else tuple(a.shape), flip)
    return out


def to_torch(model) -> dict[str, np.ndarray]:
    """``model``'s parameters and buffers under PyTorch's keys, in PyTorch's layouts
    (C-contiguous copies; ``num_batches_tracked`` stays int64, 0-d).

    Raises:
        ExportError: A layer type without a PyTorch form.
    """
    arrays = {**model.params(), **model.buffers()}
    # np.array, not np.ascontiguousarray: that makes 0-d arrays (num_batches_tracked) 1-d
    return {key: np.array(arrays[ours].T if flip else arrays[ours], order="C")
            for key, (ours, _, flip) in torch_shapes(model).items()}


def from_torch(model, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PyTorch-layout ``tensors`` back in cnncli's keys and layouts, checked against ``model``.

    Returns:
        cnncli key (``model.params()``/``buffers()``'s) -> array in cnncli's layout.

    Raises:
        ValueError: Listing every missing, unexpected or mis-shaped tensor, each with its layer
            (``model.layers[3] (linear)``), name and both shapes.
    """
    expected = torch_shapes(model)
    problems = mismatches(model, {k: tuple(np.shape(v)) for k, v in tensors.items()},
                          {k: s for k, (_, s, _) in expected.items()}, "PyTorch layout")
    if problems:
        raise ValueError("; ".join(problems))
    return {ours: np.array(np.asarray(tensors[k]).T, order="C") if flip else np.asarray(tensors[k])
            for k, (ours, _, flip) in expected.items()}


def mismatches(model, found: dict[str, tuple[int, ...]], needed: dict[str, tuple[int, ...]],
               layout: str) -> list[str]:
    """Every difference between the arrays a file holds (``found``: key -> shape) and those a
    model ``needs``: missing and unexpected keys (listed), and shapes that differ, each named
    with its layer: ``model.layers[3] (linear) weight: the file has (10, 64), the network
    needs (10, 128) (PyTorch layout)``."""
    def where(key: str) -> str:
        index, _, rest = key.partition(".")
        name = rest.rpartition(".")[2]
        layer = model.layers[int(index)] if index.isdigit() and int(index) < len(model.layers) else None
        return f"model.layers[{index}] ({layer.type_name}) {name}" if layer is not None else key

    out = []
    missing = [k for k in needed if k not in found]
    extra = sorted(k for k in found if k not in needed)
    if missing:
        out.append(f"missing {len(missing)} tensor(s): " + ", ".join(f"{k} ({where(k)})" for k in missing[:20])
                   + (" ..." if len(missing) > 20 else ""))
    if extra:
        out.append(f"unexpected {len(extra)} tensor(s): " + ", ".join(extra[:20]) + (" ..." if len(extra) > 20 else ""))
    for key, shape in needed.items():
        if key in found and found[key] != shape:
            out.append(f"{where(key)}: the file has {found[key]}, the network needs {shape} ({layout})")
    return out
