"""Everything that draws: the only module that imports rich.

The trainer emits events (``training.py``); :class:`TrainReporter` turns them into a
live display on a terminal (epoch and batch bars with running loss, accuracy,
images/s, lr and ETA) or into plain lines when stdout is not a terminal or
``NO_COLOR``/``CI`` is set, so logs hold no control codes.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # training (and numpy's friends) load only when a command needs them
    from cnncli import training as T


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
               fmt: str = "{:.3f}", epochs: list[int] | None = None) -> list[str]:
    """A text chart of one or more series over epochs: marker per series (``*``, ``o``, ``+``),
    ``#`` where two meet, y labels at the top and bottom, epochs along x.

    ``epochs`` numbers the points (the ``epoch`` field of the metrics rows, so a resumed
    run's plot of epochs 5-6 says so); default 1, 2, ... The x axis is labelled with the
    first and last epoch.
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
    left, right = f"epoch {first}", f"epoch {last}"
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

    def __call__(self, event: Any) -> None:
        if self.mode == "json":
            self._json(event)
            return
        getattr(self, f"on_{type(event).__name__}")(event)

    def _json(self, e: Any) -> None:
        import json

        from cnncli import training as T

        if isinstance(e, T.EpochEnded):
            print(json.dumps({"event": "epoch", **e.metrics, "seconds": round(e.seconds, 3),
                              "images_per_s": round(e.images_per_s, 1), "is_best": e.is_best}), flush=True)
        elif isinstance(e, T.RunEnded):
            test = None if e.test is None else {"loss": e.test.loss, "accuracy": e.test.accuracy,
                                                "n": int(e.test.labels.size)}
            print(json.dumps({"event": "end", "run_dir": str(e.run_dir), "best_epoch": e.best_epoch,
                              "best": str(e.best_path), "last": str(e.last_path), "test": test,
                              "stopped_early": e.stopped_early, "seconds": round(e.seconds, 3)}), flush=True)

    # -- events
    def on_RunStarted(self, e: T.RunStarted) -> None:
        if self.mode == "quiet":
            return
        self.console.print(f"run folder: {e.run_dir}")
        self.console.print(f"data: {e.n_train:,} train, {e.n_val:,} validation, {e.n_test:,} test images; "
                           f"model: {e.num_params:,} parameters; {_n(e.epochs, 'epoch')} of "
                           f"{_n(e.batches_per_epoch, 'batch')}")
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
                for line in plot_lines(series, fmt=fmt, epochs=[r["epoch"] for r in h]):
                    self.console.print(line)
            self.console.print(f"best epoch: {e.best_epoch}")
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


def class_label(i: int, classes: Sequence[str] | None) -> str:
    """``7``, or ``7 seven`` when the class has a name other than its number (as predict prints)."""
    name = classes[i] if classes and i < len(classes) else None
    return f"{i} {name}" if name is not None and name != str(i) else str(i)


def render_eval(result: T.EvalResult, checkpoint_path: str, console: Console | None = None,
                classes: Sequence[str] | None = None) -> None:
    """Test loss and accuracy, a per-class precision/recall/F1 table and the confusion matrix.

    Classes are labelled with their number and, given ``classes`` (the checkpoint's class
    names), their name (``2 zebra``). A class with no test images and no predictions shows
    ``-`` and is left out of the macro average (:func:`cnncli.metrics.macro_average`), which
    a caption then says.
    """
    from cnncli.metrics import macro_average, per_class

    console = console or make_console()
    console.print(f"checkpoint: {checkpoint_path}")
    console.print(f"test accuracy {_pct(result.accuracy)}  loss {result.loss:.4f}  "
                  f"({result.labels.size:,} images)")
    pc = per_class(result.confusion)
    macro = macro_average(result.confusion)
    k = result.num_classes
    absent = k - macro["classes"]
    caption = None
    if absent:
        caption = (f"macro avg over the {_n(macro['classes'], 'class')} in the labels or predictions; "
                   f"{_n(absent, 'class')} with no test images and no predictions (-) left out")
    table = Table(title="per class", caption=caption)
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right")
    predicted = result.confusion.sum(axis=0)
    for i in range(k):
        seen = pc["support"][i] > 0 or predicted[i] > 0
        p, r, f1 = ((pc["precision"][i], pc["recall"][i], pc["f1"][i]) if seen else (None, None, None))
        table.add_row(class_label(i, classes), _pct(p), _pct(r), _pct(f1), f"{int(pc['support'][i]):,}")
    table.add_row("macro avg", _pct(macro["precision"]), _pct(macro["recall"]), _pct(macro["f1"]),
                  f"{int(pc['support'].sum()):,}", style="bold")
    console.print(table)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("", justify="right", style="bold")
    for j in range(k):
        cm.add_column(class_label(j, classes), justify="right")
    off = result.confusion - np.diag(np.diag(result.confusion))
    peak = max(int(off.max()), 1)
    for i in range(k):
        cells = []
        for j in range(k):
            v = int(result.confusion[i, j])
            if i == j:
                style = "bold green"
            elif v == 0:
                style = "dim"
            else:  # colour grades with the share of the worst confusion
                style = "red" if v >= 0.5 * peak else ("yellow" if v >= 0.1 * peak else "")
            cells.append(Text(str(v), style=style))
        cm.add_row(class_label(i, classes), *cells)
    console.print(cm)


def render_gradcheck(results: list, tol: float, console: Console | None = None) -> None:
    """Table of relative errors per layer and tensor, with PASS/FAIL against ``tol``.

    ``PASS (zero)`` marks a vanishing gradient (both sides within rounding noise, see
    :mod:`cnncli.gradcheck`), ``PASS (noise)`` a relative error above ``tol`` whose absolute
    difference is within that noise. The summary's worst relative error is over the
    non-vanishing rows; the vanishing ones are counted apart.
    """
    console = console or make_console()
    from cnncli.gradcheck import ZERO_NOISE

    table = Table(title=f"gradient check (float64, central differences; pass if rel. error <= {tol:g}; "
                        f"PASS (zero): a zero gradient, both sides within {ZERO_NOISE:g}x rounding noise; "
                        f"PASS (noise): the difference within it)")
    for col, just in (("layer", "left"), ("tensor", "left"), ("checked", "right"),
                      ("rel. error", "right"), ("max abs error", "right"), ("", "left")):
        table.add_column(col, justify=just)
    for r in results:
        ok = r.passed(tol)
        verdict = ("PASS (zero)" if r.vanishing else "PASS" if r.rel_error <= tol
                   else "PASS (noise)" if ok else "FAIL")
        table.add_row(r.layer, r.tensor, f"{r.checked}/{r.size}", f"{r.rel_error:.2e}", f"{r.max_abs_error:.2e}",
                      Text(verdict, style="green" if ok else "bold red"))
    console.print(table)
    judged = [r for r in results if not r.vanishing]
    zeros = len(results) - len(judged)
    failed = sum(not r.passed(tol) for r in results)
    verdict = "all passed" if not failed else f"{failed} FAILED"
    if judged:
        worst = max(judged, key=lambda r: math.inf if math.isnan(r.rel_error) else r.rel_error)
        worst_text = (f"worst relative error {worst.rel_error:.2e} ({worst.layer} {worst.tensor}) "
                      f"over the {_n(len(judged), 'non-zero gradient')}")
    else:
        worst_text = "no non-zero gradient to compare"
    zero_text = f"; {_n(zeros, 'zero gradient')} (PASS (zero)) not counted" if zeros else ""
    noisy = sum(r.passed(tol) and not r.vanishing and r.rel_error > tol for r in results)
    noise_text = f"; {noisy} passed within rounding noise (PASS (noise))" if noisy else ""
    console.print(f"{len(results)} tensors checked, {verdict}; {worst_text}{zero_text}{noise_text}")


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def render_summary(rows: list[dict], input_shape, batch_size: int, source: str,
                   console: Console | None = None) -> None:
    """The model table (Keras ``model.summary()`` / torchinfo style) with totals."""
    console = console or make_console()
    table = Table(title=f"{source}: input {tuple(input_shape)}")
    for col, just in (("#", "right"), ("layer", "left"), ("output shape", "left"), ("params", "right"),
                      ("non-trainable", "right"), ("FLOPs/image", "right")):
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(str(r["index"]), r["type"], str(tuple(r["output_shape"])), f"{r['params']:,}",
                      f"{r['non_trainable']:,}", _si(r["flops"]))
    console.print(table)
    params = sum(r["params"] for r in rows)
    fixed = sum(r["non_trainable"] for r in rows)
    flops = sum(r["flops"] for r in rows)
    act = sum(math.prod(r["output_shape"]) for r in rows) * batch_size * 4
    console.print(f"trainable parameters: {params:,}   non-trainable: {fixed:,}   "
                  f"size: {(params + fixed) * 4 / 2**20:.2f} MiB (float32)")
    console.print(f"forward: {_si(flops)}FLOPs per image; activations for a batch of {batch_size}: "
                  f"{act / 2**20:.1f} MiB (float32, forward outputs kept for backward)")


def render_timing(result, source: str, threads: int | None, console: Console | None = None) -> None:
    """``cnncli time``: per-layer forward/backward milliseconds and share of the step
    (``caffe time`` style), then whole-step images/s for training and evaluation."""
    console = console or make_console()
    total = sum(l.total_ms for l in result.layers) or 1.0
    table = Table(title=f"{source}: batch {result.batch_size}, median of {result.iterations} steps")
    for col, just in (("#", "right"), ("layer", "left"), ("output shape", "left"), ("forward ms", "right"),
                      ("backward ms", "right"), ("total ms", "right"), ("share", "right")):
        table.add_column(col, justify=just)
    for l in result.layers:
        table.add_row(str(l.index), l.type, "x".join(map(str, l.output_shape)), f"{l.forward_ms:.2f}", f"{l.backward_ms:.2f}",
                      f"{l.total_ms:.2f}", f"{l.total_ms / total * 100:.1f}%")
    table.add_row("", "all layers", "", f"{sum(l.forward_ms for l in result.layers):.2f}",
                  f"{sum(l.backward_ms for l in result.layers):.2f}", f"{total:.2f}", "100.0%")
    console.print(table)
    console.print(f"training step (forward, loss, backward, optimizer): {result.step_ms:.1f} ms = "
                  f"{result.images_per_s:,.0f} images/s")
    console.print(f"evaluation forward: {result.eval_forward_ms:.1f} ms = {result.eval_images_per_s:,.0f} images/s"
                  + (f"   (BLAS threads: {threads})" if threads else ""))


def render_predictions(rows: list[dict], console: Console | None = None) -> None:
    """One line per image: input, predicted class and probability, then the runners-up."""
    console = console or make_console()
    for r in rows:
        best, *rest = r["top"]

        def label(t: dict) -> str:
            return f"{t['class']} {t['name']}" if "name" in t and t["name"] != str(t["class"]) else str(t["class"])

        others = "  ".join(f"{label(t)} {t['probability'] * 100:.1f}%" for t in rest)
        console.print(f"{r['input']}: {label(best)} ({best['probability'] * 100:.1f}%)"
                      + (f"   then {others}" if others else ""))


def image_lines(img: np.ndarray) -> list[str]:
    """A uint8 (H, W) image drawn with shade characters, two columns per pixel, one row per
    two pixel rows (the darker-is-emptier ramp of plain-text MNIST renderings)."""
    ramp = " .:-=+*#%@"
    h = img.shape[0] - img.shape[0] % 2
    pairs = (img[:h:2].astype(np.int32) + img[1:h:2]) // 2
    idx = pairs * (len(ramp) - 1) // 255
    return ["".join(ramp[v] * 2 for v in row) for row in idx]


def render_misclassified(result: T.EvalResult, images: np.ndarray, count: int,
                         console: Console | None = None, classes: Sequence[str] | None = None) -> None:
    """Draw the first ``count`` misclassified test images with their true and predicted class
    (number and, given ``classes``, name)."""
    from rich.columns import Columns

    wrong = np.flatnonzero(result.preds != result.labels)[:count]
    if not len(wrong) or images.shape[1] != 1:
        return
    console = console or make_console()
    panels = []
    for i in wrong:
        head = (f"#{i}: true {class_label(int(result.labels[i]), classes)}, "
                f"predicted {class_label(int(result.preds[i]), classes)}")
        panels.append(Text("\n".join([head, *image_lines(images[i, 0])])))
    console.print(f"first {len(wrong)} misclassified test images:")
    console.print(Columns(panels, padding=(1, 3)))


def render_layers(descriptions: list[dict], console: Console | None = None, full: bool = False) -> None:
    """The registry: one row per layer with options and defaults (``full``: the whole docstring)."""
    console = console or make_console()
    if full:
        for d in descriptions:
            console.print(Text(d["name"], style="bold"))
            if d["aliases"]:
                console.print(f"aliases: {', '.join(d['aliases'])}")
            if d["inferred"]:
                console.print(f"inferred from the input: {', '.join(d['inferred'])}")
            console.print(d["doc"])
        return
    table = Table(title="layers (cnncli layers NAME for details)")
    table.add_column("type", style="bold")
    table.add_column("options (default)")
    table.add_column("shape")
    table.add_column("description")
    for d in descriptions:
        opts = ", ".join(n if v == "required" else f"{n}={v!r}" for n, v in d["options"].items())
        table.add_row(d["name"], opts or "-", d["shape"], d["summary"])
    console.print(table)


# ------------------------------------------------------------------ datasets (cnncli data ...)

def _gray(img: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W) uint8: the channel itself, or ITU-R 601 luma of RGB."""
    if img.shape[0] == 1:
        return img[0]
    rgb = img[:3].astype(np.float32)
    return np.clip(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2], 0, 255).astype(np.uint8)


def _shrink(img: np.ndarray, max_side: int = 32) -> np.ndarray:
    """(C, H, W) subsampled so that neither side exceeds ``max_side`` pixels."""
    step = max(1, math.ceil(max(img.shape[1:]) / max_side))
    return img[:, ::step, ::step]


def shade_lines(img: np.ndarray) -> list[str]:
    """A uint8 (H, W) image in ASCII shades, one character per pixel column and one line per
    two pixel rows (averaged), which keeps the aspect ratio of a terminal cell."""
    ramp = " .:-=+*#%@"
    if img.shape[0] % 2:
        img = np.concatenate([img, np.zeros((1, img.shape[1]), img.dtype)])
    pairs = (img[0::2].astype(np.int32) + img[1::2]) // 2
    return ["".join(ramp[v] for v in row) for row in pairs * (len(ramp) - 1) // 255]


def image_blocks(img: np.ndarray) -> list[Text]:
    """A (C, H, W) uint8 image in upper half blocks: one character per pixel column, one line
    per two pixel rows, the upper pixel as foreground colour and the lower as background
    (grey levels, or RGB). Rich maps the colours to what the terminal supports."""
    c, h, w = img.shape
    if h % 2:
        img = np.concatenate([img, np.zeros((c, 1, w), img.dtype)], axis=1)
    rgb = np.repeat(img[:1], 3, axis=0) if c == 1 else img[:3]
    lines = []
    for r in range(0, img.shape[1], 2):
        line = Text()
        for x in range(w):
            top, bottom = rgb[:, r, x], rgb[:, r + 1, x]
            line.append("\u2580", style=f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})")
        lines.append(line)
    return lines


def render_samples(samples: list[tuple[np.ndarray, str]], console: Console | None = None,
                   plain: bool | None = None) -> None:
    """A grid of (image (C, H, W) uint8, caption) pairs: half blocks in colour on a terminal,
    shade characters (ASCII) when plain."""
    from rich.columns import Columns

    console = console or make_console()
    plain = plain_requested() if plain is None else plain
    panels = []
    for img, caption in samples:
        small = _shrink(img, 28 if plain else 32)
        if plain:
            body = [Text(line) for line in shade_lines(_gray(small))]
        else:
            body = image_blocks(small)
        width = max((len(t) for t in body), default=0)
        panel = Text(caption[:max(width, 8)])
        for line in body:
            panel.append("\n")
            panel.append_text(line)
        panels.append(panel)
    if panels:
        console.print(Columns(panels, padding=(1, 2)))


def _floats(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def render_data_info(info: dict, samples: list[tuple[np.ndarray, str]], console: Console | None = None) -> None:
    """``cnncli data info``: the splits (count, image shape, pixel mean/std per channel), the
    class balance of each split, then a grid of sample images."""
    console = console or make_console()
    console.print(f"dataset: {info['dataset']} (format {info['format']})")
    splits = info["splits"]
    table = Table(title="splits (pixel statistics of pixel/255, per channel)")
    for col, just in (("split", "left"), ("images", "right"), ("image shape", "left"), ("pixel mean", "right"),
                      ("pixel std", "right"), ("source", "left")):
        table.add_column(col, justify=just)
    for name, s in splits.items():
        table.add_row(name, f"{s['n']:,}", "x".join(map(str, s["image_shape"])), _floats(s["mean"]),
                      _floats(s["std"]), s["source"])
    console.print(table)
    classes = info.get("classes")
    k = max(len(s["class_counts"]) for s in splits.values())
    balance = Table(title=f"class balance ({k} classes)")
    balance.add_column("class", justify="right")
    if classes:
        balance.add_column("name")
    for name in splits:
        balance.add_column(name, justify="right")
        balance.add_column("%", justify="right")
    for i in range(k):
        row = [str(i)] + ([classes[i] if i < len(classes) else ""] if classes else [])
        for s in splits.values():
            count = s["class_counts"][i] if i < len(s["class_counts"]) else 0
            row += [f"{count:,}", f"{100 * count / max(s['n'], 1):.2f}"]
        balance.add_row(*row)
    console.print(balance)
    if samples:
        console.print(f"samples ({info['sample_split']} split, the first image of each class):")
        render_samples(samples, console)


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


def render_dataset_list(rows: list[tuple[str, str, str]], roots: list, console: Console | None = None) -> None:
    """``cnncli data list``: each named dataset, where it was found (or how to get it), what it is."""
    console = console or make_console()
    table = Table(title=f"named datasets (looked for as ROOT/NAME in: {', '.join(map(str, roots))})")
    for col in ("name", "found in", "description"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
