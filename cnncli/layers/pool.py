"""Max and average pooling with PyTorch's ``MaxPool2d`` / ``AvgPool2d`` semantics,
and global average pooling."""

from __future__ import annotations

import numpy as np

from cnncli.checks import MAX_ELEMENTS, OptionError, check_bool, check_int, check_ndim, check_pair, check_size
from cnncli.layers import parallel
from cnncli.layers.base import Layer
from cnncli.layers.registry import LAYERS
from cnncli.layers.windows import empty_chwn, is_chwn, offset_slice, out_size, pad, window_view


class _Pool2d(Layer):
    """Shared geometry of max/avg pooling: windows over a padded view."""

    def _setup(self, kernel_size, stride, padding, dilation, ceil_mode):
        self.kernel_size = check_pair("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else check_pair("stride", stride, 1)
        self.padding = check_pair("padding", padding, 0)
        self.dilation = check_pair("dilation", dilation, 1)
        self.ceil_mode = check_bool("ceil_mode", ceil_mode)
        for p, k in zip(self.padding, self.kernel_size):
            if p > k // 2:  # torch: "pad should be at most half of effective kernel size"
                raise OptionError("padding", f"{self.padding} must be at most half of kernel_size {self.kernel_size}")

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")

    def _out_hw(self, H: int, W: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return (out_size(H, kh, sh, 2 * ph, dh, self.ceil_mode, ph),
                out_size(W, kw, sw, 2 * pw, dw, self.ceil_mode, pw))

    def output_shape(self, input_shape):
        check_ndim(self.type_name, input_shape, (3,), "images (C, H, W); put it before flatten")
        C, H, W = input_shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        # the padded input forward builds: padding plus up to one window of ceil-mode overhang
        check_size("the padded input", (C, H + 2 * ph + kh * self.dilation[0], W + 2 * pw + kw * self.dilation[1]))
        H_out, W_out = self._out_hw(H, W)
        if H_out < 1 or W_out < 1:
            raise ValueError(f"output {H_out}x{W_out} for input {tuple(input_shape)}: the pooling window "
                             f"{self.kernel_size} is larger than the padded input. Remove this layer "
                             f"or use a smaller kernel_size.")
        return (C, H_out, W_out)

    def flops(self, input_shape):
        """One per window element per output."""
        return int(np.prod(self.output_shape(input_shape))) * self.kernel_size[0] * self.kernel_size[1]

    def _windows(self, x, fill):
        """Padded input and its (N, C, H_out, W_out, kh, kw) window view.

        Padding is ``padding`` on every side, plus whatever extra bottom/right rows
        the last ceil-mode window needs (filled like the padding, never counted)."""
        N, C, H, W = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        H_out, W_out = self._out_hw(H, W)
        extra_h = max(0, (H_out - 1) * sh + (kh - 1) * dh + 1 - (H + 2 * ph))
        extra_w = max(0, (W_out - 1) * sw + (kw - 1) * dw + 1 - (W + 2 * pw))
        xp = pad(x, ph, ph + extra_h, pw, pw + extra_w, fill)
        return xp, window_view(xp, kh, kw, sh, sw, dh, dw, H_out, W_out)

    def _col2im(self, x_shape, xp_shape, dtype, stored_chwn: bool, slabs):
        """Sum ``slabs(a, b, c0, c1)`` -> (N, c1 - c0, H_out, W_out), the gradient of offset
        (a, b) for channels c0:c1, into the input positions it read. Channels are independent,
        so ranges of them run on different threads (``layers.parallel``), each as alone."""
        N, C, H, W = x_shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        dxp = empty_chwn(xp_shape, dtype, zero=True) if stored_chwn else np.zeros(xp_shape, dtype)
        H_out, W_out = self._out_hw(H, W)

        def part(c0: int, c1: int) -> None:
            for a in range(kh):
                rows = offset_slice(a, dh, sh, H_out)
                for b in range(kw):
                    dxp[:, c0:c1, rows, offset_slice(b, dw, sw, W_out)] += slabs(a, b, c0, c1)
        parallel.over_channels(part, dxp)
        return dxp[:, :, ph:ph + H, pw:pw + W]


@LAYERS.register("maxpool2d", "maxpool", "max_pool2d")
class MaxPool2d(_Pool2d):
    """Max over each window, as ``torch.nn.MaxPool2d``.

    H_out = floor((H + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1 (ceil in
    ``ceil_mode``, where a last window starting in the bottom padding is dropped).
    Padding counts as -inf. Backward sends each window's gradient to exactly one input,
    the first maximum in row-major window order on ties, summing where windows overlap.

    Args:
        kernel_size: int or [kh, kw].
        stride: int or [sh, sw]. Default: kernel_size.
        padding: Implicit -inf padding on each side, at most kernel_size/2. Default: 0.
        dilation: Spacing between window elements. Default: 1.
        ceil_mode: Use ceil instead of floor for the output size. Default: false.

    Shape:
        Input (N, C, H, W); output (N, C, H_out, W_out), same dtype.

    References:
        https://pytorch.org/docs/stable/generated/torch.nn.MaxPool2d.html
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
        super().__init__()
        self._setup(kernel_size, stride, padding, dilation, ceil_mode)

    def _tiles(self, x) -> bool:
        """True when the windows tile the input: stride = kernel, no padding or dilation,
        and every window inside it (rows/columns left over at the end are skipped)."""
        H_out, W_out = self._out_hw(*x.shape[2:])
        return (self.stride == self.kernel_size and self.padding == (0, 0) and self.dilation == (1, 1)
                and H_out * self.kernel_size[0] <= x.shape[2] and W_out * self.kernel_size[1] <= x.shape[3])

    def forward(self, x, training=False):
        if self._tiles(x):
            y, rows, cols = self._forward_tiled(x)
            if not np.isnan(y).any():
                self._cache = ("tiled", x.shape, is_chwn(x), rows, cols)
                return y
        kh, kw = self.kernel_size
        xp, win = self._windows(x, -np.inf)
        # running max over the kh*kw offsets, each a strided (N, C, H_out, W_out) view; a later
        # offset wins only if strictly greater (first maximum on ties) or NaN (torch propagates NaN)
        y = win[..., 0, 0].copy()
        idx = np.zeros(y.shape, dtype=np.uint8 if kh * kw <= 256 else np.int32)
        for k in range(1, kh * kw):
            v = win[..., k // kw, k % kw]
            take = v > y
            take |= np.isnan(v)
            np.maximum(y, v, out=y)          # NaN propagates, as in torch
            np.copyto(idx, k, where=take)
        self._cache = ("windows", x.shape, xp.shape, idx)
        return y

    def _forward_tiled(self, x):
        """Max over tiling windows in two passes: down the kh rows of each window, then
        across the kw columns, on the array's own memory layout (NCHW, or CHWN with the batch
        axis innermost). Ties go to the first maximum in row-major window order: across
        columns the smaller flat index a*kw + b wins. Index updates are branch-free
        arithmetic (``np.where`` on random masks is several times slower). Channels are
        independent: they are split over threads (``layers.parallel``), each computed as
        in one call.

        Returns y (N, C, H_out, W_out) in the input's layout, the winning row of every column
        of every window and the winning column of every window (integer arrays in the physical
        layout). NaN is not handled (the caller checks y and falls back)."""
        (kh, kw), (H_out, W_out) = self.kernel_size, self._out_hw(*x.shape[2:])
        stored_chwn = is_chwn(x)
        N, C = x.shape[:2]
        itype = np.uint8 if kh * kw <= 256 else np.int32
        shape = (C, H_out, W_out, N) if stored_chwn else (N, C, H_out, W_out)
        y = np.empty(shape, dtype=x.dtype)
        rows = np.zeros((*shape[:2], W_out * kw, shape[3]) if stored_chwn else (N, C, H_out, W_out * kw),
                        dtype=itype)
        cols = np.zeros(shape, dtype=itype)

        def part(c0, c1):
            ch = (slice(c0, c1),) if stored_chwn else (slice(None), slice(c0, c1))
            self._tiled_channels(x[:, c0:c1], y[ch], rows[ch], cols[ch])
        parallel.over_channels(part, x)
        return _logical(y, stored_chwn), rows, cols

    def _tiled_channels(self, x, y, rows, cols):
        """The work of :meth:`_forward_tiled` for some channels: fills y, rows and cols (the
        physical arrays of those channels; rows and cols zero)."""
        (kh, kw), (H_out, W_out) = self.kernel_size, self._out_hw(*x.shape[2:])
        p, ix = _physical(x, is_chwn(x))
        itype = rows.dtype.type
        m = p[ix(slice(0, H_out * kh, kh), slice(0, W_out * kw))].copy()    # window rows' running max
        for a in range(1, kh):
            v = p[ix(slice(a, H_out * kh, kh), slice(0, W_out * kw))]
            take = v > m
            np.maximum(m, v, out=m)
            rows += take * (itype(a) - rows)                           # rows = a where take (wraps exactly)
        np.copyto(y, m[ix(slice(None), slice(0, None, kw))])
        flat = rows[ix(slice(None), slice(0, None, kw))] * itype(kw)   # a * kw + b of the winner
        for b in range(1, kw):
            v = m[ix(slice(None), slice(b, None, kw))]
            f = rows[ix(slice(None), slice(b, None, kw))] * itype(kw) + itype(b)
            take = v > y
            take |= (v == y) & (f < flat)
            np.maximum(y, v, out=y)
            flat += take * (f - flat)
            cols += take * (itype(b) - cols)

    def backward(self, dy):
        cache = self._cached()
        if cache[0] == "tiled":
            return self._backward_tiled(dy, *cache[1:])
        _, x_shape, xp_shape, idx = cache
        kw = self.kernel_size[1]
        return self._col2im(x_shape, xp_shape, dy.dtype, is_chwn(dy),
                            lambda a, b, c0, c1: dy[:, c0:c1] * (idx[:, c0:c1] == a * kw + b))

    def pieces(self):
        """Each window's winner a * kw + b (row-major window position), (N, C, H_out, W_out)."""
        cache = self._cached()
        if cache[0] == "windows":
            return cache[3]
        _, _, stored_chwn, rows, cols = cache
        kw = self.kernel_size[1]
        rows, cols = _logical(rows, stored_chwn), _logical(cols, stored_chwn)  # rows: (N, C, H_out, W_out*kw)
        row = np.take_along_axis(rows.reshape(*cols.shape, kw), cols[..., None].astype(np.intp), axis=4)[..., 0]
        return row.astype(np.int64) * kw + cols

    def _backward_tiled(self, dy, x_shape, stored_chwn, rows, cols):
        """Route dy to the winning column of each window, then down to the winning row
        (channels split over threads, as the forward pass)."""
        (kh, kw) = self.kernel_size
        N, C, H, W = x_shape
        H_out, W_out = dy.shape[2:]
        dyp, ix = _physical(dy, stored_chwn)
        exact = H_out * kh == H and W_out * kw == W
        dx = (np.empty if exact else np.zeros)((C, H, W, N) if stored_chwn else x_shape, dtype=dy.dtype)

        def part(c0, c1):
            ch = (slice(c0, c1),) if stored_chwn else (slice(None), slice(c0, c1))
            r, c, d = rows[ch], cols[ch], dyp[ch]
            dm = np.empty(r.shape, dtype=dy.dtype)
            for b in range(kw):
                np.multiply(d, c == b, out=dm[ix(slice(None), slice(b, None, kw))])
            for a in range(kh):
                np.multiply(dm, r == a, out=dx[ch][ix(slice(a, H_out * kh, kh), slice(0, W_out * kw))])
        parallel.over_channels(part, dy)
        return _logical(dx, stored_chwn)


def _physical(x, stored_chwn: bool):
    """The array in memory order and an indexer ix(h, w) for its H and W axes: (C, H, W, N)
    when ``stored_chwn``, else x itself (N, C, H, W). ``dy`` of another order is copied."""
    if stored_chwn:
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0)), lambda h, w: (slice(None), h, w, slice(None))
    return x, lambda h, w: (slice(None), slice(None), h, w)


