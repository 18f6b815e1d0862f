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

Kinks. A central difference that straddles a non-differentiable point (a ReLU or
leaky-ReLU input within h of 0, an ELU input at 0, a max-pool window whose top two values
are within 2h) measures no derivative: at an exact ReLU zero it gives half the slope, and a
correct backward would look broken (relative errors 0.1-0.4). Every layer says which piece
of its definition each output took in the last forward (``Layer.pieces``); an entry whose
pieces, in any layer along the path, differ between the forwards at v + h, v - h and v is
*skipped (kink)* and never judged. When entries are sampled (``max_checks``), each skipped
one is replaced by another unsampled entry, trying at most ``RESAMPLE_TRIES`` times
``max_checks`` entries in all; ``CheckResult.skipped`` counts them. Random inputs almost
never hit a kink; given inputs (a trained model's activations, images with exact zeros,
pooling windows with exact ties) often do.

Precision. The checks need a float64 model and refuse any other (``ValueError``): float32
rounding, divided by 2h, makes a correct dense layer look broken (3e-3). Build the model with
``dtype=np.float64``, or copy a trained model's arrays into such a one (``load_arrays``).

References:
    CS231n, "Gradient checks" (https://cs231n.github.io/neural-networks-3/#gradcheck).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cnncli import assemble, data
from cnncli.config import Config
from cnncli.errors import DataError
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
#: When sampling, at most this many times ``max_checks`` entries are tried per tensor to find
#: ``max_checks`` that straddle no kink (bounds the time on inputs full of kinks).
RESAMPLE_TRIES = 4


@dataclass(frozen=True)
class CheckResult:
    """One checked tensor: which layer ("3 conv2d" or "model"), which tensor, its error.

    ``checked`` entries were compared out of ``size``; ``skipped`` more were left out because
    their central difference straddled a kink. ``max_abs_grad`` is the largest |entry| of the
    analytic and numeric gradients, ``noise`` the rounding noise of one central difference
    (eps * scale / h).
    """

    layer: str
    tensor: str
    rel_error: float
    max_abs_error: float
    checked: int
    size: int
    max_abs_grad: float = 0.0
    noise: float = 0.0
    skipped: int = 0

    @property
    def all_kinks(self) -> bool:
        """Every entry tried straddled a kink: nothing was compared (passes, shown apart)."""
        return self.checked == 0 and self.skipped > 0

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
        deep network's input gradient, whose relative error is that noise over its size). Entries
        skipped at kinks are not judged; a tensor with nothing but kinks passes (``all_kinks``)."""
        return bool(self.rel_error <= tol or self.vanishing or self.within_noise)


def rel_error(a: np.ndarray, n: np.ndarray) -> float:
    """||a - n|| / (||a|| + ||n||), 0 when both are 0."""
    denom = np.linalg.norm(a) + np.linalg.norm(n)
    return float(np.linalg.norm(a - n) / denom) if denom > 0 else 0.0


def numeric_grad(f: Callable[[], tuple[float, list]], v: np.ndarray, idx: np.ndarray, h: float,
                 at_v: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of ``f`` w.r.t. the flat entries ``idx`` of ``v`` (changed in place,
    restored), and which of them straddle a kink.

    ``f()`` returns (value, pieces): the value and each layer's ``pieces()`` after its forward.
    An entry straddles a kink when the pieces at v + h and v - h differ, or differ from ``at_v``
    (the pieces at v) when given.

    Returns:
        (numeric (len(idx),) float64, kinked (len(idx),) bool).

    Raises:
        ValueError: ``v`` is not C-contiguous (its flat view would be a copy, never perturbed).
    """
    if not v.flags.c_contiguous:
        raise ValueError("numeric_grad perturbs v through v.reshape(-1): give a C-contiguous array")
    flat = v.reshape(-1)
    out = np.empty(len(idx), dtype=np.float64)
    kinked = np.zeros(len(idx), dtype=bool)
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        fp, pp = f()
        flat[i] = old - h
        fm, pm = f()
        flat[i] = old
        out[k] = (fp - fm) / (2 * h)
        kinked[k] = not (_same_pieces(pp, pm) and (at_v is None or _same_pieces(pp, at_v)))
    return out, kinked


def _same_pieces(a: list, b: list) -> bool:
    """Every layer took the same pieces (None: a smooth layer)."""
    return all((p is None and q is None) or (p is not None and q is not None and np.array_equal(p, q))
               for p, q in zip(a, b))


def _sample(size: int, max_checks: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_checks is None or size <= max_checks:
        return np.arange(size)
    return np.sort(rng.choice(size, max_checks, replace=False))


def _numeric_off_kinks(f, v, h, max_checks, rng, at_v) -> tuple[np.ndarray, np.ndarray, int]:
    """(entries, their central differences, entries skipped at kinks): the sampled entries,
    each one that straddles a kink replaced by an unsampled one while any are left, trying at
    most RESAMPLE_TRIES * max_checks entries. Draws from ``rng`` only to replace a kink."""
    sampled = _sample(v.size, max_checks, rng)
    num, kinked = numeric_grad(f, v, sampled, h, at_v)
    want, tried, skipped = len(sampled), len(sampled), int(kinked.sum())
    idx, num = sampled[~kinked], num[~kinked]
    if skipped and want < v.size:
        rest = rng.permutation(np.setdiff1d(np.arange(v.size), sampled))
        pos = 0
        while len(idx) < want and pos < len(rest) and tried < RESAMPLE_TRIES * want:
            take = rest[pos:pos + min(want - len(idx), RESAMPLE_TRIES * want - tried)]
            pos, tried = pos + len(take), tried + len(take)
            n, k = numeric_grad(f, v, take, h, at_v)
            idx, num, skipped = np.concatenate([idx, take[~k]]), np.concatenate([num, n[~k]]), skipped + int(k.sum())
    return idx, num, skipped


def _compare(layer: str, tensor: str, analytic: np.ndarray, f, v, h, max_checks, rng,
             scale: float, at_v: list) -> CheckResult:
    """``scale``: the size of the terms ``f`` sums, for its rounding noise eps * scale / h;
    ``at_v``: the pieces of each layer at ``v`` (see :func:`numeric_grad`)."""
    idx, num, skipped = _numeric_off_kinks(f, v, h, max_checks, rng, at_v)
    ana = analytic.reshape(-1)[idx]
    return CheckResult(layer, tensor, rel_error(ana, num), float(np.max(np.abs(ana - num), initial=0.0)),
                       len(idx), v.size,
                       max_abs_grad=float(max(np.max(np.abs(ana), initial=0.0), np.max(np.abs(num), initial=0.0))),
                       noise=EPS * scale / h, skipped=skipped)


def _frozen_rng(model: Model):
    """Return ``restore()``: resets the model's generator so each forward draws the same masks."""
    state = model.rng.bit_generator.state
    return lambda: setattr(model.rng.bit_generator, "state", state)


def _pieces(layers) -> list:
    """Each layer's ``pieces()`` after the last forward."""
    return [layer.pieces() for layer in layers]


def require_float64(model: Model) -> None:
    """Refuse a model whose dtype or parameters are not float64.

    Raises:
        ValueError: Naming the dtype found and how to build a float64 model.
    """
    dtypes = {np.dtype(model.dtype), *(p.dtype for p in model.params().values())}
    if dtypes != {np.dtype(np.float64)}:
        found = ", ".join(sorted(d.name for d in dtypes))
        raise ValueError(f"gradient checks need a float64 model; this one is {found}, whose rounding, divided "
                         f"by 2h, makes correct layers look broken (float32: errors ~1e-3). Build it with "
                         f"dtype=np.float64: cnncli.build_model(cfg, shape, dtype=np.float64); for a trained "
                         f"model, then copy its arrays in: model64.load_arrays(model.params(), model.buffers())")


def _activations(model: Model, x: np.ndarray, restore) -> list[np.ndarray]:
    """The input each layer sees when ``x`` runs through the model in training mode (dropout
    masks drawn as one model forward draws them), each a copy."""
    restore()
    inputs = []
    for layer in model.layers:
        inputs.append(np.array(x, dtype=np.float64, order="C"))   # C order: perturbed through a flat view
        x = layer.forward(x, True)
    return inputs


def check_layers(model: Model, batch_size: int = 4, *, h: float = DEFAULT_STEP,
                 max_checks: int | None = 256, seed: int = 0,
                 inputs: np.ndarray | None = None) -> list[CheckResult]:
    """Check every layer of a float64 ``model``: on its own random input (shape from the
    model), or, given ``inputs`` (N, *model.input_shape), on the activations they produce.

    Returns one result per layer input and per parameter; entries whose central difference
    straddles a kink are skipped (``CheckResult.skipped``).

    Raises:
        ValueError: The model is not float64 (:func:`require_float64`).
    """
    require_float64(model)
    rng = np.random.default_rng(seed)
    results = []
    shapes = [model.input_shape, *model.shapes]
    restore = _frozen_rng(model)
    given = None if inputs is None else _activations(model, inputs, restore)
    for i, layer in enumerate(model.layers):
        name = f"{i} {layer.type_name}"
        x = rng.standard_normal((batch_size, *shapes[i])) if given is None else given[i]
        restore()
        y = layer.forward(x, True)
        at_x = [layer.pieces()]
        r = rng.standard_normal(y.shape)
        scale = float(np.sum(np.abs(y * r)))
        dx = layer.backward(r)
        grads = {k: g.copy() for k, g in layer.grads.items()}

        def f(layer=layer, x=x, r=r):
            restore()
            return float(np.sum(layer.forward(x, True) * r)), [layer.pieces()]

        results.append(_compare(name, "input", dx, f, x, h, max_checks, rng, scale, at_x))
        for pname, p in layer.params.items():
            results.append(_compare(name, pname, grads[pname], f, p, h, max_checks, rng, scale, at_x))
    return results


def check_model(model: Model, batch_size: int = 4, *, h: float = DEFAULT_STEP,
                max_checks: int | None = 256, seed: int = 0,
                inputs: np.ndarray | None = None) -> list[CheckResult]:
    """Check the whole float64 model: d loss / d input and d loss / d every parameter,
    loss = mean softmax cross-entropy of a random batch (or of ``inputs``, (N, *input_shape))
    with random labels. An entry is skipped when its perturbation moves any layer along the
    path across a kink (``CheckResult.skipped``).

    Raises:
        ValueError: The model is not float64 (:func:`require_float64`).
    """
    require_float64(model)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch_size, *model.input_shape)) if inputs is None else np.array(inputs, np.float64, order="C")
    y = rng.integers(0, model.output_shape[0], len(x))
    restore = _frozen_rng(model)

    def f():
        restore()
        return softmax_cross_entropy(model.forward(x, True), y)[0], _pieces(model.layers)

    restore()
    logits = model.forward(x, True)
    at_x = _pieces(model.layers)
    loss, dlogits = softmax_cross_entropy(logits, y)
    scale = max(abs(float(loss)), float(np.max(np.abs(logits))))
    dx = model.backward(dlogits)
    grads = {k: g.copy() for k, g in model.grads().items()}
    results = [_compare("model", "input", dx, f, x, h, max_checks, rng, scale, at_x)]
    for key, p in model.params().items():
        i, pname = key.split(".", 1)
        results.append(_compare(f"model: {i} {model.layers[int(i)].type_name}", pname, grads[key],
                                f, p, h, max_checks, rng, scale, at_x))
    return results


