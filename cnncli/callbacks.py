"""Monitored metrics: the best-checkpoint tracker and early stopping.

A *monitor* is one of the per-epoch metrics the trainer writes to ``metrics.jsonl``:
``val_loss``, ``val_accuracy``, ``train_loss``, ``train_accuracy``. When a run has no
validation split, a ``val_*`` monitor reads the matching ``train_*`` metric instead
(the trainer reports which one it used). ``mode: auto`` minimizes losses and
maximizes accuracies, as Keras's ``mode="auto"``.

State is plain JSON (infinities written as ``null``), saved in each checkpoint's meta
so a resumed run continues with the same best value and patience count.
"""

from __future__ import annotations

import math
from typing import Any

from cnncli.checks import check_choice, check_float, check_int

MONITORS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
MODES = ("auto", "min", "max")


def resolve_mode(monitor: str, mode: str) -> str:
    """``min`` or ``max``: ``auto`` maximizes accuracies and minimizes losses."""
    if mode != "auto":
        return mode
    return "max" if monitor.endswith("accuracy") else "min"


def resolve_monitor(monitor: str, has_val: bool) -> str:
    """The metric actually read: ``val_x`` becomes ``train_x`` when there is no validation split."""
    if not has_val and monitor.startswith("val_"):
        return "train_" + monitor[len("val_"):]
    return monitor


def _to_json(v: float) -> float | None:
    return None if math.isinf(v) else v


def _from_json(v: Any, default: float) -> float:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ValueError(f"expected a number or null, got {v!r}")
    return float(v)


class Monitor:
    """The best value so far of one metric.

    ``improved(v)``: in ``min`` mode v < best - min_delta, in ``max`` mode v > best + min_delta
    (Keras ``EarlyStopping._is_improvement``); the first value always improves.

    Args:
        monitor: One of :data:`MONITORS`.
        mode: ``auto``, ``min`` or ``max``. Default: ``auto``.
        min_delta: Smallest change that counts as an improvement (>= 0). Default: 0.

    Raises:
        ValueError: For an unknown monitor or mode, or a negative min_delta.
    """

    def __init__(self, monitor: str, mode: str = "auto", min_delta: float = 0.0):
        self.monitor = check_choice("monitor", monitor, MONITORS)
        self.mode = resolve_mode(monitor, check_choice("mode", mode, MODES))
        self.min_delta = check_float("min_delta", min_delta, 0.0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_step = 0

    def improved(self, value: float) -> bool:
        """True if ``value`` beats the best so far by more than ``min_delta`` (NaN never does)."""
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int, step: int = 0) -> bool:
        """Record ``value`` of ``epoch`` (1-based; with ``train.val_every``, the epoch in
        progress) after ``step`` optimizer steps; True if it is a new best."""
        if self.improved(value):
            self.best, self.best_epoch, self.best_step = value, epoch, step
            return True
        return False

    def state(self) -> dict[str, Any]:
        """JSON-ready state: monitor, mode, best value (null for none yet), its epoch and step."""
        return {"monitor": self.monitor, "mode": self.mode, "best": _to_json(self.best),
                "best_epoch": self.best_epoch, "best_step": self.best_step}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; a state saved for another monitor or mode is ignored (the
        run's config changed it, so the old best value is not comparable)."""
        if state.get("monitor") != self.monitor or state.get("mode") != self.mode:
            return
        self.best = _from_json(state.get("best"), self.best)
        self.best_epoch = check_int("best_epoch", state.get("best_epoch", 0), 0)
        self.best_step = check_int("best_step", state.get("best_step", 0), 0)


class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras ``EarlyStopping``).

    After each epoch: an improvement (see :class:`Monitor`, with ``min_delta``) resets the
    count of epochs without one; otherwise the count grows, and training stops when it
    reaches ``patience``.

    Args:
        monitor: Default: ``val_loss``.
        mode: Default: ``auto``.
        patience: Epochs without improvement before stopping (>= 1). Default: 5.
        min_delta: Default: 0.

    Raises:
        ValueError: For a bad option (the message starts with its name).
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 5,
                 min_delta: float = 0.0):
        self.patience = check_int("patience", patience, 1)
        self.tracker = Monitor(monitor, mode, min_delta)
        self.wait = 0

    @property
    def stopped(self) -> bool:
        return self.wait >= self.patience

    def epoch_end(self, value: float, epoch: int, step: int = 0) -> bool:
        """Record the monitored ``value`` after ``epoch`` (with ``train.val_every``: after each
        validation, so ``patience`` counts validations); True when training must stop."""
        if self.tracker.update(value, epoch, step):
            self.wait = 0
        else:
            self.wait += 1
        return self.stopped

    def reason(self, used: str) -> str:
        """Why training stopped, naming ``used`` (the metric read), for the end-of-run message."""
        t = self.tracker
        return (f"early stopping: {used} has not improved for {self.wait} epoch(s) "
                f"(best {t.best:.6g} at epoch {t.best_epoch}, patience {self.patience})")

    def state(self) -> dict[str, Any]:
        """:meth:`Monitor.state` plus ``wait``, the epochs since the last improvement."""
        return {**self.tracker.state(), "wait": self.wait}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (ignored, as by :meth:`Monitor.load_state`, for another monitor or mode)."""
        if state.get("monitor") == self.tracker.monitor and state.get("mode") == self.tracker.mode:
            self.tracker.load_state(state)
            self.wait = check_int("wait", state.get("wait", 0), 0)
