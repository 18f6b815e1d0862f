"""The fit loop. It emits events and never prints (``report.py`` draws them).

Flow: ``prepare_data`` -> ``build_model`` -> ``fit(..., on_event=reporter)``.
One batch loop (:func:`run_batches`) serves training and evaluation.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnncli import checkpoint
from cnncli.config import Config
from cnncli.datasets import Dataset
from cnncli.errors import (BatchError, CnncliError, ConfigError, DataError, DivergedError, OutputError,
                           Problem, TrainingError)
from cnncli.losses import softmax_cross_entropy
from cnncli.metrics import confusion_matrix
from cnncli.model import Model, build
from cnncli.optim import OPTIMIZERS, Optimizer
from cnncli.schedules import Schedule


# ------------------------------------------------------------------ events

@dataclass(frozen=True)
class RunStarted:
    run_dir: Path
    epochs: int
    batches_per_epoch: int
    n_train: int
    n_val: int
    n_test: int
    num_params: int
    start_epoch: int = 0          # epochs already finished (a resumed run)
    changes: tuple[str, ...] = ()  # settings that differ from the resumed checkpoint's run


@dataclass(frozen=True)
class EpochStarted:
    epoch: int
    epochs: int


@dataclass(frozen=True)
class BatchEnded:
    epoch: int
    batch: int
    batches: int
    loss: float          # running mean over the epoch so far
    accuracy: float      # running mean over the epoch so far
    images_per_s: float
    lr: float


@dataclass(frozen=True)
class EpochEnded:
    epoch: int
    epochs: int
    metrics: dict[str, float]
    seconds: float
    is_best: bool
    images_per_s: float = 0.0     # training throughput (timing stays out of metrics.jsonl)


@dataclass(frozen=True)
class RunEnded:
    run_dir: Path
    best_epoch: int
    best_path: Path
    last_path: Path
    test: "EvalResult | None"
    seconds: float
    stopped_early: str | None = None   # why early stopping ended the run, if it did


Event = Any
EventHandler = Callable[[Event], None]


class TrainingInterrupted(CnncliError):
    """Ctrl-C during training; the state was saved to ``path``. ``resume_from`` is the
    checkpoint that continues the run exactly (``last.npz``), None if no epoch finished."""

    exit_code = 130

    def __init__(self, message: str, path: Path, resume_from: Path | None = None):
        super().__init__(message)
        self.path = path
        self.resume_from = resume_from


# ------------------------------------------------------------------ data

@dataclass
class Data:
    """The three splits; ``val`` is carved from the end of the training file (as Keras's
    ``validation_split``), ``test`` is the test file. ``num_classes`` is ``data.num_classes``
    or, when not given, the largest label + 1 (or the number of class names, when known).

    ``mean``/``std`` are the normalization in force (``data.mean``/``data.std``, or computed
    from ``train`` for ``auto``); ``classes`` the class names when known; ``resolved`` the
    data-section values found while reading (absolute paths, format, classes) that
    :func:`resolved_config` records. Left None, they are filled from the config."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None
    resolved: dict[str, Any] = field(default_factory=dict)


def resolve_data_path(path: str) -> Path:
    """Relative data paths are taken from the current directory."""
    return Path(path).expanduser().resolve()


def prepare_data(cfg: Config) -> Data:
    """Load the training (and test) split the data section points at, carve the validation
    split, and settle the class count and the normalization.

    Raises:
        DataError: For any problem with the files (see :mod:`cnncli.formats`), labels beyond
            ``data.num_classes``, or a split that leaves no training data.
        ConfigError: A per-channel ``data.mean``/``data.std`` whose length is not the images'
            channel count.
    """
    from cnncli import formats

    d = cfg.data
    loaded = formats.load(d, ("train", "test"), d.train_limit, d.test_limit)
    full, test = loaded.train, loaded.test
    n = len(full)
    n_val = d.val_split if isinstance(d.val_split, int) else int(round(n * d.val_split))
    if n_val >= n:
        raise DataError(f"data.val_split {d.val_split} keeps {n_val} of the {n} training images for "
                        f"validation, leaving none to train on. Lower data.val_split.")
    train = Dataset(full.images[:n - n_val], full.labels[:n - n_val], full.source)
    val = Dataset(full.images[n - n_val:], full.labels[n - n_val:], full.source + " (validation)") \
        if n_val else None
    if test is not None and test.image_shape != train.image_shape:
        raise DataError(f"{test.source}: test images are {test.image_shape}, training images ({full.source}) "
                        f"{train.image_shape}; both splits must come from the same dataset")
    found = max(full.num_classes, test.num_classes if test is not None else 0)
    if d.num_classes is not None and found > d.num_classes:
        split = full if full.num_classes == found else test
        where = formats.label_where(split, int(np.argmax(split.labels == found - 1)))
        raise DataError(f"{where}: label {found - 1} is outside [0, {d.num_classes}) "
                        f"(data.num_classes is {d.num_classes}). Raise data.num_classes or check the labels file.")
    names = loaded.classes
    if names is not None and d.num_classes is not None and len(names) > d.num_classes:
        raise DataError(f"{loaded.where}: {len(names)} classes ({', '.join(names[:12])}{', ...' if len(names) > 12 else ''}) "
                        f"but data.num_classes is {d.num_classes}. Raise or remove data.num_classes.")
    num_classes = d.num_classes or max(found, len(names) if names is not None else 0)
    mean, std = resolve_normalization(cfg, train)
    return Data(train, val, test, num_classes, mean=mean, std=std, classes=names, resolved=loaded.resolved)


