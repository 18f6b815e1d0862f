"""Numerical gradient checks: analytic backward passes against central differences.

For each layer, on a random continuous input x and a random upstream gradient R,
the analytic d/dx and d/dparam of f = sum(layer(x) * R) are compared with
(f(v + h) - f(v - h)) / 2h; for the whole model, the same is done for the mean
softmax cross-entropy of a small random batch. Everything runs in float64, in
training mode, with dropout masks held fixed (the generator state is restored
before every forward).

The error of one tensor is the relative error of norms,
||analytic - numeric|| / (||analytic|| + ||numeric||) (0 when both vanish), over the
checked entries (all, or ``max_checks`` sampled ones). A tensor passes when that is
<= tol. In float64 with h = 1e-6 a correct backward gives ~1e-8 or less; a wrong one
gives 1e-3 to 1.

The one exception is a gradient that is zero in exact arithmetic (a conv bias before
batchnorm): both sides come out as rounding noise, whose ratio is ~1. Such a tensor is
*vanishing*, and passes whatever ``tol``, when every analytic and numeric entry is at
most ``ZERO_NOISE`` times the rounding noise of a central difference, eps * scale / h
(eps = 2.2e-16; scale = sum |layer(x) * R| for a layer, the loss or the largest
|logit| for the model: the size of the terms f is summed from). On configs/tiny.yaml
that noise is 5e-10 (model) to 1e-7 (layers) and the non-zero gradients have entries of
1e-2 and more; the zero ones (conv biases before batchnorm, here and in mnist.yaml) come
out at most ~2e-10, one rounding step of the loss over 2h. A tensor with any entry above
the bound is judged by its relative error, unless every entry of analytic - numeric
is itself within ZERO_NOISE times the noise (a small gradient, such as a deep network's
input gradient, whose relative error is then that noise over its size): it passes as
within noise, since no central difference can resolve a smaller difference.

References:
    CS231n, "Gradient checks" (https://cs231n.github.io/neural-networks-3/#gradcheck).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from cnncli import assemble, data
from cnncli.config import Config
from cnncli.losses import softmax_cross_entropy
from cnncli.model import Model

DEFAULT_TOL = 1e-6
DEFAULT_STEP = 1e-6
EPS = float(np.finfo(np.float64).eps)
#: A tensor whose analytic and numeric entries are all within this many times the rounding
#: noise of a central difference (eps * scale / h) is a vanishing gradient: zero in exact
#: arithmetic (a conv bias followed by batchnorm), left as float64 noise, which a ratio
#: would inflate to ~1. It passes whatever its relative error.
ZERO_NOISE = 10.0


@dataclass(frozen=True)
class CheckResult:
    """One checked tensor: which layer ("3 conv2d" or "model"), which tensor, its error.

    ``max_abs_grad`` is the largest |entry| of the analytic and numeric gradients,
    ``noise`` the rounding noise of one central difference (eps * scale / h).
    """

    layer: str
    tensor: str
    rel_error: float
    max_abs_error: float
    checked: int
    size: int
    max_abs_grad: float = 0.0
    noise: float = 0.0

    @property
    def vanishing(self) -> bool:
        """Both gradients are numerically zero: every entry within ZERO_NOISE * noise."""
        return bool(self.max_abs_grad <= ZERO_NOISE * self.noise)

    @property
    def within_noise(self) -> bool:
        """Every entry of analytic - numeric is within ZERO_NOISE * noise: the difference is
        below what the central difference itself can resolve."""
        return bool(self.max_abs_error <= ZERO_NOISE * self.noise)

    def passed(self, tol: float) -> bool:
        """rel_error <= tol; or a vanishing gradient (whose relative error means nothing); or a
        difference within the central difference's rounding noise (a small gradient, such as a
        deep network's input gradient, whose relative error is that noise over its size)."""
        return bool(self.rel_error <= tol or self.vanishing or self.within_noise)


def rel_error(a: np.ndarray, n: np.ndarray) -> float:
    """||a - n|| / (||a|| + ||n||), 0 when both are 0."""
    denom = np.linalg.norm(a) + np.linalg.norm(n)
    return float(np.linalg.norm(a - n) / denom) if denom > 0 else 0.0


def numeric_grad(f: Callable[[], float], v: np.ndarray, idx: np.ndarray, h: float) -> np.ndarray:
    """Central differences of ``f`` w.r.t. the flat entries ``idx`` of ``v`` (changed in place, restored)."""
    flat = v.reshape(-1)
    out = np.empty(len(idx), dtype=np.float64)
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        out[k] = (fp - fm) / (2 * h)
    return out


