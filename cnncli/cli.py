"""The command line (typer). Thin: parse argv, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a failed check (gradcheck) or a diverged run, 2 bad input
(config, data, checkpoint, a batch size the model cannot take, out of memory, an output
that cannot be written), 130 interrupted, 141 the reader of stdout went away (a closed
pipe, ``| head``; quietly, as grep or git). User errors print one message and no
traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

from cnncli import __version__


@contextlib.contextmanager
def _pipe_closed_quietly():
    """A reader that went away (``cnncli eval CKPT | head -2``) ends the command with no
    message and exit 141, as grep or git do (typer alone would exit 1)."""
    try:
        yield
    except BrokenPipeError:
        from cnncli.report import stdout_closed

        stdout_closed()


class _Group(TyperGroup):
    """The command group: every command (and --help) runs under :func:`_pipe_closed_quietly`."""

    def make_context(self, *args, **kwargs):
        with _pipe_closed_quietly():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _pipe_closed_quietly():
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
    """Turn library errors into one message and an exit code (traceback only with --debug)."""
    from cnncli.errors import CnncliError

    try:
        yield
    except CnncliError as e:
        if ctx.obj and ctx.obj.debug:
            raise
        from cnncli.report import print_error

        print_error(str(e))
        raise typer.Exit(code=e.exit_code) from None
    except KeyboardInterrupt:
        if ctx.obj and ctx.obj.debug:
            raise
        typer.echo("interrupted", err=True)
        raise typer.Exit(code=130) from None
    except MemoryError:
        if ctx.obj and ctx.obj.debug:
            raise
        from cnncli.report import print_error

        print_error("out of memory; use a smaller model, train.batch_size or train.eval_batch_size")
        raise typer.Exit(code=2) from None


def _overrides(sets: list[str] | None, **shortcuts) -> list[str]:
    """``--set`` items plus shortcut flags, shortcuts last (they win).

    Shortcut values are already typed by typer; text (``--out``) is quoted so YAML keeps it
    as written (``run #2``, ``null`` and ``2024`` are folder names there)."""
    import json

    from cnncli.config import Override

    out = list(sets or [])
    keys = {"epochs": "train.epochs", "seed": "train.seed", "batch_size": "train.batch_size",
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
) -> None:
    """Train the network of CONFIG; write checkpoints and metrics to a run folder.

    Example: cnncli train configs/mnist.yaml --epochs 2 --out runs/first
    Resume:  cnncli train configs/mnist.yaml --resume runs/first/last.npz --epochs 4
    Branch:  cnncli train configs/mnist.yaml --resume runs/first/epoch_2.npz --out runs/from-epoch-2
    Other data (IDX, NPZ, CSV, image folders, or a name): --set data.path=digits.npz  or  --set data.name=kmnist
    """
    with user_errors(ctx):
        from cnncli import config as C
        from cnncli import report, training

        overrides = _overrides(sets, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, out=out)
        cfg = C.load(config, overrides)
        reporter = report.TrainReporter("json" if json_out else "quiet" if quiet else None)
        try:
            training.train(cfg, reporter, resume=resume, branch=out is not None, overwrite=overwrite,
                           batch_size_flag="--batch-size" if batch_size is not None else None)
        except training.TrainingInterrupted as e:
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
) -> None:
    """Measure a checkpoint on the test split: loss, accuracy, per-class figures, confusion matrix.

    Classes are shown with the checkpoint's class names, if it has them (image folders,
    data.classes). --json adds "classes" (the names or null), "per_class" and "macro_avg"
    (precision, recall, F1 averaged over the classes in the labels or predictions).
    Example: cnncli eval runs/mnist/best.npz   (or: --data data/other-digits.npz)
    """
    with user_errors(ctx):
        import json

        from cnncli.evaluation import evaluate_checkpoint
        from cnncli.metrics import macro_average, per_class

        if data is not None and not data.strip():
            from cnncli.errors import DataError

            raise DataError("--data is empty; give a dataset folder, file or name")
        limit = None if test_limit is None else (test_limit or 10**12)
        result, cfg, ck, test = evaluate_checkpoint(checkpoint, data, batch_size, limit)
        classes = list(cfg.data.classes) if cfg.data.classes else None    # the checkpoint's class names
        if json_out:
            pc = per_class(result.confusion)
            typer.echo(json.dumps({"checkpoint": str(checkpoint), "epoch": ck.meta.get("epoch"),
                                   **result.to_dict(), "classes": classes,
                                   "per_class": {k: v.tolist() for k, v in pc.items()},
                                   "macro_avg": macro_average(result.confusion)}))
            return
        from cnncli.report import render_eval, render_misclassified

        render_eval(result, str(checkpoint), classes=classes)
        render_misclassified(result, test.images, show_errors, classes=classes)


