"""Biased matrix factorisation (Koren, Bell & Volinsky 2009) trained with PyTorch minibatches.

``r_ui = mu + b_u + b_i + p_u . q_i``. The ratings live whole on the device as index tensors;
every step takes a random slice of them, so there is no per-sample ``Dataset``/``DataLoader``.
The loss, its per-observation L2 penalty and the gradient are fused in one autograd function
(:class:`_BiasedMFLoss`) whose gradients are row-sparse: the batch's rows of the four tables and
nothing else. With the engine's row-wise optimisers a step therefore costs O(batch), whatever the
number of users and items; each batch is taken in user order, so the user rows are read and
written in increasing address order.

:class:`~cfrec.models.torch_factor.TorchFactorModel` holds the fitting pipeline shared with
:class:`~cfrec.models.svdpp.SVDpp`.
"""

from __future__ import annotations

import functools
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from cfrec.data.interactions import Interactions
from cfrec.engines.torch_loop import (
    OPTIMIZERS,
    BatchOrder,
    DirectUpdate,
    RowwiseOptimizer,
    contiguous_batches,
    export_numpy,
    row_grad,
)
from cfrec.models.base import FoldedUser
from cfrec.models.factor import FactorRecommender, support_weights
from cfrec.models.params import hyperparameters, invalid, param
from cfrec.models.torch_factor import (
    TorchFactorModel,
    bias_grads,
    init_tensors,
    penalised_sse,
    rating_error,
    reg_grad,
)


# ---------------------------------------------------------------------- fused loss
class _BiasedMFLoss(torch.autograd.Function):
    """Mean over a minibatch of ``(pred - r)^2 + reg (|p_u|^2 + |q_i|^2) + bias_reg (b_u^2 + b_i^2)``.

    The gradient is written out by hand (two ``addcmul`` over the batch's rows), several times
    faster on CPU than autograd's indexing backward; values equal the autograd ones. The four
    table gradients are row-sparse (:func:`~cfrec.engines.torch_loop.row_grad`): one row per
    batch entry, repeats summed by the optimiser, so no step touches a row outside the batch.
    """

    @staticmethod
    def forward(ctx: Any, p: torch.Tensor, q: torch.Tensor, bu: torch.Tensor, bi: torch.Tensor,
                mu: torch.Tensor, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor,
                reg: float, bias_reg: float) -> torch.Tensor:
        pu, qi = p.index_select(0, u), q.index_select(0, i)
        bu_b, bi_b = bu.index_select(0, u), bi.index_select(0, i)
        err = rating_error(pu, qi, bu_b, bi_b, mu, r)
        n = max(len(u), 1)
        loss = penalised_sse(err, pu, qi, bu_b, bi_b, reg, bias_reg)
        ctx.save_for_backward(pu, qi, bu_b, bi_b, u, i, err)
        ctx.meta = (p.shape, q.shape, bu.shape, bi.shape, float(reg), float(bias_reg), n)
        return loss / n

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        pu, qi, bu_b, bi_b, u, i, err = ctx.saved_tensors
        p_shape, q_shape, bu_shape, bi_shape, reg, bias_reg, n = ctx.meta
        scale = grad * (2.0 / n)
        e = err[:, None]
        need = ctx.needs_input_grad
        dp = dq = dbu = dbi = dmu = None
        # The reg term is folded into one addcmul (g = pu + e qi / reg), then scaled in place.
        if need[0]:
            dp = row_grad(u, reg_grad(pu, e, qi, reg).mul_(scale * (reg or 1.0)), p_shape)
        if need[1]:
            dq = row_grad(i, reg_grad(qi, e, pu, reg).mul_(scale * (reg or 1.0)), q_shape)
        dbu, dbi = bias_grads(err, bu_b, bi_b, u, i, scale, bias_reg, bu_shape, bi_shape, (need[2], need[3]))
        if need[4]:
            dmu = (err.sum() * scale).reshape(())
        return dp, dq, dbu, dbi, dmu, None, None, None, None, None


