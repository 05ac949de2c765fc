"""Splits: partitions, leakage-freedom, exact known answers on ML-100K, spec parsing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfrec.data import Interactions, Split
from cfrec.data.split import (
    SPEC_FORMS,
    carve_validation,
    kfold_splits,
    make_splits,
    predefined_split,
    random_split,
    temporal_split,
    user_temporal_split,
)
from cfrec.data.split.core import _lex_order
from cfrec.errors import CfrecError, DataError, DatasetUnavailable

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------- helpers
def make_data(n: int, n_users: int, n_items: int, ts_levels: int, seed: int) -> Interactions:
    """Random ratings with many timestamp ties and possibly duplicate (user, item) pairs."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "user_id": rng.integers(0, n_users, n) * 7 + 3,  # raw ids differ from indices
        "item_id": rng.integers(0, n_items, n) * 5 + 1,
        "rating": rng.integers(1, 6, n).astype(np.float32),
        "timestamp": 1_000_000 + rng.integers(0, ts_levels, n) * 60,
    })
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0), name="random")


@st.composite
def datasets(draw: st.DrawFn, min_size: int = 0) -> Interactions:
    n = draw(st.integers(min_size, 300))
    return make_data(n, draw(st.integers(1, 25)), draw(st.integers(1, 25)),
                     draw(st.integers(1, 40)), draw(st.integers(0, 2**32 - 1)))


def rows(data: Interactions) -> np.ndarray:
    """Rows as a sorted (n, 4) float64 array, to compare multisets of ratings."""
    arr = np.column_stack([data.users, data.items, data.timestamps, data.ratings]).astype(np.float64)
    return arr[np.lexsort(arr.T[::-1])] if len(arr) else arr.reshape(0, 4)


def assert_partition(data: Interactions, split: Split) -> None:
    assert split.train.user_map is data.user_map and split.train.item_map is data.item_map
    assert split.test.user_map is data.user_map and split.test.item_map is data.item_map
    assert len(split.train) + len(split.test) == len(data)
    np.testing.assert_array_equal(rows(split.train.concat(split.test)), rows(data))


def half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def reference_temporal_mask(data: Interactions, frac: float) -> np.ndarray:
    """The slow, obvious answer: lexsort by (timestamp, user, item, row), last share is test."""
    n = len(data)
    order = np.lexsort((np.arange(n), data.items, data.users, data.timestamps))
    mask = np.zeros(n, dtype=bool)
    mask[order[n - half_up(n * frac):]] = True
    return mask


def reference_user_temporal(data: Interactions, frac: float | None, count: int | None,
                            min_train: int) -> np.ndarray:
    """Per-user loop with pandas: the obvious (slow) implementation of the documented rule."""
    df = pd.DataFrame({"u": data.users, "t": data.timestamps, "i": data.items,
                       "row": np.arange(len(data))})
    mask = np.zeros(len(data), dtype=bool)
    for _, g in df.groupby("u"):
        g = g.sort_values(["t", "i", "row"])
        c = len(g)
        if count is not None:
            k = count if c >= count + min_train else 0
        else:
            k = max(0, min(half_up(c * frac), c - min_train))
        if k:
            mask[g["row"].to_numpy()[c - k:]] = True
    return mask


# ---------------------------------------------------------------------------------- ordering
@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400), st.integers(0, 2**32 - 1), st.lists(st.integers(0, 62), min_size=1,
                                                                   max_size=4))
