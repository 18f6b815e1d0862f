"""What the commands print for users and scripts: predict's reading of .npy layouts against
the model's input shape, eval's class names and macro averages, a closed stdout pipe, and
the one line of ``train --quiet``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli.cli import app
from cnncli.datasets import load_split

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
WIDE = {"COLUMNS": "200"}
NAMES = ["cat", "dog", "zebra"]


def tiny_config(write_config, data: Path, name: str = "tiny.yaml") -> Path:
    text = (REPO / "configs" / "tiny.yaml").read_text().replace("path: data/mnist", f"path: {data}")
    return write_config(text, name)


@pytest.fixture(scope="module")
def grey_run(mnist_slice, tmp_path_factory) -> Path:
    """configs/tiny.yaml trained one epoch on the MNIST slice: the run folder (model (1, 28, 28))."""
    tmp = tmp_path_factory.mktemp("grey")
    cfg = tmp / "tiny.yaml"
    cfg.write_text((REPO / "configs" / "tiny.yaml").read_text().replace("path: data/mnist", f"path: {mnist_slice}"))
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp / "run"), "-q"])
    assert result.exit_code == 0, result.output
    return tmp / "run"


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> tuple[Path, Path]:
    """An image-folder dataset of 32x32 RGB PNGs in classes cat/dog/zebra (each class brightest
    in its own channel) and a model trained on it one epoch: (run folder, dataset folder)."""
    pil = pytest.importorskip("PIL.Image")
    tmp = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c, name in enumerate(NAMES):
            folder = tmp / "pets" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
                a[..., c] += 150
                pil.fromarray(a).save(folder / f"{i}.png")
    cfg = tmp / "colour.yaml"
    cfg.write_text(f"data: {{path: {tmp / 'pets'}, val_split: 0}}\n"
                   "model: {layers: [{avgpool2d: {kernel_size: 4}}, flatten, {linear: {out_features: 3}}]}\n"
                   "train: {epochs: 1, batch_size: 8, seed: 0}\n")
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp / "run"), "-q"])
    assert result.exit_code == 0, result.output
    return tmp / "run", tmp / "pets"


def _predict_json(run: Path, *files: Path) -> list[dict]:
    result = runner.invoke(app, ["predict", str(run / "best.npz"), *map(str, files), "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


# ------------------------------------------------------------------ predict: shapes (bug 1)

def test_predict_reads_a_colour_npy_in_every_layout_training_accepts(colour_run, tmp_path):
    from PIL import Image

    run, pets = colour_run
    hwc = np.asarray(Image.open(pets / "test" / "zebra" / "0.png"))        # (32, 32, 3)
    chw = hwc.transpose(2, 0, 1)
    layouts = {"hwc": hwc, "chw": chw, "nhwc": np.stack([hwc, hwc]), "nchw": np.stack([chw, chw])}
    for name, a in layouts.items():
        np.save(tmp_path / f"{name}.npy", a)
    rows = _predict_json(run, *(tmp_path / f"{n}.npy" for n in layouts), pets / "test" / "zebra" / "0.png")
    assert [r["input"].rsplit("/", 1)[-1] for r in rows] == [
        "hwc.npy", "chw.npy", "nhwc.npy[0]", "nhwc.npy[1]", "nchw.npy[0]", "nchw.npy[1]", "0.png"]
    png = rows[-1]["top"][0]
    for r in rows:          # one image, read six ways and as PNG: one answer
        assert r["top"][0]["class"] == png["class"] and r["top"][0]["name"] == NAMES[png["class"]]
        assert r["top"][0]["probability"] == pytest.approx(png["probability"], rel=1e-5)


def test_predict_names_the_model_shape_and_accepted_forms_for_an_array_that_fits_none(colour_run, grey_run,
                                                                                        tmp_path):
    run, _ = colour_run
    np.save(tmp_path / "five.npy", np.zeros((5, 32, 32), np.uint8))      # 5 grey images: no colour model takes them
    np.save(tmp_path / "grey.npy", np.zeros((32, 32), np.uint8))
    for f in ("five.npy", "grey.npy"):
        result = runner.invoke(app, ["predict", str(run / "best.npz"), str(tmp_path / f)], env=WIDE)
        out = " ".join(result.output.split())
        assert result.exit_code == 2, out
        assert f"{tmp_path / f}:" in out and "model takes (3, 32, 32)" in out, out
        assert "(32, 32, 3) or (3, 32, 32)" in out and "(N, 32, 32, 3) or (N, 3, 32, 32)" in out, out
        assert "grayscale" not in out and "32x32 RGB" in out, out
    result = runner.invoke(app, ["predict", str(grey_run / "best.npz"), str(tmp_path / "grey.npy")], env=WIDE)
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and "model takes (1, 28, 28)" in out and "(28, 28)" in out and "grayscale" in out


def test_predict_keeps_the_grey_layouts_and_takes_channels_last(grey_run, mnist_slice, tmp_path):
    images = load_split(mnist_slice, "test", 3).images                    # (3, 1, 28, 28)
    forms = {"hw": images[0, 0], "nhw": images[:, 0], "nchw": images, "hwc": images[0, 0][..., None],
             "nhwc": images.transpose(0, 2, 3, 1)}
    for name, a in forms.items():
        np.save(tmp_path / f"{name}.npy", a)
    rows = _predict_json(grey_run, *(tmp_path / f"{n}.npy" for n in forms))
    classes = [r["top"][0]["class"] for r in rows]
    assert len(rows) == 1 + 3 + 3 + 1 + 3
    assert classes[1:4] == classes[4:7] == classes[8:11] and classes[0] == classes[7] == classes[1]


def test_predict_refuses_a_file_holding_no_images(grey_run, colour_run, tmp_path):
    np.save(tmp_path / "none.npy", np.zeros((0, 28, 28), np.uint8))
    np.save(tmp_path / "none-rgb.npy", np.zeros((0, 3, 32, 32), np.uint8))
    for run, f in ((grey_run, "none.npy"), (colour_run[0], "none-rgb.npy")):
        result = runner.invoke(app, ["predict", str(run / "best.npz"), str(tmp_path / f)], env=WIDE)
        assert result.exit_code == 2 and f"{tmp_path / f}: holds no images" in result.output, result.output


def test_predict_says_a_folder_is_a_folder(grey_run, tmp_path):
    result = runner.invoke(app, ["predict", str(grey_run / "best.npz"), str(tmp_path)], env=WIDE)
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and f"{tmp_path}: is a folder" in out and "not found" not in out, out
    assert "image files" in out


# ------------------------------------------------------------------ eval: names and macro average (bug 2)

def test_eval_shows_the_checkpoint_class_names_in_both_tables(colour_run):
    run, _ = colour_run
    result = runner.invoke(app, ["eval", str(run / "best.npz")], env=WIDE)
    assert result.exit_code == 0, result.output
    per_class, matrix = result.output.split("confusion matrix")
    for i, name in enumerate(NAMES):
        assert f"{i} {name}" in per_class, result.output
        assert matrix.count(f"{i} {name}") == 2, result.output     # column header and row label


def test_eval_json_has_class_names_and_macro_average(colour_run, grey_run):
    from cnncli.metrics import macro_average

    run, _ = colour_run
    data = json.loads(runner.invoke(app, ["eval", str(run / "best.npz"), "--json"]).output)
    assert data["classes"] == NAMES
    assert data["macro_avg"] == macro_average(np.array(data["confusion_matrix"]))
    assert set(data["macro_avg"]) == {"precision", "recall", "f1", "classes"}
    grey = json.loads(runner.invoke(app, ["eval", str(grey_run / "best.npz"), "--json"]).output)
    assert grey["classes"] is None and grey["macro_avg"]["classes"] == 10
    pc = grey["per_class"]
    present = [i for i in range(10) if pc["support"][i] or np.array(grey["confusion_matrix"])[:, i].sum()]
    assert grey["macro_avg"]["f1"] == pytest.approx(np.mean([pc["f1"][i] for i in present]))


# ------------------------------------------------------------------ a closed stdout (bug 3)

@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_a_closed_stdout_ends_eval_quietly_with_141(grey_run, extra):
    read, write = os.pipe()
    os.close(read)           # the reader is gone before the first line, as after `| head -0`
    try:
        proc = subprocess.run([sys.executable, "-m", "cnncli", "eval", str(grey_run / "best.npz"), *extra],
                              stdout=write, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120, check=False)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


# ------------------------------------------------------------------ train --quiet (bug 4)

def test_quiet_train_prints_the_checkpoint_of_the_folder_it_used(mnist_slice, write_config, tmp_path):
    split = load_split(mnist_slice, "train", 200)
    npz = tmp_path / "no-test.npz"
    np.savez(npz, x_train=split.images[:, 0], y_train=split.labels)
    cfg = tiny_config(write_config, npz)
    out = tmp_path / "x"
    lines = []
    for _ in range(2):           # the second run finds x taken and goes to x-2
        result = runner.invoke(app, ["train", str(cfg), "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        lines.append(result.output.splitlines())
    assert lines[0] == [f"best checkpoint (epoch 1): {out / 'best.npz'}"]
    assert lines[1] == [f"best checkpoint (epoch 1): {tmp_path / 'x-2' / 'best.npz'}"]
    assert (tmp_path / "x-2" / "best.npz").is_file()


def test_quiet_train_with_a_test_split_keeps_one_line_ending_in_the_checkpoint(mnist_slice, write_config, tmp_path):
    cfg = tiny_config(write_config, mnist_slice)
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r"), "-q",
                                 "--set", "data.train_limit=200"])
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("test accuracy ")
    assert line.endswith(f"best checkpoint (epoch 1): {tmp_path / 'r' / 'best.npz'}")


def test_predict_reads_an_ambiguous_array_as_training_does():
    """C == H == W: both layouts fit; predict must read the array as the NPZ reader of
    training does (channels last), or a stack taken from the training file is misread."""
    from pathlib import Path

    from cnncli.formats import to_nchw
    from cnncli.images import _fit_model

    stack = np.random.default_rng(0).integers(0, 256, (5, 3, 3, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_fit_model(stack, (3, 3, 3), Path("x.npy")), to_nchw(stack, "x", None))
    np.testing.assert_array_equal(_fit_model(stack[0], (3, 3, 3), Path("x.npy")), to_nchw(stack[:1], "x", None))
