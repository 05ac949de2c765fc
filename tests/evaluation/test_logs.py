"""Evaluation protocols on interaction logs: relevance, the popularity of what is recommended,
splits, and rating models refused in one line by fit, the benchmark and tuning."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions, make_synthetic_log
from cfrec.data.split import random_split, user_temporal_split
from cfrec.errors import CfrecError
from cfrec.evaluation import evaluate
from cfrec.evaluation.benchmark import run_benchmark
from cfrec.evaluation.tuning import tune
from cfrec.models.bpr import BPR
from cfrec.models.mf import BiasedMF
from cfrec.models.popularity import PopularityRecommender


@pytest.fixture(scope="module")
def log() -> Interactions:
    return make_synthetic_log(n_users=120, n_items=80, n_pairs=2400, seed=1)


def test_splits_of_a_log_stay_logs(log: Interactions) -> None:
    last = user_temporal_split(log, None, test_count=2)
    frac = user_temporal_split(log, 0.25)
    pairs = random_split(log, 0.2, seed=3)
    for split in (last, frac, pairs):
        assert split.train.is_implicit and split.test.is_implicit
        assert split.train.weights is not None and split.test.weights is not None
        assert len(split.train) + len(split.test) == len(log)
    assert np.all(np.bincount(last.test.users) <= 2)
    # leave-last-n: every test interaction of a user is no earlier than the user's train ones
    tr, te = last.train.to_frame(), last.test.to_frame()
    latest_train = tr.groupby("user_id")["timestamp"].max()
    earliest_test = te.groupby("user_id")["timestamp"].min()
    assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()


def test_every_held_out_interaction_is_relevant_on_a_log(log: Interactions) -> None:
    split = user_temporal_split(log, None, test_count=2)
    model = PopularityRecommender().fit(split.train)
    names = ["ndcg@10", "recall@10", "map@10", "mrr@10", "coverage@10", "popularity@10"]
    res = evaluate(model, split.test, metrics=names)
    assert all(math.isfinite(res[n]) for n in names)
    assert res["ranking_users_excluded"] == 0
    assert evaluate(model, split.test, metrics=names, relevance=None) == res  # the threshold does not apply
    # recall@10 by hand: the share of each user's held-out items in their top 10
    users = split.test.user_map.to_raw(np.unique(split.test.users))
    test = split.test.to_frame()
    recalls = [len(set(r.ids.tolist()) & set(test.loc[test["user_id"] == u, "item_id"])) /
               int((test["user_id"] == u).sum()) for u, r in zip(users, model.recommend(users, k=10), strict=True)]
    assert res["recall@10"] == pytest.approx(float(np.mean(recalls)))


def test_popularity_of_recommended_items_by_hand() -> None:
    df = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 3, 4, 4],
                       "item_id": [10, 11, 12, 10, 11, 10, 13, 14],
                       "timestamp": np.arange(8)})
    train = Interactions.from_frame(df, feedback="implicit")
    test = Interactions.from_frame(pd.DataFrame({"user_id": [3, 4], "item_id": [11, 10], "timestamp": [9, 9]}),
                                   feedback="implicit")
    model = PopularityRecommender().fit(train)
    res = evaluate(model, test, metrics=["popularity@2", "coverage@2"])
    # shares of the 4 training users: 10 -> 3/4, 11 -> 2/4, 12, 13, 14 -> 1/4
    # user 3 (saw 10) gets [11, then a 1/4 item]; user 4 (saw 13, 14) gets [10, 11]
    assert res["popularity@2"] == pytest.approx(((2 / 4 + 1 / 4) / 2 + (3 / 4 + 2 / 4) / 2) / 2)


def test_rating_models_refuse_a_log_in_one_line(log: Interactions) -> None:
    with pytest.raises(CfrecError, match=r"predicts ratings.*ranking model instead: .*ials.*bpr") as exc:
        BiasedMF(epochs=1).fit(log)
    assert "\n" not in str(exc.value)


def test_benchmark_refuses_a_rating_model_before_fitting_anything(log: Interactions) -> None:
    fitted: list[str] = []

    class Counting(PopularityRecommender):
        def _fit(self, *args, **kwargs) -> None:
            fitted.append("pop")
            super()._fit(*args, **kwargs)

    with pytest.raises(CfrecError, match="predicts ratings"):
        run_benchmark(log, protocol="random:0.2", models=[Counting, "mf"], popularity=False)
    assert fitted == []
    with pytest.raises(CfrecError, match="online protocol"):
        run_benchmark(log, protocol="online", models="ease")


def test_benchmark_on_a_log_reports_ranking_metrics(log: Interactions) -> None:
    res = run_benchmark(log, protocol="user-temporal:n=2", models="ease")
    assert res.relevance is None
    keys = [key for key, _ in res.columns()]
    assert "rmse" not in keys and {"map@10", "mrr@10", "coverage@10", "popularity@10"} <= set(keys)
    ease = next(r for r in res.rows if r.model == "ease")
    assert math.isfinite(ease.mean["ndcg@10"]) and 0 < ease.mean["popularity@10"] < 1
    assert "every held-out item" in res.to_markdown()


def test_tune_on_a_log_picks_by_ndcg_and_refuses_rating_models(log: Interactions) -> None:
    split = random_split(log, 0.2, seed=0)
    result = tune(split, "ease", {"lam": [1.0, 50.0]}, seed=0)
    assert result.metric == "ndcg@10" and math.isfinite(result.best_score)
    with pytest.raises(CfrecError, match="predicts ratings"):
        tune(split, "mf", {"n_factors": [4, 8]}, seed=0)


def test_bpr_default_threshold_takes_every_interaction_as_positive(log: Interactions) -> None:
    model = BPR(n_factors=4, epochs=2, seed=0).fit(log)
    assert model.threshold == 4.0
    folded = model.fold_in([int(log.item_map.to_raw(0)), int(log.item_map.to_raw(1))], [1.0, 1.0])
    assert folded.n_ratings == 2 and np.any(folded.factors != 0)