def test_lex_order_matches_numpy_lexsort(n: int, seed: int, bits: list[int]) -> None:
    rng = np.random.default_rng(seed)
    # few distinct values per key, so ties are common and the recursion is exercised
    keys = [rng.integers(0, 1 + n // 4, n) << max(b - 8, 0) for b in bits]
    expected = np.lexsort(keys[::-1])
    np.testing.assert_array_equal(_lex_order(keys), expected)


@pytest.mark.parametrize("shifts", [(59, 40, 30, 0), (59, 59, 59), (59, 59), (0, 59, 59, 59)])
def test_lex_order_recurses_past_64_bits(shifts: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    keys = [rng.integers(0, 16, 5000) << s for s in shifts]
    np.testing.assert_array_equal(_lex_order(keys), np.lexsort(keys[::-1]))


# ---------------------------------------------------------------------------------- temporal
@PROPS
@given(datasets(), st.floats(0.01, 0.99))
def test_temporal_split_is_the_reference_partition(data: Interactions, frac: float) -> None:
    split = temporal_split(data, frac)
    assert_partition(data, split)
    assert len(split.test) == half_up(len(data) * frac)
    if len(split.train) and len(split.test):
        assert split.train.timestamps.max() <= split.test.timestamps.min()
    expected = reference_temporal_mask(data, frac)
    np.testing.assert_array_equal(rows(split.test), rows(data.subset(expected)))
    assert split.name == f"temporal-{frac:g}"


def test_temporal_split_breaks_ties_by_user_then_item() -> None:
    # all ratings share one timestamp: the test part is the largest (user, item) pairs
    df = pd.DataFrame({"user_id": [2, 1, 2, 1, 3], "item_id": [1, 2, 2, 1, 1],
                       "rating": [1, 2, 3, 4, 5], "timestamp": [7] * 5})
    data = Interactions.from_frame(df)
    split = temporal_split(data, 0.4)
    got = sorted(zip(split.test.raw_users().tolist(), split.test.raw_items().tolist(), strict=True))
    assert got == [(2, 2), (3, 1)]
    assert temporal_split(data, 0.4, seed=123).test.ratings.tolist() == split.test.ratings.tolist()


def test_temporal_split_of_empty_data() -> None:
    data = make_data(0, 3, 3, 3, 0)
    split = temporal_split(data)
    assert len(split.train) == len(split.test) == 0
    assert split.cold_start().share == 0.0


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2, float("nan"), "x"])
def test_bad_fraction_is_a_data_error(bad: object) -> None:
    data = make_data(50, 5, 5, 5, 0)
    for fn in (temporal_split, random_split, user_temporal_split):
        with pytest.raises(DataError, match="test_fraction"):
            fn(data, bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- user temporal
@PROPS
@given(datasets(), st.floats(0.05, 0.95), st.integers(0, 3))
def test_user_temporal_fraction_matches_reference(data: Interactions, frac: float,
                                                  min_train: int) -> None:
    split = user_temporal_split(data, frac, min_train=min_train)
    assert_partition(data, split)
    expected = reference_user_temporal(data, frac, None, min_train)
    np.testing.assert_array_equal(rows(split.test), rows(data.subset(expected)))
    assert split.cold_start().unknown_user == 0 or min_train == 0


@PROPS
@given(datasets(), st.integers(1, 6), st.integers(0, 3))
def test_user_temporal_last_n_matches_reference(data: Interactions, n: int, min_train: int) -> None:
    split = user_temporal_split(data, test_count=n, min_train=min_train)
    assert_partition(data, split)
    expected = reference_user_temporal(data, None, n, min_train)
    np.testing.assert_array_equal(rows(split.test), rows(data.subset(expected)))
    test_counts = split.test.user_counts()
    assert set(np.unique(test_counts[test_counts > 0]).tolist()) <= {n}
    # every test user keeps min_train earlier-or-equal ratings in train
    train_counts = split.train.user_counts()
    assert np.all(train_counts[test_counts > 0] >= min_train)
    if len(split.test):
        last_train = np.full(data.n_users, np.iinfo(np.int64).min)
        np.maximum.at(last_train, split.train.users, split.train.timestamps)
        assert np.all(split.test.timestamps >= last_train[split.test.users])


def test_user_temporal_keeps_small_users_in_train() -> None:
    df = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2, 3], "item_id": [1, 2, 3, 4, 1, 2, 1],
                       "rating": [5, 4, 3, 2, 1, 2, 3], "timestamp": [1, 2, 3, 4, 1, 2, 9]})
    data = Interactions.from_frame(df)
    s = user_temporal_split(data, test_count=2)
    assert sorted(zip(s.test.raw_users().tolist(), s.test.raw_items().tolist(), strict=True)) == [
        (1, 3), (1, 4)]
    s = user_temporal_split(data, 0.5)  # user 1: 2 of 4, user 2: 1 of 2, user 3 keeps its one
    assert sorted(zip(s.test.raw_users().tolist(), s.test.raw_items().tolist(), strict=True)) == [
        (1, 3), (1, 4), (2, 2)]
    assert s.name == "user-temporal-0.5"
    assert user_temporal_split(data, test_count=3).name == "user-temporal-n3"


@pytest.mark.parametrize("kwargs", [{"test_count": 0}, {"test_count": 1.5},
                                    {"min_train": -1}, {"test_fraction": None}])
def test_user_temporal_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(DataError):
        user_temporal_split(make_data(30, 3, 5, 5, 0), **kwargs)


# ---------------------------------------------------------------------------------- random, k-fold
@PROPS
@given(datasets(), st.floats(0.05, 0.95), st.integers(0, 2**32 - 1))
def test_random_split_partition_and_seed(data: Interactions, frac: float, seed: int) -> None:
    split = random_split(data, frac, seed=seed)
    assert_partition(data, split)
    assert len(split.test) == half_up(len(data) * frac)
    again = random_split(data, frac, seed=seed)
    np.testing.assert_array_equal(again.test.users, split.test.users)
    np.testing.assert_array_equal(again.test.timestamps, split.test.timestamps)


