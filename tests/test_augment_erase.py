"""Random erasing (augment.erase_boxes, erase_batch, Augment erase): hand-computed boxes,
the rectangle's area and aspect ratio within torchvision's RandomErasing defaults, the
erasing probability, determinism, and the draws of older configs unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from cnncli import config as C
from cnncli.augment import ERASE_RATIO, ERASE_SCALE, Augment, erase_batch, erase_boxes
from cnncli.errors import ConfigError


def test_erase_batch_by_hand():
    x = np.full((2, 2, 4, 5), 9, np.uint8)
    boxes = np.array([[1, 2, 2, 3], [0, 0, 0, 0]])           # image 0: rows 1-2, columns 2-4
    out = erase_batch(x, boxes)
    expect = x.copy()
    expect[0, :, 1:3, 2:5] = 0
    assert np.array_equal(out, expect) and out.dtype == np.uint8
    assert x.min() == 9                                       # the input is not modified


def test_each_box_fits_and_has_the_drawn_area_and_ratio():
    H, W = 28, 28
    boxes = erase_boxes(np.random.default_rng(3), 2000, H, W, p=1.0)
    top, left, h, w = boxes.T
    assert (h > 0).all() and (w > 0).all()                   # with p = 1 every image is erased
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all()
    # h*w is area*r**0 up to rounding of each side by at most 0.5: bounds of the area's range
    lo = (np.sqrt(ERASE_SCALE[0] * H * W * ERASE_RATIO[0]) - 0.5) * (np.sqrt(ERASE_SCALE[0] * H * W / ERASE_RATIO[1]) - 0.5)
    assert (h * w >= np.floor(lo)).all() and (h * w <= ERASE_SCALE[1] * H * W * 1.2).all()
    ratio = h / w
    assert ratio.min() >= 0.2 and ratio.max() <= 5.0          # 0.3-3.3 up to rounding of small sides
    # the draws cover the range: tall and wide boxes, small and large, every corner position
    assert ratio.min() < 0.5 and ratio.max() > 2.0 and (h * w).min() < 30 and (h * w).max() > 200
    assert top.min() == 0 and left.min() == 0 and (top + h).max() == H and (left + w).max() == W


def test_erasing_probability():
    n, p = 8000, 0.3
    boxes = erase_boxes(np.random.default_rng(0), n, 28, 28, p)
    share = (boxes[:, 2] > 0).mean()
    # binomial: sd = sqrt(p(1-p)/n) = 0.0051; a try that never fits in 10 is rarer than 1e-6
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert (erase_boxes(np.random.default_rng(0), 100, 28, 28, 0.0)[:, 2] == 0).all()


def test_augment_erases_one_rectangle_per_image_with_zeros():
    x = np.full((64, 1, 28, 28), 200, np.uint8)
    out = Augment(erase=1.0, rng=np.random.default_rng(1))(x)
    boxes = erase_boxes(np.random.default_rng(1), 64, 28, 28, 1.0)
    for img, (top, left, h, w) in zip(out[:, 0], boxes):
        zeros = np.argwhere(img == 0)
        assert len(zeros) == h * w
        assert zeros[:, 0].min() == top and zeros[:, 0].max() == top + h - 1
        assert zeros[:, 1].min() == left and zeros[:, 1].max() == left + w - 1


def test_seeded_and_old_draws_kept():
    x = np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28), dtype=np.uint8)
    a = Augment(translate=2, hflip=True, erase=0.5, rng=np.random.default_rng(5))(x)
    b = Augment(translate=2, hflip=True, erase=0.5, rng=np.random.default_rng(5))(x)
    assert np.array_equal(a, b)
    old = Augment(translate=2, hflip=True, rng=np.random.default_rng(5))
    mine = Augment(translate=2, hflip=True, erase=0.0, rng=np.random.default_rng(5))
    assert np.array_equal(old(x), mine(x)) and old.rng.bit_generator.state == mine.rng.bit_generator.state
    # erasing comes after the flips: the erased batch equals the flipped one outside the boxes
    flipped = Augment(translate=2, hflip=True, rng=np.random.default_rng(5))(x)
    differ = (a != flipped).any(axis=(1, 2, 3))
    assert 0 < differ.sum() < 16 and (a[a != flipped] == 0).all()


def test_config_key_is_checked():
    base = {"data": {"path": "data/mnist"}, "model": {"layers": ["flatten"]}}
    ok = C.validate({**base, "data": {"path": "data/mnist", "augment": {"erase": 0.5}}})
    assert ok.data.augment.erase == 0.5
    for bad in (-0.1, 1.5, "half"):
        with pytest.raises(ConfigError) as info:
            C.validate({**base, "data": {"path": "data/mnist", "augment": {"erase": bad}}})
        assert "data.augment.erase" in str(info.value)


@pytest.mark.parametrize("aug", ["{erase: 0.5}", "{rotate: 10}", "{zoom: 0.1}", "{hflip: true}"])
def test_augmenting_inputs_that_are_not_images_is_refused(aug, tmp_path):
    from cnncli.assemble import check_augment
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{path: data/mnist, augment: {aug}}}\nmodel: {{layers: [flatten]}}\n")
    cfg = C.load(path)
    check_augment(cfg, (1, 28, 28))                           # images: fine
    with pytest.raises(ConfigError) as info:
        check_augment(cfg, (784,))
    assert "data.augment" in str(info.value) and "needs images" in str(info.value)
