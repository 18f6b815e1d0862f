"""The Optuna side of a sweep: storage, sampler, pruner, the study, and which trials count.

Storage is Optuna's ``RDBStorage`` (SQLAlchemy): ``sqlite:///SWEEP/study.db`` by default,
or any URL given with ``--storage`` (``postgresql://user:pass@host/db``, the documented way
to share one study between machines: https://optuna.readthedocs.io/en/stable/tutorial/10_key_features/004_distributed.html).
Workers record a heartbeat every ``heartbeat`` seconds; a RUNNING trial without one for two
intervals is failed by the next worker that looks (``optuna.storages.fail_stale_trials``)
and :func:`retry` enqueues its parameters again.

Optuna's check skips a RUNNING trial with no heartbeat at all: a worker lost between
``study.ask()`` and its heartbeat thread's first record (while the sampler draws) leaves
one, and every other worker would wait for it forever. :func:`fail_unstarted` fails such a
trial once this worker has seen it for long enough without its objective starting.

A trial that was retried (``retry_of`` on its successor) or never ran (``surplus``: two
workers asked for the last trial at once, or its worker was lost before it started) does
not count toward ``trials``.
"""

from __future__ import annotations

import socket
import time
import zlib
from pathlib import Path
from typing import Any

from cnncli.errors import CnncliError
from cnncli.sweep import require_optuna
from cnncli.sweep.space import Sweep

OPEN_ATTEMPTS = 4
MAX_RETRIES = 2     # a trial whose worker is lost is run again at most this many times


def storage_url(sweep_dir: Path, storage: str | None) -> str:
    """``storage`` if given, else the SQLite file ``sweep_dir/study.db`` (absolute, so every
    worker opens the same file whatever its directory)."""
    return storage or f"sqlite:///{(Path(sweep_dir) / 'study.db').resolve()}"


def shown_url(url: str) -> str:
    """``url`` with any password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:       # not a URL SQLAlchemy can parse: said when it is opened
        return url


def with_driver(url: str) -> str:
    """``postgresql://...`` with the PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a
    bare ``postgresql://`` as psycopg 3, 2.0 as psycopg2; the ``postgres`` extra installs
    psycopg2-binary, so a bare URL uses it when psycopg 3 is absent. Other URLs are unchanged."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def _rdb_storage(url: str, heartbeat: int | None) -> Any:
    """:func:`open_storage` without its messages (tried :data:`OPEN_ATTEMPTS` times)."""
    optuna = require_optuna()
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat,
                  "heartbeat_stale_trial_callback": retry}
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(with_driver(url), engine_kwargs=engine, **kwargs)
        except ImportError:
            raise
        except Exception:
            # machines that open a new database at once race to create its tables: try again
            if attempt + 1 == OPEN_ATTEMPTS:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def open_storage(url: str, heartbeat: int | None = None) -> Any:
    """An ``optuna.storages.RDBStorage`` on ``url``; with ``heartbeat`` (seconds), workers
    record one and lost workers' trials are retried (:func:`retry`).

    Raises:
        CnncliError: No driver for the URL (what to install), or the database cannot be reached.
    """
    try:
        return _rdb_storage(url, heartbeat)
    except ImportError as e:
        raise CnncliError(f"no database driver for {shown_url(url)} ({e}); for PostgreSQL install it with: "
                          f'pip install -e ".[postgres]"  (or: pip install psycopg2-binary)') from None
    except Exception as e:      # SQLAlchemy's OperationalError, ArgumentError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnncliError(f"cannot open the study storage {shown_url(url)}: {first}. Check the URL "
                          "(e.g. postgresql://user:password@host:5432/dbname) and that the server is running") from None


