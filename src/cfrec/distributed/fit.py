"""Blocked ALS and iALS: every rank solves its own users' and items' rows.

Rank ``p`` owns user block ``p`` and item block ``p`` (:class:`~cfrec.distributed.blocks.Blocks`)
and holds only their interactions. One iteration:

1. all-gather the item blocks' factor rows (every rank sends its block once) and, for iALS,
   all-reduce the ``k x k`` Gram matrix of the item factors (the sum of the blocks' Grams);
2. solve the rank's users with the model's own conjugate-gradient half-step against them;
3. the same for the items against the gathered user rows;
4. all-reduce three scalars of the objective.

The half-steps are the models' (:meth:`cfrec.models.ials.IALS._cg_half`,
:meth:`cfrec.models.als.ALS._cg_half`), over engines built from the rank's parts: the user
block's interactions laid out by user and the item block's by user too (the item side of the
layout, as a single-process fit reads it). The start (the seeded item factors), the weighting's
statistics and every row's system are those of a single-process fit, so the factors agree with
it up to float32 rounding of sums taken in another order.

Why all-gather rather than all-to-all of the rows a block needs: with ``P`` ranks, the users of
one block rate nearly every item on MovieLens-like data, so the rows needed are close to all of
them and the all-to-all would add their indices for little saving; each rank sends its own rows
``P - 1`` times, ``(P - 1) x (users + items) x k x 4`` bytes over all ranks an iteration (the
padding of uneven blocks included), which :func:`needed_rows` lets one compare.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cfrec.distributed.blocks import RankData
from cfrec.distributed.checkpoint import Checkpoints
from cfrec.distributed.epochs import run_epochs
from cfrec.distributed.launch import threads_per_rank
from cfrec.distributed.runtime import Context
from cfrec.engines.backend import resolve_device, to_numpy
from cfrec.engines.cg import CGEngine, CGSide, cg_engine
from cfrec.engines.exact import penalty_value
from cfrec.engines.matrix import WeightingStats, weighting_stats_from
from cfrec.errors import CfrecError
from cfrec.models.als import ALS
from cfrec.models.base import EpochCallback
from cfrec.models.ials import IALS
from cfrec.models.mf import BiasedMF
from cfrec.threads import configured_threads

#: Models with a distributed fit (ALS and iALS blocked, BiasedMF by stratified blocks).
BLOCKED_MODELS = ("als", "ials", "mf")


def _gram64(x: Any) -> np.ndarray:
    """``x' x`` in float64 (numpy), of a numpy array or a tensor."""
    if isinstance(x, torch.Tensor):
        t = x.double()
        return np.asarray((t.T @ t).cpu().numpy())
    d = np.asarray(x, dtype=np.float64)
    return np.asarray(d.T @ d)


def _like(xp: Any, a: np.ndarray) -> Any:
    return xp.asarray(np.asarray(a, dtype=np.float32), np.float32)


def needed_rows(data: RankData) -> tuple[int, int]:
    """Rows of other blocks this rank's interactions name: ``(items for the user half-step,
    users for the item half-step)``; what an all-to-all of only the needed rows would receive."""
    i0, i1 = data.blocks.item_range(data.rank)
    u0, u1 = data.blocks.user_range(data.rank)
    items = np.unique(data.by_user.items)
    users = np.unique(data.by_item.users)
    return (int(np.sum((items < i0) | (items >= i1))), int(np.sum((users < u0) | (users >= u1))))


