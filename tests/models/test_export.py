"""Embedding export: round trip through Parquet and CSV, .npy files, string ids, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions
from cfrec.errors import CfrecError
from cfrec.models.export import export_embeddings, load_embeddings
from tests.clustered import PlantedFactors


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_round_trip(tmp_path, planted: PlantedFactors, clustered: Interactions, fmt: str) -> None:
    result = export_embeddings(planted, tmp_path / "emb", format=fmt)
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == sorted(
        [f"items.{fmt}", f"users.{fmt}", "item_embeddings.npy", "user_embeddings.npy", "manifest.json"])
    assert (result.n_items, result.n_users, result.n_factors) == (30, 40, 3)

    back = load_embeddings(tmp_path / "emb")
    np.testing.assert_array_equal(back.item_vectors, planted.item_embeddings())
    np.testing.assert_array_equal(back.user_vectors, planted.user_embeddings())
    assert back.item_vectors.dtype == np.float32
    items = back.items
    assert items["item_id"].tolist() == planted.item_map_.ids.tolist()
    assert items["item_id"].dtype.kind == "i"
    assert items.loc[items["item_id"] == 11, "title"].item() == "Star Wars (1977)"
    assert items.loc[items["item_id"] == 1, "genres"].item() == "Animation|Drama"
    # factor columns equal the .npy rows; counts equal the training data's
    np.testing.assert_allclose(items[["f0", "f1", "f2"]].to_numpy(), back.item_vectors, rtol=1e-6)
    counts = np.bincount(clustered.items, minlength=clustered.n_items)
    np.testing.assert_array_equal(items["n_ratings"].to_numpy(), counts)
    np.testing.assert_allclose(items["bias"].to_numpy(), planted.item_bias_, rtol=1e-6)
    users = back.users
    assert users["user_id"].tolist() == list(range(1, 41))
    np.testing.assert_array_equal(users["n_ratings"].to_numpy(), np.bincount(clustered.users))
    np.testing.assert_allclose(users[["f0", "f1", "f2"]].to_numpy(), back.user_vectors, rtol=1e-6)
    assert back.manifest["model_name"] == "planted" and back.manifest["table_format"] == fmt


def test_string_ids_survive_csv(tmp_path) -> None:
    df = pd.DataFrame({"user_id": ["007", "a", "b", "a"], "item_id": ["0042", "x", "0042", "y"],
                       "rating": [4.0, 3.0, 5.0, 2.0]})
    data = Interactions.from_frame(df, rating_scale=(1.0, 5.0))
    model = PlantedFactors(n_genres=1, per_genre=10).fit(data)
    export_embeddings(model, tmp_path, format="csv")
    back = load_embeddings(tmp_path)
    assert back.items["item_id"].tolist() == ["0042", "x", "y"]  # leading zeros kept: read as text
    assert back.users["user_id"].tolist() == ["007", "a", "b"]


def test_export_replaces_atomically(tmp_path, planted: PlantedFactors) -> None:
    export_embeddings(planted, tmp_path, format="csv")
    export_embeddings(planted, tmp_path, format="csv")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_errors(tmp_path, tiny: Interactions, planted: PlantedFactors) -> None:
    from cfrec.models.baseline import Baseline

    with pytest.raises(CfrecError, match="no item embeddings"):
        export_embeddings(Baseline().fit(tiny), tmp_path / "b")
    with pytest.raises(CfrecError, match="unknown export format"):
        export_embeddings(planted, tmp_path / "c", format="xlsx")  # type: ignore[arg-type]
    with pytest.raises(CfrecError, match="missing manifest.json"):
        load_embeddings(tmp_path)
    export_embeddings(planted, tmp_path / "d", format="csv")
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CfrecError, match="format"):
        load_embeddings(tmp_path / "d")
