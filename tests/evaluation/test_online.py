"""Online (prequential) evaluation: the fast path equals the literal replay, no test rating is
seen before it is predicted, fallbacks and starting states are the documented ones."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.data import Interactions, Split, make_splits, make_synthetic
from cfrec.errors import CfrecError
from cfrec.evaluation.online import (
    online_evaluate,
    online_predictions,
    replay_order,
    run_online,
    supports_fast,
)
from cfrec.models.base import FoldedUser, RidgeFoldIn
from cfrec.models.baseline import Baseline


def with_factors(model: Baseline, n_factors: int, seed: int) -> Baseline:
    """Give a fitted Baseline random factors: a linear factor model with a known item side."""
    rng = np.random.default_rng(seed)
    model.user_factors_ = rng.normal(0, 0.4, (len(model.user_map_), n_factors)).astype(np.float32)
    model.item_factors_ = rng.normal(0, 0.4, (len(model.item_map_), n_factors)).astype(np.float32)
    return model


@pytest.fixture(scope="module")
def case() -> tuple[Baseline, Split]:
    """Temporal split of small synthetic data: new users, known users and a few new items."""
    data = make_synthetic(80, 50, 1500, seed=5)
    split = make_splits(data, "temporal:0.3")[0]
    model = with_factors(Baseline().fit(split.train), 4, seed=1)
    cold = split.cold_start()
    assert cold.unknown_user > 0 and cold.unknown_user < len(split.test)
    return model, split


def test_fast_equals_replay(case) -> None:
    model, split = case
    fast = online_predictions(model, split.test, train=split.train, method="fast", reg=0.7)
    slow = online_predictions(model, split.test, train=split.train, method="replay", reg=0.7)
    assert fast.method == "fast" and slow.method == "replay"
    np.testing.assert_allclose(fast.predictions, slow.predictions, atol=2e-5)
    np.testing.assert_array_equal(fast.known_before, slow.known_before)


def test_fast_equals_replay_with_unknown_items(case) -> None:
    model, split = case
    # Drop two items from the model's side by training without them: their test ratings are new items.
    train = split.train
    drop = np.isin(train.items, np.unique(split.test.items)[:2])
    m2 = with_factors(Baseline().fit(train.subset(~drop)), 3, seed=2)
    fast = online_predictions(m2, split.test, train=train.subset(~drop), method="fast")
    slow = online_predictions(m2, split.test, train=train.subset(~drop), method="replay")
    np.testing.assert_allclose(fast.predictions, slow.predictions, atol=2e-5)
    assert (m2.item_map_.to_index(split.test.raw_items(), missing="-1") < 0).any()


def _check_trace(trace: list, op, test: Interactions) -> None:
    """Every row predicted once, then revealed once; before predicting a row, exactly the earlier
    rows of the same user (in replay order) have been revealed, and nothing later."""
    n = len(test)
    predicted_at = np.full(n, -1)
    revealed_at = np.full(n, -1)
    revealed_count = np.zeros(test.n_users, dtype=np.int64)
    revealed_before_prediction = np.full(n, -1)
    for step, (kind, rows) in enumerate(trace):
        if kind == "predict":
            assert (predicted_at[rows] == -1).all()
            predicted_at[rows] = step
            revealed_before_prediction[rows] = revealed_count[test.users[rows]]
        else:
            assert kind == "reveal"
            assert (revealed_at[rows] == -1).all()
            assert (predicted_at[rows] >= 0).all() and (predicted_at[rows] < step).all()
            revealed_at[rows] = step
            np.add.at(revealed_count, test.users[rows], 1)
    assert (predicted_at >= 0).all() and (revealed_at > predicted_at).all()
    # the revealed test ratings of the user at prediction time are exactly the earlier ones
    np.testing.assert_array_equal(revealed_before_prediction, op.revealed_test)
    order = replay_order(test)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    for row in range(n):  # small test set: a direct check per row
        same = test.users == test.users[row]
        earlier = same & (rank < rank[row])
        assert earlier.sum() == op.revealed_test[row]
        assert (revealed_at[earlier] < predicted_at[row]).all()
        later = same & (rank > rank[row])
        assert (revealed_at[later] > predicted_at[row]).all()


@pytest.mark.parametrize("method", ["fast", "replay"])
def test_no_rating_revealed_before_it_is_predicted(case, method) -> None:
    model, split = case
    trace: list = []
    op = online_predictions(model, split.test, train=split.train, method=method, trace=trace)
    _check_trace(trace, op, split.test)


@pytest.mark.parametrize("method", ["fast", "replay"])
def test_predictions_do_not_depend_on_future_ratings(case, method) -> None:
    """Changing the value of a user's later test ratings never changes earlier predictions."""
    model, split = case
    test = split.test
    base = online_predictions(model, test, train=split.train, method=method).predictions
    order = replay_order(test)
    counts = np.bincount(test.users[order])
    user = int(np.argmax(counts))
    rows = order[test.users[order] == user]
    cut = len(rows) // 2
    ratings = test.ratings.copy()
    ratings[rows[cut:]] = np.where(ratings[rows[cut:]] > 3, 1.0, 5.0)
    perturbed = Interactions(test.users, test.items, ratings, test.timestamps, test.user_map,
                             test.item_map, test.rating_scale, name=test.name)
    after = online_predictions(model, perturbed, train=split.train, method=method).predictions
    np.testing.assert_array_equal(after[rows[: cut + 1]], base[rows[: cut + 1]])  # up to the first changed one
    assert not np.allclose(after[rows[cut + 1:]], base[rows[cut + 1:]])
    others = test.users != user
    np.testing.assert_array_equal(after[others], base[others])


