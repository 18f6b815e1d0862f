"""Caffe's inv, poly and sigmoid policies, ``interval: step``, and the warmup every schedule
takes: Caffe's formulas (SGDSolver::GetLearningRate) computed by hand, torch where it has
the same schedule."""

from __future__ import annotations

import math

import pytest

from cnncli.checks import OptionError
from cnncli.schedules import SCHEDULES, make_schedule


def per_step(name, opts, base=0.01, epochs=3, spe=4):
    s = make_schedule(name, opts, base, epochs, spe)
    return [s.lr(k // spe, k) for k in range(epochs * spe)]


def test_caffe_lenet_inv_by_hand():
    # lenet_solver.prototxt: base_lr 0.01, gamma 0.0001, power 0.75, per iteration
    s = make_schedule("inv", {"gamma": 0.0001, "power": 0.75}, 0.01, 10, 1000)
    assert s.lr(0, 0) == 0.01
    assert s.lr(5, 5000) == pytest.approx(0.01 * 1.5 ** -0.75, rel=1e-14)      # 0.0073780...
    assert s.lr(9, 9999) == pytest.approx(0.01 * 1.9999 ** -0.75, rel=1e-14)
    assert 0.0059 < s.lr(9, 9999) < 0.00595                                     # Caffe's log: lr = 0.00594604 at 10000


def test_inv_per_epoch():
    s = make_schedule("inv", {"gamma": 0.5, "power": 2.0, "interval": "epoch"}, 1.0, 4, 10)
    assert [s.lr(e, e * 10 + 3) for e in range(4)] == pytest.approx([1.0, 1 / 1.5 ** 2, 1 / 4.0, 1 / 2.5 ** 2])


def test_poly_reaches_zero_at_the_end_of_the_run():
    lrs = per_step("poly", {"power": 2.0}, base=1.0, epochs=2, spe=5)      # max_iter = 10
    assert lrs == pytest.approx([(1 - k / 10) ** 2 for k in range(10)])
    assert per_step("poly", {}, base=1.0, epochs=1, spe=4) == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_sigmoid_by_hand_and_without_overflow():
    lrs = per_step("sigmoid", {"gamma": -0.5, "step_size": 6}, base=2.0, epochs=3, spe=4)
    assert lrs == pytest.approx([2.0 / (1 + math.exp(0.5 * (k - 6))) for k in range(12)], rel=1e-14)
    assert lrs[6] == 1.0                                                       # base / 2 at the centre
    s = make_schedule("sigmoid", {"gamma": -1.0, "step_size": 0}, 1.0, 1, 10 ** 6)
    assert s.lr(0, 999_999) == pytest.approx(math.exp(-999_999), abs=0) and s.lr(0, 999_999) >= 0.0
    rising = make_schedule("sigmoid", {"gamma": 1.0, "step_size": 0}, 1.0, 1, 10 ** 6)
    assert rising.lr(0, 999_999) == 1.0


def test_step_schedules_with_interval_step():
    assert per_step("step", {"step_size": 5, "gamma": 0.5, "interval": "step"}, base=1.0) == \
        [1.0] * 5 + [0.5] * 5 + [0.25] * 2
    assert per_step("multistep", {"milestones": [2, 9], "interval": "step"}, base=1.0) == \
        pytest.approx([1.0] * 2 + [0.1] * 7 + [0.01] * 3)
    assert per_step("exponential", {"gamma": 0.9, "interval": "step"}, base=1.0) == \
        pytest.approx([0.9 ** k for k in range(12)])
    assert per_step("cosine", {"interval": "step"}, base=1.0, epochs=2, spe=4) == \
        pytest.approx([(1 + math.cos(math.pi * k / 8)) / 2 for k in range(8)])
    # the default (epoch) holds within an epoch
    assert per_step("exponential", {"gamma": 0.9}, base=1.0, epochs=2, spe=3) == pytest.approx([1.0] * 3 + [0.9] * 3)


def test_warmup_in_steps_for_any_step_schedule():
    # 3 warmup steps to the schedule's start, then inv from its own step 0
    lrs = per_step("inv", {"gamma": 1.0, "power": 1.0, "warmup_steps": 3}, base=1.0, epochs=2, spe=4)
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert per_step("constant", {"warmup_steps": 4}, base=1.0, epochs=1, spe=8) == \
        pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0])
    # poly's max_iter is what is left after the warmup
    assert per_step("poly", {"warmup_steps": 2}, base=1.0, epochs=1, spe=6) == \
        pytest.approx([1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25])


