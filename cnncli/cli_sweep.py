"""``cnncli sweep CONFIG SWEEP.yaml`` and ``cnncli sweep show FOLDER|STORAGE`` (on Optuna).

The commands join :data:`sweep_app`, added to :data:`cnncli.cli.app` as ``sweep``; like the
other commands they parse, call one library function (:mod:`cnncli.sweep`) and hand the
result to :mod:`cnncli.report` / :mod:`cnncli.render`, under :func:`cnncli.cli.user_errors`.
``cnncli sweep CONFIG SWEEP.yaml`` is ``cnncli sweep run CONFIG SWEEP.yaml``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from cnncli.cli import SET_HELP, user_errors


class _SweepGroup(TyperGroup):
    """``cnncli sweep ARGS``: ``run`` is implied when ARGS do not start with a command name."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(
    cls=_SweepGroup,
    name="sweep",
    help="Hyperparameter sweeps on Optuna (needs the extra: pip install -e \".[sweep]\").\n\n"
         "Examples: cnncli sweep configs/mnist-small.yaml sweeps/lr-dropout.yaml --workers 2   |   "
         "cnncli sweep show sweeps/lr-dropout",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _resume_command(config: Path, sweep: Path, storage: str | None, workers: int, threads: int | None,
                    out: str | None, sets: list[str] | None) -> str:
    """The command line that resumes this sweep (the same one)."""
    args = ["cnncli", "sweep", str(config), str(sweep), "--workers", str(workers)]
    for flag, value in (("--storage", storage), ("--threads", threads), ("--out", out)):
        if value is not None:
            args += [flag, str(value)]
    for item in sets or []:
        args += ["--set", item]
    return shlex.join(args)


@sweep_app.command("run")
def sweep_run(
    ctx: typer.Context,
    config: Path = typer.Argument(..., metavar="CONFIG", help="The base config, e.g. configs/mnist-small.yaml."),
    sweep: Path = typer.Argument(..., metavar="SWEEP.yaml", help="The space, objective, sampler, pruner, trials."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=256,
                                help="Trials run at once on this machine, as separate processes."),
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URL", envvar="CNNCLI_SWEEP_STORAGE",
                                          help="Study database shared by several machines, e.g. "
                                               "postgresql://user:password@host/db (default: SQLite in the sweep "
                                               "folder; or set CNNCLI_SWEEP_STORAGE)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024,
                                          help="Threads per worker (default: the cores divided among the workers)."),
    out: Optional[str] = typer.Option(None, "--out", metavar="FOLDER",
                                      help="Sweep folder (default: dir: in SWEEP.yaml, else sweeps/<its name>)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
) -> None:
    """Run a sweep: trials of CONFIG with SWEEP.yaml's parameters, each a run folder in the sweep folder.

    Every trial is checked before any runs. Running the same command again resumes the
    sweep; started on other machines with the same --storage, it adds workers to the study.
    Example: cnncli sweep configs/mnist-small.yaml sweeps/lr-dropout.yaml --workers 2
    Then:    cnncli sweep show sweeps/lr-dropout
    """
    with user_errors(ctx):
        from cnncli import report
        from cnncli.sweep import require_optuna

        require_optuna()
        from cnncli.sweep.run import run_sweep
        from cnncli.sweep.space import load_sweep

        spec = load_sweep(sweep, out)
        reporter = report.SweepReporter()
        try:
            ended = run_sweep(config, spec, reporter, storage=storage, workers=workers, threads=threads, sets=sets,
                              resume_command=_resume_command(config, sweep, storage, workers, threads, out, sets))
        finally:
            reporter.close()
        reporter.ended(ended)
        if ended.left:
            raise typer.Exit(code=1)


@sweep_app.command("show")
def sweep_show(
    ctx: typer.Context,
    target: str = typer.Argument(..., metavar="FOLDER|STORAGE", help="A sweep folder or a storage URL."),
    study: Optional[str] = typer.Option(None, "--study", metavar="NAME", help="The study (when the storage has several)."),
    best: Optional[Path] = typer.Option(None, "--best", metavar="FILE",
                                        help="Where to write the best config (default: FOLDER/best.yaml, or "
                                             "./best.yaml for a storage URL)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Show a sweep: trials sorted by the objective, best parameters and folder, a plot; write best.yaml.

    best.yaml is the sweep's config with the best trial's parameters applied: cnncli train best.yaml
    Example: cnncli sweep show sweeps/lr-dropout   |   cnncli sweep show postgresql://me@db/sweeps --study lr
    """
    with user_errors(ctx):
        from cnncli import render, report
        from cnncli.sweep import require_optuna

        require_optuna()
        from cnncli.sweep.results import load_results, write_best_yaml

        results = load_results(target, study)
        path = None
        if results.best is not None:
            folder = Path(target) if "://" not in target else Path(".")
            path = write_best_yaml(results, best or folder / "best.yaml")
        if json_out:
            report.print_json(report.sweep_json(results, path))
        else:
            render.render_sweep(results, path)
