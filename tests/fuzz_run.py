"""Run the structural fuzzers of ``test_fuzz_structural.py`` for many cases, bounded per case.

    python tests/fuzz_run.py --cases 10000                 # split evenly over the attack kinds
    python tests/fuzz_run.py --cases 600 --kinds idx npz --jobs 2

Each attack kind runs in child processes of ``--chunk`` cases each. A child limits its
address space to ``--rss-mib`` (default 1024: RLIMIT_AS, so no case can hold more than
1 GiB) and gives every case ``--seconds`` (default 10) of wall time (a SIGALRM timer;
the parent also kills a child silent for twice that). Per case it prints one JSON line:
``ok`` (a result), ``typed`` (a CnncliError), ``check`` (an assertion of the test failed),
``traceback`` (any other exception; exit codes other than 0/1/2 of CLI cases are checks),
``memory`` (MemoryError) or ``hang``. The parent sums them per kind, with the children's
peak RSS (``ru_maxrss``), prints a table and writes every failure (case and traceback) to
``--report`` (JSON). Exit 1 if any case was not ``ok``/``typed``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GOOD = ("ok", "typed")


def child(kind: str, cases: int, seed: int, seconds: float, rss_mib: int, checkpoint: str, data: str) -> None:
    """Run ``cases`` hypothesis examples of ``kind``; one JSON line per case on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (rss_mib << 20, rss_mib << 20))
    sys.path.insert(0, str(HERE))
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    import test_fuzz_structural as S
    from cnncli.errors import CnncliError

    for module, name, value in S.SMALL_LIMITS:
        setattr(module, name, value)
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{kind}-"))
    ctx = S.Context(work, Path(checkpoint), Path(data), S.make_specials(work / "specials"))
    strategy, run = S.ATTACKS[kind]
    out = sys.stdout

    @hseed(seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def loop(case):
        t = time.perf_counter()
        status, detail = "ok", None
        try:
            with S.bounded(seconds):
                result = run(case, ctx)
            refused = isinstance(result, CnncliError) or (type(result) is int and result != 0)   # CLI: exit 1/2
            status = "typed" if refused else "ok"
        except S.Hang:
            status = "hang"
        except MemoryError:
            status = "memory"
        except AssertionError:
            status, detail = "check", traceback.format_exc(limit=-6)
        except Exception:  # noqa: BLE001 - what the campaign counts
            status, detail = "traceback", traceback.format_exc(limit=-12)
        line = {"status": status, "seconds": round(time.perf_counter() - t, 3)}
        if detail or status not in GOOD:
            line.update(case=repr(case)[:4000], detail=detail)
        out.write(json.dumps(line) + "\n")
        out.flush()

    loop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.write(json.dumps({"done": True, "maxrss_kib": rss}) + "\n")
    out.flush()


def spawn(kind: str, n: int, seed: int, args, ck: Path, data: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "NO_COLOR": "1"}
    cmd = [sys.executable, __file__, "--child", kind, "--cases", str(n), "--seed", str(seed), "--seconds",
           str(args.seconds), "--rss-mib", str(args.rss_mib), "--checkpoint", str(ck), "--data", str(data)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def collect(procs: list, totals: dict, failures: list, silent: float) -> None:
    """Read the children's lines until all end; kill one silent for ``silent`` seconds (a hang)."""
    sel = selectors.DefaultSelector()
    last = {}
    for kind, p in procs:
        sel.register(p.stdout, selectors.EVENT_READ, (kind, p))
        last[p.pid] = time.monotonic()
    open_ = len(procs)
    while open_:
        for key, _ in sel.select(timeout=1.0):
            kind, p = key.data
            line = p.stdout.readline()
            last[p.pid] = time.monotonic()
            if not line:
                sel.unregister(p.stdout)
                open_ -= 1
                p.wait()
                if p.returncode != 0:
                    err = p.stderr.read()[-4000:]
                    totals[kind]["crashed"] += 1
                    failures.append({"kind": kind, "status": f"child exit {p.returncode}", "detail": err})
                continue
            rec = json.loads(line)
            if rec.get("done"):
                totals[kind]["maxrss_kib"] = max(totals[kind]["maxrss_kib"], rec["maxrss_kib"])
                continue
            t = totals[kind]
            t["cases"] += 1
            t[rec["status"]] = t.get(rec["status"], 0) + 1
            t["max_seconds"] = max(t["max_seconds"], rec["seconds"])
            if rec["status"] not in GOOD or rec["seconds"] > 10:
                failures.append({"kind": kind, **rec})
        now = time.monotonic()
        for kind, p in procs:
            if p.poll() is None and now - last[p.pid] > silent:
                p.kill()                          # our own child, by its pid
                totals[kind]["hang"] = totals[kind].get("hang", 0) + 1
                failures.append({"kind": kind, "status": "hang (killed)", "detail": f"silent {silent} s"})
                last[p.pid] = now


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=600, help="cases in all, split evenly over the kinds")
    ap.add_argument("--kinds", nargs="*", help="attack kinds (default: all)")
    ap.add_argument("--chunk", type=int, default=250, help="cases per child process")
    ap.add_argument("--jobs", type=int, default=1, help="children at a time")
    ap.add_argument("--seconds", type=float, default=10.0, help="per-case limit")
    ap.add_argument("--rss-mib", type=int, default=1024, help="address-space limit of a child")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-seconds", type=float, default=0, help="start no child after this (0: no limit)")
    ap.add_argument("--report", type=Path, default=Path("fuzz-report.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.cases, args.seed, args.seconds, args.rss_mib, args.checkpoint, args.data)
        return 0
    sys.path.insert(0, str(HERE))
    import test_fuzz_structural as S

    kinds = args.kinds or list(S.ATTACKS)
    ck, data = S.make_run(Path(tempfile.mkdtemp(prefix="fuzz-run-")))
    per_kind = -(-args.cases // len(kinds))
    # (kind, cases, seed), round-robin over the kinds: a run stopped by --budget-seconds covers every kind
    chunks = [(j, n, k, min(args.chunk, per_kind - i)) for n, k in enumerate(kinds)
              for j, i in enumerate(range(0, per_kind, args.chunk))]
    jobs = [(k, c, args.seed * 100_000 + n * 1000 + j) for j, n, k, c in sorted(chunks)]
    totals = {k: {"cases": 0, "max_seconds": 0.0, "maxrss_kib": 0, "crashed": 0} for k in kinds}
    failures: list = []
    t0 = time.monotonic()
    while jobs and not (args.budget_seconds and time.monotonic() - t0 > args.budget_seconds):
        batch, jobs = jobs[:args.jobs], jobs[args.jobs:]
        collect([(k, spawn(k, c, s, args, ck, data)) for k, c, s in batch], totals, failures, 2 * args.seconds + 5)
    wall = time.monotonic() - t0
    print(f"{'kind':10} {'cases':>7} {'ok':>6} {'typed':>6} {'traceback':>9} {'check':>6} {'hang':>5} "
          f"{'memory':>6} {'crashed':>7} {'max s':>6} {'max RSS MiB':>11}")
    for k, t in totals.items():
        print(f"{k:10} {t['cases']:7} {t.get('ok', 0):6} {t.get('typed', 0):6} {t.get('traceback', 0):9} "
              f"{t.get('check', 0):6} {t.get('hang', 0):5} {t.get('memory', 0):6} {t['crashed']:7} "
              f"{t['max_seconds']:6.2f} {t['maxrss_kib'] / 1024:11.0f}")
    all_cases = sum(t["cases"] for t in totals.values())
    print(f"{all_cases} cases in {wall:.0f} s; {len(failures)} failures; report: {args.report}")
    args.report.write_text(json.dumps({"totals": totals, "failures": failures, "seconds": wall}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
