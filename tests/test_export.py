"""Export (ONNX, PyTorch safetensors + generated model.py) and ``--weights``, verified against
the real runtimes: ONNX Runtime (CPU) and torch run the exported files, and their logits are
compared with cnncli's. Each part skips cleanly when its package is missing."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli.cli import app
from cnncli.export.onnx_graph import ONNX_LAYERS
from cnncli.export.torch_layout import TORCH_LAYERS, to_torch, torch_modules
from cnncli.layers import LAYERS
from cnncli.model import LayerSpec, build

try:
    from layer_cases import CASES, make_input, randomize_state
    from export_parity import compare
except ImportError:  # pragma: no cover
    from tests.layer_cases import CASES, make_input, randomize_state
    from tests.export_parity import compare

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

#: A config using every registered layer type, each with options ONNX can express.
ALL_LAYERS = """
data: {path: DATA, val_split: 100, mean: 0.1307, std: 0.3081, test_limit: 300}
model:
  layers:
    - conv2d: {out_channels: 4, kernel_size: 4, padding: same}
    - batchnorm
    - leaky_relu: {negative_slope: 0.2}
    - maxpool2d: {kernel_size: 3, stride: 2, padding: 1, ceil_mode: true}
    - conv2d: {out_channels: 6, kernel_size: 3, groups: 2, dilation: 2, padding: 2}
    - elu: {alpha: 0.7}
    - dropout2d: {p: 0.1}
    - avgpool2d: {kernel_size: 3, stride: 2, padding: 1, ceil_mode: true, count_include_pad: false}
    - avgpool2d: {kernel_size: 2, stride: 1, divisor_override: 3}
    - gelu: {approximate: tanh}
    - global_avgpool: {keepdims: true}
    - flatten
    - linear: {out_features: 16}
    - batchnorm
    - gelu
    - dropout: {p: 0.2}
    - sigmoid
    - linear: {out_features: 12}
    - softmax
    - log_softmax
    - tanh
    - relu
    - linear: {out_features: 10}
train: {epochs: 1, batch_size: 50, seed: 0, optimizer: {type: adam, lr: 0.01}}
output: {dir: OUT}
"""


def test_every_registered_layer_type_exports_to_both_formats():
    assert set(LAYERS) == set(TORCH_LAYERS) == set(ONNX_LAYERS)
    text = runner.invoke(app, ["layers"], env={"COLUMNS": "250"}).output
    assert re.search(r"conv2d .*onnx, pytorch", text) and "not track_running_stats: false" in text


def _one_layer(case, seed=0):
    """A float32 model of the case's layer alone, with random weights and running statistics."""
    model = build([LayerSpec(case.name, dict(case.options))], case.in_shape, dtype=np.float32)
    randomize_state(model.layers[0], np.random.default_rng(seed))
    x = make_input(case, np.random.default_rng(seed + 1), np.float32)
    return model, x, model.forward(x.copy(), training=False)


def _eval_cases():
    seen, out = set(), []
    for p in CASES:
        c = p.values[0]
        key = (c.name, repr(sorted(c.options.items())), c.in_shape)
        if key not in seen and len(c.in_shape) in (1, 3):     # shapes a model takes
            seen.add(key)
            out.append(pytest.param(c, id=p.id.rsplit("-", 1)[0]))
    return out


@pytest.mark.parametrize("case", _eval_cases())
def test_each_layer_case_runs_the_same_in_onnx_runtime(case):
    """Every option of the layer grid: ONNX Runtime's output equals cnncli's evaluation
    forward within 1e-4, or the option is refused naming the layer (no ONNX form)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cnncli.errors import ExportError
    from cnncli.export.onnx_graph import onnx_model

    model, x, ours = _one_layer(case)
    # std 1/255 and mean 0: the normalization multiplies by one, so x reaches the layer as it is
    if case.options.get("track_running_stats") is False:
        with pytest.raises(ExportError, match=r"model\.layers\[0\] \(batchnorm\): track_running_stats: false "
                                              r"has no ONNX form"):
            onnx_model(model, 0.0, 1 / 255, {})
        return
    proto = onnx_model(model, 0.0, 1 / 255, {})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"pixels": x})[0]
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", _eval_cases())
def test_each_layer_case_runs_the_same_in_torch(case):
    """The module the PyTorch export writes, with the exported arrays loaded strictly, equals
    cnncli's evaluation forward (float32, within 1e-5)."""
    torch = pytest.importorskip("torch")
    model, x, ours = _one_layer(case)
    net = torch.nn.Sequential(*(m.build(torch.nn) for m in torch_modules(model)))
    net.load_state_dict({k: torch.from_numpy(a) for k, a in to_torch(model).items()}, strict=True)
    with torch.no_grad():
        theirs = net.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)


