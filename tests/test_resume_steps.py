"""Mid-epoch resume: a run stopped at any step (Ctrl-C's interrupted.npz, or the last.npz of
``train.checkpoint.every_steps``) and resumed ends bit for bit as the uninterrupted run, with
augmentation, dropout, shuffling and a per-step schedule on."""

from __future__ import annotations

import json
import random

import pytest

from cnncli import checkpoint, training
from test_resume import assert_same_state, make_config, run_fit

# 500 training images in batches of 64: 8 steps per epoch, the last one of 52 images
STEPS_PER_EPOCH, EPOCHS = 8, 3


def stop_at(step):
    """An event handler that raises KeyboardInterrupt (what Ctrl-C does) after optimizer step ``step``."""
    def handler(e):
        if isinstance(e, training.BatchEnded) and e.step == step:
            raise KeyboardInterrupt
    return handler


def fit_until(cfg, run_dir, step, resume=None):
    """Train, stopping after ``step`` (None: to the end); return the checkpoint to resume from."""
    from cnncli import config as C
    from cnncli.assemble import build_model
    from cnncli.data import prepare_data

    c = C.load(cfg)
    data = prepare_data(c)
    model = build_model(c, data.train.image_shape, num_classes=data.num_classes)
    run_dir.mkdir(parents=True, exist_ok=True)
    ck = checkpoint.load(resume) if resume is not None else None
    if step is None:
        return training.fit(c, model, data, run_dir, lambda e: None, resume=ck)
    with pytest.raises(training.TrainingInterrupted) as info:
        training.fit(c, model, data, run_dir, stop_at(step), resume=ck)
    return info.value.resume_from


def assert_same_run(a, b):
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert_same_state(a / "last.npz", b / "last.npz")
    assert_same_state(a / "best.npz", b / "best.npz")


@pytest.mark.parametrize("setup", ["adamw-cosine-warmup", "sgd-onecycle-every"])
def test_ctrl_c_at_random_steps_then_resume_is_bit_identical(write_config, mnist_slice, tmp_path, setup):
    cfg = make_config(write_config, mnist_slice, epochs=EPOCHS, setup=setup)
    run_fit(cfg, tmp_path / "full")
    total = STEPS_PER_EPOCH * EPOCHS
    # mid-epoch steps, an epoch's last batch (trained, not yet validated) and a random pick
    steps = sorted({3, STEPS_PER_EPOCH, random.Random(setup).randrange(STEPS_PER_EPOCH + 1, total - 1)})
    split, resume = tmp_path / "split", None
    for step in steps:
        resume = fit_until(cfg, split, step, resume)
        assert resume == split / "interrupted.npz"
        ck = checkpoint.load(resume)
        assert ck.meta["step"] == step and ck.meta["position"]["batch"] == (step - 1) % STEPS_PER_EPOCH + 1
    fit_until(cfg, split, None, resume)
    assert not (split / "interrupted.npz").exists()
    assert_same_run(tmp_path / "full", split)


def test_every_steps_writes_a_last_npz_that_resumes_mid_epoch(write_config, mnist_slice, tmp_path):
    cfg = make_config(write_config, mnist_slice, epochs=2, extra="  checkpoint: {every_steps: 5}\n")
    fit_until(cfg, tmp_path / "full", None)
    # a kill (no Ctrl-C handling) after step 12: last.npz holds step 10, batch 2 of epoch 2
    fit_until(cfg, tmp_path / "split", 12)
    (tmp_path / "split" / "interrupted.npz").unlink()
    last = checkpoint.load(tmp_path / "split" / "last.npz")
    assert (last.meta["epoch"], last.meta["step"], last.meta["position"]["batch"]) == (1, 10, 2)
    fit_until(cfg, tmp_path / "split", None, tmp_path / "split" / "last.npz")
    assert_same_run(tmp_path / "full", tmp_path / "split")


def test_a_kill_between_an_epoch_line_and_its_commit_at_an_every_steps_save(write_config, mnist_slice, tmp_path):
    """every_steps: 8 saves last.npz at step 16, the last step of epoch 2, before epoch 2's
    metrics line is written; a kill after that line and before epoch 2's commit leaves the line
    at the checkpoint's own step. The resumed run writes it again: the folder must end with
    one line per epoch, as the uninterrupted run (found by tests/chaos.py: a doubled line)."""
    cfg = make_config(write_config, mnist_slice, epochs=3, extra="  checkpoint: {every_steps: 8}\n")
    fit_until(cfg, tmp_path / "full", None)
    full_lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    fit_until(cfg, tmp_path / "split", 16)          # Ctrl-C after step 16: epoch 2 not validated
    split = tmp_path / "split"
    (split / "interrupted.npz").unlink()            # as a kill leaves it: last.npz of step 16
    last = checkpoint.load(split / "last.npz")
    assert (last.meta["epoch"], last.meta["step"]) == (1, 16) and last.meta["metrics"]["epoch"] == 1
    # the kill came after epoch 2's line was written
    (split / "metrics.jsonl").write_text("\n".join(full_lines[:2]) + "\n")
    timing = (split / "timing.jsonl").read_text()
    row = {**json.loads(timing.splitlines()[0]), "epoch": 2, "step": 16}
    (split / "timing.jsonl").write_text(timing + json.dumps(row) + "\n")
    fit_until(cfg, split, None, split / "last.npz")
    assert_same_run(tmp_path / "full", split)
    assert len((split / "timing.jsonl").read_text().splitlines()) == 3


