"""SWEEP.yaml: the search space over config key paths, and the checks that run before any trial.

A sweep file sits beside the training config (which stays a plain config that
``cnncli train`` runs as is)::

    trials: 12                       # trials in the whole study, over all workers
    objective: val_accuracy          # a monitor (callbacks.MONITORS); or {monitor: ..., direction: ...}
    sampler: {type: tpe, seed: 0}    # tpe (default) | random | grid
    pruner: {type: median, startup_trials: 5, warmup_epochs: 0}   # median (default) | halving | none
    heartbeat: 30                    # seconds between a worker's signs of life (a killed worker's trial is retried)
    study: mnist-lr-dropout          # default: the file's stem
    dir: sweeps/mnist-lr-dropout     # the sweep folder; default sweeps/<file stem>
    space:
      train.optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}   # float range (log scale)
      train.batch_size: {low: 32, high: 256, step: 32}              # int range (both ends integers)
      model.layers[8].p: [0.0, 0.25, 0.5]                           # choices

Keys of ``space`` are key paths as ``--set`` takes them (``model.layers[8].p``, the form
config errors print, or ``model.layers[8].dropout.p``). Ranges include both ends (Optuna's
``suggest_float``/``suggest_int``). ``direction`` defaults to maximize for accuracies and
minimize for losses (``callbacks.resolve_mode``). The grid sampler needs choices or
integer ranges, and runs every combination (``trials`` caps it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncli.callbacks import MONITORS, resolve_mode
from cnncli.checks import OptionError, check_bool, check_choice, check_float, check_int
from cnncli.config_sections import kind_of
from cnncli.errors import CnncliError, ConfigError, Problem
from cnncli.overrides import Override
from cnncli.yamlio import line_of, parse_yaml

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
KEYS = ("trials", "objective", "sampler", "pruner", "heartbeat", "study", "dir", "space")
MAX_GRID = 100_000


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a key path and its values.

    ``kind`` is ``float`` or ``int`` (a range ``[low, high]``, ``log`` scale, optional
    ``step``) or ``choice`` (``choices``, each a number, text, true/false or null).
    ``where`` names it in messages (``sweep.yaml:12 space.train.optimizer.lr``).
    """

    path: str
    kind: str
    where: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def probes(self) -> list:
        """The values every trial's validity is checked with: each choice, or both ends."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def grid(self) -> list:
        """Every value of the grid sampler: the choices, or the int range's steps."""
        if self.kind == "choice":
            return list(self.choices)
        return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))

    def suggest(self, trial: Any) -> Any:
        """This parameter's value for an Optuna ``trial`` (named by its key path)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)

    def override(self, value: Any) -> Override:
        """``path=value`` as a ``--set`` item, named in messages by :attr:`where`."""
        return Override(f"{self.path}={json.dumps(value)}", self.where)


@dataclass(frozen=True)
class Sweep:
    """A validated SWEEP.yaml (see the module docstring for the keys and defaults)."""

    source: str
    study: str
    dir: Path
    trials: int
    monitor: str
    direction: str
    sampler: str
    seed: int | None
    pruner: str
    startup_trials: int
    warmup_epochs: int
    heartbeat: int
    params: tuple[Param, ...]

    def definition(self) -> dict:
        """What workers joining one study must agree on (stored in the study): space,
        objective, sampler, pruner, trials."""
        return {"trials": self.trials, "monitor": self.monitor, "direction": self.direction,
                "sampler": self.sampler, "pruner": self.pruner, "heartbeat": self.heartbeat,
                "space": {p.path: {"kind": p.kind, "low": p.low, "high": p.high, "log": p.log, "step": p.step,
                                   "choices": list(p.choices)} for p in self.params}}

    def total(self) -> int:
        """Trials the study runs: ``trials``, or for a grid at most its size."""
        if self.sampler != "grid":
            return self.trials
        return min(self.trials, math.prod(len(p.grid()) for p in self.params))


def _typed(value: Any, default: str) -> tuple[str, dict]:
    """``NAME`` or ``{type: NAME, ...}`` -> (name, the other options)."""
    if value is None:
        return default, {}
    if isinstance(value, dict):
        return value.get("type", default), {k: v for k, v in value.items() if k != "type"}
    return value, {}


def _options(where: str, options: dict, known: dict[str, Any], problems: list[Problem], line) -> dict:
    """``options`` checked against ``known`` ({name: check(name, value)}); unknown names are problems."""
    out = {}
    for k, v in options.items():
        if k not in known:
            problems.append(Problem(where, f"unknown option '{k}'; options: {', '.join(known)}", line))
            continue
        try:
            out[k] = known[k](k, v)
        except OptionError as e:
            problems.append(Problem(f"{where}.{k}", str(e), line))
    return out


def _param(path: str, spec: Any, where: str, line: int | None, problems: list[Problem]) -> Param | None:
    """One ``space`` entry as a :class:`Param`, or None after adding its problems."""
    if isinstance(spec, list):
        if not spec:
            problems.append(Problem(where, "an empty list of choices; give at least one value", line))
            return None
        bad = [v for v in spec if not (v is None or isinstance(v, (bool, int, float, str)))]
        if bad:
            problems.append(Problem(where, f"choices are numbers, text, true/false or null; got {kind_of(bad[0])}",
                                    line))
            return None
        return Param(path, "choice", where, choices=tuple(spec))
    if not isinstance(spec, dict) or not {"low", "high"} <= set(spec):
        problems.append(Problem(where, "write a list of choices, e.g. [0.25, 0.5], or a range, e.g. "
                                "{low: 1.0e-4, high: 0.1, log: true}", line))
        return None
    n = len(problems)
    opts = _options(where, spec, {"low": check_float, "high": check_float, "step": check_float,
                                  "log": check_bool},
                    problems, line)
    if len(problems) > n:
        return None
    is_int = all(isinstance(spec.get(k, 1), int) and not isinstance(spec.get(k), bool) for k in ("low", "high", "step"))
    low, high, step, log = opts["low"], opts["high"], opts.get("step"), opts.get("log", False)
    if low > high:
        problems.append(Problem(where, f"an empty range: low {spec['low']} is above high {spec['high']}", line))
    elif log and low <= 0:
        problems.append(Problem(where, f"a log-scale range needs low > 0, got {spec['low']}", line))
    elif step is not None and (step <= 0 or log):
        problems.append(Problem(where, "step must be > 0 and cannot go with log: true", line))
    else:
        kind = "int" if is_int else "float"
        cast = int if is_int else float
        return Param(path, kind, where, cast(low), cast(high), log, None if step is None else cast(step))
    return None


def load_sweep(path: str | Path, out: str | None = None) -> Sweep:
    """Read and check a SWEEP.yaml (every problem located: ``file:line key: what. How to fix.``).

    Args:
        path: The sweep file.
        out: The sweep folder (``--out``), instead of its ``dir``.

    Raises:
        ConfigError: Unreadable file, YAML syntax, an unknown key or option, an empty range
            or choice list, a grid over a float range.
    """
    path = Path(path)
    source = str(path)
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), source)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem("", f"cannot read the sweep file: {e.strerror or e}")], source) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("space"), dict) or not raw["space"]:
        raise ConfigError([Problem("space", "a sweep file is a mapping with a non-empty 'space:' of key paths, "
                                   "e.g. space: {train.optimizer.lr: {low: 1.0e-4, high: 0.1, log: true}}", 1)],
                          source)
    problems: list[Problem] = []
    for k in raw:
        if k not in KEYS:
            problems.append(Problem(str(k), f"unknown key; keys: {', '.join(KEYS)}", line_of(raw, k)))
    objective, obj_opts = (raw["objective"].get("monitor", "val_accuracy"), raw["objective"]) \
        if isinstance(raw.get("objective"), dict) else (raw.get("objective", "val_accuracy"), {})
    top = _options("objective", {k: v for k, v in obj_opts.items() if k != "monitor"},
                   {"direction": lambda k, v: check_choice(k, v, ("maximize", "minimize"))}, problems,
                   line_of(raw, "objective"))
    sampler, s_opts = _typed(raw.get("sampler"), "tpe")
    pruner, p_opts = _typed(raw.get("pruner"), "median")
    nonneg = lambda k, v: check_int(k, v, 0)  # noqa: E731
    checks = [("objective", lambda: check_choice("objective", objective, MONITORS)),
              ("sampler", lambda: check_choice("sampler", sampler, SAMPLERS)),
              ("pruner", lambda: check_choice("pruner", pruner, PRUNERS)),
              ("trials", lambda: check_int("trials", raw.get("trials", 20), 1)),
              ("heartbeat", lambda: check_int("heartbeat", raw.get("heartbeat", 30), 1, 3600))]
    got = {}
    for key, check in checks:
        try:
            got[key] = check()
        except OptionError as e:
            problems.append(Problem(key, str(e), line_of(raw, key)))
    s = _options("sampler", s_opts, {"seed": nonneg}, problems, line_of(raw, "sampler"))
    p = _options("pruner", p_opts, {"startup_trials": nonneg, "warmup_epochs": nonneg}, problems,
                 line_of(raw, "pruner"))
    space = raw["space"]
    params = [_param(str(k), v, f"{source}:{line_of(space, k)} space.{k}", line_of(space, k), problems)
              for k, v in space.items()]
    for q in params:
        if q is not None and got.get("sampler") == "grid" and q.kind == "float":
            problems.append(Problem(f"space.{q.path}", "the grid sampler needs choices or an integer range; "
                                    "write the values as a list", line_of(space, q.path)))
    if problems:
        problems.sort(key=lambda q: q.line or 0)
        raise ConfigError(problems, source)
    monitor = got["objective"]
    return Sweep(source=source, study=str(raw.get("study") or path.stem),
                 dir=Path(out or raw.get("dir") or f"sweeps/{path.stem}"), trials=got["trials"], monitor=monitor,
                 direction=top.get("direction") or ("maximize" if resolve_mode(monitor, "auto") == "max" else "minimize"),
                 sampler=got["sampler"], seed=s.get("seed"), pruner=got["pruner"],
                 startup_trials=p.get("startup_trials", 5), warmup_epochs=p.get("warmup_epochs", 0),
                 heartbeat=got["heartbeat"], params=tuple(params))


def trial_overrides(sweep: Sweep, values: dict[str, Any], run_dir: Path | str, threads: int | None,
                    base: list[str] | None = None) -> list[str]:
    """The ``--set`` items that make one trial's config: ``base`` (the command's ``--set``),
    the parameters, the trial's run folder and thread count (None: the config's)."""
    out = list(base or [])
    out += [p.override(values[p.path]) for p in sweep.params]
    out.append(Override(f"output.dir={json.dumps(str(run_dir))}", "cnncli sweep (the trial's folder)"))
    if threads is not None:
        out.append(Override(f"train.threads={threads}", "cnncli sweep --threads"))
    return out


def check_trials(config: str | Path, sweep: Sweep, base: list[str] | None = None) -> None:
    """Refuse a space that some trial's config would refuse, before any trial runs: each
    choice and each end of each range is applied as ``--set`` (:mod:`cnncli.overrides`) and
    the config validated (``config.load``), one parameter at a time, then all of them at once.

    Raises:
        ConfigError: The base config itself is invalid.
        CnncliError: Every refused value, located by the sweep file's line (exit 2).
    """
    from cnncli import config as C

    C.load(config, base)                                  # the config itself first: its own errors
    messages: list[str] = []
    first = {p.path: p.probes()[0] for p in sweep.params}
    for p in sweep.params:
        for value in p.probes():
            try:
                C.load(config, trial_overrides(sweep, {**first, p.path: value}, sweep.dir / "check", None, base))
            except ConfigError as e:
                messages += [m for m in str(e).splitlines() if m not in messages]
    if messages:
        raise CnncliError(f"the sweep's space gives configs that {config} refuses (no trial was run):\n"
                          + "\n".join(messages))
