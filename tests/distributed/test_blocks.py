"""Blocks balanced by interaction counts and a rank's two parts of the interactions."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.data import make_synthetic_log
from cfrec.distributed import Blocks, balanced_bounds, rank_data
from cfrec.errors import CfrecError


def test_bounds_balance_counts_and_cover_every_index() -> None:
    counts = np.array([50, 1, 1, 1, 1, 1, 1, 1, 1, 1, 30, 30, 30])
    bounds = balanced_bounds(counts, 3)
    assert bounds[0] == 0 and bounds[-1] == len(counts)
    assert np.all(np.diff(bounds) >= 1)
    sums = [counts[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert sum(sums) == counts.sum()
    assert max(sums) - min(sums) <= counts.max()  # no block more than one row away from balance


def test_bounds_keep_blocks_non_empty_and_refuse_too_many_parts() -> None:
    bounds = balanced_bounds(np.array([1000, 1, 1]), 3)
    assert list(bounds) == [0, 1, 2, 3]
    with pytest.raises(CfrecError, match="2 rows cannot be cut into 3"):
        balanced_bounds(np.array([1, 1]), 3)


def test_rank_parts_hold_their_blocks_interactions_once() -> None:
    data = make_synthetic_log(n_users=120, n_items=80, n_pairs=2000, seed=1).compact()
    parts = [rank_data(data, r, 3) for r in range(3)]
    blocks: Blocks = parts[0].blocks
    assert sum(len(p.by_user) for p in parts) == len(data) == sum(len(p.by_item) for p in parts)
    for r, part in enumerate(parts):
        u0, u1 = blocks.user_range(r)
        i0, i1 = blocks.item_range(r)
        assert np.all((part.by_user.users >= u0) & (part.by_user.users < u1))
        assert np.all((part.by_item.items >= i0) & (part.by_item.items < i1))
        # the source order is kept (a single-process fit reads each row's ratings in it)
        keep = (data.users >= u0) & (data.users < u1)
        assert np.array_equal(part.by_user.items, data.items[keep])
        assert np.array_equal(part.by_user.weights, data.weights[keep])
    shares = [len(p.by_user) / len(data) for p in parts]
    assert max(shares) < 0.5  # balanced by interactions, not by users
