"""``cnncli data download`` against a real HTTP server started here on 127.0.0.1 (never the
internet): success, resume of a partial download, a server that ignores Range, checksum
failure (the partial file is deleted), server errors (500, 404), a refused connection, and
EMNIST's zip. The server serves the MNIST files shipped in data/mnist, which were
re-compressed: they pass through the SHA-256 of their unpacked content pinned in the catalog.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import re
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from cnncli import catalog, download
from cnncli.catalog import RemoteFile
from cnncli.cli import app
from cnncli.download import DownloadError

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "data" / "mnist"
runner = CliRunner()


class Handler(BaseHTTPRequestHandler):
    """GET /NAME from ``server.files``, honouring ``Range: bytes=START-`` (206 + Content-Range,
    416 past the end) unless NAME is in ``server.no_range``; ``server.fail[NAME]`` answers that
    status instead; ``server.cut[NAME]`` sends only that many body bytes after announcing all."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:        # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        srv = self.server
        name = unquote(self.path.lstrip("/"))
        srv.log.append((name, self.headers.get("Range")))
        if name in srv.fail:
            self.send_error(srv.fail[name])
            return
        data = srv.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        ranged = self.headers.get("Range")
        if ranged and name not in srv.no_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", ranged).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in srv.cut:
            body = body[:srv.cut.pop(name)]     # the connection closes short of Content-Length
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files, srv.fail, srv.cut, srv.no_range, srv.log = {}, {}, {}, set(), []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def mnist_remote(name: str) -> RemoteFile:
    return next(f for f in catalog.DATASETS["mnist"].files if f.name == name)


def blob_remote(name: str, data: bytes) -> RemoteFile:
    return RemoteFile(name, len(data), hashlib.sha256(data).hexdigest())


# ------------------------------------------------------------------ the pinned checksums

def test_pinned_checksums_match_the_data_we_hold():
    """The unpacked SHA-256 pinned for MNIST and Fashion-MNIST are those of the files shipped in
    data/; every pinned sum is a 64-digit hex string."""
    for info in catalog.DATASETS.values():
        for f in info.files + ((info.archive.file,) if info.archive else ()):
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.size > 0
            assert f.unpacked_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.unpacked_sha256)
    for name, folder in (("mnist", MNIST), ("fashion-mnist", MNIST.parent / "fashion-mnist")):
        for f in catalog.DATASETS[name].files:
            assert hashlib.sha256(gzip.decompress((folder / f.name).read_bytes())).hexdigest() == f.unpacked_sha256


# ------------------------------------------------------------------ through the command line

def test_download_mnist_from_a_mirror_then_find_it_by_name(server, tmp_path):
    for f in catalog.DATASETS["mnist"].files:
        server.files[f.name] = (MNIST / f.name).read_bytes()
    result = runner.invoke(app, ["data", "download", "mnist", "--to", str(tmp_path), "--mirror", server.url])
    assert result.exit_code == 0, result.output
    for f in catalog.DATASETS["mnist"].files:
        assert (tmp_path / "mnist" / f.name).read_bytes() == server.files[f.name]
    assert "SHA-256 of the unpacked content verified" in result.output
    assert f"data: {{name: mnist, root: {tmp_path}}}" in result.output
    assert not list(tmp_path.rglob("*.part"))
    requests = len(server.log)
    again = runner.invoke(app, ["data", "download", "mnist", "--to", str(tmp_path)],
                          env={"CNNCLI_MIRROR": server.url})
    assert again.exit_code == 0 and again.output.count("already there") == 4
    assert len(server.log) == requests                  # verified in place, nothing fetched
    info = runner.invoke(app, ["data", "info", "mnist", "--root", str(tmp_path), "--json"])
    assert '"train": {"n": 60000' in info.output


def test_checksum_failure_deletes_the_partial_file_and_exits_2(server, tmp_path):
    good = (MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()
    for f in catalog.DATASETS["mnist"].files:
        server.files[f.name] = good                      # every file has the wrong content
    result = runner.invoke(app, ["data", "download", "mnist", "--to", str(tmp_path), "--mirror", server.url])
    assert result.exit_code == 2, result.output
    assert "SHA-256 mismatch" in result.output and "was deleted" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "mnist").exists()           # no empty folder for `data list` to report as found


@pytest.mark.parametrize("status", [500, 404])
def test_server_errors_exit_2_with_the_status(server, tmp_path, status):
    server.fail["train-images-idx3-ubyte.gz"] = status
    result = runner.invoke(app, ["data", "download", "mnist", "--to", str(tmp_path), "--mirror", server.url])
    assert result.exit_code == 2, result.output
    assert f"HTTP {status}" in result.output and "train-images-idx3-ubyte.gz" in result.output
    assert "Traceback" not in result.output


def test_bad_names_mirrors_and_unreachable_servers_exit_2(tmp_path):
    unknown = runner.invoke(app, ["data", "download", "fashion_mnist", "--to", str(tmp_path)])
    assert unknown.exit_code == 2 and "Did you mean 'fashion-mnist'" in unknown.output
    ftp = runner.invoke(app, ["data", "download", "mnist", "--to", str(tmp_path), "--mirror", "ftp://x/"])
    assert ftp.exit_code == 2 and "not an http://, https:// or file:// URL" in ftp.output
    with socket.socket() as s:                        # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = runner.invoke(app, ["data", "download", "kmnist", "--to", str(tmp_path),
                                  "--mirror", f"http://127.0.0.1:{port}/"])
    assert refused.exit_code == 2 and "cannot download" in refused.output and "refused" in refused.output.lower()


# ------------------------------------------------------------------ resuming

