"""Item-kNN: item-item neighbourhood model with baseline correction (Koren 2010; Surprise's
``KNNBaseline`` with ``user_based=False``, LensKit's ``ItemKNN``).

Fitting computes, for every item ``i``, its ``max_neighbors`` most similar items with a positive
similarity and stores them as one sparse items x items matrix whose rows are sorted by
similarity (best first). Similarities are built row by row in one compiled pass over the
ratings: row ``i`` visits the users who rated ``i`` and, through them, every item co-rated with
``i``, accumulating in a few arrays of ``n_items`` that are reset after each row. Memory is
therefore the ratings (twice, by user and by item), ``O(n_items)`` of scratch and the kept
neighbours (``n_items x max_neighbors``); no dense items x items matrix ever exists, whatever
the catalogue. Time is ``sum over users of (ratings of the user)^2``.

A rating of user ``u`` for item ``i`` is predicted from the ``k`` items most similar to ``i``
among those ``u`` rated (``N``), as the baseline plus their similarity-weighted deviations::

    r_ui = b_ui + sum_{j in N} s_ij (r_uj - b_uj) / sum_{j in N} s_ij,    b_ui = mu + b_u + b_i

with ``b_u``, ``b_i`` the regularised biases of :func:`~cfrec.models._bias.fit_biases` (the
alternating closed form Surprise's ``ALS`` baseline uses). Fewer than ``min_k`` such neighbours
give the baseline alone. Ranking scores a user's items as LensKit's implicit mode does: the sum
of the similarities of the (at most ``k``) nearest neighbours among the user's rated items.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, Self, overload

import numba
import numpy as np
import scipy.sparse as sp

from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models._bias import fit_biases
from cfrec.models.base import EpochCallback, FoldedUser, RawId
from cfrec.models.factor import BiasedRecommender
from cfrec.models.layout import csr
from cfrec.models.params import hyperparameters, param
from cfrec.models.persistence import sparse_from_state, sparse_to_state
from cfrec.ranking import Recs, RecsBatch, rank

logger = logging.getLogger(__name__)

SIMILARITIES = ("pearson_baseline", "adjusted_cosine", "cosine")


def _jit(fn: Any) -> Any:
    """``numba.njit`` with the disk cache where a cache folder is writable, in memory otherwise."""
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:  # pragma: no cover - no writable cache folder anywhere
        return numba.njit(nogil=True, error_model="numpy")(fn)


# ---------------------------------------------------------------------- compiled kernels
@_jit
def _neighbour_rows(item_ptr: np.ndarray, item_users: np.ndarray, item_vals: np.ndarray,
                    user_ptr: np.ndarray, user_items: np.ndarray, user_vals: np.ndarray,
                    norms: np.ndarray, common: bool, shrinkage: float, min_support: int,
                    out_idx: np.ndarray, out_val: np.ndarray,
                    out_len: np.ndarray) -> None:  # pragma: no cover - compiled; tested through fit
    """Each item's best positive similarities, best first, into ``out_idx``/``out_val`` rows.

    ``x_ui`` are the (centred) ratings, by item (``item_*``) and by user (``user_*``). With
    ``common`` the denominator sums ``x^2`` over the users who rated both items (Pearson);
    otherwise it is ``norms[i] * norms[j]`` (the cosine of whole item columns). A pair with
    ``n`` common raters is shrunk by ``(n - 1) / (n - 1 + shrinkage)``; one with fewer than
    ``min_support`` is dropped.
    """
    n_items, width = out_idx.shape
    prod = np.zeros(n_items)
    sq_i = np.zeros(n_items)
    sq_j = np.zeros(n_items)
    count = np.zeros(n_items, np.int64)
    touched = np.empty(n_items, np.int64)
    cand_j = np.empty(n_items, np.int64)
    cand_s = np.empty(n_items)
    for i in range(n_items):
        n_touched = 0
        for p in range(item_ptr[i], item_ptr[i + 1]):
            u = item_users[p]
            xi = item_vals[p]
            for q in range(user_ptr[u], user_ptr[u + 1]):
                j = user_items[q]
                if count[j] == 0:
                    touched[n_touched] = j
                    n_touched += 1
                xj = user_vals[q]
                count[j] += 1
                prod[j] += xi * xj
                if common:
                    sq_i[j] += xi * xi
                    sq_j[j] += xj * xj
        n_cand = 0
        for t in range(n_touched):
            j = touched[t]
            n = count[j]
            if j != i and n >= min_support:
                den = np.sqrt(sq_i[j] * sq_j[j]) if common else norms[i] * norms[j]
                if den > 0.0:
                    s = prod[j] / den
                    if shrinkage > 0.0:
                        s *= (n - 1.0) / (n - 1.0 + shrinkage)
                    if s > 0.0:
                        cand_j[n_cand] = j
                        cand_s[n_cand] = s
                        n_cand += 1
            prod[j] = 0.0
            sq_i[j] = 0.0
            sq_j[j] = 0.0
            count[j] = 0
        keep_j = cand_j[:n_cand]
        keep_s = cand_s[:n_cand]
        if n_cand > width:  # the width-th largest similarity bounds the kept ones
            floor = np.partition(keep_s, n_cand - width)[n_cand - width]
            above = keep_s >= floor
            keep_j = keep_j[above]
            keep_s = keep_s[above]
        # best first; equal similarities by item index (a deterministic order)
        order = np.argsort(keep_j, kind="mergesort")
        keep_j = keep_j[order]
        keep_s = keep_s[order]
        order = np.argsort(-keep_s, kind="mergesort")
        n_keep = min(width, len(order))
        for t in range(n_keep):
            out_idx[i, t] = keep_j[order[t]]
            out_val[i, t] = keep_s[order[t]]
        out_len[i] = n_keep


@_jit
def _nearest_rated(i: int, t: int, nbr_ptr: np.ndarray, nbr_idx: np.ndarray, nbr_val: np.ndarray,
                   rated: np.ndarray, resid: np.ndarray, k: int, out_sim: np.ndarray,
                   out_dev: np.ndarray, out_count: np.ndarray) -> None:  # pragma: no cover - compiled
    """Item ``i``'s neighbour row walked best first until ``k`` rated neighbours are found: their
    similarity sum, similarity-weighted residual sum and number, written at output ``t``."""
    sim = 0.0
    dev = 0.0
    n = 0
    for p in range(nbr_ptr[i], nbr_ptr[i + 1]):
        j = nbr_idx[p]
        if rated[j]:
            s = nbr_val[p]
            sim += s
            dev += s * resid[j]
            n += 1
            if n == k:
                break
    out_sim[t] = sim
    out_dev[t] = dev
    out_count[t] = n


@_jit
def _aggregate(query_ptr: np.ndarray, query_items: np.ndarray, query_resid: np.ndarray,
               target_ptr: np.ndarray, target_items: np.ndarray,
               nbr_ptr: np.ndarray, nbr_idx: np.ndarray, nbr_val: np.ndarray, k: int,
               out_sim: np.ndarray, out_dev: np.ndarray,
               out_count: np.ndarray) -> None:  # pragma: no cover - compiled; tested through scoring
    """For every query user and target item: over the (at most ``k``) nearest neighbours of the
    target among the user's rated items, the sum of similarities, the similarity-weighted sum of
    the user's residuals and their number.

    Query ``q`` rated ``query_items[query_ptr[q]:query_ptr[q + 1]]`` with residuals
    ``query_resid``; its targets are ``target_items[target_ptr[q]:target_ptr[q + 1]]`` (outputs
    at the same positions). Each target walks its neighbour row, best first, until ``k`` rated
    neighbours are found.
    """
    n_items = len(nbr_ptr) - 1
    rated = np.zeros(n_items, np.bool_)
    resid = np.zeros(n_items)
    for q in range(len(query_ptr) - 1):
        for p in range(query_ptr[q], query_ptr[q + 1]):
            rated[query_items[p]] = True
            resid[query_items[p]] = query_resid[p]
        for t in range(target_ptr[q], target_ptr[q + 1]):
            _nearest_rated(target_items[t], t, nbr_ptr, nbr_idx, nbr_val, rated, resid, k,
                           out_sim, out_dev, out_count)
        for p in range(query_ptr[q], query_ptr[q + 1]):
            rated[query_items[p]] = False
            resid[query_items[p]] = 0.0


@_jit
def _aggregate_rows(query_ptr: np.ndarray, query_items: np.ndarray, query_resid: np.ndarray,
                    nbr_ptr: np.ndarray, nbr_idx: np.ndarray, nbr_val: np.ndarray,
                    col_ptr: np.ndarray, col_rows: np.ndarray, col_val: np.ndarray, k: int,
                    out_sim: np.ndarray, out_dev: np.ndarray,
                    out_count: np.ndarray) -> None:  # pragma: no cover - compiled; tested through scoring
    """:func:`_aggregate` for every item of each query user (outputs at ``q * n_items + i``),
    walked from the user's side: each rated item ``j`` adds itself to the items that keep it as
    a neighbour (the columns ``col_*`` of the neighbour matrix), so the work is the user's
    ratings times the neighbours kept per item, not the catalogue times them. An item that
    collects more than ``k`` rated neighbours is summed again over its ``k`` nearest only."""
    n_items = len(nbr_ptr) - 1
    rated = np.zeros(n_items, np.bool_)
    resid = np.zeros(n_items)
    for q in range(len(query_ptr) - 1):
        base = q * n_items
        for t in range(base, base + n_items):
            out_sim[t] = 0.0
            out_dev[t] = 0.0
            out_count[t] = 0
        for p in range(query_ptr[q], query_ptr[q + 1]):
            j = query_items[p]
            rated[j] = True
            resid[j] = query_resid[p]
        for p in range(query_ptr[q], query_ptr[q + 1]):
            j = query_items[p]
            r = resid[j]
            for c in range(col_ptr[j], col_ptr[j + 1]):
                t = base + col_rows[c]
                s = col_val[c]
                out_sim[t] += s
                out_dev[t] += s * r
                out_count[t] += 1
        for i in range(n_items):
            t = base + i
            if out_count[t] > k:
                _nearest_rated(i, t, nbr_ptr, nbr_idx, nbr_val, rated, resid, k,
                               out_sim, out_dev, out_count)
        for p in range(query_ptr[q], query_ptr[q + 1]):
            rated[query_items[p]] = False
            resid[query_items[p]] = 0.0


# ---------------------------------------------------------------------- the model
@hyperparameters
class ItemKNN(BiasedRecommender):
    """Item-based k-nearest-neighbours with baseline correction: Surprise's ``KNNBaseline``
    (item-based) for rating prediction, LensKit's ``ItemKNN`` sum of similarities for ranking.

    A user's rating of item ``i`` is the baseline ``mu + b_u + b_i`` plus the similarity-weighted
    mean of the user's own deviations from the baseline on the ``k`` rated items most similar to
    ``i`` (see :mod:`cfrec.models.itemknn`); ``recommend`` ranks items by the sum of those
    similarities. Nothing is trained per user, so :meth:`fold_in` of a new user is exact and
    immediate: their ratings and a regularised bias are all the model needs.

    Similarities (``similarity``), between the rating columns of two items:

    * ``"pearson_baseline"``: the correlation of baseline residuals ``r - b_ui`` over the users
      who rated both (Koren 2010; Surprise's ``pearson_baseline``);
    * ``"adjusted_cosine"``: the cosine of the columns after subtracting each user's mean
      rating (Sarwar et al. 2001);
    * ``"cosine"``: the cosine of the raw rating columns (zero where not rated).

    Each is multiplied by ``(n - 1) / (n - 1 + shrinkage)`` for ``n`` common raters, and only
    positive similarities are kept: the ``max_neighbors`` largest per item. Memory is the
    ratings plus ``n_items x max_neighbors`` neighbours; no dense items x items matrix is formed.

    Defaults were chosen by RMSE on validation carves of the training folds only: a random 20%
    of ML-100K's ``u1.base`` and of ``u2.base`` held out, the model fitted on the other 80%, no
    ``uN.test`` file read (``benchmarks/itemknn_tuning.py``, 1,296 settings, then a finer grid
    around the best). The 25 best of the 1,296 all used adjusted cosine (mean validation RMSE
    0.9268 at best, against 0.9344 with Surprise's ``KNNBaseline`` settings); no shrinkage
    (0.9238) beat 2, 5, 25 and more (0.9255 and up): the cosine of whole columns already
    discounts pairs with few common raters, and the ``(n - 1)`` factor drops the pairs with
    one; ``k = 30`` was the best of 10 to 80, bias strengths 3 and 2 the best of 1 to 15 (15
    and 10 are Surprise's), and ``min_support`` above 1 or ``max_neighbors`` above 500 changed
    nothing or did worse. On the official folds
    u1..u5 these defaults give RMSE 0.9122 against Surprise ``KNNBaseline``'s 0.9204 in the
    same run, lower on every fold (``benchmarks/surprise_folds.py``). With Surprise's settings
    (``similarity="pearson_baseline", shrinkage=100, k=40, reg_user=15, reg_item=10`` and
    ``max_neighbors`` above the catalogue) the predictions equal ``KNNBaseline``'s to 1e-6 for
    every pair the user has not rated.

    Parameters
    ----------
    k
        Neighbours of the target item, among the user's rated items, that a prediction uses.
    min_k
        Fewer rated neighbours than this: the baseline alone.
    similarity
        ``"pearson_baseline"``, ``"adjusted_cosine"`` or ``"cosine"`` (see above).
    shrinkage
        Shrinks similarities resting on few common raters towards 0; 0 turns it off.
    min_support
        Item pairs with fewer common raters get no similarity.
    max_neighbors
        Most neighbours kept per item (the fitted model's size is ``n_items x max_neighbors``).
    reg_user, reg_item, iterations
        The baseline's L2 strengths (in rating-count units) and alternating sweeps.

    Attributes
    ----------
    neighbors_
        Items x items float32 CSR matrix: row ``i`` holds item ``i``'s kept neighbours and their
        similarities, best first.
    ratings_
        Users x items float32 CSR matrix of the training ratings (what scores training users).
    """

    name = "itemknn"
    state_layout = {**csr("model.neighbors", "items", "items"), **csr("model.ratings", "users", "items")}
    fits_interactions = True

    k: int = param(default=30, ge=1)
    min_k: int = param(default=1, ge=1)
    similarity: Literal["pearson_baseline", "adjusted_cosine", "cosine"] = "adjusted_cosine"
    shrinkage: float = param(default=0.0, ge=0)
    min_support: int = param(default=1, ge=0)
    max_neighbors: int = param(default=500, ge=1)
    reg_user: float = param(default=3.0, ge=0)
    reg_item: float = param(default=2.0, ge=0)
    iterations: int = param(default=10, ge=1)

    @property
    def score_label(self) -> str:
        return "sums of neighbour similarities, not ratings (the predicted rating column is the estimate)"

    @classmethod
    def ranking(cls, **overrides: Any) -> Self:
        """Settings for top-K lists: cosine similarities summed over up to 1,000 rated
        neighbours (the registry's ``itemknn-rank``). Chosen by NDCG@10 on the validation carve
        of ``u1.base`` (0.2335, against 0.114 with the rating defaults and 0.137 for the
        popularity list); keyword arguments override them."""
        return cls(**{"similarity": "cosine", "k": 1000, **overrides})

    # ------------------------------------------------------------------ fitting
    @property
    def predicts_ratings(self) -> bool:
        """False once fitted on interactions with no ratings: then it ranks only."""
        return not getattr(self, "on_interactions_", False)

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        self.on_interactions_ = bool(train.is_implicit)
        if self.on_interactions_ and str(self.similarity).lower() != "cosine":
            raise CfrecError(f"ItemKNN on interactions ({train.name}) compares items by the cosine of "
                             f"their binary interaction columns; {self.similarity!r} centres ratings "
                             "it does not have: pass -p similarity=cosine, or use itemknn-rank")
        n_users, n_items = train.n_users, train.n_items
        start = time.perf_counter()
        self.user_bias_, self.item_bias_ = fit_biases(
            train.users, train.items, train.ratings, n_users, n_items, global_mean=self.global_mean_,
            reg_user=float(self.reg_user), reg_item=float(self.reg_item), iterations=int(self.iterations))
        ratings = train.to_csr(dtype=np.float32)
        ratings.sort_indices()
        self.ratings_ = sp.csr_array((ratings.data, ratings.indices.astype(np.int32),
                                      ratings.indptr.astype(np.int64)), shape=(n_users, n_items))
        self.neighbors_ = self._similarities(self.ratings_)
        logger.info("ItemKNN (%s) on %d items: %d neighbours kept in %.2fs", self.similarity, n_items,
                    self.neighbors_.nnz, time.perf_counter() - start)

    def _centred(self, ratings: sp.csr_array) -> np.ndarray:
        """The values the similarity compares, aligned with ``ratings.data`` (float64)."""
        r = ratings.data.astype(np.float64)
        users = np.repeat(np.arange(ratings.shape[0], dtype=np.int32), np.diff(ratings.indptr))
        method = str(self.similarity).lower()
        if method == "pearson_baseline":
            return r - self._baseline(users, ratings.indices)
        if method == "adjusted_cosine":
            counts = np.maximum(np.diff(ratings.indptr), 1)
            means = np.bincount(users, weights=r, minlength=ratings.shape[0]) / counts
            return r - means[users]
        return r

    def _similarities(self, ratings: sp.csr_array) -> sp.csr_array:
        """Each item's ``max_neighbors`` best positive similarities, rows sorted best first."""
        n_items = ratings.shape[1]
        x = sp.csr_array((self._centred(ratings), ratings.indices, ratings.indptr), shape=ratings.shape)
        by_item = sp.csc_array(x)
        by_item.sort_indices()
        common = str(self.similarity).lower() == "pearson_baseline"
        norms = np.sqrt(np.bincount(x.indices, weights=x.data * x.data, minlength=n_items))
        width = max(0, min(int(self.max_neighbors), n_items - 1))
        out_idx = np.zeros((n_items, width), dtype=np.int32)
        out_val = np.zeros((n_items, width), dtype=np.float32)
        out_len = np.zeros(n_items, dtype=np.int64)
        # int32 indices as stored (no int64 copies of the ratings' indices)
        _neighbour_rows(by_item.indptr.astype(np.int64), by_item.indices.astype(np.int32, copy=False), by_item.data,
                        x.indptr.astype(np.int64), x.indices.astype(np.int32, copy=False), x.data, norms, common,
                        float(self.shrinkage), int(self.min_support), out_idx, out_val, out_len)
        keep = np.arange(width)[None, :] < out_len[:, None]
        indptr = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(out_len, out=indptr[1:])
        return sp.csr_array((out_val[keep], out_idx[keep], indptr), shape=(n_items, n_items))

    def _baseline(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``mu + b_u + b_i`` of model-index pairs, float64."""
        return (self.global_mean_ + self.user_bias_[users].astype(np.float64)
                + self.item_bias_[items].astype(np.float64))

    # ------------------------------------------------------------------ neighbourhoods
    def _neighbourhoods(self, query_ptr: np.ndarray, query_items: np.ndarray, query_resid: np.ndarray,
                        target_ptr: np.ndarray | None, target_items: np.ndarray | None,
                        n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(similarity sums, weighted deviation sums, neighbour counts)`` of query users' targets
        (every item per user when ``target_ptr`` is None), see :func:`_aggregate`."""
        sim, dev = np.empty(n_out), np.empty(n_out)
        count = np.empty(n_out, dtype=np.int64)
        nb = self.neighbors_
        query = (query_ptr.astype(np.int64), query_items.astype(np.int64), query_resid.astype(np.float64))
        rows = (nb.indptr, nb.indices, nb.data)  # as stored: no per-call copies of the neighbours
        if target_ptr is None or target_items is None:
            cols = self._by_neighbor()
            _aggregate_rows(*query, *rows, cols.indptr, cols.indices, cols.data, int(self.k), sim, dev, count)
        else:
            _aggregate(*query, target_ptr, target_items, *rows, int(self.k), sim, dev, count)
        return sim, dev, count

    def _by_neighbor(self) -> sp.csc_array:
        """The neighbour matrix by column: which items keep item ``j`` as a neighbour (derived,
        made on first use and not saved)."""
        cols = getattr(self, "_columns", None)
        if cols is None or cols[0] is not self.neighbors_:
            cols = (self.neighbors_, sp.csc_array(self.neighbors_))
            self._columns = cols
        return cols[1]

    def _user_queries(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR pieces (pointers, items, residuals ``r - b_uj``) of training users' ratings."""
        rows = self.ratings_[users]
        row_users = np.repeat(users, np.diff(rows.indptr))
        resid = rows.data.astype(np.float64) - self._baseline(row_users, rows.indices)
        return rows.indptr.astype(np.int64), rows.indices.astype(np.int64), resid

    def _pairs(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Neighbourhood sums of (user, item) pairs, grouped by user for the compiled pass."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        order = np.argsort(users, kind="stable")
        uniq, counts = np.unique(users[order], return_counts=True)
        target_ptr = np.zeros(len(uniq) + 1, dtype=np.int64)
        np.cumsum(counts, out=target_ptr[1:])
        sums = self._neighbourhoods(*self._user_queries(uniq), target_ptr, items[order], len(users))
        out = [np.empty_like(s) for s in sums]
        for dst, src in zip(out, sums, strict=True):
            dst[order] = src
        return out[0], out[1], out[2]

    def _rating(self, base: np.ndarray, sim: np.ndarray, dev: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Baseline plus the neighbours' weighted mean deviation (float32, unclipped)."""
        use = (count >= int(self.min_k)) & (sim > 0)
        adjust = np.divide(dev, sim, out=np.zeros_like(dev), where=use)
        return (base + adjust).astype(np.float32)

    # ------------------------------------------------------------------ scoring hooks
    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Ranking scores: the sum of similarities of each target's nearest rated neighbours."""
        return self._pairs(users, items)[0].astype(np.float32)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        n_items = len(self.item_map_)
        sim = self._neighbourhoods(*self._user_queries(users), None, None, len(users) * n_items)[0]
        return sim.reshape(len(users), n_items).astype(np.float32)

    def _predict_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        sim, dev, count = self._pairs(users, items)
        return self._rating(self._baseline(users, items), sim, dev, count)

    def _folded_sums(self, user: FoldedUser, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Neighbourhood sums of a folded-in user, through the same pass as a training user's
        row (so both rank alike to the last bit)."""
        rated, resid = user.state
        items = np.asarray(items, dtype=np.int64)
        sums = self._neighbourhoods(np.array([0, len(rated)]), rated, resid, None, None, len(self.item_map_))
        return sums[0][items], sums[1][items], sums[2][items]

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        return self._folded_sums(user, items)[0].astype(np.float32)

    def _predict_folded_known(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        base = self.global_mean_ + user.bias + self.item_bias_[items].astype(np.float64)
        return self._rating(base, *self._folded_sums(user, items))

    # ------------------------------------------------------------------ similar items
    @overload
    def similar_items(self, items: RawId, k: int = ...) -> Recs: ...

    @overload
    def similar_items(self, items: list[Any] | tuple[Any, ...] | np.ndarray, k: int = ...) -> RecsBatch: ...

    def similar_items(self, items: Any, k: int = 10) -> Recs | RecsBatch:
        """The ``k`` items most similar to each query by the model's own similarities (the query
        excluded; fewer when an item has fewer than ``k`` kept neighbours). Scores are the
        similarities."""
        self._check_fitted()
        if not isinstance(k, int | np.integer) or k < 1:
            raise CfrecError(f"k must be a positive integer, got {k!r}")
        arr = np.asarray(items)
        raw = np.atleast_1d(arr)
        idx = self.item_map_.to_index(raw, what="item").astype(np.int64)
        n_items = len(self.item_map_)
        nb = self.neighbors_

        def rows(query: np.ndarray) -> np.ndarray:
            out = np.full((len(query), n_items), -np.inf, dtype=np.float32)
            part = nb[query]
            out[np.repeat(np.arange(len(query)), np.diff(part.indptr)), part.indices] = part.data
            return out

        top_idx, top = rank(rows, idx, n_items, int(k))
        batch = RecsBatch(raw, top_idx, top, None, self.item_map_)
        return batch[0] if arr.ndim == 0 else batch

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """A new user from a few ``(item, rating)`` pairs, exactly as a training user is scored.

        The user's bias is the regularised mean deviation ``sum (r - mu - b_i) / (reg + n)``
        (``reg`` defaults to ``reg_user``: the training update); their ratings' residuals are
        kept in ``FoldedUser.state`` and each prediction finds its neighbours among them. Unknown
        items are ignored and an item given twice keeps its last rating (both reported on the
        result); a user with no known item gets the cold-start list.
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        lam = float(self.reg_user) if reg is None else float(reg)
        if not lam >= 0:
            raise CfrecError(f"fold-in regularisation must be >= 0, got {reg!r}")
        order = np.argsort(given.items)
        idx, r = given.items[order], given.ratings[order]
        if not len(idx):
            return self._empty_folded(given, 0)
        dev = r - self.global_mean_ - self.item_bias_[idx].astype(np.float64)
        bias = float(dev.sum() / (lam + len(idx))) if lam + len(idx) > 0 else 0.0
        resid = dev - bias
        return FoldedUser(bias, np.zeros(0, dtype=np.float32), idx.astype(np.int32), len(idx),
                          state=(idx.astype(np.int64), resid), unknown_items=given.unknown,
                          duplicate_items=given.duplicates)

    # ------------------------------------------------------------------ persistence
    def _extra_meta(self) -> dict[str, Any]:
        return {"on_interactions": bool(getattr(self, "on_interactions_", False))}

    def _state(self) -> dict[str, np.ndarray]:
        return {**sparse_to_state("neighbors", self.neighbors_), **sparse_to_state("ratings", self.ratings_)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        n_u, n_i = len(self.user_map_), len(self.item_map_)
        nb = sparse_from_state(arrays, "neighbors", (n_i, n_i), "ItemKNN neighbour matrix")
        rows = np.repeat(np.arange(n_i), np.diff(nb.indptr))
        falls = (np.diff(nb.data) <= 0) | (np.diff(rows) != 0)
        if not (bool(falls.all()) and bool(np.all(nb.data > 0))):
            raise ModelFileError("ItemKNN neighbour matrix: rows are not positive similarities sorted best first")
        self.neighbors_ = nb
        self.ratings_ = sparse_from_state(arrays, "ratings", (n_u, n_i), "ItemKNN rating matrix")
        self.on_interactions_ = bool(meta.get("on_interactions", False))