@torch.no_grad()
def funk_step(net: _MFNet, u: torch.Tensor, i: torch.Tensor, r: torch.Tensor, lr: float, reg: float,
              bias_reg: float) -> torch.Tensor:
    """One minibatch of per-rating SGD (Funk 2006; Surprise's ``SVD``), applied in place.

    Every rating of the batch moves its rows by its own gradient at rate ``lr``::

        e = mu + b_u + b_i + p_u . q_i - r
        p_u -= lr (e q_i + reg p_u)        q_i -= lr (e p_u + reg q_i)
        b_u -= lr (e + bias_reg b_u)       b_i -= lr (e + bias_reg b_i)

    all computed from the values before the batch (a row rated several times in a batch gets
    the sum of its ratings' moves). No autograd, no optimiser state, no deduplication of rows:
    two gathers and two scatter-adds per table, so a step costs O(batch). Returns the batch's
    mean squared error before the step (the penalties are not summed: that would cost two more
    passes over the batch's factors for a number only the history shows).
    """
    p, q, bu, bi = net.user_factors, net.item_factors, net.user_bias, net.item_bias
    pu, qi = p.index_select(0, u), q.index_select(0, i)
    bu_b, bi_b = bu.index_select(0, u), bi.index_select(0, i)
    err = rating_error(pu, qi, bu_b, bi_b, net.global_bias, r)
    loss = torch.dot(err, err)
    e = err[:, None]
    # index_add_ without alpha (its alpha path is several times slower): the moves are pre-scaled
    p.index_add_(0, u, reg_grad(pu, e, qi, reg).mul_(-lr * (reg or 1.0)))
    q.index_add_(0, i, reg_grad(qi, e, pu, reg).mul_(-lr * (reg or 1.0)))
    bu.index_add_(0, u, (err + bias_reg * bu_b if bias_reg else err).mul_(-lr))
    bi.index_add_(0, i, (err + bias_reg * bi_b if bias_reg else err).mul_(-lr))
    return loss / max(len(u), 1)


#: Ratings from which the per-rating loop's layout (users in order, each user's ratings in a
#: seeded random order) is drawn by one compiled pass over the int32 rows
#: (:func:`cfrec.engines.compiled.grouped_shuffle`) rather than by torch's permutation of every
#: rating followed by a sort by user and gathers of int64 copies (1.5 s of set-up at 10M ratings).
GROUPED_SHUFFLE_MIN = 1 << 18


@functools.cache
def _compiled_funk_loop() -> Any:
    """The compiled per-rating SGD loop (:func:`cfrec.engines.compiled.funk_slice`, numba), loaded
    on first use; None where numba is missing (the batched :func:`funk_step` is used instead)."""
    try:
        from cfrec.engines.compiled import funk_slice
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return funk_slice


class _MFNet(nn.Module):
    """Parameters of biased MF; ``global_bias`` is learnable or a fixed buffer."""

    global_bias: torch.Tensor  # an nn.Parameter or a registered buffer
    direct_update: DirectUpdate | None = None  # the per-rating SGD's rate, when it trains

    def __init__(self, init: dict[str, torch.Tensor], global_mean: float, learn_global_bias: bool) -> None:
        super().__init__()
        self.user_factors = nn.Parameter(init["p"])
        self.item_factors = nn.Parameter(init["q"])
        self.user_bias = nn.Parameter(init["bu"])
        self.item_bias = nn.Parameter(init["bi"])
        mu = torch.tensor(float(global_mean), dtype=torch.float32)
        if learn_global_bias:
            self.global_bias = nn.Parameter(mu)
        else:
            self.register_buffer("global_bias", mu)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.user_factors[users] * self.item_factors[items]).sum(1)
        return self.global_bias + self.user_bias[users] + self.item_bias[items] + dot


