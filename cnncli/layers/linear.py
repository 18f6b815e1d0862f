"""Fully connected layer and flatten."""

from __future__ import annotations

import math

import numpy as np

from cnncli.checks import check_bool, check_choice, check_int
from cnncli.layers import parallel
from cnncli.layers.base import Layer
from cnncli.layers.init import INITIALIZERS, initialize
from cnncli.layers.registry import LAYERS
from cnncli.layers.windows import is_chwn


@LAYERS.register("linear", "dense", "fc")
class Linear(Layer):
    """Affine map y = x @ weight + bias (``torch.nn.Linear`` with its weight transposed).

    Args:
        in_features: Input features F. Inferred from the previous layer in YAML.
        out_features: Output features.
        bias: Learn an additive bias. Default: true.
        init: Weight initialiser: he_normal, he_uniform, xavier_normal, xavier_uniform,
            lecun_uniform (alias xavier_caffe, Caffe's xavier filler), lecun_normal, torch_default
            (PyTorch's: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))). The bias is zero
            for all but torch_default (``cnncli.layers.init``). Default: torch_default.

    Shape:
        Input (N, in_features); output (N, out_features), same dtype.
        ``weight`` (in_features, out_features), ``bias`` (out_features,).

    References:
        https://pytorch.org/docs/stable/generated/torch.nn.Linear.html
    """

    inferred = {"in_features": lambda s: s[0] if len(s) == 1 else math.prod(s)}

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "torch_default", *, rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        use_bias = check_bool("bias", bias)
        check_choice("init", init, (*INITIALIZERS, *INITIALIZERS.aliases))
        rng = rng if rng is not None else np.random.default_rng(0)
        w, b = initialize(init, rng, (self.in_features, self.out_features), self.in_features,
                          self.out_features, np.dtype(dtype), (self.out_features,) if use_bias else None)
        self.params["weight"] = w
        if b is not None:
            self.params["bias"] = b

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"linear expects flat features (F,), got input shape {tuple(input_shape)}; "
                             f"add a 'flatten' layer before it")
        if input_shape[0] != self.in_features:
            raise ValueError(f"linear expects {self.in_features} input features, got {input_shape[0]}")
        return (self.out_features,)

    def flops(self, input_shape):
        """2 * in_features per output, plus the bias add."""
        return self.out_features * (2 * self.in_features + ("bias" in self.params))

    def forward(self, x, training=False):
        self._cache = x
        y = parallel.matmul(x, self.params["weight"])
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward_params(self, dy):
        """Parameter gradients only (the first layer of a model needs no input gradient)."""
        x = self._cached()
        self.grads["weight"] = parallel.matmul(x.T, dy)
        if "bias" in self.params:
            self.grads["bias"] = dy.sum(axis=0)

    def backward(self, dy):
        self.backward_params(dy)
        return parallel.matmul(dy, self.params["weight"].T)


@LAYERS.register("flatten")
class Flatten(Layer):
    """Flatten every axis after the batch axis (``torch.nn.Flatten()``), in C order.

    Shape:
        Input (N, *); output (N, prod(*)), same dtype.
    """

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def flops(self, input_shape):
        return 0

    def forward(self, x, training=False):
        stored_chwn = is_chwn(x)
        self._cache = (x.shape, stored_chwn)
        if stored_chwn:
            # (C, H, W, N) memory -> (C*H*W, N) -> transposed (N, C*H*W) view: no copy; the next
            # linear layer's GEMM reads it transposed
            return x.transpose(1, 2, 3, 0).reshape(-1, x.shape[0]).T
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        shape, stored_chwn = self._cached()
        if stored_chwn:                        # hand the gradient back in the input's memory order
            N, C, H, W = shape
            return np.ascontiguousarray(dy.T).reshape(C, H, W, N).transpose(3, 0, 1, 2)
        return dy.reshape(shape)
