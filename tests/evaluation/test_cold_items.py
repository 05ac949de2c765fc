"""The cold-item protocol: spec parsing, the split, the feature-mean references (known answers)
and the benchmark's table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cfrec.data import Interactions
from cfrec.data.features import Features
from cfrec.errors import CfrecError
from cfrec.evaluation.benchmark import run_benchmark
from cfrec.evaluation.cold_items import (
    ColdItemsSpec,
    cold_item_split,
    feature_means,
    item_features_of,
    parse_cold_items,
    ranking_scores,
)
from tests.models.test_hybrid import genre_data


@pytest.fixture(scope="module")
def genres() -> Interactions:
    return genre_data(n_users=80, n_items=80)


def test_parse_cold_items() -> None:
    assert parse_cold_items("folds") is None
    assert parse_cold_items("cold-items") == ColdItemsSpec(0.1, 5)
    assert parse_cold_items("cold-items:0.2") == ColdItemsSpec(0.2, 5)
    assert parse_cold_items("Cold-Items:0.25:n=3") == ColdItemsSpec(0.25, 3)
    for bad in ("cold-items:x", "cold-items:1.5", "cold-items:0.1:n=0"):
        with pytest.raises(CfrecError, match="cold-items"):
            parse_cold_items(bad)


def test_split_holds_out_whole_items(genres: Interactions) -> None:
    split = cold_item_split(genres, 0.1, seed=3)
    assert len(split.held_out) == 8
    train_items = set(split.train.item_map.ids[split.train.items])
    test_items = set(split.test.item_map.ids[split.test.items])
    assert test_items == set(split.held_out) and not train_items & test_items
    assert len(split.train) + len(split.test) == len(genres)
    assert split.train.item_features is not None
    assert not set(split.train.item_features.ids.ids) & set(split.held_out)  # no feature of a held-out item
    assert set(split.features.ids.ids) >= set(split.held_out)
    assert not np.array_equal(cold_item_split(genres, 0.1, seed=4).held_out, split.held_out)


def test_feature_means_known_answer() -> None:
    train = sp.csr_array(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32))
    values = np.array([1.0, 3.0, 5.0])
    new = sp.csr_array(np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [3, 1, 0]], dtype=np.float32))
    # feature 0: items 0,1 -> 2; feature 1: items 1,2 -> 4; feature 2 unseen -> no information
    np.testing.assert_allclose(feature_means(values, train, new), [2.0, 4.0, 3.0, 0.0, 2.5])


def test_ranking_scores_known_answer() -> None:
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    rows, cols = np.array([0, 1]), np.array([0, 0])  # both users like item 0
    got = ranking_scores(scores, rows, cols, k=2)
    assert got["ndcg@2"] == pytest.approx(0.5)  # user 0: rank 1 (1.0); user 1: not in the top 2
    assert got["recall@2"] == pytest.approx(0.5)


def test_genres_from_item_info() -> None:
    info = pd.DataFrame({"genres": [["Comedy"], ["Drama", "War"], []]}, index=pd.Index([1, 2, 3], name="item_id"))
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 3], "rating": [4.0, 3.0, 5.0]})
    data = Interactions.from_frame(df, item_info=info, time_col=None)
    feats = item_features_of(data)
    assert feats.rows([2]).nnz == 2 and set(feats.names.ids) == {"genre=Comedy", "genre=Drama", "genre=War"}
    with pytest.raises(CfrecError, match="item features"):
        item_features_of(dataclasses.replace(data, item_info=None))


def test_benchmark_cold_items_table(genres: Interactions) -> None:
    res = run_benchmark(genres, protocol="cold-items:0.1:n=2",
                        models="hybrid:n_factors=8,epochs=20,lr=0.05,threads=1")
    names = [r.model for r in res.rows]
    assert names[:2] == ["baseline+feature-mean", "pop-in-genre"] and len(names) == 3
    hybrid, pop = res.rows[2], res.row("pop-in-genre")
    assert hybrid.n_folds == 2 and not hybrid.predicts_ratings
    # users love one genre: the hybrid ranks the held-out items of it first, a genre's
    # popularity cannot tell a fan from anyone else
    assert hybrid.mean["ndcg@10"] > 1.5 * pop.mean["ndcg@10"]
    assert hybrid.beats_popularity is True
    assert np.isfinite(res.row("baseline+feature-mean").mean["rmse"])
    text = res.to_markdown()
    assert "10% of the items held out" in text and "| hybrid" in text


def test_benchmark_cold_items_refuses_models_without_features(genres: Interactions) -> None:
    with pytest.raises(CfrecError, match="bpr cannot take new items"):
        run_benchmark(genres, protocol="cold-items", models="bpr")


def test_feature_mean_bias_beats_the_global_mean() -> None:
    """Genre decides the rating: the feature-mean fallback predicts held-out items far better
    than the bias baseline's plain unknown-item fallback (``mu + b_u``)."""
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 40
    genre = np.arange(n_items) % 2
    rows = [(u, 100 + i, 4.5 if genre[i] else 1.5) for u in range(n_users)
            for i in rng.choice(n_items, 15, replace=False)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    data = Interactions.from_frame(df, time_col=None)
    feats = Features.from_pairs(100 + np.arange(n_items), [f"g{g}" for g in genre])
    data = dataclasses.replace(data, item_features=feats)
    res = run_benchmark(data, protocol="cold-items:0.2:n=1", models="hybrid:n_factors=4,epochs=2,threads=1")
    # mu + b_u alone would be off by about the ratings' spread (1.5); the genre's mean bias is not
    assert res.row("baseline+feature-mean").mean["rmse"] < 0.25 * float(np.std(data.ratings)) + 0.05


def test_references_use_the_genres_when_there_are_any() -> None:
    from cfrec.evaluation.cold_items import genre_features

    both = Features.from_pairs([1, 1, 2, 2], ["genre=A", "decade=1990", "genre=B", "decade=1990"])
    only = genre_features(both)
    assert only.names.to_list() == ["genre=A", "genre=B"]
    assert only.matrix.toarray().tolist() == [[1.0, 0.0], [0.0, 1.0]]
    no_genre = Features.from_pairs([1, 2], ["tag=x", "tag=y"])
    assert genre_features(no_genre) is no_genre
