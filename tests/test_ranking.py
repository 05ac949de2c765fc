"""The one ranking path: top-k over score rows with exclusions and candidates, in chunks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from cfrec.data import IdMap
from cfrec.ranking import Recs, RecsBatch, iter_rank, rank, top_k, top_k_row


def _reference(scores: np.ndarray, k: int, exclude: np.ndarray | None, allowed: np.ndarray | None):
    """Sort every row in Python: score descending (then column ascending)."""
    out_idx, out_top = [], []
    for r, row in enumerate(scores):
        cols = [c for c in range(len(row)) if (exclude is None or not exclude[r, c])
                and (allowed is None or allowed[r, c]) and np.isfinite(row[c])]
        cols.sort(key=lambda c: (-row[c], c))
        cols = cols[:k]
        out_idx.append(cols + [-1] * (min(k, len(row)) - len(cols)))
        out_top.append([row[c] for c in cols] + [-np.inf] * (min(k, len(row)) - len(cols)))
    return np.array(out_idx), np.array(out_top, dtype=np.float32)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 12), k=st.integers(1, 14), seed=st.integers(0, 10**6),
       ties=st.booleans(), mode=st.sampled_from(["none", "exclude", "shared", "csr"]))
def test_top_k_equals_a_sorted_reference(n, m, k, seed, ties, mode) -> None:
    rng = np.random.default_rng(seed)
    scores = (rng.integers(0, 3, (n, m)) if ties else rng.normal(size=(n, m))).astype(np.float32)
    exclude = allowed = None
    kwargs = {}
    if mode == "exclude":
        exclude = rng.random((n, m)) < 0.3
        kwargs["exclude"] = sp.csr_array(exclude.astype(np.float32))
    elif mode == "shared":
        cols = np.flatnonzero(rng.random(m) < 0.5)
        allowed = np.zeros((n, m), dtype=bool)
        allowed[:, cols] = True
        kwargs["candidates"] = cols
    elif mode == "csr":
        allowed = rng.random((n, m)) < 0.5
        kwargs["candidates"] = sp.csr_array(allowed.astype(np.float32))
    idx, top = top_k(scores.copy(), k, **kwargs)
    ref_idx, ref_top = _reference(scores, k, exclude, allowed)
    np.testing.assert_array_equal(top, ref_top)  # the same scores, best first
    assert ((idx >= 0) == (ref_idx >= 0)).all()
    for r in range(n):  # each pick is allowed, distinct, and has the score it is listed with
        picks = idx[r][idx[r] >= 0]
        assert len(set(picks.tolist())) == len(picks)
        np.testing.assert_array_equal(scores[r, picks], top[r][: len(picks)])
        if exclude is not None:
            assert not exclude[r, picks].any()
        if allowed is not None:
            assert allowed[r, picks].all()
    np.testing.assert_array_equal(idx, ref_idx)  # ties: the lower column first, and kept
    # deterministic: a row ranks the same alone as in a batch
    one_idx, _ = top_k(scores[:1].copy(), k, **({} if mode in ("exclude", "csr") else kwargs))
    if mode not in ("exclude", "csr"):
        np.testing.assert_array_equal(one_idx[0], idx[0])


@settings(max_examples=80, deadline=None)
@given(m=st.integers(1, 12), k=st.integers(1, 14), seed=st.integers(0, 10**6), ties=st.booleans(),
       exclude=st.booleans(), shared=st.booleans())
def test_one_row_equals_the_batch_ranking(m, k, seed, ties, exclude, shared) -> None:
    """top_k_row picks and orders exactly as top_k does on a one-row block, without padding,
    and leaves the caller's row as it was."""
    rng = np.random.default_rng(seed)
    row = (rng.integers(0, 3, m) if ties else rng.normal(size=m)).astype(np.float32)
    kept = row.copy()
    ex = np.flatnonzero(rng.random(m) < 0.3) if exclude else None
    cand = np.flatnonzero(rng.random(m) < 0.5) if shared else None
    block_ex = (sp.csr_array((np.ones(len(ex), np.float32), ex, [0, len(ex)]), shape=(1, m))
                if ex is not None else None)
    idx, top = top_k(row[None, :].copy(), k, exclude=block_ex, candidates=cand)
    one_idx, one_top = top_k_row(row, k, exclude=ex, candidates=cand)
    n = int((idx[0] >= 0).sum())
    np.testing.assert_array_equal(one_idx, idx[0, :n])
    np.testing.assert_array_equal(one_top, top[0, :n])
    assert one_idx.dtype == np.int64 and one_top.dtype == np.float32
    np.testing.assert_array_equal(row, kept)


