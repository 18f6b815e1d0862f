"""A cnncli model as an ONNX graph of standard operators (opset :data:`OPSET`).

The graph takes ``pixels``: float32 (N, C, H, W) with values in [0, 255] (uint8 images cast
to float, N dynamic), and starts with the checkpoint's normalization,
x = pixels * (1 / (255 * std)) + (-mean / std) per channel, i.e. (pixels/255 - mean)/std
as ``cnncli.data.pixel_lut`` (with ``data.scale``: pixels * (scale / std) + (-mean / std)). Its output ``output`` (N, K) is what ``cnncli eval`` reads: the
last layer's values (logits, or probabilities after a softmax layer). Dropout is the
identity at inference and is left out; batch normalization is its inference form
(running statistics). Initializers are named as PyTorch names the same arrays
(``0.weight``), so the graph reads like the PyTorch export in Netron.

Operators (https://onnx.ai/onnx/operators/): Conv, BatchNormalization, Relu, LeakyRelu,
Elu, Gelu (opset 20), Sigmoid, Tanh, MaxPool, AveragePool, GlobalAveragePool, Flatten, Gemm,
Softmax, LogSoftmax, plus Mul and Add for the normalization. Pooling's ``ceil_mode`` is
written as extra end padding, and an average pool whose divisor is not the window's size
(``count_include_pad: false``, ceil-mode overhang, ``divisor_override``) gets a Mul by a
constant per output position, so sizes and values are PyTorch's.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cnncli.errors import ExportError

#: The ONNX operator set the graph is stated in (20: the first with Gelu).
OPSET = 20
#: The IR version written: ONNX 1.15's, the release that introduced opset 20.
IR_VERSION = 9
#: Names of the graph's input and output.
INPUT, OUTPUT = "pixels", "output"


class _Graph:
    """Nodes and initializers being collected; each ``node`` returns its output's name."""

    def __init__(self, onnx: Any, dtype: np.dtype):
        self.onnx, self.dtype = onnx, dtype
        self.nodes: list = []
        self.initializers: list = []

    def const(self, name: str, value) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=self.dtype), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name


def _refuse(i: int, layer, option: str, why: str) -> ExportError:
    return ExportError(f"model.layers[{i}] ({layer.type_name}): {option} has no ONNX form ({why}); "
                       f"export with --format pytorch, or train without it")


def _conv2d(g: _Graph, layer, i: int, x: str, in_shape) -> str:
    t, b, l, r = layer.pads
    inputs = [x, g.const(f"{i}.weight", layer.params["weight"])]
    if "bias" in layer.params:
        inputs.append(g.const(f"{i}.bias", layer.params["bias"]))
    return g.node("Conv", inputs, f"{i}.conv2d", kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                  dilations=list(layer.dilation), pads=[t, l, b, r], group=layer.groups)


def _batchnorm(g: _Graph, layer, i: int, x: str, in_shape) -> str:
    if not layer.track_running_stats:
        raise _refuse(i, layer, "track_running_stats: false", "ONNX's inference form normalizes with running "
                                                              "statistics, this layer with each batch's own")
    c = layer.num_features
    scale = layer.params.get("weight", np.ones(c))
    shift = layer.params.get("bias", np.zeros(c))
    names = [g.const(f"{i}.{n}", a) for n, a in (("weight", scale), ("bias", shift),
                                                 ("running_mean", layer.buffers["running_mean"]),
                                                 ("running_var", layer.buffers["running_var"]))]
    return g.node("BatchNormalization", [x, *names], f"{i}.batchnorm", epsilon=float(layer.eps))


def _pool_attrs(layer, in_shape: tuple[int, ...]) -> dict[str, Any]:
    """Pooling attributes with PyTorch's output size: ``ceil_mode`` written as extra end padding
    (ONNX's ceil mode keeps a last window that starts in the padding, PyTorch's drops it)."""
    _, H, W = in_shape
    _, H_out, W_out = layer.output_shape(in_shape)
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    dh, dw = getattr(layer, "dilation", (1, 1))
    extra_h = max(0, (H_out - 1) * sh + (kh - 1) * dh + 1 - (H + 2 * ph))
    extra_w = max(0, (W_out - 1) * sw + (kw - 1) * dw + 1 - (W + 2 * pw))
    return {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [ph, pw, ph + extra_h, pw + extra_w]}


def _maxpool2d(g: _Graph, layer, i: int, x: str, in_shape) -> str:
    return g.node("MaxPool", [x], f"{i}.maxpool2d", dilations=list(layer.dilation), **_pool_attrs(layer, in_shape))


def _avgpool2d(g: _Graph, layer, i: int, x: str, in_shape) -> str:
    """AveragePool over the padded windows (every divisor kh*kw), times kh*kw / PyTorch's divisor
    per output position when that differs (``count_include_pad: false``, ceil-mode overhang,
    ``divisor_override``). The divisor is read from the layer itself: its output on ones is
    real/divisor, and ``divisor_override: 1`` on ones counts the real elements."""
    from cnncli.layers.pool import AvgPool2d

    y = g.node("AveragePool", [x], f"{i}.avgpool2d", count_include_pad=1, **_pool_attrs(layer, in_shape))
    ones = np.ones((1, 1, *in_shape[1:]), dtype=np.float64)
    real = AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                     divisor_override=1).forward(ones)[0, 0]
    correction = layer.kernel_size[0] * layer.kernel_size[1] * layer.forward(ones)[0, 0] / real
    if np.allclose(correction, 1.0, rtol=1e-12, atol=0):
        return y
    return g.node("Mul", [y, g.const(f"{i}.divisor_correction", correction)], f"{i}.avgpool2d.divisor")


