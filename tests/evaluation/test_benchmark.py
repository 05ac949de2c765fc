"""Benchmark: same splits for every model, popularity row and flagging, tables and atomic JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cfrec._io import write_json_atomic
from cfrec.data import Interactions, make_synthetic
from cfrec.errors import CfrecError
from cfrec.evaluation.benchmark import BenchmarkResult, run_benchmark
from cfrec.models.base import EpochCallback
from cfrec.models.factor import FactorRecommender


class RandomFactors(FactorRecommender):
    """A 'personalised' model with random factors: its rankings are noise."""

    name = "random-factors"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        rng = np.random.default_rng(self.seed)
        self.user_bias_ = np.zeros(train.n_users, dtype=np.float32)
        self.item_bias_ = np.zeros(train.n_items, dtype=np.float32)
        self.user_factors_ = rng.normal(size=(train.n_users, 4)).astype(np.float32)
        self.item_factors_ = rng.normal(size=(train.n_items, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def synth() -> Interactions:
    return make_synthetic(150, 80, 4000, seed=11)


def test_offline_benchmark_rows_and_flags(synth) -> None:
    seen_rows = []
    res = run_benchmark(synth, protocol="cv3", models=["baseline", RandomFactors], seed=0, k=5,
                        on_row=seen_rows.append)
    assert [r.model for r in res.rows] == ["pop", "baseline", "RandomFactors"]
    assert len(seen_rows) == 3
    pop, base, rnd = res.rows
    assert not pop.personalised and not base.personalised and rnd.personalised
    assert pop.n_folds == 3 and math.isfinite(pop.std["ndcg@5"])
    # random rankings lose to popularity on power-law data: flagged
    assert rnd.mean["ndcg@5"] < pop.mean["ndcg@5"]
    assert rnd.beats_popularity is False and res.flagged == ["RandomFactors"]
    assert base.beats_popularity is None  # bias-only ranking is not personalised: not judged
    md = res.to_markdown()
    header = md.splitlines()[2]
    assert header == "| model | RMSE | MAE | NDCG@5 | Recall@5 | fit s | predict s |"
    pop_line = next(line for line in md.splitlines() if line.startswith("| pop |"))
    assert pop_line.split("|")[2].strip() == "n/a"  # RMSE n/a for popularity
    assert "RandomFactors (!)" in md and "does not beat the popularity baseline" in md
    assert " ± " in md


def test_benchmark_json_is_atomic_and_strict(synth, tmp_path) -> None:
    res = run_benchmark(synth, protocol="random:0.2", models="baseline", k=10)
    target = tmp_path / "out" / "bench.json"
    write_json_atomic(target, res.to_dict())
    blob = json.loads(target.read_text())
    assert blob["protocol"] == "random:0.2" and blob["rows"][1]["model"] == "baseline"
    assert blob["rows"][1]["std"]["rmse"] is None  # one split: no std
    assert sorted(p.name for p in target.parent.iterdir()) == ["bench.json"]  # no temp file left

    class Boom:
        pass

    before = target.read_text()
    with pytest.raises(TypeError):
        write_json_atomic(target, {"x": Boom()})
    assert target.read_text() == before  # a failed write leaves the old file intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["bench.json"]


def test_online_protocol_columns(synth) -> None:
    res = run_benchmark(synth, protocol="online", models="baseline", popularity=False)
    assert isinstance(res, BenchmarkResult) and [r.model for r in res.rows] == ["baseline"]
    row = res.rows[0]
    assert row.mean["rmse"] < row.mean["offline_rmse"]
    assert {"rmse_known_users", "rmse_new_users", "ndcg@10"} <= set(row.mean)
    assert "RMSE online" in res.to_markdown().splitlines()[2]
    assert row.detail["online"]["groups"][0]["group"] == "all"
    assert row.detail["online"]["reveal"] == "group"
    assert res.to_dict()["same_second"]["n_ratings"] == row.detail["online"]["n_test"]
    assert "Same-second groups:" in res.to_markdown()


def test_online_both_orders(synth) -> None:
    """``online:both`` replays both reveal orders; ``online:rating`` only the rating-by-rating one."""
    coarse = Interactions(synth.users, synth.items, synth.ratings, synth.timestamps // 86400 * 86400,
                          synth.user_map, synth.item_map, synth.rating_scale, name="daily")
    both = run_benchmark(coarse, protocol="online:both", models="baseline", popularity=False)
    rating = run_benchmark(coarse, protocol="online:rating", models="baseline", popularity=False)
    group = run_benchmark(coarse, protocol="online", models="baseline", popularity=False)
    b, r, g = both.rows[0].mean, rating.rows[0].mean, group.rows[0].mean
    assert b["rmse"] == pytest.approx(g["rmse"]) and b["rmse_by_rating"] == pytest.approx(r["rmse"])
    assert b["rmse_peek_gain"] == pytest.approx(r["rmse"] - g["rmse"]) and b["rmse_peek_gain"] != 0
    assert both.rows[0].detail["online_by_rating"]["reveal"] == "rating"
    header = both.to_markdown().splitlines()[2]
    assert "RMSE online | RMSE online by rating | by rating - by group" in header
    assert "RMSE online (by rating)" in rating.to_markdown().splitlines()[2]
    assert both.same_second is not None and both.same_second["n_multi_groups"] > 0
    with pytest.raises(CfrecError, match="online:rating or online:both"):
        run_benchmark(coarse, protocol="online:sideways", models="baseline")


def test_model_list_errors(synth) -> None:
    res = run_benchmark(synth, protocol="random", models="baseline:reg_user=2,iterations=3,pop")
    assert [r.model for r in res.rows] == ["baseline:reg_user=2,iterations=3", "pop"]
    with pytest.raises(CfrecError, match="unknown model"):
        run_benchmark(synth, protocol="random", models="baseline,nonsense")
    with pytest.raises(CfrecError, match="no model"):
        run_benchmark(synth, protocol="random", models="")
    with pytest.raises(CfrecError, match="bad split spec"):
        run_benchmark(synth, protocol="sideways", models="baseline")


@pytest.mark.slow
def test_ml100k_folds_ranking_vs_popularity(ml100k_dir, data_home) -> None:
    """Ranking metrics on u1..u5 for the rating models beside the popularity baseline."""
    from cfrec.data import load_dataset

    data = load_dataset("ml-100k", data_home=data_home)
    res = run_benchmark(data, protocol="folds", models="baseline,als,mf", data_home=data_home)
    pop = res.row("pop")
    assert pop.n_folds == 5 and 0.15 < pop.mean["ndcg@10"] < 0.25  # measured 0.198
    base = res.row("baseline")
    assert base.mean["rmse"] < 0.96 and not base.personalised
    for name in ("als", "mf"):
        row = res.row(name)
        assert row.n_folds == 5 and row.mean["rmse"] < base.mean["rmse"] - 0.02, row.mean
        # rating-trained models rank below most-popular on these folds: flagged, not hidden
        assert row.beats_popularity is False and name in res.flagged
    assert "(!)" in res.to_markdown()


class RankingOnly(RandomFactors):
    """A personalised model whose scores are not ratings (like implicit-feedback NeuMF)."""

    name = "ranking-only"

    @property
    def predicts_ratings(self) -> bool:
        return False


@pytest.mark.parametrize("protocol", ["cv3", "online"])
def test_ranking_only_models_get_no_rating_errors(synth, protocol) -> None:
    res = run_benchmark(synth, protocol=protocol, models=[RankingOnly, "baseline"], seed=0, k=5)
    row = next(r for r in res.rows if r.model == "RankingOnly")
    assert row.predicts_ratings is False and row.personalised
    line = next(ln for ln in res.to_markdown().splitlines() if ln.startswith("| RankingOnly"))
    assert line.split("|")[2].strip() == "n/a"
    base_line = next(ln for ln in res.to_markdown().splitlines() if ln.startswith("| baseline"))
    assert base_line.split("|")[2].strip() != "n/a"
    assert res.to_dict()["rows"][[r.model for r in res.rows].index("RankingOnly")]["predicts_ratings"] is False


def test_neumf_declares_whether_it_predicts_ratings() -> None:
    from cfrec.models.neumf import NeuMF

    assert NeuMF(mode="rating").predicts_ratings is True
    assert NeuMF(mode="implicit").predicts_ratings is False