def read_inputs(path: str | Path, cfg: Config, input_shape: tuple[int, ...], limit: int | None = None) -> np.ndarray:
    """The check inputs in a ``.npy`` file, as float64 (N, *input_shape).

    The array is one sample ``input_shape`` or a batch (N, *input_shape); only the first
    ``limit`` samples are kept. Floating-point values are the model's input as they are
    (normalized, or a layer's activations); uint8 values are pixels, normalized as training
    normalizes them: (v/255 - data.mean) / data.std (an ``auto`` mean/std is computed from
    the training data, as ``train`` does).

    Raises:
        DataError: Naming the file: not a readable .npy, another dtype, another shape,
            non-finite values, or too few values per channel for a batchnorm layer.
    """
    from cnncli.images import _read_npy

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found (or not a regular file); --input takes a .npy array saved with np.save")
    a = _read_npy(path)
    shape = tuple(input_shape)
    if a.shape == shape:
        a = a[None]
    if a.ndim != len(shape) + 1 or a.shape[1:] != shape or len(a) == 0:
        raise DataError(f"{path}: an array of shape {a.shape}, but the model takes {shape}: give one sample "
                        f"{shape} or a batch (N, {', '.join(map(str, shape))})")
    a = a[:limit]
    if a.dtype == np.uint8:
        return _normalized(a, cfg, path)
    if a.dtype.kind != "f":
        raise DataError(f"{path}: holds {a.dtype} values; give the model's input as floats (normalized, as the "
                        f"model sees it) or images as uint8 pixels 0..255 (normalized as training does)")
    if not np.isfinite(a).all():
        raise DataError(f"{path}: holds NaN or infinite values; a gradient check needs finite inputs")
    return a.astype(np.float64)


