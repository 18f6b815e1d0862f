"""Config loading and validation: every problem located by key path and YAML line."""

from __future__ import annotations

import pytest

from cnncli import config as C
from cnncli.errors import ConfigError
from cnncli.assemble import build_model

GOOD = """\
data:
  path: data/mnist
model:
  layers:
    - conv2d: {out_channels: 4, kernel_size: 3}
    - relu
    - flatten
    - linear: {out_features: 10}
train:
  optimizer: {type: adam, lr: 1e-3}
"""


def problems(exc: ConfigError) -> list[tuple[str, int | None]]:
    return [(p.path, p.line) for p in exc.problems]


def test_good_config_resolves_defaults(write_config):
    cfg = C.load(write_config(GOOD))
    assert cfg.train.optimizer.type == "adam"
    assert cfg.train.optimizer.options == {"lr": 0.001}   # YAML 1.2 float, not the string '1e-3'
    assert cfg.train.epochs == 10 and cfg.train.batch_size == 128
    assert [s.type for s in cfg.model.layers] == ["conv2d", "relu", "flatten", "linear"]
    assert cfg.model.layers[0].line == 5
    assert cfg.output.dir == "runs/config"


def test_round_trip_through_dict(write_config):
    cfg = C.load(write_config(GOOD))
    again = C.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_default_monitors_without_validation_split_round_trip(write_config):
    """Found by the fuzz test: with data.val_split 0 the default checkpoint monitor was
    written out as val_accuracy, which validation then refuses as given explicitly."""
    cfg = C.load(write_config(GOOD), ["data.val_split=0", "train.early_stopping={}"])
    assert cfg.train.checkpoint.monitor == "train_accuracy"
    assert cfg.train.early_stopping.monitor == "train_loss"
    assert C.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_unknown_layer_type_names_path_line_and_hint(write_config):
    path = write_config(GOOD.replace("- relu", "- rleu"))
    with pytest.raises(ConfigError) as e:
        C.load(path)
    assert problems(e.value) == [("model.layers[1]", 6)]
    msg = str(e.value)
    assert f"{path}:6 model.layers[1]" in msg and "Did you mean 'relu'?" in msg


def test_missing_required_option(write_config):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD.replace("out_channels: 4, ", "")))
    assert problems(e.value) == [("model.layers[0]", 5)]
    assert "needs the option 'out_channels'" in str(e.value)


def test_unknown_option_with_hint(write_config):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD.replace("kernel_size: 3", "kernal_size: 3")))
    assert ("model.layers[0].kernal_size", 5) in problems(e.value)
    assert "Did you mean 'kernel_size'?" in str(e.value)


def test_all_problems_reported_at_once(write_config):
    text = GOOD.replace("- relu", "- rleu").replace("data:", "data:\n  val_splt: 0.2") \
               .replace("type: adam", "type: adma") + "trian: {}\n"
    with pytest.raises(ConfigError) as e:
        C.load(write_config(text))
    paths = [p for p, _ in problems(e.value)]
    assert set(paths) == {"data.val_splt", "model.layers[1]", "train.optimizer.type", "trian"}
    lines = [line for _, line in problems(e.value)]
    assert lines == sorted(lines)


@pytest.mark.parametrize("key,value,path", [
    ("epochs", "0", "train.epochs"),
    ("epochs", "two", "train.epochs"),
    ("batch_size", "-1", "train.batch_size"),
    ("seed", "1.5", "train.seed"),
    ("label_smoothing", "1.5", "train.label_smoothing"),
])
def test_bad_train_values(write_config, key, value, path):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD + f"  {key}: {value}\n"))
    assert problems(e.value) == [(path, 11)]


def test_bad_val_split_and_optimizer_value(write_config):
    text = GOOD.replace("path: data/mnist", "path: data/mnist\n  val_split: 1.5").replace("lr: 1e-3", "lr: -1")
    with pytest.raises(ConfigError) as e:
        C.load(write_config(text))
    assert problems(e.value) == [("data.val_split", 3), ("train.optimizer.lr", 11)]


def test_yaml_syntax_error_has_line_and_column(write_config):
    path = write_config("data:\n  path: [data\nmodel: {}\n")
    with pytest.raises(ConfigError) as e:
        C.load(path)
    assert "YAML syntax error, column" in str(e.value)
    assert e.value.problems[0].line == 3


def test_duplicate_key_refused(write_config):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD + "train:\n  epochs: 2\n"))
    assert "duplicate key 'train'" in str(e.value)


def test_missing_file_and_empty_file(tmp_path, write_config):
    with pytest.raises(ConfigError, match="config file not found"):
        C.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="a config is a mapping"):
        C.load(write_config(""))


def test_layer_forms(write_config):
    text = GOOD.replace("- relu", "- {type: leaky_relu, negative_slope: 0.2}").replace("- flatten", "- flatten:")
    cfg = C.load(write_config(text))
    assert cfg.model.layers[1].options == {"negative_slope": 0.2}
    assert cfg.model.layers[2].options == {}


