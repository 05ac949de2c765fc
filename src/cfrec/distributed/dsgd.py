"""BiasedMF by stratified blocks (DSGD, Gemulla et al. 2011): per-rating SGD on ``P`` ranks.

The ratings form a ``P x P`` grid of blocks (:class:`~cfrec.distributed.blocks.Blocks`: user
block ``p`` by item block ``b``). Rank ``p`` holds the ratings of its users (its row of the grid)
and the rows ``[b_u, p_u]`` of its users; item block ``b``'s rows ``[b_i, q_i]`` travel. An epoch
is ``P`` sub-epochs: in sub-epoch ``s`` rank ``p`` trains block ``(p, (p + s) mod P)`` with the
model's own compiled per-rating loop (:func:`cfrec.engines.compiled.funk_slice`), then sends that
item block to rank ``p - 1`` and receives block ``(p + s + 1) mod P`` from rank ``p + 1``
(:meth:`~cfrec.distributed.runtime.Context.ring_shift`). The ``P`` blocks trained at once share
no user and no item, so every rating's move reads and writes rows no other rank touches in that
sub-epoch: the sequential SGD of one process, in another order of the ratings. After ``P``
sub-epochs every item block is home again, which is what a checkpoint saves.

As in :class:`~cfrec.models.mf.BiasedMF`'s fit: the factors start from the seeded normal draw of
a single-process fit, the biases from their closed-form regularised values (the alternating
sweeps of :func:`~cfrec.models._bias.fit_biases`, each half-sweep on the rank's own block and
the other side's biases all-gathered), ``mu`` is the training mean (one all-reduce), each block's
ratings are laid out once by user (each user's in a random order) and cut into ``batch_size``
slices visited in a random order each epoch, at the model's constant learning rate. With one
process this is the single-process fit, draw for draw.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cfrec.distributed.blocks import RankData
from cfrec.distributed.checkpoint import Checkpoints
from cfrec.distributed.epochs import run_epochs
from cfrec.distributed.runtime import Context
from cfrec.engines.backend import make_generator
from cfrec.errors import CfrecError
from cfrec.models.base import EpochCallback
from cfrec.models.mf import BiasedMF
from cfrec.models.torch_factor import _BIAS_INIT_REG


def check_dsgd(model: BiasedMF) -> None:
    """Refuse settings the distributed fit does not train (in one line naming the setting)."""
    if not model._funk:
        raise CfrecError(f"the distributed fit of {model.name} trains with per-rating SGD; got "
                         f"optimizer={model.optimizer!r} (use optimizer=funk)")
    if float(model.valid_fraction) > 0:
        raise CfrecError(f"the distributed fit of {model.name} carves no validation part; got "
                         f"valid_fraction={model.valid_fraction} (use valid_fraction=0)")


def _job_seed(model: BiasedMF, ctx: Context) -> int:
    """The model's seed, or one drawn on rank 0 and shared (every rank must draw alike)."""
    if model.seed is not None:
        return int(model.seed)
    drawn = int(np.random.SeedSequence().entropy) % (1 << 52) if ctx.is_main else 0  # type: ignore[arg-type]
    return int(ctx.all_reduce_sum([float(drawn)], op="setup")[0])


