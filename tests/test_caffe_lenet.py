"""configs/caffe-lenet.yaml (Caffe's examples/mnist LeNet): its network has Caffe's 431,080
parameters and the per-blob lr multipliers; it trains a few steps."""

from __future__ import annotations
from pathlib import Path


from cnncli import config as C

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "caffe-lenet.yaml"


def load(path: Path = CONFIG):
    return C.load(path)


def test_caffe_lenet_has_caffes_parameters_and_multipliers():
    from cnncli.assemble import build_model, make_optimizer

    cfg = load()
    model = build_model(cfg)
    assert model.num_params() == 431_080          # 520 + 25,050 + 400,500 + 5,010
    opt = make_optimizer(cfg, model)
    assert opt.multipliers["0.bias"] == (2.0, 1.0) and opt.multipliers["0.weight"] == (1.0, 1.0)