def _sample(size: int, max_checks: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_checks is None or size <= max_checks:
        return np.arange(size)
    return np.sort(rng.choice(size, max_checks, replace=False))


def _compare(layer: str, tensor: str, analytic: np.ndarray, f, v, h, max_checks, rng,
             scale: float) -> CheckResult:
    """``scale``: the size of the terms ``f`` sums, for its rounding noise eps * scale / h."""
    idx = _sample(v.size, max_checks, rng)
    num = numeric_grad(f, v, idx, h)
    ana = analytic.reshape(-1)[idx]
    return CheckResult(layer, tensor, rel_error(ana, num), float(np.max(np.abs(ana - num), initial=0.0)),
                       len(idx), v.size,
                       max_abs_grad=float(max(np.max(np.abs(ana), initial=0.0), np.max(np.abs(num), initial=0.0))),
                       noise=EPS * scale / h)


def _frozen_rng(model: Model):
    """Return ``restore()``: resets the model's generator so each forward draws the same masks."""
    state = model.rng.bit_generator.state
    return lambda: setattr(model.rng.bit_generator, "state", state)


def check_layers(model: Model, batch_size: int = 4, *, h: float = DEFAULT_STEP,
                 max_checks: int | None = 256, seed: int = 0) -> list[CheckResult]:
    """Check every layer of a float64 ``model`` on its own random input (shape from the model).

    Returns one result per layer input and per parameter.
    """
    rng = np.random.default_rng(seed)
    results = []
    shapes = [model.input_shape, *model.shapes]
    restore = _frozen_rng(model)
    for i, layer in enumerate(model.layers):
        name = f"{i} {layer.type_name}"
        x = rng.standard_normal((batch_size, *shapes[i]))
        restore()
        y = layer.forward(x, True)
        r = rng.standard_normal(y.shape)
        scale = float(np.sum(np.abs(y * r)))
        dx = layer.backward(r)
        grads = {k: g.copy() for k, g in layer.grads.items()}

        def f(layer=layer, x=x, r=r):
            restore()
            return float(np.sum(layer.forward(x, True) * r))

        results.append(_compare(name, "input", dx, f, x, h, max_checks, rng, scale))
        for pname, p in layer.params.items():
            results.append(_compare(name, pname, grads[pname], f, p, h, max_checks, rng, scale))
    return results


def check_model(model: Model, batch_size: int = 4, *, h: float = DEFAULT_STEP,
                max_checks: int | None = 256, seed: int = 0) -> list[CheckResult]:
    """Check the whole model: d loss / d input and d loss / d every parameter,
    loss = mean softmax cross-entropy of a random batch with random labels."""
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch_size, *model.input_shape))
    y = rng.integers(0, model.output_shape[0], batch_size)
    restore = _frozen_rng(model)

    def f():
        restore()
        return softmax_cross_entropy(model.forward(x, True), y)[0]

    restore()
    logits = model.forward(x, True)
    loss, dlogits = softmax_cross_entropy(logits, y)
    scale = max(abs(float(loss)), float(np.max(np.abs(logits))))
    dx = model.backward(dlogits)
    grads = {k: g.copy() for k, g in model.grads().items()}
    results = [_compare("model", "input", dx, f, x, h, max_checks, rng, scale)]
    for key, p in model.params().items():
        i, pname = key.split(".", 1)
        results.append(_compare(f"model: {i} {model.layers[int(i)].type_name}", pname, grads[key],
                                f, p, h, max_checks, rng, scale))
    return results


def run(cfg: Config, batch_size: int = 4, max_checks: int | None = 256, seed: int = 0) -> list[CheckResult]:
    """Gradient-check the model of a config: every layer (:func:`check_layers`), then the
    whole model's loss (:func:`check_model`), in float64.

    Args:
        cfg: A loaded :class:`cnncli.config.Config`; the input shape comes from
            ``model.input_shape`` or the training data.
        batch_size: Samples in the check batch (2 or more for batchnorm). Default: 4.
        max_checks: Entries checked per tensor, sampled when larger (None: all). Default: 256.
        seed: Seed of the random inputs. Default: 0.

    Returns:
        One :class:`CheckResult` per layer input and parameter, then per model input and
        parameter; judge them with ``passed(tol)`` (``DEFAULT_TOL`` by default).

    Raises:
        ConfigError: A layer or shape problem in the config.
        DataError: The input shape must come from the data and the data cannot be read.
    """
    model = assemble.build_model(cfg, data.input_shape(cfg), dtype=np.float64)
    results = check_layers(model, batch_size, max_checks=max_checks, seed=seed)
    return results + check_model(model, batch_size, max_checks=max_checks, seed=seed)