def _logical(p, stored_chwn: bool):
    """Inverse of :func:`_physical`: the logically NCHW array."""
    return p.transpose(3, 0, 1, 2) if stored_chwn else p


@LAYERS.register("avgpool2d", "avgpool", "avg_pool2d")
class AvgPool2d(_Pool2d):
    """Mean over each window, as ``torch.nn.AvgPool2d``.

    Output size as :class:`MaxPool2d` (no dilation). The divisor of a window follows
    torch ``avg_pool2d``: with ``count_include_pad`` it is the window's size clipped to
    the padded input (ceil-mode overhang never counts); otherwise the number of real
    input elements in it. ``divisor_override`` replaces both.

    Args:
        kernel_size: int or [kh, kw].
        stride: int or [sh, sw]. Default: kernel_size.
        padding: Implicit zero padding on each side, at most kernel_size/2. Default: 0.
        ceil_mode: Use ceil instead of floor for the output size. Default: false.
        count_include_pad: Count zero padding in the divisor. Default: true.
        divisor_override: If set, divide every window sum by this. Default: none.

    Shape:
        Input (N, C, H, W); output (N, C, H_out, W_out), same dtype.

    References:
        https://pytorch.org/docs/stable/generated/torch.nn.AvgPool2d.html
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__()
        self._setup(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = check_bool("count_include_pad", count_include_pad)
        self.divisor_override = None if divisor_override is None else check_int("divisor_override",
                                                                                  divisor_override, 1, MAX_ELEMENTS)

    def _divisor(self, H, W, H_out, W_out, dtype):
        """(H_out, W_out) window divisors, per torch ``avg_pool2d_out_frame``; a scalar of
        ``dtype`` when every window has the same one."""
        if self.divisor_override is not None:
            return np.dtype(dtype).type(self.divisor_override)

        def counts(size, n_out, k, s, p):
            start = np.arange(n_out) * s - p
            end = np.minimum(start + k, size + p)
            padded = end - start
            real = np.minimum(end, size) - np.maximum(start, 0)
            return padded if self.count_include_pad else real

        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        rows = counts(H, H_out, kh, sh, ph)
        cols = counts(W, W_out, kw, sw, pw)
        div = np.outer(rows, cols).astype(dtype)
        # one divisor for every window (the usual case): a scalar divides faster than a broadcast array
        return div.flat[0] if (div == div.flat[0]).all() else div

    def forward(self, x, training=False):
        H, W = x.shape[2:]
        xp, win = self._windows(x, 0.0)
        H_out, W_out = win.shape[2:4]
        div = self._divisor(H, W, H_out, W_out, x.dtype)
        kh, kw = self.kernel_size
        y = np.empty_like(win[..., 0, 0])              # keeps the input's memory order

        def part(c0: int, c1: int) -> None:           # channels are independent: split over threads
            ys = y[:, c0:c1]
            np.copyto(ys, win[:, c0:c1, ..., 0, 0])
            for k in range(1, kh * kw):                # a loop over offsets: NumPy reduces tiny axes slowly
                ys += win[:, c0:c1, ..., k // kw, k % kw]
            ys /= div
        parallel.over_channels(part, y)
        self._cache = (x.shape, xp.shape, div)
        return y

    def backward(self, dy):
        x_shape, xp_shape, div = self._cached()
        share = dy / div
        return self._col2im(x_shape, xp_shape, share.dtype, is_chwn(share), lambda a, b, c0, c1: share[:, c0:c1])


@LAYERS.register("global_avgpool", "global_avg_pool", "gap")
class GlobalAvgPool(Layer):
    """Mean over all spatial positions of each channel (``torch.nn.AdaptiveAvgPool2d(1)``).

    Args:
        keepdims: Keep the spatial axes as size 1 (N, C, 1, 1); otherwise output (N, C). Default: false.

    Shape:
        Input (N, C, H, W); output (N, C) or (N, C, 1, 1), same dtype.
    """

    def __init__(self, keepdims: bool = False):
        super().__init__()
        self.keepdims = check_bool("keepdims", keepdims)

    def output_shape(self, input_shape):
        check_ndim("global_avgpool", input_shape, (3,), "images (C, H, W)")
        C = input_shape[0]
        return (C, 1, 1) if self.keepdims else (C,)

    def flops(self, input_shape):
        return int(np.prod(input_shape))

    def forward(self, x, training=False):
        self._cache = x.shape
        y = x.mean(axis=(2, 3), keepdims=True)
        return y if self.keepdims else y[:, :, 0, 0]

    def backward(self, dy):
        N, C, H, W = self._cached()
        dy = dy.reshape(N, C, 1, 1)
        return np.broadcast_to(dy / (H * W), (N, C, H, W)).copy()
