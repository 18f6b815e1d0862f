"""Property-based fuzzing of everything cnncli reads: bad input never crashes, never lies.

Every example ends in a result or in a typed error (a ``CnncliError`` subclass); any other
exception fails the test with hypothesis's minimal example. Inputs:

- configs: random YAML text, random token soups, random mutations of valid configs
  (``config.load`` -> ``assemble.build_model`` -> a forward pass), random ``--set``
  overrides, random Python values through ``config.validate``;
- datasets: mutated real IDX splits through ``datasets.load_split`` and
  ``data.prepare_data``, random and mutated image files through ``images.read_images``
  (``test_datasets.py`` already fuzzes ``read_idx`` on raw bytes);
- checkpoints: byte-level and structural corruptions of a real checkpoint through
  ``evaluation.load_model``.

The budget is small by default (the whole file well under a minute); set
``CNNCLI_FUZZ_EXAMPLES=5000`` to run that many examples per test. Weight and activation
sizes are capped at 2**22 values here (``checks.MAX_ELEMENTS``) so no example
allocates much memory; the cap itself is what is being checked.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import (
    HealthCheck,
    currently_in_test_context,
    event,
    given,
    note,
    settings,
)
from hypothesis import strategies as st

from cnncli import config as C
from cnncli.checkpoint import load as load_checkpoint
from cnncli.datasets import Dataset, load_split
from cnncli.errors import CheckpointError, CnncliError, ConfigError, DataError
from cnncli.evaluation import load_model
from cnncli.images import read_images
from cnncli.layers import ALIASES, LAYERS, options
from cnncli import checks
from cnncli.model import Model
from cnncli.assemble import build_model
from cnncli.data import prepare_data

REPO = Path(__file__).resolve().parents[1]
FUZZ_EXAMPLES = int(os.environ.get("CNNCLI_FUZZ_EXAMPLES", "0") or 0)


def budget(default: int):
    """``default`` examples, or ``CNNCLI_FUZZ_EXAMPLES`` when set."""
    return settings(max_examples=FUZZ_EXAMPLES or default, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture(autouse=True, scope="module")
def small_size_limit():
    """Cap every weight/activation at 2**22 values so no example allocates much."""
    mp = pytest.MonkeyPatch()
    mp.setattr(checks, "MAX_ELEMENTS", 2 ** 22)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _event(text: str) -> None:
    """Count outcomes (shown by ``pytest --hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(text)


def settle(fn, *args, **kwargs):
    """``fn``'s result, or the typed error it raised; any other exception propagates (a bug)."""
    try:
        result = fn(*args, **kwargs)
    except CnncliError as e:
        _event(f"{fn.__name__}: {type(e).__name__}")
        message = str(e)
        assert message.strip(), f"{type(e).__name__} without a message"
        assert "Traceback" not in message
        return e
    _event(f"{fn.__name__}: result")
    return result


# ------------------------------------------------------------------ configs

KITCHEN = """\
data: {path: data/mnist, num_classes: 10, val_split: 0.1, mean: 0.13, std: 0.31, train_limit: 100, test_limit: 50}
model:
  input_shape: [1, 12, 12]
  layers:
    - conv2d: {out_channels: 4, kernel_size: [3, 3], stride: 1, padding: same, dilation: 1, groups: 1,
               bias: true, padding_mode: zeros, init: he_normal}
    - batchnorm: {eps: 1.0e-5, momentum: 0.1, affine: true, track_running_stats: true}
    - leaky_relu: {negative_slope: 0.01}
    - maxpool2d: {kernel_size: 2, stride: 2, padding: 0, dilation: 1, ceil_mode: false}
    - elu: {alpha: 1.0}
    - dropout2d: {p: 0.1}
    - conv: {out_channels: 4, kernel_size: 3, padding: 1, groups: 2}
    - gelu: {approximate: tanh}
    - avgpool2d: {kernel_size: 2, stride: [1, 1], padding: 1, ceil_mode: true, count_include_pad: false,
                  divisor_override: null}
    - sigmoid
    - tanh
    - {type: global_avgpool, keepdims: true}
    - flatten
    - log_softmax: {dim: 1}
    - softmax: {dim: -1}
    - dropout: {p: 0.5}
    - dense: {out_features: 10, bias: true, init: xavier_uniform}
    - relu
train:
  epochs: 1
  batch_size: 16
  eval_batch_size: 100
  seed: 3
  label_smoothing: 0.1
  optimizer: {type: sgd, lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.0001}
output: {dir: runs/kitchen}
"""

BASES = {
    "kitchen": KITCHEN,
    "tiny": (REPO / "configs" / "tiny.yaml").read_text(),
    "mnist-small": (REPO / "configs" / "mnist-small.yaml").read_text(),
}

LAYER_NAMES = sorted([*LAYERS, *ALIASES])
OPTION_NAMES = sorted({n for cls in LAYERS.values() for n in options(cls)} | {"in_channels", "in_features"})
VOCAB = sorted({*C.SECTIONS, *(k for s in C.SECTIONS.values() for k in s), *LAYER_NAMES, *OPTION_NAMES,
                "type", "same", "valid", "zeros", "adam", "sgd", "adamw", "lr", "betas", "momentum", "none",
                "tanh", "he_normal", "torch_default", "conv2d:", "- relu", "nan", "inf", "~", "null"})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.integers(),
    st.sampled_from([0, -1, 2 ** 31, 2 ** 63, 10 ** 12, 10 ** 400]),
    st.floats(), st.floats(-2, 2), st.text(max_size=8), st.sampled_from(VOCAB))
