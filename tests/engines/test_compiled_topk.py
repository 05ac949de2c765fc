"""The compiled top-k heap gives exactly the lists of the numpy selection and of a full sort."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from cfrec import ranking
from cfrec.engines.compiled_topk import top_k_into
from cfrec.ranking import rank, top_k


def _sorted_reference(scores: np.ndarray, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A full sort of every row: descending score, then ascending column; NaN and excluded out."""
    n, m = scores.shape
    k = min(k, m)
    idx = np.full((n, k), -1, np.int64)
    top = np.full((n, k), -np.inf, np.float32)
    for r in range(n):
        row = np.where(np.isnan(scores[r]), -np.inf, scores[r])
        if exclude is not None:
            row = np.where(exclude[r], -np.inf, row)
        order = np.lexsort((np.arange(m), -row))[:k]
        keep = np.isfinite(row[order]) | (row[order] == np.inf)
        idx[r, : keep.sum()] = order[keep]
        top[r, : keep.sum()] = row[order][keep]
    return idx, top


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 7), m=st.integers(1, 40), k=st.integers(1, 45), seed=st.integers(0, 10**6),
       ties=st.booleans(), with_nan=st.booleans(), excluded=st.booleans())
def test_heap_equals_a_full_sort_and_the_numpy_path(n, m, k, seed, ties, with_nan, excluded) -> None:
    rng = np.random.default_rng(seed)
    scores = (rng.integers(0, 3, (n, m)) if ties else rng.normal(size=(n, m))).astype(np.float32)
    if with_nan:
        scores[rng.random((n, m)) < 0.2] = np.nan
    exclude = rng.random((n, m)) < 0.3 if excluded else None
    csr = sp.csr_array(exclude.astype(np.float32)) if exclude is not None else None
    ref_idx, ref_top = _sorted_reference(scores, k, exclude)
    idx, top = top_k_into(scores.copy(), min(k, m), None if csr is None else csr.indptr,
                          None if csr is None else csr.indices)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(top, ref_top)
    np_idx, np_top = top_k(scores.copy(), k, exclude=csr)  # small block: the numpy path
    np.testing.assert_array_equal(np_idx, ref_idx)
    np.testing.assert_array_equal(np_top, ref_top)


def test_large_blocks_take_the_compiled_path_with_the_same_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    factors, items = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(500, 8)).astype(np.float32)
    popular = np.round(rng.random(500) * 5).astype(np.float32)  # many ties, as popularity scores have

    def score(rows: np.ndarray) -> np.ndarray:
        return (factors[rows] @ items.T + popular * (rows[:, None] % 3 == 0)).astype(np.float32)

    seen = sp.csr_array((rng.random((300, 500)) < 0.05).astype(np.float32))
    rows = np.arange(300)
    monkeypatch.setattr(ranking, "COMPILED_MIN_ELEMENTS", 1 << 40)
    slow = rank(score, rows, 500, 20, exclude=seen, budget=5000)
    called = []
    import cfrec.engines.compiled_topk as compiled

    real = compiled.top_k_into
    monkeypatch.setattr(compiled, "top_k_into", lambda *a: called.append(1) or real(*a))
    monkeypatch.setattr(ranking, "COMPILED_MIN_ELEMENTS", 1)
    fast = rank(score, rows, 500, 20, exclude=seen, budget=5000)
    assert called
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
