"""Readers of every dataset form (cnncli.formats) on real MNIST slices written by the tests.

Each slice of the shipped MNIST is converted into IDX (plain, gzip), NPZ (Keras layout),
CSV (with and without header) and PNG class folders, then read back through the data
section of a config; the arrays must come back exactly. Channels-last (C=3) files, image
sizes other than 28x28, detection, and every way a file can be broken are covered too.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
from dataforms import (
    csv_text,
    idx_bytes,
    write_csv,
    write_idx,
    write_npz,
    write_png_folders,
)

from cnncli import config as C
from cnncli import formats
from cnncli.datasets import load_split
from cnncli.errors import CnncliError, DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gray():
    """96 training and 32 test images of the real MNIST, (N, 1, 28, 28) uint8, labels int64."""
    train, test = load_split(REPO / "data" / "mnist", "train", 96), load_split(REPO / "data" / "mnist", "test", 32)
    return {"train": (train.images.copy(), train.labels.copy()), "test": (test.images.copy(), test.labels.copy())}


def to_rgb32(x: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) -> (N, 3, 32, 32): padded by 2, channels digit / inverse / transposed digit."""
    p = np.pad(x[:, 0], ((0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.stack([p, 255 - p, p.transpose(0, 2, 1)], axis=1))


@pytest.fixture(scope="module")
def rgb(gray):
    """The same slice as 32x32 RGB: a colour dataset whose images are not 28x28."""
    return {s: (to_rgb32(x), y) for s, (x, y) in gray.items()}


def data_cfg(**data):
    return C.validate({"data": data, "model": {"layers": ["flatten"]}}, "test").data


def load(**data) -> formats.Loaded:
    return formats.load(data_cfg(**data))


def assert_same(loaded: formats.Loaded, splits: dict) -> None:
    for name, ds in (("train", loaded.train), ("test", loaded.test)):
        x, y = splits[name]
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
        assert ds.images.shape == x.shape
        np.testing.assert_array_equal(ds.images, x)
        np.testing.assert_array_equal(ds.labels, y)


def write(form: str, root: Path, splits: dict) -> tuple[Path, dict]:
    """Write ``splits`` in ``form``; return (data.path, extra data keys)."""
    c, h, w = splits["train"][0].shape[1:]
    if form == "idx-gz":
        return write_idx(root / "d", splits), {}
    if form == "idx-plain":
        return write_idx(root / "d", splits, gz=False), {}
    if form == "npz":
        return write_npz(root / "d.npz", splits), {}
    if form in ("csv-header", "csv-no-header"):
        extra = {"image_shape": [c, h, w]} if c > 1 else {}
        return write_csv(root / "d", splits, header=form == "csv-header"), extra
    if form == "png":
        pytest.importorskip("PIL")
        return write_png_folders(root / "d", splits), {}
    raise AssertionError(form)


FORMS = {"idx-gz": "idx", "idx-plain": "idx", "npz": "npz", "csv-header": "csv", "csv-no-header": "csv",
         "png": "folder"}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", ["gray28", "rgb32"])
def test_every_form_round_trips_exactly(tmp_path, gray, rgb, form, kind):
    splits = gray if kind == "gray28" else rgb
    path, extra = write(form, tmp_path, splits)
    assert formats.detect_format(path) == FORMS[form]
    loaded = load(path=str(path), **extra)
    assert loaded.format == FORMS[form]
    assert_same(loaded, splits)
    if form == "png":
        assert loaded.classes == tuple(str(i) for i in range(10))


def test_channels_last_files_become_nchw(tmp_path, rgb):
    x, y = rgb["train"]
    np.savez(tmp_path / "nhwc.npz", x_train=x.transpose(0, 2, 3, 1), y_train=y)
    np.savez(tmp_path / "nchw.npz", x_train=x, y_train=y)          # PyTorch's order is recognized too
    for name in ("nhwc.npz", "nchw.npz"):
        ds = formats.read_npz(tmp_path / name, "train")
        assert ds.images.shape == (len(x), 3, 32, 32) and ds.images.flags.c_contiguous
        np.testing.assert_array_equal(ds.images, x)
    idx4 = tmp_path / "train-images-idx4-ubyte"
    idx4.write_bytes(idx_bytes(x.transpose(0, 2, 3, 1)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y))
    loaded = load(train=str(idx4))                                  # the labels file is found beside it
    np.testing.assert_array_equal(loaded.train.images, x)
    assert loaded.test is None


def test_explicit_splits_in_different_forms(tmp_path, gray):
    write_csv(tmp_path / "csv", {"train": gray["train"]}, names={"train": "train.csv"})
    write_npz(tmp_path / "t.npz", {"test": gray["test"]}, keys={"x_test": "images", "y_test": "labels"})
    idx = write_idx(tmp_path / "idx", gray, gz=False)
    loaded = load(train=str(tmp_path / "csv" / "train.csv"), test=str(tmp_path / "t.npz"),
                  npz_keys={"x_test": "images", "y_test": "labels"})
    assert_same(loaded, gray)
    pair = load(train=[str(idx / "train-images-idx3-ubyte"), str(idx / "train-labels-idx1-ubyte")],
                test=str(idx))
    assert_same(pair, gray)
    assert pair.resolved["train"] == [str(idx / "train-images-idx3-ubyte"), str(idx / "train-labels-idx1-ubyte")]


def test_named_dataset_is_found_under_the_data_root(tmp_path, gray, monkeypatch):
    write_idx(tmp_path / "root" / "fashion-mnist", gray)
    loaded = load(name="fashion-mnist", root=str(tmp_path / "root"))
    assert_same(loaded, gray)
    assert loaded.classes[0] == "T-shirt/top" and loaded.resolved["root"] == str((tmp_path / "root").resolve())
    monkeypatch.setenv("CNNCLI_DATA_DIR", str(tmp_path / "root"))
    assert_same(load(name="fashion-mnist"), gray)
    monkeypatch.delenv("CNNCLI_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="cnncli data download kmnist"):
        load(name="kmnist")


def test_npz_variants(tmp_path, gray):
    x, y = gray["train"]
    flat = tmp_path / "flat.npz"
    np.savez(flat, x_train=x.reshape(len(x), -1), y_train=np.eye(10, dtype=np.float32)[y])   # one-hot labels
    ds = formats.read_npz(flat, "train")
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, y)
    floats = tmp_path / "floats.npz"
    np.savez(floats, x_train=x[:, 0].astype(np.float64), y_train=y.astype(np.float64), x_test=x[:, 0], y_test=y)
    np.testing.assert_array_equal(formats.read_npz(floats, "train").images, x)
    only_train = tmp_path / "train-only.npz"
    np.savez(only_train, x_train=x[:, 0], y_train=y)
    loaded = load(path=str(only_train))
    assert loaded.test is None and len(loaded.train) == len(x)


def test_csv_details(tmp_path, gray):
    x, y = gray["train"]
    small = x[:, :, 4:24, 4:24].copy()                                   # 20x20: inferred as a square
    path = tmp_path / "small.csv"
    path.write_text(csv_text(small, y, header=True).replace("\n", "\n\n", 3))   # blank lines are skipped
    ds = formats.read_csv(path)
    assert ds.image_shape == (1, 20, 20)
    np.testing.assert_array_equal(ds.images, small)
    gz = tmp_path / "small.csv.gz"
    gz.write_bytes(gzip.compress(csv_text(small, y, header=False).encode()))
    np.testing.assert_array_equal(formats.read_csv(gz).images, small)
    assert formats.detect_format(gz) == "csv"
    rect = tmp_path / "rect.csv"
    rect.write_text(csv_text(x[:, :, :, :21], y, header=False))          # 28x21: needs image_shape
    with pytest.raises(DataError, match=r"not a square image; set data.image_shape"):
        formats.read_csv(rect)
    np.testing.assert_array_equal(formats.read_csv(rect, (28, 21)).images, x[:, :, :, :21])
    assert len(formats.read_csv(path, limit=5)) == 5


def test_image_folders_details(tmp_path, gray):
    pytest.importorskip("PIL")
    from PIL import Image

    x, y = gray["train"]
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    root = write_png_folders(tmp_path / "named", {"train": (x, y), "test": gray["test"]}, classes=names)
    (root / "train" / "five" / ".DS_Store").write_bytes(b"\0junk")            # hidden files are skipped
    (root / "README.txt").write_text("not a class")
    loaded = load(path=str(root), classes=names)                              # the order of data.classes
    assert loaded.classes == tuple(names)
    np.testing.assert_array_equal(loaded.train.labels, y)
    np.testing.assert_array_equal(loaded.train.images, x)
    by_name = load(path=str(root))                                             # sorted folder names
    assert by_name.classes == tuple(sorted(names))
    np.testing.assert_array_equal(by_name.train.labels, [sorted(names).index(names[v]) for v in y])
    mixed = tmp_path / "mixed" / "train"
    for c in ("a", "b"):
        (mixed / c).mkdir(parents=True)
    Image.fromarray(x[0, 0]).save(mixed / "a" / "1.png")                          # grey ...
    Image.fromarray(np.stack([x[1, 0]] * 3, -1)).convert("RGB").save(mixed / "b" / "2.png")  # ... and colour
    ds = load(path=str(tmp_path / "mixed")).train
    assert ds.images.shape == (2, 3, 28, 28)
    np.testing.assert_array_equal(ds.images[0], np.stack([x[0, 0]] * 3))


def test_detection_errors(tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((2, 28, 28), np.uint8))
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(200, 256)) * 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("hello")
    for path, needle in ((npy, "single .npy array"), (png, "a single image"), (junk, "cannot tell the format"),
                         (empty, "no dataset found"), (tmp_path / "missing", "dataset folder not found")):
        with pytest.raises(DataError, match=needle) as info:
            formats.detect_format(path)
        assert str(path) in str(info.value)
    with pytest.raises(DataError, match="Did you mean 'mnist'"):
        load(path="mnsit")


# ------------------------------------------------------------------ broken files

def raises(match: str, fn, *args, where: str | Path | None = None, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, CnncliError)
    if where is not None:
        assert str(where) in str(info.value), str(info.value)
    return str(info.value)


def test_bad_npz_files(tmp_path, gray):
    x, y = gray["train"]
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x[:10, 0], y_train=y[:9])
    raises("10 images but 9 labels", formats.read_npz, path, "train", where=path)
    np.savez(path, images=x[:, 0], labels=y)
    raises("no array 'x_train'.*images, labels.*npz_keys", formats.read_npz, path, "train", where=path)
    np.savez(path, x_train=x[:, 0] / 255.0, y_train=y)
    raises(r"scaled to \[0, 1\].*astype\('uint8'\)", formats.read_npz, path, "train", where=path)
    np.savez(path, x_train=x[:, 0].astype(np.int16) * 2, y_train=y)
    raises("0..255", formats.read_npz, path, "train", where=path)
    np.savez(path, x_train=x[:, 0], y_train=-y - 1)
    raises("the label at index 0 is -6", formats.read_npz, path, "train", where=path)
    np.savez(path, x_train=np.array([x[0, 0], "a"], dtype=object), y_train=y[:2])
    raises("pickled", formats.read_npz, path, "train", where=path)
    np.savez(path, x_train=x[:, 0], y_train=y)
    path.write_bytes(path.read_bytes()[:-200])
    raises("not a readable .npz", formats.read_npz, path, "train", where=path)
    path.write_bytes(b"x_train,y_train\n1,2\n")
    raises("not an .npz archive", load, path=str(path), format="npz", where=path)


