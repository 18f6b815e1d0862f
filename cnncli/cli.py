"""The command line (typer). Thin: parse argv, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a failed check (gradcheck) or a diverged run, 2 bad input
(config, data, checkpoint, a batch size the model cannot take, out of memory, an output
that cannot be written), 130 interrupted, 141 the reader of stdout went away (a closed
pipe, ``| head``; quietly, as grep or git). User errors print one message and no
traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

# OpenBLAS's idle threads spin on their core for ~0.1 s after each matrix product, taking the
# core from the element-wise work split over threads after it (``layers.parallel``) and from
# any other process; set before NumPy loads, this lets them sleep at once (measured on
# configs/mnist-small.yaml: BN forward+backward after a GEMM 11.1 -> 7.0 ms with 2 threads).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

try:
    import typer
    from typer.core import TyperGroup
except KeyboardInterrupt:       # Ctrl-C while the console script starts (typer takes ~0.1 s to import)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

from cnncli import __version__
from cnncli.errors import CnncliError, DataError


@contextlib.contextmanager
def _pipe_closed_quietly():
    """A reader that went away (``cnncli eval CKPT | head -2``) ends the command with no
    message and exit 141, as grep or git do (typer alone would exit 1)."""
    try:
        yield
    except BrokenPipeError:
        from cnncli.report import stdout_closed

        stdout_closed()


@contextlib.contextmanager
def _interrupt_exits_130(ctx=None):
    """Ctrl-C outside :func:`user_errors` (parsing argv, a command without it) ends with
    ``interrupted`` and exit 130, as inside it (click alone prints ``Aborted!``, exit 1);
    with ``--debug`` (``ctx.obj.debug``) the traceback shows."""
    try:
        yield
    except KeyboardInterrupt:
        if ctx is not None and getattr(ctx.obj, "debug", False):
            raise
        typer.echo("interrupted", err=True)
        raise typer.Exit(code=130) from None


class _Group(TyperGroup):
    """The command group: every command (and --help) runs under :func:`_pipe_closed_quietly`
    and :func:`_interrupt_exits_130`."""

    def make_context(self, *args, **kwargs):
        with _pipe_closed_quietly(), _interrupt_exits_130():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _pipe_closed_quietly(), _interrupt_exits_130(ctx):
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Group,
    name="cnncli",
    help="Train, evaluate and gradient-check small convolutional networks defined in YAML (pure NumPy).\n\n"
         "Example: cnncli train configs/mnist.yaml --epochs 2",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class State:
    debug: bool = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnncli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ctx.obj = State(debug=debug)


@contextlib.contextmanager
def user_errors(ctx: typer.Context):
    """Turn library errors into one message and an exit code (traceback only with --debug):
    a :class:`CnncliError` its message and ``exit_code``, out of memory 2, Ctrl-C 130."""
    try:
        yield
    except (CnncliError, MemoryError, KeyboardInterrupt) as e:
        if ctx.obj and ctx.obj.debug:
            raise
        if isinstance(e, KeyboardInterrupt):
            typer.echo("interrupted", err=True)
            raise typer.Exit(code=130) from None
        from cnncli.report import print_error

        print_error(str(e) if isinstance(e, CnncliError) else
                    "out of memory; use a smaller model, train.batch_size or train.eval_batch_size")
        raise typer.Exit(code=e.exit_code if isinstance(e, CnncliError) else 2) from None


def _overrides(sets: list[str] | None, **shortcuts) -> list[str]:
    """``--set`` items plus shortcut flags, shortcuts last (they win).

    Shortcut values are already typed by typer; text (``--out``) is quoted so YAML keeps it
    as written (``run #2``, ``null`` and ``2024`` are folder names there)."""
    from cnncli.config import Override

    out = list(sets or [])
    keys = {"epochs": "train.epochs", "seed": "train.seed", "batch_size": "train.batch_size", "threads": "train.threads",
            "lr": "train.optimizer.lr", "out": "output.dir"}
    for name, value in shortcuts.items():
        if value is not None:
            text = f"{keys[name]}={json.dumps(value) if isinstance(value, str) else repr(value)}"
            out.append(Override(text, "--" + name.replace("_", "-")))
    return out


SET_HELP = "Override a config value, e.g. --set train.epochs=3 (repeatable)."


def _resume_hint(config: Path, overrides: list[str], resume_from: Path | None, run_dir: Path) -> str:
    """The command that continues an interrupted run: the same config and overrides (less the
    run folder, which --resume implies) plus ``--resume RUN/last.npz``."""
    import shlex

    args = ["cnncli", "train", str(config)]
    for item in overrides:
        if not item.startswith("output.dir="):
            args += ["--set", item]
    if resume_from is not None:
        return "resume with: " + shlex.join([*args, "--resume", str(resume_from)])
    return ("no epoch had finished, so there is nothing to resume; start again with: "
            + shlex.join([*args, "--out", str(run_dir), "--overwrite"]))


@app.command()
def train(
    ctx: typer.Context,
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config, e.g. configs/mnist.yaml."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override train.epochs."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Override train.seed."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Override train.batch_size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Override train.optimizer.lr."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024,
                                          help="Threads to compute with (override train.threads; default: all cores)."),
    out: Optional[str] = typer.Option(None, "--out", metavar="FOLDER", help="Run folder (override output.dir)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse the run folder even if it holds a run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print one line at the end: the test accuracy (if "
                               "there is a test split) and the path of the best checkpoint, last."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per epoch and one at the end."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="CHECKPOINT",
                                          help="Continue the run of CHECKPOINT (RUN/last.npz) in its folder, exactly "
                                               "where it stopped; --epochs may raise the total. With --out NEWDIR "
                                               "the run continues in a new folder (e.g. from an earlier epoch_K.npz)."),
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="FILE",
                                           help="Start a new run from these weights (fine-tuning, as Caffe's "
                                                "--weights): a cnncli checkpoint or a PyTorch-layout .safetensors "
                                                "file for the same layers; epoch 1, fresh optimizer."),
) -> None:
    """Train the network of CONFIG; write checkpoints and metrics to a run folder.

    Example: cnncli train configs/mnist.yaml --epochs 2 --out runs/first
    Resume:  cnncli train configs/mnist.yaml --resume runs/first/last.npz --epochs 4
    Branch:  cnncli train configs/mnist.yaml --resume runs/first/epoch_2.npz --out runs/from-epoch-2
    Other data (IDX, NPZ, CSV, image folders, or a name): --set data.path=digits.npz  or  --set data.name=kmnist
    Fine-tune: cnncli train configs/mnist.yaml --weights runs/first/best.npz   (or model.safetensors)
    """
    with user_errors(ctx):
        from cnncli import config as C
        from cnncli import report, training

        overrides = _overrides(sets, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, out=out, threads=threads)
        cfg = C.load(config, overrides)
        reporter = report.TrainReporter("json" if json_out else "quiet" if quiet else None)
        try:
            training.train(cfg, reporter, resume=resume, branch=out is not None, overwrite=overwrite,
                           batch_size_flag="--batch-size" if batch_size is not None else None, weights=weights)
        except training.TrainingInterrupted as e:
            if not e.complete:
                e.args = (f"{e.args[0]}\n{_resume_hint(config, overrides, e.resume_from, e.path.parent)}",)
            raise
        finally:
            reporter.close()


