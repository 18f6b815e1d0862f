"""cnncli against PyTorch as users wait for them: whole training epochs, each framework in
its own process, alternating runs, the same network, optimizer, batch, data and threads.

    python benchmarks/bench_epochs.py --configs configs/mnist.yaml configs/mnist-small.yaml configs/lenet5.yaml \\
        --epochs 1 --pairs 3 --threads 2 --no-augment
    python benchmarks/bench_epochs.py --train-limit 2000 --test-limit 1000 --epochs 1 --pairs 1   # smoke run

For every config, ``--pairs`` times in turn (cnncli, PyTorch, cnncli, PyTorch, ...):

- cnncli: the command users run, ``cnncli train CONFIG --epochs E --out TMP [--set ...]``,
  as a child process under a pseudo-terminal, so the live progress bar and per-epoch
  metrics are drawn as on a user's terminal (``--output plain`` pipes it instead: one line
  per epoch; ``--output json``: ``--json``). Its training images/s come from the run's
  ``timing.jsonl`` (``train_seconds`` per epoch: shuffling, gather, augmentation,
  normalization, forward, backward, step, metrics and progress; the validation pass is in
  ``seconds`` only). Then ``benchmarks/cnncli_eval.py`` times evaluation of the run's
  checkpoint in a fresh process.
- PyTorch: ``benchmarks/torch_loop.py``, a plain loop in its own process over the same
  network (translated from the built cnncli model, its initial weights copied; the logits
  of both are compared first), optimizer, schedule, batch size and data (cnncli's reader and
  splits), timed the same way, then its evaluation throughput.

Threads: ``--threads T`` (default: all cores) sets ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` in every child's environment,
``torch.set_num_threads(T)`` in PyTorch's, and ``--threads T`` of ``cnncli train`` when its
``--help`` lists that flag. The children run the cnncli of this checkout (``PYTHONPATH``).
``--load N`` keeps N other CPU-bound processes running for the whole measurement (a shared
machine); compare its epoch seconds with a quiet run's.

Peak RSS is the training process's own (``os.wait4``). Prints a Markdown table: per
framework the median and min-max over the pairs, the ratios PyTorch / cnncli (training)
and cnncli / PyTorch (evaluation), with date, commit, machine, versions and threads.
Never run it beside other work: see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class BenchError(Exception):
    """A run failed or the input is unusable; ``exit_code`` 2 for bad input, 1 for a failed run."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


# -- pure helpers (tests/test_bench_script.py)

