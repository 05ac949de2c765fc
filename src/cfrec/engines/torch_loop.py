"""The training loop of cfrec's PyTorch models: minibatch orders, row-sparse optimisers, epochs.

Minibatches are index slices of tensors held whole on the device (no per-sample Dataset or
DataLoader on the hot path). The engine picks the device, seeds everything it draws from,
validates each epoch, stops early and restores the best epoch, records a per-epoch history and
raises :class:`~cfrec.errors.TrainingDiverged` when the loss stops being finite.

Steps cost O(batch), not O(table)
---------------------------------
A minibatch touches a few thousand rows of embedding tables that may hold millions. Gradients
of such tables are *row-sparse*: a ``torch.sparse_coo_tensor`` whose indices are the touched row
numbers (repeats allowed; they are summed) and whose values are those rows' gradients. They come
from the models' fused losses (:func:`row_grad`), from ``nn.Embedding(..., sparse=True)`` or
from ``F.embedding_bag(..., sparse=True)``. The optimisers here (:class:`Adam`,
:class:`Adagrad`, :class:`SGD`, all :class:`RowwiseOptimizer`) then read and write only those
rows, their optimiser state included; dense gradients (MLP layers, a global bias) get the usual
dense update. Duplicate row indices are merged by :class:`UniqueRows` in O(nnz), without a sort.

The epochs themselves (timing, validation, early stopping, history, divergence) run through
:class:`~cfrec.engines.driver.Trainer`; :func:`train_loop` supplies one pass of minibatches.
"""

from __future__ import annotations

import copy
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from cfrec.engines.driver import ProgressCallback, Trainer
from cfrec.errors import CfrecError

LossFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps a 1-D tensor of row positions (a minibatch) to a scalar loss."""

BatchOrder = Callable[[torch.Generator], Iterable[torch.Tensor]]
"""Maps the shuffling generator to one epoch of minibatches (1-D tensors of row positions)."""


# ---------------------------------------------------------------------- row-sparse gradients
def row_grad(index: torch.Tensor, values: torch.Tensor, shape: torch.Size | Sequence[int]) -> torch.Tensor:
    """The row-sparse gradient of a table of ``shape``: ``values[j]`` added to row ``index[j]``.

    ``index`` (1-D, int64) may repeat a row; the optimiser sums repeats. Return it from the
    ``backward`` of a custom autograd function in place of a dense ``(n_rows, ...)`` gradient.
    """
    return torch.sparse_coo_tensor(index.unsqueeze(0), values, tuple(shape), check_invariants=False)


class UniqueRows:
    """Distinct values of index vectors below ``n_rows``, in O(len) and without a sort.

    A scratch vector of ``n_rows`` slots (allocated once, never cleared) receives each entry's
    position; reading the slots back gives every entry one representative among its repeats.
    Only slots written in the same call are read, so stale contents never matter.

    Parameters
    ----------
    n_rows
        Exclusive upper bound of the indices (the table's row count).
    device
        Where the indices live.
    """

    def __init__(self, n_rows: int, device: torch.device | str = "cpu") -> None:
        self.n_rows = int(n_rows)
        self._slot = torch.empty(self.n_rows, dtype=torch.int64, device=device)

    def __call__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, inverse)``: the distinct values (in order of a first appearance) and, for each
        entry, the position of its value in ``rows`` (so ``rows[inverse] == index``)."""
        pos = torch.arange(index.numel(), device=index.device)
        self._slot.index_put_((index,), pos)
        rep = self._slot.index_select(0, index)
        first = rep == pos
        rows = index[first]
        inverse = torch.cumsum(first, 0).sub_(1).index_select(0, rep)
        return rows, inverse


def sum_rows(values: torch.Tensor, inverse: torch.Tensor, n_unique: int) -> torch.Tensor:
    """Per-row sums of ``values`` grouped by ``inverse`` (from :class:`UniqueRows`)."""
    if n_unique == len(inverse):  # no repeats: UniqueRows returned the index itself
        return values
    return values.new_zeros((n_unique, *values.shape[1:])).index_add_(0, inverse, values)


def csr_segments(indptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The entries of some rows of a CSR structure, row after row, without a Python loop.

    Parameters
    ----------
    indptr
        (n_rows + 1,) int64 row pointers.
    rows
        (m,) int64 row numbers (any order, repeats allowed).

    Returns
    -------
    positions
        (nnz,) positions into the CSR's ``indices``/``data`` of rows ``rows[0]``, ``rows[1]``...
    segment
        (nnz,) for each entry, the position in ``rows`` of the row it belongs to.
    offsets
        (m,) start of each row's run in ``positions`` (the ``offsets`` of ``embedding_bag``).
    """
    start = indptr.index_select(0, rows)
    lengths = indptr.index_select(0, rows + 1) - start
    ends = torch.cumsum(lengths, 0)
    offsets = ends - lengths
    total = int(ends[-1]) if len(rows) else 0
    segment = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths, output_size=total)
    positions = torch.arange(total, device=rows.device) + (start - offsets).index_select(0, segment)
    return positions, segment, offsets


# ---------------------------------------------------------------------- minibatch orders
def shuffled_batches(n_rows: int, batch_size: int, device: torch.device | str,
                     sort_by: torch.Tensor | None = None) -> BatchOrder:
    """Every epoch: a fresh random permutation of the ``n_rows`` rows cut into ``batch_size`` slices.

    With ``sort_by`` (one key per row, e.g. the user of each rating), each batch's rows are put
    in key order. The batches hold the same rows as without it; the model then reads and writes
    the rows of its tables in increasing address order, which the memory system serves several
    times faster than a random order when the tables are larger than the caches, and repeated
    keys sit together.
    """

    def order(generator: torch.Generator) -> Iterable[torch.Tensor]:
        perm = torch.randperm(n_rows, generator=generator, device=generator.device).to(device)
        batches = perm.split(int(batch_size))
        if sort_by is None:
            return batches
        return (b.index_select(0, torch.argsort(sort_by.index_select(0, b))) for b in batches)

    return order


def contiguous_batches(n_rows: int, batch_size: int, device: torch.device | str) -> BatchOrder:
    """Every epoch: the ``batch_size`` slices of rows ``0..n_rows-1`` in a random order, each
    batch ``arange(start, stop)``.

    For models that lay their rows out in a random order once (so that a slice is a random
    sample) and read each batch as a view of that layout: an epoch then gathers nothing.
    """
    starts = torch.arange(0, int(n_rows), int(batch_size), device=device)

    def order(generator: torch.Generator) -> Iterable[torch.Tensor]:
        perm = torch.randperm(len(starts), generator=generator, device=generator.device).to(device)
        for s in starts.index_select(0, perm).tolist():
            yield torch.arange(s, min(s + int(batch_size), int(n_rows)), device=device)

    return order


def grouped_batches(groups: np.ndarray, n_groups: int, batch_size: int,
                    device: torch.device | str) -> BatchOrder:
    """Every epoch: the groups (e.g. users) in a random order, each group's rows together, the
    sequence cut into ``batch_size`` slices.

    A batch then holds whole groups, except at most the two it shares with its neighbours: a
    model whose per-row cost depends on the whole group (SVD++'s sum over a user's rated items)
    pays that cost about once per epoch instead of once per row. No sort per epoch and nothing
    the size of the data: the rows are ordered by group once, each epoch permutes the groups,
    and each batch gathers only its own groups' runs when it is asked for. Rows already in group
    order (``groups`` sorted) come as runs of consecutive positions.

    Parameters
    ----------
    groups
        (n_rows,) group number of each training row, in ``0..n_groups-1``.
    n_groups
        Number of groups.
    batch_size
        Rows per minibatch.
    device
        Where the batches are used.
    """
    groups = np.asarray(groups, dtype=np.int64)
    in_order = bool(np.all(groups[1:] >= groups[:-1]))
    by_group = None if in_order else np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=int(n_groups))
    starts = np.cumsum(counts) - counts  # where each group's rows start in group order
    n, size, n_rows = int(n_groups), int(batch_size), len(groups)

    def order(generator: torch.Generator) -> Iterable[torch.Tensor]:
        perm = torch.randperm(n, generator=generator, device=generator.device).cpu().numpy()
        lengths = counts[perm]
        ends = np.cumsum(lengths)  # where each group's run ends in the epoch's sequence
        for start in range(0, n_rows, size):
            stop = min(start + size, n_rows)
            first = int(np.searchsorted(ends, start, side="right"))  # the group holding row `start`
            last = int(np.searchsorted(ends, stop - 1, side="right"))
            # numpy, not torch: a few hundred runs a batch, which torch's threads would wait on
            runs = lengths[first:last + 1]
            run_ends = np.cumsum(runs)
            rows = np.arange(int(run_ends[-1])) + np.repeat(starts[perm[first:last + 1]] - (run_ends - runs), runs)
            skip = start - int(ends[first] - lengths[first])
            batch = rows[skip:skip + stop - start]
            yield torch.from_numpy(batch if by_group is None else by_group[batch]).to(device)

    return order


# ---------------------------------------------------------------------- optimisers
class OptimizerLike(Protocol):
    """What :func:`train_loop` needs from an optimiser (``torch.optim`` ones qualify)."""

    @property
    def param_groups(self) -> list[dict[str, Any]]: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> Any: ...


class RowwiseOptimizer(ABC):
    """Base of cfrec's optimisers: dense updates for dense gradients, row-wise ones for sparse.

    A parameter whose ``.grad`` is a sparse COO tensor with one sparse dimension (a row-sparse
    gradient, see :func:`row_grad`) is updated on the rows its indices name, repeats summed;
    every other row and its optimiser state stay exactly as they are. A dense ``.grad`` gets the
    same rule as the ``torch.optim`` optimiser of the same name. Subclasses implement the rule
    twice: :meth:`_update_dense` and :meth:`_update_rows`.

    ``weight_decay`` is PyTorch's coupled L2: ``wd * p`` is added to the gradient before the rule.
    For a row-sparse gradient it is added to the touched rows only, so a row decays in the steps
    that touch it (a row in a fraction ``f`` of the steps decays ``f`` times as often as under a
    dense optimiser, where every row decays every step).

    The class needs nothing from ``torch.optim``: the first ``torch.optim`` optimiser a process
    builds imports ``torch._dynamo``, about a second of start-up that would dominate a
    sub-second fit and every CLI call.

    Parameters
    ----------
    params
        Tensors to optimise (those without ``requires_grad`` are skipped).
    lr
        Learning rate; :func:`train_loop` may change ``param_groups[0]["lr"]`` between epochs.
    weight_decay
        Coupled L2 strength (0 disables it).
    """

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float, weight_decay: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.weight_decay = float(weight_decay)
        self.param_groups: list[dict[str, Any]] = [{"params": self.params, "lr": float(lr)}]
        self._unique: dict[tuple[int, str], UniqueRows] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (the next backward writes fresh ones)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Apply the rule to every parameter that has a gradient."""
        lr = float(self.param_groups[0]["lr"])
        wd = self.weight_decay
        # gradients built on the same index tensor (p_u and b_u of one batch) share one dedup
        dedups: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for k, p in enumerate(self.params):
            g = p.grad
            if g is None:  # no gradient this step: untouched, like torch.optim
                continue
            if g.is_sparse:
                rows, values = self._rows_of(p, g, dedups)
                if wd:
                    values = values.add(p.index_select(0, rows), alpha=wd)
                self._update_rows(k, p, rows, values, lr)
            else:
                self._update_dense(k, p, g.add(p, alpha=wd) if wd else g, lr)

    def _rows_of(self, p: torch.Tensor, g: torch.Tensor,
                 dedups: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct rows of a sparse gradient and their summed values."""
        if g.sparse_dim() != 1:
            raise ValueError(f"row-sparse gradients have one sparse dimension, got {g.sparse_dim()}")
        index, values = g._indices()[0], g._values()
        key = (index.data_ptr(), index.numel(), p.shape[0])
        hit = dedups.get(key)
        if hit is None:
            unique = self._unique.get((p.shape[0], str(p.device)))
            if unique is None:
                unique = self._unique[(p.shape[0], str(p.device))] = UniqueRows(p.shape[0], p.device)
            hit = dedups[key] = unique(index)
        rows, inverse = hit
        return rows, sum_rows(values, inverse, len(rows))

    @abstractmethod
    def _update_dense(self, k: int, p: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        """Update all of parameter ``k`` with the (decayed) dense gradient ``g``."""

    @abstractmethod
    def _update_rows(self, k: int, p: torch.Tensor, rows: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        """Update rows ``rows`` (distinct) of parameter ``k`` with their (decayed) gradients ``g``."""


#: Whether ``torch._fused_adam_`` (what ``torch.optim.Adam(fused=True)`` runs: the dense update in
#: one pass) has a CPU kernel: from torch 2.4.
_FUSED_ADAM = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4)

#: Elements of a row-sparse update from which Adam runs it compiled: below, the torch operations
#: cost less than importing numba (0.5-2 s once per process) saves over a small fit.
_COMPILED_ROWS_MIN = 1 << 16


class Adam(RowwiseOptimizer):
    """Adam (Kingma & Ba 2015); lazy on row-sparse gradients.

    Dense gradients: the update of ``torch.optim.Adam`` (coupled ``weight_decay``; the moments
    of every element move each step). Row-sparse gradients: the touched rows' moments and values
    are updated with that same formula, the moments of untouched rows do not move (as in
    ``torch.optim.SparseAdam``, and TensorFlow's LazyAdam). The bias corrections use the
    parameter's step count (the steps in which it had any gradient), as both torch optimisers
    do; ``eps`` is added after the bias-corrected square root, as in ``torch.optim.Adam``, so a
    row touched in every step follows exactly the dense trajectory.

    Each update reads and writes its tensors once: a dense gradient through ``torch``'s fused
    Adam kernel, the rows of a float32 CPU table through a compiled loop
    (:mod:`cfrec.engines.compiled`) when a step updates at least :data:`_COMPILED_ROWS_MIN`
    elements; elsewhere, torch operations. (For a 10,677 x 600 table and
    6,000 touched rows on one CPU thread: 5 ms for either, against 18-22 ms as separate
    operations.)
    """

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        self.lr, self.betas, self.eps = float(lr), betas, float(eps)
        self._m = [torch.zeros_like(p) for p in self.params]
        self._v = [torch.zeros_like(p) for p in self.params]
        self._steps = [0] * len(self.params)  # per parameter, as torch counts them

    def _corrections(self, k: int, lr: float) -> tuple[float, float]:
        self._steps[k] += 1
        t = self._steps[k]
        b1, b2 = self.betas
        return lr / (1.0 - b1 ** t), math.sqrt(1.0 - b2 ** t)

    def _update_dense(self, k: int, p: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        b1, b2 = self.betas
        step_size, root_bc2 = self._corrections(k, lr)
        m, v = self._m[k], self._v[k]
        if _FUSED_ADAM and p.device.type in ("cpu", "cuda"):  # one pass over p, g, m and v
            step = torch.full((), float(self._steps[k]), dtype=torch.float32, device=p.device)
            torch._fused_adam_([p], [g], [m], [v], [], [step], lr=lr, beta1=b1, beta2=b2, weight_decay=0.0,
                               eps=self.eps, amsgrad=False, maximize=False)
            return
        m.lerp_(g, 1.0 - b1)
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        denom = v.sqrt().div_(root_bc2).add_(self.eps)
        p.addcdiv_(m, denom, value=-step_size)

    def _update_rows(self, k: int, p: torch.Tensor, rows: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        b1, b2 = self.betas
        step_size, root_bc2 = self._corrections(k, lr)
        m, v = self._m[k], self._v[k]
        if (p.device.type == "cpu" and p.dtype == torch.float32 and p.dim() <= 2 and p.is_contiguous()
                and g.numel() >= _COMPILED_ROWS_MIN):
            # one compiled pass over the rows (the same kernel as SVD++'s step), not ten torch ops
            from cfrec.engines.compiled import _adam_entries, _adam_rows

            kernel = _adam_rows if p.dim() == 2 else _adam_entries
            kernel(p.detach().numpy(), m.numpy(), v.numpy(), rows.numpy(), len(rows), g.contiguous().numpy(),
                   1.0, np.zeros(len(rows), np.float32), 0.0, step_size, root_bc2, b1, b2, self.eps, 0.0)
            return
        m_r, v_r = m.index_select(0, rows), v.index_select(0, rows)
        m_r.lerp_(g, 1.0 - b1)
        v_r.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        m.index_copy_(0, rows, m_r)
        v.index_copy_(0, rows, v_r)
        denom = v_r.sqrt_().div_(root_bc2).add_(self.eps)
        p.index_add_(0, rows, m_r.div_(denom), alpha=-step_size)


class Adagrad(RowwiseOptimizer):
    """Adagrad (Duchi et al. 2011): ``s += g^2; p -= lr g / (sqrt(s) + eps)``.

    Dense gradients: the update of ``torch.optim.Adagrad`` (no learning-rate decay, zero initial
    accumulator). Row-sparse gradients: the same rule on the touched rows (``torch.optim.Adagrad``
    does this too, but refuses ``weight_decay`` with sparse gradients; here the decay is added to
    the touched rows' gradients).
    """

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float, eps: float = 1e-10,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        self.eps = float(eps)
        self._sum = [torch.zeros_like(p) for p in self.params]

    def _update_dense(self, k: int, p: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        s = self._sum[k]
        s.addcmul_(g, g, value=1.0)
        p.addcdiv_(g, s.sqrt().add_(self.eps), value=-lr)

    def _update_rows(self, k: int, p: torch.Tensor, rows: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        s = self._sum[k]
        s_r = s.index_select(0, rows).addcmul_(g, g, value=1.0)
        s.index_copy_(0, rows, s_r)
        p.index_add_(0, rows, g / s_r.sqrt_().add_(self.eps), alpha=-lr)


class SGD(RowwiseOptimizer):
    """Plain minibatch SGD, ``p -= lr (g + wd p)``; on row-sparse gradients, for the touched rows.

    Without weight decay a row-sparse gradient is added as it comes (``index_add_`` sums repeated
    rows itself), so a step skips finding the distinct rows.
    """

    def _rows_of(self, p: torch.Tensor, g: torch.Tensor,
                 dedups: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.weight_decay:
            return super()._rows_of(p, g, dedups)
        if g.sparse_dim() != 1:
            raise ValueError(f"row-sparse gradients have one sparse dimension, got {g.sparse_dim()}")
        return g._indices()[0], g._values()

    def _update_dense(self, k: int, p: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        p.add_(g, alpha=-lr)

    def _update_rows(self, k: int, p: torch.Tensor, rows: torch.Tensor, g: torch.Tensor, lr: float) -> None:
        p.index_add_(0, rows, g, alpha=-lr)


class DirectUpdate:
    """The optimiser of a loss function that updates its tables itself (per-rating SGD).

    :func:`train_loop` calls ``zero_grad`` and ``step`` as for any optimiser (both do nothing)
    and decays ``param_groups[0]["lr"]``, which the loss function reads at every step.
    """

    def __init__(self, lr: float) -> None:
        self.param_groups: list[dict[str, Any]] = [{"params": [], "lr": float(lr)}]

    @property
    def lr(self) -> float:
        """The current learning rate."""
        return float(self.param_groups[0]["lr"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing to clear: no gradients are formed."""

    def step(self) -> None:
        """Nothing to apply: the loss function has updated the tables."""


#: Optimiser names accepted by :func:`make_optimizer` (and the models' ``optimizer`` setting).
OPTIMIZERS: dict[str, type[RowwiseOptimizer]] = {"adam": Adam, "adagrad": Adagrad, "sgd": SGD}


def make_optimizer(
    name: str,
    params: Iterable[torch.Tensor],
    *,
    lr: float,
    weight_decay: float = 0.0,
) -> RowwiseOptimizer:
    """``"adam"``, ``"adagrad"`` or ``"sgd"`` over ``params``, with coupled L2 ``weight_decay``.

    Each is dense on dense gradients and row-wise on row-sparse ones (see :class:`RowwiseOptimizer`).
    """
    key = str(name).lower()
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise CfrecError(f"learning rate must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, int | float) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise CfrecError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    cls = OPTIMIZERS.get(key)
    if cls is None:
        raise CfrecError(f"unknown optimizer {name!r}; choose one of {', '.join(map(repr, OPTIMIZERS))}")
    return cls(params, lr=lr, weight_decay=weight_decay)


# ---------------------------------------------------------------------- the loop
@dataclass
class TrainConfig:
    """Loop settings for :func:`train_loop` (the model's hyperparameters feed it)."""

    model_name: str
    epochs: int
    batch_size: int
    lr: float
    patience: int | None = None  # None: no early stopping
    min_delta: float = 1e-4
    restore_best: bool = True  # with early stopping (patience set): end on the best epoch's weights
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
    on_epoch: ProgressCallback | None = None,
    batches: BatchOrder | None = None,
) -> list[dict[str, Any]]:
    """Run minibatch epochs over ``n_rows`` training rows.

    ``batches`` orders each epoch (default: :func:`shuffled_batches` of ``config.batch_size``).
    Returns the history (one dict an epoch). With ``validate`` and ``patience``, stops after
    ``patience`` epochs without a validation RMSE improvement and restores the best weights.
    """
    order = batches or shuffled_batches(n_rows, config.batch_size, device)

    def epoch(_: int) -> dict[str, Any]:
        net.train()
        total = torch.zeros((), device=device, dtype=torch.float64)
        for batch in order(generator):
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:  # a DirectUpdate loss has already applied its step
                loss.backward()
            optimizer.step()
            total += loss.detach().double() * len(batch)
        if config.lr_decay != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay
        return {"train_loss": float(total.item()) / max(n_rows, 1)}

    def evaluate() -> float:
        net.eval()
        with torch.no_grad():
            return float(validate())  # type: ignore[misc]

    trainer = Trainer(config.model_name, config.epochs, on_epoch, lr=config.lr, patience=config.patience,
                      min_delta=config.min_delta, log_level=logging.INFO)
    keep = config.restore_best
    return trainer.run(epoch, validate=None if validate is None else evaluate,
                       snapshot=(lambda: copy.deepcopy(net.state_dict())) if keep else None,
                       restore=net.load_state_dict if keep else None)


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


def module_arrays(net: nn.Module, prefix: str = "net.") -> dict[str, np.ndarray]:
    """A network's parameters and buffers as named numpy arrays, for a safetensors file."""
    return {f"{prefix}{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def load_module_arrays(net: nn.Module, arrays: dict[str, np.ndarray], model: str, prefix: str = "net.") -> None:
    """Load :func:`module_arrays` back into ``net``; a missing, extra or misshapen array is a
    :class:`~cfrec.errors.ModelFileError` naming ``model``."""
    from cfrec.errors import ModelFileError

    state = {k.removeprefix(prefix): torch.from_numpy(np.array(v)) for k, v in arrays.items()
             if k.startswith(prefix)}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFileError(f"{model} weights do not match its hyperparameters ({first})") from None


def export_numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy of a tensor (detached, on the CPU)."""
    return t.detach().to("cpu", torch.float32).numpy().copy()
