"""One registry mechanism, checks that carry their option, validation done once."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from cnncli import config as C
from cnncli.checks import OptionError, check_float, check_int
from cnncli.errors import ConfigError
from cnncli.layers import LAYERS
from cnncli.layers.conv import Conv2d
from cnncli.layers.init import INITIALIZERS
from cnncli.model import LayerSpec, build
from cnncli.optim import OPTIMIZERS
from cnncli.registry import Registry
from cnncli.schedules import SCHEDULES

CFG = """\
data: {path: data/mnist}
model:
  layers:
    - conv2d: {out_channels: 4, kernel_size: 3}
    - relu
    - flatten
    - linear: {out_features: 10}
"""


def test_option_error_carries_its_option_and_reads_as_before():
    with pytest.raises(OptionError) as e:
        check_int("kernel_size", "3")
    assert (e.value.option, e.value.reason) == ("kernel_size", "must be an integer, got '3'")
    assert str(e.value) == "kernel_size must be an integer, got '3'" and isinstance(e.value, ValueError)
    with pytest.raises(OptionError) as e:
        check_float("betas[0]", 1.5, 0.0, 1.0, high_open=True)
    assert e.value.option == "betas" and e.value.detail == "betas[0] must be < 1.0, got 1.5"


def test_registry_is_a_read_only_mapping_with_aliases_and_hints():
    reg = Registry("widget", supplied=("params",))

    @reg.register("knob", "dial")
    class Knob:
        def __init__(self, params, turns: int, *, soft: bool = False, **extra):
            pass

    assert Knob.type_name == "knob" and dict(reg) == {"knob": Knob} and "dial" not in reg
    assert reg.get(" Dial ") is Knob and dict(reg.aliases) == {"dial": "knob"}
    assert list(reg.options(Knob)) == ["turns", "soft"] and reg.required(Knob) == ["turns"]
    with pytest.raises(KeyError, match=r"unknown widget 'knb'\. Did you mean 'knob'\? Choose one of knob\."):
        reg.get("knb")
    for taken in ("knob", "dial"):
        with pytest.raises(ValueError, match="registered twice"):
            reg.register("other", taken)(type("Other", (), {}))
    with pytest.raises(TypeError):
        reg["x"] = Knob        # read-only


def test_one_options_rule_for_every_registry():
    assert list(LAYERS.options(Conv2d))[:3] == ["out_channels", "kernel_size", "stride"]   # no in_channels, rng
    assert "rng" not in LAYERS.options(LAYERS["dropout"])
    assert list(OPTIMIZERS.options(OPTIMIZERS["sgd"])) == ["lr", "momentum", "dampening", "nesterov",
                                                           "weight_decay", "exclude_bias_and_norm"]
    assert list(SCHEDULES.options(SCHEDULES["step"])) == ["step_size", "gamma", "interval",
                                                         "warmup_epochs", "warmup_steps"]   # **common: the base's
    assert list(SCHEDULES.options(SCHEDULES["constant"])) == ["warmup_epochs", "warmup_steps"]
    assert list(INITIALIZERS) == ["he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "torch_default",
                                  "lecun_uniform", "lecun_normal"]
    assert all(INITIALIZERS.options(f) == {} for f in INITIALIZERS.values())
    with pytest.raises(KeyError, match="unknown layer 'rleu'. Did you mean 'relu'. Run 'cnncli layers'"):
        LAYERS.get("rleu")


def test_init_option_is_checked_through_the_initializer_registry(write_config):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(CFG.replace("kernel_size: 3}", "kernel_size: 3, init: he_normall}")))
    assert [p.path for p in e.value.problems] == ["model.layers[0].init"]
    assert "must be one of he_normal, he_uniform" in str(e.value) and "Did you mean 'he_normal'?" in str(e.value)


def test_layer_capabilities_not_names():
    assert LAYERS["batchnorm"].normalizes_over_batch and LAYERS["batchnorm"].is_normalization
    others = [cls for name, cls in LAYERS.items() if name != "batchnorm"]
    assert not any(c.normalizes_over_batch or c.is_normalization for c in others)


def test_an_option_error_is_located_by_its_option_not_by_its_text(write_config, monkeypatch):
    """The key path comes from ``OptionError.option``: a message that does not start with the
    option's name is still put at that option."""
    def refuse(self, in_features, out_features, bias=True, init="torch_default", *, rng=None, dtype=np.float32):
        raise OptionError("bias", "is not allowed here")
    monkeypatch.setattr(LAYERS["linear"], "__init__", refuse)
    with pytest.raises(ConfigError) as e:
        C.load(write_config(CFG.replace("out_features: 10}", "out_features: 10, bias: false}")))
    assert [(p.path, p.line) for p in e.value.problems] == [("model.layers[3].bias", 7)]
    assert "model.layers[3].bias: bias is not allowed here (linear)" not in str(e.value)
    assert "model.layers[3].bias: is not allowed here (linear)" in str(e.value)