keys = st.one_of(st.sampled_from(VOCAB), st.text(max_size=6), st.integers(-2, 5), st.booleans(), st.none())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=8)


#: values that often pass the type checks, so shapes and ranges get exercised
plausible = st.integers(0, 6) | st.lists(st.integers(0, 6), min_size=1, max_size=3) | \
    st.sampled_from(["same", "valid", True, False, None, 0.5, 1.5, -1, 1e-3, "tanh", "none", "he_uniform"])


@st.composite
def layer_items(draw):
    """A layer as YAML would hold it: a bare name, {name: options} or {type: name, ...},
    with real option names and mostly plausible values (so geometry is exercised)."""
    name = draw(st.sampled_from(LAYER_NAMES) | st.text(max_size=8))
    cls = LAYERS[ALIASES.get(name, name)] if ALIASES.get(name, name) in LAYERS else None
    names = (sorted(options(cls)) if cls is not None else OPTION_NAMES) or ["p"]
    opts = draw(st.dictionaries(st.sampled_from(names) | keys, plausible | values, max_size=4))
    form = draw(st.sampled_from(["bare", "nested", "type"]))
    if form == "bare":
        return name
    if form == "type":
        return {"type": name, **{k: v for k, v in opts.items() if k != "type"}}
    return {name: opts or None}


def _nodes(doc, path=()):
    """(container, key, path) of every node under ``doc``."""
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
    else:
        return
    for k, v in items:
        yield doc, k, (*path, k)
        yield from _nodes(v, (*path, k))


def _typo(word: str, draw) -> str:
    if not word:
        return "x"
    i = draw(st.integers(0, len(word) - 1))
    op = draw(st.sampled_from(["drop", "double", "swap", "upper", "space"]))
    if op == "drop":
        return word[:i] + word[i + 1:]
    if op == "double":
        return word[:i] + word[i] + word[i:]
    if op == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == "upper":
        return word.upper()
    return word + " "


@st.composite
def mutated_docs(draw, base: str | None = None):
    """A valid config (parsed) after 1-4 random mutations: set, delete, rename (typo),
    insert, replace a layer, reorder layers, wrap a value in a list or text."""
    name = base or draw(st.sampled_from(sorted(BASES)))
    doc = yaml.safe_load(BASES[name])
    for _ in range(draw(st.integers(1, 4))):
        nodes = list(_nodes(doc))
        op = draw(st.sampled_from(["set", "set", "delete", "rename", "insert", "layer", "reorder", "wrap"]))
        if not nodes or not isinstance(doc, dict):
            doc = draw(values)
            break
        parent, key, _ = draw(st.sampled_from(nodes))
        if op == "set":
            parent[key] = draw(plausible | values)
        elif op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = _typo(key, draw) if isinstance(key, str) and draw(st.booleans()) else draw(keys)
            items = [(new if k == key else k, v) for k, v in parent.items()]
            parent.clear()
            parent.update(items)
        elif op == "insert":
            target = parent[key] if isinstance(parent[key], (dict, list)) else parent
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
            else:
                target.insert(draw(st.integers(0, len(target))), draw(layer_items() | values))
        elif op == "layer" or op == "reorder":
            layers = doc.get("model", {}).get("layers") if isinstance(doc.get("model"), dict) else None
            if isinstance(layers, list) and layers:
                if op == "layer":
                    layers[draw(st.integers(0, len(layers) - 1))] = draw(layer_items())
                else:
                    doc["model"]["layers"] = draw(st.permutations(layers))
        elif op == "wrap":
            v = parent[key]
            parent[key] = draw(st.sampled_from([[v], str(v), {str(v): v}, [v, v]]))
    note(f"base {name}")
    return doc


