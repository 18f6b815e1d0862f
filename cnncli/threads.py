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


@contextlib.contextmanager
def limit(threads: int | None = None) -> Iterator[int]:
    """Within the block, BLAS computes with ``threads`` threads (None: :func:`available_cores`),
    and so does the channel-split element-wise work of the layers (``layers.parallel``);
    yields the number in force. Restores the previous settings on exit."""
    from threadpoolctl import threadpool_limits

    from cnncli.layers import parallel

    n = threads or available_cores()
    before = parallel.workers()
    with threadpool_limits(limits=n, user_api="blas"):
        parallel.workers(n)
        try:
            yield n
        finally:
            parallel.workers(before)