def _normalized(a: np.ndarray, cfg: Config, path: Path) -> np.ndarray:
    """uint8 pixels -> (v * scale - mean) / std in float64, with the config's ``data.scale``/``mean``/``std``."""
    mean, std = cfg.data.mean, cfg.data.std
    if "auto" in (mean, std):
        d = data.prepare_data(cfg)
        mean, std = d.mean, d.std
    try:
        return data.normalize_batch(data.pixel_lut(mean, std, np.float64, cfg.data.scale), a)
    except ValueError as e:
        raise DataError(f"{path}: uint8 pixels cannot be normalized with data.mean/data.std: {e}") from None


def _check_batch(model: Model, n: int, path: Path) -> None:
    """Refuse a batch too small for a layer that needs two values per channel in training."""
    for i, (layer, shape) in enumerate(zip(model.layers, [model.input_shape, *model.shapes])):
        if layer.normalizes_over_batch and n * int(np.prod(shape[1:])) < 2:
            raise DataError(f"{path}: {n} sample(s), but layer {i} ({layer.type_name}) needs two or more values per "
                            f"channel in training; give two or more samples")


def run(cfg: Config, batch_size: int = 4, max_checks: int | None = 256, seed: int = 0,
        inputs: str | Path | None = None) -> list[CheckResult]:
    """Gradient-check the model of a config: every layer (:func:`check_layers`), then the
    whole model's loss (:func:`check_model`), in float64.

    Args:
        cfg: A loaded :class:`cnncli.config.Config`; the input shape comes from
            ``model.input_shape`` or the training data.
        batch_size: Samples in the check batch (2 or more for batchnorm); with ``inputs``, the
            most samples taken from the file (its first ones). Default: 4.
        max_checks: Entries checked per tensor, sampled when larger (None: all). Default: 256.
        seed: Seed of the random inputs, upstream gradients and labels. Default: 0.
        inputs: A ``.npy`` file of inputs to check at instead of random ones (:func:`read_inputs`).

    Returns:
        One :class:`CheckResult` per layer input and parameter, then per model input and
        parameter; judge them with ``passed(tol)`` (``DEFAULT_TOL`` by default).

    Raises:
        ConfigError: A layer or shape problem in the config.
        DataError: The input shape must come from the data and the data cannot be read, or
            ``inputs`` cannot be used (:func:`read_inputs`).
    """
    model = assemble.build_model(cfg, data.input_shape(cfg), dtype=np.float64)
    x = None
    if inputs is not None:
        x = read_inputs(inputs, cfg, model.input_shape, batch_size)
        _check_batch(model, len(x), Path(inputs))
    results = check_layers(model, batch_size, max_checks=max_checks, seed=seed, inputs=x)
    return results + check_model(model, batch_size, max_checks=max_checks, seed=seed, inputs=x)
