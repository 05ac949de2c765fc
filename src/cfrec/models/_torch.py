"""The training engine shared by the PyTorch models.

Minibatches are index slices of tensors held whole on the device (no per-sample Dataset or
DataLoader on the hot path). The engine picks the device, seeds everything it draws from,
validates each epoch, stops early and restores the best epoch, records a per-epoch history and
raises :class:`~cfrec.errors.TrainingDiverged` when the loss stops being finite.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError, TrainingDiverged

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps a 1-D tensor of row positions (a minibatch) to a scalar loss."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else is checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise CfrecError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto' ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CfrecError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from ``seed`` (or from fresh entropy when ``None``)."""
    gen = torch.Generator(device=device)
    if seed is None:
        entropy = np.random.SeedSequence().entropy
        assert isinstance(entropy, int)  # a SeedSequence built without entropy draws an int
        seed = entropy % (2**63)
    gen.manual_seed(int(seed))
    return gen


class OptimizerLike(Protocol):
    """What :func:`train_loop` needs from an optimiser (``torch.optim`` ones qualify)."""

    @property
    def param_groups(self) -> list[dict[str, Any]]: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> Any: ...


class Adam:
    """Adam (Kingma & Ba 2015) with PyTorch's coupled L2 ``weight_decay``, in plain tensor ops.

    The same update as ``torch.optim.Adam`` (dense moments: rows without a gradient in a step
    still move with their momentum). It exists because the first ``torch.optim`` optimiser a
    process builds imports ``torch._dynamo``, about a second of start-up that would dominate a
    sub-second fit and every CLI call.
    """

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), betas, float(eps), float(weight_decay)
        self.param_groups: list[dict[str, Any]] = [{"params": self.params, "lr": self.lr}]
        self._m = [torch.zeros_like(p) for p in self.params]
        self._v = [torch.zeros_like(p) for p in self.params]
        self._steps = [0] * len(self.params)  # per parameter, as torch counts them

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        lr = float(self.param_groups[0]["lr"])
        for k, (p, m, v) in enumerate(zip(self.params, self._m, self._v, strict=True)):
            g = p.grad
            if g is None:  # no gradient this step: untouched, like torch.optim.Adam
                continue
            self._steps[k] += 1
            t = self._steps[k]
            step_size = lr / (1.0 - b1 ** t)
            root_bc2 = math.sqrt(1.0 - b2 ** t)
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = v.sqrt().div_(root_bc2).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)