# ---------------------------------------------------------------------- the model
@hyperparameters
class BiasedMF(TorchFactorModel):
    """Biased matrix factorisation: ``r = mu + b_u + b_i + p_u . q_i``, trained by minibatch
    per-rating SGD (default), Adam, Adagrad or SGD in PyTorch.

    The default optimiser, ``"funk"``, is Funk's rule as in Surprise's ``SVD``: each rating moves
    its rows by its own gradient at rate ``lr``, with no optimiser state, over the ratings laid
    out once in a fixed order whose ``batch_size`` slices each epoch visits in a fresh order. On
    the CPU the moves are sequential, one rating after the other, in a compiled loop (numba),
    and the layout holds each user's ratings together (in a random order), so a user's row stays
    in cache as Surprise's user-ordered loop keeps it; on CUDA (or without numba) the layout is
    a random shuffle and a batch's moves are applied together from the values before it
    (:func:`funk_step`). Per-observation L2 on
    the factors and biases of the rows in each batch (busy users and items are held by their
    data, rare ones by the prior); biases start at their closed-form regularised values.
    Defaults (128 factors, lr 0.015, reg 0.1, bias_reg 0.02, 25 epochs, batches of 4096) were
    chosen on a random 10% validation carve of ML-100K's ``u1.base`` (validation RMSE 0.9154
    sequential, 0.9151 batched; Adam's previous defaults 0.9166 there). :meth:`lab` gives the course-lab configuration
    (Adam) instead.

    Parameters
    ----------
    n_factors
        Length of the user and item vectors.
    epochs
        Passes over the training ratings (the most, when early stopping is on).
    batch_size
        Ratings per optimiser step.
    lr
        Learning rate of the optimiser (for the batch-mean loss).
    reg
        Per-observation L2 on ``p_u`` and ``q_i``: each rating in a batch adds
        ``reg * (|p_u|^2 + |q_i|^2)`` to the loss.
    bias_reg
        Same for ``b_u`` and ``b_i``.
    weight_decay
        The optimiser's global L2 over all parameters (PyTorch's coupled ``weight_decay``, as
        in the lab); 0 disables it.
    optimizer
        ``"funk"`` (per-rating SGD, see above), ``"adam"``, ``"adagrad"`` or ``"sgd"`` (on the
        batch-mean loss). ``"funk"`` keeps ``mu`` fixed and has no ``weight_decay``.
    init_std
        Standard deviation of the normal initialisation of the factors.
    init_biases
        Start the biases at their closed-form regularised values (``True``) or at zero.
    learn_global_bias
        Train ``mu`` as a parameter started at the training mean (the lab's ``nn.Parameter``);
        ``False`` keeps it fixed at the mean. After a fit, ``global_mean_`` holds the value the
        model predicts with (so cold-start fallbacks use the learned one).
    patience
        Early stopping: epochs without a validation improvement before training stops (the best
        epoch is restored). Needs validation data: ``fit(train, valid)`` or ``valid_fraction``.
        ``None`` disables it.
    valid_fraction
        Share of the training ratings carved off for validation when ``fit`` gets no ``valid``
        (0 = none).
    refit
        After early stopping on a carved part, train again on all ratings for the best number of
        epochs (so no training data is lost, at the cost of a second fit).
    device
        ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
    seed
        Seed of initialisation, shuffling and the validation carve; a fixed seed reproduces a
        CPU fit exactly. ``None`` draws fresh entropy.
    fold_in_reg
        Ridge strength used by :meth:`fold_in` for new users.
    """

    name = "mf"

    epochs: int = param(default=25, ge=1)
    lr: float = param(default=0.015, gt=0)
    bias_reg: float = param(default=0.02, ge=0)
    optimizer: str = param(default="funk", choices=("funk", *OPTIMIZERS))
    learn_global_bias: bool = False

    @classmethod
    def lab(cls, **overrides: Any) -> Self:
        """The course lab's model: 64 factors ~ N(0, 0.01^2), zero biases, a learnable global
        bias started at the training mean, Adam (lr 0.005, coupled weight decay 1e-5 on every
        parameter), batches of 1024, 30 epochs of plain MSE, no early stopping or validation.

        Keyword arguments override any of these (``BiasedMF.lab(epochs=10)``).
        """
        params: dict[str, Any] = {
            "n_factors": 64, "epochs": 30, "batch_size": 1024, "lr": 0.005, "reg": 0.0,
            "bias_reg": 0.0, "weight_decay": 1e-5, "optimizer": "adam", "init_std": 0.01,
            "init_biases": False, "learn_global_bias": True, "patience": None,
            "valid_fraction": 0.0, "refit": False,
        }
        params.update(overrides)
        return cls(**params)

    def _build(self, data: Interactions, device: torch.device, gen: torch.Generator):
        init = init_tensors(data, int(self.n_factors), float(self.init_std), bool(self.init_biases),
                             self.global_mean_, gen)
        net = _MFNet(init, self.global_mean_, bool(self.learn_global_bias)).to(device)
        reg, bias_reg = float(self.reg), float(self.bias_reg)
        kernel = _compiled_funk_loop() if self._funk and device.type == "cpu" else None
        if kernel is not None and len(data) >= GROUPED_SHUFFLE_MIN:
            # at scale the layout below in one compiled pass over the int32 rows: no tensor copies,
            # no 10M-element torch permutation (the same kind of layout, drawn another way)
            from cfrec.engines.compiled import grouped_shuffle  # importable: the kernel loaded

            seed = int(torch.randint(0, 2**62, (1,), generator=gen))
            by_user = grouped_shuffle(data.users, data.n_users, seed)
            cols: tuple[np.ndarray, ...] = (data.users[by_user], data.items[by_user], data.ratings[by_user])
            del by_user
        else:
            t = data.to_tensors(device)
            users, items, ratings = t["users"], t["items"], t["ratings"]

        if self._funk:
            step = net.direct_update = DirectUpdate(float(self.lr))
            if kernel is None or len(data) < GROUPED_SHUFFLE_MIN:
                # the ratings shuffled once, each batch a contiguous slice of them (views, no gather)
                layout = torch.randperm(len(data), generator=gen).to(device)
                if kernel is not None:
                    # the sequential loop reads a user's ratings one after the other (as Surprise
                    # does), so the user's row stays in cache: users in order, their ratings shuffled
                    from cfrec.engines.compiled import stable_key_order  # loaded with the kernel

                    by_user = stable_key_order(users.index_select(0, layout).numpy(), data.n_users)
                    layout = layout.index_select(0, torch.from_numpy(by_user))
                users, items, ratings = (t.index_select(0, layout) for t in (users, items, ratings))
                if kernel is not None:
                    cols = (users.numpy(), items.numpy(), ratings.numpy())

            if kernel is not None:  # CPU: Funk's sequential loop, compiled
                arrays = [t.detach().numpy() for t in (net.user_factors, net.item_factors, net.user_bias,
                                                       net.item_bias)]
                mu = float(net.global_bias)
                # load (or compile) the loop for these types now, in the fit's set-up, not its first epoch
                kernel(*(c[:0] for c in cols), *arrays, mu, float(self.lr), reg, bias_reg)

                def compiled_loss(batch: torch.Tensor) -> torch.Tensor:
                    start, n = int(batch[0]), len(batch)
                    sse = kernel(*(c[start:start + n] for c in cols), *arrays, mu, step.lr, reg, bias_reg)
                    return torch.tensor(sse / max(n, 1))

                return net, compiled_loss, net

            def funk_loss(batch: torch.Tensor) -> torch.Tensor:
                start, n = int(batch[0]), len(batch)
                return funk_step(net, users[start:start + n], items[start:start + n],
                                 ratings[start:start + n], step.lr, reg, bias_reg)

            return net, funk_loss, net

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            return _BiasedMFLoss.apply(net.user_factors, net.item_factors, net.user_bias, net.item_bias,
                                       net.global_bias, users.index_select(0, batch),
                                       items.index_select(0, batch), ratings.index_select(0, batch),
                                       reg, bias_reg)

        return net, loss_fn, net

    @property
    def _funk(self) -> bool:
        return str(self.optimizer).lower() == "funk"

    def _check_combination(self) -> None:
        if self._funk and self.learn_global_bias:
            raise invalid(self, "learn_global_bias", "False with optimizer='funk' (per-rating SGD keeps mu "
                          "at the training mean; use optimizer='adam' to learn it)")
        if self._funk and float(self.weight_decay):
            raise invalid(self, "weight_decay", "0 with optimizer='funk' (per-rating SGD has no weight "
                          "decay; use optimizer='adam')")

    def _batch_order(self, data: Interactions, device: torch.device) -> BatchOrder | None:
        if self._funk:
            return contiguous_batches(len(data), int(self.batch_size), device)
        return super()._batch_order(data, device)

    def _make_optimizer(self, net: nn.Module) -> RowwiseOptimizer | DirectUpdate:
        if self._funk:
            assert isinstance(net, _MFNet) and net.direct_update is not None  # made by _build
            return net.direct_update
        return super()._make_optimizer(net)

    # ------------------------------------------------------------------ a folded-in user's list
    # Ranked by predicted rating, a user folded in from a handful of ratings gets the item-bias
    # list back (the ridge keeps p_u small), topped by films a few people loved. The list is
    # ranked instead by what the user's ratings add, p_u . q_i, each item's part shrunk by its
    # support n_i / (n_i + median n); predicted ratings stay the model's. On ML-100K u1 this
    # both follows the user (five 5-star sci-fi films change 9 of the new-user top 10) and ranks
    # better: NDCG@10 0.109 against 0.091 by predicted rating, users folded in from 5 of their
    # training ratings (benchmarks/fold_in_lists.py). Known users keep the ranking by predicted rating.
    @property
    def score_label(self) -> str:
        return ("predicted ratings before clipping; a folded-in user's: p_u . q_i, what their ratings add, shrunk "
                "by each item's number of ratings")

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        if not user.factors.size:
            return super()._score_folded(user, items)
        items = np.asarray(items, dtype=np.int64)
        cached = self.__dict__.get("_support_cache")  # (the seen_ it was counted from, weights)
        if cached is None or cached[0] is not self.seen_:
            cached = self.__dict__["_support_cache"] = (self.seen_, support_weights(self.seen_, len(self.item_map_)))
        weights = cached[1]
        taste = self.item_factors_[items] @ user.factors
        return np.asarray(taste * weights[items], dtype=np.float32)

    def _predict_folded_known(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        return FactorRecommender._score_folded(self, user, items)

    def _export(self, net: nn.Module, data: Interactions) -> None:
        assert isinstance(net, _MFNet)  # built by _build
        self.user_factors_ = export_numpy(net.user_factors)
        self.item_factors_ = export_numpy(net.item_factors)
        self.user_bias_ = export_numpy(net.user_bias)
        self.item_bias_ = export_numpy(net.item_bias)
        self.global_mean_ = float(net.global_bias.detach().cpu())
