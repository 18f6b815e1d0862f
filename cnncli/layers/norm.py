"""Batch normalization, one type for (N, C, H, W) and (N, F) input (PyTorch's BatchNorm2d/1d)."""

from __future__ import annotations

import numpy as np

from cnncli.checks import check_bool, check_float, check_int, check_ndim
from cnncli.layers import parallel
from cnncli.layers.base import Layer
from cnncli.layers.registry import LAYERS
from cnncli.layers.windows import is_chwn


@LAYERS.register("batchnorm", "batchnorm2d", "batchnorm1d", "batch_norm", "bn")
class BatchNorm(Layer):
    """Batch normalization per channel (NCHW) or per feature (NF).

    y = (x - mean) / sqrt(var + eps) * weight + bias, statistics over (N, H, W) or (N,).
    Training normalizes with the biased batch variance and updates the buffers with
    running = (1 - momentum) * running + momentum * batch, using the unbiased batch
    variance for ``running_var`` (``momentum: null`` gives the cumulative average,
    factor 1/num_batches_tracked). Evaluation uses the running statistics; with
    ``track_running_stats: false`` it uses batch statistics in both modes.

    Args:
        num_features: Channels C (or features F). Inferred from the previous layer in YAML.
        eps: Added to the variance for stability. Default: 1e-5.
        momentum: Weight of the new batch statistic (PyTorch convention; Keras's is
            1 - this), or null for a cumulative average. Default: 0.1.
        affine: Learn ``weight`` (gamma, init 1) and ``bias`` (beta, init 0). Default: true.
        track_running_stats: Keep ``running_mean`` (init 0), ``running_var`` (init 1) and
            ``num_batches_tracked``. Default: true.

    Shape:
        Input (N, C, H, W) or (N, C); output same shape and dtype.

    Raises:
        ValueError: If a training batch has a single value per channel (N*H*W == 1).

    References:
        Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167;
        https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html
    """

    inferred = {"num_features": lambda s: s[0]}
    normalizes_over_batch = True
    is_normalization = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, dtype=np.float32):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.eps = check_float("eps", eps, 0.0, low_open=True)
        self.momentum = None if momentum is None else check_float("momentum", momentum, 0.0, 1.0)
        self.affine = check_bool("affine", affine)
        self.track_running_stats = check_bool("track_running_stats", track_running_stats)
        C, dtype = self.num_features, np.dtype(dtype)
        if self.affine:
            self.params["weight"] = np.ones(C, dtype=dtype)
            self.params["bias"] = np.zeros(C, dtype=dtype)
        if self.track_running_stats:
            self.buffers["running_mean"] = np.zeros(C, dtype=dtype)
            self.buffers["running_var"] = np.ones(C, dtype=dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)

    @property
    def mixes_samples_in_eval(self) -> bool:
        """Without running statistics, evaluation normalizes with the batch's own statistics."""
        return not self.track_running_stats

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"

    def output_shape(self, input_shape):
        check_ndim("batchnorm", input_shape, (1, 3), "(C, H, W) images or (F,) features")
        if input_shape[0] != self.num_features:
            raise ValueError(f"batchnorm expects {self.num_features} channels, got {input_shape[0]}")
        return tuple(input_shape)

    def flops(self, input_shape):
        """Evaluation: one multiply and one add per element (x * scale + shift)."""
        return 2 * int(np.prod(input_shape))

    @staticmethod
    def _shape(x):
        """Broadcast shape of a per-channel vector for input ``x``."""
        return (1, -1, 1, 1) if x.ndim == 4 else (1, -1)

    @staticmethod
    def _sum(a, b=None):
        """Per-channel sum of ``a`` (or of ``a * b`` without a temporary), over (N, H, W) or (N,)."""
        if a.ndim == 4 and is_chwn(a) and (b is None or is_chwn(b)):
            C = a.shape[1]
            a = a.transpose(1, 2, 3, 0).reshape(C, -1)                # (C, H*W*N) view: rows per channel
            return a.sum(axis=1) if b is None else np.einsum("cm,cm->c", a, b.transpose(1, 2, 3, 0).reshape(C, -1))
        if a.ndim == 4:
            N, C = a.shape[:2]
            a = a.reshape(N, C, -1)
            b = None if b is None else b.reshape(N, C, -1)
            return a.sum(axis=2).sum(axis=0) if b is None else np.einsum("nci,nci->c", a, b)
        return a.sum(axis=0) if b is None else np.einsum("nc,nc->c", a, b)

    def forward(self, x, training=False):
        bshape = self._shape(x)
        n = x.size // x.shape[1]
        use_batch = training or not self.track_running_stats
        w = self.params["weight"] if self.affine else None
        if not use_batch:
            # evaluation with running statistics: one fused affine map y = x * scale + shift
            inv_std = (1.0 / np.sqrt(self.buffers["running_var"] + self.eps)).astype(x.dtype, copy=False)
            scale = inv_std if w is None else inv_std * w
            shift = -self.buffers["running_mean"] * scale
            if w is not None:
                shift = shift + self.params["bias"]
            self._cache = (x, inv_std, False)      # x, not xhat: the weight gradient recomputes it
            y = x * scale.reshape(bshape)
            y += shift.astype(x.dtype, copy=False).reshape(bshape)
            return y
        if n <= 1:
            raise ValueError(f"batchnorm: expected more than 1 value per channel when training, "
                             f"got input of shape {x.shape}; use a batch size > 1")
        C, f = x.shape[1], x.dtype.type(n)
        mean, var, inv_std = (np.empty(C, dtype=x.dtype) for _ in range(3))
        xhat = np.empty_like(x)
        y = xhat if w is None else np.empty_like(x)

        def part(c0, c1):           # channels c0:c1, independent of the others
            xs, hs, cs = x[:, c0:c1], xhat[:, c0:c1], slice(c0, c1)
            mean[cs] = self._sum(xs) / f
            np.subtract(xs, mean[cs].reshape(bshape), out=hs)
            var[cs] = self._sum(hs, hs) / f                             # biased, used to normalize
            inv_std[cs] = 1.0 / np.sqrt(var[cs] + self.eps)
            hs *= inv_std[cs].reshape(bshape)
            if w is not None:
                ys = y[:, c0:c1]
                np.multiply(hs, w[cs].reshape(bshape), out=ys)
                ys += self.params["bias"][cs].reshape(bshape)
        parallel.over_channels(part, x)
        if training and self.track_running_stats:
            nbt = self.buffers["num_batches_tracked"]
            nbt += 1
            m = 1.0 / float(nbt) if self.momentum is None else self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= 1 - m
            rm += m * mean
            rv *= 1 - m
            rv += (m * n / (n - 1)) * var                             # unbiased
        self._cache = (xhat, inv_std, True)
        return xhat.copy() if w is None else y

    def backward(self, dy):
        xhat, inv_std, use_batch = self._cached()
        bshape = self._shape(dy)
        w = self.params["weight"] if self.affine else None
        scale = inv_std if w is None else inv_std * w
        if not use_batch:                      # running statistics are constants
            if w is not None:
                x = xhat
                xhat = (x - self.buffers["running_mean"].reshape(bshape)) * inv_std.reshape(bshape)
                self.grads["bias"] = self._sum(dy)
                self.grads["weight"] = self._sum(dy, xhat)
            return dy * scale.reshape(bshape)
        n = dy.size // dy.shape[1]
        C = dy.shape[1]
        sum_dy, sum_dy_xhat = np.empty(C, dtype=dy.dtype), np.empty(C, dtype=dy.dtype)
        dx = np.empty_like(xhat)                   # xhat's memory order, as xhat * ... had

        def part(c0, c1):           # channels c0:c1, independent of the others
            cs, dys, hs, dxs = slice(c0, c1), dy[:, c0:c1], xhat[:, c0:c1], dx[:, c0:c1]
            sum_dy[cs] = self._sum(dys)
            sum_dy_xhat[cs] = self._sum(dys, hs)
            # dx = weight * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))   (Ioffe & Szegedy, sec. 3)
            np.multiply(hs, (-sum_dy_xhat[cs] / n).astype(dy.dtype, copy=False).reshape(bshape), out=dxs)
            dxs += dys
            dxs -= (sum_dy[cs] / n).astype(dy.dtype, copy=False).reshape(bshape)
            dxs *= scale[cs].reshape(bshape)
        parallel.over_channels(part, dy)
        if w is not None:
            self.grads["weight"] = sum_dy_xhat
            self.grads["bias"] = sum_dy
        return dx
