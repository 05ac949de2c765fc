"""Item-kNN: similarities, shrinkage and predictions against hand computations, the contract."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models import Recommender
from cfrec.models.itemknn import ItemKNN
from cfrec.testing import RecommenderContract, make_ratings

#: Four users, three items, mean rating exactly 3. Residuals from 3: u0 (+2, +1, -), u1 (-2, -1,
#: +1), u2 (+1, -, -1), u3 (-, -1, -).
TINY = [("u0", "a", 5.0), ("u0", "b", 4.0), ("u1", "a", 1.0), ("u1", "b", 2.0), ("u1", "c", 4.0),
        ("u2", "a", 4.0), ("u2", "c", 2.0), ("u3", "b", 2.0)]
#: Biases held at (almost) zero, so the baseline is the mean rating 3.
NO_BIAS = {"reg_user": 1e12, "reg_item": 1e12}
PEARSON = {"similarity": "pearson_baseline", **NO_BIAS}


def tiny() -> Interactions:
    frame = pd.DataFrame(TINY, columns=["user_id", "item_id", "rating"])
    return Interactions.from_frame(frame, rating_scale=(1.0, 5.0), name="tiny")


@pytest.fixture(scope="module")
def ratings() -> Interactions:
    """The contract's planted ratings, for this module's own tests."""
    return make_ratings()


def sim(model: ItemKNN, i: str, j: str) -> float:
    a, b = model.item_map_.to_index(np.array([i, j]))
    return float(model.neighbors_.toarray()[a, b])


# ---------------------------------------------------------------------- similarities
def test_pearson_baseline_similarity_and_shrinkage_by_hand() -> None:
    data = tiny()
    plain = ItemKNN(shrinkage=0.0, **PEARSON).fit(data)
    assert plain.global_mean_ == 3.0
    # a, b over the common raters u0, u1: (2*1 + -2*-1) / sqrt((4 + 4) * (1 + 1)) = 4 / 4
    assert sim(plain, "a", "b") == pytest.approx(1.0, abs=1e-6)
    assert sim(plain, "b", "a") == pytest.approx(1.0, abs=1e-6)
    # a, c: (-2*1 + 1*-1) < 0 and b, c: -1*1 < 0: negative similarities are not kept
    assert plain.neighbors_.nnz == 2 and sim(plain, "a", "c") == 0.0 == sim(plain, "b", "c")
    # shrinkage 2 with n = 2 common raters: times (2 - 1) / (2 - 1 + 2)
    shrunk = ItemKNN(shrinkage=2.0, **PEARSON).fit(data)
    assert sim(shrunk, "a", "b") == pytest.approx(1 / 3, abs=1e-6)
    # min_support 3: a and b have 2 common raters only
    assert ItemKNN(shrinkage=0.0, min_support=3, **PEARSON).fit(data).neighbors_.nnz == 0


def test_cosine_and_adjusted_cosine_by_hand() -> None:
    data = tiny()
    cos = ItemKNN(similarity="cosine", shrinkage=0.0).fit(data)
    # columns a = (5, 1, 4, 0), b = (4, 2, 0, 2), c = (0, 4, 2, 0) over u0..u3
    assert sim(cos, "a", "b") == pytest.approx(22 / math.sqrt(42 * 24), abs=1e-6)
    assert sim(cos, "a", "c") == pytest.approx(12 / math.sqrt(42 * 20), abs=1e-6)
    assert sim(cos, "b", "c") == pytest.approx(8 / math.sqrt(24 * 20), abs=1e-6)
    # shrinkage 1: a, c share u1 and u2 (factor 1/2); b, c share only u1 (factor 0: dropped)
    shrunk = ItemKNN(similarity="cosine", shrinkage=1.0).fit(data)
    assert sim(shrunk, "a", "c") == pytest.approx(12 / math.sqrt(42 * 20) / 2, abs=1e-6)
    assert sim(shrunk, "b", "c") == 0.0
    # user means 4.5, 7/3, 3, 2 subtracted: a = (.5, -4/3, 1, 0), b = (-.5, -1/3, 0, 0), c = (0, 5/3, -1, 0)
    adj = ItemKNN(similarity="adjusted_cosine", shrinkage=0.0).fit(data)
    a, b = np.array([0.5, -4 / 3, 1, 0]), np.array([-0.5, -1 / 3, 0, 0])
    assert sim(adj, "a", "b") == pytest.approx((-0.25 + 4 / 9) / math.sqrt((a @ a) * (b @ b)), abs=1e-6)
    assert sim(adj, "a", "c") == 0.0  # (-20/9 - 1) < 0


def test_neighbours_are_sorted_and_capped_at_max_neighbors(ratings: Interactions) -> None:
    full = ItemKNN(max_neighbors=100).fit(ratings)
    capped = ItemKNN(max_neighbors=3).fit(ratings)
    dense = full.neighbors_.toarray()
    assert np.all(np.diff(capped.neighbors_.indptr) <= 3) and np.all(capped.neighbors_.data > 0)
    for i in range(dense.shape[0]):
        row = full.neighbors_[[i]]
        assert np.all(np.diff(row.data) <= 0) and i not in row.indices  # best first, never itself
        top = capped.neighbors_[[i]]
        # the three kept are the three largest of the full row (equal ones by item index)
        expect = np.lexsort((np.arange(dense.shape[1]), -dense[i]))[: len(top.indices)]
        np.testing.assert_array_equal(top.indices, expect)
        np.testing.assert_allclose(top.data, dense[i, expect], rtol=1e-6)


# ---------------------------------------------------------------------- predictions
def test_prediction_by_hand_with_k_and_min_k() -> None:
    data = tiny()
    model = ItemKNN(similarity="cosine", shrinkage=0.0, **NO_BIAS).fit(data)
    s_ab, s_cb = 22 / math.sqrt(42 * 24), 8 / math.sqrt(24 * 20)
    # u2 rated a (+1) and c (-1): r = 3 + (s_ab * 1 + s_cb * -1) / (s_ab + s_cb)
    assert model.predict("u2", ["b"])[0] == pytest.approx(3 + (s_ab - s_cb) / (s_ab + s_cb), abs=1e-5)
    ub = model.user_map_.to_index(np.array(["u2"])).astype(np.int64)
    ib = model.item_map_.to_index(np.array(["b"])).astype(np.int64)
    assert model._score_pairs(ub, ib)[0] == pytest.approx(s_ab + s_cb, abs=1e-6)  # ranking: sum of sims
    # k = 1: only the nearest rated neighbour, a
    model.k = 1
    assert model.predict("u2", ["b"])[0] == pytest.approx(4.0, abs=1e-5)
    assert model._score_pairs(ub, ib)[0] == pytest.approx(s_ab, abs=1e-6)
    # min_k = 3 and only two rated neighbours: the baseline alone
    model.k, model.min_k = 40, 3
    assert model.predict("u2", ["b"])[0] == pytest.approx(3.0, abs=1e-5)


def test_prediction_equals_knnbaseline_formula_with_biases(ratings: Interactions) -> None:
    model = ItemKNN(k=5, min_k=2).fit(ratings)
    mu, bu, bi = model.global_mean_, model.user_bias_.astype(np.float64), model.item_bias_.astype(np.float64)
    dense_s = model.neighbors_.toarray().astype(np.float64)
    given = model.ratings_.toarray()
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 60, 200), rng.integers(0, 40, 200)
    expected = []
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        rated = [j for j in np.flatnonzero(given[u]) if dense_s[i, j] > 0]
        near = sorted(rated, key=lambda j: (-dense_s[i, j], j))[:5]
        base = mu + bu[u] + bi[i]
        if len(near) >= 2:
            w = dense_s[i, near]
            base += float(w @ (given[u, near] - mu - bu[u] - bi[near]) / w.sum())
        expected.append(base)
    got = model._predict_known(users.astype(np.int64), items.astype(np.int64))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_equals_surprise_knnbaseline(ratings: Interactions) -> None:
    surprise = pytest.importorskip("surprise")
    frame = ratings.to_frame()[["user_id", "item_id", "rating"]]
    trainset = surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=(1, 5))).build_full_trainset()
    algo = surprise.KNNBaseline(sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False)
    algo.fit(trainset)
    # Surprise's defaults, every neighbour kept
    model = ItemKNN(similarity="pearson_baseline", shrinkage=100.0, k=40, reg_user=15.0, reg_item=10.0,
                    max_neighbors=1000).fit(ratings)
    rng = np.random.default_rng(0)
    users = rng.choice(ratings.raw_users(), 600)
    items = rng.choice(ratings.raw_items(), 600)
    # unrated pairs (Surprise counts a rated item as its own neighbour, of similarity 1)
    rated = set(zip(frame["user_id"], frame["item_id"], strict=True))
    new = np.array([(u, i) not in rated for u, i in zip(users.tolist(), items.tolist(), strict=True)])
    users, items = users[new], items[new]
    assert len(users) > 300
    theirs = [algo.predict(u, i).est for u, i in zip(users.tolist(), items.tolist(), strict=True)]
    np.testing.assert_allclose(model.predict(users, items), theirs, rtol=0, atol=1e-5)


def test_fold_in_of_a_training_user_gives_their_predictions(ratings: Interactions) -> None:
    model = ItemKNN().fit(ratings)
    frame = ratings.to_frame()
    own = frame[frame["user_id"] == "u004"]
    folded = model.fold_in(own["item_id"].to_numpy(), own["rating"].to_numpy())
    assert folded.bias == pytest.approx(float(model.user_bias_[model.user_map_.to_index(np.array(["u004"]))[0]]),
                                        abs=1e-5)
    items = model.item_map_.ids
    np.testing.assert_allclose(model.predict(folded, items), model.predict("u004", items), atol=1e-5)
    np.testing.assert_array_equal(model.recommend(folded, k=10).ids, model.recommend("u004", k=10).ids)


def test_bad_hyperparameters_are_refused(ratings: Interactions) -> None:
    for params, match in (({"k": 0}, "k must be a whole number >= 1"),
                          ({"similarity": "jaccard"}, "similarity must be one of"),
                          ({"shrinkage": -1.0}, "shrinkage must be a finite number >= 0"),
                          ({"max_neighbors": 0}, "max_neighbors must be a whole number >= 1")):
        with pytest.raises(CfrecError, match=match):
            ItemKNN(**params).fit(ratings)


def test_ranking_preset_through_the_registry() -> None:
    from cfrec.models import make_model

    model = make_model("itemknn-rank:max_neighbors=50")
    assert isinstance(model, ItemKNN)
    assert (model.similarity, model.k, model.max_neighbors) == ("cosine", 1000, 50)
    assert ItemKNN.ranking(k=5).get_params() == {**ItemKNN().get_params(), "similarity": "cosine", "k": 5}


def test_unsorted_neighbour_rows_in_a_file_are_refused(ratings: Interactions) -> None:
    model = ItemKNN().fit(ratings)
    state = model._state()
    state["neighbors_data"] = state["neighbors_data"][::-1].copy()
    with pytest.raises(ModelFileError, match="sorted best first"):
        model._set_state(state, {})


# ---------------------------------------------------------------------- the contract
class TestItemKNNContract(RecommenderContract):
    has_factors = False  # no embeddings: similar_items reads the model's own similarities

    def make_model(self) -> Recommender:
        return ItemKNN()

    def make_log_model(self) -> Recommender:
        return ItemKNN(similarity="cosine")

    def test_log_needs_cosine(self, planted: Interactions) -> None:
        with pytest.raises(CfrecError, match="similarity=cosine"):
            ItemKNN().fit(planted.as_implicit())

    def test_similar_items_excludes_query(self, fitted: Recommender) -> None:  # noqa: F811
        assert isinstance(fitted, ItemKNN)
        sims = fitted.similar_items(100, k=5)
        assert len(sims.ids) == 5 and 100 not in sims.ids.tolist()
        q = fitted.item_map_.to_index(np.array([100]))[0]
        row = fitted.neighbors_[[q]]
        np.testing.assert_array_equal(sims.ids, fitted.item_map_.to_raw(row.indices[:5]))
        np.testing.assert_allclose(sims.scores, row.data[:5])
        many = fitted.similar_items([100, 101], k=3)
        assert [q not in r.ids.tolist() for q, r in zip((100, 101), many, strict=True)] == [True, True]
        # an item with fewer kept neighbours than k gets a shorter list
        few = ItemKNN(max_neighbors=2).fit(make_ratings())
        assert len(few.similar_items(100, k=5).ids) <= 2