def _initial_biases(data: RankData, ctx: Context, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """The closed-form regularised biases of :func:`~cfrec.models._bias.fit_biases` (its
    defaults as :func:`~cfrec.models.torch_factor.init_tensors` calls it): each sweep solves the
    rank's item block from its ratings, all-gathers the item biases, solves its users, and
    all-gathers the user biases. Returns this rank's ``(user, item)`` blocks, float32."""
    blocks, rank = data.blocks, data.rank
    (u0, _), (i0, _) = blocks.user_range(rank), blocks.item_range(rank)
    bu, bi = data.by_user, data.by_item
    own_u, own_i = bu.users - u0, bi.items - i0
    r_u = bu.ratings.astype(np.float64) - mu
    r_i = bi.ratings.astype(np.float64) - mu
    den_u = _BIAS_INIT_REG[0] + np.bincount(own_u, minlength=int(blocks.user_sizes()[rank]))
    den_i = _BIAS_INIT_REG[1] + np.bincount(own_i, minlength=int(blocks.item_sizes()[rank]))
    users_all = np.zeros(data.n_users)
    b_u = b_i = np.zeros(0)
    for sweep in range(10):
        b_i = np.bincount(own_i, weights=r_i - users_all[bi.users], minlength=len(den_i)) / den_i
        items_all = ctx.all_gather_rows(b_i, blocks.item_sizes(), op="setup")
        b_u = np.bincount(own_u, weights=r_u - items_all[bu.items], minlength=len(den_u)) / den_u
        if sweep < 9:
            users_all = ctx.all_gather_rows(b_u, blocks.user_sizes(), op="setup")
    return b_u.astype(np.float32), b_i.astype(np.float32)


class _Grid:
    """This rank's row of the grid: for each item block ``b`` its ratings with users and items
    relative to the blocks' starts, laid out by user (each user's in a random order), and each
    epoch's order of its ``batch``-sized slices.

    Every draw comes from ``gen`` in a fixed sequence (the layouts, then each epoch's and
    sub-epoch's slice order), as a single-process fit draws them: with one rank the layout and
    the orders are that fit's. A resumed job replays the orders of the epochs it skips.
    """

    def __init__(self, data: RankData, gen: Any, batch: int) -> None:
        import torch

        from cfrec.engines.compiled import grouped_shuffle, stable_key_order
        from cfrec.models.mf import GROUPED_SHUFFLE_MIN

        blocks, rank = data.blocks, data.rank
        u0, u1 = blocks.user_range(rank)
        part = data.by_user
        which = np.searchsorted(blocks.item_bounds, part.items, side="right") - 1
        self.gen, self.batch, self.rank, self.drawn = gen, batch, rank, 0
        self.cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for b in range(blocks.parts):
            rows = np.flatnonzero(which == b)
            if len(rows) >= GROUPED_SHUFFLE_MIN:  # drawn as BiasedMF draws a layout of that size
                seed = int(torch.randint(0, 2**62, (1,), generator=gen))
                rows = rows[grouped_shuffle((part.users[rows] - u0).astype(np.int32), u1 - u0, seed)]
            else:
                rows = rows[torch.randperm(len(rows), generator=gen).numpy()]
                rows = rows[stable_key_order((part.users[rows] - u0).astype(np.int32), u1 - u0)]
            i0, _ = blocks.item_range(b)
            self.cells.append((np.ascontiguousarray(part.users[rows] - u0, dtype=np.int32),
                               np.ascontiguousarray(part.items[rows] - i0, dtype=np.int32),
                               np.ascontiguousarray(part.ratings[rows], dtype=np.float32)))

    def _starts(self, b: int) -> np.ndarray:
        import torch

        starts = np.arange(0, len(self.cells[b][0]), self.batch)
        return starts[torch.randperm(len(starts), generator=self.gen).numpy()]

    def orders(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """Epoch ``epoch``'s sub-epochs: ``(item block, slice starts in order)`` each."""
        parts = len(self.cells)
        orders: list[tuple[int, np.ndarray]] = []
        while self.drawn < epoch:
            self.drawn += 1
            orders = [((self.rank + s) % parts, self._starts((self.rank + s) % parts)) for s in range(parts)]
        return orders


def fit_dsgd(model: BiasedMF, data: RankData, ctx: Context, on_epoch: EpochCallback | None,
             checkpoints: Checkpoints | None) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Train ``model`` by DSGD (see the module docstring); every rank calls it.

    ``model.global_mean_`` must hold the training mean (rounded to float32 here). Returns the whole ``[b, factors]``
    tables of users and items (gathered at the end) and the history; records add
    ``compute_seconds`` (this rank's time in the per-rating loop that epoch).
    """
    import torch

    from cfrec.engines.compiled import funk_slice

    check_dsgd(model)
    blocks, rank, parts = data.blocks, data.rank, data.blocks.parts
    k, batch = int(model.n_factors), int(model.batch_size)
    lr, reg, bias_reg = float(model.lr), float(model.reg), float(model.bias_reg)
    # the biases start from the mean; the loop uses it as the single-process fit holds it (a
    # float32 tensor), which is also what that fit saves
    mean = float(model.global_mean_)
    mu = model.global_mean_ = float(np.float32(mean))
    seed = _job_seed(model, ctx)
    (u0, u1), (i0, i1) = blocks.user_range(rank), blocks.item_range(rank)
    # the single-process start: user then item factors from the seeded generator
    gen = make_generator(seed, "cpu")
    std = float(model.init_std)
    p = np.ascontiguousarray((torch.randn(data.n_users, k, generator=gen) * std)[u0:u1].numpy())
    q = np.ascontiguousarray((torch.randn(data.n_items, k, generator=gen) * std)[i0:i1].numpy())
    if model.init_biases:
        b_u, b_i = _initial_biases(data, ctx, mean)
    else:
        b_u, b_i = np.zeros(u1 - u0, np.float32), np.zeros(i1 - i0, np.float32)
    grid = _Grid(data, gen, batch)
    state: dict[str, np.ndarray] = {"p": p, "bu": b_u, "q": q, "bi": b_i}
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
    funk_slice(*empty, p, q, b_u, b_i, mu, lr, reg, bias_reg)  # load (or compile) it before the epochs

    def epoch(number: int) -> dict[str, Any]:
        sse, busy = 0.0, 0.0
        for b, starts in grid.orders(number):
            users, items, ratings = grid.cells[b]
            tick = time.perf_counter()
            for start in starts:
                end = start + batch
                sse += funk_slice(users[start:end], items[start:end], ratings[start:end], state["p"],
                                  state["q"], state["bu"], state["bi"], mu, lr, reg, bias_reg)
            busy += time.perf_counter() - tick
            if parts > 1:  # pass the item block to rank - 1, take rank + 1's
                nxt = (b + 1) % parts
                moved = ctx.ring_shift(np.column_stack([state["bi"], state["q"]]),
                                       int(blocks.item_sizes()[nxt]), op="items")
                state["bi"], state["q"] = np.ascontiguousarray(moved[:, 0]), np.ascontiguousarray(moved[:, 1:])
        total = float(ctx.all_reduce_sum([sse], op="loss")[0])
        return {"train_loss": total / data.n_interactions, "compute_seconds": busy}

    def own_blocks() -> tuple[np.ndarray, np.ndarray]:
        return np.column_stack([state["bu"], state["p"]]), np.column_stack([state["bi"], state["q"]])

    def restore(users: np.ndarray, items: np.ndarray) -> None:
        state["bu"], state["p"] = np.ascontiguousarray(users[:, 0]), np.ascontiguousarray(users[:, 1:])
        state["bi"], state["q"] = np.ascontiguousarray(items[:, 0]), np.ascontiguousarray(items[:, 1:])

    history = run_epochs("BiasedMF", int(model.epochs), on_epoch, ctx, own_blocks, restore, epoch, checkpoints)
    users, items = own_blocks()
    return (ctx.all_gather_rows(users, blocks.user_sizes(), op="final"),
            ctx.all_gather_rows(items, blocks.item_sizes(), op="final"), history)