def test_a_broken_off_download_resumes_with_a_range_request(server, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    data = (MNIST / name).read_bytes()
    server.files[name] = data
    server.cut[name] = 10_000                          # the first answer breaks off after 10,000 bytes
    dest = tmp_path / name
    with pytest.raises(DownloadError, match="broke off|ended after") as info:
        download.fetch(server.url + name, dest, mnist_remote(name))
    assert "run the same command again to resume" in str(info.value)
    part = tmp_path / (name + ".part")
    assert part.read_bytes() == data[:10_000] and not dest.exists()
    events = []
    assert download.fetch(server.url + name, dest, mnist_remote(name), events.append) == "downloaded"
    assert server.log[-1] == (name, "bytes=10000-")
    assert dest.read_bytes() == data and not part.exists()
    started = next(e for e in events if isinstance(e, download.FileStarted))
    assert (started.offset, started.total) == (10_000, len(data))
    assert events[-1].check == "unpacked"


def test_a_server_without_range_support_starts_over(server, tmp_path):
    data = b"0123456789" * 5000
    server.files["blob.bin"] = data
    server.no_range.add("blob.bin")
    (tmp_path / "blob.bin.part").write_bytes(b"garbage!" * 100)
    events = []
    download.fetch(server.url + "blob.bin", tmp_path / "blob.bin", blob_remote("blob.bin", data), events.append)
    assert (tmp_path / "blob.bin").read_bytes() == data
    assert any("does not resume" in getattr(e, "message", "") for e in events)


def test_a_complete_part_file_is_verified_on_416(server, tmp_path):
    data = b"abc" * 1000
    server.files["blob.bin"] = data
    (tmp_path / "blob.bin.part").write_bytes(data)
    download.fetch(server.url + "blob.bin", tmp_path / "blob.bin", blob_remote("blob.bin", data))
    assert server.log == [("blob.bin", f"bytes={len(data)}-")]
    assert (tmp_path / "blob.bin").read_bytes() == data


def test_a_resumed_download_that_does_not_match_is_deleted(server, tmp_path):
    data = b"the published bytes " * 2000
    server.files["blob.bin"] = data
    (tmp_path / "blob.bin.part").write_bytes(b"X" * 1000)          # a part from some other file
    with pytest.raises(DownloadError, match="SHA-256 mismatch.*was deleted"):
        download.fetch(server.url + "blob.bin", tmp_path / "blob.bin", blob_remote("blob.bin", data))
    assert not (tmp_path / "blob.bin.part").exists() and not (tmp_path / "blob.bin").exists()
    download.fetch(server.url + "blob.bin", tmp_path / "blob.bin", blob_remote("blob.bin", data))
    assert (tmp_path / "blob.bin").read_bytes() == data


# ------------------------------------------------------------------ EMNIST's zip

def test_emnist_split_is_extracted_from_the_verified_zip(server, tmp_path, monkeypatch):
    """A small zip laid out like NIST's gzip.zip, pinned by its own SHA-256 for the test."""
    members = {f"gzip/emnist-letters-{s}-{k}-idx{n}-ubyte.gz": (MNIST / f"{p}-{k}-idx{n}-ubyte.gz").read_bytes()
               for s, p in (("train", "t10k"), ("test", "t10k")) for k, n in (("images", 3), ("labels", 1))}
    members["gzip/emnist-letters-mapping.txt"] = b"".join(b"%d %d %d\n" % (i, 64 + i, 96 + i) for i in range(1, 27))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    server.files["gzip.zip"] = buf.getvalue()
    info = catalog.DATASETS["emnist-letters"]
    archive = dataclasses.replace(info.archive, file=blob_remote("gzip.zip", buf.getvalue()))
    monkeypatch.setitem(catalog.DATASETS, "emnist-letters", dataclasses.replace(info, archive=archive))
    folder = download.download("emnist-letters", tmp_path, server.url)
    assert folder == tmp_path / "emnist-letters"
    assert (tmp_path / "emnist" / "gzip.zip").is_file()
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == (MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()
    from cnncli import formats
    from cnncli.config import validate

    d = validate({"data": {"name": "emnist-letters", "root": str(tmp_path)}, "model": {"layers": ["flatten"]}}).data
    loaded = formats.load(d, test_limit=5)
    assert loaded.classes[1] == "Aa" and loaded.classes[26] == "Zz" and len(loaded.test) == 5


def test_a_file_mirror_is_a_local_folder(tmp_path):
    result = runner.invoke(app, ["data", "download", "mnist", "--to", str(tmp_path / "root"),
                                 "--mirror", MNIST.resolve().as_uri() + "/"])
    assert result.exit_code == 0, result.output
    for f in catalog.DATASETS["mnist"].files:
        assert (tmp_path / "root" / "mnist" / f.name).read_bytes() == (MNIST / f.name).read_bytes()
    relative = runner.invoke(app, ["data", "download", "mnist", "--to", str(tmp_path), "--mirror", "file://data/mnist"])
    assert relative.exit_code == 2 and "absolute path" in relative.output


def test_a_failed_download_leaves_no_folder_that_data_list_finds(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["data", "download", "fashion-mnist", "--to", str(tmp_path / "root"),
                                 "--mirror", empty.as_uri() + "/"])
    assert result.exit_code == 2 and "Check the folder" in result.output, result.output
    assert not (tmp_path / "root" / "fashion-mnist").exists()
    from cnncli.datainfo import named_datasets

    where = {name: w for name, w, _ in named_datasets(tmp_path / "root")}
    assert not where["fashion-mnist"].startswith(str(tmp_path))      # the repo's copy, or not found