def test_random_split_seeds_differ() -> None:
    data = make_data(1000, 50, 80, 500, 3)
    a, b = random_split(data, seed=1), random_split(data, seed=2)
    assert not np.array_equal(rows(a.test), rows(b.test))
    # a random holdout ignores time: test ratings span the whole period
    assert a.test.timestamps.min() < np.median(data.timestamps) < a.test.timestamps.max()


@PROPS
@given(datasets(min_size=10), st.integers(2, 10), st.integers(0, 2**32 - 1))
def test_kfold_folds_are_disjoint_and_complete(data: Interactions, k: int, seed: int) -> None:
    splits = kfold_splits(data, k, seed=seed)
    assert [s.name for s in splits] == [f"kfold{k}-{f}" for f in range(1, k + 1)]
    for s in splits:
        assert_partition(data, s)
    sizes = [len(s.test) for s in splits]
    assert sum(sizes) == len(data) and max(sizes) - min(sizes) <= 1
    union = splits[0].test
    for s in splits[1:]:
        union = union.concat(s.test)
    np.testing.assert_array_equal(rows(union), rows(data))  # each rating in exactly one fold
    again = kfold_splits(data, k, seed=seed)
    for s, t in zip(splits, again, strict=True):
        np.testing.assert_array_equal(rows(s.test), rows(t.test))


def test_kfold_row_positions_are_disjoint() -> None:
    data = make_data(500, 20, 20, 10, 0)
    data = Interactions(data.users, data.items, data.ratings,
                        np.arange(len(data), dtype=np.int64), data.user_map, data.item_map)
    seen = np.concatenate([s.test.timestamps for s in kfold_splits(data, 5, seed=4)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(data)))
    other = np.concatenate([s.test.timestamps for s in kfold_splits(data, 5, seed=5)])
    assert not np.array_equal(seen, other)


@pytest.mark.parametrize("k", [1, 0, 2.5, True])
def test_kfold_bad_k(k: object) -> None:
    with pytest.raises(DataError, match="'k'"):
        kfold_splits(make_data(30, 3, 3, 3, 0), k)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="cannot cut 3 ratings into 5"):
        kfold_splits(make_data(3, 3, 3, 3, 0), 5)


# ---------------------------------------------------------------------------------- speed
def test_splits_are_vectorised() -> None:
    """1M ratings split in well under the time a per-rating Python loop would take."""
    data = make_data(1_000_000, 20_000, 5_000, 100_000, 11)
    for fn in (temporal_split, user_temporal_split, random_split):
        start = time.perf_counter()
        split = fn(data)
        assert time.perf_counter() - start < 10.0, fn.__name__
        assert len(split.test) == 200_000 or fn is user_temporal_split


# ---------------------------------------------------------------------------------- spec strings
@pytest.mark.parametrize(("spec", "names"), [
    ("temporal", ["temporal-0.2"]),
    ("temporal:0.25", ["temporal-0.25"]),
    ("Temporal:0.1", ["temporal-0.1"]),
    ("user-temporal", ["user-temporal-0.2"]),
    ("user_temporal:0.3", ["user-temporal-0.3"]),
    ("user-temporal:n=2", ["user-temporal-n2"]),
    ("random", ["random-0.2"]),
    ("random:0.5", ["random-0.5"]),
    ("kfold", [f"kfold5-{i}" for i in range(1, 6)]),
    ("kfold:3", ["kfold3-1", "kfold3-2", "kfold3-3"]),
    ("cv5", [f"kfold5-{i}" for i in range(1, 6)]),
    ("cv10", [f"kfold10-{i}" for i in range(1, 11)]),
])
def test_make_splits_specs(spec: str, names: list[str]) -> None:
    data = make_data(400, 20, 30, 100, 2)
    splits = make_splits(data, spec, seed=3)
    assert [s.name for s in splits] == names
    for s in splits:
        assert_partition(data, s)


def test_make_splits_passes_the_seed() -> None:
    data = make_data(400, 20, 30, 100, 2)
    a = make_splits(data, "random", seed=1)[0]
    b = make_splits(data, "random", seed=1)[0]
    c = make_splits(data, "random", seed=2)[0]
    np.testing.assert_array_equal(rows(a.test), rows(b.test))
    assert not np.array_equal(rows(a.test), rows(c.test))
    np.testing.assert_array_equal(rows(make_splits(data, "temporal:0.3")[0].test),
                                  rows(temporal_split(data, 0.3).test))


