"""Variational autoencoder with a multinomial likelihood (Liang, Krishnan, Hoffman & Jebara 2018).

A user is the vector ``x_u`` of their training interactions (1 for each rating ``>= threshold``,
or ``(rating / top of the scale) ** rating_power``). The network::

    h   = tanh(W_1 dropout(x_u / |x_u|) + c_1)          encoder, (hidden,)
    mu, log_var = W_2 h + c_2                             Gaussian latent, (latent,) each
    z   = mu + exp(log_var / 2) * eps    (training; z = mu when scoring)
    g   = tanh(W_3 z + c_3)                               decoder, (hidden,)
    logits = W_4 g + c_4                                  one score per item, softmax over items

is trained on the multinomial log-likelihood ``sum_i x_ui log softmax(logits)_i`` minus
``beta`` times the KL divergence of ``N(mu, diag(exp(log_var)))`` from ``N(0, I)``, averaged
over a minibatch of users. ``beta`` is annealed: it grows linearly with the optimiser steps from
0 to ``beta_cap``, which it reaches after ``anneal_epochs`` epochs and keeps (the paper's
``min(cap, steps / total_anneal_steps)``; its best ``cap`` was 0.2).

Cost. The first layer multiplies a sparse input by a dense ``(n_items, hidden)`` matrix: it is
an ``embedding_bag`` sum of the rows of the batch's items, and its gradient holds each item the
batch touches once (:class:`_SparseInput`), so the engine's row-wise optimisers update those rows
only (O(batch nonzeros x hidden)). The decoder is dense by nature: the softmax normalises over
every item, so a step costs O(batch x n_items x hidden) for the last layer, forward and
backward, and scoring a user costs O(n_items x hidden). The last layer and the likelihood are
one function (:class:`_MultinomialNLL`): three matrix products, one exponential of the logits,
and a gradient formed in place in the logits' buffer.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from cfrec.data.interactions import Interactions
from cfrec.engines.backend import make_generator, resolve_device
from cfrec.engines.matrix import interaction_matrix, interaction_weights
from cfrec.engines.torch_loop import (
    TrainConfig,
    csr_segments,
    load_module_arrays,
    make_optimizer,
    module_arrays,
    row_grad,
    train_loop,
)
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.layout import Array, csr, module_layout
from cfrec.models.params import hyperparameters, param
from cfrec.models.ranking_only import RankingRecommender
from cfrec.threads import threads_for, using_threads

logger = logging.getLogger(__name__)

#: Logits computed per scoring block (users x items), which bounds its memory.
_SCORE_BLOCK = 1 << 22


def _row_normalised(x: sp.csr_array) -> np.ndarray:
    """The values of ``x`` (float32 CSR) divided by their row's L2 norm, in O(nnz)."""
    counts = np.diff(x.indptr)
    filled = counts > 0
    norms = np.ones(len(counts), dtype=np.float32)
    if x.nnz:  # reduceat over the rows that have entries (it reads an empty row as one entry)
        sq = np.add.reduceat(np.square(x.data), x.indptr[:-1][filled], dtype=np.float64)
        norms[filled] = np.maximum(np.sqrt(sq), 1e-12)
    return x.data / np.repeat(norms, counts)


