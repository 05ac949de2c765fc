"""Solvers shared by the alternating-least-squares models (:mod:`cfrec.models.als`, explicit
ratings, and :mod:`cfrec.models.ials`, implicit feedback).

Both alternate half-steps: with one side fixed, every row ``r`` of the other side solves a small
ridge regression ``A_r x_r = b_r`` with ``A_r = G + F_r' W_r F_r + D_r``, where ``F_r`` are the
fixed side's vectors of the row's ratings, ``W_r`` their weights (1 for explicit ALS,
``c - 1`` for iALS), ``G`` a Gram matrix every row shares (``F'F`` for iALS, none for ALS) and
``D_r`` the row's L2 diagonal. Two ways to solve them:

* **Conjugate gradient** (:func:`cg_half_step`; Takacs, Pilaszy & Tikk 2011, as implicit and
  Spark do): a few CG steps per half-step, warm-started from the current vectors, for every row
  at once. One CG step needs ``A_r v_r`` for every row: a sampled dense-dense product (``f_o .
  v_r`` at every rating), a sparse-dense product back (``sum_o w_o (f_o . v_r) f_o``), ``v_r G``
  and ``D_r v_r``. That is ``ratings x d`` work per step and ``O((rows + others) x d)`` memory
  plus one chunk's buffers. :class:`NumpyCG` runs the products on CPU over one user-major
  layout, in chunks of ratings spread over a few threads; :class:`TorchCG` runs them with torch
  (for CUDA).
* **Exact** (:class:`NumpyOps`, :class:`TorchOps`, :func:`implicit_solve_numpy`,
  :func:`implicit_solve_torch`): :class:`RatingSide` groups the ratings by row (CSR order); the
  normal equations of all rows are assembled from a sparse (rows x others) matrix times the
  fixed side's packed outer products and solved in chunks by batched LAPACK (numpy) or batched
  Cholesky (torch), so work grows with ``ratings x d^2`` and memory with rows x d^2 per chunk,
  never with users x items.
"""

from __future__ import annotations

import functools
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, Protocol, Self, TypeVar, cast

import numpy as np
import scipy.sparse as sp
import torch

from cfrec.errors import CfrecError
from cfrec.threads import pool_threads, threads_for, using_threads

#: Upper bound on the float32 elements of one chunk of normal equations (rows x d x d): 64 MiB.
_CHUNK_ELEMENTS = 1 << 24
#: Ratings per chunk when evaluating the objective (bounds the gathered (chunk, k) blocks).
EVAL_CHUNK = 1 << 20


@dataclass(frozen=True)
class RatingSide:
    """The ratings grouped by one side (users or items) in CSR order.

    ``indices[indptr[r]:indptr[r+1]]`` are the other-side indices of row ``r``'s ratings and
    ``order`` maps CSR positions back to rows of the original rating arrays.
    """

    indptr: np.ndarray  # int64 (n_rows + 1,)
    indices: np.ndarray  # int64 (nnz,)
    order: np.ndarray  # int64 (nnz,)
    counts: np.ndarray  # float32 (n_rows,)
    n_other: int

    @classmethod
    def build(cls, rows: np.ndarray, other: np.ndarray, n_rows: int, n_other: int) -> RatingSide:
        order = np.argsort(rows, kind="stable").astype(np.int64)
        counts = np.bincount(rows, minlength=n_rows)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, other[order].astype(np.int64), order, counts.astype(np.float32), n_other)

    def row_blocks(self, d: int) -> Iterator[RowBlock]:
        """The rows in consecutive blocks of :func:`chunk_rows` ``(d)`` rows, so that one block's
        ``d x d`` normal equations stay within :data:`_CHUNK_ELEMENTS`."""
        n_rows = len(self.counts)
        step = chunk_rows(d)
        for start in range(0, n_rows, step):
            stop = min(start + step, n_rows)
            lo, hi = int(self.indptr[start]), int(self.indptr[stop])
            yield RowBlock(start, stop, lo, hi, self.indptr[start : stop + 1] - lo,
                           self.indices[lo:hi], (stop - start, self.n_other))