def test_optimizer_and_schedule_blocks_report_every_bad_value(write_config):
    text = CFG + "train:\n  optimizer: {type: sgd, lr: -1, momentum: -2}\n  schedule: {type: step, step_size: 0, gamma: 0}\n"
    with pytest.raises(ConfigError) as e:
        C.load(write_config(text))
    assert [p.path for p in e.value.problems] == ["train.optimizer.lr", "train.optimizer.momentum",
                                                  "train.schedule.step_size", "train.schedule.gamma"]


def _count_conv_calls(monkeypatch) -> list[int]:
    calls = []
    original = Conv2d.__init__

    @functools.wraps(original)           # keeps the signature: the options stay the same
    def counting(self, *args, **kwargs):
        calls.append(1)
        original(self, *args, **kwargs)
    monkeypatch.setattr(Conv2d, "__init__", counting)
    return calls


def test_build_of_a_validated_config_calls_each_constructor_once(write_config, monkeypatch):
    calls = _count_conv_calls(monkeypatch)
    cfg = C.load(write_config(CFG))
    assert len(calls) == 1                      # validation: one dry run (no weights allocated)
    calls.clear()
    model = build(list(cfg.model.layers), (1, 28, 28))
    assert len(calls) == 1 and model.layers[0].params["weight"].shape == (4, 1, 3, 3)
    calls.clear()
    build([LayerSpec("conv2d", {"out_channels": 2, "kernel_size": 3}, "model.layers[0]")], (1, 5, 5))
    assert len(calls) == 1                      # specs not from a config: names checked, one constructor call


def test_shape_errors_of_the_real_build_are_still_located(write_config):
    cfg = C.load(write_config(CFG.replace("kernel_size: 3}", "kernel_size: 3, groups: 3}")))
    with pytest.raises(ConfigError) as e:
        build(list(cfg.model.layers), (1, 28, 28))
    assert [(p.path, p.line) for p in e.value.problems] == [("model.layers[0]", 4)]
    assert "(conv2d) in_channels (1) and out_channels (4) must both be divisible by groups (3)" in str(e.value)


def test_validate_data_checks_a_data_section_alone():
    data = C.validate_data({"name": "mnist", "val_split": 0.2})
    assert isinstance(data, C.DataConfig) and data.name == "mnist" and data.val_split == 0.2
    with pytest.raises(ConfigError) as e:
        C.validate_data({"path": "x", "val_split": 1.5, "mean": 33.0}, "command line")
    assert [p.path for p in e.value.problems] == ["data.val_split", "data.mean"]
    assert "data.val_split: must be < 1.0, got 1.5" in str(e.value)


def test_defaults_have_one_source():
    cfg = C.validate({"data": {"path": "x"}, "model": {"layers": ["flatten"]}})
    assert cfg.train == C.TrainConfig() and cfg.data == C.DataConfig(path="x")
