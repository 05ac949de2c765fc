"""Biased and latent-factor models: ``mu + b_u + b_i + p_u . q_i`` and its parts.

Four bases, each for what a model actually is:

* :class:`BiasedRecommender`: learned user and item biases; the cold-start fallbacks build on
  them (``mu + b_i`` for an unknown user, ``mu + b_u`` for an unknown item, the ``mu + b_i``
  list for ranking). NeuMF in rating mode is one.
* :class:`LatentFactorRecommender`: scores ``p_u . q_i`` from two factor matrices, without
  biases (iALS adds its own fold-in).
* :class:`ItemInterceptRecommender`: ``p_u . q_i + b_i``, latent factors and an item intercept
  (BPR, the hybrid ranker).
* :class:`FactorRecommender`: both, ``mu + b_u + b_i + p_u . q_i``, with the ridge fold-in of a new
  user's ``[b_u, p_u]`` against the fixed item side (:class:`RidgeFoldIn`). Baseline, BiasedMF,
  SVD++, ALS and Bayesian MF are this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import FoldedUser, Recommender
from cfrec.models.layout import Array
from cfrec.threads import threads_for, using_threads


@dataclass(frozen=True)
class RidgeFoldIn:
    """A fold-in that is a ridge regression of ``[b_u, p_u]`` on ``[1, q_i]`` with the item side
    fixed (plus the model's offset): the L2 diagonal is ``[bias, const + per_rating * n, ...]``
    for a user with ``n`` known ratings.

    Models declare it through :meth:`FactorRecommender.fold_in_ridge`; the online protocol then
    replays many users at once with rank-one updates instead of calling ``fold_in`` per rating.
    """

    bias: float
    const: float
    per_rating: float = 0.0
    #: The folded vector adds a term that depends on which items were rated (SVD++'s implicit
    #: factors), so it is not a plain ridge solution: online evaluation then replays fold_in.
    item_set_offset: bool = False

    def diagonal(self, n: np.ndarray, k: int) -> np.ndarray:
        """(len(n), 1 + k) float64 diagonals for users with ``n`` known ratings."""
        n = np.asarray(n, dtype=np.float64).reshape(-1)
        out = np.empty((len(n), k + 1))
        out[:, 0] = self.bias
        out[:, 1:] = (self.const + self.per_rating * n)[:, None]
        return out

    @property
    def constant(self) -> bool:
        return self.per_rating == 0.0 and self.bias == self.const


class BiasedRecommender(Recommender):
    """A model with learned user and item biases (float32 ``user_bias_``, ``item_bias_``), which
    its cold-start fallbacks use: ``mu + b_i`` for an unknown user (and as the cold-start list),
    ``mu + b_u`` for an unknown item, ``mu`` for both. ``_fit`` sets both biases."""

    user_bias_: np.ndarray
    item_bias_: np.ndarray
    state_layout = {"base.user_bias": Array(("users",)), "base.item_bias": Array(("items",))}

    def _cold_user_scores(self) -> np.ndarray:
        """``mu + b_i * n_i / (n_i + m)``: the item biases shrunk by their support (``n_i``
        training ratings of the item, ``m`` the median over items), so an item a handful of
        people loved does not top every new user's list; predicted ratings stay ``mu + b_i``."""
        return support_shrunk(self.global_mean_, self.item_bias_, self.seen_, len(self.item_map_))

    @property
    def cold_start_label(self) -> str:
        return "item bias shrunk by its number of ratings (mu + b_i * n_i / (n_i + median n))"

    @property
    def fallback_labels(self) -> dict[int, str]:
        return {0: "personalised", 1: "unknown user: mu + b_i", 2: "unknown item: mu + b_u",
                3: "both unknown: mu"}

    def _fallback_ratings(self, u_idx: np.ndarray, i_idx: np.ndarray) -> np.ndarray:
        out = np.full(len(u_idx), self.global_mean_, dtype=np.float32)
        ku, ki = u_idx >= 0, i_idx >= 0
        out[ki] += self.item_bias_[i_idx[ki]]
        out[ku] += self.user_bias_[u_idx[ku]]
        return out

    def _fallback_state(self) -> dict[str, np.ndarray]:
        return {"user_bias": np.asarray(self.user_bias_, dtype=np.float32),
                "item_bias": np.asarray(self.item_bias_, dtype=np.float32)}

    def _set_fallback_state(self, arrays: dict[str, np.ndarray]) -> None:
        try:
            self.user_bias_, self.item_bias_ = arrays["user_bias"], arrays["item_bias"]
        except KeyError as exc:
            raise ModelFileError(f"the bias array {exc} is missing") from None
        n_u, n_i = len(self.user_map_), len(self.item_map_)
        if len(self.user_bias_) != n_u or len(self.item_bias_) != n_i:
            raise ModelFileError(f"biases do not match the id vocabularies ({len(self.user_bias_)} user "
                                 f"biases for {n_u} users, {len(self.item_bias_)} item biases for {n_i} items)")


def support_weights(seen: Any, n_items: int) -> np.ndarray:
    """``n_i / (n_i + m)`` (float64) with ``n_i`` the training ratings of each item and ``m``
    their median: how far an item's learned parameters are trusted when a list is ranked (an
    item with the median number of ratings gets 1/2, one with seven ratings almost 0)."""
    counts = np.bincount(seen.indices, minlength=n_items).astype(np.float64)
    m = float(np.median(counts[counts > 0])) if (counts > 0).any() else 1.0
    return counts / (counts + max(m, 1.0))


def support_shrunk(mu: float, item_bias: np.ndarray, seen: Any, n_items: int) -> np.ndarray:
    """``mu + b_i * n_i / (n_i + m)`` (float32, see :func:`support_weights`): the cold-start
    ranking of biased models (an item with the median number of ratings keeps half its bias,
    one with seven ratings almost none)."""
    weights = support_weights(seen, n_items)
    return (mu + np.asarray(item_bias, dtype=np.float64) * weights).astype(np.float32)


class LatentFactorRecommender(Recommender):
    """Scores ``p_u . q_i`` from ``user_factors_`` (n_users, k) and ``item_factors_`` (n_items, k),
    float32 numpy arrays that ``_fit`` sets; they are the embeddings ``similar_items`` compares
    and are saved as ``user_factors`` and ``item_factors``."""

    user_factors_: np.ndarray
    item_factors_: np.ndarray
    state_layout = {"model.user_factors": Array(("users", "factors")),
                    "model.item_factors": Array(("items", "factors"))}

    @property
    def personalised(self) -> bool:
        return self.user_factors_.shape[1] > 0

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", self.user_factors_[users], self.item_factors_[items]).astype(np.float32)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return (self.user_factors_[users] @ self.item_factors_.T).astype(np.float32, copy=False)

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        return (self.item_factors_[items] @ user.factors).astype(np.float32)

    def item_embeddings(self) -> np.ndarray:
        self._check_fitted()
        return self.item_factors_

    def user_embeddings(self) -> np.ndarray:
        self._check_fitted()
        return self.user_factors_

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_.astype(np.float32),
                "item_factors": self.item_factors_.astype(np.float32)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        try:
            self.user_factors_ = arrays["user_factors"]
            self.item_factors_ = arrays["item_factors"]
        except KeyError as exc:
            raise ModelFileError(f"the factor matrix {exc} is missing") from None
        if len(self.user_factors_) != len(self.user_map_) or len(self.item_factors_) != len(self.item_map_):
            raise ModelFileError(f"factor matrices ({self.user_factors_.shape}, {self.item_factors_.shape}) "
                                 f"do not match the id vocabularies ({len(self.user_map_)} users, "
                                 f"{len(self.item_map_)} items)")


class ItemInterceptRecommender(LatentFactorRecommender):
    """Scores ``p_u . q_i + b_i``: latent factors plus a learned item intercept (float32
    ``item_intercept_``, saved as ``item_intercept``) and no user term, as the pairwise rankers
    (BPR, the hybrid ranker) learn it. Scoring whole rows uses the model's ``threads``."""

    item_intercept_: np.ndarray
    state_layout = {"model.item_intercept": Array(("items",))}

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dot = np.einsum("ij,ij->i", self.user_factors_[users], self.item_factors_[items])
        return (dot + self.item_intercept_[items]).astype(np.float32)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        work = len(users) * len(self.item_map_) * max(int(self.item_factors_.shape[1]), 1)
        with using_threads(threads_for(work, getattr(self, "threads", None))):
            scores = self.user_factors_[users] @ self.item_factors_.T
        scores += self.item_intercept_[None, :]
        return scores.astype(np.float32, copy=False)

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        idx = np.asarray(items, dtype=np.int64)
        return (self.item_factors_[idx] @ user.factors + self.item_intercept_[idx]).astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), "item_intercept": self.item_intercept_.astype(np.float32)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        if "item_intercept" not in arrays:
            raise ModelFileError("the item intercepts 'item_intercept' are missing")
        self.item_intercept_ = np.asarray(arrays["item_intercept"], dtype=np.float32)
        if self.item_intercept_.shape != (len(self.item_map_),):
            raise ModelFileError(f"item intercepts {self.item_intercept_.shape} do not match the "
                                 f"{len(self.item_map_)} items of the vocabulary")


