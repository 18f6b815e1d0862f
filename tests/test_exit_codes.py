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
    """Exit 2 through ``typer.Exit`` (no exception escaped), no traceback, every fragment in the output."""
    out = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output, result.output
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
    out = user_error(r, "--batch-size", "batchnorm")        # the flag that set it, as time does
    assert "train.batch_size" not in out and not (tmp_path / "r").exists()


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


BN2D = """\
data: {{path: {data}}}
model:
  layers:
    - conv2d: {{out_channels: 4, kernel_size: 3}}
    - batchnorm
    - relu
    - flatten
    - linear: {{out_features: 10}}
train: {{epochs: 1}}
"""


def test_batch_size_1_is_fine_for_batchnorm_over_feature_maps(write_config, mnist_slice, tmp_path):
    """A 26x26 map gives 676 values per channel even for one image (PyTorch accepts it too)."""
    cfg = write_config(BN2D.format(data=mnist_slice))
    r = runner.invoke(app, ["time", str(cfg), "--batch-size", "1", "-n", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(cfg), "--batch-size", "1", "--out", str(tmp_path / "r"),
                            "--set", "data.train_limit=30", "--set", "data.val_split=0"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "last.npz").exists()


@pytest.mark.parametrize("command", ["time", "train"])
def test_a_batch_whose_activations_exceed_available_memory_is_refused_first(command, write_config, mnist_slice,
                                                                         tmp_path, monkeypatch):
    """Linux overcommits: such a batch is not a MemoryError but an out-of-memory kill, so it
    is refused from the model's own estimate before anything is allocated."""
    from cnncli import assemble
    from cnncli.config import load

    monkeypatch.setattr(assemble, "available_memory", lambda: 50 * 2**20)
    cfg = write_config(BN2D.format(data=mnist_slice))
    per_image = assemble.build_model(load(str(cfg)), (1, 28, 28)).training_bytes_per_image()
    # conv output 4x26x26 and its gradient, im2col 9 values per output pixel, then the rest
    assert per_image >= 4 * (2 * 4 * 26 * 26 + 9 * 26 * 26)
    fits = 50 * 2**20 // per_image
    args = ([command, str(cfg), "--batch-size", str(fits + 1)] +
            (["-n", "1"] if command == "time" else ["--out", str(tmp_path / "r")]))
    flag = "--batch-size"
    out = user_error(runner.invoke(app, args), "does not fit in memory", flag, f"at most about {fits:,}",
                     "50 MiB is available")
    assert "Traceback" not in out
    assert not (tmp_path / "r").exists()                # refused before the run folder is made


def test_summary_warns_about_what_train_would_refuse(write_config, mnist_slice, monkeypatch):
    """summary still shows the model (exit 0) but says, on stderr and in --json, that training
    would stop: a batch of one for a batchnorm on features, a batch beyond memory."""
    from cnncli import assemble

    cfg = write_config(BN1D.format(data=mnist_slice).replace("train: {epochs: 1}", "train: {batch_size: 1}"))
    r = runner.invoke(app, ["summary", str(cfg)])
    assert r.exit_code == 0 and "trainable parameters" in r.output
    assert "warning: training would stop" in r.output and "batchnorm" in r.output
    monkeypatch.setattr(assemble, "available_memory", lambda: 2**20)
    js = runner.invoke(app, ["summary", str(cfg), "--json", "--set", "train.batch_size=4096"])
    assert js.exit_code == 0
    data = __import__("json").loads(js.output.splitlines()[0])
    assert len(data["warnings"]) == 1 and "does not fit in memory" in data["warnings"][0]


def test_user_error_helper_checks_every_part():
    """The helper once read ``A and B or isinstance(exc, SystemExit)``: with exit code 2 the
    exception is always a SystemExit, so the traceback check never ran."""
    from types import SimpleNamespace

    clean = SimpleNamespace(exit_code=2, exception=SystemExit(2), output="error: bad batch size\n")
    assert user_error(clean, "bad batch size") == "error: bad batch size"
    traceback = SimpleNamespace(exit_code=2, exception=SystemExit(2),
                                output="Traceback (most recent call last):\n  ...\nerror: bad batch size\n")
    with pytest.raises(AssertionError):
        user_error(traceback, "bad batch size")
    escaped = SimpleNamespace(exit_code=2, exception=ValueError("escaped"), output="error: bad batch size\n")
    with pytest.raises(AssertionError):
        user_error(escaped)
