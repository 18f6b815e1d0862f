"""The thin CLI's output side: one memory estimate in summary, one image renderer (odd
heights, colour), one class-label format, the gradient check's default tolerance from
:data:`cnncli.gradcheck.DEFAULT_TOL`, and the importable library functions behind commands."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
from rich.console import Console
from typer.testing import CliRunner

from cnncli.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def plain_console() -> Console:
    return Console(file=io.StringIO(), width=200, no_color=True, force_terminal=False, markup=False,
                   highlight=False)


def output(console: Console) -> str:
    return console.file.getvalue()


def test_summary_shows_the_memory_estimate_train_checks():
    """One estimate: summary's figure is Model.training_bytes_per_image() * batch size, the
    number assemble.check_batch refuses batches by (it once summed forward outputs only)."""
    from cnncli import assemble, data
    from cnncli.config import load

    cfg = load(REPO / "configs" / "mnist.yaml")
    model = assemble.build_model(cfg, data.input_shape(cfg))
    expected = model.training_bytes_per_image() * cfg.train.batch_size / 2**20
    result = runner.invoke(app, ["summary", str(REPO / "configs" / "mnist.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"for a batch of {cfg.train.batch_size}: {expected:.1f} MiB" in " ".join(result.output.split())


def test_misclassified_odd_height_image_shows_its_last_row():
    """The last row of an odd-height image is drawn (the eval renderer once dropped it)."""
    from cnncli.metrics import confusion_matrix
    from cnncli.render import render_misclassified
    from cnncli.loop import EvalResult

    images = np.zeros((1, 1, 5, 6), np.uint8)
    images[0, 0, -1] = 255                               # only the last (fifth) row is lit
    labels, preds = np.array([0]), np.array([1])
    result = EvalResult(1.0, 0.0, labels, preds, 2, confusion_matrix(labels, preds, 2))
    console = plain_console()
    render_misclassified(result, images, 1, console)
    text = output(console)
    assert "#0: true 0, predicted 1" in text
    assert re.search(r"[.:\-=+*#%@]{6}", text), text     # the lit row, in shades


def test_misclassified_rgb_images_are_drawn():
    from cnncli.metrics import confusion_matrix
    from cnncli.render import render_misclassified
    from cnncli.loop import EvalResult

    images = np.full((3, 3, 8, 8), 200, np.uint8)
    labels, preds = np.array([0, 1, 2]), np.array([1, 1, 0])
    result = EvalResult(1.0, 1 / 3, labels, preds, 3, confusion_matrix(labels, preds, 3))
    console = plain_console()
    render_misclassified(result, images, 5, console, classes=["cat", "dog", "zebra"])
    text = output(console)
    assert "first 2 misclassified test images" in text
    assert "#0: true 0 cat," in text and "predicted 1 dog" in text
    assert "#2: true 2 zebra" in text and text.count("#" * 8) == 2 * 4, text    # two 8x8 images, 4 lines each


def test_sample_captions_wrap_instead_of_losing_the_class_name():
    """A caption wider than its image wraps at spaces; data info once cut it to the image's width."""
    from cnncli.render import render_samples

    console = plain_console()
    render_samples([(np.zeros((1, 4, 4), np.uint8), "#0: 0 a-class-name-of-many-letters")], console, plain=True)
    lines = [line.strip() for line in output(console).splitlines()]
    assert lines[:2] == ["#0: 0", "a-class-name-of-many-letters"], lines


def test_one_class_label_format_and_one_lookup():
    from cnncli.metrics import class_name
    from cnncli.render import class_label

    assert [class_name(i, ["0", "cat"]) for i in range(3)] == ["0", "cat", None]
    assert class_name(0, None) is None and class_name(0, ()) is None
    assert [class_label(i, class_name(i, ["0", "cat"])) for i in range(3)] == ["0", "1 cat", "2"]


def test_gradcheck_default_tol_is_gradcheck_DEFAULT_TOL(monkeypatch):
    """The --tol default follows the library constant (the CLI once hard-coded 1e-6 beside it)."""
    from cnncli import gradcheck

    helptext = " ".join(runner.invoke(app, ["gradcheck", "--help"], env={"COLUMNS": "200"}).output.split())
    stated = re.search(r"Default: (\S+) \(cnncli\.gradcheck\.DEFAULT_TOL\)", helptext)
    assert stated and float(stated.group(1)) == gradcheck.DEFAULT_TOL, helptext
    monkeypatch.setattr(gradcheck, "DEFAULT_TOL", 1e-15)
    result = runner.invoke(app, ["gradcheck", str(REPO / "configs" / "tiny.yaml"), "--max-checks", "8"],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "pass if rel. error <= 1e-15;" in result.output
    assert "PASS (noise)" in result.output                  # judged at 1e-15, not at 1e-6


def test_library_functions_behind_the_commands(mnist_slice):
    from cnncli import config as C
    from cnncli import datainfo, gradcheck, inspect_model, report, timing

    cfg = C.load(REPO / "configs" / "tiny.yaml", [f"data.path={json.dumps(str(mnist_slice))}"])
    results = gradcheck.run(cfg, batch_size=2, max_checks=4, seed=1)
    assert results and all(r.passed(gradcheck.DEFAULT_TOL) for r in results)
    s = inspect_model.summary(cfg)
    assert s.input_shape == (1, 28, 28) and s.params == report.summary_json(s)["params"] > 0
    step, _ = timing.time_config(cfg, batch_size=3, iterations=1, warmup=0)
    assert step.batch_size == 3 and len(step.layers) == len(s.rows)
    info = datainfo.data_info(str(mnist_slice), samples=3)
    assert list(info.info["splits"]) == ["train", "test"] and info.sample_split == "train"
    assert [y for _, _, y in info.samples] == [0, 1, 2]
    assert all(img.shape == (1, 28, 28) for _, img, _ in info.samples)
