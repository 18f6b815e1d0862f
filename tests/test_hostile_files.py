"""Hostile and malformed data files (issue 15): devices, FIFOs, compressed bombs, declared sizes
far beyond the data, non-.npy members, huge numbers, and the lies the readers used to tell.

Each input must end with a DataError / CheckpointError (exit 2) naming the path, within seconds
and bounded memory. Cases that could hang or exhaust memory on a broken reader run in a child
process with a timeout and an address-space limit, so a regression fails instead of hanging.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import threading
import tracemalloc
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cnncli import checkpoint, files, formats
from cnncli.catalog import RemoteFile
from cnncli.datasets import load_images, load_labels, load_pair, read_idx
from cnncli.download import DownloadError, fetch
from cnncli.errors import CheckpointError, DataError
from cnncli.images import read_images
from cnncli.losses import softmax_cross_entropy

REPO = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


def peak_bytes(fn, *args, **kwargs):
    """(result or exception, peak bytes traced by tracemalloc while ``fn`` ran)."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - returned for the test to check
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ devices, FIFOs, folders

READERS = {   # name: python expression reading PATH in a child process
    "idx": "datasets.read_idx(PATH)",
    "npz": "formats.read_npz(PATH, 'train')",
    "csv": "formats.read_csv(PATH)",
    "detect": "formats.detect_format(PATH)",
    "predict": "images.read_images(PATH)",
    "predict-npy": "images.read_images(PATH + '.npy')",
    "pillow": "images.read_image_file(PATH)",
    "checkpoint": "checkpoint.load(PATH)",
}

CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from cnncli import checkpoint, datasets, formats, images
from cnncli.errors import CnncliError
PATH = sys.argv[1]
try:
    {expr}
except CnncliError as e:
    print(type(e).__name__, "|", e)
    sys.exit(2)
print("no error")
"""


def run_child(expr: str, path: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD.format(expr=expr), path], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def specials(tmp_path_factory):
    folder = tmp_path_factory.mktemp("specials")
    fifo = folder / "pipe"
    os.mkfifo(fifo)
    os.mkfifo(folder / "pipe.npy")
    (folder / "zero").symlink_to("/dev/zero")
    (folder / "zero.npy").symlink_to("/dev/zero")
    return folder


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("special", ["pipe", "zero"])
def test_a_fifo_or_a_device_is_refused_by_every_reader(specials, reader, special):
    if reader == "pillow":
        pytest.importorskip("PIL")
    path = specials / special
    result = run_child(READERS[reader], str(path))          # a hang raises TimeoutExpired: a failure
    assert result.returncode == 2, result.stdout + result.stderr
    kind = "named pipe (FIFO)" if special == "pipe" else "character device"
    assert "Error |" in result.stdout and str(path) in result.stdout and kind in result.stdout


def test_a_checkpoint_that_is_a_folder_or_device_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        checkpoint.load(tmp_path)
    with pytest.raises(CheckpointError, match="character device"):
        checkpoint.load("/dev/null")


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_the_cli_refuses_a_fifo_and_a_device_within_seconds(specials):
    for name in ("pipe", "zero"):
        result = subprocess.run([sys.executable, "-m", "cnncli", "data", "info", str(specials / name)],
                                capture_output=True, text=True, timeout=30, preexec_fn=_limit_memory,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 2 and "not a regular file" in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


def test_a_file_beyond_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 8, 8), np.uint8)))
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    with pytest.raises(DataError, match=r"more than the 100 bytes cnncli reads"):
        read_idx(path)


# ------------------------------------------------------------------ gzip IDX bombs

def _gzip_zeros(header: bytes, n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)            # wbits 31: a gzip stream
    out = [c.compress(header)]
    block = bytes(1 << 20)
    for _ in range(n >> 20):
        out.append(c.compress(block))
    out.append(c.flush())
    return b"".join(out)


def test_a_gzip_idx_bomb_is_read_only_as_far_as_its_header_declares(tmp_path):
    """Declares 10,000 x 28 x 28 (7.8 MB) but inflates to 96 MB: never held in memory."""
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (10000, 28, 28))
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    path.write_bytes(_gzip_zeros(header, 96 << 20))
    assert path.stat().st_size < 200_000
    err, peak = peak_bytes(read_idx, path)
    assert isinstance(err, DataError) and str(path) in str(err)
    assert "decompression bomb" in str(err)
    assert peak < 24 << 20, f"peak {peak:,} bytes"            # 7.8 MB declared (+ a chunk), not 96 MB


def test_a_gzip_idx_declaring_absurd_sizes_is_refused_before_unpacking(tmp_path):
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2**31, 28, 28))
    path = tmp_path / "absurd-images-idx3-ubyte.gz"
    path.write_bytes(_gzip_zeros(header, 8 << 20))
    err, peak = peak_bytes(read_idx, path)
    assert isinstance(err, DataError) and "cannot hold that much real data" in str(err)
    assert "(2147483648, 28, 28)" in str(err) and peak < 4 << 20


def test_a_gzip_file_with_a_few_extra_bytes_still_counts_them(tmp_path):
    a = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(a) + b"\0" * 5))
    with pytest.raises(DataError, match="5 extra bytes"):
        read_idx(path)
    path.write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(read_idx(path), a)


def test_a_gzip_csv_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "INFLATE_SLACK", 1000)
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"1,0,0,0,0\n" * 100_000))
    with pytest.raises(DataError, match="decompression bomb"):
        formats.read_csv(path, image_shape=[2, 2])


def test_a_csv_line_without_end_is_refused_before_it_is_held(tmp_path, monkeypatch):
    from cnncli.formats import csv_text

    monkeypatch.setattr(csv_text, "MAX_LINE", 1000)
    path = tmp_path / "one-line.csv"
    path.write_text("1," + "0," * 5000 + "0")
    with pytest.raises(DataError, match=r"one-line.csv:1: a line longer than 1,000 characters"):
        formats.read_csv(path)


# ------------------------------------------------------------------ NPZ datasets

def _npz(path: Path, compress: bool = False, **arrays) -> Path:
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def test_npz_with_a_limit_reads_only_the_rows_it_needs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20000, 28, 28), dtype=np.uint8)            # 15.7 MB
    path = _npz(tmp_path / "d.npz", x_train=x, y_train=np.arange(20000) % 10)
    ds, peak = peak_bytes(formats.read_npz, path, "train", limit=512)
    assert not isinstance(ds, Exception), ds
    assert len(ds) == 512 and np.array_equal(ds.images[:, 0], x[:512])
    assert peak < 2 << 20, f"peak {peak:,} bytes"


def test_an_npz_zip_bomb_is_refused_from_its_declared_sizes(tmp_path, monkeypatch):
    path = _npz(tmp_path / "bomb.npz", compress=True, x_train=np.zeros((20000, 28, 28), np.uint8),
                y_train=np.zeros(20000, np.uint8))
    monkeypatch.setattr(files, "INFLATE_SLACK", 0)          # the 16 MiB slack aside, this is 1000:1
    err, peak = peak_bytes(formats.read_npz, path, "train", limit=512)
    assert isinstance(err, DataError) and "decompression bomb" in str(err) and "(x_train)" in str(err)
    assert peak < 1 << 20


def test_an_npz_member_that_is_not_npy_is_a_data_error(tmp_path):
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", _npy_bytes(np.zeros((2, 4, 4), np.uint8)))
        z.writestr("y_train", b"not an array")
    with pytest.raises(DataError, match="'y_train' is not a .npy array"):
        formats.read_npz(path, "train")


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _lying_npy(shape: tuple, dtype: str = "<f4", data: bytes = b"\0" * 16) -> bytes:
    """A .npy file whose header declares ``shape`` over ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_an_npz_member_declaring_more_than_it_holds_is_refused_unread(tmp_path):
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x_train.npy", _lying_npy((2**20, 28, 28), "|u1"))
        z.writestr("y_train.npy", _npy_bytes(np.zeros(4, np.uint8)))
    err, peak = peak_bytes(formats.read_npz, path, "train")
    assert isinstance(err, DataError) and "truncated" in str(err) and "(x_train)" in str(err)
    assert peak < 1 << 20


