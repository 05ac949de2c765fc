"""Synthetic interaction logs: exact sizes, determinism, power-law popularity, counts, taste."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfrec.data import load_ratings, log_events, make_synthetic_log
from cfrec.errors import DataError


def test_sizes_kind_and_determinism() -> None:
    data = make_synthetic_log(300, 500, 6000, seed=3)
    assert data.is_implicit and len(data) == 6000
    assert (data.n_users, data.n_items) == (300, 500)
    key = data.users.astype(np.int64) * data.n_items + data.items
    assert len(np.unique(key)) == 6000  # distinct pairs
    again = make_synthetic_log(300, 500, 6000, seed=3)
    assert again.fingerprint() == data.fingerprint()
    assert make_synthetic_log(300, 500, 6000, seed=4).fingerprint() != data.fingerprint()


def test_counts_average_mean_events_and_popularity_is_long_tailed() -> None:
    data = make_synthetic_log(1000, 2000, 40_000, mean_events=4.0, seed=0)
    assert data.weights.min() >= 1 and np.all(data.weights == np.round(data.weights))
    assert data.weights.mean() == pytest.approx(4.0, rel=0.05)
    counts = np.sort(data.item_counts())[::-1]
    # power law: the top 1% of items hold far more than 1% of the pairs
    assert counts[: len(counts) // 100].sum() > 0.1 * counts.sum()
    assert counts[0] > 20 * max(np.median(counts), 1)


def test_taste_decides_what_is_kept_and_how_often() -> None:
    kept = {}
    for taste in (0.0, 3.0):
        data, truth = make_synthetic_log(500, 800, 10_000, taste=taste, seed=1, return_truth=True)
        affinity = truth.affinity(data.users, data.items)
        kept[taste] = affinity.mean()
        # more events where the planted taste is higher
        assert np.corrcoef(affinity, data.weights)[0, 1] > 0.1
    assert abs(kept[0.0]) < 0.1 and kept[3.0] > 0.5  # half the candidates kept: at most ~0.8


def test_events_round_trip_through_a_log_file(tmp_path: Path) -> None:
    data = make_synthetic_log(50, 80, 600, seed=2)
    events = log_events(data, seed=0)
    assert len(events) == int(data.weights.sum())
    f = tmp_path / "events.csv"
    events.to_csv(f, index=False)
    back, report = load_ratings(f, return_report=True)
    assert report.aggregation == "count" and report.duplicates_resolved == len(events) - 600
    want = {(int(u), int(i)): (float(w), int(t)) for u, i, w, t in zip(
        data.raw_users(), data.raw_items(), data.weights, data.timestamps, strict=True)}
    got = {(int(u), int(i)): (float(w), int(t)) for u, i, w, t in zip(
        back.raw_users(), back.raw_items(), back.weights, back.timestamps, strict=True)}
    assert got == want  # counts, and each pair's latest event time


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="n_pairs"):
        make_synthetic_log(10, 10, 30)
    with pytest.raises(DataError, match="mean_events"):
        make_synthetic_log(100, 100, 100, mean_events=0.5)
    with pytest.raises(DataError, match="taste"):
        make_synthetic_log(100, 100, 100, taste=-1.0)
