"""The fit loop. It emits events and never prints (``report.py`` draws them).

Flow: ``prepare_data`` -> ``build_model`` -> ``fit(..., on_event=reporter)``.
One batch loop (:func:`run_batches`) serves training and evaluation.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnncli import checkpoint
from cnncli.config import Config
from cnncli.datasets import Dataset, load_split
from cnncli.errors import (CnncliError, ConfigError, DataError, DivergedError, OutputError, Problem,
                           TrainingError)
from cnncli.losses import softmax_cross_entropy
from cnncli.metrics import confusion_matrix
from cnncli.model import Model, build
from cnncli.optim import OPTIMIZERS, Optimizer


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


@dataclass(frozen=True)
class RunEnded:
    run_dir: Path
    best_epoch: int
    best_path: Path
    last_path: Path
    test: "EvalResult | None"
    seconds: float


Event = Any
EventHandler = Callable[[Event], None]


class TrainingInterrupted(CnncliError):
    """Ctrl-C during training; the state was saved to ``path``."""

    exit_code = 130

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


# ------------------------------------------------------------------ data

@dataclass
class Data:
    """The three splits; ``val`` is carved from the end of the training file (as Keras's
    ``validation_split``), ``test`` is the test file. ``num_classes`` is ``data.num_classes``
    or, when not given, the largest label + 1."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int


def resolve_data_path(path: str) -> Path:
    """Relative data paths are taken from the current directory."""
    return Path(path).expanduser().resolve()


def prepare_data(cfg: Config) -> Data:
    """Load the training (and test) split and carve the validation split.

    Raises:
        DataError: For any problem with the files, or a split that leaves no training data.
    """
    d = cfg.data
    folder = resolve_data_path(d.path)
    full = load_split(folder, "train", d.train_limit)
    n = len(full)
    n_val = d.val_split if isinstance(d.val_split, int) else int(round(n * d.val_split))
    if n_val >= n:
        raise DataError(f"data.val_split {d.val_split} keeps {n_val} of the {n} training images for "
                        f"validation, leaving none to train on. Lower data.val_split.")
    train = Dataset(full.images[:n - n_val], full.labels[:n - n_val], full.source)
    val = Dataset(full.images[n - n_val:], full.labels[n - n_val:], full.source + " (validation)") \
        if n_val else None
    test = load_split(folder, "test", d.test_limit)
    if test.image_shape != train.image_shape:
        raise DataError(f"test images are {test.image_shape}, training images {train.image_shape}; "
                        f"both splits must come from the same dataset ({folder})")
    found = max(full.num_classes, test.num_classes)
    if d.num_classes is not None and found > d.num_classes:
        split = full if full.num_classes == found else test
        raise DataError(f"{split.source}: label {found - 1} is outside [0, {d.num_classes}) "
                        f"(data.num_classes is {d.num_classes}). Raise data.num_classes or check the labels file.")
    return Data(train, val, test, d.num_classes or found)


def pixel_lut(mean: float, std: float, dtype=np.float32) -> np.ndarray:
    """The 256 normalized values (v/255 - mean)/std of a uint8 pixel: a batch is one gather."""
    return ((np.arange(256, dtype=np.float64) / 255.0 - mean) / std).astype(dtype)


# ------------------------------------------------------------------ model

def input_shape(cfg: Config) -> tuple[int, ...]:
    """``model.input_shape``, or the image shape of the training file when it is not given.

    Raises:
        DataError: If the shape must come from the data and the data cannot be read.
    """
    if cfg.model.input_shape is not None:
        return tuple(cfg.model.input_shape)
    return load_split(resolve_data_path(cfg.data.path), "train", 1).image_shape