def test_bad_csv_files(tmp_path, gray):
    x, y = gray["train"]
    good = csv_text(x[:6], y[:6], header=True).splitlines()
    cases = [
        ("ragged", good[:3] + [good[3].rsplit(",", 2)[0]] + good[4:], r":4: 783 values, but the first row has 785"),
        ("not a number", good[:2] + [good[2].replace(",0,", ",x,", 1)] + good[3:], r":3: column \d+ \(pixel \d+\) is 'x'"),
        ("pixel above 255", good[:5] + [good[5].replace(",0,", ",300,", 1)] + good[6:], r":6: pixel \d+ is 300"),
        ("fractional pixel", good[:2] + [good[2].replace(",0,", ",0.5,", 1)] + good[3:], r":3: pixel \d+ is 0.5"),
        ("negative label", good[:4] + ["-1" + good[4][1:]] + good[5:], r":5: the label is -1"),
        ("header only", good[:1], "no data rows after the header"),
        ("empty", [""], "the file is empty"),
        ("no labels", [",".join(r.split(",")[1:]) for r in good[1:]] , "without labels"),
        ("blank line before the error", good[:2] + ["", "  "] + [good[2].replace(",0,", ",300,", 1)] + good[3:],
         r":5: pixel \d+ is 300"),
    ]
    for name, lines, match in cases:
        path = tmp_path / f"{name.replace(' ', '-')}.csv"
        path.write_text("\n".join(lines) + "\n")
        raises(match, formats.read_csv, path, where=path)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("label,pixel\u00e9\n".encode("latin-1") + b"1,2\n")
    raises("not a text file", formats.read_csv, latin, where=latin)
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress("\n".join(good).encode())[:-30])
    raises("may be truncated", formats.read_csv, truncated, where=truncated)


