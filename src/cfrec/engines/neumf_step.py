"""NeuMF's fused training step: one minibatch's loss and gradient written out by hand, no autograd.

The step keeps its own copies of the network's parameters (one table stacking the user and
item rows, one flat vector of the dense weights) and updates them with the compiled Adam of
:mod:`cfrec.engines.compiled_neumf` on the CPU, or the engine's row-wise optimisers elsewhere.
It reads the network through :class:`NeuMFNetwork` (the attributes of
:class:`cfrec.models.neumf_net._NeuMFNet`), so the engines do not import the models.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfrec.engines.torch_loop import make_optimizer, row_grad


class NeuMFNetwork(Protocol):
    """What the step reads and writes of a NeuMF network: its embeddings, layers and offset."""

    user_gmf: nn.Embedding
    item_gmf: nn.Embedding
    user_mlp: nn.Embedding
    item_mlp: nn.Embedding
    user_bias: nn.Embedding
    item_bias: nn.Embedding
    tower: nn.ModuleList
    head: nn.Linear
    offset: torch.Tensor
    with_bias: bool
    mlp_half: int


class _FusedStep:
    """One minibatch step of NeuMF's training loss with its gradient written out, no autograd.

    Training keeps its own copies of the parameters in two tensors, so that a step is a few
    dozen operations however many modules the network has: ``table`` (n_users + n_items, d)
    stacks every user row ``[gmf | mlp | bias]`` above every item row (``d = n_factors +
    mlp_layers[0] / 2 + 1``; no bias column in implicit mode) and ``flat`` holds every dense
    weight and bias (MLP layers, then the output unit) one after another. A step gathers the
    batch's 2B rows with one ``index_select``, runs the forward pass and its backward by hand
    (the loss and gradient of :meth:`cfrec.models.neumf_net._NeuMFNet.forward_train` under autograd, checked in the
    tests), gives ``flat`` a dense gradient and ``table`` a row-sparse one, and updates both:

    * on the CPU with Adam (the default), the table by the compiled pass
      :func:`~cfrec.engines.compiled_neumf.neumf_table_adam` (row gradients, repeats merged,
      lazy Adam on the distinct rows), the same update as
      :class:`~cfrec.engines.torch_loop.Adam` on the row-sparse gradient;
    * otherwise (CUDA, Adagrad, SGD) by the engine's row-wise optimiser on a
      :func:`~cfrec.engines.torch_loop.row_grad`.

    :meth:`sync` copies the values back into the network's modules, which scoring, validation,
    snapshots and saved files use.
    """

    def __init__(self, net: NeuMFNetwork, *, implicit: bool, reg: float, weight_decay: float,
                 optimizer: str, lr: float, compiled: bool) -> None:
        self.net = net
        self.implicit, self.reg, self.wd = implicit, float(reg), float(weight_decay)
        self.n_users = net.user_gmf.num_embeddings
        self.k, self.h = net.user_gmf.embedding_dim, net.mlp_half
        self.bias = net.with_bias
        with torch.no_grad():
            user = [net.user_gmf.weight, net.user_mlp.weight] + ([net.user_bias.weight] if self.bias else [])
            item = [net.item_gmf.weight, net.item_mlp.weight] + ([net.item_bias.weight] if self.bias else [])
            self.table = torch.cat([torch.cat(user, 1), torch.cat(item, 1)], 0).requires_grad_()
            self._dense = [t for layer in [*net.tower, net.head] for t in (layer.weight, layer.bias)]
            self.flat = torch.cat([t.reshape(-1) for t in self._dense]).requires_grad_()
        self.grad = torch.zeros_like(self.flat)
        self.weights, self.biases = self._views(self.flat.detach())
        self.grad_weights, self.grad_biases = self._views(self.grad)
        self.compiled = None
        if compiled:
            from cfrec.engines.compiled_neumf import neumf_table_adam

            self.compiled = neumf_table_adam
            self._lr = float(lr)
            t = self.table.detach().numpy()
            self.first, self.second = np.zeros_like(t), np.zeros_like(t)
            self.dense_first, self.dense_second = np.zeros((2, 1, len(self.flat)), np.float32)
            self.slot = np.full(len(t), -1, np.int64)
            self._scratch: tuple[np.ndarray, ...] = ()
            self._steps = 0
            # load (or compile) the kernel now, in the fit's set-up, not in its first epoch
            self._compiled_update(np.empty(0, np.int64), np.empty((0, t.shape[1]), np.float32),
                                  np.empty((0, self.weights[-1].shape[1]), np.float32),
                                  np.empty((0, 2 * self.h), np.float32), np.empty(0, np.float32), advance=False)
        else:
            self.opt = make_optimizer(optimizer, [self.table, self.flat], lr=lr)

    def _views(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Weight and bias views of the dense layers (the output unit last) into ``flat``."""
        weights, biases, at = [], [], 0
        for w, b in zip(self._dense[::2], self._dense[1::2], strict=True):
            weights.append(flat[at:at + w.numel()].view(w.shape))
            at += w.numel()
            biases.append(flat[at:at + b.numel()])
            at += b.numel()
        return weights, biases


    @torch.no_grad()
    def sync(self) -> None:
        """Copy the training tensors into the network's modules."""
        net, k, h, n_u = self.net, self.k, self.h, self.n_users
        t = self.table.detach()
        net.user_gmf.weight.copy_(t[:n_u, :k])
        net.item_gmf.weight.copy_(t[n_u:, :k])
        net.user_mlp.weight.copy_(t[:n_u, k:k + h])
        net.item_mlp.weight.copy_(t[n_u:, k:k + h])
        if self.bias:
            net.user_bias.weight.copy_(t[:n_u, k + h:])
            net.item_bias.weight.copy_(t[n_u:, k + h:])
        for mine, theirs in zip(self.weights + self.biases, self._dense[::2] + self._dense[1::2], strict=True):
            theirs.copy_(mine)

    @torch.no_grad()
    def __call__(self, index: torch.Tensor, labels: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        """Take one step on a batch; return its summed loss (the batch's mean loss times B).

        ``index`` (2B,) holds the batch's user rows then its item rows (item numbers offset by
        ``n_users``); ``masks`` are the dropout multipliers of each MLP layer (None: no dropout).
        """
        k, h = self.k, self.h
        n = len(labels)
        rows = self.table.detach().index_select(0, index)  # (2B, d)
        eu, ei = rows[:n], rows[n:]
        gmf = eu[:, :k] * ei[:, :k]
        acts = [torch.cat([eu[:, k:k + h], ei[:, k:k + h]], 1)]
        *tower, (w_head, b_head) = zip(self.weights, self.biases, strict=True)
        for j, (w, b) in enumerate(tower):
            a = torch.addmm(b, acts[-1], w.T).relu_()
            if masks is not None:
                a = a.mul_(masks[j])
            acts.append(a)
        z = torch.cat([gmf, acts[-1]], 1)
        out = torch.addmv(b_head, z, w_head[0])
        if self.bias:
            out = out.add_(eu[:, -1]).add_(ei[:, -1]).add_(self.net.offset)
        scale = 1.0 / n
        if self.implicit:
            total = F.binary_cross_entropy_with_logits(out, labels, reduction="sum")
            d_out = torch.sigmoid(out).sub_(labels).mul_(scale)
        else:
            err = out.sub_(labels)
            total = torch.dot(err, err)
            d_out = err.mul_(2.0 * scale)
        if self.reg:
            flat_rows = rows.view(-1)
            total = total + self.reg * torch.dot(flat_rows, flat_rows)
        flat = self.flat.detach()
        if self.wd:
            total = total + (0.5 * self.wd * n) * torch.dot(flat, flat)
        # backward: the output unit, the MLP layers from the top, then the rows read
        gw, gb = self.grad_weights, self.grad_biases
        torch.mv(z.T, d_out, out=gw[-1][0])
        torch.sum(d_out, 0, keepdim=True, out=gb[-1])
        d_z = torch.outer(d_out, w_head[0])
        d_a = d_z[:, k:]
        for j in range(len(tower) - 1, -1, -1):
            if masks is not None:
                d_a = d_a * masks[j]
            d_pre = torch.ops.aten.threshold_backward(d_a, acts[j + 1], 0)
            torch.mm(d_pre.T, acts[j], out=gw[j])
            torch.sum(d_pre, 0, out=gb[j])
            d_a = d_pre @ tower[j][0]
        if self.wd:
            self.grad.add_(flat, alpha=self.wd)
        if self.compiled is not None:
            self._compiled_update(index.numpy(), rows.numpy(), d_z.numpy(), d_a.numpy(), d_out.numpy())
        else:
            self.flat.grad = self.grad
            self.table.grad = row_grad(index, self._row_grads(rows, d_z[:, :k], d_a, d_out), self.table.shape)
            self.opt.step()
        return total

    def _row_grads(self, rows: torch.Tensor, d_gmf: torch.Tensor, d_mlp: torch.Tensor,
                   d_out: torch.Tensor) -> torch.Tensor:
        """The gradient of each of the 2B rows read (repeats not merged)."""
        k, h, n = self.k, self.h, len(d_out)
        grad = torch.empty_like(rows)
        torch.mul(d_gmf, rows[n:, :k], out=grad[:n, :k])
        torch.mul(d_gmf, rows[:n, :k], out=grad[n:, :k])
        grad[:n, k:k + h] = d_mlp[:, :h]
        grad[n:, k:k + h] = d_mlp[:, h:]
        if self.bias:
            grad[:n, -1] = d_out
            grad[n:, -1] = d_out
        if self.reg:
            grad.add_(rows, alpha=2.0 * self.reg / max(n, 1))
        return grad

    def _compiled_update(self, index: np.ndarray, rows: np.ndarray, d_z: np.ndarray, d_mlp: np.ndarray,
                         d_out: np.ndarray, advance: bool = True) -> None:
        """Adam by the compiled pass: lazy on the table's rows read, dense on ``flat`` (the
        defaults of :class:`~cfrec.engines.torch_loop.Adam`)."""
        assert self.compiled is not None
        if len(self._scratch) == 0 or len(self._scratch[0]) < len(index):
            size = max(len(index), 1)
            self._scratch = (np.empty(size, np.int64), np.empty(size, np.float32),
                             np.empty((size, rows.shape[1]), np.float32))
        t = 1
        if advance:
            self._steps += 1
            t = self._steps
        b1, b2, eps = 0.9, 0.999, 1e-8
        n = len(d_out)
        self.compiled(self.table.detach().numpy(), self.first, self.second, index, rows, d_z, self.k, d_mlp, d_out,
                      self.bias, 2.0 * self.reg / max(n, 1), self._lr / (1.0 - b1 ** t), math.sqrt(1.0 - b2 ** t),
                      b1, b2, eps, self.slot, *self._scratch, self.flat.detach().numpy()[None],
                      self.grad.numpy()[None], self.dense_first, self.dense_second)
