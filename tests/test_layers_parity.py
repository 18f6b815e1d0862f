"""Parity of every layer with its ``torch.nn`` namesake (float64): forward, input
gradient, parameter gradients and buffers, over the gradcheck option grid.

Weights are copied in: conv weights share torch's layout, our Linear weight is
torch's transposed. Dropout masks come from different generators, so dropout is
compared by its statistics and scaling only.
"""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel:UserWarning")

from cnncli.layers import LAYERS  # noqa: E402
from cnncli.layers.conv import Conv2d  # noqa: E402
from cnncli.layers.dropout import Dropout, Dropout2d  # noqa: E402
from cnncli.layers.norm import BatchNorm  # noqa: E402
from cnncli.layers.pool import AvgPool2d, MaxPool2d  # noqa: E402
from cnncli.layers.registry import options  # noqa: E402
from cnncli.layers.windows import to_chwn  # noqa: E402

try:  # tests/ is a rootdir (no __init__.py); fall back if it ever becomes a package
    from layer_cases import CASES, build_layer, make_input, randomize_state
except ImportError:  # pragma: no cover
    from tests.layer_cases import CASES, build_layer, make_input, randomize_state

RTOL, ATOL = 1e-9, 1e-10
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: torch's thread pool costs ~100x the work itself on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _torch_options(opts):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items() if k != "init"}


def _global_avgpool(s, o):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), *([] if o.get("keepdims", False) else [nn.Flatten()]))


#: type name -> (input shape without batch, options) -> the torch.nn module
TORCH = {
    "conv2d": lambda s, o: nn.Conv2d(s[0], **o, dtype=F64),
    "linear": lambda s, o: nn.Linear(s[0], **o, dtype=F64),
    "batchnorm": lambda s, o: (nn.BatchNorm2d if len(s) == 3 else nn.BatchNorm1d)(s[0], **o, dtype=F64),
    "maxpool2d": lambda s, o: nn.MaxPool2d(**o),
    "avgpool2d": lambda s, o: nn.AvgPool2d(**o),
    "global_avgpool": _global_avgpool,
    "dropout": lambda s, o: nn.Dropout(**o),
    "dropout2d": lambda s, o: nn.Dropout2d(**o),
    "flatten": lambda s, o: nn.Flatten(),
    "relu": lambda s, o: nn.ReLU(),
    "leaky_relu": lambda s, o: nn.LeakyReLU(**o),
    "elu": lambda s, o: nn.ELU(**o),
    "gelu": lambda s, o: nn.GELU(**o),
    "sigmoid": lambda s, o: nn.Sigmoid(),
    "tanh": lambda s, o: nn.Tanh(),
    "softmax": lambda s, o: nn.Softmax(dim=o.get("dim", 1)),          # torch's default dim is implicit
    "log_softmax": lambda s, o: nn.LogSoftmax(dim=o.get("dim", 1)),
}


def _to_torch_weight(name, key, a):
    a = np.asarray(a)
    return a.T if (name == "linear" and key == "weight") else a


def torch_twin(layer, name, in_shape, opts, training):
    """The torch module for ``layer`` with the same params and buffers."""
    m = TORCH[name](in_shape, _torch_options(opts))
    state = {k: torch.tensor(_to_torch_weight(name, k, v).copy()) for k, v in layer.params.items()}
    state.update({k: torch.tensor(np.array(v)) for k, v in layer.buffers.items()})
    if state:
        m.load_state_dict(state, strict=True)
    return m.train(training)


def _close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=what)


# masks cannot match torch's: training dropout with p > 0 is checked by statistics below
PARITY_CASES = [p for p in CASES
                if not (p.values[0].name.startswith("dropout") and p.values[0].training
                        and p.values[0].options.get("p", 0.5) > 0)]


def test_every_layer_has_a_torch_twin():
    assert set(LAYERS) <= set(TORCH)
    assert set(LAYERS) <= {p.values[0].name for p in PARITY_CASES}


#: torch class whose constructor defaults our options must share (global_avgpool has no options)
TORCH_CLASS = {
    "conv2d": nn.Conv2d, "linear": nn.Linear, "batchnorm": nn.BatchNorm2d, "maxpool2d": nn.MaxPool2d,
    "avgpool2d": nn.AvgPool2d, "dropout": nn.Dropout, "dropout2d": nn.Dropout2d,
    "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
}


