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


# ------------------------------------------------------------------ memory layout
#
# Layers take and return arrays that are *logically* NCHW, whatever their memory order.
# Inside a model, 4-D activations are kept in CHWN memory order (batch axis fastest, as
# cuda-convnet does): a conv's GEMM writes that order directly, and every per-channel or
# per-window NumPy operation then runs over long contiguous inner loops instead of rows of
# 7-28 pixels. ``x.transpose(1, 2, 3, 0)`` of such an array is a C-contiguous (C, H, W, N)
# array. Element-wise NumPy operations keep the order of their inputs (order 'K').


def is_chwn(x: np.ndarray) -> bool:
    """True if logically-NCHW ``x`` is stored in CHWN memory order (and not also C-contiguous)."""
    return x.ndim == 4 and not x.flags.c_contiguous and x.transpose(1, 2, 3, 0).flags.c_contiguous


def to_chwn(x: np.ndarray) -> np.ndarray:
    """``x`` (N, C, H, W) as a logically identical array stored in CHWN order (a copy unless it is)."""
    if is_chwn(x):
        return x
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def chwn(x: np.ndarray) -> np.ndarray:
    """The C-contiguous (C, H, W, N) array behind logically-NCHW ``x`` (copied if needed)."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


def empty_chwn(shape, dtype, zero: bool = False) -> np.ndarray:
    """A new logically-NCHW array of ``shape`` (N, C, H, W) stored in CHWN order."""
    N, C, H, W = shape
    a = (np.zeros if zero else np.empty)((C, H, W, N), dtype=dtype)
    return a.transpose(3, 0, 1, 2)


def valid_range(n_out: int, size: int, a: int, d: int, s: int, pad_begin: int) -> tuple[slice, slice]:
    """For kernel offset ``a``: the outputs whose input index i*s + a*d - pad_begin lies in
    [0, size), and the matching input slice. Returns (output slice, input slice); both empty
    when no output reads real input at this offset."""
    shift = a * d - pad_begin
    lo = max(0, -(shift // s))                             # smallest i with i*s + shift >= 0
    hi = min(n_out, (size - 1 - shift) // s + 1) if size - 1 - shift >= 0 else 0
    if hi <= lo:
        return slice(0, 0), slice(0, 0)
    start = lo * s + shift
    return slice(lo, hi), slice(start, start + (hi - lo - 1) * s + 1, s)