class RowBlock(NamedTuple):
    """Rows ``start:stop`` of a :class:`RatingSide` with their ratings ``lo:hi``: the block's
    local CSR row pointers ``ptr``, other-side indices ``idx`` and matrix ``shape``."""

    start: int
    stop: int
    lo: int
    hi: int
    ptr: np.ndarray
    idx: np.ndarray
    shape: tuple[int, int]


@dataclass(frozen=True)
class Penalty:
    """L2 strengths: ``reg * n + reg_const`` on a row's factors, ``reg_bias`` on its bias."""

    reg: float
    reg_const: float
    reg_bias: float

    def diagonal(self, counts: np.ndarray, k: int) -> np.ndarray:
        """Per-row diagonal added to the ``[b, x]`` normal equations: (n_rows, k + 1) float32."""
        diag = np.empty((len(counts), k + 1), dtype=np.float32)
        diag[:, 0] = self.reg_bias
        diag[:, 1:] = (self.reg * counts + self.reg_const)[:, None]
        return diag


def chunk_rows(d: int) -> int:
    return max(1, _CHUNK_ELEMENTS // (d * d))


class NumpyOps:
    """CPU arithmetic: numpy + scipy.sparse + LAPACK.

    On CPU this beats torch's sparse products and batched Cholesky (per-matrix overhead) by 3-5x
    for the small ``d`` of explicit ALS, and single-threaded numpy elementwise work does not stall
    when the cores are shared. The systems are symmetric positive definite (the factor block gets
    at least ``reg_const + reg * n`` on its diagonal and the bias block's Schur complement is a
    scatter matrix plus that), so LAPACK's batched LU solver is as accurate as Cholesky here and
    faster for many tiny systems.
    """

    def asarray(self, a: np.ndarray, dtype: Any) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=dtype)

    def to_numpy(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    def sum64(self, a: np.ndarray) -> float:
        return float(a.sum(dtype=np.float64))

    def solve_side(
        self, side: RatingSide, fixed: np.ndarray, target: np.ndarray, penalty: Penalty
    ) -> tuple[np.ndarray, float]:
        """Every row's ``[b, x]`` minimising its ridge problem against the fixed ``[1, fixed]``.

        ``target`` holds, in the side's CSR order, the rating minus everything the fixed side
        already explains (``r - mu - b_other``). Returns the (n_rows, k + 1) float32 solutions
        and the training sum of squared errors after the step, without revisiting the ratings:
        with ``A = G + D`` (Gram matrix plus penalty diagonal) and ``A x = rhs``,
        ``sum (t - y.x)^2 = sum t^2 - x.rhs - x'Dx``.
        """
        k = fixed.shape[1]
        d = k + 1
        y = np.empty((fixed.shape[0], d), dtype=np.float32)
        y[:, 0] = 1.0
        y[:, 1:] = fixed
        tri_r, tri_c = np.triu_indices(d)
        packed = y[:, tri_r] * y[:, tri_c]  # (n_other, d(d+1)/2): packed outer products
        n_rows = len(side.counts)
        diag = penalty.diagonal(side.counts, k)
        out = np.empty((n_rows, d), dtype=np.float32)
        explained = 0.0
        for start, stop, lo, hi, ptr, idx, shape in side.row_blocks(d):
            ones = sp.csr_array((np.ones(hi - lo, dtype=np.float32), idx, ptr), shape=shape)
            vals = sp.csr_array((target[lo:hi], idx, ptr), shape=shape)
            gram = ones @ packed
            a = np.empty((stop - start, d, d), dtype=np.float32)
            a[:, tri_r, tri_c] = gram
            a[:, tri_c, tri_r] = gram
            a[:, np.arange(d), np.arange(d)] += diag[start:stop]
            rhs = vals @ y
            x = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]
            out[start:stop] = x
            explained += float(
                np.einsum("ij,ij->", x, rhs + diag[start:stop] * x, dtype=np.float64)
            )
        return out, float(np.square(target, dtype=np.float64).sum()) - explained


