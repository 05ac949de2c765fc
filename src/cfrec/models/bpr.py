"""Bayesian personalised ranking (Rendle, Freudenthaler, Gantner & Schmidt-Thieme 2009).

A user ``u`` should score an item ``i`` they interacted with above an item ``j`` they did not::

    s_ui = p_u . q_i + b_i          x_uij = s_ui - s_uj
    loss = mean over (u, i, j) of  -log sigmoid(x_uij)
           + reg (|p_u|^2 + |q_i|^2 + |q_j|^2) + bias_reg (b_i^2 + b_j^2)

Every positive ``(u, i)`` (a training rating ``>= threshold``) is paired each epoch with one
sampled negative ``j`` that ``u`` never rated in training: uniformly, or with probability
proportional to ``(1 + n_j) ** neg_exponent`` (``n_j``: the item's positives) to draw more of the
popular items a user skipped. The draws are exact (the user's rated items are never drawn, see
:class:`PopularityNegatives`) and vectorised over a whole epoch.

On the CPU every triple is its own step, in a compiled loop (:mod:`cfrec.engines.hogwild`,
numba): users grouped (a user's row stays in cache over its positives), the negative drawn inside
the loop, the optimiser's rule applied to the three rows and two intercepts the triple touched,
and shards of users run on the cores in parallel without locks (Hogwild, as implicit's BPR).
On CUDA a minibatch of triples is one step: the loss and its gradient are fused in one autograd
function (:class:`_BPRLoss`) whose gradients are row-sparse
(:func:`~cfrec.engines.torch_loop.row_grad`), so the engine's row-wise optimisers read and write
the batch's rows of ``P``, ``Q`` and ``b`` and nothing else; SGD's rate is multiplied by the
batch size there, so that a batch moves as its triples' own steps would.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfrec.data.interactions import IMPLICIT_SCALE, Interactions
from cfrec.engines.backend import make_generator, resolve_device
from cfrec.engines.matrix import positives
from cfrec.engines.negatives import PopularityNegatives, UniformNegatives, pair_keys
from cfrec.engines.newton import damped_newton
from cfrec.engines.torch_loop import (
    TrainConfig,
    export_numpy,
    make_optimizer,
    row_grad,
    shuffled_batches,
    train_loop,
)
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.factor import ItemInterceptRecommender
from cfrec.models.layout import Array
from cfrec.models.params import Runtime, hyperparameters, param
from cfrec.models.ranking_only import RankingRecommender
from cfrec.threads import threads_for, using_threads

logger = logging.getLogger(__name__)

#: Largest number of (positive, negative) pairs in a fold-in objective; above it the negatives
#: are a seeded sample.
_FOLD_IN_PAIRS = 1 << 20


@functools.cache
def _hogwild() -> Any:
    """:mod:`cfrec.engines.hogwild` (numba), loaded on first use; None where numba is missing
    (the batched torch steps are used instead)."""
    try:
        from cfrec.engines import hogwild
    except ImportError:  # pragma: no cover - numba is a dependency
        return None
    return hogwild
# ---------------------------------------------------------------------- fused loss
class _BPRLoss(torch.autograd.Function):
    """Mean over a minibatch of ``softplus(-x_uij) + reg (|p_u|^2 + |q_i|^2 + |q_j|^2) +
    bias_reg (b_i^2 + b_j^2)`` (``softplus(-x) = -log sigmoid(x)``), with a hand-written
    gradient.

    The three table gradients are row-sparse: one row per batch entry of ``P`` and two of ``Q``
    and ``b`` (positives then negatives, on one shared index tensor so the optimiser finds their
    distinct rows once). Values equal autograd's.
    """

    @staticmethod
    def forward(ctx: Any, p: torch.Tensor, q: torch.Tensor, b: torch.Tensor, u: torch.Tensor,
                ij: torch.Tensor, reg: float, bias_reg: float) -> torch.Tensor:
        n = len(u)
        pu = p.index_select(0, u)
        qij = q.index_select(0, ij)
        bij = b.index_select(0, ij)
        qi, qj = qij[:n], qij[n:]
        diff = qi - qj
        x = (pu * diff).sum(1) + bij[:n] - bij[n:]
        loss = F.softplus(-x).sum()
        if reg:
            loss = loss + reg * (torch.dot(pu.reshape(-1), pu.reshape(-1))
                                 + torch.dot(qij.reshape(-1), qij.reshape(-1)))
        if bias_reg:
            loss = loss + bias_reg * torch.dot(bij, bij)
        ctx.save_for_backward(pu, qij, bij, diff, x, u, ij)
        ctx.meta = (p.shape, q.shape, b.shape, float(reg), float(bias_reg), max(n, 1))
        return loss / max(n, 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        pu, qij, bij, diff, x, u, ij = ctx.saved_tensors
        p_shape, q_shape, b_shape, reg, bias_reg, n = ctx.meta
        scale = grad / n
        g = -torch.sigmoid(-x) * scale  # d loss / d x_uij, per triple
        g2 = torch.cat([g, -g])  # d x / d s_ui = 1, d x / d s_uj = -1
        need = ctx.needs_input_grad
        dp = dq = db = None
        if need[0]:
            vals = diff * g[:, None]
            if reg:
                vals += pu * (scale * (2.0 * reg))
            dp = row_grad(u, vals, p_shape)
        if need[1]:
            vals = torch.cat([pu, pu]) * g2[:, None]
            if reg:
                vals += qij * (scale * (2.0 * reg))
            dq = row_grad(ij, vals, q_shape)
        if need[2]:
            vals = g2 + (2.0 * bias_reg * scale) * bij if bias_reg else g2
            db = row_grad(ij, vals, b_shape)
        return dp, dq, db, None, None, None, None


class _BPRNet(nn.Module):
    """The learned tables: user factors ``P``, item factors ``Q`` and item intercepts ``b``."""

    def __init__(self, n_users: int, n_items: int, n_factors: int, init_std: float,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.user_factors = nn.Parameter(torch.randn(n_users, n_factors, generator=generator) * init_std)
        self.item_factors = nn.Parameter(torch.randn(n_items, n_factors, generator=generator) * init_std)
        self.item_bias = nn.Parameter(torch.zeros(n_items))


# ---------------------------------------------------------------------- the model
@hyperparameters
class BPR(RankingRecommender, ItemInterceptRecommender, Runtime):
    """Bayesian personalised ranking: pairwise log-sigmoid loss on sampled negatives, for top-K.

    Scores are ``s_ui = p_u . q_i + b_i`` (see :mod:`cfrec.models.bpr`), trained on (user,
    positive, negative) triples; a step updates only the rows of its users and items: one
    triple at a time in a compiled loop over the cores on the CPU, minibatches on CUDA.
    Ratings ``>= threshold`` are positives (``None``: every rating); negatives are never items
    the user rated in training (of any rating), and users who rated every item do not train. ``valid`` is ignored: the epoch
    count is a hyperparameter, chosen on validation carves.

    ``predicts_ratings`` is False: ``predict`` maps a score onto the rating scale through a
    sigmoid (``low + sigmoid(s) * (high - low)``), a monotone preference, not a rating estimate.
    The learned item intercepts are ``item_intercept_``. An unknown user is ranked by popularity (training ratings per item,
    divided by the largest count). Training users without a positive get a zero vector (ranked
    by the intercepts). :meth:`fold_in` fits a new user's vector against the fixed items;
    ``similar_items`` compares the item factors by cosine.

    Defaults were chosen by NDCG@10 (every unrated item ranked) on a per-user 10% validation
    carve of ML-100K's ``u1.base`` (no test file used). The per-triple steps were tuned there
    anew: SGD at lr 0.2 decayed by 0.96 an epoch, reg 0.005, 100 epochs gave 0.222 (Adagrad
    lr 0.1, 60 epochs: 0.219; Adam lr 0.001, 60 epochs: 0.215; the earlier minibatch Adam
    defaults, lr 0.003, reg 0.008, 40 epochs: 0.215 batched, 0.203 per triple). SGD is also
    the cheapest step (no optimiser state): on synthetic ml-10m an epoch's CPU time was about
    half of Adagrad's and a quarter of Adam's. Earlier trials (30 TPE trials over factors,
    threshold and ``neg_exponent``) kept 128 factors and ratings >= 4; popularity-aware
    negatives were worse at every setting tried.

    Parameters
    ----------
    n_factors
        Length of the user and item vectors.
    epochs
        Passes over the positives (each with fresh negatives).
    batch_size
        Triples per optimiser step on CUDA (the CPU steps on one triple at a time).
    lr
        Learning rate of a triple's step (on CUDA, SGD's is multiplied by ``batch_size`` for
        the batch-mean loss; Adam and Adagrad do not depend on the loss's scale).
    optimizer
        ``"sgd"``, ``"adagrad"`` or ``"adam"`` (lazy: the touched rows' moments only).
    reg
        Per-triple L2 on the looked-up vectors: ``reg * (|p_u|^2 + |q_i|^2 + |q_j|^2)``, so a
        row is held in proportion to how often it is drawn.
    bias_reg
        Per-triple L2 on the two intercepts.
    threshold
        Ratings ``>= threshold`` are positives; ``None``: every rating. The default suits 1-5
        star scales; a threshold no training rating reaches is an error. A threshold is for
        ratings: on interaction logs (no ratings) every interaction is a positive.
    neg_exponent
        Popularity-aware sampling: a negative ``j`` is drawn with probability proportional to
        ``(1 + n_j) ** neg_exponent`` among the user's unrated items, ``n_j`` being the item's
        training positives. ``0`` (uniform) is Rendle's sampler; about ``0.5``-``1`` draws more
        of the popular items the user skipped (harder negatives).
    init_std
        Standard deviation of the normal initial factors.
    lr_decay
        Learning rate multiplied by this after every epoch.
    fold_in_reg
        L2 strength on a folded-in user's vector (``None``: ``reg``).
    fold_in_steps
        Most Newton steps of :meth:`fold_in` (the objective is convex; it stops earlier once the
        gradient vanishes).
    device
        ``None``/``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` for training;
        scoring runs on the CPU.
    threads
        CPU threads for fit and scoring. The fit's compiled epochs cut the users into this many
        shards that run in parallel (``None``: ``CFREC_NUM_THREADS``, else one thread below
        2^18 triples an epoch, where threads cost more than they give, and every core above).
    seed
        Seeds initialisation, the order of the users and their positives, negatives and the
        fold-in's sample of negatives. A fixed seed reproduces a CPU fit exactly on one thread
        (the default for small data); on several, the shards' lock-free writes race, so the
        last bits vary from run to run.

    Attributes
    ----------
    user_factors_, item_factors_
        (n_users, n_factors) and (n_items, n_factors) float32.
    item_intercept_
        (n_items,) float32 learned intercepts ``b_i``.
    """

    name = "bpr"
    state_layout = {"model.item_counts": Array(("items",), "int")}
    score_to_scale = "sigmoid"

    n_factors: int = param(default=128, ge=1)
    epochs: int = param(default=100, ge=1)
    batch_size: int = param(default=1024, ge=1)
    lr: float = param(default=0.2, gt=0)
    optimizer: Literal["adam", "adagrad", "sgd"] = "sgd"
    reg: float = param(default=0.005, ge=0)
    bias_reg: float = param(default=1e-3, ge=0)
    threshold: float | None = 4.0
    neg_exponent: float = param(default=0.0, ge=0)
    init_std: float = param(default=0.1, ge=0)
    lr_decay: float = param(default=0.96, gt=0)
    fold_in_reg: float | None = param(default=None, gt=0)
    fold_in_steps: int = param(default=20, ge=1)

    # ------------------------------------------------------------------ fitting
    def _positives(self, ratings: np.ndarray, implicit: bool = False) -> np.ndarray:
        """Mask of the ratings that count as positives (all of them on interaction data: a
        threshold is for ratings)."""
        return positives(ratings, None if implicit else self.threshold)

    def _seeds(self) -> list[int]:
        seq = np.random.SeedSequence(None if self.seed is None else int(self.seed))
        return [int(s.generate_state(1)[0]) for s in seq.spawn(4)]  # init, order, negatives, fold-in

    def _item_weights(self, counts: np.ndarray) -> np.ndarray | None:
        """Negative-sampling weights ``(1 + n_j) ** neg_exponent`` (None: uniform)."""
        e = float(self.neg_exponent)
        return None if e == 0 else (1.0 + counts.astype(np.float64)) ** e

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        if valid is not None:
            logger.debug("BPR: validation data ignored (the epoch count is a hyperparameter)")
        n_users, n_items = train.n_users, train.n_items
        pos_mask = self._positives(train.ratings, train.is_implicit)
        if len(train) and not pos_mask.any():
            raise CfrecError(f"BPR threshold={self.threshold!r} keeps none of the {len(train):,} training ratings "
                             f"(highest {float(train.ratings.max()):g}); pass threshold=None (every rating "
                             "is a positive, as for implicit data) or a lower threshold")
        s_init, s_order, s_neg, _ = self._seeds()
        dev = resolve_device(self.device)
        net = _BPRNet(n_users, n_items, int(self.n_factors), float(self.init_std),
                      make_generator(s_init, "cpu"))
        kernel = _hogwild() if dev.type == "cpu" else None
        if kernel is not None:
            users = self._fit_compiled(kernel, train, pos_mask, net, s_order, on_epoch)
        else:
            net = net.to(dev)
            users = self._fit_batched(train, pos_mask, net, dev, s_order, s_neg, on_epoch)
        has_pos = np.bincount(users, minlength=n_users) > 0
        self.user_factors_ = export_numpy(net.user_factors)
        self.user_factors_[~has_pos] = 0.0
        self.item_factors_ = export_numpy(net.item_factors)
        self.item_intercept_ = export_numpy(net.item_bias)

    def _fit_compiled(self, kernel: Any, train: Interactions, pos_mask: np.ndarray, net: _BPRNet,
                      seed: int, on_epoch: EpochCallback | None) -> np.ndarray:
        """The CPU fit: per-sample steps in a compiled loop over the cores (see the class notes);
        returns the users that trained (one per positive, for the caller's mask)."""
        n_users, n_items = train.n_users, train.n_items
        # the binary users x items CSR of the training data (sorted columns) gives the negatives
        layout, trainable = kernel.training_layout(self.seen_, train.users, train.items, pos_mask, seed)
        pos_ptr, pos_items = layout[2:]
        n_pos = np.diff(pos_ptr)
        owners = np.repeat(trainable, n_pos)
        counts = np.bincount(pos_items[owners], minlength=n_items)
        self.item_counts_ = counts.astype(np.int64)
        tables = tuple(t.detach().numpy() for t in (net.user_factors, net.item_factors, net.item_bias))
        trainer = kernel.HogwildBPR(layout, np.flatnonzero(trainable), tables, str(self.optimizer).lower(),
                                    float(self.reg), float(self.bias_reg), self._item_weights(counts),
                                    kernel.fit_threads(self.threads, int(n_pos[trainable].sum())), seed)
        with torch.no_grad():
            self.history_.extend(trainer.train("BPR", int(self.epochs), float(self.lr), float(self.lr_decay),
                                               on_epoch))
        return np.repeat(np.arange(n_users), np.where(trainable, n_pos, 0))

    def _fit_batched(self, train: Interactions, pos_mask: np.ndarray, net: _BPRNet, dev: torch.device,
                     s_order: int, s_neg: int, on_epoch: EpochCallback | None) -> np.ndarray:
        """The fit in batched torch steps (CUDA); returns the users that trained."""
        n_users, n_items = train.n_users, train.n_items
        seen = pair_keys(train.users, train.items, n_items)
        pos = pair_keys(train.users[pos_mask], train.items[pos_mask], n_items)
        users, items = pos // n_items, pos % n_items
        rated = np.bincount(seen // n_items, minlength=n_users)
        trainable = rated[users] < n_items  # a user who rated everything has no negative
        users, items = users[trainable], items[trainable]
        counts = np.bincount(items, minlength=n_items)
        self.item_counts_ = counts.astype(np.int64)
        weights = self._item_weights(counts)
        sampler: UniformNegatives | PopularityNegatives = (
            UniformNegatives(seen, n_users, n_items) if weights is None else PopularityNegatives(seen, weights))
        rng = np.random.default_rng(s_neg)
        if len(users):
            with using_threads(threads_for(int(self.batch_size) * int(self.n_factors), self.threads)):
                self._train(net, users, items, sampler, rng, dev, s_order, on_epoch)
        return users

    def _train(self, net: _BPRNet, users: np.ndarray, items: np.ndarray,
               sampler: UniformNegatives | PopularityNegatives, rng: np.random.Generator,
               dev: torch.device, s_order: int, on_epoch: EpochCallback | None) -> None:
        u_t = torch.as_tensor(users, device=dev)
        i_t = torch.as_tensor(items, device=dev)
        neg = {"j": torch.as_tensor(sampler.draw(users, rng), device=dev)}
        reg, bias_reg = float(self.reg), float(self.bias_reg)
        epochs = int(self.epochs)

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            ij = torch.cat([i_t.index_select(0, batch), neg["j"].index_select(0, batch)])
            return _BPRLoss.apply(net.user_factors, net.item_factors, net.item_bias,
                                  u_t.index_select(0, batch), ij, reg, bias_reg)

        def epoch_done(record: dict[str, Any]) -> None:
            if record["epoch"] < epochs:  # fresh negatives for the next epoch
                neg["j"] = torch.as_tensor(sampler.draw(users, rng), device=dev)
            if on_epoch is not None:
                on_epoch(record)

        # the batch-mean loss: SGD's per-triple rate times the batch size moves a batch as its
        # triples' own steps would (Adam and Adagrad do not depend on the loss's scale)
        lr = float(self.lr) * (int(self.batch_size) if str(self.optimizer).lower() == "sgd" else 1)
        opt = make_optimizer(str(self.optimizer), list(net.parameters()), lr=lr)
        config = TrainConfig("BPR", epochs, int(self.batch_size), lr,
                             lr_decay=float(self.lr_decay))
        # batches in user order: the rows of P are then read and written in address order
        order = shuffled_batches(len(users), int(self.batch_size), dev,
                                 sort_by=torch.as_tensor(users.astype(np.int32), device=dev))
        history = train_loop(net, opt, len(users), loss_fn, config,
                             generator=make_generator(s_order, "cpu"), device=dev,
                             on_epoch=epoch_done, batches=order)
        self.history_.extend(history)

    # ------------------------------------------------------------------ scoring
    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """Fit a new user's vector against the fixed item factors and intercepts.

        The user's positives ``P`` are the known items given (with ``ratings``: those
        ``>= threshold``); every other known item not given is a negative, weighted as training
        draws them (uniformly, or by ``(1 + n_j) ** neg_exponent``). The vector minimises the
        expected training loss of the user's triples::

            1/|P| sum_{i in P} sum_{j} w_j softplus(-(s_i - s_j))  +  reg |p|^2

        (``w`` summing to one; ``reg`` defaults to ``fold_in_reg``, else the training ``reg``).
        The objective is convex; it is minimised by at most ``fold_in_steps`` damped Newton
        steps from zero, in float64. When ``|P|`` times the number of negatives exceeds about a
        million, the negatives are a sample seeded by the model's seed. Deterministic (the same
        items give the same vector, in any order) and pure (nothing of the model changes).
        Unknown items are ignored and reported; a user with no positive keeps a zero vector
        (ranked by the intercepts); a user with no known item gets the popularity list.
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        k = int(self.item_factors_.shape[1])
        if not len(given.items):
            return self._empty_folded(given, k)
        order = np.argsort(given.items, kind="stable")
        idx, r = given.items[order], given.ratings[order]
        implicit = self.rating_scale_ == IMPLICIT_SCALE  # fitted on a log: every item given is a positive
        pos = idx[self._positives(r, implicit)] if ratings is not None else idx
        n_items = len(self.item_map_)
        lam = float(reg if reg is not None else (self.fold_in_reg if self.fold_in_reg is not None
                                                 else self.reg))
        if not lam > 0:
            raise CfrecError(f"BPR fold-in regularisation must be positive, got {lam}")
        negatives = np.setdiff1d(np.arange(n_items), idx)
        vec = np.zeros(k)
        if len(pos) and len(negatives):
            vec = self._fold_in_vector(pos, negatives, lam)
        return FoldedUser(0.0, vec.astype(np.float32), idx.astype(np.int32), len(idx),
                          unknown_items=given.unknown, duplicate_items=given.duplicates)

    def _fold_in_vector(self, pos: np.ndarray, neg: np.ndarray, lam: float) -> np.ndarray:
        """Damped Newton minimisation of the fold-in objective (see :meth:`fold_in`)."""
        budget = max(1, _FOLD_IN_PAIRS // len(pos))
        if len(neg) > budget:
            rng = np.random.default_rng(self._seeds()[3])
            neg = np.sort(rng.choice(neg, budget, replace=False))
        weights = self._item_weights(self.item_counts_)
        w = np.ones(len(neg)) if weights is None else weights[neg]
        w = w / (w.sum() * len(pos))  # one |P| and the weights' normalisation folded together
        q = self.item_factors_.astype(np.float64)
        b = self.item_intercept_.astype(np.float64)
        qp, qn, bp, bn = q[pos], q[neg], b[pos], b[neg]
        k = q.shape[1]

        def objective(vec: np.ndarray) -> tuple[float, np.ndarray]:
            x = (qp @ vec + bp)[:, None] - (qn @ vec + bn)[None, :]
            return float((np.logaddexp(0.0, -x) * w).sum() + lam * vec @ vec), x

        def derivatives(vec: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
            sig = 0.5 * (1.0 + np.tanh(0.5 * x))  # sigmoid(x), without overflow
            g = -(1.0 - sig) * w  # d objective / d x
            grad = qp.T @ g.sum(1) - qn.T @ g.sum(0) + 2.0 * lam * vec

            def hessian() -> np.ndarray:
                h = sig * (1.0 - sig) * w
                cross = qp.T @ (h @ qn)
                return ((qp * h.sum(1)[:, None]).T @ qp + (qn * h.sum(0)[:, None]).T @ qn
                        - cross - cross.T + 2.0 * lam * np.eye(k))

            return grad, hessian

        return damped_newton(objective, derivatives, np.zeros(k), int(self.fold_in_steps))

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), "item_counts": self.item_counts_.astype(np.int64)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        try:
            self.item_counts_ = np.asarray(arrays["item_counts"], dtype=np.int64)
        except KeyError as exc:
            raise ModelFileError(f"BPR weights lack the array {exc}") from None
        n_i = len(self.item_map_)
        if self.item_counts_.shape != (n_i,):
            raise ModelFileError(f"BPR item counts {self.item_counts_.shape} do not match the {n_i} items "
                                 "of the vocabulary")

