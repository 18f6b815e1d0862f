"""Classification metrics from labels and predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class (scikit-learn's layout)."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes) \
        .reshape(num_classes, num_classes).astype(np.int64)


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    precision = TP / predicted, recall = TP / support, F1 = 2PR / (P + R); 0 where undefined
    (scikit-learn's ``zero_division=0``).
    """
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_average(cm: np.ndarray) -> dict[str, float | int | None]:
    """Unweighted means of per-class precision, recall and F1, over the classes that occur
    in the labels or the predictions (scikit-learn's ``classification_report`` default).

    A class with no support and no predictions (absent from a small test slice) is left
    out instead of counting as 0; a class that is predicted but absent from the labels
    still counts, with recall 0. ``classes`` is how many were averaged; the means are
    None when there are none (an empty matrix).
    """
    pc = per_class(cm)
    present = (pc["support"] > 0) | (cm.sum(axis=0) > 0)
    n = int(present.sum())
    means = {k: (float(pc[k][present].mean()) if n else None) for k in ("precision", "recall", "f1")}
    return {**means, "classes": n}


def class_name(i: int, classes: Sequence[str] | None) -> str | None:
    """The name of class ``i`` in ``classes`` (a checkpoint's ``data.classes``, a dataset's
    folder names), or None when there are no names or none for ``i``. The one lookup behind
    predict's ``name`` field and every drawn class label (:func:`cnncli.render.class_label`)."""
    return classes[i] if classes and 0 <= i < len(classes) else None