class _SparseInput(torch.autograd.Function):
    """``x W_1`` for sparse input rows ``x``: an ``embedding_bag`` sum of the rows of ``W_1``
    named by the rows' items, with a row-sparse gradient of ``W_1`` that holds each touched row
    once.

    The gradient of row ``i`` is ``sum_u x_ui dL/dh_u``: the same weighted bag sum with the roles
    swapped (the batch's entries sorted by item), so it costs O(nonzeros x hidden) and writes
    (distinct items x hidden). ``embedding_bag``'s own sparse gradient writes one row per nonzero
    (18K rows of 600 for 128 users of ML-10M, more than the 10.7K rows of the whole table), which
    the optimiser then has to sum back into distinct rows.
    """

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, items: torch.Tensor, weights: torch.Tensor,
                offsets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(items, weights, offsets)
        ctx.shape = table.shape
        return F.embedding_bag(items, table, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        items, weights, offsets = ctx.saved_tensors
        lengths = torch.diff(offsets.long(), append=offsets.new_full((1,), len(items)))
        segment = torch.repeat_interleave(torch.arange(len(offsets), device=grad.device), lengths,
                                          output_size=len(items))
        by_item, order = torch.sort(items)
        rows, counts = torch.unique_consecutive(by_item, return_counts=True)
        starts = torch.cumsum(counts, 0).sub_(counts)
        values = F.embedding_bag(segment.index_select(0, order), grad.contiguous(), starts, mode="sum",
                                 per_sample_weights=weights.index_select(0, order))
        return row_grad(rows.long(), values, ctx.shape), None, None, None


class _MultinomialNLL(torch.autograd.Function):
    """The batch mean of ``-sum_i x_ui log softmax(W_4 g_u + c_4)_i``, the decoder's output
    layer and the likelihood in one function.

    The logits are computed item-major, ``(n_items, batch)`` (``W_4 g^T``: the product runs
    about 1.4x faster on the CPU than ``g W_4^T``), exponentiated in place once and kept for the
    backward, where they become the gradient ``(softmax_u * sum_i x_ui - x_u) / batch`` in place:
    one buffer of batch x items and no dense target. The targets enter through their nonzeros.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                items: torch.Tensor, segment: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        n = hidden.shape[0]
        logits = torch.addmm(bias.unsqueeze(1), weight, hidden.t())  # (n_items, batch)
        flat = items.long() * n + segment
        picked = logits.view(-1).index_select(0, flat)
        top = logits.amax(0)
        expo = logits.sub_(top).exp_()
        total = expo.sum(0)
        mass = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, segment, values)
        loss = ((mass * (top + total.log())).sum() - (values * picked).sum()) / n
        ctx.save_for_backward(hidden, weight, expo, total, mass, flat, values)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, expo, total, mass, flat, values = ctx.saved_tensors
        scale = grad / hidden.shape[0]
        dlogits = expo.mul_(mass.div(total).mul_(scale))  # the saved buffer, used once
        dlogits.view(-1).index_add_(0, flat, values * -scale)
        return dlogits.t().mm(weight), dlogits.mm(hidden), dlogits.sum(1), None, None, None


class _MultVAENet(nn.Module):
    """Encoder (sparse first layer), Gaussian latent and decoder of Mult-VAE."""

    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float) -> None:
        super().__init__()
        self.latent = latent
        self.dropout = dropout
        # the first layer's weight as a table of item rows: an embedding_bag over a user's items
        self.enc_in = nn.Parameter(torch.empty(n_items, hidden))
        self.enc_in_bias = nn.Parameter(torch.empty(hidden))
        self.enc_out = nn.Linear(hidden, 2 * latent)
        self.dec_in = nn.Linear(latent, hidden)
        self.dec_out = nn.Linear(hidden, n_items)
        self.generator: torch.Generator | None = None  # dropout and reparameterisation noise

    def reset(self, generator: torch.Generator) -> None:
        """Seeded Xavier-uniform weights and N(0, 0.001^2) biases, as in the paper's code."""
        with torch.no_grad():
            nn.init.xavier_uniform_(self.enc_in, generator=generator)
            for layer in (self.enc_out, self.dec_in, self.dec_out):
                nn.init.xavier_uniform_(layer.weight, generator=generator)
            for bias in (self.enc_in_bias, self.enc_out.bias, self.dec_in.bias, self.dec_out.bias):
                nn.init.normal_(bias, 0.0, 0.001, generator=generator)

    def encode(self, items: torch.Tensor, weights: torch.Tensor,
               offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_var)`` of sparse rows: row ``r`` holds ``weights`` at ``items`` from
        ``offsets[r]`` to the next row's offset (``embedding_bag``'s layout), its values already
        divided by the row's L2 norm.

        In training every nonzero is dropped with probability ``dropout`` and the kept ones
        scaled by ``1 / (1 - dropout)``.
        """
        if self.training and self.dropout > 0:
            keep = torch.rand(weights.shape, generator=self.generator, device=weights.device) >= self.dropout
            weights = weights * keep / (1.0 - self.dropout)
        if torch.is_grad_enabled() and self.enc_in.requires_grad:
            first = _SparseInput.apply(self.enc_in, items, weights, offsets)
        else:
            first = F.embedding_bag(items, self.enc_in, offsets, mode="sum", per_sample_weights=weights)
        out = self.enc_out(torch.tanh(first + self.enc_in_bias))
        return out[:, :self.latent], out[:, self.latent:]

    def decode_hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's hidden layer ``g`` (a user's vector against the item rows of ``W_4``)."""
        return torch.tanh(self.dec_in(z))

    def nll(self, hidden: torch.Tensor, items: torch.Tensor, segment: torch.Tensor,
            values: torch.Tensor) -> torch.Tensor:
        """The batch mean of the multinomial negative log-likelihood of the target rows (their
        nonzeros: ``values`` at ``(segment, items)``) under decoder hidden vectors ``hidden``."""
        return _MultinomialNLL.apply(hidden, self.dec_out.weight, self.dec_out.bias, items, segment, values)

    def sample(self, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """``z``: a reparameterised draw in training, the mean otherwise."""
        if not self.training:
            return mu
        eps = torch.randn(mu.shape, generator=self.generator, device=mu.device)
        return mu + torch.exp(0.5 * log_var) * eps


@hyperparameters
class MultVAE(RankingRecommender):
    """Mult-VAE: a variational autoencoder of users' item sets with a multinomial likelihood.

    Ranking-only (``predicts_ratings`` is False): scores are the decoder's logits, whose softmax
    is the predicted share of the user's interactions each item takes. ``predict`` maps a logit
    onto the rating scale through a sigmoid (``low + sigmoid(s) * (high - low)``), a monotone
    preference within a user, not a rating estimate.
    An unknown user is ranked by popularity (training ratings per item, divided by the largest
    count). :meth:`fold_in` of a new user is one forward pass of their item set, with no training:
    folding in a training user's own ratings gives that user's scores. ``similar_items`` compares
    the decoder's item rows (``W_4``) by cosine; :meth:`user_embeddings` are the matching
    decoder hidden vectors (scores are ``g . w_i + c_i``). ``valid`` is ignored: the epoch count
    is a hyperparameter, chosen on validation carves (see the model's docs).

    Parameters
    ----------
    hidden
        Width of the encoder's and the decoder's hidden layer (the paper's 600).
    latent
        Dimension of the Gaussian latent (the paper's 200).
    dropout
        Probability of dropping each input interaction in training (the paper's 0.5).
    epochs
        Passes over the users.
    batch_size
        Users per optimiser step.
    lr
        Learning rate.
    optimizer
        ``"adam"`` (lazy on the first layer's touched rows), ``"adagrad"`` or ``"sgd"``.
    weight_decay
        Coupled L2 on every parameter (on the first layer, only the rows a step touches).
    beta_cap
        Largest weight of the KL term.
    anneal_epochs
        Epochs over which ``beta`` grows linearly from 0 to ``beta_cap`` (0: ``beta_cap`` from
        the first step).
    threshold
        Ratings ``>= threshold`` are interactions; ``None``: every rating.
    rating_power
        Interaction weight ``(rating / top of the rating scale) ** rating_power``; ``0`` gives
        the paper's binary input.
    device
        ``None``/``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` for training;
        scoring runs on the CPU.
    threads
        CPU threads for fit and scoring (``None``: :func:`~cfrec.threads.threads_for` the work of
        a step, or ``CFREC_NUM_THREADS``).
    seed
        Seeds initialisation, minibatch order, dropout and the latent noise; a fixed seed
        reproduces a CPU fit exactly (at a fixed thread count).

    Notes
    -----
    An epoch costs ``6 U H (I + 3 L) + 4 nnz H`` floating-point operations (``U`` users with
    an interaction, ``I`` items, ``H = hidden``, ``L = latent``, ``nnz`` input nonzeros; forward
    and backward, a multiply-add counted as two): the output layer's three products,
    ``6 U H I``, are 94% of it. At the ML-10M size (69,878 users, 10,677 items, 10M ratings) with
    the defaults that is 2.86e12 per epoch, 5.2e9 per step of 128 users. Measured on one thread
    of a shared 2-core x86-64 CPU (AVX2), whose single-precision matrix products of these shapes
    run at 74-82 GFLOP/s: 89-107 ms of CPU a step (fastest to median step of a full epoch of
    ``benchmarks/scale.py``'s ML-10M data; 59 s of CPU for the epoch with the machine's load
    average at 5-7), i.e. 49-59 s of CPU an epoch, 48-58 GFLOP/s, 60-75% of the products' rate; the
    three products take 62 ms of a step, the rest is the Adam updates (11 ms: a fused pass over
    ``W_4``, a compiled pass over the touched rows of ``W_1``), the first layer (~8 ms) and the
    softmax (~5 ms). Threads follow :func:`~cfrec.threads.threads_for`: one at the default
    batch size (each product is below its threshold), which a shared machine needs; on idle
    cores ``threads=2`` runs the products on both.

    Attributes
    ----------
    net_
        The trained network (CPU, eval mode).
    x_
        (n_users, n_items) float32 CSR of the training users' input rows.
    """

    name = "multvae"
    score_to_scale = "sigmoid"

    hidden: int = param(default=600, ge=1)
    latent: int = param(default=200, ge=1)
    dropout: float = param(default=0.5, ge=0, lt=1)
    epochs: int = param(default=100, ge=1)
    batch_size: int = param(default=128, ge=1)
    lr: float = param(default=1e-3, gt=0)
    optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    weight_decay: float = param(default=0.0, ge=0)
    beta_cap: float = param(default=0.2, ge=0)
    anneal_epochs: float = param(default=50.0, ge=0)
    threshold: float | None = None
    rating_power: float = param(default=0.0, ge=0)
    device: str | None = None
    threads: int | None = param(default=None, ge=1)
    seed: int | None = param(default=0, ge=0)

    # ------------------------------------------------------------------ configuration
    def _build_net(self, n_items: int) -> _MultVAENet:
        return _MultVAENet(n_items, int(self.hidden), int(self.latent), float(self.dropout))

    def _weights(self, ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which ratings are interactions (a mask) and their input weights (float32)."""
        return interaction_weights(ratings, threshold=self.threshold, power=self.rating_power,
                                   top=self.rating_scale_[1], model="MultVAE")

    def _threads(self, rows: int) -> int:
        """Threads for ``rows`` users through the network (the decoder's product dominates)."""
        n_items = len(self.item_map_)
        return threads_for(int(rows) * n_items * int(self.hidden), self.threads)

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        net = self._build_net(train.n_items)
        if valid is not None:
            logger.debug("MultVAE: validation data ignored (the epoch count is a hyperparameter)")
        n_users, n_items = train.n_users, train.n_items
        keep, w = self._weights(train.ratings)
        self.x_ = interaction_matrix(train.users[keep], train.items[keep], w, n_users, n_items)
        seq = np.random.SeedSequence(None if self.seed is None else int(self.seed))
        s_init, s_order, s_noise = (int(s.generate_state(1)[0]) for s in seq.spawn(3))
        net.reset(make_generator(s_init, "cpu"))
        active = np.flatnonzero(np.diff(self.x_.indptr) > 0)  # users with an interaction train
        if len(active):
            with using_threads(self._threads(min(int(self.batch_size), len(active)))):
                self._train(net, active, s_order, s_noise, on_epoch)
        self.net_ = net.to("cpu").eval()
        self.net_.generator = None

    def _train(self, net: _MultVAENet, active: np.ndarray, s_order: int, s_noise: int,
               on_epoch: EpochCallback | None) -> None:
        dev = resolve_device(self.device)
        net.to(dev)
        net.generator = make_generator(s_noise, dev)
        x = self.x_
        indptr = torch.as_tensor(x.indptr, dtype=torch.int64, device=dev)
        indices = torch.as_tensor(x.indices, device=dev)  # int32, as embedding_bag takes it
        data = torch.as_tensor(x.data, device=dev)
        inputs = torch.as_tensor(_row_normalised(x), device=dev)  # L2-normalised once, not per batch
        rows = torch.as_tensor(active.astype(np.int64), device=dev)
        batch_size, epochs = int(self.batch_size), int(self.epochs)
        steps_per_epoch = math.ceil(len(active) / batch_size)
        anneal_steps = float(self.anneal_epochs) * steps_per_epoch
        cap = float(self.beta_cap)
        state = {"step": 0, "beta": 0.0}
        betas: list[float] = []

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            users = rows.index_select(0, batch)
            positions, segment, offsets = csr_segments(indptr, users)
            items = indices.index_select(0, positions)
            mu, log_var = net.encode(items, inputs.index_select(0, positions), offsets.to(items.dtype))
            hidden = net.decode_hidden(net.sample(mu, log_var))
            nll = net.nll(hidden, items, segment, data.index_select(0, positions))
            kl = -0.5 * (1.0 + log_var - mu.square() - log_var.exp()).sum() / len(users)
            beta = cap if anneal_steps <= 0 else min(cap, cap * state["step"] / anneal_steps)
            state["step"] += 1
            state["beta"] = beta
            return nll + beta * kl

        def epoch_done(record: dict[str, Any]) -> None:
            betas.append(float(state["beta"]))
            record["beta"] = betas[-1]
            if on_epoch is not None:
                on_epoch(record)

        opt = make_optimizer(str(self.optimizer), list(net.parameters()), lr=float(self.lr),
                             weight_decay=float(self.weight_decay))
        config = TrainConfig("MultVAE", epochs, batch_size, float(self.lr))
        history = train_loop(net, opt, len(active), loss_fn, config,
                             generator=make_generator(s_order, "cpu"), device=dev, on_epoch=epoch_done)
        for record, beta in zip(history, betas, strict=True):
            record["beta"] = beta
        self.history_.extend(history)

    # ------------------------------------------------------------------ scoring
    def _hidden_of(self, x: sp.csr_array) -> np.ndarray:
        """Decoder hidden vectors ``g`` (len(x), hidden) of input rows, in one forward pass each
        block (eval mode: no dropout, ``z = mu``)."""
        net = self.net_
        out = np.empty((x.shape[0], int(self.hidden)), dtype=np.float32)
        step = max(1, _SCORE_BLOCK // max(x.shape[1], 1))
        with torch.no_grad(), using_threads(self._threads(min(step, x.shape[0])), blas=False):
            for s in range(0, x.shape[0], step):
                block = sp.csr_array(x[s:s + step])
                items = torch.as_tensor(block.indices.astype(np.int32))
                offsets = torch.as_tensor(block.indptr[:-1].astype(np.int32))
                weights = torch.as_tensor(_row_normalised(block).astype(np.float32, copy=False))
                mu, _ = net.encode(items, weights, offsets)
                out[s:s + step] = net.decode_hidden(mu).numpy()
        return out

    def _logits(self, hidden: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Logits of ``items`` (all when None) for decoder hidden vectors, (len(hidden), m)."""
        w = self.net_.dec_out.weight.detach().numpy()
        c = self.net_.dec_out.bias.detach().numpy()
        if items is not None:
            w, c = w[items], c[items]
        with using_threads(self._threads(len(hidden))):
            out = hidden @ w.T
        out += c[None, :]
        return out.astype(np.float32, copy=False)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        """Every item's logit for many users: their training rows through the network in blocks."""
        users = np.asarray(users, dtype=np.int64)
        out = np.empty((len(users), len(self.item_map_)), dtype=np.float32)
        step = max(1, _SCORE_BLOCK // max(len(self.item_map_), 1))
        for s in range(0, len(users), step):
            out[s:s + step] = self._logits(self._hidden_of(self.x_[users[s:s + step]]))
        return out

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        uniq, inverse = np.unique(users, return_inverse=True)
        hidden = self._hidden_of(self.x_[uniq])
        w = self.net_.dec_out.weight.detach().numpy()
        c = self.net_.dec_out.bias.detach().numpy()
        return (np.einsum("ij,ij->i", hidden[inverse], w[items]) + c[items]).astype(np.float32)

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        return self._logits(user.factors[None, :], np.asarray(items, dtype=np.int64))[0]

    # ------------------------------------------------------------------ embeddings
    def item_embeddings(self) -> np.ndarray:
        """The decoder's output rows ``W_4`` (n_items, hidden): item ``i``'s logit for a user is
        ``g_u . w_i + c_i``."""
        self._check_fitted()
        return self.net_.dec_out.weight.detach().numpy().astype(np.float32)

    def user_embeddings(self) -> np.ndarray:
        """The training users' decoder hidden vectors ``g_u`` (n_users, hidden), from their inputs."""
        self._check_fitted()
        return self._hidden_of(self.x_)

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """A new user is one forward pass of their item set through the trained network.

        With ``ratings`` (on the model's scale) the training rule builds the input: ratings
        ``>= threshold`` are interactions weighted ``(rating / top) ** rating_power``. Without,
        every known item is an interaction of weight 1 (the top of the scale's weight, so with
        the default binary input both agree). The same history as a training user's gives that
        user's scores. No training, nothing of the model changes. Every known item given is
        excluded from recommendations; unknown items are ignored and reported; a user with no
        known item gets the popularity list. ``FoldedUser.factors`` holds the decoder hidden
        vector (like a row of :meth:`user_embeddings`). ``reg`` is accepted for interface
        compatibility and unused.
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        hidden = int(self.hidden)
        if not len(given.items):
            return self._empty_folded(given, hidden)
        order = np.argsort(given.items, kind="stable")
        idx, r = given.items[order], given.ratings[order]
        if ratings is None:
            keep, w = np.ones(len(idx), dtype=bool), np.ones(len(idx), dtype=np.float32)
        else:
            keep, w = self._weights(r)
        row = sp.csr_array((w, idx[keep].astype(np.int32), np.array([0, int(keep.sum())])),
                           shape=(1, len(self.item_map_)))
        vec = self._hidden_of(row)[0]
        return FoldedUser(0.0, vec, idx.astype(np.int32), len(idx), unknown_items=given.unknown,
                          duplicate_items=given.duplicates)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        arrays = module_arrays(self.net_)
        arrays.update({"x_indptr": self.x_.indptr.astype(np.int64),
                       "x_indices": self.x_.indices.astype(np.int32),
                       "x_data": self.x_.data.astype(np.float32)})
        return arrays

    def _declared_arrays(self, meta: dict[str, Any]) -> dict[str, Array]:
        n_i = len(meta["item_ids"])
        return {**super()._declared_arrays(meta), **module_layout(lambda: self._build_net(n_i)),
                **csr("model.x", "users", "items")}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        n_u, n_i = len(self.user_map_), len(self.item_map_)
        try:
            net = self._build_net(n_i)
        except CfrecError as exc:
            raise ModelFileError(f"MultVAE hyperparameters in the model file are invalid ({exc})") from None
        load_module_arrays(net, arrays, "MultVAE")
        try:
            indptr, indices, data = arrays["x_indptr"], arrays["x_indices"], arrays["x_data"]
        except KeyError as exc:
            raise ModelFileError(f"MultVAE weights lack the array {exc}") from None
        if (indptr.shape != (n_u + 1,) or indices.shape != data.shape or int(indptr[0]) != 0
                or int(indptr[-1]) != len(indices) or bool(np.any(np.diff(indptr) < 0))
                or (len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_i))):
            raise ModelFileError(f"MultVAE input matrix does not match the id vocabularies "
                                 f"({n_u} users, {n_i} items)")
        self.x_ = sp.csr_array((data.astype(np.float32), indices.astype(np.int32),
                                indptr.astype(np.int64)), shape=(n_u, n_i))
        self.net_ = net.eval()

