"""Sliding-window views shared by convolution and pooling (im2col without gathers).

A window view is a strided, zero-copy ``(N, C, H_out, W_out, kh, kw)`` view of a
padded ``(N, C, H_p, W_p)`` array; the first reshape of it is the one copy that
im2col needs. The adjoint (col2im) is a loop over the kh*kw kernel offsets, each a
strided add over the whole batch.
"""

from __future__ import annotations


import numpy as np
from numpy.lib.stride_tricks import as_strided


def out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1,
             ceil_mode: bool = False, pad_begin: int | None = None) -> int:
    """Output length along one axis, as PyTorch computes it.

    floor((size + pad_total - dilation*(kernel-1) - 1) / stride) + 1, or with ceil
    instead of floor when ``ceil_mode``; in ceil mode the last window must start
    inside the input or the leading padding (torch ``pooling_output_shape``).
    The span may be negative: in ceil mode a window that starts in the input but
    overhangs its end by less than a stride still counts (torch gives 1 output for
    size 1, kernel 2, stride 2, ceil_mode). Returns 0 when no window fits.
    """
    span = size + pad_total - dilation * (kernel - 1) - 1
    # integer floor/ceil division, exact for negative spans too (torch div_rtn)
    n = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode:
        begin = pad_total // 2 if pad_begin is None else pad_begin
        if (n - 1) * stride >= size + begin:
            n -= 1
    return max(n, 0)


def pad(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` (N, C, H, W) with a constant; returns x itself if no padding."""
    if top == bottom == left == right == 0:
        return x
    N, C, H, W = x.shape
    out = np.full((N, C, H + top + bottom, W + left + right), value, dtype=x.dtype)
    out[:, :, top:top + H, left:left + W] = x
    return out


def window_view(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
                H_out: int, W_out: int) -> np.ndarray:
    """Read-only view (N, C, H_out, W_out, kh, kw) of padded input ``xp`` (N, C, H_p, W_p).

    Element [n, c, i, j, a, b] is xp[n, c, i*sh + a*dh, j*sw + b*dw]. The caller
    guarantees the windows fit inside ``xp``.
    """
    sN, sC, sH, sW = xp.strides
    N, C = xp.shape[:2]
    assert (H_out - 1) * sh + (kh - 1) * dh < xp.shape[2] and (W_out - 1) * sw + (kw - 1) * dw < xp.shape[3]
    return as_strided(xp, shape=(N, C, H_out, W_out, kh, kw),
                      strides=(sN, sC, sH * sh, sW * sw, sH * dh, sW * dw), writeable=False)


def offset_slice(a: int, d: int, s: int, n_out: int) -> slice:
    """Slice of the padded axis that kernel offset ``a`` touches for outputs 0..n_out-1."""
    start = a * d
    return slice(start, start + s * (n_out - 1) + 1, s)
