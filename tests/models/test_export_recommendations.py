"""Every user's list streamed to CSV or Parquet in bounded chunks, equal to recommend()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.errors import CfrecError
from cfrec.models.export import write_recommendations


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_streamed_lists_equal_recommend_whatever_the_chunk(planted, tmp_path: Path, suffix: str) -> None:
    users = list(planted.user_map_.ids[:7]) + [987654]  # one unknown user: the cold-start list
    path = tmp_path / f"recs{suffix}"
    written = write_recommendations(planted, path, users=users, k=4, budget=2 * len(planted.item_map_))
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert written.rows == len(frame) == 8 * 4 and written.known_users == 7
    assert frame.columns.tolist() == ["user_id", "rank", "item_id", "score", "rating", "known"]
    batch = planted.recommend(np.asarray(users), k=4)
    for row, user in enumerate(users):
        mine = frame[frame["user_id"] == user].sort_values("rank")
        np.testing.assert_array_equal(mine["item_id"].to_numpy(), batch.ids[row])
        np.testing.assert_allclose(mine["score"].to_numpy(), batch.scores[row], rtol=1e-6)
        assert mine["known"].all() == (user != 987654)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written beside, renamed in place


def test_every_user_by_default_and_bad_targets(planted, tmp_path: Path) -> None:
    written = write_recommendations(planted, tmp_path / "all.csv", k=3)
    assert written.users == len(planted.user_map_) and written.rows == 3 * written.users
    with pytest.raises(CfrecError, match=".csv or .parquet"):
        write_recommendations(planted, tmp_path / "x.json")
    with pytest.raises(CfrecError, match="positive integer"):
        write_recommendations(planted, tmp_path / "y.csv", k=0)
