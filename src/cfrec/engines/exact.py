"""Exact alternating-least-squares half-steps, and the ALS objectives.

With one side fixed, every row ``r`` of the other side solves a small ridge regression ``A_r x_r =
b_r`` (see :mod:`cfrec.engines.cg` for the iterative alternative). Here :class:`RatingSide` groups
the ratings by row (CSR order); the normal equations of all rows are assembled from a sparse (rows
x others) matrix times the fixed side's packed outer products and solved in chunks by the
backend's batched solver (LAPACK on numpy, Cholesky on torch), so work grows with ``ratings x
d^2`` and memory with rows x d^2 per chunk, never with users x items.

* :func:`solve_side`: explicit ALS, every row's ``[b, x]`` against ``[1, fixed]``;
* :func:`implicit_solve`: iALS, ``(F'F + F_r' W_r F_r + reg_r I) x = F_r' (1 + w_r)``;
* :func:`explicit_objective`, :func:`penalty_value`, :func:`valid_rmse`,
  :func:`implicit_objective`: the quantities the models record each iteration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from cfrec.engines.backend import ArrayBackend

#: Upper bound on the float32 elements of one chunk of normal equations (rows x d x d): 64 MiB.
_CHUNK_ELEMENTS = 1 << 24
#: Ratings per chunk when evaluating the objective (bounds the gathered (chunk, k) blocks).
EVAL_CHUNK = 1 << 20
#: Ratings per chunk when evaluating the implicit objective.
IMPLICIT_EVAL_CHUNK = 1 << 18


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


def solve_side(xp: ArrayBackend, side: RatingSide, fixed: Any, target: Any, penalty: Penalty) -> tuple[Any, float]:
    """Every row's ``[b, x]`` minimising its ridge problem against the fixed ``[1, fixed]``.

    ``target`` holds, in the side's CSR order, the rating minus everything the fixed side
    already explains (``r - mu - b_other``). Returns the (n_rows, k + 1) float32 solutions
    and the training sum of squared errors after the step, without revisiting the ratings:
    with ``A = G + D`` (Gram matrix plus penalty diagonal) and ``A x = rhs``,
    ``sum (t - y.x)^2 = sum t^2 - x.rhs - x'Dx``.
    """
    k = fixed.shape[1]
    d = k + 1
    y = xp.zeros((fixed.shape[0], d))
    y[:, 0] = 1.0
    y[:, 1:] = fixed
    tri_r, tri_c = xp.triu_indices(d)
    packed = y[:, tri_r] * y[:, tri_c]  # (n_other, d(d+1)/2): packed outer products
    diag = xp.asarray(penalty.diagonal(side.counts, k))
    eye = xp.arange(d)
    out = xp.zeros((len(side.counts), d))
    explained = 0.0
    for start, stop, lo, hi, ptr, idx, shape in side.row_blocks(d):
        t = target[lo:hi]
        gram = xp.csr(ptr, idx, xp.ones_like(t), shape) @ packed
        a = xp.zeros((stop - start, d, d))
        a[:, tri_r, tri_c] = gram
        a[:, tri_c, tri_r] = gram
        a[:, eye, eye] += diag[start:stop]
        rhs = xp.csr(ptr, idx, t, shape) @ y
        x = xp.spd_solve(a, rhs, "ALS normal equations are not positive definite (non-finite "
                                 "factors?); try a larger reg_const")
        out[start:stop] = x
        explained += xp.dot64(x.reshape(-1), (rhs + diag[start:stop] * x).reshape(-1))
    return out, xp.dot64(target, target) - explained


def implicit_solve(xp: ArrayBackend, side: RatingSide, fixed: Any, weight: Any, reg_diag: Any) -> Any:
    """Every row's ``x`` solving ``(F'F + F_r' W_r F_r + reg_r I) x = F_r' (1 + w_r)``.

    ``weight`` holds ``c - 1`` in the side's CSR order and ``reg_diag`` the per-row L2 strength.
    """
    k = fixed.shape[1]
    tri_r, tri_c = xp.triu_indices(k)
    off = tri_r != tri_c
    packed = fixed[:, tri_r] * fixed[:, tri_c]  # (n_other, k(k+1)/2) packed outer products
    shared = xp.gram(fixed)
    out = xp.zeros((len(side.counts), k))
    eye = xp.arange(k)
    for start, stop, lo, hi, ptr, idx, shape in side.row_blocks(k):
        w = weight[lo:hi]
        gram = xp.csr(ptr, idx, w, shape) @ packed
        rhs = xp.csr(ptr, idx, w + 1.0, shape) @ fixed
        a = xp.zeros((stop - start, k, k))
        a[:] = shared
        a[:, tri_r, tri_c] += gram
        a[:, tri_c[off], tri_r[off]] += gram[:, off]
        a[:, eye, eye] += reg_diag[start:stop, None]
        out[start:stop] = xp.spd_solve(a, rhs, "iALS normal equations are not positive definite "
                                               "(non-finite factors?); try a larger reg")
    return out


# ---------------------------------------------------------------------- objectives
def penalty_value(xp: ArrayBackend, penalty: Penalty, n_u: Any, bu: Any, p: Any, n_i: Any, bi: Any,
                  q: Any) -> float:
    """``sum_rows (reg * n + reg_const) |x|^2 + reg_bias * b^2`` over users and items."""
    total = 0.0
    for n, b, x in ((n_u, bu, p), (n_i, bi, q)):
        total += xp.sum64((penalty.reg * n + penalty.reg_const) * (x * x).sum(1))
        total += penalty.reg_bias * xp.sum64(b * b)
    return total


def explicit_objective(xp: ArrayBackend, users: Any, items: Any, resid: Any, bu: Any, bi: Any, p: Any,
                       q: Any, n_u: Any, n_i: Any, penalty: Penalty) -> tuple[float, float]:
    """Regularised ALS objective and training RMSE (unclipped) computed from the ratings.

    ``resid`` is ``r - mu``. The objective is ``sum (r - mu - b_u - b_i - p_u.q_i)^2`` plus
    :func:`penalty_value`; each half-step minimises it exactly given the other side. Training
    uses the cheaper identity of :func:`solve_side` instead; this direct form checks it.
    """
    sse = 0.0
    for s in range(0, len(resid), EVAL_CHUNK):
        u, i = users[s : s + EVAL_CHUNK], items[s : s + EVAL_CHUNK]
        err = resid[s : s + EVAL_CHUNK] - bu[u] - bi[i] - (p[u] * q[i]).sum(1)
        sse += xp.sum64(err * err)
    return sse + penalty_value(xp, penalty, n_u, bu, p, n_i, bi, q), (sse / max(len(resid), 1)) ** 0.5


def valid_rmse(xp: ArrayBackend, users: Any, items: Any, ratings: Any, mu: float, bu: Any, bi: Any, p: Any,
               q: Any, scale: tuple[float, float]) -> float:
    """RMSE of clipped predictions on validation pairs (model indices)."""
    sse = 0.0
    for s in range(0, len(ratings), EVAL_CHUNK):
        u, i = users[s : s + EVAL_CHUNK], items[s : s + EVAL_CHUNK]
        pred = (mu + bu[u] + bi[i] + (p[u] * q[i]).sum(1)).clip(*scale)
        err = ratings[s : s + EVAL_CHUNK] - pred
        sse += xp.sum64(err * err)
    return (sse / max(len(ratings), 1)) ** 0.5


def implicit_objective(users: np.ndarray, items: np.ndarray, weight: np.ndarray, x: np.ndarray, y: np.ndarray,
                       reg_u: np.ndarray, reg_i: np.ndarray) -> float:
    """The full iALS objective over all users x items pairs, without forming them.

    ``sum_all c (p - s)^2 = sum_all s^2 + sum_rated [(1 + w)(1 - s)^2 - s^2]`` with
    ``sum_all s^2 = <X'X, Y'Y>`` and ``w = c - 1``; plus the L2 terms.
    """
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    total = float(np.sum((x64.T @ x64) * (y64.T @ y64)))
    for s in range(0, len(users), IMPLICIT_EVAL_CHUNK):
        u, i = users[s : s + IMPLICIT_EVAL_CHUNK], items[s : s + IMPLICIT_EVAL_CHUNK]
        score = np.einsum("ij,ij->i", x[u], y[i]).astype(np.float64)
        total += float(np.sum((1.0 + weight[s : s + IMPLICIT_EVAL_CHUNK]) * (1.0 - score) ** 2 - score**2))
    total += float(np.dot(reg_u, np.einsum("ij,ij->i", x64, x64)))
    total += float(np.dot(reg_i, np.einsum("ij,ij->i", y64, y64)))
    return total
