"""Keras (and PyTorch) habits get the cnncli spelling in a located message, exit 2; a model
ending in softmax or log_softmax is refused with the fix."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cnncli import config as C
from cnncli.cli import app
from cnncli.errors import ConfigError

HEAD = "data: {path: data/mnist}\nmodel:\n  layers:\n"


def problems_of(text, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        C.load(path)
    return {p.path: p for p in info.value.problems}


@pytest.mark.parametrize("layer,path,words", [
    ("- dense: {units: 10}", "model.layers[1].units", "'units' is Keras's name (Dense(units)); cnncli calls it "
                                                      "'out_features'."),
    ("- conv2d: {filters: 8, kernel_size: 3}", "model.layers[1].filters", "cnncli calls it 'out_channels'"),
    ("- maxpool2d: {pool_size: 2}", "model.layers[1].pool_size", "cnncli calls it 'kernel_size'"),
    ("- dropout: {rate: 0.5}", "model.layers[1].rate", "cnncli calls it 'p'"),
    ("- conv2d: {out_channels: 8, kernel_size: 3, activation: relu}", "model.layers[1].activation",
     "add the activation as the next layer, e.g. '- relu' after this one"),
    ("- linear: {out_features: 10, input_shape: [28, 28, 1]}", "model.layers[1].input_shape",
     "model.input_shape"),
])
def test_each_keras_option_gets_the_cnncli_name_at_its_line(tmp_path, layer, path, words):
    found = problems_of(HEAD + "    - flatten\n    " + layer + "\n    - linear: {out_features: 10}\n", tmp_path)
    assert path in found, found
    assert words in found[path].message
    assert found[path].line == 5
    assert "Did you mean" not in found[path].message            # not 'init' for units, 'dilation' for activation
    # the hint is the fix: no second problem saying the renamed option is missing
    assert [p for p in found if p.startswith("model.layers[1]")] == [path]


def test_channels_last_input_shape_says_channels_first(tmp_path):
    found = problems_of("data: {path: data/mnist}\nmodel:\n  input_shape: [28, 28, 1]\n  layers:\n"
                        "    - conv2d: {out_channels: 4, kernel_size: 5}\n    - flatten\n"
                        "    - linear: {out_features: 10}\n", tmp_path)
    p = found["model.input_shape"]
    assert "channels-last" in p.message and "write [1, 28, 28]" in p.message and p.line == 3
    assert set(found) == {"model.input_shape"}
    assert C.validate({"data": {"path": "x"}, "model": {"input_shape": [1, 28, 28], "layers": ["flatten"]}})
    assert C.validate({"data": {"path": "x"}, "model": {"input_shape": [3, 32, 32], "layers": ["flatten"]}})


@pytest.mark.parametrize("last", ["softmax", "log_softmax", "logsoftmax", "{softmax: {dim: 1}}"])
def test_a_final_softmax_is_refused_with_the_fix(tmp_path, last):
    found = problems_of(HEAD + "    - flatten\n    - linear: {out_features: 10}\n    - " + last + "\n", tmp_path)
    p = found["model.layers[2]"]
    assert "output must be logits" in p.message and "Remove this last layer" in p.message and p.line == 6


def test_softmax_inside_the_model_is_allowed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(HEAD + "    - flatten\n    - softmax\n    - linear: {out_features: 10}\n")
    assert [s.type for s in C.load(path).model.layers] == ["flatten", "softmax", "linear"]


def test_cli_exit_2_one_located_message(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text(HEAD + "    - flatten\n    - dense: {units: 10, activation: softmax}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    out = result.output
    assert f"{path}:5 model.layers[1].units" in out and "'out_features'" in out
    assert f"{path}:5 model.layers[1].activation" in out and "Traceback" not in out
