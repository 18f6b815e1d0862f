"""Training batches split by samples over the threads (``Model._forward_parts``, issue 14):
the same logits, gradients and dropout masks as the whole batch, runs that repeat bit for
bit, a bit-exact mid-epoch resume; and malloc's reuse of freed memory
(``threads.reuse_freed_memory``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from cnncli import threads
from cnncli.cli import app
from cnncli.model import LayerSpec, build
from cnncli import checkpoint
from test_resume import BASE, SETUPS
from test_resume_steps import fit_until

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

# every layer kind that keeps per-sample state for backward, and both dropouts (their masks
# are drawn for the whole batch before it is split)
LAYERS = [("conv2d", {"out_channels": 4, "kernel_size": 3, "padding": 1}), ("relu", {}),
          ("dropout2d", {"p": 0.3}), ("maxpool2d", {"kernel_size": 2}),
          ("conv2d", {"out_channels": 6, "kernel_size": 3, "groups": 2}), ("tanh", {}),
          ("avgpool2d", {"kernel_size": 2}), ("flatten", {}), ("linear", {"out_features": 12}),
          ("sigmoid", {}), ("dropout", {"p": 0.5}), ("linear", {"out_features": 10})]


def make_model(layers=LAYERS, seed=3):
    specs = [LayerSpec(t, o, path=f"model.layers[{i}]") for i, (t, o) in enumerate(layers)]
    return build(specs, (2, 12, 12), seed=seed, dtype=np.float64)


def step(model, x, dy, n_threads):
    """Training forward and backward on ``n_threads``: (logits, grads, input grad, parts used)."""
    with threads.limit(n_threads):
        logits = model.forward(x, training=True)
        parts = model._parts[0] if model._parts is not None else None
        dx = model.backward(dy, input_grad=True)
    return logits, {k: g.copy() for k, g in model.grads().items()}, dx, parts


def test_a_batch_split_over_two_threads_gives_the_whole_batch_values():
    """The whole batch on one thread is the reference (its layers are checked against PyTorch and
    numerical gradients elsewhere): split in two parts, the logits, every gradient and the input
    gradient agree to float64 rounding, and the dropout masks are the same draws."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 2, 12, 12))
    dy = rng.standard_normal((40, 10)) / 40
    whole, split = make_model(), make_model()
    ref = step(whole, x, dy, 1)
    got = step(split, x, dy, 2)
    assert ref[3] is None and got[3] == [0, 20, 40]
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12)
    assert ref[1].keys() == got[1].keys()
    for k in ref[1]:
        np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-10, atol=1e-13, err_msg=k)
    np.testing.assert_allclose(got[2], ref[2], rtol=0, atol=1e-13)
    # the generator is where one unsplit pass leaves it: the next masks are the same draws too
    assert split.rng.bit_generator.state == whole.rng.bit_generator.state
    assert all(getattr(layer, "keep", None) is None for layer in split.layers)
    # a second step: the split's layer copies share the updated weights
    for m in (whole, split):
        for p, g in zip(m.params().values(), m.grads().values()):
            p -= 0.1 * g
    ref, got = step(whole, x, dy, 1), step(split, x, dy, 2)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12)


def test_a_gradient_is_the_sum_of_the_parts_in_part_order():
    """Without dropout, each part's gradient is that of its images alone (one pass over them on
    one thread): the split's gradient is part 0's plus part 1's, bit for bit."""
    layers = [lt for lt in LAYERS if not lt[0].startswith("dropout")]
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((32, 2, 12, 12)), rng.standard_normal((32, 10))
    halves = []
    for s in (slice(0, 16), slice(16, 32)):
        m = make_model(layers)
        halves.append(step(m, x[s], dy[s], 1)[1])
    _, got, _, parts = step(make_model(layers), x, dy, 2)
    assert parts == [0, 16, 32]
    for k in got:
        assert np.array_equal(got[k], halves[0][k] + halves[1][k]), k


@pytest.mark.parametrize("bn, n, expected", [({}, 64, None), ({"trainable": False}, 64, [0, 32, 64]),
                                             ({"trainable": False}, 31, None),
                                             ({"trainable": False, "track_running_stats": False}, 64, None)])
