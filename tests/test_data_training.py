"""Training from every dataset form: the same MNIST slice as IDX, NPZ, CSV and PNG folders
reaches the model as identical arrays (same normalization, same batches, bit-identical
weights after training); images that are not 28x28, grey or RGB, train through
configs/mnist-small.yaml with only the data section changed; ``auto`` normalization is computed
from the training split once and recorded in the checkpoint for eval and predict.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from dataforms import write_csv, write_idx, write_npz, write_png_folders
from typer.testing import CliRunner

from cnncli import checkpoint
from cnncli import config as C
from cnncli import training
from cnncli.assemble import build_model
from cnncli.data import normalize_batch, pixel_lut, prepare_data
from cnncli.rundir import new_run_dir
from cnncli.cli import app
from cnncli.datasets import load_split
from cnncli.evaluation import load_model
from cnncli.formats import pixel_stats

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

TINY = """\
data: {{{data}, val_split: 40}}
model:
  layers:
    - conv2d: {{out_channels: 4, kernel_size: 3, padding: 1}}
    - batchnorm
    - relu
    - maxpool2d: {{kernel_size: 2}}
    - flatten
    - linear: {{out_features: 10}}
train: {{epochs: 2, batch_size: 40, seed: 5, optimizer: {{type: adam, lr: 0.01}}}}
"""


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """The first 200 training and 50 test images of MNIST in four forms: {form: data keys}."""
    root = tmp_path_factory.mktemp("forms")
    train, test = load_split(REPO / "data" / "mnist", "train", 200), load_split(REPO / "data" / "mnist", "test", 50)
    splits = {"train": (train.images, train.labels), "test": (test.images, test.labels)}
    out = {"idx": f"path: {write_idx(root / 'idx', splits)}",
           "npz": f"path: {write_npz(root / 'mnist.npz', splits)}",
           "csv": f"train: {write_csv(root / 'csv', splits, header=True) / 'mnist_train.csv'}, "
                  f"test: {root / 'csv' / 'mnist_test.csv'}"}
    try:
        import PIL  # noqa: F401
        out["png"] = f"path: {write_png_folders(root / 'png', splits)}"
    except ImportError:
        pass
    return out, splits


def test_the_same_slice_in_every_form_trains_identically(forms, write_config, tmp_path):
    data_keys, splits = forms
    if "png" not in data_keys:
        pytest.skip("Pillow is not installed (pip install -e '.[images]')")
    runs = {}
    for form, keys in data_keys.items():
        cfg = C.load(write_config(TINY.format(data=keys), f"{form}.yaml"))
        data = prepare_data(cfg)
        model = build_model(cfg, data.train.image_shape, num_classes=data.num_classes)
        lut = pixel_lut(data.mean, data.std)
        first = normalize_batch(lut, data.train.images[:40])
        end = training.fit(cfg, model, data, new_run_dir(tmp_path / form), lambda e: None)
        runs[form] = (data, first, checkpoint.load(end.last_path), end.test.accuracy)
    ref_data, ref_first, ref_ck, ref_acc = runs["idx"]
    assert ref_data.train.images.shape == (160, 1, 28, 28) and len(ref_data.val) == 40 and len(ref_data.test) == 50
    for form, (data, first, ck, acc) in runs.items():
        for split in ("train", "val", "test"):
            a, b = getattr(data, split), getattr(ref_data, split)
            np.testing.assert_array_equal(a.images, b.images, err_msg=f"{form} {split}")
            np.testing.assert_array_equal(a.labels, b.labels, err_msg=f"{form} {split}")
        assert (data.mean, data.std) == (ref_data.mean, ref_data.std), form
        assert first.tobytes() == ref_first.tobytes(), form           # the first batch the model sees
        for key, w in ref_ck.params.items():                          # and the weights after 2 epochs
            assert ck.params[key].tobytes() == w.tobytes(), f"{form} {key}"
        assert acc == ref_acc
    assert runs["png"][2].config["data"]["classes"] == [str(i) for i in range(10)]


def test_auto_normalization_is_computed_once_and_recorded(forms, write_config, tmp_path):
    data_keys, splits = forms
    cfg_path = write_config(TINY.format(data=data_keys["npz"]).replace("epochs: 2", "epochs: 1"))
    result = runner.invoke(app, ["train", str(cfg_path), "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    test_acc = json.loads(result.output.splitlines()[-1])["test"]["accuracy"]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    mean, std = pixel_stats(splits["train"][0][:160])                 # the 160 images trained on, not validation
    assert saved["mean"] == mean[0] and saved["std"] == std[0] and saved["format"] == "npz"
    _, stored, _ = load_model(tmp_path / "run" / "best.npz")
    assert (stored.data.mean, stored.data.std) == (mean[0], std[0])
    js = json.loads(runner.invoke(app, ["eval", str(tmp_path / "run" / "best.npz"), "--json"]).output)
    assert js["accuracy"] == test_acc
    other = runner.invoke(app, ["eval", str(tmp_path / "run" / "best.npz"), "--json", "--data",
                                data_keys["idx"].removeprefix("path: ")])      # another form, same images
    assert json.loads(other.output)["accuracy"] == test_acc


def _mnist_yaml_with(data: str) -> str:
    """configs/mnist-small.yaml with its data section replaced by ``data`` (model and train untouched)."""
    text = (REPO / "configs" / "mnist-small.yaml").read_text()
    start, end = text.index("data:\n"), text.index("\nmodel:")
    return text[:start] + data + text[end:]


@pytest.mark.parametrize("kind", ["gray20-csv", "rgb32-npz", "rgb32-png"])
def test_other_image_sizes_train_with_only_the_data_section_changed(kind, write_config, tmp_path):
    if kind.endswith("png"):
        pytest.importorskip("PIL")
    train, test = load_split(REPO / "data" / "mnist", "train", 90), load_split(REPO / "data" / "mnist", "test", 20)
    splits = {}
    for name, ds in (("train", train), ("test", test)):
        x = ds.images
        if kind.startswith("gray20"):
            x = x[:, :, 4:24, 4:24].copy()
        else:
            p = np.pad(x[:, 0], ((0, 0), (2, 2), (2, 2)))
            x = np.ascontiguousarray(np.stack([p, 255 - p, p.transpose(0, 2, 1)], axis=1))
        splits[name] = (x, ds.labels)
    if kind == "gray20-csv":
        path = write_csv(tmp_path / "d", splits, header=False)          # 400 pixels: 20x20 inferred
    elif kind == "rgb32-npz":
        path = write_npz(tmp_path / "d.npz", splits)
    else:
        path = write_png_folders(tmp_path / "d", splits)
    cfg = write_config(_mnist_yaml_with(f"data:\n  path: {path}\n  val_split: 10\n"))
    result = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "run"), "--epochs", "1", "-q"])
    assert result.exit_code == 0, result.output
    model, stored, _ = load_model(tmp_path / "run" / "best.npz")
    c, s = (1, 20) if kind.startswith("gray20") else (3, 32)
    assert model.input_shape == (c, s, s)
    assert model.layers[0].params["weight"].shape == (32, c, 3, 3)            # conv in_channels inferred
    linear = [layer for layer in model.layers if "weight" in layer.params and layer.params["weight"].ndim == 2][0]
    assert linear.params["weight"].shape == (64 * (s // 4) ** 2, 128)           # linear in_features inferred
    means = stored.data.mean if c == 3 else (stored.data.mean,)
    assert len(means) == c                                                      # auto: one mean per channel
    assert runner.invoke(app, ["eval", str(tmp_path / "run" / "best.npz"), "--show-errors", "0"]).exit_code == 0
    if kind == "rgb32-png":
        digit = next((path / "test" / str(int(test.labels[0]))).iterdir())
        predicted = runner.invoke(app, ["predict", str(tmp_path / "run" / "best.npz"), str(digit), "--json"])
        assert predicted.exit_code == 0, predicted.output
        assert "name" in json.loads(predicted.output)["top"][0]


def test_normalization_settings(forms, write_config, tmp_path):
    data_keys, _ = forms
    base = TINY.format(data=data_keys["idx"])
    for setting, expected in (("mean: 0.5, std: 0.25", (0.5, 0.25)), ("mean: [0.5], std: auto", (0.5, None))):
        cfg = C.load(write_config(base.replace("val_split: 40", f"val_split: 40, {setting}")))
        data = prepare_data(cfg)
        assert data.mean == expected[0] and (expected[1] is None or data.std == expected[1])
    wrong = C.load(write_config(base.replace("val_split: 40", "val_split: 40, mean: [0.1, 0.2, 0.3]")))
    from cnncli.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.mean: has 3 values but the images have 1 channel"):
        prepare_data(wrong)
    lut = pixel_lut((0.0, 0.5, 1.0), (1.0, 0.5, 0.25))
    x = np.array([[[[0]], [[255]], [[51]]]], np.uint8)
    np.testing.assert_allclose(normalize_batch(lut, x)[0, :, 0, 0], [0.0, 1.0, -3.2], rtol=1e-6)
