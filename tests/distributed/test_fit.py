"""Blocked ALS and iALS: the model of a single-process fit (same seed and iterations), on one
process and on two processes over gloo."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.multiprocessing as mp

from cfrec.distributed import Context, fit_blocked, rank_data
from cfrec.errors import CfrecError
from cfrec.models.base import Recommender
from cfrec.models.baseline import Baseline
from tests.distributed._workers import CASES, case_data, case_model, fit_cases

RTOL = 1e-4


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the largest magnitude of the reference."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case fitted by a job of two processes on gloo (one job: start-up is the cost)."""
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(fit_cases, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return {name: case_model(model, params).fit(case_data(kind)) for name, model, params, kind in CASES}


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_two_ranks_equal_one_process(case: str, two_ranks: Path, single: dict[str, Any]) -> None:
    ref = single[case]
    users, items = np.load(two_ranks / f"{case}-users.npy"), np.load(two_ranks / f"{case}-items.npy")
    assert users.shape == ref.user_factors_.shape and items.shape == ref.item_factors_.shape
    assert _rel(users, ref.user_factors_) <= RTOL
    assert _rel(items, ref.item_factors_) <= RTOL
    if case == "als":
        assert _rel(np.load(two_ranks / f"{case}-user-bias.npy"), ref.user_bias_) <= RTOL
        assert _rel(np.load(two_ranks / f"{case}-item-bias.npy"), ref.item_bias_) <= RTOL
    loss = np.load(two_ranks / f"{case}-loss.npy")
    np.testing.assert_allclose(loss, [r["train_loss"] for r in ref.history_], rtol=1e-5)
    assert np.array_equal(np.load(two_ranks / f"{case}-seen.npy"), ref.seen_.toarray())


def test_bytes_sent_stay_within_the_bound(two_ranks: Path, single: dict[str, Any]) -> None:
    """Rank 0 sends its factor blocks once an iteration (plus a few scalars and the Gram):
    under (users + items) x k x 4 bytes, half the bound for the whole job."""
    for name, model, _params, _ in CASES:
        ref = single[name]
        width = ref.user_factors_.shape[1] + (1 if model == "als" else 0)
        sent = np.load(two_ranks / f"{name}-bytes.npy")
        bound = (ref.user_factors_.shape[0] + ref.item_factors_.shape[0]) * width * 4
        assert np.all(sent > 0) and np.all(sent <= bound), (name, sent, bound)


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_one_process_context_is_the_plain_fit(case: str, single: dict[str, Any]) -> None:
    _, model, params, kind = next(c for c in CASES if c[0] == case)
    ctx = Context.local()
    fitted = fit_blocked(case_model(model, params), rank_data(case_data(kind), 0, 1), ctx)
    ref = single[case]
    assert _rel(fitted.user_factors_, ref.user_factors_) <= RTOL
    assert _rel(fitted.item_factors_, ref.item_factors_) <= RTOL
    assert fitted.user_map_ == ref.user_map_ and fitted.item_map_ == ref.item_map_
    assert fitted.global_mean_ == pytest.approx(ref.global_mean_, rel=1e-12)
    assert ctx.sent.total == 0
    if model == "ials" and ref.weighting_stats_ is not None:
        np.testing.assert_array_equal(fitted.weighting_stats_.idf, ref.weighting_stats_.idf)


def test_refuses_models_without_a_blocked_fit() -> None:
    data = rank_data(case_data("ratings"), 0, 1)
    with pytest.raises(CfrecError, match="Baseline has no distributed fit"):
        fit_blocked(Baseline(), data, Context.local())  # type: ignore[arg-type]
    with pytest.raises(CfrecError, match="solver=cg"):
        fit_blocked(case_model("als", {"solver": "exact"}), data, Context.local())


@pytest.mark.parametrize("model", ["ials", "als"])
def test_resumed_fit_equals_an_uninterrupted_one(model: str, tmp_path: Path) -> None:
    kind = "log" if model == "ials" else "ratings"
    part = rank_data(case_data(kind), 0, 1)
    whole = fit_blocked(case_model(model, {"iterations": 6}), part, Context.local())
    first = fit_blocked(case_model(model, {"iterations": 3}), part, Context.local(), checkpoint=tmp_path)
    assert [r["epoch"] for r in first.history_] == [1, 2, 3]
    resumed = fit_blocked(case_model(model, {"iterations": 6}), part, Context.local(), checkpoint=tmp_path)
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(resumed.user_factors_, whole.user_factors_)
    np.testing.assert_array_equal(resumed.item_factors_, whole.item_factors_)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0-of-1-iter6.safetensors", "state.json"]
    with pytest.raises(CfrecError, match="checkpoints of another job"):
        fit_blocked(case_model(model, {"iterations": 6, "seed": 9}), part, Context.local(), checkpoint=tmp_path)


def test_sharded_lists_equal_one_process(two_ranks: Path, tmp_path: Path) -> None:
    import pandas as pd

    from cfrec.models.export import write_recommendations

    parts = sorted((two_ranks / "recs").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    sharded = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    model = Recommender.load(two_ranks / "model")
    write_recommendations(model, tmp_path / "one.parquet", k=7)
    one = pd.read_parquet(tmp_path / "one.parquet")
    assert len(one) == 7 * len(model.user_map_)
    pd.testing.assert_frame_equal(sharded, one)


def test_sharded_metrics_equal_one_process(two_ranks: Path) -> None:
    import json

    from cfrec.evaluation import evaluate
    from tests.distributed._workers import METRICS, held_out

    model = Recommender.load(two_ranks / "model")
    one = evaluate(model, held_out(), metrics=METRICS)
    assert one["ndcg@10"] > 0
    for rank in (0, 1):
        sharded = json.loads((two_ranks / f"metrics-rank{rank}.json").read_text())
        for name in METRICS:
            assert sharded[name] == pytest.approx(one[name], rel=1e-12, abs=1e-15)
        assert sharded["ranking_users"] == one["ranking_users"]


@pytest.mark.parametrize("case", ["ials-tfidf", "als"])
def test_sharded_test_summary_equals_one_process(case: str, two_ranks: Path) -> None:
    """Each rank scores the test rows of its own users (its model keeps only their seen items):
    the summary equals the one-process summary of the same model."""
    import json

    from cfrec.evaluation.protocols import summarize_test
    from tests.distributed._workers import SUMMARIZED

    model = Recommender.load(two_ranks / f"{case}-model")
    one = summarize_test(model, SUMMARIZED[case]())
    if case == "als":  # users the model does not know are scored too (by rank 0)
        assert one["fallback"]["unknown_user"] > 0
    for rank in (0, 1):
        sharded = json.loads((two_ranks / f"{case}-summary-rank{rank}.json").read_text())
        assert sharded["n"] == one["n"] and sharded["fallback"] == one["fallback"]
        assert sharded["fallback_share"] == pytest.approx(one["fallback_share"], rel=1e-12)
        for key in ("rmse", "mae", "ndcg@10", "recall@10"):
            if one.get(key) is None:
                assert sharded.get(key) is None
            else:
                assert sharded[key] == pytest.approx(one[key], rel=1e-9), key
