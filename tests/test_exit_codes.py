"""Bad input exits 2 with a message naming what to change, never a traceback: batch sizes that
a model cannot take (train and time), a full disk, an invalid --mirror URL."""

from __future__ import annotations

import errno

import pytest
from typer.testing import CliRunner

from cnncli.cli import app

runner = CliRunner()

BN1D = """\
data: {{path: {data}}}
model:
  layers:
    - flatten
    - linear: {{out_features: 32}}
    - batchnorm
    - relu
    - linear: {{out_features: 10}}
train: {{epochs: 1}}
"""


def user_error(result, *fragments):
    out = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    for f in fragments:
        assert f in out, out
    return out


def test_time_with_batch_size_1_and_batchnorm_names_the_flag(write_config, mnist_slice):
    cfg = write_config(BN1D.format(data=mnist_slice))
    user_error(runner.invoke(app, ["time", str(cfg), "--batch-size", "1"]), "--batch-size", "batchnorm",
               "2 or more")


def test_time_with_a_batch_too_large_for_memory_names_the_flag(write_config, mnist_slice, monkeypatch):
    import cnncli.timing

    def oom(*a, **k):
        raise MemoryError
    monkeypatch.setattr(cnncli.timing, "time_model", oom)
    cfg = write_config(BN1D.format(data=mnist_slice))
    out = user_error(runner.invoke(app, ["time", str(cfg), "--batch-size", "100000000"]), "--batch-size")
    assert "train.batch_size" not in out


def test_train_with_batch_size_1_and_batchnorm_exits_2_before_training(write_config, mnist_slice, tmp_path):
    cfg = write_config(BN1D.format(data=mnist_slice))
    r = runner.invoke(app, ["train", str(cfg), "--batch-size", "1", "--out", str(tmp_path / "r")])
    user_error(r, "train.batch_size", "batchnorm")
    assert not (tmp_path / "r" / "last.npz").exists()


def test_a_full_disk_while_saving_exits_2(write_config, mnist_slice, tmp_path, monkeypatch):
    from cnncli import checkpoint

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint, "save", full)
    cfg = write_config(BN1D.format(data=mnist_slice))
    r = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "r")])
    user_error(r, "No space left on device", "Free disk space")


@pytest.mark.parametrize("url", ["http://[::1", "http://host:port/"])
def test_invalid_mirror_url_exits_2(tmp_path, url):
    r = runner.invoke(app, ["data", "download", "mnist", "--to", str(tmp_path / "x"), "--mirror", url])
    user_error(r, "invalid --mirror URL")