def test_label_out_of_range_names_the_csv_line(tmp_path, gray, write_config):
    from cnncli.data import prepare_data

    x, y = gray["train"]
    text = csv_text(x[:20], y[:20], header=True).splitlines()
    text[7] = "12" + text[7][text[7].index(","):]
    (tmp_path / "train.csv").write_text("\n".join(text) + "\n")
    cfg = C.load(write_config(f"data: {{path: {tmp_path / 'train.csv'}, num_classes: 10, val_split: 0}}\n"
                              "model: {layers: [flatten, {linear: {out_features: 10}}]}\n"))
    raises(r"train.csv:8: label 12 is outside \[0, 10\)", prepare_data, cfg)


def test_bad_image_folders(tmp_path, gray, monkeypatch):
    pytest.importorskip("PIL")
    from PIL import Image

    x, y = gray["train"]
    root = write_png_folders(tmp_path / "d", {"train": (x[:12], y[:12])})
    stray = root / "train" / "3" / "notes.txt"
    stray.write_text("a note")
    raises("not an image Pillow can read.*move or remove", load, path=str(root), where=stray)
    stray.unlink()
    big = root / "train" / "3" / "99.png"
    Image.fromarray(np.zeros((30, 28), np.uint8)).save(big)
    raises("28x30.*all images of a dataset must have one size", load, path=str(root), where=big)
    big.unlink()
    cut = root / "train" / "5" / "0.png"
    cut.write_bytes(cut.read_bytes()[:40])
    raises("not an image Pillow can read", load, path=str(root), where=cut)
    Image.fromarray(x[0, 0]).save(cut)
    (root / "train" / "4" / "nested").mkdir()
    raises("a folder inside the class folder", load, path=str(root), where=root / "train" / "4" / "nested")
    (root / "train" / "4" / "nested").rmdir()
    Image.fromarray(np.zeros((28, 28), np.float32)).save(root / "train" / "4" / "deep.tif")
    raises(r"a float image \(Pillow mode F\).*Save it as 8-bit", load, path=str(root), where=root / "train" / "4" / "deep.tif")
    (root / "train" / "4" / "deep.tif").unlink()
    (root / "test" / "ten").mkdir(parents=True)
    Image.fromarray(x[0, 0]).save(root / "test" / "ten" / "0.png")
    raises("class folder 'ten' is not one of the classes", load, path=str(root), where=root / "test")
    empty = tmp_path / "empty" / "train" / "a"
    empty.mkdir(parents=True)
    raises("hold no images", load, path=str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "PIL", None)                  # as if the images extra were not installed
    raises(r"needs Pillow.*pip install 'cnncli\[images\]'", load, path=str(root / "train" / ".." / "train"))


