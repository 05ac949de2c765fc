"""Explicit-feedback alternating least squares with biases and weighted-lambda regularisation.

Model: ``r = mu + b_u + b_i + p_u . q_i``. With the item side fixed, every user's ``[b_u, p_u]``
is the solution of a small ridge regression against ``[1, q_i]`` over the items the user rated,
and vice versa; ALS alternates these exact half-steps (Zhou et al. 2008, "Large-scale parallel
collaborative filtering for the Netflix Prize"). The L2 strength on a row's factors is
``reg * n + reg_const`` where ``n`` is the row's number of ratings: the weighted-lambda term of
Zhou et al. plus a constant prior that keeps rows with few ratings near zero (on validation carves
of ML-100K the mix beats weighted-lambda alone by about 0.009 RMSE and a constant alone by about
0.002). Biases get a constant ``reg_bias``, as in :class:`~cfrec.models.baseline.Baseline`.

All rows of one side are solved at once: the normal equations of every row are assembled from a
sparse (rows x others) indicator matrix times the other side's (others x d(d+1)/2) packed outer
products, so memory grows with the number of rows times ``d^2`` (processed in chunks), never
with users x items.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError, TrainingDiverged
from cfrec.models.als_solvers import (
    NumpyOps,
    Ops,
    Penalty,
    RatingSide,
    TorchOps,
    penalty_value,
    valid_rmse,
)
from cfrec.models.base import EpochCallback, FactorRecommender, RidgeFoldIn, hyperparameters
from cfrec.models.torch_engine import resolve_device

logger = logging.getLogger(__name__)


@hyperparameters
class ALS(FactorRecommender):
    """Biased matrix factorisation fitted by alternating least squares (explicit ratings).

    Each iteration solves all users' ``[b_u, p_u]`` in closed form given the items, then all
    items' ``[b_i, q_i]`` given the users. A row (user or item) with ``n`` ratings has L2
    strength ``reg * n + reg_const`` on its factors (weighted-lambda plus a constant prior) and
    ``reg_bias`` on its bias. The regularised objective never increases from one half-step to the
    next; ``history_`` records it per iteration (``train_loss``, divided by the number of
    ratings) with the training RMSE, the validation RMSE when ``valid`` is given, and seconds.
    ``valid`` is only monitored, not used to stop early: with these regularisers the validation
    RMSE flattens out rather than turning up.

    Defaults were chosen on validation carves of ML-100K's ``u1.base`` (not on any test file).
    Measured on the official folds u1..u5: RMSE 0.921, 0.910, 0.903, 0.906, 0.908 (mean 0.910;
    Surprise's SVD 0.938 in the same run) in about 0.1 s per fold on a shared 2-core CPU, about
    3x faster than Surprise's SVD.

    Parameters
    ----------
    n_factors
        Latent dimension ``k``. Cost per iteration grows with ``ratings x k^2 + rows x k^3``;
        with these regularisers accuracy on ML-100K is flat from 10 to 80 factors.
    reg
        Weighted-lambda L2 strength: added once per rating of the row.
    reg_const
        L2 strength on every factor vector regardless of its number of ratings.
    reg_bias
        L2 strength of the user and item biases (in rating-count units: a row with ``reg_bias``
        ratings keeps about half its raw mean deviation).
    iterations
        Alternating sweeps (users then items).
    init_std
        Standard deviation of the random initial item factors.
    seed
        Seed of the initial item factors (``None``: fresh entropy).
    device
        ``None``/``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. CPU uses scipy sparse
        products and LAPACK; CUDA uses torch sparse products and batched Cholesky. Both solve the
        same systems and agree to float32 rounding.
    """

    name = "als"

    n_factors: int = 10
    reg: float = 0.04
    reg_const: float = 8.0
    reg_bias: float = 3.0
    iterations: int = 15
    init_std: float = 0.1
    seed: int | None = 0
    device: str | None = None

    # ------------------------------------------------------------------ fitting
    def _penalty(self, reg: float | None = None) -> Penalty:
        """Validated L2 strengths (``reg`` overrides the weighted-lambda term)."""
        pen = Penalty(float(self.reg if reg is None else reg), float(self.reg_const), float(self.reg_bias))
        if not (pen.reg >= 0 and pen.reg_const >= 0 and pen.reg_bias >= 0):
            raise CfrecError(f"ALS regularisation must be >= 0 (reg={pen.reg}, reg_const={pen.reg_const}, "
                             f"reg_bias={pen.reg_bias})")
        if pen.reg + pen.reg_const <= 0:
            raise CfrecError("ALS needs reg > 0 or reg_const > 0: without L2 on the factors the "
                             "per-user systems are singular for users with fewer than n_factors ratings")
        return pen

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        penalty = self._penalty()
        k, iterations = int(self.n_factors), int(self.iterations)
        if k < 1 or iterations < 1:
            raise CfrecError(f"ALS needs n_factors >= 1 and iterations >= 1 "
                             f"(got n_factors={self.n_factors}, iterations={self.iterations})")
        dev = resolve_device(self.device)
        ops: Ops[Any] = NumpyOps() if dev.type == "cpu" else TorchOps(dev)
        n_users, n_items, mu = train.n_users, train.n_items, self.global_mean_
        by_user = RatingSide.build(train.users, train.items, n_users, n_items)
        by_item = RatingSide.build(train.items, train.users, n_items, n_users)
        f32, i64 = np.float32, np.int64
        resid_np = train.ratings.astype(np.float32) - np.float32(mu)
        resid_by_user = ops.asarray(resid_np[by_user.order], f32)  # each side's CSR order
        resid_by_item = ops.asarray(resid_np[by_item.order], f32)
        item_of = ops.asarray(by_user.indices, i64)  # item of each rating, user-major order
        user_of = ops.asarray(by_item.indices, i64)
        n_u, n_i = ops.asarray(by_user.counts, f32), ops.asarray(by_item.counts, f32)
        if valid is not None:
            v_u, v_i = ops.asarray(valid.users, i64), ops.asarray(valid.items, i64)
            v_r = ops.asarray(valid.ratings, f32)

        # Only the item side needs a start: the first half-step solves the users given it.
        rng = np.random.default_rng(self.seed)
        q = ops.asarray(rng.normal(0.0, float(self.init_std), (n_items, k)), f32)
        bi = ops.asarray(np.zeros(n_items), f32)
        for it in range(1, iterations + 1):
            start = time.perf_counter()
            sol, _ = ops.solve_side(by_user, q, resid_by_user - bi[item_of], penalty)
            bu, p = sol[:, 0], sol[:, 1:]
            sol, sse = ops.solve_side(by_item, p, resid_by_item - bu[user_of], penalty)
            bi, q = sol[:, 0], sol[:, 1:]
            loss = sse + penalty_value(ops, penalty, n_u, bu, p, n_i, bi, q)
            if not np.isfinite(loss):
                raise TrainingDiverged("ALS", it, None, loss)
            record: dict[str, Any] = {"epoch": it, "train_loss": loss / len(train),
                                      "train_rmse": (max(sse, 0.0) / len(train)) ** 0.5}
            if valid is not None:
                record["valid_rmse"] = valid_rmse(ops, v_u, v_i, v_r, mu, bu, bi, p, q, self.rating_scale_)
            record["seconds"] = time.perf_counter() - start
            self.history_.append(record)
            logger.debug("ALS iteration %d: %s", it, record)
            if on_epoch is not None:
                on_epoch(dict(record, epochs=iterations))
        self.user_bias_, self.item_bias_ = ops.to_numpy(bu), ops.to_numpy(bi)
        self.user_factors_, self.item_factors_ = ops.to_numpy(p), ops.to_numpy(q)

    # ------------------------------------------------------------------ cold start
    def fold_in_ridge(self, reg: float | None = None) -> RidgeFoldIn:
        """A new user's ``[b_u, p_u]`` is solved exactly as a training half-step would: L2
        ``reg * n + reg_const`` on the factors (``n`` known rated items), ``reg_bias`` on the bias,
        so folding in a training user's own ratings gives back (close to) their learned vector.
        ``reg`` overrides the weighted-lambda term."""
        pen = self._penalty(reg)
        return RidgeFoldIn(bias=pen.reg_bias, const=pen.reg_const, per_rating=pen.reg)
