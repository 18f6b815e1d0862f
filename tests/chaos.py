"""Chaos test of run folders: kill -9 training at random moments, resume, compare.

Each trial trains a small network for a few epochs in a run folder of its own, killing the
process with SIGKILL at a random moment (half the kills aim at a save: the moment a hidden
temporary file of an atomic write appears; ``last.npz`` is also saved every 3 steps, so most
resumes start mid-epoch, with augmentation and dropout on) and resuming with ``--resume RUN/last.npz``
(or starting again when no epoch was committed) until the run finishes. The folder must
then hold what an uninterrupted run holds: ``metrics.jsonl`` byte for byte, ``best.npz``,
``last.npz`` and every ``epoch_{k}.npz`` value for value, and no temporary file.

Run it as a script for the figures (``python tests/chaos.py --trials 100``); the suite runs
a short version (``tests/test_chaos.py``).
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CONFIG = """\
data: {{path: {data}, val_split: 100, mean: 0.1307, std: 0.3081, augment: {{translate: 1}}}}
model:
  layers:
    - conv2d: {{out_channels: 4, kernel_size: 3}}
    - batchnorm
    - relu
    - maxpool2d: {{kernel_size: 2}}
    - dropout: {{p: 0.25}}
    - flatten
    - linear: {{out_features: 10}}
train:
  epochs: {epochs}
  batch_size: 50
  seed: 3
  optimizer: {{type: adam, lr: 0.003}}
  schedule: {{type: cosine, warmup_epochs: 1}}
  checkpoint: {{monitor: val_loss, every: 1, every_steps: 3}}
"""


def make_data(folder: Path, n_train: int = 500, n_test: int = 100) -> Path:
    """The first images of the shipped MNIST as a small IDX dataset in ``folder``."""
    sys.path.insert(0, str(REPO))
    from cnncli.datasets import load_split

    folder.mkdir(parents=True, exist_ok=True)
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        ds = load_split(REPO / "data" / "mnist", split, n)
        for kind, array in (("images-idx3", ds.images[:, 0]), ("labels-idx1", ds.labels.astype(np.uint8))):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + np.ascontiguousarray(array).tobytes())
    return folder


def cnncli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnncli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_at_random(proc: subprocess.Popen, run: Path, rnd: random.Random, span: float) -> bool:
    """SIGKILL ``proc`` at a random moment, or when a save starts; False if it ended first."""
    aim_at_save = rnd.random() < 0.5
    deadline = time.monotonic() + rnd.uniform(0.0, span)
    skip = rnd.randrange(6)                      # which save to hit: the first few each epoch
    seen: set[str] = set()
    while proc.poll() is None:
        if aim_at_save:
            tmps = {p.name for p in run.glob(".*.tmp")} if run.is_dir() else set()
            if tmps - seen:
                seen |= tmps
                if skip == 0:
                    proc.send_signal(signal.SIGKILL)
                    break
                skip -= 1
            time.sleep(0.0005)
        elif time.monotonic() >= deadline:
            proc.send_signal(signal.SIGKILL)
            break
        else:
            time.sleep(0.002)
    proc.wait()
    if proc.returncode == -signal.SIGKILL:
        proc.stderr.close()
        return True
    return False


def finish(cfg: Path, run: Path, rnd: random.Random, kills: int, span: float) -> int:
    """Train ``cfg`` into ``run`` with up to ``kills`` kills, resuming after each; return the kills made."""
    made = attempts = 0
    while True:
        if (run / "last.npz").exists():
            args = ["train", str(cfg), "--resume", str(run / "last.npz"), "--quiet"]
        else:
            args = ["train", str(cfg), "--out", str(run), "--overwrite", "--quiet"]
        proc = cnncli(*args)
        if made < kills and kill_at_random(proc, run, rnd, span):
            made += 1
            continue
        err = proc.stderr.read().decode()
        proc.wait()
        proc.stderr.close()
        # a kill after the last epoch's commit leaves nothing to train: --resume mends the folder and says so
        if proc.returncode == 2 and "nothing left to do" in err:
            return made
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {err}")
        if made == 0 and attempts < 5:       # the run ended before its kill came: not a trial yet, again
            attempts += 1
            shutil.rmtree(run)
            continue
        return made


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k.split("/")[0] in ("param", "buffer", "optim")}


def differences(ref: Path, run: Path) -> list[str]:
    """What differs between the uninterrupted run ``ref`` and ``run`` (empty if nothing)."""
    out = []
    if (ref / "metrics.jsonl").read_bytes() != (run / "metrics.jsonl").read_bytes():
        out.append("metrics.jsonl")
    names = sorted(p.name for p in ref.glob("*.npz"))
    if sorted(p.name for p in run.glob("*.npz")) != names:
        out.append(f"checkpoints {sorted(p.name for p in run.glob('*.npz'))} != {names}")
    for name in names:
        if not (run / name).exists():
            continue
        a, b = arrays(ref / name), arrays(run / name)
        if a.keys() != b.keys() or any(not np.array_equal(a[k], b[k]) for k in a):
            out.append(name)
    tmps = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    if tmps:
        out.append(f"temporaries {tmps}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--kills", type=int, default=3, help="kills per trial (at most)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)
    rnd = random.Random(args.seed)
    work = args.folder or Path(tempfile.mkdtemp(prefix="cnncli-chaos-"))
    cfg = work / "chaos.yaml"
    cfg.write_text(CONFIG.format(data=make_data(work / "data"), epochs=args.epochs))
    t0 = time.monotonic()
    ref = work / "reference"
    proc = cnncli("train", str(cfg), "--out", str(ref), "--overwrite", "--quiet")
    if proc.wait() != 0:
        print(proc.stderr.read().decode(), file=sys.stderr)
        return 2
    span = time.monotonic() - t0
    bad, kills = 0, 0
    for trial in range(args.trials):
        run = work / f"trial-{trial}"
        kills += finish(cfg, run, rnd, rnd.randint(1, args.kills), span)
        diff = differences(ref, run)
        if diff:
            bad += 1
            print(f"trial {trial}: differs: {', '.join(diff)}", flush=True)
    print(f"{args.trials} trials, {kills} kills (SIGKILL), {bad} runs differing from the uninterrupted run "
          f"(metrics.jsonl bytes, best/last/epoch_k arrays, temporaries); work folder {work}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
