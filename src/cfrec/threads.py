"""How many threads cfrec's numeric work runs on.

PyTorch and OpenBLAS start one intra-op thread per core and split every operation between them;
at the end of each operation the threads wait for each other, spinning. On a small machine that
other processes share (2 cores and a second busy process is enough), a thread that the kernel
has descheduled holds every operation up for a scheduler time slice, so a training loop of
thousands of small operations runs 10-30x slower than on one thread (measured: a 487,650-rating
BiasedMF fit took 4.3 s on one thread and 119 s on torch's default two). Users do not set
``OMP_NUM_THREADS``, so cfrec chooses:

* one thread for work below :data:`MIN_PARALLEL_WORK` elements per operation;
* every available core above it.

The threshold comes from a measurement on a 2-core machine shared with other processes (load
average 10-12): one ``addcmul`` over ``n`` floats and one ``(m x 64) @ (64 x 1682)`` scoring
product timed at 1 and 2 threads, as the machine was and with one more busy process. Two
threads were never faster than one (at best equal) for any size up to 2^26 elements: 10-400x
slower for operations of 2^16-2^22 elements (the size of a training step's operations),
1.0-1.3x slower for a 2^26-float ``addcmul`` (0.75 s) and 1.5-2.7x for a product of 2^26
multiply-adds (20-50 ms). So one thread is the default for every operation the models
do at any size seen in practice; the threshold (2^30 elements, a second or more of one
thread's work per operation) only lets very large blocks use the cores. On a machine of your
own with idle cores, ask for them.

Work cut into independent chunks that a pool of workers takes one at a time (the conjugate-
gradient products of ALS and iALS, :class:`~cfrec.engines.cg.NumpyCG`) is different:
no operation waits at a barrier for every thread, so a worker that the kernel deschedules holds
up only the chunk it has while the others take the rest. :func:`pool_threads` gives such pools
every available core. Measured on synthetic ml-10m (iALS, 64 factors, seconds an iteration on
2 cores): idle, 0.74-1.09 with two workers against 1.36-1.65 with one; with a second busy
process, 1.17-1.40 against 1.25-1.67.

The count is fixed, not read from the machine's load, so a seeded fit gives the same numbers
every time. To choose it yourself, pass ``threads=`` to a model (``BiasedMF(threads=2)``,
``cfrec train ... --param threads=2``) or set ``CFREC_NUM_THREADS`` in the environment; the
argument wins over the variable, which wins over the rule above.

:func:`using_threads` applies a count to PyTorch's intra-op pool and (by default) to the
BLAS/OpenMP pools numpy and scipy use (through threadpoolctl) for the duration of a block, and
restores the previous counts after it. The setting is process-wide, as PyTorch's is.
"""

from __future__ import annotations

import logging
import numbers
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from cfrec.errors import CfrecError

logger = logging.getLogger(__name__)

ENV_VAR = "CFREC_NUM_THREADS"

#: Elements of work per operation (floats one operation reads or writes, or multiply-adds of a
#: matrix product) from which every core is used; below it, one thread (see the module notes).
MIN_PARALLEL_WORK = 1 << 30


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def check_threads(value: Any, what: str = "threads") -> int | None:
    """``value`` as a thread count: ``None`` (cfrec chooses) or a whole number >= 1.

    Raises :class:`~cfrec.errors.CfrecError` naming ``what`` for anything else (0, negative
    numbers, fractions, booleans, text).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise CfrecError(f"{what}={value!r}: expected a whole number of threads >= 1, or None to let "
                         "cfrec choose")
    return int(value)


def configured_threads() -> int | None:
    """The count set in ``CFREC_NUM_THREADS``, or None when unset or blank (a bad value is an error)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise CfrecError(f"{ENV_VAR}={raw!r}: expected a whole number of threads >= 1") from None
    if value < 1:
        raise CfrecError(f"{ENV_VAR}={raw!r}: expected a whole number of threads >= 1")
    return value


def threads_for(work: int, threads: int | None = None) -> int:
    """Threads for work of about ``work`` elements per operation.

    ``threads`` (an explicit argument, checked) wins, then ``CFREC_NUM_THREADS``; otherwise one
    thread below :data:`MIN_PARALLEL_WORK` elements and every available core from there.
    """
    fixed = check_threads(threads)
    if fixed is not None:
        return fixed
    fixed = configured_threads()
    if fixed is not None:
        return fixed
    return 1 if int(work) < MIN_PARALLEL_WORK else available_cores()


def pool_threads(threads: int | None = None) -> int:
    """Workers for a pool of independent chunks (see the module notes): ``threads`` (checked),
    then ``CFREC_NUM_THREADS``, otherwise every available core."""
    fixed = check_threads(threads)
    if fixed is not None:
        return fixed
    fixed = configured_threads()
    return fixed if fixed is not None else available_cores()


def _blas_pools() -> Any:
    """threadpoolctl's controller of the BLAS/OpenMP libraries loaded now.

    The scan of the loaded libraries costs about a millisecond; it is repeated only when the
    number of imported modules changed since the last scan (a library loaded later is seen).
    """
    from threadpoolctl import ThreadpoolController

    loaded = _loaded_objects()
    cached = _POOLS.get("controller")
    if cached is None or _POOLS.get("loaded") != loaded:
        cached = ThreadpoolController()
        _POOLS.update(controller=cached, loaded=loaded)
    return cached


def _loaded_objects() -> int:
    """A cheap stand-in for "libraries loaded": the number of imported modules (BLAS and OpenMP
    libraries arrive with the import of an extension module)."""
    return len(sys.modules)


#: The last threadpoolctl controller and the loaded-object count it was built at: a cache of
#: what the process has loaded, not a setting (the counts themselves are always read afresh).
_POOLS: dict[str, Any] = {}


@contextmanager
def using_threads(n: int, *, blas: bool = True) -> Iterator[int]:
    """Run the block with ``n`` intra-op threads in torch and, with ``blas``, in the BLAS/OpenMP
    libraries numpy and scipy load; the previous counts are restored afterwards.

    Nothing is changed (and nothing restored) where a pool already runs ``n`` threads, so nested
    blocks and concurrent requests of a process pinned to one count (``cfrec serve``) never
    touch the process-wide settings. ``blas=False`` leaves the BLAS libraries alone, for blocks
    whose work is torch's only.
    """
    n = check_threads(n, "using_threads(n)") or 1
    # torch only where it is loaded: a numpy-only model (EASE) must not pay torch's import
    torch: Any = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else n
    if before != n:
        torch.set_num_threads(n)
    restore: list[tuple[Any, int]] = []
    try:
        if blas:
            for pool in _blas_pools().lib_controllers:
                current = pool.get_num_threads()
                if current is not None and current != n:
                    pool.set_num_threads(n)
                    restore.append((pool, current))
        yield n
    finally:
        for pool, current in reversed(restore):
            pool.set_num_threads(current)
        if torch is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def run_chunks(work: Callable[[int], None], starts: Sequence[int], workers: int) -> None:
    """Call ``work(start)`` for every chunk start, on ``workers`` threads (in this thread when
    one is enough). For independent chunks whose kernels release the GIL (numba ``nogil``,
    BLAS, scipy's sparse products)."""
    workers = max(1, min(int(workers), len(starts)))
    if workers == 1:
        for start in starts:
            work(start)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, starts))
