"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny minibatches gain nothing from intra-op threads, and on a shared CPU torch's thread
    barrier makes them up to 100x slower; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ml100k_u1(ml100k_dir):
    """ML-100K's official fold u1 as ``(train, test)``, read by the library's own loader."""
    from cfrec.data import predefined_split

    split = predefined_split("u1", data_home=ml100k_dir.parent)
    return split.train, split.test


def large_sparse_ratings(n_users: int = 200_000, n_items: int = 50_000, n: int = 1_000_000):
    """Random ratings on a huge, very sparse grid (10^10 cells): fitting must never densify it."""
    import numpy as np

    from cfrec.data import IdMap, Interactions

    rng = np.random.default_rng(0)
    cells = np.unique(rng.integers(0, n_users * n_items, n, dtype=np.int64))
    users, items = (cells // n_items).astype(np.int32), (cells % n_items).astype(np.int32)
    ratings = rng.integers(1, 6, len(cells)).astype(np.float32)
    return Interactions(users, items, ratings, np.zeros(len(cells), np.int64),
                        IdMap(np.arange(n_users)), IdMap(np.arange(n_items)), (1.0, 5.0), name="big")