class _Engines:
    """The rank's two CG engines: its user block's interactions (rows: the block's users) and its
    item block's (columns: the block's items, rows: every user)."""

    def __init__(self, data: RankData, device: torch.device, width: int, threads: int | None,
                 release_users: bool = False) -> None:
        u0, _ = data.blocks.user_range(data.rank)
        i0, _ = data.blocks.item_range(data.rank)
        n_u, n_i = data.blocks.user_sizes()[data.rank], data.blocks.item_sizes()[data.rank]
        bu, bi = data.by_user, data.by_item
        self.users: CGEngine = cg_engine(device, bu.users - np.int32(u0), bu.items, int(n_u), data.n_items,
                                         width=width, threads=threads)
        if release_users:  # the user part is not read again: gone before the second engine is built
            bu.release()
        self.items: CGEngine = cg_engine(device, bi.users, bi.items - np.int32(i0), data.n_users, int(n_i),
                                         width=width, threads=threads)
        self.us, self.its = self.users.user_side, self.items.item_side
        self.xp = self.users.xp

    def __enter__(self) -> _Engines:
        self._stack = ExitStack()
        self._stack.enter_context(self.users)
        self._stack.enter_context(self.items)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _seen_block(side: CGSide, n_items: int) -> sp.csr_array:
    """The seen pairs of the rank's user block (ones, repeated pairs summed, columns sorted),
    from the user-major layout of its engine: no copy of the interactions is kept for it."""
    indptr = np.zeros(len(side.counts) + 1, dtype=np.int64)
    np.cumsum(side.counts.astype(np.int64), out=indptr[1:])
    block = sp.csr_array((np.ones(len(side.other), dtype=np.float32), side.other.astype(np.int32), indptr),
                         shape=(len(side.counts), n_items))
    block.sum_duplicates()
    return block


def _seen_rows(data: RankData) -> sp.csr_array:
    """The seen pairs of the rank's user block from its user part (ones, repeated pairs summed)."""
    u0, u1 = data.blocks.user_range(data.rank)
    bu = data.by_user
    block = sp.csr_array((np.ones(len(bu), dtype=np.float32), (bu.users - np.int32(u0), bu.items)),
                         shape=(u1 - u0, data.n_items))
    block.sum_duplicates()
    return block