def resolve_normalization(cfg: Config, train: Dataset) -> tuple[float | tuple[float, ...], float | tuple[float, ...]]:
    """``data.mean``/``data.std`` as numbers: given ones checked against the channel count,
    ``auto`` ones computed from ``train`` (the images actually trained on, validation split
    excluded): per channel, mean and population std of pixel/255. A channel whose pixels
    are all equal gets std 1 (as scikit-learn's StandardScaler does). One channel gives
    plain numbers, several give one per channel.

    Raises:
        ConfigError: A list whose length is neither 1 nor the channel count.
    """
    from cnncli.formats import pixel_stats

    d = cfg.data
    channels = train.image_shape[0]
    stats = None
    out = []
    for key in ("mean", "std"):
        v = getattr(d, key)
        if v == "auto":
            if stats is None:
                stats = pixel_stats(train.images)
            values = stats[0] if key == "mean" else [s if s > 0 else 1.0 for s in stats[1]]
        else:
            values = list(v) if isinstance(v, (tuple, list)) else [v]
            if len(values) not in (1, channels):
                raise ConfigError([Problem(f"data.{key}", f"has {len(values)} values but the images have {channels} "
                                           f"channel{'s' if channels > 1 else ''}; give one number, one per "
                                           f"channel, or 'auto'")], cfg.source)
        out.append(float(values[0]) if len(values) == 1 else tuple(float(x) for x in values))
    return out[0], out[1]


def resolved_config(cfg: Config, data: Data) -> Config:
    """``cfg`` with its data section as found: the normalization numbers in force (computed for
    ``auto``), absolute paths, the format read and the class names. This is what the run
    folder's config.yaml and every checkpoint record, so eval and predict use the same numbers."""
    import dataclasses

    mean, std = data.mean, data.std
    if mean is None or std is None:
        mean, std = resolve_normalization(cfg, data.train)
    changes: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.resolved.items()}
    changes.update(mean=mean, std=std)
    if cfg.data.path is not None and "path" not in changes:
        changes["path"] = str(resolve_data_path(cfg.data.path))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **changes))


def pixel_lut(mean: float | tuple[float, ...], std: float | tuple[float, ...], dtype=np.float32) -> np.ndarray:
    """The normalized values (v/255 - mean)/std of a uint8 pixel v: a batch is one gather.

    Returns:
        ``(256,)`` for one mean and std; ``(C, 256)`` when either is a per-channel list.

    Raises:
        ValueError: If mean or std is not numeric (``auto`` must be resolved first).
    """
    if isinstance(mean, str) or isinstance(std, str):
        raise ValueError(f"normalization {mean!r}/{std!r} is not resolved to numbers")
    m = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    s = np.atleast_1d(np.asarray(std, dtype=np.float64))
    levels = np.arange(256, dtype=np.float64) / 255.0
    if m.size == 1 and s.size == 1:
        return ((levels - m[0]) / s[0]).astype(dtype)
    return ((levels[None, :] - m[:, None]) / s[:, None]).astype(dtype)


def normalize_batch(lut: np.ndarray, images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 images (N, C, H, W) -> normalized floats through ``lut`` (see :func:`pixel_lut`),
    written into ``out`` when given. A per-channel ``lut`` (C, 256) gathers each channel
    from its own row."""
    if lut.ndim == 1:
        return np.take(lut, images, out=out)
    if out is None:
        out = np.empty(images.shape, dtype=lut.dtype)
    if lut.shape[0] != images.shape[1]:
        raise ValueError(f"normalization has {lut.shape[0]} channels, the images {images.shape[1]}")
    for c in range(images.shape[1]):
        np.take(lut[c], images[:, c], out=out[:, c])
    return out


# ------------------------------------------------------------------ model

def input_shape(cfg: Config) -> tuple[int, ...]:
    """``model.input_shape``, or the image shape of the training file when it is not given.

    Raises:
        DataError: If the shape must come from the data and the data cannot be read.
    """
    from cnncli import formats

    if cfg.model.input_shape is not None:
        return tuple(cfg.model.input_shape)
    return formats.load(cfg.data, ("train",), train_limit=1).train.image_shape


def make_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for (weights + dropout, shuffling) from one seed."""
    model_ss, shuffle_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_ss), np.random.default_rng(shuffle_ss)


def make_augment_rng(seed: int) -> np.random.Generator:
    """The data-augmentation generator: the third child of the run seed (the first two are
    :func:`make_rngs`'s, unchanged by it)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])


def build_model(cfg: Config, input_shape: tuple[int, ...] | None = None, *, dtype=np.float32,
                rng: np.random.Generator | None = None, num_classes: int | None = None) -> Model:
    """Build the configured model for ``input_shape`` (or ``model.input_shape``).

    Raises:
        ConfigError: A layer/shape problem, an input shape that disagrees with the data,
            or fewer outputs than the data has classes.
    """
    declared = cfg.model.input_shape
    if declared is not None and input_shape is not None and tuple(declared) != tuple(input_shape):
        raise ConfigError([Problem("model.input_shape", f"is {list(declared)} but the dataset's images "
                                   f"are {list(input_shape)}. Fix it or remove it (it is inferred from the data).")],
                          cfg.source)
    shape = input_shape or declared
    if shape is None:
        raise ConfigError([Problem("model.input_shape", "unknown: give it as [C, H, W]")], cfg.source)
    if rng is None:
        rng = make_rngs(cfg.train.seed)[0]
    try:
        model = build(list(cfg.model.layers), shape, dtype=dtype, rng=rng)
    except ConfigError as e:
        raise ConfigError(e.problems, cfg.source) from None
    out = model.output_shape
    last = cfg.model.layers[-1]
    if len(out) != 1:
        raise ConfigError([Problem(last.path, f"the model ends with shape {out}; it must end with "
                                   f"one logit per class, e.g. flatten then linear: {{out_features: 10}}",
                                   last.line)], cfg.source)
    if num_classes is not None and out[0] != num_classes:
        hint = f"set out_features: {num_classes}"
        if out[0] > num_classes and cfg.data.num_classes is None:
            hint += f" (or data.num_classes: {out[0]} if some classes are missing from this data)"
        raise ConfigError([Problem(last.path, f"the model has {out[0]} outputs but the data has "
                                   f"{num_classes} classes; {hint}", last.line)], cfg.source)
    return model


def batchnorm_index(model: Model) -> int | None:
    """Index of the first batchnorm layer that sees one value per channel per image (features
    (N, F), or 1x1 maps): in training it needs batches of two or more, as PyTorch's "expected
    more than 1 value per channel when training". None if there is no such layer."""
    shapes = [model.input_shape, *model.shapes]
    return next((i for i, layer in enumerate(model.layers)
                 if "batchnorm" in layer.type_name and math.prod(shapes[i][1:]) == 1), None)


