"""Softmax cross-entropy computed stably from logits."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities exp(z - max(z)) / sum(exp(z - max(z))) of (N, K) logits, same dtype."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray,
                          label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    log p = z - max(z) - log(sum(exp(z - max(z)))) (log-sum-exp, no overflow).
    With label smoothing s the target is (1 - s) * onehot + s / K, as
    ``torch.nn.CrossEntropyLoss(label_smoothing=s)``.

    Args:
        logits: (N, K) float32 or float64.
        labels: (N,) int64 in [0, K).
        label_smoothing: s in [0, 1]. Default: 0.

    Returns:
        (loss, dlogits): the mean loss as a Python float, and d loss / d logits
        (N, K) in the logits' dtype: (softmax - target) / N.

    Raises:
        ValueError: A label outside [0, K) (-1 would silently index the last class), naming
            the first such label and its index. One min/max pass over the labels.
    """
    N, K = logits.shape
    labels = np.asarray(labels)
    if N and (labels.min() < 0 or labels.max() >= K):
        i = int(np.argmax((labels < 0) | (labels >= K)))
        raise ValueError(f"labels[{i}] is {int(labels[i])}, outside [0, {K}): labels are class indices of the "
                         f"{K} logits per row")
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    log_p = z - np.log(s)
    rows = np.arange(N)
    nll = -log_p[rows, labels]
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * log_p.mean(axis=1)
    loss = float(nll.mean(dtype=np.float64))
    grad = e / s
    if label_smoothing:
        grad -= label_smoothing / K
        grad[rows, labels] -= 1 - label_smoothing
    else:
        grad[rows, labels] -= 1
    grad *= grad.dtype.type(1.0 / N)
    return loss, grad
