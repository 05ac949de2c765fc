"""The two-block factorization-machine Gibbs sampler: exact bookkeeping against a brute-force FM,
and planted feature effects recovered on synthetic data (known answers)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cfrec.engines.gibbs import Priors
from cfrec.engines.gibbs_fm import Block, FMChain, entity_terms

PRIORS = Priors(1.0, 1.0, 1.0, 1.0)


def _chain(seed: int = 0) -> tuple[FMChain, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_u, n_i, n = 50, 40, 800
    u, i = rng.integers(0, n_u, n), rng.integers(0, n_i, n)
    y = rng.standard_normal(n)
    feats = sp.random(n_u, 5, density=0.4, random_state=1, format="csr")
    ub = Block(sp.hstack([sp.identity(n_u), feats], format="csr"), np.r_[np.zeros(n_u, int), np.ones(5, int)],
               2, u, i, 4, 0.3, rng)
    ib = Block(sp.identity(n_i, format="csr"), np.zeros(n_i, int), 1, i, u, 4, 0.3, rng)
    return FMChain(ub, ib, y, PRIORS, rng), u, i, y


def test_residuals_and_entity_terms_match_a_brute_force_fm() -> None:
    chain, u, i, y = _chain()
    for _ in range(15):
        chain.sweep()
    # the residuals kept incrementally equal those recomputed from the parameters
    np.testing.assert_allclose(chain.e, y - chain.predict_all(), atol=1e-10)
    # and the block decomposition equals the textbook FM on the full design rows
    ub, ib = chain.users, chain.items
    x = sp.hstack([sp.csr_array(ub.mat)[u], sp.csr_array(ib.mat)[i]]).toarray()
    w = np.r_[ub.w, ib.w]
    v = np.vstack([ub.v.T, ib.v.T])
    xv = x @ v
    fm = chain.w0 + x @ w + 0.5 * ((xv ** 2).sum(1) - ((x ** 2) @ (v ** 2)).sum(1))
    np.testing.assert_allclose(fm, chain.predict_all(), atol=1e-10)
    bias, vec = entity_terms(ub.mat, ub.w, ub.v.T)
    np.testing.assert_allclose(bias, ub.bias(), atol=1e-10)
    np.testing.assert_allclose(vec, ub.a.T, atol=1e-10)


def test_recovers_planted_feature_effects() -> None:
    """Ratings ``+1`` for items of genre A, ``-1`` for genre B, plus ``+0.8`` when a user of kind
    X meets an item of genre A (a feature interaction), with little noise. A new item known only by
    its genre (no id column, no ratings) is then predicted, per kind of user, at the planted
    effect, and the noise level comes back."""
    rng = np.random.default_rng(3)
    n_u, n_i, n = 200, 120, 6000
    genre_a = rng.random(n_i) < 0.5
    kind_x = rng.random(n_u) < 0.5
    u, i = rng.integers(0, n_u, n), rng.integers(0, n_i, n)
    y = np.where(genre_a[i], 1.0, -1.0) + 0.8 * (kind_x[u] & genre_a[i]) + 0.1 * rng.standard_normal(n)
    item_feats = sp.csr_array(np.column_stack([genre_a, ~genre_a]).astype(float))
    user_feats = sp.csr_array(np.column_stack([kind_x, ~kind_x]).astype(float))
    # feature columns first: drawn before the ids in each sweep, they take up the shared effect
    # at once (ids first would hold part of it for a few hundred sweeps before handing it over)
    ub = Block(sp.hstack([user_feats, sp.identity(n_u)], format="csr"), np.r_[[1, 1], np.zeros(n_u, int)], 2,
               u, i, 2, 0.1, rng)
    ib = Block(sp.hstack([item_feats, sp.identity(n_i)], format="csr"), np.r_[[1, 1], np.zeros(n_i, int)], 2,
               i, u, 2, 0.1, rng)
    mean = y.mean()
    chain = FMChain(ub, ib, y - mean, PRIORS, rng)
    new_items = sp.csr_array(np.column_stack([np.eye(2), np.zeros((2, n_i))]))  # genre A, genre B
    users_x, users_y = np.flatnonzero(kind_x), np.flatnonzero(~kind_x)
    preds, noise = [], []
    for sweep in range(100):
        chain.sweep()
        if sweep >= 30:
            bias, vec = entity_terms(new_items, ib.w, ib.v.T)
            ubias = ub.bias()
            cell = [[np.mean(chain.w0 + ubias[who] + bias[j] + ub.a[:, who].T @ vec[j]) for j in (0, 1)]
                    for who in (users_x, users_y)]
            preds.append(cell)
            noise.append(1 / np.sqrt(chain.alpha))
    got = np.mean(preds, axis=0) + mean  # rows: kind X, not X; columns: genre A, genre B
    np.testing.assert_allclose(got, [[1.8, -1.0], [1.0, -1.0]], atol=0.12)
    assert abs(np.mean(noise) - 0.1) < 0.02


def test_same_seed_same_chain() -> None:
    a, *_ = _chain(5)
    b, *_ = _chain(5)
    for _ in range(3):
        a.sweep()
        b.sweep()
    np.testing.assert_array_equal(a.e, b.e)
    np.testing.assert_array_equal(a.users.v, b.users.v)


def test_a_context_block_keeps_exact_residuals_and_matches_a_brute_force_fm() -> None:
    """A third block whose entity is per rating (a user's day, say): the residuals kept
    incrementally stay exact and equal the textbook FM over the three blocks' columns."""
    rng = np.random.default_rng(5)
    n_u, n_i, n_c, n = 30, 25, 60, 700
    u, i, c = rng.integers(0, n_u, n), rng.integers(0, n_i, n), rng.integers(0, n_c, n)
    y = rng.standard_normal(n)
    ub = Block(sp.identity(n_u, format="csr"), np.zeros(n_u, int), 1, u, i, 3, 0.3, rng)
    ib = Block(sp.identity(n_i, format="csr"), np.zeros(n_i, int), 1, i, u, 3, 0.3, rng)
    cb = Block(sp.identity(n_c, format="csr"), np.zeros(n_c, int), 1, c, i, 3, 0.3, rng)
    chain = FMChain(ub, ib, y, PRIORS, rng, context=cb)
    for _ in range(10):
        chain.sweep()
    np.testing.assert_allclose(chain.e, y - chain.predict_all(), atol=1e-10)
    x = sp.hstack([sp.csr_array(ub.mat)[u], sp.csr_array(ib.mat)[i], sp.csr_array(cb.mat)[c]]).toarray()
    w = np.r_[ub.w, ib.w, cb.w]
    v = np.vstack([ub.v.T, ib.v.T, cb.v.T])
    xv = x @ v
    fm = chain.w0 + x @ w + 0.5 * ((xv ** 2).sum(1) - ((x ** 2) @ (v ** 2)).sum(1))
    np.testing.assert_allclose(fm, chain.predict_all(), atol=1e-10)
    assert np.abs(cb.w).max() > 0 and np.abs(cb.v).max() > 0  # the context's columns were drawn


def test_a_planted_context_effect_is_recovered() -> None:
    """Ratings shifted by +-1 per context (a planted day effect) beside user and item effects:
    the context block's biases recover it."""
    rng = np.random.default_rng(7)
    n_u, n_i, n_c, n = 80, 60, 40, 5000
    u, i, c = rng.integers(0, n_u, n), rng.integers(0, n_i, n), rng.integers(0, n_c, n)
    shift = np.where(np.arange(n_c) % 2 == 0, 1.0, -1.0)
    y = 0.5 * rng.standard_normal(n_u)[u] + 0.5 * rng.standard_normal(n_i)[i] + shift[c] + 0.1 * rng.standard_normal(n)
    ub = Block(sp.identity(n_u, format="csr"), np.zeros(n_u, int), 1, u, i, 2, 0.1, rng)
    ib = Block(sp.identity(n_i, format="csr"), np.zeros(n_i, int), 1, i, u, 2, 0.1, rng)
    cb = Block(sp.identity(n_c, format="csr"), np.zeros(n_c, int), 1, c, i, 2, 0.1, rng)
    chain = FMChain(ub, ib, y - y.mean(), PRIORS, rng, context=cb)
    got = []
    for sweep in range(60):
        chain.sweep()
        if sweep >= 20:
            got.append(cb.bias())
    est = np.mean(got, axis=0)
    np.testing.assert_allclose(est - est.mean(), shift - shift.mean(), atol=0.1)
