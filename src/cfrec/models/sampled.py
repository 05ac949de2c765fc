"""What the Gibbs-sampled factor models share: kept posterior samples, their state, the
posterior fold-in of a new user.

:class:`~cfrec.models.bayesian_mf.BayesianMF` and :class:`~cfrec.models.bayesian_fm.BayesianFM`
both predict ``mu + w_0 + b_u + b_i + x_u . q_i`` averaged over ``S`` kept samples of a chain. Both
keep the thinned samples the same way (:class:`KeptSamples`): the entity vectors of every kept
sample side by side, scaled by ``1/sqrt(S)`` so every factor-model path computes the average
exactly, the sample averages of the biases, and per sample what a new user needs (``mu + w_0``,
the noise precision, the item biases, the user prior). Both fold a new user in the same way
(:meth:`SampledFactorRecommender.fold_in`): for each sample, the posterior mean of the user's
``[b, x]`` given that sample, a small ridge system (:meth:`SampledFactorRecommender._posterior_solve`);
each model says how its user row enters the system (:meth:`SampledFactorRecommender._fold_in_samples`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.engines.gibbs import kept_sweeps
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import FoldedUser
from cfrec.models.factor import FactorRecommender, RidgeFoldIn
from cfrec.models.layout import Array
from cfrec.models.params import hyperparameters, invalid, param
from cfrec.models.types import FoldInInput


class _SampledState(FactorRecommender):
    """The learned arrays of a sampled factor model (beside the factor model's)."""

    user_mean_factors_: np.ndarray
    item_mean_factors_: np.ndarray
    sample_global_: np.ndarray
    sample_noise_precision_: np.ndarray
    sample_item_bias_: np.ndarray
    sample_user_prior_: np.ndarray


@hyperparameters
class SampledFactorRecommender(_SampledState):
    """A factor model whose scores average kept posterior samples (see the module docstring).

    It declares the hyperparameters of the chain and of the libFM / myFM priors that every
    sampled model has (subclasses document them and may change their defaults); subclasses fill
    the state through :class:`KeptSamples` in ``_fit`` and implement :meth:`_fold_in_samples`.
    """

    state_layout = {  # factors of every kept sample side by side, and their means
        "model.user_factors": Array(("users", "sample_factors")),
        "model.item_factors": Array(("items", "sample_factors")),
        "model.user_mean_factors": Array(("users", "factors")),
        "model.item_mean_factors": Array(("items", "factors")),
        "model.sample_global": Array(("samples",)),
        "model.sample_noise_precision": Array(("samples",)),
        "model.sample_item_bias": Array(("samples", "items")),
        "model.sample_user_prior": Array(("samples", "prior")),
    }
    #: The arrays every sampled model saves beside the factor model's (name -> attribute).
    _SAMPLE_ARRAYS = ("user_mean_factors", "item_mean_factors", "sample_global", "sample_noise_precision",
                      "sample_item_bias", "sample_user_prior")

    n_factors: int = param(default=10, ge=1)
    n_sweeps: int = param(default=200, ge=1)
    burn_in: int = param(default=25, ge=0)
    max_samples: int = param(default=100, ge=1)
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

    def _kept_sweeps(self) -> np.ndarray:
        return kept_sweeps(int(self.n_sweeps), int(self.burn_in), int(self.max_samples))

    # ------------------------------------------------------------------ embeddings and scoring
    def item_embeddings(self) -> np.ndarray:
        """Posterior-mean item vectors (n_items, n_factors)."""
        return self._mean_factors(user_side=False)

    def user_embeddings(self) -> np.ndarray:
        """Posterior-mean user vectors (n_users, n_factors)."""
        return self._mean_factors(user_side=True)

    def _mean_factors(self, user_side: bool) -> np.ndarray:
        self._check_fitted()
        return self.user_mean_factors_ if user_side else self.item_mean_factors_

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        """Posterior predictive mean for a folded-in user: its ``factors`` are concatenated
        per-sample vectors, scored against the concatenated item samples like a training user."""
        score = self.global_mean_ + user.bias + self.item_bias_[items]
        if user.factors.size:
            score = score + self.item_factors_[items] @ user.factors
        return np.asarray(score, dtype=np.float32)

    # ------------------------------------------------------------------ fold-in
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """A new user from a few ratings, solved against every kept posterior sample.

        For each kept sample the user's parameters are the mean of their conditional posterior
        given that sample (:meth:`_fold_in_samples`), so the folded user scores like a training
        user, as an average over the same samples. ``reg`` replaces the sampled prior
        precisions by ``reg * alpha^s`` (an L2 strength in rating units, as the ridge fold-in of
        other models); prior means are kept. Unknown items are ignored and reported.
        """
        self._check_fitted()
        return self._folded(self._fold_in_input(items, ratings), reg)

    def _folded(self, given: FoldInInput, reg: float | None, features: Any = None,
                state: Any = None) -> FoldedUser:
        """The folded user of checked ratings (and what else a model knows of the user:
        ``features``, passed on to :meth:`_fold_in_samples`; ``state`` goes on the result)."""
        self._check_fold_in_reg(reg)
        idx = given.items
        terms = self._fold_in_samples(idx, given.ratings, reg, features)
        if terms is None:  # nothing known of the user (``state`` still says what was ignored)
            return replace(self._empty_folded(given, len(self.sample_global_) * int(self.n_factors)), state=state)
        bias, vec = terms
        return FoldedUser(float(bias.mean()), self._scaled(vec), idx.astype(np.int32), len(idx), state=state,
                          unknown_items=given.unknown, duplicate_items=given.duplicates)

    @staticmethod
    def _check_fold_in_reg(reg: float | None) -> None:
        if reg is not None and not (math.isfinite(float(reg)) and float(reg) > 0):
            raise CfrecError(f"fold-in regularisation must be a positive number, got {reg!r}")

    @staticmethod
    def _scaled(vec: np.ndarray) -> np.ndarray:
        """Per-sample vectors (..., S, k) as concatenated, ``1/sqrt(S)``-scaled rows (..., S*k)."""
        return (vec.reshape(*vec.shape[:-2], -1) / math.sqrt(vec.shape[-2])).astype(np.float32)

    def _fold_in_samples(self, idx: np.ndarray, r: np.ndarray, reg: float | None,
                         features: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
        """A new user's bias (S,) and vector (S, k) per kept sample from its ratings ``r`` of the
        known items ``idx`` (and ``features``, for models that have them); None when that says
        nothing of the user (the cold-start list)."""
        raise NotImplementedError

    def _item_samples(self, idx: np.ndarray) -> np.ndarray:
        """The kept samples' vectors of items ``idx``: (S, len(idx), k), float64."""
        s_n, k = len(self.sample_global_), int(self.n_factors)
        q = self.item_factors_[idx].astype(np.float64).reshape(len(idx), s_n, k) * math.sqrt(s_n)
        return q.transpose(1, 0, 2)

    def _posterior_solve(self, h: np.ndarray, y: np.ndarray, reg: float | None,
                         shift: np.ndarray | None = None) -> np.ndarray:
        """Per kept sample ``s``, the posterior mean (S, 1+k) of a new user's ``theta`` in
        ``y_n = h_n . theta + eps`` (``h``: (S, n, 1+k), ``y``: (S, n)) with noise precision
        ``alpha^s`` and the sample's prior for a user's ``[bias, vector]``: means
        ``[mu_b, mu_v] (+ shift)``, precisions ``[lam_b, lam_v]`` (or ``reg * alpha^s``)."""
        s_n, k = h.shape[0], h.shape[2] - 1
        prior = self.sample_user_prior_.astype(np.float64)
        alpha = self.sample_noise_precision_.astype(np.float64)
        mean0 = np.concatenate([prior[:, :1], prior[:, 2:2 + k]], axis=1)  # (S, 1+k)
        if shift is not None:
            mean0 += shift
        prec0 = (np.concatenate([prior[:, 1:2], prior[:, 2 + k:]], axis=1) if reg is None
                 else np.full((s_n, 1 + k), float(reg)) * alpha[:, None])
        a = alpha[:, None, None] * np.einsum("snj,snl->sjl", h, h)
        a[:, np.arange(k + 1), np.arange(k + 1)] += prec0
        rhs = alpha[:, None] * np.einsum("snj,sn->sj", h, y) + prec0 * mean0
        return np.linalg.solve(a, rhs[:, :, None])[:, :, 0]

    def fold_in_ridge(self, reg: float | None = None) -> RidgeFoldIn | None:
        """None: the fold-in is a per-sample posterior solve, not one ridge on fixed item factors."""
        return None

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        state.update({name: getattr(self, name + "_").astype(np.float32) for name in self._SAMPLE_ARRAYS})
        return state

    def _extra_meta(self) -> dict[str, Any]:
        return {"kept_sweeps": self._kept_sweeps().tolist()}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        for name in self._SAMPLE_ARRAYS:
            if name not in arrays:
                raise ModelFileError(f"{type(self).__name__} weights lack the array {name!r}")
            setattr(self, name + "_", arrays[name])

    def _check_shapes(self, extra: dict[str, tuple[Any, tuple[int, ...]]]) -> None:
        """Every sampled array's shape against the vocabularies, ``n_factors`` and the number of
        kept samples (``extra``: the subclass's own arrays, name -> (shape, expected))."""
        n_u, n_i = len(self.user_map_), len(self.item_map_)
        k, s = int(self.n_factors), len(self.sample_global_)
        expected = {
            "user_factors": (self.user_factors_.shape, (n_u, s * k)),
            "item_factors": (self.item_factors_.shape, (n_i, s * k)),
            "user_mean_factors": (self.user_mean_factors_.shape, (n_u, k)),
            "item_mean_factors": (self.item_mean_factors_.shape, (n_i, k)),
            "sample_global": (self.sample_global_.shape, (s,)),
            "sample_noise_precision": (self.sample_noise_precision_.shape, (s,)),
            "sample_item_bias": (self.sample_item_bias_.shape, (s, n_i)),
            "sample_user_prior": (self.sample_user_prior_.shape, (s, 2 + 2 * k)),
            **extra,
        }
        for key, (got, want) in expected.items():
            if got != want:
                raise ModelFileError(f"{type(self).__name__} array {key!r} has shape {got}, expected {want} "
                                     f"({n_u} users, {n_i} items, {s} kept samples of {k} factors)")


class KeptSamples:
    """The thinned samples of a chain as it runs, and the model state they end as.

    ``model`` gets ``sample_global_``, ``sample_noise_precision_``, ``sample_item_bias_`` and
    ``sample_user_prior_`` at once (filled by :meth:`keep`), and the factors, mean factors,
    biases and ``global_mean_`` (``mu`` plus the mean ``w_0``) in :meth:`finish`.
    """

    def __init__(self, model: SampledFactorRecommender, n_users: int, n_items: int, valid: Interactions | None) -> None:
        self.model, self.k = model, int(model.n_factors)
        self.kept = model._kept_sweeps()
        self.slot_of = {int(s): j for j, s in enumerate(self.kept)}
        self.n = len(self.kept)
        k, s_n = self.k, self.n
        self.user_samples = np.empty((n_users, s_n * k), dtype=np.float32)
        self.item_samples = np.empty((n_items, s_n * k), dtype=np.float32)
        self.bu_sum, self.bi_sum = np.zeros(n_users), np.zeros(n_items)
        model.sample_global_ = np.empty(s_n, dtype=np.float32)
        model.sample_noise_precision_ = np.empty(s_n, dtype=np.float32)
        model.sample_item_bias_ = np.empty((s_n, n_items), dtype=np.float32)
        model.sample_user_prior_ = np.empty((s_n, 2 + 2 * k), dtype=np.float32)
        self.valid_ratings = None if valid is None else valid.ratings.astype(np.float64)
        self.valid_sum = None if valid is None else np.zeros(len(valid))
        self.valid_rmse = math.nan

    def slot(self, sweep: int) -> int | None:
        """Where the sample of this (1-based) sweep goes, or None when it is not kept."""
        return self.slot_of.get(sweep)

    def keep(self, slot: int, user_vectors: np.ndarray, item_vectors: np.ndarray, bu: np.ndarray,
             bi: np.ndarray, w0: float, alpha: float, user_prior: np.ndarray) -> None:
        """Store one kept sample: entity vectors (k, n) per side, biases, ``w_0``, the noise
        precision and the user prior ``[mu_b, lam_b, mu_v (k), lam_v (k)]``."""
        model, cols = self.model, slice(slot * self.k, (slot + 1) * self.k)
        self.user_samples[:, cols] = user_vectors.T
        self.item_samples[:, cols] = item_vectors.T
        self.bu_sum[:] += bu
        self.bi_sum[:] += bi
        model.sample_global_[slot] = model.global_mean_ + w0
        model.sample_noise_precision_[slot] = alpha
        model.sample_item_bias_[slot] = bi
        model.sample_user_prior_[slot] = user_prior

    def record(self, sweep: int, sse: float, n: int, alpha: float) -> dict[str, Any]:
        """The sweep's training figures for ``history_``."""
        return {"train_loss": sse / n, "train_rmse": math.sqrt(sse / n), "noise_std": 1.0 / math.sqrt(alpha),
                "kept_samples": int(np.searchsorted(self.kept, sweep, side="right"))}

    def validate(self, sweep: int, slot: int | None, predict: Callable[[], np.ndarray]) -> float:
        """RMSE on ``valid`` of the posterior predictive mean of the samples kept so far (the
        current sample's prediction during burn-in; ``predict`` gives it, unclipped)."""
        assert self.valid_sum is not None and self.valid_ratings is not None
        if slot is not None or sweep <= self.kept[0]:
            pred = predict()
            if slot is not None:
                self.valid_sum[:] += pred
                pred = self.valid_sum / (slot + 1)
            lo, hi = self.model.rating_scale_
            self.valid_rmse = float(np.sqrt(np.mean((np.clip(pred, lo, hi) - self.valid_ratings) ** 2)))
        return self.valid_rmse

    def finish(self) -> None:
        """Set the model's factors (scaled samples), mean factors, biases and global mean."""
        model, s_n, k = self.model, self.n, self.k
        user_samples, item_samples = self.user_samples, self.item_samples
        model.user_mean_factors_ = user_samples.reshape(len(user_samples), s_n, k).mean(axis=1)
        model.item_mean_factors_ = item_samples.reshape(len(item_samples), s_n, k).mean(axis=1)
        scale = np.float32(1.0 / math.sqrt(s_n))
        user_samples *= scale  # in place: the sample matrices are the largest arrays of the model
        item_samples *= scale
        model.user_factors_, model.item_factors_ = user_samples, item_samples
        model.user_bias_ = (self.bu_sum / s_n).astype(np.float32)
        model.item_bias_ = (self.bi_sum / s_n).astype(np.float32)
        # fallbacks and scores build on mu + mean(w_0): the linear terms average exactly
        model.global_mean_ = float(np.mean(model.sample_global_, dtype=np.float64))