class TorchOps:
    """The same arithmetic with torch sparse products and batched Cholesky (for CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def asarray(self, a: np.ndarray, dtype: Any) -> torch.Tensor:
        tdtype = torch.int64 if np.dtype(dtype).kind in "iu" else torch.float32
        return torch.as_tensor(np.asarray(a, dtype=dtype), dtype=tdtype, device=self.device)

    def to_numpy(self, a: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(a.detach().cpu().numpy(), dtype=np.float32)

    def sum64(self, a: torch.Tensor) -> float:
        return float(a.sum(dtype=torch.float64))

    def solve_side(
        self, side: RatingSide, fixed: torch.Tensor, target: torch.Tensor, penalty: Penalty
    ) -> tuple[torch.Tensor, float]:
        dev = self.device
        k = fixed.shape[1]
        d = k + 1
        y = torch.cat(
            [torch.ones((fixed.shape[0], 1), dtype=torch.float32, device=dev), fixed], dim=1
        )
        tri = torch.triu_indices(d, d, device=dev)
        packed = y[:, tri[0]] * y[:, tri[1]]
        n_rows = len(side.counts)
        diag = torch.as_tensor(penalty.diagonal(side.counts, k), device=dev)
        eye = torch.arange(d, device=dev)
        out = torch.empty((n_rows, d), dtype=torch.float32, device=dev)
        explained = torch.zeros((), dtype=torch.float64, device=dev)
        for start, stop, lo, hi, np_ptr, np_idx, shape in side.row_blocks(d):
            ptr, idx = torch.as_tensor(np_ptr, device=dev), torch.as_tensor(np_idx, device=dev)
            ones = torch_csr_from_arrays(
                ptr, idx, torch.ones(hi - lo, dtype=torch.float32, device=dev), shape
            )
            vals = torch_csr_from_arrays(ptr, idx, target[lo:hi].contiguous(), shape)
            gram = ones @ packed
            a = torch.empty((stop - start, d, d), dtype=torch.float32, device=dev)
            a[:, tri[0], tri[1]] = gram
            a[:, tri[1], tri[0]] = gram
            a[:, eye, eye] += diag[start:stop]
            chol, info = torch.linalg.cholesky_ex(a)
            if bool((info != 0).any()):
                raise CfrecError(
                    "ALS normal equations are not positive definite (non-finite "
                    "factors?); try a larger reg_const"
                )
            rhs = vals @ y
            x = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
            out[start:stop] = x
            explained += (x.double() * (rhs + diag[start:stop] * x).double()).sum()
        return out, float(target.double().square().sum() - explained)


def torch_csr_from_arrays(
    ptr: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """A torch CSR matrix from arrays already known valid (silences torch's beta warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
        )
        return torch.sparse_csr_tensor(ptr, idx, values, shape, check_invariants=False)


_A = TypeVar("_A", np.ndarray, torch.Tensor)
_T = TypeVar("_T")


def after_setup(sweeps: Generator[_T | None, None, None]) -> Generator[_T, None, None]:
    """Run a solver's sweep generator through its set-up and return it.

    The generator yields None once its set-up (layouts, weights, starting factors) is done,
    then one item a sweep: a sweep's seconds, timed around each later item, leave the set-up
    out (as implicit's per-iteration times and the torch models' epochs do); the fit's total
    time still counts it.
    """
    if next(sweeps) is not None:
        raise RuntimeError("a sweep generator yields None once its set-up is done")
    return cast(Generator[_T, None, None], sweeps)


class Ops(Protocol[_A]):
    """The backend arithmetic ALS needs, over one array type ``_A`` (:class:`NumpyOps`: numpy
    arrays, :class:`TorchOps`: torch tensors). The fitting code mixes the arrays with plain
    operators, so it holds them as ``Ops[Any]``."""

    def asarray(self, a: np.ndarray, dtype: Any) -> _A: ...

    def to_numpy(self, a: _A) -> np.ndarray: ...

    def sum64(self, a: _A) -> float: ...

    def solve_side(
        self, side: RatingSide, fixed: _A, target: _A, penalty: Penalty
    ) -> tuple[_A, float]: ...


