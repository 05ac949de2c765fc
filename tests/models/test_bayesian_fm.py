"""BayesianFM: the contract, side features (cold items and users predicted from them), fold-in,
persistence of the features, and the registry."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cfrec.data import Interactions
from cfrec.data.features import Features
from cfrec.errors import CfrecError
from cfrec.models import Recommender
from cfrec.models.bayesian_fm import BayesianFM
from cfrec.models.fm_terms import MissingTerms
from cfrec.models.registry import make_model
from cfrec.testing import RecommenderContract


class TestBayesianFMContract(RecommenderContract):
    def make_model(self) -> BayesianFM:
        return BayesianFM(n_factors=4, n_sweeps=40, burn_in=10, max_samples=15, seed=0)


class TestBayesianFMPlainContract(RecommenderContract):
    def make_model(self) -> BayesianFM:
        return BayesianFM(n_factors=4, n_sweeps=30, burn_in=10, max_samples=10, implicit=False,
                          implicit_items=False, seed=0)


def genre_ratings(seed: int = 0, n_users: int = 120, n_items: int = 80, n: int = 4000) -> Interactions:
    """Ratings driven by features: items of genre ``A`` rate 4.5 with users of kind ``x``, 2 with
    the others; items of genre ``B`` the other way round (noise 0.3). Every item and user has its
    feature; items ``900``, ``901`` (genres A, B) and user ``new-x`` have features and no ratings."""
    rng = np.random.default_rng(seed)
    genre = np.where(rng.random(n_items) < 0.5, "A", "B")
    kind = np.where(rng.random(n_users) < 0.5, "x", "y")
    u, i = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    match = (genre[i] == "A") == (kind[u] == "x")
    r = np.clip(np.where(match, 4.5, 2.0) + 0.3 * rng.standard_normal(n), 1, 5)
    import pandas as pd

    frame = pd.DataFrame({"user_id": [f"u{j}" for j in u], "item_id": i + 100, "rating": r.astype(np.float32)})
    frame = frame.drop_duplicates(["user_id", "item_id"])
    data = Interactions.from_frame(frame, rating_scale=(1.0, 5.0))
    items = Features.from_pairs(np.r_[np.arange(n_items) + 100, 900, 901],
                                [f"genre={g}" for g in genre] + ["genre=A", "genre=B"], owner="item")
    users = Features.from_pairs([f"u{j}" for j in range(n_users)] + ["new-x"],
                                [f"kind={k}" for k in kind] + ["kind=x"], owner="user")
    return replace(data, item_features=items, user_features=users)


@pytest.fixture(scope="module")
def genre_model() -> tuple[BayesianFM, Interactions]:
    data = genre_ratings()
    return BayesianFM(n_factors=4, n_sweeps=120, burn_in=40, max_samples=40, seed=0).fit(data), data


def test_new_items_and_users_are_predicted_from_their_features(genre_model: tuple[BayesianFM, Interactions]) -> None:
    model, data = genre_model
    assert model.user_features_.names.to_list() == ["kind=x", "kind=y"]
    x_users = [u for u in data.user_map.ids if model.user_features_.rows([u])[0, 0] > 0][:10]
    y_users = [u for u in data.user_map.ids if model.user_features_.rows([u])[0, 0] == 0][:10]
    # item 900 (genre A) is liked by kind x and disliked by kind y; item 901 (B) the other way round
    for item, fans, others in ((900, x_users, y_users), (901, y_users, x_users)):
        pred_fans, pred_others = model.predict(fans, [item] * 10), model.predict(others, [item] * 10)
        assert pred_fans.mean() > 3.9 and pred_others.mean() < 2.6
    detail = model.predict_detailed([x_users[0]], [900])
    assert detail.fallback.tolist() == [2]  # the id had no ratings (scored from its features)
    # a new user known only by kind x likes genre A items, known or new
    a_items = [i for i in data.item_map.ids if model.item_features_.rows([i])[0, 0] > 0][:10]
    assert model.predict(["new-x"] * 10, a_items).mean() > 3.9
    assert model.predict("new-x", [900, 901]).tolist()[0] > 3.9 > model.predict("new-x", [901])[0]
    # without features a new item falls back to the user's bias: both new items look the same
    plain = BayesianFM(n_factors=4, n_sweeps=30, burn_in=10, max_samples=10, user_features=False,
                       item_features=False, seed=0).fit(data)
    np.testing.assert_array_equal(plain.predict(x_users, [900] * 10), plain.predict(x_users, [901] * 10))


def test_fold_in_item_equals_an_item_known_only_by_features(genre_model: tuple[BayesianFM, Interactions],
                                                              tmp_path: Path) -> None:
    """A new item added from its features predicts exactly as an item that was in the training
    features with no rating (known answer), and is then ranked, saved and loaded like the others."""
    fitted, data = genre_model
    model = BayesianFM.load(fitted.save(tmp_path / "m"))  # a copy: the fixture stays as fitted
    users = list(data.user_map.ids[:30])
    want = model.predict(users, [900] * len(users))
    model.fold_in_item(950, ["genre=A", "genre=unseen"])  # the unknown feature is ignored
    assert 950 in model.item_map_ and model.item_factors_.shape[0] == len(model.item_map_)
    np.testing.assert_allclose(model.predict(users, [950] * len(users)), want, rtol=1e-5, atol=1e-5)
    assert model.predict_detailed(users[:1], [950]).fallback.tolist() == [0]  # now a model item
    # the ranking takes it: for users of kind x it outranks the genre-B newcomer added the same way
    model.fold_in_item(Features.from_pairs([951], ["genre=B"]))
    x_users = [u for u in users if model.user_features_.rows([u])[0, 0] > 0]
    scores = model.score_rows(model.user_map_.to_index(x_users).astype(np.int64))
    col = model.item_map_.to_index([950, 951])
    assert (scores[:, col[0]] > scores[:, col[1]]).all()
    assert model.similar_items(950, 3).ids.size == 3
    with pytest.raises(CfrecError, match="already in the model"):
        model.fold_in_item(100, ["genre=A"])
    again = BayesianFM.load(model.save(tmp_path / "grown"))
    np.testing.assert_allclose(again.predict(users, [950] * len(users)), want, rtol=1e-5, atol=1e-5)


def test_features_improve_held_out_rmse() -> None:
    data = genre_ratings(seed=1, n=1000)  # few ratings per id: the features carry the signal
    rng = np.random.default_rng(0)
    test = rng.random(len(data)) < 0.2
    train, held = data.subset(~test), data.subset(test)
    kwargs = dict(n_factors=4, n_sweeps=80, burn_in=20, max_samples=30, seed=0)

    def rmse(model: BayesianFM) -> float:
        pred = model.fit(train).predict(held.raw_users(), held.raw_items())
        return float(np.sqrt(np.mean((pred - held.ratings) ** 2)))

    with_features = rmse(BayesianFM(**kwargs))
    without = rmse(BayesianFM(**kwargs, user_features=False, item_features=False))
    assert with_features < without - 0.05


def test_fold_in_of_a_training_user_reproduces_its_predictions(genre_model: tuple[BayesianFM, Interactions]) -> None:
    model, data = genre_model
    user = data.user_map.ids[3]
    mine = data.subset(data.users == 3)
    folded = model.fold_in(mine.raw_items(), mine.ratings)
    items = data.item_map.ids[:30]
    # the new user is an id column of its own (not the user's features): close, not equal
    diff = model.predict(folded, items) - model.predict(user, items)
    assert np.sqrt(np.mean(diff ** 2)) < 0.35
    assert np.corrcoef(model.predict(folded, items), model.predict(user, items))[0, 1] > 0.9
    # a folded user also gets the features' prediction for a new item: the one of its own kind
    np.testing.assert_allclose(model.predict(folded, [900, 901]), model.predict(user, [900, 901]), atol=0.35)


def test_fold_in_from_features_equals_a_user_known_only_by_features(
        genre_model: tuple[BayesianFM, Interactions]) -> None:
    """A new user folded in from features alone predicts and ranks exactly as the user that was
    in the training features with no rating ("new-x", kind x), not by the cold-start list."""
    model, data = genre_model
    folded = model.fold_in(features=["kind=x"])
    assert folded.n_ratings == 0 and folded.state == {"features": True, "unknown_features": []}
    items = list(data.item_map.ids) + [900, 901]
    np.testing.assert_allclose(model.predict(folded, items), model.predict(["new-x"] * len(items), items),
                               rtol=1e-5, atol=1e-5)
    assert model.recommend(folded, 10).ids.tolist() == model.recommend("new-x", 10).ids.tolist()
    cold = model.recommend("nobody", 10).ids.tolist()  # an id with neither ratings nor features
    assert model.recommend(folded, 10).ids.tolist() != cold
    # the same through a mapping, and with a feature the model never saw (ignored, reported)
    other = model.fold_in((), features={"kind=x": 1.0, "kind=z": 1.0})
    assert other.state["unknown_features"] == ["kind=z"]
    np.testing.assert_allclose(model.predict(other, items), model.predict(folded, items), rtol=1e-6)


def test_a_user_known_by_features_gets_the_items_of_its_taste(genre_model: tuple[BayesianFM, Interactions]) -> None:
    """Planted taste: kind x rates genre A 4.5 and genre B 2; a feature-only user of each kind is
    recommended items of its kind's genre, and adding a few ratings keeps the taste."""
    model, data = genre_model
    genre_a = {i for i in data.item_map.ids if model.item_features_.rows([i])[0, 0] > 0}
    for kind, liked in (("kind=x", True), ("kind=y", False)):
        top = model.recommend(model.fold_in(features=[kind]), 10).ids.tolist()
        assert all((i in genre_a) == liked for i in top), (kind, top)
    a_items = sorted(genre_a)[:3]
    both = model.fold_in(a_items, [4.5, 5.0, 4.0], features=["kind=x"])
    assert both.n_ratings == 3 and both.state["features"]
    top = model.recommend(both, 10).ids.tolist()
    assert all(i in genre_a for i in top) and not set(top) & set(a_items)
    # no features and no ratings: the cold-start list; features on a model without them: an error
    nothing = model.fold_in(features=[])
    assert model.recommend(nothing, 10).ids.tolist() == model.recommend("nobody", 10).ids.tolist()
    plain = BayesianFM(n_factors=2, n_sweeps=6, burn_in=2, max_samples=3, user_features=False, seed=0).fit(data)
    with pytest.raises(CfrecError, match="without user features"):
        plain.fold_in(features=["kind=x"])


