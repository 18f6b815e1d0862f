"""configs/caffe-lenet.yaml (Caffe's examples/mnist LeNet): its network has Caffe's 431,080
parameters and the per-blob lr multipliers; it trains a few steps.

The config needs names that land on another branch (issue 16 part A: data.scale,
xavier_caffe, the inv schedule). Until they are all
registered the test skips, saying which ones are missing. TODO(merge): remove the skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnncli import config as C
from cnncli.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "caffe-lenet.yaml"


#: What configs/caffe-lenet.yaml names before the other branches land. TODO(merge): remove.
PENDING = ("data.scale", "xavier_caffe", "'inv'")


def load_or_skip(path: Path = CONFIG):
    """``config.load(path)``; a skip when its only problems are :data:`PENDING` names."""
    try:
        return C.load(path)
    except ConfigError as e:
        if all(any(p in str(problem) for p in PENDING) for problem in e.problems):
            pytest.skip(f"waiting for the names of issue 16's other parts: {e}")
        raise


load = load_or_skip


def test_caffe_lenet_has_caffes_parameters_and_multipliers():
    from cnncli.assemble import build_model, make_optimizer

    cfg = load()
    model = build_model(cfg)
    assert model.num_params() == 431_080          # 520 + 25,050 + 400,500 + 5,010
    opt = make_optimizer(cfg, model)
    assert opt.multipliers["0.bias"] == (2.0, 1.0) and opt.multipliers["0.weight"] == (1.0, 1.0)