def _gather_seen(block: sp.csr_array, data: RankData, ctx: Context) -> sp.csr_array:
    """The users x items matrix of seen pairs (ones, repeated pairs summed, as a single-process
    fit keeps it) on rank 0, from the user blocks' rows: each rank sends its block's row
    lengths, column indices (int32) and, unless the pairs are unique, values. The other ranks
    get the rows of their own block (the others empty): what ranking their users needs.
    ``block`` is this rank's (:func:`_seen_block`)."""
    u0, u1 = data.blocks.user_range(data.rank)
    lengths = ctx.gather_concat(np.diff(block.indptr).astype(np.int64), op="final")
    indices = ctx.gather_concat(block.indices.astype(np.int32, copy=False), op="final")
    values = None if data.unique_pairs else ctx.gather_concat(block.data.astype(np.float32, copy=False), op="final")
    if lengths is None or indices is None:
        indptr = np.zeros(data.n_users + 1, dtype=np.int64)
        indptr[u0 + 1: u1 + 1] = block.indptr[1:]
        indptr[u1 + 1:] = block.indptr[-1]
        return sp.csr_array((block.data, block.indices, indptr), shape=(data.n_users, data.n_items))
    del block
    indptr = np.zeros(data.n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if values is None:
        values = np.ones(len(indices), dtype=np.float32)
    return sp.csr_array((values, indices, indptr), shape=(data.n_users, data.n_items))


def _weighting_stats(model: IALS, data: RankData, ctx: Context) -> WeightingStats | None:
    """The weighting's statistics of the whole training set: item document frequencies from the
    item blocks, user lengths from the user blocks, gathered (once, before the iterations)."""
    if model.weighting is None:
        return None
    bu, bi = data.by_user, data.by_item
    u0, _ = data.blocks.user_range(data.rank)
    i0, _ = data.blocks.item_range(data.rank)
    n_i = int(data.blocks.item_sizes()[data.rank])
    if data.unique_pairs:  # every row is a distinct pair: its item's frequency counts it
        df = np.bincount(bi.items - i0, minlength=n_i).astype(np.float64)
    else:
        pairs = sp.csr_array((np.ones(len(bi), dtype=np.float32), (bi.users, bi.items - i0)),
                             shape=(data.n_users, n_i))
        pairs.sum_duplicates()
        df = np.bincount(pairs.indices, minlength=n_i).astype(np.float64)
        del pairs
    lengths = np.bincount(bu.users - u0, weights=bu.values(data.implicit).astype(np.float64),
                          minlength=int(data.blocks.user_sizes()[data.rank]))
    df_all = ctx.all_gather_rows(df, data.blocks.item_sizes(), op="setup")
    lengths_all = ctx.all_gather_rows(lengths, data.blocks.user_sizes(), op="setup")
    return weighting_stats_from(df_all, lengths_all)


def fit_blocked(model: ALS | IALS | BiasedMF, data: RankData, ctx: Context, *,
                on_epoch: EpochCallback | None = None, fingerprint: str | None = None,
                item_info: Any = None, checkpoint: str | Path | None = None,
                release: bool = False) -> ALS | IALS | BiasedMF:
    """Fit ``model`` on the job's data, of which this rank holds ``data``; every rank calls it.

    ALS and iALS fit blocked (this module), BiasedMF by stratified blocks
    (:mod:`cfrec.distributed.dsgd`). Returns the fitted model on every rank (the whole factor
    tables are gathered at the end; only rank 0 should save it). ``on_epoch`` receives each
    iteration's record (the same on every rank; pass it on rank 0 only to print once); records
    add ``bytes_sent`` (this rank's bytes sent that iteration). With ``checkpoint`` (a folder)
    every rank's blocks are saved after each iteration and a restarted job resumes from the last
    complete iteration (:mod:`cfrec.distributed.checkpoint`). With ``release`` an ALS or iALS fit
    owns ``data``: the arrays of its parts are dropped once the engines hold what the iterations
    need (a lower peak; the parts are empty afterwards).
    """
    if isinstance(model, BiasedMF):
        from cfrec.distributed.dsgd import check_dsgd

        check_dsgd(model)
    elif not isinstance(model, ALS | IALS):
        raise CfrecError(f"{type(model).__name__} has no distributed fit; models with one: "
                         f"{', '.join(BLOCKED_MODELS)}")
    elif model.solver != "cg":
        raise CfrecError(f"the distributed fit of {model.name} solves with conjugate gradient; got "
                         f"solver={model.solver!r} (use solver=cg)")
    if data.blocks.parts != ctx.world_size or data.rank != ctx.rank:
        raise CfrecError(f"rank {ctx.rank} of {ctx.world_size} was given block {data.rank} of "
                         f"{data.blocks.parts}")
    start = time.perf_counter()
    sent_before = ctx.sent.total
    model.user_map_, model.item_map_ = data.user_map, data.item_map
    model.rating_scale_ = data.rating_scale
    total = ctx.all_reduce_sum([np.sum(data.by_user.ratings, dtype=np.float64)], op="setup")[0]
    model.global_mean_ = float(total / data.n_interactions)
    model.history_ = []
    dev = resolve_device(model.device)
    threads = _rank_threads(model.threads)
    checkpoints = None if checkpoint is None else Checkpoints(checkpoint, ctx, data, model, fingerprint)
    if isinstance(model, BiasedMF):
        from cfrec.distributed.dsgd import fit_dsgd

        user, item, history = fit_dsgd(model, data, ctx, on_epoch, checkpoints)
        seen = _seen_rows(data)
    elif isinstance(model, IALS):
        user, item, history, seen = _ials(model, data, ctx, dev, threads, on_epoch, checkpoints, release)
    else:
        user, item, history, seen = _als(model, data, ctx, dev, threads, on_epoch, checkpoints, release)
    model.history_.extend(history)
    model.seen_ = _gather_seen(seen, data, ctx)
    model.item_info_ = item_info
    if isinstance(model, ALS | BiasedMF):
        model.user_bias_, model.item_bias_ = user[:, 0].copy(), item[:, 0].copy()
        model.user_factors_, model.item_factors_ = np.ascontiguousarray(user[:, 1:]), np.ascontiguousarray(item[:, 1:])
    else:
        model.user_factors_, model.item_factors_ = user, item
    iterations = max(1, len(history))
    loop_bytes = sum(int(rec.get("bytes_sent", 0)) for rec in history)
    all_ranks = int(ctx.all_reduce_sum([loop_bytes], op="final")[0])
    model.fit_info_ = {
        "dataset": data.name,
        "fingerprint": fingerprint,
        "n_ratings": data.n_interactions,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "fit_seconds": time.perf_counter() - start,
        "distributed": {
            "world_size": ctx.world_size,
            "backend": ctx.backend,
            "bytes_sent_per_iteration_rank0": loop_bytes // iterations,
            "bytes_sent_per_iteration_all_ranks": all_ranks // iterations,
            "bytes_sent_total_rank0": ctx.sent.total - sent_before,
        },
    }
    return model


def _rank_threads(threads: int | None) -> int | None:
    """The model's ``threads``, else ``CFREC_NUM_THREADS``, else this machine's cores shared
    among its ranks (``LOCAL_WORLD_SIZE``, set by torchrun): ranks on one machine do not
    oversubscribe its cores by default."""
    if threads is not None or configured_threads() is not None:
        return threads
    return threads_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))