def _check_finite(model: Model) -> None:
    """Raise DivergedError naming the first parameter or buffer that holds NaN or infinity
    (batchnorm's running statistics can overflow while the loss, computed with batch
    statistics, stays finite)."""
    for kind, arrays in (("parameter", model.params()), ("buffer", model.buffers())):
        for key, a in arrays.items():
            if not np.isfinite(a).all():
                e = DivergedError(f"{kind} {key} became NaN or infinite by the end of the epoch")
                e.end_of_epoch = True
                raise e


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else free
    physical pages), or None when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_batch(model: Model, batch_size: int, what: str = "train.batch_size", source: str | None = None) -> None:
    """Refuse a training batch size the model cannot take, before anything is allocated or
    written: 1 when a batchnorm would see one value per channel (:func:`batchnorm_index`, as
    PyTorch's "expected more than 1 value per channel when training"), or a batch whose
    activations alone (:meth:`Model.training_bytes_per_image`) exceed the memory available
    now (on Linux such a batch is not refused by the allocator but killed by the
    out-of-memory killer halfway through). ``what`` names the setting (``train.batch_size``
    or the flag that set it), ``source`` the config file when it is the config's.

    Raises:
        ConfigError: Batch size 1 with such a batchnorm, naming ``what`` and the layer.
        BatchError: Too large a batch, with the estimate, the memory available and the
            largest batch that fits.
    """
    i = batchnorm_index(model)
    if i is not None and batch_size < 2:
        raise ConfigError([Problem(what, f"is 1, but model.layers[{i}] (batchnorm) then has one value per channel "
                                         f"in training (no batch statistics); use 2 or more")], source)
    avail = available_memory()
    per_image = model.training_bytes_per_image()
    if avail is None or per_image * batch_size <= avail:
        return
    fits = avail // per_image

    def size(b: int) -> str:
        return f"{b / 2**30:,.1f} GiB" if b >= 2**30 else f"{b / 2**20:,.0f} MiB"
    raise BatchError(f"a batch of {batch_size:,} images does not fit in memory: its activations need about "
                     f"{size(per_image * batch_size)} and {size(avail)} is available; "
                     f"use a smaller {what}" + (f" (at most about {fits:,})" if fits >= 1 else ""))


def norm_param_keys(model: Model) -> set[str]:
    """Keys of the parameters of normalization layers (batchnorm ``weight`` and ``bias``)."""
    return {f"{i}.{n}" for i, layer in enumerate(model.layers) if "norm" in layer.type_name
            for n in layer.params}


def make_optimizer(cfg: Config, model: Model) -> Optimizer:
    """The configured optimizer over ``model.params()`` (``exclude_bias_and_norm`` learns the
    normalization layers' keys from the model)."""
    o = cfg.train.optimizer
    return OPTIMIZERS[o.type](model.params(), **o.options, norm_keys=norm_param_keys(model))


