"""The run folder: where it is, what is in it, and whether a checkpoint may continue it.

A run folder holds ``config.yaml`` (first line ``# cnncli run RUN_ID``), ``metrics.jsonl``,
``timing.jsonl`` and the checkpoints. :class:`RunWriter` writes them as the trainer's
events arrive; :func:`new_run_dir` picks a free folder; :func:`check_resume`,
:func:`check_resume_in_place` and :func:`start_branch` decide how a checkpoint continues
its run (in place, never rewinding it, or branched into a new folder);
:func:`resume_changes` lists what changed since.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cnncli import checkpoint, runlock
from cnncli.callbacks import EarlyStopping, resolve_monitor
from cnncli.config import Config
from cnncli.config_data import AugmentConfig
from cnncli.config_sections import defaults_of
from cnncli.errors import CheckpointError, OutputError
from cnncli.events import BatchEnded, EpochEnded, RunStarted, ValidationEnded
from cnncli.layers import LAYERS

if TYPE_CHECKING:
    from cnncli.state import TrainState


#: The first line of a run folder's config.yaml, followed by the run id.
RUN_HEADER = "# cnncli run "

#: What a run writes into its folder (removed first by ``--overwrite``, the commit record
#: ``last.npz`` first, so a kill while removing never leaves a resumable-looking half).
RUN_FILES = ("last.npz", "config.yaml", "metrics.jsonl", "timing.jsonl", "best.npz", "interrupted.npz")


def new_run_dir(base: str | Path, overwrite: bool = False) -> Path:
    """``base`` if it is free (or ``overwrite``), else the first free ``base-2``, ``base-3``, ...;
    locked for this process (:mod:`cnncli.runlock`) before it is returned.

    A run folder is never overwritten silently (Ultralytics' ``exp2`` rule). With
    ``overwrite`` the previous run's files (config, checkpoints, metrics) are removed first,
    so the folder never mixes two runs. Picking is atomic: a folder is taken by creating it
    or, when it exists empty (or ``overwrite``), by locking it, so two runs started together
    with the same ``base`` get two folders.

    Raises:
        OutputError: ``base`` is an existing file, the folder cannot be created or written, or
            (``overwrite``) another process is writing it.
    """
    base = Path(base)
    path, k = base, 1
    try:
        if base.exists() and not base.is_dir():
            raise OutputError(f"{base}: exists and is not a folder; choose a run folder with --out")
        while not _claim(path, overwrite):
            k += 1
            path = base.with_name(f"{base.name}-{k}")
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
        runlock.release(path)
        raise OutputError(f"{path}: cannot write the run folder ({e.strerror or e}). "
                          f"Choose another with --out.") from None
    return path


def _claim(path: Path, overwrite: bool) -> bool:
    """Take ``path`` for a new run: create it, or lock it if it exists and is empty (any
    existing folder with ``overwrite``); False if it is taken.

    Raises:
        OutputError: ``overwrite`` of a folder another process is writing.
        OSError: The folder cannot be created or locked.
    """
    try:
        path.mkdir(parents=True)
        created = True
    except FileExistsError:
        if not path.is_dir() or not (overwrite or not any(path.iterdir())):
            return False
        created = False
    try:
        runlock.acquire(path)
    except runlock.FolderBusy as e:
        if overwrite:
            raise OutputError(f"{path}: {e}; --overwrite cannot replace a run that is still being written. "
                              f"Wait for it to end, stop it, or choose another --out.") from None
        return False
    if not created and not overwrite and any(path.iterdir()):   # another run filled it meanwhile
        runlock.release(path)
        return False
    return True


def lock_run_dir(folder: Path) -> None:
    """Lock ``folder``, a run folder about to be written (a resumed run's own folder, or one
    ``fit`` is given), for this process (no-op if it already holds it).

    Raises:
        CheckpointError: Another process is writing it, named by its PID.
    """
    try:
        runlock.acquire(folder)
    except runlock.FolderBusy as e:
        raise CheckpointError(f"{e}: one run writes a run folder at a time, so this one cannot write there "
                              f"while it trains. Wait for it to end (or stop it), or choose another --out.") from None
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot open the run folder ({e.strerror or e})") from None


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy the file ``src`` to ``dst`` atomically (a temporary beside ``dst``, then a rename)."""
    with open(src, "rb") as f:
        checkpoint.atomic_write(dst, lambda out: shutil.copyfileobj(f, out))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: a temporary file, then a rename."""
    checkpoint.atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _layer_signature(item: Any) -> tuple[str, dict[str, Any]]:
    """A ``model.layers`` item of ``Config.to_dict`` as (canonical type, every option with
    defaults filled, the constructor's and ``model.PARAM_OPTIONS``), so that ``- bn`` and
    ``- batchnorm: {eps: 1.0e-5}`` compare equal, and ``- linear: {out_features: 10}`` and
    ``- linear: {out_features: 10, trainable: true}``."""
    from cnncli.model import PARAM_OPTIONS

    name, opts = (item, {}) if isinstance(item, str) else next(iter(item.items()))
    try:
        cls = LAYERS.get(name)
    except KeyError:
        return str(name), dict(opts or {})
    full = {n: default for n, (_, default) in PARAM_OPTIONS.items()}
    full.update({n: p.default for n, p in LAYERS.options(cls).items()})
    full.update(opts or {})
    return cls.type_name, full


def check_resume(cfg: Config, ck: checkpoint.Checkpoint) -> int:
    """Check that ``ck`` can continue the run ``cfg`` describes; return its finished epochs.

    Raises:
        CheckpointError: A checkpoint saved mid-epoch without the data-order position
            (``TrainState.meta``) or by a second Ctrl-C mid-step, one without resume metadata, a model that differs from ``cfg``'s layers, or a run
            with nothing left to do (``train.epochs`` reached, or early stopping triggered).
    """
    meta, path = ck.meta, ck.path
    epoch = meta.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"{path}: corrupt 'meta' entry: epoch is {epoch!r}; cannot resume from it")
    if meta.get("interrupted") and (meta.get("partial") or (meta.get("batch") and "position" not in meta)):
        # a step cut short by a second Ctrl-C, or a mid-epoch state of a cnncli that kept no position
        last = path.parent / "last.npz"
        if last.is_file():
            try:
                current = checkpoint.load(last).meta.get("epoch")
                if isinstance(current, int) and not isinstance(current, bool):
                    epoch = current
            except CheckpointError:
                pass
        why = ("a second Ctrl-C cut its last step short" if meta.get("partial") else
               "it holds no data-order position (saved by an older cnncli)")
        raise CheckpointError(f"{path}: the state where Ctrl-C stopped training, but {why}, so it cannot continue "
                              f"the run exactly. Resume from {path.parent / 'last.npz'} (epoch {epoch})."
                              if epoch else
                              f"{path}: the state where Ctrl-C stopped training, but {why}, and no epoch had "
                              f"finished before it; there is nothing to resume. Start the run again.")
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
    total, max_steps, step = cfg.train.epochs, cfg.train.max_steps, _step(meta)
    if max_steps is not None and step is not None and step >= max_steps:
        raise CheckpointError(f"{path}: the run has taken {step} step(s) and train.max_steps is {max_steps}: nothing "
                              f"left to do. Raise the total to continue: --set train.max_steps=N with N > {step}.")
    if max_steps is None and epoch >= total:
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



def same_folder(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file or folder (False if either cannot be resolved)."""
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
_RESUME_KEYS = ("data.path", "data.name", "data.train_limit", "data.val_split", "data.validate_on", "data.test_limit",
                "data.mean", "data.std", "data.scale", "data.augment", "train.epochs", "train.batch_size", "train.optimizer",
                "train.schedule", "train.grad_clip_norm", "train.label_smoothing")


def resume_changes(cfg: Config, ck: checkpoint.Checkpoint) -> list[str]:
    """The data and training settings of ``cfg`` that differ from those the checkpoint's run
    was trained with, as ``key: old -> new`` strings (a resumed run takes the config's).
    Mappings (optimizer, schedule, augment) are compared key by key; an augmentation key the
    stored config lacks (a run from before it existed) counts as its default, off; ``auto``
    normalization is compared once computed, so it is not listed."""
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
        if key == "data.augment" and isinstance(old, dict):
            old = {**defaults_of(AugmentConfig), **old}
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
    path, folder = ck.path, ck.path.parent
    fix = (f"To continue from this checkpoint, branch into a new run folder: add --out NEWDIR "
           f"(nothing in {folder} is changed).")
    last = folder / "last.npz"
    if ck.meta.get("interrupted") and ck.meta.get("run_id") is not None \
            and _header_run_id(folder) == ck.meta.get("run_id"):
        _check_not_behind(ck, last, fix)      # Ctrl-C's state: newer than last.npz (each commit removes it)
        return
    if not last.is_file():
        raise CheckpointError(f"{path}: its folder {folder} is not this checkpoint's run folder (no last.npz "
                              f"there); resuming in place would overwrite config.yaml, metrics.jsonl and best.npz "
                              f"in it. {fix}")
    same_file = same_folder(path, last)
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


def _check_not_behind(ck: checkpoint.Checkpoint, last: Path, fix: str) -> None:
    """Refuse ``ck`` (an ``interrupted.npz``) when the run's ``last.npz`` is of another run or
    later than it (resuming would rewind the run)."""
    if not last.is_file():
        return
    try:
        latest = checkpoint.load(last)
    except CheckpointError as e:
        raise CheckpointError(f"{ck.path}: cannot check that {last.parent} is its run folder: {e}. {fix}") from None
    step, mine = latest.meta.get("step"), ck.meta.get("step")
    if latest.meta.get("run_id") != ck.meta.get("run_id") or not isinstance(step, int) \
            or not isinstance(mine, int) or step > mine:
        raise CheckpointError(f"{ck.path}: {last} holds a later state of the run (step {step}, this one {mine}) "
                              f"or another run's; resuming in place would rewind it. Resume from {last}, or "
                              f"{fix[0].lower()}{fix[1:]}")


def start_branch(ck: checkpoint.Checkpoint, run_dir: Path) -> None:
    """Prepare the new run folder ``run_dir`` of a run continued from ``ck`` elsewhere
    (``--resume CK --out NEWDIR``): the metrics and timing lines of epochs 1..k and the
    best checkpoint so far are carried over when ``ck``'s folder verifiably holds its run."""
    src = ck.path.parent
    run_id = ck.meta.get("run_id")
    if run_id is None or _header_run_id(src) != run_id:
        return
    epoch = ck.meta.get("epoch")
    for name in ("metrics.jsonl", "timing.jsonl"):
        rows = read_rows(src / name, epoch, committed_step(ck.meta.get("metrics"), _step(ck.meta)))
        if rows:
            write_rows(run_dir / name, rows)
    best = ck.meta.get("best") or {}
    best_epoch, best_step = best.get("best_epoch"), best.get("best_step")
    if _holds_best(ck.meta):
        copy_atomic(ck.path, run_dir / "best.npz")
    elif (src / "best.npz").is_file():
        try:
            best = checkpoint.load(src / "best.npz")
        except Exception:  # noqa: BLE001 - a damaged best.npz is simply not carried over
            return
        same = (best.meta.get("step") == best_step) if best_step else best.meta.get("epoch") == best_epoch
        if best.meta.get("run_id") == run_id and same:
            copy_atomic(src / "best.npz", run_dir / "best.npz")


def _step(meta: dict[str, Any]) -> int | None:
    """A checkpoint's ``step`` (None if it has none)."""
    step = meta.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def committed_step(line: Any, step: int | None) -> int | None:
    """The step up to which the lines of ``metrics.jsonl`` and ``timing.jsonl`` belong to a
    checkpoint of ``step`` steps whose last metrics line is ``line`` (its ``metrics``): that
    line's step, 0 when there is none yet. Not ``step`` itself: a ``train.checkpoint.every_steps``
    save at an epoch's last step comes before that epoch's line, so a kill between the line
    and the epoch's commit leaves a line at the checkpoint's own step that the resumed run
    writes again. ``step`` for a line without one (an older cnncli's), None without a step."""
    if step is None:
        return None
    if not isinstance(line, dict) or not line:
        return 0
    mine = line.get("step")
    return mine if isinstance(mine, int) and not isinstance(mine, bool) else step


def _holds_best(meta: dict[str, Any]) -> bool:
    """Whether the checkpoint of ``meta`` holds the state its best value was measured on: its
    step is the best one's (a checkpoint without ``best_step``, of an older cnncli: its epoch is
    the best and it was saved at the end of it)."""
    best = meta.get("best") or {}
    if isinstance(best.get("best_step"), int) and best.get("best_step"):
        return best["best_step"] == _step(meta)
    return best.get("best_epoch") == meta.get("epoch") and "position" not in meta


def read_rows(path: Path, upto: int, upto_step: int | None = None) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` up to a checkpoint's state (a resumed run rewrites the rest):
    with ``upto_step`` (the checkpoint's ``step``), the lines whose ``step`` is at most that;
    else, and for lines without a ``step`` (written by an older cnncli), those of epochs
    1..``upto``."""
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
        if isinstance(row, dict) and _within(row, upto, upto_step):
            rows.append(row)
    return rows


def _within(row: dict[str, Any], upto: int, upto_step: int | None) -> bool:
    """Whether a JSON line belongs to a state of ``upto`` epochs and ``upto_step`` steps (see
    :func:`read_rows`)."""
    step = row.get("step")
    if upto_step is not None and isinstance(step, int) and not isinstance(step, bool):
        return 1 <= step <= upto_step
    epoch = row.get("epoch")
    return isinstance(epoch, int) and not isinstance(epoch, bool) and 1 <= epoch <= upto




def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON lines to ``path`` atomically.

    Raises:
        OutputError: The file cannot be written (the previous one is intact).
    """
    try:
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e}). "
                          f"Free disk space or choose another --out.", e.errno, e.strerror) from None


class RunWriter:
    """The trainer's subscriber that writes the run folder (``fit`` calls it before the
    user's subscriber, so a file that cannot be written stops the run before it is reported).

    On ``RunStarted``: ``config.yaml`` (the state's resolved config, headed by its run id).
    On ``EpochEnded``, in this order, so that ``last.npz`` is the commit record of the epoch
    and a kill at any instant leaves a folder that ``--resume`` (with :func:`repair`) ends
    exactly as an uninterrupted run: ``epoch_{k}.npz`` every ``every`` epochs (0: never);
    the epoch's lines of ``metrics.jsonl`` (the metrics, no timings, so equal runs write
    equal bytes) and ``timing.jsonl``; ``last.npz``; then ``best.npz`` if the epoch is the
    best (a kill before it is repaired from ``last.npz``, which then holds the same state);
    and the removal of an ``interrupted.npz`` (now older than ``last.npz``). A resumed run
    keeps the lines of the epochs its checkpoint had finished and rewrites the rest.
    On ``BatchEnded`` of every ``every_steps``-th step (0: never): ``last.npz`` holding the
    mid-epoch state (its ``position``), then the removal of ``interrupted.npz``; the metrics
    lines are those of its finished epochs, so it is a commit record too.

    Attributes:
        committed: The epoch whose ``last.npz`` is written (the resumed epoch at first).
        committed_step: The step of the last commit this writer made (-1 before its first).

    Args:
        state: The run's :class:`~cnncli.state.TrainState` (its ``epoch`` is the resumed epoch).
        every: ``train.checkpoint.every``.
        every_steps: ``train.checkpoint.every_steps``.

    Raises:
        OutputError: A file cannot be written (what was there before is intact).
    """

    def __init__(self, state: TrainState, every: int = 0, every_steps: int = 0):
        self.state = state
        self.every = every
        self.every_steps = every_steps
        self.folder = state.run_dir
        self.committed = state.epoch
        self.committed_step = -1          # the step of the last commit made by this writer (-1: none yet)
        self.metrics_path, self.timing_path = self.folder / "metrics.jsonl", self.folder / "timing.jsonl"
        self.rows: list[dict[str, Any]] = []
        self.timing_rows: list[dict[str, Any]] = []
        if state.step:                    # resumed: keep the lines its checkpoint committed
            upto = committed_step(state.metrics, state.step)
            self.rows = read_rows(self.metrics_path, state.epoch, upto)
            self.timing_rows = read_rows(self.timing_path, state.epoch, upto)

    def __call__(self, event: Any) -> None:
        if isinstance(event, RunStarted):
            self.write_config()
        elif isinstance(event, EpochEnded):
            self.end_epoch(event)
        elif isinstance(event, ValidationEnded):
            self.commit(event)
        elif isinstance(event, BatchEnded) and self.every_steps and event.step % self.every_steps == 0:
            self.state.save(self.folder / "last.npz")
            (self.folder / "interrupted.npz").unlink(missing_ok=True)

    def write_config(self) -> None:
        path = self.folder / "config.yaml"
        try:
            write_text_atomic(path, RUN_HEADER + self.state.run_id + "\n"
                              + yaml.safe_dump(self.state.config, sort_keys=False))
        except OSError as e:
            raise OutputError(f"cannot write {path} ({e.strerror or e}). Free disk space or choose another --out.",
                              getattr(e, "errno", None), getattr(e, "strerror", None)) from None

    def end_epoch(self, e: EpochEnded) -> None:
        if self.every and e.epoch % self.every == 0:
            self.state.save(self.folder / f"epoch_{e.epoch}.npz")
        self.commit(e)

    def commit(self, e: EpochEnded | ValidationEnded) -> None:
        """Write the lines of ``e`` (an epoch's end or, with ``train.val_every``, a
        validation's), then ``last.npz``, ``best.npz`` and the removal of ``interrupted.npz``."""
        save, folder = self.state.save, self.folder
        self.rows.append(e.metrics)
        self.timing_rows.append({"epoch": e.epoch, "step": self.state.step, "train_seconds": round(e.train_seconds, 3),
                                 "seconds": round(e.seconds, 3), "images_per_s": round(e.images_per_s, 1)})
        write_rows(self.metrics_path, self.rows)
        write_rows(self.timing_path, self.timing_rows)
        save(folder / "last.npz")                       # the commit record of the epoch or validation
        self.committed, self.committed_step = self.state.epoch, self.state.step
        if e.is_best:
            save(folder / "best.npz")
        (folder / "interrupted.npz").unlink(missing_ok=True)


def repair(ck: checkpoint.Checkpoint) -> list[str]:
    """Mend what a kill left half-done in the run folder of ``ck``, the folder's ``last.npz``,
    before the run continues there; return what was done, as sentences.

    ``last.npz`` is the commit record (see :class:`RunWriter`): lines of ``metrics.jsonl`` and
    ``timing.jsonl`` after its epoch k and ``epoch_{j}.npz`` with j > k belong to an epoch
    that never committed and are removed (the resumed run writes them again, equal);
    ``metrics.jsonl`` missing epoch k's line gets it from the checkpoint's metadata; a
    ``best.npz`` that should hold epoch k (the checkpoint's best epoch) but does not is
    copied from ``last.npz`` (the same state); hidden temporaries (``.*.tmp``) of cut writes
    are deleted.

    Raises:
        OutputError: A file cannot be rewritten.
    """
    folder, meta = ck.path.parent, ck.meta
    epoch, step = meta["epoch"], _step(meta)
    done = []
    line = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    upto = committed_step(line, step)
    # the checkpoint holds the last line committed before it (by step; by epoch, older lines)
    key = ("step", line.get("step")) if "step" in line else ("epoch", line.get("epoch"))
    for name in ("metrics.jsonl", "timing.jsonl"):
        path = folder / name
        if not path.exists():
            continue
        rows = read_rows(path, epoch, upto)
        if name == "metrics.jsonl" and line and _within(line, epoch, upto) \
                and not any(r.get(key[0]) == key[1] for r in rows):
            rows.append(line)
            by_steps = ((ck.config.get("train") or {}).get("val_every") if isinstance(ck.config, dict) else None)
            which = f"step {line.get('step')}" if by_steps else f"epoch {line.get('epoch')}"
            done.append(f"metrics.jsonl: the line of {which} restored from {ck.path.name}")
        if path.read_bytes() != "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"):
            write_rows(path, rows)
    for old in folder.glob("epoch_*.npz"):
        k = old.stem.removeprefix("epoch_")
        if k.isdigit() and int(k) > epoch:
            old.unlink(missing_ok=True)
            done.append(f"{old.name} removed (its epoch never committed)")
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    best = folder / "best.npz"
    # (a mid-epoch checkpoint holds a later state than its best epoch's: best.npz was written before it)
    if _holds_best(meta) and _state_of(best) != (epoch, step):
        copy_atomic(ck.path, best)
        done.append(f"best.npz restored from {ck.path.name} (epoch {epoch}) at step {step}")
    return done


def _state_of(path: Path) -> tuple[Any, Any] | None:
    """The (epoch, step) a checkpoint holds (None if it is missing or unreadable)."""
    try:
        meta = checkpoint.load(path).meta if path.is_file() else None
    except CheckpointError:
        return None
    return None if meta is None else (meta.get("epoch"), _step(meta))