def _run_factors(name: str, model: ALS | IALS, on_epoch: EpochCallback | None, ctx: Context, xp: Any,
                 state: dict[str, Any], step: Callable[[], dict[str, Any]],
                 checkpoints: Checkpoints | None) -> list[dict[str, Any]]:
    """:func:`~cfrec.distributed.epochs.run_epochs` over ``state["p"]`` and ``state["q"]`` (the rank's user and item blocks)."""

    def restore(users: np.ndarray, items: np.ndarray) -> None:
        state["p"], state["q"] = _like(xp, users), _like(xp, items)

    return run_epochs(name, int(model.iterations), on_epoch, ctx,
                      lambda: (to_numpy(state["p"]), to_numpy(state["q"])), restore, lambda _: step(), checkpoints)


def _release(data: RankData) -> None:
    data.by_user.release()
    data.by_item.release()


def _ials(model: IALS, data: RankData, ctx: Context, dev: torch.device, threads: int | None,
          on_epoch: EpochCallback | None, checkpoints: Checkpoints | None,
          release: bool) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], sp.csr_array]:
    k = int(model.n_factors)
    blocks, rank = data.blocks, data.rank
    i0, i1 = blocks.item_range(rank)
    bu, bi = data.by_user, data.by_item
    model._weights(bu.values(data.implicit))  # checked before the weighting divides by them
    model._weights(bi.values(data.implicit))
    stats = _weighting_stats(model, data, ctx)
    model.weighting_stats_ = stats
    lengths = None
    if stats is not None and model.weighting == "bm25":
        u0, _ = blocks.user_range(rank)
        own = np.bincount(bu.users - u0, weights=bu.values(data.implicit).astype(np.float64),
                          minlength=int(blocks.user_sizes()[rank]))
        lengths = ctx.all_gather_rows(own, blocks.user_sizes(), op="setup")
    w_user = model._pair_weights(bu.users, bu.items, bu.values(data.implicit), data.n_users, data.n_items,
                                 stats, lengths)
    w_item = model._pair_weights(bi.users, bi.items, bi.values(data.implicit), data.n_users, data.n_items,
                                 stats, lengths)
    rated_local = float(len(w_user)) + float(np.sum(w_user, dtype=np.float64))
    rated = float(ctx.all_reduce_sum([rated_local], op="setup")[0])
    with _Engines(data, dev, k, threads, release_users=release) as eng:
        xp = eng.xp
        w_u = _like(xp, w_user[eng.us.order])
        w_i = _like(xp, w_item[eng.its.order])
        del w_user, w_item
        if release:
            _release(data)
        reg_u = _like(xp, model._reg_diag(eng.us.counts)[:, None])
        reg_i = _like(xp, model._reg_diag(eng.its.counts)[:, None])
        state: dict[str, Any] = {"p": xp.zeros((len(eng.us.counts), k)),
                                 "q": _like(xp, model._initial_items(data.n_items)[i0:i1])}

        def step() -> dict[str, Any]:
            q_all = ctx.all_gather_rows(state["q"], blocks.item_sizes(), op="factors")
            gram = _like(xp, ctx.all_reduce_sum(_gram64(state["q"]), op="gram").astype(np.float32))
            p, _ = model._cg_half(eng.users, eng.us, q_all, state["p"], w_u, reg_u, gram=gram)
            del q_all
            p_all = ctx.all_gather_rows(p, blocks.user_sizes(), op="factors")
            gram = _like(xp, ctx.all_reduce_sum(_gram64(p), op="gram").astype(np.float32))
            q, f = model._cg_half(eng.items, eng.its, p_all, state["q"], w_i, reg_i, gram=gram)
            state.update(p=p, q=q)
            parts = ctx.all_reduce_sum([2.0 * f, xp.sum64(reg_u[:, 0] * xp.rowdot(p, p))], op="loss")
            return {"train_loss": (rated + float(parts.sum())) / data.n_interactions}

        history = _run_factors("iALS", model, on_epoch, ctx, xp, state, step, checkpoints)
        user = to_numpy(ctx.all_gather_rows(state["p"], blocks.user_sizes(), op="final"))
        item = to_numpy(ctx.all_gather_rows(state["q"], blocks.item_sizes(), op="final"))
        seen = _seen_block(eng.us, data.n_items)
    return user, item, history, seen


