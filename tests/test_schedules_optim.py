"""RMSprop, weight-decay exclusion, schedules, gradient clipping, augmentation and callbacks
against closed forms, hand-computed values and (when installed) torch."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from cnncli.augment import Augment, translate_batch
from cnncli.callbacks import EarlyStopping, Monitor
from cnncli.optim import OPTIMIZERS, SGD, AdamW, RMSprop
from cnncli.schedules import SCHEDULES, make_schedule, steps_per_epoch
from cnncli.training import clip_grad_norm

# ------------------------------------------------------------------ rmsprop

def test_rmsprop_first_steps_closed_form():
    p = np.array([1.0, -1.0])
    g = np.array([0.5, 2.0])
    RMSprop({"w": p}, lr=0.01, alpha=0.9, eps=1e-8).step({"w": g})
    v = 0.1 * g ** 2                                   # v = (1 - alpha) g^2
    np.testing.assert_allclose(p, [1.0, -1.0] - 0.01 * g / (np.sqrt(v) + 1e-8), rtol=1e-12)


def test_rmsprop_centered_momentum_two_steps_by_hand():
    p = np.array([2.0])
    opt = RMSprop({"w": p}, lr=0.1, alpha=0.5, eps=0.0, momentum=0.9, centered=True, weight_decay=0.1)
    opt.step({"w": np.array([1.0])})
    # g = 1 + 0.1*2 = 1.2; v = 0.5*1.44 = 0.72; a = 0.6; d = sqrt(0.72 - 0.36) = 0.6; b = 1.2/0.6 = 2
    np.testing.assert_allclose(p, [2.0 - 0.1 * 2.0])
    opt.step({"w": np.array([1.0])})
    g = 1.0 + 0.1 * 1.8
    v = 0.5 * 0.72 + 0.5 * g * g
    a = 0.6 + 0.5 * (g - 0.6)
    b = 0.9 * 2.0 + g / math.sqrt(v - a * a)
    np.testing.assert_allclose(p, [1.8 - 0.1 * b], rtol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.1},
                                {"lr": 0.005, "momentum": 0.9}, {"lr": 0.005, "centered": True},
                                {"lr": 0.001, "momentum": 0.5, "centered": True, "weight_decay": 0.01, "eps": 1e-6}])
def test_rmsprop_matches_torch(kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((4, 3))
    p = p0.copy()
    ours = RMSprop({"w": p}, **kw)
    tp = torch.nn.Parameter(torch.tensor(p0))
    theirs = torch.optim.RMSprop([tp], **kw)
    for _ in range(6):
        g = rng.standard_normal((4, 3))
        ours.step({"w": g})
        tp.grad = torch.tensor(g)
        theirs.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_rmsprop_keeps_float32():
    p = np.ones(3, np.float32)
    opt = RMSprop({"w": p}, momentum=0.9, centered=True, weight_decay=0.1)
    opt.step({"w": np.full(3, 0.5, np.float32)})
    assert p.dtype == np.float32 and all(a.dtype == np.float32 for a in opt.state_arrays().values())


# ------------------------------------------------------------------ weight decay exclusion

@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_exclude_bias_and_norm_skips_decay_exactly_there(name):
    params = {"0.weight": np.ones(2), "0.bias": np.ones(2), "1.weight": np.ones(2), "1.bias": np.ones(2)}
    zero = {k: np.zeros(2) for k in params}
    opt = OPTIMIZERS[name](params, lr=0.1, weight_decay=0.5, exclude_bias_and_norm=True, norm_keys={"1.weight"})
    opt.step(zero)
    assert params["0.weight"][0] < 1.0                        # decayed
    for k in ("0.bias", "1.weight", "1.bias"):
        assert np.array_equal(params[k], np.ones(2)), k       # zero gradient, no decay: untouched


def test_exclusion_is_off_by_default():
    params = {"0.bias": np.ones(1)}
    SGD(params, lr=0.1, weight_decay=0.5).step({"0.bias": np.zeros(1)})
    np.testing.assert_allclose(params["0.bias"], [1 - 0.05])


def test_exclusion_matches_torch_param_groups():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    init = {"0.weight": rng.standard_normal((3, 2)), "0.bias": rng.standard_normal(2), "1.weight": rng.standard_normal(2)}
    params = {k: v.copy() for k, v in init.items()}
    ours = AdamW(params, lr=0.01, weight_decay=0.1, exclude_bias_and_norm=True, norm_keys={"1.weight"})
    tps = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    theirs = torch.optim.AdamW([{"params": [tps["0.weight"]]},
                                {"params": [tps["0.bias"], tps["1.weight"]], "weight_decay": 0.0}],
                               lr=0.01, weight_decay=0.1)
    for _ in range(4):
        grads = {k: rng.standard_normal(v.shape) for k, v in init.items()}
        ours.step(grads)
        for k, t in tps.items():
            t.grad = torch.tensor(grads[k])
        theirs.step()
    for k in init:
        np.testing.assert_allclose(params[k], tps[k].detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,kw", [("sgd", {"momentum": 0.9}), ("adam", {}),
                                     ("rmsprop", {"momentum": 0.9, "centered": True}),
                                     ("adadelta", {}), ("adagrad", {"lr_decay": 0.1}), ("adamax", {}),
                                     ("nadam", {})])
def test_state_round_trip_continues_bit_for_bit(name, kw):
    rng = np.random.default_rng(3)
    grads = [{"w": rng.standard_normal(5).astype(np.float32)} for _ in range(6)]
    a = {"w": np.ones(5, np.float32)}
    oa = OPTIMIZERS[name](a, **kw)
    for g in grads:
        oa.step(g)
    b = {"w": np.ones(5, np.float32)}
    ob = OPTIMIZERS[name](b, **kw)
    for g in grads[:3]:
        ob.step(g)
    c = {"w": b["w"].copy()}
    oc = OPTIMIZERS[name](c, **kw)
    oc.load_state_arrays({k: v.copy() for k, v in ob.state_arrays().items()}, ob.steps)
    for g in grads[3:]:
        oc.step(g)
    assert np.array_equal(a["w"], c["w"])
    with pytest.raises(ValueError, match="does not belong"):
        oc.load_state_arrays({"w/nonsense": np.zeros(5)}, 1)


# ------------------------------------------------------------------ schedules: formulas

def lrs(name, opts, base=0.1, epochs=10, spe=1, per_step=False):
    s = make_schedule(name, opts, base, epochs, spe)
    if per_step:
        return [s.lr(k // spe, k) for k in range(epochs * spe)]
    return [s.lr(e, e * spe) for e in range(epochs)]


def test_every_schedule_has_a_formula_test():
    assert set(SCHEDULES) == {"constant", "step", "multistep", "exponential", "cosine", "onecycle",
                              "reduce_on_plateau", "inv", "poly", "sigmoid"}   # the last three: test_schedules_more


def test_closed_forms():
    assert lrs("constant", {}) == [0.1] * 10
    assert lrs("step", {"step_size": 3, "gamma": 0.5}) == pytest.approx([0.1 * 0.5 ** (e // 3) for e in range(10)])
    assert lrs("multistep", {"milestones": [2, 5], "gamma": 0.1}) == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001, 0.001])
    assert lrs("exponential", {"gamma": 0.9}) == pytest.approx([0.1 * 0.9 ** e for e in range(10)])
    cos = lrs("cosine", {"eta_min": 0.001})
    assert cos == pytest.approx([0.001 + 0.099 * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(10)])
    warm = lrs("cosine", {"warmup_epochs": 3}, epochs=8)
    assert warm[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])    # base (e+1)/(w+1), then the cosine from base
    assert warm[4:] == pytest.approx([0.05 * (1 + math.cos(math.pi * k / 5)) for k in range(1, 5)])
    assert lrs("cosine", {"warmup_epochs": 3}, epochs=2) == pytest.approx([0.025, 0.05])   # a run inside the warmup


def test_onecycle_by_hand():
    # 10 steps, pct 0.3: phase 1 ends at step 2 (initial -> max), phase 2 at step 9 (max -> min)
    steps = lrs("onecycle", {"max_lr": 1.0, "div_factor": 10.0, "final_div_factor": 100.0},
                base=0.5, epochs=2, spe=5, per_step=True)
    initial, final = 0.1, 0.001
    assert steps[0] == pytest.approx(initial) and steps[2] == pytest.approx(1.0) and steps[9] == pytest.approx(final)
    assert steps[1] == pytest.approx(1.0 + (initial - 1.0) / 2 * (math.cos(math.pi * 0.5) + 1))
    assert steps[5] == pytest.approx(final + (1.0 - final) / 2 * (math.cos(math.pi * 3 / 7) + 1))
    assert lrs("onecycle", {}, base=0.5, epochs=1, spe=4, per_step=True)[0] == pytest.approx(0.5 / 25)  # max_lr = lr


def test_plateau_by_hand():
    s = make_schedule("reduce_on_plateau", {"patience": 1, "factor": 0.5, "cooldown": 1, "min_lr": 0.02}, 0.1, 20, 1)
    seen = []
    for loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]:
        seen.append(s.lr(0, 0))
        s.epoch_end({"val_loss": loss, "train_loss": 0.0})
    # bad epochs 3,4 -> halve after epoch 4; cooldown epoch 5; bad 6,7 -> halve; ... floor 0.02
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025])
    s.epoch_end({"val_loss": 0.95, "train_loss": 0.0})
    s.epoch_end({"val_loss": 0.95, "train_loss": 0.0})
    assert s.lr(0, 0) == pytest.approx(0.02)


def test_plateau_reads_training_metrics_without_validation():
    s = make_schedule("reduce_on_plateau", {"patience": 0, "monitor": "val_accuracy"}, 0.1, 5, 1)
    s.epoch_end({"train_accuracy": 0.5, "train_loss": 1.0})
    s.epoch_end({"train_accuracy": 0.4, "train_loss": 1.0})
    assert s.lr(0, 0) == pytest.approx(0.01)


def test_steps_per_epoch_drops_a_last_batch_of_one():
    assert steps_per_epoch(501, 100) == 5 and steps_per_epoch(502, 100) == 6 and steps_per_epoch(50, 100) == 1


@pytest.mark.parametrize("name,opts,message", [
    ("step", {"step_size": 0}, "step_size must be >= 1"),
    ("multistep", {"milestones": [3, 3]}, "strictly increasing"),
    ("exponential", {"gamma": 0}, "gamma must be > 0"),
    ("cosine", {"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
    ("onecycle", {"pct_start": 1.0}, "pct_start must be < 1"),
    ("reduce_on_plateau", {"factor": 1.0}, "factor must be < 1"),
    ("reduce_on_plateau", {"monitor": "loss"}, "monitor must be one of"),
])
def test_bad_schedule_options_raise_value_error_naming_the_option(name, opts, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(name, opts, 0.1, 10, 5)


# ------------------------------------------------------------------ schedules: torch

def _torch_epoch_lrs(torch, make, epochs):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


@pytest.mark.parametrize("name,opts", [
    ("step", {"step_size": 3, "gamma": 0.5}),
    ("multistep", {"milestones": [2, 5, 6], "gamma": 0.3}),
    ("exponential", {"gamma": 0.8}),
    ("cosine", {"eta_min": 0.002}),
    ("cosine", {"eta_min": 0.001, "warmup_epochs": 3}),
])
def test_epoch_schedules_match_torch(name, opts):
    torch = pytest.importorskip("torch")
    S = torch.optim.lr_scheduler
    E = 12

    def make(opt):
        if name == "step":
            return S.StepLR(opt, **opts)
        if name == "multistep":
            return S.MultiStepLR(opt, **opts)
        if name == "exponential":
            return S.ExponentialLR(opt, **opts)
        w = opts.get("warmup_epochs", 0)
        cosine = S.CosineAnnealingLR(opt, T_max=E - w, eta_min=opts["eta_min"])
        if not w:
            return cosine
        warm = S.LinearLR(opt, start_factor=1 / (w + 1), end_factor=1.0, total_iters=w)
        return S.SequentialLR(opt, [warm, cosine], milestones=[w])

    assert lrs(name, opts, epochs=E) == pytest.approx(_torch_epoch_lrs(torch, make, E), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("opts", [{"max_lr": 0.3}, {"max_lr": 0.05, "pct_start": 0.25, "div_factor": 10.0,
                                                    "final_div_factor": 100.0}])
def test_onecycle_matches_torch(opts):
    torch = pytest.importorskip("torch")
    E, spe = 3, 7
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, total_steps=E * spe, cycle_momentum=False, **opts)
    theirs = []
    for _ in range(E * spe):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs("onecycle", opts, epochs=E, spe=spe, per_step=True) == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("opts,metric", [({"patience": 2, "factor": 0.5, "cooldown": 1}, "val_loss"),
                                         ({"patience": 0, "threshold": 0.05, "min_lr": 0.004}, "val_loss"),
                                         ({"monitor": "val_accuracy", "patience": 1}, "val_accuracy")])
def test_plateau_matches_torch(opts, metric):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    values = list(np.cumsum(rng.normal(0.0, 0.1, 30)) + 5.0)
    ours = make_schedule("reduce_on_plateau", opts, 0.1, 30, 1)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    kw = {k: v for k, v in opts.items() if k != "monitor"}
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max" if "accuracy" in metric else "min", **kw)
    for v in values:
        assert ours.lr(0, 0) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        ours.epoch_end({"val_loss": 0.0, metric: float(v)})
        sched.step(float(v))


def test_plateau_state_round_trip():
    a = make_schedule("reduce_on_plateau", {"patience": 1}, 0.1, 9, 1)
    for v in (1.0, 2.0, 2.0, 2.0):
        a.epoch_end({"val_loss": v})
    b = make_schedule("reduce_on_plateau", {"patience": 1}, 0.1, 9, 1)
    b.load_state(__import__("json").loads(__import__("json").dumps(a.state())))
    for v in (0.5, 3.0, 3.0, 3.0):
        a.epoch_end({"val_loss": v})
        b.epoch_end({"val_loss": v})
        assert a.lr(0, 0) == b.lr(0, 0)


# ------------------------------------------------------------------ gradient clipping

def test_clip_grad_norm_by_hand():
    grads = {"a": np.array([3.0]), "b": np.array([4.0])}            # norm 5
    clipped, total = clip_grad_norm(grads, 1.0)
    assert total == pytest.approx(5.0)
    np.testing.assert_allclose(clipped["a"], [3.0 / (5 + 1e-6)])
    same, _ = clip_grad_norm(grads, 10.0)
    assert same is grads                                             # coef >= 1: untouched
    np.testing.assert_array_equal(grads["a"], [3.0])


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    grads = {k: rng.standard_normal(s) for k, s in (("w", (3, 4)), ("b", (4,)))}
    ps = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads.values()]
    for p, g in zip(ps, grads.values()):
        p.grad = torch.tensor(g)
    total = torch.nn.utils.clip_grad_norm_(ps, 0.7)
    clipped, ours = clip_grad_norm(grads, 0.7)
    assert ours == pytest.approx(float(total), rel=1e-12)
    for p, g in zip(ps, clipped.values()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12)


def test_clip_keeps_float32_and_huge_norms_finite():
    grads = {"w": np.full(4, 3e19, np.float32)}                     # the float32 square would overflow
    clipped, total = clip_grad_norm(grads, 1.0)
    assert math.isfinite(total) and clipped["w"].dtype == np.float32
    assert float(np.linalg.norm(clipped["w"].astype(np.float64))) == pytest.approx(1.0, rel=1e-5)


# ------------------------------------------------------------------ augmentation

def _reference_translate(images, dy, dx, n):
    """Per-sample loop: zero-pad by n then crop at (n + dy, n + dx), as RandomCrop(padding=n)."""
    N, _, H, W = images.shape
    out = np.empty_like(images)
    for i in range(N):
        padded = np.pad(images[i], ((0, 0), (n, n), (n, n)))
        out[i] = padded[:, n + dy[i]:n + dy[i] + H, n + dx[i]:n + dx[i] + W]
    return out


def test_translate_matches_a_per_sample_loop():
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (17, 2, 6, 5), dtype=np.uint8)
    dy, dx = rng.integers(-2, 3, 17), rng.integers(-2, 3, 17)
    out = translate_batch(images, dy, dx, 2)
    assert out.dtype == np.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(out, _reference_translate(images, dy, dx, 2))


def test_translate_by_hand():
    img = np.arange(1, 10, dtype=np.uint8).reshape(1, 1, 3, 3)
    out = translate_batch(img, np.array([1]), np.array([-1]), 1)   # content moves up and right
    np.testing.assert_array_equal(out[0, 0], [[0, 4, 5], [0, 7, 8], [0, 0, 0]])


def test_augment_is_seeded_and_flips_about_half():
    images = np.random.default_rng(7).integers(0, 256, (400, 1, 8, 8), dtype=np.uint8)
    a = Augment(2, True, rng=np.random.default_rng(0))(images)
    b = Augment(2, True, rng=np.random.default_rng(0))(images)
    np.testing.assert_array_equal(a, b)
    flips = Augment(0, True, rng=np.random.default_rng(1))(images)
    flipped = np.array([np.array_equal(f, im[..., ::-1]) for f, im in zip(flips, images)])
    kept = np.array([np.array_equal(f, im) for f, im in zip(flips, images)])
    assert np.all(flipped | kept) and 150 < flipped.sum() < 250
    assert not Augment(0, False, rng=np.random.default_rng(0)).active


# ------------------------------------------------------------------ callbacks

def test_early_stopping_counts_epochs_without_improvement():
    es = EarlyStopping("val_loss", patience=2, min_delta=0.1)
    assert [es.epoch_end(v, e) for e, v in enumerate([1.0, 0.95, 0.85, 0.8, 0.79], 1)] == \
        [False, False, False, False, True]
    assert es.tracker.best == 0.85 and es.tracker.best_epoch == 3


def test_monitor_mode_auto():
    assert Monitor("val_accuracy").mode == "max" and Monitor("train_loss").mode == "min"
    m = Monitor("val_accuracy")
    assert m.update(0.5, 1) and not m.update(0.5, 2) and m.update(0.6, 3)
