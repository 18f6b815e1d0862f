"""Element-wise layer work split over threads by channel.

Activations inside a model are stored channel-outermost (CHWN, see ``windows.py``), so the
channels ``c0:c1`` of a batch are one contiguous slab, and per-channel work (batchnorm's
statistics, ReLU, its masks) on different slabs is independent. NumPy releases the GIL in
its ufuncs and reductions, so slabs on different threads run on different cores, where a
single ufunc call would use one. Each channel is computed exactly as in one call (the same
reduction over the same contiguous values), so results do not depend on the thread count.

The number of threads is set by :func:`workers` (``cnncli.threads.limit`` sets it for a
training run); it is 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Elements below which an array is not split (thread hand-off costs more than it saves).
MIN_ELEMENTS = 1 << 17

_state: dict = {"workers": 1, "pool": None}


def workers(n: int | None = None) -> int:
    """Set the number of threads for channel-split work to ``n`` (>= 1), if given; return the
    number in force."""
    if n is not None and n != _state["workers"]:
        if _state["pool"] is not None:
            _state["pool"].shutdown(wait=True)
        _state["workers"] = max(1, int(n))
        _state["pool"] = ThreadPoolExecutor(_state["workers"] - 1, thread_name_prefix="cnncli-layers") \
            if _state["workers"] > 1 else None
    return _state["workers"]


def over_channels(fn: Callable[[int, int], None], x: np.ndarray) -> None:
    """Call ``fn(c0, c1)`` for contiguous ranges covering the channels (axis 1) of ``x``: one
    range per thread when ``x`` is large enough, else once for all of them. The calling
    thread computes the first range; exceptions are re-raised here."""
    channels = x.shape[1] if x.ndim > 1 else 1
    k = min(_state["workers"], channels, x.size // MIN_ELEMENTS)
    if k <= 1:
        fn(0, channels)
        return
    bounds = [channels * i // k for i in range(k + 1)]
    futures = [_state["pool"].submit(fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


def map_slices(fn: Callable[..., None], *arrays: np.ndarray) -> None:
    """Call ``fn`` on matching channel slices ``a[:, c0:c1]`` of ``arrays`` (all of the first
    one's shape), as :func:`over_channels` splits them; arrays of fewer than 2 axes whole."""
    if arrays[0].ndim < 2:
        fn(*arrays)
        return
    over_channels(lambda c0, c1: fn(*(a[:, c0:c1] for a in arrays)), arrays[0])
