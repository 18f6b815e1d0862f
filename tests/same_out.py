"""Pairs of ``cnncli train`` started together with the same ``--out``: each pair must end with
two distinct run folders (or one run and a refusal), never two runs in one folder; and a
``--resume`` of a run that is still training is refused.

Run it as a script for the figures: ``python tests/same_out.py --pairs 20``
(``tests/test_run_folder.py`` has the in-suite version of both checks).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chaos import CONFIG, REPO, make_data


def train(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnncli", "train", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cnncli-same-out-"))
    cfg = work / "c.yaml"
    cfg.write_text(CONFIG.format(data=make_data(work / "data"), epochs=2))
    distinct = refused = shared = 0
    for pair in range(args.pairs):
        out = work / f"out{pair}"
        procs = [train(str(cfg), "--out", str(out), "--json") for _ in range(2)]
        ends = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            if p.returncode == 0:
                ends.append(json.loads(stdout.strip().splitlines()[-1])["run_dir"])
            else:
                refused += 1
        if len(ends) == 2 and ends[0] != ends[1]:
            distinct += 1
        elif len(ends) == 2:
            shared += 1
            print(f"pair {pair}: both wrote {ends[0]}")
    # --resume of a live run
    live = train(str(cfg), "--out", str(work / "live"), "--epochs", "50", "-q")
    while not (work / "live" / "last.npz").exists():
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "cnncli", "train", str(cfg), "--resume",
                             str(work / "live" / "last.npz"), "--epochs", "60"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    live.kill()
    live.wait()
    said = " ".join(second.stderr.split())
    ok = second.returncode == 2 and f"being written by process {live.pid}" in said
    print(f"{args.pairs} pairs with one --out: {distinct} with two distinct folders, {refused} refusals, "
          f"{shared} sharing a folder; --resume of a live run: exit {second.returncode}"
          f"{' (refused, naming its PID)' if ok else ': ' + said}")
    return 0 if shared == 0 and ok else 1


if __name__ == "__main__":
    sys.exit(main())
