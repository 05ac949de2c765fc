"""The neighbour-restricted EASE solve: neighbour lists, per-item ridge systems, the dense limit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cfrec.engines.sparse_ease import cooccurrence, neighbour_solve, top_neighbours
from cfrec.errors import CfrecError


@pytest.fixture(scope="module")
def x() -> sp.csr_array:
    rng = np.random.default_rng(3)
    dense = (rng.random((60, 25)) < 0.25) * rng.integers(1, 4, (60, 25))
    dense[:, 24] = 0  # an item nobody has
    return sp.csr_array(dense.astype(np.float32))


def test_cooccurrence_is_the_gram_matrix(x: sp.csr_array) -> None:
    g = cooccurrence(x)
    xd = x.toarray().astype(np.float64)
    np.testing.assert_allclose(g.toarray(), xd.T @ xd, rtol=1e-6)
    assert g.has_sorted_indices and g.dtype == np.float32


@pytest.mark.parametrize("rule", ["cooccurrence", "cosine"])
def test_top_neighbours_are_the_k_best_co_occurring_items(x: sp.csr_array, rule: str) -> None:
    g = cooccurrence(x)
    gd = g.toarray().astype(np.float64)
    d = np.sqrt(np.maximum(np.diag(gd), 1e-30))
    score = gd / d[:, None] / d[None, :] if rule == "cosine" else gd
    ptr, idx = top_neighbours(g, 5, rule)  # type: ignore[arg-type]
    for i in range(g.shape[0]):
        got = idx[ptr[i]:ptr[i + 1]]
        assert np.all(np.diff(got) > 0) and i not in got
        others = np.flatnonzero(gd[i] != 0)
        others = others[others != i]
        assert len(got) == min(5, len(others))
        if len(got):  # no excluded co-occurring item scores above a chosen one
            rest = np.setdiff1d(others, got)
            assert not len(rest) or score[i, rest].max() <= score[i, got].min()
    assert ptr[24 + 1] == ptr[24]  # the empty item has no neighbours
    with pytest.raises(CfrecError, match="neighbour rule"):
        top_neighbours(g, 5, "jaccard")  # type: ignore[arg-type]


def test_each_column_solves_its_ridge_regression_on_its_neighbours(x: sp.csr_array) -> None:
    g = cooccurrence(x)
    gd = g.toarray().astype(np.float64)
    ptr, idx = top_neighbours(g, 6)
    for threads in (1, 3):
        b = neighbour_solve(g, ptr, idx, 2.0, threads).toarray()
        for j in range(g.shape[0]):
            nb = idx[ptr[j]:ptr[j + 1]]
            col = np.zeros(g.shape[0])
            if len(nb):
                col[nb] = np.linalg.solve(gd[np.ix_(nb, nb)] + 2.0 * np.eye(len(nb)), gd[nb, j])
            np.testing.assert_allclose(b[:, j], col, rtol=1e-5, atol=1e-7)


def test_with_every_neighbour_it_is_the_dense_ease_solve(x: sp.csr_array) -> None:
    g = cooccurrence(x)
    n = g.shape[0]
    ptr, idx = top_neighbours(g, n - 1)
    assert np.all(np.diff(ptr) == n - 1)  # co-occurring or not
    b = neighbour_solve(g, ptr, idx, 3.0).toarray()
    xd = x.toarray().astype(np.float64)
    p = np.linalg.inv(xd.T @ xd + 3.0 * np.eye(n))
    dense = np.eye(n) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(b, dense, atol=1e-6 * np.abs(dense).max())
    with pytest.raises(CfrecError, match="lam > 0"):
        neighbour_solve(g, ptr, idx, 0.0)
