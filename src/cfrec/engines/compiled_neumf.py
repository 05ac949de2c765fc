"""Compiled (numba) embedding update of NeuMF's training step on the CPU.

A NeuMF minibatch of ``B`` pairs reads ``2B`` rows of one table that stacks every user row
above every item row (``[gmf | mlp | bias]``). After the dense part of the step (the MLP,
run by PyTorch) has produced the gradients at the network's inputs, :func:`neumf_table_adam`
does the rest in one pass over the ``2B`` rows: each row's gradient (the GMF product's
partner row, the MLP input gradient, the output gradient for the bias column and the L2
penalty), repeats of a row merged, then lazy Adam on the distinct rows and their moments
only (:func:`cfrec.engines.compiled._adam_rows`, the update of
:class:`~cfrec.engines.torch_loop.Adam` on a row-sparse gradient). In PyTorch the same work
is some twenty operations over ``(2B, d)`` blocks (build the gradient, find the distinct
rows, sum repeats, gather, update and scatter the moments), which cost more than the MLP.
"""

from __future__ import annotations

import numpy as np

from cfrec.engines.compiled import _adam_rows, _distinct, kernel


@kernel
def neumf_table_adam(table: np.ndarray, first: np.ndarray, second: np.ndarray, index: np.ndarray,
                     rows: np.ndarray, d_z: np.ndarray, k: int, d_mlp: np.ndarray, d_out: np.ndarray,
                     bias: bool, reg_scale: float, step_size: float, root_bc2: float, b1: float,
                     b2: float, eps: float, slot: np.ndarray, distinct: np.ndarray, count: np.ndarray,
                     grad: np.ndarray, dense: np.ndarray, dense_grad: np.ndarray, dense_first: np.ndarray,
                     dense_second: np.ndarray) -> int:  # pragma: no cover - compiled; tested against torch
    """Adam's step of one NeuMF minibatch: lazy on the table rows the batch read, dense on the
    weights of the MLP and the output unit. Returns how many distinct rows moved.

    Parameters
    ----------
    table, first, second
        (n_users + n_items, d) float32: the stacked rows and Adam's first and second moments.
    index
        (2B,) int64: the batch's user rows, then its item rows (item numbers offset by n_users).
    rows
        (2B, d) float32: ``table[index]`` as the forward pass read it (before the step).
    d_z, k
        (B, >= k): its first ``k`` columns are the gradient of the loss at the GMF product
        ``p_u * q_i`` (a user row's GMF gradient is this times its partner item row, and the
        other way round).
    d_mlp
        (B, 2h): gradient at the MLP input ``[m_u, m_i]``.
    d_out
        (B,): gradient at the output (the bias columns' gradient, with ``bias``).
    reg_scale
        The L2 gradient coefficient per occurrence: a row read ``c`` times gets ``c * reg_scale * row``.
    step_size, root_bc2, b1, b2, eps
        Adam's bias-corrected step ``lr / (1 - b1^t)``, ``sqrt(1 - b2^t)``, betas and epsilon.
    slot
        (n_users + n_items,) int64 scratch, -1 on entry and left so.
    distinct, count, grad
        Scratch of at least 2B entries: int64, float32 and (2B, d) float32.
    dense, dense_grad, dense_first, dense_second
        (1, n_dense) float32: every dense weight in one row, its gradient and Adam's moments
        (updated as :class:`~cfrec.engines.torch_loop.Adam` updates a dense parameter).
    """
    n = len(d_out)
    h = d_mlp.shape[1] // 2
    n_distinct = _distinct(index, np.arange(2 * n), slot, distinct, count)
    grad[:n_distinct] = 0.0
    for j in range(2 * n):
        c = slot[index[j]]
        b = j if j < n else j - n  # the pair this row belongs to
        partner = j + n if j < n else j - n  # its item row for a user row, and the other way round
        half = 0 if j < n else h
        for f in range(k):
            grad[c, f] += d_z[b, f] * rows[partner, f]
        for f in range(h):
            grad[c, k + f] += d_mlp[b, half + f]
        if bias:
            grad[c, k + h] += d_out[b]
    _adam_rows(table, first, second, distinct, n_distinct, grad, 1.0, count, reg_scale, step_size, root_bc2,
               b1, b2, eps, 0.0)
    for c in range(n_distinct):
        slot[distinct[c]] = -1
    distinct[0] = 0
    count[0] = 0.0
    _adam_rows(dense, dense_first, dense_second, distinct, 1, dense_grad, 1.0, count, 0.0, step_size, root_bc2,
               b1, b2, eps, 0.0)
    return n_distinct
