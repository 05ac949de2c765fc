"""The interaction matrix every model builds from its training ratings, in one place.

* :func:`positives`: which ratings count as interactions (all, or those ``>= threshold``);
* :func:`interaction_weights`: those interactions' weights, binary or ``(rating / top) ** power``;
* :func:`confidence_minus_one`: iALS's confidence ``1 + alpha * f(r)`` less one, with ``f(r) = r``
  or ``log(1 + r / eps)``;
* :func:`interaction_values`: the strength of each training row: the weights (event counts or
  summed weights) of implicit data, the ratings of explicit data;
* :func:`row_weighting`: BM25 or TF-IDF reweighting of those strengths (users as documents, items
  as terms), with :class:`WeightingStats` to apply the same weighting to a new user's row;
* :func:`interaction_matrix`: the users x items CSR of given weights (duplicates summed, sorted
  indices, float32 values);
* :func:`normalized_sets`: rows x others CSR with ``|N(r)|^-1/2`` in each cell of the set ``N(r)``,
  the implicit feedback of SVD++ and Bayesian SVD++.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from cfrec.errors import CfrecError

if TYPE_CHECKING:
    from cfrec.data.interactions import Interactions

WEIGHTINGS: tuple[str, ...] = ("none", "bm25", "tfidf")


def positives(ratings: np.ndarray, threshold: float | None) -> np.ndarray:
    """Mask of the ratings that count as interactions: every one, or those ``>= threshold``."""
    if threshold is None:
        return np.ones(len(ratings), dtype=bool)
    return np.asarray(ratings, dtype=np.float64) >= float(threshold)


def interaction_weights(ratings: np.ndarray, *, threshold: float | None, power: float, top: float,
                        model: str) -> tuple[np.ndarray, np.ndarray]:
    """Which ratings are interactions (a mask, see :func:`positives`) and the kept ones' weights
    (float32): 1 with ``power == 0``, else ``(rating / top) ** power``, which needs positive
    ratings (``model`` names the model in that error)."""
    r = np.asarray(ratings, dtype=np.float64)
    keep = positives(r, threshold)
    kept = r[keep]
    power = float(power)
    if power == 0:
        return keep, np.ones(len(kept), dtype=np.float32)
    top = float(top)
    if len(kept) and (top <= 0 or kept.min() <= 0):
        raise CfrecError(
            f"{model} rating_power={power:g} weighs interactions by (rating / {top:g}) ** {power:g} "
            f"and needs positive ratings (got {min(kept.min(), top):g}); set threshold to keep "
            "only positive ratings, or rating_power=0 for binary interactions")
    return keep, ((kept / top) ** power).astype(np.float32)


def confidence_minus_one(ratings: np.ndarray, alpha: float, kind: str, eps: float) -> np.ndarray:
    """``c - 1`` for rated pairs: ``alpha * r`` (linear) or ``alpha * log(1 + r / eps)`` (log),
    float32 (computed in float32: no float64 copy of millions of ratings)."""
    r = np.asarray(ratings, dtype=np.float32)
    if kind == "linear":
        return np.multiply(r, np.float32(alpha), dtype=np.float32)
    f = np.log1p(np.divide(r, np.float32(eps), dtype=np.float32))
    f *= np.float32(alpha)
    return f


def interaction_values(data: Interactions) -> np.ndarray:
    """Each row's strength as float32: the weights of implicit data (event counts, summed
    weights), the ratings of explicit data (so a rating model's input keeps its meaning)."""
    values = data.weights if data.is_implicit and data.weights is not None else data.ratings
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True)
class WeightingStats:
    """What a BM25 / TF-IDF weighting learned from the training rows, enough to weigh a new
    user's row the same way: each item's inverse document frequency and the mean row length."""

    idf: np.ndarray  # float64, one per item
    mean_length: float


