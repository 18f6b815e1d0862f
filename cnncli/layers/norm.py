"""Batch normalization, one type for (N, C, H, W) and (N, F) input (PyTorch's BatchNorm2d/1d)."""

from __future__ import annotations

import numpy as np

from cnncli.layers.base import Layer, check_bool, check_float, check_int, check_ndim
from cnncli.layers.registry import register


@register("batchnorm", "batchnorm2d", "batchnorm1d", "batch_norm", "bn")
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

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"

    def output_shape(self, input_shape):
        check_ndim("batchnorm", input_shape, (1, 3), "(C, H, W) images or (F,) features")
        if input_shape[0] != self.num_features:
            raise ValueError(f"batchnorm expects {self.num_features} channels, got {input_shape[0]}")
        return tuple(input_shape)

    @staticmethod
    def _shape(x):
        """Axes to reduce and the broadcast shape of a per-channel vector."""
        if x.ndim == 4:
            return (0, 2, 3), (1, -1, 1, 1)
        return (0,), (1, -1)

    def forward(self, x, training=False):
        axes, bshape = self._shape(x)
        n = x.size // x.shape[1]
        use_batch = training or not self.track_running_stats
        if use_batch:
            if n <= 1:
                raise ValueError(f"batchnorm: expected more than 1 value per channel when training, "
                                 f"got input of shape {x.shape}; use a batch size > 1")
            mean = x.mean(axis=axes)
            xc = x - mean.reshape(bshape)
            var = np.mean(np.square(xc), axis=axes)                 # biased, used to normalize
            if training and self.track_running_stats:
                nbt = self.buffers["num_batches_tracked"]
                nbt += 1
                m = 1.0 / float(nbt) if self.momentum is None else self.momentum
                rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
                rm *= 1 - m
                rm += m * mean
                rv *= 1 - m
                rv += (m * n / (n - 1)) * var                         # unbiased
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
            xc = x - mean.reshape(bshape)
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype, copy=False)
        xhat = xc * inv_std.reshape(bshape)
        y = xhat
        if self.affine:
            y = xhat * self.params["weight"].reshape(bshape) + self.params["bias"].reshape(bshape)
        self._cache = (xhat, inv_std, use_batch)
        return y

    def backward(self, dy):
        xhat, inv_std, use_batch = self._cached()
        axes, bshape = self._shape(dy)
        if self.affine:
            self.grads["weight"] = np.sum(dy * xhat, axis=axes)
            self.grads["bias"] = dy.sum(axis=axes)
            dxhat = dy * self.params["weight"].reshape(bshape)
        else:
            dxhat = dy
        if not use_batch:                      # running statistics are constants
            return dxhat * inv_std.reshape(bshape)
        n = dy.size // dy.shape[1]
        # dx = inv_std/n * (n*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat))  (Ioffe & Szegedy, sec. 3)
        mean_dxhat = dxhat.mean(axis=axes).reshape(bshape)
        mean_dxhat_xhat = np.mean(dxhat * xhat, axis=axes).reshape(bshape)
        return (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) * inv_std.reshape(bshape)
