"""``cnncli data info`` and ``cnncli data list``, and class names reaching ``predict``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataforms import write_idx, write_npz, write_png_folders
from typer.testing import CliRunner

from cnncli.cli import app
from cnncli.datasets import load_split
from cnncli.formats import pixel_stats

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def slice_(tmp_path_factory):
    root = tmp_path_factory.mktemp("info")
    train, test = load_split(REPO / "data" / "mnist", "train", 120), load_split(REPO / "data" / "mnist", "test", 30)
    splits = {"train": (train.images, train.labels), "test": (test.images, test.labels)}
    write_idx(root / "mnist", splits)
    return root, splits


def test_info_shows_counts_balance_statistics_and_samples(slice_):
    root, splits = slice_
    result = runner.invoke(app, ["data", "info", str(root / "mnist"), "--samples", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "format idx" in out and "1x28x28" in out and "120" in out and "30" in out
    assert "class balance (10 classes)" in out
    assert "samples (train split" in out and "#1: 0" in out          # the first image of class 0 is #1
    assert "@" in out or "%" in out                                   # shades of the drawn digits
    assert "\x1b[" not in out                                         # plain: not a terminal
    js = json.loads(runner.invoke(app, ["data", "info", str(root / "mnist"), "--json"]).output)
    x, y = splits["train"]
    mean, std = pixel_stats(x)
    assert js["splits"]["train"]["n"] == 120 and js["splits"]["test"]["n"] == 30
    assert js["splits"]["train"]["class_counts"] == np.bincount(y, minlength=10).tolist()
    assert js["splits"]["train"]["mean"] == mean and js["splits"]["train"]["std"] == std
    by_name = json.loads(runner.invoke(app, ["data", "info", "mnist", "--root", str(root), "--json"]).output)
    assert by_name["splits"] == js["splits"] and by_name["classes"] == [str(i) for i in range(10)]


def test_info_on_colour_images_and_other_forms(slice_, tmp_path):
    _, splits = slice_
    x, y = splits["train"]
    rgb = np.ascontiguousarray(np.stack([x[:, 0], 255 - x[:, 0], x[:, 0].T.transpose(2, 0, 1)], axis=1))
    path = write_npz(tmp_path / "rgb.npz", {"train": (rgb, y)})
    js = json.loads(runner.invoke(app, ["data", "info", str(path), "--json"]).output)
    assert js["format"] == "npz" and js["splits"]["train"]["image_shape"] == [3, 28, 28]
    assert len(js["splits"]["train"]["mean"]) == 3 and list(js["splits"]) == ["train"]
    drawn = runner.invoke(app, ["data", "info", str(path), "--samples", "2"])
    assert drawn.exit_code == 0 and "3x28x28" in drawn.output
    flat = tmp_path / "flat.csv"
    flat.write_text("\n".join(",".join(map(str, [int(label), *img.ravel()[:600]])) for img, label in zip(x, y)))
    bad = runner.invoke(app, ["data", "info", str(flat)])
    assert bad.exit_code == 2 and "not a square image" in bad.output
    ok = runner.invoke(app, ["data", "info", str(flat), "--image-shape", "20x30", "--json"])
    assert json.loads(ok.output)["splits"]["train"]["image_shape"] == [1, 20, 30]


def test_info_errors_exit_2(tmp_path):
    for args, needle in ((["nowhere"], "dataset folder not found"), (["mnsit"], "Did you mean 'mnist'"),
                         (["kmnist", "--root", str(tmp_path)], "cnncli data download kmnist"),
                         ([str(tmp_path), "--format", "tiff"], "data.format"),
                         ([str(tmp_path), "--image-shape", "big"], "--image-shape")):
        result = runner.invoke(app, ["data", "info", *args])
        assert result.exit_code == 2 and needle in result.output, result.output
        assert "Traceback" not in result.output


def test_list_names_every_dataset_and_where_it_is(slice_):
    root, _ = slice_
    result = runner.invoke(app, ["data", "list", "--root", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("mnist", "fashion-mnist", "kmnist", "emnist-letters", "emnist-byclass"):
        assert name in result.output
    assert str(root / "mnist") in result.output and "cnncli data download kmnist" in result.output


def test_class_names_of_image_folders_reach_predict(slice_, write_config, tmp_path):
    pytest.importorskip("PIL")
    _, splits = slice_
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    root = write_png_folders(tmp_path / "words", splits, classes=names)
    cfg = write_config(f"data: {{path: {root}, val_split: 0, classes: {names}}}\n"
                       "model: {layers: [flatten, {linear: {out_features: 10}}]}\ntrain: {epochs: 1}\n")
    assert runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run"), "-q"]).exit_code == 0
    image = root / "test" / "seven" / "0.png"
    result = runner.invoke(app, ["predict", str(tmp_path / "run" / "best.npz"), str(image), "-k", "10", "--json"])
    top = json.loads(result.output)["top"]
    assert {t["name"] for t in top} == set(names) and all(t["name"] == names[t["class"]] for t in top)
    plain = runner.invoke(app, ["predict", str(tmp_path / "run" / "best.npz"), str(image)])
    assert plain.exit_code == 0 and any(n in plain.output for n in names)
    # evaluation maps the test folders through the checkpoint's class order
    assert runner.invoke(app, ["eval", str(tmp_path / "run" / "best.npz"), "--json"]).exit_code == 0


def test_eval_data_may_be_one_file_of_test_images(mnist_slice, tmp_path):
    """``eval --data FILE``: a file with no test split of its own is the test set; a missing
    path says so (it used to say "has no test split")."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text((REPO / "configs" / "tiny.yaml").read_text().replace("path: data/mnist", f"path: {mnist_slice}"))
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(cfg), "--out", str(run), "--epochs", "1"]).exit_code == 0
    whole = json.loads(runner.invoke(app, ["eval", str(run / "best.npz"), "--json"]).output)
    one = runner.invoke(app, ["eval", str(run / "best.npz"), "--json",
                              "--data", str(mnist_slice / "t10k-images-idx3-ubyte.gz")])
    assert one.exit_code == 0, one.output
    assert json.loads(one.output)["accuracy"] == whole["accuracy"]            # the same 200 test images
    train_file = runner.invoke(app, ["eval", str(run / "best.npz"), "--json",
                                     "--data", str(mnist_slice / "train-images-idx3-ubyte.gz")])
    assert train_file.exit_code == 0, train_file.output
    assert np.array(json.loads(train_file.output)["confusion_matrix"]).sum() == 600
    test = load_split(mnist_slice, "test")
    np.savez(tmp_path / "train-only.npz", x_train=test.images[:, 0], y_train=test.labels)
    npz = runner.invoke(app, ["eval", str(run / "best.npz"), "--json", "--data", str(tmp_path / "train-only.npz")])
    assert npz.exit_code == 0, npz.output
    assert json.loads(npz.output)["accuracy"] == whole["accuracy"]            # its arrays are the test set
    missing = runner.invoke(app, ["eval", str(run / "best.npz"), "--data", str(tmp_path / "moved-away")])
    assert missing.exit_code == 2 and "dataset folder not found" in missing.output and "moved-away" in missing.output
