"""Tables and images for the terminal: every command's result drawn with rich.

:mod:`cnncli.report` owns the consoles, errors, JSON and the live reporters; this module
draws finished results (evaluation, gradient check, summary, timing, predictions, layers,
datasets) and images. The two are the only modules that import rich.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnncli.report import _n, _pct, make_console, plain_requested, plot_lines

if TYPE_CHECKING:  # training (and numpy's friends) load only when a command needs them
    from pathlib import Path

    from cnncli.loop import EvalResult
    from cnncli.datainfo import DataInfo
    from cnncli.inspect_model import ModelSummary
    from cnncli.timing import StepTime


def class_label(i: int, name: str | None = None) -> str:
    """``7``, or ``7 seven`` when the class has a name other than its number: how every
    table, caption and prediction names a class (``name`` from :func:`cnncli.metrics.class_name`)."""
    return f"{i} {name}" if name is not None and name != str(i) else str(i)


def _labels(k: int, classes: Sequence[str] | None) -> list[str]:
    """:func:`class_label` of classes 0..k-1 with their names from ``classes``."""
    from cnncli.metrics import class_name

    return [class_label(i, class_name(i, classes)) for i in range(k)]


def render_eval(result: EvalResult, checkpoint_path: str, console: Console | None = None,
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
    labels = _labels(k, classes)
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
        table.add_row(labels[i], _pct(p), _pct(r), _pct(f1), f"{int(pc['support'][i]):,}")
    table.add_row("macro avg", _pct(macro["precision"]), _pct(macro["recall"]), _pct(macro["f1"]),
                  f"{int(pc['support'].sum()):,}", style="bold")
    console.print(table)
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("", justify="right", style="bold")
    for j in range(k):
        cm.add_column(labels[j], justify="right")
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
        cm.add_row(labels[i], *cells)
    console.print(cm)


def render_gradcheck(results: list, tol: float, console: Console | None = None) -> None:
    """Table of relative errors per layer and tensor, with PASS/FAIL against ``tol``.

    ``PASS (zero)`` marks a vanishing gradient (both sides within rounding noise, see
    :mod:`cnncli.gradcheck`), ``PASS (noise)`` a relative error above ``tol`` whose absolute
    difference is within that noise. ``checked`` shows ``, K skipped (kink)`` when K entries
    were left out because their central difference straddled a kink; ``SKIP (kink)`` marks a
    tensor with nothing else. The summary's worst relative error is over the non-vanishing
    rows; the vanishing ones are counted apart, and the skipped entries are totalled.
    """
    console = console or make_console()
    from cnncli.gradcheck import ZERO_NOISE

    table = Table(title=f"gradient check (float64, central differences; pass if rel. error <= {tol:g}; "
                        f"PASS (zero): a zero gradient, both sides within {ZERO_NOISE:g}x rounding noise; "
                        f"PASS (noise): the difference within it; skipped (kink): entries whose central "
                        f"difference straddles a kink, not judged)")
    for col, just in (("layer", "left"), ("tensor", "left"), ("checked", "right"),
                      ("rel. error", "right"), ("max abs error", "right"), ("", "left")):
        table.add_column(col, justify=just)
    for r in results:
        ok = r.passed(tol)
        verdict = ("SKIP (kink)" if r.all_kinks else "PASS (zero)" if r.vanishing else "PASS" if r.rel_error <= tol
                   else "PASS (noise)" if ok else "FAIL")
        skipped = f", {r.skipped} skipped (kink)" if r.skipped else ""
        table.add_row(r.layer, r.tensor, f"{r.checked}/{r.size}{skipped}", f"{r.rel_error:.2e}",
                      f"{r.max_abs_error:.2e}",
                      Text(verdict, style="yellow" if r.all_kinks else "green" if ok else "bold red"))
    console.print(table)
    console.print(_gradcheck_summary(results, tol))


def _gradcheck_summary(results: list, tol: float) -> str:
    """The line under the gradcheck table: verdict, worst relative error, what was not judged."""
    compared = [r for r in results if not r.all_kinks]
    judged = [r for r in compared if not r.vanishing]
    zeros = len(compared) - len(judged)
    failed = sum(not r.passed(tol) for r in results)
    verdict = "all passed" if not failed else f"{failed} FAILED"
    if judged:
        worst = max(judged, key=lambda r: math.inf if math.isnan(r.rel_error) else r.rel_error)
        worst_text = (f"worst relative error {worst.rel_error:.2e} ({worst.layer} {worst.tensor}) "
                      f"over the {_n(len(judged), 'non-zero gradient')}")
    else:
        worst_text = "no non-zero gradient to compare"
    zero_text = f"; {_n(zeros, 'zero gradient')} (PASS (zero)) not counted" if zeros else ""
    noisy = sum(r.passed(tol) and not r.vanishing and r.rel_error > tol for r in compared)
    noise_text = f"; {noisy} passed within rounding noise (PASS (noise))" if noisy else ""
    skipped = sum(r.skipped for r in results)
    kink_text = ""
    if skipped:
        kinked = sum(r.skipped > 0 for r in results)
        kink_text = (f"; {skipped:,} {'entry' if skipped == 1 else 'entries'} skipped at kinks "
                     f"(in {_n(kinked, 'tensor')}), not judged")
        none = len(results) - len(compared)
        kink_text += f"; {_n(none, 'tensor')} with every entry tried at a kink (SKIP (kink))" if none else ""
    return f"{len(results)} tensors checked, {verdict}; {worst_text}{zero_text}{noise_text}{kink_text}"


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _training(row: dict) -> str:
    """How the optimizer treats a summary row's parameters: ``frozen``, ``lr x2, decay x0``
    (the multipliers that are not 1), or nothing."""
    if row.get("trainable") is False:
        return "frozen"
    def values(key: str) -> list[float]:       # a multiplier is one number, or one per parameter
        v = row.get(key, 1.0)
        return list(v) if isinstance(v, (list, tuple)) else [v]
    return ", ".join(f"{what} x{'/'.join(f'{x:g}' for x in values(key))}"
                     for what, key in (("lr", "lr_mult"), ("decay", "decay_mult")) if values(key) != [1.0] * len(values(key)))


def render_summary(summary: ModelSummary, source: str, console: Console | None = None) -> None:
    """The model table (Keras ``model.summary()`` / torchinfo style) with totals and the
    training memory estimate that ``train`` checks batches against."""
    console = console or make_console()
    table = Table(title=f"{source}: input {tuple(summary.input_shape)}")
    for col, just in (("#", "right"), ("layer", "left"), ("output shape", "left"), ("params", "right"),
                      ("non-trainable", "right"), ("FLOPs/image", "right"), ("training", "left")):
        table.add_column(col, justify=just)
    for r in summary.rows:
        table.add_row(str(r["index"]), r["type"], str(tuple(r["output_shape"])), f"{r['params']:,}",
                      f"{r['non_trainable']:,}", _si(r["flops"]), _training(r))
    console.print(table)
    fixed = sum(r["non_trainable"] for r in summary.rows)
    flops = sum(r["flops"] for r in summary.rows)
    frozen = sum(r["params"] for r in summary.rows if r.get("trainable") is False)
    console.print(f"trainable parameters: {summary.params - frozen:,}   "
                  + (f"frozen (trainable: false): {frozen:,}   " if frozen else "") + f"non-trainable: {fixed:,}   "
                  f"size: {(summary.params + fixed) * 4 / 2**20:.2f} MiB (float32)")
    console.print(f"forward: {_si(flops)}FLOPs per image; training memory for a batch of {summary.batch_size}: "
                  f"{summary.training_bytes / 2**20:.1f} MiB (float32 estimate: each layer's output, its "
                  f"gradient and a conv's im2col, as train checks)")


def render_timing(result: StepTime, source: str, threads: int | None, console: Console | None = None) -> None:
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
    """One line per image (rows of :func:`cnncli.evaluation.predict_files`): input, predicted
    class and probability, then the runners-up."""
    console = console or make_console()
    for r in rows:
        best, *rest = [(class_label(t["class"], t.get("name")), t["probability"] * 100) for t in r["top"]]
        others = "  ".join(f"{label} {p:.1f}%" for label, p in rest)
        console.print(f"{r['input']}: {best[0]} ({best[1]:.1f}%)" + (f"   then {others}" if others else ""))


def render_misclassified(result: EvalResult, images: np.ndarray, count: int,
                         console: Console | None = None, classes: Sequence[str] | None = None) -> None:
    """Draw the first ``count`` misclassified test images (N, C, H, W) uint8, grey or colour,
    as :func:`render_samples` draws them, each with its true and predicted class (number
    and, given ``classes``, name)."""
    wrong = np.flatnonzero(result.preds != result.labels)[:count]
    if not len(wrong):
        return
    console = console or make_console()
    labels = _labels(result.num_classes, classes)
    samples = [(images[i], f"#{i}: true {labels[result.labels[i]]}, predicted {labels[result.preds[i]]}")
               for i in wrong]
    console.print(f"first {len(wrong)} misclassified test images:")
    render_samples(samples, console)


def render_layers(descriptions: list[dict], console: Console | None = None, full: bool = False) -> None:
    """The registry: one row per layer with options, defaults and ``exports`` (the export formats,
    when the description has them; ``full``: the whole docstring)."""
    console = console or make_console()
    if full:
        for d in descriptions:
            console.print(Text(d["name"], style="bold"))
            if d["aliases"]:
                console.print(f"aliases: {', '.join(d['aliases'])}")
            if d["inferred"]:
                console.print(f"inferred from the input: {', '.join(d['inferred'])}")
            if "exports" in d:
                console.print(f"exports to: {d['exports']}")
            console.print(d["doc"])
        return
    table = Table(title="layers (cnncli layers NAME for details)")
    table.add_column("type", style="bold")
    table.add_column("options (default)")
    table.add_column("shape")
    table.add_column("description")
    table.add_column("exports")
    for d in descriptions:
        opts = ", ".join(n if v == "required" else f"{n}={v!r}" for n, v in d["options"].items())
        table.add_row(d["name"], opts or "-", d["shape"], d["summary"], d.get("exports", "-"))
    console.print(table)


# ------------------------------------------------------------------ images (data info samples, misclassified)

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


#: Captions of drawn images wrap at spaces beyond their image's width or this many columns,
#: whichever is wider (``#12: true 7, predicted 1`` stays one line under a small image).
CAPTION_WIDTH = 24


def render_samples(samples: list[tuple[np.ndarray, str]], console: Console | None = None,
                   plain: bool | None = None) -> None:
    """A grid of (image (C, H, W) uint8, caption) pairs: half blocks in colour on a terminal,
    shade characters (ASCII) when plain (:func:`shade_lines` of the grey levels). A caption
    wider than its image and than :data:`CAPTION_WIDTH` wraps at spaces."""
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
        lines = textwrap.wrap(caption, max(width, CAPTION_WIDTH), break_long_words=False, break_on_hyphens=False)
        panel = Text("\n".join(lines))
        for line in body:
            panel.append("\n")
            panel.append_text(line)
        panels.append(panel)
    if panels:
        console.print(Columns(panels, padding=(1, 2)))


def _floats(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def render_data_info(data: DataInfo, console: Console | None = None) -> None:
    """``cnncli data info``: the splits (count, image shape, pixel mean/std per channel), the
    class balance of each split, then a grid of sample images captioned ``#index: class``."""
    from cnncli.metrics import class_name

    console = console or make_console()
    info = data.info
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
    if data.samples:
        console.print(f"samples ({data.sample_split} split, the first image of each class):")
        render_samples([(img, f"#{i}: {class_label(y, class_name(y, classes))}") for i, img, y in data.samples],
                       console)


