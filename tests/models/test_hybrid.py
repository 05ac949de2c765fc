"""The hybrid ranker: the compiled step against numpy, new items and users from features (known
answers), persistence of added items, and the contract suite."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions
from cfrec.data.features import Features
from cfrec.engines import hogwild_features
from cfrec.errors import CfrecError
from cfrec.models import Recommender
from cfrec.models.bpr import BPR
from cfrec.models.hybrid import HybridRanker
from cfrec.testing import RecommenderContract, make_ratings

GENRES = ("action", "comedy", "drama", "horror")


def small_model(**overrides: Any) -> HybridRanker:
    params: dict[str, Any] = {"n_factors": 8, "epochs": 12, "lr": 0.1, "reg": 1e-3, "threshold": None,
                              "seed": 0, "threads": 1, "use_user_features": True}
    return HybridRanker(**{**params, **overrides})


def genre_data(n_users: int = 80, n_items: int = 60, per_user: int = 12, seed: int = 0) -> Interactions:
    """Users each love one genre (5 stars) and dislike the rest (1-2 stars); items have one
    genre each (item ``100 + i`` has genre ``i % 4``); item and user features attached."""
    rng = np.random.default_rng(seed)
    item_genre = np.arange(n_items) % len(GENRES)
    user_genre = np.arange(n_users) % len(GENRES)
    rows = []
    for u in range(n_users):
        liked = np.flatnonzero(item_genre == user_genre[u])
        other = np.flatnonzero(item_genre != user_genre[u])
        picks = np.concatenate([rng.choice(liked, per_user // 2, replace=False),
                                rng.choice(other, per_user // 2, replace=False)])
        for i in picks:
            r = 5.0 if item_genre[i] == user_genre[u] else float(rng.integers(1, 3))
            rows.append((f"u{u:03d}", 100 + int(i), r, len(rows)))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    data = Interactions.from_frame(df, rating_scale=(1.0, 5.0), name="genres")
    items = Features.from_pairs(100 + np.arange(n_items), [f"genre={GENRES[g]}" for g in item_genre])
    users = Features.from_pairs([f"u{u:03d}" for u in range(n_users)],
                                [f"fan={GENRES[g]}" for g in user_genre], owner="user")
    return dataclasses.replace(data, item_features=items, user_features=users)


@pytest.fixture(scope="module")
def ratings() -> Interactions:
    return make_ratings()


@pytest.fixture(scope="module")
def genres() -> Interactions:
    return genre_data()


@pytest.fixture(scope="module")
def genre_model(genres: Interactions) -> HybridRanker:
    return small_model(threshold=4.0, epochs=30, lr=0.05).fit(genres)


class TestHybridContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return small_model()


class TestHybridWarpContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return small_model(loss="warp", optimizer="adagrad", lr=0.1, normalize=False, threshold=4.0)


# ---------------------------------------------------------------------- the compiled step
def test_one_step_equals_numpy() -> None:
    """One user, one positive (item 0), one possible negative (item 1): the epoch's one SGD step
    moves exactly the rows of the three feature rows, by the BPR gradient."""
    k, lr, reg, bias_reg = 3, 0.1, 0.01, 0.002
    rng = np.random.default_rng(1)
    p = rng.normal(size=(2, k)).astype(np.float32)  # user id row, one user feature
    q = rng.normal(size=(4, k)).astype(np.float32)  # two item id rows, two item features
    b = rng.normal(size=4).astype(np.float32)
    u_rows = (np.array([0, 2]), np.array([0, 1]), np.array([0.5, 0.5], np.float32))
    i_rows = (np.array([0, 2, 5]), np.array([0, 2, 1, 2, 3]), np.array([0.5, 0.5, 0.2, 0.3, 0.5], np.float32))
    p0, q0, b0 = p.astype(np.float64), q.astype(np.float64), b.astype(np.float64)
    pu = 0.5 * p0[0] + 0.5 * p0[1]
    qi, bi = 0.5 * q0[0] + 0.5 * q0[2], 0.5 * b0[0] + 0.5 * b0[2]
    qj, bj = 0.2 * q0[1] + 0.3 * q0[2] + 0.5 * q0[3], 0.2 * b0[1] + 0.3 * b0[2] + 0.5 * b0[3]
    z = 1.0 / (1.0 + np.exp(pu @ (qi - qj) + bi - bj))
    want_p = p0 - lr * (-z * 0.5 * (qi - qj) + 2 * reg * p0)
    want_q, want_b = q0.copy(), b0.copy()
    for c, w in ((0, 0.5), (2, 0.5)):  # the positive's rows, then the negative's (row 2 twice)
        want_q[c] -= lr * (-z * w * pu + 2 * reg * want_q[c])
        want_b[c] -= lr * (-z * w + 2 * bias_reg * want_b[c])
    for c, w in ((1, 0.2), (2, 0.3), (3, 0.5)):
        want_q[c] -= lr * (z * w * pu + 2 * reg * want_q[c])
        want_b[c] -= lr * (z * w + 2 * bias_reg * want_b[c])
    layout = (np.array([0, 1]), np.array([0], np.int32), np.array([0, 1]), np.array([0], np.int32))
    trainer = hogwild_features.HogwildHybrid(layout, np.array([0]), u_rows, i_rows, (p, q, b), "bpr", "sgd",
                                             reg, bias_reg, 10, 1, 0)
    trainer.epoch(1, lr)
    np.testing.assert_allclose(p, want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q, want_q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, want_b, rtol=1e-5, atol=1e-6)


def test_without_features_it_learns_like_bpr(ratings: Interactions) -> None:
    """Ids only, the same steps as BPR's: both rank the planted data's held-back likes alike."""
    hyb = small_model(epochs=30).fit(ratings)
    bpr = BPR(n_factors=8, epochs=30, lr=0.1, reg=1e-3, threshold=None, seed=0, threads=1).fit(ratings)
    assert hyb.item_features_ is None and hyb.item_feature_factors_.shape == (0, 8)
    users = ratings.user_map.ids[:20]
    overlap = np.mean([len(set(hyb.recommend(u, 10).ids) & set(bpr.recommend(u, 10).ids)) / 10 for u in users])
    assert overlap > 0.5


# ---------------------------------------------------------------------- new items
@pytest.mark.parametrize("normalize", [True, False])
def test_fold_in_item_equals_an_item_trained_with_no_ratings(genres: Interactions, normalize: bool) -> None:
    """Known answer: an item that came with the training data's features and no rating, and the
    same item added after training from its features, get the same vector and scores."""
    new_id, new_features = 999, ["genre=comedy", "genre=horror"]
    base = genres.item_features
    assert base is not None
    coo = base.matrix.tocoo()
    with_new = Features.from_pairs(np.concatenate([base.ids.ids[coo.row], [new_id, new_id]]),
                                   [*base.names.ids[coo.col], *new_features])
    trained = small_model(normalize=normalize).fit(dataclasses.replace(genres, item_features=with_new))
    added = small_model(normalize=normalize).fit(genres).fold_in_item(new_id, new_features)
    assert new_id in trained.item_map_ and new_id in added.item_map_
    np.testing.assert_array_equal(trained.user_factors_, added.user_factors_)
    np.testing.assert_allclose(trained.item_factors_, added.item_factors_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trained.item_intercept_, added.item_intercept_, rtol=1e-5, atol=1e-6)
    users = genres.user_map.ids[:10]
    np.testing.assert_allclose(trained.score(users, np.full(10, new_id)), added.score(users, np.full(10, new_id)),
                               rtol=1e-5, atol=1e-6)
    assert trained.fit_info_["n_items"] == added.fit_info_["n_items"]


def test_new_item_is_recommended_to_the_users_of_its_genre(genre_model: HybridRanker,
                                                          genres: Interactions) -> None:
    model = HybridRanker.from_state(*genre_model.to_state())  # a copy: the shared model stays as it is
    model.fold_in_item(5000, {"genre=comedy": 1.0})
    new = 5000
    fans = [f"u{u:03d}" for u in range(80) if u % 4 == 1]  # the comedy fans
    others = [f"u{u:03d}" for u in range(80) if u % 4 != 1]
    rank = {u: list(model.recommend(u, 60).ids).index(new) if new in model.recommend(u, 60).ids else 99
            for u in fans + others}
    assert np.mean([rank[u] < 10 for u in fans]) > 0.8
    assert np.mean([rank[u] < 10 for u in others]) < 0.2
    sims = model.similar_items(new, 5)
    assert all((int(i) - 100) % 4 == 1 for i in sims.ids)  # other comedies


def test_fold_in_item_from_users_moves_the_vector(genre_model: HybridRanker) -> None:
    model = HybridRanker.from_state(*genre_model.to_state())
    fans = [f"u{u:03d}" for u in range(80) if u % 4 == 2]  # drama fans like it, no features given
    model.fold_in_item(7000, users=fans, ratings=np.full(len(fans), 5.0))
    assert np.mean([7000 in model.recommend(u, 5).ids for u in fans]) > 0.8
    assert 7000 not in model.recommend("u001", 5).ids


def test_fold_in_item_refuses_a_training_item_and_replaces_an_added_one(genre_model: HybridRanker) -> None:
    model = HybridRanker.from_state(*genre_model.to_state())
    with pytest.raises(CfrecError, match="training data"):
        model.fold_in_item(100, ["genre=action"])
    model.fold_in_item(5000, ["genre=action"])
    first = model.item_factors_[model.item_map_.index_of(5000)].copy()
    model.fold_in_item(5000, ["genre=drama"])
    assert len(model.item_map_) == 61
    assert not np.allclose(first, model.item_factors_[model.item_map_.index_of(5000)])


def test_unknown_features_are_ignored(genre_model: HybridRanker, caplog: pytest.LogCaptureFixture) -> None:
    model = HybridRanker.from_state(*genre_model.to_state())
    model.fold_in_item(5000, ["genre=western"])
    assert "genre=western" in caplog.text
    assert not model.item_factors_[model.item_map_.index_of(5000)].any()
    with pytest.raises(CfrecError, match="feature names or a mapping"):
        model.fold_in_item(5001, {"genre=drama": "lots"})


def test_models_without_features_refuse_new_items(ratings: Interactions) -> None:
    bpr = BPR(n_factors=4, epochs=2, threshold=None, threads=1).fit(ratings)
    assert not bpr.takes_new_items and HybridRanker.takes_new_items
    with pytest.raises(CfrecError, match="cannot take new items.*hybrid"):
        bpr.fold_in_item(5000, ["genre=drama"])


# ---------------------------------------------------------------------- new users
def test_user_from_features_equals_a_training_user_with_no_positive(genres: Interactions) -> None:
    """A training user none of whose ratings is a positive keeps a zero id embedding: its vector
    is its features' vector, which fold_in(features=...) gives a new user."""
    extra = pd.DataFrame({"user_id": ["zz"], "item_id": [100], "rating": [1.0], "timestamp": [0]})
    frame = pd.concat([genres.to_frame(), extra], ignore_index=True)
    data = Interactions.from_frame(frame, rating_scale=(1.0, 5.0))
    assert genres.user_features is not None
    coo = genres.user_features.matrix.tocoo()
    users = Features.from_pairs([*genres.user_features.ids.ids[coo.row], "zz"],
                                [*genres.user_features.names.ids[coo.col], "fan=horror"], owner="user")
    data = dataclasses.replace(data, item_features=genres.item_features, user_features=users)
    model = small_model(threshold=4.0).fit(data)
    folded = model.fold_in(features=["fan=horror"])
    np.testing.assert_allclose(folded.factors, model.user_factors_[model.user_map_.index_of("zz")], rtol=1e-6)
    assert model.recommend(folded, 5).ids.tolist() == model.recommend("zz", 5, exclude_seen=False).ids.tolist()


