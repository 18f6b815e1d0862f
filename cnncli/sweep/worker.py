"""One sweep worker: a process that takes trials from the study until it has run its ``trials``.

Each trial is a normal ``cnncli train`` job (``training.train``) on the base config with the
trial's parameters applied as ``--set`` overrides, in its own run folder
``SWEEP/trials/NNNN`` (``cnncli eval`` works on it). The monitor's value after each epoch
goes to ``trial.report``; when the pruner says so, the trial stops after that epoch (its
folder keeps the epochs done) and is recorded PRUNED. The trial's value is the monitor's
best over its epochs (as ``best.npz`` when ``train.checkpoint.monitor`` is the same).
A trial that raises anything is recorded FAIL with its message (``message``) and the
worker goes on; Ctrl-C fails the trial, enqueues it again (it runs first when the sweep is
resumed) and ends the worker with exit 130.

Run by :mod:`cnncli.sweep.run` as ``python -m cnncli.sweep.worker SPEC_JSON``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from cnncli.errors import CnncliError
from cnncli.sweep import require_optuna
from cnncli.sweep.space import Sweep, load_sweep, trial_overrides
from cnncli.sweep.study import counted, fail_unstarted, open_storage, open_study, retry, unstarted_grace


class _NotRun(CnncliError):
    """The trial was not run (surplus, see :mod:`cnncli.sweep.study`); recorded FAIL and hidden."""


def _objective(sweep: Sweep, config: str, threads: int | None, sets: list[str], total: int):
    """The Optuna objective: one trial = one training run (see the module docstring)."""
    optuna = require_optuna()
    from cnncli import config as C
    from cnncli import training
    from cnncli.callbacks import resolve_monitor
    from cnncli.events import EpochEnded, RunStarted

    def objective(trial: Any) -> float:
        before = [t for t in counted(trial.study.get_trials(deepcopy=False)) if t.number < trial.number]
        if len(before) >= total:        # two workers asked for the last trial at once: this one is extra
            trial.set_user_attr("surplus", True)
            raise _NotRun("not run: the study already had its trials")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        values = {p.path: p.suggest(trial) for p in sweep.params}
        run_dir = sweep.dir / "trials" / f"{trial.number:04d}"
        history: list[float] = []

        def on_event(e: Any) -> None:
            if isinstance(e, RunStarted):
                trial.set_user_attr("run_dir", str(e.run_dir))
            elif isinstance(e, EpochEnded):
                v = float(e.metrics[resolve_monitor(sweep.monitor, "val_loss" in e.metrics)])
                history.append(v)
                trial.report(v, e.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {e.epoch} ({sweep.monitor} {v:.4g})")

        try:
            training.train(C.load(config, trial_overrides(sweep, values, run_dir, threads, sets)), on_event)
        except optuna.TrialPruned:
            raise
        except (KeyboardInterrupt, training.TrainingInterrupted) as e:
            trial.set_user_attr("message", "interrupted (Ctrl-C); it runs again when the sweep is resumed")
            retry(trial.study, trial, f"trial {trial.number} was interrupted (Ctrl-C)")
            raise KeyboardInterrupt from e
        except CnncliError as e:
            trial.set_user_attr("message", str(e))
            raise
        except MemoryError:
            trial.set_user_attr("message", "out of memory")
            raise CnncliError("out of memory") from None
        except Exception as e:          # a crash is this trial's failure, not the sweep's
            trial.set_user_attr("message", f"{type(e).__name__}: {e}")
            raise CnncliError(str(e)) from e
        if not history:
            return float("nan")
        return max(history) if sweep.direction == "maximize" else min(history)

    return objective


def run_worker(config: str, sweep: Sweep, url: str, threads: int | None = None, sets: list[str] | None = None,
               worker: int = 0, shared: bool = False) -> int:
    """Take trials from the study ``sweep.study`` in ``url`` until it has its trials; return
    how many this worker ran. Waits while other workers' trials run (one of them may be
    lost and its trial retried here).

    Raises:
        CnncliError: The storage cannot be opened or holds another sweep.
        KeyboardInterrupt: Ctrl-C (the running trial is enqueued again).
    """
    optuna = require_optuna()
    from optuna.trial import TrialState

    study = open_study(sweep, open_storage(url, sweep.heartbeat), worker, shared)
    total = sweep.total()
    objective = _objective(sweep, config, threads, list(sets or []), total)
    ran = 0
    unstarted: dict[int, float] = {}
    while True:
        optuna.storages.fail_stale_trials(study)
        fail_unstarted(study, unstarted, unstarted_grace(sweep.heartbeat), time.monotonic())
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if len(counted(trials)) >= total and not waiting:
            if not any(t.state == TrialState.RUNNING for t in trials):
                return ran
            time.sleep(min(2.0, sweep.heartbeat / 2))
            continue
        study.optimize(objective, n_trials=1, catch=(CnncliError,))
        ran += 1


def main(argv: list[str] | None = None) -> None:
    """``python -m cnncli.sweep.worker SPEC_JSON``: SPEC_JSON holds ``config``, ``sweep``,
    ``out``, ``storage``, ``threads``, ``sets``, ``worker``, ``shared``. Exit 0 when the study
    has its trials, 130 on Ctrl-C, the error's code (message on stderr) otherwise."""
    spec = json.loads((argv or sys.argv[1:])[0])
    try:
        sweep = load_sweep(spec["sweep"], spec["out"])
        run_worker(spec["config"], sweep, spec["storage"], spec["threads"], spec["sets"], spec["worker"],
                   spec["shared"])
    except KeyboardInterrupt:
        sys.stderr.write("worker interrupted\n")
        raise SystemExit(130) from None
    except CnncliError as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(e.exit_code) from None


if __name__ == "__main__":
    main()
