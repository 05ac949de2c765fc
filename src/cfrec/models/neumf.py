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

Training runs its epochs through the shared driver (:class:`~cfrec.engines.driver.Trainer`) with
a fused step (:class:`~cfrec.engines.neumf_step._FusedStep`): the training rows are shuffled
once an epoch and every minibatch is a contiguous slice of them; the forward and backward
passes are written out by hand over one table that stacks the user and item rows and one vector of the dense weights
(a few dozen tensor operations a step, no autograd graph), and on the CPU Adam runs as one
compiled pass over the batch's rows (:mod:`cfrec.engines.compiled_neumf`). Everything random is
seeded, early stopping watches a validation part carved from the training data (validation
RMSE in rating mode, validation binary cross-entropy on held-out positives and fixed sampled
negatives in implicit mode, logged as ``valid_bce``), and a non-finite loss raises
:class:`~cfrec.errors.TrainingDiverged`. Inference runs on CPU in eval mode without gradients.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from cfrec.data.interactions import Interactions
from cfrec.data.split import carve_validation
from cfrec.engines.backend import make_generator, resolve_device
from cfrec.engines.driver import Trainer
from cfrec.engines.negatives import UniformNegatives, pair_keys
from cfrec.engines.neumf_step import _FusedStep
from cfrec.engines.torch_loop import batched_rmse, load_module_arrays, module_arrays
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models._bias import fit_biases
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.factor import BiasedRecommender
from cfrec.models.layout import Array, module_layout
from cfrec.models.neumf_fold_in import solve_fold_in
from cfrec.models.neumf_net import _NeuMFNet
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


