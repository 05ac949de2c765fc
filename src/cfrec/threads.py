"""How many threads cfrec's numeric work runs on.

On a small shared machine (2 cores, another process busy) a thread pool that spins waiting for
its other threads can make small operations 10-100x slower than one thread, and users do not set
``OMP_NUM_THREADS``. So cfrec picks the thread count for each piece of work from its size: one
thread for work too small to gain from more, up to the available cores for large work. Set
``CFREC_NUM_THREADS`` (or pass ``threads=`` where a function offers it) to fix the count.

:func:`using_threads` applies a count to PyTorch's intra-op pool and to the BLAS/OpenMP pools
numpy and scipy use (through threadpoolctl) for the duration of a block, and restores them after.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

ENV_VAR = "CFREC_NUM_THREADS"

#: Elements of work (roughly: floats touched by one operation) below which one thread is used.
MIN_PARALLEL_WORK = 1 << 22


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def configured_threads() -> int | None:
    """The count set in ``CFREC_NUM_THREADS``, or None when unset (a bad value is an error)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        from cfrec.errors import CfrecError

        raise CfrecError(f"{ENV_VAR}={raw!r}: expected a positive whole number of threads") from None
    if value < 1:
        from cfrec.errors import CfrecError

        raise CfrecError(f"{ENV_VAR}={raw!r}: expected a positive whole number of threads")
    return value


def threads_for(work: int, threads: int | None = None) -> int:
    """Threads for work of about ``work`` elements per operation.

    ``threads`` (an explicit argument) wins, then ``CFREC_NUM_THREADS``; otherwise one thread
    below :data:`MIN_PARALLEL_WORK` elements and every available core above it.
    """
    if threads is not None:
        return max(1, int(threads))
    fixed = configured_threads()
    if fixed is not None:
        return fixed
    return 1 if work < MIN_PARALLEL_WORK else available_cores()


@contextmanager
def using_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads in torch and in the BLAS/OpenMP libraries."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
