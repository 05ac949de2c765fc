"""The Gibbs engine: exact conditionals of the sweeps, the implicit step's block CG and spectral
preconditioner, the thinning of kept sweeps, and the torch residuals against the numpy ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfrec.engines.backend import TorchArrays
from cfrec.engines.gibbs import (
    GibbsChain,
    Priors,
    Residuals,
    block_cg,
    gibbs_residuals,
    kept_sweeps,
    spectral_basis,
)
from cfrec.engines.matrix import normalized_sets


def assert_cov_close(draws: np.ndarray, cov: np.ndarray, effective: float | None = None) -> None:
    """The sample covariance of ``draws`` (n, d) matches ``cov`` within 4 standard errors
    (Gaussian: ``se_ij^2 = (s_ii s_jj + s_ij^2) / n``, n the effective number of draws)."""
    n = len(draws) if effective is None else effective
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(draws.T) - cov), 4 * se)


def tiny_chain(implicit: bool, seed: int = 0) -> tuple[GibbsChain, np.ndarray, np.ndarray, np.ndarray]:
    """A 3-user x 6-item chain (every pair rated once) with k = 2, for checking conditionals."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(3), 6).astype(np.int32)
    items = np.tile(np.arange(6), 3).astype(np.int32)
    ratings = rng.normal(0, 1, len(users)).astype(np.float32)
    mat = normalized_sets(users[:10], items[:10], 3, 6) if implicit else None  # users 0-1 only
    be = gibbs_residuals(torch.device("cpu"), users, items, ratings, 3, 6, np.random.SeedSequence(seed))
    priors = Priors(1.0, 1.0, 1.0, 1.0)
    chain = GibbsChain(be, len(ratings), 2, priors, 0.5, mat, None, 1e-6, 200, np.random.default_rng(seed))
    return chain, users, items, ratings


def test_user_factor_sweeps_sample_the_exact_conditional() -> None:
    """Coordinate-wise draws of all users at once, with the residual bookkeeping, have the joint
    Gaussian conditional ``N(P^-1 (L m + a Q'r), P^-1)``, ``P = L + a Q'Q``, as stationary law."""
    chain, users, items, ratings = tiny_chain(False)
    chain.alpha = 2.0
    chain.mu_x, chain.lam_x = np.array([0.3, -0.2]), np.array([1.5, 0.7])
    q = chain.qt.T.astype(np.float64)  # fixed item side (biases stay 0)
    draws = []
    for it in range(6000):
        chain.factor_step(True)
        if it >= 100:
            draws.append(chain.xt.T.copy())
    x = np.asarray(draws, dtype=np.float64)  # (n, users, k)
    lam = np.diag(chain.lam_x)
    for u in range(3):
        r = ratings[users == u].astype(np.float64)
        qu = q[items[users == u]]
        prec = lam + chain.alpha * qu.T @ qu
        cov = np.linalg.inv(prec)
        mean = cov @ (lam @ chain.mu_x + chain.alpha * qu.T @ r)
        np.testing.assert_allclose(x[:, u].mean(0), mean, atol=4 * np.sqrt(np.diag(cov).max() * 4 / len(x)))
        assert_cov_close(x[:, u], cov, effective=len(x) / 4)  # successive Gibbs draws correlate
    # the per-rating residuals still equal r - x_u . q_i
    recomputed = ratings - np.einsum("ij,ij->i", chain.xt.T[users], chain.qt.T[items])
    np.testing.assert_allclose(chain.be.resid, recomputed, atol=1e-5)


def test_implicit_step_samples_the_exact_conditional() -> None:
    """``[w, Y] | b, x`` by perturbation + CG: column ``f`` (the bias, then each factor) is the
    Gaussian ``N(A^-1 N'(v_f - mu_f), (lam_f A)^-1)``, ``A = N'N + beta I``."""
    chain, _, _, _ = tiny_chain(True)
    side = chain.user_side
    assert side is not None
    chain.bu = np.array([0.5, -0.4, 0.2], dtype=np.float32)
    chain.mu_bu, chain.lam_bu = 0.05, 3.0
    chain.mu_x, chain.lam_x = np.array([0.1, -0.3]), np.array([2.0, 0.5])
    n = normalized_sets(np.repeat([0, 1], [6, 4]), np.r_[np.arange(6), np.arange(4)], 3, 6).toarray()
    beta = 0.8
    draws = []
    for _ in range(3000):
        side.beta = beta
        chain.implicit_step(True)
        draws.append(np.array(side.params, dtype=np.float64))
    y = np.asarray(draws)  # (draws, items, 1 + k)
    a = n.T @ n + beta * np.eye(6)
    values = np.vstack([chain.bu[None, :], chain.xt]).astype(np.float64)  # (1 + k, users)
    lam, mu = np.r_[chain.lam_bu, chain.lam_x], np.r_[chain.mu_bu, chain.mu_x]
    for f in range(3):
        cov = np.linalg.inv(lam[f] * a)
        mean = np.linalg.solve(a, n.T @ (values[f] - mu[f]))
        np.testing.assert_allclose(y[:, :, f].mean(0), mean, atol=4 * np.sqrt(np.diag(cov).max() / len(y)))
        assert_cov_close(y[:, :, f], cov)
    # the users' implicit terms follow the draw
    np.testing.assert_allclose(side.bias_sum, n @ y[-1, :, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(side.factor_sum, (n @ y[-1, :, 1:]).T, rtol=1e-4, atol=1e-5)


def test_block_cg_solves_spd_systems_to_tolerance() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(40, 30))
    a = m.T @ m + 0.5 * np.eye(30)
    b = rng.normal(size=(30, 4))
    jacobi = 1 / np.diag(a)[:, None]
    x, its = block_cg(lambda v: a @ v, b, np.zeros_like(b), lambda r: jacobi * r, 1e-8, 500)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-6, atol=1e-8)
    assert 0 < its < 500
    _, capped = block_cg(lambda v: a @ v, b, np.zeros_like(b), lambda r: jacobi * r, 1e-12, 3)
    assert capped == 3
    exact = np.linalg.inv(a)  # the exact inverse as preconditioner: one step
    _, one = block_cg(lambda v: a @ v, b, np.zeros_like(b), lambda r: exact @ r, 1e-8, 500)
    assert one == 1


