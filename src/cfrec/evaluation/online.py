"""Online (prequential) evaluation: replay the test ratings in time order, predict each one
before it is revealed, then fold it into its user.

Why: on a global temporal split most test ratings come from users who did not exist at training
time (about 85% on ML-100K 80/20). Offline, such a user is predicted by ``mu + b_i`` forever;
in a live system the user's vector would be re-estimated as their ratings arrive. This protocol
measures that system.

Protocol
--------
* Test ratings are ordered by timestamp; ties are broken deterministically by user id, item id
  and then row position.
* The unit of revelation is a **same-second group**: the ratings one user gave with the same
  timestamp. Every rating of a group is predicted from the state before the group, and only
  then is the whole group revealed (``reveal="group"``, the default). MovieLens users rate in
  bursts (on ML-100K's temporal 80/20 test part, three quarters of the ratings share their second
  with another rating of the same user); a rating entered in the same second as another cannot
  have been informed by it, so revealing one before predicting the other would let the model
  read the user's answers. ``reveal="rating"`` replays rating by rating instead (each rating
  revealed before the next one in the tie order), for comparison.
* The user's state is re-solved from all their ratings revealed so far with the model's ridge
  fold-in (:meth:`~cfrec.models.base.Recommender.fold_in`, regularisation ``reg`` or the model's
  ``fold_in_reg``): for users known from training, their training ratings plus the revealed test
  ratings; for new users, the revealed test ratings only. Before a new user's first group the
  prediction is the cold-start fallback ``mu + b_i``.
* The item side (item factors, item biases, global mean) stays fixed: the model is not
  retrained, and items new at test time are predicted ``mu + b_u`` and never update a user.

Implementation
--------------
A user's predictions depend only on that user's own earlier ratings, so users are independent
and the global replay decomposes into per-user sequences. For linear factor models (the base
declared by :meth:`~cfrec.models.factor.FactorRecommender.fold_in_ridge`: every
:class:`~cfrec.models.factor.FactorRecommender` but SVD++ and Bayesian MF) the ``"fast"``
method keeps, for all users at once, the inverse of the ridge Gram matrix and the right-hand side: step ``j`` handles
every user's ``j``-th test rating, vectorised across users. The Gram matrix depends only on
*which* items were rated, so it takes the step's Sherman-Morrison rank-one update right away;
the right-hand side depends on the rating values and takes a group's ratings only when the group
is revealed, after its last prediction. A group's ratings are all predicted with the solution
computed at its first rating, before any of them entered the state. Total cost
``O(n_test * d^2)``. When the ridge penalty depends on the number of rated items (ALS's weighted
lambda) the Gram matrices are re-solved at each group's start instead. The ``"replay"`` method
literally replays the groups one at a time through the public ``fold_in``/``predict`` API (the
reference, and the path for any other model).

The result types (:class:`OnlineResult`, :class:`OnlinePredictions`, ...) live in
:mod:`cfrec.evaluation.online_results` and are importable from here too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from cfrec.data.interactions import Interactions
from cfrec.data.split import Split
from cfrec.errors import CfrecError
from cfrec.evaluation.online_results import (
    OnlineGroup,
    OnlinePredictions,
    OnlineResult,
    SameSecondGroups,
)
from cfrec.evaluation.protocols import ModelLike, resolve_model
from cfrec.metrics.rating import mae, rmse
from cfrec.models.base import KNOWN, UNKNOWN_ITEM, UNKNOWN_USER, Recommender
from cfrec.models.factor import FactorRecommender, RidgeFoldIn

logger = logging.getLogger(__name__)

Method = Literal["auto", "fast", "batch", "replay"]
Reveal = Literal["group", "rating"]
REVEALS: tuple[str, ...] = ("group", "rating")
DiagonalFn = Callable[[np.ndarray], np.ndarray]

#: Buckets of "ratings of this user known when the prediction was made" (train + revealed test).
HISTORY_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("0", 0, 0),
    ("1-4", 1, 4),
    ("5-19", 5, 19),
    ("20-49", 20, 49),
    ("50+", 50, math.inf),
)

_MEMORY_BUDGET = 128 * 2**20  # bytes of per-user (D x D) state processed at once
_BATCH_PAIRS = 1 << 18  # history ratings per batched fold-in call


# ---------------------------------------------------------------------- core
def replay_order(test: Interactions) -> np.ndarray:
    """Row positions of ``test`` in replay order: timestamp, then user id, item id, row.

    A user's same-second group is a contiguous run of this order."""
    rows = np.arange(len(test), dtype=np.int64)
    return np.lexsort((rows, test.items, test.users, test.timestamps))


