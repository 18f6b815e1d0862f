"""The training state: everything a checkpoint holds and a resumed run restores.

:class:`TrainState` owns both directions: :meth:`TrainState.save` writes the model's
parameters and buffers, the optimizer state and the metadata (epoch, step, schedule,
best value, early stopping, every random generator, run id) that
:meth:`TrainState.restore` reads back, so a field added to one is added beside the other,
and a resumed run equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnncli import checkpoint
from cnncli.assemble import make_augment_rng, make_optimizer, make_rngs, make_schedule
from cnncli.callbacks import EarlyStopping, Monitor, resolve_monitor
from cnncli.checks import check_float
from cnncli.config import Config
from cnncli.errors import CheckpointError, OutputError
from cnncli.loop import Tally
from cnncli.model import Model
from cnncli.optim import Optimizer
from cnncli.schedules import Schedule


@dataclass
class TrainState:
    """The model and everything else that changes while it trains.

    Attributes:
        cfg: The resolved config (``data.mean``/``std`` as numbers, absolute paths).
        config: ``cfg`` as the plain dict checkpoints and config.yaml record, with the input
            shape, the run folder and the monitors actually read (``train_*`` when there is
            no validation split).
        model, optimizer, schedule: What trains, and how.
        best: The ``train.checkpoint.monitor`` tracker (best.npz).
        early: The early-stopping tracker, or None.
        shuffle_rng, augment_rng: The shuffling and augmentation generators (the model's
            own ``rng`` draws weights and dropout masks).
        run_dir, run_id: The run folder and the id that ties its files together.
        epoch: Epochs finished. step: Optimizer steps taken. batch: Batches of the current
            epoch done (0 between epochs). metrics: The last finished epoch's metrics.
        tally: The running training sums since the last metrics line (``loop.Tally``): of the
            current epoch, or with ``train.val_every`` since the last validation.
        epoch_shuffle: The shuffling generator's state before it drew the current epoch's
            order (redrawn from it on a mid-epoch resume).
        augment_after: The augmentation generator's state after the draws of the last batch
            trained (the background thread may already have drawn the next one's).
    """

    cfg: Config
    config: dict[str, Any]
    model: Model
    optimizer: Optimizer
    schedule: Schedule
    best: Monitor
    early: EarlyStopping | None
    shuffle_rng: np.random.Generator
    augment_rng: np.random.Generator
    run_dir: Path
    run_id: str
    epoch: int = 0
    step: int = 0
    batch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)
    epoch_shuffle: dict[str, Any] | None = None
    augment_after: dict[str, Any] | None = None

    @classmethod
    def create(cls, cfg: Config, resolved: Config, model: Model, n_train: int, has_val: bool, run_dir: Path,
               shuffle_rng: np.random.Generator | None = None, run_id: str | None = None) -> TrainState:
        """A fresh state for training ``model`` on ``n_train`` images as ``cfg`` says.

        Args:
            cfg: The validated config; ``resolved`` is it with the data section as found
                (``data.resolved_config``), which the checkpoints record.
            has_val: Whether there is a validation split (else monitors read ``train_*``).
            shuffle_rng: Default: the second generator of ``train.seed`` (``make_rngs``).
            run_id: Default: a new random id (a resumed run in its own folder keeps its id).
        """
        t = cfg.train
        optimizer = make_optimizer(cfg, model)
        schedule = make_schedule(cfg, optimizer.lr, n_train, has_val)
        best = Monitor(resolve_monitor(t.checkpoint.monitor, has_val), t.checkpoint.mode)
        es = t.early_stopping
        early = EarlyStopping(resolve_monitor(es.monitor, has_val), es.mode, es.patience, es.min_delta) \
            if es else None
        config = resolved.to_dict()
        config["model"]["input_shape"] = list(model.input_shape)
        rt = config["train"]
        rt["checkpoint"]["monitor"] = best.monitor
        if rt["early_stopping"] is not None:
            rt["early_stopping"]["monitor"] = early.tracker.monitor
        if "monitor" in rt["schedule"]:
            rt["schedule"]["monitor"] = resolve_monitor(rt["schedule"]["monitor"], has_val)
        # the folder actually written (a taken output.dir gives runs/x-2; a resumed run keeps its folder)
        config["output"]["dir"] = str(run_dir)
        return cls(resolved, config, model, optimizer, schedule, best, early,
                   shuffle_rng if shuffle_rng is not None else make_rngs(t.seed)[1],
                   make_augment_rng(t.seed), run_dir, run_id or uuid.uuid4().hex)

    def meta(self, **extra: Any) -> dict[str, Any]:
        """The checkpoint metadata of this state (JSON-safe), plus ``extra`` entries. Mid-epoch
        (``batch`` > 0), or with running sums not yet reported (``train.val_every``), it also
        holds ``position``: the batches done, the shuffling state the epoch's order was drawn
        from (or, between epochs, the present one) and the running sums; mid-epoch the augmentation
        generator's state is the one after the last trained batch's draws."""
        mid = self.batch > 0 or self.tally.seen > 0
        # between epochs with a window of train.val_every open: the next epoch's order is drawn
        # from the generator's present state
        shuffle = self.epoch_shuffle if self.batch > 0 else self.shuffle_rng.bit_generator.state
        position = {"batch": self.batch, "shuffle": shuffle,
                    "tally": {"seen": self.tally.seen, "loss_sum": self.tally.loss_sum,
                              "correct": self.tally.correct}} if mid else None
        augment = self.augment_after if self.batch > 0 and self.augment_after is not None \
            else self.augment_rng.bit_generator.state
        return {"epoch": self.epoch, "step": self.step, "metrics": self.metrics,
                "run_id": self.run_id, "run_dir": str(self.run_dir.resolve()),
                "optimizer": {"type": self.optimizer.type_name, "steps": self.optimizer.steps,
                              "lr": self.optimizer.lr},
                "schedule": {"type": self.cfg.train.schedule.type, "state": self.schedule.state()},
                "best": self.best.state(),
                "early_stopping": self.early.state() if self.early is not None else None,
                "rng": {"model": self.model.rng.bit_generator.state,
                        "shuffle": self.shuffle_rng.bit_generator.state,
                        "augment": augment},
                **({"position": position} if mid else {}),
                "input_shape": list(self.model.input_shape), "num_classes": self.model.output_shape[0], **extra}

    def save(self, path: Path, **extra: Any) -> None:
        """Write this state to the checkpoint ``path`` (atomically; see :func:`checkpoint.save`).

        Raises:
            OutputError: It cannot be written; the previous file there, if any, is intact.
        """
        try:
            checkpoint.save(path, params=self.model.params(), buffers=self.model.buffers(),
                            optim=self.optimizer.state_arrays(), config=self.config, meta=self.meta(**extra))
        except OSError as e:
            raise OutputError(f"cannot write {path} ({e.strerror or e}); the previous file there, if any, "
                              f"is intact. Free disk space or choose another --out.", e.errno, e.strerror) from None

    def restore(self, ck: checkpoint.Checkpoint, epoch: int, augment: bool) -> None:
        """Continue from ``ck``, a checkpoint of ``epoch`` finished epochs (as
        ``rundir.check_resume`` accepted it): parameters, buffers, optimizer state, schedule
        state (when the schedule is the same), best value, early-stopping count, step and
        every generator; for a checkpoint saved mid-epoch, its ``position`` too (the
        shuffling generator goes back to the state the epoch's order was drawn from, so the
        trainer draws the same order again). ``augment``: the run augments, so the
        checkpoint must hold the augmentation generator's state.

        Raises:
            CheckpointError: ``ck`` does not fit the model or its metadata is damaged.
        """
        meta = ck.meta
        try:
            self.model.load_arrays(ck.params, ck.buffers)
            opt_meta = meta["optimizer"]
            if opt_meta.get("type") != self.optimizer.type_name:
                raise ValueError(f"it was trained with {opt_meta.get('type')}, the config says "
                                 f"{self.optimizer.type_name}")
            self.optimizer.load_state_arrays(ck.optim, opt_meta["steps"])
            sched = meta.get("schedule") or {}
            if sched.get("type") == self.cfg.train.schedule.type:
                self.schedule.load_state(sched.get("state") or {})
            self.best.load_state(meta.get("best") or {})
            if self.early is not None:
                self.early.load_state(meta.get("early_stopping") or {})
            step = meta["step"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise ValueError(f"step is {step!r}")
            rng = meta["rng"]
            self.model.rng.bit_generator.state = rng["model"]
            self.shuffle_rng.bit_generator.state = rng["shuffle"]
            if "augment" in rng:
                self.augment_rng.bit_generator.state = rng["augment"]
            elif augment:
                raise ValueError("it holds no augmentation generator state")
            batch, tally = self._restore_position(meta.get("position"))
            if batch:                    # the lr of the last step taken, as the epoch's metrics report it
                self.optimizer.lr = check_float("lr", opt_meta["lr"], 0.0, low_open=True)
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing {e}" if isinstance(e, KeyError) else str(e)
            raise CheckpointError(f"{ck.path}: cannot resume from it: {what}") from None
        self.epoch, self.step, self.batch, self.tally = epoch, step, batch, tally
        self.metrics = meta["metrics"] if isinstance(meta.get("metrics"), dict) else {}

    def _restore_position(self, position: Any) -> tuple[int, Tally]:
        """(batches done, running sums) of a mid-epoch checkpoint's ``position`` ((0, empty)
        without one); sets the shuffling generator to the state the epoch's order came from.

        Raises:
            ValueError, TypeError, KeyError: A malformed position.
        """
        if position is None:
            return 0, Tally()
        batch, sums = position["batch"], position["tally"]
        counts = (batch, sums["seen"], sums["correct"])
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in counts):
            raise ValueError(f"position {position!r} is not batches and counts >= 0")
        loss_sum = sums["loss_sum"]
        if isinstance(loss_sum, bool) or not isinstance(loss_sum, (int, float)):
            raise ValueError(f"position loss_sum is {loss_sum!r}")
        self.shuffle_rng.bit_generator.state = position["shuffle"]
        return batch, Tally(sums["seen"], float(loss_sum), sums["correct"])
