"""Neural matrix factorisation (He et al. 2017, "Neural Collaborative Filtering").

NeuMF fuses two towers over separate embeddings: GMF (the element-wise product of a user and an
item vector, a generalised dot product) and an MLP over the concatenated user and item vectors
(ReLU layers, e.g. 64 -> 32 -> 16). Their outputs are concatenated into one linear output.

Two modes:

``mode="rating"``
    Regression on explicit ratings with squared error. The output is
    ``mu + b_u + b_i + h . [gmf, mlp]``: the global mean and learned biases carry the
    bulk of the signal, as in biased MF, so the towers only model the interaction.
``mode="implicit"``
    The paper's setting: every rated pair is a positive, ``n_negatives`` unrated items per
    positive are drawn afresh each epoch, and the loss is binary cross-entropy. The network then
    outputs the probability that the user interacts with the item. ``predict`` maps that
    probability linearly onto the rating scale (``low + p * (high - low)``, so 1..5 -> 1 + 4p)
    to keep one output range for every model; it is a preference score, not a rating, and its
    RMSE against ratings means nothing. ``recommend`` ranks by it.

Training uses the shared engine (:func:`~cfrec.engines.torch_loop.train_loop`): minibatches are index
slices of tensors held on the device, everything random is seeded, early stopping watches a
validation part carved from the training data (validation RMSE in rating mode, validation
binary cross-entropy on held-out positives and fixed sampled negatives in implicit mode, logged
as ``valid_bce``), and a non-finite loss raises :class:`~cfrec.errors.TrainingDiverged`.
Inference runs on CPU in eval mode without gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfrec.data.interactions import Interactions
from cfrec.data.split import carve_validation
from cfrec.engines.backend import make_generator, resolve_device
from cfrec.engines.negatives import UniformNegatives, pair_keys
from cfrec.engines.torch_loop import (
    TrainConfig,
    batched_rmse,
    load_module_arrays,
    make_optimizer,
    module_arrays,
    train_loop,
)
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models._bias import fit_biases
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.factor import BiasedRecommender
from cfrec.models.layout import Array, module_layout
from cfrec.models.params import hyperparameters, param
from cfrec.threads import threads_for, using_threads

logger = logging.getLogger(__name__)

Mode = Literal["rating", "implicit"]

#: (user, item) pairs scored per forward pass at inference (bounds the (pairs, layer) blocks).
_PAIRS_PER_CHUNK = 1 << 17


_LAYERS = "MLP sizes such as '64,32,16' (at least two, positive, the first even)"


def _layers_ok(value: Any) -> bool:
    try:
        _parse_layers(value)
    except (CfrecError, TypeError, ValueError):
        return False
    return True


def _parse_layers(value: str | Sequence[int]) -> list[int]:
    """``"64,32,16"``, ``"64-32-16"`` or ``[64, 32, 16]`` -> ``[64, 32, 16]`` (checked)."""
    if isinstance(value, str):
        parts = [p for p in value.replace("-", ",").replace(" ", ",").split(",") if p]
        try:
            layers = [int(p) for p in parts]
        except ValueError:
            raise CfrecError(f"mlp_layers {value!r}: expected integers such as '64,32,16'") from None
    else:
        layers = [int(v) for v in value]
    if len(layers) < 2 or any(n < 1 for n in layers) or layers[0] % 2:
        raise CfrecError(f"mlp_layers {value!r}: need at least two positive sizes and an even first "
                         "size (it is the user and item MLP embeddings concatenated), e.g. 64,32,16")
    return layers


class _NeuMFNet(nn.Module):
    """GMF and MLP towers over separate embeddings, fused by one linear output unit.

    With ``with_bias`` the output adds ``offset + b_u + b_i`` (rating mode). The first MLP layer
    is applied to user and item halves separately (``W [m_u; m_i] = W_u m_u + W_i m_i``), which
    lets :meth:`score_grid` score every item for a user without materialising concatenations.
    """

    offset: torch.Tensor  # registered buffer: the global mean in rating mode

    def __init__(self, n_users: int, n_items: int, n_factors: int, layers: list[int],
                 with_bias: bool, dropout: float) -> None:
        super().__init__()
        half = layers[0] // 2
        self.mlp_half = half  # not ``half``: that would shadow ``nn.Module.half()``
        # sparse=True: the embeddings' gradients are row-sparse (the batch's rows only), so a step
        # reads and writes those rows and their optimiser state, not the whole tables
        self.user_gmf = nn.Embedding(n_users, n_factors, sparse=True)
        self.item_gmf = nn.Embedding(n_items, n_factors, sparse=True)
        self.user_mlp = nn.Embedding(n_users, half, sparse=True)
        self.item_mlp = nn.Embedding(n_items, half, sparse=True)
        self.tower = nn.ModuleList(nn.Linear(a, b) for a, b in zip(layers[:-1], layers[1:], strict=False))
        self.head = nn.Linear(n_factors + layers[-1], 1)
        self.with_bias = with_bias
        if with_bias:
            self.user_bias = nn.Embedding(n_users, 1, sparse=True)
            self.item_bias = nn.Embedding(n_items, 1, sparse=True)
        self.register_buffer("offset", torch.zeros((), dtype=torch.float32))
        self.dropout = float(dropout)
        self.dropout_generator: torch.Generator | None = None

    def reset(self, generator: torch.Generator) -> None:
        """Seeded initialisation: N(0, 0.01) embeddings (as in the paper), Xavier layers, zero biases."""
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, 0.0, 0.01, generator=generator)
        for layer in [*self.tower, self.head]:
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)
        if self.with_bias:
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)

    def embedding_modules(self) -> list[nn.Embedding]:
        mods = [self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp]
        if self.with_bias:
            mods += [self.user_bias, self.item_bias]
        return mods

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout <= 0:
            return h
        keep = torch.rand(h.shape, generator=self.dropout_generator, device=h.device) >= self.dropout
        return h * keep / (1.0 - self.dropout)

    def _finish(self, gmf_out: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """Rest of the MLP from the first layer's pre-activation, plus the fused output (no bias)."""
        h = self._drop(F.relu(pre))
        for layer in self.tower[1:]:
            h = self._drop(F.relu(layer(h)))
        n_gmf = self.head.in_features - h.shape[-1]
        w = self.head.weight[0]
        return gmf_out + h @ w[n_gmf:] + self.head.bias[0]

    def first_layer_parts(self, mlp_user: torch.Tensor, mlp_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split first-layer contributions: ``(m_u W_u^T, m_i W_i^T + b)``."""
        first = self.tower[0]
        assert isinstance(first, nn.Linear)  # the tower holds only Linear layers
        w = first.weight
        return mlp_user @ w[:, :self.mlp_half].T, mlp_item @ w[:, self.mlp_half:].T + first.bias

    def forward_parts(self, gmf_u: torch.Tensor, mlp_u: torch.Tensor, bias_u: torch.Tensor,
                      items: torch.Tensor) -> torch.Tensor:
        """Scores of pairs given per-pair user vectors (training users or folded-in ones)."""
        w_gmf = self.head.weight[0, :gmf_u.shape[-1]]
        gmf_out = (gmf_u * self.item_gmf(items) * w_gmf).sum(-1)
        a, b = self.first_layer_parts(mlp_u, self.item_mlp(items))
        out = self._finish(gmf_out, a + b)
        if self.with_bias:
            out = out + self.offset + bias_u + self.item_bias(items)[..., 0]
        return out

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        bias_u = self.user_bias(users)[..., 0] if self.with_bias else torch.zeros((), device=users.device)
        return self.forward_parts(self.user_gmf(users), self.user_mlp(users), bias_u, items)

    def score_grid(self, gmf_u: torch.Tensor, mlp_u: torch.Tensor, bias_u: torch.Tensor,
                   items: torch.Tensor) -> torch.Tensor:
        """Scores (n_users, n_items) of every given item for each user vector (chunked by caller)."""
        w_gmf = self.head.weight[0, :gmf_u.shape[-1]]
        gmf_out = (gmf_u * w_gmf) @ self.item_gmf(items).T  # (n, m) without an (n, m, k) block
        a, b = self.first_layer_parts(mlp_u, self.item_mlp(items))
        out = self._finish(gmf_out, a[:, None, :] + b[None, :, :])
        if self.with_bias:
            out = out + self.offset + bias_u[:, None] + self.item_bias(items)[:, 0][None, :]
        return out

    def forward_train(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs of pairs (as :meth:`forward`) and the batch mean of the squared norms of every
        embedding and bias they look up (each looked up once, for both)."""
        gu, mu_, gi, mi = self.user_gmf(users), self.user_mlp(users), self.item_gmf(items), self.item_mlp(items)
        w_gmf = self.head.weight[0, :gu.shape[-1]]
        gmf_out = (gu * gi * w_gmf).sum(-1)
        a, b = self.first_layer_parts(mu_, mi)
        out = self._finish(gmf_out, a + b)
        sq = gu.square().sum(-1) + mu_.square().sum(-1) + gi.square().sum(-1) + mi.square().sum(-1)
        if self.with_bias:
            bu, bi = self.user_bias(users)[..., 0], self.item_bias(items)[..., 0]
            out = out + self.offset + bu + bi
            sq = sq + bu.square() + bi.square()
        return out, sq.mean()


@hyperparameters
class NeuMF(BiasedRecommender):
    """Neural matrix factorisation: GMF and MLP towers fused (He et al. 2017).

    Defaults were chosen on validation carves of ML-100K's ``u1.base`` (rating mode). Measured on
    the official folds u1..u5: RMSE 0.930, 0.921, 0.914, 0.917, 0.914 (mean 0.919; Surprise's SVD
    0.938), about 2.3 s per fold on one CPU thread with early stopping after about 7 epochs.

    Parameters
    ----------
    mode
        ``"rating"`` (squared error on ratings, with global mean and biases) or ``"implicit"``
        (binary cross-entropy with sampled negatives; see the module docstring for what
        ``predict`` returns then).
    n_factors
        Size of the GMF embeddings.
    mlp_layers
        MLP tower sizes, e.g. ``(64, 32, 16)`` or ``"64,32,16"``; the first size is the user and
        item MLP embeddings concatenated (32 each here).
    dropout
        Dropout rate after each MLP layer during training.
    epochs, batch_size, lr, optimizer
        Training loop: at most ``epochs`` passes of minibatches with Adam (``"adam"``), Adagrad
        (``"adagrad"``) or plain SGD (``"sgd"``). The embeddings' gradients are row-sparse, so
        each step updates only the batch's embedding rows (Adam's moments of other rows do not
        move: see :class:`~cfrec.engines.torch_loop.Adam`); the MLP and output layers get dense
        updates.
    reg
        L2 strength on the embeddings and biases looked up in each minibatch (per example, so a
        user with many ratings is regularised in proportion, as in SGD matrix factorisation).
    weight_decay
        Weight decay of the dense layers (MLP and output).
    patience
        Early stopping: epochs without validation improvement before stopping (the best epoch's
        weights are restored). ``None`` trains all epochs.
    valid_fraction
        Share of the training ratings carved out for early stopping when ``fit`` gets no
        ``valid`` set (0 disables early stopping).
    n_negatives
        Implicit mode: unrated items sampled per positive each epoch.
    fold_in_reg
        L2 strength for :meth:`fold_in` (``None``: ``reg``).
    fold_in_steps
        Optimiser iterations (L-BFGS) for :meth:`fold_in`.
    device
        ``None``/``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` for training.
    threads
        Intra-op CPU threads for fit and scoring; ``None`` lets cfrec choose by the size of the
        work (``CFREC_NUM_THREADS`` if set; see :mod:`cfrec.threads`).
    seed
        Seeds initialisation, minibatch order, dropout, negatives and the validation carve.
    """

    name = "neumf"

    mode: Mode = "rating"
    n_factors: int = param(default=16, ge=1)
    mlp_layers: str | Sequence[int] = param(default=(64, 32, 16), check=_layers_ok, expect=_LAYERS)
    dropout: float = param(default=0.0, ge=0, lt=1)
    epochs: int = param(default=40, ge=1)
    batch_size: int = param(default=256, ge=1)
    lr: float = param(default=1e-3, gt=0)
    optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    reg: float = param(default=0.02, ge=0)
    weight_decay: float = param(default=1e-5, ge=0)
    patience: int | None = param(default=3, ge=1)
    valid_fraction: float = param(default=0.1, ge=0, lt=1)
    n_negatives: int = param(default=4, ge=1)
    fold_in_reg: float | None = param(default=None, gt=0)
    fold_in_steps: int = param(default=100, ge=1)
    device: str | None = None
    threads: int | None = param(default=None, ge=1)
    seed: int | None = param(default=0, ge=0)

    def __post_init__(self) -> None:
        # a tuple is kept as a list so the value survives the JSON round trip of save/load
        if isinstance(self.mlp_layers, tuple):
            self.mlp_layers = list(self.mlp_layers)
        super().__post_init__()

    # ------------------------------------------------------------------ configuration
    @property
    def _implicit(self) -> bool:
        return self.mode == "implicit"

    def _build_net(self, n_users: int, n_items: int) -> _NeuMFNet:
        layers = _parse_layers(self.mlp_layers)
        return _NeuMFNet(n_users, n_items, int(self.n_factors), layers, with_bias=not self._implicit,
                         dropout=float(self.dropout))

    def _seeds(self) -> np.random.SeedSequence:
        return np.random.SeedSequence(None if self.seed is None else int(self.seed))

    # ------------------------------------------------------------------ fitting
    @property
    def predicts_ratings(self) -> bool:
        """Only the rating mode estimates ratings; implicit scores are preferences."""
        return self.mode == "rating"

    def _work(self, rows: int) -> int:
        """Elements per operation when ``rows`` pairs go through the network at once."""
        return int(rows) * max(int(self.n_factors), max(_parse_layers(self.mlp_layers)))

    def _threads(self, rows: int) -> int:
        return threads_for(self._work(rows), self.threads)

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        net = self._build_net(train.n_users, train.n_items)
        with using_threads(self._threads(int(self.batch_size))):
            self._fit_net(net, train, valid, on_epoch)

    def _fit_net(self, net: _NeuMFNet, train: Interactions, valid: Interactions | None,
                 on_epoch: EpochCallback | None) -> None:
        dev = resolve_device(self.device)
        seq = self._seeds()
        s_init, s_order, s_drop, s_neg, s_carve = (int(s.generate_state(1)[0]) for s in seq.spawn(5))
        if valid is None:
            fit_part, valid_part = carve_validation(train, float(self.valid_fraction), s_carve)
        else:
            fit_part, valid_part = train, valid
        net.reset(make_generator(s_init, "cpu"))
        net.to(dev)
        net.dropout_generator = make_generator(s_drop, dev)
        if not self._implicit:
            net.offset.fill_(self.global_mean_)

        tens = fit_part.to_tensors(dev)
        users, items, ratings = tens["users"], tens["items"], tens["ratings"]
        reg, wd = float(self.reg), float(self.weight_decay)
        # Weight decay of the dense layers only, as a loss term (the same gradient as coupled L2
        # in the optimiser); the embeddings get the per-example ``reg`` instead.
        emb_ids = {id(p) for m in net.embedding_modules() for p in m.parameters()}
        dense = [p for p in net.parameters() if id(p) not in emb_ids]
        lo, hi = self.rating_scale_
        rows = {"users": users, "items": items, "labels": ratings}
        rng = np.random.default_rng(s_neg)
        if self._implicit:
            # negatives avoid every training pair, the carved validation pairs included
            sampler = UniformNegatives(pair_keys(train.users, train.items, train.n_items),
                                       train.n_users, train.n_items)
            rows = self._implicit_rows(fit_part, sampler, rng, dev)

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            u, i, y = rows["users"][batch], rows["items"][batch], rows["labels"][batch]
            out, sq = net.forward_train(u, i)
            if self._implicit:
                loss = F.binary_cross_entropy_with_logits(out, y)
            else:
                loss = F.mse_loss(out, y)
            if reg:
                loss = loss + reg * sq
            if wd:
                loss = loss + 0.5 * wd * sum(p.square().sum() for p in dense)
            return loss

        validate = None
        if valid_part is not None and len(valid_part):
            vt = valid_part.to_tensors(dev)
            if self._implicit:
                validate = self._implicit_validator(net, valid_part, train, rng, dev)
            else:
                def validate() -> float:
                    return batched_rmse(net, vt["users"], vt["items"], vt["ratings"], (lo, hi))

        def epoch_done(record: dict[str, Any]) -> None:
            if self._implicit:
                _rename_valid(record)
                fresh = self._implicit_rows(fit_part, sampler, rng, dev)
                rows.update(fresh)
            if on_epoch is not None:
                on_epoch(record)

        opt = make_optimizer(str(self.optimizer), list(net.parameters()), lr=float(self.lr))
        config = TrainConfig("NeuMF", int(self.epochs), int(self.batch_size), float(self.lr),
                             patience=None if validate is None or self.patience is None else int(self.patience))
        history = train_loop(net, opt, len(rows["users"]), loss_fn, config,
                             generator=make_generator(s_order, "cpu"), device=dev,
                             validate=validate, on_epoch=epoch_done)
        if self._implicit:
            for rec in history:
                _rename_valid(rec)
        self.history_.extend(history)

        net.to("cpu").eval()
        net.dropout_generator = None
        self.net_ = net
        if self._implicit:
            self.user_bias_, self.item_bias_ = fit_biases(
                train.users, train.items, train.ratings, train.n_users, train.n_items,
                global_mean=self.global_mean_)
        else:
            self.user_bias_ = net.user_bias.weight.detach()[:, 0].numpy().astype(np.float32)
            self.item_bias_ = net.item_bias.weight.detach()[:, 0].numpy().astype(np.float32)

    def _implicit_rows(self, part: Interactions, sampler: UniformNegatives, rng: np.random.Generator,
                       dev: torch.device) -> dict[str, torch.Tensor]:
        """One epoch of implicit training rows: every positive plus ``n_negatives`` fresh negatives each."""
        n_neg = int(self.n_negatives)
        neg_users = np.repeat(part.users.astype(np.int64), n_neg)
        neg_items = sampler.draw(neg_users, rng)
        keep = neg_items >= 0
        users = np.concatenate([part.users.astype(np.int64), neg_users[keep]])
        items = np.concatenate([part.items.astype(np.int64), neg_items[keep]])
        labels = np.concatenate([np.ones(len(part), np.float32), np.zeros(int(keep.sum()), np.float32)])
        return {"users": torch.as_tensor(users, device=dev), "items": torch.as_tensor(items, device=dev),
                "labels": torch.as_tensor(labels, device=dev)}

    def _implicit_validator(self, net: _NeuMFNet, valid: Interactions, train: Interactions,
                            rng: np.random.Generator, dev: torch.device) -> Any:
        """Validation BCE on held-out positives and one fixed draw of negatives (lower is better)."""
        all_keys = np.union1d(pair_keys(train.users, train.items, train.n_items),
                              pair_keys(valid.users, valid.items, train.n_items))
        rows = self._implicit_rows(valid, UniformNegatives(all_keys, train.n_users, train.n_items), rng, dev)

        def validate() -> float:
            total = torch.zeros((), dtype=torch.float64, device=dev)
            n = len(rows["users"])
            for s in range(0, n, _PAIRS_PER_CHUNK):
                out = net(rows["users"][s:s + _PAIRS_PER_CHUNK], rows["items"][s:s + _PAIRS_PER_CHUNK])
                total += F.binary_cross_entropy_with_logits(
                    out, rows["labels"][s:s + _PAIRS_PER_CHUNK], reduction="sum").double()
            return float(total) / max(n, 1)

        return validate

    # ------------------------------------------------------------------ scoring
    def _as_ratings(self, scores: np.ndarray) -> np.ndarray:
        """Rating mode: the output is the rating. Implicit mode: ``low + p * (high - low)`` with
        ``p`` the predicted interaction probability (a preference, not a rating)."""
        if not self._implicit:
            return scores
        lo, hi = self.rating_scale_
        p = 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))
        return (lo + p * (hi - lo)).astype(np.float32)

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Network outputs (rating, or logit in implicit mode) of pairs, in chunks."""
        out = np.empty(len(users), dtype=np.float32)
        u_t = torch.as_tensor(np.asarray(users, dtype=np.int64))
        i_t = torch.as_tensor(np.asarray(items, dtype=np.int64))
        with torch.no_grad(), using_threads(self._threads(min(len(out), _PAIRS_PER_CHUNK)), blas=False):
            for s in range(0, len(out), _PAIRS_PER_CHUNK):
                out[s:s + _PAIRS_PER_CHUNK] = self.net_(u_t[s:s + _PAIRS_PER_CHUNK],
                                                        i_t[s:s + _PAIRS_PER_CHUNK]).numpy()
        return out

    def _score_vectors(self, gmf: torch.Tensor, mlp: torch.Tensor, bias: torch.Tensor,
                       items: np.ndarray) -> np.ndarray:
        """Scores (n, len(items)) for user vectors, in chunks of about ``_PAIRS_PER_CHUNK`` pairs."""
        i_t = torch.as_tensor(np.asarray(items, dtype=np.int64))
        out = np.empty((len(gmf), len(i_t)), dtype=np.float32)
        step = max(1, _PAIRS_PER_CHUNK // max(len(i_t), 1))
        pairs = min(len(gmf), step) * len(i_t)
        with torch.no_grad(), using_threads(self._threads(pairs), blas=False):
            for s in range(0, len(gmf), step):
                out[s:s + step] = self.net_.score_grid(gmf[s:s + step], mlp[s:s + step],
                                                       bias[s:s + step], i_t).numpy()
        return out

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        self._check_fitted()
        net = self.net_
        u_t = torch.as_tensor(np.asarray(users, dtype=np.int64))
        with torch.no_grad():
            bias = net.user_bias(u_t)[:, 0] if net.with_bias else torch.zeros(len(u_t))
            return self._score_vectors(net.user_gmf(u_t), net.user_mlp(u_t), bias,
                                       np.arange(len(self.item_map_)))

    def item_embeddings(self) -> np.ndarray:
        """GMF and MLP item embeddings concatenated: (n_items, n_factors + mlp_layers[0] / 2)."""
        self._check_fitted()
        net = self.net_
        return torch.cat([net.item_gmf.weight, net.item_mlp.weight], 1).detach().numpy().astype(np.float32)

    def user_embeddings(self) -> np.ndarray:
        """GMF and MLP user embeddings concatenated, like :meth:`item_embeddings`."""
        self._check_fitted()
        net = self.net_
        return torch.cat([net.user_gmf.weight, net.user_mlp.weight], 1).detach().numpy().astype(np.float32)

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """Fit a new user's GMF and MLP embeddings (and bias, in rating mode) to a few ratings.

        The network and item side stay fixed; L-BFGS minimises the mean squared error (rating
        mode) or the binary cross-entropy against the rated items as positives and
        ``n_negatives`` seeded unrated items per positive (implicit mode; ratings are then
        ignored) plus ``reg`` (default ``fold_in_reg``, else the training ``reg``) times the
        squared norm of the new vectors. Deterministic, and pure: the shared network is only read
        (gradients are taken with respect to the new vectors alone), so concurrent fold-ins are
        safe. Unknown items are ignored and reported. ``FoldedUser.factors`` holds the
        concatenated embeddings (like :meth:`user_embeddings`).
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        idx, r = given.items, given.ratings
        net = self.net_
        k, half = net.user_gmf.embedding_dim, net.mlp_half
        if not len(idx):
            return self._empty_folded(given, k + half)
        lam = float(reg if reg is not None else (self.fold_in_reg if self.fold_in_reg is not None else self.reg))
        if self._implicit:
            pos = np.unique(idx)
            rng = np.random.default_rng(self._seeds().spawn(6)[5])
            neg = UniformNegatives(pos, 1, len(self.item_map_)).draw(
                np.zeros(len(pos) * int(self.n_negatives), np.int64), rng)
            neg = neg[neg >= 0]
            target_items = torch.as_tensor(np.concatenate([pos, neg]))
            target = torch.as_tensor(np.r_[np.ones(len(pos)), np.zeros(len(neg))], dtype=torch.float32)
        else:
            target_items = torch.as_tensor(idx)
            target = torch.as_tensor(r, dtype=torch.float32)
        gmf = torch.zeros((1, k), requires_grad=True)
        mlp = torch.zeros((1, half), requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        params = [gmf, mlp] + ([bias] if net.with_bias else [])
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=int(self.fold_in_steps), line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            out = net.score_grid(gmf, mlp, bias, target_items)[0]
            if self._implicit:
                loss = F.binary_cross_entropy_with_logits(out, target)
            else:
                loss = F.mse_loss(out, target)
            loss = loss + lam * sum(p.square().sum() for p in params)
            # gradients of the new vectors only: nothing is accumulated into the network
            for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
                p.grad = g
            return loss.detach()

        with using_threads(self._threads(len(target_items)), blas=False):
            opt.step(closure)
        g, m = gmf.detach()[0].numpy().copy(), mlp.detach()[0].numpy().copy()
        b = float(bias.detach()[0]) if net.with_bias else 0.0
        return FoldedUser(b, np.concatenate([g, m]).astype(np.float32), idx.astype(np.int32),
                          len(idx), state={"gmf": g, "mlp": m, "bias": b},
                          unknown_items=given.unknown, duplicate_items=given.duplicates)

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        gmf = torch.as_tensor(np.asarray(user.state["gmf"], np.float32))[None]
        mlp = torch.as_tensor(np.asarray(user.state["mlp"], np.float32))[None]
        bias = torch.tensor([float(user.state["bias"])])
        return self._score_vectors(gmf, mlp, bias, items)[0]

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        return module_arrays(self.net_)

    def _declared_arrays(self, meta: dict[str, Any]) -> dict[str, Array]:
        n_u, n_i = len(meta["user_ids"]), len(meta["item_ids"])
        return {**super()._declared_arrays(meta), **module_layout(lambda: self._build_net(n_u, n_i))}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        try:
            net = self._build_net(len(self.user_map_), len(self.item_map_))
        except CfrecError as exc:
            raise ModelFileError(f"NeuMF hyperparameters in the model file are invalid ({exc})") from None
        load_module_arrays(net, arrays, "NeuMF")
        self.net_ = net.eval()


# ---------------------------------------------------------------------- helpers
def _rename_valid(record: dict[str, Any]) -> None:
    """Implicit mode: the engine's ``valid_rmse`` slot holds a binary cross-entropy."""
    if "valid_rmse" in record:
        record["valid_bce"] = record.pop("valid_rmse")

