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
has features but no training ratings gets ``b`` and ``a`` from its feature columns alone, in
every kept sample: :meth:`BayesianFM.predict` scores it from its features, not from the global
mean. :meth:`BayesianFM.fold_in` places a new user from a few ratings (and their rated set).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfrec.data.features import Features
from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.engines.driver import Trainer
from cfrec.engines.gibbs import Priors, kept_sweeps
from cfrec.engines.matrix import normalized_sets
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.factor import FactorRecommender, RidgeFoldIn
from cfrec.models.params import hyperparameters, invalid, param
from cfrec.models.types import Prediction

logger = logging.getLogger(__name__)


def feature_groups(features: Features | None) -> tuple[np.ndarray, list[str]]:
    """Each feature column's family index and the family names (the text before ``=``)."""
    if features is None:
        return np.zeros(0, dtype=np.int64), []
    families = [str(n).split("=", 1)[0] for n in features.names.to_list()]
    names = sorted(set(families))
    lookup = {name: j for j, name in enumerate(names)}
    return np.array([lookup[f] for f in families], dtype=np.int64), names


@hyperparameters
class BayesianFM(FactorRecommender):
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
    """

    name = "bfm"

    n_factors: int = param(default=10, ge=1)
    n_sweeps: int = param(default=200, ge=1)
    burn_in: int = param(default=25, ge=0)
    max_samples: int = param(default=100, ge=1)
    user_features: bool = True
    item_features: bool = True
    implicit: bool = True
    implicit_items: bool = True
    implicit_include_valid: bool = False
    alpha_0: float = param(default=1.0, gt=0)
    beta_0: float = param(default=1.0, gt=0)
    gamma_0: float = param(default=1.0, gt=0)
    reg_0: float = param(default=1.0, ge=0)
    init_std: float = param(default=0.1, ge=0)
    seed: int | None = param(default=0, ge=0)

    def _check_combination(self) -> None:
        if self.burn_in >= self.n_sweeps:
            raise invalid(self, "burn_in", f"< n_sweeps ({self.n_sweeps})")
        if self.implicit_include_valid and not (self.implicit or self.implicit_items):
            raise invalid(self, "implicit_include_valid", "False unless implicit or implicit_items is True "
                          "(it adds the pairs in valid to the implicit sets)")

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
        u_groups, _ = feature_groups(self.user_features_)
        i_groups, _ = feature_groups(self.item_features_)
        # columns: side features first (drawn first in each sweep, they take up the effects that
        # entities share before the ids can absorb them), then the one-hot ids, then the rated sets
        u_parts: list[Any] = []
        u_group_ids: list[np.ndarray] = []
        if self.user_features_ is not None:
            u_parts.append(self.user_features_.align(self.user_map_))
            u_group_ids.append(1 + u_groups)
        u_parts.append(sp.identity(n_u, dtype=np.float64, format="csr"))
        u_group_ids.append(np.zeros(n_u, dtype=np.int64))
        n_ug = 1 + (int(u_groups.max()) + 1 if len(u_groups) else 0)
        if self.implicit:
            u_parts.append(normalized_sets(pu, pi, n_u, n_i))
            u_group_ids.append(np.full(n_i, n_ug, dtype=np.int64))
            n_ug += 1
        i_parts: list[Any] = []
        i_group_ids: list[np.ndarray] = []
        if self.item_features_ is not None:
            i_parts.append(self.item_features_.align(self.item_map_))
            i_group_ids.append(1 + i_groups)
        i_parts.append(sp.identity(n_i, dtype=np.float64, format="csr"))
        i_group_ids.append(np.zeros(n_i, dtype=np.int64))
        n_ig = 1 + (int(i_groups.max()) + 1 if len(i_groups) else 0)
        if self.implicit_items:
            i_parts.append(normalized_sets(pi, pu, n_i, n_u))
            i_group_ids.append(np.full(n_u, n_ig, dtype=np.int64))
            n_ig += 1
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        init_rng = np.random.default_rng(seeds[0])
        y = train.ratings.astype(np.float64) - self.global_mean_
        ub = Block(sp.hstack(u_parts, format="csr"), np.concatenate(u_group_ids), n_ug, users, items, k,
                   float(self.init_std), init_rng)
        ib = Block(sp.hstack(i_parts, format="csr"), np.concatenate(i_group_ids), n_ig, items, users, k,
                   float(self.init_std), init_rng)
        priors = Priors(float(self.alpha_0), float(self.beta_0), float(self.gamma_0), float(self.reg_0))
        chain = FMChain(ub, ib, y, priors, np.random.default_rng(seeds[1]))
        self._run(chain, valid, on_epoch)

    def _run(self, chain: Any, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        ub, ib = chain.users, chain.items
        k, n_sweeps = chain.k, int(self.n_sweeps)
        n_u, n_i = ub.shape[0], ib.shape[0]
        f_u = 0 if self.user_features_ is None else self.user_features_.n_features
        f_i = 0 if self.item_features_ is None else self.item_features_.n_features
        u_keep = np.r_[0:f_u, f_u + n_u:ub.shape[1]]  # user feature columns, then the implicit item columns
        i_keep = slice(0, f_i)
        kept = kept_sweeps(n_sweeps, int(self.burn_in), int(self.max_samples))
        slot_of = {int(s): j for j, s in enumerate(kept)}
        s_n = len(kept)
        user_samples = np.empty((n_u, s_n * k), dtype=np.float32)
        item_samples = np.empty((n_i, s_n * k), dtype=np.float32)
        bu_sum, bi_sum = np.zeros(n_u), np.zeros(n_i)
        self.sample_global_ = np.empty(s_n, dtype=np.float32)
        self.sample_noise_precision_ = np.empty(s_n, dtype=np.float32)
        self.sample_item_bias_ = np.empty((s_n, n_i), dtype=np.float32)
        self.sample_user_prior_ = np.empty((s_n, 2 + 2 * k), dtype=np.float32)
        self.sample_user_params_ = np.empty((s_n, ub.shape[1] - n_u, 1 + k), dtype=np.float32)
        self.sample_item_params_ = np.empty((s_n, f_i, 1 + k), dtype=np.float32)
        lo, hi = self.rating_scale_
        v_sum = None
        if valid is not None:
            v_u, v_i = valid.users.astype(np.int64), valid.items.astype(np.int64)
            v_r = valid.ratings.astype(np.float64)
            v_sum = np.zeros(len(v_r))
        v_rmse = math.nan
        n = len(chain.e)

        def sweep(sweep: int) -> dict[str, Any]:
            nonlocal v_rmse
            chain.sweep()
            slot = slot_of.get(sweep)
            bu = bi = None
            if slot is not None:
                cols = slice(slot * k, (slot + 1) * k)
                user_samples[:, cols] = ub.a.T
                item_samples[:, cols] = ib.a.T
                bu, bi = ub.bias(), ib.bias()
                bu_sum[:] += bu
                bi_sum[:] += bi
                self.sample_global_[slot] = self.global_mean_ + chain.w0
                self.sample_noise_precision_[slot] = chain.alpha
                self.sample_item_bias_[slot] = bi
                self.sample_user_prior_[slot] = np.concatenate(
                    [[ub.mu_w[0], ub.lam_w[0]], ub.mu_v[0], ub.lam_v[0]])
                self.sample_user_params_[slot] = np.column_stack([ub.w[u_keep], ub.v[:, u_keep].T])
                self.sample_item_params_[slot] = np.column_stack([ib.w[i_keep], ib.v[:, i_keep].T])
            sse = float(chain.e @ chain.e)
            record: dict[str, Any] = {"train_loss": sse / n, "train_rmse": math.sqrt(sse / n),
                                      "noise_std": 1.0 / math.sqrt(chain.alpha),
                                      "kept_samples": int(np.searchsorted(kept, sweep, side="right"))}
            if v_sum is not None:
                if slot is not None or sweep <= kept[0]:
                    bu_now = ub.bias() if bu is None else bu
                    bi_now = ib.bias() if bi is None else bi
                    pred = (self.global_mean_ + chain.w0 + bu_now[v_u] + bi_now[v_i]
                            + np.einsum("kn,kn->n", ub.a[:, v_u], ib.a[:, v_i]))
                    if slot is not None:
                        v_sum[:] += pred
                        pred = v_sum / (slot + 1)
                    v_rmse = float(np.sqrt(np.mean((np.clip(pred, lo, hi) - v_r) ** 2)))
                record["valid_rmse"] = v_rmse
            return record

        self.history_.extend(Trainer("BayesianFM", n_sweeps, on_epoch).run(sweep))
        self.user_mean_factors_ = user_samples.reshape(n_u, s_n, k).mean(axis=1)
        self.item_mean_factors_ = item_samples.reshape(n_i, s_n, k).mean(axis=1)
        scale = np.float32(1.0 / math.sqrt(s_n))
        user_samples *= scale
        item_samples *= scale
        self.user_factors_, self.item_factors_ = user_samples, item_samples
        self.user_bias_ = (bu_sum / s_n).astype(np.float32)
        self.item_bias_ = (bi_sum / s_n).astype(np.float32)
        self.global_mean_ = float(np.mean(self.sample_global_, dtype=np.float64))

    # ------------------------------------------------------------------ embeddings and scoring
    def item_embeddings(self) -> np.ndarray:
        """Posterior-mean item vectors (n_items, n_factors)."""
        self._check_fitted()
        return self.item_mean_factors_

    def user_embeddings(self) -> np.ndarray:
        """Posterior-mean user vectors (n_users, n_factors)."""
        self._check_fitted()
        return self.user_mean_factors_

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        score = self.global_mean_ + user.bias + self.item_bias_[items]
        if user.factors.size:
            score = score + self.item_factors_[items] @ user.factors
        return np.asarray(score, dtype=np.float32)

    def _feature_terms(self, params: np.ndarray, rows: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
        """Posterior-mean bias (m,) and concatenated scaled vectors (m, S*k) of entities whose
        design rows are ``rows`` (m, cols) under the kept samples' ``params`` (S, cols, 1 + k)."""
        bias, vec = self._feature_sample_terms(params, rows)
        return bias.mean(axis=1), vec

    def _feature_sample_terms(self, params: np.ndarray, rows: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_feature_terms` with the bias of every kept sample (m, S)."""
        s_n, n_cols, kk = params.shape
        k = kk - 1
        m = sp.csr_array(rows).astype(np.float64)
        w = params[:, :, 0].T.astype(np.float64)  # (cols, S)
        v = params[:, :, 1:].transpose(1, 0, 2).reshape(n_cols, s_n * k).astype(np.float64)
        a = np.asarray(m @ v)  # (m, S*k)
        sq = np.asarray(m.multiply(m) @ (v * v))
        inner = 0.5 * (a * a - sq).reshape(len(a), s_n, k).sum(axis=2)  # (m, S)
        return np.asarray(m @ w) + inner, (a / math.sqrt(s_n)).astype(np.float32)

    def _cold_side(self, raw: np.ndarray, idx: np.ndarray, user_side: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bias, scaled vectors and a "from features" mask for raw ids of one side: known ids their
        learned terms, unknown ids with features their feature terms, others zeros."""
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
                params = (self.sample_user_params_[:, :feats.n_features] if user_side
                          else self.sample_item_params_)
                b, a = self._feature_terms(params, rows[np.flatnonzero(has)])
                bias[miss[has]] = b
                vec[miss[has]] = a
                from_features[miss[has]] = True
        return bias, vec, from_features

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
            if users.n_ratings == 0 or self.item_features_ is None:
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
        bias_s, vec = self._feature_sample_terms(self.sample_item_params_, rows)  # (m, S), (m, S*k)
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
        self.item_mean_factors_ = grow(self.item_mean_factors_,
                                       vec.reshape(len(ids), s_n, k).mean(axis=1) * math.sqrt(s_n))
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

    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """A new user from a few ratings, solved against every kept posterior sample.

        The new user's row is a new id column (with the user-id group's sampled prior) plus,
        with ``implicit``, its normalised rated set over the given known items. For each sample
        the id column's ``[w, v]`` is the mean of its conditional posterior given that sample
        (a ridge regression with the sample's noise precision); the user's bias and vector
        follow as in training and the folded user scores as an average over the same samples.
        ``reg`` replaces the sampled prior precisions by ``reg * alpha^s``.
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        if reg is not None and not (math.isfinite(float(reg)) and float(reg) > 0):
            raise CfrecError(f"fold-in regularisation must be a positive number, got {reg!r}")
        idx, r = given.items, given.ratings
        s_n, k = len(self.sample_global_), int(self.n_factors)
        if not len(idx):
            return self._empty_folded(given, s_n * k)
        c = self.item_factors_[idx].astype(np.float64).reshape(len(idx), s_n, k) * math.sqrt(s_n)
        c = c.transpose(1, 0, 2)  # (S, n, k)
        rest_a, rest_b = np.zeros((s_n, k)), np.zeros(s_n)
        f_u = 0 if self.user_features_ is None else self.user_features_.n_features
        if self.implicit:
            p = self.sample_user_params_[:, f_u + idx].astype(np.float64)  # (S, n, 1+k)
            scale = 1.0 / math.sqrt(len(idx))
            rest_a = p[:, :, 1:].sum(axis=1) * scale
            sq = (p[:, :, 1:] ** 2).sum(axis=1) * scale * scale
            rest_b = p[:, :, 0].sum(axis=1) * scale + 0.5 * (rest_a * rest_a - sq).sum(axis=1)
        h = np.concatenate([np.ones((s_n, len(idx), 1)), c + rest_a[:, None, :]], axis=2)  # (S, n, 1+k)
        y = (r[None, :] - self.sample_global_[:, None].astype(np.float64) - rest_b[:, None]
             - self.sample_item_bias_[:, idx] - np.einsum("snk,sk->sn", c, rest_a))
        prior = self.sample_user_prior_.astype(np.float64)
        alpha = self.sample_noise_precision_.astype(np.float64)
        mean0 = np.concatenate([prior[:, :1], prior[:, 2:2 + k]], axis=1)
        prec0 = (np.concatenate([prior[:, 1:2], prior[:, 2 + k:]], axis=1) if reg is None
                 else np.full((s_n, 1 + k), float(reg)) * alpha[:, None])
        a = alpha[:, None, None] * np.einsum("snj,snl->sjl", h, h)
        a[:, np.arange(k + 1), np.arange(k + 1)] += prec0
        rhs = alpha[:, None] * np.einsum("snj,sn->sj", h, y) + prec0 * mean0
        theta = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]  # (S, 1+k)
        vec = rest_a + theta[:, 1:]
        bias = rest_b + theta[:, 0] + (theta[:, 1:] * rest_a).sum(axis=1)
        factors = (vec.reshape(-1) / math.sqrt(s_n)).astype(np.float32)
        return FoldedUser(float(bias.mean()), factors, idx.astype(np.int32), len(idx),
                          unknown_items=given.unknown, duplicate_items=given.duplicates)

    def fold_in_ridge(self, reg: float | None = None) -> RidgeFoldIn | None:
        """None: the fold-in is a per-sample posterior solve, not one ridge on fixed item factors."""
        return None

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        state.update({
            "user_mean_factors": self.user_mean_factors_.astype(np.float32),
            "item_mean_factors": self.item_mean_factors_.astype(np.float32),
            "sample_global": self.sample_global_.astype(np.float32),
            "sample_noise_precision": self.sample_noise_precision_.astype(np.float32),
            "sample_item_bias": self.sample_item_bias_.astype(np.float32),
            "sample_user_prior": self.sample_user_prior_.astype(np.float32),
            "sample_user_params": self.sample_user_params_.astype(np.float32),
            "sample_item_params": self.sample_item_params_.astype(np.float32),
        })
        for prefix, feats in (("user_features", self.user_features_), ("item_features", self.item_features_)):
            if feats is not None:
                state.update(feats.to_state(prefix)[0])
        return state

    def _extra_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"kept_sweeps": kept_sweeps(int(self.n_sweeps), int(self.burn_in),
                                                           int(self.max_samples)).tolist()}
        for prefix, feats in (("user_features", self.user_features_), ("item_features", self.item_features_)):
            meta[prefix] = None if feats is None else feats.to_state(prefix)[1]
        return meta

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        try:
            self.user_mean_factors_ = arrays["user_mean_factors"]
            self.item_mean_factors_ = arrays["item_mean_factors"]
            self.sample_global_ = arrays["sample_global"]
            self.sample_noise_precision_ = arrays["sample_noise_precision"]
            self.sample_item_bias_ = arrays["sample_item_bias"]
            self.sample_user_prior_ = arrays["sample_user_prior"]
            self.sample_user_params_ = arrays["sample_user_params"]
            self.sample_item_params_ = arrays["sample_item_params"]
            feats: dict[str, Features | None] = {}
            for prefix in ("user_features", "item_features"):
                info = meta.get(prefix)
                feats[prefix] = None if info is None else Features.from_state(arrays, info, prefix)
        except KeyError as exc:
            raise ModelFileError(f"BayesianFM weights lack the array {exc.args[0]!r}") from None
        self.user_features_, self.item_features_ = feats["user_features"], feats["item_features"]
        n_u, n_i = len(self.user_map_), len(self.item_map_)
        k, s = int(self.n_factors), len(self.sample_global_)
        f_u = 0 if self.user_features_ is None else self.user_features_.n_features
        f_i = 0 if self.item_features_ is None else self.item_features_.n_features
        expected = {
            "user_factors": (self.user_factors_.shape, (n_u, s * k)),
            "item_factors": (self.item_factors_.shape, (n_i, s * k)),
            "user_mean_factors": (self.user_mean_factors_.shape, (n_u, k)),
            "item_mean_factors": (self.item_mean_factors_.shape, (n_i, k)),
            "sample_noise_precision": (self.sample_noise_precision_.shape, (s,)),
            "sample_item_bias": (self.sample_item_bias_.shape, (s, n_i)),
            "sample_user_prior": (self.sample_user_prior_.shape, (s, 2 + 2 * k)),
            "sample_user_params": (self.sample_user_params_.shape, (s, f_u + (n_i if self.implicit else 0), 1 + k)),
            "sample_item_params": (self.sample_item_params_.shape, (s, f_i, 1 + k)),
        }
        for key, (got, want) in expected.items():
            if got != want:
                raise ModelFileError(f"BayesianFM array {key!r} has shape {got}, expected {want} "
                                     f"({n_u} users, {n_i} items, {s} kept samples of {k} factors)")