def test_a_batch_ranks_users_known_by_features_as_one_at_a_time(
        genre_model: tuple[BayesianFM, Interactions]) -> None:
    """In a batch, a user known only by features gets its own list (not the cold-start list), the
    same as asked alone; known and wholly unknown users are unchanged beside it."""
    model, data = genre_model
    users = np.array(["new-x", data.user_map.ids[0], "nobody", "new-x", data.user_map.ids[1]], dtype=object)
    candidates = data.item_map.ids[::2]
    for kwargs in ({}, {"candidates": candidates}, {"exclude_seen": False}):
        batch = model.recommend(users, 7, **kwargs)
        for j, user in enumerate(users):
            one = model.recommend(user, 7, **kwargs)
            assert batch[j].ids.tolist() == one.ids.tolist(), (user, kwargs)
            np.testing.assert_allclose(batch[j].scores, one.scores, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(batch[j].ratings, one.ratings, rtol=1e-5, atol=1e-5)
    cold = model.recommend("nobody", 7).ids.tolist()
    assert model.recommend(users, 7)[0].ids.tolist() != cold  # the feature user is not the cold list


def test_fold_in_with_features_moves_towards_the_training_user(genre_model: tuple[BayesianFM, Interactions]) -> None:
    """A training user's own ratings and features give a row like its training row (features,
    id, rated set): closer to its learned predictions than its ratings alone."""
    model, data = genre_model
    items = data.item_map.ids[:40]
    errors = []
    for u in range(6):
        user = data.user_map.ids[u]
        mine = data.subset(data.users == u)
        kind = "kind=x" if model.user_features_.rows([user])[0, 0] > 0 else "kind=y"
        for feats in (None, [kind]):
            pred = model.predict(model.fold_in(mine.raw_items(), mine.ratings, features=feats), items)
            errors.append(float(np.sqrt(np.mean((pred - model.predict(user, items)) ** 2))))
    plain, featured = np.mean(errors[0::2]), np.mean(errors[1::2])
    assert featured < plain


def test_missing_terms_recover_a_planted_map() -> None:
    """The expected terms of the columns a new entity lacks: a rating-weighted least-squares map
    from [1, features]; recovered exactly when the training entities' terms are linear in them."""
    rng = np.random.default_rng(0)
    n, n_feat, k = 200, 3, 2
    feats = sp.csr_array((rng.random((n, n_feat)) < 0.4).astype(np.float64))
    truth = rng.standard_normal((1 + n_feat, 1 + k))
    target = np.asarray(sp.hstack([np.ones((n, 1)), feats]).tocsr() @ truth)  # (n, 1 + k)
    rest = sp.csr_array(sp.identity(n, format="csr"))  # one id column each: its own [w, v]
    counts = rng.integers(1, 50, n).astype(np.float64)
    fitted = MissingTerms(rest, feats, counts, ridge=1e-9).fit(target[:, 0], target[:, 1:])
    np.testing.assert_allclose(fitted, truth, atol=1e-6)
    # without features it is the rating-weighted mean
    mean = MissingTerms(rest, None, counts).fit(target[:, 0], target[:, 1:])
    np.testing.assert_allclose(mean[0], counts @ target / counts.sum(), atol=1e-9)


def test_save_load_keeps_the_features(genre_model: tuple[BayesianFM, Interactions], tmp_path: Path) -> None:
    model, data = genre_model
    loaded = Recommender.load(model.save(tmp_path / "bfm"))
    assert isinstance(loaded, BayesianFM)
    assert loaded.item_features_ is not None and loaded.user_features_ is not None
    assert loaded.item_features_.names.to_list() == model.item_features_.names.to_list()
    users = ["u1", "u2", "new-x", "nobody"]
    items = [900, 901, 100, 100]
    np.testing.assert_array_equal(loaded.predict(users, items), model.predict(users, items))
    folded = data.subset(data.users == 5)
    np.testing.assert_array_equal(loaded.predict(loaded.fold_in(folded.raw_items(), folded.ratings), [900, 101]),
                                  model.predict(model.fold_in(folded.raw_items(), folded.ratings), [900, 101]))


def test_registry_and_parameter_checks() -> None:
    assert isinstance(make_model("bfm"), BayesianFM)
    assert isinstance(make_model("bayesian-fm"), BayesianFM)
    with pytest.raises(Exception, match="burn_in"):
        BayesianFM(n_sweeps=10, burn_in=10)
    with pytest.raises(Exception, match="implicit_include_valid"):
        BayesianFM(implicit=False, implicit_items=False, implicit_include_valid=True)


@pytest.mark.slow
def test_ml100k_u1_with_release_features(ml100k_dir: Path) -> None:
    """The release's own features reach the model through the fold and help on u1 (short chains)."""
    from cfrec.data import load_dataset, predefined_split

    data = load_dataset(ml100k_dir)
    split = predefined_split("u1", data_home=ml100k_dir.parent, data=data)
    assert split.train.item_features is not None and split.train.user_features is not None
    model = BayesianFM(n_sweeps=40, burn_in=10, seed=0).fit(split.train)
    pred = model.predict(split.test.raw_users(), split.test.raw_items())
    assert float(np.sqrt(np.mean((pred - split.test.ratings) ** 2))) < 0.91


def day_ratings(seed: int = 0, n_users: int = 60, n_items: int = 50, n: int = 4000) -> Interactions:
    """Ratings with a planted (user, day) effect: each user rates on three days, one of them
    its bad day (ratings 1.2 lower), besides user and item effects (noise 0.2)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    u, i, d = rng.integers(0, n_users, n), rng.integers(0, n_items, n), rng.integers(0, 3, n)
    bad = rng.integers(0, 3, n_users)
    r = 3.2 + 0.5 * rng.standard_normal(n_users)[u] + 0.5 * rng.standard_normal(n_items)[i]
    r = np.clip(r - 1.2 * (d == bad[u]) + 0.2 * rng.standard_normal(n), 1, 5)
    ts = 1_700_000_000 + d * 86400 * 3 + rng.integers(0, 3600, n)
    frame = pd.DataFrame({"user_id": u, "item_id": i, "rating": r.astype(np.float32), "timestamp": ts})
    return Interactions.from_frame(frame.drop_duplicates(["user_id", "item_id"]), rating_scale=(1.0, 5.0))


def test_user_day_learns_a_planted_day_effect(tmp_path: Path) -> None:
    data = day_ratings()
    rng = np.random.default_rng(0)
    test = rng.random(len(data)) < 0.2
    train, held = data.subset(~test), data.subset(test)
    kwargs = dict(n_factors=2, n_sweeps=60, burn_in=20, max_samples=20, seed=0)
    model = BayesianFM(**kwargs, user_day=True).fit(train)
    users, items = held.raw_users(), held.raw_items()

    def rmse(pred: np.ndarray) -> float:
        return float(np.sqrt(np.mean((pred - held.ratings) ** 2)))

    at = model.predict_at(users, items, held.timestamps)
    assert model.uses_timestamps and len(model.day_users_) == len(np.unique(
        np.c_[train.users, train.timestamps // 86400], axis=0))
    assert rmse(at.ratings) < 0.35 < rmse(model.predict(users, items))  # the day terms carry the effect
    np.testing.assert_array_equal(at.fallback, model.predict_detailed(users, items).fallback)
    # a day the user has no training rating on, and a model without user_day: no day terms
    later = held.timestamps + 400 * 86400
    np.testing.assert_array_equal(model.predict_at(users, items, later).ratings, model.predict(users, items))
    plain = BayesianFM(**kwargs).fit(train)
    assert not plain.uses_timestamps
    # without a time, a user's typical day stands in: about the plain model's predictions
    assert abs(rmse(model.predict(users, items)) - rmse(plain.predict(users, items))) < 0.03
    np.testing.assert_array_equal(plain.predict_at(users, items, held.timestamps).ratings,
                                  plain.predict(users, items))
    loaded = BayesianFM.load(model.save(tmp_path / "day"))
    np.testing.assert_array_equal(loaded.predict_at(users, items, held.timestamps).ratings, at.ratings)
    with pytest.raises(ValueError, match="timestamps"):
        model.predict_at(users, items, held.timestamps[:3])
    # the evaluation protocols give the model the test ratings' timestamps
    from cfrec.evaluation import evaluate

    assert evaluate(model, held, metrics=["rmse"])["rmse"] == pytest.approx(rmse(at.ratings), rel=1e-5)