def weighting_stats(users: np.ndarray, items: np.ndarray, values: np.ndarray, n_users: int,
                    n_items: int, *, pairs: sp.csr_array | None = None) -> WeightingStats:
    """Item IDF ``max(0, log(n_users) - log(1 + df_i))`` (``df_i``: users with item ``i``) and
    the mean over users of their summed values. The IDF is floored at 0 so an item nearly every
    user has gets weight 0, never a negative confidence. ``pairs``: the users x items CSR of
    these rows with duplicates summed, when the caller has it (a model's ``seen_``), so that it
    is not built again."""
    if pairs is None:
        pairs = sp.csr_array((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
        pairs.sum_duplicates()
    df = np.bincount(pairs.indices, minlength=n_items).astype(np.float64)
    return weighting_stats_from(df, user_sums(users, values, n_users))


#: Rows from which the weighting runs as one compiled pass (:mod:`cfrec.engines.compiled`: the
#: same values without float64 copies of every row); below it numpy's, with no numba to load.
WEIGHTING_COMPILED_MIN = 1 << 18


def user_sums(users: np.ndarray, values: np.ndarray, n_users: int) -> np.ndarray:
    """Every user's summed values (float64): BM25's row lengths."""
    if len(users) >= WEIGHTING_COMPILED_MIN and np.asarray(values).dtype == np.float32:
        from cfrec.engines.compiled import row_sums

        return row_sums(np.asarray(users), np.asarray(values), int(n_users))
    return np.bincount(users, weights=np.asarray(values, dtype=np.float64), minlength=n_users)


def weighting_stats_from(df: np.ndarray, lengths: np.ndarray) -> WeightingStats:
    """:func:`weighting_stats` from every item's ``df`` and every user's summed values (as a
    fit whose interactions are split over processes adds them up)."""
    n_users = len(lengths)
    idf = np.maximum(np.log(max(n_users, 1)) - np.log1p(np.asarray(df, dtype=np.float64)), 0.0)
    return WeightingStats(idf, float(np.mean(lengths)) if n_users else 0.0)


def row_weighting(users: np.ndarray, items: np.ndarray, values: np.ndarray, n_users: int,
                  n_items: int, scheme: str, *, k1: float = 100.0, b: float = 0.8,
                  stats: WeightingStats | None = None, lengths: np.ndarray | None = None) -> np.ndarray:
    """Reweigh each row's value (float32, same order as the rows), users as documents, items as
    terms:

    * ``"none"``: the values unchanged;
    * ``"tfidf"``: ``sqrt(v) * idf_i``;
    * ``"bm25"``: ``v * (k1 + 1) / (k1 * L_u + v) * idf_i`` with length norm
      ``L_u = 1 - b + b * len_u / mean_len`` (``len_u``: the user's summed values).

    ``idf_i`` and ``mean_len`` come from ``stats`` when given (a new user weighed against the
    training rows), else from these rows (:func:`weighting_stats`); ``len_u`` from ``lengths``
    (every user's summed values) when given, else from these rows. BM25 saturates counts
    (a 300th play adds almost nothing), discounts heavy users and popular items; TF-IDF only
    compresses counts and discounts popular items. Values must be >= 0.
    """
    if scheme == "none":
        return np.asarray(values, dtype=np.float32)
    if scheme not in WEIGHTINGS:
        raise CfrecError(f"weighting must be one of {WEIGHTINGS}, got {scheme!r}")
    if scheme == "bm25" and not (k1 >= 0 and 0 <= b <= 1):
        raise CfrecError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1:g}, b={b:g}")
    if stats is None:
        stats = weighting_stats(users, items, values, n_users, n_items)
    if scheme == "bm25" and lengths is None:
        lengths = user_sums(users, values, n_users)
    if len(values) >= WEIGHTING_COMPILED_MIN and np.asarray(values).dtype == np.float32:
        from cfrec.engines.compiled import weigh_rows

        out = np.empty(len(values), dtype=np.float32)
        no_lengths = np.zeros(0, dtype=np.float64)
        weigh_rows(np.asarray(users), np.asarray(items), np.asarray(values), np.asarray(stats.idf, np.float64),
                   no_lengths if lengths is None else np.asarray(lengths, dtype=np.float64), scheme == "bm25",
                   float(k1), float(b), float(stats.mean_length or 1.0), out)
        return out
    v = np.asarray(values, dtype=np.float64)
    idf = stats.idf[np.asarray(items, dtype=np.int64)]
    if scheme == "tfidf":
        return (np.sqrt(v) * idf).astype(np.float32)
    assert lengths is not None
    lengths = np.asarray(lengths, dtype=np.float64)[np.asarray(users, dtype=np.int64)]
    norm = (1.0 - b) + b * lengths / (stats.mean_length or 1.0)
    denom = k1 * norm + v
    out = np.divide(v * (k1 + 1.0), denom, out=np.zeros_like(v), where=denom > 0) * idf
    return out.astype(np.float32)


def interaction_matrix(users: np.ndarray, items: np.ndarray, weights: np.ndarray, n_users: int,
                       n_items: int) -> sp.csr_array:
    """Users x items CSR of ``weights`` at ``(users, items)``: repeated pairs summed, indices
    sorted, float32 values (scipy gives indices and row pointers one integer type)."""
    x = sp.csr_array((weights, (users, items)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.sort_indices()
    return sp.csr_array((x.data.astype(np.float32), x.indices.astype(np.int32), x.indptr.astype(np.int64)),
                        shape=(n_users, n_items))


def normalized_sets(rows: np.ndarray, others: np.ndarray, n_rows: int, n_others: int) -> sp.csr_array:
    """Rows x others CSR with ``|N(r)|^-1/2`` in each cell of the set ``N(r)`` of others that row
    ``r`` has ratings with (duplicates merged): users x items for user-side implicit feedback,
    items x users for the item side."""
    mat = sp.csr_array((np.ones(len(rows), dtype=np.float32), (rows, others)), shape=(n_rows, n_others))
    mat.sum_duplicates()
    counts = np.diff(mat.indptr)
    inv = np.zeros(n_rows, dtype=np.float64)
    inv[counts > 0] = counts[counts > 0] ** -0.5
    mat.data = np.repeat(inv, counts).astype(np.float32)
    return mat