@app.command("eval")
def eval_(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A checkpoint, e.g. runs/mnist/best.npz."),
    data: Optional[str] = typer.Option(None, "--data", metavar="DATASET",
                                       help="Evaluate on this dataset's test split: a folder or file in any format "
                                            "(IDX, NPZ, CSV, image folders) or a name such as fashion-mnist "
                                            "(default: the one it was trained on)."),
    test_limit: Optional[int] = typer.Option(None, "--test-limit", min=0,
                                             help="Evaluate the first N test images; 0 = all (default: "
                                                  "the run's data.test_limit)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Evaluation batch size."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    show_errors: int = typer.Option(3, "--show-errors", min=0, help="Draw this many misclassified images."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="CONFIG",
                                          help="Build the network from this config and read CHECKPOINT as its "
                                               "weights: a cnncli checkpoint or a PyTorch-layout .safetensors file "
                                               "(data and normalization are the config's)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024,
                                          help="Threads to compute with (default: all cores)."),
) -> None:
    """Measure a checkpoint on the test split: loss, accuracy, per-class figures, confusion matrix.

    Classes are shown with the checkpoint's class names, if it has them (image folders,
    data.classes). --json adds "classes" (the names or null), "per_class" and "macro_avg"
    (precision, recall, F1 averaged over the classes in the labels or predictions).
    Example: cnncli eval runs/mnist/best.npz   (or: --data data/other-digits.npz)
    Weights from PyTorch: cnncli eval model.safetensors --config configs/mnist.yaml
    """
    with user_errors(ctx):
        from cnncli import evaluation, render, report

        if data is not None and not data.strip():
            raise DataError("--data is empty; give a dataset folder, file or name")
        limit = None if test_limit is None else (test_limit or 10**12)
        cfg = _load_config(config)
        result, cfg, ck, test = evaluation.evaluate_checkpoint(checkpoint, data, batch_size, limit, cfg, threads)
        classes = cfg.data.classes                # the checkpoint's class names
        if json_out:
            report.print_json(report.eval_json(result, str(checkpoint), ck.meta.get("epoch"), classes))
            return
        render.render_eval(result, str(checkpoint), classes=classes)
        render.render_misclassified(result, test.images, show_errors, classes=classes)


@app.command()
def predict(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A checkpoint, e.g. runs/mnist/best.npz."),
    inputs: List[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files (not folders): .npy, IDX, PGM, or "
                                        "PNG and other formats (needs cnncli[images]); RGB for a model trained on "
                                        "colour images."),
    top_k: int = typer.Option(1, "--top-k", "-k", min=1, help="Show the k most likely classes."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="CONFIG",
                                          help="Build the network from this config and read CHECKPOINT as its "
                                               "weights: a cnncli checkpoint or a PyTorch-layout .safetensors file "
                                               "(data and normalization are the config's)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024,
                                          help="Threads to compute with (default: all cores)."),
) -> None:
    """Classify images with a checkpoint: predicted class and probability.

    Images must have the model's size and channels (28x28 grayscale for MNIST, light digit on
    dark background). A .npy file holds one image, (H, W), (H, W, C) or (C, H, W), or a stack,
    (N, H, W), (N, H, W, C) or (N, C, H, W); (H, W) forms only for grayscale models.
    Example: cnncli predict runs/mnist/best.npz digit.pgm --top-k 3
    """
    with user_errors(ctx):
        from cnncli import evaluation, render, report

        rows = evaluation.predict_files(checkpoint, inputs, top_k, _load_config(config), threads)
        if json_out:
            for r in rows:
                report.print_json(r)
            return
        render.render_predictions(rows)


def _load_config(config: Path | None):
    """``--config`` of eval/predict loaded and validated, or None."""
    from cnncli import config as C

    return None if config is None else C.load(config, [])


@app.command()
def export(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A checkpoint, e.g. runs/mnist/best.npz."),
    fmt: str = typer.Option(..., "--format", "-f", metavar="FORMAT",
                            help="onnx: one .onnx file; pytorch: model.safetensors + model.py in a folder."),
    out: Path = typer.Option(..., "--out", "-o", metavar="PATH",
                             help="The .onnx file (onnx) or the folder to write into (pytorch)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files already there."),
) -> None:
    """Write a checkpoint as an ONNX model or as PyTorch files, to run it without cnncli.

    ONNX (opset 20): input "pixels", float32 (N, C, H, W) in 0-255, the normalization inside;
    output "output"; class names in the metadata. PyTorch: model.safetensors (PyTorch's names
    and layouts) and model.py (the torch.nn.Sequential, normalize(), load()). Needs
    cnncli[export] (onnx, safetensors); torch is not needed to export.
    Example: cnncli export runs/mnist/best.npz --format onnx -o mnist.onnx
             cnncli export runs/mnist/best.npz --format pytorch -o mnist-pytorch
    """
    with user_errors(ctx):
        from cnncli import report
        from cnncli.export.run import export_checkpoint

        for path in export_checkpoint(checkpoint, fmt, out, overwrite):
            report.print_text(f"wrote {path}\n")


@app.command()
def gradcheck(
    ctx: typer.Context,
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config, e.g. configs/tiny.yaml."),
    tol: Optional[float] = typer.Option(None, "--tol", min=1e-15, max=1.0,
                                        help="Largest relative error that passes. Default: 1e-6 "
                                             "(cnncli.gradcheck.DEFAULT_TOL)."),
    batch_size: int = typer.Option(4, "--batch-size", min=2, help="Samples in the check batch."),
    max_checks: int = typer.Option(256, "--max-checks", min=1,
                                   help="Entries checked per tensor (sampled when larger)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random inputs."),
    inputs: Optional[Path] = typer.Option(
        None, "--input", metavar="FILE.npy",
        help="Check at these inputs instead of random ones: one sample (C, H, W) or a batch (N, C, H, W) "
             "(its first --batch-size samples); floats are taken as the model's input, uint8 pixels are "
             "normalized as training does."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
) -> None:
    """Compare every backward pass with central differences in float64; exit 1 if any fails.

    Checks each layer's input and parameter gradients, then the whole model's loss. Entries
    whose central difference straddles a kink (a ReLU input at 0, a max-pool tie) are
    skipped and counted, never failed.
    Example: cnncli gradcheck configs/tiny.yaml --input my_images.npy
    """
    with user_errors(ctx):
        from cnncli import config as C
        from cnncli import gradcheck as G
        from cnncli import render

        tol = G.DEFAULT_TOL if tol is None else tol
        results = G.run(C.load(config, _overrides(sets)), batch_size, max_checks, seed, inputs)
        render.render_gradcheck(results, tol)
        if not all(r.passed(tol) for r in results):
            raise typer.Exit(code=1)


@app.command()
def summary(
    ctx: typer.Context,
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config, e.g. configs/mnist.yaml."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Validate CONFIG and show the model: output shape, parameters and FLOPs of each layer.

    Example: cnncli summary configs/mnist.yaml
    """
    with user_errors(ctx):
        from cnncli import config as C
        from cnncli import inspect_model, render, report

        s = inspect_model.summary(C.load(config, _overrides(sets)))
        if json_out:
            report.print_json(report.summary_json(s))
        else:
            render.render_summary(s, str(config))
        for w in s.warnings:
            report.print_warning(w)


@app.command("time")
def time_(
    ctx: typer.Context,
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config, e.g. configs/mnist.yaml."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024,
                                          help="Threads to compute with (override train.threads; default: all cores)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1,
                                             help="Images per step. Default: train.batch_size."),
    iterations: int = typer.Option(10, "--iterations", "-n", min=1, help="Timed steps (median reported)."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed steps first."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Time each layer's forward and backward pass for one batch, like `caffe time`.

    Prints milliseconds per layer, each layer's share of the step, and images/s for a
    whole training step (forward, loss, backward, optimizer) and for evaluation. The
    batch is random data of the model's input shape; no training data is read unless
    the input shape must come from it.

    Example: cnncli time configs/mnist.yaml --batch-size 128 --iterations 20
    """
    with user_errors(ctx):
        from cnncli import config as C
        from cnncli import render, report, timing

        result, blas = timing.time_config(C.load(config, _overrides(sets, threads=threads)), batch_size,
                                          iterations, warmup, "--batch-size")
        if json_out:
            report.print_json(report.timing_json(result, blas))
            return
        render.render_timing(result, str(config), blas)


@app.command()
def layers(
    name: Optional[str] = typer.Argument(None, help="Show one layer in full."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the reference as a Markdown table."),
) -> None:
    """List the registered layers with their options, defaults and export formats.

    Example: cnncli layers conv2d
    """
    from cnncli import render, report
    from cnncli.export import export_formats
    from cnncli.layers import LAYERS, describe, resolve
    from cnncli.layers.registry import reference_markdown

    if markdown:
        report.print_text(reference_markdown())
        return
    if name is None:
        render.render_layers([{**describe(LAYERS[n]), "exports": export_formats(n)} for n in sorted(LAYERS)])
        return
    try:
        cls = resolve(name)
    except KeyError as e:
        report.print_error(e.args[0])
        raise typer.Exit(code=2) from None
    render.render_layers([{**describe(cls), "exports": export_formats(cls.type_name)}], full=True)


data_app = typer.Typer(
    name="data",
    help="Datasets: download the named ones, look into any.\n\n"
         "Examples: cnncli data download fashion-mnist   |   cnncli data info data/mnist   |   cnncli data list",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")
from cnncli import cli_data  # noqa: E402,F401  (its commands join data_app; they use user_errors above)
from cnncli.cli_sweep import sweep_app  # noqa: E402  (the sweep commands use user_errors above)

app.add_typer(sweep_app, name="sweep")


def _first_interrupt_only(signum, frame) -> None:
    """SIGINT handler of the console script: the first Ctrl-C raises KeyboardInterrupt, which
    ends the command with exit 130; it also ignores every later one, so a second Ctrl-C can
    never break into that ending (the message, a ``finally``, joining threads at exit) and
    print a traceback. Training installs its own handler meanwhile (it finishes the batch)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point: runs the app with :func:`_first_interrupt_only` as SIGINT
    handler (not set for callers of ``app`` in-process, e.g. tests with CliRunner)."""
    try:
        signal.signal(signal.SIGINT, _first_interrupt_only)
        app()
    except KeyboardInterrupt:        # a Ctrl-C before click runs the command, or while it exits
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
