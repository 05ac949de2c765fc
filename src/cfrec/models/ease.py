"""EASE: the embarrassingly shallow autoencoder of Steck (2019), a closed-form item-item model.

The users x items interaction matrix ``X`` is reconstructed through an items x items weight
matrix ``B`` with a zero diagonal (an item may not predict itself)::

    min_B |X - X B|_F^2 + lam |B|_F^2   subject to   diag(B) = 0

whose exact solution, with ``G = X'X + lam I`` and ``P = G^-1``, is ``B = -P / diag(P)`` (each
column ``j`` divided by ``-P_jj``) with the diagonal set to zero. A user's scores are ``X_u B``:
one sparse row times a dense matrix, so fold-in of a new user is exact and free.

The price is memory: ``G``, ``P`` and ``B`` are dense items x items matrices. Fitting holds
``G`` (factored and inverted in place, so ``P`` shares its memory) and ``B``: about
``12 x n_items^2`` bytes with the default float64 solve and ``4 x n_items^2`` with
``dtype="float32"`` (``B`` is then computed in place of ``P``); the fitted model keeps ``B`` in
float32 (``4 x n_items^2`` bytes: 0.46 GB for ML-10M's 10,677 items, 13.9 GB for ML-25M's
59,047). :class:`EASE` refuses a catalogue above ``max_items`` before allocating anything.

The work is ``n_items^3`` floating-point operations (Cholesky factorisation and inverse), so
before the dense solve starts EASE logs what it will cost (:func:`dense_solve_cost`: seconds at
a measured or stated FLOP rate, and bytes). Above :data:`DENSE_AUTO_MAX_ITEMS` items (or with
``solver="sparse"``) it solves instead each item's regression on its ``neighbours`` nearest
items only (:mod:`cfrec.engines.sparse_ease`): ``n k^3`` work and a sparse ``B`` of ``n k``
entries, exact when every item is a neighbour.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from cfrec.data.interactions import Interactions
from cfrec.engines.matrix import interaction_matrix, interaction_weights
from cfrec.engines.sparse_ease import cooccurrence, neighbour_solve, top_neighbours
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.layout import Array, csr
from cfrec.models.params import hyperparameters, param
from cfrec.models.persistence import sparse_from_state, sparse_to_state
from cfrec.models.ranking_only import RankingRecommender
from cfrec.threads import run_chunks, threads_for, using_threads

logger = logging.getLogger(__name__)

_DTYPES = ("float64", "float32")
#: Dense entries per block when forming the Gram matrix and copying triangles (bounds temporaries).
_BLOCK_ENTRIES = 1 << 22
#: Most threads forming the Gram matrix's column blocks.
_GRAM_THREADS = 8
#: Gathered nonzeros per chunk when scoring (user, item) pairs.
_PAIR_CHUNK = 1 << 22
#: Columns of ``G (I - B)`` checked after the solve (see :func:`ease_residual`), and the largest
#: relative off-diagonal entry accepted per solve dtype.
_RESIDUAL_COLUMNS = 16
_RESIDUAL_TOL = {"float64": 1e-6, "float32": 1e-3}


#: ``solver="auto"`` solves densely up to this many items and over neighbours above: at 10,000
#: items the dense solve is 10^12 operations and 1.2 GB; at 17,587 items 5.4 * 10^12 and 3.7 GB
#: (173 CPU seconds on two shared cores, against 6 for the neighbour solve, whose NDCG@10 was
#: 2.5% above the dense solve's; see :class:`EASE`).
DENSE_AUTO_MAX_ITEMS = 10_000
#: Share of the measured matrix-product rate assumed for LAPACK's Cholesky factorisation and
#: inverse. The small probe errs long: on two cores shared with other work it gave 2 GFLOP/s and
#: an estimate of 2,896 s for 17,587 items, whose solve took 648 s.
_SOLVE_EFFICIENCY = 0.7
#: Side of the matrix product timed by :func:`measure_gflops` (about 0.27 GFLOP).
_PROBE_SIZE = 512
#: A dense solve estimated to take this long or longer is announced as a warning (which the
#: command line shows); shorter ones at info level.
_ANNOUNCE_SECONDS = 10.0


@dataclass(frozen=True)
class SolveCost:
    """What a dense EASE solve will cost, estimated before it starts."""

    n_items: int
    flops: float  #: floating-point operations of the factorisation and inverse (``n^3``)
    gflops: float  #: the rate assumed, in 10^9 operations per second
    seconds: float  #: ``flops / (gflops * 10^9)``
    fit_bytes: int  #: memory while fitting (see :func:`ease_memory_bytes`)
    model_bytes: int  #: memory of the fitted weights
    measured: bool  #: whether ``gflops`` was measured here (else stated by the caller)

    def describe(self) -> str:
        how = "measured" if self.measured else "stated"
        return (f"about {_duration(self.seconds)} ({self.flops / 1e12:.2g} TFLOP at {self.gflops:.3g} "
                f"GFLOP/s {how}) and {_gigabytes(self.fit_bytes)} while fitting")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def measure_gflops(dtype: str = "float64", threads: int = 1) -> float:
    """The rate (10^9 operations per second) LAPACK's Cholesky and inverse can be expected to
    reach here: the best of three timed ``512 x 512`` matrix products in ``dtype`` on ``threads``
    BLAS threads, times the share such solves reach on large matrices (a few milliseconds)."""
    a = np.random.default_rng(0).standard_normal((_PROBE_SIZE, _PROBE_SIZE)).astype(dtype)
    best = float("inf")
    with using_threads(max(1, int(threads))):
        for _ in range(3):
            start = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - start)
    return 2.0 * _PROBE_SIZE ** 3 / max(best, 1e-9) / 1e9 * _SOLVE_EFFICIENCY


def dense_solve_cost(n_items: int, dtype: str = "float64", *, gflops: float | None = None,
                     threads: int = 1) -> SolveCost:
    """Time and memory of EASE's dense solve of ``n_items`` items, before it starts.

    The Cholesky factorisation (``n^3 / 3``) and the inverse from it (``2 n^3 / 3``) dominate;
    their rate is ``gflops`` when stated, else :func:`measure_gflops` on ``threads`` threads.
    Memory is :func:`ease_memory_bytes`.
    """
    n = int(n_items)
    measured = gflops is None
    rate = measure_gflops(dtype, threads) if gflops is None else float(gflops)
    flops = float(n) ** 3
    fit_b, model_b = ease_memory_bytes(n, dtype)
    return SolveCost(n, flops, rate, flops / (rate * 1e9), fit_b, model_b, measured)


def ease_memory_bytes(n_items: int, dtype: str = "float64") -> tuple[int, int]:
    """Bytes EASE needs for a catalogue of ``n_items``: ``(while fitting, fitted model)``.

    Fitting holds the Gram matrix (inverted in place) and the float32 weights: ``12 n^2`` bytes
    with a float64 solve, ``4 n^2`` with a float32 one (weights computed in place). The fitted
    model keeps the float32 weights, ``4 n^2`` bytes. Sparse inputs and blocks come on top.
    """
    n2 = int(n_items) ** 2
    return (12 * n2 if dtype == "float64" else 4 * n2), 4 * n2


def _gigabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.0f} MB"


def gram_matrix(x: sp.csr_array, lam: float, dtype: str, threads: int = 1) -> np.ndarray:
    """The upper triangle of ``X'X + lam I`` in a dense Fortran-ordered matrix of ``dtype``.

    Only the upper triangle (with the square diagonal blocks) is formed, as the Cholesky
    factorisation reads no other entry; below the diagonal blocks the matrix stays zero. It is
    formed in column blocks: each block is one sparse-sparse product
    (``X[:, :c1]' X[:, c0:c1]``), so no sparse items x items intermediate larger than a block
    exists. The blocks write disjoint columns and run on ``threads`` threads (scipy's sparse
    kernels release the GIL).
    """
    n = x.shape[1]
    g = np.zeros((n, n), dtype=dtype, order="F")
    xc = sp.csc_array(x.astype(np.float64 if dtype == "float64" else np.float32))
    xt = xc.T.tocsr()
    step = max(1, _BLOCK_ENTRIES // max(n, 1))

    def block(c0: int) -> None:
        c1 = min(c0 + step, n)
        g[:c1, c0:c1] = sp.csr_array(xt[:c1] @ xc[:, c0:c1]).toarray()

    starts = list(range(0, n, step))
    run_chunks(block, starts, min(int(threads), _GRAM_THREADS))
    g[np.arange(n), np.arange(n)] += lam
    return g


def _fill_upper_from_lower(c_view: np.ndarray) -> None:
    """Fill the strict upper triangle of a C-ordered square matrix from its lower triangle, in place.

    Works in row blocks so the temporaries stay at one block.
    """
    n = c_view.shape[0]
    step = max(1, min(2048, _BLOCK_ENTRIES // max(n, 1)))
    for r0 in range(0, n, step):
        r1 = min(r0 + step, n)
        diag = c_view[r0:r1, r0:r1]
        low = np.tril(diag)
        diag[...] = low + np.tril(low, -1).T
        if r1 < n:
            c_view[r0:r1, r1:] = c_view[r1:, r0:r1].T


def ease_solve(gram: np.ndarray) -> np.ndarray:
    """EASE weights ``B`` (float32, C order) from ``G = X'X + lam I``, destroying ``gram``.

    ``gram`` must be a Fortran-ordered float64 or float32 matrix whose upper triangle holds ``G``
    (as :func:`gram_matrix` returns; the lower triangle is not read): LAPACK's Cholesky factorisation and inverse (``potrf``/``potri``) run in its memory, so
    ``P = G^-1`` costs no second matrix. Then ``B[:, j] = -P[:, j] / P[j, j]`` with
    ``B[j, j] = 0``. Raises :class:`CfrecError` when ``G`` is not positive definite.
    """
    if (gram.ndim != 2 or gram.shape[0] != gram.shape[1] or not gram.flags.f_contiguous
            or gram.dtype not in (np.float64, np.float32)):
        raise CfrecError(f"EASE solve needs a square Fortran-ordered float64 or float32 Gram matrix, got "
                         f"shape {gram.shape}, dtype {gram.dtype}")
    n = gram.shape[0]
    double = gram.dtype == np.float64
    potrf, potri = (lapack.dpotrf, lapack.dpotri) if double else (lapack.spotrf, lapack.spotri)
    chol, info = potrf(gram, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise CfrecError(f"EASE Gram matrix is not positive definite (LAPACK potrf info={info}); "
                         "use a larger lam or dtype='float64'")
    inv, info = potri(chol, lower=0, overwrite_c=1)
    if info != 0:
        raise CfrecError(f"EASE Gram matrix could not be inverted (LAPACK potri info={info}); use a larger lam")
    # The Fortran upper triangle is the lower triangle of the C-ordered transpose view; P is
    # symmetric, so that view is P itself once the other triangle is copied over.
    p = inv.T
    _fill_upper_from_lower(p)
    diag = np.diagonal(p).copy()
    if not np.all(np.isfinite(diag)) or diag.min(initial=1.0) <= 0:
        raise CfrecError("EASE inverse has a non-positive or non-finite diagonal; use a larger lam")
    scale = (-1.0 / diag).astype(p.dtype)
    step = max(1, _BLOCK_ENTRIES // max(n, 1))
    if p.dtype == np.float32:
        for r0 in range(0, n, step):  # in place: B shares P's memory
            p[r0:r0 + step] *= scale[None, :]
        b = p
    else:
        b = np.empty((n, n), dtype=np.float32)
        for r0 in range(0, n, step):
            b[r0:r0 + step] = p[r0:r0 + step] * scale[None, :]
    b[np.arange(n), np.arange(n)] = 0.0
    return b


def ease_residual(x: sp.csr_array, lam: float, b: np.ndarray, *, n_columns: int = _RESIDUAL_COLUMNS,
                  seed: int = 0) -> float:
    """How far the solve is from exact, checked on a few random columns of ``B``.

    With ``P = G^-1`` and ``D`` its diagonal, ``B = I - P D^-1``, so ``G (I - B) = D^-1`` must be
    diagonal. The check forms ``G (I - B)`` on ``n_columns`` random columns through ``X`` (sparse
    products, no items x items temporary) and returns the largest off-diagonal entry relative to
    its column's diagonal entry.
    """
    n = b.shape[0]
    cols = np.random.default_rng(seed).choice(n, min(n_columns, n), replace=False)
    ib = -b[:, cols].astype(np.float64)
    ib[cols, np.arange(len(cols))] += 1.0
    xd = x.astype(np.float64)
    gib = xd.T @ (xd @ ib) + lam * ib  # G (I - B)[:, cols], shape (n, len(cols))
    d = gib[cols, np.arange(len(cols))].copy()
    gib[cols, np.arange(len(cols))] = 0.0
    return float(np.max(np.abs(gib) / np.abs(d)[None, :]))


@hyperparameters
class EASE(RankingRecommender):
    """EASE (Steck 2019): a closed-form item-item autoencoder for top-K ranking.

    Each training rating ``r >= threshold`` (every rating with ``threshold=None``) becomes an
    interaction of weight ``x_ui = (r / r_max) ** rating_power`` in the users x items matrix
    ``X`` (``r_max``: the top of the rating scale; ``rating_power=0`` gives the binary ``X`` of
    the paper). ``B`` solves ``min |X - X B|^2 + lam |B|^2`` with ``diag(B) = 0`` in closed form
    (see :mod:`cfrec.models.ease`) and user ``u``'s scores are ``X_u B``, computed for many
    users at once as one sparse-times-dense product. ``valid`` is ignored: there is nothing to
    iterate or stop early.

    **Memory is items^2**: fitting needs about ``12 x n_items^2`` bytes (float64 solve; 4.8 GB at
    20,000 items) or ``4 x n_items^2`` (``dtype="float32"``), the fitted model ``4 x n_items^2``
    (``B_`` in float32; ML-10M's 10,677 items: 0.46 GB; ML-25M's 59,047: 13.9 GB). A catalogue
    above ``max_items`` is refused with a :class:`~cfrec.errors.CfrecError` before anything is
    allocated; the ``ials`` model, whose memory grows with items x factors, is the alternative.

    Scores are reconstructions ``s = X_u B`` (no biases; ``user_bias_`` and ``item_bias_`` are
    zeros). ``predicts_ratings`` is False: ``predict`` maps ``s`` linearly onto the rating scale
    (``low + s * (high - low)``) and clips it, like :class:`~cfrec.models.ials.IALS`: a monotone
    preference score, not a rating estimate. An unknown user, and a user without any interaction
    (every rating below ``threshold``), is ranked by item popularity (training ratings per item,
    divided by the largest count). :meth:`fold_in` of a new user's items is exact: their scores
    are ``x @ B``, so folding in a training user's own ratings gives back that user's scores.
    ``similar_items`` compares the columns of ``B`` by cosine (see :meth:`item_embeddings`).

    Defaults were chosen by NDCG@10 (ratings >= 4 relevant, all unrated items ranked) on two
    random 20% validation carves of ML-100K's ``u1.base`` (no test file used): rating-weighted
    input with ``rating_power=1.5`` and ``lam=200`` (0.285) beat binary input on ratings >= 4
    (0.270 at its best, ``lam=300``), on ratings >= 3 (0.277) and on every rating (0.264), and
    powers 1 (0.281) and 2 (0.281). On the official folds u1..u5 (every unrated item ranked)
    they give NDCG@10 0.486, 0.441, 0.390, 0.394, 0.385 (mean 0.419), Recall@10 0.288 and
    MAP@10 0.287 on average, against 0.391 / 0.275 / 0.259 for ``ials`` and 0.400 / 0.271 / 0.270
    for binary ratings >= 4 with ``lam=300`` (``benchmarks/ranking_folds.py``).

    Parameters
    ----------
    lam
        L2 strength on ``B`` (added to the diagonal of ``X'X``); larger values smooth towards
        popularity. It competes with the squared interaction weights summed per item, so it
        grows with the number of ratings per item.
    threshold
        Ratings ``>= threshold`` count as interactions; ``None``: every rating.
    rating_power
        Interaction weight ``(rating / top of the rating scale) ** rating_power``; ``0`` gives
        binary interactions. Needs positive ratings when not 0.
    max_items
        Largest catalogue accepted (items in the training data); see the memory note above.
    dtype
        ``"float64"`` (default) or ``"float32"`` for the Gram matrix and its inverse. float32
        needs a third of the memory; its solve is checked (see ``residual_``: 2e-5 on ML-10M's
        size) and one above 1e-3 raises (use float64 or a larger ``lam`` then).
    threads
        CPU threads for the Gram matrix and the solve (``None``: :func:`~cfrec.threads.threads_for`
        their work, or ``CFREC_NUM_THREADS``).
    solver
        ``"dense"``: the exact solve (``n_items^3`` work, ``12 n_items^2`` bytes), its time and
        memory logged before it starts (a warning, which the command line shows, when it is
        estimated at 10 s or more); ``"sparse"``: each item's regression on its ``neighbours``
        nearest items only (:mod:`cfrec.engines.sparse_ease`; ``B_`` is then a sparse CSR of
        ``n_items x neighbours`` entries and ``max_items`` does not apply); ``"auto"``: dense up
        to :data:`DENSE_AUTO_MAX_ITEMS` (10,000) items, sparse above.
    neighbours, neighbour_rule
        The sparse solve's neighbours per item and how they are ranked among the items that
        co-occur with it: by co-occurrence count or by cosine ``G_ij / sqrt(G_ii G_jj)``. Chosen
        against the dense solve, NDCG@10 on a random 80/20 pair split with ``lam=50``
        (``benchmarks/ease_sparse.py``): on a synthetic log of 17,587 trained items (Zipf 0.7
        popularity, 240,000 pairs) the dense solve gave 0.0679 in 173 CPU seconds, 64 cosine
        neighbours 0.0696 (+2.5%) in 6.0, 64 by co-occurrence 0.0711 in 6.5, 32 cosine 0.0684;
        on ML-100K as a log the dense solve gave 0.408, 64 cosine neighbours 0.427, 64 by
        co-occurrence 0.403, 32 by co-occurrence 0.388 (-5%). Cosine with 64 is the default.
    implicit_weight
        For implicit data (a log whose ``weights`` are event counts or summed weights), the
        entries of ``X``: ``"binary"`` (1), ``"log"`` (``log(1 + w)``) or ``"count"`` (``w``).
        Ratings of explicit data follow ``threshold`` and ``rating_power`` instead.
    solve_gflops
        The FLOP rate (10^9 per second) the dense solve's time estimate assumes; ``None``
        measures it (:func:`measure_gflops`, a few milliseconds).

    Attributes
    ----------
    B_
        Item-item weights, float32 array of shape (n_items, n_items) with a zero diagonal (a
        sparse CSR array after the sparse solve):
        ``B_[j, i]`` is how much interacting with item ``j`` adds to the score of item ``i``.
    x_
        The weighted users x items interaction matrix (float32 CSR) that scores training users.
    residual_
        Largest relative off-diagonal entry of ``G (I - B)`` on a few random columns (exactly
        diagonal in exact arithmetic): the accuracy of the solve (NaN after the
        sparse solve).
    solver_
        ``"dense"`` or ``"sparse"``: the solve that produced ``B_``.
    fit_cost_
        The dense solve's estimate made before it started and the measured seconds of each step.
    """

    name = "ease"
    state_layout = {"model.B": Array(("items", "items"), optional=True),
                    **csr("model.B", "items", "items", optional=True), **csr("model.x", "users", "items")}

    lam: float = param(default=200.0, gt=0)
    threshold: float | None = None
    rating_power: float = param(default=1.5, ge=0)
    max_items: int = param(default=20_000, ge=1)
    dtype: Literal["float64", "float32"] = "float64"
    threads: int | None = param(default=None, ge=1)
    solver: Literal["auto", "dense", "sparse"] = "auto"
    neighbours: int = param(default=64, ge=1)
    neighbour_rule: Literal["cooccurrence", "cosine"] = "cosine"
    implicit_weight: Literal["binary", "log", "count"] = "binary"
    solve_gflops: float | None = param(default=None, gt=0)

    # ------------------------------------------------------------------ fitting
    def uses_sparse_solver(self, n_items: int) -> bool:
        """Whether a catalogue of ``n_items`` is solved over neighbours (``solver="sparse"``, or
        ``"auto"`` above :data:`DENSE_AUTO_MAX_ITEMS` items) rather than densely."""
        return self.solver == "sparse" or (self.solver == "auto" and n_items > DENSE_AUTO_MAX_ITEMS)

    def solve_cost(self, n_items: int) -> SolveCost:
        """What the dense solve of ``n_items`` items will cost here (see :func:`dense_solve_cost`)."""
        return dense_solve_cost(n_items, self.dtype, gflops=self.solve_gflops,
                                threads=threads_for(n_items ** 3 // 3, self.threads))

    def check_catalogue(self, n_items: int, cost: SolveCost | None = None) -> None:
        """Refuse a dense solve above ``max_items``, saying what it would cost (memory, and time
        when ``cost`` is given) and naming the sparse solver. The neighbour solve is not limited."""
        if n_items <= int(self.max_items) or self.uses_sparse_solver(n_items):
            return
        fit_b, model_b = ease_memory_bytes(n_items, self.dtype)
        f32_fit, _ = ease_memory_bytes(n_items, "float32")
        alt = "" if self.dtype == "float32" else f"; {_gigabytes(f32_fit)} with dtype='float32'"
        took = "" if cost is None else f", about {_duration(cost.seconds)} at {cost.gflops:.3g} GFLOP/s"
        raise CfrecError(
            f"EASE keeps a dense items x items matrix: {n_items:,} items would need "
            f"{_gigabytes(fit_b)} while fitting ({self.dtype} solve{alt}{took}) and {_gigabytes(model_b)} "
            f"for the fitted model, above max_items={int(self.max_items):,}. Use solver='sparse' "
            f"(each item's {int(self.neighbours)} nearest neighbours; memory grows with items x "
            "neighbours), the 'ials' model (memory grows with items x factors), or raise max_items "
            "on a machine with that memory.")

    def _weights(self, ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which ratings are interactions (a mask) and their weights (float32, the kept ones)."""
        return interaction_weights(ratings, threshold=self.threshold, power=self.rating_power,
                                   top=self.rating_scale_[1], model="EASE")

    def _implicit_values(self, weights: np.ndarray) -> np.ndarray:
        """An implicit log's pair weights (event counts, summed weights) as entries of ``X``:
        1 (``implicit_weight="binary"``), ``log(1 + w)`` or ``w``."""
        w = np.asarray(weights, dtype=np.float32)
        if self.implicit_weight == "binary":
            return np.ones(len(w), dtype=np.float32)
        if len(w) and w.min() < 0:
            raise CfrecError(f"EASE implicit_weight={self.implicit_weight!r} needs weights >= 0 "
                             f"(got {float(w.min()):g}); use implicit_weight='binary'")
        return np.log1p(w) if self.implicit_weight == "log" else w

    def _train_matrix(self, train: Interactions) -> sp.csr_array:
        """The users x items matrix ``X``: weighted ratings of explicit data, the chosen function
        of the pair weights of an implicit log."""
        if train.is_implicit and train.weights is not None:
            w = self._implicit_values(train.weights)
            return interaction_matrix(train.users, train.items, w, train.n_users, train.n_items)
        keep, w = self._weights(train.ratings)
        return interaction_matrix(train.users[keep], train.items[keep], w, train.n_users, train.n_items)

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        n_users, n_items = train.n_users, train.n_items
        self.implicit_ = bool(train.is_implicit and train.weights is not None)
        if self.uses_sparse_solver(n_items):
            self._fit_sparse(self._train_matrix(train))
            return
        cost = self.solve_cost(n_items)
        self.check_catalogue(n_items, cost)
        logger.log(logging.WARNING if cost.seconds >= _ANNOUNCE_SECONDS else logging.INFO,
                   "EASE dense solve of %s items: %s; solver='sparse' restricts each item to its "
                   "%d nearest neighbours", f"{n_items:,}", cost.describe(), int(self.neighbours))
        x = self._train_matrix(train)
        lam = float(self.lam)
        start = time.perf_counter()
        gram_work = int(x.nnz) * max(int(x.nnz) // max(n_users, 1), 1)  # products of co-rated pairs
        gram = gram_matrix(x, lam, self.dtype, threads_for(gram_work, self.threads))
        gram_s = time.perf_counter() - start
        with using_threads(threads_for(n_items ** 3 // 3, self.threads)):  # Cholesky + inverse
            b = ease_solve(gram)
        del gram
        solve_s = time.perf_counter() - start - gram_s
        residual = ease_residual(x, lam, b)
        if not np.isfinite(residual) or residual > _RESIDUAL_TOL[self.dtype]:
            raise CfrecError(f"EASE {self.dtype} solve is inaccurate (residual {residual:.2e}); "
                             "use dtype='float64' or a larger lam")
        self.B_: np.ndarray | sp.csr_array = b
        self.x_ = x
        self.residual_ = residual
        self.solver_ = "dense"
        self.fit_cost_ = {"estimated_seconds": cost.seconds, "gflops": cost.gflops,
                          "fit_bytes": cost.fit_bytes, "gram_seconds": gram_s, "solve_seconds": solve_s}
        logger.info("EASE on %d items: Gram %.2fs, solve %.2fs, residual %.1e", n_items, gram_s,
                    solve_s, residual)

    def _fit_sparse(self, x: sp.csr_array) -> None:
        """``B`` over each item's ``neighbours`` nearest items (:mod:`cfrec.engines.sparse_ease`)."""
        n_items = x.shape[1]
        k = min(int(self.neighbours), max(n_items - 1, 1))
        start = time.perf_counter()
        g = cooccurrence(x)
        est_bytes = int(g.nnz) * 8 + n_items * k * 8 + (1 << 23) * 8 * 2
        logger.info("EASE neighbour solve of %s items, %d neighbours each: about %.2g GFLOP and %s "
                    "(co-occurrence matrix of %s entries)", f"{n_items:,}", k, n_items * k ** 3 / 3 / 1e9,
                    _gigabytes(est_bytes), f"{g.nnz:,}")
        ptr, idx = top_neighbours(g, k, self.neighbour_rule)
        gram_s = time.perf_counter() - start
        b = neighbour_solve(g, ptr, idx, float(self.lam), threads_for(n_items * k ** 3 // 3, self.threads))
        del g
        solve_s = time.perf_counter() - start - gram_s
        self.B_ = b
        self.x_ = x
        self.residual_ = float("nan")
        self.solver_ = "sparse"
        self.fit_cost_ = {"gram_seconds": gram_s, "solve_seconds": solve_s, "neighbours": k}
        logger.info("EASE on %d items over %d neighbours: co-occurrence and neighbours %.2fs, solve %.2fs",
                    n_items, k, gram_s, solve_s)

    # ------------------------------------------------------------------ scoring
    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``X_u . B[:, i]`` per pair: each user's nonzeros gathered in chunks, no dense rows."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = np.empty(len(users), dtype=np.float32)
        indptr = self.x_.indptr
        deg = indptr[users + 1] - indptr[users]
        cuts = np.searchsorted(np.cumsum(deg), np.arange(_PAIR_CHUNK, int(deg.sum()), _PAIR_CHUNK),
                               side="right")
        edges = np.unique(np.r_[0, cuts, len(users)])
        for s, e in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
            rows = self.x_[users[s:e]]
            which = np.repeat(np.arange(e - s), np.diff(rows.indptr))
            weights = self.B_[rows.indices, items[s:e][which]]
            contrib = rows.data * np.asarray(weights, dtype=np.float32).ravel()
            out[s:e] = np.bincount(which, weights=contrib, minlength=e - s)
        empty = deg == 0
        if empty.any():
            out[empty] = self._cold_user_scores()[items[empty]]
        return out

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        if isinstance(self.B_, sp.csr_array):
            scores = np.asarray(sp.csr_array(self.x_[users] @ self.B_).toarray(), dtype=np.float32)
        else:
            scores = np.asarray(self.x_[users] @ self.B_, dtype=np.float32)
        empty = self.x_.indptr[users + 1] == self.x_.indptr[users]
        if empty.any():
            scores[empty] = self._cold_user_scores()
        return scores

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        idx = np.asarray(items, dtype=np.int64)
        nz = np.flatnonzero(user.factors)
        if not len(nz):
            return self._cold_user_scores()[idx]
        if isinstance(self.B_, sp.csr_array):
            return np.asarray(self.B_[nz][:, idx].T @ user.factors[nz], dtype=np.float32)
        return np.asarray(user.factors[nz] @ self.B_[nz][:, idx], dtype=np.float32)

    # ------------------------------------------------------------------ embeddings
    def item_embeddings(self) -> np.ndarray:
        """Row ``i`` is column ``i`` of ``B``: the weights with which every item predicts item ``i``.

        Two items are close by cosine when the same items predict both (on ML-100K, Star Wars'
        nearest are Return of the Jedi and The Empire Strikes Back; The Godfather's are Fargo and
        The Godfather: Part II). Shape (n_items, n_items), a read-only view of ``B_``;
        ``user_embeddings() @ item_embeddings().T`` are the scores.
        """
        self._check_fitted()
        if isinstance(self.B_, sp.csr_array):  # the neighbour solve's sparse B, written out densely
            dense = self.B_.T.toarray()
            dense.flags.writeable = False
            return dense
        view = self.B_.T.view()
        view.flags.writeable = False
        return view

    def user_embeddings(self) -> np.ndarray:
        """The weighted interaction rows ``X`` as a dense (n_users, n_items) float32 array.

        Dense, so it takes ``4 x n_users x n_items`` bytes; scoring never forms it.
        """
        self._check_fitted()
        return self.x_.toarray()

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """A new user is their interaction row ``x``; their scores are ``x @ B`` (exact, no solve).

        With ``ratings`` (on the model's rating scale), the training rule applies: ratings
        ``>= threshold`` become interactions weighted ``(rating / top) ** rating_power``. Without,
        every known item is an interaction of weight 1. Every known item given is excluded from
        the user's recommendations; unknown items are ignored and an item given twice keeps its
        last rating (both are reported on the result). A user without a known item gets the
        cold-start list. ``FoldedUser.factors`` holds the dense ``x`` (n_items,), like a row of
        :meth:`user_embeddings`. ``reg`` is accepted for interface compatibility and unused: the
        fold-in has no regulariser.
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        x = np.zeros(len(self.item_map_), dtype=np.float32)
        if ratings is None:  # one event per item (for a log: weighed like a pair seen once)
            x[given.items] = (self._implicit_values(np.ones(len(given.items), dtype=np.float32))
                              if getattr(self, "implicit_", False) else 1.0)
        else:
            keep, w = self._weights(given.ratings)
            x[given.items[keep]] = w
        known = np.sort(given.items).astype(np.int32)
        return FoldedUser(0.0, x, known, len(known), unknown_items=given.unknown,
                          duplicate_items=given.duplicates)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        if isinstance(self.B_, sp.csr_array):
            return {**sparse_to_state("B", self.B_), **sparse_to_state("x", self.x_)}
        return {"B": np.ascontiguousarray(self.B_, dtype=np.float32), **sparse_to_state("x", self.x_)}

    def _extra_meta(self) -> dict[str, Any]:
        return {"residual": float(self.residual_), "solver": getattr(self, "solver_", "dense"),
                "implicit": bool(getattr(self, "implicit_", False))}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        n_u, n_i = len(self.user_map_), len(self.item_map_)
        x = sparse_from_state(arrays, "x", (n_u, n_i), f"EASE interaction matrix ({n_u} users x {n_i} items)")
        if "B" in arrays:
            b = arrays["B"]
            if b.shape != (n_i, n_i):
                raise ModelFileError(f"EASE item-item matrix has shape {b.shape}, expected ({n_i}, {n_i}) "
                                     "for the item vocabulary")
            self.B_ = np.ascontiguousarray(b, dtype=np.float32)
            self.solver_ = "dense"
        elif "B_indptr" in arrays:
            self.B_ = sparse_from_state(arrays, "B", (n_i, n_i), f"EASE sparse item-item matrix ({n_i} x {n_i} items)")
            self.solver_ = "sparse"
        else:
            raise ModelFileError("EASE weights lack the array 'B' (dense) or 'B_indptr' (sparse)")
        self.x_ = x
        residual = meta.get("residual")  # None: the sparse solve has no residual (NaN in JSON)
        self.residual_ = float("nan") if residual is None else float(residual)
        self.implicit_ = bool(meta.get("implicit", False))

