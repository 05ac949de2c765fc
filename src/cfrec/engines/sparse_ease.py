"""EASE restricted to each item's nearest neighbours: a sparse approximation for large catalogues.

EASE's column ``j`` is a ridge regression of item ``j``'s column of ``X`` on every other item's
column (Steck 2019): ``B[-j, j] = (G[-j, -j] + lam I)^-1 G[-j, j]`` with ``G = X'X``, which the
dense solve gets for all columns at once from one ``n x n`` inverse (``n^3`` work, ``n^2``
memory). Here the regression of item ``j`` may use only its ``k`` neighbours ``N(j)``, the items
that co-occur with it most (by co-occurrence count or cosine), so that::

    B[N(j), j] = (G[N(j), N(j)] + lam I)^-1 G[N(j), j]        and 0 elsewhere in column j

costs ``k^3`` per item and ``n k`` memory for ``B``. With ``k >= n - 1`` it is the dense solve
exactly. The co-occurrence matrix ``G`` is kept sparse (items that never share a user have no
entry); the ``k x k`` systems are gathered from it by a compiled kernel and solved in batches.

* :func:`cooccurrence`: ``G = X'X`` as a float32 CSR with sorted indices;
* :func:`top_neighbours`: each item's ``k`` neighbours, as CSR lists sorted by item;
* :func:`neighbour_solve`: the weights ``B`` as an items x items float32 CSR (row: the predicting
  item, column: the predicted one), zero diagonal.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from cfrec.errors import CfrecError
from cfrec.threads import run_chunks

NeighbourRule = Literal["cooccurrence", "cosine"]
NEIGHBOUR_RULES: tuple[str, ...] = ("cooccurrence", "cosine")
#: Items per task of the thread pool.
_CHUNK_ITEMS = 1024


def cooccurrence(x: sp.csr_array) -> sp.csr_array:
    """``G = X'X`` (items x items) as a float32 CSR with sorted int32/int64 indices."""
    xc = sp.csr_array(x.astype(np.float32))
    g = sp.csr_array(xc.T.tocsr() @ xc)
    g.sum_duplicates()
    g.sort_indices()
    return g


def top_neighbours(g: sp.csr_array, k: int, rule: NeighbourRule = "cooccurrence",
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``k`` neighbours (itself excluded) as CSR lists ``(indptr, indices)``, each list
    sorted by item index.

    Neighbours rank by ``G[i, j]`` (``"cooccurrence"``) or ``G[i, j] / sqrt(G[i, i] G[j, j])``
    (``"cosine"``) among the items that co-occur with ``i``; an item with fewer co-occurring
    items keeps them all. With ``k >= n - 1`` every other item is a neighbour, co-occurring or not
    (the dense solve).
    """
    from cfrec.engines.compiled_ease import top_k_rows

    n = g.shape[0]
    if rule not in NEIGHBOUR_RULES:
        raise CfrecError(f"neighbour rule must be one of {NEIGHBOUR_RULES}, got {rule!r}")
    if k >= n - 1:
        idx = np.tile(np.arange(n, dtype=np.int32), n).reshape(n, n)
        keep = ~np.eye(n, dtype=bool)
        return np.arange(0, n * (n - 1) + 1, n - 1, dtype=np.int64), idx[keep].astype(np.int32)
    diag = g.diagonal().astype(np.float64)
    scale = 1.0 / np.sqrt(np.maximum(diag, 1e-30)) if rule == "cosine" else np.ones(n)
    indptr = np.asarray(g.indptr, dtype=np.int64)
    indices = np.asarray(g.indices, dtype=np.int32)
    return top_k_rows(indptr, indices, np.asarray(g.data, dtype=np.float64), scale, int(k))


def neighbour_solve(g: sp.csr_array, nbr_ptr: np.ndarray, nbr_idx: np.ndarray, lam: float,
                    threads: int = 1) -> sp.csr_array:
    """EASE weights over the given neighbour lists: column ``j`` of ``B`` solves item ``j``'s ridge
    regression on ``N(j)`` (see the module docstring). Returns an items x items float32 CSR.

    A compiled kernel gathers each item's ``k x k`` block of ``G + lam I`` and right-hand side
    from the sparse ``G`` and solves it by Cholesky factorisation; chunks of items run on
    ``threads`` threads (the kernel releases the GIL).
    """
    from cfrec.engines.compiled_ease import solve_items

    n = g.shape[0]
    lam = float(lam)
    if not lam > 0:
        raise CfrecError(f"neighbour EASE needs lam > 0, got {lam!r}")
    counts = np.diff(nbr_ptr)
    indptr = np.asarray(g.indptr, dtype=np.int64)
    indices = np.asarray(g.indices, dtype=np.int32)
    data = np.asarray(g.data, dtype=np.float64)
    nbr_ptr = np.asarray(nbr_ptr, dtype=np.int64)
    nbr_idx = np.asarray(nbr_idx, dtype=np.int32)
    values = np.zeros(len(nbr_idx), dtype=np.float64)
    width = max(int(counts.max(initial=0)), 1)
    step = max(1, min(_CHUNK_ITEMS, -(-n // max(int(threads), 1))))
    starts = list(range(0, n, step))

    def chunk(j0: int) -> None:
        solve_items(indptr, indices, data, nbr_ptr, nbr_idx, j0, min(j0 + step, n), width, lam, values)

    run_chunks(chunk, starts, int(threads))
    # column j holds N(j): the lists are a CSC of B
    b = sp.csc_array((values, nbr_idx.astype(np.int32), nbr_ptr.astype(np.int64)), shape=(n, n))
    out = sp.csr_array(b.tocsr())
    out.sort_indices()
    return sp.csr_array((out.data.astype(np.float32), out.indices.astype(np.int32),
                         out.indptr.astype(np.int64)), shape=(n, n))
