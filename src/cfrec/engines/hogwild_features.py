"""Compiled (numba) per-sample training of a hybrid ranker whose users and items are sums of
feature embeddings, lock-free over the cores (Hogwild), as :mod:`cfrec.engines.hogwild` trains BPR.

A user's vector is ``p_u = sum_c X_u[c] P[c]`` over the columns ``c`` of its feature row (its
identity column and its side features, the row normalised by the caller) and an item's is
``q_i = sum_c X_i[c] Q[c]``, with intercept ``b_i = sum_c X_i[c] B[c]``. A step is one triple
``(u, i, j)``: the three representations are summed from the rows' few columns, the loss's
gradient is taken with respect to them, and each touched embedding row moves by its weight times
that gradient plus its own L2 term (row-sparse updates; nothing else is read or written).

Losses (``x = p_u . (q_i - q_j) + b_i - b_j``):

* BPR: ``softplus(-x)``, one uniform negative outside the user's rated items;
* WARP (Weston, Bengio & Usunier 2011, as LightFM): negatives are drawn until one violates the
  margin (``x < 1``), at most ``max_sampled`` times; the hinge ``1 - x`` is weighted by
  ``log(floor((n_items - 1) / draws))``, an estimate of the positive's rank, and a positive
  whose draws find no violation takes no step.

The rows of the users are in shards that the threads take one at a time, each shard with its
own random stream, so one thread reproduces a fit exactly (see :mod:`cfrec.engines.hogwild`).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from cfrec.engines.compiled import _jit
from cfrec.engines.hogwild import (
    ShardedEpochs,
    _kernel,
    _mix,
    _negative,
    softplus_sigmoid,
    user_sweep,
)

#: Loss codes of :func:`hybrid_epoch`.
BPR_LOSS, WARP_LOSS = 0, 1
LOSS_CODES = {"bpr": BPR_LOSS, "warp": WARP_LOSS}
#: Optimiser codes of :func:`hybrid_epoch`.
SGD, ADAGRAD = 0, 1
OPTIMIZER_CODES = {"sgd": SGD, "adagrad": ADAGRAD}
_EPS = 1e-10


@_kernel
def represent(ptr: np.ndarray, col: np.ndarray, val: np.ndarray, row: int, table: np.ndarray,
              bias: np.ndarray, out: np.ndarray) -> float:  # pragma: no cover - compiled
    """``out = sum_c val[c] table[c]`` over the CSR row ``row``; returns ``sum_c val[c] bias[c]``
    (0 when ``bias`` is empty)."""
    k = table.shape[1]
    for f in range(k):
        out[f] = 0.0
    b = 0.0
    has_bias = len(bias) > 0
    for e in range(ptr[row], ptr[row + 1]):
        c = col[e]
        w = val[e]
        for f in range(k):
            out[f] += w * table[c, f]
        if has_bias:
            b += w * bias[c]
    return b


@_kernel
def _step_rows(ptr: np.ndarray, col: np.ndarray, val: np.ndarray, row: int, table: np.ndarray,
               acc: np.ndarray, grad: np.ndarray, scale: float, two_reg: float, bias: np.ndarray,
               bias_acc: np.ndarray, bias_grad: float, two_bias_reg: float, opt: int,
               lr: float) -> None:  # pragma: no cover - compiled
    """Move every embedding row of one entity's features: row ``c`` (weight ``w``) by the
    gradient ``scale * w * grad + two_reg * table[c]`` (and its bias by ``w * bias_grad +
    two_bias_reg * bias[c]`` when ``bias`` is not empty), by SGD or Adagrad."""
    k = table.shape[1]
    rate = np.float32(lr)
    has_bias = len(bias) > 0
    for e in range(ptr[row], ptr[row + 1]):
        c = col[e]
        w = np.float32(val[e] * scale)
        rr = np.float32(two_reg)
        if opt == SGD:
            for f in range(k):
                table[c, f] -= rate * (w * grad[f] + rr * table[c, f])
        else:
            for f in range(k):
                g = w * grad[f] + rr * table[c, f]
                s = acc[c, f] + g * g
                acc[c, f] = s
                table[c, f] -= rate * g / (np.sqrt(s) + np.float32(_EPS))
        if has_bias:
            gb = val[e] * bias_grad + two_bias_reg * bias[c]
            if opt == SGD:
                bias[c] -= lr * gb
            else:
                bias_acc[c] += gb * gb
                bias[c] -= lr * gb / (np.sqrt(bias_acc[c]) + _EPS)


@_jit(fastmath=True, parallel=True)
def hybrid_epoch(pos_ptr: np.ndarray, pos_items: np.ndarray, seen_ptr: np.ndarray, seen_items: np.ndarray,
                 user_order: np.ndarray, shard_bounds: np.ndarray, user_rows: tuple, item_rows: tuple,
                 tables: tuple, accs: tuple, loss_code: int, opt: int, lr: float, reg: float,
                 bias_reg: float, max_sampled: int, seed: int,
                 epoch: int) -> np.ndarray:  # pragma: no cover - compiled; tested against numpy
    """One epoch of per-triple steps; returns each shard's sum of losses.

    Shard ``s`` takes the users ``user_order[shard_bounds[s]:shard_bounds[s + 1]]`` and each
    user's positives ``pos_items[pos_ptr[u]:pos_ptr[u + 1]]`` from a random start, wrapping
    around; negatives are uniform outside ``seen_items[seen_ptr[u]:seen_ptr[u + 1]]``.
    ``user_rows``/``item_rows`` = ``(indptr, indices, values)`` of the normalised feature rows;
    ``tables`` = ``(P, Q, B)`` (user-feature and item-feature embeddings, item-feature
    intercepts), ``accs`` their Adagrad sums (empty for SGD). See the module notes.
    """
    u_ptr, u_col, u_val = user_rows
    i_ptr, i_col, i_val = item_rows
    p_tab, q_tab, b_tab = tables
    p_acc, q_acc, b_acc = accs
    no_bias = np.zeros(0, np.float32)
    n_items = len(i_ptr) - 1
    k = p_tab.shape[1]
    n_shards = len(shard_bounds) - 1
    losses = np.zeros(n_shards)
    two_reg = 2.0 * reg
    two_bias_reg = 2.0 * bias_reg
    empty = np.zeros(0)
    log_rank_top = np.log(max(float(n_items - 1), 1.0))
    for shard in prange(n_shards):
        state = _mix(seed, epoch, shard)
        pu = np.zeros(k, np.float32)
        qi = np.zeros(k, np.float32)
        qj = np.zeros(k, np.float32)
        diff = np.zeros(k, np.float32)
        total = 0.0
        for c in range(shard_bounds[shard], shard_bounds[shard + 1]):
            u = user_order[c]
            lo, n_pos, offset, state = user_sweep(state, pos_ptr, u)
            seen_lo, seen_hi = seen_ptr[u], seen_ptr[u + 1]
            for a in range(n_pos):
                i = pos_items[lo + (offset + a) % n_pos]
                represent(u_ptr, u_col, u_val, u, p_tab, no_bias, pu)
                bi = represent(i_ptr, i_col, i_val, i, q_tab, b_tab, qi)
                s_i = bi
                for f in range(k):
                    s_i += pu[f] * qi[f]
                weight = 1.0
                j = -1
                bj = 0.0
                if loss_code == BPR_LOSS:
                    j, state = _negative(state, seen_items, seen_lo, seen_hi, n_items, empty, empty)
                    bj = represent(i_ptr, i_col, i_val, j, q_tab, b_tab, qj)
                else:
                    for trial in range(1, max_sampled + 1):
                        cand, state = _negative(state, seen_items, seen_lo, seen_hi, n_items, empty, empty)
                        b_c = represent(i_ptr, i_col, i_val, cand, q_tab, b_tab, qj)
                        s_j = b_c
                        for f in range(k):
                            s_j += pu[f] * qj[f]
                        if s_j > s_i - 1.0:
                            j, bj = cand, b_c
                            weight = np.log(max(float((n_items - 1) // trial), 1.0))
                            if weight <= 0.0:  # a violation on the first draws of a tiny catalogue
                                weight = 1.0 / log_rank_top if log_rank_top > 0 else 1.0
                            break
                    if j < 0:
                        continue  # no violating negative: the positive is ranked well already
                sq = 0.0
                x = bi - bj
                for f in range(k):
                    d = qi[f] - qj[f]
                    diff[f] = d
                    x += pu[f] * d
                    sq += pu[f] * pu[f] + qi[f] * qi[f] + qj[f] * qj[f]
                if loss_code == BPR_LOSS:
                    loss, z = softplus_sigmoid(x)
                    total += loss
                else:
                    total += weight * max(1.0 - x, 0.0)
                    z = weight
                total += reg * sq
                # d loss / d p_u = -z (q_i - q_j); d / d q_i = -z p_u; d / d q_j = z p_u
                _step_rows(u_ptr, u_col, u_val, u, p_tab, p_acc, diff, -z, two_reg, no_bias, no_bias,
                           0.0, 0.0, opt, lr)
                _step_rows(i_ptr, i_col, i_val, i, q_tab, q_acc, pu, -z, two_reg, b_tab, b_acc, -z,
                           two_bias_reg, opt, lr)
                _step_rows(i_ptr, i_col, i_val, j, q_tab, q_acc, pu, z, two_reg, b_tab, b_acc, z,
                           two_bias_reg, opt, lr)
        losses[shard] = total
    return losses


class HogwildHybrid(ShardedEpochs):
    """Per-sample epochs of :func:`hybrid_epoch` over the cores, on tables held by the caller.

    Parameters
    ----------
    layout, users, threads, seed
        As :class:`cfrec.engines.hogwild.ShardedEpochs`; one thread reproduces a fit exactly.
    user_rows, item_rows
        ``(indptr, indices, values)`` of the normalised user and item feature rows (int64,
        int32, float32).
    tables
        ``(P, Q, B)``: float32 feature embeddings and item-feature intercepts, updated in place.
    loss, optimizer
        ``"bpr"``/``"warp"`` and ``"sgd"``/``"adagrad"``.
    """

    def __init__(self, layout: tuple[np.ndarray, ...], users: np.ndarray, user_rows: tuple[np.ndarray, ...],
                 item_rows: tuple[np.ndarray, ...], tables: tuple[np.ndarray, ...], loss: str, optimizer: str,
                 reg: float, bias_reg: float, max_sampled: int, threads: int, seed: int) -> None:
        super().__init__(layout, users, threads, seed)
        self.user_rows = _csr_parts(user_rows)
        self.item_rows = _csr_parts(item_rows)
        self.tables = tuple(tables)
        self.loss = LOSS_CODES[loss]
        self.opt = OPTIMIZER_CODES[optimizer]
        self.accs = tuple(np.zeros_like(t) if self.opt == ADAGRAD else np.zeros((0,) * t.ndim, np.float32)
                          for t in self.tables)
        self.reg, self.bias_reg = float(reg), float(bias_reg)
        self.max_sampled = max(1, int(max_sampled))

    def _kernel_epoch(self, user_order: np.ndarray, bounds: np.ndarray, epoch: int,
                      lr: float) -> np.ndarray:
        return hybrid_epoch(self.pos_ptr, self.pos_items, self.seen_ptr, self.seen_items, user_order, bounds,
                            self.user_rows, self.item_rows, self.tables, self.accs, self.loss, self.opt,
                            float(lr), self.reg, self.bias_reg, self.max_sampled, self.seed, int(epoch))


def _csr_parts(parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ptr, col, val = parts
    return (np.asarray(ptr, dtype=np.int64), np.asarray(col, dtype=np.int32), np.asarray(val, dtype=np.float32))