def _group_runs(test: Interactions, order: np.ndarray) -> np.ndarray:
    """Start flags, in replay order, of the same-second groups (user and timestamp change)."""
    u, ts = test.users[order], test.timestamps[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (ts[1:] != ts[:-1])
    return new


def same_second_groups(test: Interactions) -> SameSecondGroups:
    """Count the same-second groups (one user, one timestamp) of ``test``."""
    if len(test) == 0:
        return SameSecondGroups(0, 0, 0, 0, 0, 0, {})
    starts = np.flatnonzero(_group_runs(test, replay_order(test)))
    sizes = np.diff(np.r_[starts, len(test)])
    values, counts = np.unique(sizes, return_counts=True)
    multi = sizes > 1
    return SameSecondGroups(len(test), len(sizes), int(multi.sum()), int(sizes[multi].sum()),
                            len(test) - len(sizes), int(sizes.max()),
                            {int(v): int(c) for v, c in zip(values, counts, strict=True)})


def fold_in_ridge(model: Recommender, reg: float | None = None) -> RidgeFoldIn | None:
    """The ridge a model's fold-in solves, or None when it is not one (only factor models have one)."""
    return model.fold_in_ridge(reg) if isinstance(model, FactorRecommender) else None


def supports_fast(model: Recommender) -> bool:
    """Whether the fast path reproduces ``model``'s fold-in exactly: its fold-in is a plain ridge
    on ``[b_u, p_u]`` against the fixed item side (see ``FactorRecommender.fold_in_ridge``)."""
    ridge = fold_in_ridge(model)
    return ridge is not None and not ridge.item_set_offset


def supports_batch(model: Recommender) -> bool:
    """Whether ``model`` folds in many users at once: a ``fold_in_predict(hist_users, hist_items,
    hist_ratings, query_users, query_items, *, reg)`` method that stands for ``predict(fold_in(...))``
    per user (NeuMF's), through which the ``"batch"`` method solves every revelation unit at once.
    Only on request (``method="batch"``): NeuMF's batched optimiser approximates its ``fold_in``
    (a non-convex objective) rather than reproducing it."""
    return callable(getattr(model, "fold_in_predict", None))


def _diagonal_fn(model: Recommender, reg: float | None) -> DiagonalFn | None:
    """The model's count-dependent fold-in ridge diagonal, or None for a constant ridge."""
    ridge = fold_in_ridge(model, reg)
    if ridge is None or ridge.constant:
        return None
    k = np.asarray(model.item_embeddings()).shape[1]
    return lambda n: ridge.diagonal(np.asarray(n), k)


def online_predictions(model: Recommender, test: Interactions, *, train: Interactions, reg: float | None = None,
                       method: Method = "auto", reveal: Reveal = "group",
                       trace: list[tuple[str, np.ndarray]] | None = None) -> OnlinePredictions:
    """Prequential predictions of every test rating (see the module docstring).

    Parameters
    ----------
    model
        A fitted model; it is not modified.
    test
        The ratings to replay.
    train
        The model's training ratings: the starting history of users known from training.
    reg
        Fold-in L2 strength passed to ``fold_in`` (default: the model's own, e.g. its
        ``fold_in_reg`` attribute for the base-class ridge).
    method
        ``"fast"`` (vectorised rank-one updates, linear factor models only), ``"replay"``
        (group by group through the public API), ``"batch"`` (every revelation unit through the
        model's batched ``fold_in_predict``; see :func:`supports_batch`) or ``"auto"`` (fast
        where it applies, else replay).
    reveal
        ``"group"`` (default): all ratings a user gave in the same second are predicted before
        any of them is revealed. ``"rating"``: one rating at a time in the tie order (user id,
        item id), so a rating can be predicted after its same-second peers are known.
    trace
        When a list is given, the protocol appends ``("predict", rows)`` and ``("reveal", rows)``
        entries (test row positions) in the order it performs them, so tests can check that no
        rating value is read before it is predicted (``reveal`` = the values enter the state).
    """
    model._check_fitted()
    if len(test) == 0:
        raise CfrecError("the test set is empty: nothing to replay")
    if method not in ("auto", "fast", "batch", "replay"):
        raise CfrecError(f"unknown online method {method!r}; choose auto, fast, batch or replay")
    if reveal not in REVEALS:
        raise CfrecError(f"unknown online reveal order {reveal!r}; choose group (same-second ratings "
                         f"predicted together) or rating (one at a time)")
    fast_ok = supports_fast(model)
    if method == "fast" and not fast_ok:
        raise CfrecError(f"{type(model).__name__}'s fold-in is not a ridge on [b_u, p_u] "
                         f"(fold_in_ridge() is None); use method='replay'")
    if method == "batch" and not supports_batch(model):
        raise CfrecError(f"{type(model).__name__} has no batched fold-in (fold_in_predict); use method='replay'")
    if method == "batch" and trace is not None:
        raise CfrecError("the batch method solves every revelation unit at once and records no trace; "
                         "use method='replay'")
    use_fast = fast_ok if method == "auto" else method == "fast"
    use_batch = not use_fast and method == "batch"
    if reg is not None and not float(reg) > 0:
        raise CfrecError(f"fold-in regularisation must be positive, got {reg}")
    # The fast path solves the ridge the model declares; the replay path passes ``reg`` through to
    # fold_in, so a model keeps its own default either way.
    ridge = fold_in_ridge(model, reg)
    lam = ridge.const if ridge is not None else math.nan
    order = replay_order(test)
    # Dense id of each test row's user, and that user's training ratings.
    row_users, g_of_row = np.unique(test.users, return_inverse=True)
    g_of_row = g_of_row.astype(np.int64)
    raw_users = test.user_map.to_raw(row_users)
    g_train = pd.Index(raw_users).get_indexer(train.raw_users()).astype(np.int64)
    keep = g_train >= 0
    n_train_of_g = np.bincount(g_train[keep], minlength=len(row_users))
    # Position of each test row within its user's replayed sequence.
    by_user = order[np.argsort(g_of_row[order], kind="stable")]
    starts = np.searchsorted(g_of_row[by_user], np.arange(len(row_users)))
    pos = np.empty(len(test), dtype=np.int64)
    pos[by_user] = np.arange(len(test)) - starts[g_of_row[by_user]]
    # Revelation units, as runs of the replay order (a user's group is contiguous in it): the
    # position of each row's unit start within its user's sequence, and the unit's size.
    unit_start = _group_runs(test, order) if reveal == "group" else np.ones(len(test), dtype=bool)
    run_id = np.cumsum(unit_start) - 1
    run_len = np.bincount(run_id)
    first_of_run = order[np.flatnonzero(unit_start)]
    size = np.empty(len(test), dtype=np.int64)
    size[order] = run_len[run_id]
    before = np.empty(len(test), dtype=np.int64)  # test ratings of the user revealed before the row
    before[order] = pos[first_of_run][run_id]
    if use_fast:
        preds = _fast(model, test, train, g_of_row, by_user, pos, before, size, g_train, keep, lam,
                      _diagonal_fn(model, reg), trace)
    elif use_batch:
        preds = _replay_batched(model, test, train, order, np.flatnonzero(unit_start), g_of_row, raw_users,
                                g_train, keep, reg, trace)
    else:
        preds = _replay(model, test, train, order, np.flatnonzero(unit_start), g_of_row, raw_users,
                        g_train, keep, reg, trace)
    constant = ridge is not None and ridge.constant
    reg_used = float(reg) if reg is not None else (lam if constant else None)
    group_size = size if reveal == "group" else _group_size(test, order)
    return OnlinePredictions(preds, order, before, before + n_train_of_g[g_of_row], group_size,
                             "fast" if use_fast else "batch" if use_batch else "replay", reveal, reg_used)


def _group_size(test: Interactions, order: np.ndarray) -> np.ndarray:
    """Size of each row's same-second group (test row order)."""
    start = _group_runs(test, order)
    run_id = np.cumsum(start) - 1
    size = np.empty(len(test), dtype=np.int64)
    size[order] = np.bincount(run_id)[run_id]
    return size


def _item_side(model: Recommender) -> tuple[np.ndarray, np.ndarray]:
    assert isinstance(model, FactorRecommender)  # the fast path is for factor models only
    return np.asarray(model.item_embeddings(), dtype=np.float64), np.asarray(model.item_bias_, dtype=np.float64)


def _fast(model: Recommender, test: Interactions, train: Interactions, g_of_row: np.ndarray,
          by_user: np.ndarray, pos: np.ndarray, before: np.ndarray, size: np.ndarray,
          g_train: np.ndarray, keep: np.ndarray, lam: float, diagonal: DiagonalFn | None,
          trace: list | None) -> np.ndarray:
    """Vectorised prequential replay (see module docstring).

    Step ``j`` predicts every active user's ``j``-th test rating and adds its item to the user's
    Gram matrix (which item was rated is known once it is predicted; the Gram matrix involves no
    rating). With a constant
    ridge (``diagonal`` is None) the inverse Gram matrices get Sherman-Morrison rank-one updates,
    O(d^2) per rating; with a ridge that depends on the number of rated items
    (``diagonal(n) -> (len(n), d)``) the Gram matrices are accumulated and re-solved, O(d^3), at
    each unit's first rating. The solution used for a revelation unit (``before`` = the position
    of its first rating, ``size`` its length) is computed at its first rating and kept for the
    rest of it; the unit's ratings wait in a per-user buffer that no prediction reads and enter the
    right-hand side after the unit's last prediction.
    Users are processed longest test sequence first, so the users still active at step ``j``
    form a prefix and the per-rating updates are in-place slice operations.
    """
    q, bi = _item_side(model)
    mu = float(model.global_mean_)
    d = q.shape[1] + 1
    n_groups = int(g_of_row.max()) + 1
    lens = np.bincount(g_of_row, minlength=n_groups)
    seq_start = np.concatenate([[0], np.cumsum(lens)[:-1]])  # offsets of each user in by_user
    by_len = np.argsort(-lens, kind="stable")  # users, longest sequence first
    rank = np.empty(n_groups, dtype=np.int64)
    rank[by_len] = np.arange(n_groups)
    # Model item index of test rows and of the training rows of test users.
    t_items = model.item_map_.to_index(test.raw_items(), missing="-1").astype(np.int64)
    t_known = t_items >= 0
    t_bias = np.where(t_known, bi[np.maximum(t_items, 0)], 0.0)
    starts_unit = pos == before
    ends_unit = pos == before + size - 1
    tr_rows = np.flatnonzero(keep)
    tr_items = model.item_map_.to_index(train.item_map.to_raw(train.items[tr_rows]),
                                        missing="-1").astype(np.int64)
    ok = tr_items >= 0
    tr_rows, tr_items = tr_rows[ok], tr_items[ok]
    tr_rank = rank[g_train[tr_rows]]
    srt = np.argsort(tr_rank, kind="stable")
    tr_rows, tr_items, tr_rank = tr_rows[srt], tr_items[srt], tr_rank[srt]
    tr_resid = train.ratings[tr_rows].astype(np.float64) - mu - bi[tr_items]

    preds = np.empty(len(test), dtype=np.float64)
    chunk_users = max(1, int(_MEMORY_BUDGET // (8 * d * d)))
    diag = np.arange(d)
    for lo in range(0, n_groups, chunk_users):
        hi = min(n_groups, lo + chunk_users)
        users = by_len[lo:hi]
        # Initial ridge Gram matrices and right-hand sides from the users' training ratings.
        a = np.zeros((hi - lo, d, d))
        b = np.zeros((hi - lo, d))
        w_unit = np.zeros((hi - lo, d))  # the solution each user's current unit is predicted with
        pending = np.zeros((hi - lo, d))  # the current unit's X^T resid, not in the state until it ends
        t_lo, t_hi = np.searchsorted(tr_rank, [lo, hi])
        _accumulate(a, b, tr_rank[t_lo:t_hi] - lo, q, tr_items[t_lo:t_hi], tr_resid[t_lo:t_hi])
        n_known = np.bincount(tr_rank[t_lo:t_hi] - lo, minlength=hi - lo).astype(np.int64)
        if diagonal is None:
            a[:, diag, diag] += lam
            a = np.linalg.inv(a)  # from here on: the inverse, updated by Sherman-Morrison
        c_lens, c_start = lens[users], seq_start[users]
        active = np.searchsorted(-c_lens, -np.arange(int(c_lens[0])), side="left")  # users with len > j
        for j in range(int(c_lens[0])):
            m = int(active[j])
            e = by_user[c_start[:m] + j]  # each active user's j-th test rating, longest user first
            known_item = t_known[e]
            x = _design(q, np.maximum(t_items[e], 0))
            x[~known_item] = 0.0  # a new item never updates the user ...
            aj, bj, wj, pj = a[:m], b[:m], w_unit[:m], pending[:m]
            fresh = starts_unit[e]  # first rating of its unit: solve from the state
            all_fresh = bool(fresh.all())
            if diagonal is None:
                wu = aj @ np.stack([bj, x], axis=2)  # (m, d, 2): solution and A^-1 x
                u = wu[:, :, 1]
                np.copyto(wj, wu[:, :, 0], where=fresh[:, None])
            else:
                f = slice(None) if all_fresh else np.flatnonzero(fresh)
                wj[f] = _ridge_solve(aj[f], bj[f], n_known[:m][f], diagonal)
            # ... and is predicted mu + b_u (w[0]); a known item mu + b_i + [1, q_i] . w.
            preds[e] = mu + t_bias[e] + np.einsum("ni,ni->n", x, wj) + np.where(known_item, 0.0, wj[:, 0])
            if trace is not None:
                trace.append(("predict", e.copy()))
            # The item enters the Gram matrix now (no rating involved) ...
            if diagonal is None:
                denom = 1.0 + np.einsum("ni,ni->n", x, u)
                aj -= u[:, :, None] * (u / denom[:, None])[:, None, :]
            else:
                aj += x[:, :, None] * x[:, None, :]
                n_known[:m] += known_item
            # ... its rating enters the right-hand side when its unit is revealed, after the unit's
            # last prediction; until then it waits in ``pending``, which no prediction reads.
            contrib = x * (test.ratings[e].astype(np.float64) - mu - t_bias[e])[:, None]
            done = ends_unit[e]
            if all_fresh and done.all():  # every unit here is this one rating
                bj += contrib
                if trace is not None:
                    trace.append(("reveal", e.copy()))
                continue
            pj += contrib
            if done.any():
                local = np.flatnonzero(done)
                bj[local] += pj[local]
                pj[local] = 0.0
                if trace is not None:
                    trace.append(("reveal", _unit_rows(by_user, c_start[local] + j, size[e[local]])))
    lo_r, hi_r = model.rating_scale_
    return np.clip(preds, lo_r, hi_r).astype(np.float32)


def _unit_rows(by_user: np.ndarray, last: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Rows of the units ending at ``by_user[last]`` with ``sizes`` ratings each (for the trace)."""
    seg = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.arange(int(sizes.sum())) - np.repeat(seg, sizes)
    return by_user[np.repeat(last - sizes + 1, sizes) + within]


def _ridge_solve(gram: np.ndarray, rhs: np.ndarray, n: np.ndarray, diagonal: DiagonalFn) -> np.ndarray:
    """Solve ``(gram + diag(diagonal(n))) w = rhs`` per user; ``w = 0`` for users with no rated item."""
    w = np.zeros_like(rhs)
    has = n > 0
    if has.any():
        d = gram.shape[1]
        a = gram[has].copy()
        a[:, np.arange(d), np.arange(d)] += diagonal(n[has])
        w[has] = np.linalg.solve(a, rhs[has][:, :, None])[:, :, 0]
    return w


def _design(q: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Rows ``[1, q_i]`` of the fold-in least-squares problem."""
    x = np.empty((len(items), q.shape[1] + 1))
    x[:, 0] = 1.0
    x[:, 1:] = q[items]
    return x


def _accumulate(a: np.ndarray, b: np.ndarray, g: np.ndarray, q: np.ndarray, items: np.ndarray,
                resid: np.ndarray) -> None:
    """a[g] += X^T X and b[g] += X^T resid per user (``g`` sorted), with rows ``X = [1, q_i]``.

    One small BLAS product per user (not per rating) keeps memory at one user's rows.
    """
    if len(g) == 0:
        return
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        x = _design(q, items[s:e])
        a[g[s]] += x.T @ x
        b[g[s]] += x.T @ resid[s:e]


def _replay(model: Recommender, test: Interactions, train: Interactions, order: np.ndarray,
            unit_starts: np.ndarray, g_of_row: np.ndarray, raw_users: np.ndarray, g_train: np.ndarray,
            keep: np.ndarray, reg: float | None, trace: list | None) -> np.ndarray:
    """Unit-by-unit replay through the public ``fold_in``/``predict`` API (the reference): each
    revelation unit (``order[unit_starts[k]:unit_starts[k + 1]]``, one user) is predicted from one
    fold-in of the user's history, then appended to it."""
    n_groups = len(raw_users)
    hist_items: list[list[Any]] = [[] for _ in range(n_groups)]
    hist_ratings: list[list[float]] = [[] for _ in range(n_groups)]
    # Items the model does not know never inform a user (fold_in would ignore them anyway).
    tr_raw_items = train.raw_items()
    tr_known = model.item_map_.to_index(tr_raw_items, missing="-1") >= 0
    for row in np.flatnonzero(keep & tr_known):
        g = g_train[row]
        hist_items[g].append(tr_raw_items[row])
        hist_ratings[g].append(float(train.ratings[row]))
    t_raw_items = test.raw_items()
    t_known = model.item_map_.to_index(t_raw_items, missing="-1") >= 0
    preds = np.empty(len(test), dtype=np.float32)
    bounds = np.r_[unit_starts, len(order)]
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        rows = order[s:e]
        g = g_of_row[rows[0]]
        items = t_raw_items[rows]
        if hist_items[g]:
            folded = model.fold_in(np.asarray(hist_items[g]), np.asarray(hist_ratings[g]), reg=reg)
            preds[rows] = model.predict(folded, items)
        else:
            preds[rows] = model.predict(np.repeat(raw_users[g:g + 1], len(rows)), items)
        if trace is not None:
            trace.append(("predict", rows.copy()))
        for row in rows[t_known[rows]].tolist():
            hist_items[g].append(t_raw_items[row])
            hist_ratings[g].append(float(test.ratings[row]))
        if trace is not None:
            trace.append(("reveal", rows.copy()))
    return preds


def _replay_batched(model: Recommender, test: Interactions, train: Interactions, order: np.ndarray,
                    unit_starts: np.ndarray, g_of_row: np.ndarray, raw_users: np.ndarray, g_train: np.ndarray,
                    keep: np.ndarray, reg: float | None, trace: list | None) -> np.ndarray:
    """The replay of :func:`_replay` for a model with a batched fold-in (``fold_in_predict``).

    A revelation unit's prediction depends only on its user's history before it (the training
    ratings, then the test ratings of the user's earlier units), which is data, not an earlier
    prediction: the units are independent fold-in problems. Each user's history is laid out
    once; each unit reads the prefix of its user's layout that precedes it (never its own rows
    nor later ones), and all units are solved in a few batched calls; the Python work is per
    call, not per unit.
    """
    n_groups = len(raw_users)
    # Each user's history, laid out once: training ratings, then test ratings in replay order
    # (items the model does not know never inform a user).
    tr_raw_items = train.raw_items()
    tr_rows = np.flatnonzero(keep & (model.item_map_.to_index(tr_raw_items, missing="-1") >= 0))
    tr_rows = tr_rows[np.argsort(g_train[tr_rows], kind="stable")]
    t_raw_items = test.raw_items()
    t_known = model.item_map_.to_index(t_raw_items, missing="-1") >= 0
    te_rows = order[np.argsort(g_of_row[order], kind="stable")]  # by user, replay order within
    te_user = g_of_row[te_rows]
    n_tr = np.bincount(g_train[tr_rows], minlength=n_groups)
    n_te = np.bincount(te_user, minlength=n_groups)
    lay_items = np.empty(len(tr_rows) + len(te_rows), dtype=object if tr_raw_items.dtype == object
                         or t_raw_items.dtype == object else np.result_type(tr_raw_items, t_raw_items))
    lay_r = np.empty(len(lay_items), dtype=np.float64)
    lay_known = np.empty(len(lay_items), dtype=bool)
    start = np.cumsum(n_tr + n_te) - (n_tr + n_te)  # each user's history start in the layout
    tr_pos = start[g_train[tr_rows]] + (np.arange(len(tr_rows)) - (np.cumsum(n_tr) - n_tr)[g_train[tr_rows]])
    te_within = np.arange(len(te_rows)) - (np.cumsum(n_te) - n_te)[te_user]
    te_pos = start[te_user] + n_tr[te_user] + te_within
    lay_items[tr_pos], lay_r[tr_pos], lay_known[tr_pos] = tr_raw_items[tr_rows], train.ratings[tr_rows], True
    lay_items[te_pos], lay_r[te_pos], lay_known[te_pos] = t_raw_items[te_rows], test.ratings[te_rows], t_known[te_rows]
    pos_of_row = np.empty(len(test), dtype=np.int64)
    pos_of_row[te_rows] = te_within
    # Units: first row, length, user, and rank among the user's units (the round).
    bounds = np.r_[unit_starts, len(order)]
    u_len = np.diff(bounds)
    u_first = order[unit_starts]
    u_user = g_of_row[u_first]
    u_round = np.empty(len(unit_starts), dtype=np.int64)
    by_u = np.argsort(u_user, kind="stable")
    counts = np.bincount(u_user, minlength=n_groups)
    u_round[by_u] = np.arange(len(by_u)) - (np.cumsum(counts) - counts)[u_user[by_u]]
    # history of a unit: its user's layout prefix (training + test rows before the unit)
    u_hist = n_tr[u_user] + pos_of_row[u_first]
    preds = np.empty(len(test), dtype=np.float32)
    # Every unit's history is data known in advance (the user's earlier ratings), so all units
    # are independent problems: they are solved together, in chunks of about _BATCH_PAIRS
    # history ratings, each unit reading only its own prefix of its user's layout.
    units = np.argsort(u_round, kind="stable")
    ends = np.cumsum(u_hist[units])
    cuts = np.unique(np.searchsorted(ends, np.arange(_BATCH_PAIRS, int(ends[-1]) + _BATCH_PAIRS, _BATCH_PAIRS)))
    for chunk in np.split(units, np.minimum(cuts + 1, len(units))[:-1]):
        if not len(chunk):
            continue
        lens = u_len[chunk]
        q_seg = np.repeat(np.arange(len(chunk)), lens)
        q_rows = order[np.repeat(bounds[chunk], lens) + _within(lens)]
        h_len = u_hist[chunk]
        h_seg = np.repeat(np.arange(len(chunk)), h_len)
        h_pos = np.repeat(start[u_user[chunk]], h_len) + _within(h_len)
        h_ok = lay_known[h_pos]
        empty = np.bincount(h_seg[h_ok], minlength=len(chunk)) == 0
        if empty.any():  # nothing known of the user yet: the model's own prediction of the raw user
            cold = empty[q_seg]
            preds[q_rows[cold]] = model.predict(raw_users[u_user[chunk]][q_seg[cold]], t_raw_items[q_rows[cold]])
        warm = ~empty[q_seg]
        if warm.any():
            preds[q_rows[warm]] = model.fold_in_predict(  # type: ignore[attr-defined]
                h_seg[h_ok], lay_items[h_pos[h_ok]], lay_r[h_pos[h_ok]], q_seg[warm], t_raw_items[q_rows[warm]],
                reg=reg)
    return preds


def _within(lens: np.ndarray) -> np.ndarray:
    """``0..lens[0]-1, 0..lens[1]-1, ...`` (positions within consecutive runs)."""
    return np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)


# ---------------------------------------------------------------------- evaluation
def online_evaluate(model: Recommender, test: Interactions, *, train: Interactions, reg: float | None = None,
                    method: Method = "auto", reveal: Reveal = "group", name: str | None = None) -> OnlineResult:
    """Online vs offline RMSE/MAE of a fitted model, broken down by known/new users and items,
    by how many of the user's ratings were known when each prediction was made and by whether the
    rating shares its second with another rating of its user."""
    t0 = time.perf_counter()
    op = online_predictions(model, test, train=train, reg=reg, method=method, reveal=reveal)
    seconds = time.perf_counter() - t0
    offline = model.predict_detailed(test.raw_users(), test.raw_items())
    y = test.ratings.astype(np.float64)
    on = op.predictions.astype(np.float64)
    off = offline.ratings.astype(np.float64)
    code = offline.fallback
    user_known = np.isin(code, (KNOWN, UNKNOWN_ITEM))
    item_known = np.isin(code, (KNOWN, UNKNOWN_USER))
    masks: list[tuple[str, np.ndarray]] = [
        ("all", np.ones(len(y), dtype=bool)),
        ("known users", user_known),
        ("new users", ~user_known),
        ("known items", item_known),
        ("new items", ~item_known),
        ("alone in its second", op.group_size == 1),
        ("in a same-second group", op.group_size > 1),
    ]
    for label, low, high in HISTORY_BUCKETS:
        masks.append((f"{label} ratings known", (op.known_before >= low) & (op.known_before <= high)))
    groups = []
    for label, m in masks:
        n = int(m.sum())
        groups.append(OnlineGroup(label, n, n / len(y), rmse(y[m], on[m]), rmse(y[m], off[m]),
                                  mae(y[m], on[m]), mae(y[m], off[m])))
    result = OnlineResult(
        model=name or type(model).name or type(model).__name__,
        dataset=test.name, method=op.method, reg=op.reg, n_test=len(y),
        rmse=groups[0].online_rmse, mae=groups[0].online_mae,
        offline_rmse=groups[0].offline_rmse, offline_mae=groups[0].offline_mae,
        groups=groups, replay_seconds=seconds, reveal=reveal, same_second=same_second_groups(test),
        predictions=op.predictions,
    )
    logger.info("online %s: RMSE %.4f (offline %.4f) in %.2fs [%s, reveal by %s]", result.model, result.rmse,
                result.offline_rmse, seconds, op.method, reveal)
    return result


def run_online(
    model: ModelLike,
    data: Interactions | Split,
    *,
    spec: str = "temporal:0.2",
    seed: int = 0,
    reg: float | None = None,
    method: Method = "auto",
    reveal: Reveal = "group",
    data_home: str | Path | None = None,
) -> OnlineResult:
    """Fit ``model`` on the train part of ``data`` (a :class:`Split`, or ratings split by ``spec``,
    the global temporal 80/20 split by default) and evaluate it online on the test part."""
    if isinstance(data, Split):
        split = data
    else:
        from cfrec.data import make_splits

        splits = make_splits(data, spec, seed=seed, data_home=data_home)
        if len(splits) != 1:
            raise CfrecError(f"online evaluation needs a single split; {spec!r} gives {len(splits)}")
        split = splits[0]
    factory, display = resolve_model(model)
    est = factory()
    t0 = time.perf_counter()
    est.fit(split.train)
    fit_s = time.perf_counter() - t0
    result = online_evaluate(est, split.test, train=split.train, reg=reg, method=method, reveal=reveal,
                             name=display)
    result.fit_seconds = fit_s
    result.dataset = split.train.name
    return result