def _train(tmp_path: Path, config: Path, name: str, *sets: str) -> Path:
    out = tmp_path / name
    length = [] if any(s.startswith("train.max_steps=") for s in sets) else ["--epochs", "1"]
    r = runner.invoke(app, ["train", str(config), "--out", str(out), "-q", *length, *sum(
        (["--set", s] for s in sets), [])])
    assert r.exit_code == 0, r.output
    return out / "best.npz"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every shipped config (its data present) and the all-layers config, trained for one
    epoch on 600 images: name -> best checkpoint."""
    tmp = tmp_path_factory.mktemp("export-runs")
    out = {}
    for path in SHIPPED:
        from cnncli.config import load

        cfg = load(path)
        if cfg.data.path is not None and not (REPO / cfg.data.path).exists():
            continue
        extra = ("train.max_steps=12",) if cfg.train.max_steps is not None else ()
        if cfg.data.validate_on != "test":
            extra += ("data.val_split=100",)
        out[path.stem] = _train(tmp, path, path.stem, "data.train_limit=600", "data.test_limit=500",
                                "train.batch_size=50", *extra)
    cfg = tmp / "all.yaml"
    cfg.write_text(ALL_LAYERS.replace("DATA", str(REPO / "data" / "mnist")).replace("OUT", str(tmp / "all")))
    out["all-layers"] = _train(tmp, cfg, "all", "data.train_limit=600")
    return out


SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", [p.stem for p in SHIPPED] + ["all-layers"])
def test_exports_give_cnncli_eval_logits_classes_and_accuracy(trained, name, tmp_path, monkeypatch):
    """onnx.checker passes; ONNX Runtime and the generated model.py give cnncli's logits within
    1e-4, the same class for every test image and the same accuracy as ``cnncli eval``."""
    for package in ("onnx", "onnxruntime", "safetensors", "torch"):
        pytest.importorskip(package)
    if name not in trained:
        pytest.skip(f"the data of configs/{name}.yaml is not here")
    monkeypatch.chdir(REPO)
    row = compare(trained[name], tmp_path, None)
    assert row["n"] >= 300
    assert row["onnx_max_abs"] <= 1e-4 and row["torch_max_abs"] <= 1e-4, row
    assert row["onnx_same_class"] and row["torch_same_class"], row
    assert row["acc_eval"] == row["acc_cnncli"] == row["acc_onnx"] == row["acc_torch"], row


def test_round_trip_through_pytorch_is_bit_identical(trained, tmp_path):
    """cnncli -> export -> torch (load_state_dict strict, then torch's own save_file) -> cnncli
    --weights: every parameter and buffer bit for bit, dtypes included."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    from cnncli.evaluation import load_model
    from cnncli.export.run import export_checkpoint
    from cnncli.export.weights import read_weights

    ck = trained["all-layers"]
    py = export_checkpoint(ck, "pytorch", tmp_path / "pt")[1]
    spec = importlib.util.spec_from_file_location("roundtrip_model", py)
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    net = generated.load(str(tmp_path / "pt" / "model.safetensors"))
    st.save_file(net.state_dict(), str(tmp_path / "from-torch.safetensors"))
    model, _, _ = load_model(ck)
    assert model.layers[1].buffers["num_batches_tracked"] > 0
    params, buffers = read_weights(tmp_path / "from-torch.safetensors", model)
    for mine, theirs in ((model.params(), params), (model.buffers(), buffers)):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert theirs[key].dtype == mine[key].dtype and theirs[key].shape == mine[key].shape, key
            assert mine[key].tobytes() == np.ascontiguousarray(theirs[key]).tobytes(), key


def test_a_model_trained_in_pytorch_evaluates_the_same_and_trains_on(tmp_path, monkeypatch):
    """configs/tiny.yaml's network written by hand in torch, trained one epoch, saved with
    safetensors.torch.save_file: ``cnncli eval --config`` gives torch's accuracy on the same
    images (the network ``train --weights`` starts from), and ``train --weights`` trains on."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    from torch import nn

    from cnncli.data import normalize_batch, pixel_lut
    from cnncli.datasets import load_split

    monkeypatch.chdir(REPO)
    torch.manual_seed(0)
    net = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2, 2), nn.Dropout(0.25), nn.Flatten(), nn.Linear(36, 10))
    lut = pixel_lut(0.1307, 0.3081)
    train = load_split(REPO / "data" / "mnist", "train", 3000)
    test = load_split(REPO / "data" / "mnist", "test", 1000)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    for i in range(0, 3000, 64):
        loss = nn.functional.cross_entropy(net(torch.from_numpy(normalize_batch(lut, train.images[i:i + 64]))),
                                           torch.from_numpy(train.labels[i:i + 64]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        torch_acc = float((net.eval()(torch.from_numpy(normalize_batch(lut, test.images))).argmax(1).numpy()
                           == test.labels).mean())
    weights = tmp_path / "torch.safetensors"
    st.save_file(net.state_dict(), str(weights))
    r = runner.invoke(app, ["eval", str(weights), "--config", "configs/tiny.yaml", "--test-limit", "1000", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["accuracy"] == torch_acc > 0.5
    r = runner.invoke(app, ["train", "configs/tiny.yaml", "--weights", str(weights), "--out", str(tmp_path / "ft"),
                            "-q", "--set", "data.train_limit=1000", "--set", "data.test_limit=200"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1


# ----------------------------------------------------------------------- bad input: exit 2, located


def _fails(args, *expected):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for text in expected:
        assert text in r.output, r.output
    return r.output


def test_bad_weights_files_are_located_errors(trained, tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    from cnncli.export.run import export_checkpoint

    monkeypatch.chdir(REPO)
    good = export_checkpoint(trained["mnist-small"], "pytorch", tmp_path / "pt")[0]
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:1000])
    _fails(["eval", str(truncated), "--config", "configs/mnist-small.yaml"], str(truncated), "not a valid safetensors")
    _fails(["train", "configs/mnist-small.yaml", "--weights", str(truncated), "--out", str(tmp_path / "no")],
           "not a valid safetensors")
    assert not (tmp_path / "no").exists()
    onnx_file = export_checkpoint(trained["mnist-small"], "onnx", tmp_path / "m.onnx")[0] \
        if importlib.util.find_spec("onnx") else tmp_path / "m.onnx"
    if not onnx_file.exists():
        onnx_file.write_bytes(b"\x08\x09\x12\x06cnncli")
    _fails(["predict", str(onnx_file), str(REPO / "README.md"), "--config", "configs/mnist-small.yaml"],
           "neither a cnncli checkpoint nor a safetensors file")
    # weights of another network: every tensor listed with its layer, name and both shapes
    out = _fails(["eval", str(good), "--config", "configs/lenet5.yaml"],
                 "model.layers[0] (conv2d) weight: the file has (32, 1, 3, 3), the network needs (6, 1, 5, 5)",
                 "unexpected 16 tensor(s)", "missing 8 tensor(s)")
    assert "model.layers[7] (linear) weight" in out
    _fails(["eval", str(trained["mnist-small"]), "--config", "configs/tiny.yaml"], "model.layers[1] (conv2d) weight")
    _fails(["train", "configs/mnist-small.yaml", "--weights", str(good), "--resume", str(trained["mnist-small"])],
           "give one of them")


def test_export_refusals_are_located_and_keep_what_is_there(trained, tmp_path, write_config, monkeypatch):
    pytest.importorskip("onnx")
    monkeypatch.chdir(REPO)
    cfg = write_config("data: {path: %s, val_split: 100, mean: 0.1307, std: 0.3081, train_limit: 300, test_limit: 100}\n"
                       "model: {layers: [{avgpool2d: {kernel_size: 4}}, {batchnorm: {track_running_stats: false}}, flatten, "
                       "{linear: {out_features: 10}}]}\ntrain: {epochs: 1, batch_size: 50}\n"
                       % (REPO / "data" / "mnist"))
    ck = _train(tmp_path, cfg, "div")
    _fails(["export", str(ck), "--format", "onnx", "-o", str(tmp_path / "d.onnx")],
           "model.layers[1] (batchnorm): track_running_stats: false has no ONNX form")
    assert not (tmp_path / "d.onnx").exists()
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"mine")
    _fails(["export", str(trained["tiny"]), "-f", "onnx", "-o", str(taken)], "already exists", "--overwrite")
    assert taken.read_bytes() == b"mine"
    _fails(["export", str(trained["tiny"]), "-f", "tflite", "-o", str(tmp_path / "x")], "choose one of onnx, pytorch")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(trained["tiny"].read_bytes()[:500])
    _fails(["export", str(broken), "-f", "pytorch", "-o", str(tmp_path / "p")], str(broken))


def test_readme_snippet_classifies_with_both_exports(trained, tmp_path, monkeypatch):
    """The README's "Taking a model elsewhere" snippet runs verbatim next to the exports and
    both runtimes name the class cnncli predicts."""
    for package in ("onnxruntime", "safetensors", "torch"):
        pytest.importorskip(package)
    from cnncli.datasets import load_split
    from cnncli.evaluation import predict_files
    from cnncli.export.run import export_checkpoint

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Taking a model elsewhere"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    export_checkpoint(trained["mnist"], "onnx", tmp_path / "mnist.onnx")
    export_checkpoint(trained["mnist"], "pytorch", tmp_path / "mnist-pytorch")
    np.save(tmp_path / "digit.npy", load_split(REPO / "data" / "mnist", "test", 1).images[0, 0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))      # the snippet's sys.path.insert is undone
    monkeypatch.delitem(__import__("sys").modules, "model", raising=False)
    namespace: dict = {"__name__": "readme_export"}
    exec(compile(snippet, "README.md (Taking a model elsewhere)", "exec"), namespace)  # noqa: S102
    want = str(predict_files(trained["mnist"], [tmp_path / "digit.npy"])[0]["top"][0]["class"])
    assert namespace["onnx_class"] == namespace["torch_class"] == want
