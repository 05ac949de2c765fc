"""The expected-terms and design pieces of the Bayesian factorization machine.

:class:`~cfrec.models.bayesian_fm.BayesianFM` builds each side's design matrix
(:func:`side_design`: side features by family, one-hot ids, normalised rated sets), reads an
entity's bias and vector off the kept samples (:func:`row_sample_terms`), gives a new entity the
expected terms of the columns it lacks (:class:`MissingTerms`), and keys the per-rating context
block by (user, UTC day) (:func:`day_keys`). Plain functions of arrays, kept apart from the
estimator so they can be tested and reused (the myFM benchmarks group features the same way).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from cfrec.data.features import Features
from cfrec.data.idmap import IdMap


def feature_groups(features: Features | None) -> tuple[np.ndarray, list[str]]:
    """Each feature column's family index and the family names (the text before ``=``)."""
    if features is None:
        return np.zeros(0, dtype=np.int64), []
    families = [str(n).split("=", 1)[0] for n in features.names.to_list()]
    names = sorted(set(families))
    lookup = {name: j for j, name in enumerate(names)}
    return np.array([lookup[f] for f in families], dtype=np.int64), names


def side_design(features: Features | None, vocab: IdMap,
                sets: sp.csr_array | None) -> tuple[sp.csr_array, np.ndarray, int]:
    """One side's design matrix (entities of ``vocab`` x columns), each column's group and the
    number of groups: the side features (one group per family), the one-hot ids (group 0), then
    the normalised rated sets ``sets`` (one group), when given."""
    n = len(vocab)
    groups, names = feature_groups(features)
    parts: list[Any] = [] if features is None else [features.align(vocab)]
    group_ids = [] if features is None else [1 + groups]
    parts.append(sp.identity(n, dtype=np.float64, format="csr"))
    group_ids.append(np.zeros(n, dtype=np.int64))
    n_groups = 1 + len(names)
    if sets is not None:
        parts.append(sets)
        group_ids.append(np.full(sets.shape[1], n_groups, dtype=np.int64))
        n_groups += 1
    return sp.csr_array(sp.hstack(parts, format="csr")), np.concatenate(group_ids), n_groups


def row_sample_terms(params: np.ndarray, rows: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Bias (m, S) and vector (m, S, k), float64, of entities whose design rows are ``rows``
    (m, cols) under the kept samples' ``params`` (S, cols, 1 + k): ``x w + 1/2 sum_f ((x V)_f^2 -
    (x^2 V^2)_f)`` and ``x V``."""
    s_n, n_cols, kk = params.shape
    k = kk - 1
    m = sp.csr_array(rows).astype(np.float64)
    w = params[:, :, 0].T.astype(np.float64)  # (cols, S)
    v = params[:, :, 1:].transpose(1, 0, 2).reshape(n_cols, s_n * k).astype(np.float64)
    a = np.asarray(m @ v)  # (m, S*k)
    sq = np.asarray(m.multiply(m) @ (v * v))
    inner = 0.5 * (a * a - sq).reshape(len(a), s_n, k).sum(axis=2)  # (m, S)
    return np.asarray(m @ w) + inner, a.reshape(len(a), s_n, k)


class MissingTerms:
    """The expected terms of the columns a new entity lacks, given its side features.

    A training entity's design row is its side features, its one-hot id and its normalised
    rated set; a new entity (an item released after training, a user known by features) has the
    features alone. Leaving the other columns out is not neutral: their bias and vector terms
    are far from zero on average (the rated-set term grows as ``sqrt(n)`` with the number of
    ratings, and the id and feature weights are fitted around it), so scores from the features
    alone come out systematically off (on ML-100K about half a star low for held-out items). A
    new entity gets instead the expected value of those terms given its features: per kept
    sample, a least-squares fit of the training entities' id-and-rated-set bias and vector
    (``rest``) on ``[1, features]`` (a unit ridge on the feature coefficients), each entity
    weighted by its number of ratings, the weight it has among the ratings a prediction is made
    for. An entity's bias and vector are linear in ``rest`` except for the cross term with its
    feature vector, linear too, so plugging in the expectation gives the expected score.
    """

    def __init__(self, rest: sp.csr_array, features: sp.csr_array | None, counts: np.ndarray,
                 ridge: float = 1.0) -> None:
        from scipy.linalg import cho_factor

        self.rest = rest
        x1 = with_intercept(features, rest.shape[0])
        self.x1w = sp.csr_array(x1.T @ sp.diags_array(counts.astype(np.float64)))
        gram = np.asarray((self.x1w @ x1).toarray(), dtype=np.float64)
        gram[np.arange(1, len(gram)), np.arange(1, len(gram))] += ridge
        self.factor = cho_factor(gram)

    def fit(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The map (1 + F, 1 + k) from ``[1, features]`` to the expected ``[bias, vector]`` of the
        missing columns, under one sample's weights ``w`` (cols,) and vectors ``v`` (cols, k) of
        those columns."""
        from scipy.linalg import cho_solve

        from cfrec.engines.gibbs_fm import entity_terms

        bias, a = entity_terms(self.rest, w, v)
        return np.asarray(cho_solve(self.factor, self.x1w @ np.column_stack([bias, a])))


DAY_SECONDS = 86400
_DAY_OFFSET = 1 << 31  # days are shifted into [0, 2^32) so that one int64 key holds (user, day)


def day_keys(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """One int64 key per rating for its (user index, UTC day of the timestamp) pair."""
    days = np.floor_divide(np.asarray(timestamps, dtype=np.int64), DAY_SECONDS) + _DAY_OFFSET
    return (np.asarray(users, dtype=np.int64) << 32) | days


def split_day_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The user indices (int32) and days since 1970-01-01 (int64) of :func:`day_keys` keys."""
    return (keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF) - _DAY_OFFSET


def with_intercept(features: sp.csr_array | None, n: int) -> sp.csr_array:
    """``[1, features]`` (n, 1 + F) as CSR float64 (just the ones without features)."""
    ones = sp.csr_array(np.ones((n, 1)))
    if features is None:
        return ones
    return sp.csr_array(sp.hstack([ones, sp.csr_array(features).astype(np.float64)], format="csr"))