def _dump(doc) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def check_located(e: ConfigError, source: str, from_file: bool = True) -> None:
    """Every problem is located: one message line per problem, each naming the file, with
    a key path and/or a YAML line (a problem of the whole file may have neither)."""
    assert isinstance(e, ConfigError), e
    assert e.problems
    for p in e.problems:
        text = p.format(source)
        assert text.startswith(source), text
        if from_file and p.path and not p.message.startswith("unknown: give it"):
            assert p.line is not None, f"no line for {text}"


def run_config(path: Path, overrides: list[str] | None = None, from_file: bool = True):
    """config.load -> build_model -> forward (eval and training); returns the model or the typed error."""
    cfg = settle(C.load, path, overrides)
    if isinstance(cfg, CnncliError):
        check_located(cfg, str(path), from_file and not overrides)
        return cfg
    # what was validated is what a run folder (config.yaml) and a checkpoint (JSON) store,
    # and it validates again identically
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False)) == cfg.to_dict()
    stored = json.loads(json.dumps(cfg.to_dict()))
    again = settle(C.from_dict, stored)
    assert not isinstance(again, CnncliError), f"the resolved config does not validate again: {again}"
    assert again.to_dict() == stored
    shape = None if cfg.model.input_shape else (1, 12, 12)
    model = settle(build_model, cfg, shape, num_classes=cfg.data.num_classes)
    if isinstance(model, CnncliError):
        assert isinstance(model, ConfigError)
        check_located(model, str(path), from_file and not overrides)
        return model
    assert isinstance(model, Model)
    if cfg.data.num_classes is not None:
        assert model.output_shape == (cfg.data.num_classes,)
    # a model that builds takes data of its input shape: shapes were checked, not guessed
    x = np.random.default_rng(0).standard_normal((2, *model.input_shape)).astype(np.float32)
    with np.errstate(all="ignore"):
        for training in (False, True):
            y = model.forward(x, training=training)
            assert y.shape == (2, *model.output_shape)
    return model


def test_every_base_config_is_valid(work):
    for name, text in BASES.items():
        path = work / f"{name}.yaml"
        path.write_text(text)
        assert isinstance(run_config(path), Model), name


@budget(300)
@given(doc=mutated_docs())
def test_mutated_configs_give_a_model_or_a_located_config_error(work, doc):
    text = _dump(doc)
    note(text)
    path = work / "mutated.yaml"
    path.write_text(text)
    run_config(path)


YAML_ALPHABET = "abcdekly_01239.-+:,[]{}#&*!|>'\"%@`?~\n\n  \t\x00\x85é"
TOKENS = ["data:", "model:", "train:", "output:", "layers:", "input_shape:", "- ", "\n", "\n  ", "\n    ", "  ",
          "conv2d", "relu", "linear", "flatten", "{", "}", "[", "]", ":", ": ", ",", "out_features: 10",
          "kernel_size: 3", "!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!map", "!!seq", "!!set",
          "!!omap", "!!python/object:os.system", "&a ", "*a", "<<: ", "? ", "'", '"', "# c", "2020-02-30",
          "1e5", "1e999", ".nan", "-.inf", "~", "|", ">", "---", "...", "%YAML 1.2", "0x1F", "0o7", "1_000",
          "-1", "1.5", "true", "yes", "null", "path: data/mnist", "type: adam", "\\x00", "\t"]


@budget(200)
@given(text=st.text(alphabet=YAML_ALPHABET, max_size=200) |
       st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_random_yaml_text_gives_a_config_or_a_config_error(work, text):
    path = work / "random.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    run_config(path)


def _path_text(path: tuple) -> str:
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) and not isinstance(k, bool) else f".{k}"
    return out.lstrip(".")


