"""The fitting pipeline shared by cfrec's PyTorch factor models (:class:`~cfrec.models.mf.BiasedMF`,
:class:`~cfrec.models.svdpp.SVDpp`), and the pieces of their fused rating losses.

:class:`TorchFactorModel` holds their shared hyperparameters, device and thread choice, seeding,
validation carve, early stopping, optional refit and export of the learned tensors to numpy; the
epochs run in :func:`cfrec.engines.torch_loop.train_loop`.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from cfrec.data.interactions import Interactions
from cfrec.data.split import carve_validation
from cfrec.engines.backend import make_generator, resolve_device
from cfrec.engines.torch_loop import (
    OPTIMIZERS,
    BatchOrder,
    DirectUpdate,
    RowwiseOptimizer,
    TrainConfig,
    batched_rmse,
    make_optimizer,
    row_grad,
    shuffled_batches,
    train_loop,
)
from cfrec.models._bias import fit_biases
from cfrec.models.base import EpochCallback
from cfrec.models.factor import FactorRecommender
from cfrec.models.params import Runtime, hyperparameters, param
from cfrec.threads import threads_for, using_threads

#: Scoring work (users x items x factors) below which the thread counts are left as they are:
#: one user's row of a catalogue takes less time than switching the pools.
SCOPED_WORK = 1 << 22

logger = logging.getLogger(__name__)

#: L2 (user, item) of the closed-form biases that start training when ``init_biases`` is on
#: (in rating-count units, as in :func:`~cfrec.models._bias.fit_biases`).
_BIAS_INIT_REG = (25.0, 25.0)

PredictFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------- shared pipeline
@hyperparameters
class TorchFactorModel(FactorRecommender, Runtime):
    """Fitting pipeline of the PyTorch factor models (BiasedMF, SVD++).

    Subclasses build a network for the training data (:meth:`_build`), and copy its learned
    tensors into the numpy attributes of :class:`FactorRecommender` (:meth:`_export`). This
    class does the rest:

    * device (``device=None`` -> CUDA when available) and a seeded generator for initialisation
      and shuffling, so a fixed ``seed`` reproduces a CPU fit bit for bit (at a fixed thread
      count);
    * threads: fit and scoring run on :func:`~cfrec.threads.threads_for` the work of one step
      (``batch_size * n_factors`` elements) or of one scoring block, unless ``threads`` or the
      ``CFREC_NUM_THREADS`` environment variable fixes the count;
    * validation: ``fit(train, valid)`` uses ``valid``; otherwise, with ``valid_fraction > 0``, a
      random part of ``train`` is carved off (never the test part);
    * early stopping after ``patience`` epochs without a validation improvement, restoring the
      best epoch; with ``refit=True`` the carve only picks the epoch count and the model is then
      trained again on all of ``train`` for that many epochs;
    * the per-epoch history in ``history_`` (``train_loss`` is the minibatch objective, penalties
      included; ``valid_rmse`` is on clipped predictions) and the ``on_epoch`` callback.
    """

    # hyperparameters shared by every subclass (which may change their defaults)
    n_factors: int = param(default=128, ge=1)
    epochs: int = param(default=8, ge=1)
    batch_size: int = param(default=4096, ge=1)
    lr: float = param(default=0.01, gt=0)
    reg: float = param(default=0.1, ge=0)
    bias_reg: float = param(default=0.01, ge=0)
    weight_decay: float = param(default=0.0, ge=0)
    optimizer: str = param(default="adam", choices=tuple(OPTIMIZERS))
    init_std: float = param(default=0.1, ge=0)
    init_biases: bool = True
    patience: int | None = param(default=2, ge=1)
    valid_fraction: float = param(default=0.0, ge=0, lt=1)
    refit: bool = False
    fold_in_reg: float = param(default=10.0, gt=0)

    def _fit(self, train: Interactions, valid: Interactions | None,
             on_epoch: EpochCallback | None) -> None:
        device = resolve_device(self.device)
        n_threads = threads_for(int(self.batch_size) * int(self.n_factors), self.threads)
        logger.debug("%s: fitting on %s with %d thread(s)", type(self).__name__, device, n_threads)
        with using_threads(n_threads):
            self._fit_on(train, valid, on_epoch, device)

    def _fit_on(self, train: Interactions, valid: Interactions | None,
                on_epoch: EpochCallback | None, device: torch.device) -> None:
        fit_part, carved = train, None
        if valid is None and self.valid_fraction > 0:
            fit_part, carved = carve_validation(train, float(self.valid_fraction), self.seed)
            valid = carved
        early = self.patience is not None and valid is not None and len(valid) > 0
        history, net = self._train(fit_part, valid, int(self.epochs), device, on_epoch, early)
        if carved is not None and self.refit:
            best = _best_epoch(history)
            logger.info("%s: refitting on all %d ratings for %d epochs (best epoch on the carve)",
                        type(self).__name__, len(train), best)
            for rec in history:
                rec["phase"] = "select"
            refit_hist, net = self._train(train, None, best, device, on_epoch, False)
            for rec in refit_hist:
                rec["phase"] = "refit"
            history = history + refit_hist
        self.history_.extend(history)
        self._export(net, train)

    def _train(self, data: Interactions, valid: Interactions | None, epochs: int,
               device: torch.device, on_epoch: EpochCallback | None,
               early: bool) -> tuple[list[dict[str, Any]], nn.Module]:
        gen = make_generator(self.seed, "cpu")
        net, loss_fn, predict = self._build(data, device, gen)
        opt = self._make_optimizer(net)
        validate = None
        if valid is not None and len(valid):
            vt = valid.to_tensors(device)
            lo, hi = self.rating_scale_
            scale = (float(lo), float(hi))

            def validate() -> float:
                return batched_rmse(predict, vt["users"], vt["items"], vt["ratings"], scale)

        config = TrainConfig(type(self).__name__, epochs, int(self.batch_size), float(self.lr),
                             patience=int(self.patience) if early and self.patience is not None else None)
        history = train_loop(net, opt, len(data), loss_fn, config, generator=gen, device=device,
                             validate=validate, on_epoch=on_epoch,
                             batches=self._batch_order(data, device))
        return history, net

    def _make_optimizer(self, net: nn.Module) -> RowwiseOptimizer | DirectUpdate:
        """The optimiser named by ``optimizer`` over the network's parameters."""
        return make_optimizer(self.optimizer, list(net.parameters()), lr=float(self.lr),
                              weight_decay=float(self.weight_decay))

    def _batch_order(self, data: Interactions, device: torch.device) -> BatchOrder | None:
        """How an epoch is cut into minibatches: random slices of the rows, each in user order."""
        users = torch.tensor(data.users, dtype=torch.int32, device=device)
        return shuffled_batches(len(data), int(self.batch_size), device, sort_by=users)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        """Every item's score for each user, on the threads the block's size calls for."""
        work = len(users) * len(self.item_map_) * max(int(self.user_factors_.shape[1]), 1)
        if work < SCOPED_WORK and self.threads is None:  # a request's row: switching costs more
            return super()._score_users(users)
        with using_threads(threads_for(work, self.threads)):
            return super()._score_users(users)

    @abstractmethod
    def _build(self, data: Interactions, device: torch.device,
               gen: torch.Generator) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor], PredictFn]:
        """Network, minibatch loss (row positions -> scalar) and predictor for ``data``."""

    @abstractmethod
    def _export(self, net: nn.Module, data: Interactions) -> None:
        """Copy learned tensors into ``user_bias_``, ``item_bias_``, factors (numpy float32)."""


