"""How many threads cnncli computes with: ``train.threads`` / ``--threads``.

The matrix products run in NumPy's BLAS (OpenBLAS), whose thread pool is set through
threadpoolctl (the well-kept way to do it at run time, rather than environment
variables that must be set before NumPy loads). cnncli's own work beside them (the next
batch prepared in the background, see ``loop.run_batches``) takes one more thread.

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


@contextlib.contextmanager
def limit(threads: int | None = None) -> Iterator[int]:
    """Within the block, BLAS computes with ``threads`` threads (None: :func:`available_cores`);
    yields the number in force. Restores the previous setting on exit."""
    from threadpoolctl import threadpool_limits

    n = threads or available_cores()
    with threadpool_limits(limits=n, user_api="blas"):
        yield n
