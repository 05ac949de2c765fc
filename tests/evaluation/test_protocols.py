"""Offline protocols: ``evaluate`` on a hand-computed case, metric selection, the known/new error
breakdown, cross-validation aggregates, model resolution and the popularity baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions, make_splits, make_synthetic
from cfrec.errors import CfrecError
from cfrec.evaluation import (
    cross_validate,
    error_breakdown,
    evaluate,
    evaluate_detailed,
    holdout,
    metric_names,
    resolve_model,
    run_protocol,
)
from cfrec.models.baseline import Baseline
from cfrec.models.popularity import PopularityRecommender


def frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    df["timestamp"] = np.arange(len(df), dtype=np.int64)
    return df


@pytest.fixture
def hand_case() -> tuple[Baseline, Interactions, Interactions]:
    """Items 1..5 ranked 1 > 2 > 3 > 4 > 5 for everyone (item biases only)."""
    train_rows = [("a", 1, 4), ("b", 2, 4), ("c", 1, 3), ("c", 2, 3), ("d", 3, 3), ("d", 4, 3), ("d", 5, 3)]
    test_rows = [("a", 2, 5), ("a", 4, 4), ("a", 5, 2), ("a", 9, 5),  # item 9 unknown to the model
                 ("b", 3, 3),  # b has no relevant test item
                 ("e", 1, 4)]  # e is a new user
    full = frame(train_rows + test_rows)
    data = Interactions.from_frame(full, rating_scale=(1, 5))
    n_train = len(train_rows)
    train = data.subset(np.arange(n_train))
    test = data.subset(np.arange(n_train, len(full)))
    model = Baseline().fit(train)
    model.user_bias_ = np.zeros_like(model.user_bias_)
    model.item_bias_ = np.array([0.5, 0.4, 0.3, 0.2, 0.1], dtype=np.float32)
    return model, train, test


def test_evaluate_hand_computed(hand_case) -> None:
    model, train, test = hand_case
    res = evaluate(model, test, train=train, k=2)
    # a: candidates 2,3,4,5 -> top2 [2,3]; relevant {2,4,9}: P=1/2 R=1/3 AP=1/2 RR=1 NDCG=1/(1+1/log2 3)
    # e (new): bias ranking [1,2]; relevant {1}: P=1/2 R=1 AP=1 RR=1 NDCG=1. b excluded.
    ndcg_a = 1 / (1 + 1 / math.log2(3))
    assert res["precision@2"] == pytest.approx(0.5)
    assert res["recall@2"] == pytest.approx((1 / 3 + 1) / 2)
    assert res["map@2"] == pytest.approx((0.5 + 1) / 2)
    assert res["mrr@2"] == pytest.approx(1.0)
    assert res["hit_rate@2"] == pytest.approx(1.0)
    assert res["ndcg@2"] == pytest.approx((ndcg_a + 1) / 2)
    # lists: a [2,3], b [1,3] (2 seen), e [1,2] -> items {1,2,3} of 5
    assert res["coverage@2"] == pytest.approx(3 / 5)
    assert res["ranking_users"] == 2 and res["ranking_users_excluded"] == 1
    mu = model.global_mean_
    expected = np.array([mu + 0.4, mu + 0.2, mu + 0.1, mu, mu + 0.3, mu + 0.5])
    assert res["rmse"] == pytest.approx(np.sqrt(np.mean((test.ratings - expected) ** 2)), abs=1e-6)
    assert res["mae"] == pytest.approx(np.mean(np.abs(test.ratings - expected)), abs=1e-6)
    assert (res["personalised"], res["unknown_user"], res["unknown_item"], res["unknown_both"]) == (4, 1, 1, 0)
    assert res["n_test"] == 6


def test_relevance_threshold_and_none(hand_case) -> None:
    model, _, test = hand_case
    strict = evaluate(model, test, k=2, relevance=5.0, metrics=["recall@2"])
    # a: relevant {2, 9} -> hit 2 -> 1/2 ; e: none (4 < 5) ; b none
    assert strict["recall@2"] == pytest.approx(0.5)
    assert strict["ranking_users"] == 1
    every = evaluate(model, test, k=2, relevance=None, metrics=["hit_rate@2"])
    assert every["ranking_users"] == 3  # b's item 3 counts now (b's list [1,3] hits it)
    assert every["hit_rate@2"] == pytest.approx(1.0)


def test_metric_selection() -> None:
    assert metric_names(None, 5)[:3] == ["rmse", "mae", "precision@5"]
    assert metric_names("rmse,NDCG,hr@3,mrr", 10) == ["rmse", "ndcg@10", "hit_rate@3", "mrr@10"]
    with pytest.raises(CfrecError, match="unknown metric 'auc'"):
        metric_names(["auc"], 10)
    with pytest.raises(CfrecError, match="takes no cut-off"):
        metric_names(["rmse@5"], 10)
    with pytest.raises(CfrecError, match="positive integer"):
        metric_names(None, 0)


def test_rating_only_skips_ranking(hand_case, monkeypatch) -> None:
    model, _, test = hand_case

    def boom(*a, **k):
        raise AssertionError("scoring all items must not run without ranking metrics")

    monkeypatch.setattr(model, "score_rows", boom)
    res = evaluate(model, test, metrics="rmse")
    assert "rmse" in res and "ranking_users" not in res and "mae" not in res


def test_several_cutoffs_and_empty_test(hand_case) -> None:
    model, _, test = hand_case
    res = evaluate(model, test, metrics=["ndcg@1", "ndcg@3", "precision@1"])
    assert set(res) >= {"ndcg@1", "ndcg@3", "precision@1"}
    with pytest.raises(CfrecError, match="empty"):
        evaluate(model, test.subset(np.zeros(len(test), dtype=bool)))


@pytest.fixture(scope="module")
def synth() -> Interactions:
    return make_synthetic(120, 60, 2500, seed=3)


def test_breakdown_partitions_and_recombines(synth) -> None:
    split = make_splits(synth, "temporal:0.3")[0]
    model = Baseline().fit(split.train)
    ev = evaluate_detailed(model, split.test, metrics=["rmse"])
    bd = ev.breakdown
    parts = ["known user & item", "new user", "new item", "new user & item"]
    assert sum(bd[p].n for p in parts) == len(split.test)
    sse = sum(bd[p].n * bd[p].rmse ** 2 for p in parts if bd[p].n)
    assert sse / len(split.test) == pytest.approx(ev.metrics["rmse"] ** 2)
    assert bd["known users"].n + bd["new users"].n == len(split.test)
    cold = split.cold_start()
    assert bd["new users"].n == cold.unknown_user
    assert bd["new user"].n + bd["new item"].n + bd["new user & item"].n == cold.unknown_either
    assert bd["all"].rmse == pytest.approx(ev.metrics["rmse"])
    assert "| new users |" in bd.to_markdown()


def test_error_breakdown_empty_group_is_nan(hand_case) -> None:
    model, _, test = hand_case
    pred = model.predict_detailed(test.raw_users(), test.raw_items())
    bd = error_breakdown(test.ratings, pred)
    assert bd["new user & item"].n == 0 and math.isnan(bd["new user & item"].rmse)
    assert bd.to_dict()["new user & item"]["rmse"] is None


def test_cross_validate_aggregates(synth) -> None:
    splits = make_splits(synth, "cv3", seed=0)
    seen = []
    res = cross_validate("baseline", splits, k=5, on_model=lambda m, s: seen.append((m.is_fitted, s.name)))
    assert len(res.folds) == 3 and all(f for f, _ in seen)
    rmses = np.array([f.metrics["rmse"] for f in res.folds])
    assert res.mean()["rmse"] == pytest.approx(rmses.mean())
    assert res.std()["rmse"] == pytest.approx(rmses.std(ddof=1))
    assert res.mean()["fit_seconds"] > 0
    md = res.to_markdown()
    assert "| mean | std |" in md and "ndcg@5" in md
    blob = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert blob["protocol"] == "cv" and len(blob["folds"]) == 3
    # k-fold test parts partition the data: pooled breakdown covers every rating once
    assert res.breakdown()["all"].n == len(synth)


def test_holdout_single_fold_std_nan(synth) -> None:
    split = make_splits(synth, "random:0.2", seed=1)[0]
    res = holdout(Baseline(reg_user=2.0), split, metrics=["rmse", "ndcg@10"])
    assert len(res.folds) == 1 and math.isnan(res.std()["rmse"])
    assert res.params["reg_user"] == 2.0
    assert json.loads(json.dumps(res.to_dict(), allow_nan=False))["std"]["rmse"] is None


def test_run_protocol_uses_make_splits(synth) -> None:
    res = run_protocol("baseline", synth, "temporal:0.25", metrics="rmse")
    direct = Baseline().fit(make_splits(synth, "temporal:0.25")[0].train)
    assert res.folds[0].metrics["rmse"] == pytest.approx(
        evaluate(direct, make_splits(synth, "temporal:0.25")[0].test, metrics="rmse")["rmse"])
    assert res.folds[0].cold_start["unknown_user_share"] >= 0


def test_resolve_model() -> None:
    make, name = resolve_model("baseline:reg_user=2.5,iterations=3")
    m = make()
    assert isinstance(m, Baseline) and m.reg_user == 2.5 and m.iterations == 3 and not m.is_fitted
    assert name == "baseline:reg_user=2.5,iterations=3"
    proto = Baseline(reg_item=7.0)
    clone = resolve_model(proto)[0]()
    assert clone is not proto and clone.reg_item == 7.0
    assert isinstance(resolve_model("pop")[0](), PopularityRecommender)
    with pytest.raises(CfrecError, match="unknown model"):
        resolve_model("nosuchmodel")
    with pytest.raises(CfrecError, match="expected NAME=VALUE"):
        resolve_model("baseline:reg_user")
    with pytest.raises(CfrecError, match="baseline:bogus=1"):
        resolve_model("baseline:bogus=1")


def test_popularity_ranks_by_count_and_excludes_seen(tiny) -> None:
    pop = PopularityRecommender().fit(tiny)
    counts = tiny.item_counts()
    order = tiny.item_map.to_raw(np.argsort(-counts, kind="stable"))
    # user 5 rated 10 and 14; the rest by popularity
    recs = pop.recommend(5, k=3)
    assert list(recs.ids) == [i for i in order if i not in (10, 14)][:3]
    assert all(counts[tiny.item_map.to_index(recs.ids)][:-1] >= counts[tiny.item_map.to_index(recs.ids)][1:])
    new = pop.recommend("nobody", k=5)  # unknown users get the same popularity list
    assert list(new.ids) == list(order[:5])
    with pytest.raises(NotImplementedError):
        pop.item_embeddings()  # no factors
    with pytest.raises(CfrecError, match="no item embeddings"):
        pop.similar_items(10)


def test_popularity_persistence(tiny, tmp_path) -> None:
    from cfrec.models.base import Recommender

    pop = PopularityRecommender().fit(tiny)
    back = Recommender.load(pop.save(tmp_path / "pop"))
    np.testing.assert_array_equal(back.item_counts_, pop.item_counts_)
    assert list(back.recommend(1, k=3).ids) == list(pop.recommend(1, k=3).ids)


@pytest.mark.slow
def test_ranking_ml1m_sized_is_fast() -> None:
    """All 6040 users of an ML-1M-sized catalogue (3706 items, 1M ratings) ranked and scored."""
    rng = np.random.default_rng(0)
    n_users, n_items = 6040, 3706
    weight = 1.0 / (np.arange(n_items) + 20.0) ** 0.9  # power-law item popularity
    items = rng.choice(n_items, size=1_150_000, p=weight / weight.sum())
    users = rng.integers(0, n_users, size=len(items))
    keys = rng.choice(np.unique(users.astype(np.int64) * n_items + items), 1_000_000, replace=False)
    df = pd.DataFrame({"user_id": keys // n_items, "item_id": keys % n_items,
                       "rating": rng.integers(1, 6, size=len(keys)).astype(np.float32)})
    df["timestamp"] = rng.permutation(len(df))
    data = Interactions.from_frame(df, rating_scale=(1, 5))
    split = make_splits(data, "random:0.2", seed=0)[0]
    model = Baseline().fit(split.train)
    model.user_factors_ = rng.normal(0, 0.3, (len(model.user_map_), 32)).astype(np.float32)
    model.item_factors_ = rng.normal(0, 0.3, (len(model.item_map_), 32)).astype(np.float32)
    ev = evaluate_detailed(model, split.test)
    assert ev.metrics["ranking_users"] + ev.metrics["ranking_users_excluded"] == len(np.unique(split.test.users))
    assert data.n_users == n_users and data.n_items == n_items
    assert ev.metrics["ranking_users"] > 6000 and len(split.test) == 200_000


@pytest.mark.slow
def test_ml100k_folds_baseline_and_popularity(ml100k_dir, data_home) -> None:
    from cfrec.data import load_dataset

    data = load_dataset("ml-100k", data_home=data_home)
    splits = make_splits(data, "folds", data_home=data_home)
    base = cross_validate("baseline", splits, protocol="folds")
    pop = cross_validate("pop", splits, protocol="folds", metrics=["ndcg@10", "recall@10"])
    # Surprise's BaselineOnly scores about 0.944 on u1..u5; cfrec's closed-form biases likewise.
    assert 0.93 < base.mean()["rmse"] < 0.96
    assert pop.mean()["ndcg@10"] > 0.05  # popularity is a real baseline on ML-100K
    assert base.mean()["ranking_users"] > 400


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_matches_brute_force_per_user(seed) -> None:
    """The vectorised pipeline (id mapping, seen exclusion, relevance, averaging) against a plain
    per-user loop over model.predict and scikit-learn's ndcg_score."""
    from sklearn.metrics import ndcg_score

    data = make_synthetic(40, 30, 600, seed=seed)
    split = make_splits(data, "random:0.3", seed=seed)[0]
    model = Baseline().fit(split.train)
    rng = np.random.default_rng(seed)
    model.user_factors_ = rng.normal(0, 0.5, (len(model.user_map_), 3)).astype(np.float32)
    model.item_factors_ = rng.normal(0, 0.5, (len(model.item_map_), 3)).astype(np.float32)
    k = 5
    res = evaluate(model, split.test, k=k)
    train_df, test_df = split.train.to_frame(), split.test.to_frame()
    catalogue = model.item_map_.ids
    ndcgs, recalls, precisions, hits = [], [], [], []
    for user, rows in test_df.groupby("user_id"):
        relevant = set(rows.loc[rows.rating >= 4, "item_id"])
        if not relevant:
            continue
        seen = set(train_df.loc[train_df.user_id == user, "item_id"])
        cands = np.array([i for i in catalogue if i not in seen])
        c_idx = model.item_map_.to_index(cands)
        if user in model.user_map_:  # unclipped scores decide the order
            scores = model._predict_known(np.full(len(cands), model.user_map_.to_index(user)), c_idx)
        else:  # an unknown user is ranked by mu + b_i
            scores = model.global_mean_ + model.item_bias_[c_idx]
        top = cands[np.argsort(-scores, kind="stable")[:k]]
        n_hit = sum(1 for i in top if i in relevant)
        precisions.append(n_hit / k)
        recalls.append(n_hit / len(relevant))
        hits.append(float(n_hit > 0))
        y_true = np.array([1.0 if i in relevant else 0.0 for i in cands])
        ideal = min(len(relevant), k)
        # relevant items outside the candidate set still count in the ideal DCG
        dcg_scale = ndcg_score(y_true[None], scores[None], k=k) if y_true.sum() else 0.0
        ideal_in = min(int(y_true.sum()), k)
        disc = 1 / np.log2(np.arange(2, k + 2))
        ndcgs.append(dcg_scale * disc[:ideal_in].sum() / disc[:ideal].sum())
    assert res["ranking_users"] == len(ndcgs)
    assert res["precision@5"] == pytest.approx(np.mean(precisions))
    assert res["recall@5"] == pytest.approx(np.mean(recalls))
    assert res["hit_rate@5"] == pytest.approx(np.mean(hits))
    assert res["ndcg@5"] == pytest.approx(np.mean(ndcgs))


