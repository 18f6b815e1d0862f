"""``cnncli sweep``: hyperparameter search over config keys, on Optuna.

A sweep is a base config plus a SWEEP.yaml (:mod:`cnncli.sweep.space`: the space over key
paths, sampler, pruner, objective, trials). Each trial is a normal run folder inside the
sweep folder, its parameters applied as ``--set`` overrides (:mod:`cnncli.overrides`), so
every trial is validated like ``--set`` before the sweep starts. The study lives in an
Optuna storage (:mod:`cnncli.sweep.study`): a SQLite file in the sweep folder by default,
any RDB URL (``postgresql://...``) for several machines. :mod:`cnncli.sweep.worker` runs
trials in one process; :mod:`cnncli.sweep.run` starts ``--workers N`` of them and watches
the study; :mod:`cnncli.sweep.results` reads a finished study for ``cnncli sweep show``.

Optuna is an optional extra (``pip install -e ".[sweep]"``); :func:`require_optuna` says so.
"""

from __future__ import annotations

from cnncli.errors import CnncliError

INSTALL_HINT = 'pip install -e ".[sweep]"  (or: pip install "optuna>=4.0")'


def require_optuna():
    """Import and return :mod:`optuna`.

    Raises:
        CnncliError: Optuna is not installed (exit 2), saying what to install.
    """
    try:
        import optuna
    except ImportError:
        raise CnncliError(f"cnncli sweep needs Optuna, an optional extra; install it with: {INSTALL_HINT}") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and fail_stale_trials are marked experimental; they are Optuna's documented way
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna
