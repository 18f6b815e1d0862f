"""Layer options ``trainable``, ``lr_mult`` and ``decay_mult``: frozen layers keep their weights
(and a frozen batchnorm its running statistics) bit for bit, ``lr_mult: 0`` likewise, and the
multipliers equal torch's parameter groups (lr * lr_mult, weight_decay * decay_mult)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli import checkpoint
from cnncli.cli import app
from cnncli.optim import OPTIMIZERS

runner = CliRunner()

CONFIG = """\
data: {{path: {data}, val_split: 100, mean: 0.1307, std: 0.3081}}
model:
  input_shape: [1, 28, 28]
  layers:
    - conv2d: {{out_channels: 4, kernel_size: 3, {conv}}}
    - batchnorm: {{{bn}}}
    - relu
    - maxpool2d: {{kernel_size: 2}}
    - flatten
    - linear: {{out_features: 10}}
train:
  epochs: 1
  batch_size: 50
  optimizer: {{type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.01}}
"""


def train(write_config, data, tmp_path, conv="", bn="", name="r"):
    cfg = write_config(CONFIG.format(data=data, conv=conv, bn=bn), f"{name}.yaml")
    r = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / name), "-q"])
    assert r.exit_code == 0, r.output
    return checkpoint.load(tmp_path / name / "last.npz")


def initial(write_config, data, tmp_path):
    """The model's initial arrays (same seed: the same initial weights)."""
    from cnncli import config as C
    from cnncli.assemble import build_model

    cfg = C.load(write_config(CONFIG.format(data=data, conv="", bn=""), "init.yaml"))
    m = build_model(cfg)
    return {k: v.copy() for k, v in m.params().items()}, {k: v.copy() for k, v in m.buffers().items()}


@pytest.mark.parametrize("conv,bn", [("trainable: false", "trainable: false"), ("lr_mult: 0, decay_mult: 0", "lr_mult: 0")])
def test_frozen_or_zero_rate_layers_keep_their_weights_bit_for_bit(write_config, mnist_slice, tmp_path, conv, bn):
    params0, buffers0 = initial(write_config, mnist_slice, tmp_path)
    ck = train(write_config, mnist_slice, tmp_path, conv=conv, bn=bn)
    for key in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert np.array_equal(ck.params[key], params0[key]), key
    assert not np.array_equal(ck.params["5.weight"], params0["5.weight"])    # the rest trains
    frozen = "trainable" in bn
    # a frozen batchnorm runs in evaluation mode: its running statistics stay; lr_mult 0 still updates them
    assert np.array_equal(ck.buffers["1.running_mean"], buffers0["1.running_mean"]) == frozen
    if frozen:
        assert not any(k.startswith(("0.", "1.")) for k in ck.optim)        # no optimizer state either


def test_summary_shows_the_options_and_a_layer_without_parameters_refuses_them(write_config, mnist_slice):
    cfg = write_config(CONFIG.format(data=mnist_slice, conv="trainable: false", bn="lr_mult: [2, 1], decay_mult: 0"))
    r = runner.invoke(app, ["summary", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    import json
    rows = json.loads(r.output)["layers"]
    assert (rows[0]["trainable"], rows[1]["lr_mult"], rows[1]["decay_mult"]) == (False, [2.0, 1.0], 0.0)
    assert "trainable" not in rows[2]
    r = runner.invoke(app, ["summary", str(cfg)], env={"COLUMNS": "200"})
    assert "│ frozen " in r.output and "│ lr x2/1, decay x0 │" in r.output
    assert "trainable parameters: 6,778   frozen (trainable: false): 40" in r.output
    bad = write_config(CONFIG.format(data=mnist_slice, conv="lr_mult: -1", bn="").replace("- relu", "- relu: {trainable: false}"))
    r = runner.invoke(app, ["summary", str(bad)])
    assert r.exit_code == 2
    said = " ".join(r.output.split())
    assert "model.layers[0].lr_mult" in said and "must be >= 0" in said


def test_a_list_gives_one_multiplier_per_parameter(write_config, mnist_slice):
    from cnncli import config as C
    from cnncli.assemble import build_model, make_optimizer

    cfg = C.load(write_config(CONFIG.format(data=mnist_slice, conv="lr_mult: [1, 2], decay_mult: [1, 0]", bn="")))
    opt = make_optimizer(cfg, build_model(cfg))
    assert opt.multipliers["0.weight"] == (1.0, 1.0) and opt.multipliers["0.bias"] == (2.0, 0.0)
    assert opt.multipliers["5.bias"] == (1.0, 1.0)
    r = runner.invoke(app, ["summary", str(write_config(CONFIG.format(data=mnist_slice, conv="lr_mult: [1, 2, 3]",
                                                                      bn="")))])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "model.layers[0].lr_mult: has 3 values but conv2d has 2 parameters" in said


def test_a_layer_without_parameters_refuses_the_options(write_config, mnist_slice):
    bad = write_config(CONFIG.format(data=mnist_slice, conv="", bn="").replace("- relu", "- relu: {trainable: false}"))
    r = runner.invoke(app, ["summary", str(bad)])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "model.layers[2].trainable" in said and "relu has no parameters" in said


@pytest.mark.parametrize("name,kw", [("sgd", {"momentum": 0.9, "weight_decay": 0.1}),
                                     ("adam", {"weight_decay": 0.1}), ("adamw", {"weight_decay": 0.1})])
def test_multipliers_match_torch_parameter_groups(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    init = {"0.weight": rng.standard_normal((3, 2)), "0.bias": rng.standard_normal(2), "1.weight": rng.standard_normal(4)}
    mults = {"0.weight": (1.0, 1.0), "0.bias": (2.0, 0.0), "1.weight": (0.5, 3.0)}   # Caffe's LeNet: 1/2 on biases
    params = {k: v.copy() for k, v in init.items()}
    ours = OPTIMIZERS[name](params, lr=0.01, **kw)
    ours.multipliers = mults
    tps = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    theirs = cls([{"params": [tps[k]], "lr": 0.01 * lm, "weight_decay": kw["weight_decay"] * dm}
                  for k, (lm, dm) in mults.items()], lr=0.01, **{k: v for k, v in kw.items() if k != "weight_decay"})
    for _ in range(4):
        grads = {k: rng.standard_normal(v.shape) for k, v in init.items()}
        ours.step(grads)
        for k, t in tps.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
    assert ours.lr == 0.01 and ours.weight_decay == 0.1          # restored after each step
    for k in init:
        np.testing.assert_allclose(params[k], tps[k].detach().numpy(), rtol=1e-10, atol=1e-12)