@st.composite
def overrides(draw):
    doc = yaml.safe_load(KITCHEN)
    real = [_path_text(p) for _, _, p in _nodes(doc)]
    junk = ["", "[0]", "a..b", "model.layers[99].x", "model.layers.x", "data.path.x", "train[0]",
            "model.layers[0][0]", "model.layers[0].conv2d.kernel_size[5]", ".", "=", "x=y", "[", "]"]
    key = draw(st.sampled_from(real) | st.sampled_from(junk) | st.text(max_size=12))
    value = draw(st.text(max_size=12) |
                 values.map(lambda v: yaml.safe_dump(v, default_flow_style=True, width=10 ** 6).strip()))
    return draw(st.sampled_from([f"{key}={value}", key, f"{key}=", f"={value}"]))


@budget(150)
@given(sets=st.lists(overrides(), min_size=1, max_size=3))
def test_random_overrides_give_a_config_or_a_config_error(work, sets):
    path = work / "kitchen.yaml"
    path.write_text(KITCHEN)
    note(repr(sets))
    run_config(path, sets)


@budget(150)
@given(raw=values | mutated_docs(), sets=st.lists(overrides(), max_size=2))
def test_validate_and_apply_overrides_on_any_python_value(raw, sets):
    raw = settle(C.apply_overrides, raw, sets)
    if isinstance(raw, CnncliError):
        assert isinstance(raw, ConfigError)
        return
    cfg = settle(C.validate, raw, "fuzz")
    if isinstance(cfg, CnncliError):
        assert isinstance(cfg, ConfigError)
        return
    settle(build_model, cfg, None if cfg.model.input_shape else (1, 12, 12))


# ------------------------------------------------------------------ datasets

def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()


@pytest.fixture(scope="module")
def real_split():
    """8 real training and 4 real test images (N, 28, 28) uint8 with their labels."""
    train = load_split(REPO / "data" / "mnist", "train", 8)
    test = load_split(REPO / "data" / "mnist", "test", 4)
    return (np.ascontiguousarray(train.images[:, 0]), train.labels.astype(np.uint8),
            np.ascontiguousarray(test.images[:, 0]), test.labels.astype(np.uint8))


@st.composite
def idx_files(draw, images: np.ndarray, labels: np.ndarray):
    """(images bytes, labels bytes) of a real split after one structural or byte-level mutation."""
    img, lab = _idx(images), _idx(labels)
    which = draw(st.sampled_from(["images", "labels"]))
    data = bytearray(img if which == "images" else lab)
    op = draw(st.sampled_from(["truncate", "append", "flip", "code", "ndim", "dim", "labels", "swap", "empty",
                               "count"]))
    if op == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif op == "append":
        data += draw(st.binary(min_size=1, max_size=40))
    elif op == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, min(len(data), 40) - 1))
            data[i] = draw(st.integers(0, 255))
    elif op == "code":
        data[2] = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    elif op == "ndim":
        data[3] = draw(st.integers(0, 6))
    elif op == "dim":
        d = draw(st.integers(0, data[3] - 1)) if data[3] else 0
        data[4 + 4 * d:8 + 4 * d] = draw(st.integers(0, 2 ** 32 - 1) | st.integers(0, 30)).to_bytes(4, "big")
    elif op == "labels":
        new = draw(st.lists(st.integers(0, 255), min_size=len(labels), max_size=len(labels)))
        lab = _idx(np.array(new, np.uint8))
        data = bytearray(lab) if which == "labels" else data
    elif op == "swap":
        img, lab = lab, img
        data = bytearray(img if which == "images" else lab)
    elif op == "empty":
        data = bytearray()
    elif op == "count":
        n = draw(st.integers(0, len(images) + 3))
        arr = np.resize(images, (n, *images.shape[1:])) if which == "images" else np.resize(labels, n)
        data = bytearray(_idx(arr.astype(np.uint8)))
    if which == "images":
        img = bytes(data)
    else:
        lab = bytes(data)
    if draw(st.booleans()):
        img, lab = gzip.compress(img), gzip.compress(lab)
    return img, lab