def test_a_step_cut_short_by_a_second_ctrl_c_is_not_resumed(write_config, mnist_slice, tmp_path):
    from typer.testing import CliRunner
    from cnncli.cli import app

    cfg = make_config(write_config, mnist_slice, epochs=2)
    with pytest.raises(training.TrainingInterrupted):
        run_fit(cfg, tmp_path / "r", stop_after=1)
    ck = checkpoint.load(tmp_path / "r" / "interrupted.npz")
    meta = {**ck.meta, "partial": True, "batch": 3}
    checkpoint.save(tmp_path / "r" / "interrupted.npz", params=ck.params, buffers=ck.buffers, optim=ck.optim,
                    config=ck.config, meta=meta)
    r = CliRunner().invoke(app, ["train", str(cfg), "--resume", str(tmp_path / "r" / "interrupted.npz")])
    assert r.exit_code == 2 and "a second Ctrl-C cut its last step short" in r.output
    assert f"Resume from {tmp_path / 'r' / 'last.npz'} (epoch 1)" in " ".join(r.output.split())


# train.max_steps / train.val_every: 21 steps (2 epochs of 8 and 5 steps of a third), validated at
# steps 5, 10, 15, 20 and 21; the windows straddle the epoch ends (steps 8 and 16)
BY_STEPS = "  max_steps: 21\n  val_every: 5\n"


def steps_config(write_config, mnist_slice, setup):
    text = make_config(write_config, mnist_slice, epochs=3, setup=setup).read_text()
    return write_config(text.replace("  epochs: 3\n", BY_STEPS), "steps.yaml")


def stop_on(kind, at):
    """Raise KeyboardInterrupt on the event ``kind`` whose step (epoch, for EpochStarted) is ``at``."""
    def handler(e):
        if isinstance(e, kind) and getattr(e, "step", getattr(e, "epoch", None)) == at:
            raise KeyboardInterrupt
    return handler


@pytest.mark.parametrize("setup", ["sgd-onecycle-every", "rmsprop-plateau-early-stop"])
def test_max_steps_val_every_ctrl_c_then_resume_is_bit_identical(write_config, mnist_slice, tmp_path, setup):
    from cnncli import config as C
    from cnncli.assemble import build_model
    from cnncli.data import prepare_data

    cfg = steps_config(write_config, mnist_slice, setup)
    fit_until(cfg, tmp_path / "full", None)
    rows = [__import__("json").loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    # early stopping (min_delta 10, patience 3) ends the plateau run at its 4th validation
    expected = [(1, 5), (2, 10), (2, 15), (3, 20), (3, 21)][:4 if setup.startswith("rmsprop") else 5]
    assert [(r["epoch"], r["step"]) for r in rows] == expected
    events = [
        (training.BatchEnded, 3),            # mid-epoch, mid-window
        (training.EpochStarted, 2),          # between epochs, a window (steps 6-8) not yet reported
        (training.ValidationEnded, 10),      # right after a validation's commit
        (training.BatchEnded, random.Random(setup).choice([11, 12, 13, 14, 16, 17, 18, 19])),
    ]
    split, resume = tmp_path / "split", None
    for kind, at in events:
        c = C.load(cfg)
        data = prepare_data(c)
        model = build_model(c, data.train.image_shape, num_classes=data.num_classes)
        split.mkdir(exist_ok=True)
        with pytest.raises(training.TrainingInterrupted) as info:
            training.fit(c, model, data, split, stop_on(kind, at),
                         resume=checkpoint.load(resume) if resume is not None else None)
        resume = info.value.resume_from
        assert resume == split / ("last.npz" if kind is training.ValidationEnded else "interrupted.npz")
    fit_until(cfg, split, None, resume)
    assert not (split / "interrupted.npz").exists()
    assert_same_run(tmp_path / "full", split)
    best = checkpoint.load(split / "best.npz").meta
    assert best["step"] == best["best"]["best_step"] and (best["epoch"], best["step"]) != (0, 0)