@hyperparameters
class NeuMF(BiasedRecommender):
    """Neural matrix factorisation: GMF and MLP towers fused (He et al. 2017).

    Defaults were chosen on validation carves of ML-100K's ``u1.base`` (rating mode); the
    minibatch of 1024 at learning rate 2.5e-3 was then checked against the earlier 256 at 1e-3 on
    the official folds u1..u5 (``cfrec benchmark ml-100k --protocol folds --models neumf``):
    RMSE 0.9297, 0.9224, 0.9149, 0.9170, 0.9143 (mean 0.91967 against 0.91972; Surprise's SVD
    0.938), NDCG@10 0.1094 against 0.1064, Recall@10 0.0574 against 0.0556, about 3 s a fold on
    one CPU thread with early stopping after 6-9 epochs.

    Cost of an epoch: with ``B`` training pairs, ``k = n_factors`` and MLP sizes ``L0 > L1 > L2``
    (defaults 16 and 64, 32, 16), a pair costs ``2 (L0 L1 + L1 L2)`` multiply-adds' FLOPs forward
    and twice that backward (the weights' and the inputs' gradients), ``6 (L0 L1 + L1 L2) =
    15,360`` FLOP, plus about 400 for the GMF product and the output unit and about 1,000 for
    Adam on the pair's two table rows of ``k + L0/2 + 1 = 49`` values: about 16.8K FLOP. An epoch
    of synthetic ml-10m (10.0M ratings, 9.0M after the validation carve) is then 9.0M x 16.8K =
    0.15 TFLOP. Measured on a shared 2-core machine (one thread, load average about 10), an epoch
    cost 20-25 s of CPU in three runs (2.3-2.8 us a pair, extrapolated from the second epoch over
    a 524,288-pair slice with the full tables; the earlier autograd step at batch 256: 208-215 s):
    6-7.5 GFLOP/s, 9-11% of the 65 GFLOP/s the same matrix products reach alone on that thread. The rest is memory: each pair reads and writes two random rows
    of the table and of Adam's two moments (about 1 us a pair), and a few dozen small
    operations a step.

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
        updates. A larger batch makes an epoch cheaper (fewer steps of fixed cost) and, at the
        same learning rate, learns less per epoch.
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
        Optimiser iterations (L-BFGS) for :meth:`fold_in` and :meth:`fold_in_predict`.
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
    batch_size: int = param(default=1024, ge=1)
    lr: float = param(default=2.5e-3, gt=0)
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
        lo, hi = self.rating_scale_
        rows = {"users": tens["users"], "items": tens["items"], "labels": tens["ratings"]}
        rng = np.random.default_rng(s_neg)
        if self._implicit:
            # negatives avoid every training pair, the carved validation pairs included
            sampler = UniformNegatives(pair_keys(train.users, train.items, train.n_items),
                                       train.n_users, train.n_items)
            rows = self._implicit_rows(fit_part, sampler, rng, dev)

        validate = None
        if valid_part is not None and len(valid_part):
            vt = valid_part.to_tensors(dev)
            if self._implicit:
                validate = self._implicit_validator(net, valid_part, train, rng, dev)
            else:
                def validate() -> float:
                    return batched_rmse(net, vt["users"], vt["items"], vt["ratings"], (lo, hi))

        opt_name = str(self.optimizer).lower()
        step = _FusedStep(net, implicit=self._implicit, reg=float(self.reg), weight_decay=float(self.weight_decay),
                          optimizer=opt_name, lr=float(self.lr), compiled=dev.type == "cpu" and opt_name == "adam")
        order_gen = make_generator(s_order, "cpu")
        size, rate = int(self.batch_size), float(self.dropout)
        sizes = _parse_layers(self.mlp_layers)[1:]

        def epoch(_: int) -> dict[str, Any]:
            # one shuffle an epoch, then every batch a contiguous slice: (2, n) user and item rows
            n = len(rows["users"])
            perm = torch.randperm(n, generator=order_gen, device=order_gen.device).to(dev)
            pairs = torch.stack([rows["users"], rows["items"] + train.n_users]).index_select(1, perm)
            labels = rows["labels"].index_select(0, perm)
            total = torch.zeros((), dtype=torch.float64, device=dev)
            for s in range(0, n, size):
                b = min(size, n - s)
                masks = None
                if rate > 0:
                    masks = [(torch.rand((b, m), generator=net.dropout_generator, device=dev) >= rate)
                             .float().div_(1.0 - rate) for m in sizes]
                total += step(pairs[:, s:s + b].reshape(-1), labels[s:s + b], masks)
            step.sync()
            return {"train_loss": float(total) / max(n, 1)}

        def evaluate() -> float:
            net.eval()
            return float(validate())  # type: ignore[misc]

        def epoch_done(record: dict[str, Any]) -> None:
            if self._implicit:
                _rename_valid(record)
                rows.update(self._implicit_rows(fit_part, sampler, rng, dev))
            if on_epoch is not None:
                on_epoch(record)

        patience = None if validate is None or self.patience is None else int(self.patience)
        trainer = Trainer("NeuMF", int(self.epochs), epoch_done, lr=float(self.lr), patience=patience,
                          log_level=logging.INFO)
        with torch.no_grad():
            history = trainer.run(epoch, validate=None if validate is None else evaluate,
                                  snapshot=lambda: copy.deepcopy(net.state_dict()), restore=net.load_state_dict)
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

    def _fold_in_lam(self, reg: float | None) -> float:
        return float(reg if reg is not None else (self.fold_in_reg if self.fold_in_reg is not None else self.reg))

    def _fold_in_targets(self, idx: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items and targets of one user's fold-in objective (implicit mode: the rated items as
        positives and the seeded negatives)."""
        if not self._implicit:
            return idx.astype(np.int64), np.asarray(r, dtype=np.float64)
        pos = np.unique(idx)
        rng = np.random.default_rng(self._seeds().spawn(6)[5])
        neg = UniformNegatives(pos, 1, len(self.item_map_)).draw(
            np.zeros(len(pos) * int(self.n_negatives), np.int64), rng)
        neg = neg[neg >= 0]
        return np.concatenate([pos, neg]).astype(np.int64), np.r_[np.ones(len(pos)), np.zeros(len(neg))]

    def fold_in_predict(self, hist_users: np.ndarray, hist_items: Any, hist_ratings: Any,
                        query_users: np.ndarray, query_items: Any, *, reg: float | None = None) -> np.ndarray:
        """Predictions of many folded-in users at once, without a Python loop per user.

        For every user number ``s`` (``0 <= s < n``, numbered by the caller) this approximates
        ``predict(fold_in(hist_items[hist_users == s], hist_ratings[hist_users == s], reg=reg),
        query_items[query_users == s])``: the same objective, minimised from zero for all users
        at once by a batched L-BFGS (:func:`~cfrec.models.neumf_fold_in.solve_fold_in`: each user its own curvature pairs
        and Armijo step sizes, instead of :meth:`fold_in`'s strong-Wolfe line search). The
        objective is not convex in the MLP vector (ReLU layers), so the two optimisers can stop
        in different local minima: the predictions agree closely but not to float rounding.
        Items are raw ids; unknown history items are ignored, a repeated item keeps its last
        rating, and a user with no known history item gets the unknown-user fallbacks.
        """
        self._check_fitted()
        hu = np.asarray(hist_users, dtype=np.int64)
        qu = np.asarray(query_users, dtype=np.int64)
        q_items = np.atleast_1d(np.asarray(query_items))
        if len(qu) != len(q_items):
            raise ValueError(f"query users ({len(qu)}) and items ({len(q_items)}) differ in length")
        h_items = np.atleast_1d(np.asarray(hist_items))
        h_r = np.atleast_1d(np.asarray(hist_ratings, dtype=np.float64))
        if not (len(hu) == len(h_items) == len(h_r)):
            raise ValueError("history users, items and ratings differ in length")
        n = int(max(hu.max(initial=-1), qu.max(initial=-1))) + 1
        h_idx = self.item_map_.to_index(h_items, missing="-1").astype(np.int64)
        # known items, the last rating of a repeated (user, item) kept, in user order
        rows = np.flatnonzero(h_idx >= 0)[::-1]
        _, first = np.unique(hu[rows] * len(self.item_map_) + h_idx[rows], return_index=True)
        rows = np.sort(rows[first])
        rows = rows[np.argsort(hu[rows], kind="stable")]
        seg, idx, r = hu[rows], h_idx[rows], h_r[rows]
        if self._implicit:  # each user's own seeded negatives, as fold_in draws them
            starts = np.searchsorted(seg, np.arange(n + 1))
            parts = [self._fold_in_targets(idx[a:b], r[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
            lens = np.array([len(p[0]) for p in parts], dtype=np.int64)
            idx = np.concatenate([p[0] for p in parts]) if parts else idx
            r = np.concatenate([p[1] for p in parts]) if parts else r
            seg = np.repeat(np.arange(n, dtype=np.int64), lens)
        has = np.bincount(seg, minlength=n) > 0
        net = self.net_
        k, half = net.user_gmf.embedding_dim, net.mlp_half
        w = np.zeros((n, k + half + int(net.with_bias)))
        if len(seg):
            with using_threads(self._threads(len(seg)), blas=False):
                w = solve_fold_in(net, idx, seg, r, n, self._fold_in_lam(reg), self._implicit,
                                  int(self.fold_in_steps))
        w32 = w.astype(np.float32)
        q_idx = self.item_map_.to_index(q_items, missing="-1").astype(np.int64)
        out = np.empty(len(qu), dtype=np.float32)
        cold = ~has[qu]
        if cold.any():  # no known rating: the unknown-user fallbacks
            out[cold] = self._predict_indices(np.full(int(cold.sum()), -1, dtype=np.int64), q_idx[cold]).ratings
        warm = ~cold & (q_idx >= 0)
        if warm.any():
            u, i = qu[warm], q_idx[warm]
            with torch.no_grad(), using_threads(self._threads(len(u)), blas=False):
                vec = torch.as_tensor(w32[u])
                scores = net.forward_parts(vec[:, :k], vec[:, k:k + half],
                                           vec[:, -1] if net.with_bias else torch.zeros(()),
                                           torch.as_tensor(i)).numpy()
            out[warm] = self._as_ratings(scores)
        new_item = ~cold & (q_idx < 0)
        if new_item.any():  # an unknown item: mu + the folded bias
            out[new_item] = self.global_mean_ + (w32[qu[new_item], -1] if net.with_bias else 0.0)
        return self._clip(out)

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

