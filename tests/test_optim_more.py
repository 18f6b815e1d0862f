"""Adadelta, Adagrad, Adamax and NAdam: first steps computed by hand from torch.optim's
documented update rules, parity with torch (when installed), state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnncli.optim import OPTIMIZERS, Adadelta, Adagrad, Adamax, NAdam


def test_adadelta_two_steps_by_hand():
    p = np.array([1.0])
    opt = Adadelta({"w": p}, lr=0.5, rho=0.5, eps=0.01)
    opt.step({"w": np.array([2.0])})
    # v = 0.5*4 = 2; d = sqrt(0 + .01)/sqrt(2.01)*2; u = 0.5 d^2
    d1 = math.sqrt(0.01) / math.sqrt(2.01) * 2.0
    assert p[0] == pytest.approx(1.0 - 0.5 * d1, rel=1e-13)
    opt.step({"w": np.array([-1.0])})
    v, u = 0.5 * 2.0 + 0.5 * 1.0, 0.5 * d1 * d1
    d2 = math.sqrt(u + 0.01) / math.sqrt(v + 0.01) * -1.0
    assert p[0] == pytest.approx(1.0 - 0.5 * d1 - 0.5 * d2, rel=1e-13)


def test_adagrad_two_steps_by_hand():
    p = np.array([1.0])
    opt = Adagrad({"w": p}, lr=0.1, lr_decay=0.5, initial_accumulator_value=1.0, eps=0.0, weight_decay=0.25)
    opt.step({"w": np.array([1.0])})
    g1 = 1.0 + 0.25 * 1.0                                     # L2 term added to the gradient
    p1 = 1.0 - 0.1 * g1 / math.sqrt(1.0 + g1 * g1)            # clr = lr at step 1
    assert p[0] == pytest.approx(p1, rel=1e-13)
    opt.step({"w": np.array([1.0])})
    g2 = 1.0 + 0.25 * p1
    p2 = p1 - 0.1 / 1.5 * g2 / math.sqrt(1.0 + g1 * g1 + g2 * g2)   # clr = lr / (1 + 1 * lr_decay)
    assert p[0] == pytest.approx(p2, rel=1e-13)


def test_adamax_two_steps_by_hand():
    p = np.array([0.0, 0.0])
    opt = Adamax({"w": p}, lr=0.1, betas=(0.5, 0.5), eps=1e-300)   # |g| + eps == |g|
    opt.step({"w": np.array([2.0, -4.0])})
    # m = 0.5 g; u = |g|; step = lr / (1 - 0.5) * m / u = lr * sign(g)
    np.testing.assert_allclose(p, [-0.1, 0.1], rtol=1e-13)
    opt.step({"w": np.array([0.5, -4.0])})
    m = 0.5 * np.array([1.0, -2.0]) + 0.5 * np.array([0.5, -4.0])
    u = np.maximum(0.5 * np.array([2.0, 4.0]), [0.5, 4.0])
    np.testing.assert_allclose(p, [-0.1, 0.1] - 0.1 / 0.75 * m / u, rtol=1e-13)


def test_nadam_first_step_by_hand():
    p = np.array([1.0])
    opt = NAdam({"w": p}, lr=0.1, betas=(0.9, 0.99), eps=0.0, momentum_decay=0.5)
    opt.step({"w": np.array([3.0])})
    mu1 = 0.9 * (1 - 0.5 * 0.96 ** 0.5)
    mu2 = 0.9 * (1 - 0.5 * 0.96 ** 1.0)
    m, d = 0.1 * 3.0, math.sqrt(0.01 * 9.0 / 0.01)           # v / (1 - b2) = g^2: d = |g|
    want = 1.0 - 0.1 * (1 - mu1) / (1 - mu1) * 3.0 / d - 0.1 * mu2 / (1 - mu1 * mu2) * m / d
    assert p[0] == pytest.approx(want, rel=1e-13)
    assert opt.mu_product(3) == pytest.approx(mu1 * mu2 * 0.9 * (1 - 0.5 * 0.96 ** 1.5), rel=1e-15)


TORCH_CASES = [
    ("adadelta", {}), ("adadelta", {"lr": 1.0, "rho": 0.95, "eps": 1e-7, "weight_decay": 0.01}),
    ("adagrad", {}), ("adagrad", {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "weight_decay": 0.1}),
    ("adamax", {}), ("adamax", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}),
    ("nadam", {}), ("nadam", {"lr": 0.01, "betas": (0.85, 0.995), "momentum_decay": 0.01, "weight_decay": 0.1}),
]
TORCH_NAMES = {"adadelta": "Adadelta", "adagrad": "Adagrad", "adamax": "Adamax", "nadam": "NAdam"}


@pytest.mark.parametrize("name,kw", TORCH_CASES)
def test_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal((4, 3))
    p = p0.copy()
    ours = OPTIMIZERS[name]({"w": p}, **kw)
    tp = torch.nn.Parameter(torch.tensor(p0))
    theirs = getattr(torch.optim, TORCH_NAMES[name])([tp], **kw)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)     # torch keeps NAdam's mu_product in the default dtype
    try:
        for _ in range(8):
            g = rng.standard_normal((4, 3))
            ours.step({"w": g})
            tp.grad = torch.tensor(g)
            theirs.step()
    finally:
        torch.set_default_dtype(default)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_torch_defaults_are_ours():
    torch = pytest.importorskip("torch")
    import inspect

    for name, torch_name in TORCH_NAMES.items():
        theirs = inspect.signature(getattr(torch.optim, torch_name).__init__).parameters
        for option, param in OPTIMIZERS.options(OPTIMIZERS[name]).items():
            if option in theirs:
                want = theirs[option].default
                want = tuple(want) if isinstance(want, (tuple, list)) else want
                got = tuple(param.default) if isinstance(param.default, (tuple, list)) else param.default
                assert got == want, (name, option)


@pytest.mark.parametrize("name", ["adadelta", "adagrad", "adamax", "nadam"])
def test_keeps_float32(name):
    p = np.ones(3, np.float32)
    opt = OPTIMIZERS[name]({"w": p}, weight_decay=0.1)
    opt.step({"w": np.full(3, 0.5, np.float32)})
    assert p.dtype == np.float32 and all(a.dtype == np.float32 for a in opt.state_arrays().values())
    assert set(opt.state_arrays()) == {f"w/{n}" for n in opt.needed_state()}


@pytest.mark.parametrize("name,bad", [("adadelta", {"rho": 1.5}), ("adadelta", {"eps": 0.0}),
                                      ("adagrad", {"lr_decay": -1.0}), ("adamax", {"betas": [0.9]}),
                                      ("nadam", {"momentum_decay": -0.1})])
def test_bad_options_name_the_option(name, bad):
    with pytest.raises(ValueError) as info:
        OPTIMIZERS[name]({}, **bad)
    assert info.value.option.split("[")[0] == next(iter(bad))