@pytest.mark.parametrize("spec", ["", "foo", "temporal:2", "temporal:0", "temporal:x",
                                  "random:-0.1", "user-temporal:n=0", "user-temporal:n=x",
                                  "kfold:1", "kfold:x", "cv1", "cvx", "u6", "u0", "fold"])
def test_make_splits_bad_spec_lists_valid_forms(spec: str) -> None:
    with pytest.raises(CfrecError) as info:
        make_splits(make_data(50, 5, 5, 5, 0), spec)
    msg = str(info.value)
    assert repr(spec) in msg
    assert all(form in msg for form in SPEC_FORMS)


def test_make_splits_needs_data_except_for_predefined() -> None:
    with pytest.raises(CfrecError, match="needs data"):
        make_splits(None, "temporal")


# ---------------------------------------------------------------------------------- ML-100K
@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path) -> Interactions:
    from cfrec.data import load_dataset

    return load_dataset("ml-100k", data_home=ml100k_dir.parent, download=False)


def test_ml100k_global_temporal_known_answer(ml100k: Interactions) -> None:
    """The lab's split: leakage-free, and ~85% of test ratings come from users unseen in train."""
    split = temporal_split(ml100k, 0.2)
    assert (len(split.train), len(split.test)) == (80_000, 20_000)
    assert split.train.timestamps.max() <= split.test.timestamps.min()
    cs = split.cold_start()
    assert cs.unknown_user == 17_048  # 85.24%
    assert cs.unknown_item == 202
    assert cs.unknown_either == 17_137
    assert 0.84 < cs.user_share < 0.86
    # a per-user temporal split has no cold users by construction
    assert user_temporal_split(ml100k, 0.2).cold_start().unknown_user == 0


def test_ml100k_folds_partition_the_data(ml100k: Interactions, data_home: Path) -> None:
    folds = make_splits(ml100k, "folds", data_home=data_home)
    assert [s.name for s in folds] == ["u1", "u2", "u3", "u4", "u5"]
    for s in folds:
        assert (len(s.train), len(s.test)) == (80_000, 20_000)
        assert s.train.user_map is ml100k.user_map and s.test.item_map is ml100k.item_map
        assert s.train.item_info is ml100k.item_info
        assert s.cold_start().unknown_user == 0
        np.testing.assert_array_equal(rows(s.train.concat(s.test)), rows(ml100k))
    union = folds[0].test
    for s in folds[1:]:
        union = union.concat(s.test)
    # disjoint and complete: the five test parts are exactly the 100,000 ratings
    np.testing.assert_array_equal(rows(union), rows(ml100k))


@pytest.mark.parametrize("name", ["ua", "ub"])
def test_ml100k_ua_ub_hold_out_ten_per_user(name: str, ml100k: Interactions,
                                            data_home: Path) -> None:
    split = predefined_split(name, data_home=data_home, data=ml100k)
    counts = split.test.user_counts()
    assert np.all(counts == 10) and len(split.test) == 9_430
    assert len(split.train) == 90_570


def test_predefined_without_data_builds_the_full_vocabulary(ml100k_dir: Path) -> None:
    # data_home may also be the ml-100k folder itself
    split = predefined_split("u3", data_home=ml100k_dir)
    assert split.train.n_users == 943 and split.train.n_items == 1682
    assert split.train.user_map is split.test.user_map
    assert split.train.rating_scale == (1.0, 5.0) and split.train.name == "ml-100k"


def test_predefined_uses_the_environment_data_home(ml100k_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFREC_DATA_HOME", str(ml100k_dir.parent))
    assert len(make_splits(None, "u2")[0].test) == 20_000


def test_predefined_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match=r"u1\.base and .*u1\.test.*cfrec download"):
        predefined_split("u1", data_home=tmp_path)
    with pytest.raises(CfrecError, match="expected one of u1, u2"):
        predefined_split("u9", data_home=tmp_path)


def test_predefined_malformed_file_names_line_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u1.base").write_text("1\t1\t5\t874965758\n1\t2\tthree\t876893171\n")
    (folder / "u1.test").write_text("1\t3\t4\t878542960\n")
    with pytest.raises(DataError) as info:
        predefined_split("u1", data_home=tmp_path)
    assert (info.value.line, info.value.field) == (2, "rating")
    assert "u1.base" in str(info.value) and "'three'" in str(info.value)
    (folder / "u1.base").write_text("1\t1\t5\t874965758\n1\t2\t5\n")
    with pytest.raises(DataError, match="line 2.*4 tab-separated fields"):
        predefined_split("u1", data_home=tmp_path)


