"""One image file, two paths: the image-folder dataset reader (training) and ``read_images``
(``cnncli predict``) must read the same file to the same uint8 pixels, or refuse it with the
same message.

High-bit-depth greyscale (Pillow modes ``I;16``, ``I;16B``, ``I``) is scaled to 8 bits as
``round(v * 255 / 65535)``; the expected values below are computed by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnncli import formats
from cnncli.errors import DataError
from cnncli.images import read_images

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402 - after the skip: Pillow is an optional extra

#: 16-bit values and round(v * 255 / 65535) = round(v / 257), worked out by hand:
#: 1000 / 257 = 3.89 -> 4; 128 / 257 = 0.498 -> 0; 32768 / 257 = 127.502 -> 128;
#: 65280 / 257 = 254.0 -> 254; 300 / 257 = 1.167 -> 1.
WIDE = np.array([[0, 257, 1000, 65535], [128, 32768, 65280, 300]], np.uint16)
EIGHT = np.array([[0, 1, 4, 255], [0, 128, 254, 1]], np.uint8)


def save_16bit_png(path: Path) -> Path:
    Image.fromarray(WIDE).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"                    # the mode the test is about
    return path


def save_16bit_big_endian_tiff(path: Path) -> Path:
    Image.frombytes("I;16B", WIDE.shape[::-1], WIDE.astype(">u2").tobytes()).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16B"
    return path


def save_32bit_tiff(path: Path, values: np.ndarray = WIDE) -> Path:
    Image.fromarray(values.astype(np.int32)).save(path)
    with Image.open(path) as im:
        assert im.mode == "I"
    return path


def in_class_folder(root: Path, write, name: str) -> Path:
    """root/a/NAME written by ``write``: a one-class image-folder dataset."""
    (root / "a").mkdir(parents=True)
    return write(root / "a" / name)


@pytest.mark.parametrize("write,name", [(save_16bit_png, "0.png"), (save_16bit_big_endian_tiff, "0.tif"),
                                        (save_32bit_tiff, "0.tif")], ids=["I;16 png", "I;16B tiff", "I tiff"])
def test_a_high_bit_depth_image_reads_the_same_in_training_and_predict(tmp_path, write, name):
    path = in_class_folder(tmp_path / "d", write, name)
    ds, classes = formats.read_folder(tmp_path / "d")
    predicted = read_images(path)
    assert classes == ("a",)
    assert ds.images.dtype == predicted.dtype == np.uint8
    np.testing.assert_array_equal(ds.images, EIGHT[None, None])
    np.testing.assert_array_equal(predicted, EIGHT[None, None])


def test_a_16bit_image_for_an_rgb_model_is_grey_in_every_channel(tmp_path):
    """predict for a 3-channel model; training broadcasts a grey image among colour ones the same way."""
    root = tmp_path / "d"
    path = in_class_folder(root, save_16bit_png, "0.png")
    (root / "b").mkdir()
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(root / "b" / "1.png")
    ds, _ = formats.read_folder(root)
    predicted = read_images(path, channels=3)
    np.testing.assert_array_equal(predicted, np.broadcast_to(EIGHT, (1, 3, 2, 4)))
    np.testing.assert_array_equal(ds.images[:1], predicted)


def refusal(fn, *args) -> str:
    with pytest.raises(DataError) as e:
        fn(*args)
    return str(e.value)


@pytest.mark.parametrize("case", ["float", "beyond 16 bits"])
def test_an_image_that_cannot_be_read_faithfully_is_refused_alike(tmp_path, case):
    root = tmp_path / "d"
    if case == "float":
        path = in_class_folder(root, lambda p: Image.fromarray(WIDE.astype(np.float32) / 7).save(p) or p, "0.tif")
        match = r"0\.tif: a float image \(Pillow mode F\).*Save it as"
    else:
        path = in_class_folder(root, lambda p: save_32bit_tiff(p, WIDE.astype(np.int32) * 2), "0.tif")
        match = r"0\.tif: a 32-bit integer image \(Pillow mode I\) with values 0\.\.131070.*0\.\.65535"
    in_training = refusal(formats.read_folder, root)
    in_predict = refusal(read_images, path)
    assert in_training == in_predict
    assert str(path) in in_predict
    with pytest.raises(DataError, match=match):
        read_images(path)
