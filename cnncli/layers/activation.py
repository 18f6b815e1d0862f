"""Element-wise activations and (log-)softmax, as their ``torch.nn`` namesakes."""

from __future__ import annotations

import math

import numpy as np

from cnncli.checks import check_choice, check_float, check_int
from cnncli.layers import parallel
from cnncli.layers.base import Layer
from cnncli.layers.registry import LAYERS


@LAYERS.register("relu")
class ReLU(Layer):
    """y = max(x, 0); the gradient at 0 is 0 (as PyTorch).

    Shape:
        Any input; output same shape and dtype.
    """

    def forward(self, x, training=False):
        pos, y = np.empty_like(x, dtype=bool), np.empty_like(x)

        def part(xs, ps, ys):
            np.greater(xs, 0, out=ps)
            np.maximum(xs, 0, out=ys)
        parallel.map_slices(part, x, pos, y)
        self._cache = pos
        return y

    def backward(self, dy):
        pos, dx = self._cached(), np.empty_like(dy)
        parallel.map_slices(lambda d, p, out: np.multiply(d, p, out=out), dy, pos, dx)
        return dx

    def pieces(self):
        """x > 0 per entry: the kink is at 0."""
        return self._cached()


@LAYERS.register("leaky_relu", "leakyrelu")
class LeakyReLU(Layer):
    """y = x if x > 0 else negative_slope * x (``torch.nn.LeakyReLU``).

    Args:
        negative_slope: Slope for x <= 0. Default: 0.01.

    Shape:
        Any input; output same shape and dtype.
    """

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = check_float("negative_slope", negative_slope)

    def forward(self, x, training=False):
        pos = x > 0
        self._cache = pos
        return np.where(pos, x, x * x.dtype.type(self.negative_slope))

    def backward(self, dy):
        pos = self._cached()
        return np.where(pos, dy, dy * dy.dtype.type(self.negative_slope))

    def pieces(self):
        """x > 0 per entry: the kink is at 0."""
        return self._cached()


@LAYERS.register("elu")
class ELU(Layer):
    """y = x if x > 0 else alpha * (exp(x) - 1) (``torch.nn.ELU``).

    Args:
        alpha: Scale of the negative part. Default: 1.0.

    Shape:
        Any input; output same shape and dtype.

    References:
        Clevert et al. 2015, https://arxiv.org/abs/1511.07289
    """

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = check_float("alpha", alpha)

    def forward(self, x, training=False):
        a = x.dtype.type(self.alpha)
        neg = a * np.expm1(np.minimum(x, 0))
        self._cache = (x > 0, neg)
        return np.where(x > 0, x, neg)

    def backward(self, dy):
        pos, neg = self._cached()
        return np.where(pos, dy, dy * (neg + dy.dtype.type(self.alpha)))

    def pieces(self):
        """x > 0 per entry: at 0 the slope jumps from alpha to 1 (the curvature, for alpha = 1)."""
        return self._cached()[0]


_erf = np.frompyfunc(math.erf, 1, 1)


@LAYERS.register("gelu")
class GELU(Layer):
    """y = x * Phi(x), Phi the standard normal CDF (``torch.nn.GELU``).

    Args:
        approximate: ``none`` (exact, via erf) or ``tanh``:
            0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))). Default: none.

    Shape:
        Any input; output same shape and dtype.

    References:
        Hendrycks & Gimpel 2016, https://arxiv.org/abs/1606.08415
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = check_choice("approximate", approximate, ("none", "tanh"))

    def forward(self, x, training=False):
        if self.approximate == "tanh":
            c = math.sqrt(2.0 / math.pi)
            u = c * (x + 0.044715 * x ** 3)
            t = np.tanh(u)
            self._cache = (x, t)
            return (0.5 * x * (1 + t)).astype(x.dtype, copy=False)
        cdf = (0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))).astype(x.dtype)
        self._cache = (x, cdf)
        return x * cdf

    def backward(self, dy):
        x, aux = self._cached()
        if self.approximate == "tanh":
            c = math.sqrt(2.0 / math.pi)
            du = c * (1 + 3 * 0.044715 * x ** 2)
            grad = 0.5 * (1 + aux) + 0.5 * x * (1 - aux ** 2) * du
        else:
            pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
            grad = aux + x * pdf
        return (dy * grad).astype(dy.dtype, copy=False)


@LAYERS.register("sigmoid")
class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed without overflow.

    Shape:
        Any input; output same shape and dtype.
    """

    def forward(self, x, training=False):
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        self._cache = y
        return y

    def backward(self, dy):
        y = self._cached()
        return dy * y * (1 - y)