def make_schedule(cfg: Config, base_lr: float, n_train: int, has_val: bool = True) -> Schedule:
    """The configured learning-rate schedule for ``n_train`` training images (a ``val_*``
    monitor reads ``train_*`` when ``has_val`` is false)."""
    from cnncli import schedules
    from cnncli.callbacks import resolve_monitor

    s = cfg.train.schedule
    options = dict(s.options)
    if "monitor" in options:
        options["monitor"] = resolve_monitor(options["monitor"], has_val)
    return schedules.make_schedule(s.type, options, base_lr, cfg.train.epochs,
                                   schedules.steps_per_epoch(n_train, cfg.train.batch_size))


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> tuple[dict[str, np.ndarray], float]:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``,
    as ``torch.nn.utils.clip_grad_norm_``: coef = max_norm / (total_norm + 1e-6), applied
    only when coef < 1. The norm is accumulated in float64.

    Args:
        grads: ``{key: array}``; not modified.
        max_norm: > 0.

    Returns:
        (grads, total_norm): scaled copies (or ``grads`` itself when no scaling is needed, or
        when the norm is not finite: the NaN then shows up as a diverged loss).
    """
    sq = 0.0
    for g in grads.values():
        a = g.reshape(-1).astype(np.float64, copy=False)
        sq += float(a @ a)
    total = math.sqrt(sq)
    coef = max_norm / (total + 1e-6)
    if not math.isfinite(total) or coef >= 1.0:
        return grads, total
    return {k: g * g.dtype.type(coef) for k, g in grads.items()}, total


# ------------------------------------------------------------------ the batch loop

@dataclass
class EvalResult:
    """Mean loss, accuracy, predictions and the confusion matrix of one pass over a split."""

    loss: float
    accuracy: float
    labels: np.ndarray
    preds: np.ndarray
    num_classes: int
    confusion: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "accuracy": self.accuracy, "n": int(self.labels.size),
                "confusion_matrix": self.confusion.tolist()}


def run_batches(model: Model, ds: Dataset, batch_size: int, lut: np.ndarray, *, training: bool,
                order: np.ndarray | None = None, optimizer: Optimizer | None = None,
                label_smoothing: float = 0.0, on_batch: Callable[[int, int, float, float], None] | None = None,
                keep_preds: bool = False, augment: Callable[[np.ndarray], np.ndarray] | None = None):
    """One pass over ``ds`` in ``order``: forward (and backward + step when training).

    Each batch is gathered from the uint8 images and normalized through ``lut`` into a
    reused float buffer. In training, a last batch of a single image is dropped (batchnorm
    cannot normalize one value per feature). ``on_batch(batch_index, n_batches, running_loss, running_acc)``
    is called after each batch. ``augment`` (training only) maps each batch's uint8 images
    (N, C, H, W) to augmented ones of the same shape before normalization.

    Returns:
        (mean_loss, accuracy, preds or None).

    Raises:
        DivergedError: If the loss becomes NaN or infinite.
        TrainingError: If a layer refuses a batch.
    """
    n = len(ds)
    order = np.arange(n) if order is None else order
    if training and n > batch_size and n % batch_size == 1:
        # a last batch of one image would break batchnorm (one value per feature); drop it, as
        # DataLoader(drop_last=True) would, but only then: every other image is still used
        order = order[:-1]
        n -= 1
    n_batches = math.ceil(n / batch_size)
    buf = np.empty((min(batch_size, n), *ds.image_shape), dtype=lut.dtype)
    loss_sum, correct, seen = 0.0, 0, 0
    preds = np.empty(n, dtype=np.int64) if keep_preds else None
    # overflow shows up as a non-finite loss, which is reported below; numpy need not warn
    with np.errstate(all="ignore"):
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            x = buf[:len(idx)]
            images = ds.images[idx]
            if augment is not None:
                images = augment(images)
            normalize_batch(lut, images, out=x)
            y = ds.labels[idx]
            try:
                logits = model.forward(x, training=training)
            except ValueError as e:          # e.g. batchnorm refusing a batch of one in training
                raise BatchError(f"batch {b + 1} of {len(idx)} images: {e}") from None
            except MemoryError:
                raise BatchError(f"batch {b + 1} of {len(idx)} images does not fit in memory; lower "
                                    f"train.batch_size or train.eval_batch_size") from None
            loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
            if not math.isfinite(loss):
                raise DivergedError(f"the loss became {loss} at batch {b + 1}")
            if training:
                model.backward(dlogits, input_grad=False)
                optimizer.step(model.grads())
            p = logits.argmax(axis=1)
            if keep_preds:
                preds[seen:seen + len(idx)] = p
            loss_sum += loss * len(idx)
            correct += int((p == y).sum())
            seen += len(idx)
            if on_batch is not None:
                on_batch(b, n_batches, loss_sum / seen, correct / seen)
    return loss_sum / max(seen, 1), correct / max(seen, 1), preds


def evaluate(model: Model, ds: Dataset, batch_size: int, lut: np.ndarray,
             num_classes: int | None = None) -> EvalResult:
    """Evaluate ``model`` (evaluation mode) on all of ``ds`` in file order."""
    loss, acc, preds = run_batches(model, ds, batch_size, lut, training=False, keep_preds=True)
    k = num_classes or model.output_shape[0]
    return EvalResult(loss, acc, ds.labels, preds, k, confusion_matrix(ds.labels, preds, k))


# ------------------------------------------------------------------ run folder

#: What a run writes into its folder (removed first by ``--overwrite``).
RUN_FILES = ("config.yaml", "metrics.jsonl", "timing.jsonl", "best.npz", "last.npz", "interrupted.npz")


def new_run_dir(base: str | Path, overwrite: bool = False) -> Path:
    """``base`` if it is free (or ``overwrite``), else the first free ``base-2``, ``base-3``, ...

    A run folder is never overwritten silently (Ultralytics' ``exp2`` rule). With
    ``overwrite`` the previous run's files (config, checkpoints, metrics) are removed first,
    so the folder never mixes two runs.

    Raises:
        CnncliError: If ``base`` is an existing file, or the folder cannot be created or written.
    """
    base = Path(base)

    def taken(p: Path) -> bool:
        return p.exists() and (not p.is_dir() or any(p.iterdir()))

    path = base
    try:
        if base.exists() and not base.is_dir():
            raise OutputError(f"{base}: exists and is not a folder; choose a run folder with --out")
        k = 1
        while not overwrite and taken(path):
            k += 1
            path = base.with_name(f"{base.name}-{k}")
        path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in RUN_FILES:
                (path / name).unlink(missing_ok=True)
            for old in path.glob("epoch_*.npz"):
                old.unlink(missing_ok=True)
            for tmp in path.glob(".*.tmp"):     # left by a run killed while saving
                tmp.unlink(missing_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"{path}: cannot write the run folder ({e.strerror or e}). "
                          f"Choose another with --out.") from None
    return path


def _write_text_atomic(path: Path, text: str) -> None:
    checkpoint.atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ------------------------------------------------------------------ fit

class _Stepper:
    """What :func:`run_batches` calls as its optimizer: clip the gradients' global norm, set
    the scheduled lr for this step, then step the optimizer (so the batch loop needs to know
    neither schedules nor clipping)."""

    def __init__(self, optimizer: Optimizer, schedule: Schedule, clip_norm: float | None):
        self.optimizer = optimizer
        self.schedule = schedule
        self.clip_norm = clip_norm
        self.epoch = 0          # 0-based index of the epoch being trained

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    def set_lr(self) -> None:
        self.optimizer.lr = self.schedule.lr(self.epoch, self.optimizer.steps)

    def step(self, grads: dict[str, np.ndarray]) -> None:
        if self.clip_norm is not None:
            grads, _ = clip_grad_norm(grads, self.clip_norm)
        self.set_lr()
        self.optimizer.step(grads)


class _DeferredInterrupt:
    """Ctrl-C during training: the first SIGINT lets the current batch finish (so the saved
    state is one the optimizer completed, never a half-applied step) and :meth:`check` then
    raises KeyboardInterrupt; a second SIGINT raises it at once. Only in the main thread
    (elsewhere signals cannot be caught and KeyboardInterrupt behaves as usual)."""

    def __init__(self):
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
                self._installed = True
            except (ValueError, OSError):      # pragma: no cover - e.g. embedded interpreters
                self._installed = False
        return self

    def __exit__(self, *exc):
        import signal

        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False
        return False


def _layer_signature(item: Any) -> tuple[str, dict[str, Any]]:
    """A ``model.layers`` item of ``Config.to_dict`` as (canonical type, every option with
    defaults filled), so that ``- bn`` and ``- batchnorm: {eps: 1.0e-5}`` compare equal."""
    from cnncli.layers import options, resolve

    name, opts = (item, {}) if isinstance(item, str) else next(iter(item.items()))
    try:
        cls = resolve(name)
    except KeyError:
        return str(name), dict(opts or {})
    full = {n: p.default for n, p in options(cls).items()}
    full.update(opts or {})
    return cls.type_name, full


def check_resume(cfg: Config, ck: checkpoint.Checkpoint) -> int:
    """Check that ``ck`` can continue the run ``cfg`` describes; return its finished epochs.

    Raises:
        CheckpointError: A checkpoint saved mid-epoch (only end-of-epoch states resume exactly),
            one without resume metadata, a model that differs from ``cfg``'s layers, or a run
            with nothing left to do (``train.epochs`` reached, or early stopping triggered).
    """
    from cnncli.callbacks import EarlyStopping, resolve_monitor
    from cnncli.errors import CheckpointError

    meta, path = ck.meta, ck.path
    epoch = meta.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"{path}: corrupt 'meta' entry: epoch is {epoch!r}; cannot resume from it")
    if meta.get("interrupted"):
        # it may hold a part of an epoch; last.npz holds the end of the last finished one
        last = path.parent / "last.npz"
        if last.is_file():
            try:
                current = checkpoint.load(last).meta.get("epoch")
                if isinstance(current, int) and not isinstance(current, bool):
                    epoch = current
            except CheckpointError:
                pass
        raise CheckpointError(f"{path}: the state where Ctrl-C stopped training; a run resumes exactly only from "
                              f"the end of an epoch. Resume from {path.parent / 'last.npz'} (epoch {epoch})."
                              if epoch else
                              f"{path}: saved by Ctrl-C before the first epoch finished; there is nothing to "
                              f"resume. Start the run again.")
    if not isinstance(meta.get("rng"), dict) or "optimizer" not in meta:
        raise CheckpointError(f"{path}: holds no training state (optimizer steps, random generators); it cannot "
                              f"be resumed. Use RUN/last.npz of a run trained by this cnncli version.")
    stored = (ck.config.get("model") or {}).get("layers") if isinstance(ck.config.get("model"), dict) else None
    mine = cfg.to_dict()["model"]["layers"]
    if not isinstance(stored, list):
        raise CheckpointError(f"{path}: its stored config has no model.layers; cannot resume from it")
    theirs_sig = [_layer_signature(x) for x in stored]
    mine_sig = [_layer_signature(x) for x in mine]
    if theirs_sig != mine_sig:
        i = next((i for i, (a, b) in enumerate(zip(theirs_sig, mine_sig)) if a != b), min(len(stored), len(mine)))
        what = (f"model.layers[{i}] is {mine[i]!r} in {cfg.source or 'the config'} but {stored[i]!r} in the checkpoint"
                if i < min(len(stored), len(mine)) else
                f"the checkpoint's model has {len(stored)} layers, {cfg.source or 'the config'} {len(mine)}")
        raise CheckpointError(f"{path}: the checkpoint's model differs from the config's: {what}. Resume with "
                              f"the config the run was trained with ({path.parent / 'config.yaml'}).")
    shape = meta.get("input_shape")
    if cfg.model.input_shape is not None and shape is not None and list(cfg.model.input_shape) != list(shape):
        raise CheckpointError(f"{path}: the checkpoint's model takes input {shape}, the config's "
                              f"model.input_shape is {list(cfg.model.input_shape)}")
    total = cfg.train.epochs
    if epoch >= total:
        raise CheckpointError(f"{path}: the run has finished {epoch} epoch(s) and train.epochs is {total}: nothing "
                              f"left to do. Raise the total to continue: --epochs N with N > {epoch}.")
    es = cfg.train.early_stopping
    state = meta.get("early_stopping")
    if es is not None and isinstance(state, dict):
        # the state names the metric read: es.monitor, or its train_* twin in a run without validation
        monitor = state.get("monitor") if state.get("monitor") in (es.monitor, resolve_monitor(es.monitor, False)) \
            else es.monitor
        stopper = EarlyStopping(monitor, es.mode, es.patience, es.min_delta)
        try:
            stopper.load_state(state)
        except ValueError as e:
            raise CheckpointError(f"{path}: corrupt early-stopping state ({e})") from None
        if stopper.stopped:
            raise CheckpointError(f"{path}: early stopping ended this run ({es.monitor} did not improve for "
                                  f"{stopper.wait} epochs): nothing left to do. Raise "
                                  f"train.early_stopping.patience above {stopper.wait} or remove "
                                  f"train.early_stopping to continue.")
    return epoch


RUN_HEADER = "# cnncli run "


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _header_run_id(folder: Path) -> str | None:
    """The run id on the first line of ``folder/config.yaml`` (None if absent or not ours)."""
    try:
        with open(folder / "config.yaml", encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return None
    return first[len(RUN_HEADER):].strip() or None if first.startswith(RUN_HEADER) else None


#: Settings compared between a resumed run's stored config and the config it resumes with
#: (not train.seed: a resumed run's generators come back from the checkpoint).
_RESUME_KEYS = ("data.path", "data.name", "data.train_limit", "data.val_split", "data.test_limit", "data.mean",
                "data.std", "data.augment", "train.epochs", "train.batch_size", "train.optimizer",
                "train.schedule", "train.grad_clip_norm", "train.label_smoothing")


def resume_changes(cfg: Config, ck: checkpoint.Checkpoint) -> list[str]:
    """The data and training settings of ``cfg`` that differ from those the checkpoint's run
    was trained with, as ``key: old -> new`` strings (a resumed run takes the config's).
    Mappings (optimizer, schedule, augment) are compared key by key; ``auto`` normalization
    is compared once computed, so it is not listed."""
    mine, theirs = cfg.to_dict(), ck.config if isinstance(ck.config, dict) else {}

    def get(d, key):
        for part in key.split("."):
            if not isinstance(d, dict) or part not in d:
                return None
            d = d[part]
        return d

    def plain(v):
        return list(v) if isinstance(v, tuple) else v
    out = []
    for key in _RESUME_KEYS:
        new, old = plain(get(mine, key)), plain(get(theirs, key))
        if key == "data.path" and new is not None and old is not None:
            new = os.path.abspath(os.path.expanduser(str(new)))
        if key in ("data.mean", "data.std") and new == "auto":
            continue                                  # computed from the data: the stored numbers
        if isinstance(new, dict) and isinstance(old, dict) and new.get("type", 0) == old.get("type", 0):
            out += [f"{key}.{k}: {json.dumps(plain(old.get(k)))} -> {json.dumps(plain(new.get(k)))}"
                    for k in sorted({*new, *old}, key=str) if plain(new.get(k)) != plain(old.get(k))]
        elif new != old:
            out.append(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    return out


def check_resume_in_place(ck: checkpoint.Checkpoint) -> None:
    """Refuse to resume ``ck`` in its own folder unless that folder verifiably holds its run
    and ``ck`` is the run's latest state. Resuming in place rewrites config.yaml,
    metrics.jsonl, last.npz and best.npz, so it must never hit a folder of other files
    (a checkpoint copied into a project folder) nor rewind a run past later checkpoints.

    Verified means: the folder's ``last.npz`` has the checkpoint's run id and the same epoch
    and step, and ``config.yaml`` names that run id on its first line. (A checkpoint from
    before run ids is accepted only as the folder's own ``last.npz`` beside a config.yaml.)

    Raises:
        CheckpointError: With the way out: ``--out NEWDIR`` continues the run in a new folder.
    """
    from cnncli.errors import CheckpointError

    path, folder = ck.path, ck.path.parent
    fix = (f"To continue from this checkpoint, branch into a new run folder: add --out NEWDIR "
           f"(nothing in {folder} is changed).")
    last = folder / "last.npz"
    if not last.is_file():
        raise CheckpointError(f"{path}: its folder {folder} is not this checkpoint's run folder (no last.npz "
                              f"there); resuming in place would overwrite config.yaml, metrics.jsonl and best.npz "
                              f"in it. {fix}")
    same_file = _same_folder(path, last)
    try:
        latest = ck if same_file else checkpoint.load(last)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: cannot check that {folder} is its run folder: {e}. {fix}") from None
    run_id = ck.meta.get("run_id")
    if run_id is None and same_file:             # written before checkpoints recorded run ids
        if (folder / "config.yaml").is_file():
            return
    if run_id is None or latest.meta.get("run_id") != run_id:
        raise CheckpointError(f"{path}: {last} belongs to another run, so {folder} is not this checkpoint's run "
                              f"folder; resuming in place would overwrite that run's files. {fix}")
    if (latest.meta.get("epoch"), latest.meta.get("step")) != (ck.meta.get("epoch"), ck.meta.get("step")):
        raise CheckpointError(f"{path}: holds epoch {ck.meta.get('epoch')} of the run in {folder}, whose latest "
                              f"checkpoint {last} holds epoch {latest.meta.get('epoch')}; resuming in place would "
                              f"rewind the run and overwrite its later checkpoints and metrics. Resume from {last}, "
                              f"or branch from epoch {ck.meta.get('epoch')} into a new run folder: add --out NEWDIR "
                              f"(nothing in {folder} is changed).")
    if _header_run_id(folder) != run_id:
        raise CheckpointError(f"{path}: {folder / 'config.yaml'} is not the config of this checkpoint's run; "
                              f"resuming in place would overwrite it. {fix}")


def start_branch(ck: checkpoint.Checkpoint, run_dir: Path) -> None:
    """Prepare the new run folder ``run_dir`` of a run continued from ``ck`` elsewhere
    (``--resume CK --out NEWDIR``): the metrics and timing lines of epochs 1..k and the
    best checkpoint so far are carried over when ``ck``'s folder verifiably holds its run."""
    import shutil

    src = ck.path.parent
    run_id = ck.meta.get("run_id")
    if run_id is None or _header_run_id(src) != run_id:
        return
    epoch = ck.meta.get("epoch")
    for name in ("metrics.jsonl", "timing.jsonl"):
        rows = _read_rows(src / name, epoch)
        if rows:
            _write_text_atomic(run_dir / name, "".join(json.dumps(r) + "\n" for r in rows))
    best_epoch = (ck.meta.get("best") or {}).get("best_epoch")
    if best_epoch == epoch:
        shutil.copyfile(ck.path, run_dir / "best.npz")
    elif (src / "best.npz").is_file():
        try:
            best = checkpoint.load(src / "best.npz")
        except Exception:  # noqa: BLE001 - a damaged best.npz is simply not carried over
            return
        if best.meta.get("run_id") == run_id and best.meta.get("epoch") == best_epoch:
            shutil.copyfile(src / "best.npz", run_dir / "best.npz")


def _read_rows(path: Path, upto: int) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` for epochs 1..``upto`` (a resumed run rewrites the rest)."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and 1 <= row["epoch"] <= upto:
            rows.append(row)
    return rows


def fit(cfg: Config, model: Model, data: Data, run_dir: Path, on_event: EventHandler,
        shuffle_rng: np.random.Generator | None = None,
        resume: checkpoint.Checkpoint | None = None) -> RunEnded:
    """Train ``model`` for ``cfg.train.epochs`` epochs, checkpointing into ``run_dir``.

    Writes ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON line per epoch: losses,
    accuracies, lr; no timings, so a run with the same config and seed writes the same
    bytes), ``timing.jsonl`` (seconds and images/s per epoch), ``last.npz`` every epoch,
    ``best.npz`` when ``train.checkpoint.monitor`` improves (its ``train_*`` counterpart when
    there is no validation split) and ``epoch_{k}.npz`` every ``train.checkpoint.every``
    epochs. Each epoch the lr follows ``train.schedule``, gradients are clipped to
    ``train.grad_clip_norm`` and training batches pass through ``data.augment``; early
    stopping may end the run. At the end the best checkpoint is reloaded and evaluated on
    the test split.

    With ``resume`` (an end-of-epoch checkpoint accepted by :func:`check_resume`), the run
    continues after its epoch: parameters, buffers, optimizer state, schedule, best value,
    early-stopping count and every random generator (weights/dropout, shuffle,
    augmentation) are restored, so the result equals an uninterrupted run bit for bit, and
    the metrics files keep their lines up to that epoch.

    Raises:
        TrainingError: NaN/inf loss (``last.npz`` keeps the last good epoch).
        TrainingInterrupted: Ctrl-C (after the current batch, the state is saved to
            ``interrupted.npz``; ``last.npz`` keeps the last finished epoch).
        CheckpointError: ``resume`` does not fit the model.
    """
    import yaml

    from cnncli.augment import Augment
    from cnncli.callbacks import EarlyStopping, Monitor, resolve_monitor
    from cnncli.errors import CheckpointError

    t = cfg.train
    shuffle_rng = shuffle_rng if shuffle_rng is not None else make_rngs(t.seed)[1]
    augment_rng = make_augment_rng(t.seed)
    aug_cfg = cfg.data.augment
    augment = Augment(aug_cfg.translate, aug_cfg.hflip, rng=augment_rng)
    if aug_cfg.translate and len(model.input_shape) == 3 and aug_cfg.translate >= min(model.input_shape[1:]):
        raise ConfigError([Problem("data.augment.translate", f"is {aug_cfg.translate}, but the images are only "
                                   f"{model.input_shape[1]}x{model.input_shape[2]}; use at most "
                                   f"{min(model.input_shape[1:]) - 1} (a few pixels is usual)")], cfg.source)
    if augment.active and len(model.input_shape) != 3:
        raise ConfigError([Problem("data.augment", f"needs images (C, H, W); the model's input is "
                                   f"{list(model.input_shape)}")], cfg.source)
    check_batch(model, min(t.batch_size, len(data.train)), source=cfg.source)
    optimizer = make_optimizer(cfg, model)
    has_val = data.val is not None
    schedule = make_schedule(cfg, optimizer.lr, len(data.train), has_val)
    stepper = _Stepper(optimizer, schedule, t.grad_clip_norm)
    # monitors name the metric actually read (train_* when there is no validation split)
    ck_cfg = t.checkpoint
    best_metric = resolve_monitor(ck_cfg.monitor, has_val)
    best = Monitor(best_metric, ck_cfg.mode)
    es_cfg = t.early_stopping
    early_metric = resolve_monitor(es_cfg.monitor, has_val) if es_cfg else None
    early = EarlyStopping(early_metric, es_cfg.mode, es_cfg.patience, es_cfg.min_delta) if es_cfg else None
    cfg = resolved_config(cfg, data)   # numbers for data.mean/std: auto, computed once, is recorded for eval
    lut = pixel_lut(cfg.data.mean, cfg.data.std, model.dtype)
    resolved = cfg.to_dict()
    resolved["model"]["input_shape"] = list(model.input_shape)
    # record the metrics actually monitored (train_* when there is no validation split)
    rt = resolved["train"]
    rt["checkpoint"]["monitor"] = best_metric
    if rt["early_stopping"] is not None:
        rt["early_stopping"]["monitor"] = early_metric
    if "monitor" in rt["schedule"]:
        rt["schedule"]["monitor"] = resolve_monitor(rt["schedule"]["monitor"], has_val)
    # the folder actually written (a taken output.dir gives runs/x-2; a resumed run keeps its folder)
    resolved["output"]["dir"] = str(run_dir)
    num_classes = model.output_shape[0]
    best_path, last_path = run_dir / "best.npz", run_dir / "last.npz"
    # a run id ties a folder's files together: checkpoints record it, config.yaml's first line names it;
    # resuming in the checkpoint's own folder keeps it, a new folder (or a branch) gets a new one
    in_place = resume is not None and _same_folder(resume.path.parent, run_dir)
    run_id = resume.meta.get("run_id") if in_place and isinstance(resume.meta.get("run_id"), str) \
        else uuid.uuid4().hex
    metrics_path, timing_path = run_dir / "metrics.jsonl", run_dir / "timing.jsonl"
    rows: list[dict[str, Any]] = []
    timing_rows: list[dict[str, Any]] = []
    start_epoch, step = 0, 0

    if resume is not None:
        start_epoch = check_resume(cfg, resume)
        meta = resume.meta
        try:
            model.load_arrays(resume.params, resume.buffers)
            opt_meta = meta["optimizer"]
            if opt_meta.get("type") != optimizer.type_name:
                raise ValueError(f"it was trained with {opt_meta.get('type')}, the config says {optimizer.type_name}")
            optimizer.load_state_arrays(resume.optim, opt_meta["steps"])
            sched = meta.get("schedule") or {}
            if sched.get("type") == t.schedule.type:
                schedule.load_state(sched.get("state") or {})
            best.load_state(meta.get("best") or {})
            if early is not None:
                early.load_state(meta.get("early_stopping") or {})
            step = meta["step"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"step is {step!r}")
            rng = meta["rng"]
            model.rng.bit_generator.state = rng["model"]
            shuffle_rng.bit_generator.state = rng["shuffle"]
            if "augment" in rng:
                augment_rng.bit_generator.state = rng["augment"]
            elif augment.active:
                raise ValueError("it holds no augmentation generator state")
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else str(e)
            raise CheckpointError(f"{resume.path}: cannot resume from it: {what}") from None
        rows = _read_rows(metrics_path, start_epoch)
        timing_rows = _read_rows(timing_path, start_epoch)

    try:
        _write_text_atomic(run_dir / "config.yaml", RUN_HEADER + run_id + "\n"
                           + yaml.safe_dump(resolved, sort_keys=False))
    except OSError as e:
        raise OutputError(f"cannot write {run_dir / 'config.yaml'} ({e.strerror or e}). Free disk space or "
                          f"choose another --out.", getattr(e, "errno", None), getattr(e, "strerror", None)) from None
    n_batches = math.ceil(len(data.train) / t.batch_size)
    on_event(RunStarted(run_dir, t.epochs, n_batches, len(data.train), len(data.val or ()),
                        len(data.test or ()), model.num_params(), start_epoch,
                        tuple(resume_changes(cfg, resume)) if resume is not None else ()))
    t_run = time.perf_counter()

    def save(path: Path, epoch: int, metrics: dict[str, Any], **extra) -> None:
        try:
            _save(path, epoch, metrics, **extra)
        except OSError as e:
            raise OutputError(f"cannot write {path} ({e.strerror or e}); the previous file there, if any, "
                              f"is intact. Free disk space or choose another --out.", e.errno, e.strerror) from None

    def _save(path: Path, epoch: int, metrics: dict[str, Any], **extra) -> None:
        checkpoint.save(path, params=model.params(), buffers=model.buffers(),
                        optim=optimizer.state_arrays(), config=resolved,
                        meta={"epoch": epoch, "step": step, "metrics": metrics,
                              "run_id": run_id, "run_dir": str(run_dir.resolve()),
                              "optimizer": {"type": optimizer.type_name, "steps": optimizer.steps,
                                            "lr": optimizer.lr},
                              "schedule": {"type": t.schedule.type, "state": schedule.state()},
                              "best": best.state(),
                              "early_stopping": early.state() if early is not None else None,
                              "rng": {"model": model.rng.bit_generator.state,
                                      "shuffle": shuffle_rng.bit_generator.state,
                                      "augment": augment_rng.bit_generator.state},
                              "input_shape": list(model.input_shape), "num_classes": num_classes, **extra})

    def write_rows(path: Path, lines: list[dict[str, Any]]) -> None:
        try:
            _write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in lines))
        except OSError as e:
            raise OutputError(f"cannot write {path} ({e.strerror or e}). "
                              f"Free disk space or choose another --out.", e.errno, e.strerror) from None

    finished, finished_metrics = start_epoch, (rows[-1] if rows else {})
    stopped_early = None
    batch_done = 0
    interrupt = _DeferredInterrupt()
    try:
        with interrupt:
            for epoch in range(start_epoch + 1, t.epochs + 1):
                on_event(EpochStarted(epoch, t.epochs))
                t0 = time.perf_counter()
                order = shuffle_rng.permutation(len(data.train))
                stepper.epoch = epoch - 1
                stepper.set_lr()
                batch_done = 0

                def on_batch(b, nb, loss, acc, _epoch=epoch, _t0=t0):
                    nonlocal step, batch_done
                    step += 1
                    batch_done = b + 1
                    seen = min((b + 1) * t.batch_size, len(data.train))
                    on_event(BatchEnded(_epoch, b + 1, nb, loss, acc,
                                        seen / max(time.perf_counter() - _t0, 1e-9), optimizer.lr))
                    interrupt.check()

                try:
                    train_loss, train_acc, _ = run_batches(
                        model, data.train, t.batch_size, lut, training=True, order=order, optimizer=stepper,
                        label_smoothing=t.label_smoothing, on_batch=on_batch,
                        augment=augment if augment.active else None)
                    _check_finite(model)
                except TrainingError as e:
                    kept = f"{last_path} keeps epoch {finished}" if finished else "no checkpoint was written"
                    hint = ""
                    if isinstance(e, DivergedError):
                        clip = (f"a lower train.grad_clip_norm (now {t.grad_clip_norm:g})" if t.grad_clip_norm
                                else "train.grad_clip_norm (e.g. 1.0) to clip the gradients")
                        hint = f" Try a lower train.optimizer.lr (now {optimizer.lr:g}) or set {clip}."
                    at = f"epoch {epoch}" if getattr(e, "end_of_epoch", False) else f"epoch {epoch}, step {step + 1}"
                    raise type(e)(f"{at}: {e}. Training stopped; {kept}.{hint}") from None
                batch_done = 0
                train_seconds = time.perf_counter() - t0
                metrics = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                           "lr": optimizer.lr}
                if data.val is not None:
                    val = evaluate(model, data.val, t.eval_batch_size, lut, num_classes)
                    metrics.update(val_loss=val.loss, val_accuracy=val.accuracy)
                seconds = time.perf_counter() - t0
                ips = len(data.train) / max(train_seconds, 1e-9)
                schedule.epoch_end(metrics)
                is_best = best.update(metrics[best_metric], epoch)
                stop = early.epoch_end(metrics[early_metric], epoch) if early is not None else False
                save(last_path, epoch, metrics)
                finished, finished_metrics = epoch, metrics      # what last.npz now holds
                # a Ctrl-C state from before is now older than last.npz: it would only mislead
                (run_dir / "interrupted.npz").unlink(missing_ok=True)
                if is_best:
                    save(best_path, epoch, metrics)
                if ck_cfg.every and epoch % ck_cfg.every == 0:
                    save(run_dir / f"epoch_{epoch}.npz", epoch, metrics)
                rows.append(metrics)
                timing_rows.append({"epoch": epoch, "train_seconds": round(train_seconds, 3),
                                    "seconds": round(seconds, 3), "images_per_s": round(ips, 1)})
                write_rows(metrics_path, rows)
                write_rows(timing_path, timing_rows)
                on_event(EpochEnded(epoch, t.epochs, metrics, seconds, is_best, ips))
                if stop:
                    stopped_early = early.reason(early_metric)
                    break
                interrupt.check()
    except KeyboardInterrupt:
        # last.npz keeps the last finished epoch; the state where training stopped goes beside it
        # (meta epoch = epochs finished, batch = batches of the next epoch done)
        stopped = run_dir / "interrupted.npz"
        save(stopped, finished, finished_metrics, interrupted=True, batch=batch_done)
        kept = f"; {last_path} keeps epoch {finished}" if finished else ""
        where = f"during epoch {finished + 1} (batch {batch_done})" if batch_done else f"after epoch {finished}"
        raise TrainingInterrupted(f"interrupted at step {step}, {where}; the state was saved to {stopped}{kept}",
                                  stopped, last_path if finished else None) from None

    test = None
    if data.test is not None:
        ck = checkpoint.load(best_path if best_path.exists() else last_path)
        model.load_arrays(ck.params, ck.buffers)
        test = evaluate(model, data.test, t.eval_batch_size, lut, num_classes)
    end = RunEnded(run_dir, best.best_epoch, best_path, last_path, test, time.perf_counter() - t_run, stopped_early)
    on_event(end)
    return end