def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of ``values`` (at least one)."""
    return statistics.median(values), min(values), max(values)


def train_limit_for(val_split: int | float, n_train: int) -> int:
    """The smallest ``data.train_limit`` (images read from the training file) that leaves at
    least ``n_train`` training images (exactly, where a total does) after ``val_split`` (a
    count, or a fraction in [0, 1)) is carved off the end, as ``data.prepare_data`` does:
    ``total - int(round(total * val_split))``."""
    if isinstance(val_split, int):
        return n_train + val_split
    total = math.floor(n_train / (1.0 - val_split))
    while total - int(round(total * val_split)) < n_train:
        total += 1
    return total


def bench_sets(val_split: int | float, *, no_augment: bool, train_limit: int | None,
               test_limit: int | None) -> list[str]:
    """The ``--set`` overrides both frameworks get: augmentation off, data limits."""
    sets = ["data.augment=null"] if no_augment else []
    if train_limit is not None:
        sets.append(f"data.train_limit={train_limit_for(val_split, train_limit)}")
    if test_limit is not None:
        sets.append(f"data.test_limit={test_limit}")
    return sets


def train_command(cnncli: list[str], config: str, epochs: int, out: Path, sets: list[str], threads: int,
                  *, threads_flag: bool, output: str) -> list[str]:
    """``cnncli train`` as a user types it, with the benchmark's settings."""
    cmd = [*cnncli, "train", config, "--epochs", str(epochs), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    if threads_flag:
        cmd += ["--threads", str(threads)]
    if output == "json":
        cmd.append("--json")
    return cmd


def child_env(threads: int, base: dict[str, str], *, tty: bool) -> dict[str, str]:
    """A child's environment: ``threads`` for every BLAS/OpenMP pool, this checkout first on
    ``PYTHONPATH``; for a terminal run, no ``NO_COLOR``/``CI`` (they force plain output)."""
    env = dict(base)
    env.update({k: str(threads) for k in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    if tty:
        env.pop("NO_COLOR", None)
        env.pop("CI", None)
        env.setdefault("TERM", "xterm-256color")
    return env


def run_rate(rows: list[dict]) -> float:
    """Training images/s of a whole run from its per-epoch rows (``images_per_s`` and
    ``train_seconds``): all images trained over all training seconds."""
    seconds = sum(r["train_seconds"] for r in rows)
    return sum(r["images_per_s"] * r["train_seconds"] for r in rows) / seconds


def json_rows(text: str) -> list[dict]:
    """The JSON objects among the lines of ``text`` (other lines are skipped)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _cell(values: list[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "-"
    mid, lo, hi = spread(values)
    return fmt.format(mid) if len(values) == 1 else f"{fmt.format(mid)} ({fmt.format(lo)}-{fmt.format(hi)})"


def _ratio(num: list[float], den: list[float]) -> str:
    """Ratio of the medians, and the range of the per-pair ratios."""
    if not num or not den:
        return "-"
    pairs = [a / b for a, b in zip(num, den)]
    text = f"{statistics.median(num) / statistics.median(den):.2f}x"
    return text if len(pairs) == 1 else f"{text} (pairs {min(pairs):.2f}-{max(pairs):.2f})"


def table(results: dict[str, dict[str, dict[str, list[float]]]], header: list[str]) -> str:
    """The Markdown report: ``header`` lines, then per config a row per framework and a
    ratio row. ``results[config][framework]`` holds lists (one value per pair) under
    ``train``, ``epoch_seconds``, ``eval`` and ``rss``."""
    lines = [*header, "",
             "| config | | train img/s | epoch s (train + validation) | eval img/s | peak RSS (training) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for config, r in results.items():
        ours, theirs = r["cnncli"], r["pytorch"]
        for name, v in (("cnncli", ours), ("PyTorch", theirs)):
            lines.append(f"| `{config}` | {name} | {_cell(v['train'])} | {_cell(v['epoch_seconds'], '{:,.2f}')} | "
                         f"{_cell(v['eval'])} | {_cell(v['rss'], '{:,.0f} MiB')} |")
        lines.append(f"| `{config}` | ratio | PyTorch / cnncli {_ratio(theirs['train'], ours['train'])} | | "
                     f"cnncli / PyTorch {_ratio(ours['eval'], theirs['eval'])} | "
                     f"cnncli / PyTorch {_ratio(ours['rss'], theirs['rss'])} |")
    return "\n".join(lines)


# -- processes

@dataclass
class Child:
    """A finished child process: exit code, its output, peak RSS (MiB) and wall seconds."""

    returncode: int
    output: str
    max_rss_mib: float
    wall: float


def run_child(cmd: list[str], env: dict[str, str], *, tty: bool) -> Child:
    """Run ``cmd`` to its end in the current directory (configs name their data relative to
    it), stdout and stderr together, under a pseudo-terminal (120x40) when ``tty``; its peak
    RSS from ``os.wait4`` (this child's alone)."""
    chunks: list[bytes] = []
    t0 = time.perf_counter()
    if tty:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        source = master
    else:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env)
        source = proc.stdout.fileno()

    def drain() -> None:               # a full pipe or terminal buffer would stall the child
        while True:
            try:
                data = os.read(source, 65536)
            except OSError:            # EIO: the terminal's last writer has gone
                break
            if not data:
                break
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if tty:
        os.close(master)
    else:
        proc.stdout.close()
    return Child(proc.returncode, b"".join(chunks).decode("utf-8", "replace"), usage.ru_maxrss / 1024, wall)


def _checked(child: Child, what: str, cmd: list[str]) -> Child:
    if child.returncode != 0:
        tail = "\n".join(child.output.splitlines()[-15:])
        raise BenchError(f"{what} failed (exit {child.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return child


def cnncli_command() -> list[str]:
    """The ``cnncli`` console script beside this Python, else on PATH, else ``python -m cnncli``."""
    script = Path(sys.executable).parent / "cnncli"
    if script.exists():
        return [str(script)]
    from shutil import which

    found = which("cnncli")
    return [found] if found else [sys.executable, "-m", "cnncli"]


def has_threads_flag(cnncli: list[str], env: dict[str, str]) -> bool:
    """Whether ``cnncli train --help`` lists ``--threads``."""
    child = run_child([*cnncli, "train", "--help"], {**env, "COLUMNS": "200"}, tty=False)
    return "--threads" in child.output


@dataclass
class Settings:
    """What every run of one benchmark shares."""

    epochs: int
    threads: int
    eval_batch: int
    eval_repeats: int
    output: str
    workdir: Path
    cnncli: list[str]
    threads_flag: bool
    env: dict[str, str]


def run_ours(s: Settings, config: str, sets: list[str], tag: str) -> dict:
    """One ``cnncli train`` run and the evaluation of its checkpoint: training images/s,
    median epoch seconds, peak RSS, evaluation images/s."""
    out = s.workdir / f"cnncli-{tag}"
    tty = s.output == "tty"
    cmd = train_command(s.cnncli, config, s.epochs, out, sets, s.threads, threads_flag=s.threads_flag,
                        output=s.output)
    child = _checked(run_child(cmd, child_env(s.threads, s.env, tty=tty), tty=tty), "cnncli train", cmd)
    rows = json_rows((out / "timing.jsonl").read_text(encoding="utf-8"))
    if len(rows) != s.epochs:
        raise BenchError(f"{out / 'timing.jsonl'} holds {len(rows)} epochs, expected {s.epochs}")
    ck = out / "best.npz" if (out / "best.npz").exists() else out / "last.npz"
    test_limit = next((x.split("=", 1)[1] for x in sets if x.startswith("data.test_limit=")), None)
    ecmd = [sys.executable, str(HERE / "cnncli_eval.py"), str(ck), "--batch", str(s.eval_batch),
            "--repeats", str(s.eval_repeats), "--threads", str(s.threads),
            *(["--test-limit", test_limit] if test_limit else [])]
    ev = json_rows(_checked(run_child(ecmd, child_env(s.threads, s.env, tty=False), tty=False),
                            "cnncli evaluation", ecmd).output)[-1]
    return {"train": run_rate(rows), "epoch_seconds": statistics.median(r["seconds"] for r in rows),
            "rss": child.max_rss_mib, "eval": ev["eval_images_per_s"], "wall": child.wall}


def run_torch(s: Settings, config: str, sets: list[str]) -> dict:
    """One ``torch_loop.py`` process: the same figures as :func:`run_ours`, plus the logit
    gap of the translated network."""
    cmd = [sys.executable, str(HERE / "torch_loop.py"), config, "--epochs", str(s.epochs),
           "--threads", str(s.threads), "--eval-batch", str(s.eval_batch), "--eval-repeats", str(s.eval_repeats),
           "--check", *(a for x in sets for a in ("--set", x))]
    child = _checked(run_child(cmd, child_env(s.threads, s.env, tty=False), tty=False), "the PyTorch loop", cmd)
    rows = json_rows(child.output)
    epochs, end = [r for r in rows if r.get("event") == "epoch"], rows[-1]
    if len(epochs) != s.epochs or end.get("event") != "end":
        raise BenchError(f"the PyTorch loop printed {len(epochs)} epochs, expected {s.epochs}:\n{child.output[-2000:]}")
    return {"train": run_rate(epochs), "epoch_seconds": statistics.median(r["seconds"] for r in epochs),
            "rss": child.max_rss_mib, "eval": end["eval_images_per_s"], "wall": child.wall,
            "logits_gap": end["logits_gap"]}


def bench_config(s: Settings, config: str, sets: list[str], pairs: int, log) -> dict[str, dict[str, list[float]]]:
    """``pairs`` alternating runs (cnncli, then PyTorch) of one config; every figure per framework."""
    keys = ("train", "epoch_seconds", "eval", "rss", "wall")
    out: dict[str, dict[str, list[float]]] = {f: {k: [] for k in keys} for f in ("cnncli", "pytorch")}
    gaps = []
    for k in range(pairs):
        for name in ("cnncli", "pytorch"):
            r = run_ours(s, config, sets, f"{Path(config).stem}-{k}") if name == "cnncli" else \
                run_torch(s, config, sets)
            for key in keys:
                out[name][key].append(r[key])
            gaps += [r["logits_gap"]] if "logits_gap" in r else []
            log(f"{config} pair {k + 1}/{pairs} {name:7}: train {r['train']:,.0f} img/s, eval {r['eval']:,.0f} "
                f"img/s, peak RSS {r['rss']:,.0f} MiB, process {r['wall']:.1f} s")
    if max(gaps, default=0.0) > 1e-3:
        raise BenchError(f"{config}: the PyTorch network's logits differ from cnncli's by {max(gaps):.3g} before "
                         f"training: the translation in torch_loop.py is wrong, the comparison would be unfair")
    return out


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """Within the block, ``n`` other processes each keep one core busy (a Python loop that
    never sleeps): the load of another job on a shared machine. Killed on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def commit() -> str:
    """``git rev-parse --short HEAD`` of this checkout, ``+changes`` when tracked files differ."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    """CPU model (``/proc/cpuinfo``) and logical cores."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"


def versions() -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    return (f"Python {platform.python_version()}, NumPy {version('numpy')}, PyTorch {version('torch')}, "
            f"cnncli {version('cnncli')} (the checkout's code)")


def header(args, s: Settings) -> list[str]:
    threads = f"{s.threads} threads ({', '.join(THREAD_VARS)}; torch.set_num_threads" + \
        ("; cnncli train --threads)" if s.threads_flag else "; cnncli train has no --threads flag)")
    limits = "".join(f", {k} {v}" for k, v in (("train limit", args.train_limit), ("test limit", args.test_limit))
                     if v is not None)
    return [f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, commit {commit()}",
            f"machine: {machine()}; {versions()}",
            f"{threads}; {args.epochs} epoch(s) per run, {args.pairs} alternating pair(s), median (min-max); "
            f"augmentation {'off (data.augment=null)' if args.no_augment else 'as configured'}; cnncli output "
            f"{args.output}; evaluation batch {args.eval_batch}, median of {args.eval_repeats} passes{limits}",
            *([f"under load: {args.load} other CPU-bound process(es) (a busy Python loop each, nice 0) running "
               f"for the whole measurement"] if args.load else [])]


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["configs/mnist.yaml"], metavar="CONFIG")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per training run (default 1)")
    ap.add_argument("--pairs", type=int, default=3, help="alternating (cnncli, PyTorch) pairs (default 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads on both sides (default: all cores)")
    ap.add_argument("--no-augment", action="store_true", help="both sides without data.augment (--set data.augment=null)")
    ap.add_argument("--train-limit", type=int, default=None, help="train on about N images (smoke runs)")
    ap.add_argument("--test-limit", type=int, default=None, help="evaluate on N test images (smoke runs)")
    ap.add_argument("--eval-batch", type=int, default=1000)
    ap.add_argument("--eval-repeats", type=int, default=3, help="timed evaluation passes per process (default 3)")
    ap.add_argument("--output", choices=("tty", "plain", "json"), default="tty",
                    help="cnncli train's output: a pseudo-terminal (live progress, default), piped lines, or --json")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="keep N other CPU-bound processes (one busy core each) running for the whole "
                         "measurement, to see how each framework copes with a shared machine (default 0)")
    ap.add_argument("--save", type=Path, default=None, help="also write every figure as JSON to this file")
    args = ap.parse_args(argv)
    if args.load < 0:
        raise BenchError(f"--load must be at least 0, got {args.load}", exit_code=2)
    for name in ("epochs", "pairs", "threads", "train_limit", "test_limit", "eval_batch", "eval_repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1, got {value}", exit_code=2)
    if args.save is not None and not args.save.parent.is_dir():
        raise BenchError(f"--save {args.save}: folder {args.save.parent} does not exist; create it or pick "
                         f"another path", exit_code=2)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if importlib.util.find_spec("torch") is None:
            raise BenchError("PyTorch is not installed in this Python: pip install torch "
                             "(CPU build: --index-url https://download.pytorch.org/whl/cpu)", exit_code=2)
        from cnncli.config import load
        from cnncli.errors import CnncliError

        with tempfile.TemporaryDirectory(prefix="bench_epochs-") as tmp:
            plans = {}
            for config in args.configs:          # every config is checked before the first run
                try:
                    val_split = load(config).data.val_split
                except CnncliError as e:
                    raise BenchError(str(e), exit_code=2) from None
                plans[config] = bench_sets(val_split, no_augment=args.no_augment, train_limit=args.train_limit,
                                           test_limit=args.test_limit)
            cnncli = cnncli_command()
            s = Settings(args.epochs, args.threads, args.eval_batch, args.eval_repeats, args.output, Path(tmp),
                         cnncli, has_threads_flag(cnncli, child_env(args.threads, dict(os.environ), tty=False)),
                         dict(os.environ))
            with busy_processes(args.load):
                results = {config: bench_config(s, config, sets, args.pairs, lambda m: print(m, file=sys.stderr))
                           for config, sets in plans.items()}
        head = header(args, s)
        print(table(results, head))
        if args.save:
            args.save.write_text(json.dumps({"header": head, "results": results}, indent=1) + "\n")
        return 0
    except BenchError as e:
        print(f"bench_epochs.py: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
