"""Synthetic data: exact sizes, MovieLens-like shape, determinism, and the planted answer."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfrec.data import Interactions, make_synthetic
from cfrec.data.split import temporal_split, user_temporal_split
from cfrec.data.synthetic import GENRES, PRESETS, SyntheticTruth, synthetic_like
from cfrec.errors import CfrecError, DataError
from cfrec.models._bias import fit_biases


@pytest.fixture(scope="module")
def default() -> tuple[Interactions, SyntheticTruth]:
    return make_synthetic(return_truth=True)


def assert_valid(data: Interactions, n_users: int, n_items: int, n_ratings: int) -> None:
    assert len(data) == n_ratings
    assert (data.n_users, data.n_items) == (n_users, n_items)
    np.testing.assert_array_equal(data.user_map.ids, np.arange(1, n_users + 1))
    np.testing.assert_array_equal(data.item_map.ids, np.arange(1, n_items + 1))
    assert data.users.dtype == np.int32 and data.items.dtype == np.int32
    assert data.ratings.dtype == np.float32 and data.timestamps.dtype == np.int64
    keys = data.users.astype(np.int64) * n_items + data.items
    assert np.all(np.diff(keys) > 0)  # unique pairs, rows ordered by user then item


# ---------------------------------------------------------------------------------- shape
def test_default_is_ml100k_sized_and_valid(default: tuple[Interactions, SyntheticTruth]) -> None:
    data, truth = default
    assert_valid(data, 943, 1682, 100_000)
    assert data.name == "synthetic" and data.rating_scale == (1.0, 5.0)
    assert set(np.unique(data.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    np.testing.assert_array_equal(data.user_counts(), truth.user_activity)
    # MovieLens-like marginals (ML-100K: mean 3.53, std 1.13)
    assert 3.3 < data.ratings.mean() < 3.75
    assert 0.95 < data.ratings.std() < 1.3


def test_popularity_and_activity_are_long_tailed(default: tuple[Interactions, SyntheticTruth]) -> None:
    data, _ = default
    item_counts = np.sort(data.item_counts())[::-1]
    assert item_counts[: len(item_counts) // 10].sum() > 0.4 * len(data)  # ML-100K: 0.43
    user_counts = data.user_counts()
    assert user_counts.min() == 20  # MovieLens keeps users with >= 20 ratings
    assert user_counts.max() > 8 * np.median(user_counts)  # ML-100K: 737 vs 65
    flat = make_synthetic(200, 300, 6000, popularity_exponent=0.0, seed=1)
    flat_counts = np.sort(flat.item_counts())[::-1]
    assert flat_counts[:30].sum() < 0.2 * len(flat)  # uniform popularity has no head


def test_half_stars_and_other_scales() -> None:
    data = make_synthetic(300, 200, 5000, rating_scale=(0.5, 5.0), half_stars=True, seed=2)
    values = set(np.unique(data.ratings).tolist())
    assert values <= {x / 2 for x in range(1, 11)} and len(values) == 10
    ten = make_synthetic(300, 200, 5000, rating_scale=(1, 10), seed=2)
    assert ten.rating_scale == (1.0, 10.0)
    assert set(np.unique(ten.ratings).tolist()) <= set(range(1, 11))
    assert 5.0 < ten.ratings.mean() < 8.5


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.data())
def test_exact_sizes_and_unique_pairs(n_users: int, n_items: int, data: st.DataObject) -> None:
    n_ratings = data.draw(st.integers(1, n_users * n_items))
    seed = data.draw(st.integers(0, 1000))
    out, truth = make_synthetic(n_users, n_items, n_ratings, seed=seed, with_metadata=False,
                                return_truth=True)
    assert_valid(out, n_users, n_items, n_ratings)
    np.testing.assert_array_equal(out.user_counts(), truth.user_activity)
    assert truth.user_activity.max() <= n_items


def test_dense_corner_gives_every_pair() -> None:
    data = make_synthetic(12, 9, 108, seed=5)
    assert_valid(data, 12, 9, 108)
    assert data.to_csr(binary=True).sum() == 108


def test_heavy_users_are_sampled_without_replacement() -> None:
    # a few users rate most of the catalogue: the exact heavy-user path must keep pairs unique
    data, truth = make_synthetic(60, 400, 12_000, user_activity_exponent=1.5,
                                 min_user_ratings=5, seed=6, return_truth=True)
    assert truth.user_activity.max() > 300
    assert_valid(data, 60, 400, 12_000)


# ---------------------------------------------------------------------------------- determinism
def test_same_seed_same_data_other_seed_other_data() -> None:
    a = make_synthetic(200, 150, 4000, seed=3)
    b = make_synthetic(200, 150, 4000, seed=3)
    c = make_synthetic(200, 150, 4000, seed=4)
    assert a.fingerprint() == b.fingerprint()
    assert a.item_info.equals(b.item_info)
    assert a.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.ratings, c.ratings[: len(a)])


def test_noise_level_does_not_change_who_rated_what() -> None:
    a = make_synthetic(200, 150, 4000, seed=3, noise=0.1)
    b = make_synthetic(200, 150, 4000, seed=3, noise=1.0)
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert not np.array_equal(a.ratings, b.ratings)


# ---------------------------------------------------------------------------------- known answers
def test_least_squares_biases_recover_the_planted_ones() -> None:
    data, truth = make_synthetic(2000, 1000, 200_000, seed=7, return_truth=True)
    mean = float(data.ratings.mean())
    b_u, b_i = fit_biases(data.users, data.items, data.ratings, data.n_users, data.n_items,
                          global_mean=mean, reg_user=2.0, reg_item=2.0, iterations=20)
    assert np.corrcoef(b_u, truth.user_bias)[0, 1] > 0.9
    rated = data.item_counts() >= 20
    assert np.corrcoef(b_i[rated], truth.item_bias[rated])[0, 1] > 0.9


def test_truth_scores_are_the_generating_model(default: tuple[Interactions, SyntheticTruth]) -> None:
    data, truth = default
    u, i = data.users[:500], data.items[:500]
    manual = (truth.mu + truth.user_bias[u] + truth.item_bias[i]
              + np.sum(truth.user_factors[u] * truth.item_factors[i], axis=1))
    np.testing.assert_allclose(truth.scores(u, i), manual, rtol=1e-5, atol=1e-5)
    # the best possible predictor's error is the noise plus rounding: sqrt(0.5^2 + 1/12) = 0.577,
    # a little less where clipping at 1 and 5 absorbs part of the noise
    err = data.ratings - truth.expected_ratings(data.users, data.items)
    assert 0.5 < np.sqrt(np.mean(err**2)) < 0.6
    noiseless = make_synthetic(noise=0.0, return_truth=True)
    err0 = noiseless[0].ratings - noiseless[1].expected_ratings(noiseless[0].users,
                                                                noiseless[0].items)
    assert np.abs(err0).max() <= 0.5 + 1e-5  # only rounding remains


def test_planted_model_has_the_requested_rank() -> None:
    data, truth = make_synthetic(100, 80, 3000, n_factors=3, seed=1, return_truth=True)
    assert truth.user_factors.shape == (100, 3) and truth.item_factors.shape == (80, 3)
    assert truth.user_factors.dtype == np.float32 and truth.item_bias.dtype == np.float32
    assert truth.item_popularity.shape == (80,) and abs(truth.item_popularity.sum() - 1) < 1e-9


# ---------------------------------------------------------------------------------- time
def test_timestamps_make_temporal_splits_behave_like_movielens(
    default: tuple[Interactions, SyntheticTruth],
) -> None:
    data, _ = default
    lo, hi = 874_713_600, 893_289_600  # 1997-09-20 .. 1998-04-23 UTC
    assert lo <= data.timestamps.min() and data.timestamps.max() <= hi
    spans = np.zeros(data.n_users, dtype=np.int64)
    first = np.full(data.n_users, np.iinfo(np.int64).max)
    last = np.zeros(data.n_users, dtype=np.int64)
    np.minimum.at(first, data.users, data.timestamps)
    np.maximum.at(last, data.users, data.timestamps)
    spans = last - first
    assert 0.5 < np.mean(spans < 86_400) < 0.85  # ML-100K: 68% of users rate within one day
    # like ML-100K's 85%: a global temporal split tests mostly users who arrive after the cut
    assert 0.75 < temporal_split(data, 0.2).cold_start().user_share < 0.95
    assert user_temporal_split(data, 0.2).cold_start().unknown_user == 0


def test_time_window_arguments() -> None:
    data = make_synthetic(50, 40, 500, start_time=1_000, end_time=2_000, seed=0)
    assert 1_000 <= data.timestamps.min() and data.timestamps.max() <= 2_000
    dated = make_synthetic(50, 40, 500, start_time="2015-01-01", end_time="2015-12-31")
    assert dated.timestamps.min() >= 1_420_070_400
    with pytest.raises(DataError, match="end_time"):
        make_synthetic(50, 40, 500, start_time=2_000, end_time=1_000)
    with pytest.raises(DataError, match="start_time"):
        make_synthetic(50, 40, 500, start_time="not a date")


# ---------------------------------------------------------------------------------- metadata
def test_item_info_titles_years_genres(default: tuple[Interactions, SyntheticTruth]) -> None:
    data, truth = default
    info = data.item_info
    assert info is not None and list(info.columns) == ["title", "year", "genres"]
    np.testing.assert_array_equal(info.index.to_numpy(), np.arange(1, 1683))
    assert data.item_titles([17])[0] == "Synthetic item 17"
    assert info["year"].between(1920, 1998).all()
    assert all(1 <= len(g) <= 3 and set(g) <= set(GENRES) for g in info["genres"])
    assert info["genres"].explode().nunique() == len(GENRES)
    assert 1.5 < info["genres"].map(len).mean() < 2.1  # ML-100K: 1.7
    # genres follow the planted factors: items cluster around their main genre's direction
    first = np.array([GENRES.index(g[0]) for g in info["genres"]])
    np.testing.assert_array_equal(first, truth.item_genre)
    q = truth.item_factors / np.linalg.norm(truth.item_factors, axis=1, keepdims=True)
    cos = q @ truth.genre_directions.T
    own = cos[np.arange(len(first)), first]
    assert own.mean() > 0.6 and abs(cos.mean()) < 0.15
    assert np.mean(cos.argmax(axis=1) == first) > 0.6  # 18 genres: chance would be ~0.06
    # the most common main genres are MovieLens's: Drama, then Comedy
    top = np.bincount(first, minlength=len(GENRES)).argsort()[::-1][:2]
    assert [GENRES[g] for g in top] == ["Drama", "Comedy"]
    assert make_synthetic(50, 40, 500, with_metadata=False).item_info is None


# ---------------------------------------------------------------------------------- presets, errors
def test_synthetic_like_uses_the_real_sizes() -> None:
    data = synthetic_like("ml-100k", seed=1)
    assert_valid(data, 943, 1682, 100_000)
    assert data.name == "synthetic-ml-100k"
    assert PRESETS["ml-1m"]["n_ratings"] == 1_000_209 and PRESETS["ml-1m"]["n_users"] == 6040
    assert (PRESETS["ml-10m"]["n_ratings"], PRESETS["ml-10m"]["n_users"],
            PRESETS["ml-10m"]["n_items"]) == (10_000_054, 69_878, 10_677)
    assert (PRESETS["ml-25m"]["n_ratings"], PRESETS["ml-25m"]["n_users"],
            PRESETS["ml-25m"]["n_items"]) == (25_000_095, 162_541, 59_047)
    small, truth = synthetic_like("ML-100K", n_factors=2, return_truth=True)
    assert truth.user_factors.shape[1] == 2
    with pytest.raises(CfrecError, match="no synthetic preset 'ml-5m'"):
        synthetic_like("ml-5m")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"n_users": 0}, "n_users"),
    ({"n_items": 2.5}, "n_items"),
    ({"n_ratings": 10, "n_users": 2, "n_items": 3}, "n_ratings"),
    ({"n_factors": 0}, "n_factors"),
    ({"noise": -1.0}, "noise"),
    ({"rating_scale": (5, 1)}, "rating_scale"),
    ({"popularity_exponent": -1.0}, "popularity_exponent"),
    ({"user_activity_exponent": float("inf")}, "user_activity_exponent"),
    ({"min_user_ratings": -3}, "min_user_ratings"),
])
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(DataError) as info:
        make_synthetic(**{"n_users": 20, "n_items": 20, "n_ratings": 100, **kwargs})
    assert info.value.field == field


# ---------------------------------------------------------------------------------- scale
def test_generation_is_fast_and_lean() -> None:
    """1M ratings: seconds and a bounded number of bytes per rating (25M: see the report)."""
    make_synthetic(100, 100, 1000)  # warm imports
    tracemalloc.start()
    start = time.perf_counter()
    try:
        data = synthetic_like("ml-1m", seed=0)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_valid(data, 6040, 3706, 1_000_209)
    assert seconds < 15.0
    # the data itself takes 20 bytes/rating; temporaries are chunked or a few int64 arrays
    assert peak / len(data) < 120
