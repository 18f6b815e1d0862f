"""Everything the commands write: consoles, errors, warnings, JSON and the live reporters.

With :mod:`cnncli.render` (tables and images of finished results), the only modules that
import rich or write to the terminal. The trainer emits events (``events.py``);
:class:`TrainReporter` turns them into a live display on a terminal (epoch and batch bars
with running loss, accuracy, images/s, lr and ETA) or into plain lines when stdout is not
a terminal or ``NO_COLOR``/``CI`` is set, so logs hold no control codes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:  # the events (and numpy's friends) load only when a command needs them
    from cnncli import events as T
    from cnncli.loop import EvalResult
    from cnncli.inspect_model import ModelSummary
    from cnncli.timing import StepTime


def plain_requested() -> bool:
    """True when output must be plain lines: not a terminal, or NO_COLOR / CI set."""
    return (not sys.stdout.isatty()) or bool(os.environ.get("NO_COLOR")) or \
        os.environ.get("CI", "").lower() not in ("", "0", "false")


EXIT_PIPE_CLOSED = 141   # 128 + SIGPIPE: what the shell reports for grep or git writing to a closed pipe


def stdout_closed() -> NoReturn:
    """End the command quietly because the reader of its output went away (``cnncli eval
    CKPT | head -2``), as grep or git do: no message, exit :data:`EXIT_PIPE_CLOSED`.

    stdout is pointed at the null device first, so that the interpreter's final flush of
    the unwritten rest cannot fail again (the recipe of the Python docs' note on SIGPIPE,
    https://docs.python.org/3/library/signal.html#note-on-sigpipe).
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no file descriptor (a test runner's buffer)
        fd = None
    if fd is not None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    raise SystemExit(EXIT_PIPE_CLOSED)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own handler exits 1, like a failure; a closed pipe is not one
        self.quiet = True
        stdout_closed()


def make_console(stderr: bool = False) -> Console:
    """A console that is plain (no colour, no cursor moves) when :func:`plain_requested`.
    A closed pipe ends the command quietly (:func:`stdout_closed`)."""
    plain = plain_requested()
    # markup off: messages and docstrings hold [brackets] (model.layers[3], [kh, kw])
    return _Console(stderr=stderr, no_color=plain, force_terminal=False if plain else None,
                    highlight=False, emoji=False, markup=False, soft_wrap=plain)


def print_error(message: str, console: Console | None = None) -> None:
    console = console or make_console(stderr=True)
    # soft wrap: rich must not break lines itself, or a printed command (the resume command
    # after Ctrl-C) would reach the clipboard as several lines
    console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def print_warning(message: str, console: Console | None = None) -> None:
    """``warning: MESSAGE`` on stderr, on one line (soft wrap, as :func:`print_error`)."""
    console = console or make_console(stderr=True)
    console.print(f"warning: {message}", soft_wrap=True)


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout, flushed (``--json`` output is JSON Lines)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def print_text(text: str) -> None:
    """Text on stdout exactly as given (no wrapping, no markup): e.g. a Markdown document."""
    sys.stdout.write(text)
    sys.stdout.flush()


def eval_json(result: EvalResult, checkpoint: str, epoch: int | None, classes: Sequence[str] | None) -> dict:
    """``cnncli eval --json``: the checkpoint, its epoch, loss, accuracy, n, confusion matrix,
    ``classes`` (names or None), ``per_class`` precision/recall/F1/support lists and
    ``macro_avg`` (:func:`cnncli.metrics.macro_average`)."""
    from cnncli.metrics import macro_average, per_class

    pc = per_class(result.confusion)
    return {"checkpoint": checkpoint, "epoch": epoch, **result.to_dict(),
            "classes": list(classes) if classes else None,
            "per_class": {k: v.tolist() for k, v in pc.items()}, "macro_avg": macro_average(result.confusion)}


def summary_json(summary: ModelSummary) -> dict:
    """``cnncli summary --json``: input shape, the layer rows, trainable parameters, warnings."""
    return {"input_shape": list(summary.input_shape), "layers": summary.rows, "params": summary.params,
            "warnings": summary.warnings}


def timing_json(result: StepTime, threads: int | None) -> dict:
    """``cnncli time --json``: the :class:`cnncli.timing.StepTime` fields, both images/s and
    the BLAS thread count."""
    return {**dataclasses.asdict(result), "images_per_s": result.images_per_s,
            "eval_images_per_s": result.eval_images_per_s, "blas_threads": threads}


def download_ready(name: str, folder: Path, searched: bool, console: Console | None = None) -> None:
    """After ``cnncli data download``: where the dataset is and how a config names it
    (``searched``: its root is one ``data.name`` looks in, so no ``root`` is needed)."""
    how = f"data: {{name: {name}}}" if searched else f"data: {{name: {name}, root: {folder.parent}}}"
    (console or make_console()).print(f"{name} is ready in {folder}; use it with  {how}  (or data.path: {folder})")


def _metrics_column():
    """A progress column showing ``task.fields`` loss/acc/img/s/lr (like Lightning's
    ``MetricsTextColumn``). Built on first use: rich.progress is only needed to train."""
    from rich.progress import ProgressColumn

    class MetricsColumn(ProgressColumn):
        def render(self, task) -> Text:
            f = task.fields
            if "loss" not in f or not task.completed:
                return Text("")
            return Text(f"loss {f['loss']:.4f}  acc {f['acc'] * 100:6.2f}%  {f['ips']:,.0f} img/s  lr {f['lr']:.2g}")

    return MetricsColumn()


def _n(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``, ``1 batch``, ``3 batches``, ``5 classes``."""
    plural = {"batch": "batches", "class": "classes"}.get(noun, noun + "s")
    return f"{count:,} {noun if count == 1 else plural}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def plot_lines(series: dict[str, list[float]], height: int = 8, width: int = 40,
               fmt: str = "{:.3f}", epochs: list[int] | None = None, x_name: str = "epoch") -> list[str]:
    """A text chart of one or more series over epochs: marker per series (``*``, ``o``, ``+``),
    ``#`` where two meet, y labels at the top and bottom, epochs along x.

    ``epochs`` numbers the points (the ``epoch`` field of the metrics rows, so a resumed
    run's plot of epochs 5-6 says so); default 1, 2, ... The x axis is labelled with the
    first and last epoch (``x_name``: another word for the x axis, e.g. ``trial``, or
    ``step`` for a run validated every ``train.val_every`` steps, whose ``epochs`` then holds
    the points' steps).
    """
    markers = "*o+x"
    values = [v for s in series.values() for v in s if v is not None]
    n = max(len(s) for s in series.values())
    if not values or n < 2:
        return []
    first, last = (epochs[0], epochs[n - 1]) if epochs is not None else (1, n)
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    grid = [[" "] * width for _ in range(height)]
    for m, s in zip(markers, series.values()):
        for i, v in enumerate(s):
            if v is None:
                continue
            x = round(i * (width - 1) / (n - 1))
            y = height - 1 - round((v - lo) / span * (height - 1))
            grid[y][x] = m if grid[y][x] in (" ", m) else "#"
    label_w = max(len(fmt.format(hi)), len(fmt.format(lo)))
    lines = []
    for r, row in enumerate(grid):
        label = fmt.format(hi) if r == 0 else (fmt.format(lo) if r == height - 1 else "")
        lines.append(f"{label:>{label_w}} |{''.join(row)}")
    lines.append(" " * label_w + " +" + "-" * width)
    left, right = f"{x_name} {first}", f"{x_name} {last}"
    lines.append(" " * label_w + f"  {left}{'':>{width - len(left) - len(right)}}{right}")
    lines.append(" " * label_w + "  " + "  ".join(f"{m} {name}" for m, name in zip(markers, series)))
    return lines


class TrainReporter:
    """Subscribes to training events. ``mode``: ``rich`` (live bars), ``plain`` (a line per
    epoch), ``quiet`` (one line at the end: the test accuracy, if there is a test split, and
    the best checkpoint's path) or ``json`` (one JSON object per epoch and one at the end,
    nothing else)."""

    def __init__(self, mode: str | None = None, console: Console | None = None):
        self.console = console or make_console()
        self.mode = mode or ("plain" if plain_requested() else "rich")
        self.progress = None
        self.epoch_task = self.batch_task = None
        self.history: list[dict[str, float]] = []    # this session's metrics rows, with "epoch"
        self.by_steps = False                          # the rows are validations every train.val_every steps

    def __call__(self, event: Any) -> None:
        if self.mode == "json":
            self._json(event)
            return
        getattr(self, f"on_{type(event).__name__}")(event)

    def _json(self, e: Any) -> None:
        from cnncli import events as T

        if isinstance(e, (T.EpochEnded, T.ValidationEnded)):
            print_json({"event": "epoch" if isinstance(e, T.EpochEnded) else "validation", **e.metrics,
                        "seconds": round(e.seconds, 3), "images_per_s": round(e.images_per_s, 1),
                        "is_best": e.is_best})
        elif isinstance(e, T.RunEnded):
            test = None if e.test is None else {"loss": e.test.loss, "accuracy": e.test.accuracy,
                                                "n": int(e.test.labels.size)}
            print_json({"event": "end", "run_dir": str(e.run_dir), "best_epoch": e.best_epoch, "best_step": e.best_step,
                        "best": str(e.best_path), "last": str(e.last_path), "test": test,
                        "stopped_early": e.stopped_early, "seconds": round(e.seconds, 3)})

    # -- events
    def on_RunStarted(self, e: T.RunStarted) -> None:
        if self.mode == "quiet":
            return
        self.console.print(f"run folder: {e.run_dir}")
        self.console.print(f"data: {e.n_train:,} train, {e.n_val:,} validation, {e.n_test:,} test images; "
                           f"model: {e.num_params:,} parameters; {_n(e.epochs, 'epoch')} of "
                           f"{_n(e.batches_per_epoch, 'batch')}"
                           + (f" ({_n(e.max_steps, 'step')} in all)" if e.max_steps is not None else "")
                           + (f"; validation every {_n(e.val_every, 'step')}" if e.val_every is not None else ""))
        if e.left_out:
            self.console.print(f"each epoch leaves out {_n(e.left_out, 'training image')} (the last batch would "
                               f"hold one, which batchnorm cannot normalize; shuffling picks another each epoch)")
        if e.repaired:
            self.console.print("resume repaired the run folder: " + "; ".join(e.repaired), markup=False,
                               highlight=False)
        if e.start_epoch:
            self.console.print(f"resuming after epoch {e.start_epoch} of {e.epochs}")
        if e.changes:
            self.console.print("settings that differ from the checkpoint's run (the run goes on with these; "
                               "--set KEY=VALUE keeps the run's): " + "; ".join(e.changes), markup=False,
                               highlight=False)
        if self.mode == "rich":
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                _metrics_column(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=True)
            self.progress.start()
            self.epoch_task = self.progress.add_task("epochs ", total=e.epochs, completed=e.start_epoch)
            self.batch_task = self.progress.add_task("batches", total=e.batches_per_epoch)

    def on_EpochStarted(self, e: T.EpochStarted) -> None:
        if self.progress:
            self.progress.reset(self.batch_task, description=f"epoch {e.epoch}")

    def on_BatchEnded(self, e: T.BatchEnded) -> None:
        if self.progress:
            self.progress.update(self.batch_task, completed=e.batch, loss=e.loss, acc=e.accuracy,
                                 ips=e.images_per_s, lr=e.lr)

    def on_EpochEnded(self, e: T.EpochEnded) -> None:
        m = e.metrics
        self.history.append({**m, "epoch": e.epoch})
        if self.progress:
            self.progress.update(self.epoch_task, completed=e.epoch)
        if self.mode == "quiet":
            return
        best = "  *best" if e.is_best else ""
        self.console.print(
            f"epoch {e.epoch}/{e.epochs}  train loss {_num(m['train_loss'])} acc {_pct(m['train_accuracy'])}  "
            f"val loss {_num(m.get('val_loss'))} acc {_pct(m.get('val_accuracy'))}  "
            f"lr {m['lr']:.3g}  {e.seconds:.1f}s ({e.images_per_s:,.0f} img/s){best}")

    def on_ValidationEnded(self, e: T.ValidationEnded) -> None:
        self.history.append(dict(e.metrics))
        self.by_steps = True
        if self.mode == "quiet":
            return
        m, best = e.metrics, "  *best" if e.is_best else ""
        self.console.print(
            f"step {e.step}/{e.max_steps} (epoch {e.epoch})  train loss {_num(m['train_loss'])} acc "
            f"{_pct(m['train_accuracy'])}  val loss {_num(m.get('val_loss'))} acc {_pct(m.get('val_accuracy'))}  "
            f"lr {m['lr']:.3g}  {e.seconds:.1f}s ({e.images_per_s:,.0f} img/s){best}")

    def on_RunEnded(self, e: T.RunEnded) -> None:
        self.close()
        if self.mode != "quiet" and e.stopped_early:
            self.console.print(e.stopped_early)
        if self.mode != "quiet" and len(self.history) >= 2:
            h = self.history
            for title, key, fmt in (("loss", "loss", "{:.3f}"), ("accuracy (%)", "accuracy", "{:.2f}")):
                scale = 100.0 if key == "accuracy" else 1.0
                series = {"train": [r[f"train_{key}"] * scale for r in h]}
                if "val_accuracy" in h[0]:
                    series["validation"] = [r[f"val_{key}"] * scale for r in h]
                self.console.print(title)
                unit = "step" if self.by_steps else "epoch"
                for line in plot_lines(series, fmt=fmt, epochs=[r[unit] for r in h], x_name=unit):
                    self.console.print(line)
            self.console.print(f"best epoch: {e.best_epoch}" + (f", step {e.best_step}" if self.by_steps else ""))
        if self.mode == "quiet":
            # one line, even with no test split: the run folder may not be the one asked for
            # (a taken name gets -2, -3, ...), so scripts find the checkpoint here; path last
            test = ("" if e.test is None else f"test accuracy {_pct(e.test.accuracy)} (loss {e.test.loss:.4f}) "
                                              f"on {_n(e.test.labels.size, 'image')}, ")
            self.console.print(f"{test}best checkpoint (epoch {e.best_epoch}): {e.best_path}")
            return
        if e.test is not None:
            self.console.print(f"test accuracy {_pct(e.test.accuracy)} (loss {e.test.loss:.4f}) "
                               f"on {_n(e.test.labels.size, 'image')}, best checkpoint (epoch {e.best_epoch})")
        self.console.print(f"checkpoints: {e.best_path} (best), {e.last_path} (last); "
                           f"metrics: {e.run_dir / 'metrics.jsonl'}; {e.seconds:.1f}s in all")
        self.console.print(f"next:  cnncli eval {e.best_path}   |   cnncli predict {e.best_path} IMAGE.pgm")

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None


class DownloadReporter:
    """Draws ``cnncli.download`` events: a live bar per file (bytes, speed, ETA) on a terminal,
    or a line when each file starts and ends when plain; ``quiet`` prints nothing."""

    def __init__(self, mode: str | None = None, console: Console | None = None):
        self.console = console or make_console()
        self.mode = mode or ("plain" if plain_requested() else "rich")
        self.progress = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, event: Any) -> None:
        getattr(self, f"on_{type(event).__name__}")(event)

    def _print(self, message: str) -> None:
        if self.mode != "quiet":
            (self.progress.console if self.progress else self.console).print(message)

    def on_Note(self, e) -> None:
        self._print(e.message)

    def on_FileStarted(self, e) -> None:
        if self.mode == "rich":
            if self.progress is None:
                from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                           TransferSpeedColumn)

                self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=30), DownloadColumn(),
                                         TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                                         transient=True)
                self.progress.start()
            self.tasks[e.name] = self.progress.add_task(e.name, total=e.total, completed=e.offset)
            if e.offset:
                self._print(f"{e.name}: resuming at byte {e.offset:,}")
        elif self.mode == "plain":
            size = f" ({e.total:,} bytes)" if e.total else ""
            resume = f", resuming at byte {e.offset:,}" if e.offset else ""
            self._print(f"downloading {e.url}{size}{resume}")

    def on_FileProgress(self, e) -> None:
        if self.progress is not None and e.name in self.tasks:
            self.progress.update(self.tasks[e.name], completed=e.done, total=e.total)

    def on_FileFinished(self, e) -> None:
        if self.progress is not None and e.name in self.tasks:
            self.progress.remove_task(self.tasks.pop(e.name))
        check = "SHA-256 verified" if e.check == "sha256" else "SHA-256 of the unpacked content verified"
        what = "already there" if e.status == "present" else f"{e.size:,} bytes"
        self._print(f"{e.dest}: {what}, {check}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None




def sweep_json(results: Any, best_yaml: Path | None) -> dict:
    """``cnncli sweep show --json``: study, storage, folder, monitor, direction, the trials
    (best first: number, state, value, params, intermediate values by epoch, run folder,
    message, worker, seconds), the best trial and the written ``best.yaml`` (or None)."""
    trials = [{**dataclasses.asdict(r), "intermediate": {str(k): v for k, v in r.intermediate.items()}}
              for r in results.trials]
    return {"study": results.study, "storage": results.storage,
            "folder": None if results.folder is None else str(results.folder), "monitor": results.monitor,
            "direction": results.direction, "trials": trials,
            "best": None if results.best is None else trials[results.trials.index(results.best)],
            "best_yaml": None if best_yaml is None else str(best_yaml)}


class SweepReporter:
    """Draws ``cnncli.sweep.run`` progress: a live bar of trials (done, running, pruned,
    failed, best so far) on a terminal, a line per finished trial in both modes."""

    def __init__(self, mode: str | None = None, console: Console | None = None):
        self.console = console or make_console()
        self.mode = mode or ("plain" if plain_requested() else "rich")
        self.progress = None
        self.task = None

    def __call__(self, p: Any) -> None:
        best = "-" if p.best_value is None else f"{p.best_value:.4f} (trial {p.best_trial})"
        status = f"running {p.running}  pruned {p.pruned}  failed {p.failed}  best {best}"
        if self.mode == "rich" and self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("trials"), BarColumn(bar_width=30), MofNCompleteColumn(),
                                     TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                     console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("trials", total=p.total, status=status)
        out = self.progress.console if self.progress else self.console
        for number, state, value, message in p.finished:
            what = f"{value:.4f}" if value is not None else (message or "").splitlines()[0][:160] if message else ""
            out.print(f"trial {number}: {state.lower()}  {what}".rstrip(), soft_wrap=True)
        if self.progress:
            self.progress.update(self.task, completed=p.complete + p.pruned + p.failed, status=status)

    def ended(self, e: Any) -> None:
        """The summary after the workers ended: counts, best trial, where to look next."""
        p = e.progress
        self.console.print(f"study '{e.study}' in {e.storage}: {p.complete} complete, {p.pruned} pruned, "
                           f"{p.failed} failed of {p.total} in {e.seconds:.1f}s")
        for error in e.worker_errors:
            print_warning(error)
        if e.left:
            print_warning(f"{e.left} trials are left; run the same command again to finish the sweep")
        if p.best_trial is not None:
            self.console.print(f"best: trial {p.best_trial} ({p.best_value:.4f})")
        self.console.print(f"next:  cnncli sweep show {e.folder}")

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None