def test_summarize_test_reports_ranking_for_ranking_only_models() -> None:
    from cfrec.data import make_splits, make_synthetic
    from cfrec.evaluation.protocols import summarize_test
    from cfrec.models.neumf import NeuMF

    split = make_splits(make_synthetic(80, 50, 2000, seed=4), "random:0.2", seed=0)[0]
    scores = summarize_test(NeuMF(mode="implicit", epochs=1, n_factors=4, mlp_layers=(8, 4)).fit(split.train),
                         split.test)
    assert scores["rmse"] is None and scores["mae"] is None
    assert 0.0 <= scores["ndcg@10"] <= 1.0 and 0.0 <= scores["recall@10"] <= 1.0
    rating = summarize_test(NeuMF(epochs=1, n_factors=4, mlp_layers=(8, 4)).fit(split.train), split.test)
    assert rating["rmse"] is not None and "ndcg@10" not in rating


def test_chunked_ranking_metrics_equal_unchunked(monkeypatch) -> None:
    """Full-ranking metrics for every user are computed in bounded chunks; chunking changes nothing."""
    import cfrec.evaluation.protocols as protocols
    from cfrec.data import make_splits, make_synthetic
    from cfrec.models.ials import IALS
    from cfrec.ranking import rank

    split = make_splits(make_synthetic(300, 120, 6000, seed=2), "random:0.2", seed=0)[0]
    model = IALS(n_factors=4, iterations=3).fit(split.train)
    names = ["ndcg@10", "recall@5", "map@10", "coverage@10"]
    whole = evaluate(model, split.test, metrics=names)
    calls: list[int] = []

    def tiny(*args, **kwargs):
        calls.append(1)
        return rank(*args, **{**kwargs, "budget": 120 * 7})  # seven users a chunk

    monkeypatch.setattr(protocols, "rank", tiny)
    chunked = evaluate(model, split.test, metrics=names)
    assert calls and chunked == whole


