"""The fit loop: it emits events (:mod:`cnncli.events`) and never prints.

Flow: ``config.load`` -> ``data.prepare_data`` -> ``assemble.build_model`` ->
``fit(..., on_event=reporter)``; :func:`train` is that whole job, as ``cnncli train`` runs
it. The run folder's files are written by a subscriber (``rundir.RunWriter``), the
training state is saved and restored by ``state.TrainState``, and one batch loop
(``loop.run_batches``) serves training and evaluation.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnncli import checkpoint
from cnncli.assemble import build_model, check_augment, check_batch, check_fits
from cnncli.augment import Augment
from cnncli.config import Config
from cnncli.data import Data, pixel_lut, prepare_data, resolved_config
from cnncli.errors import CheckpointError, CnncliError, DivergedError, TrainingError
from cnncli.events import (BatchEnded, EpochEnded, EpochStarted, Event, EventHandler,  # noqa: F401 (re-exported)
                           RunEnded, RunStarted, ValidationEnded)
from cnncli.loop import EvalResult, Tally, evaluate, run_batches
from cnncli.model import Model
from cnncli.optim import Optimizer
from cnncli import runlock, threads
from cnncli.rundir import (RunWriter, check_resume, check_resume_in_place, lock_run_dir, new_run_dir, repair,
                           resume_changes, same_folder, start_branch)
from cnncli.schedules import Schedule, run_epochs, steps_per_epoch
from cnncli.state import TrainState


class TrainingInterrupted(CnncliError):
    """Ctrl-C during training; the state was saved to ``path``. ``resume_from`` is the
    checkpoint that continues the run exactly (``last.npz``), None if no epoch finished or
    the run is ``complete`` (every epoch was trained; ``path`` is then its ``last.npz``)."""

    exit_code = 130

    def __init__(self, message: str, path: Path, resume_from: Path | None = None, complete: bool = False):
        super().__init__(message)
        self.path = path
        self.resume_from = resume_from
        self.complete = complete



def train(cfg: Config, on_event: EventHandler, *, resume: str | Path | None = None, branch: bool = False,
          overwrite: bool = False, batch_size_flag: str | None = None,
          weights: str | Path | None = None) -> RunEnded:
    """The whole ``cnncli train`` job: check, read the data, build, pick the run folder, fit.

    Everything that can be refused is refused before a run folder is made or changed: a
    checkpoint that cannot continue this config, a model whose geometry fails (before any
    data is read, when ``model.input_shape`` is given), the data, a batch size the model
    cannot take.

    Args:
        cfg: The validated config (``config.load``).
        on_event: Called with every event (:mod:`cnncli.events`), e.g. a ``report.TrainReporter``.
        resume: A checkpoint (``RUN/last.npz``) whose run continues: in its own folder, or
            with ``branch`` in a new folder (``output.dir``), carrying its history over.
        overwrite: Reuse ``output.dir`` even if it holds a run (never with ``resume``).
        batch_size_flag: The command-line flag that set ``train.batch_size``, if one did
            (named in a refusal instead of the config key).
        weights: Start from these weights instead of fresh ones (Caffe's ``--weights``): a
            cnncli checkpoint or a PyTorch-layout safetensors file
            (:func:`cnncli.export.weights.load_weights`); the run is new (epoch 1, a fresh
            optimizer and schedule), unlike ``resume``.

    Returns:
        The :class:`~cnncli.events.RunEnded` event.

    Raises:
        CnncliError: Any refusal (exit 2), see :func:`fit`; ``TrainingInterrupted`` on Ctrl-C.
    """
    if resume is not None and overwrite:
        raise CnncliError("--resume never overwrites a run folder: drop --overwrite (without --out the run "
                          "continues in the checkpoint's own folder; with --out NEWDIR in a new one)")
    if resume is not None and weights is not None:
        raise CnncliError("--weights starts a new run from trained weights, --resume continues a run where it "
                          "stopped: give one of them")
    ck = None
    if resume is not None:
        ck = checkpoint.load(resume)
        if not branch:
            lock_run_dir(ck.path.parent)      # one writer per run folder: never resume a live run
        try:
            check_resume(cfg, ck)             # a wrong or finished checkpoint fails before data is read
        except CheckpointError as e:
            raise _mended(e, ck) if not branch else e from None
        if not branch:
            check_resume_in_place(ck)         # never overwrite another folder's files nor rewind a run
    # with a declared input shape, bad geometry fails before any data is read
    model = build_model(cfg) if cfg.model.input_shape is not None else None
    data = prepare_data(cfg)
    if model is None:
        model = build_model(cfg, data.train.image_shape, num_classes=data.num_classes)
    else:
        check_fits(cfg, model, data.train.image_shape, data.num_classes)
    if weights is not None:
        from cnncli.export.weights import load_weights

        load_weights(weights, model)          # refused weights leave no run folder behind
    # refused batch sizes leave no run folder behind
    check_batch(model, min(cfg.train.batch_size, len(data.train)),
                *((batch_size_flag, None) if batch_size_flag else ("train.batch_size", cfg.source)))
    if ck is not None and not branch:
        run_dir = ck.path.parent
    else:
        run_dir = new_run_dir(cfg.output.dir, overwrite=overwrite)
        if ck is not None:
            start_branch(ck, run_dir)         # a resumed run branched into a new folder
    return fit(cfg, model, data, run_dir, on_event, resume=ck)


def _mended(e: CheckpointError, ck: checkpoint.Checkpoint) -> CheckpointError:
    """``e`` (a refused resume, e.g. of a finished run) after mending the checkpoint's run folder
    as a resumed run would (``rundir.repair``), when it is that run's folder and ``ck`` its latest
    state: a kill after the last epoch's ``last.npz`` leaves nothing to train but may leave
    ``best.npz`` behind it. Says what was mended."""
    try:
        check_resume_in_place(ck)
    except CheckpointError:
        return e
    done = repair(ck)
    return CheckpointError(f"{e} (The run folder was mended: {'; '.join(done)}.)") if done else e


def fit(cfg: Config, model: Model, data: Data, run_dir: Path, on_event: EventHandler,
        shuffle_rng: np.random.Generator | None = None,
        resume: checkpoint.Checkpoint | None = None) -> RunEnded:
    """Train ``model`` for ``cfg.train.epochs`` epochs, checkpointing into ``run_dir``.

    Writes (through ``rundir.RunWriter``) ``config.yaml`` (resolved), ``metrics.jsonl`` (one
    JSON line per epoch: losses, accuracies, lr; no timings, so a run with the same config
    and seed writes the same bytes), ``timing.jsonl`` (seconds and images/s per epoch),
    ``last.npz`` every epoch, ``best.npz`` when ``train.checkpoint.monitor`` improves (its
    ``train_*`` counterpart when there is no validation split) and ``epoch_{k}.npz`` every
    ``train.checkpoint.every`` epochs. Each epoch the lr follows ``train.schedule``,
    gradients are clipped to ``train.grad_clip_norm`` and training batches pass through
    ``data.augment``; early stopping may end the run. At the end the best checkpoint is
    reloaded and evaluated on the test split.

    With ``resume`` (an end-of-epoch checkpoint accepted by ``rundir.check_resume``), the
    run continues after its epoch: ``TrainState.restore`` brings back everything that
    changes while training, so the result equals an uninterrupted run bit for bit, and the
    metrics files keep their lines up to that epoch.

    Raises:
        ConfigError: ``data.augment`` the input cannot take; a batch size refused by
            ``assemble.check_batch``.
        TrainingError: NaN/inf loss (``last.npz`` keeps the last good epoch).
        TrainingInterrupted: Ctrl-C (after the current batch, the state is saved to
            ``interrupted.npz``; ``last.npz`` keeps the last finished epoch).
        CheckpointError: ``resume`` does not fit the model.
        OutputError: A file of the run folder cannot be written.
    """
    t = cfg.train
    check_augment(cfg, model.input_shape)
    check_batch(model, min(t.batch_size, len(data.train)), source=cfg.source)
    resolved = resolved_config(cfg, data)   # numbers for data.mean/std: auto, computed once, is recorded for eval
    # a run id ties a folder's files together: resuming in the checkpoint's own folder keeps it
    in_place = resume is not None and same_folder(resume.path.parent, run_dir)
    run_id = resume.meta.get("run_id") if in_place and isinstance(resume.meta.get("run_id"), str) else None
    state = TrainState.create(cfg, resolved, model, len(data.train), data.val is not None, run_dir,
                              shuffle_rng, run_id)
    a = cfg.data.augment
    augment = Augment(a.translate, a.hflip, a.rotate, a.zoom, a.erase, rng=state.augment_rng)
    if resume is not None:
        state.restore(resume, check_resume(resolved, resume), augment.active)
    lock_run_dir(run_dir)                   # one writer per run folder, for the run's life
    try:
        repaired = tuple(repair(resume)) if in_place else ()
        writer = RunWriter(state, t.checkpoint.every, t.checkpoint.every_steps)
        emit = _broadcast(writer, on_event)
        steps = steps_per_epoch(len(data.train), t.batch_size)   # less a last batch of one image, left out
        emit(RunStarted(run_dir, run_epochs(t.epochs, t.max_steps, steps), steps, len(data.train),
                        len(data.val or ()), len(data.test or ()), model.num_params(), state.epoch,
                        tuple(resume_changes(resolved, resume)) if resume is not None else (),
                        int(steps < math.ceil(len(data.train) / t.batch_size)), repaired, t.max_steps,
                        t.val_every, state.step))
        t_run = time.perf_counter()
        lut = pixel_lut(resolved.data.mean, resolved.data.std, model.dtype, resolved.data.scale)
        with threads.limit(t.threads):
            stopped_early = _epochs(state, data, lut, augment if augment.active else None, emit, writer)
            test = _test(state, data, lut)
        end = RunEnded(run_dir, state.best.best_epoch, run_dir / "best.npz", run_dir / "last.npz", test,
                       time.perf_counter() - t_run, stopped_early, state.best.best_step)
        emit(end)
        return end
    finally:
        runlock.release(run_dir)


def _epochs(state: TrainState, data: Data, lut: np.ndarray, augment: Augment | None, emit: EventHandler,
            writer: RunWriter) -> str | None:
    """Train the epochs left (up to ``train.max_steps`` steps, if set), validating after each
    epoch or, with ``train.val_every``, after every ``val_every``-th step and the last one;
    return why early stopping ended the run (None if it did not).

    Raises:
        TrainingInterrupted: Ctrl-C (see :func:`_interrupted`).
    """
    t = state.cfg.train
    total = run_epochs(t.epochs, t.max_steps, state.schedule.steps_per_epoch)
    stepper = _Stepper(state.optimizer, state.schedule, t.grad_clip_norm)
    interrupt = _DeferredInterrupt()
    window = _Window(state, data, lut, emit)
    try:
        with interrupt:
            for epoch in range(state.epoch + 1, total + 1):
                emit(EpochStarted(epoch, total))
                loss, acc, t0, train_seconds = _train_epoch(state, data, epoch, lut, stepper, augment, emit,
                                                            interrupt, window)
                metrics = _metrics(state, data, lut, epoch, loss, acc) if t.val_every is None else None
                state.epoch, state.batch = epoch, 0
                if metrics is not None:
                    seconds = time.perf_counter() - t0
                    is_best, stop = _judge(state, metrics, epoch)
                    state.metrics = metrics
                    state.tally.reset()
                    emit(EpochEnded(epoch, total, metrics, seconds, is_best,
                                    len(data.train) / max(train_seconds, 1e-9), train_seconds))
                    if stop:
                        return state.early.reason(state.early.tracker.monitor)
                interrupt.check()
    except _EarlyStop as e:
        return e.reason
    except KeyboardInterrupt:
        raise _interrupted(state, writer, interrupt.forced) from None
    return None


class _EarlyStop(Exception):
    """Early stopping ended the run at a validation inside an epoch (``train.val_every``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _judge(state: TrainState, metrics: dict[str, Any], epoch: int) -> tuple[bool, bool]:
    """Give a validation's ``metrics`` to the schedule (``reduce_on_plateau``), the best
    tracker and early stopping; return (is a new best, early stopping says stop)."""
    state.schedule.epoch_end(metrics)
    is_best = state.best.update(metrics[state.best.monitor], epoch, state.step)
    stop = state.early.epoch_end(metrics[state.early.tracker.monitor], epoch, state.step) \
        if state.early is not None else False
    return is_best, stop


def _metrics(state: TrainState, data: Data, lut: np.ndarray, epoch: int, loss: float, acc: float
             ) -> dict[str, Any]:
    """One metrics.jsonl line: ``epoch`` (the epoch the last step belongs to), ``step``, the
    training means ``loss`` and ``acc``, the lr, and the validation split's loss and accuracy.

    Raises:
        TrainingError: A parameter or buffer became NaN/inf.
    """
    try:
        _check_finite(state.model)
    except TrainingError as e:
        raise _stopped(e, state, epoch) from None
    metrics = {"epoch": epoch, "step": state.step, "train_loss": loss, "train_accuracy": acc,
               "lr": state.optimizer.lr}
    if data.val is not None:
        t, model = state.cfg.train, state.model
        val = evaluate(model, data.val, t.eval_batch_size, lut, model.output_shape[0])
        metrics.update(val_loss=val.loss, val_accuracy=val.accuracy)
    return metrics


class _Window:
    """With ``train.val_every``: after each step, validate when the step is a multiple of
    ``val_every`` or the run's last (``schedule.total_steps``), averaging the training sums
    since the previous validation (``state.tally``, then reset), and emit ``ValidationEnded``
    (``rundir.RunWriter`` commits it); raise :class:`_EarlyStop` when early stopping says so.
    Without ``val_every`` it only keeps the time an epoch's validation started from."""

    def __init__(self, state: TrainState, data: Data, lut: np.ndarray, emit: EventHandler):
        self.state, self.data, self.lut, self.emit = state, data, lut, emit
        self.since = time.perf_counter()
        self.images = 0

    def after_step(self, epoch: int, images: int, epoch_done: bool) -> None:
        """Called after each training step of ``images`` images in epoch ``epoch`` (1-based);
        ``epoch_done``: it was the epoch's last (a validation there commits the finished epoch,
        with no mid-epoch position, so a run that ends there is finished for ``--resume``)."""
        state, every = self.state, self.state.cfg.train.val_every
        self.images += images
        total = state.schedule.total_steps
        if every is None or (state.step % every and state.step < total):
            return
        train_seconds = time.perf_counter() - self.since
        if epoch_done:
            state.epoch, state.batch = epoch, 0
        tally = state.tally
        metrics = _metrics(state, self.data, self.lut, epoch, tally.loss_sum / max(tally.seen, 1),
                           tally.correct / max(tally.seen, 1))
        is_best, stop = _judge(state, metrics, epoch)
        state.metrics = metrics
        tally.reset()
        now = time.perf_counter()
        self.emit(ValidationEnded(epoch, state.step, total, metrics, now - self.since, is_best,
                                  self.images / max(train_seconds, 1e-9), train_seconds))
        self.since, self.images = now, 0
        if stop:
            raise _EarlyStop(state.early.reason(state.early.tracker.monitor))


def _test(state: TrainState, data: Data, lut: np.ndarray) -> EvalResult | None:
    """The best checkpoint (``last.npz`` if there is none) evaluated on the test split, if any.

    Raises:
        TrainingInterrupted: Ctrl-C; the run is complete, only this evaluation was cut short.
    """
    if data.test is None:
        return None
    best_path, last_path = state.run_dir / "best.npz", state.run_dir / "last.npz"
    path = best_path if best_path.exists() else last_path
    try:
        ck = checkpoint.load(path)
        state.model.load_arrays(ck.params, ck.buffers)
        return evaluate(state.model, data.test, state.cfg.train.eval_batch_size, lut, state.model.output_shape[0])
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"interrupted during the test evaluation; the run is complete ({state.epoch} "
                                  f"epochs, {last_path}). Measure it with: cnncli eval {path}",
                                  last_path, None, complete=True) from None


def _broadcast(*handlers: EventHandler) -> EventHandler:
    """One handler that calls ``handlers`` in order with each event."""
    def emit(event: Event) -> None:
        for handler in handlers:
            handler(event)
    return emit


def _train_epoch(state: TrainState, data: Data, epoch: int, lut: np.ndarray, stepper: _Stepper,
                 augment: Augment | None, emit: EventHandler, interrupt: _DeferredInterrupt, window: _Window
                 ) -> tuple[float, float, float, float]:
    """Train one epoch (or what is left of it, up to ``train.max_steps``); return (mean loss,
    accuracy, its start time, training seconds); ``window`` validates after steps with
    ``train.val_every``.

    Raises:
        TrainingError: The loss or a parameter became NaN/inf, or a batch was refused; the
            message says where and what ``last.npz`` keeps.
    """
    t, model = state.cfg.train, state.model
    t0 = time.perf_counter()
    # the order is drawn from this state: a mid-epoch checkpoint holds it, to draw the same order
    state.epoch_shuffle = state.shuffle_rng.bit_generator.state
    order = state.shuffle_rng.permutation(len(data.train))
    stepper.epoch = epoch - 1
    start = state.batch
    if start == 0:                       # (resumed mid-epoch, the lr is the last step's, restored)
        stepper.set_lr()
    recorder = _AugmentRecorder(augment) if augment is not None else None
    stop = None if t.max_steps is None else start + t.max_steps - state.step

    def on_batch(b: int, n_batches: int, loss: float, acc: float) -> None:
        state.step += 1
        state.batch = b + 1
        if recorder is not None:
            state.augment_after = recorder.after.pop(0)    # batch b's draws (b + 1's may be done too)
        seen = min((b + 1) * t.batch_size, len(data.train))
        emit(BatchEnded(epoch, b + 1, n_batches, loss, acc, seen / max(time.perf_counter() - t0, 1e-9),
                        state.optimizer.lr, state.step))
        window.after_step(epoch, min(t.batch_size, len(data.train) - b * t.batch_size), b + 1 == n_batches)
        interrupt.check()

    try:
        train_loss, train_acc, _ = run_batches(model, data.train, t.batch_size, lut, training=True, order=order,
                                               optimizer=stepper, label_smoothing=t.label_smoothing,
                                               on_batch=on_batch, augment=recorder, start=start,
                                               tally=state.tally, stop=stop)
    except TrainingError as e:
        raise _stopped(e, state, epoch) from None
    return train_loss, train_acc, t0, time.perf_counter() - t0


def _stopped(e: TrainingError, state: TrainState, epoch: int) -> TrainingError:
    """``e`` (raised in epoch ``epoch``) restated with where training stopped, what ``last.npz``
    keeps and, for a diverged run, what to change."""
    t = state.cfg.train
    last_path = state.run_dir / "last.npz"
    kept = f"{last_path} keeps epoch {state.epoch}" if state.epoch else "no checkpoint was written"
    hint = ""
    if isinstance(e, DivergedError):
        clip = (f"a lower train.grad_clip_norm (now {t.grad_clip_norm:g})" if t.grad_clip_norm
                else "train.grad_clip_norm (e.g. 1.0) to clip the gradients")
        hint = f" Try a lower train.optimizer.lr (now {state.optimizer.lr:g}) or set {clip}."
    at = f"epoch {epoch}" if getattr(e, "end_of_epoch", False) else f"epoch {epoch}, step {state.step + 1}"
    return type(e)(f"{at}: {e}. Training stopped; {kept}.{hint}")


def _interrupted(state: TrainState, writer: RunWriter, forced: bool = False) -> TrainingInterrupted:
    """Ctrl-C stopped training: save the state where it stopped to ``interrupted.npz`` (beside
    ``last.npz``, which keeps ``committed``, the last epoch whose files were all written;
    meta epoch = epochs finished, batch = batches of the next epoch done, ``position`` for
    :meth:`TrainState.restore`) and say so; after the last epoch, say that the run is
    complete instead. ``forced``: a second Ctrl-C cut a step short, so the state saved is
    marked ``partial`` and the run resumes from ``last.npz`` only.

    ``resume_from`` is ``last.npz`` when nothing was trained since its commit, else the
    interrupted checkpoint (None when it is partial and no epoch was committed)."""
    stopped, last_path = state.run_dir / "interrupted.npz", state.run_dir / "last.npz"
    t, committed = state.cfg.train, writer.committed
    by_steps = t.max_steps is not None or t.val_every is not None     # commits at validation steps
    if (writer.committed_step >= state.schedule.total_steps) if by_steps else committed >= t.epochs:
        done = f"{writer.committed_step} steps" if by_steps else f"{committed} epochs"
        return TrainingInterrupted(f"interrupted after the last {'step' if by_steps else 'epoch'}; the run is complete ({done}, "
                                   f"{last_path}; the test evaluation was skipped). Measure it with: cnncli eval "
                                   f"{state.run_dir / 'best.npz'}", last_path, None, complete=True)
    finished, batch = state.epoch, state.batch
    state.save(stopped, interrupted=True, batch=batch, **({"partial": True} if forced else {}))
    kept = f"; {last_path} keeps epoch {committed}" if committed else ""
    if by_steps and writer.committed_step > 0:
        kept = f"; {last_path} keeps step {writer.committed_step} (its last validation)"
    where = f"during epoch {finished + 1} (batch {batch})" if batch else f"after epoch {finished}"
    at_commit = writer.committed_step == state.step > 0 if by_steps else \
        batch == 0 and committed == finished and committed > 0
    resume_from = (last_path if committed or writer.committed_step > 0 else None) if forced or at_commit else stopped
    how = " (a second Ctrl-C cut a step short: it cannot be resumed)" if forced else ""
    return TrainingInterrupted(f"interrupted at step {state.step}, {where}; the state was saved to {stopped}{how}"
                               f"{kept}", stopped, resume_from)


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
        # the optimizer's parameters only: a frozen layer's gradients neither step nor count in the clipped norm
        grads = {k: grads[k] for k in self.optimizer.params}
        if self.clip_norm is not None:
            grads, _ = clip_grad_norm(grads, self.clip_norm)
        self.set_lr()
        self.optimizer.step(grads)


class _AugmentRecorder:
    """``augment`` that records its generator's state after each batch's draws (in ``after``,
    oldest first): ``run_batches`` prepares batch b + 1 in a background thread while batch b
    trains, so when batch b ends the generator may be past b + 1's draws, and a checkpoint
    must hold the state between the two."""

    def __init__(self, augment: Augment):
        self.augment = augment
        self.after: list[dict[str, Any]] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = self.augment(images)
        self.after.append(self.augment.rng.bit_generator.state)
        return out


class _DeferredInterrupt:
    """Ctrl-C during training: the first SIGINT lets the current batch finish (so the saved
    state is one the optimizer completed, never a half-applied step) and :meth:`check` then
    raises KeyboardInterrupt; a second SIGINT raises it at once. Only in the main thread
    (elsewhere signals cannot be caught and KeyboardInterrupt behaves as usual)."""

    def __init__(self):
        self.requested = False
        self.forced = False         # the second SIGINT raised at once, maybe mid-step
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum, frame):
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
                self._installed = True
            except (ValueError, OSError):      # pragma: no cover - e.g. embedded interpreters
                self._installed = False
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False
        return False
