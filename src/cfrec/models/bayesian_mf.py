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
from cfrec.engines.gibbs import GibbsChain, Priors, Residuals, gibbs_residuals
from cfrec.engines.matrix import normalized_sets
from cfrec.models.base import EpochCallback
from cfrec.models.layout import Array
from cfrec.models.params import hyperparameters, param
from cfrec.models.sampled import KeptSamples, SampledFactorRecommender


# ---------------------------------------------------------------------- the model
@hyperparameters
class BayesianMF(SampledFactorRecommender):
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
    state_layout = {"model.sample_implicit": Array(("samples", "items", "implicit"), optional=True)}

    cg_tol: float = param(default=1e-3, gt=0, lt=1)
    cg_max_iter: int = param(default=100, ge=1)
    device: str | None = None

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
        samples = KeptSamples(self, be.n_users, be.n_items, valid)
        self.sample_implicit_ = (np.empty((samples.n, be.n_items, 1 + k), dtype=np.float32)
                                 if self.implicit else None)
        xp = be.xp
        if valid is not None:
            v_u, v_i = xp.index(valid.users), xp.index(valid.items)

        def valid_pred() -> np.ndarray:
            return (self.global_mean_ + chain.w0 + xp.to_numpy(chain.bu[v_u] + chain.bi[v_i])
                    + xp.to_numpy(be.pair_dot(chain.xt, chain.qt, v_u, v_i))).astype(np.float64)

        def sweep(sweep: int) -> dict[str, Any]:
            chain.sweep()
            slot = samples.slot(sweep)
            if slot is not None:
                samples.keep(slot, xp.to_numpy(chain.xt), xp.to_numpy(chain.qt), xp.to_numpy(chain.bu),
                             xp.to_numpy(chain.bi), chain.w0, chain.alpha,
                             np.concatenate([[chain.mu_bu, chain.lam_bu], chain.mu_x, chain.lam_x]))
                if self.sample_implicit_ is not None and chain.user_side is not None:
                    self.sample_implicit_[slot] = xp.to_numpy(chain.user_side.params)
            record = samples.record(sweep, chain.sse, chain.n, chain.alpha)
            for key, side in (("cg_iterations_users", chain.user_side), ("cg_iterations_items", chain.item_side)):
                if side is not None:
                    record[key] = side.iterations
            if valid is not None:
                record["valid_rmse"] = samples.validate(sweep, slot, valid_pred)
            return record

        self.history_.extend(Trainer("BayesianMF", n_sweeps, on_epoch).run(sweep))
        samples.finish()

    # ------------------------------------------------------------------ cold start
    def _fold_in_samples(self, idx: np.ndarray, r: np.ndarray, reg: float | None,
                         features: Any = None) -> tuple[np.ndarray, np.ndarray] | None:
        """The new user's ``[b_u, x_u]`` per kept sample ``s``: the mean of its conditional
        posterior given that sample, a ridge regression of the ratings minus ``mu + w_0^s + b_i^s``
        on ``[1, q_i^s]`` with noise precision ``alpha^s`` and the sample's prior for a user
        (``N(mu_bu^s, 1/lam_bu^s)`` and ``N(mu_p^s, 1/lam_p^s)``, with implicit features shifted by
        ``|N|^-1/2 sum_j w_j^s`` and ``|N|^-1/2 sum_j y_j^s`` over the given known items). Folding
        in a training user's own ratings gives back (close to) their learned predictions. With
        ``implicit_items=True`` the item vectors are the sampled ones, whose implicit term counts
        the users who rated each item in training; a new user does not join those sets."""
        if not len(idx):
            return None
        q = self._item_samples(idx)
        h = np.concatenate([np.ones((q.shape[0], len(idx), 1)), q], axis=2)  # (S, n, 1+k)
        y = r[None, :] - self.sample_global_[:, None].astype(np.float64) - self.sample_item_bias_[:, idx]
        shift = None
        if self.sample_implicit_ is not None:  # the implicit terms [w, y] of the given items
            shift = self.sample_implicit_[:, idx].sum(axis=1) / math.sqrt(len(idx))
        theta = self._posterior_solve(h, y, reg, shift)
        return theta[:, 0], theta[:, 1:]

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        if self.sample_implicit_ is not None:
            state["sample_implicit"] = self.sample_implicit_.astype(np.float32)
        return state

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        self.sample_implicit_ = arrays.get("sample_implicit")
        extra: dict[str, Any] = {}
        if self.implicit or self.sample_implicit_ is not None:
            got = None if self.sample_implicit_ is None else self.sample_implicit_.shape
            extra["sample_implicit"] = (got, (len(self.sample_global_), len(self.item_map_), 1 + int(self.n_factors)))
        self._check_shapes(extra)
