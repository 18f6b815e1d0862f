"""lecun_uniform (= Caffe's xavier filler, alias xavier_caffe) and lecun_normal against their
closed forms: bounds, variance 1 / fan_in, zero bias; through a layer's ``init`` option."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnncli.layers import LAYERS
from cnncli.layers.init import INITIALIZERS, initialize


def test_lecun_uniform_bounds_and_variance():
    fan_in = 75                                        # e.g. conv 3 -> ?, 5x5 kernel
    w, b = initialize("lecun_uniform", np.random.default_rng(0), (400, 3, 5, 5), fan_in, 400 * 25, np.float64, (400,))
    bound = math.sqrt(3 / fan_in)                      # Caffe: scale = sqrt(3 / n)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.var() == pytest.approx(1 / fan_in, rel=0.02)      # 30,000 draws: sd of the estimate ~0.5 %
    assert np.array_equal(b, np.zeros(400))


def test_xavier_caffe_is_lecun_uniform():
    assert INITIALIZERS.get("xavier_caffe") is INITIALIZERS["lecun_uniform"]
    a = initialize("xavier_caffe", np.random.default_rng(1), (20, 50), 20, 50, np.float32, (50,))
    b = initialize("lecun_uniform", np.random.default_rng(1), (20, 50), 20, 50, np.float32, (50,))
    assert np.array_equal(a[0], b[0]) and a[0].dtype == np.float32


def test_lecun_normal_truncated_with_variance_one_over_fan_in():
    fan_in = 50
    w, b = initialize("lecun_normal", np.random.default_rng(2), (fan_in, 2000), fan_in, 2000, np.float64, (2000,))
    s = math.sqrt(1 / fan_in) / 0.87962566103423978
    assert np.abs(w).max() <= 2 * s                    # truncated at two standard deviations
    assert np.abs(w).max() > 1.95 * s
    assert w.var() == pytest.approx(1 / fan_in, rel=0.02)      # 100,000 draws
    assert abs(w.mean()) < 0.002 and np.array_equal(b, np.zeros(2000))


@pytest.mark.parametrize("init", ["xavier_caffe", "lecun_normal"])
def test_a_layer_takes_the_new_names(init):
    conv = LAYERS["conv2d"](in_channels=2, out_channels=4, kernel_size=3, init=init, rng=np.random.default_rng(0))
    assert conv.params["weight"].shape == (4, 2, 3, 3) and not conv.params["bias"].any()
    assert np.abs(conv.params["weight"]).max() <= 2 * math.sqrt(1 / 18) / 0.87962566103423978