def make_sampler(sweep: Sweep, worker: int = 0, shared: bool = False, started: int = 0) -> Any:
    """The sweep's sampler. With ``sampler.seed``, worker ``worker`` of this machine uses
    ``seed + worker`` (a one-worker sweep is reproducible); a worker that joins a study which
    already has ``started`` trials (a resumed sweep) adds ``1000 * started``, so it does not
    draw the first trials' parameters again; workers of another machine mix in its host name
    (``shared``: a storage given with ``--storage``), so machines never draw the same sequence."""
    optuna = require_optuna()
    seed = sweep.seed
    if seed is not None:
        seed += worker + 1000 * started
        if shared:
            seed = (seed + zlib.crc32(socket.gethostname().encode())) % 2 ** 31
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler({p.path: p.grid() for p in sweep.params}, seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(sweep: Sweep) -> Any:
    """``median``: Optuna's MedianPruner (prune a trial whose epoch value is worse than the
    median of earlier trials at that epoch, after ``startup_trials`` trials and
    ``warmup_epochs`` epochs); ``halving``: SuccessiveHalvingPruner (asynchronous successive
    halving, Li et al. 2018, https://arxiv.org/abs/1810.05934); ``none``: NopPruner."""
    optuna = require_optuna()
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials, n_warmup_steps=sweep.warmup_epochs)
    if sweep.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, storage: Any, worker: int = 0, shared: bool = False, record: dict | None = None) -> Any:
    """Create the sweep's study in ``storage`` or join it (``load_if_exists``).

    Args:
        worker, shared: See :func:`make_sampler`.
        record: Study attributes to store when it is created (the base config's text, the
            command's ``--set`` items), read back by ``cnncli sweep show``.

    Raises:
        CnncliError: The study exists with another definition (space, objective, sampler,
            pruner, trials): a worker must not join a different sweep.
    """
    optuna = require_optuna()
    study = optuna.create_study(storage=storage, study_name=sweep.study, direction=sweep.direction,
                                load_if_exists=True, sampler=make_sampler(sweep, worker, shared), pruner=make_pruner(sweep))
    started = len(study.get_trials(deepcopy=False))
    if started:
        study.sampler = make_sampler(sweep, worker, shared, started)
    mine = sweep.definition()
    theirs = study.user_attrs.get("definition")
    if theirs is None:
        for key, value in {**(record or {}), "definition": mine}.items():
            study.set_user_attr(key, value)
    elif theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CnncliError(f"study '{sweep.study}' in {shown_url(storage.url)} was started with another sweep "
                          f"definition (it differs in: {', '.join(diff)}); keep {sweep.source} as it was, or give "
                          f"this sweep its own study (study: NAME in {sweep.source}) or folder (--out)")
    return study


def counted(trials: list) -> list:
    """The trials that count toward ``trials``: all but those retried or never run."""
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [t for t in trials if t.number not in retried and not t.user_attrs.get("surplus")]


def unstarted_grace(heartbeat: int) -> float:
    """Seconds a worker waits before :func:`fail_unstarted` fails a trial that never started:
    two heartbeat intervals, and at least 10 s (a live worker starts its objective within
    milliseconds of Optuna's ``ask``; a busy machine may take seconds)."""
    return max(2.0 * heartbeat, 10.0)


def fail_unstarted(study: Any, first_seen: dict[int, float], grace: float, now: float) -> list[int]:
    """Fail the RUNNING trials whose objective never started (no ``worker`` attribute, which
    the objective sets first) and that this worker has seen so for ``grace`` seconds or more.

    Such a trial's worker was lost between Optuna's ``ask`` and its first heartbeat;
    ``optuna.storages.fail_stale_trials`` skips trials without a heartbeat. Time is this
    worker's own clock (``now``, e.g. ``time.monotonic()``), so machines' clocks need not
    agree. A failed one is marked ``surplus`` (it never ran: it does not count and
    another trial takes its place) with a ``message``.

    Args:
        first_seen: trial number -> ``now`` when first seen unstarted; updated in place.

    Returns:
        The numbers of the trials failed here.
    """
    optuna = require_optuna()
    from optuna.trial import TrialState

    failed = []
    running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if "worker" not in t.user_attrs}
    for number in list(first_seen):
        if number not in running:
            del first_seen[number]
    for number, trial in running.items():
        if now - first_seen.setdefault(number, now) < grace:
            continue
        storage, trial_id = study._storage, trial._trial_id
        try:
            storage.set_trial_user_attr(trial_id, "surplus", True)
            storage.set_trial_user_attr(trial_id, "message", "its worker was lost before the trial started")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue                    # another worker failed it, or it finished meanwhile
        del first_seen[number]
        failed.append(number)
    return failed


def retry(study: Any, trial: Any, reason: str | None = None) -> None:
    """Enqueue ``trial``'s parameters as a new trial (``retry_of``: its number). The
    heartbeat's stale-trial callback (a lost worker, ``reason`` None) retries at most
    :data:`MAX_RETRIES` times along a chain of retries; Ctrl-C (a ``reason``) always, and
    does not count toward that limit."""
    depth = trial.user_attrs.get("retry_depth", 0)
    if reason is None and depth >= MAX_RETRIES:
        return
    depth += reason is None
    why = reason or (f"its worker ({trial.user_attrs.get('worker', '?')}) stopped sending heartbeats; "
                     f"marked failed at {time.strftime('%H:%M:%S')}")
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retry_depth": depth,
                                                  "retry_reason": why})
