"""Conjugate-gradient half-steps of the alternating-least-squares models (:mod:`cfrec.models.als`,
explicit ratings, and :mod:`cfrec.models.ials`, implicit feedback).

Both alternate half-steps: with one side fixed, every row ``r`` of the other side solves a small
ridge regression ``A_r x_r = b_r`` with ``A_r = G + F_r' W_r F_r + D_r``, where ``F_r`` are the
fixed side's vectors of the row's ratings, ``W_r`` their weights (1 for explicit ALS,
``c - 1`` for iALS), ``G`` a Gram matrix every row shares (``F'F`` for iALS, none for ALS) and
``D_r`` the row's L2 diagonal. :func:`cg_half_step` takes a few CG steps per half-step (Takacs,
Pilaszy & Tikk 2011, as implicit and Spark do), warm-started from the current vectors, for every
row at once. One CG step needs ``A_r v_r`` for every row: a sampled dense-dense product (``f_o .
v_r`` at every rating), a sparse-dense product back (``sum_o w_o (f_o . v_r) f_o``), ``v_r G``
and ``D_r v_r``. That is ``ratings x d`` work per step and ``O((rows + others) x d)`` memory plus
one chunk's buffers. :class:`NumpyCG` runs the products on CPU over one user-major layout, in
chunks of ratings spread over a few threads; :class:`TorchCG` runs them with torch (for CUDA).
Both do their vector arithmetic through their :class:`~cfrec.engines.backend.ArrayBackend`
(``engine.xp``). :mod:`cfrec.engines.exact` solves the same systems exactly.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from cfrec.engines.backend import ArrayBackend, NumpyArrays, TorchArrays, torch_csr
from cfrec.errors import CfrecError
from cfrec.threads import pool_threads, threads_for, using_threads

_A = TypeVar("_A", np.ndarray, torch.Tensor)

#: The CG products run in chunks of about 1/CG_CHUNKS of the ratings, within these bounds: few
#: enough chunks that adding up the per-chunk parts of a column-side product stays cheap, small
#: enough buffers (a chunk's ratings, never times d) and enough chunks to share out over threads.
#: Bytes of item-side per-chunk parts (n_items x k float32 each) that :class:`NumpyCG` lets its
#: workers compute ahead of the in-order sum.
CG_PARTS_BYTES = 32 << 20
CG_CHUNKS = 16
CG_CHUNK_MIN = 1 << 17
CG_CHUNK_MAX = 1 << 21
#: Chunks of a torch (CUDA) side: one kernel launch covers many more ratings.
TORCH_CG_CHUNK = 1 << 23


@dataclass(frozen=True)
class CGSide:
    """One side of the CG half-steps as an engine lays it out.

    ``order`` maps this side's rating order to positions in the rating arrays the engine was
    built from (per-rating inputs such as targets and weights must be given in that order) and
    ``other[j]`` is the fixed side's row of rating ``j`` in that order. ``kind`` says whether the
    side's rows are the rows (``"rows"``) or the columns (``"cols"``) of the engine's layout
    ``layout``.
    """

    kind: Literal["rows", "cols"]
    layout: int
    n_rows: int
    counts: np.ndarray  # float32 (n_rows,): ratings per row
    order: np.ndarray  # int32 or int64 (nnz,)
    other: np.ndarray  # int32 or int64 (nnz,)
    #: ``order`` is ``0, 1, ...`` (the ratings came in the layout's order): :meth:`take` copies nothing
    in_order: bool = False

    def take(self, values: np.ndarray) -> np.ndarray:
        """Per-rating ``values`` (in the order of the arrays the engine was built from) in this
        side's rating order: the array itself when that is the same order, else a gathered copy."""
        return values if self.in_order else values[self.order]