def test_overrides(write_config):
    cfg = C.load(write_config(GOOD), ["train.epochs=3", "model.layers[0].conv2d.out_channels=8",
                                      "train.optimizer.lr=0.5"])
    assert cfg.train.epochs == 3
    assert cfg.model.layers[0].options["out_channels"] == 8
    assert cfg.train.optimizer.options["lr"] == 0.5
    with pytest.raises(ConfigError, match="train.epochs"):
        C.load(write_config(GOOD), ["train.epochs=0"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        C.load(write_config(GOOD), ["train.epochs"])


def test_lr_override_on_optimizer_given_by_name(write_config):
    cfg = C.load(write_config(GOOD.replace("{type: adam, lr: 1e-3}", "sgd")), ["train.optimizer.lr=0.1"])
    assert cfg.train.optimizer.type == "sgd" and cfg.train.optimizer.options == {"lr": 0.1}


def test_geometry_refused_at_build_with_path(write_config):
    text = GOOD.replace("kernel_size: 3}", "kernel_size: 30}")
    cfg = C.load(write_config(text))
    with pytest.raises(ConfigError) as e:
        build_model(cfg, (1, 28, 28))
    assert problems(e.value) == [("model.layers[0]", 5)]
    assert "larger than the padded input" in str(e.value)


def test_output_width_must_cover_classes(write_config):
    cfg = C.load(write_config(GOOD.replace("out_features: 10", "out_features: 5")))
    with pytest.raises(ConfigError, match="5 outputs but the data has 10 classes"):
        build_model(cfg, (1, 28, 28), num_classes=10)


def test_input_shape_must_match_data(write_config):
    cfg = C.load(write_config(GOOD.replace("model:", "model:\n  input_shape: [3, 32, 32]")))
    with pytest.raises(ConfigError, match="model.input_shape"):
        build_model(cfg, (1, 28, 28))


def test_shipped_configs_are_valid():
    from pathlib import Path

    paths = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        cfg = C.load(path)
        model = build_model(cfg, (1, 28, 28), num_classes=10)
        assert model.output_shape == (10,), path


def test_overrides_reach_shorthand_layers_and_optimizers(write_config):
    text = GOOD.replace("- relu", "- batchnorm").replace("{type: adam, lr: 1e-3}", "sgd")
    cfg = C.load(write_config(text), ["model.layers[1].batchnorm.eps=0.001",
                                      "train.optimizer=adam", "train.optimizer.lr=0.01"])
    assert cfg.model.layers[1].options == {"eps": 0.001}
    assert cfg.train.optimizer.type == "adam" and cfg.train.optimizer.options == {"lr": 0.01}


def test_overrides_take_the_layer_option_paths_that_errors_print(write_config):
    """``model.layers[i].OPTION`` (as in "model.layers[0].kernal_size: unknown option")
    reaches the layer's options without its type name; a bare layer takes options too."""
    text = GOOD.replace("- relu", "- batchnorm")
    cfg = C.load(write_config(text), ["model.layers[0].out_channels=7", "model.layers[1].eps=0.001"])
    assert cfg.model.layers[0].options["out_channels"] == 7 and cfg.model.layers[0].type == "conv2d"
    assert cfg.model.layers[1].type == "batchnorm" and cfg.model.layers[1].options == {"eps": 0.001}
    with pytest.raises(ConfigError) as e:
        C.load(write_config(text), ["model.layers[0].out_channel=7"])
    msg = str(e.value)
    assert "model.layers[0].out_channel" in msg and "Did you mean 'out_channels'" in msg and "--set" in msg


@pytest.mark.parametrize("item", ["train..epochs=2", "model.layers[0]conv2d.out_channels=2",
                                  "model.layers[]=relu", "=3", " .x=1"])
def test_malformed_override_paths_are_refused(write_config, item):
    with pytest.raises(ConfigError, match="is not a key path"):
        C.load(write_config(GOOD), [item])


def test_a_bad_override_value_is_blamed_on_the_override(write_config):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD + "  epochs: 3\n"), ["train.epochs=0"])
    (p,) = e.value.problems
    assert p.path == "train.epochs" and p.line is None and "(set by --set)" in p.message


def test_a_bad_layer_option_override_is_blamed_on_the_override(write_config):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD), ["model.layers[0].conv2d.stride=0"])
    assert [(p.path, p.line) for p in e.value.problems] == [("model.layers[0].stride", None)]
    assert "(set by --set)" in str(e.value)


def test_a_non_mapping_file_is_reported_even_with_overrides(write_config):
    path = write_config("- a\n- b\n")
    for overrides in ([], ["train.epochs=2"]):
        with pytest.raises(ConfigError, match="this file has a list"):
            C.load(path, overrides)


@pytest.mark.parametrize("sets, where, fragment", [
    (["data.mean=33.3"], "data.mean", "divide it by 255"),
    (["data.std=[0.3, 78.6, 0.3]"], "data.std", "divide it by 255"),
    (["model.layers[3]={linear: 10}"], "model.layers[3]", "a mapping like {out_features: ...}, got 10"),
    (["model.layers[0].conv2d.padding_mode=reflect"], "model.layers[0].padding_mode",
     "pads with zeros only"),
])
def test_messages_for_common_slips_say_what_to_write(write_config, sets, where, fragment):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD), sets)
    msg = " ".join(str(e.value).split())
    assert where in msg and fragment in msg, msg


def test_a_trial_run_inside_the_cosine_warmup_loads(write_config):
    """The README's first look, ``cnncli train CONFIG --epochs 1``, on a cosine config with a
    warmup: the run ends inside the warmup (as ``schedules.Cosine`` and torch's SequentialLR
    allow), it is not refused (the config used to refuse warmup_epochs >= epochs)."""
    cfg = C.load(write_config(GOOD + "  schedule: {type: cosine, warmup_epochs: 2}\n"), ["train.epochs=1"])
    assert cfg.train.epochs == 1
    assert cfg.train.schedule == C.ScheduleConfig("cosine", {"warmup_epochs": 2})


def test_cosine_eta_min_above_the_lr_is_located_at_eta_min(write_config):
    with pytest.raises(ConfigError) as e:
        C.load(write_config(GOOD + "  schedule: {type: cosine, eta_min: 0.5}\n"))
    assert problems(e.value) == [("train.schedule.eta_min", 11)]
    assert "is 0.5, above train.optimizer.lr 0.001: the lr would rise instead of anneal" in str(e.value)