def test_new_user_from_features_gets_their_genre(genre_model: HybridRanker) -> None:
    folded = genre_model.fold_in(features=["fan=drama"])
    recs = genre_model.recommend(folded, 10)
    assert np.mean([(int(i) - 100) % 4 == 2 for i in recs.ids]) >= 0.8
    liked = [102, 106, 110]
    both = genre_model.fold_in(liked, features=["fan=drama"])
    assert not set(liked) & set(genre_model.recommend(both, 10).ids)


# ---------------------------------------------------------------------- persistence
def test_added_items_survive_save_and_load(genre_model: HybridRanker, tmp_path: Path) -> None:
    model = HybridRanker.from_state(*genre_model.to_state())
    model.fold_in_item(5000, ["genre=comedy"])
    model.save(tmp_path / "m")
    back = Recommender.load(tmp_path / "m")
    assert isinstance(back, HybridRanker) and 5000 in back.item_map_
    assert back.recommend("u001", 10).ids.tolist() == model.recommend("u001", 10).ids.tolist()
    assert back.item_features_ is not None and back.item_features_.rows([5000]).nnz == 1
    back.fold_in_item(5001, ["genre=drama"])  # still takes new items after loading
    assert 5001 in back.item_map_


def test_warp_learns_the_genres(genres: Interactions) -> None:
    model = small_model(loss="warp", optimizer="adagrad", lr=0.1, threshold=4.0, epochs=30).fit(genres)
    hits = [np.mean([(int(i) - 100) % 4 == u % 4 for i in model.recommend(f"u{u:03d}", 5).ids]) for u in range(80)]
    assert np.mean(hits) > 0.8
