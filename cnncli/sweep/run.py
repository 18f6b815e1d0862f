"""``cnncli sweep CONFIG SWEEP.yaml``: check every trial, create or join the study, start
``--workers N`` worker processes, and report the study's progress until they end.

Workers are separate processes (``python -m cnncli.sweep.worker``), each in its own process
group so that a terminal's Ctrl-C reaches only this process, which passes exactly one SIGINT
to each worker (the trainer's "finish the batch" interrupt). Each computes with
``threads`` threads (default: this machine's cores divided among the workers), set for BLAS
before NumPy loads and as ``train.threads``. A worker's stderr goes to
``SWEEP/workers/worker-K.log``. Progress comes from reading the study (every second), so
trials run by other machines show too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnncli.errors import CnncliError
from cnncli.sweep import require_optuna
from cnncli.sweep.space import Sweep, check_trials
from cnncli.sweep.study import counted, open_storage, open_study, shown_url, storage_url

POLL_SECONDS = 1.0
STOP_SECONDS = 120.0      # how long Ctrl-C waits for workers to finish their batch and save


@dataclass(frozen=True)
class SweepProgress:
    """The study now: counted trials by state, the total, the best value so far and its trial."""

    total: int
    complete: int
    pruned: int
    failed: int
    running: int
    best_value: float | None
    best_trial: int | None
    finished: tuple = ()     # (number, state name, value or None, message) of trials finished since the last one


@dataclass
class SweepEnded:
    """The workers ended. ``left``: trials still to run (0: the sweep is complete);
    ``worker_errors``: what ended a worker abnormally (its exit and log file)."""

    study: str
    storage: str
    folder: Path
    progress: SweepProgress
    seconds: float
    left: int
    worker_errors: list[str] = field(default_factory=list)


class SweepInterrupted(CnncliError):
    """Ctrl-C: the workers stopped after their batch; the message says how to resume."""

    exit_code = 130


def _progress(study: Any, total: int, seen: set[int]) -> SweepProgress:
    """Read the study into a :class:`SweepProgress`; ``seen`` (updated) holds the trials already reported."""
    from optuna.trial import TrialState

    trials = counted(study.get_trials(deepcopy=False))
    by = {s: [t for t in trials if t.state == s] for s in TrialState}
    done = by[TrialState.COMPLETE]
    best = None
    if done:
        pick = max if study.direction.name == "MAXIMIZE" else min
        best = pick(done, key=lambda t: t.value)
    finished = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state.is_finished() and t.number not in seen:
            seen.add(t.number)
            finished.append((t.number, t.state.name, t.value, t.user_attrs.get("message")))
    return SweepProgress(total, len(done), len(by[TrialState.PRUNED]), len(by[TrialState.FAIL]),
                         len(by[TrialState.RUNNING]), best.value if best else None, best.number if best else None,
                         tuple(finished))


def _start_workers(spec: dict, workers: int, threads: int, folder: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Start ``workers`` worker processes; return each with its log file."""
    logs = folder / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    out = []
    for k in range(workers):
        log = logs / f"worker-{k}.log"
        with open(log, "ab") as f:
            p = subprocess.Popen([sys.executable, "-m", "cnncli.sweep.worker", json.dumps({**spec, "worker": k})],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f, env=env,
                                 process_group=0)
        out.append((p, log))
    return out


def _stop(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    """One SIGINT to each live worker, then wait for them (a second Ctrl-C kills them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_SECONDS
    for p, _ in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def run_sweep(config: str | Path, sweep: Sweep, on_event: Callable[[Any], None], *, storage: str | None = None,
              workers: int = 1, threads: int | None = None, sets: list[str] | None = None,
              resume_command: str = "") -> SweepEnded:
    """The whole ``cnncli sweep`` job (see the module docstring).

    Args:
        config: The base config file.
        sweep: The validated sweep file (``space.load_sweep``).
        on_event: Called with a :class:`SweepProgress` each time the study changes.
        storage: An RDB URL shared by several machines (default: SQLite in the sweep folder).
        workers: Worker processes on this machine (>= 1).
        threads: Threads per worker (default ``max(1, cores // workers)``).
        sets: The command's ``--set`` items, applied to every trial before its parameters.
        resume_command: The command line, quoted in the Ctrl-C message.

    Returns:
        The :class:`SweepEnded` summary.

    Raises:
        CnncliError: A refused space or config (before any trial), an unreachable storage.
        SweepInterrupted: Ctrl-C.
    """
    from cnncli import threads as T

    require_optuna()
    check_trials(config, sweep, sets)
    folder = sweep.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    url = storage_url(folder, storage)
    text = Path(config).read_text(encoding="utf-8")
    study = open_study(sweep, open_storage(url), shared=storage is not None,
                       record={"config": text, "config_path": str(config), "sets": list(sets or []),
                               "folder": str(folder)})
    threads = threads or max(1, T.available_cores() // workers)
    spec = {"config": str(config), "sweep": sweep.source, "out": str(folder), "storage": url, "threads": threads,
            "sets": [str(s) for s in (sets or [])], "shared": storage is not None}
    t0 = time.perf_counter()
    procs = _start_workers(spec, workers, threads, folder)
    seen: set[int] = set()
    last = None
    try:
        while True:
            running = [p for p, _ in procs if p.poll() is None]
            progress = _progress(study, sweep.total(), seen)
            if progress != last:
                on_event(progress)
                last = progress
            if not running:
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        _stop(procs)
        progress = _progress(study, sweep.total(), seen)
        on_event(progress)
        raise SweepInterrupted(f"interrupted: {progress.complete + progress.pruned + progress.failed} of "
                               f"{progress.total} trials finished; the interrupted ones run again first. "
                               f"Resume with: {resume_command}") from None
    errors = [f"worker {k} exited with {p.returncode} (see {log})" for k, (p, log) in enumerate(procs)
              if p.returncode != 0]
    left = progress.total - progress.complete - progress.pruned - progress.failed
    return SweepEnded(sweep.study, shown_url(url), folder, progress, time.perf_counter() - t0, max(0, left), errors)