@LAYERS.register("tanh")
class Tanh(Layer):
    """y = tanh(x).

    Shape:
        Any input; output same shape and dtype.
    """

    def forward(self, x, training=False):
        y = np.empty_like(x)
        parallel.map_slices(lambda xs, ys: np.tanh(xs, out=ys), x, y)
        self._cache = y
        return y

    def backward(self, dy):
        y, dx = self._cached(), np.empty_like(dy)

        def part(d, ys, out):                   # dy * (1 - y * y), in place in out
            np.multiply(ys, ys, out=out)
            np.subtract(1, out, out=out)
            np.multiply(d, out, out=out)
        parallel.map_slices(part, dy, y, dx)
        return dx


def _check_dim(dim, input_shape, name):
    nd = len(input_shape) + 1
    if not -nd <= dim < nd or dim in (0, -nd):
        raise ValueError(f"{name}: dim {dim} is out of range for input of {nd} dims (batch axis 0 excluded)")


@LAYERS.register("softmax")
class Softmax(Layer):
    """Probabilities along ``dim``: exp(x - max) / sum(exp(x - max)) (``torch.nn.Softmax``).

    A model cannot end with it: the model outputs logits, the loss applies its own
    log-softmax (as PyTorch's CrossEntropyLoss, Keras's ``from_logits=True``) and eval and
    predict report softmax probabilities of the output.

    Args:
        dim: Axis to normalize, counting the batch axis as 0. Default: 1.

    Shape:
        Any input; output same shape and dtype.
    """

    outputs_probabilities = True

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = check_int("dim", dim, -64)

    def output_shape(self, input_shape):
        _check_dim(self.dim, input_shape, "softmax")
        return tuple(input_shape)

    def forward(self, x, training=False):
        z = x - x.max(axis=self.dim, keepdims=True)
        e = np.exp(z)
        y = e / e.sum(axis=self.dim, keepdims=True)
        self._cache = y
        return y

    def backward(self, dy):
        y = self._cached()
        return y * (dy - np.sum(dy * y, axis=self.dim, keepdims=True))


@LAYERS.register("log_softmax", "logsoftmax")
class LogSoftmax(Layer):
    """Log-probabilities along ``dim``: x - max - log(sum(exp(x - max))) (``torch.nn.LogSoftmax``).

    A model cannot end with it (see :class:`Softmax`; PyTorch's habit of LogSoftmax + NLLLoss
    is cnncli's built-in cross-entropy on logits).

    Args:
        dim: Axis to normalize, counting the batch axis as 0. Default: 1.

    Shape:
        Any input; output same shape and dtype.
    """

    outputs_probabilities = True

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = check_int("dim", dim, -64)

    def output_shape(self, input_shape):
        _check_dim(self.dim, input_shape, "log_softmax")
        return tuple(input_shape)

    def forward(self, x, training=False):
        z = x - x.max(axis=self.dim, keepdims=True)
        y = z - np.log(np.exp(z).sum(axis=self.dim, keepdims=True))
        self._cache = y
        return y

    def backward(self, dy):
        y = self._cached()
        return dy - np.exp(y) * dy.sum(axis=self.dim, keepdims=True)
