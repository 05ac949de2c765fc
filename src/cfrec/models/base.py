"""The model interface every cfrec recommender implements.

Conventions (scikit-learn / implicit): hyperparameters are keyword-only fields declared with
:func:`hyperparameters` and stored verbatim; learned state lives in attributes ending in ``_``;
``fit`` returns ``self``. Raw ids go in and out of every public method; the id vocabulary is kept
with the model. Data flows one way: raw ids -> vocabulary -> arrays -> scores (the model) ->
ranking (:mod:`cfrec.ranking`) -> raw ids.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Self, TypeVar, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError, NotFittedError
from cfrec.models import persistence
from cfrec.ranking import Recs, RecsBatch, rank

logger = logging.getLogger(__name__)

#: Fallback codes returned by :meth:`Recommender.predict_detailed`.
KNOWN, UNKNOWN_USER, UNKNOWN_ITEM, UNKNOWN_BOTH = 0, 1, 2, 3

EpochCallback = Callable[[dict[str, Any]], None]
#: A raw user or item id as it appears in the data (MovieLens ids are ints; any string works).
RawId = int | str | np.integer

_M = TypeVar("_M", bound="type[Recommender]")


@typing.dataclass_transform(kw_only_default=True, eq_default=False)
def hyperparameters(cls: _M) -> _M:
    """Declare a model's hyperparameters as keyword-only dataclass fields.

    The generated ``__init__`` stores every argument verbatim and does nothing else (validation
    happens in ``fit``), so ``get_params`` and the command line read them from the signature.
    Learned state must not be declared as a field (its names end in ``_``).
    """
    for name in cls.__dict__.get("__annotations__", {}):
        if name.endswith("_") and not name.startswith("__"):
            raise TypeError(f"{cls.__name__}.{name}: learned state is not a hyperparameter; "
                            "assign it in fit instead of declaring it in the class body")
    return dataclasses.dataclass(kw_only=True, eq=False, repr=False)(cls)  # type: ignore[return-value]


class Prediction(NamedTuple):
    """Predicted ratings plus, per pair, which fallback produced them (0 = personalised)."""

    ratings: np.ndarray
    fallback: np.ndarray

    def counts(self) -> dict[str, int]:
        f = self.fallback
        return {
            "personalised": int((f == KNOWN).sum()),
            "unknown_user": int((f == UNKNOWN_USER).sum()),
            "unknown_item": int((f == UNKNOWN_ITEM).sum()),
            "unknown_both": int((f == UNKNOWN_BOTH).sum()),
        }


@dataclass(frozen=True)
class FoldedUser:
    """A user not seen in training, represented against the fixed item side of a fitted model.

    Made by :meth:`Recommender.fold_in`; accepted by ``predict`` and ``recommend`` in place of a
    raw user id. A user with no known item (``n_ratings == 0``) is treated like an unknown user:
    the model's cold-start list and fallbacks.
    """

    bias: float
    factors: np.ndarray  # (n_factors,) float32; empty for bias-only models
    seen: np.ndarray  # model item indices the user rated (excluded from recommendations)
    n_ratings: int
    state: Any = None  # model-specific extras (e.g. a network embedding)
    unknown_items: tuple[Any, ...] = ()  # raw ids the model does not know (ignored)
    duplicate_items: tuple[Any, ...] = ()  # raw ids given more than once (the last rating kept)


@dataclass(frozen=True)
class RidgeFoldIn:
    """A fold-in that is a ridge regression of ``[b_u, p_u]`` on ``[1, q_i]`` with the item side
    fixed (plus the model's offset): the L2 diagonal is ``[bias, const + per_rating * n, ...]``
    for a user with ``n`` known ratings.

    Models declare it through :meth:`Recommender.fold_in_ridge`; the online protocol then replays
    many users at once with rank-one updates instead of calling ``fold_in`` per rating.
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


@dataclass(frozen=True)
class FoldInInput:
    """Checked fold-in input: unique known item indices with their ratings, and what was dropped."""

    items: np.ndarray  # int64 model item indices, unique
    ratings: np.ndarray  # float64, aligned with items
    unknown: tuple[Any, ...]
    duplicates: tuple[Any, ...]


class Recommender(ABC):
    """Base class of every cfrec model: ``fit``, ``predict``, ``recommend``, ``similar_items``,
    ``fold_in``, ``save`` and ``load``.

    Subclasses declare hyperparameters with :func:`hyperparameters` and implement :meth:`_fit`
    and :meth:`_score_pairs` (the model's own scores of user-item pairs) and, for speed,
    :meth:`_score_users` (every item for many users). Rating predictions derive from the scores
    through :meth:`_as_ratings` (the identity for rating models). The base class handles id
    vocabularies, cold-start fallbacks (``mu + b_i`` for an unknown user, ``mu + b_u`` for an
    unknown item, ``mu`` for both), clipping of predicted ratings to the rating scale and fold-in;
    ranking goes through :mod:`cfrec.ranking` and persistence through
    :mod:`cfrec.models.persistence`.

    Attributes
    ----------
    user_map_, item_map_
        Vocabularies of the raw ids seen in training.
    global_mean_
        Mean training rating, or the learned global bias of models that learn one (the lab's
        BiasedMF recipe); the cold-start fallbacks build on it.
    user_bias_, item_bias_
        Regularised biases (float32), used for cold-start fallbacks.
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

    # learned state (set by fit or load)
    user_map_: IdMap
    item_map_: IdMap
    global_mean_: float
    rating_scale_: tuple[float, float]
    user_bias_: np.ndarray
    item_bias_: np.ndarray
    seen_: sp.csr_array
    item_info_: pd.DataFrame | None
    fit_info_: dict[str, Any]
    history_: list[dict[str, Any]]

    # ------------------------------------------------------------------ configuration
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__`` (JSON-friendly)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"{type(self).__name__} has no hyperparameter {key!r}; valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

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
        start = time.perf_counter()
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
        self.fit_info_ = {
            "dataset": train.name,
            "fingerprint": train.fingerprint(),
            "n_ratings": len(data),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "fit_seconds": time.perf_counter() - start,
        }
        logger.info("%s fitted on %d ratings in %.2fs", type(self).__name__, len(data),
                    self.fit_info_["fit_seconds"])
        return self

    @abstractmethod
    def _fit(self, train: Interactions, valid: Interactions | None,
             on_epoch: EpochCallback | None) -> None:
        """Model-specific training on compacted data (indices = model indices).

        Must set ``user_bias_`` and ``item_bias_`` (float32) besides the model's own state.
        """

    @property
    def predicts_ratings(self) -> bool:
        """Whether ``predict`` estimates ratings. Ranking-only models (popularity, iALS, EASE,
        implicit NeuMF ...) say False: their RMSE means nothing and reports show none."""
        return True

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
        """Item scores for a user the model does not know: ``mu + b_i`` (a bias-ranked popular list)."""
        return (self.global_mean_ + self.item_bias_).astype(np.float32)

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        """Scores of item indices for a folded-in user (linear factor models by default)."""
        score = self.global_mean_ + user.bias + self.item_bias_[items]
        if user.factors.size:
            score = score + self.item_embeddings()[items] @ user.factors
        return np.asarray(score, dtype=np.float32)

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

    def _predict_indices(self, u_idx: np.ndarray, i_idx: np.ndarray) -> Prediction:
        """Predictions for model indices where -1 marks an unknown id (internal, vectorised)."""
        ku, ki = u_idx >= 0, i_idx >= 0
        out = np.full(len(u_idx), self.global_mean_, dtype=np.float32)
        both = ku & ki
        if both.any():
            out[both] = self._predict_known(u_idx[both], i_idx[both])
        only_i = ~ku & ki
        out[only_i] += self.item_bias_[i_idx[only_i]]
        only_u = ku & ~ki
        out[only_u] += self.user_bias_[u_idx[only_u]]
        fallback = np.where(both, KNOWN, np.where(only_i, UNKNOWN_USER,
                                                  np.where(only_u, UNKNOWN_ITEM, UNKNOWN_BOTH)))
        return Prediction(self._clip(out), fallback.astype(np.int8))

    def _predict_folded(self, user: FoldedUser, i_idx: np.ndarray) -> Prediction:
        if user.n_ratings == 0:  # nothing known about the user: the unknown-user fallbacks
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
        if not isinstance(k, int | np.integer) or k < 1:
            raise CfrecError(f"k must be a positive integer, got {k!r}")
        cand_idx = None
        if candidates is not None:
            cand_idx = self.item_map_.to_index(np.atleast_1d(np.asarray(candidates)), missing="-1")
            cand_idx = np.unique(cand_idx[cand_idx >= 0]).astype(np.int64)
        n_items = len(self.item_map_)
        if isinstance(users, FoldedUser):
            folded = users
            scores = (self._score_folded(folded, np.arange(n_items)) if folded.n_ratings
                      else self._cold_user_scores())

            def score_one(_rows: np.ndarray) -> np.ndarray:
                return np.array(scores, dtype=np.float32)[None, :]

            exclude = None
            if exclude_seen and len(folded.seen):
                exclude = sp.csr_array((np.ones(len(folded.seen), dtype=np.float32), folded.seen,
                                        [0, len(folded.seen)]), shape=(1, n_items))
            idx, top = rank(score_one, np.zeros(1, dtype=np.int64), n_items, int(k), exclude=exclude,
                            candidates=cand_idx)
            ratings = None
            if self.predicts_ratings:
                ratings = self._predict_folded(folded, np.maximum(idx[0], 0)).ratings[None, :]
            return _one(RecsBatch(np.array([None], dtype=object), idx, top,
                                  _mask(ratings, idx), self.item_map_))
        users_arr = np.asarray(users)
        scalar = users_arr.ndim == 0
        raw = np.atleast_1d(users_arr)
        u_idx = self.user_map_.to_index(raw, missing="-1").astype(np.int64)
        idx, top = rank(self.score_rows, u_idx, n_items, int(k),
                        exclude=self.seen_ if exclude_seen else None, candidates=cand_idx)
        batch = RecsBatch(raw, idx, top, self._ratings_of(u_idx, idx), self.item_map_)
        return _one(batch) if scalar else batch

    def _ratings_of(self, u_idx: np.ndarray, idx: np.ndarray) -> np.ndarray | None:
        """Predicted ratings (clipped; NaN in padded slots) of ranked item indices, or None for
        ranking-only models."""
        if not self.predicts_ratings:
            return None
        users = np.repeat(u_idx, idx.shape[1])
        pred = self._predict_indices(users, np.maximum(idx.reshape(-1), 0)).ratings
        return _mask(pred.reshape(idx.shape), idx)

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
        if not isinstance(k, int | np.integer) or k < 1:
            raise CfrecError(f"k must be a positive integer, got {k!r}")
        try:
            emb = np.asarray(self.item_embeddings(), dtype=np.float32)
        except NotImplementedError:
            raise CfrecError(f"{type(self).__name__} has no item embeddings to compare; "
                             "use a factor model (mf, als, svdpp, ials ...)") from None
        if emb.ndim != 2 or emb.shape[1] == 0:
            raise CfrecError(f"{type(self).__name__} has no item embeddings to compare; use a factor model")
        norms = np.linalg.norm(emb, axis=1)
        unit = emb / np.maximum(norms, 1e-12)[:, None]
        arr = np.asarray(items)
        scalar = arr.ndim == 0
        raw = np.atleast_1d(arr)
        idx = self.item_map_.to_index(raw, what="item").astype(np.int64)
        nonzero = np.flatnonzero(norms > 0)
        itself = sp.eye_array(len(unit), dtype=np.float32, format="csr")  # row i excludes item i
        top_idx, top = rank(lambda rows: unit[rows] @ unit.T, idx, len(unit), int(k),
                            exclude=itself, candidates=nonzero)
        batch = RecsBatch(raw, top_idx, top, None, self.item_map_)
        return _one(batch) if scalar else batch

    # ------------------------------------------------------------------ cold start
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
        ridge = self.fold_in_ridge(reg) or Recommender.fold_in_ridge(self, reg)
        assert ridge is not None
        try:
            q = np.asarray(self.item_embeddings(), dtype=np.float64)
        except NotImplementedError:
            q = np.zeros((len(self.item_map_), 0))
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
        """The ridge :meth:`fold_in` solves, or ``None`` when the model's fold-in is not a ridge on
        ``[b_u, p_u]`` (models that override ``fold_in`` must override this too).

        The default is a constant L2 ``reg`` (or the model's ``fold_in_reg``) on the bias and the
        factors.
        """
        lam = self._fold_in_reg() if reg is None else float(reg)
        if not lam > 0:
            raise CfrecError(f"fold-in regularisation must be positive, got {lam}")
        return RidgeFoldIn(lam, lam)

    def _fold_in_input(self, items: Any, ratings: Any) -> FoldInInput:
        """Validate fold-in input: known unique items (last rating wins) and their ratings.

        Ratings must be finite and on the model's rating scale; ``None`` (allowed for ranking-only
        models) counts every item as liked, rated at the top of the scale.
        """
        items_arr = np.atleast_1d(np.asarray(items, dtype=object if _mixed(items) else None))
        lo, hi = self.rating_scale_
        if ratings is None:
            if self.predicts_ratings:
                raise CfrecError(f"{type(self).__name__} folds a new user in from ratings: give one "
                                 "rating per item")
            r = np.full(len(items_arr), hi, dtype=np.float64)
        else:
            try:
                r = np.atleast_1d(np.asarray(ratings, dtype=np.float64))
            except (TypeError, ValueError):
                raise CfrecError(f"fold-in ratings must be numbers, got {ratings!r}") from None
        if items_arr.ndim != 1 or len(items_arr) != len(r):
            raise CfrecError(f"fold-in: items ({len(items_arr)}) and ratings ({len(r)}) differ in length")
        bad = np.flatnonzero(~np.isfinite(r) | (r < lo) | (r > hi))
        if len(bad):
            j = int(bad[0])
            raise CfrecError(f"fold-in rating {r[j]:g} for item {_plain(items_arr[j])!r} is outside the "
                             f"model's rating scale {lo:g}..{hi:g}")
        idx = self.item_map_.to_index(items_arr, missing="-1").astype(np.int64)
        unknown = tuple(_plain(v) for v in items_arr[idx < 0])
        known = np.flatnonzero(idx >= 0)
        # last occurrence of each item wins
        rev = known[::-1]
        _, first_in_rev = np.unique(idx[rev], return_index=True)
        keep = np.sort(rev[first_in_rev])
        dup_mask = np.ones(len(known), dtype=bool)
        dup_mask[np.searchsorted(known, keep)] = False
        duplicates = tuple(dict.fromkeys(_plain(v) for v in items_arr[known[dup_mask]]))
        if unknown or duplicates:
            parts = []
            if unknown:
                parts.append(f"{len(unknown)} unknown item(s) ignored ({_preview(unknown)})")
            if duplicates:
                parts.append(f"{len(duplicates)} item(s) given more than once, last rating kept "
                             f"({_preview(duplicates)})")
            logger.warning("fold-in: %s", "; ".join(parts))
        return FoldInInput(idx[keep], r[keep], unknown, duplicates)

    def _empty_folded(self, given: FoldInInput, k: int) -> FoldedUser:
        """A folded user with no known item: ranked and predicted like an unknown user."""
        return FoldedUser(0.0, np.zeros(k, dtype=np.float32), np.zeros(0, dtype=np.int32), 0,
                          unknown_items=given.unknown, duplicate_items=given.duplicates)

    def _fold_in_offset(self, seen: np.ndarray) -> np.ndarray:
        """A fixed part of a new user's vector that depends only on which items they rated.

        Zero for plain factor models; SVD++ returns its implicit term ``|N|^-1/2 sum_j y_j``.
        """
        return np.zeros(np.asarray(self.item_embeddings()).shape[1])

    def _fold_in_reg(self) -> float:
        return float(getattr(self, "fold_in_reg", None) or 1.0)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        """Model-specific learned arrays to save (besides biases, vocabularies and seen items)."""
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`_state` saved (nothing for models without own arrays)."""
        return None

    def _extra_meta(self) -> dict[str, Any]:
        """Model-specific JSON metadata to save."""
        return {}

    def save(self, path: str | Path) -> Path:
        """Write the model to the folder ``path`` (safetensors weights + JSON metadata).

        The previous model at ``path``, if any, is replaced without a moment in which neither is
        complete (see :mod:`cfrec.models.persistence`).
        """
        self._check_fitted()
        return persistence.save_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a model folder written by :meth:`save` (no pickle: safetensors + JSON).

        Called on the base class it returns whatever registered model the folder holds; called on
        a model class it returns that class (a user's own subclass included).
        """
        model = persistence.load_model(path, cls)
        assert isinstance(model, cls)  # load_model checks the class
        return model


class RankingRecommender(Recommender):
    """Base of the ranking-only models (iALS, EASE, BPR, Mult-VAE): ``predicts_ratings`` is
    False, an unknown user gets the popularity list (:func:`popularity_scores`), and
    ``predict`` shows a score on the rating scale by ``score_to_scale``: ``"linear"`` for
    scores in about [0, 1] (:func:`linear_to_scale`), ``"sigmoid"`` for unbounded ones
    (:func:`sigmoid_to_scale`) — a monotone preference, not a rating estimate."""

    score_to_scale: ClassVar[Literal["linear", "sigmoid"]] = "linear"

    @property
    def predicts_ratings(self) -> bool:
        """False: the scores rank items; they do not estimate ratings."""
        return False

    def _cold_user_scores(self) -> np.ndarray:
        return popularity_scores(self.seen_, len(self.item_map_))

    def _as_ratings(self, scores: np.ndarray) -> np.ndarray:
        to_scale = sigmoid_to_scale if self.score_to_scale == "sigmoid" else linear_to_scale
        return to_scale(scores, self.rating_scale_)


class FactorRecommender(Recommender):
    """A model of the form ``r = mu + b_u + b_i + p_u . q_i`` with learned state in numpy arrays.

    Subclasses set ``user_factors_`` (n_users, k), ``item_factors_`` (n_items, k) and the biases
    in ``_fit``; scoring, ranking, fold-in and persistence come from here.
    """

    user_factors_: np.ndarray
    item_factors_: np.ndarray

    @property
    def personalised(self) -> bool:
        return self.user_factors_.shape[1] > 0

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
        from cfrec.errors import ModelFileError

        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]
        if len(self.user_factors_) != len(self.user_map_) or len(self.item_factors_) != len(self.item_map_):
            raise ModelFileError(f"factor matrices ({self.user_factors_.shape}, {self.item_factors_.shape}) "
                                 f"do not match the id vocabularies ({len(self.user_map_)} users, "
                                 f"{len(self.item_map_)} items)")


# ---------------------------------------------------------------------- helpers
def popularity_scores(seen: Any, n_items: int) -> np.ndarray:
    """Training ratings per item divided by the largest count (the most popular item scores 1):
    the cold-start list of the ranking models, whose own scores have no bias to fall back on."""
    counts = np.bincount(seen.indices, minlength=n_items).astype(np.float64)
    return (counts / max(float(counts.max(initial=0.0)), 1.0)).astype(np.float32)


def linear_to_scale(scores: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """``low + s * (high - low)``: a score in about [0, 1] shown on the rating scale (a monotone
    preference, not a rating estimate)."""
    lo, hi = scale
    return (np.float32(lo) + np.float32(hi - lo) * np.asarray(scores, dtype=np.float32)).astype(np.float32)


def sigmoid_to_scale(scores: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """``low + sigmoid(s) * (high - low)``: an unbounded score shown on the rating scale (a
    monotone preference, not a rating estimate)."""
    lo, hi = scale
    sig = 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))
    return (lo + sig * (hi - lo)).astype(np.float32)


def _one(batch: RecsBatch) -> Recs:
    return batch[0]


def _mask(ratings: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    if ratings is None:
        return None
    out = np.asarray(ratings, dtype=np.float32).copy()
    out[idx < 0] = np.nan
    return out


def _mixed(values: Any) -> bool:
    """Whether a list mixes strings and numbers (numpy would turn the numbers into strings)."""
    if isinstance(values, list | tuple) and values:
        kinds = {isinstance(v, str) for v in values}
        return len(kinds) > 1
    return False


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _preview(values: tuple[Any, ...], n: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", ... ({len(values) - n} more)" if len(values) > n else "")


def _item_info_for(data: Interactions) -> pd.DataFrame | None:
    info = data.item_info
    if info is None:
        return None
    cols = [c for c in ("title", "year", "genres") if c in info.columns]
    if not cols:
        return None
    return info.reindex(data.item_map.ids)[cols]
