"""SVD++ (Koren 2008): biased MF whose user vector also sums the implicit factors of the items
the user rated.

``r_ui = mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)``, with ``N(u)`` the
items ``u`` rated in training. A step computes the implicit part only for the users in its
batch: one ``embedding_bag`` (a segment sum weighted by ``|N(u)|^-1/2``) over those users' rated
items, found by slicing the users x items CSR structure (:func:`~cfrec.engines.torch_loop.csr_segments`),
and sends its gradient back to those items' ``y_j`` alone, as a row-sparse gradient. Batches hold
whole users (:func:`~cfrec.engines.torch_loop.grouped_batches`), so the items summed in a step
are about as many as the ratings in it: an epoch costs about what a biased-MF epoch costs, on any
number of users, where summing over every user at every step (or over the rated items of the
users of a random batch of ratings) would cost the whole rating matrix per step.

On the CPU, with the default Adam, a step is one compiled pass
(:func:`cfrec.engines.compiled.svdpp_adam_step`, driven by :class:`_CompiledAdam`): the loss, its
row-sparse gradients and lazy Adam on the touched rows, the same update as :class:`_SVDppLoss`
followed by :class:`~cfrec.engines.torch_loop.Adam` (a test holds them equal), without the
dozens of tensor operations and temporaries a step costs through autograd. With ``"users"``
batches the ratings are laid out in user order once, so each user's ratings are one run of the
columns. On CUDA, and with the ``"adagrad"`` or ``"sgd"`` optimisers, the autograd function trains.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfrec.data.interactions import Interactions
from cfrec.engines.matrix import normalized_sets
from cfrec.engines.torch_loop import (
    BatchOrder,
    DirectUpdate,
    RowwiseOptimizer,
    UniqueRows,
    csr_segments,
    export_numpy,
    grouped_batches,
    row_grad,
)
from cfrec.errors import ModelFileError
from cfrec.models import torch_factor
from cfrec.models.factor import RidgeFoldIn
from cfrec.models.layout import Array
from cfrec.models.params import hyperparameters, param
from cfrec.models.torch_factor import TorchFactorModel


@dataclass
class _Implicit:
    """The sets ``N(u)`` on the device, for implicit sums over any set of users.

    Attributes
    ----------
    indptr, indices
        Users x items CSR structure of ``N`` (int64, sorted, duplicates merged).
    norm
        (n_users,) ``|N(u)|^-1/2`` (0 for a user without items).
    y_weight
        (n_items,) L2 weight of ``|y_j|^2`` per (user, item) pair of a step (see :class:`SVDpp`).
    user_weight
        (n_users,) ``1 / a(u)``, with ``a(u)`` the steps of an epoch expected to hold user ``u``
        (about 1 with ``"users"`` batches): each pair's weight is divided by it, so that an epoch
        gives every ``y_j`` the same total L2 whatever the batching.
    users, items
        Distinct-row finders for batch users and their rated items.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    norm: torch.Tensor
    y_weight: torch.Tensor
    user_weight: torch.Tensor
    users: UniqueRows
    items: UniqueRows

    @classmethod
    def build(cls, data: Interactions, batch_size: int, batching: str, device: torch.device) -> _Implicit:
        norm_csr = normalized_sets(data.users, data.items, data.n_users, data.n_items)
        norm_csr.sort_indices()
        counts = np.diff(norm_csr.indptr).astype(np.float64)
        popularity = np.bincount(norm_csr.indices, minlength=data.n_items).astype(np.float64)
        # Koren's SGD shrinks y_j once for every rating of every user who rated j; per batch row
        # that is sum_{u: j in N(u)} |N(u)| / n_ratings on average. Its mean over the items, spread
        # evenly, works better than the per-item weights (it spares the y of popular items). A step
        # applies it to the pairs (u, j) of its users, each weighted 1 / popularity(j): an epoch
        # visits every pair once, so each y_j gets the mean strength once per step of the epoch.
        mean_strength = float((counts ** 2).sum() / max(len(data), 1) / max(data.n_items, 1))
        steps = max(len(data), 1) / max(int(batch_size), 1)
        weight = np.divide(mean_strength * steps, popularity, out=np.zeros_like(popularity),
                           where=popularity > 0)
        norm = np.zeros(data.n_users, dtype=np.float32)
        norm[counts > 0] = (counts[counts > 0] ** -0.5).astype(np.float32)
        appearances = np.ones(data.n_users)
        if batching == "ratings":
            appearances = np.maximum(steps * _in_batch_probability(data, batch_size), 1e-12)
        return cls(
            indptr=torch.as_tensor(norm_csr.indptr, dtype=torch.int64, device=device),
            indices=torch.as_tensor(norm_csr.indices, dtype=torch.int64, device=device),
            norm=torch.as_tensor(norm, device=device),
            y_weight=torch.as_tensor(weight, dtype=torch.float32, device=device),
            user_weight=torch.as_tensor(1.0 / appearances, dtype=torch.float32, device=device),
            users=UniqueRows(data.n_users, device),
            items=UniqueRows(data.n_items, device),
        )

    def segments(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For distinct ``users``: their rated items row after row, each entry's segment (position
        in ``users``), the segment offsets and each entry's weight ``|N(u)|^-1/2``."""
        positions, segment, offsets = csr_segments(self.indptr, users)
        weights = self.norm.index_select(0, users).index_select(0, segment)
        return self.indices.index_select(0, positions), segment, offsets, weights

    def sums(self, y: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """``|N(u)|^-1/2 sum_{j in N(u)} y_j`` for distinct ``users``: (len(users), k)."""
        items, _, offsets, weights = self.segments(users)
        return F.embedding_bag(items, y, offsets, mode="sum", per_sample_weights=weights)


#: ``"auto"`` batching takes random batches of ratings when an epoch of them sums at most this
#: many times the rated items of every user (small data, where each batch holds most users).
_AUTO_RATINGS_COST = 8.0


def _user_order(data: Interactions) -> np.ndarray:
    """Positions of the training ratings sorted by user (stable): the layout of ``"users"`` batches."""
    try:
        from cfrec.engines.compiled import stable_key_order
    except ImportError:  # pragma: no cover - numba is a dependency
        return np.argsort(data.users, kind="stable")
    return stable_key_order(np.asarray(data.users), data.n_users)


def _in_batch_probability(data: Interactions, batch_size: int) -> np.ndarray:
    """(n_users,) chance that a random batch of ``batch_size`` ratings holds a rating of each user."""
    rows = np.bincount(data.users, minlength=data.n_users).astype(np.float64)
    if int(batch_size) >= len(data):
        return (rows > 0).astype(np.float64)
    share = rows / max(len(data), 1)
    return -np.expm1(int(batch_size) * np.log1p(-np.minimum(share, 1.0 - 1e-12)))


def _ratings_batch_cost(data: Interactions, batch_size: int) -> float:
    """Items summed in an epoch of random rating batches, over the items summed by ``"users"``
    batches (each user's rated items once per epoch)."""
    distinct = np.diff(data.to_csr(binary=True).indptr).astype(np.float64)
    steps = math.ceil(len(data) / max(int(batch_size), 1))
    per_step = float((distinct * _in_batch_probability(data, batch_size)).sum())
    return steps * per_step / max(float(distinct.sum()), 1.0)


class _SVDppLoss(torch.autograd.Function):
    """Batch-mean squared error of SVD++ plus per-observation L2 (see :class:`SVDpp`).

    Forward: ``z_u`` for the batch's distinct users only (an ``embedding_bag`` over their rated
    items); ``x_u = p_u + z_u``; ``e = mu + b_u + b_i + q_i . x_u - r``; the L2 of the ``y_j``
    summed in the step. Backward by hand, every table gradient row-sparse: ``dz_u`` summed over
    the user's batch rows, then spread to the ``y_j`` of ``N(u)`` with weight ``|N(u)|^-1/2``.
    """

    @staticmethod
    def forward(ctx: Any, p: torch.Tensor, q: torch.Tensor, bu: torch.Tensor, bi: torch.Tensor,
                y: torch.Tensor, mu: torch.Tensor, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor,
                implicit: _Implicit, reg: float, implicit_reg: float, bias_reg: float) -> torch.Tensor:
        users, inv_u = implicit.users(u)
        items_j, segment, offsets, weights = implicit.segments(users)
        z = F.embedding_bag(items_j, y, offsets, mode="sum", per_sample_weights=weights)
        pu, qi = p.index_select(0, u), q.index_select(0, i)
        x = pu + z.index_select(0, inv_u)
        bu_b, bi_b = bu.index_select(0, u), bi.index_select(0, i)
        err = torch_factor.rating_error(x, qi, bu_b, bi_b, mu, r)
        n = max(len(u), 1)
        loss = torch_factor.penalised_sse(err, pu, qi, bu_b, bi_b, reg, bias_reg)
        loss = loss / n
        rows_y, inv_y = implicit.items(items_j)
        y_r = coef = None
        if implicit_reg:
            pair_weight = implicit.user_weight.index_select(0, users).index_select(0, segment)
            counts = torch.bincount(inv_y, weights=pair_weight, minlength=len(rows_y)).to(y.dtype)
            coef = implicit.y_weight.index_select(0, rows_y) * counts
            y_r = y.index_select(0, rows_y)
            loss = loss + implicit_reg * torch.dot(coef, (y_r * y_r).sum(1))
        ctx.save_for_backward(pu, qi, x, bu_b, bi_b, u, i, err, inv_u, segment, weights, rows_y, inv_y)
        ctx.reg_parts = (y_r, coef)
        ctx.meta = (p.shape, q.shape, bu.shape, bi.shape, y.shape, len(users), float(reg),
                    float(implicit_reg), float(bias_reg), n)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        pu, qi, x, bu_b, bi_b, u, i, err, inv_u, segment, weights, rows_y, inv_y = ctx.saved_tensors
        y_r, coef = ctx.reg_parts
        p_shape, q_shape, bu_shape, bi_shape, y_shape, n_users, reg, implicit_reg, bias_reg, n = ctx.meta
        scale = grad * (2.0 / n)
        e = err[:, None]
        need = ctx.needs_input_grad
        dp = dq = dbu = dbi = dy = dmu = None
        if need[0] or need[4]:
            ex = e * qi  # d err^2 / d x_u, unscaled
            if need[4]:
                dz = ex.new_zeros((n_users, ex.shape[1])).index_add_(0, inv_u, ex).mul_(scale)
                per_pair = dz.index_select(0, segment).mul_(weights[:, None])
                dy_rows = per_pair.new_zeros((len(rows_y), per_pair.shape[1])).index_add_(0, inv_y, per_pair)
                if implicit_reg:
                    dy_rows.addcmul_(y_r, coef[:, None], value=grad * (2.0 * implicit_reg))
                dy = row_grad(rows_y, dy_rows, y_shape)
            if need[0]:
                gp = ex.add_(pu, alpha=reg) if reg else ex
                dp = row_grad(u, gp.mul_(scale), p_shape)
        if need[1]:
            dq = row_grad(i, torch_factor.reg_grad(qi, e, x, reg).mul_(scale * (reg or 1.0)), q_shape)
        dbu, dbi = torch_factor.bias_grads(err, bu_b, bi_b, u, i, scale, bias_reg, bu_shape, bi_shape, (need[2], need[3]))
        if need[5]:
            dmu = (err.sum() * scale).reshape(())
        return dp, dq, dbu, dbi, dy, dmu, *([None] * 7)


@functools.cache
def _compiled_step() -> Any:
    """:func:`cfrec.engines.compiled.svdpp_adam_step`, or None where numba is missing (the
    autograd step of :class:`_SVDppLoss` with :class:`~cfrec.engines.torch_loop.Adam` is used)."""
    try:
        from cfrec.engines.compiled import svdpp_adam_step
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return svdpp_adam_step


class _CompiledAdam:
    """SVD++'s CPU step: the loss, its gradients and lazy Adam in one compiled pass per batch.

    The same update as :class:`_SVDppLoss` followed by :class:`~cfrec.engines.torch_loop.Adam`
    (its default betas and eps, coupled ``weight_decay`` on the touched rows), on numpy views of
    the network's parameters, with Adam's moments kept here. Called as the minibatch loss
    (row positions -> the step's loss, already applied); :attr:`schedule` is the optimiser
    :func:`~cfrec.engines.torch_loop.train_loop` sees, whose learning rate each step reads.
    """

    betas = (0.9, 0.999)  # torch_loop.Adam's defaults
    eps = 1e-8

    def __init__(self, kernel: Any, net: _SVDppNet, users: torch.Tensor, items: torch.Tensor,
                 ratings: torch.Tensor, batch_size: int, lr: float,
                 penalties: tuple[float, float, float, float]) -> None:
        self.kernel = kernel
        self.schedule = DirectUpdate(lr)
        self.penalties = penalties  # reg, implicit_reg, bias_reg, weight_decay
        self.steps = 0
        params = (net.user_factors, net.item_factors, net.user_bias, net.item_bias, net.implicit_factors)
        self.tables = tuple(t.detach().numpy() for t in params)
        self.first = tuple(np.zeros_like(t) for t in self.tables)
        self.second = tuple(np.zeros_like(t) for t in self.tables)
        self.mu = float(net.global_bias)
        imp = net.implicit
        self.columns = (users.numpy(), items.numpy(), ratings.numpy())
        self.structure = tuple(t.numpy() for t in (imp.indptr, imp.indices, imp.norm, imp.y_weight,
                                                   imp.user_weight))
        n_users, k = self.tables[0].shape
        n_items = self.tables[1].shape[0]
        user_rows, item_rows = min(n_users, batch_size), min(n_items, batch_size)
        f32 = np.float32
        self.scratch = (
            np.full(n_users, -1, np.int64), np.full(n_items, -1, np.int64), np.full(n_items, -1, np.int64),
            np.empty(user_rows, np.int64), np.empty(item_rows, np.int64), np.empty(n_items, np.int64),
            np.empty(user_rows, f32), np.empty(item_rows, f32),
            np.empty((user_rows, k), f32), np.empty((user_rows, k), f32), np.empty((item_rows, k), f32),
            np.empty(user_rows, f32), np.empty(item_rows, f32), np.empty((n_items, k), f32),
            np.empty(n_items, f32),
        )
        # load (or compile) the step for these types now, in the fit's set-up, not its first epoch
        self._run(np.empty(0, np.int64), 1.0, 1.0)

    def _run(self, batch: np.ndarray, step_size: float, root_bc2: float) -> float:
        reg, implicit_reg, bias_reg, weight_decay = self.penalties
        return float(self.kernel(batch, *self.columns, *self.structure, self.tables, self.first, self.second,
                                 self.mu, step_size, root_bc2, self.betas, self.eps, reg, implicit_reg,
                                 bias_reg, weight_decay, self.scratch))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        b1, b2 = self.betas
        step_size = self.schedule.lr / (1.0 - b1 ** self.steps)
        loss = self._run(batch.numpy(), step_size, math.sqrt(1.0 - b2 ** self.steps))
        return torch.tensor(loss)


class _SVDppNet(nn.Module):
    global_bias: torch.Tensor  # registered buffer
    compiled_step: _CompiledAdam | None = None  # the CPU step, when it trains the network

    def __init__(self, init: dict[str, torch.Tensor], y: torch.Tensor, global_mean: float,
                 implicit: _Implicit) -> None:
        super().__init__()
        self.user_factors = nn.Parameter(init["p"])
        self.item_factors = nn.Parameter(init["q"])
        self.user_bias = nn.Parameter(init["bu"])
        self.item_bias = nn.Parameter(init["bi"])
        self.implicit_factors = nn.Parameter(y)
        self.register_buffer("global_bias", torch.tensor(float(global_mean), dtype=torch.float32))
        self.implicit = implicit  # not a buffer: kept out of state_dict copies

    def effective_users(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """``p_u + |N(u)|^-1/2 sum_j y_j`` for distinct ``users`` (default: every user)."""
        if users is None:
            users = torch.arange(self.user_factors.shape[0], device=self.user_factors.device)
        return self.user_factors.index_select(0, users) + self.implicit.sums(self.implicit_factors, users)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        distinct, inverse = self.implicit.users(users)
        x = self.effective_users(distinct).index_select(0, inverse)
        dot = (x * self.item_factors[items]).sum(1)
        return self.global_bias + self.user_bias[users] + self.item_bias[items] + dot


@hyperparameters
class SVDpp(TorchFactorModel):
    """Koren's SVD++: biased MF plus implicit feedback from which items each user rated.

    ``r = mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)``. After ``fit``,
    ``user_factors_`` holds the effective user vector (the bracket), so scoring, ``recommend``,
    ``similar_items`` and persistence work as for any factor model; ``implicit_factors_``
    (``y``) and ``user_explicit_`` (``p``) are kept too, and :meth:`fold_in` uses ``y`` so a new
    user's rated items inform their vector even before the ratings' values do.

    Parameters
    ----------
    n_factors, epochs, lr, optimizer, weight_decay, init_std, init_biases, patience,
    valid_fraction, refit, device, threads, seed, fold_in_reg
        As in :class:`~cfrec.models.mf.BiasedMF`.
    batch_size
        Ratings per optimiser step.
    batching
        How an epoch is cut into batches. ``"users"``: the users in a random order, the sequence
        of their ratings cut into batches, so a batch holds whole users (the two at its ends may
        continue in the neighbouring batches) and the implicit sums of a step cover about
        ``batch_size`` items: an epoch costs about one pass over the ratings, on any data.
        ``"ratings"``: random batches of ratings, as biased MF uses; the implicit sums then
        cover every rated item of every user in the batch, and an epoch costs that many passes
        (a few on ML-100K, where each batch holds most users anyway; hundreds on ML-10M).
        ``"auto"`` (default) takes ``"ratings"`` when an epoch of them costs at most 8 passes,
        else ``"users"``. The defaults were chosen on validation carves of ML-100K's
        ``u1.base``, where ``"auto"`` means ``"ratings"``: RMSE 0.9090 there (the same recipe
        with ``"users"`` batches: 0.9132, because each user then gets one update an epoch).
    reg
        Per-observation L2 on ``p_u`` and ``q_i`` (each rating in a batch adds
        ``reg * (|p_u|^2 + |q_i|^2)``).
    implicit_reg
        L2 on the implicit factors ``y_j``. Koren's SGD shrinks ``y_j`` for every rating of every
        user who rated ``j``; here that total strength (per batch row) is spread evenly over the
        items, ``c = sum_u |N(u)|^2 / (n_ratings * n_items)``, and applied to the ``y_j`` a step
        sums: each step adds ``implicit_reg * c * S * sum_{(u, j)} |y_j|^2 / n(j)`` over its
        users' (user, rated item) pairs, with ``n(j)`` the number of users who rated ``j`` and
        ``S = n_ratings / batch_size`` the steps of an epoch. An epoch of ``"users"`` batches
        visits each pair once, so each ``y_j`` gets a total of ``implicit_reg * c`` per step of
        the epoch, like a penalty ``implicit_reg * c * |Y|^2`` at every step would give, while no
        step touches a ``y_j`` outside its batch.
    bias_reg
        Per-observation L2 on ``b_u`` and ``b_i``.
    """

    name = "svdpp"
    state_layout = {"model.implicit_factors": Array(("items", "factors")),
                    "model.user_explicit": Array(("users", "factors"))}

    n_factors: int = param(default=32, ge=1)
    epochs: int = param(default=20, ge=1)
    batch_size: int = param(default=16384, ge=1)
    batching: Literal["auto", "users", "ratings"] = "auto"
    lr: float = param(default=0.007, gt=0)
    implicit_reg: float = param(default=0.01, ge=0)
    bias_reg: float = param(default=0.0, ge=0)
    init_std: float = param(default=0.01, ge=0)

    def _build(self, data: Interactions, device: torch.device, gen: torch.Generator):
        init = torch_factor.init_tensors(data, int(self.n_factors), float(self.init_std), bool(self.init_biases),
                             self.global_mean_, gen)
        batching = self._batching(data)  # a pass over the ratings on "auto": resolved once here
        implicit = _Implicit.build(data, int(self.batch_size), batching, device)
        y = torch.zeros(data.n_items, int(self.n_factors))
        net = _SVDppNet(init, y, self.global_mean_, implicit).to(device)
        t = data.to_tensors(device)
        users, items, ratings = t["users"], t["items"], t["ratings"]
        if batching == "users":  # the ratings in user order, as _batch_order numbers them
            layout = torch.as_tensor(_user_order(data), device=device)
            users, items, ratings = (c.index_select(0, layout) for c in (users, items, ratings))
        reg, implicit_reg, bias_reg = float(self.reg), float(self.implicit_reg), float(self.bias_reg)

        kernel = _compiled_step() if device.type == "cpu" and str(self.optimizer).lower() == "adam" else None
        if kernel is not None:
            step = _CompiledAdam(kernel, net, users, items, ratings, int(self.batch_size), float(self.lr),
                                 (reg, implicit_reg, bias_reg, float(self.weight_decay)))
            net.compiled_step = step
            return net, step, net

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            return _SVDppLoss.apply(
                net.user_factors, net.item_factors, net.user_bias, net.item_bias, net.implicit_factors,
                net.global_bias, users.index_select(0, batch), items.index_select(0, batch),
                ratings.index_select(0, batch), implicit, reg, implicit_reg, bias_reg)

        return net, loss_fn, net

    def _make_optimizer(self, net: nn.Module) -> RowwiseOptimizer | DirectUpdate:
        assert isinstance(net, _SVDppNet)  # built by _build
        if net.compiled_step is not None:  # the compiled step applies Adam itself
            return net.compiled_step.schedule
        return super()._make_optimizer(net)

    def _batch_order(self, data: Interactions, device: torch.device) -> BatchOrder | None:
        if self._batching(data) == "users":
            # numbered in the user-ordered layout of _build: each user's ratings are one run of
            # the columns, so a step reads them in address order (the rows are those of
            # grouped batches over the original order, in the same order)
            return grouped_batches(data.users[_user_order(data)], data.n_users, int(self.batch_size), device)
        return super()._batch_order(data, device)

    def _batching(self, data: Interactions) -> str:
        """``batching`` with ``"auto"`` resolved (see the class docstring)."""
        if self.batching != "auto":
            return str(self.batching)
        return "ratings" if _ratings_batch_cost(data, int(self.batch_size)) <= _AUTO_RATINGS_COST else "users"

    def _export(self, net: nn.Module, data: Interactions) -> None:
        assert isinstance(net, _SVDppNet)  # built by _build
        with torch.no_grad():
            self.user_factors_ = export_numpy(net.effective_users())
        self.user_explicit_ = export_numpy(net.user_factors)
        self.implicit_factors_ = export_numpy(net.implicit_factors)
        self.item_factors_ = export_numpy(net.item_factors)
        self.user_bias_ = export_numpy(net.user_bias)
        self.item_bias_ = export_numpy(net.item_bias)

    # ------------------------------------------------------------------ cold start
    def _fold_in_offset(self, seen: np.ndarray) -> np.ndarray:
        """A new user's implicit term ``|N|^-1/2 sum_j y_j`` over the items they rated.

        ``fold_in`` then solves ``[b_u, p_u]`` on what this leaves unexplained, and the folded
        vector is their sum, like ``user_factors_`` of a trained user.
        """
        y = self.implicit_factors_.astype(np.float64)
        return y[seen].sum(0) / np.sqrt(len(seen)) if len(seen) else np.zeros(y.shape[1])

    def fold_in_ridge(self, reg: float | None = None) -> RidgeFoldIn | None:
        ridge = super().fold_in_ridge(reg)
        return None if ridge is None else dataclasses.replace(ridge, item_set_offset=True)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        state["implicit_factors"] = self.implicit_factors_.astype(np.float32)
        state["user_explicit"] = self.user_explicit_.astype(np.float32)
        return state

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        self.implicit_factors_ = arrays["implicit_factors"]
        self.user_explicit_ = arrays["user_explicit"]
        if (self.implicit_factors_.shape != self.item_factors_.shape
                or self.user_explicit_.shape != self.user_factors_.shape):
            raise ModelFileError("SVD++ implicit or explicit factor matrices do not match the vocabularies")