def test_pixel_stats_are_exact(gray):
    x = gray["train"][0]
    mean, std = formats.pixel_stats(np.concatenate([x, 255 - x], axis=1))
    v = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, [v.mean(), 1 - v.mean()], rtol=1e-12)
    np.testing.assert_allclose(std, [v.std(), v.std()], rtol=1e-10)
    info = formats.describe(load_split(REPO / "data" / "mnist", "test", 50), 10)
    assert info["n"] == 50 and sum(info["class_counts"]) == 50 and len(info["class_counts"]) == 10


def test_a_location_given_with_set_replaces_the_files(write_config):
    from cnncli.errors import ConfigError

    path = write_config("data: {name: mnist, root: /somewhere, val_split: 0}\nmodel: {layers: [flatten]}\n")
    cfg = C.load(path, ["data.path=elsewhere"])
    assert (cfg.data.path, cfg.data.name, cfg.data.root, cfg.data.val_split) == ("elsewhere", None, None, 0)
    cfg = C.load(path, ["data.train=a.csv", "data.test=b.csv"])
    assert (cfg.data.train, cfg.data.test, cfg.data.name) == ("a.csv", "b.csv", None)
    both = write_config("data: {name: mnist, path: x}\nmodel: {layers: [flatten]}\n", "both.yaml")
    with pytest.raises(ConfigError, match=r"both.yaml:1 data.path: give only one of data.name and data.path"):
        C.load(both)


