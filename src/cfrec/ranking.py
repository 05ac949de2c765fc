"""Ranking: the one path from score rows to top-k lists (LensKit's scorer -> ranker split).

Models *score*: :meth:`Recommender.score_rows <cfrec.models.base.Recommender.score_rows>` gives
a (users x items) block of the model's own scores (unclipped: predicted ratings for rating
models, preferences for ranking models). This module *ranks*: it selects the top ``k`` of every
row at once, after removing excluded pairs (a CSR matrix, typically the items each user rated in
training) and restricting to candidates (one shared list, or a CSR matrix of allowed pairs per
row). Evaluation, online evaluation, the CLI and the service all rank through :func:`rank`.

Rows are processed in chunks sized to a memory budget, so ranking every user of a catalogue of
ML-25M's size (162K users x 59K items) never holds more than one chunk of scores.

Results are raw ids: :class:`Recs` for one query, :class:`RecsBatch` (2-D arrays) for many.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from cfrec.data.idmap import IdMap

#: Score elements (float32) one ranking chunk may hold: 64 MiB.
CHUNK_ELEMENTS = 1 << 24
#: Blocks of at least this many scores (and lists of at most ``COMPILED_MAX_K``) are selected by
#: the compiled one-pass heap over every core; smaller ones by ``numpy.argpartition``, which
#: needs no compiled code loaded (the same lists either way).
COMPILED_MIN_ELEMENTS = 1 << 22
COMPILED_MAX_K = 1024

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""Maps model row indices (1-D int64) to a (len(rows), n_items) float32 score block."""


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class Recs:
    """The top-k items for one query, best first.

    Attributes
    ----------
    ids
        Raw item ids.
    scores
        The model's ranking scores (float32, unclipped, strictly what the ranking used).
    ratings
        Predicted ratings of those items (clipped to the rating scale) for models that predict
        ratings; ``None`` for ranking-only models (popularity, iALS, EASE ...).
    """

    ids: np.ndarray
    scores: np.ndarray
    ratings: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``item_id``, ``score`` (and ``rating``), one row per recommended item."""
        cols: dict[str, Any] = {"item_id": self.ids, "score": self.scores}
        if self.ratings is not None:
            cols["rating"] = self.ratings
        return pd.DataFrame(cols)


class RecsBatch(Sequence[Recs]):
    """Top-k lists of many queries as 2-D arrays; indexing or iterating yields :class:`Recs`.

    Rows with fewer than ``k`` candidates are padded: :attr:`lengths` says how many entries of
    each row are real (padded scores are ``-inf``, padded ratings ``nan``).
    """

    def __init__(self, queries: np.ndarray, indices: np.ndarray, scores: np.ndarray,
                 ratings: np.ndarray | None, item_map: IdMap) -> None:
        self.queries = queries
        self._indices = indices
        self.scores = scores
        self.ratings = ratings
        self._item_map = item_map
        self.lengths = (indices >= 0).sum(axis=1)

    @property
    def ids(self) -> np.ndarray:
        """Raw item ids, shape (n_queries, k); an object array with ``None`` in padded slots."""
        if bool((self._indices >= 0).all()):
            return self._item_map.to_raw(self._indices)
        out = np.full(self._indices.shape, None, dtype=object)
        ok = self._indices >= 0
        out[ok] = self._item_map.to_raw(self._indices[ok])
        return out

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, i: int) -> Recs: ...

    @overload
    def __getitem__(self, i: slice) -> list[Recs]: ...

    def __getitem__(self, i: int | slice) -> Recs | list[Recs]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = int(self.lengths[i])
        row = self._indices[i, :n]
        ratings = None if self.ratings is None else self.ratings[i, :n]
        return Recs(self._item_map.to_raw(row), self.scores[i, :n], ratings)

    def __repr__(self) -> str:
        return f"RecsBatch(queries={len(self)}, k={self._indices.shape[1]})"

    def to_frame(self, query_name: str = "user_id") -> pd.DataFrame:
        """Long format: ``query_name``, ``rank`` (1-based), ``item_id``, ``score`` (, ``rating``)."""
        ok = self._indices >= 0
        rows, cols = np.nonzero(ok)
        frame: dict[str, Any] = {
            query_name: np.asarray(self.queries)[rows],
            "rank": (cols + 1).astype(np.int32),
            "item_id": self._item_map.to_raw(self._indices[ok]),
            "score": self.scores[ok],
        }
        if self.ratings is not None:
            frame["rating"] = self.ratings[ok]
        return pd.DataFrame(frame)


# ---------------------------------------------------------------------- selection
def top_k(
    scores: np.ndarray,
    k: int,
    *,
    exclude: sp.csr_array | None = None,
    candidates: np.ndarray | sp.csr_array | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of every row of ``scores``, best first.

    Parameters
    ----------
    scores
        (n, m) float32 scores; modified in place (excluded entries set to ``-inf``).
    k
        List length (capped at ``m``).
    exclude
        (n, m) CSR matrix whose stored entries are removed from the ranking.
    candidates
        Column indices allowed for every row (1-D), or an (n, m) CSR matrix of the allowed
        entries per row; ``None`` allows every column.

    NaN scores rank as ``-inf``. Large blocks are selected by a compiled one-pass heap over every
    core (:mod:`cfrec.engines.compiled_topk`), smaller ones by ``numpy.argpartition``.

    Returns
    -------
    indices, top
        int64 and float32 arrays of shape (n, min(k, m)); slots without a candidate hold index
        -1 and score ``-inf``. Ties are broken by the lower column, so the same scores give the
        same list, alone or in a batch of any size, on either selection path.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    n, m = scores.shape
    k = min(k, m)
    if (candidates is None and k <= COMPILED_MAX_K and n * m >= COMPILED_MIN_ELEMENTS
            and scores.dtype == np.float32 and scores.flags.c_contiguous and scores.flags.writeable):
        from cfrec.engines.compiled_topk import top_k_into

        ex = exclude if exclude is not None and exclude.nnz else None
        return top_k_into(scores, k, None if ex is None else ex.indptr,
                          None if ex is None else ex.indices)
    if exclude is not None and exclude.nnz:
        rows = np.repeat(np.arange(n), np.diff(exclude.indptr))
        scores[rows, exclude.indices] = -np.inf
    if candidates is not None:
        if sp.issparse(candidates):
            allowed = np.zeros(scores.shape, dtype=bool)
            cand = sp.csr_array(candidates)
            allowed[np.repeat(np.arange(n), np.diff(cand.indptr)), cand.indices] = True
            scores[~allowed] = -np.inf
        else:
            mask = np.ones(m, dtype=bool)
            mask[np.asarray(candidates, dtype=np.int64)] = False
            scores[:, mask] = -np.inf
    if k < m:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        _lowest_columns_at_ties(scores, part, k)  # part[:, k-1] holds each row's k-th best
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    part_scores[np.isnan(part_scores)] = -np.inf  # NaN ranks as -inf (a slot without a candidate)
    # descending score, then ascending column among the selected: a deterministic order
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)
    top = np.take_along_axis(part_scores, order, axis=1).astype(np.float32, copy=False)
    idx[np.isneginf(top)] = -1
    return idx, top


def _lowest_columns_at_ties(scores: np.ndarray, part: np.ndarray, k: int) -> None:
    """Make an ``argpartition`` selection (``part``, (n, k), changed in place) take the lowest
    columns among the scores tied with the k-th best, as the compiled path and a full sort do
    (argpartition picks among boundary ties in no stated order). One extra pass over the block;
    only rows where a tied score was left out are re-selected."""
    picked = np.take_along_axis(scores, part, axis=1)
    kth = picked[:, k - 1:k]  # argpartition's k-th position holds the k-th best (NaN: none)
    in_part = (picked == kth).sum(axis=1)
    ambiguous = np.flatnonzero(((scores == kth).sum(axis=1) > in_part) & (kth[:, 0] > -np.inf))
    if not len(ambiguous):
        return
    sub, sub_kth = scores[ambiguous], kth[ambiguous]
    tied = sub == sub_kth
    keep = (sub > sub_kth) | (tied & (np.cumsum(tied, axis=1) <= in_part[ambiguous, None]))
    part[ambiguous] = np.nonzero(keep)[1].reshape(len(ambiguous), k)


def top_k_row(scores: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
              candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` of one score row, for one user or item at a time (a request, a CLI query).

    The same selection and order as :func:`top_k` on a one-row block (descending score, then
    ascending column), without its batch set-up: ``exclude`` and ``candidates`` are 1-D column
    indices, and ``scores`` (1-D) is never written to. Returns int64 indices and float32 scores
    of the ranked columns only (shorter than ``k`` when fewer columns are left).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    row = np.array(scores, dtype=np.float32).reshape(-1)  # a copy: the caller's row is kept
    m = len(row)
    if exclude is not None and len(exclude):
        row[exclude] = -np.inf
    if candidates is not None:
        allowed = np.zeros(m, dtype=bool)
        allowed[np.asarray(candidates, dtype=np.int64)] = True
        row[~allowed] = -np.inf
    k = min(k, m)
    if k < m:
        partition = np.argpartition(-row, k - 1)
        part = partition[:k]
        part_scores = row[part]
        kth = row[partition[k - 1]]  # the k-th best (NaN when fewer than k are numbers)
        if kth > -np.inf and np.count_nonzero(row == kth) > 1:  # ties at the cut: lowest columns
            in_part = int(np.count_nonzero(part_scores == kth))
            tied = np.flatnonzero(row == kth)
            if len(tied) > in_part:
                part = np.concatenate([np.flatnonzero(row > kth), tied[:in_part]])
                part_scores = row[part]
    else:
        part = np.arange(m)
        part_scores = row[part]
    part_scores[np.isnan(part_scores)] = -np.inf
    order = np.lexsort((part, -part_scores))
    idx = part[order].astype(np.int64, copy=False)
    top = part_scores[order]
    n = len(top) - int(np.isneginf(top).sum())  # -inf (no candidate) sorts last
    return idx[:n], top[:n]


def chunk_rows(n_items: int, budget: int = CHUNK_ELEMENTS) -> int:
    """Rows of an (rows x n_items) float32 score block that fit in ``budget`` elements."""
    return max(1, budget // max(n_items, 1))


def iter_rank(score_rows: ScoreFn, rows: np.ndarray, n_items: int, k: int, *,
              exclude: sp.csr_array | None = None, candidates: np.ndarray | sp.csr_array | None = None,
              budget: int = CHUNK_ELEMENTS) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """:func:`rank` chunk by chunk: yields ``(start, indices, scores)`` for ``rows[start:...]``.

    ``exclude`` (and a CSR ``candidates``) are indexed by the values of ``rows`` (for example the
    model's users x items seen-items matrix); negative rows (unknown users) exclude nothing.
    """
    rows = np.asarray(rows, dtype=np.int64)
    step = chunk_rows(n_items, budget)
    for start in range(0, len(rows), step):
        block = rows[start:start + step]
        scores = np.asarray(score_rows(block), dtype=np.float32)
        if not (scores.flags.writeable and scores.flags.owndata):
            scores = scores.copy()  # top_k writes into it: never into a model's own arrays
        ex = _take_rows(exclude, block) if exclude is not None else None
        cand = _take_rows(sp.csr_array(candidates), block) if sp.issparse(candidates) else candidates
        idx, top = top_k(scores, k, exclude=ex, candidates=cand)
        del scores, ex, cand  # one block alive at a time: freed before the next is scored
        yield start, idx, top


def rank(score_rows: ScoreFn, rows: np.ndarray, n_items: int, k: int, *,
         exclude: sp.csr_array | None = None, candidates: np.ndarray | sp.csr_array | None = None,
         budget: int = CHUNK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices and scores for model rows (users), scored in bounded chunks.

    See :func:`iter_rank` for the arguments; returns arrays of shape (len(rows), min(k, n_items)).
    """
    rows = np.asarray(rows, dtype=np.int64)
    width = min(k, n_items)
    out_idx = np.full((len(rows), width), -1, dtype=np.int64)
    out_top = np.full((len(rows), width), -np.inf, dtype=np.float32)
    for start, idx, top in iter_rank(score_rows, rows, n_items, k, exclude=exclude,
                                     candidates=candidates, budget=budget):
        out_idx[start:start + len(idx)] = idx
        out_top[start:start + len(idx)] = top
    return out_idx, out_top


def _take_rows(matrix: sp.csr_array, rows: np.ndarray) -> sp.csr_array:
    """Rows of a CSR matrix for (possibly negative = empty) row indices, as a new CSR matrix."""
    mat = sp.csr_array(matrix)
    ok = rows >= 0
    safe = np.where(ok, rows, 0)
    starts, ends = mat.indptr[safe], mat.indptr[safe + 1]
    lengths = np.where(ok, ends - starts, 0)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    total = int(indptr[-1])
    # positions of every kept entry in the source arrays, without a Python loop over rows
    offsets = np.arange(total, dtype=np.int64) - np.repeat(indptr[:-1], lengths)
    src = np.repeat(starts, lengths) + offsets
    return sp.csr_array((mat.data[src], mat.indices[src], indptr), shape=(len(rows), mat.shape[1]))