@app.command()
def predict(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A checkpoint, e.g. runs/mnist/best.npz."),
    inputs: List[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files (not folders): .npy, IDX, PGM, or "
                                        "PNG and other formats (needs cnncli[images]); RGB for a model trained on "
                                        "colour images."),
    top_k: int = typer.Option(1, "--top-k", "-k", min=1, help="Show the k most likely classes."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
) -> None:
    """Classify images with a checkpoint: predicted class and probability.

    Images must have the model's size and channels (28x28 grayscale for MNIST, light digit on
    dark background). A .npy file holds one image, (H, W), (H, W, C) or (C, H, W), or a stack,
    (N, H, W), (N, H, W, C) or (N, C, H, W); (H, W) forms only for grayscale models.
    Example: cnncli predict runs/mnist/best.npz digit.pgm --top-k 3
    """
    with user_errors(ctx):
        import json

        import numpy as np

        from cnncli.evaluation import load_model, predict_proba
        from cnncli.images import read_images

        model, cfg, _ = load_model(checkpoint)
        k = min(top_k, model.output_shape[0])
        rows = []
        from cnncli.errors import CnncliError

        for path in inputs:
            try:
                images = read_images(path, input_shape=model.input_shape)
                probs = predict_proba(model, cfg, images)
            except CnncliError as e:
                if str(path) not in str(e):        # every message names the file that failed
                    e.args = (f"{path}: {e}",)
                raise
            names = cfg.data.classes
            for i, p in enumerate(probs):
                order = np.argsort(-p, kind="stable")[:k]
                name = str(path) if len(probs) == 1 else f"{path}[{i}]"
                rows.append({"input": name, "top": [
                    {"class": int(c), **({"name": names[c]} if names and c < len(names) else {}),
                     "probability": float(p[c])} for c in order]})
        if json_out:
            for r in rows:
                typer.echo(json.dumps(r))
            return
        from cnncli.report import render_predictions

        render_predictions(rows)


@app.command()
def gradcheck(
    ctx: typer.Context,
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config, e.g. configs/tiny.yaml."),
    tol: float = typer.Option(1e-6, "--tol", min=1e-15, max=1.0, help="Largest relative error that passes."),
    batch_size: int = typer.Option(4, "--batch-size", min=2, help="Samples in the check batch."),
    max_checks: int = typer.Option(256, "--max-checks", min=1,
                                   help="Entries checked per tensor (sampled when larger)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random inputs."),
    sets: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY.PATH=VALUE", help=SET_HELP),
) -> None:
    """Compare every backward pass with central differences in float64; exit 1 if any fails.

    Checks each layer's input and parameter gradients, then the whole model's loss.
    Example: cnncli gradcheck configs/tiny.yaml
    """
    with user_errors(ctx):
        import numpy as np

        from cnncli import config as C
        from cnncli import gradcheck as G
        from cnncli import assemble
        from cnncli import data as cnncli_data
        from cnncli.report import render_gradcheck

        cfg = C.load(config, _overrides(sets))
        shape = cnncli_data.input_shape(cfg)
        model = assemble.build_model(cfg, shape, dtype=np.float64)
        results = G.check_layers(model, batch_size, max_checks=max_checks, seed=seed)
        results += G.check_model(model, batch_size, max_checks=max_checks, seed=seed)
        render_gradcheck(results, tol)
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
        from cnncli import assemble
        from cnncli import data as cnncli_data
        from cnncli.model import summarize

        cfg = C.load(config, _overrides(sets))
        shape = cnncli_data.input_shape(cfg)
        model = assemble.build_model(cfg, shape)
        rows = summarize(model)
        from cnncli.errors import CnncliError

        warnings = []
        try:
            assemble.check_batch(model, cfg.train.batch_size, source=cfg.source)
        except CnncliError as e:                 # train refuses it; summary still shows the model
            warnings.append(f"training would stop: {' '.join(str(e).split())}")
        if json_out:
            import json

            typer.echo(json.dumps({"input_shape": list(shape), "layers": rows,
                                   "params": sum(r["params"] for r in rows), "warnings": warnings}))
        else:
            from cnncli.report import render_summary

            render_summary(rows, shape, cfg.train.batch_size, str(config))
        for w in warnings:
            typer.echo(f"warning: {w}", err=True)


@app.command("time")
def time_(
    ctx: typer.Context,
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML config, e.g. configs/mnist.yaml."),
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
        from cnncli import assemble
        from cnncli import data as cnncli_data
        from cnncli.timing import blas_threads, time_model

        cfg = C.load(config, _overrides(sets))
        model = assemble.build_model(cfg, cnncli_data.input_shape(cfg))
        optimizer = assemble.make_optimizer(cfg, model)
        n = batch_size or cfg.train.batch_size
        what = "--batch-size" if batch_size else "train.batch_size"
        assemble.check_batch(model, n, what, None if batch_size else str(config))
        try:
            result = time_model(model, optimizer, n, iterations, warmup)
        except MemoryError:
            from cnncli.errors import BatchError

            raise BatchError(f"a batch of {n} images does not fit in memory; use a smaller {what}") from None
        threads = blas_threads()
        if json_out:
            import dataclasses
            import json

            out = dataclasses.asdict(result)
            out.update(images_per_s=result.images_per_s, eval_images_per_s=result.eval_images_per_s,
                       blas_threads=threads)
            typer.echo(json.dumps(out))
            return
        from cnncli.report import render_timing

        render_timing(result, str(config), threads)


@app.command()
def layers(
    name: Optional[str] = typer.Argument(None, help="Show one layer in full."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the reference as a Markdown table."),
) -> None:
    """List the registered layers with their options and defaults.

    Example: cnncli layers conv2d
    """
    from cnncli.layers import LAYERS, describe, resolve
    from cnncli.report import print_error, render_layers

    if markdown:
        from cnncli.layers.registry import reference_markdown

        typer.echo(reference_markdown(), nl=False)
        return
    if name is None:
        render_layers([describe(LAYERS[n]) for n in sorted(LAYERS)])
        return
    try:
        cls = resolve(name)
    except KeyError as e:
        print_error(e.args[0])
        raise typer.Exit(code=2) from None
    render_layers([describe(cls)], full=True)


# ------------------------------------------------------------------ cnncli data ...

data_app = typer.Typer(
    name="data",
    help="Datasets: download the named ones, look into any.\n\n"
         "Examples: cnncli data download fashion-mnist   |   cnncli data info data/mnist   |   cnncli data list",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")


@data_app.command("download")
def data_download(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="mnist, fashion-mnist, kmnist, or emnist-SPLIT with SPLIT "
                                                          "one of balanced, byclass, bymerge, digits, letters, mnist."),
    to: Optional[Path] = typer.Option(None, "--to", metavar="DIR", help="Data root to write under: files go to "
                                      "DIR/NAME (default: $CNNCLI_DATA_DIR, else ./data)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", metavar="URL", envvar="CNNCLI_MIRROR",
                                         help="Base URL of a mirror serving the same file names "
                                              "(or set CNNCLI_MIRROR)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Download a named dataset from its public source, checked against SHA-256 sums pinned in cnncli.

    A broken-off download resumes where it stopped when run again (the bytes so far are kept
    in FILE.part); a file whose checksum does not match is deleted and reported (exit 2).
    Files already in place are verified, not fetched again. EMNIST is one 562 MB zip of all
    six splits, kept in DIR/emnist/; the split asked for is extracted to DIR/emnist-SPLIT/.

    Example: cnncli data download fashion-mnist   then   data: {name: fashion-mnist} in a config
    """
    with user_errors(ctx):
        from cnncli import download as D
        from cnncli import report

        reporter = report.DownloadReporter("quiet" if quiet else None)
        try:
            folder = D.download(name, to, mirror, reporter)
        finally:
            reporter.close()
        if not quiet:
            from cnncli.catalog import data_roots

            searched = folder.parent.resolve() in data_roots()
            how = f"data: {{name: {name}}}" if searched else f"data: {{name: {name}, root: {folder.parent}}}"
            report.make_console().print(f"{name} is ready in {folder}; use it with  {how}  (or data.path: {folder})")


@data_app.command("info")
def data_info(
    ctx: typer.Context,
    path: str = typer.Argument(..., metavar="DATASET", help="A dataset folder or file (IDX, NPZ, CSV, image folders), "
                                                            "or a dataset name such as mnist."),
    fmt: str = typer.Option("auto", "--format", metavar="FORMAT", help="auto (detect), idx, npz, csv or folder."),
    image_shape: Optional[str] = typer.Option(None, "--image-shape", metavar="HxW",
                                              help="Image shape of CSV rows or flat NPZ arrays: 28x28 or 3x32x32 "
                                                   "(C x H x W); square ones are inferred."),
    root: Optional[Path] = typer.Option(None, "--root", metavar="DIR", help="Also look for named datasets in DIR."),
    samples: int = typer.Option(10, "--samples", metavar="N", min=0, help="Draw this many sample images (0: none)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables and images."),
) -> None:
    """Show a dataset: images per split, image shape, pixel mean/std, class balance, sample images.

    Examples: cnncli data info data/mnist   |   cnncli data info fashion-mnist   |   cnncli data info digits.csv --image-shape 28x28
    """
    with user_errors(ctx):
        import json

        import numpy as np

        from cnncli import config as C
        from cnncli import formats
        from cnncli.catalog import NAMES
        from cnncli.errors import ConfigError, Problem

        raw: dict = {"format": fmt}
        if path in NAMES and not Path(path).exists():
            raw["name"] = path
            if root is not None:
                raw["root"] = str(root)
        else:
            raw["path"] = path
        if image_shape is not None:
            try:
                raw["image_shape"] = [int(v) for v in image_shape.lower().split("x")]
            except ValueError:
                raise ConfigError([Problem("--image-shape", f"expected HxW or CxHxW such as 28x28, got {image_shape!r}")]) \
                    from None
        d = C.validate({"data": raw, "model": {"layers": ["flatten"]}}, "command line").data
        loaded = formats.load(d)
        splits = {name: ds for name, ds in (("train", loaded.train), ("test", loaded.test)) if ds is not None}
        k = max(ds.num_classes for ds in splits.values())
        k = max(k, len(loaded.classes) if loaded.classes else 0)
        info = {"dataset": loaded.where, "format": loaded.format,
                "classes": list(loaded.classes) if loaded.classes else None,
                "splits": {name: formats.describe(ds, k) for name, ds in splits.items()}}
        if json_out:
            typer.echo(json.dumps(info))
            return
        sample_split, ds = next(iter(splits.items()))
        info["sample_split"] = sample_split
        picks = [int(np.argmax(ds.labels == c)) for c in range(k) if (ds.labels == c).any()][:samples]
        for i in range(len(ds)):          # fewer classes than samples: then the next images in order
            if len(picks) >= samples:
                break
            if i not in picks:
                picks.append(i)
        names = loaded.classes or ()

        def caption(i: int) -> str:
            y = int(ds.labels[i])
            return f"#{i}: {y}" + (f" {names[y]}" if y < len(names) and names[y] != str(y) else "")

        shown = [(ds.images[i], caption(i)) for i in picks]
        from cnncli.report import render_data_info

        render_data_info(info, shown)


@data_app.command("list")
def data_list(
    root: Optional[Path] = typer.Option(None, "--root", metavar="DIR", help="Also look for datasets in DIR."),
) -> None:
    """List the dataset names 'cnncli data download' and data.name know, and where each is found.

    Example: cnncli data list
    """
    from cnncli import catalog
    from cnncli.errors import DataError
    from cnncli.report import render_dataset_list

    rows = []
    for name, info in catalog.DATASETS.items():
        try:
            where = str(catalog.find_named(name, root))
        except DataError:
            where = f"- (cnncli data download {name})"
        rows.append((name, where, info.description))
    render_dataset_list(rows, catalog.data_roots(root))


def main() -> None:
    """Console-script entry point."""
    app()