def _write_split(folder: Path, prefix: str, img: bytes, lab: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{prefix}-*"):
        old.unlink()
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(img)
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(lab)


def check_dataset(ds) -> None:
    assert isinstance(ds, Dataset)
    assert ds.images.dtype == np.uint8 and ds.images.ndim == 4
    assert ds.labels.dtype == np.int64 and ds.labels.ndim == 1
    assert len(ds.images) == len(ds.labels) > 0
    assert ds.labels.min() >= 0


@budget(200)
@given(data=st.data())
def test_mutated_idx_split_gives_a_dataset_or_a_data_error(work, real_split, data):
    img, lab = data.draw(idx_files(real_split[0], real_split[1]))
    folder = work / "split"
    _write_split(folder, "train", img, lab)
    ds = settle(load_split, folder, "train", data.draw(st.none() | st.integers(1, 20)))
    if isinstance(ds, CnncliError):
        assert isinstance(ds, DataError)
        assert str(folder) in str(ds)
    else:
        check_dataset(ds)


@budget(100)
@given(data=st.data())
def test_prepare_data_gives_data_or_a_data_error(work, real_split, data):
    """Labels beyond num_classes, splits that leave nothing to train on, empty and broken files."""
    folder = work / "prepared"
    img, lab = data.draw(idx_files(real_split[0], real_split[1]))
    _write_split(folder, "train", img, lab)
    if data.draw(st.booleans()):
        _write_split(folder, "t10k", _idx(real_split[2]), _idx(real_split[3]))
    else:
        t_img, t_lab = data.draw(idx_files(real_split[2], real_split[3]))
        _write_split(folder, "t10k", t_img, t_lab)
    d = {"path": str(folder),
         "num_classes": data.draw(st.none() | st.integers(2, 12)),
         "val_split": data.draw(st.integers(0, 12) | st.floats(0, 0.999)),
         "train_limit": data.draw(st.none() | st.integers(1, 12)),
         "test_limit": data.draw(st.none() | st.integers(1, 12))}
    cfg = C.validate({"data": d, "model": {"layers": ["flatten", {"linear": {"out_features": 10}}]}}, "fuzz")
    prepared = settle(prepare_data, cfg)
    if isinstance(prepared, CnncliError):
        assert isinstance(prepared, DataError)
        return
    check_dataset(prepared.train)
    assert prepared.num_classes >= 2 or prepared.num_classes == prepared.train.num_classes
    for ds in (prepared.train, prepared.val, prepared.test):
        if ds is not None:
            assert int(ds.labels.max()) < prepared.num_classes


def test_empty_idx_with_dimensions_beyond_any_array_is_a_data_error(work):
    """Found by test_datasets' fuzz: 0 * 256 * 2**25 * 2**30 bytes match an empty payload, but
    numpy cannot shape an array like that."""
    path = work / "absurd-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 5]) + np.array([0, 0, 256, 2 ** 25, 2 ** 30], ">u4").tobytes())
    with pytest.raises(DataError, match="no array can have"):
        read_images(path)


def _npy(array) -> bytes:
    b = io.BytesIO()
    np.save(b, array)
    return b.getvalue()


@st.composite
def image_files(draw, real):
    """(suffix, bytes): .npy / .pgm / IDX images, valid or damaged, or random bytes."""
    kind = draw(st.sampled_from([".npy", ".pgm", "-idx3-ubyte"]))
    images = real[0][:2]
    if kind == ".npy":
        arr = draw(st.sampled_from([images, images[0], images[:, None], images.astype(np.float32) / 255,
                                    images.astype(np.int64) - 1, images.astype(np.float64) * 300,
                                    np.full((2, 2), np.nan), np.zeros((1, 1, 1, 1, 1)), np.array(3),
                                    np.array(["a"]), np.zeros(2, dtype=[("a", "f4")]), images.astype(bool),
                                    images.astype(np.complex64), np.zeros((0, 28, 28), np.uint8)]))
        blob = _npy(arr)
    elif kind == ".pgm":
        w, h = draw(st.integers(0, 30)), draw(st.integers(0, 30))
        maxval = draw(st.sampled_from([255, 15, 0, 65535, -1]))
        if draw(st.booleans()):
            body = " ".join(str(draw(st.integers(-2, 300))) for _ in range(min(w * h, 40)))
            blob = f"P2\n# c\n{w} {h}\n{maxval}\n{body}".encode()
        else:
            blob = f"P5 {w} {h} {maxval}\n".encode() + draw(st.binary(max_size=w * h + 4))
    else:
        blob = _idx(images)
    data = bytearray(blob)
    op = draw(st.sampled_from(["keep", "truncate", "flip", "random"]))
    if op == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif op == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, min(len(data), 140) - 1))] = draw(st.integers(0, 255))
    elif op == "random":
        data = bytearray(draw(st.binary(max_size=200)))
    return kind, bytes(data)


