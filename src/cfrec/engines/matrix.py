"""The interaction matrix every model builds from its training ratings, in one place.

* :func:`positives`: which ratings count as interactions (all, or those ``>= threshold``);
* :func:`interaction_weights`: those interactions' weights, binary or ``(rating / top) ** power``;
* :func:`confidence_minus_one`: iALS's confidence ``1 + alpha * f(r)`` less one, with ``f(r) = r``
  or ``log(1 + r / eps)``;
* :func:`interaction_matrix`: the users x items CSR of given weights (duplicates summed, sorted
  indices, float32 values);
* :func:`normalized_sets`: rows x others CSR with ``|N(r)|^-1/2`` in each cell of the set ``N(r)``,
  the implicit feedback of SVD++ and Bayesian SVD++.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cfrec.errors import CfrecError


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
