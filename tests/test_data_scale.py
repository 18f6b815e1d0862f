"""data.scale: Caffe's plain pixel multiplier through the one normalization table."""

from __future__ import annotations

import numpy as np
import pytest

from cnncli import config as C
from cnncli.data import pixel_lut
from cnncli.errors import ConfigError

LAYERS = {"layers": ["flatten", {"linear": {"out_features": 10}}]}


def cfg(**data):
    return C.validate({"data": {"path": "data/mnist", **data}, "model": LAYERS})


def test_caffe_scale_is_pixel_times_scale():
    lut = pixel_lut(0.0, 1.0, np.float64, scale=0.00390625)
    assert np.array_equal(lut, np.arange(256) / 256.0)                 # Caffe's 1/256, exactly
    lut = pixel_lut(0.5, 0.25, np.float64, scale=0.01)
    assert lut[200] == pytest.approx((200 * 0.01 - 0.5) / 0.25, rel=1e-15)
    assert np.array_equal(pixel_lut(0.1307, 0.3081), pixel_lut(0.1307, 0.3081, scale=None))
    assert pixel_lut(0.0, 1.0, np.float64)[255] == 1.0                 # no scale: v / 255


def test_scale_needs_explicit_mean_and_std():
    with pytest.raises(ConfigError) as info:
        cfg(scale=0.00390625)
    (p,) = info.value.problems
    assert p.path == "data.scale" and "mean: 0, std: 1" in p.message and "cancel the scale" in p.message
    c = cfg(scale=0.00390625, mean=0, std=1)
    assert c.data.scale == 0.00390625
    assert C.from_dict(c.to_dict()).data == c.data                     # as a checkpoint stores it


def test_the_0_255_refusal_stays_for_mean_and_std():
    with pytest.raises(ConfigError, match="for a value in 0-255 units divide it by 255"):
        cfg(mean=33.3, std=78.6)
    with pytest.raises(ConfigError) as info:
        cfg(std=1.0039)                    # the Caffe attempt: say it with data.scale instead
    assert info.value.problems[0].path == "data.std"
    for bad in (0, -1, 2, "x"):
        with pytest.raises(ConfigError) as info:
            cfg(scale=bad, mean=0, std=1)
        assert info.value.problems[0].path == "data.scale"


def test_a_training_run_reads_scaled_pixels(write_config, mnist_slice, tmp_path):
    from cnncli.data import prepare_data
    from cnncli.evaluation import stored_lut

    c = C.validate({"data": {"path": str(mnist_slice), "scale": 0.00390625, "mean": 0, "std": 1, "val_split": 0},
                    "model": LAYERS})
    assert prepare_data(c).std == 1.0
    lut = stored_lut(None, c)
    assert lut.dtype == np.float32 and np.array_equal(lut, (np.arange(256) / 256).astype(np.float32))