@budget(300)
@given(data=st.data())
def test_image_files_give_uint8_nchw_or_a_data_error(work, real_split, data):
    suffix, blob = data.draw(image_files(real_split))
    path = work / f"image{suffix}"
    path.write_bytes(blob)
    out = settle(read_images, path)
    if isinstance(out, CnncliError):
        assert isinstance(out, DataError) and str(path) in str(out)
    else:
        assert out.dtype == np.uint8 and out.ndim == 4


# ------------------------------------------------------------------ checkpoints

@pytest.fixture(scope="module")
def real_checkpoint(mnist_slice, tmp_path_factory) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint written by a real (one-epoch) ``cnncli train`` run."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(BASES["tiny"].replace("path: data/mnist", f"path: {mnist_slice}")
                   .replace("val_split: 0.1", "val_split: 0.1\n  train_limit: 200\n  test_limit: 50"))
    run = subprocess.run([sys.executable, "-m", "cnncli", "train", str(cfg), "--out", str(tmp / "run"),
                          "--epochs", "1", "--quiet"], capture_output=True, text=True, timeout=120, cwd=REPO,
                         check=False)
    assert run.returncode == 0, run.stderr
    path = tmp / "run" / "best.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return {"path": path, "bytes": path.read_bytes(), "arrays": arrays}


def check_loaded(result, intact_weights: bool) -> None:
    if isinstance(result, CnncliError):
        assert isinstance(result, CheckpointError), result
        return
    model, _cfg, _ck = result
    x = np.zeros((2, *model.input_shape), np.float32)
    with np.errstate(all="ignore"):
        y = model.forward(x)
    assert y.shape == (2, *model.output_shape)
    if intact_weights:
        assert np.isfinite(y).all()
    for a in [*model.params().values(), *model.buffers().values()]:
        assert np.isfinite(a).all()


@budget(150)
@given(data=st.data())
def test_byte_level_corruption_of_a_checkpoint(work, real_checkpoint, data):
    blob = bytearray(real_checkpoint["bytes"])
    op = data.draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "append", "random"]))
    if op == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    elif op == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    elif op == "overwrite":
        start = data.draw(st.integers(0, len(blob) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=64))
        blob[start:start + len(chunk)] = chunk
    elif op == "insert":
        i = data.draw(st.integers(0, len(blob)))
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=32))
    elif op == "append":
        blob += data.draw(st.binary(min_size=1, max_size=64))
    else:
        blob = bytearray(data.draw(st.binary(max_size=300)))
    path = work / "corrupt.npz"
    path.write_bytes(bytes(blob))
    check_loaded(settle(load_model, path), intact_weights=True)


DTYPES = ["float16", "float64", "int32", "int64", "uint8", "bool", "complex64", "U3", "S2", "datetime64[s]",
          "timedelta64[s]", "V4", "f4,i4"]


