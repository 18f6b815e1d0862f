"""Optimizers with PyTorch's update rules (``torch.optim``), updating arrays in place.

Each optimizer takes ``params``: an ordered ``{key: ndarray}`` of the arrays to train,
and ``step(grads)`` with the same keys. State is per key and saved in checkpoints
(:meth:`Optimizer.state_arrays`, restored by :meth:`Optimizer.load_state_arrays`), so a
resumed run continues bit for bit.

Every optimizer takes ``exclude_bias_and_norm`` (default false): when true, weight decay
skips every ``bias`` and the ``weight`` of normalization layers (whose keys the trainer
passes as ``norm_keys``), the usual practice for CNNs (e.g. timm's
``param_groups_weight_decay``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cnncli.checks import OptionError, check_bool, check_float
from cnncli.registry import Registry

#: Optimizer name -> class. ``params`` (the arrays) and ``norm_keys`` (from the model) are
#: passed by the trainer; every other constructor argument is a ``train.optimizer`` option.
OPTIMIZERS = Registry("optimizer", supplied=("params", "norm_keys"))


class Optimizer:
    """Base: ``lr`` is public so schedules can set it; ``state[key][name]`` holds arrays.

    Args:
        params: ``{key: array}`` updated in place; keys are ``"{layer index}.{name}"``.
        lr: Learning rate (> 0).
        weight_decay: Coefficient of the decay (>= 0); how it applies is the subclass's rule.
        exclude_bias_and_norm: Apply no weight decay to keys named ``*.bias`` nor to ``norm_keys``.
        norm_keys: Keys of normalization-layer parameters (batchnorm ``weight``); the
            trainer fills it from the model. Keyword-only: not a config option.
    """

    type_name = "optimizer"
    state_names: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float, weight_decay: float = 0.0,
                 exclude_bias_and_norm: bool = False, norm_keys: Iterable[str] = ()):
        self.params = params
        self.lr = check_float("lr", lr, 0.0, low_open=True)
        self.weight_decay = check_float("weight_decay", weight_decay, 0.0)
        self.exclude_bias_and_norm = check_bool("exclude_bias_and_norm", exclude_bias_and_norm)
        self.no_decay: frozenset[str] = frozenset(
            k for k in params if k.rsplit(".", 1)[-1] == "bias" or k in set(norm_keys)
        ) if self.exclude_bias_and_norm else frozenset()
        self.steps = 0
        self.state: dict[str, dict[str, np.ndarray]] = {k: {} for k in params}
        #: ``{key: (lr_mult, decay_mult)}`` (Caffe's per-layer ``param`` multipliers, set by
        #: the trainer from ``Model.multipliers``); a key not in it updates with (1, 1).
        self.multipliers: dict[str, tuple[float, float]] = {}

    def decay(self, key: str) -> float:
        """The weight decay that applies to ``key``: 0 for excluded keys."""
        return 0.0 if key in self.no_decay else self.weight_decay

    def l2(self, key: str, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The gradient with coupled L2 weight decay, g + decay(key) * p (torch's
        ``weight_decay`` in SGD, Adam, RMSprop, ...), in p's dtype; ``g`` itself when none applies."""
        wd = self.decay(key)
        return g + p.dtype.type(wd) * p if wd else g

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """One update of every parameter from ``grads`` (same keys, or more: only ``params``'s
        are read). While ``key`` updates, ``lr`` and ``weight_decay`` are its own:
        ``lr * lr_mult`` and ``weight_decay * decay_mult`` (torch's parameter groups with those
        values; Caffe's ``local_rate`` and ``local_decay``), so every optimizer's rule applies
        the multipliers without knowing them."""
        self.steps += 1
        lr, weight_decay = self.lr, self.weight_decay
        try:
            for key, p in self.params.items():
                lr_mult, decay_mult = self.multipliers.get(key, (1.0, 1.0))
                self.lr, self.weight_decay = lr * lr_mult, weight_decay * decay_mult
                self._update(key, p, grads[key])
        finally:
            self.lr, self.weight_decay = lr, weight_decay

    def _update(self, key, p, g):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``{"key/name": array}`` of the optimizer state, for checkpoints."""
        return {f"{k}/{n}": a for k, s in self.state.items() for n, a in s.items()}

    def needed_state(self) -> tuple[str, ...]:
        """The state names every parameter holds after a step, with these options."""
        return self.state_names

    def zero_state(self, key: str, p: np.ndarray) -> dict[str, np.ndarray]:
        """The state of ``key``; on its first update, a zero array like ``p`` for each of
        :meth:`needed_state` (torch's optimizers start their averages at zero)."""
        st = self.state[key]
        if not st:
            st.update((name, np.zeros_like(p)) for name in self.needed_state())
        return st

    def load_state_arrays(self, arrays: dict[str, np.ndarray], steps: int) -> None:
        """Restore what :meth:`state_arrays` returned and the step count (for resuming).

        Arrays are copied in the parameters' dtype; nothing changes unless all fit. After
        steps > 0 every parameter must hold all of :meth:`needed_state` (an option such as
        ``momentum`` or ``centered`` added since the run began needs state it never kept).

        Raises:
            ValueError: Naming an entry for an unknown parameter or state, of the wrong shape,
                or a missing one.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"optimizer step count must be an integer >= 0, got {steps!r}")
        state: dict[str, dict[str, np.ndarray]] = {k: {} for k in self.params}
        for name, a in arrays.items():
            key, _, what = name.rpartition("/")
            if key not in self.params or what not in self.state_names:
                raise ValueError(f"optimizer state {name!r} does not belong to this {self.type_name} "
                                 f"optimizer and model")
            p = self.params[key]
            if np.shape(a) != p.shape:
                raise ValueError(f"optimizer state {name!r} has shape {np.shape(a)}, the parameter {p.shape}")
            state[key][what] = np.array(a, dtype=p.dtype, copy=True)
        if steps > 0:
            for key, st in state.items():
                missing = [n for n in self.needed_state() if n not in st]
                if missing:
                    raise ValueError(f"it holds no optimizer state '{missing[0]}' for parameter {key} (entry "
                                     f"optim/{key}/{missing[0]}), which {self.type_name} with the config's options "
                                     f"needs. Either the checkpoint is damaged, or train.optimizer changed since the "
                                     f"run began (e.g. momentum or centered added). Keep the run's train.optimizer "
                                     f"options, or start a new run")
        self.state = state
        self.steps = steps


def _betas(betas) -> tuple[float, float]:
    """``betas`` checked as a pair of floats in [0, 1)."""
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise OptionError("betas", f"must be a pair [b1, b2], got {betas!r}")
    return (check_float("betas[0]", betas[0], 0.0, 1.0, high_open=True),
            check_float("betas[1]", betas[1], 0.0, 1.0, high_open=True))


@OPTIMIZERS.register("sgd")
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
        exclude_bias_and_norm: No weight decay on biases and normalization weights. Default: false.
    """

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, exclude_bias_and_norm: bool = False,
                 *, norm_keys: Iterable[str] = ()):
        super().__init__(params, lr, weight_decay, exclude_bias_and_norm, norm_keys)
        self.momentum = check_float("momentum", momentum, 0.0)
        self.dampening = check_float("dampening", dampening)
        self.nesterov = check_bool("nesterov", nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise OptionError("nesterov", "needs momentum > 0 and dampening 0")

    def needed_state(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def _update(self, key, p, g):
        g = self.l2(key, p, g)
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


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient).

    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).

    Args:
        lr: Learning rate. Default: 0.001.
        betas: [b1, b2]. Default: [0.9, 0.999].
        eps: Default: 1e-8.
        weight_decay: L2 penalty added to the gradient. Default: 0.
        exclude_bias_and_norm: No weight decay on biases and normalization weights. Default: false.

    References:
        Kingma & Ba 2014, https://arxiv.org/abs/1412.6980
    """

    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, exclude_bias_and_norm: bool = False,
                 *, norm_keys: Iterable[str] = ()):
        super().__init__(params, lr, weight_decay, exclude_bias_and_norm, norm_keys)
        self.betas = _betas(betas)
        self.eps = check_float("eps", eps, 0.0)

    def _update(self, key, p, g):
        b1, b2 = self.betas
        wd = self.decay(key)
        if wd:
            if self.decoupled:
                p *= p.dtype.type(1 - self.lr * wd)
            else:
                g = g + p.dtype.type(wd) * p
        st = self.zero_state(key, p)
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


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: decoupled decay p = p * (1 - lr * weight_decay), then Adam.

    Args:
        lr: Default: 0.001. betas: Default: [0.9, 0.999]. eps: Default: 1e-8.
        weight_decay: Decoupled decay. Default: 0.01.
        exclude_bias_and_norm: No weight decay on biases and normalization weights. Default: false.

    References:
        Loshchilov & Hutter 2017, https://arxiv.org/abs/1711.05101
    """

    decoupled = True

    def __init__(self, params, lr: float = 0.001, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, exclude_bias_and_norm: bool = False,
                 *, norm_keys: Iterable[str] = ()):
        super().__init__(params, lr, betas, eps, weight_decay, exclude_bias_and_norm, norm_keys=norm_keys)


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    g = grad + weight_decay * p; v = alpha v + (1 - alpha) g^2;
    centered: a = alpha a + (1 - alpha) g (written a + (1 - alpha)(g - a), torch's lerp),
    d = sqrt(v - a^2) + eps, else d = sqrt(v) + eps;
    momentum > 0: b = momentum b + g / d; p = p - lr b; else p = p - lr g / d.
    All state starts at zero.

    Args:
        lr: Learning rate. Default: 0.01.
        alpha: Smoothing constant of the squared-gradient average, in [0, 1). Default: 0.99.
        eps: Added to the denominator. Default: 1e-8.
        weight_decay: L2 penalty added to the gradient. Default: 0.
        momentum: Default: 0.
        centered: Normalize by the variance estimate v - a^2 instead of v. Default: false.
        exclude_bias_and_norm: No weight decay on biases and normalization weights. Default: false.

    References:
        Hinton, Coursera "Neural Networks for Machine Learning", lecture 6e;
        Graves 2013 (centered), https://arxiv.org/abs/1308.0850;
        https://pytorch.org/docs/stable/generated/torch.optim.RMSprop.html
    """

    state_names = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 exclude_bias_and_norm: bool = False, *, norm_keys: Iterable[str] = ()):
        super().__init__(params, lr, weight_decay, exclude_bias_and_norm, norm_keys)
        self.alpha = check_float("alpha", alpha, 0.0, 1.0, high_open=True)
        self.eps = check_float("eps", eps, 0.0)
        self.momentum = check_float("momentum", momentum, 0.0)
        self.centered = check_bool("centered", centered)

    def needed_state(self) -> tuple[str, ...]:
        return ("square_avg", *(("momentum_buffer",) if self.momentum else ()),
                *(("grad_avg",) if self.centered else ()))

    def _update(self, key, p, g):
        t = p.dtype.type
        g = self.l2(key, p, g)
        st = self.zero_state(key, p)
        v = st["square_avg"]
        v *= t(self.alpha)
        v += t(1 - self.alpha) * np.square(g)
        if self.centered:
            a = st["grad_avg"]
            a += t(1 - self.alpha) * (g - a)
            d = v - np.square(a)
            np.sqrt(d, out=d)
        else:
            d = np.sqrt(v)
        d += t(self.eps)
        if self.momentum:
            b = st["momentum_buffer"]
            b *= t(self.momentum)
            b += g / d
            p -= t(self.lr) * b
        else:
            p -= t(self.lr) * (g / d)


@OPTIMIZERS.register("adadelta")
class Adadelta(Optimizer):
    """Adadelta, as ``torch.optim.Adadelta``.

    g = grad + weight_decay * p; v = rho v + (1 - rho) g^2;
    d = sqrt(u + eps) / sqrt(v + eps) * g; u = rho u + (1 - rho) d^2; p = p - lr d.
    Both accumulators start at zero.

    Args:
        lr: Scales the step d. Default: 1.0 (Zeiler's rule has no learning rate).
        rho: Decay of both running averages, in [0, 1]. Default: 0.9.
        eps: Added inside both square roots (> 0, or every step is zero). Default: 1e-6.
        weight_decay: L2 penalty added to the gradient. Default: 0.
        exclude_bias_and_norm: No weight decay on biases and normalization weights. Default: false.

    References:
        Zeiler 2012, https://arxiv.org/abs/1212.5701;
        https://pytorch.org/docs/stable/generated/torch.optim.Adadelta.html
    """

    state_names = ("square_avg", "acc_delta")

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 exclude_bias_and_norm: bool = False, *, norm_keys: Iterable[str] = ()):
        super().__init__(params, lr, weight_decay, exclude_bias_and_norm, norm_keys)
        self.rho = check_float("rho", rho, 0.0, 1.0)
        self.eps = check_float("eps", eps, 0.0, low_open=True)

    def _update(self, key, p, g):
        t = p.dtype.type
        g = self.l2(key, p, g)
        st = self.zero_state(key, p)
        v, u = st["square_avg"], st["acc_delta"]
        v *= t(self.rho)
        v += t(1 - self.rho) * np.square(g)
        d = np.sqrt(u + t(self.eps))
        d /= np.sqrt(v + t(self.eps))
        d *= g
        u *= t(self.rho)
        u += t(1 - self.rho) * np.square(d)
        p -= t(self.lr) * d


@OPTIMIZERS.register("adagrad")
class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    g = grad + weight_decay * p; clr = lr / (1 + (t - 1) lr_decay) at step t = 1, 2, ...;
    s = s + g^2 (s starts at ``initial_accumulator_value``); p = p - clr g / (sqrt(s) + eps).

    Args:
        lr: Learning rate. Default: 0.01.
        lr_decay: Default: 0.
        weight_decay: L2 penalty added to the gradient. Default: 0.
        initial_accumulator_value: The start of s (>= 0). Default: 0.
        eps: Added to the denominator. Default: 1e-10.
        exclude_bias_and_norm: No weight decay on biases and normalization weights. Default: false.

    References:
        Duchi, Hazan & Singer 2011, https://jmlr.org/papers/v12/duchi11a.html;
        https://pytorch.org/docs/stable/generated/torch.optim.Adagrad.html
    """

    state_names = ("sum",)

    def __init__(self, params, lr: float = 0.01, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, exclude_bias_and_norm: bool = False,
                 *, norm_keys: Iterable[str] = ()):
        super().__init__(params, lr, weight_decay, exclude_bias_and_norm, norm_keys)
        self.lr_decay = check_float("lr_decay", lr_decay, 0.0)
        self.initial_accumulator_value = check_float("initial_accumulator_value", initial_accumulator_value, 0.0)
        self.eps = check_float("eps", eps, 0.0)

    def _update(self, key, p, g):
        t = p.dtype.type
        g = self.l2(key, p, g)
        st = self.state[key]
        if not st:
            st["sum"] = np.full_like(p, self.initial_accumulator_value)
        s = st["sum"]
        s += np.square(g)
        clr = self.lr / (1 + (self.steps - 1) * self.lr_decay)
        d = np.sqrt(s)
        d += t(self.eps)
        p -= t(clr) * (g / d)


@OPTIMIZERS.register("adamax")
class Adamax(Optimizer):
    """Adamax (Adam with the infinity norm), as ``torch.optim.Adamax``.

    g = grad + weight_decay * p; m = b1 m + (1 - b1) g; u = max(b2 u, |g| + eps);
    p = p - lr / (1 - b1^t) * m / u. Both start at zero.

    Args:
        lr: Learning rate. Default: 0.002.
        betas: [b1, b2]. Default: [0.9, 0.999].
        eps: Added to |g| (> 0, or a parameter with zero gradients divides by zero). Default: 1e-8.
        weight_decay: L2 penalty added to the gradient. Default: 0.
        exclude_bias_and_norm: No weight decay on biases and normalization weights. Default: false.

    References:
        Kingma & Ba 2014, section 7.1, https://arxiv.org/abs/1412.6980;
        https://pytorch.org/docs/stable/generated/torch.optim.Adamax.html
    """

    state_names = ("exp_avg", "exp_inf")

    def __init__(self, params, lr: float = 0.002, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 exclude_bias_and_norm: bool = False, *, norm_keys: Iterable[str] = ()):
        super().__init__(params, lr, weight_decay, exclude_bias_and_norm, norm_keys)
        self.betas = _betas(betas)
        self.eps = check_float("eps", eps, 0.0, low_open=True)

    def _update(self, key, p, g):
        t = p.dtype.type
        b1, b2 = self.betas
        g = self.l2(key, p, g)
        st = self.zero_state(key, p)
        m, u = st["exp_avg"], st["exp_inf"]
        m += t(1 - b1) * (g - m)                   # torch's lerp: b1 m + (1 - b1) g
        u *= t(b2)
        np.maximum(u, np.abs(g) + t(self.eps), out=u)
        p -= t(self.lr / (1 - b1 ** self.steps)) * (m / u)


@OPTIMIZERS.register("nadam")
class NAdam(Optimizer):
    """NAdam (Adam with Nesterov momentum), as ``torch.optim.NAdam``.

    g = grad + weight_decay * p; at step t = 1, 2, ...: mu_t = b1 (1 - 0.5 * 0.96^(t psi))
    with psi = ``momentum_decay``, P_t = mu_1 ... mu_t; m = b1 m + (1 - b1) g;
    v = b2 v + (1 - b2) g^2; d = sqrt(v / (1 - b2^t)) + eps;
    p = p - lr (1 - mu_t) / (1 - P_t) * g / d - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m / d.
    P_t depends on t alone, so it is recomputed from the step count, not stored.

    Args:
        lr: Learning rate. Default: 0.002.
        betas: [b1, b2]. Default: [0.9, 0.999].
        eps: Default: 1e-8.
        weight_decay: L2 penalty added to the gradient. Default: 0.
        momentum_decay: psi (>= 0). Default: 0.004.
        exclude_bias_and_norm: No weight decay on biases and normalization weights. Default: false.

    References:
        Dozat 2016, "Incorporating Nesterov Momentum into Adam", ICLR workshop;
        https://pytorch.org/docs/stable/generated/torch.optim.NAdam.html
    """

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 0.002, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum_decay: float = 0.004, exclude_bias_and_norm: bool = False,
                 *, norm_keys: Iterable[str] = ()):
        super().__init__(params, lr, weight_decay, exclude_bias_and_norm, norm_keys)
        self.betas = _betas(betas)
        self.eps = check_float("eps", eps, 0.0)
        self.momentum_decay = check_float("momentum_decay", momentum_decay, 0.0)
        self._mu_product = (0, 1.0)              # (t, P_t)

    def _mu(self, t: int) -> float:
        return self.betas[0] * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def mu_product(self, t: int) -> float:
        """P_t = mu_1 * ... * mu_t (1 for t = 0), multiplied in step order as torch does."""
        done, product = self._mu_product
        if done > t:
            done, product = 0, 1.0
        for k in range(done + 1, t + 1):
            product *= self._mu(k)
        self._mu_product = (t, product)
        return product

    def _update(self, key, p, g):
        tp = p.dtype.type
        b1, b2 = self.betas
        t = self.steps
        g = self.l2(key, p, g)
        st = self.zero_state(key, p)
        m, v = st["exp_avg"], st["exp_avg_sq"]
        mu, mu_next = self._mu(t), self._mu(t + 1)
        product = self.mu_product(t)
        m += tp(1 - b1) * (g - m)
        v *= tp(b2)
        v += tp(1 - b2) * np.square(g)
        d = v / tp(1 - b2 ** t)
        np.sqrt(d, out=d)
        d += tp(self.eps)
        p -= tp(self.lr * (1 - mu) / (1 - product)) * (g / d)
        p -= tp(self.lr * mu_next / (1 - product * mu_next)) * (m / d)
