"""Online (prequential) evaluation: the fast path equals the literal replay, no test rating is
seen before it is predicted (nor before its same-second peers are, in the default group order),
fallbacks and starting states are the documented ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions, Split, make_splits, make_synthetic
from cfrec.errors import CfrecError
from cfrec.evaluation.online import (
    online_evaluate,
    online_predictions,
    replay_order,
    run_online,
    same_second_groups,
    supports_fast,
)
from cfrec.models.base import FoldedUser
from cfrec.models.baseline import Baseline
from cfrec.models.factor import RidgeFoldIn


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


@pytest.fixture(scope="module")
def bursty() -> tuple[Baseline, Split]:
    """Like ``case`` with timestamps cut to the hour: many users rate several items in one
    "second", in groups of different sizes, as MovieLens users do."""
    data = make_synthetic(80, 50, 1500, seed=5)
    data = Interactions(data.users, data.items, data.ratings, data.timestamps // 3600 * 3600, data.user_map,
                        data.item_map, data.rating_scale, name="bursty")
    split = make_splits(data, "temporal:0.3")[0]
    stats = same_second_groups(split.test)
    assert stats.n_multi_groups > 20 and stats.largest >= 4 and stats.sizes[1] > 20
    return with_factors(Baseline().fit(split.train), 4, seed=1), split


@pytest.mark.parametrize("reveal", ["group", "rating"])
@pytest.mark.parametrize("data", ["case", "bursty"])
def test_fast_equals_replay(data, reveal, request) -> None:
    model, split = request.getfixturevalue(data)
    fast = online_predictions(model, split.test, train=split.train, method="fast", reg=0.7, reveal=reveal)
    slow = online_predictions(model, split.test, train=split.train, method="replay", reg=0.7, reveal=reveal)
    assert fast.method == "fast" and slow.method == "replay" and fast.reveal == slow.reveal == reveal
    np.testing.assert_allclose(fast.predictions, slow.predictions, atol=2e-5)
    np.testing.assert_array_equal(fast.known_before, slow.known_before)
    np.testing.assert_array_equal(fast.revealed_test, slow.revealed_test)


def test_orders_differ_only_inside_groups(bursty) -> None:
    """A rating alone in its second, or first of its group in the tie order, sees the same history
    (the user's earlier seconds) in both orders and gets the same prediction; the others differ."""
    model, split = bursty
    group = online_predictions(model, split.test, train=split.train, reveal="group")
    rating = online_predictions(model, split.test, train=split.train, reveal="rating")
    np.testing.assert_array_equal(group.group_size, rating.group_size)
    assert (group.revealed_test <= rating.revealed_test).all()
    same_history = group.revealed_test == rating.revealed_test
    np.testing.assert_allclose(group.predictions[same_history], rating.predictions[same_history], atol=1e-6)
    assert not np.allclose(group.predictions[~same_history], rating.predictions[~same_history])
    # under the group order a rating's revealed count is the same for its whole group
    assert (rating.revealed_test - group.revealed_test < group.group_size).all()


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


def _check_trace(trace: list, op, test: Interactions, reveal: str = "group") -> None:
    """Every row predicted once, then revealed once; before predicting a row, exactly the earlier
    rows of the same user (in replay order; with ``reveal="group"``, the rows of earlier seconds)
    have been revealed, and nothing later: in the group order, not the row's same-second peers."""
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
        if reveal == "group":
            earlier = same & (test.timestamps < test.timestamps[row])
        else:
            earlier = same & (rank < rank[row])
        assert earlier.sum() == op.revealed_test[row]
        assert (revealed_at[earlier] < predicted_at[row]).all()
        later = same & ~earlier & (np.arange(n) != row)
        assert (revealed_at[later] > predicted_at[row]).all()
        if reveal == "group":  # the row's same-second peers included
            peers = same & (test.timestamps == test.timestamps[row])
            assert (revealed_at[peers] > predicted_at[row]).all()


@pytest.mark.parametrize("reveal", ["group", "rating"])
@pytest.mark.parametrize("method", ["fast", "replay"])
@pytest.mark.parametrize("data", ["case", "bursty"])
def test_no_rating_revealed_before_it_is_predicted(data, method, reveal, request) -> None:
    model, split = request.getfixturevalue(data)
    trace: list = []
    op = online_predictions(model, split.test, train=split.train, method=method, reveal=reveal, trace=trace)
    _check_trace(trace, op, split.test, reveal)


@pytest.mark.parametrize("reveal", ["group", "rating"])
@pytest.mark.parametrize("method", ["fast", "replay"])
def test_predictions_do_not_depend_on_future_ratings(case, method, reveal) -> None:
    """Changing the value of a user's later test ratings never changes earlier predictions."""
    model, split = case
    test = split.test
    base = online_predictions(model, test, train=split.train, method=method, reveal=reveal).predictions
    order = replay_order(test)
    counts = np.bincount(test.users[order])
    user = int(np.argmax(counts))
    rows = order[test.users[order] == user]
    cut = len(rows) // 2
    ratings = test.ratings.copy()
    ratings[rows[cut:]] = np.where(ratings[rows[cut:]] > 3, 1.0, 5.0)
    perturbed = Interactions(test.users, test.items, ratings, test.timestamps, test.user_map,
                             test.item_map, test.rating_scale, name=test.name)
    after = online_predictions(model, perturbed, train=split.train, method=method, reveal=reveal).predictions
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


@pytest.mark.parametrize("reveal", ["group", "rating"])
def test_ties_are_deterministic(case, reveal) -> None:
    model, split = case
    test = split.test
    flat = Interactions(test.users, test.items, test.ratings, np.zeros(len(test), dtype=np.int64),
                        test.user_map, test.item_map, test.rating_scale)
    perm = np.random.default_rng(0).permutation(len(test))
    a = online_predictions(model, flat, train=split.train, reveal=reveal).predictions
    b = online_predictions(model, flat.subset(perm), train=split.train, reveal=reveal).predictions
    np.testing.assert_array_equal(a[perm], b)
    if reveal == "group":  # one second: every test rating is predicted from the training state alone
        assert (online_predictions(model, flat, train=split.train).revealed_test == 0).all()


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
@pytest.mark.parametrize("name, bound", [("mf", 0.95), ("als", 0.955), ("svdpp", 0.95)])
def test_ml100k_temporal_online_factor_models(ml100k_dir, data_home, name, bound) -> None:
    """Online RMSE on the lab's split, each user's same-second ratings revealed together: BiasedMF
    and SVD++ reach the lab's target 0.95, ALS misses it by a hair (0.9503 measured). Revealed
    rating by rating, all three score lower: the peek at same-second ratings was worth 0.006-0.009."""
    from cfrec.data import load_dataset
    from cfrec.evaluation.protocols import resolve_model

    data = load_dataset("ml-100k", data_home=data_home)
    split = make_splits(data, "temporal:0.2")[0]
    model = resolve_model(name)[0]().fit(split.train)
    res = online_evaluate(model, split.test, train=split.train)
    assert res.reveal == "group" and res.rmse < bound, res.to_markdown()
    if name != "svdpp":  # SVD++ replays through fold_in: one order is enough time
        by_rating = online_evaluate(model, split.test, train=split.train, reveal="rating")
        assert by_rating.rmse < 0.95 and by_rating.rmse < res.rmse - 0.003


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


@pytest.mark.parametrize("reveal", ["group", "rating"])
@pytest.mark.parametrize("reg", [None, 0.2])
def test_declared_ridge_penalty_gets_the_fast_path(bursty, reg, reveal) -> None:
    _, split = bursty
    m = with_factors(WeightedRidge().fit(split.train), 3, seed=4)
    assert supports_fast(m)
    trace: list = []
    fast = online_predictions(m, split.test, train=split.train, reg=reg, reveal=reveal, trace=trace)
    slow = online_predictions(m, split.test, train=split.train, reg=reg, reveal=reveal, method="replay")
    assert fast.method == "fast" and fast.reg == reg
    np.testing.assert_allclose(fast.predictions, slow.predictions, atol=2e-5)
    _check_trace(trace, fast, split.test, reveal)


# ---------------------------------------------------------------------- same-second groups
BURST_USER, BURST_VALUE = 9999, 4.75  # a value no other rating has (the others are whole stars)


@pytest.fixture(scope="module")
def burst() -> tuple[Baseline, Split, np.ndarray, np.ndarray]:
    """A new user who rates two items, then six items in one second, all ``BURST_VALUE``; another
    user rates in that same second too. Returns the model, the split, the burst's test rows in tie
    order and the user's two earlier test rows."""
    data = make_synthetic(80, 50, 1500, seed=5)
    df = data.to_frame()[["user_id", "item_id", "rating", "timestamp"]]
    end = int(df["timestamp"].max())
    extra = pd.DataFrame({
        "user_id": [BURST_USER] * 8 + [1, 1],
        "item_id": [3, 9, 14, 21, 5, 30, 41, 17, 44, 45],
        "rating": [2.0, 3.0] + [BURST_VALUE] * 6 + [1.0, 5.0],
        "timestamp": [end + 10, end + 20] + [end + 60] * 6 + [end + 60] * 2,
    })
    full = Interactions.from_frame(pd.concat([df, extra], ignore_index=True), rating_scale=(1, 5))
    split = make_splits(full, "temporal:0.3")[0]
    model = with_factors(Baseline().fit(split.train), 4, seed=1)
    test = split.test
    assert (test.ratings == BURST_VALUE).sum() == 6 and (split.train.ratings != BURST_VALUE).all()
    mine = np.flatnonzero(test.raw_users() == BURST_USER)
    order = replay_order(test)
    mine = order[np.isin(order, mine)]
    assert len(mine) == 8 and BURST_USER not in set(split.train.raw_users())
    return model, split, mine[2:], mine[:2]


@pytest.mark.parametrize("method", ["fast", "replay"])
def test_group_order_does_not_peek(burst, method) -> None:
    """Under the group order no rating of the burst is predicted from the others: each equals the
    prediction from the user's history with the whole burst withheld."""
    model, split, group, earlier = burst
    test = split.test
    op = online_predictions(model, test, train=split.train, method=method)
    folded = model.fold_in(test.raw_items()[earlier], test.ratings[earlier])
    withheld = model.predict(folded, test.raw_items()[group])
    np.testing.assert_allclose(op.predictions[group], withheld, atol=2e-5)
    assert (op.revealed_test[group] == 2).all() and (op.group_size[group] == 6).all()
    # and the burst's values do not matter to any of its predictions
    ratings = test.ratings.copy()
    ratings[group] = 1.0
    other = Interactions(test.users, test.items, ratings, test.timestamps, test.user_map, test.item_map,
                         test.rating_scale)
    again = online_predictions(model, other, train=split.train, method=method).predictions
    np.testing.assert_array_equal(again[group], op.predictions[group])


@pytest.mark.parametrize("method", ["fast", "replay"])
def test_rating_order_peeks(burst, method) -> None:
    """Rating by rating, the burst's later ratings are predicted after its earlier ones were
    revealed: they move towards the burst's value, away from the group-order predictions."""
    model, split, group, _ = burst
    by_group = online_predictions(model, split.test, train=split.train, method=method).predictions[group]
    by_rating = online_predictions(model, split.test, train=split.train, method=method,
                                   reveal="rating").predictions[group]
    assert by_rating[0] == pytest.approx(by_group[0], abs=1e-6)  # the first saw nothing of the burst
    gap_group, gap_rating = np.abs(BURST_VALUE - by_group), np.abs(BURST_VALUE - by_rating)
    assert (gap_rating[1:] < gap_group[1:] - 0.05).all()
    assert gap_rating[-1] < gap_rating[1]  # and the more of the burst it has seen, the closer


def test_same_second_report(bursty) -> None:
    model, split = bursty
    test = split.test
    stats = same_second_groups(test)
    keys = pd.DataFrame({"u": test.users, "t": test.timestamps}).value_counts()
    assert stats.n_groups == len(keys) and stats.largest == keys.max()
    assert stats.n_in_multi == keys[keys > 1].sum() and stats.n_multi_groups == (keys > 1).sum()
    assert stats.n_after_peer == len(test) - len(keys)
    assert stats.sizes == {int(k): int(v) for k, v in keys.value_counts().items()}
    res = online_evaluate(model, test, train=split.train)
    assert res.reveal == "group" and res.same_second == stats
    d = res.to_dict()
    assert d["reveal"] == "group" and d["same_second_groups"]["n_in_multi_groups"] == stats.n_in_multi
    assert d["same_second_groups"]["largest_group"] == stats.largest
    assert f"{stats.n_in_multi:,} of {len(test):,} test ratings" in res.to_markdown()
    g = {x.group: x for x in res.groups}
    assert g["alone in its second"].n == stats.sizes[1] and g["in a same-second group"].n == stats.n_in_multi
    by_rating = online_evaluate(model, test, train=split.train, reveal="rating")
    assert by_rating.to_dict()["reveal"] == "rating" and by_rating.rmse != res.rmse
    # a rating alone in its second has the same history in both orders
    assert by_rating.group("alone in its second").online_rmse == pytest.approx(
        res.group("alone in its second").online_rmse, abs=1e-9)
    with pytest.raises(CfrecError, match="reveal order"):
        online_predictions(model, test, train=split.train, reveal="second")  # type: ignore[arg-type]