@st.composite
def corrupted_arrays(draw, arrays: dict[str, np.ndarray]):
    """The checkpoint's arrays after 1-3 structural mutations; also whether the (model) config
    is intact and whether a weight or buffer holds NaN/inf."""
    arrays = dict(arrays)
    config_intact = True
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "add", "dtype", "shape", "nonfinite", "config", "meta", "text",
                                   "pickle", "version", "input_shape"]))
        arrays_keys = sorted(k for k in arrays if "/" in k)
        key = draw(st.sampled_from(sorted(arrays)))
        if op == "drop":
            del arrays[key]
        elif op == "add":
            name = draw(st.sampled_from(["param/9.weight", "buffer/0.x", "optim/1.weight/exp_avg", "foo", "param/",
                                         "param/1.weight/x"]) | st.text(max_size=10))
            arrays[name] = draw(st.sampled_from([np.zeros(3, np.float32), np.array("x"), np.zeros((0,))]))
        elif op == "dtype" and arrays_keys:
            k = draw(st.sampled_from(arrays_keys))
            dt = np.dtype(draw(st.sampled_from(DTYPES)))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)   # NaN -> int casts
                    arrays[k] = arrays[k].astype(dt)
            except (TypeError, ValueError):
                arrays[k] = np.zeros(arrays[k].shape, dt)
        elif op == "shape" and arrays_keys:
            k = draw(st.sampled_from(arrays_keys))
            shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
            arrays[k] = np.zeros(shape, arrays[k].dtype)
        elif op == "nonfinite" and arrays_keys:
            k = draw(st.sampled_from(arrays_keys))
            if arrays[k].dtype.kind == "f" and arrays[k].size:
                a = arrays[k].copy()
                a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
                arrays[k] = a
        elif op == "config":
            doc = _json_or_empty(arrays.get("config"))
            nodes = list(_nodes(doc))
            if nodes:
                parent, k, _ = draw(st.sampled_from(nodes))
                parent[k] = draw(values.filter(lambda v: _jsonable(v)))
            arrays["config"] = np.array(json.dumps(doc))
            config_intact = False
        elif op == "meta":
            doc = _json_or_empty(arrays.get("meta"))
            nodes = list(_nodes(doc))
            if nodes:
                parent, k, _ = draw(st.sampled_from(nodes))
                if draw(st.booleans()):
                    del parent[k]
                else:
                    parent[k] = draw(values.filter(lambda v: _jsonable(v)))
            arrays["meta"] = np.array(json.dumps(doc))
            config_intact = False
        elif op == "text":
            k = draw(st.sampled_from(["config", "meta"]))
            arrays[k] = draw(st.sampled_from([np.array("{"), np.array("[]"), np.array(b"{}"), np.arange(3),
                                              np.array(["{}", "{}"]), np.array("[" * 5000 + "]" * 5000),
                                              np.array('{"a": NaN}')]))
            config_intact = False
        elif op == "pickle":
            arrays[draw(st.sampled_from(["config", "param/1.weight", "x"]))] = np.array([{"x": 1}], dtype=object)
        elif op == "version":
            meta = _json_or_empty(arrays.get("meta"))
            if isinstance(meta, dict):
                meta["format_version"] = draw(st.sampled_from([0, -1, 2, 99, "1", 1.0, True, None, [1]]))
                arrays["meta"] = np.array(json.dumps(meta))
        elif op == "input_shape":
            meta = _json_or_empty(arrays.get("meta"))
            if isinstance(meta, dict):
                meta["input_shape"] = draw(values.filter(lambda v: _jsonable(v)) |
                                           st.lists(st.integers(-1, 30), max_size=4))
                arrays["meta"] = np.array(json.dumps(meta))
                config_intact = False
    planted = any(k.startswith(("param/", "buffer/")) and a.dtype.kind in "fc" and not np.isfinite(a).all()
                  for k, a in arrays.items())
    return arrays, config_intact, planted


def _json_or_empty(a) -> dict:
    try:
        doc = json.loads(str(a))
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _jsonable(v) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return all(isinstance(k, str) for k in _keys(v))
    except (TypeError, ValueError, OverflowError):
        return False


def _keys(v):
    if isinstance(v, dict):
        yield from v
        for x in v.values():
            yield from _keys(x)
    elif isinstance(v, list):
        for x in v:
            yield from _keys(x)


@budget(200)
@given(data=st.data())
def test_structural_corruption_of_a_checkpoint(work, real_checkpoint, data):
    arrays, config_intact, planted = data.draw(corrupted_arrays(real_checkpoint["arrays"]))
    path = work / "mutated.npz"
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    result = settle(load_model, path)
    check_loaded(result, intact_weights=config_intact)
    if planted and not isinstance(result, CnncliError):
        model = result[0]
        pytest.fail(f"a checkpoint with NaN/inf weights loaded: {[k for k, a in model.params().items()]}")


def test_the_real_checkpoint_loads_and_predicts(real_checkpoint):
    model, _cfg, ck = load_model(real_checkpoint["path"])
    assert model.output_shape == (10,) and ck.meta["format_version"] == 1
    assert load_checkpoint(real_checkpoint["path"]).params.keys() == model.params().keys()
    assert math.isfinite(float(model.forward(np.zeros((1, 1, 28, 28), np.float32)).sum()))
