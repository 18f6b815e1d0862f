"""Bad input through the real ``cnncli`` in a subprocess: exit code 2, one located message,
no traceback; and the run folder's checkpoints survive a SIGKILL at any moment.

Each config case points ``data.path`` at a folder that does not exist, so a config or
shape error that is reported proves it was found before any data was read.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnncli import checkpoint
from cnncli.datasets import load_split
from cnncli.errors import CnncliError, DivergedError, OutputError
from cnncli.evaluation import load_model

REPO = Path(__file__).resolve().parents[1]


def cnncli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "cnncli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env=env, check=False)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, every needle in the output; returns the error lines."""
    out = result.stdout + result.stderr
    assert result.returncode == code, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"
    return result.stderr


# ------------------------------------------------------------------ config and shape errors

def model_yaml(layers: str, nowhere: Path) -> str:
    """Line 1 data, 2 model, 3 input_shape, 4 layers:, 5 the first layer."""
    return (f"data: {{path: {nowhere}}}\nmodel:\n  input_shape: [1, 28, 28]\n  layers:\n{layers}"
            "train: {epochs: 1}\n")


HEAD = "    - flatten\n    - linear: {out_features: 10}\n"

LAYER_CASES = [
    # (id, layers, where, hint)
    ("kernel_size as text", "    - conv2d: {out_channels: 4, kernel_size: '3'}\n" + HEAD,
     ":5 model.layers[0].kernel_size", "must be an integer, got '3'"),
    ("kernel_size list of one", "    - conv2d: {out_channels: 4, kernel_size: [3]}\n" + HEAD,
     ":5 model.layers[0].kernel_size", "pair [h, w]"),
    ("fractional stride", "    - conv2d: {out_channels: 4, kernel_size: 3, stride: 0.5}\n" + HEAD,
     ":5 model.layers[0].stride", "must be an integer"),
    ("negative stride", "    - conv2d: {out_channels: 4, kernel_size: 3, stride: -1}\n" + HEAD,
     ":5 model.layers[0].stride", ">= 1"),
    ("zero channels", "    - conv2d: {out_channels: 0, kernel_size: 3}\n" + HEAD,
     ":5 model.layers[0].out_channels", ">= 1"),
    ("boolean channels", "    - conv2d: {out_channels: true, kernel_size: 3}\n" + HEAD,
     ":5 model.layers[0].out_channels", "must be an integer"),
    ("three dilations", "    - conv2d: {out_channels: 4, kernel_size: 3, dilation: [1, 2, 3]}\n" + HEAD,
     ":5 model.layers[0].dilation", "pair"),
    ("p above 1", "    - relu\n    - dropout: {p: 1.5}\n" + HEAD, ":6 model.layers[1].p", "< 1"),
    ("p as text", "    - relu\n    - dropout: {p: '0.5'}\n" + HEAD, ":6 model.layers[1].p", "must be a number"),
    ("options not a mapping", "    - conv2d: 5\n" + HEAD, ":5 model.layers[0]", "must be a mapping"),
    ("terabytes of weights", "    - conv2d: {out_channels: 1000000000000, kernel_size: 3}\n" + HEAD,
     ":5 model.layers[0]", "limit"),
    ("unknown layer", "    - maxpol2d: {kernel_size: 2}\n" + HEAD, ":5 model.layers[0]", "Did you mean 'maxpool2d'"),
    ("unknown option", "    - conv2d: {out_channels: 4, kernal_size: 3}\n" + HEAD,
     ":5 model.layers[0].kernal_size", "Did you mean 'kernel_size'"),
    ("kernel larger than input", "    - conv2d: {out_channels: 4, kernel_size: 30}\n" + HEAD,
     ":5 model.layers[0]", "larger than the padded input"),
    ("pool window larger than input", "    - maxpool2d: {kernel_size: 64}\n" + HEAD,
     ":5 model.layers[0]", "pooling window"),
    ("linear without flatten", "    - conv2d: {out_channels: 4, kernel_size: 3}\n    - linear: {out_features: 10}\n",
     ":6 model.layers[1]", "add a 'flatten' layer"),
    ("model ends with images", "    - conv2d: {out_channels: 4, kernel_size: 3}\n",
     ":5 model.layers[0]", "one logit per class"),
]


