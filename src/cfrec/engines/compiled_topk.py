"""Compiled (numba) top-k selection of score rows: one pass per row with a k-entry heap.

:func:`cfrec.ranking.top_k` selects with ``numpy.argpartition`` (several passes over a negated
copy of the block, on one core); for blocks of a large catalogue (every user of ML-25M against
59K items) :func:`top_k_into` reads each score once, keeps the ``k`` best in a heap, and runs
row ranges on every core (the kernel releases the GIL). Both give the same lists: descending
score, ties broken by the lower column, NaN ranked as ``-inf``, slots without a candidate index
-1 and score ``-inf``.
"""

from __future__ import annotations

import numpy as np

from cfrec.engines.compiled import kernel
from cfrec.threads import pool_threads, run_chunks


@kernel
def _worse(s_a: float, c_a: int, s_b: float, c_b: int) -> bool:  # pragma: no cover - compiled
    return s_a < s_b or (s_a == s_b and c_a > c_b)


@kernel
def _swap(heap_s: np.ndarray, heap_c: np.ndarray, i: int, j: int) -> None:  # pragma: no cover - compiled
    heap_s[i], heap_s[j] = heap_s[j], heap_s[i]
    heap_c[i], heap_c[j] = heap_c[j], heap_c[i]


@kernel
def topk_rows(scores: np.ndarray, k: int, ex_indptr: np.ndarray, ex_indices: np.ndarray,
              lo: int, hi: int, out_idx: np.ndarray, out_top: np.ndarray) -> None:  # pragma: no cover
    """Rows ``lo..hi`` of ``scores`` (written: excluded entries become ``-inf``) into
    ``out_idx``/``out_top`` (shape (n, k)); ``ex_indptr``/``ex_indices`` are a CSR matrix of the
    excluded columns of each row (``ex_indptr`` of length 1 when nothing is excluded)."""
    m = scores.shape[1]
    neg_inf = np.float32(-np.inf)
    heap_s = np.empty(k, np.float32)
    heap_c = np.empty(k, np.int64)
    has_ex = len(ex_indptr) > 1
    for r in range(lo, hi):
        row = scores[r]
        if has_ex:
            for j in range(ex_indptr[r], ex_indptr[r + 1]):
                row[ex_indices[j]] = neg_inf
        size = 0
        for c in range(m):
            s = row[c]
            if s != s:
                s = neg_inf
            if size < k:
                i = size
                size += 1
                heap_s[i] = s
                heap_c[i] = c
                while i > 0:  # sift up: the root is the worst kept entry
                    parent = (i - 1) >> 1
                    if _worse(heap_s[i], heap_c[i], heap_s[parent], heap_c[parent]):
                        _swap(heap_s, heap_c, i, parent)
                        i = parent
                    else:
                        break
            elif s > heap_s[0]:  # columns come in order: a tie never beats a kept entry
                heap_s[0] = s
                heap_c[0] = c
                _sift_down(heap_s, heap_c, size)
        for pos in range(size - 1, -1, -1):  # pop the worst into the last free slot
            out_top[r, pos] = heap_s[0]
            out_idx[r, pos] = -1 if heap_s[0] == neg_inf else heap_c[0]
            size -= 1
            heap_s[0] = heap_s[size]
            heap_c[0] = heap_c[size]
            _sift_down(heap_s, heap_c, size)


@kernel
def _sift_down(heap_s: np.ndarray, heap_c: np.ndarray, size: int) -> None:  # pragma: no cover
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(heap_s[right], heap_c[right], heap_s[left], heap_c[left]):
            child = right
        if _worse(heap_s[child], heap_c[child], heap_s[i], heap_c[i]):
            _swap(heap_s, heap_c, i, child)
            i = child
        else:
            return


def top_k_into(scores: np.ndarray, k: int, ex_indptr: np.ndarray | None,
               ex_indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` (≤ columns) best columns of each row of a C-contiguous float32 block, best
    first, after setting the excluded entries (a CSR pattern, or None) to ``-inf``; rows are
    split over the cores. Returns int64 indices and float32 scores of shape (n, k)."""
    n = scores.shape[0]
    out_idx = np.full((n, k), -1, dtype=np.int64)
    out_top = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or k == 0:
        return out_idx, out_top
    indptr = np.zeros(1, np.int64) if ex_indptr is None else np.asarray(ex_indptr, np.int64)
    indices = np.zeros(0, np.int64) if ex_indices is None else np.asarray(ex_indices, np.int64)
    workers = min(pool_threads(), n)
    step = -(-n // (4 * workers)) if workers > 1 else n
    starts = list(range(0, n, step))

    def work(start: int) -> None:
        topk_rows(scores, k, indptr, indices, start, min(start + step, n), out_idx, out_top)

    run_chunks(work, starts, workers)
    return out_idx, out_top
