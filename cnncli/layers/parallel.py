"""Element-wise layer work split over threads by channel.

Activations inside a model are stored channel-outermost (CHWN, see ``windows.py``), so the
channels ``c0:c1`` of a batch are one contiguous slab, and per-channel work (batchnorm's
statistics, ReLU, its masks) on different slabs is independent. NumPy releases the GIL in
its ufuncs and reductions, so slabs on different threads run on different cores, where a
single ufunc call would use one. Each channel is computed exactly as in one call (the same
reduction over the same contiguous values), so results do not depend on the thread count.

Evaluation is split by samples instead (:func:`over_items`): each thread runs whole chunks
of the batch through every layer, with BLAS on one thread, so no layer waits for another
thread between steps.

The number of threads is set by :func:`workers` (``cnncli.threads.limit`` sets it for a
training run and for evaluation); it is 1 otherwise.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Elements below which an array is not split (thread hand-off costs more than it saves).
MIN_ELEMENTS = 1 << 17
#: Multiply-adds below which a matrix product runs on one BLAS thread (:func:`matmul`).
SMALL_GEMM = 1 << 24

_state: dict = {"workers": 1, "pool": None, "blas": None, "blas_libs": None}
#: ``inside`` is True in a thread running one of :func:`over_items`'s calls (no nested split).
_local = threading.local()


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
    over_range(fn, x.shape[1] if x.ndim > 1 else 1, x.size)


def over_range(fn: Callable[[int, int], None], count: int, size: int) -> None:
    """Call ``fn(i0, i1)`` for contiguous ranges covering ``range(count)`` of independent
    items: one range per thread when the work touches at least ``MIN_ELEMENTS`` values per
    thread (``size`` in all), else once for all of them. The calling thread computes the
    first range; exceptions are re-raised here."""
    k = min(_state["workers"] if not nested() else 1, count, size // MIN_ELEMENTS)
    if k <= 1:
        fn(0, count)
        return
    bounds = [count * i // k for i in range(k + 1)]
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


def nested() -> bool:
    """True in a thread running one of :func:`over_items`'s calls (work there is not split again)."""
    return getattr(_local, "inside", False)


def over_items(fn: Callable[[int], None], n: int) -> None:
    """Call ``fn(i)`` for ``i`` in ``range(n)``, spread over the threads (:func:`workers`).

    Each thread takes the next index until none is left, so a thread slowed by another
    process does not hold back the rest. While the calls run, BLAS computes with one thread
    and :func:`over_channels` does not split (each call is one thread's whole work): use it
    for independent pieces such as chunks of an evaluation batch. ``fn`` must write its
    result to a place of its own (results then do not depend on which thread ran which
    index). With one thread, or when called from inside such a call, it runs in order here.
    Exceptions are re-raised here.
    """
    k = min(_state["workers"], n)
    if k <= 1 or nested():
        for i in range(n):
            fn(i)
        return
    counter = itertools.count()          # next() on it is atomic under the GIL

    def run() -> None:
        _local.inside = True
        try:
            while (i := next(counter)) < n:
                fn(i)
        finally:
            _local.inside = False

    with _one_blas_thread():
        futures = [_state["pool"].submit(run) for _ in range(k - 1)]
        try:
            run()
        finally:
            for f in futures:
                f.result()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for 2-D ``a`` (m, k) and ``b`` (k, n); on one BLAS thread
    when the product is small (m * k * n < :data:`SMALL_GEMM`) and more than one is in force.

    A multi-threaded BLAS call waits for all its threads at the end; when the other core is
    busy (another process, or this process's data or layer threads) that wait is a
    scheduler time slice: measured on this 2-core machine under load, a (128 x 120) @
    (120 x 400) product took 16 ms on two BLAS threads and 0.16 ms on one. Large products
    still use every thread. Which products run on one thread depends on their shapes only,
    so a run stays deterministic for a given thread count (OpenBLAS's values may differ in
    the last bits between one and two threads). Switching costs about 3 microseconds.
    """
    if _state["workers"] <= 1 or nested() or \
            a.shape[0] * a.shape[1] * b.shape[1] >= SMALL_GEMM:
        return np.matmul(a, b, out=out)
    libs = _blas_libs()
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        return np.matmul(a, b, out=out)
    finally:
        for lib, n in zip(libs, before):
            lib.set_num_threads(n)


def _blas_libs() -> list:
    """threadpoolctl's controllers of the loaded BLAS libraries (found once per process)."""
    if _state["blas_libs"] is None:
        from threadpoolctl import ThreadpoolController

        if _state["blas"] is None:
            _state["blas"] = ThreadpoolController()
        _state["blas_libs"] = list(_state["blas"].select(user_api="blas").lib_controllers)
    return _state["blas_libs"]


def _one_blas_thread():
    """A context in which BLAS computes with one thread (threadpoolctl; one controller per
    process, as its enumeration of the loaded libraries costs more than the switch)."""
    from threadpoolctl import ThreadpoolController

    if _state["blas"] is None:
        _state["blas"] = ThreadpoolController()
    return _state["blas"].limit(limits=1, user_api="blas")
