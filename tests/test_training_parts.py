"""Loss, optimizers, checkpoints and metrics against closed-form or hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnncli import checkpoint
from cnncli.errors import CheckpointError
from cnncli.losses import softmax_cross_entropy
from cnncli.metrics import confusion_matrix, per_class
from cnncli.optim import SGD, Adam, AdamW


# ------------------------------------------------------------------ loss

def test_cross_entropy_hand_case():
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1]))
    # p = [.5,.5] and [.75,.25]: loss = (ln 2 + ln 4) / 2
    assert loss == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-12)
    np.testing.assert_allclose(grad, np.array([[-0.5, 0.5], [0.75, -0.75]]) / 2, atol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    loss, grad = softmax_cross_entropy(np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32), np.array([1]))
    assert loss == pytest.approx(1000.0)
    assert np.all(np.isfinite(grad)) and grad.dtype == np.float32


def test_label_smoothing_matches_formula():
    logits = np.array([[2.0, 0.5, -1.0]])
    s, K = 0.1, 3
    loss, grad = softmax_cross_entropy(logits, np.array([0]), label_smoothing=s)
    logp = logits - np.log(np.exp(logits).sum())
    target = np.full(K, s / K)
    target[0] += 1 - s
    assert loss == pytest.approx(-(target * logp).sum(), rel=1e-12)
    np.testing.assert_allclose(grad[0], np.exp(logp[0]) - target, atol=1e-12)


# ------------------------------------------------------------------ optimizers

def test_sgd_momentum_two_steps_closed_form():
    p = np.array([1.0, -2.0])
    opt = SGD({"w": p}, lr=0.1, momentum=0.9)
    g = np.array([0.5, 1.0])
    opt.step({"w": g})                       # b = g
    np.testing.assert_allclose(p, [1.0 - 0.05, -2.0 - 0.1])
    opt.step({"w": g})                       # b = 0.9 g + g = 1.9 g
    np.testing.assert_allclose(p, [0.95 - 0.1 * 1.9 * 0.5, -2.1 - 0.1 * 1.9])


def test_sgd_nesterov_and_weight_decay():
    p = np.array([1.0])
    opt = SGD({"w": p}, lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1)
    opt.step({"w": np.array([1.0])})         # g = 1.1, b = 1.1, step g + 0.5 b = 1.65
    np.testing.assert_allclose(p, [1.0 - 0.165])


def test_adam_first_steps_closed_form():
    p = np.array([1.0, 1.0])
    opt = Adam({"w": p}, lr=0.01, eps=1e-8)
    g = np.array([0.3, -4.0])
    opt.step({"w": g})   # m_hat = g, v_hat = g^2: step = lr * g / (|g| + eps)
    np.testing.assert_allclose(p, 1.0 - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    opt.step({"w": g})   # same gradient: the bias-corrected moments are still g and g^2
    np.testing.assert_allclose(p, 1.0 - 2 * 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-10)


def test_adamw_decays_before_the_adam_step():
    p = np.array([2.0])
    AdamW({"w": p}, lr=0.1, weight_decay=0.5).step({"w": np.array([1.0])})
    np.testing.assert_allclose(p, [2.0 * (1 - 0.05) - 0.1 * 1 / (1 + 1e-8)])


@pytest.mark.parametrize("name,kw", [("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
                                     ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
                                     ("adam", {"lr": 0.01, "weight_decay": 0.01}),
                                     ("adamw", {"lr": 0.01, "weight_decay": 0.1})])
def test_optimizers_match_torch(name, kw):
    torch = pytest.importorskip("torch")
    from cnncli.optim import OPTIMIZERS

    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    p = p0.copy()
    ours = OPTIMIZERS[name]({"w": p}, **kw)
    tp = torch.nn.Parameter(torch.tensor(p0))
    theirs = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]([tp], **kw)
    for g in grads:
        ours.step({"w": g})
        tp.grad = torch.tensor(g)
        theirs.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ metrics

def test_confusion_and_per_class_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    cm = confusion_matrix(labels, preds, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    pc = per_class(cm)
    np.testing.assert_allclose(pc["precision"], [0.5, 2 / 3, 0.0])
    np.testing.assert_allclose(pc["recall"], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(pc["f1"], [0.5, 0.8, 0.0])


def test_macro_average_leaves_out_classes_with_no_support_and_no_predictions():
    from cnncli.metrics import macro_average

    # class 3 is only predicted (counts, recall 0); class 4 never occurs (left out)
    cm = confusion_matrix(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 3]), 5)
    # precision [1, 2/3, 0, 0], recall [1/2, 1, 0, 0], F1 [2/3, 4/5, 0, 0] over classes 0-3
    m = macro_average(cm)
    assert m["classes"] == 4
    assert m["precision"] == pytest.approx(5 / 12)
    assert m["recall"] == pytest.approx(3 / 8)
    assert m["f1"] == pytest.approx(11 / 30)
    # all 5 images right, 5 of 10 classes in the slice: 100%, not 50%
    labels = np.array([7, 2, 1, 0, 4])
    perfect = macro_average(confusion_matrix(labels, labels, 10))
    assert perfect == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "classes": 5}
    assert macro_average(np.zeros((3, 3), dtype=np.int64))["f1"] is None


# ------------------------------------------------------------------ checkpoints

def _save(path, w=None):
    checkpoint.save(path, params={"0.weight": np.arange(6.0).reshape(2, 3) if w is None else w},
                    buffers={"1.running_mean": np.zeros(3)}, optim={"0.weight/exp_avg": np.ones((2, 3))},
                    config={"a": 1}, meta={"epoch": 3})


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "c.npz"
    _save(path)
    ck = checkpoint.load(path)
    np.testing.assert_array_equal(ck.params["0.weight"], np.arange(6.0).reshape(2, 3))
    assert ck.buffers.keys() == {"1.running_mean"} and ck.optim.keys() == {"0.weight/exp_avg"}
    assert ck.config == {"a": 1} and ck.meta["epoch"] == 3 and ck.meta["format_version"] == 1


def test_checkpoint_with_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, config=np.array([{"x": 1}], dtype=object), meta=np.array("{}"))
    with pytest.raises(CheckpointError, match="pickled"):
        checkpoint.load(path)


@pytest.mark.parametrize("cut", [10, 100, -50])
def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path, cut):
    path = tmp_path / "c.npz"
    _save(path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", a=np.ones(2))
    with pytest.raises(CheckpointError, match="no 'config' entry"):
        checkpoint.load(tmp_path / "y.npz")
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "missing.npz")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    _save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        _save(path, w=np.zeros((2, 3)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]   # no temporary left behind


def test_a_run_folder_given_as_checkpoint_points_to_best(tmp_path):
    _save(tmp_path / "best.npz")
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint. Did you mean"):
        checkpoint.load(tmp_path)


def test_model_keeps_only_what_it_uses():
    """``Model.specs`` was stored and never read (issue 13): a built model holds its layers,
    shapes, generator and dtype, and nothing that duplicates the config."""
    import inspect

    from cnncli.model import LayerSpec, Model, build

    # settings (issue 16): each layer's trainable/lr_mult/decay_mult, read by trainable_params,
    # multipliers (the optimizer) and summarize; {} for a layer without parameters
    assert list(inspect.signature(Model.__init__).parameters) == ["self", "layers", "input_shape", "shapes",
                                                                   "rng", "dtype", "settings"]
    model = build([LayerSpec("flatten"), LayerSpec("linear", {"out_features": 3})], (1, 2, 2))
    assert not hasattr(model, "specs")
    assert model.settings == [{}, {"trainable": True, "lr_mult": 1.0, "decay_mult": 1.0}]
    assert model.shapes == [(4,), (3,)] and model.output_shape == (3,)