# ------------------------------------------------------------------ property: any bytes, a dataset or a DataError

def _mutations():
    from hypothesis import strategies as st

    base_csv = csv_text(np.arange(8 * 4, dtype=np.uint8).reshape(8, 1, 2, 2) * 7, np.arange(8) % 3, True).encode()
    buf = __import__("io").BytesIO()
    np.savez(buf, x_train=np.zeros((3, 2, 2), np.uint8), y_train=np.array([0, 1, 2]))
    base_npz = buf.getvalue()

    @st.composite
    def mutated(draw):
        blob = bytearray(draw(st.sampled_from([base_csv, base_npz, gzip.compress(base_csv)])))
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.sampled_from(["cut", "flip", "insert"]))
            if op == "cut" and blob:
                del blob[draw(st.integers(0, len(blob) - 1)):]
            elif op == "flip" and blob:
                blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
            else:
                blob[draw(st.integers(0, len(blob))):0] = draw(st.sampled_from([b",", b"\n", b"-1", b"x", b"300", b"\0"]))
        return bytes(blob)

    return st.one_of(mutated(), st.binary(max_size=200))


def test_any_bytes_give_a_dataset_or_a_data_error(tmp_path):
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(blob=_mutations())
    def check(blob):
        path = tmp_path / "data.bin"
        path.write_bytes(blob)
        try:
            loaded = load(path=str(path))
        except DataError as e:
            assert str(path) in str(e)
            return
        ds = loaded.train
        assert ds.images.dtype == np.uint8 and ds.images.ndim == 4 and len(ds) == len(ds.labels) > 0
        assert ds.labels.dtype == np.int64 and ds.labels.min() >= 0

    check()


def test_an_interrupted_download_is_reported_as_such(tmp_path):
    (tmp_path / "kmnist").mkdir()
    (tmp_path / "kmnist" / "train-images-idx3-ubyte.gz.part").write_bytes(b"\x1f\x8b")
    raises(f"incomplete.*interrupted download.*cnncli data download kmnist --to {tmp_path}", load,
           name="kmnist", root=str(tmp_path))


def test_csv_with_bytes_that_are_not_utf8_after_the_header_is_a_data_error(tmp_path):
    """Found by the any-bytes property test: a UnicodeDecodeError is a ValueError, which the
    reader once took for "try another dtype", then re-raised while locating the bad line."""
    path = tmp_path / "data.csv"
    path.write_bytes(b"label,pixel0,pixel1,pixel2,pixel3\n\xc2")
    with pytest.raises(DataError, match=r"data.csv:2: not UTF-8 text"):
        load(path=str(path))
