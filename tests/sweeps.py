"""Helpers of the sweep tests: run ``cnncli`` in a process, write a sweep, read the study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY = """\
data: {{path: {data}, val_split: 100, mean: 0.1307, std: 0.3081, train_limit: 400, test_limit: 100}}
model:
  input_shape: [1, 28, 28]
  layers:
    - avgpool2d: {{kernel_size: 4}}
    - conv2d: {{out_channels: 4, kernel_size: 3, padding: 1}}
    - batchnorm
    - relu
    - maxpool2d: {{kernel_size: 2, stride: 2}}
    - dropout: {{p: 0.25}}
    - flatten
    - linear: {{out_features: 10}}
train: {{epochs: {epochs}, batch_size: 32, seed: 0, optimizer: {{type: sgd, lr: 0.05}}}}
"""


def env() -> dict:
    """This checkout's cnncli first, plain output, one BLAS thread."""
    return {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "OPENBLAS_NUM_THREADS": "1"}


def cnncli(*args, cwd: Path, timeout: float = 240, extra_env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """``cnncli ARGS`` in a new process (the sweep's workers are processes anyway)."""
    return subprocess.run([sys.executable, "-m", "cnncli", *map(str, args)], cwd=cwd, env={**env(), **(extra_env or {})},
                          text=True, capture_output=True, timeout=timeout, **kw)


def start(*args, cwd: Path) -> subprocess.Popen:
    """``cnncli ARGS`` started in the background (output in pipes)."""
    return subprocess.Popen([sys.executable, "-m", "cnncli", *map(str, args)], cwd=cwd, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def write(tmp: Path, data: Path, sweep: str, epochs: int = 1) -> tuple[Path, Path]:
    """The tiny config (on ``data``) and the sweep file ``sweep`` in ``tmp``."""
    (tmp / "config.yaml").write_text(TINY.format(data=data, epochs=epochs))
    (tmp / "sweep.yaml").write_text(sweep)
    return tmp / "config.yaml", tmp / "sweep.yaml"


def trials(url: str, study: str) -> list:
    """The study's trials, read with Optuna itself."""
    optuna = pytest.importorskip("optuna")
    from cnncli.sweep.study import with_driver

    return optuna.load_study(study_name=study, storage=with_driver(url)).get_trials(deepcopy=False)


def metrics(run_dir: str) -> list[dict]:
    """The rows of a run folder's metrics.jsonl."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