def _global_avgpool(g: _Graph, layer, i: int, x: str, in_shape) -> str:
    y = g.node("GlobalAveragePool", [x], f"{i}.global_avgpool")
    return y if layer.keepdims else g.node("Flatten", [y], f"{i}.flatten", axis=1)


def _linear(g: _Graph, layer, i: int, x: str, in_shape) -> str:
    inputs = [x, g.const(f"{i}.weight", layer.params["weight"])]     # (in_features, out_features): no transB
    if "bias" in layer.params:
        inputs.append(g.const(f"{i}.bias", layer.params["bias"]))
    return g.node("Gemm", inputs, f"{i}.linear")


def _op(op: str, **attrs: Callable) -> Callable:
    """An emitter of one operator whose attributes are read from the layer (``attr=getter``)."""
    return lambda g, layer, i, x, in_shape: g.node(op, [x], f"{i}.{layer.type_name}",
                                         **{k: get(layer) for k, get in attrs.items()})


#: cnncli layer type -> ``emit(graph, layer, index, input_name, input_shape) -> output_name``
#: (``input_shape``: one sample, no batch axis).
ONNX_LAYERS: dict[str, Callable] = {
    "conv2d": _conv2d,
    "batchnorm": _batchnorm,
    "linear": _linear,
    "maxpool2d": _maxpool2d,
    "avgpool2d": _avgpool2d,
    "global_avgpool": _global_avgpool,
    "dropout": lambda g, layer, i, x, in_shape: x,            # the identity at inference
    "dropout2d": lambda g, layer, i, x, in_shape: x,
    "flatten": _op("Flatten", axis=lambda layer: 1),
    "relu": _op("Relu"),
    "leaky_relu": _op("LeakyRelu", alpha=lambda layer: float(layer.negative_slope)),
    "elu": _op("Elu", alpha=lambda layer: float(layer.alpha)),
    "gelu": _op("Gelu", approximate=lambda layer: layer.approximate),
    "sigmoid": _op("Sigmoid"),
    "tanh": _op("Tanh"),
    "softmax": _op("Softmax", axis=lambda layer: layer.dim),
    "log_softmax": _op("LogSoftmax", axis=lambda layer: layer.dim),
}


def _normalization(g: _Graph, mean, std, input_shape: tuple[int, ...], scale: float | None = None) -> str:
    """Nodes turning pixels in [0, 255] into the network's input, (pixel * scale - mean) / std
    (``scale`` None: 1/255); one value, or one per channel shaped (C, 1, 1) to broadcast over
    (N, C, H, W)."""
    m = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    s = np.atleast_1d(np.asarray(std, dtype=np.float64))
    shape = () if m.size == s.size == 1 else (max(m.size, s.size), *(1,) * (len(input_shape) - 1))
    factor = (1.0 / (255.0 * s) if scale is None else float(scale) / s) * np.ones_like(m)
    shift = -m / s
    x = g.node("Mul", [INPUT, g.const("normalize.scale", factor.reshape(shape))], "normalize.mul")
    return g.node("Add", [x, g.const("normalize.shift", shift.reshape(shape))], "normalize.add")


def onnx_model(model, mean, std, metadata: dict[str, str], doc: str = "", scale: float | None = None):
    """The ONNX ``ModelProto`` of ``model`` (a ``cnncli.model.Model``), checked with
    ``onnx.checker.check_model(full_check=True)``.

    Args:
        model: The network, weights loaded.
        mean, std: Its normalization (a number, or one per channel), as ``data.mean``/``data.std``.
        scale: The pixel multiplier before them, ``data.scale``; None (the default) is 1/255.
        metadata: Text entries for the model's ``metadata_props`` (class names, ...).
        doc: The graph's doc string.

    Raises:
        ExportError: onnx is not installed; a layer type or option with no ONNX form, naming
            ``model.layers[i]``; the checker refuses the graph.
    """
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (g.onnx.numpy_helper)
    except ImportError:
        raise ExportError("--format onnx needs the onnx package: pip install 'cnncli[export]'") from None
    g = _Graph(onnx, model.dtype)
    x = _normalization(g, mean, std, model.input_shape, scale)
    shapes = [model.input_shape, *model.shapes]
    for i, layer in enumerate(model.layers):
        emit = ONNX_LAYERS.get(layer.type_name)
        if emit is None:
            raise ExportError(f"model.layers[{i}] ({layer.type_name}) has no ONNX form; add it to ONNX_LAYERS "
                              f"in cnncli/export/onnx_graph.py, or export with --format pytorch")
        x = emit(g, layer, i, x, shapes[i])
    if x == INPUT or not g.nodes or g.nodes[-1].output[0] != x:
        x = g.node("Identity", [x], OUTPUT)
    else:
        g.nodes[-1].output[0] = OUTPUT
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(model.dtype))
    graph = onnx.helper.make_graph(
        g.nodes, "cnncli", [onnx.helper.make_tensor_value_info(INPUT, elem, ["N", *model.input_shape])],
        [onnx.helper.make_tensor_value_info(OUTPUT, elem, ["N", *model.output_shape])], g.initializers, doc)
    proto = onnx.helper.make_model(graph, producer_name="cnncli", opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   ir_version=IR_VERSION, doc_string=doc)
    onnx.helper.set_model_props(proto, metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the ONNX graph fails onnx.checker: {e}") from None
    return proto
