"""A hybrid ranker (LightFM-style): users and items as sums of their id and feature embeddings.

Each user and item has a feature row: its own identity column and its side features (genres,
tags, age ... from :class:`~cfrec.data.features.Features`), optionally normalised to sum to one
as LightFM's ``Dataset`` does (``normalize=True``). Its vector and intercept are the row's weighted sums of
embeddings::

    p_u = sum_c X_u[c] P[c]      q_i = sum_c X_i[c] Q[c]      b_i = sum_c X_i[c] B[c]
    s_ui = p_u . q_i + b_i

trained on (user, positive, negative) triples with the BPR loss ``softplus(-(s_ui - s_uj))`` or
WARP's rank-weighted hinge (Weston et al. 2011), one triple a step in a compiled loop over the
cores (:mod:`cfrec.engines.hogwild_features`): a step reads and writes only the embedding rows
of the three rows' columns. Without features this is BPR (identity rows only).

Because an item's vector is its features' embeddings plus its own, an item nobody rated still
has one: items that come with features but no rating join the vocabulary at ``fit`` (their id
embedding is zero), and :meth:`HybridRanker.fold_in_item` adds an item after training from its
features (and optionally a few users who liked it), which :meth:`~HybridRanker.recommend` and
:meth:`~HybridRanker.similar_items` then rank like any other. A new user is folded in from
features, a few items, or both (:meth:`HybridRanker.fold_in`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp

from cfrec.data.features import Features
from cfrec.data.idmap import IdMap
from cfrec.data.interactions import IMPLICIT_SCALE, Interactions
from cfrec.engines.matrix import positives
from cfrec.engines.newton import damped_newton
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.factor import ItemInterceptRecommender
from cfrec.models.layout import Array, csr
from cfrec.models.params import hyperparameters, param
from cfrec.models.ranking_only import RankingRecommender
from cfrec.ranking import Recs, top_k_row

logger = logging.getLogger(__name__)

#: Most (positive, negative) pairs in a fold-in objective; above it the negatives are a sample.
_FOLD_IN_PAIRS = 1 << 18


@functools.cache
def _kernel() -> Any:
    """:mod:`cfrec.engines.hogwild_features` (numba), loaded on first use."""
    from cfrec.engines import hogwild_features

    return hogwild_features


@dataclass(frozen=True)
class _Rows:
    """Feature rows in a model's feature vocabulary: raw values and the weights the embeddings
    are summed with (normalised), for new users or items."""

    raw: sp.csr_array  # (n, n_features) float32
    id_weight: np.ndarray  # (n,) float64: the weight of each row's identity column
    unknown: tuple[str, ...]  # feature names the model does not know (ignored)


@hyperparameters
class HybridRanker(RankingRecommender, ItemInterceptRecommender):
    """Hybrid matrix factorisation for top-K: user and item vectors are sums of their id and
    side-feature embeddings (see :mod:`cfrec.models.hybrid`), trained with BPR or WARP.

    Features come with the training data (``Interactions.item_features`` /
    ``user_features``); without them the model is BPR. Ratings ``>= threshold`` are positives
    (``None``: every rating; on interaction logs every interaction). Negatives are items the
    user never rated in training, drawn uniformly. ``valid`` is ignored.

    Cold start: an item with features but no training rating joins the vocabulary at ``fit``
    with a zero id embedding (the vector of its features alone); :meth:`fold_in_item` adds one
    after training; :meth:`fold_in` makes a new user from features and/or a few items.
    ``predicts_ratings`` is False: ``predict`` maps scores onto the rating scale through a
    sigmoid, a monotone preference.

    The defaults are BPR's (tuned on ML-100K) with un-normalised feature rows (see
    ``normalize``); see docs/cold-start.md for the measurements.

    Parameters
    ----------
    n_factors
        Length of the vectors.
    loss
        ``"bpr"`` (log-sigmoid of the pair's difference, one negative a positive) or
        ``"warp"`` (negatives drawn until one violates a margin of 1, the hinge weighted by the
        log of the estimated rank, at most ``max_sampled`` draws).
    epochs
        Passes over the positives.
    lr, lr_decay
        Step size of a triple's step, multiplied by ``lr_decay`` after every epoch.
    optimizer
        ``"sgd"`` or ``"adagrad"`` (per-coordinate sums of the touched rows).
    reg, bias_reg
        Per-triple L2 on the touched embedding rows and intercepts.
    threshold
        Ratings ``>= threshold`` are positives; ``None``: every rating.
    max_sampled
        WARP's most negative draws per positive.
    use_item_features, use_user_features
        Whether the data's item and user features enter the vectors (False: ids only). User
        features are off by default: MovieLens's (age, gender, occupation, zip region) are each
        shared by a large part of the users, so plain SGD at the default rate moves their
        embeddings on most steps and diverged on ML-100K u1; with a rate that trains
        (``lr=0.05``, or Adagrad) they gave NDCG@10 0.439 / 0.448 against 0.457 without them.
    normalize
        Normalise each feature row (identity included) to sum to one, as LightFM's
        ``Dataset`` does; False (the default): every column keeps its own value (the identity
        1), so an item is its id embedding plus its features'. On ML-100K with genres the
        normalised rows gave NDCG@10 0.396 on u1 (0.462 without) and 0.080 on held-out items
        (cold-items:0.1, 2 seeds; 0.126 without, 3 seeds).
    init_std
        Standard deviation of the normal initial embeddings (id embeddings of items that never
        trained are zero).
    fold_in_reg
        L2 pull of a folded-in user or item towards its features' vector (``None``: ``reg``).
    fold_in_steps
        Most Newton steps of a fold-in.
    threads
        CPU threads of the fit (``None``: ``CFREC_NUM_THREADS``, else one thread below 2^18
        triples an epoch and every core above).
    seed
        Seeds initialisation, orders and negatives; one thread reproduces a fit exactly.

    Attributes
    ----------
    user_factors_, item_factors_
        (n_users, k) and (n_items, k) float32: the summed vectors.
    item_intercept_
        (n_items,) float32 summed intercepts.
    item_feature_factors_, item_feature_bias_, user_feature_factors_
        The side features' embeddings (rows follow ``item_features_.names`` and
        ``user_feature_names_``).
    item_features_
        The raw feature rows of the vocabulary's items (:class:`Features`, rows in
        ``item_map_`` order), or None without item features.
    user_feature_names_
        The user feature vocabulary (empty without user features).
    """

    name = "hybrid"
    state_layout = {"model.item_trained": Array(("items",), "int"),
                    "model.item_feature_factors": Array(("item_features", "factors")),
                    "model.item_feature_bias": Array(("item_features",)),
                    "model.user_feature_factors": Array(("user_features", "factors")),
                    **csr("model.item_features", "items", "item_features", optional=True)}
    score_to_scale = "sigmoid"
    takes_new_items = True

    n_factors: int = param(default=128, ge=1)
    loss: Literal["bpr", "warp"] = "bpr"
    epochs: int = param(default=100, ge=1)
    lr: float = param(default=0.2, gt=0)
    lr_decay: float = param(default=0.96, gt=0)
    optimizer: Literal["sgd", "adagrad"] = "sgd"
    reg: float = param(default=0.005, ge=0)
    bias_reg: float = param(default=1e-3, ge=0)
    threshold: float | None = 4.0
    max_sampled: int = param(default=10, ge=1)
    use_item_features: bool = True
    use_user_features: bool = False
    normalize: bool = False
    init_std: float = param(default=0.1, ge=0)
    fold_in_reg: float | None = param(default=None, gt=0)
    fold_in_steps: int = param(default=20, ge=1)
    threads: int | None = param(default=None, ge=1)
    seed: int | None = param(default=0, ge=0)

    # ------------------------------------------------------------------ fitting
    def _seeds(self) -> list[int]:
        seq = np.random.SeedSequence(None if self.seed is None else int(self.seed))
        return [int(s.generate_state(1)[0]) for s in seq.spawn(6)]  # P ids, Q ids, P feats, Q feats, order, fold-in

    def _positives(self, ratings: np.ndarray, implicit: bool = False) -> np.ndarray:
        return positives(ratings, None if implicit else self.threshold)

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        if valid is not None:
            logger.debug("HybridRanker: validation data ignored (the epoch count is a hyperparameter)")
        n_users, n_items, k = train.n_users, train.n_items, int(self.n_factors)
        pos_mask = self._positives(train.ratings, train.is_implicit)
        if len(train) and not pos_mask.any():
            raise CfrecError(f"hybrid threshold={self.threshold!r} keeps none of the {len(train):,} training "
                             f"ratings (highest {float(train.ratings.max()):g}); pass threshold=None (every "
                             "rating is a positive) or a lower threshold")
        item_feats = train.item_features if self.use_item_features else None
        user_feats = train.user_features if self.use_user_features else None
        item_raw, item_names = _trained_columns(item_feats, self.item_map_)
        user_raw, user_names = _trained_columns(user_feats, self.user_map_)
        self.user_feature_names_ = user_names
        s_pid, s_qid, s_pf, s_qf, s_order, _ = self._seeds()
        std = float(self.init_std)
        p = np.vstack([_normal(s_pid, (n_users, k), std), _normal(s_pf, (len(user_names), k), std)])
        q = np.vstack([_normal(s_qid, (n_items, k), std), _normal(s_qf, (len(item_names), k), std)])
        b = np.zeros(n_items + len(item_names), np.float32)
        user_rows = self._design(user_raw)
        item_rows = self._design(item_raw)
        kernel = _kernel()
        from cfrec.engines.hogwild import fit_threads, training_layout

        layout, trainable = training_layout(self.seen_, train.users, train.items, pos_mask, s_order)
        n_samples = int(np.diff(layout[2])[trainable].sum())
        trainer = kernel.HogwildHybrid(layout, np.flatnonzero(trainable), _parts(user_rows), _parts(item_rows),
                                       (p, q, b), str(self.loss), str(self.optimizer), float(self.reg),
                                       float(self.bias_reg), int(self.max_sampled),
                                       fit_threads(self.threads, n_samples), s_order)
        self.history_.extend(trainer.train("HybridRanker", int(self.epochs), float(self.lr),
                                           float(self.lr_decay), on_epoch))
        p[:n_users][~trainable] = 0.0  # a user that never trained: its features' vector alone
        self.user_factors_ = np.asarray(user_rows @ p, dtype=np.float32)
        self.item_factors_ = np.asarray(item_rows @ q, dtype=np.float32)
        self.item_intercept_ = np.asarray(item_rows @ b, dtype=np.float32)
        self.user_feature_factors_ = np.ascontiguousarray(p[n_users:])
        self.item_feature_factors_ = np.ascontiguousarray(q[n_items:])
        self.item_feature_bias_ = np.ascontiguousarray(b[n_items:])
        self.item_features_ = (None if item_feats is None else
                               Features(self.item_map_, item_names, item_raw, owner="item", source=item_feats.source))
        self.item_trained_ = np.ones(n_items, dtype=bool)
        if item_feats is not None:  # items with features and no rating: their features' vectors
            ids = item_feats.ids.ids
            new_ids = ids[self.item_map_.to_index(ids, missing="-1") < 0]
            if len(new_ids):
                self._add_items(new_ids, self._feature_rows(item_feats.rows(new_ids), item_feats.names,
                                                            self.item_features_names), None)

    def _design(self, raw: sp.csr_array) -> sp.csr_array:
        """The rows the embeddings are summed with: ``[identity | features]``, normalised."""
        n = raw.shape[0]
        full = sp.csr_array(sp.hstack([sp.eye_array(n, dtype=np.float32, format="csr"), raw], format="csr"))
        if self.normalize:
            sums = np.asarray(abs(full).sum(axis=1)).reshape(-1)
            full = sp.csr_array(sp.diags_array((1.0 / np.maximum(sums, 1e-12)).astype(np.float32)) @ full)
        full.sort_indices()
        return full.astype(np.float32)

    @property
    def item_features_names(self) -> IdMap:
        """The item feature vocabulary (empty without item features)."""
        return IdMap([]) if self.item_features_ is None else self.item_features_.names

    # ------------------------------------------------------------------ feature rows of new entities
    def _feature_rows(self, raw: sp.csr_array, names: IdMap, vocab: IdMap) -> _Rows:
        """Rows given in the feature vocabulary ``names``, put into the model's ``vocab``:
        unknown features are dropped (and reported)."""
        raw = sp.csr_array(raw)
        if len(names) == 0 or raw.shape[1] == 0 or len(vocab) == 0:
            cols = np.zeros(0, np.int64)
        else:
            cols = vocab.to_index(names.ids, missing="-1").astype(np.int64)
        if len(cols) < raw.shape[1]:
            cols = np.full(raw.shape[1], -1, np.int64)
        used = np.unique(raw.indices) if raw.nnz else np.zeros(0, np.int64)
        unknown = tuple(str(names.ids[c]) for c in used if cols[c] < 0)
        coo = raw.tocoo()
        keep = cols[coo.col] >= 0 if coo.nnz else np.zeros(0, bool)
        mapped: Any = sp.csr_array((coo.data[keep].astype(np.float32), (coo.row[keep], cols[coo.col[keep]])),
                                   shape=(raw.shape[0], len(vocab)))
        mapped.sum_duplicates()
        sums = np.asarray(abs(mapped).sum(axis=1)).reshape(-1).astype(np.float64)
        id_weight = 1.0 / (1.0 + sums) if self.normalize else np.ones(len(sums))
        return _Rows(mapped, id_weight, unknown)

    def _given_rows(self, features: Any, owner: Literal["item", "user"], raw_id: Any = None) -> _Rows:
        """One row from what a caller gives: a mapping ``{feature: value}``, an iterable of
        feature names (value 1) or a :class:`Features` (the row of ``raw_id``)."""
        vocab = self.item_features_names if owner == "item" else self.user_feature_names_
        if features is None:
            empty: Any = sp.csr_array((1, len(vocab)), dtype=np.float32)
            return _Rows(empty, np.ones(1), ())
        try:
            one = Features.of_one(0 if raw_id is None else raw_id, features, owner=owner)
        except ValueError as exc:
            raise CfrecError(str(exc)) from None
        if not one.n_features:
            return self._given_rows(None, owner)
        rows, names = one.matrix, one.names
        out = self._feature_rows(rows, names, vocab)
        if out.unknown:
            logger.warning("%s features the model does not know were ignored: %s", owner,
                           ", ".join(out.unknown[:10]))
        return out

    def _feature_vector(self, rows: _Rows, owner: Literal["item", "user"]) -> tuple[np.ndarray, np.ndarray]:
        """The features' part of new rows' vectors (n, k) and intercepts (n,): each embedding
        weighted as in training (the identity column's share left out: a new id is zero)."""
        scale = rows.id_weight if self.normalize else np.ones(rows.raw.shape[0])
        weighted = sp.csr_array(sp.diags_array(scale.astype(np.float32)) @ rows.raw)
        if owner == "item":
            return (np.asarray(weighted @ self.item_feature_factors_, dtype=np.float32).reshape(-1, self.k_),
                    np.asarray(weighted @ self.item_feature_bias_, dtype=np.float32).reshape(-1))
        return (np.asarray(weighted @ self.user_feature_factors_, dtype=np.float32).reshape(-1, self.k_),
                np.zeros(rows.raw.shape[0], np.float32))

    @property
    def k_(self) -> int:
        return int(self.item_factors_.shape[1])

    # ------------------------------------------------------------------ new items
    def fold_in_item(self, item: Any, features: Any = None, *, users: Any = None, ratings: Any = None) -> Self:
        """Add a new item after training, from its features and optionally a few users who
        rated it; it is then ranked by :meth:`recommend` and compared by :meth:`similar_items`.

        ``item`` is a raw id (``features``: ``{name: value}``, a list of names, or a
        :class:`Features` holding its row) or a :class:`Features` of several new items
        (``features`` None). The item's vector is its features' embeddings, weighted as in
        training, plus a zero id embedding: exactly the vector of an item that came with the
        training data's features and no rating. ``users`` (raw ids of known users; with
        ``ratings``, those ``>= threshold`` count) move the vector by the fold-in objective of
        :meth:`fold_in` mirrored (the item should outscore the users' other items), pulled
        towards the features' vector by ``fold_in_reg``. Features the model does not know are
        ignored (logged). An item added earlier is replaced; a training item is an error.
        Returns the model (changed in place: the vocabulary and item tables grow).
        """
        self._check_fitted()
        if isinstance(item, Features):
            if features is not None or users is not None:
                raise CfrecError("fold_in_item(Features) adds many items from their features alone; "
                                 "pass one item id to give users")
            ids = item.ids.ids
            rows = self._feature_rows(item.matrix, item.names, self.item_features_names)
            if rows.unknown:
                logger.warning("item features the model does not know were ignored: %s",
                               ", ".join(rows.unknown[:10]))
        else:
            ids = np.atleast_1d(np.asarray(item, dtype=object if isinstance(item, str) else None))
            if len(ids) != 1:
                raise CfrecError("fold_in_item takes one item id (or a Features of several items)")
            rows = self._given_rows(features, "item", item)
        known = self.item_map_.to_index(ids, missing="-1")
        if (known >= 0).any():
            # items added after training sit among the vocabulary: those that trained are refused
            trained_mask = self._trained_mask()
            bad = ids[(known >= 0) & trained_mask[np.maximum(known, 0)]]
            if len(bad):
                raise CfrecError(f"item {bad[0]!r} was in the training data; fold_in_item adds new items "
                                 f"(items nobody rated in training can be added)")
        self._add_items(ids, rows, (users, ratings) if users is not None else None)
        return self

    def _trained_mask(self) -> np.ndarray:
        """Which vocabulary items had training ratings (the others came from features alone)."""
        return np.asarray(self.item_trained_, dtype=bool)

    def _add_items(self, ids: np.ndarray, rows: _Rows, given: tuple[Any, Any] | None) -> None:
        """Put items into the (sorted) vocabulary with their features' vectors (refitted from
        ``given`` = (users, ratings) for one item); items already added are replaced."""
        q, b = self._feature_vector(rows, "item")
        if given is not None:
            q[0], b[0] = self._fold_in_item_vector(q[0], float(b[0]), *given)
        old = self.item_map_
        merged = IdMap(np.concatenate([old.ids, np.asarray(ids, dtype=old.ids.dtype)])
                       if len(old) else np.asarray(ids))
        n = len(merged)
        old_pos = merged.to_index(old.ids).astype(np.int64)
        new_pos = merged.to_index(ids).astype(np.int64)

        def grow(arr: np.ndarray, new_rows: np.ndarray) -> np.ndarray:
            out = np.zeros((n, *arr.shape[1:]), dtype=arr.dtype)
            out[old_pos] = arr
            out[new_pos] = new_rows
            return out

        self.item_factors_ = grow(self.item_factors_, q)
        self.item_intercept_ = grow(self.item_intercept_, b)
        trained = grow(self._trained_mask(), np.zeros(len(ids), bool))
        if self.item_features_ is not None:
            src = np.empty(n, dtype=np.int64)
            src[old_pos] = np.arange(len(old))
            src[new_pos] = len(old) + np.arange(len(ids))
            stacked = sp.csr_array(sp.vstack([self.item_features_.matrix, rows.raw], format="csr"))
            self.item_features_ = Features(merged, self.item_features_.names, sp.csr_array(stacked[src]),
                                           owner="item", source=self.item_features_.source)
        remap = old_pos.astype(np.int32)
        seen = self.seen_
        self.seen_ = sp.csr_array((seen.data, remap[seen.indices] if seen.nnz else seen.indices, seen.indptr),
                                  shape=(seen.shape[0], n))
        if self.item_info_ is not None:
            self.item_info_ = self.item_info_.reindex(merged.ids)
        self.item_map_ = merged
        self.item_trained_ = trained

    def _fold_in_item_vector(self, q0: np.ndarray, b0: float, users: Any, ratings: Any) -> tuple[np.ndarray, float]:
        """A new item's ``[q, b]`` from users who rated it: minimises the mean over its positive
        users ``u`` and their other items ``j`` of ``softplus(-(p_u . q + b - s_uj))`` plus
        ``fold_in_reg |[q, b] - [q0, b0]|^2`` (Newton, float64)."""
        raw = np.atleast_1d(np.asarray(users))
        idx = self.user_map_.to_index(raw, missing="-1").astype(np.int64)
        r = None if ratings is None else np.atleast_1d(np.asarray(ratings, dtype=np.float64))
        if r is not None and len(r) != len(raw):
            raise CfrecError(f"fold_in_item: {len(raw)} users but {len(r)} ratings")
        keep = idx >= 0
        if not keep.all():
            logger.warning("fold_in_item: users the model does not know were ignored: %s",
                           ", ".join(map(str, raw[~keep][:10])))
        pos = idx[keep]
        if r is not None:
            implicit = self.rating_scale_ == IMPLICIT_SCALE
            pos = pos[self._positives(r[keep], implicit)]
        pos = np.unique(pos)
        center = np.concatenate([q0.astype(np.float64), [b0]])
        if not len(pos):
            return q0, b0
        rng = np.random.default_rng(self._seeds()[5])
        per_user = max(1, min(len(self.item_map_), _FOLD_IN_PAIRS // len(pos), 200))
        trained = np.flatnonzero(self._trained_mask())
        js = trained[rng.integers(0, len(trained), (len(pos), per_user))]
        pu = self.user_factors_[pos].astype(np.float64)
        s_uj = np.einsum("uf,ujf->uj", pu, self.item_factors_[js].astype(np.float64)) + self.item_intercept_[js]
        a = np.repeat(np.hstack([pu, np.ones((len(pos), 1))]), per_user, axis=0)
        vec = _newton_pairs(a, s_uj.reshape(-1), center, self._fold_in_lam(), int(self.fold_in_steps))
        return vec[:-1].astype(np.float32), float(vec[-1])

    def _fold_in_lam(self, reg: float | None = None) -> float:
        lam = float(reg if reg is not None else (self.fold_in_reg if self.fold_in_reg is not None else self.reg))
        if not lam > 0:
            raise CfrecError(f"hybrid fold-in regularisation must be positive, got {lam}")
        return lam

    # ------------------------------------------------------------------ new users
    def fold_in(self, items: Any = (), ratings: Any = None, *, reg: float | None = None,
                features: Any = None) -> FoldedUser:
        """A new user from features (``{name: value}`` or a list of names), a few items, or
        both, without retraining.

        The user's vector starts from its features' embeddings (weighted as in training, a
        zero id embedding: the vector of a training user with those features and no
        positive); given items (with ``ratings``: those ``>= threshold`` are positives) move it
        by the BPR fold-in objective: the mean over the positives ``i`` and the other known
        items ``j`` of ``softplus(-(s_i - s_j))`` plus ``reg |p - p_features|^2`` (``reg``:
        ``fold_in_reg``, else the training ``reg``), by Newton steps in float64 (negatives
        sampled above about 2^18 pairs). A user with neither features nor known items gets the
        popularity list. Pure: nothing of the model changes.
        """
        self._check_fitted()
        given = self._fold_in_input(items if items is not None else (), ratings)
        rows = self._given_rows(features, "user")
        p0 = self._feature_vector(rows, "user")[0][0].astype(np.float64)
        has_features = rows.raw.nnz > 0
        idx = np.sort(given.items) if len(given.items) else given.items
        if not len(idx) and not has_features:  # the popularity list; unknown features still reported
            return replace(self._empty_folded(given, self.k_),
                           state={"features": False, "unknown_features": rows.unknown})
        vec = p0
        if len(idx):
            order = np.argsort(given.items, kind="stable")
            r = given.ratings[order]
            implicit = self.rating_scale_ == IMPLICIT_SCALE
            pos = idx[self._positives(r, implicit)] if ratings is not None else idx
            negatives = np.setdiff1d(np.flatnonzero(self._trained_mask()), idx)
            if len(pos) and len(negatives):
                budget = max(1, _FOLD_IN_PAIRS // len(pos))
                if len(negatives) > budget:
                    rng = np.random.default_rng(self._seeds()[5])
                    negatives = np.sort(rng.choice(negatives, budget, replace=False))
                q = self.item_factors_.astype(np.float64)
                b = self.item_intercept_.astype(np.float64)
                a = (q[pos][:, None, :] - q[negatives][None, :, :]).reshape(-1, q.shape[1])
                c = -(b[pos][:, None] - b[negatives][None, :]).reshape(-1)
                vec = _newton_pairs(a, c, p0, self._fold_in_lam(reg), int(self.fold_in_steps))
        return FoldedUser(0.0, vec.astype(np.float32), idx.astype(np.int32), len(idx),
                          state={"features": has_features, "unknown_features": rows.unknown},
                          unknown_items=given.unknown, duplicate_items=given.duplicates)

    @property
    def takes_user_features(self) -> bool:
        return len(getattr(self, "user_feature_names_", ())) > 0

    def _recommend_one(self, user: Any, k: int, exclude_seen: bool, candidates: np.ndarray | None) -> Recs:
        """A user folded in from features alone is ranked by its vector (the base class ranks a
        folded user with no known item by popularity)."""
        if isinstance(user, FoldedUser) and user.n_ratings == 0 and isinstance(user.state, dict) \
                and user.state.get("features"):
            scores = self._score_folded(user, np.arange(len(self.item_map_)))
            idx, top = top_k_row(scores, k, candidates=candidates)
            return Recs(self.item_map_.to_raw(idx), top, None)
        return super()._recommend_one(user, k, exclude_seen, candidates)

    # ------------------------------------------------------------------ scoring
    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        out = {**super()._state(), "item_trained": self._trained_mask().astype(np.uint8),
               "item_feature_factors": self.item_feature_factors_.astype(np.float32),
               "item_feature_bias": self.item_feature_bias_.astype(np.float32),
               "user_feature_factors": self.user_feature_factors_.astype(np.float32)}
        if self.item_features_ is not None:
            arrays, _ = self.item_features_.to_state("item_features")
            out.update(arrays)
        return out

    def _extra_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"user_feature_names": self.user_feature_names_.to_list()}
        if self.item_features_ is not None:
            meta["item_features"] = self.item_features_.to_state("item_features")[1]
        return meta

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        try:
            self.item_trained_ = np.asarray(arrays["item_trained"]).astype(bool)
            self.item_feature_factors_ = np.asarray(arrays["item_feature_factors"], dtype=np.float32)
            self.item_feature_bias_ = np.asarray(arrays["item_feature_bias"], dtype=np.float32)
            self.user_feature_factors_ = np.asarray(arrays["user_feature_factors"], dtype=np.float32)
            self.user_feature_names_ = IdMap.from_list(meta.get("user_feature_names", []))
            item_meta = meta.get("item_features")
            self.item_features_ = (None if item_meta is None
                                   else Features.from_state(arrays, item_meta, "item_features"))
        except KeyError as exc:
            raise ModelFileError(f"hybrid weights lack the array {exc}") from None
        n_i, k = len(self.item_map_), self.item_factors_.shape[1]
        n_if = 0 if self.item_features_ is None else self.item_features_.n_features
        if (self.item_trained_.shape != (n_i,)
                or self.item_feature_factors_.shape != (n_if, k) or self.item_feature_bias_.shape != (n_if,)
                or self.user_feature_factors_.shape != (len(self.user_feature_names_), k)
                or (self.item_features_ is not None and len(self.item_features_) != n_i)):
            raise ModelFileError("hybrid arrays do not match the vocabularies of items and features")


# ---------------------------------------------------------------------- helpers
def _normal(seed: int, shape: tuple[int, int], std: float) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)


def _parts(m: sp.csr_array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(m.indptr, np.int64), np.asarray(m.indices, np.int32), np.asarray(m.data, np.float32))


def _trained_columns(features: Features | None, vocab: IdMap) -> tuple[sp.csr_array, IdMap]:
    """The feature rows of a vocabulary's entities, keeping only the features at least one of
    them has (a feature no trained entity has would keep its random start)."""
    if features is None:
        none: Any = sp.csr_array((len(vocab), 0), dtype=np.float32)
        return none, IdMap([])
    rows = features.align(vocab)
    used = np.unique(rows.indices) if rows.nnz else np.zeros(0, np.int32)
    names = IdMap.from_sorted_unique(features.names.ids[used].copy())
    out: Any = sp.csr_array(rows[:, used]).astype(np.float32)
    out.sort_indices()
    return out, names


def _newton_pairs(a: np.ndarray, c: np.ndarray, center: np.ndarray, lam: float, steps: int) -> np.ndarray:
    """``argmin_v mean_n softplus(-(a_n . v - c_n)) + lam |v - center|^2`` by damped Newton
    steps from ``center`` (convex; float64)."""
    a = np.asarray(a, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    w = 1.0 / max(len(c), 1)
    dim = a.shape[1]

    def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
        x = a @ v - c
        return float(np.logaddexp(0.0, -x).sum() * w + lam * (v - center) @ (v - center)), x

    def derivatives(v: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
        sig = 0.5 * (1.0 + np.tanh(0.5 * x))
        grad = -a.T @ ((1.0 - sig) * w) + 2.0 * lam * (v - center)
        return grad, lambda: (a * (sig * (1.0 - sig) * w)[:, None]).T @ a + 2.0 * lam * np.eye(dim)

    return damped_newton(objective, derivatives, center, steps)
