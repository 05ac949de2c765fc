"""Bayesian matrix factorisation by Gibbs sampling, optionally with SVD++-style implicit features.

Model
-----
For a rating of item ``i`` by user ``u``::

    r_ui = mu + w_0 + b_u + b_i + x_u . q_i + eps,        eps ~ N(0, 1 / alpha)

where ``mu`` is the mean training rating (a fixed offset) and ``w_0`` a sampled global offset.
With ``implicit=True`` the user vector is Koren's SVD++ vector
``x_u = p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j`` and the user bias gets the matching first-order
term, ``b_u = c_u + |N(u)|^-1/2 sum_{j in N(u)} w_j``, as the linear weights of implicit-feedback
features in libFM and myFM: ``N(u)`` is the set of items ``u`` rated in the training data (see
``implicit_include_valid`` for the one documented exception) and every item ``j`` carries an
implicit weight ``w_j`` and factor ``y_j``, sampled with the rest. (Without the first-order term
the implicit factors start from zero and grow only as fast as the user factors do, which takes
most of a short chain.) With ``implicit_items=True`` the items get the same from the users who
rated them, ``q_i = q'_i + |N(i)|^-1/2 sum_{u in N(i)} z_u`` and
``b_i = c_i + |N(i)|^-1/2 sum_{u in N(i)} v_u``: the "flipped" model of Rendle, Zhang & Koren
(2019), whose Bayesian SVD++ flipped (with time effects, which this model lacks) was the best
rating model on MovieLens-10M in their study.

Priors and hyperpriors follow the MCMC formulation of libFM and myFM (Freudenthaler,
Schmidt-Thieme & Rendle 2011), i.e. Salakhutdinov & Mnih's Bayesian PMF (2008) with a
Normal-Gamma hyperprior per factor dimension instead of a Normal-Wishart over all of them:

* ``c_u ~ N(mu_bu, 1/lam_bu)`` and ``c_i ~ N(mu_bi, 1/lam_bi)`` (the biases themselves without
  implicit features), and per dimension ``f``: ``p_uf ~ N(mu_pf, 1/lam_pf)``,
  ``q'_if ~ N(mu_qf, 1/lam_qf)``;
* each ``(mu, lam)`` pair is Normal-Gamma: ``lam ~ Gamma(alpha_0/2, rate=beta_0/2)``,
  ``mu | lam ~ N(0, 1/(gamma_0 lam))``; the noise precision ``alpha ~ Gamma(alpha_0/2,
  rate=beta_0/2)``; ``w_0 ~ N(0, 1/reg_0)``;
* implicit weights ``w_j ~ N(0, 1/(beta_y lam_bu))`` and factors
  ``y_jf ~ N(0, 1/(beta_y lam_pf))`` with ``beta_y ~ Gamma(alpha_0/2, rate=beta_0/2)`` (and the
  same for the item side's ``v_u``, ``z_u`` with ``lam_bi``, ``lam_qf`` and its own ``beta``).
  Scaling each column's prior by the precision of what it explains (as Macau does for its link
  matrix, Simm et al. 2015) makes each implicit step solve one linear system for all columns.

Sampler
-------
The sampler works with ``b_u`` and ``x_u`` themselves (the centred parametrisation of SVD++:
``b_u ~ N(mu_bu + |N(u)|^-1/2 sum_j w_j, 1/lam_bu)``, ``x_u ~ N(mu_p + |N(u)|^-1/2 sum_j y_j,
1/lam_p)`` per dimension). One sweep draws, in turn, ``alpha``; ``w_0``; the user-bias
hyperparameters and all user biases at once; the user-factor hyperparameters (Normal-Gamma, exact
joint draws) and, for each dimension ``f``, all users' ``x_uf`` at once (given the items and the
other dimensions users are independent and each ``x_uf`` is Gaussian); with implicit features
``[w, Y]`` given the user biases and vectors, then ``beta_y``; then the same for the items
(biases, factors dimension by dimension, and with ``implicit_items`` the users' ``[v, Z]``).
Residuals are kept per rating and updated after each block, so a sweep costs
``O(ratings x k)`` plus, with implicit features, ``O(ratings x k)`` per conjugate-gradient
iteration; nothing of size users x items is ever formed.

Each column of ``[w, Y]`` given the users is a Bayesian linear regression (of ``b_u - mu_bu``,
or ``x_uf - mu_pf``) on the normalised rated-items matrix ``N`` (users x items). It is drawn
exactly by perturbation (Papandreou & Yuille 2010; as Macau and SMURFF sample side-information
links): the solution of ``(N'N + beta_y I) y_f = N'(x_f - mu_pf) + (N' e_1 + sqrt(beta_y) e_2) /
sqrt(lam_pf)`` with standard normal ``e_1`` (users) and ``e_2`` (items) is a draw from the
conditional (likewise for ``w`` with the bias's ``mu_bu``, ``lam_bu``). The system is
solved for all dimensions at once by conjugate gradients warm-started from the previous draw, to
relative residual ``cg_tol`` (at most ``cg_max_iter`` iterations): the draw is exact up to that
tolerance. ``N'N`` is the same in every sweep, so its top eigenvectors are computed once per fit
(Lanczos, a few dozen products with ``N``) and deflate the system: the preconditioner inverts
``N'N + beta_y I`` exactly on them, which on ML-100K cuts the iterations from about 20 to 8.
``history_`` records the iterations used.

Predictions
-----------
Predictions are posterior predictive means: the average over kept samples ``s`` of
``mu + w_0^s + b_u^s + b_i^s + x_u^s . q_i^s`` (never the score of averaged factors). The
sweeps after ``burn_in`` are thinned evenly to at most ``max_samples`` kept samples ``S``; since
``(1/S) sum_s x^s . q^s = [x^1 .. x^S]/sqrt(S) . [q^1 .. q^S]/sqrt(S)``, ``user_factors_`` and
``item_factors_`` hold the concatenated, scaled samples (``S * n_factors`` columns) and every
factor-model path (predict, recommend, the top-k engine) computes that average exactly. Biases
are the sample averages. :meth:`BayesianMF.item_embeddings` and
:meth:`BayesianMF.user_embeddings` are the posterior-mean vectors (``n_factors`` columns), for
``similar_items``, t-SNE maps and export.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.engines.backend import resolve_device
from cfrec.engines.driver import Trainer
from cfrec.engines.gibbs import GibbsChain, Priors, Residuals, gibbs_residuals, kept_sweeps
from cfrec.engines.matrix import normalized_sets
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.factor import FactorRecommender, RidgeFoldIn
from cfrec.models.layout import Array
from cfrec.models.params import hyperparameters, invalid, param


# ---------------------------------------------------------------------- the model
@hyperparameters
class BayesianMF(FactorRecommender):
    """Bayesian (SVD++-style, with ``implicit=True``) matrix factorisation fitted by Gibbs sampling.

    See the module docstring for the model, the priors and the sampler. No learning rate, no
    regularisation to tune and no early stopping: the hyperpriors adapt every prior precision and
    the noise level to the data, and predictions average the model over posterior samples.

    Defaults were chosen on a random 20% validation carve of ML-100K's ``u1.base`` (never on a
    test file; RMSE, mean of two seeds): the defaults 0.8889; implicit feedback on the user side
    only 0.9032, none 0.9083; 20 factors 0.8914 and 5 factors 0.8936 against 10; burn-in 50
    0.8900 and 100 0.8939 against 25 (the early samples of the chain still help the average);
    400 sweeps or keeping every post-burn-in sample changed under 0.0003. ``benchmarks/myfm_folds.py``
    measures the model against myFM on the official folds.

    Parameters
    ----------
    n_factors
        Latent dimension ``k``. A sweep costs ``O(ratings x k)`` (plus the implicit step).
    n_sweeps
        Gibbs sweeps in all, burn-in included.
    burn_in
        Sweeps discarded before samples are kept (``0 <= burn_in < n_sweeps``).
    max_samples
        At most this many post-burn-in samples are kept (evenly thinned). Prediction cost and the
        size of ``user_factors_``/``item_factors_`` grow as ``max_samples * n_factors`` (4 bytes
        each per user and item: 4 KB per row with the defaults).
    implicit
        Bayesian SVD++: the items each user rated give the user's bias and vector an implicit
        term (first-order weights ``w_j`` and factors ``y_j`` of those items).
    implicit_items
        The flipped counterpart: the users who rated each item give the item's bias and vector an
        implicit term (weights and factors per user). With both, the model is Rendle, Zhang &
        Koren's Bayesian SVD++ flipped without the time effects.
    implicit_include_valid
        Also count the pairs in ``valid`` (passed to ``fit``; never their ratings) in the implicit
        sets: which items each user rated there, and which users rated each item. Published
        ML-100K results with implicit feedback (myFM's examples) use the test-time rated sets
        this way; it tells the model which held-out pairs exist, so it is off by default and must
        be asked for explicitly.
    alpha_0, beta_0
        Shape and rate (halved, as in libFM/myFM) of the Gamma hyperprior on every precision.
    gamma_0
        Prior strength of the Normal hyperprior on every group mean (in units of ``lam``).
    reg_0
        Prior precision of the global offset ``w_0``.
    init_std
        Standard deviation of the random initial factors.
    cg_tol, cg_max_iter
        Relative tolerance and iteration cap of the conjugate-gradient solve in the implicit step.
    seed
        Seeds every draw (``None``: fresh entropy). Same seed, data and device: same model.
    device
        ``None``/``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. CPU runs on numpy and
        scipy.sparse; CUDA on torch. Both run the same sampler (with different random streams).

    Attributes
    ----------
    user_factors_, item_factors_
        Concatenated kept samples ``[v^1 .. v^S] / sqrt(S)``: (n_users, S * k), (n_items, S * k).
    user_mean_factors_, item_mean_factors_
        Posterior-mean vectors (n_users, k), (n_items, k): the embeddings.
    sample_global_
        ``mu + w_0`` per kept sample (S,).
    sample_noise_precision_
        ``alpha`` per kept sample (S,).
    sample_item_bias_
        Item biases per kept sample (S, n_items).
    sample_user_prior_
        Per kept sample ``[mu_bu, lam_bu, mu_p (k), lam_p (k)]`` (S, 2 + 2k): the prior a new
        user's bias and vector get in :meth:`fold_in`.
    sample_implicit_
        Implicit weights and factors ``[w_j, y_j]`` per kept sample (S, n_items, 1 + k), with
        ``implicit=True`` only (a new user's implicit term in :meth:`fold_in`). The item side's
        per-user weights are not kept: the item vectors already include their term.
    """

    name = "bmf"
    state_layout = {  # factors of every kept sample side by side, and their means
        "model.user_factors": Array(("users", "sample_factors")),
        "model.item_factors": Array(("items", "sample_factors")),
        "model.user_mean_factors": Array(("users", "factors")),
        "model.item_mean_factors": Array(("items", "factors")),
        "model.sample_global": Array(("samples",)),
        "model.sample_noise_precision": Array(("samples",)),
        "model.sample_item_bias": Array(("samples", "items")),
        "model.sample_user_prior": Array(("samples", "prior")),
        "model.sample_implicit": Array(("samples", "items", "implicit"), optional=True),
    }

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
    cg_tol: float = param(default=1e-3, gt=0, lt=1)
    cg_max_iter: int = param(default=100, ge=1)
    seed: int | None = param(default=0, ge=0)
    device: str | None = None

    def _check_combination(self) -> None:
        if self.burn_in >= self.n_sweeps:
            raise invalid(self, "burn_in", f"< n_sweeps ({self.n_sweeps})")
        if self.implicit_include_valid and not (self.implicit or self.implicit_items):
            raise invalid(self, "implicit_include_valid", "False unless implicit or implicit_items is True "
                          "(it adds the pairs in valid to the implicit feedback)")

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        dev = resolve_device(self.device)
        k = int(self.n_factors)
        n_users, n_items = train.n_users, train.n_items
        order = np.argsort(train.users, kind="stable")
        users, items = train.users[order], train.items[order]
        resid = train.ratings[order].astype(np.float32) - np.float32(self.global_mean_)
        # the implicit feedback: who rated what in train (and in valid, when asked to)
        pu, pi = users, items
        if self.implicit_include_valid and valid is not None and len(valid):
            pu, pi = np.concatenate([pu, valid.users]), np.concatenate([pi, valid.items])
        user_sets = normalized_sets(pu, pi, n_users, n_items) if self.implicit else None
        item_sets = normalized_sets(pi, pu, n_items, n_users) if self.implicit_items else None
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        be = gibbs_residuals(dev, users, items, resid, n_users, n_items, seeds[1])
        priors = Priors(float(self.alpha_0), float(self.beta_0), float(self.gamma_0), float(self.reg_0))
        chain = GibbsChain(be, len(resid), k, priors, float(self.init_std), user_sets, item_sets,
                           float(self.cg_tol), int(self.cg_max_iter), np.random.default_rng(seeds[0]))
        self._run(chain, be, valid, on_epoch)

    def _run(self, chain: GibbsChain, be: Residuals, valid: Interactions | None,
             on_epoch: EpochCallback | None) -> None:
        """Run the sweeps, keep the thinned samples and set the learned state."""
        k, n_sweeps = chain.k, int(self.n_sweeps)
        n_users, n_items = be.n_users, be.n_items
        kept = kept_sweeps(n_sweeps, int(self.burn_in), int(self.max_samples))
        slot_of = {int(s): j for j, s in enumerate(kept)}
        n_kept = len(kept)
        user_samples = np.empty((n_users, n_kept * k), dtype=np.float32)
        item_samples = np.empty((n_items, n_kept * k), dtype=np.float32)
        bu_sum, bi_sum = np.zeros(n_users), np.zeros(n_items)
        self.sample_global_ = np.empty(n_kept, dtype=np.float32)
        self.sample_noise_precision_ = np.empty(n_kept, dtype=np.float32)
        self.sample_item_bias_ = np.empty((n_kept, n_items), dtype=np.float32)
        self.sample_user_prior_ = np.empty((n_kept, 2 + 2 * k), dtype=np.float32)
        self.sample_implicit_ = np.empty((n_kept, n_items, 1 + k), dtype=np.float32) if self.implicit else None
        xp = be.xp
        v_sum = None
        if valid is not None:
            v_u, v_i = xp.index(valid.users), xp.index(valid.items)
            v_r = valid.ratings.astype(np.float64)
            v_sum = np.zeros(len(v_r))
        v_rmse = math.nan
        lo, hi = self.rating_scale_
        n = chain.n

        def sweep(sweep: int) -> dict[str, Any]:
            nonlocal v_rmse
            chain.sweep()
            slot = slot_of.get(sweep)
            if slot is not None:
                cols = slice(slot * k, (slot + 1) * k)
                user_samples[:, cols] = xp.to_numpy(chain.xt).T
                item_samples[:, cols] = xp.to_numpy(chain.qt).T
                bu, bi = xp.to_numpy(chain.bu), xp.to_numpy(chain.bi)
                bu_sum[:] += bu
                bi_sum[:] += bi
                self.sample_global_[slot] = self.global_mean_ + chain.w0
                self.sample_noise_precision_[slot] = chain.alpha
                self.sample_item_bias_[slot] = bi
                self.sample_user_prior_[slot] = np.concatenate(
                    [[chain.mu_bu, chain.lam_bu], chain.mu_x, chain.lam_x])
                if self.sample_implicit_ is not None and chain.user_side is not None:
                    self.sample_implicit_[slot] = xp.to_numpy(chain.user_side.params)
            record: dict[str, Any] = {"train_loss": chain.sse / n, "train_rmse": math.sqrt(chain.sse / n),
                                      "noise_std": 1.0 / math.sqrt(chain.alpha),
                                      "kept_samples": int(np.searchsorted(kept, sweep, side="right"))}
            for key, side in (("cg_iterations_users", chain.user_side), ("cg_iterations_items", chain.item_side)):
                if side is not None:
                    record[key] = side.iterations
            if v_sum is not None:
                # the posterior predictive mean of the samples kept so far (the current sample's
                # prediction during burn-in)
                if slot is not None or sweep <= kept[0]:
                    pred = (self.global_mean_ + chain.w0 + xp.to_numpy(chain.bu[v_u] + chain.bi[v_i])
                            + xp.to_numpy(be.pair_dot(chain.xt, chain.qt, v_u, v_i))).astype(np.float64)
                    if slot is not None:
                        v_sum[:] += pred
                        pred = v_sum / (slot + 1)
                    v_rmse = float(np.sqrt(np.mean((np.clip(pred, lo, hi) - v_r) ** 2)))
                record["valid_rmse"] = v_rmse
            return record

        self.history_.extend(Trainer("BayesianMF", n_sweeps, on_epoch).run(sweep))
        self.user_mean_factors_ = user_samples.reshape(n_users, n_kept, k).mean(axis=1)
        self.item_mean_factors_ = item_samples.reshape(n_items, n_kept, k).mean(axis=1)
        scale = np.float32(1.0 / math.sqrt(n_kept))
        user_samples *= scale  # in place: the sample matrices are the largest arrays of the model
        item_samples *= scale
        self.user_factors_, self.item_factors_ = user_samples, item_samples
        self.user_bias_ = (bu_sum / n_kept).astype(np.float32)
        self.item_bias_ = (bi_sum / n_kept).astype(np.float32)
        # Fallbacks and scores build on mu + mean(w_0): the linear terms average exactly.
        self.global_mean_ = float(np.mean(self.sample_global_, dtype=np.float64))

    # ------------------------------------------------------------------ embeddings and scoring
    def item_embeddings(self) -> np.ndarray:
        """Posterior-mean item vectors (n_items, n_factors)."""
        self._check_fitted()
        return self.item_mean_factors_

    def user_embeddings(self) -> np.ndarray:
        """Posterior-mean user vectors (n_users, n_factors); with ``implicit=True`` the SVD++
        vectors ``x_u`` (explicit part plus implicit term)."""
        self._check_fitted()
        return self.user_mean_factors_

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        """Posterior predictive mean for a folded-in user: its ``factors`` are concatenated per-sample
        vectors, scored against the concatenated item samples like a training user."""
        score = self.global_mean_ + user.bias + self.item_bias_[items]
        if user.factors.size:
            score = score + self.item_factors_[items] @ user.factors
        return np.asarray(score, dtype=np.float32)

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """A new user, solved against every kept posterior sample of the item side.

        For each kept sample ``s`` the user's ``[b_u, x_u]`` is the mean of its conditional
        posterior given that sample: a ridge regression of the ratings minus ``mu + w_0^s + b_i^s``
        on ``[1, q_i^s]`` with noise precision ``alpha^s`` and the sample's prior for a user
        (``N(mu_bu^s, 1/lam_bu^s)`` and ``N(mu_p^s, 1/lam_p^s)``, with implicit features shifted by
        ``|N|^-1/2 sum_j w_j^s`` and ``|N|^-1/2 sum_j y_j^s`` over the given known items). The folded user then scores like a training
        user (an average over the same samples), so folding in a training user's own ratings
        gives back (close to) their learned predictions. ``reg`` replaces the sampled prior
        precisions by ``reg * alpha^s`` (an L2 strength in rating units, as the ridge fold-in of
        other models); prior means are kept. Unknown items are ignored and reported. With
        ``implicit_items=True`` the item vectors are the sampled ones, whose implicit term counts
        the users who rated each item in training; a new user does not join those sets.
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        if reg is not None and not (math.isfinite(float(reg)) and float(reg) > 0):
            raise CfrecError(f"fold-in regularisation must be a positive number, got {reg!r}")
        idx, r = given.items, given.ratings
        n_kept = len(self.sample_global_)
        k = self.item_mean_factors_.shape[1]
        if not len(idx):
            return self._empty_folded(given, n_kept * k)
        q = self.item_factors_[idx].astype(np.float64).reshape(len(idx), n_kept, k) * math.sqrt(n_kept)
        h = np.concatenate([np.ones((n_kept, len(idx), 1)), q.transpose(1, 0, 2)], axis=2)  # (S, n, 1+k)
        y = r[None, :] - self.sample_global_[:, None].astype(np.float64) - self.sample_item_bias_[:, idx]
        prior = self.sample_user_prior_.astype(np.float64)
        alpha = self.sample_noise_precision_.astype(np.float64)
        mean0 = np.concatenate([prior[:, :1], prior[:, 2:2 + k]], axis=1)  # (S, 1+k)
        if self.sample_implicit_ is not None:  # the implicit terms [w, y] of the given items
            mean0 += self.sample_implicit_[:, idx].sum(axis=1) / math.sqrt(len(idx))
        prec0 = (np.concatenate([prior[:, 1:2], prior[:, 2 + k:]], axis=1) if reg is None
                 else np.full((n_kept, 1 + k), float(reg)) * alpha[:, None])
        a = alpha[:, None, None] * np.einsum("snj,snl->sjl", h, h)
        a[:, np.arange(k + 1), np.arange(k + 1)] += prec0
        rhs = alpha[:, None] * np.einsum("snj,sn->sj", h, y) + prec0 * mean0
        theta = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]  # (S, 1+k)
        factors = (theta[:, 1:].reshape(-1) / math.sqrt(n_kept)).astype(np.float32)
        return FoldedUser(float(theta[:, 0].mean()), factors, idx.astype(np.int32), len(idx),
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
        })
        if self.sample_implicit_ is not None:
            state["sample_implicit"] = self.sample_implicit_.astype(np.float32)
        return state

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        try:
            self.user_mean_factors_ = arrays["user_mean_factors"]
            self.item_mean_factors_ = arrays["item_mean_factors"]
            self.sample_global_ = arrays["sample_global"]
            self.sample_noise_precision_ = arrays["sample_noise_precision"]
            self.sample_item_bias_ = arrays["sample_item_bias"]
            self.sample_user_prior_ = arrays["sample_user_prior"]
            self.sample_implicit_ = arrays.get("sample_implicit")
        except KeyError as exc:
            raise ModelFileError(f"BayesianMF weights lack the array {exc.args[0]!r}") from None
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
        }
        if self.implicit or self.sample_implicit_ is not None:
            got = None if self.sample_implicit_ is None else self.sample_implicit_.shape
            expected["sample_implicit"] = (got, (s, n_i, 1 + k))
        for key, (got_shape, want) in expected.items():
            if got_shape != want:
                raise ModelFileError(f"BayesianMF array {key!r} has shape {got_shape}, expected {want} "
                                     f"({n_u} users, {n_i} items, {s} kept samples of {k} factors)")

    def _extra_meta(self) -> dict[str, Any]:
        return {"kept_sweeps": kept_sweeps(int(self.n_sweeps), int(self.burn_in),
                                            int(self.max_samples)).tolist()}
