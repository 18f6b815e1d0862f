"""2-D convolution (cross-correlation), PyTorch's ``torch.nn.Conv2d`` semantics."""

from __future__ import annotations

import numpy as np

from cnncli.checks import OptionError, check_bool, check_choice, check_int, check_ndim, check_pair, check_size
from cnncli.layers import parallel
from cnncli.layers.base import Layer
from cnncli.layers.init import INITIALIZERS, initialize
from cnncli.layers.registry import LAYERS
from cnncli.layers.windows import chwn, out_size, valid_range


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
            raise OptionError("padding", "'same' needs stride 1 (as in PyTorch); give padding as a number instead")
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = check_pair("padding", padding, 0)
    return ph, ph, pw, pw


@LAYERS.register("conv2d", "conv")
class Conv2d(Layer):
    """2-D convolution over NCHW input, lowered to matrix multiplies (im2col, or MEC by rows).

    - im2col by strided slabs, then one matrix multiply per batch; the im2col matrix is kept
      for backward;
    - by rows (MEC: the input lowered along W only, one GEMM per output row), keeping only
      the input for backward, which lowers it again: evaluation of large batches
      (:meth:`lowers_by_rows`) and training of convs with few output channels
      (:meth:`trains_by_rows`).

    The output is stored in CHWN memory order (see ``windows.py``): the GEMMs write it so.

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
            lecun_uniform (alias xavier_caffe, Caffe's xavier filler), lecun_normal, torch_default
            (PyTorch's: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))). The bias is zero
            for all but torch_default (``cnncli.layers.init``). Default: torch_default.

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
                 init: str = "torch_default", *, rng: np.random.Generator | None = None,
                 dtype=np.float32):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        self.kernel_size = check_pair("kernel_size", kernel_size, 1)
        self.stride = check_pair("stride", stride, 1)
        self.dilation = check_pair("dilation", dilation, 1)
        self.groups = check_int("groups", groups, 1)
        if padding_mode in ("reflect", "replicate", "circular"):
            raise OptionError("padding_mode", f"{padding_mode!r} is not supported: cnncli pads with zeros only "
                             f"(PyTorch's reflect, replicate and circular modes are not implemented); "
                             f"use padding_mode: zeros or leave it out")
        self.padding_mode = check_choice("padding_mode", padding_mode, ("zeros",))
        self.pads = conv_padding(padding, self.kernel_size, self.dilation, self.stride)
        self.padding = padding
        use_bias = check_bool("bias", bias)
        check_choice("init", init, (*INITIALIZERS, *INITIALIZERS.aliases))
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
        t, b, l, r = self.pads
        check_size("the padded input", (C, H + t + b, W + l + r))
        kh, kw = self.kernel_size
        check_size("the im2col matrix (in_channels*kh*kw, H_out*W_out)", (C * kh * kw, H_out * W_out))
        return (self.out_channels, H_out, W_out)

    def flops(self, input_shape):
        """2 * (in_channels/groups * kh * kw) per output element, plus the bias add."""
        out = self.output_shape(input_shape)
        k = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        return int(np.prod(out)) * (2 * k + ("bias" in self.params))

    def training_values(self, output_shape):
        """Output and its gradient, plus the im2col matrix kept for backward:
        in_channels/groups * kh * kw values per output pixel. An upper bound for a conv
        trained by rows (:meth:`trains_by_rows`), which keeps only its input and lowers a
        part of that size again in backward, kh times smaller than the im2col matrix."""
        kh, kw = self.kernel_size
        return super().training_values(output_shape) + self.in_channels // self.groups * kh * kw * \
            int(np.prod(output_shape[1:]))

    def _offsets(self, H: int, W: int, H_out: int, W_out: int):
        """Per kernel offset (a, b): the output rows/columns that read real input and the
        input rows/columns they read (padding reads zeros, so it is never materialised)."""
        t, _, l, _ = self.pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        rows = [valid_range(H_out, H, a, dh, sh, t) for a in range(kh)]
        cols = [valid_range(W_out, W, b, dw, sw, l) for b in range(kw)]
        return [(a, b, *rows[a], *cols[b]) for a in range(kh) for b in range(kw)]

    def forward(self, x, training=False):
        N, C, H, W = x.shape
        if self.trains_by_rows(C, self._out_hw(H, W)[1], N):
            y = self._forward_rows(x)
            # keep the input only (kh*kw times smaller than the im2col matrix); backward lowers it again
            self._cache = ("rows", x.shape, chwn(x))
            return y
        return self._forward_im2col(x)

    def _forward_im2col(self, x, keep: bool = True):
        """The forward pass by im2col: one strided slab per kernel offset, then one GEMM; with
        ``keep`` the im2col matrix is kept for backward (``in_channels/groups*kh*kw`` values
        per output pixel)."""
        N, C, H, W = x.shape
        g, O = self.groups, self.out_channels
        cg, og = C // g, O // g
        kh, kw = self.kernel_size
        H_out, W_out = self._out_hw(H, W)
        M = H_out * W_out * N
        xg = chwn(x).reshape(g, cg, H, W, N)               # a view when x is stored CHWN
        # im2col, one strided slab per kernel offset:
        # cols[g, c, a, b, i, j, n] = x_padded[n, g*cg + c, i*sh + a*dh, j*sw + b*dw]
        cols = np.empty((g, cg, kh, kw, H_out, W_out, N), dtype=x.dtype)
        offsets = self._offsets(H, W, H_out, W_out)

        def lower(k0: int, k1: int) -> None:          # the offsets' slabs are independent: split over threads
            for a, b, oi, ii, oj, ij in offsets[k0:k1]:
                slab = cols[:, :, a, b]
                # zero the border this offset reads from padding, copy the rest
                slab[:, :, :oi.start] = 0
                slab[:, :, oi.stop:] = 0
                slab[:, :, oi, :oj.start] = 0
                slab[:, :, oi, oj.stop:] = 0
                slab[:, :, oi, oj] = xg[:, :, ii, ij]
        parallel.over_range(lower, len(offsets), cols.size)
        cols = cols.reshape(g, cg * kh * kw, M)                      # (g, cg*kh*kw, H_out*W_out*N)
        w = self.params["weight"].reshape(g, og, cg * kh * kw)
        y = _gemm(w, cols)                                           # (g, og, H_out*W_out*N): one GEMM
        if "bias" in self.params:
            y += self.params["bias"].reshape(g, og, 1)
        self._cache = ("im2col", x.shape, cols) if keep else None
        # (O, H_out, W_out, N) memory = logically NCHW stored CHWN: no transpose copy
        return y.reshape(O, H_out, W_out, N).transpose(3, 0, 1, 2)

    def infer(self, x):
        """Evaluation forward with nothing cached: by rows (:meth:`_forward_rows`) when
        :meth:`lowers_by_rows`, else by im2col. Shape and dtype as ``forward``."""
        N, C, H, W = x.shape
        if self.lowers_by_rows(C, self._out_hw(H, W)[1], N):
            return self._forward_rows(x)
        return self._forward_im2col(x, False)

    def _lower(self, xc: np.ndarray) -> np.ndarray:
        """The MEC lowering of ``xc`` (C, H, W, N), C-contiguous: ``L[h, c, b, j, n] =
        x_padded[n, c, h, j*sw + b*dw]``, shape (H + pad_top + pad_bottom, C, kw, W_out, N).
        Padding is written as zeros straight into L (the padded input is never built); the
        input rows are copied on the threads (``parallel.over_range``)."""
        C, H, W, N = xc.shape
        kw, sw, dw = self.kernel_size[1], self.stride[1], self.dilation[1]
        W_out = self._out_hw(H, W)[1]
        t, b, l, _ = self.pads
        L = np.empty((t + H + b, C, kw, W_out, N), dtype=xc.dtype)
        L[:t] = 0
        L[t + H:] = 0
        spans = [valid_range(W_out, W, bb, dw, sw, l) for bb in range(kw)]
        rows = xc.transpose(1, 0, 2, 3)                               # (H, C, W, N), a view

        def copy(h0: int, h1: int) -> None:
            for bb, (oj, ij) in enumerate(spans):
                dest = L[t + h0:t + h1, :, bb]
                dest[:, :, :oj.start] = 0
                dest[:, :, oj.stop:] = 0
                dest[:, :, oj] = rows[h0:h1, :, ij]
        parallel.over_range(copy, H, L.size)
        return L

    def _forward_rows(self, x):
        """Forward pass by MEC lowering (Cho & Brand 2017, "MEC: Memory-efficient Convolution
        for Deep Neural Network", ICML): evaluation when :meth:`lowers_by_rows`, training
        when :meth:`trains_by_rows`.

        Instead of the full im2col matrix (cg*kh*kw rows), the padded input is lowered
        along W only (:meth:`_lower`), kh times smaller. For output row i, the rows (a, c, b)
        of its im2col block are then ``L[i*sh + a, c, b]``: one contiguous block of L, and
        each output row is one GEMM with the weight taken in (a, c, b) order. Values equal
        the im2col path's up to float rounding (the sum over a kernel runs in that order).
        The output rows are independent pieces spread over the threads
        (``parallel.over_items``, one BLAS thread each), so the bits do not depend on the
        thread count.

        A layer with few output channels computes :meth:`rows_per_gemm` = R output rows per
        GEMM: rows i..i+R-1 read the ((R-1)*sh + kh) * C * kw consecutive rows of L from
        L[i*sh], with a weight of R*out_channels rows, row (r, o) holding the kernel shifted
        down r*sh rows and zeros around it. A GEMM of 6 rows (LeNet-5's first conv) runs
        poorly in BLAS: R = 4 there costs 60 % more multiplications and still takes less
        time (measured; ``benchmarks/README.md``).

        Shape and dtype as ``forward``: (N, C, H, W) in, (N, out_channels, H_out, W_out)
        out, stored CHWN. The extra memory is L, (H + pad) * C * kw * W_out * N values.
        """
        N, C, H, W = x.shape
        O = self.out_channels
        kh, sh = self.kernel_size[0], self.stride[0]
        H_out, W_out = self._out_hw(H, W)
        row = W_out * N                                               # GEMM columns per output row
        ck = C * self.kernel_size[1]                                  # rows of L per input row
        Lf = self._lower(chwn(x)).reshape(-1, row)                    # rows (h, c, b): a contiguous block per window
        w = self.params["weight"].transpose(0, 2, 1, 3)               # (O, a, c, b)
        y = np.empty((O, H_out, row), dtype=x.dtype)
        R = min(self.rows_per_gemm(), H_out)
        span = (R - 1) * sh + kh                                      # input rows that R output rows read
        wR = np.zeros((R, O, span, C, self.kernel_size[1]), dtype=x.dtype)
        for r in range(R):
            wR[r, :, r * sh:r * sh + kh] = w
        wR = wR.reshape(R * O, span * ck)
        bias = self.params["bias"].reshape(O, 1, 1) if "bias" in self.params else None

        def rows(step: int) -> None:                                  # output rows i..i+r-1
            i = step * R
            r = min(R, H_out - i)                                     # the last group may be shorter
            k = ((r - 1) * sh + kh) * ck
            block = Lf[i * sh * ck:i * sh * ck + k]
            if R == 1:                                                # one row: straight into the output
                np.matmul(wR, block, out=y[:, i])
                if bias is not None:
                    y[:, i] += bias[:, 0]
                return
            tmp = np.matmul(wR[:r * O, :k] if r < R else wR, block).reshape(r, O, row)
            if bias is None:
                np.copyto(y[:, i:i + r], tmp.transpose(1, 0, 2))
            else:
                np.add(tmp.transpose(1, 0, 2), bias, out=y[:, i:i + r])
        parallel.over_items(rows, -(-H_out // R))
        return y.reshape(O, H_out, W_out, N).transpose(3, 0, 1, 2)

    def rows_per_gemm(self) -> int:
        """Output rows per GEMM in :meth:`_forward_rows`: 24 // out_channels, at least 1 (4 for 6
        channels, 1 from 13 up), so the GEMM has about 24 rows (chosen by measurement on
        LeNet-5's convs of 6 and 16 channels)."""
        return max(1, 24 // self.out_channels)

    def lowers_by_rows(self, C: int, W_out: int, N: int) -> bool:
        """True if :meth:`infer` uses MEC lowering for this input: one group, no vertical
        dilation, at least 16 weights per output and at least 1024 GEMM columns
        (W_out * N) per output row. Below that, one GEMM over the whole im2col matrix is
        faster than a GEMM per output row (measured; ``benchmarks/README.md``)."""
        kh, kw = self.kernel_size
        return self.groups == 1 and self.dilation[0] == 1 and C * kh * kw >= 16 and W_out * N >= 1024

    #: The weight gradient by rows sums the output rows in this many fixed parts (fewer for
    #: fewer rows), one part per thread at a time, then adds the parts in order.
    ROW_PARTS = 4

    #: :meth:`trains_by_rows` needs at most this many output channels ...
    ROWS_MAX_OUT_CHANNELS = 32
    #: ... and at least this many lowered rows per input row (in_channels * kw).
    ROWS_MIN_ROW_LENGTH = 32

    def trains_by_rows(self, C: int, W_out: int, N: int) -> bool:
        """True if ``forward`` (training) computes by rows (:meth:`_forward_rows`, then
        :meth:`_input_grad_rows`), keeping only its input for backward: where
        :meth:`lowers_by_rows`, for at most :data:`ROWS_MAX_OUT_CHANNELS` output channels and
        at least :data:`ROWS_MIN_ROW_LENGTH` values of ``C * kw``. Otherwise by im2col,
        keeping the im2col matrix.

        Why: the im2col path writes and reads C*kh*kw values per output pixel besides its
        GEMM's 2*out_channels*C*kh*kw flops, so the fewer output channels, the larger the
        copy's share: for 32 -> 32 channels, 3x3 at 26x26, a batch of 128 on one thread,
        the copy took 19 of the forward pass's 47 ms, and by rows the step of
        ``configs/mnist.yaml`` took 19-25 % less time (2 threads). With 64 output channels, or
        few input channels (C * kw = 3 to 30: LeNet-5, a first conv on grey images), the
        per-row GEMMs of the backward pass are too small and im2col was as fast or faster
        (measured; ``benchmarks/README.md``)."""
        return self.lowers_by_rows(C, W_out, N) and self.out_channels <= self.ROWS_MAX_OUT_CHANNELS \
            and C * self.kernel_size[1] >= self.ROWS_MIN_ROW_LENGTH

    def _param_grads(self, dy):
        """Fill ``grads``; return what the input gradient needs: dy as (g, og, H_out*W_out*N)
        after an im2col forward, else the lowered input's shape and dy as (O, H_out, W_out*N)
        (the lowered input itself is freed before the input gradient is computed)."""
        kind, x_shape, kept = self._cached()
        N, O, H_out, W_out = dy.shape
        dyc = chwn(dy)                                               # a view when dy is stored CHWN
        if "bias" in self.params:
            self.grads["bias"] = dyc.reshape(O, -1).sum(axis=1)
        if kind == "im2col":
            g = self.groups
            dyg = dyc.reshape(g, O // g, H_out * W_out * N)
            self.grads["weight"] = _gemm_long(dyg, kept).reshape(self.params["weight"].shape)
            return dyg
        # by rows: dW[o, (a, c, b)] = sum over output rows i of dy[o, i] @ L[i*sh + a, c, b]^T
        C = x_shape[1]
        (kh, kw), sh = self.kernel_size, self.stride[0]
        ck, row = C * kw, W_out * N
        L = self._lower(kept)
        Lf = L.reshape(-1, row)
        dyr = dyc.reshape(O, H_out, row)
        k = min(self.ROW_PARTS, H_out)
        bounds = [H_out * p // k for p in range(k + 1)]
        sums: list = [None] * k

        def part(p: int) -> None:
            total = np.zeros((O, kh * ck), dtype=dy.dtype)
            tmp = np.empty_like(total)
            for i in range(bounds[p], bounds[p + 1]):
                np.matmul(dyr[:, i], Lf[i * sh * ck:i * sh * ck + kh * ck].T, out=tmp)
                total += tmp
            sums[p] = total
        parallel.over_items(part, k)
        total = sums[0]
        for more in sums[1:]:
            total += more
        self.grads["weight"] = np.ascontiguousarray(total.reshape(O, kh, C, kw).transpose(0, 2, 1, 3))
        return L.shape, dyr

    def backward_params(self, dy):
        """Parameter gradients only (the first layer of a model needs no input gradient)."""
        self._param_grads(dy)

    def backward(self, dy):
        kind, x_shape, _ = self._cached()
        kept = self._param_grads(dy)
        if kind == "rows":
            return self._input_grad_rows(x_shape, *kept)
        dyg = kept
        N, C, H, W = x_shape
        g = self.groups
        cg, og = C // g, self.out_channels // g
        kh, kw = self.kernel_size
        H_out, W_out = dy.shape[2:]
        w = self.params["weight"].reshape(g, og, cg * kh * kw)
        dcols = _gemm(w.transpose(0, 2, 1), dyg).reshape(g, cg, kh, kw, H_out, W_out, N)
        # col2im: add each kernel offset's slab back at the input positions it read; channels
        # are independent, so ranges of them run on different threads, each summing in offset order
        dx = np.zeros((C, H, W, N), dtype=dy.dtype)
        dcols = dcols.reshape(C, kh, kw, H_out, W_out, N)
        offsets = self._offsets(H, W, H_out, W_out)

        def col2im(c0: int, c1: int) -> None:
            for a, b, oi, ii, oj, ij in offsets:
                dx[c0:c1, ii, ij] += dcols[c0:c1, a, b, oi, oj]
        parallel.over_range(col2im, C, dx.size)
        return dx.transpose(3, 0, 1, 2)

    def _input_grad_rows(self, x_shape, lowered_shape, dyr):
        """Input gradient after a forward by rows, gathered per padded input row h.

        Row h of the lowered input was read by the output rows i with h = i*sh + a for a
        kernel row a, so d L[h] (C*kw x W_out*N) = sum over those (a, i) of weight[:, :, a]^T
        @ dy[:, i]. The i are consecutive and a runs down in steps of sh, so with dy stacked
        as (H_out, O, W_out*N) (zero rows padding both ends) the sum is one GEMM of the
        kernel rows a = h mod sh, h mod sh + sh, ... side by side. Each input row then adds
        its kw column offsets into the input gradient (padded along W only: rows of the
        vertical padding are never computed), the rows on the threads
        (``parallel.over_items``): each writes its own row, so no sums race and the bits do
        not depend on the thread count. Returns (N, C, H, W), stored CHWN.
        """
        N, C, H, W = x_shape
        O = self.out_channels
        (kh, kw), (sh, sw), dw = self.kernel_size, self.stride, self.dilation[1]
        W_out = lowered_shape[3]
        ck, row = C * kw, W_out * N
        t, _, l, r = self.pads
        pad = -(-kh // sh)                  # zero output rows on each side: the most kernel rows on one input row
        stacked = np.zeros((dyr.shape[1] + 2 * pad, O, row), dtype=dyr.dtype)
        stacked[pad:pad + dyr.shape[1]] = dyr.transpose(1, 0, 2)
        w = self.params["weight"].transpose(2, 1, 3, 0).reshape(kh, ck, O)   # [a] = weight[:, :, a]^T
        # per residue h mod sh: kernel rows a0 + (n-1)*sh, ..., a0 + sh, a0 (ascending i), side by side
        wcat = []
        for a0 in range(sh):
            rows_a = list(range(a0, kh, sh))[::-1]
            wcat.append(np.concatenate([w[a] for a in rows_a], axis=1) if rows_a else None)
        dxp = np.zeros((C, H, W + l + r, N), dtype=dyr.dtype)

        def input_row(row_in: int) -> None:
            h = t + row_in                                            # the row of the padded input
            a0 = h % sh
            if wcat[a0] is None:
                return
            n = wcat[a0].shape[1] // O
            i_top = (h - a0) // sh                                    # the output row that reads h with a = a0
            block = stacked[pad + i_top - n + 1:pad + i_top + 1].reshape(n * O, row)
            g = (wcat[a0] @ block).reshape(C, kw, W_out, N)
            for bb in range(kw):
                start = bb * dw
                dxp[:, row_in, start:start + (W_out - 1) * sw + 1:sw] += g[:, bb]
        parallel.over_items(input_row, H)
        dx = dxp[:, :, l:l + W]
        return (dx if dx.flags.c_contiguous else np.ascontiguousarray(dx)).transpose(3, 0, 1, 2)


def _gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(g, m, k) @ (g, k, n) -> (g, m, n), one 2-D BLAS call per group (``parallel.matmul``:
    a small one on one BLAS thread). NumPy's stacked ``matmul`` does not hand transposed
    operands to BLAS (measured 7x slower)."""
    if a.shape[0] == 1:
        return parallel.matmul(a[0], b[0])[None]
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.result_type(a, b))
    for i in range(a.shape[0]):
        parallel.matmul(a[i], b[i], out=out[i])
    return out


#: :func:`_gemm_long` splits its sum into 4 parts from this many terms (2 from half as many).
LONG_SUM = 16384


def _gemm_long(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(g, m, K) @ (g, n, K)^T -> (g, m, n) for a long sum (K large, m and n small): a
    convolution's weight gradient, summed over every output pixel of the batch.

    BLAS parallelises over m and n, which are too small here to keep two threads busy
    (measured: LeNet-5's first convolution, 6 x 25 outputs over 100,352 terms, took 1.8 ms
    on one thread and 2.4 ms on two). So the sum is cut into 2 or 4 parts by K alone, the
    parts run on the threads (``layers.parallel.over_items``) and are added in order: the
    result depends on the shapes only, not on the thread count.
    """
    K = a.shape[2]
    parts = 4 if K >= LONG_SUM else 2 if K >= LONG_SUM // 2 else 1
    if parts == 1:
        return _gemm(a, b.transpose(0, 2, 1))
    bounds = [K * i // parts for i in range(parts + 1)]
    sums: list = [None] * parts

    def part(i: int) -> None:
        k0, k1 = bounds[i], bounds[i + 1]
        sums[i] = _gemm(a[:, :, k0:k1], b[:, :, k0:k1].transpose(0, 2, 1))
    parallel.over_items(part, parts)
    total = sums[0]
    for s in sums[1:]:
        total += s
    return total
