"""Dataset statistics: exact numbers on ML-100K and on small hand-checked data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions, compute_statistics, format_dataset_info, load_dataset


def test_ml100k_exact(ml100k_dir: Path) -> None:
    s = compute_statistics(load_dataset("ml-100k", data_home=ml100k_dir.parent))
    assert (s.ratings, s.users, s.items) == (100_000, 943, 1682)
    assert s.sparsity == pytest.approx(1 - 100_000 / (943 * 1682), abs=1e-15)
    assert round(s.sparsity, 3) == 0.937
    assert s.rating_histogram == {1.0: 6110, 2.0: 11370, 3.0: 27145, 4.0: 34174, 5.0: 21201}
    assert s.rating_mean == pytest.approx(3.52986, abs=1e-12)
    assert s.rating_std == pytest.approx(1.1256679707622492, rel=1e-12)
    assert (s.ratings_per_user.min, s.ratings_per_user.median, s.ratings_per_user.max) == (20, 65.0, 737)
    assert s.ratings_per_user.mean == pytest.approx(100_000 / 943)
    assert (s.ratings_per_item.min, s.ratings_per_item.median, s.ratings_per_item.max) == (1, 27.0, 583)
    assert (s.first_timestamp, s.last_timestamp) == (874724710, 893286638)
    assert (s.first_date, s.last_date) == ("1997-09-20T03:05:10Z", "1998-04-22T23:10:38Z")

    d = json.loads(json.dumps(s.to_dict()))
    assert d["users"] == 943 and d["items"] == 1682 and d["ratings"] == 100_000
    assert d["sparsity"] == s.sparsity  # full precision
    assert d["rating_histogram"] == {"1": 6110, "2": 11370, "3": 27145, "4": 34174, "5": 21201}
    assert d["ratings_per_user"] == {"min": 20, "median": 65.0, "mean": 100_000 / 943, "max": 737}
    assert d["rating_scale"] == [1.0, 5.0] and d["name"] == "ml-100k"


def test_small_hand_checked(tiny: Interactions) -> None:
    s = compute_statistics(tiny)
    assert (s.ratings, s.users, s.items) == (16, 6, 5)
    assert s.sparsity == pytest.approx(1 - 16 / 30)
    assert s.rating_histogram == {1.0: 3, 2.0: 2, 3.0: 1, 4.0: 4, 5.0: 6}
    r = tiny.ratings.astype(float)
    assert s.rating_mean == pytest.approx(r.mean()) and s.rating_std == pytest.approx(r.std())
    # users 1-4 have 3 ratings, 5 and 6 have 2; items 10..14 have 4, 3, 3, 4, 2
    assert (s.ratings_per_user.min, s.ratings_per_user.median, s.ratings_per_user.max) == (2, 3.0, 3)
    assert (s.ratings_per_item.min, s.ratings_per_item.median, s.ratings_per_item.max) == (2, 3.0, 4)
    assert (s.first_timestamp, s.last_timestamp) == (0, 1500)


def test_subset_counts_only_present_users_and_items(tiny: Interactions) -> None:
    part = tiny.subset(tiny.raw_users() == 1)
    s = compute_statistics(part)
    assert (s.ratings, s.users, s.items) == (3, 1, 3) and s.sparsity == 0.0


def test_half_stars_and_no_time() -> None:
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 1], "rating": [0.5, 4.5, 4.5]})
    data = Interactions.from_frame(df, time_col=None, rating_scale=(0.5, 5.0), name="half")
    s = compute_statistics(data)
    assert s.rating_histogram == {0.5: 1, 4.5: 2}
    assert s.to_dict()["rating_histogram"] == {"0.5": 1, "4.5": 2}
    assert s.first_timestamp is None and s.first_date is None and s.span_days is None
    assert "(no timestamps)" in format_dataset_info(data)


def test_empty() -> None:
    df = pd.DataFrame({"user_id": np.array([], dtype=np.int64), "item_id": np.array([], dtype=np.int64),
                       "rating": np.array([], dtype=np.float32)})
    s = compute_statistics(Interactions.from_frame(df, time_col=None, name="empty"))
    assert (s.ratings, s.users, s.items, s.sparsity) == (0, 0, 0, 1.0)
    assert math.isnan(s.rating_mean) and s.rating_histogram == {}


def test_format_dataset_info(ml100k_dir: Path) -> None:
    text = format_dataset_info(load_dataset("ml-100k", data_home=ml100k_dir.parent))
    lines = text.splitlines()
    assert lines[0] == "Dataset ml-100k"
    assert "  ratings   100,000" in lines and "  users     943" in lines and "  items     1,682" in lines
    assert "  sparsity  93.70% (density 6.30%)" in lines
    assert any(line.strip().startswith("4      34,174   34.2%") for line in lines)
    assert "  ratings per user: min 20, median 65, mean 106.0, max 737" in lines
    assert "  time      1997-09-20 .. 1998-04-22 (215 days, UTC)" in lines


def test_statistics_of_interactions() -> None:
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "plays": [3.0, 1.0, 8.0]})
    s = compute_statistics(Interactions.from_frame(df, feedback="implicit", weight_col="plays"))
    assert s.feedback == "implicit" and s.ratings == 3 and s.weight_total == 12.0
    assert (s.weight_per_pair.min, s.weight_per_pair.median, s.weight_per_pair.max) == (1, 3, 8)
    assert s.weight_per_pair.mean == pytest.approx(4.0)
    d = s.to_dict()
    assert d["feedback"] == "implicit" and d["weight_per_pair"]["max"] == 8.0
    json.dumps(d)
    text = format_dataset_info(s)
    assert "pairs     3 (interactions, no ratings)" in text and "total 12" in text
    assert "histogram" not in text and "rating    scale" not in text
    explicit = compute_statistics(Interactions.from_frame(df.rename(columns={"plays": "rating"})))
    assert explicit.feedback == "explicit" and explicit.weight_total is None
