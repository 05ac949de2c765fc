"""Compiled (numba) kernels of the neighbour-restricted EASE solve (:mod:`cfrec.engines.sparse_ease`).

Imported on first use, like :mod:`cfrec.engines.compiled`, whose cache policy they share.

* :func:`top_k_rows`: each row's ``k`` largest off-diagonal entries of a sparse symmetric matrix;
* :func:`solve_items`: each item's ``k x k`` ridge system gathered from ``G`` and solved.
"""

from __future__ import annotations

import numpy as np

from cfrec.engines.compiled import _jit


@_jit(fastmath=False)
def top_k_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, scale: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """CSR lists of each row's ``k`` off-diagonal entries with the largest
    ``data * scale[row] * scale[col]`` (ties to the lower column), each list sorted by column."""
    n = len(indptr) - 1
    counts = np.zeros(n + 1, np.int64)
    for i in range(n):
        own = 0
        for p in range(indptr[i], indptr[i + 1]):
            if indices[p] == i:
                own = 1
        counts[i + 1] = min(indptr[i + 1] - indptr[i] - own, k)
    for i in range(n):
        counts[i + 1] += counts[i]
    out = np.empty(counts[n], np.int32)
    for i in range(n):
        lo, hi = indptr[i], indptr[i + 1]
        want = counts[i + 1] - counts[i]
        if want == 0:
            continue
        cols = np.empty(hi - lo, np.int32)
        score = np.empty(hi - lo, np.float64)
        m = 0
        for p in range(lo, hi):
            c = indices[p]
            if c != i:
                cols[m] = c
                score[m] = -data[p] * scale[i] * scale[c]
                m += 1
        order = np.argsort(score[:m], kind="mergesort")[:want]
        chosen = np.sort(cols[:m][order])
        out[counts[i]:counts[i + 1]] = chosen
    return counts, out


@_jit(fastmath=False)
def _find(cols: np.ndarray, start: int, target: int) -> int:  # pragma: no cover - compiled
    """Position of ``target`` in the sorted ``cols`` at or after ``start`` (galloping, then
    binary search), or where it would be inserted."""
    n = len(cols)
    step = 1
    hi = start
    while hi < n and cols[hi] < target:
        start = hi + 1
        hi = start + step
        step *= 2
    hi = min(hi, n)
    lo = start
    while lo < hi:
        mid = (lo + hi) // 2
        if cols[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit(fastmath=True)
def solve_items(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, nbr_ptr: np.ndarray,
                nbr_idx: np.ndarray, j0: int, j1: int, m: int, lam: float,
                out: np.ndarray) -> None:  # pragma: no cover - compiled
    """For items ``j0..j1-1``, solve ``(G[N(j), N(j)] + lam I) b = G[N(j), j]`` and write ``b``
    into ``out[nbr_ptr[j]:nbr_ptr[j + 1]]`` (``G`` a CSR with sorted indices, ``N(j)`` sorted,
    ``m`` the longest list). Entries of ``G`` are found by galloping search along each
    neighbour's row; the system is solved by Cholesky factorisation (it is positive definite:
    a Gram matrix plus ``lam > 0`` on the diagonal)."""
    a = np.empty((m, m), np.float64)
    b = np.empty(m, np.float64)
    for j in range(j0, j1):
        s, e = nbr_ptr[j], nbr_ptr[j + 1]
        cnt = e - s
        if cnt == 0:
            continue
        nb = nbr_idx[s:e]
        for p in range(cnt):
            row = nb[p]
            lo, hi = indptr[row], indptr[row + 1]
            cols = indices[lo:hi]
            at = _find(cols, 0, j)
            b[p] = data[lo + at] if at < hi - lo and cols[at] == j else 0.0
            at = _find(cols, 0, nb[p])
            for q in range(p, cnt):
                at = _find(cols, at, nb[q])
                v = data[lo + at] if at < hi - lo and cols[at] == nb[q] else 0.0
                a[q, p] = v  # lower triangle only
            a[p, p] += lam
        # Cholesky factorisation, lower triangle, in place
        for c in range(cnt):
            d = a[c, c]
            for t in range(c):
                d -= a[c, t] * a[c, t]
            d = np.sqrt(d)
            a[c, c] = d
            for r in range(c + 1, cnt):
                v = a[r, c]
                for t in range(c):
                    v -= a[r, t] * a[c, t]
                a[r, c] = v / d
        for r in range(cnt):  # L y = b
            v = b[r]
            for t in range(r):
                v -= a[r, t] * b[t]
            b[r] = v / a[r, r]
        for r in range(cnt - 1, -1, -1):  # L' x = y
            v = b[r]
            for t in range(r + 1, cnt):
                v -= a[t, r] * b[t]
            b[r] = v / a[r, r]
        for p in range(cnt):
            out[s + p] = b[p]