def render_dataset_list(rows: list[tuple[str, str, str]], roots: list, console: Console | None = None) -> None:
    """``cnncli data list``: each named dataset, where it was found (or how to get it), what it is."""
    console = console or make_console()
    table = Table(title=f"named datasets (looked for as ROOT/NAME in: {', '.join(map(str, roots))})")
    for col in ("name", "found in", "description"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def render_sweep(results, best_yaml: Path | None, console: Console | None = None) -> None:
    """``cnncli sweep show``: the trials table (best first), the best parameters and run
    folder, where best.yaml went, and the objective by trial as a text plot."""
    console = console or make_console()
    names = sorted({k for r in results.trials for k in r.params})
    table = Table(title=f"study '{results.study}' ({results.storage}): {results.monitor}, {results.direction}",
                  title_justify="left", pad_edge=False)
    # a key path's header breaks after its dots; short cells never wrap ("complete" and the
    # parameters' values stay whole on an 80-column terminal); the folder or note folds
    headers = ["#", "state", results.monitor.replace("_", "_\n"), *(n.replace(".", ".\n") for n in names),
               "epochs", "s", "folder / note"]
    for i, col in enumerate(headers):
        last = i == len(headers) - 1
        table.add_column(col, justify="left" if col == "state" or last else "right", overflow="fold",
                         no_wrap=not last, min_width=11 if last else None)     # trials/0001
    for r in results.trials:
        note = r.message or r.run_dir or ""
        if not r.message and r.run_dir and results.folder is not None and r.run_dir.startswith(str(results.folder)):
            note = r.run_dir[len(str(results.folder)):].lstrip("/")
        table.add_row(str(r.number), r.state.lower(), "-" if r.value is None else f"{r.value:.4f}",
                      *(f"{r.params[k]:.4g}" if isinstance(r.params.get(k), float) else str(r.params.get(k, "-"))
                        for k in names),
                      str(len(r.intermediate)), "-" if r.seconds is None else f"{r.seconds:.0f}",
                      note.splitlines()[0][:100] if note else "")
    console.print(table)
    if results.best is None:
        console.print("no trial has completed yet")
        return
    b = results.best
    console.print(f"best: trial {b.number}, {results.monitor} {b.value:.4f}; parameters: "
                  + ", ".join(f"{k}={v}" for k, v in b.params.items()), soft_wrap=True)
    console.print(f"best trial's folder: {b.run_dir}   (cnncli eval {b.run_dir}/best.npz)", soft_wrap=True)
    if best_yaml is not None:
        console.print(f"wrote {best_yaml}: the config with these parameters; train it with: cnncli train {best_yaml}",
                      soft_wrap=True)
    done = sorted((r for r in results.trials if r.value is not None), key=lambda r: r.number)
    if len(done) >= 2:
        console.print(f"{results.monitor} by trial (complete trials)")
        for line in plot_lines({results.monitor: [r.value for r in done]}, fmt="{:.4f}",
                               epochs=[r.number for r in done], x_name="trial"):
            console.print(line)
