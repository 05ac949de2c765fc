"""Base-class behaviour (cold start, fold-in, ranking, persistence) with known answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cfrec.data import Interactions
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models import FoldedUser, Recommender
from cfrec.models.baseline import Baseline
from cfrec.models.mf import BiasedMF
from cfrec.models.persistence import current_version
from cfrec.models.svdpp import SVDpp
from cfrec.ranking import rank
from cfrec.testing import make_ratings


def _frame(rows: list[tuple]) -> Interactions:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0))


@pytest.fixture
def additive() -> Interactions:
    """Ratings exactly mu + b_u + b_i (mu=3, b_u=(+1,-1,0), b_i=(+0.5,-0.5))."""
    return _frame([("a", 1, 4.5), ("a", 2, 3.5), ("b", 1, 2.5), ("b", 2, 1.5), ("c", 1, 3.5), ("c", 2, 2.5)])


# ---------------------------------------------------------------------- predictions and fallbacks
def test_unregularised_baseline_recovers_additive_ratings(additive: Interactions) -> None:
    model = Baseline(reg_user=0.0, reg_item=0.0, iterations=50).fit(additive)
    np.testing.assert_allclose(model.predict(additive.raw_users(), additive.raw_items()), additive.ratings,
                               atol=1e-5)
    assert model.global_mean_ == pytest.approx(3.0)
    np.testing.assert_allclose(model.item_bias_, [0.5, -0.5], atol=1e-5)
    # unknown user -> mu + b_i; unknown item -> mu + b_u; both -> mu
    pred = model.predict_detailed(["zz", "a", "zz"], [1, 99, 99])
    np.testing.assert_allclose(pred.ratings, [3.5, 4.0, 3.0], atol=1e-5)
    assert pred.fallback.tolist() == [1, 2, 3]


def test_predictions_are_clipped_to_the_training_scale() -> None:
    data = _frame([("a", 1, 5.0), ("a", 2, 5.0), ("b", 1, 5.0), ("c", 2, 1.0), ("d", 3, 1.0)])
    model = Baseline(reg_user=0.0, reg_item=0.0, iterations=50).fit(data)
    raw = model._predict_known(np.array([0]), np.array([0]))
    pred = model.predict(["a"], [1])
    assert pred[0] == pytest.approx(min(max(raw[0], 1.0), 5.0))
    everything = model.predict(np.repeat(["a", "b", "c", "d"], 3), np.tile([1, 2, 3], 4))
    assert everything.min() >= 1.0 and everything.max() <= 5.0


# ---------------------------------------------------------------------- ranking
def test_recommend_ranks_by_score_and_pads() -> None:
    data = _frame([("a", 1, 4.5), ("a", 2, 3.5), ("b", 1, 2.5), ("b", 3, 4.0), ("c", 3, 5.0), ("c", 4, 1.0)])
    model = Baseline(reg_user=0.0, reg_item=0.0, iterations=50).fit(data)
    # user a has seen 1 and 2: left are 3 and 4, ranked by item bias; k larger than what is left
    recs = model.recommend("a", k=10)
    assert recs.ids.tolist() == [3, 4]
    idx, scores = rank(model.score_rows, model.user_map_.to_index(np.array(["a"])), 4, k=4,
                       exclude=model.seen_)
    assert idx[0, 2:].tolist() == [-1, -1] and np.isneginf(scores[0, 2:]).all()
    batch = model.recommend(["a", "b"], k=3)
    assert batch.lengths.tolist() == [2, 2] and batch.ids[0].tolist() == [3, 4, None]
    assert np.isnan(batch.ratings[0, 2]) and np.isneginf(batch.scores[0, 2])
    with pytest.raises(CfrecError, match="k must be"):
        model.recommend("a", k=0)


def test_recommend_for_unknown_user_is_the_support_shrunk_bias_list() -> None:
    data = _frame([("a", 1, 1.0), ("b", 2, 5.0), ("c", 3, 3.0), ("d", 2, 5.0), ("d", 3, 3.0)])
    model = Baseline(reg_user=1.0, reg_item=1.0).fit(data)
    recs = model.recommend("stranger", k=3)
    assert recs.ids.tolist() == [2, 3, 1]
    # the list ranks by mu + b_i * n_i / (n_i + median n); the predicted ratings stay mu + b_i
    idx = model.item_map_.to_index(np.array([2, 3, 1]))
    n = np.array([2.0, 2.0, 1.0])
    np.testing.assert_allclose(recs.scores, model.global_mean_ + model.item_bias_[idx] * n / (n + 2.0), rtol=1e-5)
    np.testing.assert_allclose(recs.ratings, model.predict("stranger", [2, 3, 1]), rtol=1e-6)
    assert "shrunk" in model.cold_start_label


def test_cold_start_list_is_not_topped_by_a_rarely_rated_item() -> None:
    """An item two people loved does not outrank one forty people liked in a new user's list,
    though its bias (and predicted rating) is higher."""
    rows = [(f"u{u}", 1, 5.0) for u in range(2)] + [(f"v{u}", 2, 4.0 + (u % 2)) for u in range(40)]
    rows += [(f"w{u}", i, 3.0) for u in range(40) for i in (3, 4, 5)]
    model = Baseline(reg_user=0.1, reg_item=0.1).fit(_frame(rows))
    assert model.predict("stranger", [1])[0] > model.predict("stranger", [2])[0]
    assert model.recommend("stranger", k=1).ids.tolist() == [2]


def test_folded_user_predictions_and_exclusions() -> None:
    data = make_ratings()
    model = BiasedMF(n_factors=6, epochs=10, batch_size=128, lr=0.02).fit(data)
    folded = model.fold_in([100, 101, 424242], [5, 1, 3])  # the unknown item is ignored
    assert folded.n_ratings == 2 and sorted(folded.seen.tolist()) == sorted(
        model.item_map_.to_index(np.array([100, 101])).tolist())
    pred = model.predict_detailed(folded, [102, 99999])
    assert pred.fallback.tolist() == [0, 2]
    assert pred.ratings[1] == pytest.approx(np.clip(model.global_mean_ + folded.bias, 1, 5))
    idx = model.item_map_.to_index(np.array([102]))[0]
    by_hand = model.global_mean_ + folded.bias + model.item_bias_[idx] + model.item_factors_[idx] @ folded.factors
    assert pred.ratings[0] == pytest.approx(np.clip(by_hand, 1, 5), rel=1e-5)
    assert {100, 101}.isdisjoint(model.recommend(folded, k=38).ids.tolist())
    assert len(model.recommend(folded, k=38, exclude_seen=False).ids) == 38


# ---------------------------------------------------------------------- fold-in
def test_fold_in_solves_the_ridge_problem() -> None:
    data = make_ratings()
    model = BiasedMF(n_factors=4, epochs=5, batch_size=128).fit(data)
    items, ratings, lam = [100, 103, 107, 111, 120], np.array([5.0, 4.0, 2.0, 1.0, 3.0]), 0.7
    idx = model.item_map_.to_index(np.array(items))
    q = model.item_factors_[idx].astype(np.float64)
    x = np.hstack([np.ones((5, 1)), q])
    resid = ratings - model.global_mean_ - model.item_bias_[idx]
    sol = np.linalg.solve(x.T @ x + lam * np.eye(5), x.T @ resid)
    folded = model.fold_in(items, ratings, reg=lam)
    assert folded.bias == pytest.approx(sol[0], abs=1e-5)
    np.testing.assert_allclose(folded.factors, sol[1:], atol=1e-5)
    # the default strength is the model's fold_in_reg
    default = model.fold_in(items, ratings)
    explicit = model.fold_in(items, ratings, reg=model.fold_in_reg)
    np.testing.assert_array_equal(default.factors, explicit.factors)


def test_bias_only_fold_in_is_a_shrunk_mean_residual(additive: Interactions) -> None:
    model = Baseline(reg_user=0.0, reg_item=0.0, iterations=50).fit(additive)
    folded = model.fold_in([1, 2], [5.0, 4.0], reg=2.0)  # residuals vs mu+b_i: 1.5, 1.5
    assert folded.bias == pytest.approx(3.0 / (2 + 2.0), abs=1e-6)
    assert folded.factors.shape == (0,)
    assert model.predict(folded, [1])[0] == pytest.approx(3.5 + 0.75, abs=1e-5)


def test_fold_in_with_no_known_item_is_neutral() -> None:
    model = BiasedMF(n_factors=4, epochs=2).fit(make_ratings())
    folded = model.fold_in([999999], [5.0])
    assert isinstance(folded, FoldedUser) and folded.n_ratings == 0
    assert folded.bias == 0.0 and not folded.factors.any()
    np.testing.assert_allclose(model.predict(folded, [100, 101]), model.predict("nobody", [100, 101]), rtol=1e-6)


# ---------------------------------------------------------------------- similar items
def test_similar_items_known_answer() -> None:
    model = BiasedMF(n_factors=2, epochs=1).fit(make_ratings(n_items=40))
    emb = np.zeros((40, 2), dtype=np.float32)
    emb[:, 0] = 1.0  # all items point along x ...
    emb[1] = [1.0, 1.0]  # ... except 101 (45 degrees), 102 (opposite) and 103 (a zero vector)
    emb[2] = [-1.0, 0.0]
    emb[3] = [0.0, 0.0]
    factors = np.empty_like(emb)
    factors[model.item_map_.to_index(np.arange(100, 140))] = emb  # row i of emb is raw item 100 + i
    model.item_factors_ = factors
    sims = model.similar_items(101, k=39)
    assert 101 not in sims.ids.tolist() and 103 not in sims.ids.tolist()  # query and zero vector excluded
    assert sims.ids[-1] == 102 and sims.scores[-1] == pytest.approx(-np.sqrt(0.5), abs=1e-6)
    assert sims.scores[0] == pytest.approx(np.sqrt(0.5), abs=1e-6)
    assert Baseline().fit(make_ratings()).item_embeddings().shape == (40, 0)


# ---------------------------------------------------------------------- persistence
def test_save_replaces_an_existing_model_atomically(tmp_path: Path) -> None:
    data = make_ratings()
    first = Baseline().fit(data)
    second = Baseline(reg_user=50.0).fit(data)
    path = tmp_path / "model"
    first.save(path)
    second.save(path)
    loaded = Recommender.load(path)
    assert loaded.get_params()["reg_user"] == 50.0
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temporary or backup folders left behind


def test_save_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ModelFileError, match="not a cfrec model folder"):
        Baseline().fit(make_ratings()).save(target)
    assert (target / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_item_metadata_survives_persistence(tmp_path: Path) -> None:
    data = make_ratings()
    info = pd.DataFrame({"title": [f"Movie {i}" for i in range(100, 140)], "year": [1990 + i % 10 for i in range(40)],
                         "genres": [["Drama"] if i % 2 else ["Comedy", "Romance"] for i in range(40)]},
                        index=pd.Index(range(100, 140), name="item_id"))
    from dataclasses import replace

    model = BiasedMF(n_factors=4, epochs=2).fit(replace(data, item_info=info))
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert loaded.item_info_.loc[105, "title"] == "Movie 105"
    assert list(loaded.item_info_.loc[100, "genres"]) == ["Comedy", "Romance"]


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = current_version(Baseline().fit(make_ratings()).save(tmp_path / "m"))
    assert path is not None
    meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    meta["format_version"] = 999
    (path / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileError, match="newer"):
        Recommender.load(path)


# ---------------------------------------------------------------------- cold start on real data
@pytest.mark.slow
@pytest.mark.parametrize("factory", [BiasedMF, SVDpp], ids=["mf", "svdpp"])
def test_fold_in_beats_the_bias_fallback_for_held_out_ml100k_users(factory, ml100k_dir: Path) -> None:
    """50 users removed from training; half of each one's ratings (the earliest) folded in, the
    rest predicted. Measured RMSE 0.920 (mf) / 0.907 (svdpp) against 1.045-1.049 for mu + b_i."""
    df = pd.read_csv(ml100k_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    held = np.random.default_rng(0).choice(df["user_id"].unique(), 50, replace=False)
    train = Interactions.from_frame(df[~df["user_id"].isin(held)], rating_scale=(1.0, 5.0))
    model = factory().fit(train)
    err_fold, err_fallback = [], []
    for user, rows in df[df["user_id"].isin(held)].sort_values("timestamp", kind="stable").groupby("user_id"):
        half = len(rows) // 2
        given, hidden = rows.iloc[:half], rows.iloc[half:]
        folded = model.fold_in(given["item_id"].to_numpy(), given["rating"].to_numpy())
        truth = hidden["rating"].to_numpy(dtype=np.float64)
        err_fold.append(model.predict(folded, hidden["item_id"].to_numpy()) - truth)
        err_fallback.append(model.predict(np.full(len(hidden), user), hidden["item_id"].to_numpy()) - truth)
    rmse_fold = float(np.sqrt(np.mean(np.concatenate(err_fold) ** 2)))
    rmse_fallback = float(np.sqrt(np.mean(np.concatenate(err_fallback) ** 2)))
    assert rmse_fold < rmse_fallback - 0.05, (rmse_fold, rmse_fallback)


# ---------------------------------------------------------------------- one user at a time
def _string_items(data: Interactions) -> Interactions:
    frame = pd.DataFrame({"user_id": data.raw_users(), "item_id": [f"i{v}" for v in data.raw_items()],
                          "rating": data.ratings})
    return Interactions.from_frame(frame, rating_scale=(1.0, 5.0))


@pytest.mark.parametrize(("name", "string_items"), [("mf", False), ("mf", True), ("ials", False),
                                                    ("pop", False)])
def test_one_user_paths_equal_the_batch_paths(name: str, string_items: bool) -> None:
    """recommend, similar_items, predict and score of one raw id (the one-row paths a service
    calls) give exactly what the batch paths give for a one-element array."""
    from cfrec.models import make_model
    from cfrec.models.registry import param_names
    from cfrec.ranking import top_k

    data = make_ratings()
    if string_items:
        data = _string_items(data)
    cls_params = {"seed": 0} if "seed" in param_names(type(make_model(name))) else {}
    model = make_model(name, **cls_params).fit(data)
    items = model.item_map_.to_list()
    n_items = len(items)
    cands = [items[3], items[0], items[7], "no-such-item"]
    for user in [*model.user_map_.to_list()[:12], "nobody"]:
        for k in (1, 7, n_items):
            for exclude in (True, False):
                for candidates in (None, cands):
                    one = model.recommend(user, k, exclude_seen=exclude, candidates=candidates)
                    batch = model.recommend(np.array([user], dtype=object), k, exclude_seen=exclude,
                                            candidates=candidates)[0]
                    assert one.ids.tolist() == batch.ids.tolist()
                    np.testing.assert_array_equal(one.scores, batch.scores)
                    assert (one.ratings is None) == (batch.ratings is None)
                    if one.ratings is not None:
                        np.testing.assert_array_equal(one.ratings, batch.ratings)
    # a folded-in user: the list top_k makes of the folded user's score row
    rng = np.random.default_rng(0)
    for n_rated in (0, 1, 5):
        chosen = [items[i] for i in rng.choice(n_items, n_rated, replace=False)]
        folded = model.fold_in(chosen or ["no-such-item"], rng.uniform(1, 5, max(n_rated, 1)))
        row = (model._score_folded(folded, np.arange(n_items)) if folded.n_ratings
               else model._cold_user_scores())
        for k in (1, 7, n_items):
            recs = model.recommend(folded, k)
            seen = folded.seen.astype(np.int64)
            ex = sp.csr_array((np.ones(len(seen), np.float32), seen, [0, len(seen)]), shape=(1, n_items))
            idx, top = top_k(np.array(row, dtype=np.float32)[None, :], k, exclude=ex)
            n = int((idx[0] >= 0).sum())
            assert recs.ids.tolist() == model.item_map_.to_raw(idx[0, :n]).tolist()
            np.testing.assert_array_equal(recs.scores, top[0, :n])
    user, item = model.user_map_.to_list()[2], items[5]
    np.testing.assert_array_equal(model.predict(user, item), model.predict([user], [item]))
    np.testing.assert_array_equal(model.predict("nobody", item), model.predict(["nobody"], [item]))
    u = model.user_map_.index_of(user)
    np.testing.assert_allclose(model.score(user, items), model.score_rows(np.array([u]))[0], rtol=1e-5)
    np.testing.assert_allclose(model.score("nobody", [item]), model._cold_user_scores()[[5]])
    assert np.isnan(model.score(user, "no-such-item")[0])
    if name != "pop":
        for q in items[:10]:
            one = model.similar_items(q, 6)
            batch = model.similar_items([q], 6)[0]
            assert one.ids.tolist() == batch.ids.tolist() and q not in one.ids.tolist()
            np.testing.assert_array_equal(one.scores, batch.scores)
        with pytest.raises(CfrecError, match="unknown item id"):
            model.similar_items("no-such-item", 3)


def test_which_models_have_similar_items_is_what_the_readme_says() -> None:
    """``has_similar_items`` is the one answer; the README names the models without it."""
    import re

    from cfrec.models.registry import make_model

    data = make_ratings()
    specs = {"baseline": {}, "pop": {}, "mf": {"epochs": 1}, "itemknn": {}, "ease": {}}
    without = set()
    for name, params in specs.items():
        model = make_model(name, **params).fit(data)
        if model.has_similar_items:
            assert len(model.similar_items(data.raw_items()[0], k=2)) >= 1, name
        else:
            without.add(name)
            with pytest.raises(CfrecError, match="no item embeddings"):
                model.similar_items(data.raw_items()[0], k=2)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    said = re.search(r"`similar_items` needs [^.]*?every model but ([^(]*)\(", " ".join(readme.split()))
    assert said and set(re.findall(r"`([\w-]+)`", said.group(1))) == without == {"baseline", "pop"}