def test_predefined_rejects_data_that_is_not_ml100k(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "ua.base").write_text("1\t1\t5\t10\n2\t1\t3\t11\n")
    (folder / "ua.test").write_text("999\t1\t4\t12\n")
    other = make_data(20, 2, 2, 3, 0)
    with pytest.raises(DataError, match=r"ua\.(base|test).*not the full ML-100K"):
        predefined_split("ua", data_home=tmp_path, data=other)
    split = predefined_split("ua", data_home=tmp_path)  # vocabulary from the two files
    assert split.test.raw_users().tolist() == [999] and split.train.n_users == 3


# ---------------------------------------------------------------------- recovering a model's split
@pytest.mark.parametrize("name, spec", [
    ("temporal-0.2", "temporal:0.2"), ("user-temporal-0.25", "user-temporal:0.25"),
    ("user-temporal-n5", "user-temporal:n=5"), ("random-0.1", "random:0.1"), ("kfold5-3", "kfold:5"),
    ("u1", "u1"), ("UB", "ub"), ("something", None),
])
def test_split_spec_inverts_split_names(name: str, spec: str | None) -> None:
    from cfrec.data.split import split_spec

    assert split_spec(name) == spec
    if spec is not None and not spec.startswith(("u", "kfold")):
        assert make_splits(_frame_data(), spec, seed=0)[0].name == name


def _frame_data() -> Interactions:
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"user_id": rng.integers(0, 30, 600), "item_id": rng.integers(0, 40, 600),
                       "rating": rng.integers(1, 6, 600).astype(float),
                       "timestamp": rng.integers(0, 10_000, 600)})
    df = df.drop_duplicates(["user_id", "item_id"])
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0), name="frame")


def test_find_training_split_recovers_recorded_and_searched_splits() -> None:
    from cfrec.data.split import find_training_split

    data = _frame_data()
    folds = make_splits(data, "kfold:5", seed=2)
    fp = folds[3].train.fingerprint()
    chosen, ok = find_training_split(data, fp, spec="kfold:5", seed=2)
    assert ok and chosen.name == folds[3].name
    chosen, ok = find_training_split(data, fp, recorded=folds[3].name, seed=2)
    assert ok and chosen.name == folds[3].name
    temporal = make_splits(data, "user-temporal:0.3")[0]
    chosen, ok = find_training_split(data, temporal.train.fingerprint(), recorded="user-temporal-0.3")
    assert ok and chosen.train.fingerprint() == temporal.train.fingerprint()
    # nothing matches: the first split made, unverified (predefined ML-100K folds are not tried)
    chosen, ok = find_training_split(data, "0" * 64)
    assert not ok and chosen.name == "temporal-0.2"


def test_single_split_auto_none_and_multifold() -> None:
    from cfrec.data.split import single_split

    data = _frame_data()
    assert single_split(data, "none") is None
    assert single_split(data, "auto", seed=1).name == "random-0.2"
    with pytest.raises(CfrecError, match="yields 5 folds"):
        single_split(data, "cv5")


def _carve_data(n_users: int = 40, n_items: int = 30, per_user: int = 10, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    rows = [(u, i, float(rng.integers(1, 6))) for u in range(n_users)
            for i in rng.choice(n_items, per_user, replace=False)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0))


# ---------------------------------------------------------------------- validation carve
def test_carve_validation_properties() -> None:
    data = _carve_data()
    fit, valid = carve_validation(data, 0.1, seed=3)
    assert valid is not None
    assert len(fit) + len(valid) == len(data)
    assert abs(len(valid) - 0.1 * len(data)) <= 2
    # disjoint and complete: the multiset of (user, item) pairs is preserved
    pairs = lambda d: sorted(zip(d.users.tolist(), d.items.tolist(), strict=True))  # noqa: E731
    assert sorted(pairs(fit) + pairs(valid)) == pairs(data)
    # every validation user and item keeps a training rating (no cold start in validation)
    assert (fit.user_counts()[valid.users] > 0).all()
    assert (fit.item_counts()[valid.items] > 0).all()
    # deterministic for a seed, different for another
    _, again = carve_validation(data, 0.1, seed=3)
    _, other = carve_validation(data, 0.1, seed=4)
    assert pairs(again) == pairs(valid)
    assert pairs(other) != pairs(valid)


def test_carve_validation_off_or_too_small() -> None:
    data = _carve_data()
    assert carve_validation(data, 0.0, seed=0) == (data, None)
    small = data.subset(np.arange(10))
    assert carve_validation(small, 0.2, seed=0) == (small, None)