def test_starting_states(case) -> None:
    model, split = case
    test, train = split.test, split.train
    op = online_predictions(model, test, train=train, reg=0.5)
    known = model.user_map_.to_index(test.raw_users(), missing="-1") >= 0
    first = op.revealed_test == 0
    # a new user's first rating: the fallback mu + b_i (what predict gives an unknown user)
    new_first = np.flatnonzero(~known & first)
    assert len(new_first)
    expected = model.predict(test.raw_users()[new_first], test.raw_items()[new_first])
    np.testing.assert_allclose(op.predictions[new_first], expected, atol=1e-6)
    assert (op.known_before[new_first] == 0).all()
    # a known user's first test rating: fold-in of all of the user's training ratings
    row = int(np.flatnonzero(known & first)[0])
    raw_u = test.raw_users()[row]
    mine = train.raw_users() == raw_u
    folded = model.fold_in(train.raw_items()[mine], train.ratings[mine], reg=0.5)
    assert isinstance(folded, FoldedUser)
    assert op.predictions[row] == pytest.approx(model.predict(folded, [test.raw_items()[row]])[0], abs=1e-5)
    assert op.known_before[row] == mine.sum()


def test_ties_are_deterministic(case) -> None:
    model, split = case
    test = split.test
    flat = Interactions(test.users, test.items, test.ratings, np.zeros(len(test), dtype=np.int64),
                        test.user_map, test.item_map, test.rating_scale)
    perm = np.random.default_rng(0).permutation(len(test))
    a = online_predictions(model, flat, train=split.train).predictions
    b = online_predictions(model, flat.subset(perm), train=split.train).predictions
    np.testing.assert_array_equal(a[perm], b)


def test_online_evaluate_groups(case) -> None:
    model, split = case
    res = online_evaluate(model, split.test, train=split.train)
    g = {x.group: x for x in res.groups}
    assert g["known users"].n + g["new users"].n == res.n_test == len(split.test)
    assert g["known items"].n + g["new items"].n == res.n_test
    hist = [x for x in res.groups if x.group.endswith("ratings known")]
    assert sum(x.n for x in hist) == res.n_test
    assert g["new users"].n == split.cold_start().unknown_user
    # the 0-known group is predicted identically online and offline (both are the fallback)
    assert g["0 ratings known"].online_rmse == pytest.approx(g["0 ratings known"].offline_rmse)
    assert res.offline_rmse == pytest.approx(
        np.sqrt(np.mean((model.predict(split.test.raw_users(), split.test.raw_items()) - split.test.ratings) ** 2)),
        abs=1e-6)
    assert "RMSE online" in res.to_markdown()
    assert res.to_dict()["groups"][0]["group"] == "all"


def test_overridden_fold_in_uses_replay(case) -> None:
    model, split = case

    class Shrunk(Baseline):
        """Its own fold-in, not a ridge: it says so, and online evaluation replays it."""

        def fold_in(self, items, ratings=None, *, reg=None):
            f = super().fold_in(items, ratings, reg=reg)
            return FoldedUser(f.bias * 0.5, f.factors * 0.5, f.seen, f.n_ratings)

        def fold_in_ridge(self, reg=None):
            return None

    m = Shrunk().fit(split.train)
    assert not supports_fast(m) and supports_fast(model)
    op = online_predictions(m, split.test, train=split.train)
    assert op.method == "replay"
    fast_like = online_predictions(model, split.test, train=split.train, method="replay")
    assert not np.allclose(op.predictions, fast_like.predictions)  # the override really ran
    with pytest.raises(CfrecError, match="not a ridge"):
        online_predictions(m, split.test, train=split.train, method="fast")


