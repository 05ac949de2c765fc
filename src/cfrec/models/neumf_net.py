"""NeuMF's network: GMF and MLP towers over separate embeddings, fused by one output unit.

The module :class:`~cfrec.models.neumf.NeuMF` trains, scores with and saves; the fused training
step (:mod:`cfrec.engines.neumf_step`) and the batched fold-in (:mod:`cfrec.models.neumf_fold_in`)
read its weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