def _als(model: ALS, data: RankData, ctx: Context, dev: torch.device, threads: int | None,
         on_epoch: EpochCallback | None, checkpoints: Checkpoints | None,
         release: bool) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], sp.csr_array]:
    k = int(model.n_factors)
    blocks, rank = data.blocks, data.rank
    i0, i1 = blocks.item_range(rank)
    penalty = model._penalty()
    mu = np.float32(model.global_mean_)
    with _Engines(data, dev, k + 1, threads) as eng:
        xp = eng.xp
        t_u = _like(xp, data.by_user.ratings[eng.us.order] - mu)
        t_i = _like(xp, data.by_item.ratings[eng.its.order] - mu)
        if release:
            _release(data)
        item_of, user_of = xp.index(eng.us.other), xp.index(eng.its.other)
        n_u, n_i = _like(xp, eng.us.counts), _like(xp, eng.its.counts)
        diag_u = _like(xp, penalty.diagonal(eng.us.counts, k))
        diag_i = _like(xp, penalty.diagonal(eng.its.counts, k))
        state: dict[str, Any] = {"p": xp.zeros((len(eng.us.counts), k + 1)),
                                 "q": _like(xp, model._initial_items(data.n_items)[i0:i1])}

        def step() -> dict[str, Any]:
            item_all = ctx.all_gather_rows(state["q"], blocks.item_sizes(), op="factors")
            user, _ = model._cg_half(eng.users, eng.us, item_all, state["p"], t_u, item_of, diag_u)
            del item_all
            user_all = ctx.all_gather_rows(user, blocks.user_sizes(), op="factors")
            item, sse = model._cg_half(eng.items, eng.its, user_all, state["q"], t_i, user_of, diag_i)
            state.update(p=user, q=item)
            pen = penalty_value(xp, penalty, n_u, user[:, 0], user[:, 1:], n_i, item[:, 0], item[:, 1:])
            sse, pen = ctx.all_reduce_sum([sse, pen], op="loss")
            n = data.n_interactions
            return {"train_loss": float(sse + pen) / n, "train_rmse": (max(float(sse), 0.0) / n) ** 0.5}

        history = _run_factors("ALS", model, on_epoch, ctx, xp, state, step, checkpoints)
        user = to_numpy(ctx.all_gather_rows(state["p"], blocks.user_sizes(), op="final"))
        item = to_numpy(ctx.all_gather_rows(state["q"], blocks.item_sizes(), op="final"))
        seen = _seen_block(eng.us, data.n_items)
    return user, item, history, seen