def test_bad_arguments(case) -> None:
    model, split = case
    with pytest.raises(CfrecError, match="positive"):
        online_predictions(model, split.test, train=split.train, reg=0.0)
    with pytest.raises(CfrecError, match="unknown online method"):
        online_predictions(model, split.test, train=split.train, method="magic")  # type: ignore[arg-type]
    with pytest.raises(CfrecError, match="empty"):
        online_predictions(model, split.test.subset(np.zeros(len(split.test), dtype=bool)), train=split.train)


def test_run_online_fits_on_train(case) -> None:
    _, split = case
    res = run_online("baseline", split)
    assert res.fit_seconds is not None and res.method == "fast"
    assert res.rmse < res.offline_rmse  # folding in the revealed ratings helps on this data


@pytest.mark.slow
def test_ml100k_temporal_online_beats_offline(ml100k_dir, data_home) -> None:
    """The lab's global temporal 80/20 split: ~85% of test ratings from users absent from train."""
    from cfrec.data import load_dataset

    data = load_dataset("ml-100k", data_home=data_home)
    split = make_splits(data, "temporal:0.2")[0]
    assert split.cold_start().user_share > 0.8
    res = run_online("baseline", split)
    assert res.offline_rmse == pytest.approx(1.03, abs=0.02)  # the bias baseline offline, ~1.02-1.03
    assert res.rmse < res.offline_rmse - 0.04
    assert res.group("new users").online_rmse < res.group("new users").offline_rmse


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mf", "als", "svdpp"])
def test_ml100k_temporal_online_factor_models(ml100k_dir, data_home, name) -> None:
    """Online evaluation with cfrec's factor models reaches RMSE < 0.95 on the lab's split."""
    from cfrec.data import load_dataset

    data = load_dataset("ml-100k", data_home=data_home)
    split = make_splits(data, "temporal:0.2")[0]
    res = run_online(name, split)
    assert res.rmse < 0.95, res.to_markdown()


class WeightedRidge(Baseline):
    """A model with its own fold-in (ALS-style weighted-lambda ridge) that declares its penalty."""

    def fold_in_ridge(self, reg=None):
        return RidgeFoldIn(bias=2.0, const=1.5, per_rating=0.05 if reg is None else reg)

    def _diagonal(self, n, reg):
        lam = 0.05 if reg is None else reg
        k = self.item_factors_.shape[1]
        return np.r_[2.0, np.full(k, lam * n + 1.5)]

    def fold_in(self, items, ratings=None, *, reg=None):
        idx = self.item_map_.to_index(np.atleast_1d(np.asarray(items)), missing="-1").astype(np.int64)
        r = np.atleast_1d(np.asarray(ratings, dtype=np.float64))[idx >= 0]
        idx = idx[idx >= 0]
        k = self.item_factors_.shape[1]
        if not len(idx):
            return FoldedUser(0.0, np.zeros(k, dtype=np.float32), np.zeros(0, dtype=np.int32), 0)
        y = np.hstack([np.ones((len(idx), 1)), self.item_factors_[idx].astype(np.float64)])
        a = y.T @ y + np.diag(self._diagonal(len(idx), reg))
        sol = np.linalg.solve(a, y.T @ (r - self.global_mean_ - self.item_bias_[idx]))
        return FoldedUser(float(sol[0]), sol[1:].astype(np.float32), np.unique(idx).astype(np.int32), len(idx))


@pytest.mark.parametrize("reg", [None, 0.2])
def test_declared_ridge_penalty_gets_the_fast_path(case, reg) -> None:
    _, split = case
    m = with_factors(WeightedRidge().fit(split.train), 3, seed=4)
    assert supports_fast(m)
    trace: list = []
    fast = online_predictions(m, split.test, train=split.train, reg=reg, trace=trace)
    slow = online_predictions(m, split.test, train=split.train, reg=reg, method="replay")
    assert fast.method == "fast" and fast.reg == reg
    np.testing.assert_allclose(fast.predictions, slow.predictions, atol=2e-5)
    _check_trace(trace, fast, split.test)
