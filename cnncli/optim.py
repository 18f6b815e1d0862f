"""Optimizers with PyTorch's update rules (``torch.optim``), updating arrays in place.

Each optimizer takes ``params``: an ordered ``{key: ndarray}`` of the arrays to train,
and ``step(grads)`` with the same keys. State is per key and saved in checkpoints.
"""

from __future__ import annotations

import numpy as np

from cnncli.layers.base import check_bool, check_float

OPTIMIZERS: dict[str, type] = {}


def register(name: str):
    def add(cls):
        OPTIMIZERS[name] = cls
        cls.type_name = name
        return cls
    return add


class Optimizer:
    """Base: ``lr`` is public so schedules can set it; ``state[key][name]`` holds arrays."""

    type_name = "optimizer"
    state_names: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.params = params
        self.lr = check_float("lr", lr, 0.0, low_open=True)
        self.steps = 0
        self.state: dict[str, dict[str, np.ndarray]] = {k: {} for k in params}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.steps += 1
        for key, p in self.params.items():
            self._update(key, p, grads[key])

    def _update(self, key, p, g):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``{"key/name": array}`` of the optimizer state, for checkpoints."""
        return {f"{k}/{n}": a for k, s in self.state.items() for n, a in s.items()}


@register("sgd")
class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    g = grad + weight_decay * p; b = g on the first step, then
    b = momentum * b + (1 - dampening) * g; g = g + momentum * b (nesterov) or b;
    p = p - lr * g.

    Args:
        lr: Learning rate. Default: 0.01.
        momentum: Default: 0.
        dampening: Default: 0.
        nesterov: Nesterov momentum (needs momentum > 0, dampening 0). Default: false.
        weight_decay: L2 penalty added to the gradient. Default: 0.
    """

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum = check_float("momentum", momentum, 0.0)
        self.dampening = check_float("dampening", dampening)
        self.nesterov = check_bool("nesterov", nesterov)
        self.weight_decay = check_float("weight_decay", weight_decay, 0.0)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")

    def _update(self, key, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            st = self.state[key]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = np.array(g, dtype=p.dtype, copy=True)
            else:
                b = st["momentum_buffer"]
                b *= self.momentum
                b += (1 - self.dampening) * g
            b = st["momentum_buffer"]
            g = g + self.momentum * b if self.nesterov else b
        p -= p.dtype.type(self.lr) * g


@register("adam")
class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient).

    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).

    Args:
        lr: Learning rate. Default: 0.001.
        betas: [b1, b2]. Default: [0.9, 0.999].
        eps: Default: 1e-8.
        weight_decay: L2 penalty added to the gradient. Default: 0.

    References:
        Kingma & Ba 2014, https://arxiv.org/abs/1412.6980
    """

    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair [b1, b2], got {betas!r}")
        self.betas = (check_float("betas[0]", betas[0], 0.0, 1.0, high_open=True),
                      check_float("betas[1]", betas[1], 0.0, 1.0, high_open=True))
        self.eps = check_float("eps", eps, 0.0)
        self.weight_decay = check_float("weight_decay", weight_decay, 0.0)

    def _update(self, key, p, g):
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                p *= p.dtype.type(1 - self.lr * self.weight_decay)
            else:
                g = g + self.weight_decay * p
        st = self.state[key]
        if not st:
            st["exp_avg"] = np.zeros_like(p)
            st["exp_avg_sq"] = np.zeros_like(p)
        m, v = st["exp_avg"], st["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * np.square(g)
        t = self.steps
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        denom = np.sqrt(v)
        denom *= p.dtype.type(1 / np.sqrt(bc2))
        denom += p.dtype.type(self.eps)
        p -= p.dtype.type(self.lr / bc1) * (m / denom)


@register("adamw")
class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: decoupled decay p = p * (1 - lr * weight_decay), then Adam.

    Args:
        lr: Default: 0.001. betas: Default: [0.9, 0.999]. eps: Default: 1e-8.
        weight_decay: Decoupled decay. Default: 0.01.

    References:
        Loshchilov & Hutter 2017, https://arxiv.org/abs/1711.05101
    """

    decoupled = True

    def __init__(self, params, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)
