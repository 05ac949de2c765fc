"""Bayesian factorization machine with side features, fitted by Gibbs sampling (libFM / myFM).

Model
-----
Each rating of item ``i`` by user ``u`` has the feature vector of a factorization machine
(Rendle 2010) made of *groups*: the user's one-hot id, the user's side features (one group per
family: ``age``, ``gender``, ``occupation``, ``zip`` ...), the items the user rated in training,
normalised by ``|N(u)|^-1/2`` (myFM's "implicit features"), and the same for the item (its id, its
``genre``/``decade``/``tag`` features, the users who rated it)::

    r_ui = mu + w_0 + sum_l x_l w_l + sum_{l < l'} x_l x_l' <v_l, v_l'> + eps,   eps ~ N(0, 1/alpha)

with ``mu`` the mean training rating. Every group ``g`` has its own Normal-Gamma hyperprior on
the mean and precision of its weights (``w_l ~ N(mu_g, 1/lam_g)``) and, per dimension, of its
vectors (``v_lf ~ N(mu_gf, 1/lam_gf)``); ``alpha`` and each ``lam`` have Gamma(alpha_0/2,
rate=beta_0/2) priors, each ``mu`` a N(0, 1/(gamma_0 lam)) prior, ``w_0`` a N(0, 1/reg_0) prior:
the MCMC formulation of libFM and myFM (Freudenthaler, Schmidt-Thieme & Rendle 2011). Without side
features and implicit sets this is Bayesian MF with biases; with the rated sets alone it is close
to cfrec's :class:`~cfrec.models.bayesian_mf.BayesianMF` (which is SVD++ exactly; the FM also has
interactions among a user's own features).

Sampler
-------
:mod:`cfrec.engines.gibbs_fm`: every weight and vector coordinate is drawn from its Gaussian
conditional in turn, over the two relational blocks (user side, item side), so a sweep costs
``O(ratings x k)`` plus the nonzeros of the blocks times ``k``.

Predictions and cold start
--------------------------
Per side the FM splits into an entity bias ``b`` (its weights plus the interactions inside its
own row) and an entity vector ``a`` (the sum of its columns' vectors): ``r = mu + w_0 + b_u + b_i
+ a_u . a_i``. Predictions are posterior predictive means over the kept samples; as in
BayesianMF, ``user_factors_``/``item_factors_`` hold the concatenated samples scaled by
``1/sqrt(S)`` so every factor-model path computes that average exactly. An item (or user) that
has features but no training ratings gets ``b`` and ``a`` from its feature columns plus the
expected terms of the columns it lacks (its id and rated set,
:class:`~cfrec.models.fm_terms.MissingTerms`), in every kept sample: :meth:`BayesianFM.predict`
scores it from its features, not from the global mean, and :meth:`BayesianFM.fold_in_item` adds
such items. :meth:`BayesianFM.fold_in` places a new
user from features, a few ratings (and their rated set), or both.

Time of rating
--------------
With ``user_day`` every (user, UTC day) pair of the training ratings is a column of a third,
per-rating context block (Koren's day-specific user effect, in FM form): a bias and a vector per
day a user rated on, interacting with the user's and the item's columns. People rate in
sessions, and a session's mood and the films picked for it are shared by its ratings, so a rating
whose user rated other films that day is predicted better knowing that day
(:meth:`BayesianFM.predict_at`, which the evaluation protocols call with the test ratings'
timestamps). A user's typical day (its days' terms weighted by their ratings) is folded into the
user's own terms, so predictions and rankings without a time are those of its average day.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfrec.data.features import Features
from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.engines.driver import Trainer
from cfrec.engines.gibbs import Priors
from cfrec.engines.matrix import normalized_sets
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.fm_terms import (
    DAY_SECONDS,
    MissingTerms,
    day_keys,
    row_sample_terms,
    side_design,
    split_day_keys,
    with_intercept,
)
from cfrec.models.params import hyperparameters
from cfrec.models.sampled import KeptSamples, SampledFactorRecommender
from cfrec.models.types import Prediction
from cfrec.ranking import Recs

logger = logging.getLogger(__name__)


@hyperparameters
class BayesianFM(SampledFactorRecommender):
    """Bayesian factorization machine over ids, side features and implicit rated sets (Gibbs).

    See the module docstring. Side features come from the training data
    (``Interactions.user_features``/``item_features``: a MovieLens release's own genres, decades,
    tags and demographics, or ``--item-features``/``--user-features`` files). No learning rate
    or regularisation to tune: the hyperpriors adapt every group's prior to the data.

    Parameters
    ----------
    n_factors
        Latent dimension ``k``.
    n_sweeps, burn_in, max_samples
        Gibbs sweeps in all; sweeps discarded first; at most this many post-burn-in samples kept
        (evenly thinned). Prediction cost and ``user_factors_`` width grow as ``max_samples * k``.
    user_features, item_features
        Use the data's user (item) side features when it has them.
    user_day
        Give each (user, UTC day of rating) pair of the training ratings a column of its own in a
        third, per-rating block (a bias and a vector per day a user rated on, interacting with
        the user's and the item's columns). :meth:`predict_at` (and the evaluation protocols)
        add a known (user, day)'s terms given the ratings' timestamps; without them, or on a day
        the user has no training rating, a user is scored as on its typical day.
    implicit
        Give each user the normalised set of items it rated in training (myFM's implicit features).
    implicit_items
        Give each item the normalised set of users who rated it.
    implicit_include_valid
        Also count the pairs of ``valid`` (given to ``fit``; never their ratings) in the implicit
        sets, the protocol of myFM's published ML-100K examples. It tells the model which
        held-out pairs exist, so it is off by default.
    alpha_0, beta_0, gamma_0, reg_0
        Hyperprior constants (libFM / myFM names; see the module docstring).
    init_std
        Standard deviation of the initial vectors.
    seed
        Seeds every draw (``None``: fresh entropy).

    Attributes
    ----------
    user_factors_, item_factors_
        Concatenated kept samples of the entity vectors ``[a^1 .. a^S] / sqrt(S)``.
    user_mean_factors_, item_mean_factors_
        Posterior-mean entity vectors (n, k): the embeddings (``similar_items``).
    user_features_, item_features_
        The side features the model was fitted with (all their entities, rated or not).
    sample_global_, sample_noise_precision_
        ``mu + w_0`` and ``alpha`` per kept sample.
    sample_item_bias_
        Item biases per kept sample (S, n_items), for :meth:`fold_in`.
    sample_user_prior_
        The user-id group's ``[mu_w, lam_w, mu_v (k), lam_v (k)]`` per kept sample (S, 2 + 2k).
    sample_user_params_
        ``[w_l, v_l]`` of the user side's feature columns then its implicit (rated item) columns,
        per kept sample (S, F_u + n_items, 1 + k) (the implicit part only with ``implicit``).
    sample_item_params_
        ``[w_l, v_l]`` of the item feature columns per kept sample (S, F_i, 1 + k).
    sample_user_missing_, sample_item_missing_
        Per kept sample, the map from ``[1, features]`` to the expected ``[bias, vector]`` of
        the id and rated-set columns a new user (item) lacks (S, 1 + F, 1 + k): see
        :class:`~cfrec.models.fm_terms.MissingTerms`.
    day_users_, day_days_, day_bias_, day_factors_
        With ``user_day``: each (user, day) column's user index and day (days since 1970-01-01,
        UTC), sorted by both; its posterior-mean bias (with its user interaction) and its
        concatenated scaled kept vectors (n_days, S*k), both as differences from the user's
        typical day, which the user's own ``user_bias_``/``user_factors_`` hold.
    """

    name = "bfm"

    user_features: bool = True
    item_features: bool = True
    user_day: bool = False

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        from cfrec.engines.gibbs_fm import Block, FMChain

        k = int(self.n_factors)
        n_u, n_i = train.n_users, train.n_items
        users, items = train.users.astype(np.int64), train.items.astype(np.int64)
        pu, pi = users, items  # the pairs of the implicit sets
        if self.implicit_include_valid and valid is not None and len(valid):
            pu, pi = np.concatenate([pu, valid.users]), np.concatenate([pi, valid.items])
        self.user_features_ = train.user_features if self.user_features else None
        self.item_features_ = train.item_features if self.item_features else None
        # columns: side features first (drawn first in each sweep, they take up the effects that
        # entities share before the ids can absorb them), then the one-hot ids, then the rated sets
        u_mat, u_group_ids, n_ug = side_design(self.user_features_, self.user_map_,
                                               normalized_sets(pu, pi, n_u, n_i) if self.implicit else None)
        i_mat, i_group_ids, n_ig = side_design(self.item_features_, self.item_map_,
                                               normalized_sets(pi, pu, n_i, n_u) if self.implicit_items else None)
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        init_rng = np.random.default_rng(seeds[0])
        y = train.ratings.astype(np.float64) - self.global_mean_
        ub = Block(u_mat, u_group_ids, n_ug, users, items, k, float(self.init_std), init_rng)
        ib = Block(i_mat, i_group_ids, n_ig, items, users, k, float(self.init_std), init_rng)
        priors = Priors(float(self.alpha_0), float(self.beta_0), float(self.gamma_0), float(self.reg_0))
        context = None
        if self.user_day:
            keys, day_of = np.unique(day_keys(users, train.timestamps), return_inverse=True)
            self.day_users_, self.day_days_ = split_day_keys(keys)
            context = Block(sp.csr_array(sp.identity(len(keys), dtype=np.float64)), np.zeros(len(keys), np.int64),
                            1, day_of.astype(np.int64), items, k, float(self.init_std), init_rng)
        chain = FMChain(ub, ib, y, priors, np.random.default_rng(seeds[1]), context=context)
        self._run(chain, valid, on_epoch)

    def _run(self, chain: Any, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        ub, ib = chain.users, chain.items
        k, n_sweeps = chain.k, int(self.n_sweeps)
        n_u = ub.shape[0]
        f_u = 0 if self.user_features_ is None else self.user_features_.n_features
        f_i = 0 if self.item_features_ is None else self.item_features_.n_features
        u_keep = np.r_[0:f_u, f_u + n_u:ub.shape[1]]  # user feature columns, then the implicit item columns
        i_keep = slice(0, f_i)
        samples = KeptSamples(self, n_u, ib.shape[0], valid)
        self.sample_user_params_ = np.empty((samples.n, ub.shape[1] - n_u, 1 + k), dtype=np.float32)
        self.sample_item_params_ = np.empty((samples.n, f_i, 1 + k), dtype=np.float32)
        # what a new user (item) lacks: the columns after its features, its id and rated set
        u_missing = MissingTerms(ub.mat[:, f_u:], ub.mat[:, :f_u] if f_u else None, ub.cnt)
        i_missing = MissingTerms(ib.mat[:, f_i:], ib.mat[:, :f_i] if f_i else None, ib.cnt)
        self.sample_user_missing_ = np.empty((samples.n, 1 + f_u, 1 + k), dtype=np.float32)
        self.sample_item_missing_ = np.empty((samples.n, 1 + f_i, 1 + k), dtype=np.float32)
        cb = chain.context
        day_samples = np.empty((0 if cb is None else cb.shape[0], samples.n * k), dtype=np.float32)
        bd_sum = np.zeros(len(day_samples))
        if valid is not None:
            v_u, v_i = valid.users.astype(np.int64), valid.items.astype(np.int64)
            v_d = np.full(len(v_u), -1, dtype=np.int64) if cb is None else self._day_index(v_u, valid.timestamps)
            v_has_d = np.flatnonzero(v_d >= 0)
        kept_bias: tuple[np.ndarray, np.ndarray] | None = None

        def valid_pred() -> np.ndarray:
            bu, bi = kept_bias or (ub.bias(), ib.bias())
            pred = (self.global_mean_ + chain.w0 + bu[v_u] + bi[v_i]
                    + np.einsum("kn,kn->n", ub.a[:, v_u], ib.a[:, v_i]))
            if cb is not None and len(v_has_d):
                j, d = v_has_d, v_d[v_has_d]
                pred[j] += cb.bias()[d] + np.einsum("kn,kn->n", cb.a[:, d], ub.a[:, v_u[j]] + ib.a[:, v_i[j]])
            return pred

        def sweep(sweep: int) -> dict[str, Any]:
            nonlocal kept_bias
            chain.sweep()
            slot = samples.slot(sweep)
            kept_bias = None
            if slot is not None:
                kept_bias = ub.bias(), ib.bias()
                samples.keep(slot, ub.a, ib.a, *kept_bias, chain.w0, chain.alpha,
                             np.concatenate([[ub.mu_w[0], ub.lam_w[0]], ub.mu_v[0], ub.lam_v[0]]))
                self.sample_user_params_[slot] = np.column_stack([ub.w[u_keep], ub.v[:, u_keep].T])
                self.sample_item_params_[slot] = np.column_stack([ib.w[i_keep], ib.v[:, i_keep].T])
                self.sample_user_missing_[slot] = u_missing.fit(ub.w[f_u:], ub.v[:, f_u:].T)
                self.sample_item_missing_[slot] = i_missing.fit(ib.w[f_i:], ib.v[:, f_i:].T)
                if cb is not None:
                    day_samples[:, slot * k:(slot + 1) * k] = cb.a.T
                    bd_sum[:] += cb.bias()
            record = samples.record(sweep, float(chain.e @ chain.e), len(chain.e), chain.alpha)
            if valid is not None:
                record["valid_rmse"] = samples.validate(sweep, slot, valid_pred)
            return record

        self.history_.extend(Trainer("BayesianFM", n_sweeps, on_epoch).run(sweep))
        if cb is not None:  # every user's typical day goes into its own terms (predictions without time)
            samples.bu_sum += self._typical_day(cb.cnt, bd_sum / samples.n, samples.user_samples, day_samples) * samples.n
        samples.finish()
        if cb is not None:
            day_samples *= np.float32(1.0 / math.sqrt(samples.n))
            self.day_factors_ = day_samples

    def _typical_day(self, counts: np.ndarray, day_bias: np.ndarray, user_samples: np.ndarray,
                     day_samples: np.ndarray) -> np.ndarray:
        """Move each user's typical day (the mean of its days' terms, weighted by their training
        ratings) into its own vectors; leave each day the difference from it (``day_bias_``,
        ``day_samples`` in place). Returns the users' typical-day bias (to add to theirs).

        A day ``d`` of user ``u`` adds ``b_d + a_u . a_d + a_i . a_d`` to a rating (per sample):
        the typical day's ``a_i . mean(a_d)`` becomes part of the user's vector, the rest part of
        its bias, so predictions without a time are those of the user's average rating day."""
        n_u, s_n = user_samples.shape[0], day_samples.shape[1] // int(self.n_factors)
        du = self.day_users_.astype(np.int64)
        own = day_bias + np.einsum("ij,ij->i", user_samples[du], day_samples) / s_n  # b_d + a_u . a_d
        weight = counts / np.maximum(np.bincount(du, counts, n_u), 1.0)[du]
        typical_bias = np.bincount(du, weight * own, n_u)
        typical_vec = np.zeros_like(user_samples)
        np.add.at(typical_vec, du, weight[:, None] * day_samples)
        self.day_bias_ = (own - typical_bias[du]).astype(np.float32)
        day_samples -= typical_vec[du]
        user_samples += typical_vec
        return typical_bias

    # ------------------------------------------------------------------ scoring
    def _new_sample_terms(self, rows: sp.csr_array, user_side: bool) -> tuple[np.ndarray, np.ndarray]:
        """Bias (m, S) and vector (m, S, k) per kept sample of new users (or items) whose feature
        rows are ``rows`` (m, F): the terms of their feature columns plus the expected terms of
        the columns they lack (:class:`~cfrec.models.fm_terms.MissingTerms`)."""
        params = self.sample_user_params_[:, :rows.shape[1]] if user_side else self.sample_item_params_
        missing = self.sample_user_missing_ if user_side else self.sample_item_missing_
        bias, a = row_sample_terms(params, rows)
        s_n, k = a.shape[1], a.shape[2]
        x1 = with_intercept(rows, rows.shape[0])
        rest = np.asarray(x1 @ missing.transpose(1, 0, 2).reshape(x1.shape[1], -1).astype(np.float64))
        rest = rest.reshape(len(bias), s_n, 1 + k)
        bias = bias + rest[:, :, 0] + np.einsum("msk,msk->ms", a, rest[:, :, 1:])
        return bias, a + rest[:, :, 1:]

    def _cold_side(self, raw: np.ndarray, idx: np.ndarray, user_side: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bias, scaled vectors and a "from features" mask for raw ids of one side: known ids their
        learned terms, unknown ids with features their terms from features (:meth:`_new_sample_terms`),
        others zeros."""
        s_n, k = len(self.sample_global_), int(self.n_factors)
        bias = np.zeros(len(idx))
        vec = np.zeros((len(idx), s_n * k), dtype=np.float32)
        known = idx >= 0
        bias[known] = (self.user_bias_ if user_side else self.item_bias_)[idx[known]]
        vec[known] = (self.user_factors_ if user_side else self.item_factors_)[idx[known]]
        feats = self.user_features_ if user_side else self.item_features_
        from_features = np.zeros(len(idx), dtype=bool)
        if feats is not None and (~known).any():
            miss = np.flatnonzero(~known)
            rows = feats.rows(raw[miss])
            has = np.diff(rows.indptr) > 0
            if has.any():
                b, a = self._new_sample_terms(rows[np.flatnonzero(has)], user_side)
                bias[miss[has]] = b.mean(axis=1)
                vec[miss[has]] = self._scaled(a)
                from_features[miss[has]] = True
        return bias, vec, from_features

    @property
    def uses_timestamps(self) -> bool:
        """Whether predictions improve with the ratings' timestamps (``user_day``)."""
        return bool(self.user_day)

    def _day_index(self, u_idx: np.ndarray, timestamps: Any) -> np.ndarray:
        """The (user, day) column of each (user index, timestamp) pair, -1 where the model has
        none (an unknown user, a day without training ratings, or no ``user_day``)."""
        out = np.full(len(u_idx), -1, dtype=np.int64)
        if not self.user_day or not len(self.day_users_):
            return out
        ts = np.asarray(timestamps)
        if ts.shape != (len(u_idx),) and ts.ndim:
            raise ValueError(f"timestamps ({ts.shape[0]}) and the pairs ({len(u_idx)}) differ in length")
        ts = np.broadcast_to(ts, (len(u_idx),))
        if not np.issubdtype(ts.dtype, np.integer):
            raise ValueError(f"timestamps must be integer Unix seconds, got dtype {ts.dtype}")
        known = u_idx >= 0
        keys = day_keys(np.where(known, u_idx, 0), ts)
        table = day_keys(self.day_users_, self.day_days_ * DAY_SECONDS)
        pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        hit = known & (table[pos] == keys)
        out[hit] = pos[hit]
        return out

    def predict_at(self, users: Any, items: Any, timestamps: Any) -> Prediction:
        """:meth:`predict_detailed` of pairs rated at ``timestamps`` (Unix seconds, one per pair
        or one for all): a model fitted with ``user_day`` adds the (user, day) terms where that
        user rated on that day in training; otherwise the same as :meth:`predict_detailed`."""
        pred = self.predict_detailed(users, items)
        if not self.user_day or isinstance(users, FoldedUser):
            return pred
        items_arr = np.atleast_1d(np.asarray(items))
        users_arr = np.atleast_1d(np.asarray(users))
        if users_arr.shape[0] != items_arr.shape[0]:
            users_arr = np.full(len(items_arr), users_arr.reshape(-1)[0], dtype=users_arr.dtype)
        u_idx = self.user_map_.to_index(users_arr, missing="-1").astype(np.int64)
        i_idx = self.item_map_.to_index(items_arr, missing="-1").astype(np.int64)
        d_idx = self._day_index(u_idx, timestamps)
        hit = np.flatnonzero((d_idx >= 0) & (i_idx >= 0))
        if not len(hit):
            return pred
        u, i, d = u_idx[hit], i_idx[hit], d_idx[hit]
        score = (self._score_pairs(u, i).astype(np.float64) + self.day_bias_[d]
                 + np.einsum("ij,ij->i", self.day_factors_[d], self.item_factors_[i]))
        out = pred.ratings.copy()
        out[hit] = self._clip(np.asarray(score, dtype=np.float32))
        return Prediction(out, pred.fallback)

    def predict_detailed(self, users: Any, items: Any) -> Prediction:
        """:meth:`~cfrec.models.base.Recommender.predict_detailed`, except that a user or item
        unknown to the training ratings but present in the side features is scored from its
        features (its fallback code still says the id had no ratings)."""
        pred = super().predict_detailed(users, items)
        if self.user_features_ is None and self.item_features_ is None:
            return pred
        items_arr = np.atleast_1d(np.asarray(items))
        i_idx = self.item_map_.to_index(items_arr, missing="-1").astype(np.int64)
        if isinstance(users, FoldedUser):
            if not self._personal(users) or self.item_features_ is None:
                return pred
            bi, vi, cold_i = self._cold_side(items_arr, i_idx, user_side=False)
            if not cold_i.any():
                return pred
            score = self.global_mean_ + users.bias + bi[cold_i] + vi[cold_i] @ users.factors
            out = pred.ratings.copy()
            out[cold_i] = self._clip(np.asarray(score, dtype=np.float32))
            return Prediction(out, pred.fallback)
        users_arr = np.atleast_1d(np.asarray(users))
        if users_arr.shape[0] != items_arr.shape[0]:
            users_arr = np.full(len(items_arr), users_arr.reshape(-1)[0], dtype=users_arr.dtype)
        u_idx = self.user_map_.to_index(users_arr, missing="-1").astype(np.int64)
        todo = np.flatnonzero((u_idx < 0) | (i_idx < 0))
        if not len(todo):
            return pred
        bu, vu, cold_u = self._cold_side(users_arr[todo], u_idx[todo], user_side=True)
        bi, vi, cold_i = self._cold_side(items_arr[todo], i_idx[todo], user_side=False)
        hit = cold_u | cold_i
        if not hit.any():
            return pred
        score = self.global_mean_ + bu[hit] + bi[hit] + np.einsum("ij,ij->i", vu[hit], vi[hit])
        out = pred.ratings.copy()
        out[todo[hit]] = self._clip(np.asarray(score, dtype=np.float32))
        return Prediction(out, pred.fallback)

    # ------------------------------------------------------------------ cold start
    #: New items come from their features (a model fitted with item features).
    takes_new_items = True

    def fold_in_item(self, item: Any, features: Any = None, *, users: Any = None, ratings: Any = None) -> BayesianFM:
        """Add items that arrived after training, from their side features alone: each kept
        sample's item terms are those of its feature columns (exactly what :meth:`predict` gives
        an item that is in the features but had no rating), so ``recommend``, ``predict`` and
        ``similar_items`` then take them like training items. ``item`` is a raw id with
        ``features`` (``{name: value}``, names, or a :class:`Features` holding its row), or a
        :class:`Features` of several items. Features the model never saw are ignored (logged);
        an item already in the vocabulary is an error. Ratings of a new item need a refit.
        Returns the model (changed in place: the vocabulary and item arrays grow)."""
        self._check_fitted()
        if self.item_features_ is None:
            raise CfrecError("this BayesianFM was fitted without item features, so it cannot build an "
                             "item from features; fit it on data with item features (--item-features)")
        if users is not None or ratings is not None:
            raise CfrecError("BayesianFM.fold_in_item builds a new item from its features alone; "
                             "to learn from its ratings, refit with them")
        try:
            new = item if isinstance(item, Features) else Features.of_one(item, features, owner="item")
        except ValueError as exc:
            raise CfrecError(str(exc)) from None
        if isinstance(item, Features) and features is not None:
            raise CfrecError("fold_in_item(Features) takes the items' features from it; give no features")
        rows, unknown = new.in_columns(self.item_features_.names)
        if unknown:
            logger.warning("item features the model does not know were ignored: %s", ", ".join(unknown[:10]))
        ids = np.asarray(new.ids.ids)
        known = self.item_map_.to_index(ids, missing="-1")
        if (known >= 0).any():
            raise CfrecError(f"item {ids[known >= 0][0]!r} is already in the model; fold_in_item adds new items")
        bias_s, vec_s = self._new_sample_terms(rows, user_side=False)  # (m, S), (m, S, k)
        vec = self._scaled(vec_s)
        s_n, k = len(self.sample_global_), int(self.n_factors)
        old = self.item_map_
        merged = IdMap(np.concatenate([old.ids, ids.astype(old.ids.dtype, copy=False)]))
        old_pos = merged.to_index(old.ids).astype(np.int64)
        new_pos = merged.to_index(ids).astype(np.int64)
        n = len(merged)

        def grow(arr: np.ndarray, new_rows: np.ndarray, axis: int = 0) -> np.ndarray:
            shape = list(arr.shape)
            shape[axis] = n
            out = np.zeros(shape, dtype=arr.dtype)
            np.moveaxis(out, axis, 0)[old_pos] = np.moveaxis(arr, axis, 0)
            np.moveaxis(out, axis, 0)[new_pos] = np.moveaxis(new_rows.astype(arr.dtype), axis, 0)
            return out

        self.item_bias_ = grow(self.item_bias_, bias_s.mean(axis=1))
        self.item_factors_ = grow(self.item_factors_, vec)
        self.item_mean_factors_ = grow(self.item_mean_factors_, vec_s.mean(axis=1))
        self.sample_item_bias_ = grow(self.sample_item_bias_, bias_s.T, axis=1)
        if self.implicit:  # a new item is in nobody's rated set: a zero implicit column
            f_u = 0 if self.user_features_ is None else self.user_features_.n_features
            head, tail = self.sample_user_params_[:, :f_u], self.sample_user_params_[:, f_u:]
            tail = grow(tail, np.zeros((s_n, len(ids), 1 + k), tail.dtype), axis=1)
            self.sample_user_params_ = np.concatenate([head, tail], axis=1)
        feats = self.item_features_
        src = np.empty(len(feats.ids) + len(ids), dtype=np.int64)
        all_ids = IdMap(np.concatenate([feats.ids.ids, ids.astype(feats.ids.ids.dtype, copy=False)]))
        src[all_ids.to_index(feats.ids.ids)] = np.arange(len(feats.ids))
        src[all_ids.to_index(ids)] = len(feats.ids) + np.arange(len(ids))
        stacked = sp.csr_array(sp.vstack([feats.matrix, rows], format="csr"))
        self.item_features_ = Features(all_ids, feats.names, sp.csr_array(stacked[src]), owner="item",
                                       source=feats.source)
        seen = self.seen_
        remap = old_pos.astype(np.int32)
        self.seen_ = sp.csr_array((seen.data, remap[seen.indices] if seen.nnz else seen.indices, seen.indptr),
                                  shape=(seen.shape[0], n))
        if self.item_info_ is not None:
            self.item_info_ = self.item_info_.reindex(merged.ids)
        self.item_map_ = merged
        return self

    def fold_in(self, items: Any = (), ratings: Any = None, *, reg: float | None = None,
                features: Any = None) -> FoldedUser:
        """A new user from side features (``{name: value}``, feature names, or a
        :class:`Features` holding its row), a few ratings, or both, without retraining.

        The user's row is that of a training user: its features, a new id column and, with
        ``implicit``, the normalised set of the given known items. With ratings, per kept sample
        the id column's ``[w, v]`` is the mean of its conditional posterior given that sample (a
        ridge regression with the sample's noise precision and the user-id group's sampled prior;
        ``reg`` replaces the prior precisions by ``reg * alpha^s``); the user's bias and vector
        follow as in training, and it scores as an average over the same samples. With features
        alone the user is what :meth:`predict` makes of a user that has features and no ratings:
        its feature terms plus the expected terms of the columns it lacks
        (:class:`~cfrec.models.fm_terms.MissingTerms`), and ``recommend`` ranks by them instead of
        giving the cold-start list. Features the model never saw are ignored (logged, and listed in
        the result's ``state``). Pure: the model does not change.
        """
        self._check_fitted()
        items = () if items is None else items
        given = self._fold_in_input(items, () if ratings is None and not np.size(items) else ratings)
        rows, unknown = self._user_feature_row(features)
        state = None if features is None else {"features": rows.nnz > 0, "unknown_features": unknown}
        return self._folded(given, reg, rows, state)

    @property
    def takes_user_features(self) -> bool:
        feats = getattr(self, "user_features_", None)
        return feats is not None and feats.n_features > 0

    def _personal(self, user: FoldedUser) -> bool:
        """A user folded in from features alone is scored from them (not the cold-start list)."""
        return user.n_ratings > 0 or (isinstance(user.state, dict) and bool(user.state.get("features")))

    def _recommend_one(self, user: Any, k: int, exclude_seen: bool, candidates: np.ndarray | None) -> Recs:
        """:meth:`~cfrec.models.base.Recommender.recommend` for one user; an id unknown to the
        training ratings that the user features know is ranked from its features."""
        feats = self.user_features_
        if not isinstance(user, FoldedUser) and feats is not None and self.user_map_.index_of(user) < 0:
            row = sp.csr_array(feats.rows([user]).astype(np.float64))
            if row.nnz:
                user = self._folded(self._fold_in_input((), ()), None, row, {"features": True, "unknown_features": []})
        return super()._recommend_one(user, k, exclude_seen, candidates)

    def _feature_users(self, raw: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
        """Ids of a batch unknown to the ratings that the user features know are ranked from their
        features, as :meth:`_recommend_one` ranks one (all of them in one product per sample)."""
        feats = self.user_features_
        if feats is None:
            return None
        rows = feats.rows(raw)
        at = np.flatnonzero(np.diff(rows.indptr) > 0)
        if not len(at):
            return None
        bias, a = self._new_sample_terms(sp.csr_array(rows[at].astype(np.float64)), user_side=True)
        user_bias, vec = bias.mean(axis=1), self._scaled(a)

        def score_rows(users: np.ndarray) -> np.ndarray:
            base = self.global_mean_ + user_bias[users][:, None] + self.item_bias_[None, :]
            return np.asarray(base + vec[users] @ self.item_factors_.T, dtype=np.float32)

        return at, score_rows

    def _user_feature_row(self, features: Any) -> tuple[sp.csr_array, list[str]]:
        """A new user's row over the model's user feature columns (1, F_u) and the feature
        names the model does not know."""
        f_u = 0 if self.user_features_ is None else self.user_features_.n_features
        if features is None:
            return sp.csr_array((1, f_u), dtype=np.float64), []
        if self.user_features_ is None:
            raise CfrecError("this BayesianFM was fitted without user features, so it cannot place a user "
                             "from features; fit it on data with user features (--user-features)")
        try:
            given = Features.of_one("new user", features, owner="user")
        except ValueError as exc:
            raise CfrecError(str(exc)) from None
        rows, unknown = given.in_columns(self.user_features_.names)
        if unknown:
            logger.warning("user features the model does not know were ignored: %s", ", ".join(unknown[:10]))
        return sp.csr_array(rows.astype(np.float64)), unknown

    def _fold_in_samples(self, idx: np.ndarray, r: np.ndarray, reg: float | None,
                         features: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Bias (S,) and vector (S, k) per kept sample of a new user with feature row
        ``features`` (1, F_u) and ratings ``r`` of the known items ``idx`` (see :meth:`fold_in`)."""
        row = features if features is not None else self._user_feature_row(None)[0]
        if not len(idx):
            if not row.nnz:
                return None
            bias, vec = self._new_sample_terms(row, user_side=True)
            return bias[0], vec[0]
        # the row without its id column: features, then the rated set (the implicit columns)
        n_i = len(self.item_map_)
        if self.implicit:
            rated = sp.csr_array((np.full(len(idx), 1.0 / math.sqrt(len(idx))), (np.zeros(len(idx), np.int64), idx)),
                                 shape=(1, n_i))
            row = sp.csr_array(sp.hstack([row, rated], format="csr"))
        rest_b, rest_a = (part[0] for part in row_sample_terms(self.sample_user_params_, row))  # (S,), (S, k)
        c = self._item_samples(idx)  # (S, n, k)
        h = np.concatenate([np.ones((len(rest_b), len(idx), 1)), c + rest_a[:, None, :]], axis=2)  # (S, n, 1+k)
        y = (r[None, :] - self.sample_global_[:, None].astype(np.float64) - rest_b[:, None]
             - self.sample_item_bias_[:, idx] - np.einsum("snk,sk->sn", c, rest_a))
        theta = self._posterior_solve(h, y, reg)
        return rest_b + theta[:, 0] + (theta[:, 1:] * rest_a).sum(axis=1), rest_a + theta[:, 1:]

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        state.update({"sample_user_params": self.sample_user_params_.astype(np.float32),
                      "sample_item_params": self.sample_item_params_.astype(np.float32),
                      "sample_user_missing": self.sample_user_missing_.astype(np.float32),
                      "sample_item_missing": self.sample_item_missing_.astype(np.float32)})
        if self.user_day:
            state.update({"day_users": self.day_users_.astype(np.int32),
                          "day_days": self.day_days_.astype(np.int64),
                          "day_bias": self.day_bias_.astype(np.float32),
                          "day_factors": self.day_factors_.astype(np.float32)})
        for prefix, feats in (("user_features", self.user_features_), ("item_features", self.item_features_)):
            if feats is not None:
                state.update(feats.to_state(prefix)[0])
        return state

    def _extra_meta(self) -> dict[str, Any]:
        meta = super()._extra_meta()
        for prefix, feats in (("user_features", self.user_features_), ("item_features", self.item_features_)):
            meta[prefix] = None if feats is None else feats.to_state(prefix)[1]
        return meta

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        try:
            self.sample_user_params_ = arrays["sample_user_params"]
            self.sample_item_params_ = arrays["sample_item_params"]
            self.sample_user_missing_ = arrays["sample_user_missing"]
            self.sample_item_missing_ = arrays["sample_item_missing"]
            if self.user_day:
                self.day_users_, self.day_days_ = arrays["day_users"], arrays["day_days"]
                self.day_bias_, self.day_factors_ = arrays["day_bias"], arrays["day_factors"]
            feats: dict[str, Features | None] = {}
            for prefix in ("user_features", "item_features"):
                info = meta.get(prefix)
                feats[prefix] = None if info is None else Features.from_state(arrays, info, prefix)
        except KeyError as exc:
            raise ModelFileError(f"BayesianFM weights lack the array {exc.args[0]!r}") from None
        self.user_features_, self.item_features_ = feats["user_features"], feats["item_features"]
        n_i, k, s = len(self.item_map_), int(self.n_factors), len(self.sample_global_)
        f_u = 0 if self.user_features_ is None else self.user_features_.n_features
        f_i = 0 if self.item_features_ is None else self.item_features_.n_features
        shapes: dict[str, tuple[Any, tuple[int, ...]]] = {
            "sample_user_params": (self.sample_user_params_.shape, (s, f_u + (n_i if self.implicit else 0), 1 + k)),
            "sample_item_params": (self.sample_item_params_.shape, (s, f_i, 1 + k)),
            "sample_user_missing": (self.sample_user_missing_.shape, (s, 1 + f_u, 1 + k)),
            "sample_item_missing": (self.sample_item_missing_.shape, (s, 1 + f_i, 1 + k)),
        }
        if self.user_day:
            n_d = len(self.day_users_)
            shapes.update({"day_days": (self.day_days_.shape, (n_d,)), "day_bias": (self.day_bias_.shape, (n_d,)),
                           "day_factors": (self.day_factors_.shape, (n_d, s * k))})
        self._check_shapes(shapes)