def penalty_value(
    ops: Ops[Any], penalty: Penalty, n_u: Any, bu: Any, p: Any, n_i: Any, bi: Any, q: Any
) -> float:
    """``sum_rows (reg * n + reg_const) |x|^2 + reg_bias * b^2`` over users and items."""
    total = 0.0
    for n, b, x in ((n_u, bu, p), (n_i, bi, q)):
        total += ops.sum64((penalty.reg * n + penalty.reg_const) * (x * x).sum(1))
        total += penalty.reg_bias * ops.sum64(b * b)
    return total


def explicit_objective(
    ops: Ops[Any],
    users: Any,
    items: Any,
    resid: Any,
    bu: Any,
    bi: Any,
    p: Any,
    q: Any,
    n_u: Any,
    n_i: Any,
    penalty: Penalty,
) -> tuple[float, float]:
    """Regularised ALS objective and training RMSE (unclipped) computed from the ratings.

    ``resid`` is ``r - mu``. The objective is ``sum (r - mu - b_u - b_i - p_u.q_i)^2`` plus
    :func:`penalty_value`; each half-step minimises it exactly given the other side. Training
    uses the cheaper identity of :meth:`NumpyOps.solve_side` instead; this direct form checks it.
    """
    sse = 0.0
    for s in range(0, len(resid), EVAL_CHUNK):
        u, i = users[s : s + EVAL_CHUNK], items[s : s + EVAL_CHUNK]
        err = resid[s : s + EVAL_CHUNK] - bu[u] - bi[i] - (p[u] * q[i]).sum(1)
        sse += ops.sum64(err * err)
    return sse + penalty_value(ops, penalty, n_u, bu, p, n_i, bi, q), (
        sse / max(len(resid), 1)
    ) ** 0.5


def valid_rmse(
    ops: Ops[Any],
    users: Any,
    items: Any,
    ratings: Any,
    mu: float,
    bu: Any,
    bi: Any,
    p: Any,
    q: Any,
    scale: tuple[float, float],
) -> float:
    """RMSE of clipped predictions on validation pairs (model indices)."""
    sse = 0.0
    for s in range(0, len(ratings), EVAL_CHUNK):
        u, i = users[s : s + EVAL_CHUNK], items[s : s + EVAL_CHUNK]
        pred = (mu + bu[u] + bi[i] + (p[u] * q[i]).sum(1)).clip(*scale)
        err = ratings[s : s + EVAL_CHUNK] - pred
        sse += ops.sum64(err * err)
    return (sse / max(len(ratings), 1)) ** 0.5


#: Ratings per chunk when evaluating the implicit objective.
IMPLICIT_EVAL_CHUNK = 1 << 18


def confidence_minus_one(ratings: np.ndarray, alpha: float, kind: str, eps: float) -> np.ndarray:
    """``c - 1`` for rated pairs: ``alpha * r`` (linear) or ``alpha * log(1 + r / eps)`` (log),
    float32 (computed in float32: no float64 copy of millions of ratings)."""
    r = np.asarray(ratings, dtype=np.float32)
    if kind == "linear":
        return np.multiply(r, np.float32(alpha), dtype=np.float32)
    f = np.log1p(np.divide(r, np.float32(eps), dtype=np.float32))
    f *= np.float32(alpha)
    return f