# ------------------------------------------------------------------ checkpoints

def _tiny_checkpoint(path: Path, **extra) -> dict:
    arrays = {"param/0.weight": np.ones((4, 3), np.float32), "param/0.bias": np.zeros(3, np.float32),
              "config": np.array("{}"), "meta": np.array('{"format_version": 1}'), **extra}
    np.savez(path, **arrays)
    return arrays


def test_a_checkpoint_member_that_is_not_npy_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "ck.npz"
    _tiny_checkpoint(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("param/1.weight", b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"'param/1.weight' is not a .npy array"):
        checkpoint.load(path)


def test_checkpoint_headers_are_checked_before_any_array_is_loaded(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    _tiny_checkpoint(path)
    assert checkpoint.load(path).params["0.weight"].shape == (4, 3)
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 100)   # 48 + 12 bytes of weights, 92 of JSON text
    calls = []
    monkeypatch.setattr(files, "_fill", lambda *a: calls.append(a))
    with pytest.raises(CheckpointError, match=r"declare 152 bytes in all, more than the 100 "):
        checkpoint.load(path)
    assert not calls                                                        # not one array was read


def test_a_checkpoint_zip_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("param/0.weight.npy", _npy_bytes(np.zeros((4096, 4096), np.float32)))    # 64 MB of zeros
        z.writestr("config.npy", _npy_bytes(np.array("{}")))
        z.writestr("meta.npy", _npy_bytes(np.array('{"format_version": 1}')))
    assert path.stat().st_size < 200_000
    err, peak = peak_bytes(checkpoint.load, path)
    assert isinstance(err, CheckpointError) and "decompression bomb" in str(err), err
    assert peak < 8 << 20, f"peak {peak:,} bytes"


def test_a_checkpoint_array_of_the_wrong_dtype_is_refused_from_its_header(tmp_path):
    """The header alone decides: this member declares 4 GiB of text over 16 bytes."""
    path = tmp_path / "ck.npz"
    _tiny_checkpoint(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("param/1.weight.npy", _lying_npy((2**28,), "<U1"))
    err, peak = peak_bytes(checkpoint.load, path)
    assert isinstance(err, CheckpointError) and "'param/1.weight' holds <U1 values" in str(err), err
    assert peak < 1 << 20


# ------------------------------------------------------------------ downloads

class Forever(BaseHTTPRequestHandler):
    """Streams zeros without a Content-Length (up to ``server.cap`` bytes, to bound a broken client)."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        if self.server.announce:
            self.send_header("Content-Length", str(self.server.cap))
        self.end_headers()
        block = bytes(1 << 16)
        try:
            for _ in range(self.server.cap >> 16):
                self.wfile.write(block)
        except OSError:
            pass


@pytest.mark.parametrize("announce", [False, True], ids=["streams", "announces"])
def test_a_download_stops_at_the_catalog_size(tmp_path, announce):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Forever)
    srv.daemon_threads, srv.cap, srv.announce = True, 64 << 20, announce
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        data = b"x" * 100_000
        remote = RemoteFile("f.bin", len(data), hashlib.sha256(data).hexdigest())
        dest = tmp_path / "f.bin"
        with pytest.raises(DownloadError, match=r"f.bin is 100,000 bytes \(the catalog's size"):
            fetch(f"http://127.0.0.1:{srv.server_address[1]}/f.bin", dest, remote, timeout=10)
        assert not dest.exists() and not (tmp_path / "f.bin.part").exists()
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------ tracebacks that became messages

def test_a_csv_label_beyond_any_class_index_is_a_data_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,0,0,0,0\n99999999999999999999,0,0,0,0\n")
    with pytest.raises(DataError, match=r"d.csv:2: the label is 1(0{20}), too large for a class index"):
        formats.read_csv(path)


def test_a_plain_pgm_pixel_of_5000_digits_is_a_data_error(tmp_path):
    path = tmp_path / "long.pgm"
    path.write_bytes(b"P2\n2 1\n255\n1 " + b"7" * 5000 + b"\n")
    with pytest.raises(DataError, match="has 5,000 digits"):
        read_images(path)
    path.write_bytes(b"P2\n2 1\n255\n1 x1\n")
    with pytest.raises(DataError, match="b'x1' is not a number"):
        read_images(path)


# ------------------------------------------------------------------ lies that became the truth

def test_a_p5_pgm_pixel_above_maxval_is_refused_with_where(tmp_path):
    path = tmp_path / "one.pgm"
    path.write_bytes(b"P5\n3 2\n1\n" + bytes([0, 1, 1, 1, 7, 0]))
    with pytest.raises(DataError, match=r"row 1, column 1 \(0-based\) is 7, above the header's maxval 1"):
        read_images(path)
    path.write_bytes(b"P5\n3 2\n1\n" + bytes([0, 1, 1, 1, 1, 0]))
    assert read_images(path).max() == 255


def test_a_bad_label_names_the_labels_file_and_its_index(tmp_path):
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    images.write_bytes(idx_bytes(np.zeros((5, 2, 2), np.uint8)))
    labels.write_bytes(idx_bytes(np.array([1, 2, 3, 70000, 1], ">i4"), code=0x0C))
    ds = load_pair(images, labels)
    with pytest.raises(DataError) as e:
        formats.check_label_range(ds)
    assert str(e.value).startswith(f"{labels} (sample 3): label 70000")


@pytest.mark.parametrize("kind,load,magic", [("images", load_images, 2051), ("labels", load_labels, 2049)])
def test_an_idx_header_in_the_wrong_byte_order_says_the_magic_expected(tmp_path, kind, load, magic):
    a = np.zeros((2, 3, 3), np.uint8) if kind == "images" else np.zeros(2, np.uint8)
    good = idx_bytes(a)
    swapped = good[3::-1] + b"".join(good[i:i + 4][::-1] for i in range(4, 4 + 4 * a.ndim, 4)) + a.tobytes()
    path = tmp_path / f"x-{kind}"
    path.write_bytes(swapped)
    with pytest.raises(DataError) as e:
        load(path)
    message = str(e.value)
    assert f"expected {magic} (00 00 08 0{a.ndim})" in message
    assert f"found {int.from_bytes(swapped[:4], 'big')} ('0{a.ndim} 08 00 00')" in message
    assert "big-endian" in message


def test_the_loss_refuses_labels_outside_the_classes():
    logits = np.zeros((3, 10))
    for bad, i in ((-1, 1), (10, 2)):
        labels = np.array([0, 5, 9])
        labels[i] = bad
        with pytest.raises(ValueError, match=rf"labels\[{i}\] is {bad}, outside \[0, 10\)"):
            softmax_cross_entropy(logits, labels)
    loss, grad = softmax_cross_entropy(logits, np.array([0, 5, 9]))
    assert loss == pytest.approx(np.log(10)) and grad.shape == (3, 10)