class FactorRecommender(BiasedRecommender, LatentFactorRecommender):
    """A model of the form ``r = mu + b_u + b_i + p_u . q_i`` with learned state in numpy arrays.

    Subclasses set ``user_factors_`` (n_users, k), ``item_factors_`` (n_items, k) and the biases
    in ``_fit`` (k may be 0: the bias-only Baseline); scoring, ranking, the ridge fold-in and
    persistence come from here.
    """

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self.global_mean_ + self.user_bias_[users] + self.item_bias_[items]
        if self.user_factors_.shape[1]:
            out = out + np.einsum("ij,ij->i", self.user_factors_[users], self.item_factors_[items])
        return np.asarray(out, dtype=np.float32)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        scores = self.user_factors_[users] @ self.item_factors_.T
        scores += self.item_bias_[None, :]
        scores += (self.global_mean_ + self.user_bias_[users])[:, None]
        return scores.astype(np.float32, copy=False)

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        score = self.global_mean_ + user.bias + self.item_bias_[items]
        if user.factors.size:
            score = score + self.item_embeddings()[items] @ user.factors
        return np.asarray(score, dtype=np.float32)

    # ------------------------------------------------------------------ fold-in
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """Represent a new user from a few ``(item, rating)`` pairs without retraining.

        Solves a small regularised least-squares problem for the user's bias and factor vector
        against the fixed item biases and factors (:meth:`fold_in_ridge` says with which L2
        diagonal). Unknown items are ignored and duplicates keep their last rating; both are
        reported on the result (and logged). A user with no known item gets the cold-start list.

        Parameters
        ----------
        items, ratings
            Raw item ids and the user's ratings of them (equal length, on the model's scale).
        reg
            L2 strength; defaults to the model's ``fold_in_reg`` (or its own rule, see
            :meth:`fold_in_ridge`).
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        # a subclass whose own fold_in is not a ridge (it declares None) may still build on this one
        ridge = self.fold_in_ridge(reg) or FactorRecommender.fold_in_ridge(self, reg)
        assert ridge is not None
        q = np.asarray(self.item_embeddings(), dtype=np.float64)
        k = q.shape[1]
        idx, r = given.items, given.ratings
        if not len(idx):
            return self._empty_folded(given, k)
        qi = q[idx]
        offset = self._fold_in_offset(idx) if k else np.zeros(0)
        resid = r - self.global_mean_ - self.item_bias_[idx] - qi @ offset
        x = np.hstack([np.ones((len(idx), 1)), qi])  # unknowns: [b_u, p_u]
        a = x.T @ x + np.diag(ridge.diagonal(np.array([len(idx)]), k)[0])
        sol = np.linalg.solve(a, x.T @ resid)
        return FoldedUser(float(sol[0]), (sol[1:] + offset).astype(np.float32), idx.astype(np.int32),
                          len(idx), unknown_items=given.unknown, duplicate_items=given.duplicates)

    def fold_in_ridge(self, reg: float | None = None) -> RidgeFoldIn | None:
        """The ridge :meth:`fold_in` solves (``None`` from a subclass whose fold-in is not one):
        by default a constant L2 ``reg`` (or the model's
        ``fold_in_reg``) on the bias and the factors."""
        lam = self._fold_in_reg() if reg is None else float(reg)
        if not lam > 0:
            raise CfrecError(f"fold-in regularisation must be positive, got {lam}")
        return RidgeFoldIn(lam, lam)

    def _fold_in_offset(self, seen: np.ndarray) -> np.ndarray:
        """A fixed part of a new user's vector that depends only on which items they rated.

        Zero for plain factor models; SVD++ returns its implicit term ``|N|^-1/2 sum_j y_j``.
        """
        return np.zeros(np.asarray(self.item_embeddings()).shape[1])

    def _fold_in_reg(self) -> float:
        return float(getattr(self, "fold_in_reg", None) or 1.0)