def implicit_solve_numpy(
    side: RatingSide, fixed: np.ndarray, weight: np.ndarray, reg_diag: np.ndarray
) -> np.ndarray:
    """Every row's ``x`` solving ``(F'F + F_r' W_r F_r + reg_r I) x = F_r' (1 + w_r)``.

    ``weight`` holds ``c - 1`` in the side's CSR order and ``reg_diag`` the per-row L2 strength.
    """
    k = fixed.shape[1]
    tri_r, tri_c = np.triu_indices(k)
    packed = fixed[:, tri_r] * fixed[:, tri_c]  # (n_other, k(k+1)/2) packed outer products
    shared = fixed.T.astype(np.float64) @ fixed.astype(np.float64)
    n_rows = len(side.counts)
    out = np.empty((n_rows, k), dtype=np.float32)
    eye = np.arange(k)
    for start, stop, lo, hi, ptr, idx, shape in side.row_blocks(k):
        w = weight[lo:hi]
        gram = sp.csr_array((w, idx, ptr), shape=shape) @ packed
        rhs = sp.csr_array((w + np.float32(1.0), idx, ptr), shape=shape) @ fixed
        a = np.empty((stop - start, k, k), dtype=np.float32)
        a[:] = shared.astype(np.float32)
        a[:, tri_r, tri_c] += gram
        off = tri_r != tri_c
        a[:, tri_c[off], tri_r[off]] += gram[:, off]
        a[:, eye, eye] += reg_diag[start:stop, None]
        out[start:stop] = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]
    return out


def implicit_solve_torch(
    side: RatingSide, fixed: torch.Tensor, weight: torch.Tensor, reg_diag: torch.Tensor
) -> torch.Tensor:
    """:func:`implicit_solve_numpy` with torch sparse products and batched Cholesky (for CUDA)."""
    dev = fixed.device
    k = fixed.shape[1]
    tri = torch.triu_indices(k, k, device=dev)
    packed = fixed[:, tri[0]] * fixed[:, tri[1]]
    shared = (fixed.double().T @ fixed.double()).float()
    off = tri[0] != tri[1]
    eye = torch.arange(k, device=dev)
    n_rows = len(side.counts)
    out = torch.empty((n_rows, k), dtype=torch.float32, device=dev)
    for start, stop, lo, hi, np_ptr, np_idx, shape in side.row_blocks(k):
        ptr, idx = torch.as_tensor(np_ptr, device=dev), torch.as_tensor(np_idx, device=dev)
        w = weight[lo:hi].contiguous()
        gram = torch_csr_from_arrays(ptr, idx, w, shape) @ packed
        rhs = torch_csr_from_arrays(ptr, idx, w + 1.0, shape) @ fixed
        a = shared.expand(stop - start, k, k).clone()
        a[:, tri[0], tri[1]] += gram
        a[:, tri[1][off], tri[0][off]] += gram[:, off]
        a[:, eye, eye] += reg_diag[start:stop, None]
        chol, info = torch.linalg.cholesky_ex(a)
        if bool((info != 0).any()):
            raise CfrecError(
                "iALS normal equations are not positive definite (non-finite factors?); "
                "try a larger reg"
            )
        out[start:stop] = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    return out


def implicit_objective(
    users: np.ndarray,
    items: np.ndarray,
    weight: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    reg_u: np.ndarray,
    reg_i: np.ndarray,
) -> float:
    """The full iALS objective over all users x items pairs, without forming them.

    ``sum_all c (p - s)^2 = sum_all s^2 + sum_rated [(1 + w)(1 - s)^2 - s^2]`` with
    ``sum_all s^2 = <X'X, Y'Y>`` and ``w = c - 1``; plus the L2 terms.
    """
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    total = float(np.sum((x64.T @ x64) * (y64.T @ y64)))
    for s in range(0, len(users), IMPLICIT_EVAL_CHUNK):
        u, i = users[s : s + IMPLICIT_EVAL_CHUNK], items[s : s + IMPLICIT_EVAL_CHUNK]
        score = np.einsum("ij,ij->i", x[u], y[i]).astype(np.float64)
        total += float(
            np.sum((1.0 + weight[s : s + IMPLICIT_EVAL_CHUNK]) * (1.0 - score) ** 2 - score**2)
        )
    total += float(np.dot(reg_u, np.einsum("ij,ij->i", x64, x64)))
    total += float(np.dot(reg_i, np.einsum("ij,ij->i", y64, y64)))
    return total


