"""Where a request's work runs: small requests on the event loop, large ones in a bounded pool.

The choice is made from the request's own size (``k`` of a list, the bytes of a fold-in body),
never from a timing, so no client can hold the event loop with one large request: a fold-in
from 10,000 ratings is parsed, validated and scored in a worker thread while the loop keeps
answering everyone else. The pool runs at most ``threads`` requests at once and lets ``queue``
more wait; a request beyond that is refused with 429 and a ``Retry-After`` header instead of
piling up without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from cfrec.serve.errors import ApiError

T = TypeVar("T")

#: Lists of at most this many items are built on the event loop (a fast model's top-k of a few
#: hundred items costs well under a millisecond); longer ones go to the pool.
INLINE_MAX_K = 200
#: Request bodies of at most this many bytes (a fold-in from about 100 ratings) are parsed and
#: scored on the event loop; larger ones go to the pool.
INLINE_MAX_BODY = 4096
#: Worker threads of the pool (a large request holds one) and requests that may wait for one.
#: One thread: the work is mostly Python (parsing, validation) and holds the interpreter lock,
#: so a second thread would add no speed, only more contention with the event loop.
POOL_THREADS = 1
POOL_QUEUE = 32
#: Seconds a client refused with 429 is told to wait.
RETRY_AFTER = 1


class BoundedPool:
    """At most ``threads`` calls at once in worker threads and ``queue`` more waiting; a call
    beyond that raises :class:`~cfrec.serve.errors.ApiError` 429 with ``Retry-After``.

    Used from one event loop (the counter is only touched there)."""

    def __init__(self, threads: int = POOL_THREADS, queue: int = POOL_QUEUE,
                 retry_after: int = RETRY_AFTER) -> None:
        if threads < 1 or queue < 0:
            raise ValueError(f"a pool needs at least one thread and a queue of 0 or more, got "
                             f"threads={threads}, queue={queue}")
        self.threads, self.queue, self.retry_after = threads, queue, retry_after
        self._limiter: anyio.CapacityLimiter | None = None
        self.pending = 0  # running + waiting

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.pending >= self.threads + self.queue:
            raise ApiError(429, "busy", f"{self.pending} large requests are running or queued "
                                        f"(at most {self.threads} run at once and {self.queue} "
                                        f"wait); retry in {self.retry_after} s",
                           headers={"Retry-After": str(self.retry_after)})
        if self._limiter is None:  # made inside the running loop
            self._limiter = anyio.CapacityLimiter(self.threads)
        self.pending += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        finally:
            self.pending -= 1