@pytest.mark.parametrize("layers,where,hint", [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
def test_bad_layer_exits_2_with_its_key_path_and_line(write_config, tmp_path, layers, where, hint):
    cfg = write_config(model_yaml(layers, tmp_path / "no-data"))
    err = assert_user_error(cnncli("train", cfg, "--out", tmp_path / "run"), f"{cfg}{where}", hint)
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_every_problem_of_a_file_is_reported_at_once(write_config, tmp_path):
    layers = ("    - conv2d: {out_channels: 0, kernel_size: '3', stride: -1}\n    - dropout: {p: 1.5}\n"
              "    - maxpol2d: {kernel_size: 2}\n" + HEAD)
    text = model_yaml(layers, tmp_path / "no-data").replace("data: {", "data: {val_splt: 0.2, ") + "trian: {}\n"
    cfg = write_config(text)
    err = assert_user_error(cnncli("train", cfg), f"{cfg}:1 data.val_splt", f"{cfg}:5 model.layers[0].out_channels",
                            f"{cfg}:5 model.layers[0].kernel_size", f"{cfg}:5 model.layers[0].stride",
                            f"{cfg}:6 model.layers[1].p", f"{cfg}:7 model.layers[2]", "Did you mean 'maxpool2d'",
                            f"{cfg}:11 trian", "Did you mean 'train'")
    assert len(err.strip().splitlines()) == 7, err


FILE_CASES = [
    ("YAML syntax error", "data:\n  path: [x\nmodel: {}\n", ":3", "YAML syntax error, column"),
    ("impossible date", "data: {path: x}\nmodel: {layers: [flatten]}\ntrain:\n  seed: 2020-02-30\n",
     ":4", "cannot read '2020-02-30' as timestamp"),
    ("explicit tag", "data: {path: x}\nmodel: {layers: [flatten]}\ntrain: {epochs: !!int ten}\n", ":3", "as int"),
    ("python tag", "data: !!python/object/apply:os.system [echo hi]\n", ":1", "could not determine a constructor"),
    ("unknown section", "data: {path: x}\nmodel: {layers: [flatten]}\ntrian: {}\n", ":3 trian",
     "Did you mean 'train'"),
    ("section not a mapping", "data: {path: x}\nmodel: []\n", ":2 model", "must be a mapping"),
    ("layers not a list", "data: {path: x}\nmodel:\n  layers: {}\n", ":3 model.layers", "non-empty list"),
    ("optimizer type is a list", "data: {path: x}\nmodel: {layers: [flatten]}\ntrain:\n  optimizer: {type: [adam]}\n",
     ":4 train.optimizer.type", "unknown optimizer"),
    ("huge mean", "data:\n  path: x\n  mean: 1" + "0" * 400 + "\nmodel: {layers: [flatten]}\n", ":3 data.mean",
     "finite"),
    ("nested too deeply", "data: " + "[" * 5000 + "]" * 5000 + "\n", "", "nested too deeply"),
    ("NUL byte", "data: {path: x}\x00\n", ":1", "not allowed"),
    ("not a mapping", "- data\n- model\n", "", "a config is a mapping"),
]


@pytest.mark.parametrize("text,where,hint", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_config_file_exits_2_located(write_config, text, where, hint):
    cfg = write_config(text)
    assert_user_error(cnncli("summary", cfg), f"{cfg}{where}", hint)


def test_bad_overrides_exit_2(write_config, tmp_path):
    cfg = write_config(model_yaml("    - conv2d: {out_channels: 4, kernel_size: 3}\n" + HEAD, tmp_path / "no-data"))
    assert_user_error(cnncli("summary", cfg, "--set", "model.layers[0].conv2d.kernel_size=abc"),
                      "model.layers[0].kernel_size", "must be an integer, got 'abc'")
    assert_user_error(cnncli("summary", cfg, "--set", "train.epochs=[", "--set", "model.layers[9].x=1",
                             "--set", "nothing"),
                      "--set train.epochs=[", "--set model.layers[9].x=1", "does not lead to a key",
                      "--set nothing", "expected key.path=value")


# ------------------------------------------------------------------ data errors

def idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def small(mnist_slice):
    """64 training and 16 test images (N, 28, 28) with labels, from the real MNIST slice."""
    train, test = load_split(mnist_slice, "train", 64), load_split(mnist_slice, "test", 16)
    return train.images[:, 0], train.labels, test.images[:, 0], test.labels


def data_folder(root: Path, small, **replace: bytes) -> Path:
    """A dataset folder of the small split; ``replace`` gives other bytes for train_images,
    train_labels, test_images or test_labels (gzip-compressed as written)."""
    files = {"train_images": idx(small[0]), "train_labels": idx(small[1]),
             "test_images": idx(small[2]), "test_labels": idx(small[3]), **replace}
    names = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
    root.mkdir(parents=True, exist_ok=True)
    for key, blob in files.items():
        (root / names[key]).write_bytes(gzip.compress(blob))
    return root


def data_config(write_config, folder: Path, data: str = "", model: str = "", out_features: int = 10) -> Path:
    return write_config(f"data: {{path: {folder}{data}}}\nmodel:\n{model}  layers:\n    - flatten\n"
                        f"    - linear: {{out_features: {out_features}}}\ntrain: {{epochs: 1, batch_size: 32}}\n")


def test_data_errors_exit_2_naming_the_file(write_config, tmp_path, small):
    images, labels = small[0], small[1]
    cases = [
        ({}, "dataset folder not found", "/d0"),
        ({"train_images": b"<html>Not found</html>"}, "not an IDX file", "train-images-idx3-ubyte.gz"),
        ({"train_images": idx(images)[:-100]}, "truncated", "train-images-idx3-ubyte.gz"),
        ({"train_images": idx(images) + b"\0" * 7}, "7 extra bytes", "train-images-idx3-ubyte.gz"),
        ({"train_labels": idx(labels[:-1])}, "64 images but", "63 labels"),
        ({"train_images": idx(images[:0]), "train_labels": idx(labels[:0])}, "split is empty", "0 samples"),
        ({"train_labels": idx(labels)[:3]}, "not an IDX file", "train-labels-idx1-ubyte.gz"),
        ({"train_images": idx(labels), "train_labels": idx(images)}, "labels file", "train-images"),
    ]
    for i, (replace, *needles) in enumerate(cases):
        folder = tmp_path / f"d{i}"
        if replace:
            data_folder(folder, small, **replace)
        cfg = data_config(write_config, folder)
        assert_user_error(cnncli("train", cfg, "--out", tmp_path / f"run{i}"), *needles)
        assert not (tmp_path / f"run{i}").exists()


def test_labels_classes_splits_and_shapes_that_disagree_exit_2(write_config, tmp_path, small):
    folder = data_folder(tmp_path / "data", small)
    cases = [
        ({"data": ", num_classes: 5"}, "outside [0, 5)", "data.num_classes"),
        ({"data": ", val_split: 64"}, "data.val_split", "leaving none to train on"),
        ({"data": ", val_split: 0.999"}, "data.val_split", "leaving none to train on"),
        ({"model": "  input_shape: [3, 32, 32]\n"}, "model.input_shape", "[1, 28, 28]"),
        ({"out_features": 5}, "model.layers[1]", "5 outputs but the data has 10 classes"),
    ]
    for i, (kw, *needles) in enumerate(cases):
        cfg = data_config(write_config, folder, **kw)
        assert_user_error(cnncli("train", cfg, "--out", tmp_path / f"run{i}"), *needles)


# ------------------------------------------------------------------ checkpoint errors

@pytest.fixture(scope="module")
def trained(mnist_slice, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-ckpt")
    cfg = tmp / "tiny.yaml"
    cfg.write_text((REPO / "configs" / "tiny.yaml").read_text()
                   .replace("path: data/mnist", f"path: {mnist_slice}\n  train_limit: 200\n  test_limit: 50"))
    result = cnncli("train", cfg, "--out", tmp / "run", "--epochs", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    path = tmp / "run" / "best.npz"
    with np.load(path, allow_pickle=False) as z:
        return path, {k: z[k] for k in z.files}


def _with(arrays, **changes):
    out = {k: v for k, v in arrays.items() if k not in changes or changes[k] is not None}
    out.update({k: v for k, v in changes.items() if v is not None})
    return out


def _meta(arrays, **changes):
    meta = json.loads(str(arrays["meta"]))
    meta.update(changes)
    return np.array(json.dumps(meta))


def _config(arrays, edit):
    cfg = json.loads(str(arrays["config"]))
    edit(cfg)
    return np.array(json.dumps(cfg))


def test_checkpoint_errors_exit_2(trained, tmp_path):
    good, arrays = trained
    w = arrays["param/1.weight"]

    def wider_conv(cfg):
        cfg["model"]["layers"][1]["conv2d"]["out_channels"] = 5

    def no_layers(cfg):
        cfg["model"]["layers"] = []

    cases = {   # file name: (arrays to save, or None for the special files; needles)
        "text.npz": (None, ("not a readable .npz",)),
        "single.npz": (None, ("a single .npy array",)),
        "truncated.npz": (None, ("not a readable .npz",)),
        "pickled.npz": (_with(arrays, config=np.array([{"x": 1}], dtype=object)), ("pickled",)),
        "missing.npz": (_with(arrays, **{"param/1.weight": None}), ("missing ['1.weight']",)),
        "misshaped.npz": (_with(arrays, **{"param/1.weight": w[:2]}), ("1.weight has shape (2, 1, 3, 3)",)),
        "newer.npz": (_with(arrays, meta=_meta(arrays, format_version=2)), ("format version 2", "Upgrade cnncli")),
        "version0.npz": (_with(arrays, meta=_meta(arrays, format_version=0)), ("format_version is 0",)),
        "nan.npz": (_with(arrays, **{"param/1.weight": np.full_like(w, np.nan)}), ("NaN",)),
        "strings.npz": (_with(arrays, **{"param/1.weight": w.astype("U8")}), ("floating-point",)),
        "complex.npz": (_with(arrays, **{"param/1.weight": w.astype(np.complex64)}), ("floating-point",)),
        "ints.npz": (_with(arrays, **{"buffer/2.running_var": np.ones(4, np.int64)}), ("running_var holds int64",)),
        "other-model.npz": (_with(arrays, config=_config(arrays, wider_conv)), ("has shape", "needs (5, 1, 3, 3)")),
        "bad-config.npz": (_with(arrays, config=_config(arrays, no_layers)),
                           ("stored config is invalid", "model.layers")),
        "bad-shape.npz": (_with(arrays, meta=_meta(arrays, input_shape=[1, 28.5, 28])), ("input_shape [1, 28.5, 28]",)),
        "other-shape.npz": (_with(arrays, meta=_meta(arrays, input_shape=[1, 14, 14])), ("meta says input_shape",)),
        "not-json.npz": (_with(arrays, meta=np.array("{")), ("corrupt 'meta' entry",)),
    }
    digit = tmp_path / "digit.npy"
    np.save(digit, np.zeros((28, 28), np.uint8))
    for name, (content, needles) in cases.items():
        path = tmp_path / name
        if name == "text.npz":
            path.write_text("hello")
        elif name == "single.npz":
            with open(path, "wb") as f:
                np.save(f, w)
        elif name == "truncated.npz":
            path.write_bytes(good.read_bytes()[:-300])
        else:
            with open(path, "wb") as f:
                np.savez(f, **content)
        assert_user_error(cnncli("eval", path), str(path), *needles)
        if name in ("pickled.npz", "nan.npz", "other-model.npz"):
            assert_user_error(cnncli("predict", path, digit), str(path), *needles)


def test_debug_shows_the_traceback_of_a_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    result = cnncli("--debug", "eval", bad)
    assert result.returncode != 0 and "Traceback" in result.stderr and "CheckpointError" in result.stderr


def test_a_config_that_does_not_match_the_checkpoint_is_refused(trained, write_config, mnist_slice):
    from cnncli import config as C
    from cnncli.errors import CheckpointError

    path, _ = trained
    text = (REPO / "configs" / "tiny.yaml").read_text().replace("out_channels: 4", "out_channels: 6")
    other = C.load(write_config(text))
    with pytest.raises(CheckpointError, match="does not match the layers of"):
        load_model(path, other)
    same = C.load(write_config((REPO / "configs" / "tiny.yaml").read_text()))
    model, cfg, _ = load_model(path, same)
    assert cfg is same and model.output_shape == (10,)


# ------------------------------------------------------------------ output safety

def test_unwritable_output_folder_is_reported_before_training(write_config, tmp_path, small):
    folder = data_folder(tmp_path / "data", small)
    cfg = data_config(write_config, folder)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cnncli("train", cfg, "--out", blocker / "run")
    assert_user_error(result, str(blocker / "run"), "cannot write the run folder")
    assert "epoch" not in result.stdout.lower()


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    params = {"0.weight": np.arange(6.0, dtype=np.float32).reshape(2, 3)}
    checkpoint.save(path, params=params, buffers={}, optim={}, config={"a": 1}, meta={"epoch": 1})
    before = path.read_bytes()
    real_savez = np.savez

    def half_then_enospc(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(len(before) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_then_enospc)
    with pytest.raises(OutputError) as info:
        checkpoint.save(path, params={"0.weight": np.zeros((2, 3), np.float32)}, buffers={}, optim={},
                        config={"a": 1}, meta={"epoch": 2})
    assert isinstance(info.value, CnncliError) and isinstance(info.value, OSError) and info.value.errno == 28
    assert "No space left on device" in str(info.value) and "previous file is intact" in str(info.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]
    assert checkpoint.load(path).meta["epoch"] == 1


def test_nan_weights_are_never_saved_over_a_good_checkpoint(tmp_path):
    path = tmp_path / "last.npz"
    good = {"0.weight": np.ones((2, 3), np.float32)}
    checkpoint.save(path, params=good, buffers={}, optim={}, config={}, meta={"epoch": 1})
    with pytest.raises(DivergedError, match="0.weight holds NaN"):
        checkpoint.save(path, params={"0.weight": np.full((2, 3), np.nan, np.float32)}, buffers={}, optim={},
                        config={}, meta={"epoch": 2})
    assert checkpoint.load(path).meta["epoch"] == 1


def test_writing_into_a_missing_folder_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="cannot write into"):
        checkpoint.atomic_write(tmp_path / "gone" / "x.npz", lambda f: f.write(b"x"))


KILL_CONFIG = """\
data: {{path: {data}, val_split: 0, train_limit: 64, test_limit: 16}}
model:
  layers:
    - conv2d: {{out_channels: 8, kernel_size: 3, padding: 1}}
    - relu
    - flatten
    - linear: {{out_features: 10}}
train: {{epochs: 100000, batch_size: 64, optimizer: {{type: adam, lr: 0.001}}}}
"""


def test_sigkill_during_training_leaves_loadable_checkpoints(write_config, mnist_slice, tmp_path):
    """Kill a training run (SIGKILL: no cleanup) at random moments while it writes a ~800 kB
    checkpoint every few milliseconds; every *.npz left must load, and no half-written file
    may carry the name."""
    cfg = write_config(KILL_CONFIG.format(data=mnist_slice))
    run = tmp_path / "run"
    rnd = random.Random(7)
    loaded = 0
    def mtime():
        """last.npz's mtime, or None; the new process (--overwrite) may remove it at any moment."""
        try:
            return (run / "last.npz").stat().st_mtime_ns
        except FileNotFoundError:
            return None

    for _ in range(6):
        before = mtime()
        proc = subprocess.Popen([sys.executable, "-m", "cnncli", "train", str(cfg), "--out", str(run),
                                 "--overwrite", "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while mtime() in (None, before):
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "training never wrote a checkpoint"
                time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, 0.4))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        names = sorted(p.name for p in run.iterdir())
        for path in run.glob("*.npz"):
            ck = checkpoint.load(path)            # never a half file under a checkpoint's name
            model, _, _ = load_model(path)
            assert ck.meta["epoch"] >= 1 and model.output_shape == (10,)
            loaded += 1
        # a write cut short leaves only its hidden temporary (.last.npz.XXXX.tmp), never a *.npz
        assert all(n.startswith(".") and n.endswith(".tmp") for n in names if n not in
                   ("best.npz", "last.npz", "config.yaml", "metrics.jsonl", "timing.jsonl")), names
    assert loaded >= 6


def test_list_valued_options_reach_config_yaml_and_the_checkpoint(write_config, tmp_path, small):
    """kernel_size: [3, 3] and betas: [..] are written to config.yaml and the checkpoint as plain lists."""
    folder = data_folder(tmp_path / "data", small)
    cfg = write_config(f"data: {{path: {folder}, val_split: 0}}\nmodel:\n  layers:\n"
                       "    - conv2d: {out_channels: 2, kernel_size: [3, 3], stride: [1, 2]}\n    - flatten\n"
                       "    - linear: {out_features: 10}\n"
                       "train: {epochs: 1, optimizer: {type: adam, betas: [0.9, 0.99]}}\n")
    result = cnncli("train", cfg, "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["layers"][0]["conv2d"]["kernel_size"] == [3, 3]
    assert saved["train"]["optimizer"]["betas"] == [0.9, 0.99]
    model, _, _ = load_model(tmp_path / "run" / "last.npz")
    assert model.layers[0].stride == (1, 2)


def test_a_negative_running_variance_is_a_corrupt_checkpoint(tmp_path):
    """Evaluating it would give NaN (sqrt of a negative): refuse it at load, exit 2, instead of a
    "loss became nan" divergence message."""
    from cnncli.errors import CheckpointError

    path = tmp_path / "x.npz"
    checkpoint.save(path, params={"0.weight": np.ones(3, np.float32)},
                    buffers={"0.running_var": np.array([1.0, -0.5, 2.0], np.float32)}, optim={}, config={},
                    meta={"epoch": 1})
    with pytest.raises(CheckpointError, match=r"'buffer/0.running_var' holds a negative variance \(-0.5\)"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(path)
    assert e.value.exit_code == 2