def cg_chunk_bounds(indptr: np.ndarray, target: int) -> np.ndarray:
    """Row boundaries splitting CSR rows into chunks of about ``target`` ratings each.

    A row is never split, so a chunk holds more than ``target`` ratings only when one row does.
    The bounds depend on the data alone (not on the thread count), so sums over chunks are
    added in the same order on any number of threads.
    """
    n_rows, nnz = len(indptr) - 1, int(indptr[-1])
    if n_rows == 0 or nnz == 0:
        return np.array([0, n_rows], dtype=np.int64)
    cuts = np.searchsorted(indptr, np.arange(target, nnz, target, dtype=np.int64), side="left")
    return np.unique(np.concatenate([[0], cuts, [n_rows]])).astype(np.int64)


def cg_chunk_size(nnz: int) -> int:
    """Ratings per CPU chunk: ``nnz / CG_CHUNKS`` clipped to ``[CG_CHUNK_MIN, CG_CHUNK_MAX]``."""
    return int(min(max(nnz // CG_CHUNKS, CG_CHUNK_MIN), CG_CHUNK_MAX))


#: Ratings from which the CPU engine runs its compiled kernels (and a layout's order is found by
#: a compiled counting sort, one pass, rather than numpy's stable sort: the same order; the sort
#: costs a second or more at 10M ratings). Below it numpy, scipy and torch compute the same
#: values: a process's first compiled kernel costs one to two seconds of CPU to load (numba's
#: start), several times a whole fit on ML-100K, where the compiled products save a few percent.
COUNTING_SORT_MIN = CG_COMPILED_MIN = 1 << 18


def _rows_sorted(rows: np.ndarray) -> bool:
    """Whether ``rows`` never decrease (the ratings already in the CSR layout's order)."""
    return bool(np.all(rows[1:] >= rows[:-1]))


def _csr_layout(
    rows: np.ndarray, cols: np.ndarray, n_rows: int, in_order: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, counts, indptr)`` of the CSR layout of ``rows`` (stable within a row); ``order``
    is int32 when the ratings fit (half the memory of numpy's int64 argsort), and ``0, 1, ...``
    when the rows come sorted (as files and splits of them usually do: one pass finds it;
    ``in_order`` when the caller knows)."""
    if _rows_sorted(rows) if in_order is None else in_order:
        order = np.arange(len(rows), dtype=_index_dtype(len(rows)))
    elif len(rows) >= COUNTING_SORT_MIN:  # the same stable order by counting: O(n), not a sort
        try:
            from cfrec.engines.compiled import stable_key_order
        except ImportError:  # pragma: no cover - numba is a dependency
            stable_key_order = None
        order = (np.argsort(rows, kind="stable") if stable_key_order is None
                 else stable_key_order(rows, int(n_rows)))
    else:
        order = np.argsort(rows, kind="stable")
    order = order.astype(_index_dtype(len(rows)), copy=False)
    counts = np.bincount(rows, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return order, counts, indptr


def _index_dtype(n: int) -> type[np.signedinteger[Any]]:
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


@dataclass(frozen=True)
class _Chunk:
    """Rows ``start:stop`` of a CSR layout, ratings ``lo:hi``, with their own index arrays."""

    start: int
    stop: int
    lo: int
    hi: int
    ptr: np.ndarray  # int32 (stop - start + 1,), local to the chunk
    idx: np.ndarray  # column of each rating (a view into the layout's indices)
    template: torch.Tensor  # CSR pattern of the chunk with zero values, for sampled products


class CGEngine(Protocol):
    """The products and vector arithmetic :func:`cg_half_step` needs, over one array type.

    ``residual`` returns, for every row ``r`` of ``side``, ``sum_o (t_o - w_o s_o) f_o`` with
    ``s_o = f_o . v_r`` over the row's ratings ``o`` (``t`` = ``target``, or ``1 + w`` when
    ``target`` is None; ``w`` = ``weight``, or 1 when None), plus the scalars ``sum t s`` and
    ``sum w s^2``; ``apply`` returns ``sum_o w_o s_o f_o``.
    """

    user_side: CGSide
    item_side: CGSide
    xp: ArrayBackend

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def residual(
        self, side: CGSide, v: Any, fixed: Any, weight: Any, target: Any
    ) -> tuple[Any, float, float]: ...

    def apply(self, side: CGSide, v: Any, fixed: Any, weight: Any) -> Any: ...

    def fused_half_step(self, side: CGSide, fixed: Any, x0: Any, target: Any, weight: Any, gram: Any,
                        diag: Any, steps: int) -> tuple[Any, float] | None: ...


class _CGProducts(ABC, Generic[_A]):
    """The two products CG needs, from one engine's ``_products`` (numpy or torch arrays)."""

    xp: ArrayBackend

    @abstractmethod
    def _products(self, side: CGSide, v: _A, fixed: _A, weight: _A | None, target: _A | None,
                  with_residual: bool) -> tuple[_A, float, float]:
        """``(products, sum t s, sum w s^2)``: the residual products ``(t - w s)`` times the fixed
        side (``with_residual``) or the weighted ones ``w s`` times it (see :meth:`residual`)."""

    def residual(self, side: CGSide, v: _A, fixed: _A, weight: _A | None,
                 target: _A | None) -> tuple[_A, float, float]:
        """The data term's residual products ``(t - w s)`` times the fixed side, with ``sum t s``
        and ``sum w s^2`` (``s``: the sampled products of ``v`` and the fixed side)."""
        return self._products(side, v, fixed, weight, target, True)

    def apply(self, side: CGSide, v: _A, fixed: _A, weight: _A | None) -> _A:
        """The data term's products ``w s`` times the fixed side (the caller adds the ridge)."""
        return self._products(side, v, fixed, weight, None, False)[0]

    def fused_half_step(self, side: CGSide, fixed: _A, x0: _A, target: _A | None, weight: _A | None,
                        gram: _A | None, diag: _A, steps: int) -> tuple[_A, float] | None:
        """:func:`cg_half_step` done row by row in one pass where the engine can (every step of a
        row while its ratings are in the cache); None where it cannot, and the steps run as
        passes over all rows."""
        return None

    def _chunk_values(self, ch: _Chunk, s: _A, weight: Any, target: Any,
                      with_residual: bool) -> tuple[_A, _A | None, _A]:
        """``(values, t, w s)`` at the chunk's ratings from their sampled products ``s``: the
        values of the sparse matrix that multiplies the fixed side (``t - w s`` for the residual,
        ``w s`` otherwise) and the terms of ``sum t s`` and ``sum w s^2`` (``t`` None without
        the residual)."""
        w = None if weight is None else weight[ch.lo : ch.hi]
        ws = s if w is None else w * s
        if not with_residual:
            return ws, None, ws
        if target is not None:
            t = target[ch.lo : ch.hi]
        else:
            t = self.xp.ones_like(s) if w is None else 1.0 + w
        return t - ws, t, ws


_NONE = np.zeros(0, dtype=np.float32)  # "no weights" / "no targets" for the compiled products


_NO_GRAM = np.zeros((0, 0), dtype=np.float32)  # "no Gram matrix" for the compiled half-step


@functools.cache
def _compiled_half_step() -> Any:
    """:func:`cfrec.engines.compiled.cg_rows_half_step`, or None where numba is missing."""
    try:
        from cfrec.engines.compiled import cg_rows_half_step
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return cg_rows_half_step


@functools.cache
def _compiled_products() -> Any:
    """:func:`cfrec.engines.compiled.cg_chunk_products`, or None where numba is missing (then
    torch's sampled product and scipy's sparse product compute the same values)."""
    try:
        from cfrec.engines.compiled import cg_chunk_products
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return cg_chunk_products


class NumpyCG(_CGProducts[np.ndarray]):
    """CPU products for CG over one user-major CSR layout, on a few threads.

    Both half-steps read the ratings in user-major order: the user side's products gather the
    (smaller) item table, and the item side's are the transposed products of the same chunks,
    each chunk adding its part to every item's sum. Reading a 10M-rating matrix item-major
    instead gathers the user table at random: on synthetic ml-10m at 64 factors its sampled
    product took 2-3x and its sparse product 4-5x as long. The sampled product
    is torch's ``sampled_addmm`` (CSR), the sparse-dense products are scipy's.

    Each chunk's products are one compiled pass (:func:`cfrec.engines.compiled.cg_chunk_products`)
    where numba is there, which computes the same values without the sampled values' round trip
    through memory.

    Threads: chunks are handed out one at a time to :func:`~cfrec.threads.pool_threads` workers
    (every core by default), each running single-threaded kernels, so a core that another
    process holds only slows the chunks it runs instead of stalling every operation at a
    barrier; every chunk of the user side is in flight at once (each writes its own rows), so a
    worker that waits for the CPU never keeps the others idle, and of the item side as many as
    :data:`CG_PARTS_BYTES` of per-chunk parts allow. Per-chunk results are combined in chunk
    order, so the result does not depend on the thread count. Use as a context manager: it owns
    the worker pool and pins the libraries' own pools to one thread while it is open.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int, *, width: int,
                 threads: int | None = None, chunk: int | None = None) -> None:
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        # ratings already in row order: the input arrays are the layout (no copies)
        in_order = _rows_sorted(rows)
        order, counts, indptr = _csr_layout(rows, cols, n_rows, in_order)
        self.xp = NumpyArrays()
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        self.indices = (cols if in_order else cols[order]).astype(_index_dtype(n_cols), copy=False)
        row_of = (rows if in_order else rows[order]).astype(_index_dtype(n_rows), copy=False)
        col_counts = np.bincount(cols, minlength=n_cols).astype(np.float32)
        self.user_side = CGSide(
            "rows", 0, self.n_rows, counts.astype(np.float32), order, self.indices, in_order
        )
        self.item_side = CGSide("cols", 0, self.n_cols, col_counts, order, row_of, in_order)
        size = int(chunk) if chunk is not None else cg_chunk_size(len(order))
        bounds = cg_chunk_bounds(indptr, size)
        longest = int(np.diff(indptr[bounds]).max(initial=0))
        self._zeros = np.zeros(longest, dtype=np.float32)
        self.chunks = [
            self._chunk(indptr, int(a), int(b))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        self.n_workers = max(1, min(pool_threads(threads), len(self.chunks)))
        #: whether the compiled kernels run (by size, see CG_COMPILED_MIN)
        self.compiled = len(order) >= CG_COMPILED_MIN
        products, half_step = (_compiled_products(), _compiled_half_step()) if self.compiled else (None, None)
        if products is not None and half_step is not None:  # loaded (or compiled) in the set-up
            none, ptr = np.zeros((0, int(width)), dtype=np.float32), np.zeros(1, np.int32)
            products(ptr, self.indices[:0], _NONE, _NONE, none, none, 0, True, True, none)
            half_step(ptr, self.indices[:0], _NONE, _NONE, none, none, 0, _NO_GRAM, none, 1, none)
        self._stack: ExitStack | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._parts: dict[tuple[int, int], list[np.ndarray]] = {}

    def _chunk(self, indptr: np.ndarray, start: int, stop: int) -> _Chunk:
        lo, hi = int(indptr[start]), int(indptr[stop])
        ptr = (indptr[start : stop + 1] - lo).astype(np.int32)
        idx = self.indices[lo:hi]
        template = torch_csr(
            torch.from_numpy(ptr),
            torch.from_numpy(idx),
            torch.from_numpy(self._zeros[: hi - lo]),
            (stop - start, self.n_cols),
        )
        return _Chunk(start, stop, lo, hi, ptr, idx, template)

    # ------------------------------------------------------------------ context
    def __enter__(self) -> Self:
        stack = ExitStack()
        stack.enter_context(using_threads(1))
        if self.n_workers > 1:
            self._pool = stack.enter_context(
                ThreadPoolExecutor(self.n_workers, thread_name_prefix="cfrec-cg")
            )
        self._stack = stack
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack, self._pool = self._stack, None, None
        if stack is not None:
            stack.close()

    def _map(self, fn: Callable[[int, _Chunk], Any], in_flight: int) -> Iterator[Any]:
        """``fn(j, chunk j)`` of every chunk, yielded in chunk order; at most ``in_flight``
        submitted and not yet yielded (chunk ``j`` is submitted once chunk ``j - in_flight``
        has been yielded and its result used)."""
        pool = self._pool
        if pool is None:
            yield from (fn(j, ch) for j, ch in enumerate(self.chunks))
            return
        pending: deque[Future[Any]] = deque()
        try:
            for j, ch in enumerate(self.chunks):
                pending.append(pool.submit(fn, j, ch))
                if len(pending) >= in_flight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()

    def fused_half_step(self, side: CGSide, fixed: np.ndarray, x0: np.ndarray, target: np.ndarray | None,
                        weight: np.ndarray | None, gram: np.ndarray | None, diag: np.ndarray,
                        steps: int) -> tuple[np.ndarray, float] | None:
        """The user side's half-step, a compiled pass a chunk
        (:func:`cfrec.engines.compiled.cg_rows_half_step`); the item side's ratings are spread
        over every chunk of the user-major layout, so it runs step by step (None)."""
        kernel = _compiled_half_step() if self.compiled else None
        if kernel is None or side.kind != "rows":
            return None
        f32 = np.float32
        fixed, x0 = np.ascontiguousarray(fixed, dtype=f32), np.ascontiguousarray(x0, dtype=f32)
        diag = np.ascontiguousarray(diag, dtype=f32).reshape(len(x0), -1)
        g = _NO_GRAM if gram is None else np.ascontiguousarray(gram, dtype=f32)
        x = np.empty_like(x0)

        def one(j: int, ch: _Chunk) -> float:
            return float(kernel(ch.ptr, ch.idx, _NONE if weight is None else weight[ch.lo : ch.hi],
                                _NONE if target is None else target[ch.lo : ch.hi], fixed, x0, ch.start,
                                g, diag, int(steps), x))

        return x, float(sum(self._map(one, len(self.chunks))))

    def _part_buffers(self, n: int, width: int) -> list[np.ndarray]:
        """``n`` item-side part buffers (n_items x width float32), made once in the calling thread
        and reused by every product: no worker allocates (its own malloc arena would keep them)."""
        key = (n, width)
        if key not in self._parts:
            self._parts = {key: [np.empty((self.n_cols, width), dtype=np.float32) for _ in range(n)]}
        return self._parts[key]

    # ------------------------------------------------------------------ products
    def _sampled(self, ch: _Chunk, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """``left[r] . right[o]`` at every rating of the chunk (``left``: the chunk's rows)."""
        out = torch.sparse.sampled_addmm(
            ch.template, torch.from_numpy(left), torch.from_numpy(right).T, beta=0.0
        )
        return out.values().numpy()

    def _products(self, side: CGSide, v: np.ndarray, fixed: np.ndarray, weight: np.ndarray | None,
                  target: np.ndarray | None, with_residual: bool) -> tuple[np.ndarray, float, float]:
        v = np.ascontiguousarray(v, dtype=np.float32)
        fixed = np.ascontiguousarray(fixed, dtype=np.float32)
        by_rows = side.kind == "rows"
        out = np.empty((self.n_rows, v.shape[1]), dtype=np.float32) if by_rows else None
        kernel = _compiled_products() if self.compiled else None
        # chunks computed ahead of the in-order sum; item-side parts in a ring of buffers (chunk
        # j reuses the buffer of chunk j - in_flight, whose part has been added by then)
        part_bytes = 4 * self.n_cols * v.shape[1]
        in_flight = len(self.chunks) if by_rows else CG_PARTS_BYTES // max(part_bytes, 1)
        in_flight = max(1, min(len(self.chunks), max(in_flight, 2 * self.n_workers)))
        ring = [] if by_rows or kernel is None else self._part_buffers(in_flight, v.shape[1])

        def one(j: int, ch: _Chunk) -> tuple[np.ndarray | None, float, float]:
            if kernel is not None:  # one compiled pass (releases the GIL: chunks run in parallel)
                part = out if by_rows else ring[j % in_flight]
                t_s, w_ss = kernel(ch.ptr, ch.idx, _NONE if weight is None else weight[ch.lo : ch.hi],
                                   _NONE if target is None else target[ch.lo : ch.hi], v, fixed, ch.start,
                                   by_rows, with_residual, part)
                return (None if by_rows else part), float(t_s), float(w_ss)
            if by_rows:
                s = self._sampled(ch, v[ch.start : ch.stop], fixed)
            else:
                s = self._sampled(ch, fixed[ch.start : ch.stop], v)
            vals, t, ws = self._chunk_values(ch, s, weight, target, with_residual)
            t_s, w_ss = (0.0, 0.0) if t is None else (float(np.dot(t, s)), float(np.dot(ws, s)))
            mat = sp.csr_array((vals, ch.idx, ch.ptr), shape=(ch.stop - ch.start, self.n_cols))
            if by_rows:
                assert out is not None
                out[ch.start : ch.stop] = mat @ fixed
                return None, t_s, w_ss
            return mat.T @ fixed[ch.start : ch.stop], t_s, w_ss

        total: np.ndarray | None = out
        sum_ts = sum_wss = 0.0
        for part, t_s, w_ss in self._map(one, in_flight):
            sum_ts += t_s
            sum_wss += w_ss
            if part is not None:
                if total is None:
                    total = np.array(part, dtype=np.float32)
                else:
                    total += part
        if total is None:
            total = np.zeros((self.n_cols, v.shape[1]), dtype=np.float32)
        return total, sum_ts, sum_wss


class TorchCG(_CGProducts[torch.Tensor]):
    """The products of :class:`NumpyCG` with torch on ``device`` (for CUDA).

    Each side gets its own CSR layout (users x items and items x users) on the device; rows are
    processed in chunks of about :data:`TORCH_CG_CHUNK` ratings. The sampled product is
    ``torch.sparse.sampled_addmm``, the sparse-dense product a CSR matmul.
    """

    def __init__(self, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int, *, device: torch.device,
                 width: int, threads: int | None = None, chunk: int | None = None) -> None:
        self.device = device
        self.xp = TorchArrays(device)
        self._threads = threads_for(int(len(rows)) * int(width), threads)
        self._stack: ExitStack | None = None
        size = int(chunk) if chunk is not None else TORCH_CG_CHUNK
        self._layouts: list[tuple[int, list[_Chunk], torch.Tensor]] = []
        sides = []
        for layout, (r, c, n_r, n_c) in enumerate(
            ((rows, cols, n_rows, n_cols), (cols, rows, n_cols, n_rows))
        ):
            r, c = np.asarray(r), np.asarray(c)
            order, counts, indptr = _csr_layout(r, c, n_r)
            idx = c[order].astype(np.int64)
            bounds = cg_chunk_bounds(indptr, size)
            zeros = torch.zeros(
                int(np.diff(indptr[bounds]).max(initial=0)), dtype=torch.float32, device=device
            )
            t_idx = torch.as_tensor(idx, device=device)
            chunks = []
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                lo, hi = int(indptr[a]), int(indptr[b])
                ptr = torch.as_tensor(indptr[a : b + 1] - lo, device=device)
                template = torch_csr(
                    ptr, t_idx[lo:hi], zeros[: hi - lo], (int(b - a), int(n_c))
                )
                chunks.append(
                    _Chunk(int(a), int(b), lo, hi, indptr[a : b + 1] - lo, idx[lo:hi], template)
                )
            self._layouts.append((int(n_c), chunks, t_idx))
            sides.append(CGSide("rows", layout, int(n_r), counts.astype(np.float32), order, idx))
        self.user_side, self.item_side = sides

    def __enter__(self) -> Self:
        stack = ExitStack()
        stack.enter_context(using_threads(self._threads))
        self._stack = stack
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _products(self, side: CGSide, v: torch.Tensor, fixed: torch.Tensor, weight: torch.Tensor | None,
                  target: torch.Tensor | None, with_residual: bool) -> tuple[torch.Tensor, float, float]:
        if side.kind != "rows":
            raise CfrecError("TorchCG lays out each side by its own rows")
        n_cols, chunks, _ = self._layouts[side.layout]
        v, fixed = v.contiguous(), fixed.contiguous()
        out = torch.empty((side.n_rows, v.shape[1]), dtype=torch.float32, device=self.device)
        sum_ts = torch.zeros((), dtype=torch.float64, device=self.device)
        sum_wss = torch.zeros((), dtype=torch.float64, device=self.device)
        for ch in chunks:
            s = torch.sparse.sampled_addmm(
                ch.template, v[ch.start : ch.stop], fixed.T, beta=0.0
            ).values()
            vals, t, ws = self._chunk_values(ch, s, weight, target, with_residual)
            if t is not None:
                sum_ts += (t.double() * s.double()).sum()
                sum_wss += (ws.double() * s.double()).sum()
            mat = torch_csr(
                ch.template.crow_indices(),
                ch.template.col_indices(),
                vals.contiguous(),
                (ch.stop - ch.start, n_cols),
            )
            out[ch.start : ch.stop] = mat @ fixed
        return out, float(sum_ts), float(sum_wss)


def cg_engine(device: torch.device, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int, *,
              width: int, threads: int | None = None) -> CGEngine:
    """:class:`NumpyCG` on CPU, :class:`TorchCG` on any other device."""
    if device.type == "cpu":
        return NumpyCG(rows, cols, n_rows, n_cols, width=width, threads=threads)
    return TorchCG(rows, cols, n_rows, n_cols, device=device, width=width, threads=threads)


def cg_half_step(
    engine: CGEngine,
    side: CGSide,
    fixed: Any,
    x0: Any,
    *,
    target: Any,
    weight: Any,
    gram: Any,
    diag: Any,
    steps: int,
) -> tuple[Any, float]:
    """``steps`` conjugate-gradient steps on every row's ``A_r x_r = b_r``, from ``x0``.

    ``A_r = gram + sum_o w_o f_o f_o' + diag_r`` and ``b_r = sum_o t_o f_o`` over the row's
    ratings ``o`` (``f_o`` = ``fixed[side.other[o]]``, ``w`` = ``weight`` or 1, ``t`` =
    ``target`` or ``1 + w``; ``gram`` may be None; ``diag`` is (n_rows, d) or (n_rows, 1)).
    Each step moves every row to the exact minimum of its quadratic ``f_r(x) = x'A_r x / 2 -
    b_r'x`` along the search direction (step length ``p'r / p'Ap``), so ``f_r`` never increases,
    and ``steps >= d`` solves the system up to rounding. Returns the new (n_rows, d) vectors and
    ``sum_r f_r`` at them, tracked through the steps without another pass over the ratings
    (so a half-step's objective is ``sum t^2 + 2 sum_r f_r`` plus what does not depend on it).
    """
    if steps < 1:
        raise CfrecError(f"cg_steps must be >= 1, got {steps}")
    fused = engine.fused_half_step(side, fixed, x0, target, weight, gram, diag, steps)
    if fused is not None:
        return fused
    xp = engine.xp
    r, t_s, w_ss = engine.residual(side, x0, fixed, weight, target)
    rest = diag * x0
    if gram is not None:
        rest += x0 @ gram
    r -= rest
    # f(x0) = x0'A x0 / 2 - b'x0, with x0'A x0 = sum w s^2 + x0'(G + D) x0 and b'x0 = sum t s
    f = 0.5 * (w_ss + xp.sum64(xp.rowdot(x0, rest))) - t_s
    del rest
    # the vectors are updated in place: a few (n_rows, d) arrays, whatever the number of steps
    x, p = xp.copy(x0), xp.copy(r)
    rs = xp.rowdot(r, r)
    for step in range(steps):
        ap = engine.apply(side, p, fixed, weight)
        ap += diag * p
        if gram is not None:
            ap += p @ gram
        pr = xp.rowdot(p, r)
        alpha = xp.ratio(pr, xp.rowdot(p, ap))
        x += alpha[:, None] * p
        f -= 0.5 * xp.sum64(alpha * pr)
        if step == steps - 1:
            break
        r -= alpha[:, None] * ap
        del ap
        rs_new = xp.rowdot(r, r)
        p *= xp.ratio(rs_new, rs)[:, None]
        p += r
        rs = rs_new
    return x, f
