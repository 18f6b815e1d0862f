"""How many threads cnncli computes with: ``train.threads`` / ``--threads``.

The matrix products run in NumPy's BLAS (OpenBLAS), whose thread pool is set through
threadpoolctl (the well-kept way to do it at run time, rather than environment
variables that must be set before NumPy loads). The element-wise layers split their
channels over as many threads (``layers.parallel``), evaluation splits each batch into
one chunk per thread, and the next batch is prepared in the background
(``loop.run_batches``).

On a machine where other processes are busy, fewer threads than cores can be faster:
a BLAS thread that must share a core with another process makes the others wait for it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: glibc ``mallopt`` settings (``malloc.h``): ``M_MMAP_THRESHOLD`` (-3), ``M_TRIM_THRESHOLD`` (-1),
#: ``M_ARENA_MAX`` (-8), each with the environment variable that sets it instead.
_MALLOPT = {"MALLOC_MMAP_THRESHOLD_": (-3, 32 << 20), "MALLOC_TRIM_THRESHOLD_": (-1, 256 << 20),
            "MALLOC_ARENA_MAX": (-8, 1)}
_malloc_state = {"done": False}


def reuse_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next allocation instead of returning it to
    the system (``mallopt``: arrays up to 32 MiB come from the heap, whose free top is kept up
    to 256 MiB), in one heap for all threads (one arena: what each thread's own heap would
    keep adds up; measured: peak RSS of a configs/mnist-small.yaml epoch 219 MiB against 244 MiB,
    at the same speed). Once per process; returns True if the settings are in force.

    A training step frees and allocates the same large arrays (im2col matrices, activations,
    gradients) every time. By default glibc maps each one afresh and unmaps it when freed,
    so each step touches new pages that the kernel must zero: measured on this project's
    2-core test machine, that was a third of a LeNet-5 step. The settings are glibc's own
    tunables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_ARENA_MAX``; see ``mallopt(3)``);
    one already set in the environment is left as it is. Elsewhere (macOS, musl) nothing
    changes and False is returned.
    """
    if _malloc_state["done"]:
        return _malloc_state["in_force"]
    _malloc_state["done"], _malloc_state["in_force"] = True, False
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    except (OSError, AttributeError):
        return False
    ok = True
    for env, (option, value) in _MALLOPT.items():
        if env not in os.environ:
            ok = mallopt(option, value) == 1 and ok
    _malloc_state["in_force"] = ok
    return ok


@contextlib.contextmanager
def limit(threads: int | None = None) -> Iterator[int]:
    """Within the block, BLAS computes with ``threads`` threads (None: :func:`available_cores`),
    and so does the channel-split element-wise work of the layers (``layers.parallel``);
    yields the number in force. Restores the previous settings on exit."""
    from threadpoolctl import threadpool_limits

    from cnncli.layers import parallel

    n = threads or available_cores()
    reuse_freed_memory()
    before = parallel.workers()
    with threadpool_limits(limits=n, user_api="blas"):
        parallel.workers(n)
        try:
            yield n
        finally:
            parallel.workers(before)
