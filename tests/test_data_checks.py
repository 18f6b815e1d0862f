"""Data that would silently train wrong: data.image_shape that disagrees with the data's own shape,
a colour image in one split only, an empty class folder, and stray huge labels."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli.cli import app
from cnncli.datasets import load_split

import dataforms

runner = CliRunner()

NET = """\
data:
  path: {data}
{extra}
model:
  layers: [flatten, {{linear: {{out_features: 10}}}}]
train: {{epochs: 1, batch_size: 32}}
"""


@pytest.fixture(scope="module")
def small(mnist_slice):
    train = load_split(mnist_slice, "train", 60)
    test = load_split(mnist_slice, "test", 20)
    return {"train": (train.images, train.labels), "test": (test.images, test.labels)}


def user_error(result, *fragments):
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in out, out
    return out


@pytest.mark.parametrize("form", ["idx", "npz", "png"])
def test_image_shape_that_disagrees_with_the_data_is_refused(write_config, tmp_path, small, form):
    if form == "idx":
        data = dataforms.write_idx(tmp_path / "d", small)
    elif form == "npz":
        data = dataforms.write_npz(tmp_path / "d.npz", small)
    else:
        pytest.importorskip("PIL")
        data = dataforms.write_png_folders(tmp_path / "d", small)
    cfg = write_config(NET.format(data=data, extra="  image_shape: [14, 56]"))
    user_error(runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r")]),
               "data.image_shape is [14, 56]", "[1, 28, 28]")
    # agreeing is fine
    ok = write_config(NET.format(data=data, extra="  image_shape: [28, 28]"), "ok.yaml")
    assert runner.invoke(app, ["train", str(ok), "--out", str(tmp_path / "r2"), "-q"]).exit_code == 0


def test_one_colour_image_in_one_split_makes_both_rgb(write_config, tmp_path, small):
    Image = pytest.importorskip("PIL.Image")
    data = dataforms.write_png_folders(tmp_path / "d", small)
    img = np.zeros((28, 28, 3), np.uint8)
    img[..., 0] = 255
    Image.fromarray(img).save(data / "test" / "3" / "9999.png")
    text = NET.format(data=data, extra="").replace("[flatten,", "[flatten,")
    r = runner.invoke(app, ["train", str(write_config(text)), "--out", str(tmp_path / "r"), "-q"])
    assert r.exit_code == 0, r.output
    from cnncli import checkpoint
    assert checkpoint.load(tmp_path / "r" / "last.npz").meta["input_shape"] == [3, 28, 28]


def test_an_empty_class_folder_is_refused(write_config, tmp_path, small):
    pytest.importorskip("PIL")
    data = dataforms.write_png_folders(tmp_path / "d", small)
    (data / "train" / "zz-empty").mkdir()
    r = runner.invoke(app, ["train", str(write_config(NET.format(data=data, extra=""))), "--out", str(tmp_path / "r")])
    user_error(r, "zz-empty", "holds no images")


@pytest.mark.parametrize("bad", [2**40, 5000])
def test_a_stray_huge_label_names_the_sample(write_config, tmp_path, small, bad):
    x, y = small["train"]
    y = y.astype(np.int64).copy()
    y[7] = bad
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x[:, 0], y_train=y, x_test=small["test"][0][:, 0], y_test=small["test"][1])
    cfg = write_config(NET.format(data=path, extra=""))
    out = user_error(runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r")]),
                     "(sample 7)", f"label {bad}", "data.num_classes")
    assert "out_features" not in out
    user_error(runner.invoke(app, ["data", "info", str(path), "--json"]), "(sample 7)", f"label {bad}")
    # with data.num_classes given, the trainer names the label beyond it
    cfg2 = write_config(NET.format(data=path, extra="  num_classes: 10"), "c2.yaml")
    user_error(runner.invoke(app, ["train", str(cfg2), "--out", str(tmp_path / "r2")]), f"label {bad}",
               "data.num_classes is 10")
