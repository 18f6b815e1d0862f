"""Shared fixtures: a small real MNIST slice and config writers."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from cnncli.datasets import load_split

# CI runs the property tests on fixed examples (Hypothesis's advice for CI), so a landing
# never hangs on a newly drawn one; everywhere else they draw new examples each run, and
# tests/fuzz_run.py or CNNCLI_FUZZ_EXAMPLES=N explore further.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "data" / "mnist"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip IDX file (the MNIST header: 0, 0, 0x08, ndim, dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def mnist_slice(tmp_path_factory) -> Path:
    """A folder with the first 600 training and 200 test images of the real MNIST."""
    folder = tmp_path_factory.mktemp("mnist-slice")
    train = load_split(MNIST, "train", 600)
    test = load_split(MNIST, "test", 200)
    write_idx(folder / "train-images-idx3-ubyte.gz", train.images[:, 0])
    write_idx(folder / "train-labels-idx1-ubyte.gz", train.labels.astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", test.images[:, 0])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", test.labels.astype(np.uint8))
    return folder


@pytest.fixture
def write_config(tmp_path):
    """Write YAML text to tmp_path/name and return its path."""
    def write(text: str, name: str = "config.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return write
