"""The model interface every cfrec recommender implements.

Conventions (scikit-learn / implicit): hyperparameters are keyword-only fields declared with
:func:`~cfrec.models.params.hyperparameters` (type, range and default once, checked by one
validator); learned state lives in attributes ending in ``_``; ``fit`` returns ``self``. Raw ids go in and out of every public method; the id vocabulary is kept
with the model. Data flows one way: raw ids -> vocabulary -> arrays -> scores (the model) ->
ranking (:mod:`cfrec.ranking`) -> raw ids.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Self, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cfrec.data.idmap import IdMap
from cfrec.data.interactions import FINGERPRINT_COMPILED_MIN, Interactions
from cfrec.errors import CfrecError, ModelFileError, NotFittedError
from cfrec.models import names, persistence, recommending, state
from cfrec.models.layout import Array, Layout, csr
from cfrec.models.params import check_params, check_saved_params, param_specs
from cfrec.models.recommending import popularity_scores
from cfrec.models.state import item_info_for as _item_info_for
from cfrec.models.types import (
    KNOWN,
    UNKNOWN_BOTH,
    UNKNOWN_ITEM,
    UNKNOWN_USER,
    FoldedUser,
    FoldInInput,
    Prediction,
    check_fold_in_input,
)
from cfrec.ranking import Recs, RecsBatch, rank, top_k_row

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]
#: A raw user or item id as it appears in the data (MovieLens ids are ints; any string works).
RawId = int | str | np.integer


class Recommender(ABC):
    """Base class of every cfrec model: ``fit``, ``predict``, ``recommend``, ``similar_items``,
    ``fold_in``, ``save`` and ``load``.

    Subclasses declare hyperparameters with :func:`~cfrec.models.params.hyperparameters` and
    implement :meth:`_fit` and :meth:`_score_pairs` (the model's own scores of user-item pairs),
    :meth:`fold_in` and, for speed, :meth:`_score_users` (every item for many users). Rating predictions derive from
    the scores through :meth:`_as_ratings` (the identity for rating models). The base class
    handles id vocabularies, the cold-start policy (an unknown user gets the popularity list and
    ``mu`` as predicted rating, unless a model knows better: see
    :class:`~cfrec.models.factor.BiasedRecommender`), clipping of predicted ratings to the rating
    scale and the checking of fold-in input; ranking goes through :mod:`cfrec.ranking`. A model's
    learned state goes out as plain ``(arrays, meta)`` (:meth:`to_state`), which
    :mod:`cfrec.models.persistence` writes as files.

    Attributes
    ----------
    user_map_, item_map_
        Vocabularies of the raw ids seen in training.
    global_mean_
        Mean training rating, or the learned global bias of models that learn one (the lab's
        BiasedMF recipe); the cold-start fallbacks build on it.
    rating_scale_
        ``(low, high)`` of the training data; predicted ratings are clipped to it.
    seen_
        Binary users x items CSR matrix of training ratings (excluded by ``recommend``).
    item_info_
        Item metadata (title, year, genres) indexed by raw id, when the training data had it.
    fit_info_
        Dataset name, fingerprint, sizes and fit seconds.
    history_
        Per-epoch records (``epoch``, ``train_loss``, ``valid_rmse``, ``seconds``) for iterative models.
    """

    #: Short name used by the registry and the CLI (``mf``, ``als`` ...).
    name: ClassVar[str] = ""

    #: The arrays this class adds to a saved model, by name in the weights file (merged along the
    #: class hierarchy, a subclass's entry replacing its base's; see :mod:`cfrec.models.layout`).
    #: Every model saves the seen-items matrix. A class that overrides ``_state`` or
    #: ``_fallback_state`` declares what it saves; one of a user's own that does not is loaded
    #: with the arrays its bases declare checked and others let through.
    state_layout: ClassVar[dict[str, Array]] = csr("base.seen", "users", "items", data=False)

    # learned state (set by fit or load)
    user_map_: IdMap
    item_map_: IdMap
    global_mean_: float
    rating_scale_: tuple[float, float]
    seen_: sp.csr_array
    item_info_: pd.DataFrame | None
    fit_info_: dict[str, Any]
    history_: list[dict[str, Any]]

    # ------------------------------------------------------------------ configuration
    @classmethod
    def _param_names(cls) -> list[str]:
        return list(param_specs(cls))

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__`` (JSON-friendly)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Change hyperparameters; they are checked as at construction (nothing changes on an error)."""
        valid = set(self._param_names())
        for key in params:
            if key not in valid:
                raise ValueError(f"{type(self).__name__} has no hyperparameter {key!r}; valid: {sorted(valid)}")
        before = {key: getattr(self, key) for key in params}
        for key, value in params.items():
            setattr(self, key, value)
        try:
            check_params(self)
        except CfrecError:
            for key, value in before.items():
                setattr(self, key, value)
            raise
        return self

    def __post_init__(self) -> None:
        """Check the hyperparameters given to the generated ``__init__`` (see :mod:`cfrec.models.params`)."""
        check_params(self)

    def _check_combination(self) -> None:
        """Rules that tie hyperparameters together (one field's range is declared on the field);
        raise :func:`cfrec.models.params.invalid` for the field at fault."""
        return None

    def clone(self) -> Self:
        """A new, unfitted model with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: Interactions,
        valid: Interactions | None = None,
        *,
        on_epoch: EpochCallback | None = None,
    ) -> Self:
        """Learn from ``train``; ``valid`` (optional) drives early stopping in iterative models.

        Validation ratings whose user or item is not in ``train`` are ignored.
        """
        if len(train) == 0:
            raise CfrecError("cannot fit on an empty training set")
        check_feedback(self, train)
        check_params(self)  # an attribute may have been assigned directly since construction
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfrec-fingerprint") as pool:
            # at scale the training data's fingerprint (a hash and a sort of every row, GIL
            # released) runs beside the fit, on a core the set-up and most loops leave idle
            fingerprint = (pool.submit(train.fingerprint) if len(train) >= FINGERPRINT_COMPILED_MIN
                           else None)
            data = self._fit_all(train, valid, on_epoch)
            self.fit_info_ = {
                "dataset": train.name,
                "fingerprint": train.fingerprint() if fingerprint is None else fingerprint.result(),
                "n_ratings": len(data),
                "n_users": data.n_users,
                "n_items": data.n_items,
                "fit_seconds": time.perf_counter() - start,
            }
        logger.info("%s fitted on %d ratings in %.2fs", type(self).__name__, self.fit_info_["n_ratings"],
                    self.fit_info_["fit_seconds"])
        return self

    def _fit_all(self, train: Interactions, valid: Interactions | None,
                 on_epoch: EpochCallback | None) -> Interactions:
        """The shared set-up (vocabularies, global mean, seen matrix) and the model's own fit, on
        the compacted training data (returned)."""
        data = train.compact()
        self.user_map_ = data.user_map
        self.item_map_ = data.item_map
        lo, hi = train.rating_scale
        self.rating_scale_ = (float(lo), float(hi))
        self.global_mean_ = float(np.mean(data.ratings, dtype=np.float64))
        self.seen_ = data.to_csr(binary=True, dtype=np.float32)
        self.item_info_ = _item_info_for(data)
        self.history_: list[dict[str, Any]] = []
        valid_data = None
        if valid is not None and len(valid):
            valid_data = valid.with_vocab(self.user_map_, self.item_map_, drop_unknown=True)
        self._fit(data, valid_data, on_epoch)
        return data

    @abstractmethod
    def _fit(self, train: Interactions, valid: Interactions | None,
             on_epoch: EpochCallback | None) -> None:
        """Model-specific training on compacted data (indices = model indices)."""

    #: Whether the model also fits interactions with no ratings (then ranking only), though it
    #: predicts ratings when given them (item-kNN).
    fits_interactions: ClassVar[bool] = False

    @property
    def predicts_ratings(self) -> bool:
        """Whether ``predict`` estimates ratings. Ranking-only models (popularity, iALS, EASE,
        implicit NeuMF ...) say False: their RMSE means nothing and reports show none."""
        return True

    # ------------------------------------------------------------------ what the outputs are
    # The one source of the words every output uses (CLI, report, benchmark, service): a model
    # says what its scores are, how a new user's list is made and how each fallback predicts.
    @property
    def score_label(self) -> str:
        """What the scores of this model's lists are, for "scores are ...": predicted ratings
        (before clipping) for rating models whose ranking is their prediction."""
        return "predicted ratings before clipping" if self.predicts_ratings else "preferences, not ratings"

    @property
    def cold_start_label(self) -> str:
        """How the list of a user the model does not know is ordered, for "the most popular
        items by ...": here the number of training ratings per item."""
        return "number of training ratings"

    @property
    def fallback_labels(self) -> dict[int, str]:
        """How :meth:`predict_detailed` predicts each fallback code (0 personalised, 1 unknown
        user, 2 unknown item, 3 both): here the training mean ``mu`` for every unknown pair."""
        return {KNOWN: "personalised", UNKNOWN_USER: "unknown user: mu", UNKNOWN_ITEM: "unknown item: mu",
                UNKNOWN_BOTH: "both unknown: mu"}

    def metric_applies(self, name: str) -> bool:
        """Whether the metric ``name`` measures this model: rating errors (RMSE, MAE) only when
        ``predict`` estimates ratings; ranking metrics (``ndcg@10`` ...) always."""
        return self.predicts_ratings or name.split("@")[0].strip().lower() not in ("rmse", "mae")

    @property
    def has_similar_items(self) -> bool:
        """Whether :meth:`similar_items` works: the model has its own similarity or item vectors
        to compare (bias-only models such as popularity and the baseline have neither)."""
        if type(self).similar_items is not Recommender.similar_items:
            return True
        try:
            emb = self.item_embeddings()
        except (NotImplementedError, CfrecError):
            return False
        return np.ndim(emb) == 2 and np.shape(emb)[1] > 0

    @property
    def personalised(self) -> bool:
        """Whether rankings differ between users beyond excluding what each one rated (False for
        popularity and for bias-only models)."""
        return True

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "user_map_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() or load()")

    # ------------------------------------------------------------------ scoring hooks
    @abstractmethod
    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The model's own scores (unclipped) of known model-index pairs (equal-length arrays)."""

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for each user index: a new (len(users), n_items) float32 array."""
        n_items = len(self.item_map_)
        uu = np.repeat(users, n_items)
        ii = np.tile(np.arange(n_items, dtype=np.int64), len(users))
        return self._score_pairs(uu, ii).reshape(len(users), n_items)

    def _cold_user_scores(self) -> np.ndarray:
        """Item scores for a user the model does not know: the popularity list."""
        return popularity_scores(self.seen_, len(self.item_map_))

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        """Scores of item indices for a folded-in user (a model that folds users in says how)."""
        raise NotImplementedError(f"{type(self).__name__} does not score folded-in users")

    def _fallback_ratings(self, u_idx: np.ndarray, i_idx: np.ndarray) -> np.ndarray:
        """Rating estimates (float32) of pairs whose user or item (or both) is unknown (-1):
        the training mean ``mu`` here; biased models refine it (``mu + b_i``, ``mu + b_u``)."""
        return np.full(len(u_idx), self.global_mean_, dtype=np.float32)

    def _as_ratings(self, scores: np.ndarray) -> np.ndarray:
        """Map scores onto the rating scale (before clipping): the identity for rating models."""
        return scores

    def _predict_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Unclipped rating estimates of known pairs (from the scores unless a model knows better)."""
        return self._as_ratings(self._score_pairs(users, items))

    def _predict_folded_known(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        """Unclipped rating estimates of known items for a folded-in user."""
        return self._as_ratings(self._score_folded(user, items))

    def score_rows(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for model user indices (-1: an unknown user, who gets the cold-start
        scores): the scorer half of ranking (see :mod:`cfrec.ranking`). Returns a new
        (len(users), n_items) float32 array."""
        users = np.asarray(users, dtype=np.int64)
        known = users >= 0
        if known.all():
            return np.asarray(self._score_users(users), dtype=np.float32)
        out = np.empty((len(users), len(self.item_map_)), dtype=np.float32)
        if known.any():
            out[known] = self._score_users(users[known])
        out[~known] = self._cold_user_scores()
        return out

    def _clip(self, ratings: np.ndarray) -> np.ndarray:
        lo, hi = self.rating_scale_
        return np.clip(ratings, lo, hi).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ prediction
    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings for raw (user, item) pairs, clipped to the rating scale.

        ``users`` may be one raw id or :class:`FoldedUser` (broadcast over ``items``) or an array
        as long as ``items``. Unknown ids never fail: see :meth:`predict_detailed`.
        """
        return self.predict_detailed(users, items).ratings

    def predict_detailed(self, users: Any, items: Any) -> Prediction:
        """Like :meth:`predict`, also reporting which pairs fell back to biases.

        Unknown user -> ``mu + b_i``; unknown item -> ``mu + b_u``; both -> ``mu``.
        """
        self._check_fitted()
        if np.ndim(users) == 0 and np.ndim(items) == 0 and not isinstance(users, FoldedUser):
            return self._predict_indices(np.array([self.user_map_.index_of(users)], dtype=np.int64),
                                         np.array([self.item_map_.index_of(items)], dtype=np.int64))
        items_arr = np.atleast_1d(np.asarray(items))
        i_idx = self.item_map_.to_index(items_arr, missing="-1").astype(np.int64)
        if isinstance(users, FoldedUser):
            return self._predict_folded(users, i_idx)
        users_arr = np.asarray(users)
        if users_arr.ndim == 0:
            users_arr = np.full(len(items_arr), users_arr.item(), dtype=users_arr.dtype)
        if len(users_arr) != len(items_arr):
            raise ValueError(f"users ({len(users_arr)}) and items ({len(items_arr)}) differ in length")
        u_idx = self.user_map_.to_index(users_arr, missing="-1").astype(np.int64)
        return self._predict_indices(u_idx, i_idx)

    def score(self, users: Any, items: Any) -> np.ndarray:
        """The model's ranking scores (what :meth:`recommend` sorts by, unclipped) of raw
        (user, item) pairs, without scoring whole rows.

        ``users`` may be one raw id (broadcast over ``items``) or an array as long as ``items``.
        An unknown user gets the cold-start scores; an unknown item has no score (NaN).
        """
        self._check_fitted()
        u_idx, i_idx = recommending.pair_indices(self.user_map_, self.item_map_, users, items)
        out = np.full(len(i_idx), np.nan, dtype=np.float32)
        both = (u_idx >= 0) & (i_idx >= 0)
        if both.any():
            out[both] = self._score_pairs(u_idx[both], i_idx[both])
        cold = (u_idx < 0) & (i_idx >= 0)
        if cold.any():
            out[cold] = self._cold_user_scores()[i_idx[cold]]
        return out

    def _predict_indices(self, u_idx: np.ndarray, i_idx: np.ndarray) -> Prediction:
        """Predictions for model indices where -1 marks an unknown id (internal, vectorised)."""
        ku, ki = u_idx >= 0, i_idx >= 0
        out = np.empty(len(u_idx), dtype=np.float32)
        both = ku & ki
        if both.any():
            out[both] = self._predict_known(u_idx[both], i_idx[both])
        if not both.all():
            out[~both] = self._fallback_ratings(u_idx[~both], i_idx[~both])
        only_i = ~ku & ki
        only_u = ku & ~ki
        fallback = np.where(both, KNOWN, np.where(only_i, UNKNOWN_USER,
                                                  np.where(only_u, UNKNOWN_ITEM, UNKNOWN_BOTH)))
        return Prediction(self._clip(out), fallback.astype(np.int8))

    def _personal(self, user: FoldedUser) -> bool:
        """Whether a folded user is scored as itself (else: the unknown-user fallbacks and the
        cold-start list): it has known items; a model that places users from features too says so."""
        return user.n_ratings > 0

    def _predict_folded(self, user: FoldedUser, i_idx: np.ndarray) -> Prediction:
        if not self._personal(user):  # nothing known about the user: the unknown-user fallbacks
            return self._predict_indices(np.full(len(i_idx), -1, dtype=np.int64), i_idx)
        known = i_idx >= 0
        out = np.full(len(i_idx), self.global_mean_ + user.bias, dtype=np.float32)
        if known.any():
            out[known] = self._predict_folded_known(user, i_idx[known])
        fallback = np.where(known, KNOWN, UNKNOWN_ITEM).astype(np.int8)
        return Prediction(self._clip(out), fallback)

    # ------------------------------------------------------------------ ranking
    @overload
    def recommend(self, users: RawId | FoldedUser, k: int = ..., *, exclude_seen: bool = ...,
                  candidates: Any = ...) -> Recs: ...

    @overload
    def recommend(self, users: list[Any] | tuple[Any, ...] | np.ndarray, k: int = ..., *,
                  exclude_seen: bool = ..., candidates: Any = ...) -> RecsBatch: ...

    def recommend(
        self,
        users: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Any = None,
    ) -> Recs | RecsBatch:
        """Top-``k`` items for one user (-> :class:`~cfrec.ranking.Recs`) or many (->
        :class:`~cfrec.ranking.RecsBatch`), ranked by the model's own score.

        ``users`` are raw ids or a :class:`FoldedUser`. Items the user rated in training are
        excluded unless ``exclude_seen=False``. An unknown user gets the model's cold-start list
        (``mu + b_i`` for rating models, popularity for ranking models). ``candidates`` restricts
        the ranking to those raw item ids. For models that predict ratings, the result also
        carries the predicted (clipped) rating of every recommended item.
        """
        self._check_fitted()
        recommending.check_k(k)
        cand_idx = recommending.candidate_indices(self.item_map_, candidates)
        n_items = len(self.item_map_)
        if np.ndim(users) == 0:  # one raw id or folded-in user: one score row, no batch set-up
            return self._recommend_one(users, int(k), exclude_seen, cand_idx)
        raw = np.asarray(users)
        u_idx = self.user_map_.to_index(raw, missing="-1").astype(np.int64)
        idx, top = rank(self.score_rows, u_idx, n_items, int(k),
                        exclude=self.seen_ if exclude_seen else None, candidates=cand_idx)
        ratings = self._ratings_of(u_idx, idx)
        unknown = np.flatnonzero(u_idx < 0)
        placed = self._feature_users(raw[unknown]) if len(unknown) else None
        if placed is not None:  # ranked as the one-user path ranks them (nothing seen to exclude)
            at, score_rows = placed
            who = unknown[at]
            idx[who], top[who] = rank(score_rows, np.arange(len(who)), n_items, int(k), candidates=cand_idx)
            if ratings is not None:
                ratings[who] = recommending.mask_padded(self._clip(self._as_ratings(top[who])), idx[who])
        return RecsBatch(raw, idx, top, ratings, self.item_map_)

    def _feature_users(self, raw: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
        """Of raw user ids the ratings do not know, the positions of those the model places from
        their side features and a scorer of their rows (``rows`` index those positions, as
        :meth:`score_rows` takes user indices); None when every one gets the cold-start list."""
        return None

    def _recommend_one(self, user: Any, k: int, exclude_seen: bool,
                       candidates: np.ndarray | None) -> Recs:
        """:meth:`recommend` for one raw id or :class:`FoldedUser`: the same list, scores and
        ratings as the batch path, from one score row ranked by :func:`~cfrec.ranking.top_k_row`."""
        exclude = None
        if isinstance(user, FoldedUser):
            scores = (self._score_folded(user, np.arange(len(self.item_map_))) if self._personal(user)
                      else self._cold_user_scores())
            if exclude_seen:
                exclude = user.seen
            idx, top = top_k_row(scores, k, exclude=exclude, candidates=candidates)
            ratings = self._predict_folded(user, idx).ratings if self.predicts_ratings else None
        else:
            u = self.user_map_.index_of(user)
            scores = self.score_rows(np.array([u], dtype=np.int64))[0]
            if exclude_seen and u >= 0:
                exclude = self.seen_.indices[self.seen_.indptr[u]:self.seen_.indptr[u + 1]]
            idx, top = top_k_row(scores, k, exclude=exclude, candidates=candidates)
            ratings = None
            if self.predicts_ratings:  # _predict_indices for these pairs, all items known
                users = np.full(len(idx), u, dtype=np.int64)
                ratings = (self._clip(np.asarray(self._predict_known(users, idx), dtype=np.float32))
                           if u >= 0 else self._predict_indices(users, idx).ratings)
        return Recs(self.item_map_.to_raw(idx), top, ratings)

    def _ratings_of(self, u_idx: np.ndarray, idx: np.ndarray) -> np.ndarray | None:
        """Predicted ratings (clipped; NaN in padded slots) of ranked item indices, or None for
        ranking-only models."""
        if not self.predicts_ratings:
            return None
        users = np.repeat(u_idx, idx.shape[1])
        pred = self._predict_indices(users, np.maximum(idx.reshape(-1), 0)).ratings
        return recommending.mask_padded(pred.reshape(idx.shape), idx)

    # ------------------------------------------------------------------ embeddings
    def item_embeddings(self) -> np.ndarray:
        """Item vectors (n_items, n_factors) in model index order; used by ``similar_items`` and t-SNE."""
        self._check_fitted()
        raise NotImplementedError(f"{type(self).__name__} has no item embeddings")

    def user_embeddings(self) -> np.ndarray:
        self._check_fitted()
        raise NotImplementedError(f"{type(self).__name__} has no user embeddings")

    @overload
    def similar_items(self, items: RawId, k: int = ...) -> Recs: ...

    @overload
    def similar_items(self, items: list[Any] | tuple[Any, ...] | np.ndarray, k: int = ...) -> RecsBatch: ...

    def similar_items(self, items: Any, k: int = 10) -> Recs | RecsBatch:
        """The ``k`` items closest by cosine similarity of item embeddings (the query excluded).

        One raw id -> :class:`~cfrec.ranking.Recs`; an array of ids -> a
        :class:`~cfrec.ranking.RecsBatch`. Items with a zero vector are never neighbours.
        """
        self._check_fitted()
        recommending.check_k(k)
        try:
            emb = np.asarray(self.item_embeddings(), dtype=np.float32)
        except NotImplementedError:
            raise CfrecError(f"{type(self).__name__} has no item embeddings to compare; "
                             "use a factor model (mf, als, svdpp, ials ...)") from None
        if emb.ndim != 2 or emb.shape[1] == 0:
            raise CfrecError(f"{type(self).__name__} has no item embeddings to compare; use a factor model")
        return recommending.similar_by_embedding(emb, self.item_map_, items, int(k))

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """Represent a new user from a few ``(item, rating)`` pairs without retraining.

        Each model folds users in its own way (a ridge on the user's bias and factors for
        :class:`~cfrec.models.factor.FactorRecommender`, the training half-step for iALS, the
        encoder for Mult-VAE ...); all of them check their input with :meth:`_fold_in_input`:
        unknown items are ignored and duplicates keep their last rating, both reported on the
        result (and logged), and a user with no known item gets the cold-start list.

        Parameters
        ----------
        items, ratings
            Raw item ids and the user's ratings of them (equal length, on the model's scale);
            ranking-only models accept ``ratings=None`` (every item liked).
        reg
            L2 strength of the fit, for models whose fold-in has one.
        """
        raise NotImplementedError(f"{type(self).__name__} does not fold in new users")

    def fold_in_item(self, item: Any, features: Any = None, *, users: Any = None, ratings: Any = None) -> Self:
        """Add an item that arrived after training, from its side features (and optionally a
        few ``users`` who rated it, with their ``ratings``), so that ``recommend``, ``predict``
        and ``similar_items`` take it like a training item. Changes the model in place and
        returns it. Only models that build items from features can (see :attr:`takes_new_items`);
        the others raise :class:`~cfrec.errors.CfrecError` naming those that can.
        """
        can = [s.name for s in names.specs() if getattr(s.cls(), "takes_new_items", False)]
        raise CfrecError(f"{type(self).__name__} cannot take new items (its items are learned from ratings "
                         f"alone); models that can: {', '.join(can) or 'none registered'}")

    #: Whether :meth:`fold_in_item` adds new items (models that build items from features).
    takes_new_items: ClassVar[bool] = False

    @property
    def takes_user_features(self) -> bool:
        """Whether :meth:`fold_in` places a new user from side features (``features=``): a model
        fitted with user features it uses. The service refuses features for the others."""
        return False

    def _fold_in_input(self, items: Any, ratings: Any) -> FoldInInput:
        """Validate fold-in input: known unique items (last rating wins) and their ratings, see
        :func:`~cfrec.models.types.check_fold_in_input`."""
        return check_fold_in_input(self.item_map_, self.rating_scale_, items, ratings,
                                   needs_ratings=self.predicts_ratings, model=type(self).__name__)

    def _empty_folded(self, given: FoldInInput, k: int) -> FoldedUser:
        """A folded user with no known item: ranked and predicted like an unknown user."""
        return FoldedUser(0.0, np.zeros(k, dtype=np.float32), np.zeros(0, dtype=np.int32), 0,
                          unknown_items=given.unknown, duplicate_items=given.duplicates)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        """The model's own learned arrays (saved under ``model.``; besides vocabularies, seen items
        and what the intermediate base classes add through :meth:`_fallback_state`)."""
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`_state` and :meth:`_extra_meta` saved."""
        return None

    def _extra_meta(self) -> dict[str, Any]:
        """The model's own JSON metadata (saved as ``extra``)."""
        return {}

    def _fallback_state(self) -> dict[str, np.ndarray]:
        """Arrays behind the cold-start fallbacks (saved under ``base.``; none here, the biases of
        :class:`~cfrec.models.factor.BiasedRecommender`)."""
        return {}

    def _set_fallback_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_fallback_state` saved (other ``base.`` arrays are ignored)."""
        return None

    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Everything the fitted model holds as plain ``(arrays, meta)``: named numpy arrays and a
        JSON-ready dict (class, hyperparameters, vocabularies, scale, history ...). This is what
        :meth:`save` writes and :meth:`from_state` reads back."""
        self._check_fitted()
        return state.shared_state(self)

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Self:
        """A fitted ``cls`` from what :meth:`to_state` gave (raises :class:`ModelFileError` when
        the parts do not fit together)."""
        try:
            model = cls(**meta["params"])
            state.restore_shared(model, arrays, meta)
        except (KeyError, TypeError, ValueError, CfrecError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"incomplete or inconsistent model state ({exc!r})") from None
        return model

    def _declared_arrays(self, meta: dict[str, Any]) -> dict[str, Array]:
        """The arrays a saved model of these hyperparameters holds: the ``state_layout`` tables
        of the class hierarchy merged (models whose arrays depend on the metadata add them here)."""
        return state.declared_layout(type(self))

    @classmethod
    def saved_layout(cls, meta: dict[str, Any]) -> Layout:
        """Check a saved model's metadata (hyperparameters valid by their declarations, a device
        this machine has, id vocabularies, a finite mean and rating scale) and give the layout its
        weights must follow. Raises :class:`ModelFileError` naming the field at fault."""
        try:
            check_saved_params(cls, meta.get("params"))
            model = cls(**meta["params"])
        except CfrecError as exc:
            raise ModelFileError(str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"params: {exc}") from None
        sizes = state.saved_sizes(meta)
        try:
            arrays = model._declared_arrays(meta)
        except (CfrecError, TypeError, ValueError) as exc:
            raise ModelFileError(f"params do not describe a valid {cls.__name__} ({exc})") from None
        if meta.get("format_version") == 1:  # version 1 wrote zero biases for every model
            arrays.setdefault("base.user_bias", Array(("users",), optional=True))
            arrays.setdefault("base.item_bias", Array(("items",), optional=True))
        return Layout(arrays, sizes, strict=state.strict_layout(cls))

    def save(self, path: str | Path) -> Path:
        """Write the model to the folder ``path`` (safetensors weights + JSON metadata).

        The previous model at ``path``, if any, is replaced without a moment in which neither is
        complete (see :mod:`cfrec.models.persistence`).
        """
        arrays, meta = self.to_state()
        return persistence.save(path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a model folder written by :meth:`save` (no pickle: safetensors + JSON).

        Called on the base class it returns whatever registered model the folder holds; called on
        a model class it returns that class (a user's own subclass included). Nothing is imported
        because a file says so: the class is the caller's or one the registry knows.
        """
        def layout_for(meta: dict[str, Any], meta_path: Path) -> Layout:
            return names.saved_class(meta, cls, where=meta_path).saved_layout(meta)

        saved = persistence.load(path, layout_for)
        klass = names.saved_class(saved.meta, cls, where=saved.meta_path)
        try:
            return klass.from_state(saved.arrays, saved.meta)
        except ModelFileError as exc:
            raise ModelFileError(f"{saved.weights_path}: {exc}") from None


# ---------------------------------------------------------------------- helpers
def check_feedback(model: Recommender, data: Interactions) -> None:
    """Refuse a rating-prediction model on interactions with no ratings, in one line naming the
    ranking models (the one check behind ``fit``, the benchmark, tuning and the CLI)."""
    if not data.is_implicit or not model.predicts_ratings or type(model).fits_interactions:
        return
    label = type(model).name or type(model).__name__
    raise CfrecError(f"{label} predicts ratings, and {data.name} holds interactions with no ratings; "
                     f"use a ranking model instead: {', '.join(names.ranking_names())}")
