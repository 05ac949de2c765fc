"""Negative samplers: never a seen item, and the intended distribution over the unseen ones."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.engines import negatives
from cfrec.engines.negatives import PopularityNegatives, UniformNegatives, pair_keys


def _seen_sets(users: np.ndarray, items: np.ndarray) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        out.setdefault(u, set()).add(i)
    return out


def _nearly_full_ratings(n_users: int = 6, n_items: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Users who rated from a few items up to all but one (and a popular head rated by all)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        n = [3, 10, 20, 27, 29, 29][u % 6]
        chosen = np.r_[0, 1, rng.choice(np.arange(2, n_items), n - 2, replace=False)]
        users += [u] * n
        items += chosen.tolist()
    return np.array(users), np.array(items)


@pytest.mark.parametrize("rounds", [16, 0])  # rejection, or the exact fallback alone
def test_popularity_negatives_are_unrated_and_follow_the_weights(rounds: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(negatives, "_REJECTION_ROUNDS", rounds)
    monkeypatch.setattr(negatives, "_FALLBACK_ENTRIES", 60)  # blocks of two users in the fallback
    users, items = _nearly_full_ratings()
    n_items = 30
    weights = (1.0 + np.arange(n_items)[::-1].astype(np.float64)) ** 1.5  # item 0 the heaviest
    sampler = PopularityNegatives(pair_keys(users, items, n_items), weights)
    rated = _seen_sets(users, items)
    draw_users = np.repeat(np.arange(6), 20_000)
    got = sampler.draw(draw_users, np.random.default_rng(1))
    assert got.dtype == np.int64 and got.min() >= 0 and got.max() < n_items
    for u in range(6):
        mine = got[draw_users == u]
        assert not set(mine.tolist()) & rated[u]  # never an item the user rated
        free = np.array(sorted(set(range(n_items)) - rated[u]))
        expected = weights[free] / weights[free].sum()
        freq = np.bincount(mine, minlength=n_items)[free] / len(mine)
        # 20,000 draws: each frequency within 5 standard errors of its probability
        assert np.all(np.abs(freq - expected) <= 5 * np.sqrt(expected * (1 - expected) / len(mine)) + 1e-12)


def test_uniform_negatives_are_unrated_and_uniform() -> None:
    users, items = _nearly_full_ratings()
    sampler = UniformNegatives(pair_keys(users, items, 30), 6, 30)
    rated = _seen_sets(users, items)
    draw_users = np.repeat(np.arange(6), 6_000)
    got = sampler.draw(draw_users, np.random.default_rng(2))
    for u in range(6):
        mine = got[draw_users == u]
        assert not set(mine.tolist()) & rated[u]
        free = sorted(set(range(30)) - rated[u])
        assert set(mine.tolist()) == set(free)
        freq = np.bincount(mine, minlength=30)[free] / len(mine)
        p = 1.0 / len(free)
        assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / len(mine)))


def test_negative_sampler_avoids_seen_pairs() -> None:
    rng = np.random.default_rng(0)
    n_items = 10
    seen = np.array([0 * n_items + i for i in range(9)] + [1 * n_items + 3], dtype=np.int64)
    users = np.array([0] * 50 + [1] * 50, dtype=np.int64)
    items = UniformNegatives(np.sort(seen), 2, n_items).draw(users, rng)
    assert np.all(items[:50] == 9)  # user 0 has only item 9 left
    assert np.all(items[50:] != 3) and np.all((items[50:] >= 0) & (items[50:] < n_items))
    full = np.arange(n_items, dtype=np.int64)  # user 0 rated everything: nothing to draw
    assert np.all(UniformNegatives(full, 1, n_items).draw(np.zeros(5, np.int64), rng) == -1)
    keys = pair_keys(np.array([1, 0, 1]), np.array([3, 2, 3]), n_items)
    assert keys.tolist() == [2, 13]  # sorted, unique user * n_items + item
