"""NeuMF's batched fold-in (``fold_in_predict``) against its one-user ``fold_in``, and the online
replay's ``"batch"`` method built on it: same objective, no peeking at later ratings."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.data import Interactions, make_splits, make_synthetic
from cfrec.errors import CfrecError
from cfrec.evaluation.online import online_predictions, supports_batch
from cfrec.models.neumf import NeuMF


@pytest.fixture(scope="module")
def fitted() -> tuple[NeuMF, Interactions, Interactions]:
    data = make_synthetic(60, 40, 1200, seed=3)
    split = make_splits(data, "temporal:0.3")[0]
    model = NeuMF(n_factors=4, mlp_layers="8,4", epochs=5, seed=0).fit(split.train)
    return model, split.train, split.test


def test_fold_in_predict_matches_fold_in(fitted) -> None:
    """Per user, the batched solve lands where one-user L-BFGS does, up to a small tolerance (the
    objective is not convex in the MLP vector; the two optimisers differ in their line search)."""
    model, train, _ = fitted
    users = np.unique(train.users)[:12]
    rows = np.flatnonzero(np.isin(train.users, users))
    seg = np.searchsorted(users, train.users[rows])
    items = model.item_map_.ids
    q_seg = np.repeat(np.arange(len(users)), len(items))
    q_items = np.tile(items, len(users))
    batch = model.fold_in_predict(seg, train.raw_items()[rows], train.ratings[rows], q_seg, q_items)
    one = np.concatenate([model.predict(model.fold_in(train.raw_items()[rows][seg == s],
                                                      train.ratings[rows][seg == s]), items)
                          for s in range(len(users))])
    assert np.abs(batch - one).mean() < 0.02 and np.abs(batch - one).max() < 0.15
    # the folded users fit their own ratings better than the global mean does
    own = model.fold_in_predict(seg, train.raw_items()[rows], train.ratings[rows], seg, train.raw_items()[rows])
    assert np.sqrt(np.mean((own - train.ratings[rows]) ** 2)) < np.std(train.ratings[rows])


def test_fold_in_predict_cold_and_unknown(fitted) -> None:
    model, train, _ = fitted
    items = model.item_map_.ids[:3]
    out = model.fold_in_predict(np.array([0, 1]), np.array([10**9, items[0]]), np.array([4.0, 5.0]),
                                np.array([0, 0, 0, 1]), np.r_[items, 10**9])
    unknown_user = model.predict(10**9, items)  # the fallback mu + b_i
    np.testing.assert_allclose(out[:3], unknown_user, atol=1e-6)
    assert model.global_mean_ - 2 < out[3] < model.global_mean_ + 2  # unknown item: mu + b_u
    with pytest.raises(ValueError, match="differ in length"):
        model.fold_in_predict(np.array([0]), np.array([items[0]]), np.array([4.0]), np.array([0, 1]), items[:1])


def test_online_batch_does_not_peek(fitted) -> None:
    """Rewriting every test rating changes no prediction of a rating revealed before it."""
    model, train, test = fitted
    assert supports_batch(model)
    op = online_predictions(model, test, train=train, method="batch")
    assert op.method == "batch"
    # the last revelation unit of every user: their ratings inform no prediction
    last = op.revealed_test == np.bincount(test.users, minlength=test.n_users)[test.users] - op.group_size
    ratings = test.ratings.copy()
    ratings[last] = np.where(ratings[last] > 3, 1.0, 5.0)
    other = Interactions(test.users, test.items, ratings, test.timestamps, test.user_map, test.item_map,
                         test.rating_scale)
    again = online_predictions(model, other, train=train, method="batch").predictions
    np.testing.assert_allclose(again, op.predictions, atol=1e-3)
    # and close to the literal replay through fold_in
    replay = online_predictions(model, test, train=train, method="replay")
    assert np.abs(replay.predictions - op.predictions).mean() < 0.02
    with pytest.raises(CfrecError, match="no trace"):
        online_predictions(model, test, train=train, method="batch", trace=[])
