"""Every "unbounded work" input of issue 15, through the command line, with its cost.

    python benchmarks/hostile_inputs.py

builds each hostile input in a temporary folder, runs the ``cnncli`` command a user would
run on it under ``/usr/bin/time -f "%e %M"``, and prints the exit code, the seconds and the
peak resident memory (MiB) of each; the bound is 5 s and 500 MiB, exit 2. The regression
tests of each case are in tests/test_hostile_files.py and tests/test_no_lies.py.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cnncli import checkpoint  # noqa: E402


def bomb(leaf: str, levels: int = 9) -> str:
    """A billion-laughs YAML flow list: 10**(levels+1) copies of ``leaf`` if expanded."""
    parts = [f"&a0 [{', '.join([leaf] * 10)}]"]
    parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "[" + ", ".join(parts) + "]"


def idx_header(shape: tuple[int, ...], code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(int(d).to_bytes(4, "big") for d in shape)


def gzip_zeros(path: Path, header: bytes, n: int) -> None:
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header)
        block = bytes(1 << 20)
        for _ in range(n >> 20):
            f.write(block)


def npy_zip_member(z: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: str) -> None:
    """A deflated .npy member of zeros of ``shape`` (written in blocks)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                   "shape": shape})
    with z.open(name, "w", force_zip64=True) as f:
        f.write(header.getvalue())
        left = int(np.prod(shape)) * np.dtype(dtype).itemsize
        block = bytes(1 << 20)
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)


class Forever(http.server.BaseHTTPRequestHandler):
    """A mirror that streams zeros forever."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        block = bytes(1 << 16)
        try:
            while True:
                self.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError):
            pass


def run(label: str, args: list[str], cwd: Path) -> tuple[str, int, float, float]:
    r = subprocess.run(["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "cnncli", *args], cwd=cwd,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds, kib = r.stderr.strip().splitlines()[-1].split()
    said = " ".join(r.stderr.strip().splitlines()[:-1])[:110]
    return label, r.returncode, float(seconds), int(kib) / 1024, said


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="cnncli-hostile-"))
    data = work / "data"
    data.mkdir()
    from cnncli.datasets import load_split

    train, test = load_split(REPO / "data" / "mnist", "train", 300), load_split(REPO / "data" / "mnist", "test", 100)
    for prefix, ds in (("train", train), ("t10k", test)):
        with gzip.open(data / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(idx_header(ds.images[:, 0].shape) + ds.images.tobytes())
        with gzip.open(data / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(idx_header(ds.labels.shape) + ds.labels.astype(np.uint8).tobytes())
    base = (f"data: {{path: {data}, val_split: 50}}\nmodel:\n  input_shape: [1, 28, 28]\n  layers: LAYERS\n"
            f"train: {{epochs: 1, batch_size: 50}}\noutput: {{dir: {work / 'run'}}}\n")
    plain = "[flatten, {linear: {out_features: 10}}]"
    cases = []
    for site, text in (("model.layers", base.replace("LAYERS", bomb("relu"))),
                       ("data.val_split", base.replace("LAYERS", plain).replace("val_split: 50",
                                                                                 "val_split: " + bomb("0"))),
                       ("a layer's options", base.replace("LAYERS", f"[{{conv2d: {{out_channels: 2, "
                                                                    f"kernel_size: {bomb('3')}}}}}]")),
                       ("data.classes", base.replace("LAYERS", plain).replace("val_split: 50", "val_split: 50, "
                                                                              "classes: " + bomb('"c"')))):
        path = work / f"alias-{site.split()[0].replace('.', '-')}.yaml"
        path.write_text(text)
        cases.append((f"YAML alias bomb in {site}", ["summary", str(path)]))
    # a real checkpoint, then ones whose stored config names a device, a FIFO, or a huge model
    cfg = work / "ok.yaml"
    cfg.write_text(base.replace("LAYERS", plain))
    subprocess.run([sys.executable, "-m", "cnncli", "train", str(cfg), "-q"], cwd=work, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    ck = checkpoint.load(work / "run" / "best.npz")
    os.mkfifo(work / "fifo")

    def stored(name: str, change) -> Path:
        config = json.loads(json.dumps(ck.config))
        change(config)
        path = work / name
        checkpoint.save(path, params=ck.params, buffers=ck.buffers, optim=ck.optim, config=config, meta=ck.meta)
        return path

    for name, target in (("zero", "/dev/zero"), ("fifo", str(work / "fifo"))):
        path = stored(f"ck-{name}.npz", lambda c, t=target: c["data"].update(path=t))
        cases.append((f"checkpoint whose data.path is {name}", ["eval", str(path)]))
    wide = [{"linear": {"out_features": 16384}}] * 8
    path = stored("ck-wide.npz", lambda c: c["model"].update(layers=["flatten", *wide, {"linear": {"out_features": 10}}]))
    cases.append(("stored config of eight 16384-wide linear layers", ["eval", str(path)]))
    # a checkpoint zip bomb: one member declaring 2 GiB of zeros
    with zipfile.ZipFile(work / "ck-bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with zipfile.ZipFile(work / "run" / "best.npz") as real:
            for info in real.infolist():
                if info.filename != "param/1.weight.npy":
                    z.writestr(info, real.read(info))
        npy_zip_member(z, "param/1.weight.npy", (2**29,), "<f4")
    cases.append((f"checkpoint zip bomb ({(work / 'ck-bomb.npz').stat().st_size >> 20} MB, 2 GiB inflated)",
                  ["eval", str(work / "ck-bomb.npz")]))
    # a gzip IDX bomb: a header declaring 3.3 GB of images that are all there, in 3 MB
    gz = work / "gzbomb"
    gz.mkdir()
    gzip_zeros(gz / "train-images-idx3-ubyte.gz", idx_header((4_200_000, 28, 28)), 3 << 30)
    (gz / "train-labels-idx1-ubyte.gz").write_bytes((data / "train-labels-idx1-ubyte.gz").read_bytes())
    cases.append((f"gzip IDX bomb ({(gz / 'train-images-idx3-ubyte.gz').stat().st_size >> 20} MB)",
                  ["data", "info", str(gz)]))
    # an NPZ dataset zip bomb, trained with train_limit 512
    with zipfile.ZipFile(work / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        npy_zip_member(z, "x_train.npy", (3_000_000, 28, 28), "|u1")
        npy_zip_member(z, "y_train.npy", (3_000_000,), "|u1")
    npz_cfg = work / "npz.yaml"
    npz_cfg.write_text(base.replace("LAYERS", plain).replace(f"path: {data}", f"path: {work / 'bomb.npz'}, "
                                                             f"train_limit: 512"))
    cases.append((f"NPZ zip bomb ({(work / 'bomb.npz').stat().st_size >> 20} MB) with train_limit 512",
                  ["train", str(npz_cfg), "--out", str(work / "npzrun")]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forever)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cases.append(("download mirror streaming forever", ["data", "download", "mnist", "--to", str(work / "dl"),
                                                        "--mirror", f"http://127.0.0.1:{server.server_port}/", "-q"]))
    print("| input | command | exit | seconds | peak RSS MiB | message |\n| --- | --- | ---: | ---: | ---: | --- |")
    worst = 0.0
    for label, args in cases:
        _, code, seconds, mib, said = run(label, args, work)
        worst = max(worst, seconds)
        print(f"| {label} | `cnncli {args[0]} {args[1] if args[0] == 'data' else '...'}` | {code} | {seconds:.2f} | "
              f"{mib:.0f} | {said} |", flush=True)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
