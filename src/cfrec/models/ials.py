"""Implicit-feedback alternating least squares (Hu, Koren & Volinsky 2008) for top-K ranking.

Every training pair is a positive interaction: preference ``p_ui = 1`` for an observed pair and
``0`` for every other one, with confidence ``c_ui = 1 + alpha * f(w_ui)`` on observed pairs
(``f(w) = w`` for ``confidence="linear"``, ``log(1 + w / eps)`` for ``"log"``) and ``1`` on the
rest. ``w_ui`` is the pair's strength: its weight (event count, summed weights) in implicit data,
its rating in explicit data, optionally reweighted by BM25 or TF-IDF first
(:func:`~cfrec.engines.matrix.row_weighting`). The objective, over *all* users x items pairs, is::

    sum_{u,i} c_ui (p_ui - x_u . y_i)^2  +  sum_u reg_u |x_u|^2  +  sum_i reg_i |y_i|^2

with ``reg_row = reg`` (or ``reg * n_row`` with ``weighted_reg=True``, Zhou et al.'s weighted
lambda). With the items fixed, user ``u``'s vector solves::

    (Y'Y + Y_u' (C_u - I) Y_u + reg_u I) x_u = Y_u' c_u

where ``Y_u`` are the factors of the items ``u`` rated: the unrated items only enter through the
shared Gram matrix ``Y'Y``, so no users x items matrix is ever formed. By default every half-step
takes a few conjugate-gradient steps warm-started from the current vectors (Takacs, Pilaszy &
Tikk 2011, as implicit and Spark do): one step costs ``ratings x k`` (a sampled product
``y_i . v_u`` at every rating and a sparse product back) plus ``rows x k^2`` for ``Y'Y``, with
memory ``O((users + items) x k)`` plus one chunk's buffers
(:func:`~cfrec.engines.cg.cg_half_step`). ``solver="exact"`` assembles every row's
normal equations instead (a sparse confidence matrix times packed outer products,
``ratings x k^2``) and solves them by batched LAPACK calls on CPU, or batched Cholesky with torch
on CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from contextlib import closing
from typing import Any, Literal

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.engines.backend import array_backend, resolve_device, to_numpy
from cfrec.engines.cg import CGEngine, CGSide, cg_engine, cg_half_step
from cfrec.engines.driver import Trainer, after_setup
from cfrec.engines.exact import RatingSide, implicit_objective, implicit_solve
from cfrec.engines.matrix import (
    WeightingStats,
    confidence_minus_one,
    interaction_values,
    row_weighting,
    weighting_stats,
)
from cfrec.errors import CfrecError
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.factor import LatentFactorRecommender
from cfrec.models.layout import Array
from cfrec.models.params import Runtime, hyperparameters, param
from cfrec.models.ranking_only import RankingRecommender
from cfrec.threads import threads_for, using_threads

logger = logging.getLogger(__name__)



_CONFIDENCE = ("linear", "log")
_SOLVERS = ("cg", "exact")


@hyperparameters
class IALS(RankingRecommender, LatentFactorRecommender, Runtime):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008): a top-K ranking model.

    Every training pair counts as an interaction (preference 1) with confidence
    ``1 + alpha * w`` (``confidence="linear"``) or ``1 + alpha * log(1 + w / eps)`` (``"log"``);
    every other pair has preference 0 and confidence 1. ``w`` is the pair's weight in implicit
    data (:attr:`~cfrec.data.Interactions.weights`: event counts or summed weights) and its rating
    in explicit data, after the ``weighting``: ``None`` (none), ``"bm25"`` (counts saturated with
    ``bm25_k1``, heavy users discounted with ``bm25_b``, popular items by their IDF) or
    ``"tfidf"`` (``sqrt(w) * idf``), as implicit's ``bm25_weight`` / ``tfidf_weight``. Each iteration solves all
    users' vectors given the items (``cg_steps`` conjugate-gradient steps, or exactly), then all
    items' given the users; the weighted squared error plus L2 penalty over all users x items
    pairs never increases from one half-step to the next (every CG step minimises each row's
    objective exactly along its search direction), and ``history_`` records it per iteration
    (``train_loss``: the objective divided by the number of training ratings, with ``seconds``).
    ``valid`` is ignored (there is nothing to early-stop on).

    Scores are preferences ``x_u . y_i`` (no biases).
    ``predicts_ratings`` is False: ``predict`` maps the preference linearly onto the rating scale
    (``low + s * (high - low)``, so 1..5 -> ``1 + 4 s``) and clips it, like implicit
    :class:`~cfrec.models.neumf.NeuMF`: a monotone preference score, not a rating estimate (RMSE
    against ratings means nothing). ``recommend`` ranks by it. An unknown user is ranked by item
    popularity (training interactions per item); ``predict`` for an unknown id falls back to the
    global mean as in every model.

    Defaults (64 factors, ``reg=40``, ``alpha=0.5``, linear confidence, TF-IDF weighting) were
    chosen by NDCG@10 on validation carves of logs, never a test part: for a synthetic log
    (:func:`~cfrec.data.make_synthetic_log`, 2,000 users, 4,000 items, 80,000 pairs with counts)
    and ML-100K as a log (every rating an interaction), the training part of a random 80/20
    pair split was carved again 80/20, and a grid of weighting (none, BM25, TF-IDF) x confidence
    (linear, log) x ``alpha`` (0.5, 2, 8) x ``reg`` (10, 40, 100) at 64 factors was ranked by
    the mean over both logs of NDCG@10 relative to each log's best (relevant = every held-out
    pair, full ranking). ``python benchmarks/ials_log_defaults.py`` reproduces the choice: TF-IDF /
    linear / 0.5 / 40 came first (0.168 and 0.241), ahead of no weighting with log confidence;
    ``reg=10`` was last on both logs. On star ratings the earlier defaults, chosen on ML-100K
    ``u1.base`` with ratings >= 4 relevant, stay better: on the official folds u1..u5 (ranking
    all unrated items) ``n_factors=48, alpha=1, weighting=None`` give NDCG@10 0.401 against
    0.383 for these (``cfrec benchmark ml-100k --protocol folds --models ials``); pass them for
    ratings.

    Parameters
    ----------
    n_factors
        Latent dimension ``k``. Cost per iteration grows with ``(ratings + rows x k) x k x
        cg_steps`` (CG) or ``ratings x k^2 + rows x k^3`` (exact).
    reg
        L2 strength on every factor vector (per rating of the row with ``weighted_reg``).
    alpha
        Confidence slope: a rated pair weighs ``1 + alpha * f(r)`` against 1 for an unrated one.
    iterations
        Alternating sweeps (users then items).
    solver
        ``"cg"``: ``cg_steps`` conjugate-gradient steps per half-step, warm-started from the
        previous iteration; ``"exact"``: every row's normal equations formed and solved.
    cg_steps
        Conjugate-gradient steps per half-step (``solver="cg"``); ``k`` steps solve each row's
        system up to rounding.
    confidence
        ``"linear"`` (``f(r) = r``) or ``"log"`` (``f(r) = log(1 + r / eps)``).
    eps
        Scale of the log confidence.
    weighting
        ``None`` (none; ``weighting=none`` on the command line), ``"bm25"`` or ``"tfidf"``: how
        each pair's strength is reweighted before the
        confidence (users as documents, items as terms; see
        :func:`~cfrec.engines.matrix.row_weighting`). A folded-in user is weighed with the
        training IDF and mean row length.
    bm25_k1, bm25_b
        BM25's count saturation (larger: closer to linear in the count) and length
        normalisation (0: none, 1: full).
    weighted_reg
        Scale each row's L2 strength by its number of ratings (weighted lambda).
    init_std
        Standard deviation of the random initial item factors.
    seed
        Seed of the initial item factors (``None``: fresh entropy).
    device
        ``None``/``"auto"`` (CUDA when available, as in every cfrec model), ``"cpu"`` (numpy and
        scipy; LAPACK for ``"exact"``) or ``"cuda"`` (torch sparse products; batched Cholesky for
        ``"exact"``). Both solve the same systems and agree to float32 rounding.
    threads
        CPU workers of the conjugate-gradient products (``None``: every core, see
        :func:`~cfrec.threads.pool_threads`, or ``CFREC_NUM_THREADS``), and threads of the
        ``"exact"`` solver's LAPACK calls (``None``: :func:`~cfrec.threads.threads_for` their
        size). Results do not depend on it.
    """

    name = "ials"
    state_layout = {"model.weighting_idf": Array(("items",), optional=True),
                    "model.weighting_mean_length": Array((1,), optional=True)}

    n_factors: int = param(default=64, ge=1)
    reg: float = param(default=40.0, gt=0)
    alpha: float = param(default=0.5, ge=0)
    iterations: int = param(default=10, ge=1)
    solver: Literal["cg", "exact"] = "cg"
    cg_steps: int = param(default=3, ge=1)
    confidence: Literal["linear", "log"] = "linear"
    eps: float = param(default=1.0, gt=0)
    weighting: Literal["bm25", "tfidf"] | None = "tfidf"
    bm25_k1: float = param(default=100.0, ge=0)
    bm25_b: float = param(default=0.8, ge=0, le=1)
    weighted_reg: bool = False
    init_std: float = param(default=0.1, ge=0)

    # ------------------------------------------------------------------ fitting
    def _weights(self, ratings: np.ndarray) -> np.ndarray:
        """``c - 1`` of every (already reweighted) strength (float32), after checking them."""
        r = np.asarray(ratings, dtype=np.float32)
        if len(r) and (not np.all(np.isfinite(r)) or r.min() < 0):
            raise CfrecError(
                "iALS needs finite ratings or weights >= 0 (they set the confidence "
                "1 + alpha * f(w))"
            )
        return confidence_minus_one(r, float(self.alpha), self.confidence, float(self.eps))

    def _train_weights(self, train: Interactions) -> np.ndarray:
        """``c - 1`` of every training row in row order: weights (implicit data) or ratings
        (explicit), reweighted by ``weighting``; keeps the weighting's statistics for fold-in."""
        values = interaction_values(train)
        self._weights(values)  # checked before the weighting divides by them
        stats = None
        if self.weighting is not None:
            seen = getattr(self, "seen_", None)  # fit's binary CSR of these rows: not built again
            shared = seen is not None and seen.shape == (train.n_users, train.n_items)
            stats = weighting_stats(train.users, train.items, values, train.n_users, train.n_items,
                                    pairs=seen if shared else None)
        self.weighting_stats_: WeightingStats | None = stats
        return self._pair_weights(train.users, train.items, values, train.n_users, train.n_items, stats)

    def _pair_weights(self, users: np.ndarray, items: np.ndarray, values: np.ndarray, n_users: int,
                      n_items: int, stats: WeightingStats | None,
                      lengths: np.ndarray | None = None) -> np.ndarray:
        """``c - 1`` of interactions given the weighting's statistics: every pair's weight
        depends only on its value, its item's IDF and (BM25) its user's summed values, so a
        block of interactions is weighed alone when ``lengths`` (every user's summed values)
        are given."""
        weighted = row_weighting(users, items, values, n_users, n_items, self.weighting or "none",
                                 k1=float(self.bm25_k1), b=float(self.bm25_b), stats=stats,
                                 lengths=lengths)
        return self._weights(weighted)

    def _reg_diag(self, counts: np.ndarray) -> np.ndarray:
        n = np.maximum(np.asarray(counts, dtype=np.float32), 1.0)
        return (
            float(self.reg) * n if self.weighted_reg else np.full(len(n), float(self.reg))
        ).astype(np.float32)

    def _fit(
        self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None
    ) -> None:
        self._weights(train.ratings[:0])  # parameters checked before any work
        steps = self._cg_iterations(train) if self.solver == "cg" else self._exact_iterations(train)
        factors: list[Any] = [None, None]

        def iteration(_: int) -> dict[str, Any]:
            factors[0], factors[1], loss = next(sweeps)
            return {"train_loss": loss / len(train)}

        with closing(steps):
            sweeps = after_setup(steps)
            self.history_.extend(Trainer("iALS", int(self.iterations), on_epoch).run(iteration))
        self.user_factors_, self.item_factors_ = (to_numpy(f) for f in factors)

    def _initial_items(self, n_items: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.normal(0.0, float(self.init_std), (n_items, int(self.n_factors))).astype(
            np.float32
        )

    def _cg_iterations(self, train: Interactions) -> Generator[tuple[Any, Any, float] | None, None, None]:
        """Conjugate-gradient sweeps; yields ``(user factors, item factors, objective)`` per
        iteration (arrays of the engine's backend). The objective comes from the CG steps' own
        bookkeeping: after the item half-step it is ``sum_rated c + 2 sum_i f_i + sum_u reg_u
        |x_u|^2``."""
        k = int(self.n_factors)
        n_users, n_items = train.n_users, train.n_items
        dev = resolve_device(self.device)
        engine = cg_engine(
            dev, train.users, train.items, n_users, n_items, width=k, threads=self.threads
        )
        with engine:
            us, its = engine.user_side, engine.item_side
            # c - 1 in each side's rating order (one array when both sides share the order)
            w_all = self._train_weights(train)
            w_np = us.take(w_all)
            rated = float(len(w_np)) + float(
                np.sum(w_np, dtype=np.float64)
            )  # sum of c over rated pairs
            w_u = engine.xp.asarray(w_np, np.float32)
            del w_np
            w_i = (
                w_u
                if its.order is us.order
                else engine.xp.asarray(its.take(w_all), np.float32)
            )
            del w_all
            reg_u = engine.xp.asarray(self._reg_diag(us.counts)[:, None], np.float32)
            reg_i = engine.xp.asarray(self._reg_diag(its.counts)[:, None], np.float32)
            p = engine.xp.zeros((n_users, k))
            q = engine.xp.asarray(self._initial_items(n_items), np.float32)
            yield None  # set-up done (see after_setup)
            for _ in range(int(self.iterations)):
                p, _ = self._cg_half(engine, us, q, p, w_u, reg_u)
                q, f = self._cg_half(engine, its, p, q, w_i, reg_i)
                loss = rated + 2.0 * f + engine.xp.sum64(reg_u[:, 0] * engine.xp.rowdot(p, p))
                yield p, q, loss

    def _cg_half(self, engine: CGEngine, side: CGSide, fixed: Any, current: Any, weight: Any, diag: Any,
                 gram: Any = None) -> tuple[Any, float]:
        """One side's CG half-step against the fixed other side (``fixed``: every row the side's
        interactions name); ``gram`` is ``fixed``'s full Gram matrix ``F'F``, computed here when
        None (a blocked fit passes the sum of its blocks' Grams). Returns the new rows and their
        part of the objective (see :func:`~cfrec.engines.cg.cg_half_step`)."""
        if gram is None:
            gram = engine.xp.gram(fixed)
        return cg_half_step(engine, side, fixed, current, target=None, weight=weight, gram=gram, diag=diag,
                            steps=int(self.cg_steps))

    def _exact_iterations(
        self, train: Interactions
    ) -> Generator[tuple[Any, Any, float] | None, None, None]:
        """Exact sweeps (normal equations, batched LAPACK / Cholesky); yields as
        :meth:`_cg_iterations`, with the objective computed from the ratings."""
        k = int(self.n_factors)
        xp = array_backend(resolve_device(self.device))
        n_users, n_items = train.n_users, train.n_items
        weight = self._train_weights(train)
        by_user = RatingSide.build(train.users, train.items, n_users, n_items)
        by_item = RatingSide.build(train.items, train.users, n_items, n_users)
        reg_u, reg_i = self._reg_diag(by_user.counts), self._reg_diag(by_item.counts)
        users, items = train.users.astype(np.int64), train.items.astype(np.int64)
        w_user, w_item = xp.asarray(weight[by_user.order]), xp.asarray(weight[by_item.order])
        x_reg_u, x_reg_i = xp.asarray(reg_u), xp.asarray(reg_i)
        q = xp.asarray(self._initial_items(n_items))
        # one small dense system per row: the work of one LAPACK call is k^2
        with using_threads(threads_for(k * k, self.threads)):
            yield None  # set-up done (see after_setup)
            for _ in range(int(self.iterations)):
                p = implicit_solve(xp, by_user, q, w_user, x_reg_u)
                q = implicit_solve(xp, by_item, p, w_item, x_reg_i)
                p_np, q_np = xp.to_numpy(p), xp.to_numpy(q)
                yield p_np, q_np, implicit_objective(users, items, weight, p_np, q_np, reg_u, reg_i)

    # ------------------------------------------------------------------ scoring
    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """Solve a new user's vector as a training half-step would, against the fixed items.

        ``(Y'Y + Y_u' (C_u - I) Y_u + reg_u I) x = Y_u' c_u`` with the model's weighting (against
        the training IDF and mean row length) and confidence rule applied to ``ratings`` (the
        user's weights or counts for a model of implicit data) and its ``reg`` (times the number of known items with
        ``weighted_reg``); ``reg`` overrides the model's. Folding in a training user's own
        ratings gives back (close to) that user's learned vector. Without ratings every item counts
        as rated at the top of the scale. Unknown items are ignored and reported; the bias is 0; a
        user with no known item gets the popularity list.
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        idx, r = given.items, given.ratings
        y, gram = self._item_gram()
        k = y.shape[1]
        if not len(idx):
            return self._empty_folded(given, k)
        w = self._fold_in_weights(idx, r).astype(np.float64)
        lam = (
            float(self._reg_diag(np.array([len(idx)]))[0])
            if reg is None
            else float(reg) * (len(idx) if self.weighted_reg else 1.0)
        )
        yu = y[idx]
        a = gram + (yu * w[:, None]).T @ yu + lam * np.eye(k)
        x = np.linalg.solve(a, yu.T @ (1.0 + w))
        return FoldedUser(
            0.0,
            x.astype(np.float32),
            idx.astype(np.int32),
            len(idx),
            unknown_items=given.unknown,
            duplicate_items=given.duplicates,
        )

    def _fold_in_weights(self, items: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``c - 1`` of a new user's items, weighed like a training row."""
        self._weights(values)
        stats = getattr(self, "weighting_stats_", None)
        if stats is None:  # no weighting (or a model saved before weightings existed)
            return self._weights(values)
        n = len(items)
        weighted = row_weighting(np.zeros(n, dtype=np.int64), items, values, 1, len(stats.idf),
                                 self.weighting or "none", k1=float(self.bm25_k1),
                                 b=float(self.bm25_b), stats=stats)
        return self._weights(weighted)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        stats = getattr(self, "weighting_stats_", None)
        if stats is not None:
            state["weighting_idf"] = stats.idf.astype(np.float64)
            state["weighting_mean_length"] = np.array([stats.mean_length], dtype=np.float64)
        return state

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        idf = arrays.get("weighting_idf")
        self.weighting_stats_ = (None if idf is None else WeightingStats(
            np.asarray(idf, dtype=np.float64), float(arrays["weighting_mean_length"][0])))

    def _item_gram(self) -> tuple[np.ndarray, np.ndarray]:
        """The item factors in float64 and their Gram ``Y'Y``, computed once per set of factors
        (a fold-in would otherwise spend most of its time on them); a cache, never saved."""
        cached = self.__dict__.get("_gram_cache")
        if cached is None or cached[0] is not self.item_factors_:
            y = self.item_factors_.astype(np.float64)
            cached = (self.item_factors_, y, y.T @ y)
            self.__dict__["_gram_cache"] = cached  # one assignment: safe under concurrent calls
        return cached[1], cached[2]