class SGD:
    """Plain minibatch SGD with optional coupled L2 ``weight_decay`` (``p -= lr (g + wd p)``)."""

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float, weight_decay: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.weight_decay = float(weight_decay)
        self.param_groups: list[dict[str, Any]] = [{"params": self.params, "lr": float(lr)}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr = float(self.param_groups[0]["lr"])
        for p in self.params:
            if p.grad is None:
                continue
            g = p.grad.add(p, alpha=self.weight_decay) if self.weight_decay else p.grad
            p.add_(g, alpha=-lr)


def make_optimizer(
    name: str,
    params: Iterable[torch.Tensor],
    *,
    lr: float,
    weight_decay: float = 0.0,
) -> Adam | SGD:
    """``"adam"`` or ``"sgd"`` over ``params`` with coupled L2 ``weight_decay`` (as in ``torch.optim``)."""
    key = str(name).lower()
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise CfrecError(f"learning rate must be a positive number, got {lr!r}")
    if key == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    if key == "sgd":
        return SGD(params, lr=lr, weight_decay=weight_decay)
    raise CfrecError(f"unknown optimizer {name!r}; choose 'adam' or 'sgd'")


class _GatherRows(torch.autograd.Function):
    """``weight[idx]`` whose backward is one ``index_add_`` into a dense gradient."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.weight_shape = weight.shape
        return weight.index_select(0, idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (idx,) = ctx.saved_tensors
        out = grad.new_zeros(ctx.weight_shape)
        out.index_add_(0, idx, grad)
        return out, None


def gather_rows(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``weight[idx]`` for an embedding table, with a fast dense backward.

    Same values and gradient as ``weight[idx]`` or ``F.embedding(idx, weight)``, but the
    backward accumulates with ``index_add_``, which on CPU is 3-10x faster than the
    ``index_put_``/``embedding_dense_backward`` kernels PyTorch uses for those (it dominates a
    matrix-factorisation step). Deterministic on CPU.
    """
    return _GatherRows.apply(weight, idx)


def carve_validation(
    train: Interactions, fraction: float, seed: int | None
) -> tuple[Interactions, Interactions | None]:
    """Hold out a random ``fraction`` of the training rows for validation (never the test part).

    Only rows whose user and item keep at least one other training rating are eligible, so the
    validation part measures rating prediction rather than cold start.
    """
    if fraction <= 0 or len(train) < 20:
        return train, None
    rng = np.random.default_rng(seed)
    n_valid = int(round(fraction * len(train)))
    order = rng.permutation(len(train))
    u_left = train.user_counts().copy()
    i_left = train.item_counts().copy()
    chosen = np.zeros(len(train), dtype=bool)
    users, items = train.users, train.items
    # Vectorised greedy pass: take candidates in random order while both ends keep >= 1 rating.
    cand = order[: min(len(order), n_valid * 2)]
    for _ in range(3):
        cu, ci = users[cand], items[cand]
        # rank of each candidate among earlier candidates of the same user / item
        ru = _occurrence_rank(cu)
        ri = _occurrence_rank(ci)
        ok = (ru < u_left[cu] - 1) & (ri < i_left[ci] - 1) & ~chosen[cand]
        take = cand[ok][: n_valid - int(chosen.sum())]
        chosen[take] = True
        np.subtract.at(u_left, users[take], 1)
        np.subtract.at(i_left, items[take], 1)
        if chosen.sum() >= n_valid:
            break
        cand = order[~chosen[order]][: n_valid * 2]
    if not chosen.any():
        return train, None
    return train.subset(~chosen), train.subset(chosen)


def _occurrence_rank(keys: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - run_start
    return rank


@dataclass
class TrainConfig:
    """Loop settings for :func:`train_loop` (the model's hyperparameters feed it)."""

    model_name: str
    epochs: int
    batch_size: int
    lr: float
    patience: int | None = None  # None: no early stopping
    min_delta: float = 1e-4
    restore_best: bool = True
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch


def train_loop(
    net: nn.Module,
    optimizer: torch.optim.Optimizer | OptimizerLike,
    n_rows: int,
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
    validate: Callable[[], float] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run minibatch epochs over ``n_rows`` training rows.

    Returns the history (one dict an epoch). With ``validate`` and ``patience``, stops after
    ``patience`` epochs without a validation RMSE improvement and restores the best weights.
    """
    history: list[dict[str, Any]] = []
    best_rmse = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = 0
    bad_epochs = 0
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        net.train()
        perm = torch.randperm(n_rows, generator=generator, device=generator.device).to(device)
        total = torch.zeros((), device=device, dtype=torch.float64)
        for s in range(0, n_rows, config.batch_size):
            batch = perm[s:s + config.batch_size]
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().double() * len(batch)
        train_loss = float(total.item()) / max(n_rows, 1)
        if not math.isfinite(train_loss):
            raise TrainingDiverged(config.model_name, epoch, config.lr, train_loss)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
        if validate is not None:
            net.eval()
            with torch.no_grad():
                rmse = float(validate())
            if not math.isfinite(rmse):
                raise TrainingDiverged(config.model_name, epoch, config.lr, rmse)
            record["valid_rmse"] = rmse
            if rmse < best_rmse - config.min_delta:
                best_rmse, best_epoch, bad_epochs = rmse, epoch, 0
                if config.restore_best:
                    best_state = copy.deepcopy(net.state_dict())
            else:
                bad_epochs += 1
        if config.lr_decay != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        logger.info("%s epoch %d: %s", config.model_name, epoch,
                    ", ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)))
        if on_epoch is not None:
            on_epoch(dict(record, epochs=config.epochs))
        if config.patience is not None and validate is not None and bad_epochs >= config.patience:
            logger.info("%s: early stop at epoch %d (best epoch %d)", config.model_name, epoch, best_epoch)
            break
    if best_state is not None and config.restore_best:
        net.load_state_dict(best_state)
        for rec in history:
            rec["best"] = rec["epoch"] == best_epoch
    return history


def batched_rmse(
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    users: torch.Tensor,
    items: torch.Tensor,
    ratings: torch.Tensor,
    scale: tuple[float, float],
    batch_size: int = 65536,
) -> float:
    """RMSE of clipped predictions over index tensors, in batches."""
    sq = torch.zeros((), dtype=torch.float64, device=ratings.device)
    for s in range(0, len(users), batch_size):
        pred = predict(users[s:s + batch_size], items[s:s + batch_size]).clamp(*scale)
        sq += ((pred - ratings[s:s + batch_size]).double() ** 2).sum()
    return float(torch.sqrt(sq / max(len(users), 1)).item())