def test_spectral_basis_dense_and_lanczos_agree() -> None:
    """The top eigenpairs of N'N behind the implicit step's preconditioner, both ways."""
    rng = np.random.default_rng(0)
    n_u, n_i = 400, 300
    u, i = np.nonzero(rng.random((n_u, n_i)) < 0.05)
    mat = normalized_sets(u.astype(np.int32), i.astype(np.int32), n_u, n_i)
    vals, vecs = spectral_basis(mat, rank=8)  # Lanczos (300 > 8 * 8 items)
    dense = np.linalg.eigvalsh((mat.T @ mat).toarray())[::-1][:8]
    np.testing.assert_allclose(vals, dense, rtol=1e-3)
    g = (mat.T @ mat).toarray()
    np.testing.assert_allclose(g @ vecs[:, 0], vals[0] * vecs[:, 0], atol=1e-2 * vals[0])
    small_vals, small_vecs = spectral_basis(mat[:, :40].tocsr(), rank=8)  # dense path
    np.testing.assert_allclose(small_vals, np.linalg.eigvalsh((mat[:, :40].T @ mat[:, :40]).toarray())[::-1][:8],
                               rtol=1e-6, atol=1e-9)
    assert small_vecs.shape == (40, 8) and vecs.dtype == np.float32


def test_kept_sweeps_are_thinned_evenly() -> None:
    assert kept_sweeps(200, 50, 50).tolist() == list(range(53, 201, 3))
    assert kept_sweeps(10, 4, 100).tolist() == [5, 6, 7, 8, 9, 10]
    assert kept_sweeps(100, 0, 1).tolist() == [100]


def test_torch_backend_matches_numpy_backend() -> None:
    """Every primitive of the torch backend (used on CUDA) computes what the numpy one does."""
    rng = np.random.default_rng(0)
    n_u, n_i, n = 30, 20, 200
    cells = rng.choice(n_u * n_i, n, replace=False)
    users = np.sort(cells // n_i).astype(np.int32)
    items = (cells % n_i)[np.argsort(cells // n_i, kind="stable")].astype(np.int32)
    resid = rng.normal(size=n).astype(np.float32)
    mat = normalized_sets(users, items, n_u, n_i)
    seed = np.random.SeedSequence(0)
    nb = gibbs_residuals(torch.device("cpu"), users, items, resid, n_u, n_i, seed)
    tb = Residuals(TorchArrays(torch.device("cpu"), seed), users, items, resid, n_u, n_i)
    nop, top = nb.xp.sparse(mat), tb.xp.sparse(mat)
    vi, vu = rng.normal(size=n_i).astype(np.float32), rng.normal(size=n_u).astype(np.float32)
    mi, mu = rng.normal(size=(3, n_i)).astype(np.float32), rng.normal(size=(3, n_u)).astype(np.float32)
    pairs = (
        (nb.resid_by_user(vi), tb.resid_by_user(tb.xp.asarray(vi))),
        (nb.resid_by_item(vu), tb.resid_by_item(tb.xp.asarray(vu))),
        (nb.count_by_user(mi), tb.count_by_user(tb.xp.asarray(mi))),
        (nb.count_by_item(mu), tb.count_by_item(tb.xp.asarray(mu))),
        (nb.at_users(vu), tb.at_users(tb.xp.asarray(vu))),
        (nb.at_items(vi), tb.at_items(tb.xp.asarray(vi))),
        (nop.apply(mi.T.copy()), top.apply(tb.xp.asarray(mi.T))),
        (nop.adjoint(mu.T.copy()), top.adjoint(tb.xp.asarray(mu.T))),
        (nb.pair_dot(mu, mi, nb.xp.index(users), nb.xp.index(items)),
         tb.pair_dot(tb.xp.asarray(mu), tb.xp.asarray(mi), tb.xp.index(users), tb.xp.index(items))),
    )
    for a, b in pairs:
        np.testing.assert_allclose(a, tb.xp.to_numpy(b), rtol=1e-5, atol=1e-5)
    for a, b in zip(nb.xp.row_moments(mi), tb.xp.row_moments(tb.xp.asarray(mi)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(nb.xp.col_sqsum(mi.T), tb.xp.col_sqsum(tb.xp.asarray(mi.T)), rtol=1e-6)
    assert nb.xp.sqsum64(nb.resid) == pytest.approx(tb.xp.sqsum64(tb.resid), rel=1e-6)