@pytest.mark.parametrize("name", sorted(TORCH_CLASS))
def test_defaults_match_torch(name):
    """Options named as in torch have torch's defaults. (Softmax's ``dim`` is left out on
    purpose: torch's default is an implicit, deprecated choice; ours is 1, the class axis.)"""
    theirs = inspect.signature(TORCH_CLASS[name].__init__).parameters
    shared = {opt: p.default for opt, p in options(LAYERS[name]).items()
              if opt in theirs and p.default is not inspect.Parameter.empty}
    assert shared, f"{name}: no option shared with {TORCH_CLASS[name].__name__}"
    for opt, default in shared.items():
        assert default == theirs[opt].default, f"{name}.{opt}: {default!r} vs torch {theirs[opt].default!r}"


@pytest.mark.parametrize("case", PARITY_CASES)
def test_matches_torch(case):
    rng = np.random.default_rng(7)
    layer = build_layer(case, np.float64)
    randomize_state(layer, rng)
    m = torch_twin(layer, case.name, case.in_shape, case.options, case.training)
    x = make_input(case, rng)
    xt = torch.tensor(x, requires_grad=True)

    y = layer.forward(x, training=case.training)
    yt = m(xt)
    _close(y, yt, "forward")
    R = rng.normal(0.0, 1.0, y.shape)
    dx = layer.backward(R.copy())
    yt.backward(torch.tensor(R))
    _close(dx, xt.grad, "input gradient")
    named = dict(m.named_parameters())
    assert set(named) == set(layer.params)
    for k, g in layer.grads.items():
        _close(_to_torch_weight(case.name, k, g), named[k].grad, f"grad of {k}")
    for k, b in layer.buffers.items():
        _close(np.asarray(b), m.get_buffer(k), f"buffer {k}")


# ------------------------------------------------------------------ batchnorm over several steps

@pytest.mark.parametrize("in_shape,batch", [((3, 2, 3), 4), ((5,), 6)], ids=["4d", "2d"])
@pytest.mark.parametrize("opts", [{}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3},
                                  {"affine": False}, {"track_running_stats": False}],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_batchnorm_running_stats_over_steps_then_eval(in_shape, batch, opts):
    rng = np.random.default_rng(3)
    layer = BatchNorm(in_shape[0], **opts, dtype=np.float64)
    randomize_state(layer, rng)
    m = torch_twin(layer, "batchnorm", in_shape, opts, True)
    for step in range(4):
        x = rng.normal(step, 1 + step, (batch, *in_shape))       # shifting statistics
        xt = torch.tensor(x, requires_grad=True)
        y, yt = layer.forward(x, training=True), m(xt)
        _close(y, yt, f"step {step} forward")
        R = rng.normal(0.0, 1.0, y.shape)
        m.zero_grad()                                            # torch accumulates .grad
        yt.backward(torch.tensor(R))
        _close(layer.backward(R), xt.grad, f"step {step} input gradient")
        for k, g in layer.grads.items():
            _close(g, dict(m.named_parameters())[k].grad, f"step {step} grad of {k}")
        for k, b in layer.buffers.items():
            _close(np.asarray(b), m.get_buffer(k), f"step {step} buffer {k}")
    if opts.get("track_running_stats", True):
        assert int(layer.buffers["num_batches_tracked"]) == 4
    m.eval()
    x = rng.normal(1.0, 2.0, (3, *in_shape))
    xt = torch.tensor(x, requires_grad=True)
    y, yt = layer.forward(x, training=False), m(xt)
    _close(y, yt, "eval forward")
    R = rng.normal(0.0, 1.0, y.shape)
    m.zero_grad()
    yt.backward(torch.tensor(R))
    _close(layer.backward(R), xt.grad, "eval input gradient")
    for k, g in layer.grads.items():
        _close(g, dict(m.named_parameters())[k].grad, f"eval grad of {k}")


# ------------------------------------------------------------------ max pooling ties