def _best_epoch(history: list[dict[str, Any]]) -> int:
    """The epoch early stopping restored (else the one with the lowest validation RMSE)."""
    flagged = [r["epoch"] for r in history if r.get("best")]
    if flagged:
        return int(flagged[0])
    scored = [r for r in history if "valid_rmse" in r]
    if not scored:
        return len(history)
    return int(min(scored, key=lambda r: (r["valid_rmse"], r["epoch"]))["epoch"])


def init_tensors(data: Interactions, n_factors: int, init_std: float, init_biases: bool,
                  global_mean: float, gen: torch.Generator,
                  bias_reg: tuple[float, float] | None = None) -> dict[str, torch.Tensor]:
    """Initial user/item factors ~ N(0, init_std^2) and biases (closed form or zeros), on CPU."""
    p = torch.randn(data.n_users, n_factors, generator=gen) * float(init_std)
    q = torch.randn(data.n_items, n_factors, generator=gen) * float(init_std)
    if init_biases:
        bias_reg = bias_reg or _BIAS_INIT_REG
        bu, bi = fit_biases(data.users, data.items, data.ratings, data.n_users, data.n_items,
                            global_mean=global_mean, reg_user=bias_reg[0], reg_item=bias_reg[1])
        b_u, b_i = torch.from_numpy(bu), torch.from_numpy(bi)
    else:
        b_u, b_i = torch.zeros(data.n_users), torch.zeros(data.n_items)
    return {"p": p, "q": q, "bu": b_u, "bi": b_i}


def rating_error(x: torch.Tensor, qi: torch.Tensor, bu_b: torch.Tensor, bi_b: torch.Tensor,
                 mu: torch.Tensor | float, r: torch.Tensor) -> torch.Tensor:
    """``mu + b_u + b_i + x_u . q_i - r`` per rating of a batch (a new tensor, summed in place)."""
    err = (x * qi).sum(1)
    err += bu_b
    err += bi_b
    err += mu
    err -= r
    return err


def penalised_sse(err: torch.Tensor, pu: torch.Tensor, qi: torch.Tensor, bu_b: torch.Tensor,
                  bi_b: torch.Tensor, reg: float, bias_reg: float) -> torch.Tensor:
    """``sum e^2 + reg (|p_u|^2 + |q_i|^2) + bias_reg (b_u^2 + b_i^2)`` over a batch's rows."""
    loss = torch.dot(err, err)
    if reg:
        loss = loss + reg * (torch.dot(pu.reshape(-1), pu.reshape(-1)) + torch.dot(qi.reshape(-1), qi.reshape(-1)))
    if bias_reg:
        loss = loss + bias_reg * (torch.dot(bu_b, bu_b) + torch.dot(bi_b, bi_b))
    return loss


def bias_grads(err: torch.Tensor, bu_b: torch.Tensor, bi_b: torch.Tensor, u: torch.Tensor, i: torch.Tensor,
               scale: torch.Tensor, bias_reg: float, bu_shape: torch.Size, bi_shape: torch.Size,
               need: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Row-sparse gradients of a fused rating loss for ``b_u`` and ``b_i``: ``(e + bias_reg b) *
    scale`` per batch row, where ``need`` says which of the two are wanted."""
    dbu = dbi = None
    if need[0]:
        dbu = row_grad(u, (err + bias_reg * bu_b if bias_reg else err) * scale, bu_shape)
    if need[1]:
        dbi = row_grad(i, (err + bias_reg * bi_b if bias_reg else err) * scale, bi_shape)
    return dbu, dbi


def reg_grad(own: torch.Tensor, e: torch.Tensor, other: torch.Tensor, reg: float) -> torch.Tensor:
    """``own + e * other / reg`` (or ``e * other`` when ``reg`` is 0): the factor gradient / reg."""
    return torch.addcmul(own, e, other, value=1.0 / reg) if reg else e * other
