"""Central-difference gradients for the layer tests, independent of cnncli's code.

References: mantasu/cs231n ``assignment2/cs231n/gradient_check.py`` (eval_numerical_gradient).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f() / d x by central differences, (f(x + h e_i) - f(x - h e_i)) / 2h per element.

    ``x`` is perturbed in place (so it may be an array the layer reads, e.g. a
    parameter) and restored exactly after each element.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + h
        f_plus = f()
        x[idx] = old - h
        f_minus = f()
        x[idx] = old
        grad[idx] = (f_plus - f_minus) / (2.0 * h)
    return grad


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """||a - n|| / max(||a|| + ||n||, 1e-12) over the whole array."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12))