TIE_GEOMETRIES = [
    ({"kernel_size": 2}, (2, 4, 4)),
    ({"kernel_size": 3, "stride": 1}, (2, 5, 5)),
    ({"kernel_size": 3, "stride": 2, "padding": 1}, (2, 5, 6)),
    ({"kernel_size": 2, "stride": 2, "ceil_mode": True}, (2, 5, 5)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (1, 6, 7)),
    ({"kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 1]}, (2, 5, 7)),
    ({"kernel_size": 2, "stride": 1, "dilation": 2}, (1, 5, 6)),
    ({"kernel_size": 3, "stride": 1, "padding": 1, "dilation": [1, 2]}, (2, 5, 6)),
]


@pytest.mark.parametrize("opts,in_shape", TIE_GEOMETRIES, ids=str)
@pytest.mark.parametrize("values", [2, 3])
def test_maxpool_ties_match_torch_exactly(opts, in_shape, values):
    rng = np.random.default_rng(values)
    x = rng.integers(-1, values - 1, (3, *in_shape)).astype(np.float64)   # many exact ties
    layer = MaxPool2d(**opts)
    m = nn.MaxPool2d(**_torch_options(opts))
    xt = torch.tensor(x, requires_grad=True)
    y, yt = layer.forward(x, training=True), m(xt)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    R = rng.integers(-3, 4, y.shape).astype(np.float64)                  # sums stay exact
    yt.backward(torch.tensor(R))
    np.testing.assert_array_equal(layer.backward(R), xt.grad.numpy())


# ------------------------------------------------------------------ geometry sweeps

def _run_both(layer, m, x, rng):
    xt = torch.tensor(x, requires_grad=True)
    y, yt = layer.forward(x, training=True), m(xt)
    _close(y, yt, "forward")
    R = rng.normal(0.0, 1.0, y.shape)
    yt.backward(torch.tensor(R))
    _close(layer.backward(R), xt.grad, "input gradient")


def _torch_shape(m, x):
    try:
        with torch.no_grad():
            return tuple(m(torch.tensor(x)).shape[1:])
    except RuntimeError:
        return None


def _same_geometry(layer, m, in_shape, rng, what) -> bool:
    """Our output shape equals torch's (or both refuse); values compared when there is one.
    Returns whether a forward/backward comparison ran."""
    x = rng.normal(0.0, 1.0, (2, *in_shape))
    expected = _torch_shape(m, x)
    if expected is None or 0 in expected:
        with pytest.raises(ValueError):
            layer.output_shape(in_shape)
        return False
    assert layer.output_shape(in_shape) == expected, what
    _run_both(layer, m, x, rng)
    return True


@pytest.mark.parametrize("kind", ["max", "avg_include_pad", "avg_exclude_pad"])
def test_pool_geometry_sweep_matches_torch(kind):
    """Output size (or refusal) and values for every small size, kernel, stride,
    padding and ceil_mode: torch's ``pooling_output_shape`` and divisor rules."""
    rng = np.random.default_rng(0)
    checked = 0
    for size, k, s, ceil in itertools.product(range(1, 9), range(1, 5), range(1, 4), (False, True)):
        for p in range(0, k // 2 + 1):
            kw = {"kernel_size": k, "stride": s, "padding": p, "ceil_mode": ceil}
            if kind == "max":
                layer, m = MaxPool2d(**kw), nn.MaxPool2d(**kw)
            else:
                kw["count_include_pad"] = kind == "avg_include_pad"
                layer, m = AvgPool2d(**kw), nn.AvgPool2d(**kw)
            checked += _same_geometry(layer, m, (2, size, size + 1), rng, kw)
    assert checked > 300


def test_conv_geometry_sweep_matches_torch():
    rng = np.random.default_rng(0)
    checked = 0
    for size, k, s, p, d in itertools.product(range(1, 8), range(1, 5), range(1, 4), range(3), (1, 2)):
        layer = Conv2d(2, 2, k, stride=s, padding=p, dilation=d, dtype=np.float64, rng=rng)
        m = nn.Conv2d(2, 2, k, stride=s, padding=p, dilation=d, dtype=F64)
        m.load_state_dict({k_: torch.tensor(v) for k_, v in layer.params.items()})
        checked += _same_geometry(layer, m, (2, size, size + 2), rng, (size, k, s, p, d))
    assert checked > 300


@pytest.mark.parametrize("C, O, k, s, p, d, hw", [
    (1, 6, 5, 1, 2, 1, (28, 28)),            # LeNet-5's C1
    (6, 16, 5, 1, 0, 1, (14, 14)),           # LeNet-5's C3
    (3, 4, (3, 2), (2, 3), (1, 0), (1, 2), (11, 17)),
    (2, 3, 3, 1, "same", 1, (9, 8)),
])
def test_conv_evaluation_by_row_lowering_matches_torch(C, O, k, s, p, d, hw):
    """``Conv2d.infer`` (MEC lowering, the path a model's evaluation takes for large batches)."""
    rng = np.random.default_rng(5)
    layer = Conv2d(C, O, k, stride=s, padding=p, dilation=d, dtype=np.float64, rng=rng)
    m = nn.Conv2d(C, O, k, stride=s, padding=p, dilation=d, dtype=F64)
    m.load_state_dict({k_: torch.tensor(v) for k_, v in layer.params.items()})
    n = 256
    x = rng.normal(0.0, 1.0, (n, C, *hw))
    assert layer.lowers_by_rows(C, layer.output_shape((C, *hw))[2], n)
    with torch.no_grad():
        expected = m(torch.tensor(x)).numpy()
    np.testing.assert_allclose(layer.infer(x), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.infer(to_chwn(x)), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("C, O, k, s, p, d, hw, n", [
    (32, 32, 3, 1, 0, 1, (12, 12), 103),     # configs/mnist.yaml's second conv, narrower
    (32, 32, 5, 2, 2, 1, (12, 12), 171),     # its strided 5x5 conv
    (32, 32, 3, 1, "same", 1, (9, 8), 128),  # configs/fashion-mnist.yaml's second conv
    (16, 8, (3, 4), (2, 3), (1, 2), (1, 2), (11, 17), 205),
])
def test_conv_training_by_rows_matches_torch(C, O, k, s, p, d, hw, n):
    """A training step of ``Conv2d`` by rows (MEC forward, per-row backward: the path of the
    shipped networks' 32-channel convs): output, input gradient and weight/bias gradients
    against torch autograd, float64."""
    rng = np.random.default_rng(7)
    layer = Conv2d(C, O, k, stride=s, padding=p, dilation=d, dtype=np.float64, rng=rng)
    m = nn.Conv2d(C, O, k, stride=s, padding=p, dilation=d, dtype=F64)
    m.load_state_dict({k_: torch.tensor(v) for k_, v in layer.params.items()})
    x = rng.normal(0.0, 1.0, (n, C, *hw))
    out = layer.output_shape((C, *hw))
    assert layer.trains_by_rows(C, out[2], n)
    dy = rng.normal(0.0, 1.0, (n, *out))
    xt = torch.tensor(x, requires_grad=True)
    yt = m(xt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(layer.forward(to_chwn(x), True), yt.detach().numpy(), rtol=RTOL, atol=ATOL)
    assert layer._cache[0] == "rows"
    np.testing.assert_allclose(layer.backward(to_chwn(dy)), xt.grad.numpy(), rtol=RTOL, atol=ATOL)
    for name, param in m.named_parameters():
        np.testing.assert_allclose(layer.grads[name], param.grad.numpy(), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------ dropout semantics

@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_statistics_match_torch(p):
    x = np.full((200, 50), 3.0)
    ours = Dropout(p, rng=np.random.default_rng(0))
    theirs = nn.Dropout(p)
    torch.manual_seed(0)
    for y in (ours.forward(x, training=True), theirs(torch.tensor(x)).numpy()):
        kept = y != 0
        assert abs(kept.mean() - (1 - p)) < 0.03                  # 10^4 draws: sd <= 0.005
        np.testing.assert_allclose(y[kept], 3.0 / (1 - p), rtol=1e-15)
    # backward scales by the forward's mask, as torch's does
    y = ours.forward(x, training=True)
    np.testing.assert_allclose(ours.backward(np.ones_like(x)), y / 3.0, rtol=1e-15)
    # evaluation: identity in both
    np.testing.assert_array_equal(ours.forward(x, training=False), theirs.eval()(torch.tensor(x)).numpy())


def test_dropout2d_statistics_match_torch():
    p = 0.5
    x = np.full((60, 40, 2, 3), 2.0)
    torch.manual_seed(0)
    for y in (Dropout2d(p, rng=np.random.default_rng(0)).forward(x, training=True),
              nn.Dropout2d(p)(torch.tensor(x)).numpy()):
        per_channel = y.reshape(60, 40, 6)
        assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))
        assert set(np.unique(y)) == {0.0, 2.0 / (1 - p)}
        assert abs((per_channel[:, :, 0] == 0).mean() - p) < 0.05
