"""Random rotation and scaling (augment.affine_batch, Augment rotate/zoom): closed-form cases,
determinism, and the draws of older configs unchanged."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cnncli import config as C
from cnncli.augment import Augment, affine_batch
from cnncli.errors import ConfigError


def images(n=3, c=2, h=9, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def test_angle_0_factor_1_is_the_identity():
    x = images(h=7, w=11)
    assert np.array_equal(affine_batch(x, np.zeros(3), np.ones(3)), x)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quarter_turns_are_rot90(k):
    x = images()
    out = affine_batch(x, np.full(3, 90.0 * k), np.ones(3))
    assert np.array_equal(out, np.rot90(x, k, axes=(2, 3)))
    assert out.dtype == np.uint8


def test_zoom_by_hand():
    x = np.zeros((1, 1, 5, 5), np.uint8)
    x[0, 0, 2, 3] = 200                                   # one pixel, one right of the centre (2, 2)
    big = affine_batch(x, np.zeros(1), np.full(1, 2.0))[0, 0]
    # output (i, j) reads input (2 + (i-2)/2, 2 + (j-2)/2): j = 4 reads column 3 exactly, j = 3 reads 2.5
    assert big[2, 4] == 200 and big[2, 3] == 100 and big[2, 2] == 0
    small = affine_batch(x, np.zeros(1), np.full(1, 0.5))[0, 0]
    # output (2, 2 + d) reads column 2 + 2d: the pixel lands half-way to the centre, out of range reads 0
    assert small[2, 2] == 0 and small[2, 2:].tolist() == [0, 0, 0] and small.sum() == 0
    x[0, 0, 2, 4] = 100                                   # column 4 maps to output 3
    assert affine_batch(x, np.zeros(1), np.full(1, 0.5))[0, 0, 2, 3] == 100


def test_each_image_gets_its_own_transform():
    x = images(n=2, c=1)
    out = affine_batch(x, np.array([90.0, 0.0]), np.ones(2))
    assert np.array_equal(out[0], np.rot90(x[0], 1, axes=(1, 2))) and np.array_equal(out[1], x[1])


def test_seeded_and_deterministic_and_old_draws_kept():
    x = images(n=8, c=1, h=28, w=28)
    a = Augment(translate=2, rotate=10, zoom=0.1, rng=np.random.default_rng(5))(x)
    b = Augment(translate=2, rotate=10, zoom=0.1, rng=np.random.default_rng(5))(x)
    assert np.array_equal(a, b) and not np.array_equal(a, x)
    # without rotate/zoom the generator is used exactly as before they existed
    old = Augment(translate=2, rng=np.random.default_rng(5))
    mine = Augment(translate=2, rotate=0.0, zoom=0.0, rng=np.random.default_rng(5))
    assert np.array_equal(old(x), mine(x)) and old.rng.bit_generator.state == mine.rng.bit_generator.state


def test_bounded_cost_for_a_batch():
    x = images(n=256, c=1, h=28, w=28)
    start = time.process_time()
    Augment(rotate=15, zoom=0.15, rng=np.random.default_rng(0))(x)
    assert time.process_time() - start < 2.0          # a few tens of ms: vectorized, no per-image loop


def test_config_keys_are_checked():
    base = {"data": {"path": "data/mnist"}, "model": {"layers": ["flatten"]}}
    ok = C.validate({**base, "data": {"path": "data/mnist", "augment": {"rotate": 10, "zoom": 0.1}}})
    assert ok.data.augment.rotate == 10 and ok.data.augment.zoom == 0.1
    for key, bad in (("rotate", -5), ("rotate", 200), ("zoom", 1.0), ("zoom", "big")):
        with pytest.raises(ConfigError) as info:
            C.validate({**base, "data": {"path": "data/mnist", "augment": {key: bad}}})
        assert info.value.problems[0].path == f"data.augment.{key}"