def make_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for (weights + dropout, shuffling) from one seed."""
    model_ss, shuffle_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_ss), np.random.default_rng(shuffle_ss)


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


def make_optimizer(cfg: Config, model: Model) -> Optimizer:
    o = cfg.train.optimizer
    return OPTIMIZERS[o.type](model.params(), **o.options)


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
                keep_preds: bool = False):
    """One pass over ``ds`` in ``order``: forward (and backward + step when training).

    Each batch is gathered from the uint8 images and normalized through ``lut`` into a
    reused float buffer. In training, a last batch of a single image is dropped (batchnorm
    cannot normalize one value per feature). ``on_batch(batch_index, n_batches, running_loss, running_acc)``
    is called after each batch.

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
            np.take(lut, ds.images[idx], out=x)
            y = ds.labels[idx]
            try:
                logits = model.forward(x, training=training)
            except ValueError as e:          # e.g. batchnorm refusing a batch of one in training
                raise TrainingError(f"batch {b + 1} of {len(idx)} images: {e}") from None
            except MemoryError:
                raise TrainingError(f"batch {b + 1} of {len(idx)} images does not fit in memory; lower "
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
RUN_FILES = ("config.yaml", "metrics.jsonl", "best.npz", "last.npz", "interrupted.npz")


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

def fit(cfg: Config, model: Model, data: Data, run_dir: Path, on_event: EventHandler,
        shuffle_rng: np.random.Generator | None = None) -> RunEnded:
    """Train ``model`` for ``cfg.train.epochs`` epochs, checkpointing into ``run_dir``.

    Writes ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON line per epoch),
    ``last.npz`` every epoch and ``best.npz`` when validation accuracy improves
    (training accuracy when there is no validation split). At the end the best
    checkpoint is reloaded and evaluated on the test split.

    Raises:
        TrainingError: NaN/inf loss (``last.npz`` keeps the last good epoch).
        TrainingInterrupted: Ctrl-C (the current state is saved to ``interrupted.npz``;
            ``last.npz`` keeps the last finished epoch).
    """
    import yaml

    t = cfg.train
    shuffle_rng = shuffle_rng if shuffle_rng is not None else make_rngs(t.seed)[1]
    optimizer = make_optimizer(cfg, model)
    lut = pixel_lut(cfg.data.mean, cfg.data.std, model.dtype)
    resolved = cfg.to_dict()
    resolved["data"]["path"] = str(resolve_data_path(cfg.data.path))
    resolved["model"]["input_shape"] = list(model.input_shape)
    try:
        _write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    except OSError as e:
        raise TrainingError(f"cannot write {run_dir / 'config.yaml'} ({e.strerror or e})") from None
    num_classes = model.output_shape[0]
    best_path, last_path = run_dir / "best.npz", run_dir / "last.npz"
    metrics_path = run_dir / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    n_batches = math.ceil(len(data.train) / t.batch_size)
    on_event(RunStarted(run_dir, t.epochs, n_batches, len(data.train), len(data.val or ()),
                        len(data.test or ()), model.num_params()))
    best_score, best_epoch, step = -math.inf, 0, 0
    t_run = time.perf_counter()

    def save(path: Path, epoch: int, metrics: dict[str, Any], **extra) -> None:
        try:
            _save(path, epoch, metrics, **extra)
        except OSError as e:
            raise TrainingError(f"cannot write {path} ({e.strerror or e}); the previous file there, if any, "
                                f"is intact. Free disk space or choose another --out.") from None

    def _save(path: Path, epoch: int, metrics: dict[str, Any], **extra) -> None:
        checkpoint.save(path, params=model.params(), buffers=model.buffers(),
                        optim=optimizer.state_arrays(), config=resolved,
                        meta={"epoch": epoch, "step": step, "metrics": metrics,
                              "optimizer": {"type": optimizer.type_name, "steps": optimizer.steps},
                              "rng": {"model": model.rng.bit_generator.state,
                                      "shuffle": shuffle_rng.bit_generator.state},
                              "input_shape": list(model.input_shape), "num_classes": num_classes, **extra})

    epoch, finished, finished_metrics = 0, 0, {}
    try:
        for epoch in range(1, t.epochs + 1):
            on_event(EpochStarted(epoch, t.epochs))
            t0 = time.perf_counter()
            order = shuffle_rng.permutation(len(data.train))

            def on_batch(b, nb, loss, acc, _epoch=epoch, _t0=t0):
                nonlocal step
                step += 1
                seen = min((b + 1) * t.batch_size, len(data.train))
                on_event(BatchEnded(_epoch, b + 1, nb, loss, acc, seen / max(time.perf_counter() - _t0, 1e-9),
                                    optimizer.lr))

            try:
                train_loss, train_acc, _ = run_batches(model, data.train, t.batch_size, lut, training=True,
                                                       order=order, optimizer=optimizer,
                                                       label_smoothing=t.label_smoothing, on_batch=on_batch)
            except TrainingError as e:
                kept = f"{last_path} keeps epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written"
                hint = f" Try a lower train.optimizer.lr (now {optimizer.lr:g})." \
                    if isinstance(e, DivergedError) else ""
                raise type(e)(f"epoch {epoch}, step {step + 1}: {e}. Training stopped; {kept}.{hint}") from None
            train_seconds = time.perf_counter() - t0
            metrics = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                       "lr": optimizer.lr}
            if data.val is not None:
                val = evaluate(model, data.val, t.eval_batch_size, lut, num_classes)
                metrics.update(val_loss=val.loss, val_accuracy=val.accuracy)
            seconds = time.perf_counter() - t0
            metrics.update(train_seconds=round(train_seconds, 3), seconds=round(seconds, 3),
                           images_per_s=round(len(data.train) / train_seconds, 1))
            score = metrics.get("val_accuracy", train_acc)
            is_best = score > best_score
            save(last_path, epoch, metrics)
            finished, finished_metrics = epoch, metrics      # what last.npz now holds
            if is_best:
                best_score, best_epoch = score, epoch
                save(best_path, epoch, metrics)
            rows.append(metrics)
            try:
                _write_text_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
            except OSError as e:
                raise TrainingError(f"cannot write {metrics_path} ({e.strerror or e}). "
                                    f"Free disk space or choose another --out.") from None
            on_event(EpochEnded(epoch, t.epochs, metrics, seconds, is_best))
    except KeyboardInterrupt:
        # last.npz keeps the last finished epoch; the mid-epoch state goes beside it
        # (meta epoch = epochs finished; a signal after last.npz was written counts that epoch)
        stopped = run_dir / "interrupted.npz"
        save(stopped, finished, finished_metrics, interrupted=True)
        kept = f"; {last_path} keeps epoch {finished}" if finished else ""
        raise TrainingInterrupted(f"interrupted at step {step}, after {finished} finished epoch(s); the state "
                                  f"was saved to {stopped}{kept}", stopped) from None

    test = None
    if data.test is not None:
        ck = checkpoint.load(best_path)
        model.load_arrays(ck.params, ck.buffers)
        test = evaluate(model, data.test, t.eval_batch_size, lut, num_classes)
    end = RunEnded(run_dir, best_epoch, best_path, last_path, test, time.perf_counter() - t_run)
    on_event(end)
    return end
