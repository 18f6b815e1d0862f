"""What the trainer reports while it runs (Keras/Lightning callbacks' hooks, as data).

:func:`cnncli.training.fit` calls each subscriber with these events in order:
``RunStarted``, then per epoch ``EpochStarted``, ``BatchEnded`` per batch and
``EpochEnded`` (with ``train.val_every``: ``ValidationEnded`` after every ``val_every``-th
step and the run's last one, instead of ``EpochEnded``), and finally ``RunEnded``. The terminal renderer (``report.TrainReporter``)
and the run folder's writers (``rundir.RunWriter``) are such subscribers, so a quiet or
JSON run goes through the same loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from cnncli.loop import EvalResult


@dataclass(frozen=True)
class RunStarted:
    """Training is about to start (after the run folder's config.yaml is written)."""

    run_dir: Path
    epochs: int                   # epochs the run starts (with train.max_steps: ceil(max_steps / batches))
    batches_per_epoch: int
    n_train: int
    n_val: int
    n_test: int
    num_params: int
    start_epoch: int = 0          # epochs already finished (a resumed run)
    changes: tuple[str, ...] = ()  # settings that differ from the resumed checkpoint's run
    left_out: int = 0             # training images each epoch leaves out (a last batch of one)
    repaired: tuple[str, ...] = ()  # what resuming mended in the run folder (rundir.repair)
    max_steps: int | None = None  # train.max_steps (None: the run counts epochs)
    val_every: int | None = None  # train.val_every (None: validation after each epoch)
    start_step: int = 0           # optimizer steps already taken (a resumed run)


@dataclass(frozen=True)
class EpochStarted:
    """Epoch ``epoch`` (1-based) of ``epochs`` begins."""

    epoch: int
    epochs: int


@dataclass(frozen=True)
class BatchEnded:
    """A training batch (1-based ``batch`` of ``batches``) has taken its optimizer step."""

    epoch: int
    batch: int
    batches: int
    loss: float          # running mean over the epoch so far
    accuracy: float      # running mean over the epoch so far
    images_per_s: float
    lr: float
    step: int = 0        # optimizer steps taken in the run, this one included


@dataclass(frozen=True)
class EpochEnded:
    """An epoch finished: trained, validated, its ``metrics`` (one metrics.jsonl line) final."""

    epoch: int
    epochs: int
    metrics: dict[str, float]
    seconds: float
    is_best: bool
    images_per_s: float = 0.0     # training throughput (timing stays out of metrics.jsonl)
    train_seconds: float = 0.0    # the training part of ``seconds`` (validation excluded)


@dataclass(frozen=True)
class ValidationEnded:
    """With ``train.val_every``: a validation after ``step`` optimizer steps, in epoch ``epoch``
    (1-based, the one the step belongs to), finished; ``metrics`` (one metrics.jsonl line) is
    final, its training means taken over the steps since the previous validation."""

    epoch: int
    step: int
    max_steps: int       # the run's steps (train.max_steps, or epochs * steps per epoch)
    metrics: dict[str, float]
    seconds: float       # since the previous validation
    is_best: bool
    images_per_s: float = 0.0
    train_seconds: float = 0.0


@dataclass(frozen=True)
class RunEnded:
    """The run finished; ``test`` is the best checkpoint's result on the test split, if any."""

    run_dir: Path
    best_epoch: int
    best_path: Path
    last_path: Path
    test: "EvalResult | None"
    seconds: float
    stopped_early: str | None = None   # why early stopping ended the run, if it did
    best_step: int = 0                 # the optimizer steps taken when the best value was measured


#: Any of the events above.
Event = Any
#: A subscriber: called with each event in turn.
EventHandler = Callable[[Event], None]