def test_batchnorm_in_training_or_small_batches_run_whole(bn, n, expected):
    """Batchnorm normalizes with the whole batch's statistics, so a model that trains one runs
    whole (channel-split layers); a frozen one normalizes each sample alone by its running
    statistics, unless it keeps none (then it uses the batch's, as PyTorch). Parts of fewer
    than MIN_PART (16) images are not worth a thread."""
    layers = [("conv2d", {"out_channels": 4, "kernel_size": 3}),
              ("batchnorm", bn), ("flatten", {}), ("linear", {"out_features": 3})]
    specs = [LayerSpec(t, o, path=f"model.layers[{i}]") for i, (t, o) in enumerate(layers)]
    model = build(specs, (1, 8, 8), seed=0)
    with threads.limit(2):
        assert model._sample_parts(n) == expected


NO_BATCHNORM = BASE.replace("    - batchnorm\n", "")


def assert_same_state(a, b):
    """The weights, the optimizer state and the counters of two checkpoints are the same bits
    (a model without batchnorm has no buffers)."""
    ca, cb = checkpoint.load(a), checkpoint.load(b)
    for kind in ("params", "optim"):
        x, y = getattr(ca, kind), getattr(cb, kind)
        assert x.keys() == y.keys() and x, kind
        for k in x:
            assert np.array_equal(x[k], y[k]), f"{kind} {k} differs"
    for key in ("epoch", "step", "rng", "optimizer", "schedule", "best", "metrics"):
        assert ca.meta[key] == cb.meta[key], key


def test_split_runs_repeat_and_resume_mid_epoch_bit_for_bit(write_config, mnist_slice, tmp_path):
    """Two threads, a model the batches split over (dropout, augmentation, no batchnorm): two
    runs write the same bytes, and Ctrl-C at steps 3 and 11 then --resume ends as the run
    that was never stopped."""
    assert "batchnorm" not in NO_BATCHNORM
    cfg = write_config(NO_BATCHNORM.format(data=mnist_slice, epochs=2, augment="{translate: 2, hflip: true}",
                                           **{**SETUPS["sgd-onecycle-every"], "extra": "  threads: 2\n"}), "s.yaml")
    for name in ("a", "b"):
        r = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / name), "-q"])
        assert r.exit_code == 0, r.output
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert_same_state(a / "last.npz", b / "last.npz")
    resume = None
    for stop in (3, 11):
        resume = fit_until(cfg, tmp_path / "c", stop, resume)
    fit_until(cfg, tmp_path / "c", None, resume)
    assert (a / "metrics.jsonl").read_bytes() == (tmp_path / "c" / "metrics.jsonl").read_bytes()
    assert_same_state(a / "last.npz", tmp_path / "c" / "last.npz")


FAULTS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from cnncli import config as C, threads
    from cnncli.assemble import build_model, make_optimizer
    from cnncli.losses import softmax_cross_entropy
    if sys.argv[1] == "default":
        threads._malloc_state.update(done=True, in_force=False)     # as before the setting existed
    cfg = C.load(sys.argv[2])
    model = build_model(cfg, (1, 28, 28))
    optimizer = make_optimizer(cfg, model)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((128, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 128)
    def step():
        loss, dlogits = softmax_cross_entropy(model.forward(x, training=True), y)
        model.backward(dlogits, input_grad=False)
        optimizer.step(model.grads())
    with threads.limit(1):
        for _ in range(3):
            step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc tunables")
def test_a_training_step_reuses_freed_memory_instead_of_faulting_in_new_pages():
    """A LeNet-5 training step (configs/lenet5.yaml, batch 128, one thread) frees and allocates
    the same large arrays every time. By glibc's defaults each step faults in new pages
    (measured: about 2,000 per step); with ``threads.reuse_freed_memory`` (in force in every
    ``threads.limit``) the freed memory is reused: minor page faults counted, not time."""
    import os
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    faults = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    for mode in ("default", "reuse"):
        out = subprocess.run([sys.executable, "-c", FAULTS, mode, str(ROOT / "configs" / "lenet5.yaml")],
                             capture_output=True, text=True, check=True, env=env, cwd=ROOT)
        faults[mode] = float(out.stdout.split()[-1])
    assert faults["default"] > 500, faults
    assert faults["reuse"] < faults["default"] / 10, faults
