"""2-D convolution (cross-correlation), PyTorch's ``torch.nn.Conv2d`` semantics."""

from __future__ import annotations

import numpy as np

from cnncli.layers.base import Layer, check_bool, check_choice, check_int, check_ndim, check_pair
from cnncli.layers.init import INITIALIZERS, initialize
from cnncli.layers.registry import register
from cnncli.layers.windows import offset_slice, out_size, pad, window_view


def conv_padding(padding, kernel: tuple[int, int], dilation: tuple[int, int],
                 stride: tuple[int, int]) -> tuple[int, int, int, int]:
    """Resolve ``padding`` to (top, bottom, left, right).

    An int or pair pads both sides equally. ``valid`` is no padding. ``same``
    (stride 1 only, as in PyTorch) pads dilation*(k-1) in total, the extra one
    at the bottom/right when that total is odd (torch ``_conv_forward``).
    """
    if isinstance(padding, str):
        mode = check_choice("padding", padding, ("same", "valid"))
        if mode == "valid":
            return 0, 0, 0, 0
        if stride != (1, 1):
            raise ValueError("padding 'same' needs stride 1 (as in PyTorch); give padding as a number instead")
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = check_pair("padding", padding, 0)
    return ph, ph, pw, pw


@register("conv2d", "conv")
class Conv2d(Layer):
    """2-D convolution over NCHW input, one matrix multiply per batch via an im2col view.

    y[n, o] = bias[o] + sum_{c in group(o)} sum_{a,b} weight[o, c, a, b] * x_p[n, c, i*s + a*d, j*s + b*d]
    (cross-correlation, as ``torch.nn.Conv2d``).
    H_out = floor((H + pad_top + pad_bottom - dilation*(kh-1) - 1) / stride) + 1, same for W.

    Args:
        in_channels: Input channels C. Inferred from the previous layer in YAML.
        out_channels: Output channels (filters).
        kernel_size: int or [kh, kw].
        stride: int or [sh, sw]. Default: 1.
        padding: int, [ph, pw], ``same`` (stride 1 only) or ``valid``. Default: 0.
        dilation: int or [dh, dw]. Default: 1.
        groups: Split channels into this many groups; ``groups = in_channels`` is depthwise. Default: 1.
        bias: Learn an additive bias per output channel. Default: true.
        padding_mode: Only ``zeros``. Default: zeros.
        init: Weight initialiser: he_normal, he_uniform, xavier_normal, xavier_uniform,
            torch_default. Default: he_normal.

    Shape:
        Input (N, C, H, W); output (N, out_channels, H_out, W_out), same dtype.
        ``weight`` (out_channels, in_channels/groups, kh, kw), ``bias`` (out_channels,).

    Raises:
        ValueError: On bad options, channels not divisible by groups, or an output size < 1.

    References:
        https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html;
        im2col: Chellapilla et al. 2006, "High Performance Convolutional Neural Networks for Document Processing".
    """

    inferred = {"in_channels": lambda s: s[0]}

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 init: str = "he_normal", *, rng: np.random.Generator | None = None,
                 dtype=np.float32):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        self.kernel_size = check_pair("kernel_size", kernel_size, 1)
        self.stride = check_pair("stride", stride, 1)
        self.dilation = check_pair("dilation", dilation, 1)
        self.groups = check_int("groups", groups, 1)
        self.padding_mode = check_choice("padding_mode", padding_mode, ("zeros",))
        self.pads = conv_padding(padding, self.kernel_size, self.dilation, self.stride)
        self.padding = padding
        use_bias = check_bool("bias", bias)
        check_choice("init", init, INITIALIZERS)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) "
                             f"must both be divisible by groups ({self.groups})")
        kh, kw = self.kernel_size
        cg = self.in_channels // self.groups
        rng = rng if rng is not None else np.random.default_rng(0)
        w, b = initialize(init, rng, (self.out_channels, cg, kh, kw), cg * kh * kw,
                          self.out_channels * kh * kw, np.dtype(dtype),
                          (self.out_channels,) if use_bias else None)
        self.params["weight"] = w
        if b is not None:
            self.params["bias"] = b

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}")

    def _out_hw(self, H: int, W: int) -> tuple[int, int]:
        t, b, l, r = self.pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return out_size(H, kh, sh, t + b, dh), out_size(W, kw, sw, l + r, dw)

    def output_shape(self, input_shape):
        check_ndim("conv2d", input_shape, (3,), "images (C, H, W)")
        C, H, W = input_shape
        if C != self.in_channels:
            raise ValueError(f"conv2d expects {self.in_channels} input channels, got {C}")
        H_out, W_out = self._out_hw(H, W)
        if H_out < 1 or W_out < 1:
            t, b, l, r = self.pads
            raise ValueError(
                f"output {H_out}x{W_out} for input {tuple(input_shape)}: kernel {self.kernel_size} "
                f"(dilation {self.dilation}) is larger than the padded input {H + t + b}x{W + l + r}. "
                f"Use a smaller kernel_size, add padding, or remove a pooling layer before it.")
        return (self.out_channels, H_out, W_out)

    def forward(self, x, training=False):
        N, C, H, W = x.shape
        g, O = self.groups, self.out_channels
        cg, og = C // g, O // g
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        H_out, W_out = self._out_hw(H, W)
        xp = pad(x, *self.pads)
        win = window_view(xp, kh, kw, sh, sw, dh, dw, H_out, W_out)      # (N, C, H_out, W_out, kh, kw) view
        win = win.reshape(N, g, cg, H_out, W_out, kh, kw)                 # still a view
        # the one im2col copy: (g, N*H_out*W_out, cg*kh*kw), rows = output pixels
        cols = win.transpose(1, 0, 3, 4, 2, 5, 6).reshape(g, N * H_out * W_out, cg * kh * kw)
        w = self.params["weight"].reshape(g, og, cg * kh * kw)
        y = np.matmul(cols, w.transpose(0, 2, 1))                         # (g, N*H_out*W_out, og)
        y = y.reshape(g, N, H_out, W_out, og).transpose(1, 0, 4, 2, 3).reshape(N, O, H_out, W_out)
        if "bias" in self.params:
            y += self.params["bias"].reshape(1, O, 1, 1)
        self._cache = (x.shape, xp.shape, cols)
        return y

    def backward(self, dy):
        x_shape, xp_shape, cols = self._cached()
        N, C, H, W = x_shape
        g, O = self.groups, self.out_channels
        cg, og = C // g, O // g
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        H_out, W_out = dy.shape[2:]
        # (g, N*H_out*W_out, og), rows matching the rows of cols
        dyg = dy.reshape(N, g, og, H_out, W_out).transpose(1, 0, 3, 4, 2).reshape(g, N * H_out * W_out, og)
        self.grads["weight"] = np.matmul(dyg.transpose(0, 2, 1), cols).reshape(O, cg, kh, kw)
        if "bias" in self.params:
            self.grads["bias"] = dy.sum(axis=(0, 2, 3))
        w = self.params["weight"].reshape(g, og, cg * kh * kw)
        dcols = np.matmul(dyg, w).reshape(g, N, H_out, W_out, cg, kh, kw)
        # col2im: scatter-add each kernel offset's slab back to its strided input positions
        dxp = np.zeros(xp_shape, dtype=dy.dtype)
        dxp5 = dxp.reshape(N, g, cg, *xp_shape[2:])
        for a in range(kh):
            rows = offset_slice(a, dh, sh, H_out)
            for b in range(kw):
                dxp5[:, :, :, rows, offset_slice(b, dw, sw, W_out)] += \
                    dcols[:, :, :, :, :, a, b].transpose(1, 0, 4, 2, 3)
        t, _, l, _ = self.pads
        return dxp[:, :, t:t + H, l:l + W]
