"""``cnncli sweep show FOLDER|STORAGE``: a study's trials, best parameters and ``best.yaml``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnncli.errors import CnncliError
from cnncli.sweep import require_optuna
from cnncli.sweep.study import open_storage, shown_url


@dataclass(frozen=True)
class TrialRow:
    """One trial: number, state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), objective value
    (None unless complete), parameters, the value after each epoch, run folder, message
    (why it failed, was pruned or retried), the worker (``host:pid``) and seconds."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    intermediate: dict[int, float]
    run_dir: str | None
    message: str | None
    worker: str | None
    seconds: float | None


@dataclass
class SweepResults:
    """A study read back: name, storage (password hidden), sweep folder, monitor and
    direction, the trials sorted best first, the best trial (None if none completed), the
    base config's text and the sweep's ``--set`` items (for :func:`write_best_yaml`)."""

    study: str
    storage: str
    folder: Path | None
    monitor: str
    direction: str
    trials: list[TrialRow]
    best: TrialRow | None
    config_text: str
    sets: list[str] = field(default_factory=list)


def _url_of(target: str) -> tuple[str, Path | None]:
    """``target`` as a storage URL and the sweep folder, if it is one."""
    if "://" in target:
        return target, None
    folder = Path(target)
    db = folder / "study.db"
    if not db.is_file():
        raise CnncliError(f"{target}: no study.db here; give a sweep folder (e.g. sweeps/mnist-lr-dropout) or a "
                          "storage URL (e.g. postgresql://user:password@host/db)")
    return f"sqlite:///{db.resolve()}", folder


def _message(t: Any, retried_as: dict[int, int]) -> str | None:
    """Why ``t`` ended as it did, in words."""
    if t.number in retried_as:
        return f"retried as trial {retried_as[t.number]}: {t.user_attrs.get('message') or 'its worker was lost'}"
    if t.user_attrs.get("message"):
        return t.user_attrs["message"]
    if t.state.name == "PRUNED" and t.intermediate_values:
        return f"pruned after epoch {max(t.intermediate_values)}"
    if t.state.name == "FAIL":
        return "its worker was lost (no heartbeat)"
    return t.user_attrs.get("retry_reason")


def _row(t: Any, retried_as: dict[int, int]) -> TrialRow:
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    value = t.value if t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value) else None
    return TrialRow(t.number, t.state.name, value, dict(t.params), dict(t.intermediate_values),
                    t.user_attrs.get("run_dir"), _message(t, retried_as), t.user_attrs.get("worker"), seconds)


def load_results(target: str, study_name: str | None = None) -> SweepResults:
    """Read a study from a sweep folder (its ``study.db``) or a storage URL.

    Trials are sorted: complete ones by value (best first), then pruned ones by their last
    epoch's value, then running, waiting and failed ones by number. Trials that never ran
    (see :mod:`cnncli.sweep.study`) are left out.

    Raises:
        CnncliError: No study there, several and no ``study_name``, or an unknown one.
    """
    optuna = require_optuna()
    url, folder = _url_of(target)
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if study_name is None and len(names) != 1:
        raise CnncliError(f"{shown_url(url)} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                          "name one with --study NAME" if names else f"{shown_url(url)} holds no study")
    if study_name is not None and study_name not in names:
        raise CnncliError(f"no study '{study_name}' in {shown_url(url)}; studies: {', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=study_name or names[0], storage=storage)
    all_trials = study.get_trials(deepcopy=False)
    retried_as = {t.user_attrs["retry_of"]: t.number for t in all_trials if "retry_of" in t.user_attrs}
    trials = [t for t in all_trials if not t.user_attrs.get("surplus")]
    rows = [_row(t, retried_as) for t in trials]
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}

    def key(r: TrialRow):
        last = r.intermediate[max(r.intermediate)] if r.intermediate else None
        v = r.value if r.state == "COMPLETE" else last if r.state == "PRUNED" else None
        return order.get(r.state, 5), sign * v if v is not None else 0.0, r.number

    rows.sort(key=key)
    definition = study.user_attrs.get("definition", {})
    best = rows[0] if rows and rows[0].state == "COMPLETE" and rows[0].value is not None else None
    saved = study.user_attrs.get("folder")
    return SweepResults(study.study_name, shown_url(url), folder or (Path(saved) if saved else None),
                        definition.get("monitor", "value"), study.direction.name.lower(), rows, best,
                        study.user_attrs.get("config", ""), list(study.user_attrs.get("sets", [])))


def write_best_yaml(results: SweepResults, path: Path) -> Path:
    """Write the base config with the best trial's parameters applied (as ``--set`` would,
    :mod:`cnncli.overrides`) to ``path`` as YAML, checked by ``config.validate`` first, so
    ``cnncli train path`` runs it as is. Comments of the base config are not kept.

    Raises:
        CnncliError: No completed trial.
        OutputError: ``path`` cannot be written.
    """
    import json

    import yaml

    from cnncli.config import apply_overrides, parse_yaml, plain, validate
    from cnncli.rundir import write_text_atomic

    if results.best is None:
        raise CnncliError(f"study '{results.study}' has no completed trial yet; best.yaml needs one")
    raw = parse_yaml(results.config_text, "the sweep's config")
    raw = apply_overrides(raw, [*results.sets, *(f"{k}={json.dumps(v)}" for k, v in results.best.params.items())])
    validate(raw, str(path))
    header = (f"# cnncli sweep: study '{results.study}', best trial {results.best.number} "
              f"({results.monitor} {results.best.value:.6g}); its run folder: {results.best.run_dir}\n"
              + "".join(f"#   {k}: {json.dumps(v)}\n" for k, v in results.best.params.items()))
    write_text_atomic(path, header + yaml.safe_dump(plain(raw), sort_keys=False))
    return path