def test_warmup_in_epochs_for_any_schedule():
    s = make_schedule("step", {"step_size": 2, "gamma": 0.5, "warmup_epochs": 1}, 1.0, 6, 3)
    assert [s.lr(e, 3 * e) for e in range(6)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.5, 0.25])
    # a step-counting schedule after an epoch warmup starts at the first step of the next epoch
    assert per_step("exponential", {"gamma": 0.5, "interval": "step", "warmup_epochs": 1}, base=1.0, epochs=2,
                    spe=3) == pytest.approx([0.5, 0.5, 0.5, 1.0, 0.5, 0.25])
    # onecycle warms up to its initial lr (max_lr / div_factor)
    assert per_step("onecycle", {"max_lr": 1.0, "div_factor": 10.0, "warmup_steps": 1}, epochs=1, spe=5)[0] == \
        pytest.approx(0.05)


def test_reduce_on_plateau_after_a_warmup():
    s = make_schedule("reduce_on_plateau", {"patience": 0, "factor": 0.5, "mode": "max", "warmup_epochs": 1},
                      1.0, 5, 2)
    assert s.lr(0, 0) == 0.5
    s.epoch_end({"val_loss": 1.0})
    s.epoch_end({"val_loss": 0.5})                 # mode max, falling loss: a bad epoch halves the lr
    assert s.lr(2, 4) == 0.5


@pytest.mark.parametrize("name,opts,option,words", [
    ("step", {"step_size": 2, "warmup_steps": 3}, "warmup_steps", "warm up in whole epochs"),
    ("cosine", {"warmup_steps": 3, "warmup_epochs": 1}, "warmup_steps", "only one of"),
    ("poly", {"interval": "iteration"}, "interval", "epoch, step"),
    ("sigmoid", {"gamma": 0.0, "step_size": 3}, "gamma", "must not be 0"),
    ("inv", {"gamma": -1.0, "power": 0.75}, "gamma", ">= 0"),
])
def test_bad_options_name_the_option(name, opts, option, words):
    with pytest.raises(OptionError) as info:
        make_schedule(name, opts, 0.1, 3, 4)
    assert info.value.option == option and words in str(info.value)


def test_every_schedule_takes_a_warmup():
    for name, cls in SCHEDULES.items():
        assert {"warmup_epochs", "warmup_steps"} <= set(SCHEDULES.options(cls)), name


def _torch_lrs(torch, make, n):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("power", [1.0, 0.9, 2.0])
def test_poly_matches_torch_polynomial_lr(power):
    torch = pytest.importorskip("torch")
    theirs = _torch_lrs(torch, lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=12, power=power), 12)
    assert per_step("poly", {"power": power}, base=0.1, epochs=3, spe=4) == pytest.approx(theirs, rel=1e-12)


def test_step_warmup_then_step_decay_matches_torch_sequential_lr():
    torch = pytest.importorskip("torch")
    S = torch.optim.lr_scheduler

    def make(o):
        warm = S.LinearLR(o, start_factor=1 / 4, end_factor=1.0, total_iters=3)
        return S.SequentialLR(o, [warm, S.StepLR(o, step_size=2, gamma=0.5)], milestones=[3])

    ours = per_step("step", {"step_size": 2, "gamma": 0.5, "interval": "step", "warmup_steps": 3}, base=0.1)
    assert ours == pytest.approx(_torch_lrs(torch, make, 12), rel=1e-12)
