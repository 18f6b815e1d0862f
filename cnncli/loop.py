"""One batch loop for training and evaluation (STYLE.md: no copied loops).

:func:`run_batches` gathers each batch from the uint8 images, normalizes it through a
lookup table into a reused float buffer, runs the model forward (and, when training,
backward and one optimizer step); :func:`evaluate` is the evaluation pass over a split.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cnncli.data import normalize_batch
from cnncli.datasets import Dataset
from cnncli.errors import BatchError, DivergedError
from cnncli.losses import softmax_cross_entropy
from cnncli.metrics import confusion_matrix
from cnncli.model import Model
from cnncli.optim import Optimizer
from cnncli.schedules import steps_per_epoch


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


@dataclass
class Tally:
    """Running sums of a pass over batches (kept by the caller to continue a pass cut short).

    Attributes:
        seen: Images counted. loss_sum: Sum of batch mean loss * batch size (float64).
        correct: Images whose arg-max prediction equals the label.
    """

    seen: int = 0
    loss_sum: float = 0.0
    correct: int = 0

    def reset(self) -> None:
        """Start a new window, in place (``run_batches`` keeps adding to this object)."""
        self.seen, self.loss_sum, self.correct = 0, 0.0, 0


def run_batches(model: Model, ds: Dataset, batch_size: int, lut: np.ndarray, *, training: bool,
                order: np.ndarray | None = None, optimizer: Optimizer | None = None,
                label_smoothing: float = 0.0, on_batch: Callable[[int, int, float, float], None] | None = None,
                keep_preds: bool = False, augment: Callable[[np.ndarray], np.ndarray] | None = None,
                start: int = 0, tally: Tally | None = None, stop: int | None = None):
    """One pass over ``ds`` in ``order``: forward (and backward + step when training).

    Each batch is gathered from the uint8 images and normalized through ``lut`` into a
    reused float buffer, one batch ahead in a background thread. In training, a last batch of a single image is dropped (batchnorm
    cannot normalize one value per feature). ``on_batch(batch_index, n_batches, running_loss, running_acc)``
    is called after each batch. ``augment`` (training only) maps each batch's uint8 images
    (N, C, H, W) to augmented ones of the same shape before normalization.

    ``start`` (default 0) skips the first batches of ``order`` and ``tally`` (default: a new
    one) holds the sums the running means continue from, updated in place after each batch:
    together they continue a pass that was cut short (a mid-epoch resume) with the same
    numbers; a caller may reset ``tally`` (``Tally.reset``) between batches to average over a shorter window.
    ``stop`` (default: all) ends the pass after that many batches of ``order`` (a run of
    ``train.max_steps`` ending inside an epoch).

    Returns:
        (mean_loss, accuracy, preds or None).

    Raises:
        DivergedError: If the loss becomes NaN or infinite.
        TrainingError: If a layer refuses a batch.
    """
    n = len(ds)
    order = np.arange(n) if order is None else order
    if training and steps_per_epoch(n, batch_size) < math.ceil(n / batch_size):
        # a last batch of one image would break batchnorm (one value per feature); drop it, as
        # DataLoader(drop_last=True) would, but only then: every other image is still used
        order = order[:-1]
        n -= 1
    n_batches = math.ceil(n / batch_size)
    end = n_batches if stop is None else min(stop, n_batches)
    # two reused float buffers: batch b+1 is gathered, augmented and normalized into one by a
    # background thread while batch b computes from the other (NumPy releases the GIL in both);
    # batches are prepared one after another in order, so augmentation draws as without it
    bufs = [np.empty((min(batch_size, n), *ds.image_shape), dtype=lut.dtype) for _ in range(2)]

    def prepare(b: int) -> tuple[np.ndarray, np.ndarray]:
        idx = order[b * batch_size:(b + 1) * batch_size]
        images = ds.images[idx]
        if augment is not None:
            images = augment(images)
        return normalize_batch(lut, images, out=bufs[b % 2][:len(idx)]), ds.labels[idx]

    tally = Tally() if tally is None else tally
    preds = np.empty(n, dtype=np.int64) if keep_preds else None
    # overflow shows up as a non-finite loss, which is reported below; numpy need not warn
    with np.errstate(all="ignore"), ThreadPoolExecutor(1, thread_name_prefix="cnncli-batches") as pool:
        ahead = pool.submit(prepare, start) if start < end else None
        for b in range(start, end):
            x, y = ahead.result()
            if b + 1 < end:
                ahead = pool.submit(prepare, b + 1)     # into the other buffer, which batch b-1 is done with
            m = len(y)
            try:
                logits = model.forward(x, training=training)
            except ValueError as e:          # e.g. batchnorm refusing a batch of one in training
                raise BatchError(f"batch {b + 1} of {m} images: {e}") from None
            except MemoryError:
                raise BatchError(f"batch {b + 1} of {m} images does not fit in memory; lower "
                                    f"train.batch_size or train.eval_batch_size") from None
            loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
            if not math.isfinite(loss):
                raise DivergedError(f"the loss became {loss} at batch {b + 1}")
            if training:
                model.backward(dlogits, input_grad=False)
                optimizer.step(model.grads())
            p = logits.argmax(axis=1)
            if keep_preds:
                preds[(b - start) * batch_size:(b - start) * batch_size + m] = p
            tally.loss_sum += loss * m
            tally.correct += int((p == y).sum())
            tally.seen += m
            if on_batch is not None:
                on_batch(b, n_batches, tally.loss_sum / tally.seen, tally.correct / tally.seen)
    return tally.loss_sum / max(tally.seen, 1), tally.correct / max(tally.seen, 1), preds


def evaluate(model: Model, ds: Dataset, batch_size: int, lut: np.ndarray,
             num_classes: int | None = None) -> EvalResult:
    """Evaluate ``model`` (evaluation mode) on all of ``ds`` in file order."""
    loss, acc, preds = run_batches(model, ds, batch_size, lut, training=False, keep_preds=True)
    k = num_classes or model.output_shape[0]
    return EvalResult(loss, acc, ds.labels, preds, k, confusion_matrix(ds.labels, preds, k))