# ====================================================================== conjugate gradient
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


def _csr_layout(
    rows: np.ndarray, cols: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, counts, indptr)`` of the CSR layout of ``rows`` (stable within a row); ``order``
    is int32 when the ratings fit (half the memory of numpy's int64 argsort)."""
    order = np.argsort(rows, kind="stable").astype(_index_dtype(len(rows)), copy=False)
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

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def asarray(self, a: np.ndarray, dtype: Any) -> Any: ...

    def to_numpy(self, a: Any) -> np.ndarray: ...

    def index(self, a: np.ndarray) -> Any: ...

    def sum64(self, a: Any) -> float: ...

    def dot64(self, a: Any, b: Any) -> float: ...

    def copy(self, a: Any) -> Any: ...

    def rowdot(self, a: Any, b: Any) -> Any: ...

    def ratio(self, num: Any, den: Any) -> Any: ...

    def zeros(self, shape: tuple[int, int]) -> Any: ...

    def with_ones(self, z: Any) -> Any: ...

    def gram(self, f: Any) -> Any: ...

    def residual(
        self, side: CGSide, v: Any, fixed: Any, weight: Any, target: Any
    ) -> tuple[Any, float, float]: ...

    def apply(self, side: CGSide, v: Any, fixed: Any, weight: Any) -> Any: ...

    def fused_half_step(self, side: CGSide, fixed: Any, x0: Any, target: Any, weight: Any, gram: Any,
                        diag: Any, steps: int) -> tuple[Any, float] | None: ...


class _CGProducts(ABC, Generic[_A]):
    """The two products CG needs, from one engine's ``_products`` (numpy or torch arrays)."""

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

    def with_ones(self, z: _A) -> _A:
        """A copy of ``z`` whose first column is 1 (the constant column of ALS's augmented factors)."""
        out = self.copy(z)
        out[:, 0] = 1.0
        return out

    @abstractmethod
    def copy(self, a: _A) -> _A:
        """A float32 copy of ``a`` that owns its memory."""

    @abstractmethod
    def _ones_like(self, a: _A) -> _A:
        """An array of ones shaped like ``a``, in this engine's array type."""

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
            t = self._ones_like(s) if w is None else 1.0 + w
        return t - ws, t, ws


_NONE = np.zeros(0, dtype=np.float32)  # "no weights" / "no targets" for the compiled products


_NO_GRAM = np.zeros((0, 0), dtype=np.float32)  # "no Gram matrix" for the compiled half-step


@functools.cache
def _compiled_half_step() -> Any:
    """:func:`cfrec.models.compiled.cg_rows_half_step`, or None where numba is missing."""
    try:
        from cfrec.models.compiled import cg_rows_half_step
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return cg_rows_half_step


@functools.cache
def _compiled_products() -> Any:
    """:func:`cfrec.models.compiled.cg_chunk_products`, or None where numba is missing (then
    torch's sampled product and scipy's sparse product compute the same values)."""
    try:
        from cfrec.models.compiled import cg_chunk_products
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

    Each chunk's products are one compiled pass (:func:`cfrec.models.compiled.cg_chunk_products`)
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
        order, counts, indptr = _csr_layout(rows, cols, n_rows)
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        self.indices = cols[order].astype(_index_dtype(n_cols), copy=False)
        row_of = rows[order].astype(_index_dtype(n_rows), copy=False)
        col_counts = np.bincount(cols, minlength=n_cols).astype(np.float32)
        self.user_side = CGSide(
            "rows", 0, self.n_rows, counts.astype(np.float32), order, self.indices
        )
        self.item_side = CGSide("cols", 0, self.n_cols, col_counts, order, row_of)
        size = int(chunk) if chunk is not None else cg_chunk_size(len(order))
        bounds = cg_chunk_bounds(indptr, size)
        longest = int(np.diff(indptr[bounds]).max(initial=0))
        self._zeros = np.zeros(longest, dtype=np.float32)
        self.chunks = [
            self._chunk(indptr, int(a), int(b))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        self.n_workers = max(1, min(pool_threads(threads), len(self.chunks)))
        products, half_step = _compiled_products(), _compiled_half_step()
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
        template = torch_csr_from_arrays(
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
        (:func:`cfrec.models.compiled.cg_rows_half_step`); the item side's ratings are spread
        over every chunk of the user-major layout, so it runs step by step (None)."""
        kernel = _compiled_half_step()
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

    # ------------------------------------------------------------------ arithmetic
    def asarray(self, a: np.ndarray, dtype: Any) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=dtype)

    def to_numpy(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    def index(self, a: np.ndarray) -> np.ndarray:
        return a

    def sum64(self, a: np.ndarray) -> float:
        return float(np.sum(a, dtype=np.float64))

    def dot64(self, a: np.ndarray, b: np.ndarray) -> float:
        """``sum(a * b)`` of two vectors, accumulated in float64 without a float64 copy."""
        return float(np.einsum("i,i->", a, b, dtype=np.float64))

    def copy(self, a: np.ndarray) -> np.ndarray:
        return np.array(a, dtype=np.float32, order="C")

    def rowdot(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", a, b)

    def ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    def zeros(self, shape: tuple[int, int]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def _ones_like(self, a: np.ndarray) -> np.ndarray:
        return np.ones_like(a)

    def gram(self, f: np.ndarray) -> np.ndarray:
        f64 = f.astype(np.float64)
        return (f64.T @ f64).astype(np.float32)

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
        kernel = _compiled_products()
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
                template = torch_csr_from_arrays(
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

    def asarray(self, a: np.ndarray, dtype: Any) -> torch.Tensor:
        tdtype = torch.int64 if np.dtype(dtype).kind in "iu" else torch.float32
        return torch.as_tensor(np.asarray(a, dtype=dtype), dtype=tdtype, device=self.device)

    def to_numpy(self, a: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(a.detach().cpu().numpy(), dtype=np.float32)

    def index(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)

    def sum64(self, a: torch.Tensor) -> float:
        return float(a.sum(dtype=torch.float64))

    def dot64(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.dot(a.double(), b.double()))

    def copy(self, a: torch.Tensor) -> torch.Tensor:
        return a.clone()

    def rowdot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(1)

    def ratio(self, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(
            den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num)
        )

    def zeros(self, shape: tuple[int, int]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def _ones_like(self, a: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(a)

    def gram(self, f: torch.Tensor) -> torch.Tensor:
        return (f.double().T @ f.double()).float()

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
            mat = torch_csr_from_arrays(
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
    r, t_s, w_ss = engine.residual(side, x0, fixed, weight, target)
    rest = diag * x0
    if gram is not None:
        rest += x0 @ gram
    r -= rest
    # f(x0) = x0'A x0 / 2 - b'x0, with x0'A x0 = sum w s^2 + x0'(G + D) x0 and b'x0 = sum t s
    f = 0.5 * (w_ss + engine.sum64(engine.rowdot(x0, rest))) - t_s
    del rest
    # the vectors are updated in place: a few (n_rows, d) arrays, whatever the number of steps
    x, p = engine.copy(x0), engine.copy(r)
    rs = engine.rowdot(r, r)
    for step in range(steps):
        ap = engine.apply(side, p, fixed, weight)
        ap += diag * p
        if gram is not None:
            ap += p @ gram
        pr = engine.rowdot(p, r)
        alpha = engine.ratio(pr, engine.rowdot(p, ap))
        x += alpha[:, None] * p
        f -= 0.5 * engine.sum64(alpha * pr)
        if step == steps - 1:
            break
        r -= alpha[:, None] * ap
        del ap
        rs_new = engine.rowdot(r, r)
        p *= engine.ratio(rs_new, rs)[:, None]
        p += r
        rs = rs_new
    return x, f
