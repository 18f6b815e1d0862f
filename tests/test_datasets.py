"""Tests of cnncli.datasets on the MNIST files shipped in data/mnist.

Small real slices are written back to tmp_path as IDX files (plain and gzip)
by ``write_idx`` to check round trips and every way a data file can be broken.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnncli.datasets import (
    Dataset,
    find_split_files,
    load_images,
    load_labels,
    load_split,
    read_idx,
)
from cnncli.errors import CnncliError, DataError

DATA = Path(__file__).resolve().parents[1] / "data" / "mnist"
TRAIN_IMAGES = DATA / "train-images-idx3-ubyte.gz"
TRAIN_LABELS = DATA / "train-labels-idx1-ubyte.gz"

CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
         np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """IDX header (00 00 type ndim, big-endian uint32 dims) + big-endian data."""
    array = np.asarray(array)
    if code is None:
        code = CODES[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False, code: int | None = None,
              cut: int = 0, tail: bytes = b"") -> Path:
    """Write ``array`` as an IDX file; ``cut`` drops trailing bytes, ``tail`` appends some."""
    data = idx_bytes(array, code) + tail
    if cut:
        data = data[:-cut]
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.fixture(scope="module")
def train_slice():
    """The first 64 training images (64, 28, 28) uint8 and labels (64,) uint8, as stored."""
    return read_idx(TRAIN_IMAGES)[:64].copy(), read_idx(TRAIN_LABELS)[:64].copy()


def write_split(folder: Path, images: np.ndarray, labels: np.ndarray, *, split: str = "train",
                compress: bool = True) -> Path:
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if compress else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return folder


def raises_data_error(path, fn, *args, match: str | None = None) -> DataError:
    """Call fn; it must raise DataError (a CnncliError) whose message names ``path``."""
    with pytest.raises(DataError, match=match) as info:
        fn(*args)
    assert isinstance(info.value, CnncliError)
    assert str(path) in str(info.value)
    return info.value


# --- the shipped MNIST files -------------------------------------------------------------

def test_full_mnist_counts_shapes_and_dtypes():
    train = load_split(DATA, "train")
    test = load_split(DATA, "test")
    assert (len(train), len(test)) == (60000, 10000)
    for ds in (train, test):
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
        assert ds.images.shape[1:] == (1, 28, 28) and ds.image_shape == (1, 28, 28)
        assert ds.labels.shape == (len(ds),)
        assert ds.images.max() == 255 and ds.images.min() == 0
        assert ds.num_classes == 10 and set(np.unique(ds.labels)) == set(range(10))
    assert train.source.endswith("train-images-idx3-ubyte.gz")


def test_first_labels_are_the_known_ones():
    assert load_labels(TRAIN_LABELS)[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert load_labels(DATA / "t10k-labels-idx1-ubyte.gz")[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_read_idx_returns_the_stored_shape_and_dtype():
    images = read_idx(DATA / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(DATA / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8


def test_limit_keeps_the_first_samples(train_slice):
    images, labels = train_slice
    ds = load_split(DATA, "train", limit=50)
    assert len(ds) == 50 and ds.images.shape == (50, 1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0], images[:50])
    np.testing.assert_array_equal(ds.labels, labels[:50])
    with pytest.raises(ValueError):
        load_split(DATA, "train", limit=0)


# --- round trips on real slices ----------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_round_trip_of_a_real_slice(tmp_path, train_slice, compress):
    images, labels = train_slice
    folder = write_split(tmp_path / "mnist", images, labels, compress=compress)
    ds = load_split(folder, "train")
    assert ds.images.dtype == np.uint8 and ds.images.shape == (64, 1, 28, 28)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (64,)
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    suffix = ".gz" if compress else ""
    np.testing.assert_array_equal(read_idx(folder / f"train-images-idx3-ubyte{suffix}"), images)


def test_gzip_is_detected_by_magic_bytes_not_by_name(tmp_path, train_slice):
    images, _ = train_slice
    gz_without_suffix = write_idx(tmp_path / "images-idx3-ubyte", images, compress=True)
    plain_with_suffix = write_idx(tmp_path / "images-idx3-ubyte.gz", images, compress=False)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), images)
    np.testing.assert_array_equal(read_idx(plain_with_suffix), images)


def test_channels_last_4d_idx_becomes_nchw(tmp_path, train_slice):
    images = train_slice[0][:6]
    nhwc = np.stack([images, 255 - images, images.transpose(0, 2, 1)], axis=-1)  # (6, 28, 28, 3)
    path = write_idx(tmp_path / "train-images-idx4-ubyte.gz", nhwc, compress=True)
    x = load_images(path)
    assert x.shape == (6, 3, 28, 28) and x.dtype == np.uint8 and x.flags.c_contiguous
    np.testing.assert_array_equal(x[:, 0], images)
    np.testing.assert_array_equal(x[:, 1], 255 - images)
    np.testing.assert_array_equal(x[:, 2], images.transpose(0, 2, 1))


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "f4", "f8"])
def test_read_idx_supports_every_idx_type(tmp_path, dtype):
    values = np.array([[0, 1, -2], [3, -4, 5]]).astype(dtype)
    out = read_idx(write_idx(tmp_path / "x.idx", values))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_labels_of_any_integer_type_become_int64(tmp_path, train_slice):
    labels = train_slice[1].astype(np.int16)
    out = load_labels(write_idx(tmp_path / "labels-idx1-ubyte", labels))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, labels)


@pytest.mark.parametrize("images_name,labels_name", [
    ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"),
    ("test-images-idx3-ubyte", "test-labels-idx1-ubyte.gz"),
    ("test-images.idx3-ubyte.gz", "test-labels.idx1-ubyte"),
])
def test_find_split_files_accepts_the_common_names(tmp_path, train_slice, images_name, labels_name):
    images, labels = train_slice
    write_idx(tmp_path / images_name, images[:5], compress=images_name.endswith(".gz"))
    write_idx(tmp_path / labels_name, labels[:5], compress=labels_name.endswith(".gz"))
    assert find_split_files(tmp_path, "test") == (tmp_path / images_name, tmp_path / labels_name)
    assert len(load_split(tmp_path, "test")) == 5


def test_dataset_properties():
    ds = Dataset(np.zeros((3, 2, 4, 5), np.uint8), np.array([0, 6, 2]), source="mem")
    assert len(ds) == 3 and ds.image_shape == (2, 4, 5) and ds.num_classes == 7
    assert Dataset(np.zeros((0, 1, 2, 2), np.uint8), np.zeros(0, np.int64), "mem").num_classes == 0
    with pytest.raises(ValueError):
        Dataset(np.zeros((3, 1, 2, 2), np.uint8), np.zeros(2, np.int64), "mem")


# --- broken files: always a DataError naming the file -----------------------------------

def test_wrong_magic(tmp_path, train_slice):
    path = tmp_path / "bad-magic"
    path.write_bytes(b"\x00\x01" + idx_bytes(train_slice[1])[2:])
    raises_data_error(path, read_idx, path, match="magic")


def test_unsupported_type_code(tmp_path, train_slice):
    path = write_idx(tmp_path / "bad-type", train_slice[1], code=0x0A)
    raises_data_error(path, read_idx, path, match="type code 0x0A")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_truncated_payload(tmp_path, train_slice, compress):
    path = write_idx(tmp_path / "cut", train_slice[0], compress=compress, cut=7)
    err = raises_data_error(path, read_idx, path, match="truncated")
    expected = 64 * 28 * 28
    assert f"{expected} bytes" in str(err) and f"has {expected - 7}" in str(err)


def test_extra_trailing_bytes(tmp_path, train_slice):
    path = write_idx(tmp_path / "extra.gz", train_slice[0], compress=True, tail=b"\x00" * 3)
    raises_data_error(path, read_idx, path, match="3 extra bytes")


def test_truncated_gzip_stream(tmp_path, train_slice):
    full = gzip.compress(idx_bytes(train_slice[0]))
    path = tmp_path / "cut-stream.gz"
    path.write_bytes(full[: len(full) // 2])
    raises_data_error(path, read_idx, path, match="gzip stream is truncated")


def test_corrupt_gzip_stream(tmp_path, train_slice):
    data = bytearray(gzip.compress(idx_bytes(train_slice[0])))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(data))
    raises_data_error(path, read_idx, path)


def test_random_file_that_is_neither_gzip_nor_idx(tmp_path):
    path = tmp_path / "random.bin"
    path.write_bytes(b"\x7f" + np.random.default_rng(0).bytes(1000))
    raises_data_error(path, read_idx, path, match="not an IDX file")


def test_html_page_saved_by_a_failed_download(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
    raises_data_error(path, read_idx, path, match="HTML")


def test_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    raises_data_error(path, read_idx, path, match="empty")


def test_header_problems(tmp_path):
    no_dims = tmp_path / "no-dims"
    no_dims.write_bytes(b"\x00\x00\x08\x00")
    raises_data_error(no_dims, read_idx, no_dims, match="0 dimensions")
    short = tmp_path / "short-header"
    short.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02")
    raises_data_error(short, read_idx, short, match="header is truncated")


def test_missing_file_and_folder_as_file(tmp_path):
    path = tmp_path / "nope-idx3-ubyte.gz"
    raises_data_error(path, read_idx, path, match="file not found")
    raises_data_error(tmp_path, read_idx, tmp_path, match="folder")


def test_missing_folder(tmp_path):
    folder = tmp_path / "no-such-dataset"
    raises_data_error(folder, load_split, folder, "train", match="folder not found")


def test_missing_file_lists_names_and_contents(tmp_path, train_slice):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_slice[0], compress=True)
    (tmp_path / "notes.txt").write_text("hi")
    err = raises_data_error(tmp_path, load_split, tmp_path, "train", match="no train labels file")
    assert "train-labels-idx1-ubyte," in str(err) and "with .gz" in str(err)
    assert "notes.txt" in str(err) and "train-images-idx3-ubyte.gz" in str(err)


def test_image_label_count_mismatch(tmp_path, train_slice):
    images, labels = train_slice
    folder = write_split(tmp_path, images[:10], labels[:9])
    err = raises_data_error(folder / "train-images-idx3-ubyte.gz", load_split, folder, "train")
    assert "train-labels-idx1-ubyte.gz" in str(err) and "10 images" in str(err) and "9 labels" in str(err)


def test_empty_dataset(tmp_path):
    folder = write_split(tmp_path, np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    raises_data_error(folder / "train-images-idx3-ubyte.gz", load_split, folder, "train", match="empty")


def test_images_and_labels_of_the_wrong_kind(tmp_path, train_slice):
    images, labels = train_slice
    floats = write_idx(tmp_path / "float-images", images.astype(np.float32))
    raises_data_error(floats, load_images, floats, match="uint8")
    labels_as_images = write_idx(tmp_path / "labels", labels)
    raises_data_error(labels_as_images, load_images, labels_as_images, match="labels file")
    images_as_labels = write_idx(tmp_path / "images", images)
    raises_data_error(images_as_labels, load_labels, images_as_labels, match="images file")
    zero_width = write_idx(tmp_path / "zero-width", np.zeros((2, 28, 0), np.uint8))
    raises_data_error(zero_width, load_images, zero_width, match="empty dimension")
    negative = write_idx(tmp_path / "negative", np.array([1, -1], np.int8))
    raises_data_error(negative, load_labels, negative, match=">= 0")
    float_labels = write_idx(tmp_path / "float-labels", np.array([1.0, 2.0], np.float32))
    raises_data_error(float_labels, load_labels, float_labels, match="integer")


# --- property: any bytes end in an array or a DataError ---------------------------------

def _read_or_data_error(path: Path):
    try:
        return read_idx(path)
    except DataError as e:
        assert str(path) in str(e)
        return e


PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

idx_like = st.builds(
    lambda code, ndim, dims, body: bytes([0, 0, code, ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in dims[:ndim]) + body,
    st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0xFF]),
    st.integers(0, 5),
    st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 6), min_size=0, max_size=5),
    st.binary(max_size=64),
)


@PROPERTY
@given(data=st.binary(max_size=300) | idx_like, compress=st.booleans())
def test_random_bytes_give_an_array_or_a_data_error(tmp_path, data, compress):
    path = tmp_path / "random"
    path.write_bytes(gzip.compress(data) if compress else data)
    result = _read_or_data_error(path)
    assert isinstance(result, (np.ndarray, DataError))


@PROPERTY
@given(compress=st.booleans(), fraction=st.floats(0, 1), flip=st.booleans())
def test_truncated_or_flipped_real_slice_is_a_data_error(tmp_path, train_slice, compress, fraction, flip):
    blob = idx_bytes(train_slice[0][:8])
    if compress:
        blob = gzip.compress(blob)
    cut = int(fraction * len(blob))
    data = bytearray(blob[:cut])
    if flip and data:
        data[cut // 2] ^= 0x55
    path = tmp_path / "slice"
    path.write_bytes(bytes(data))
    result = _read_or_data_error(path)
    assert isinstance(result, (np.ndarray, DataError))
    if cut < len(blob) and not flip:  # any proper prefix is incomplete
        assert isinstance(result, DataError)



def test_an_idx_folder_and_a_dataset_folder_list_their_contents_alike(tmp_path):
    """The IDX reader once listed a folder its own way (20 names, folders not marked) beside
    the other readers' listing (12 names, folders marked ``/``)."""
    from cnncli import config as C
    from cnncli import formats

    for i in range(14):
        (tmp_path / f"f{i:02d}.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    want = "f00.txt, f01.txt, f02.txt, f03.txt, f04.txt, f05.txt, f06.txt, f07.txt, f08.txt, f09.txt, " \
           "f10.txt, f11.txt, ... (15 entries)"
    with pytest.raises(DataError) as idx:
        find_split_files(tmp_path, "train")
    d = C.validate({"data": {"path": str(tmp_path), "format": "csv"}, "model": {"layers": ["flatten"]}}, "t").data
    with pytest.raises(DataError) as csv:
        formats.load(d)
    assert f"The folder contains: {want}. Download or rename the file." in str(idx.value)
    assert str(csv.value).endswith(f"no CSV file. The folder contains: {want}.")
    for i in range(3):
        (tmp_path / f"f{i:02d}.txt").unlink()         # 12 entries: all listed, the folder marked
    with pytest.raises(DataError, match=r"The folder contains: f03\.txt, .*, f12\.txt, f13\.txt, sub/\. Download"):
        find_split_files(tmp_path, "train")