def test_chunked_ranking_equals_unchunked_and_unknown_rows_exclude_nothing() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 30)).astype(np.float32)
    seen = sp.csr_array((rng.random((50, 30)) < 0.2).astype(np.float32))
    rows = np.array([3, -1, 7, 7, 49, 0, -1])

    def score(block: np.ndarray) -> np.ndarray:
        return np.where(block[:, None] >= 0, table[np.maximum(block, 0)], 0.0)

    whole = rank(score, rows, 30, 5, exclude=seen)
    tiny = rank(score, rows, 30, 5, exclude=seen, budget=30)  # one row a chunk
    np.testing.assert_array_equal(whole[0], tiny[0])
    np.testing.assert_array_equal(whole[1], tiny[1])
    starts = [start for start, _, _ in iter_rank(score, rows, 30, 5, exclude=seen, budget=60)]
    assert starts == [0, 2, 4, 6]
    for r, row in enumerate(rows):
        picked = set(whole[0][r].tolist())
        if row >= 0:
            assert not picked & set(seen.indices[seen.indptr[row]:seen.indptr[row + 1]].tolist())
        else:  # an unknown user's row: every column is a candidate
            assert whole[0][r].tolist() == [0, 1, 2, 3, 4]


def test_rank_never_writes_into_the_scorers_arrays() -> None:
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    frozen = table.copy()
    rank(lambda rows: table[rows], np.arange(3), 4, 2, exclude=sp.csr_array(np.eye(3, 4, dtype=np.float32)))
    rank(lambda rows: np.broadcast_to(table[0], (len(rows), 4)), np.arange(3), 4, 2,
         exclude=sp.csr_array(np.eye(3, 4, dtype=np.float32)))
    np.testing.assert_array_equal(table, frozen)


def test_recs_batch_rows_padding_and_long_frame() -> None:
    vocab = IdMap(["a", "b", "c", "d"])
    idx = np.array([[2, 0, -1], [1, 3, 0]])
    scores = np.array([[2.0, 1.0, -np.inf], [3.0, 2.0, 1.0]], dtype=np.float32)
    ratings = np.array([[4.5, 4.0, np.nan], [5.0, 4.8, 4.1]], dtype=np.float32)
    batch = RecsBatch(np.array([10, 20]), idx, scores, ratings, vocab)
    assert len(batch) == 2 and batch.lengths.tolist() == [2, 3]
    assert batch.ids.tolist() == [["c", "a", None], ["b", "d", "a"]]
    first = batch[0]
    assert isinstance(first, Recs) and first.ids.tolist() == ["c", "a"] and len(first) == 2
    np.testing.assert_array_equal(first.ratings, [4.5, 4.0])
    assert [len(r) for r in batch] == [2, 3] and len(batch[0:2]) == 2
    frame = batch.to_frame()
    assert frame.columns.tolist() == ["user_id", "rank", "item_id", "score", "rating"]
    assert frame["user_id"].tolist() == [10, 10, 20, 20, 20] and frame["rank"].tolist() == [1, 2, 1, 2, 3]
    assert Recs(np.array([1]), np.array([0.5], dtype=np.float32)).to_frame().columns.tolist() == ["item_id", "score"]


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError):
        top_k_row(np.zeros(3, dtype=np.float32), 0)
    with pytest.raises(ValueError, match="k must be"):
        top_k(np.zeros((1, 3), dtype=np.float32), 0)


def test_iter_rank_holds_one_score_block_at_a_time() -> None:
    """The block scored for one chunk is freed before the next chunk is scored."""
    import weakref

    table = np.random.default_rng(1).normal(size=(40, 25)).astype(np.float32)
    blocks: list[weakref.ref[np.ndarray]] = []

    def score(rows: np.ndarray) -> np.ndarray:
        assert all(ref() is None for ref in blocks), "an earlier score block is still alive"
        block = table[rows] * 1.0
        blocks.append(weakref.ref(block))
        return block

    idx, _ = rank(score, np.arange(40), 25, 3, exclude=sp.csr_array(np.eye(40, 25, dtype=np.float32)),
                  budget=25 * 6)
    assert len(blocks) == 7 and idx.shape == (40, 3)
