"""Solvers shared by the alternating-least-squares models (:mod:`cfrec.models.als`, explicit
ratings, and :mod:`cfrec.models.ials`, implicit feedback).

Both alternate exact half-steps: with one side fixed, every row of the other side solves a small
ridge regression. :class:`RatingSide` groups the ratings by row (CSR order); the normal
equations of all rows are assembled at once from a sparse (rows x others) matrix times the fixed
side's packed outer products and solved in chunks by batched LAPACK (numpy) or batched Cholesky
(torch, for CUDA), so memory grows with rows x d^2 per chunk, never with users x items.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from cfrec.errors import CfrecError

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

    def solve_side(self, side: RatingSide, fixed: np.ndarray, target: np.ndarray,
                   penalty: Penalty) -> tuple[np.ndarray, float]:
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
        step = chunk_rows(d)
        for start in range(0, n_rows, step):
            stop = min(start + step, n_rows)
            lo, hi = int(side.indptr[start]), int(side.indptr[stop])
            ptr = side.indptr[start:stop + 1] - lo
            idx = side.indices[lo:hi]
            shape = (stop - start, side.n_other)
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
            explained += float(np.einsum("ij,ij->", x, rhs + diag[start:stop] * x, dtype=np.float64))
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

    def solve_side(self, side: RatingSide, fixed: torch.Tensor, target: torch.Tensor,
                   penalty: Penalty) -> tuple[torch.Tensor, float]:
        dev = self.device
        k = fixed.shape[1]
        d = k + 1
        y = torch.cat([torch.ones((fixed.shape[0], 1), dtype=torch.float32, device=dev), fixed], dim=1)
        tri = torch.triu_indices(d, d, device=dev)
        packed = y[:, tri[0]] * y[:, tri[1]]
        n_rows = len(side.counts)
        diag = torch.as_tensor(penalty.diagonal(side.counts, k), device=dev)
        eye = torch.arange(d, device=dev)
        out = torch.empty((n_rows, d), dtype=torch.float32, device=dev)
        explained = torch.zeros((), dtype=torch.float64, device=dev)
        step = chunk_rows(d)
        for start in range(0, n_rows, step):
            stop = min(start + step, n_rows)
            lo, hi = int(side.indptr[start]), int(side.indptr[stop])
            ptr = torch.as_tensor(side.indptr[start:stop + 1] - lo, device=dev)
            idx = torch.as_tensor(side.indices[lo:hi], device=dev)
            shape = (stop - start, side.n_other)
            ones = torch_csr_from_arrays(ptr, idx, torch.ones(hi - lo, dtype=torch.float32, device=dev), shape)
            vals = torch_csr_from_arrays(ptr, idx, target[lo:hi].contiguous(), shape)
            gram = ones @ packed
            a = torch.empty((stop - start, d, d), dtype=torch.float32, device=dev)
            a[:, tri[0], tri[1]] = gram
            a[:, tri[1], tri[0]] = gram
            a[:, eye, eye] += diag[start:stop]
            chol, info = torch.linalg.cholesky_ex(a)
            if bool((info != 0).any()):
                raise CfrecError("ALS normal equations are not positive definite (non-finite "
                                 "factors?); try a larger reg_const")
            rhs = vals @ y
            x = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
            out[start:stop] = x
            explained += (x.double() * (rhs + diag[start:stop] * x).double()).sum()
        return out, float(target.double().square().sum() - explained)


def torch_csr_from_arrays(ptr: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A torch CSR matrix from arrays already known valid (silences torch's beta-feature warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(ptr, idx, values, shape, check_invariants=False)


_A = TypeVar("_A")


class Ops(Protocol[_A]):
    """The backend arithmetic ALS needs, over one array type ``_A`` (:class:`NumpyOps`: numpy
    arrays, :class:`TorchOps`: torch tensors). The fitting code mixes the arrays with plain
    operators, so it holds them as ``Ops[Any]``."""

    def asarray(self, a: np.ndarray, dtype: Any) -> _A: ...

    def to_numpy(self, a: _A) -> np.ndarray: ...

    def sum64(self, a: _A) -> float: ...

    def solve_side(self, side: RatingSide, fixed: _A, target: _A, penalty: Penalty) -> tuple[_A, float]: ...


def penalty_value(ops: Ops[Any], penalty: Penalty, n_u: Any, bu: Any, p: Any,
                   n_i: Any, bi: Any, q: Any) -> float:
    """``sum_rows (reg * n + reg_const) |x|^2 + reg_bias * b^2`` over users and items."""
    total = 0.0
    for n, b, x in ((n_u, bu, p), (n_i, bi, q)):
        total += ops.sum64((penalty.reg * n + penalty.reg_const) * (x * x).sum(1))
        total += penalty.reg_bias * ops.sum64(b * b)
    return total


def explicit_objective(ops: Ops[Any], users: Any, items: Any, resid: Any, bu: Any, bi: Any, p: Any, q: Any,
               n_u: Any, n_i: Any, penalty: Penalty) -> tuple[float, float]:
    """Regularised ALS objective and training RMSE (unclipped) computed from the ratings.

    ``resid`` is ``r - mu``. The objective is ``sum (r - mu - b_u - b_i - p_u.q_i)^2`` plus
    :func:`penalty_value`; each half-step minimises it exactly given the other side. Training
    uses the cheaper identity of :meth:`NumpyOps.solve_side` instead; this direct form checks it.
    """
    sse = 0.0
    for s in range(0, len(resid), EVAL_CHUNK):
        u, i = users[s:s + EVAL_CHUNK], items[s:s + EVAL_CHUNK]
        err = resid[s:s + EVAL_CHUNK] - bu[u] - bi[i] - (p[u] * q[i]).sum(1)
        sse += ops.sum64(err * err)
    return sse + penalty_value(ops, penalty, n_u, bu, p, n_i, bi, q), (sse / max(len(resid), 1)) ** 0.5


def valid_rmse(ops: Ops[Any], users: Any, items: Any, ratings: Any, mu: float, bu: Any, bi: Any,
                p: Any, q: Any, scale: tuple[float, float]) -> float:
    """RMSE of clipped predictions on validation pairs (model indices)."""
    sse = 0.0
    for s in range(0, len(ratings), EVAL_CHUNK):
        u, i = users[s:s + EVAL_CHUNK], items[s:s + EVAL_CHUNK]
        pred = (mu + bu[u] + bi[i] + (p[u] * q[i]).sum(1)).clip(*scale)
        err = ratings[s:s + EVAL_CHUNK] - pred
        sse += ops.sum64(err * err)
    return (sse / max(len(ratings), 1)) ** 0.5


#: Ratings per chunk when evaluating the implicit objective.
IMPLICIT_EVAL_CHUNK = 1 << 18


def confidence_minus_one(ratings: np.ndarray, alpha: float, kind: str, eps: float) -> np.ndarray:
    """``c - 1`` for rated pairs: ``alpha * r`` (linear) or ``alpha * log(1 + r / eps)`` (log)."""
    r = np.asarray(ratings, dtype=np.float64)
    f = r if kind == "linear" else np.log1p(r / eps)
    return (alpha * f).astype(np.float32)


def implicit_solve_numpy(side: RatingSide, fixed: np.ndarray, weight: np.ndarray, reg_diag: np.ndarray) -> np.ndarray:
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
    step = chunk_rows(k)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        lo, hi = int(side.indptr[start]), int(side.indptr[stop])
        ptr = side.indptr[start:stop + 1] - lo
        idx = side.indices[lo:hi]
        shape = (stop - start, side.n_other)
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


def implicit_solve_torch(side: RatingSide, fixed: torch.Tensor, weight: torch.Tensor, reg_diag: torch.Tensor) -> torch.Tensor:
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
    step = chunk_rows(k)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        lo, hi = int(side.indptr[start]), int(side.indptr[stop])
        ptr = torch.as_tensor(side.indptr[start:stop + 1] - lo, device=dev)
        idx = torch.as_tensor(side.indices[lo:hi], device=dev)
        shape = (stop - start, side.n_other)
        w = weight[lo:hi].contiguous()
        gram = torch_csr_from_arrays(ptr, idx, w, shape) @ packed
        rhs = torch_csr_from_arrays(ptr, idx, w + 1.0, shape) @ fixed
        a = shared.expand(stop - start, k, k).clone()
        a[:, tri[0], tri[1]] += gram
        a[:, tri[1][off], tri[0][off]] += gram[:, off]
        a[:, eye, eye] += reg_diag[start:stop, None]
        chol, info = torch.linalg.cholesky_ex(a)
        if bool((info != 0).any()):
            raise CfrecError("iALS normal equations are not positive definite (non-finite factors?); "
                             "try a larger reg")
        out[start:stop] = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    return out


def implicit_objective(users: np.ndarray, items: np.ndarray, weight: np.ndarray, x: np.ndarray, y: np.ndarray,
               reg_u: np.ndarray, reg_i: np.ndarray) -> float:
    """The full iALS objective over all users x items pairs, without forming them.

    ``sum_all c (p - s)^2 = sum_all s^2 + sum_rated [(1 + w)(1 - s)^2 - s^2]`` with
    ``sum_all s^2 = <X'X, Y'Y>`` and ``w = c - 1``; plus the L2 terms.
    """
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    total = float(np.sum((x64.T @ x64) * (y64.T @ y64)))
    for s in range(0, len(users), IMPLICIT_EVAL_CHUNK):
        u, i = users[s:s + IMPLICIT_EVAL_CHUNK], items[s:s + IMPLICIT_EVAL_CHUNK]
        score = np.einsum("ij,ij->i", x[u], y[i]).astype(np.float64)
        total += float(np.sum((1.0 + weight[s:s + IMPLICIT_EVAL_CHUNK]) * (1.0 - score) ** 2 - score ** 2))
    total += float(np.dot(reg_u, np.einsum("ij,ij->i", x64, x64)))
    total += float(np.dot(reg_i, np.einsum("ij,ij->i", y64, y64)))
    return total