def test_rating_predictions_are_made_in_bounded_chunks(monkeypatch) -> None:
    """A test part is predicted a chunk of pairs at a time: the same values, and the memory of
    the per-pair factor rows gathered by the model stays that of one chunk, not of the test part."""
    import tracemalloc

    import cfrec.evaluation.protocols as protocols
    from cfrec.data import make_splits, make_synthetic
    from cfrec.models.mf import BiasedMF

    split = make_splits(make_synthetic(400, 300, 60_000, seed=3), "random:0.5", seed=0)[0]
    model = BiasedMF(n_factors=128, epochs=1).fit(split.train)
    whole = model.predict_detailed(split.test.raw_users(), split.test.raw_items())
    sizes: list[int] = []
    predict = model.predict_detailed

    def spy(users, items):
        sizes.append(len(users))
        return predict(users, items)

    monkeypatch.setattr(model, "predict_detailed", spy)
    monkeypatch.setattr(protocols, "PREDICT_CHUNK", 1000)
    tracemalloc.start()
    try:
        chunked = evaluate(model, split.test, metrics=["rmse", "mae"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(sizes) == 1000 and sum(sizes) == len(split.test)
    assert chunked["rmse"] == pytest.approx(float(np.sqrt(np.mean((whole.ratings - split.test.ratings) ** 2))))
    pred = protocols.predict_pairs(model, split.test.raw_users(), split.test.raw_items(), chunk=777)
    np.testing.assert_array_equal(pred.ratings, whole.ratings)
    np.testing.assert_array_equal(pred.fallback, whole.fallback)
    gathered = len(split.test) * 128 * 4  # one (pairs x factors) float32 gather of the whole part
    assert peak < gathered / 2, (peak, gathered)
