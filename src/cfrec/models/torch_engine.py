"""The training engine of cfrec's PyTorch models, and the pipeline shared by its factor models.

Minibatches are index slices of tensors held whole on the device (no per-sample Dataset or
DataLoader on the hot path). The engine picks the device, seeds everything it draws from,
validates each epoch, stops early and restores the best epoch, records a per-epoch history and
raises :class:`~cfrec.errors.TrainingDiverged` when the loss stops being finite.

:class:`TorchFactorModel` is the fitting pipeline of the factor models trained this way
(:class:`~cfrec.models.mf.BiasedMF`, :class:`~cfrec.models.svdpp.SVDpp`): their shared
hyperparameters, device choice, seeding, validation carve, early stopping, optional refit and
export of the learned tensors to numpy.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from cfrec.data.interactions import Interactions
from cfrec.data.split import carve_validation
from cfrec.errors import CfrecError, TrainingDiverged
from cfrec.models._bias import fit_biases
from cfrec.models.base import EpochCallback, FactorRecommender, hyperparameters

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


#: L2 (user, item) of the closed-form biases that start training when ``init_biases`` is on
#: (in rating-count units, as in :func:`~cfrec.models._bias.fit_biases`).
_BIAS_INIT_REG = (25.0, 25.0)

PredictFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------- shared pipeline
@hyperparameters
class TorchFactorModel(FactorRecommender):
    """Fitting pipeline of the PyTorch factor models (BiasedMF, SVD++).

    Subclasses build a network for the training data (:meth:`_build`), and copy its learned
    tensors into the numpy attributes of :class:`FactorRecommender` (:meth:`_export`). This
    class does the rest:

    * device (``device=None`` -> CUDA when available) and a seeded generator for initialisation
      and shuffling, so a fixed ``seed`` reproduces a CPU fit bit for bit;
    * validation: ``fit(train, valid)`` uses ``valid``; otherwise, with ``valid_fraction > 0``, a
      random part of ``train`` is carved off (never the test part);
    * early stopping after ``patience`` epochs without a validation improvement, restoring the
      best epoch; with ``refit=True`` the carve only picks the epoch count and the model is then
      trained again on all of ``train`` for that many epochs;
    * the per-epoch history in ``history_`` (``train_loss`` is the minibatch objective, penalties
      included; ``valid_rmse`` is on clipped predictions) and the ``on_epoch`` callback.
    """

    # hyperparameters shared by every subclass (which may change their defaults)
    n_factors: int = 128
    epochs: int = 8
    batch_size: int = 4096
    lr: float = 0.01
    reg: float = 0.1
    bias_reg: float = 0.01
    weight_decay: float = 0.0
    optimizer: str = "adam"
    init_std: float = 0.1
    init_biases: bool = True
    patience: int | None = 2
    valid_fraction: float = 0.0
    refit: bool = False
    device: str | None = None
    seed: int | None = 0
    fold_in_reg: float = 10.0

    def _check_params(self) -> None:
        if int(self.epochs) < 1:
            raise CfrecError(f"{type(self).__name__}: epochs must be >= 1, got {self.epochs!r}")
        if int(self.batch_size) < 1:
            raise CfrecError(f"{type(self).__name__}: batch_size must be >= 1, got {self.batch_size!r}")
        if not 0.0 <= float(self.valid_fraction) < 1.0:
            raise CfrecError(f"{type(self).__name__}: valid_fraction must be in [0, 1), got {self.valid_fraction!r}")
        if self.patience is not None and int(self.patience) < 1:
            raise CfrecError(f"{type(self).__name__}: patience must be >= 1 or None, got {self.patience!r}")
        if int(self.n_factors) < 1:
            raise CfrecError(f"{type(self).__name__}: n_factors must be >= 1, got {self.n_factors!r}")
        for name in ("reg", "bias_reg", "weight_decay", "init_std"):
            if float(getattr(self, name)) < 0:
                raise CfrecError(f"{type(self).__name__}: {name} must be >= 0, got {getattr(self, name)!r}")

    def _fit(self, train: Interactions, valid: Interactions | None,
             on_epoch: EpochCallback | None) -> None:
        self._check_params()
        device = resolve_device(self.device)
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
        opt = make_optimizer(self.optimizer, list(net.parameters()), lr=float(self.lr),
                             weight_decay=float(self.weight_decay))
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
                             validate=validate, on_epoch=on_epoch)
        return history, net

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


def export_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


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


def reg_grad(own: torch.Tensor, e: torch.Tensor, other: torch.Tensor, reg: float) -> torch.Tensor:
    """``own + e * other / reg`` (or ``e * other`` when ``reg`` is 0): the factor gradient / reg."""
    return torch.addcmul(own, e, other, value=1.0 / reg) if reg else e * other


def torch_csr(mat: sp.csr_array | sp.csr_matrix, device: torch.device | str) -> torch.Tensor:
    """A torch CSR tensor of a scipy CSR matrix (sorted indices; torch's beta warning silenced)."""
    mat = sp.csr_array(mat)
    mat.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            torch.as_tensor(mat.indptr, dtype=torch.int64),
            torch.as_tensor(mat.indices, dtype=torch.int64),
            torch.as_tensor(mat.data, dtype=torch.float32),
            size=mat.shape, device=device, check_invariants=False,
        )
