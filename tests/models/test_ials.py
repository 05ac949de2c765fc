"""Implicit-feedback ALS: exact and conjugate-gradient half-steps, the objective, block structure,
devices, threads, scale, persistence."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cfrec.data import Interactions, load_dataset, make_splits, make_synthetic_log
from cfrec.engines import cg as cg_mod
from cfrec.engines.backend import NumpyArrays, TorchArrays
from cfrec.engines.cg import NumpyCG, TorchCG, cg_half_step
from cfrec.engines.exact import RatingSide, implicit_solve
from cfrec.engines.matrix import confidence_minus_one, row_weighting
from cfrec.errors import CfrecError
from cfrec.evaluation import evaluate
from cfrec.models import FoldedUser, Recommender
from cfrec.models import ials as ials_mod
from cfrec.models.ials import IALS
from cfrec.models.popularity import PopularityRecommender
from tests.models.conftest import large_sparse_ratings


def two_blocks(
    n_per_group: int = 20, block: int = 10, per_user: int = 6, seed: int = 0
) -> Interactions:
    """Users ``a00..`` rate only items 0..block-1, users ``b00..`` only items block..2*block-1."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, name in enumerate("ab"):
        for u in range(n_per_group):
            for i in rng.choice(block, per_user, replace=False):
                rows.append((f"{name}{u:02d}", int(g * block + i), float(rng.integers(1, 6)), 0))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0), name="blocks")


@pytest.fixture(scope="module")
def blocks() -> Interactions:
    return two_blocks()


@pytest.fixture(scope="module")
def fitted(blocks: Interactions) -> IALS:
    return IALS(weighting=None, n_factors=2, reg=0.5, alpha=2.0, iterations=6, seed=0).fit(blocks)


def _dense_objective(
    data: Interactions,
    x: np.ndarray,
    y: np.ndarray,
    alpha: float,
    reg_u: np.ndarray,
    reg_i: np.ndarray,
) -> float:
    """The iALS objective written out over the full (small) users x items matrix."""
    c = np.ones((data.n_users, data.n_items))
    pref = np.zeros_like(c)
    c[data.users, data.items] += alpha * data.ratings
    pref[data.users, data.items] = 1.0
    s = x.astype(np.float64) @ y.astype(np.float64).T
    return float(
        (c * (pref - s) ** 2).sum()
        + reg_u @ (x.astype(np.float64) ** 2).sum(1)
        + reg_i @ (y.astype(np.float64) ** 2).sum(1)
    )


# ---------------------------------------------------------------------- known answers
def test_recommendations_come_from_the_users_block(fitted: IALS) -> None:
    for user in ("a00", "a07", "b03", "b19"):
        recs = fitted.recommend(user, k=3)
        block = range(0, 10) if user.startswith("a") else range(10, 20)
        assert len(recs.ids) == 3 and set(recs.ids.tolist()) <= set(block), (user, recs.ids)


@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_loss_decreases_every_iteration_and_matches_dense_objective(
    blocks: Interactions, solver: str
) -> None:
    model = IALS(weighting=None, n_factors=4, reg=0.5, alpha=2.0, iterations=8, seed=1, solver=solver).fit(blocks)
    losses = [h["train_loss"] for h in model.history_]
    assert len(losses) == 8 and all("seconds" in h for h in model.history_)
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    data = blocks.compact()
    reg = np.full(data.n_users, 0.5), np.full(data.n_items, 0.5)
    dense = _dense_objective(data, model.user_factors_, model.item_factors_, 2.0, *reg)
    assert losses[-1] * len(data) == pytest.approx(dense, rel=1e-5)


def test_half_step_is_the_exact_minimiser(blocks: Interactions) -> None:
    """Each user's solved vector equals the dense weighted ridge solution, for both rules."""
    data = blocks.compact()
    rng = np.random.default_rng(3)
    q = rng.normal(0, 0.3, (data.n_items, 3)).astype(np.float32)
    side = RatingSide.build(data.users, data.items, data.n_users, data.n_items)
    for kind in ("linear", "log"):
        w = confidence_minus_one(data.ratings, 1.5, kind, 2.0)
        reg = np.full(data.n_users, 0.7, dtype=np.float32)
        x = implicit_solve(NumpyArrays(), side, q, w[side.order], reg)
        c = np.ones((data.n_users, data.n_items))
        pref = np.zeros_like(c)
        c[data.users, data.items] += w
        pref[data.users, data.items] = 1.0
        y = q.astype(np.float64)
        for u in (0, 7, 33):
            a = (y * c[u][:, None]).T @ y + 0.7 * np.eye(3)
            np.testing.assert_allclose(
                x[u], np.linalg.solve(a, y.T @ (c[u] * pref[u])), rtol=1e-4, atol=1e-5
            )
        # the torch (CUDA) path solves the same systems
        xt = implicit_solve(
            TorchArrays(torch.device("cpu")), side, torch.as_tensor(q), torch.as_tensor(w[side.order]), torch.as_tensor(reg)
        )
        np.testing.assert_allclose(xt.numpy(), x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 3])
def test_cg_half_steps_never_increase_objective(blocks: Interactions, steps: int) -> None:
    """Every CG step is an exact line minimisation of each row's objective: the full objective
    over all users x items (written out densely) never increases, even with one step."""
    data = blocks.compact()
    k, alpha, reg = 3, 2.0, 0.5
    engine = NumpyCG(data.users, data.items, data.n_users, data.n_items, width=k, chunk=50)
    us, its = engine.user_side, engine.item_side
    w = confidence_minus_one(data.ratings, alpha, "linear", 1.0)[us.order]
    reg_u, reg_i = (
        np.full((data.n_users, 1), reg, np.float32),
        np.full((data.n_items, 1), reg, np.float32),
    )
    rng = np.random.default_rng(5)
    p = np.zeros((data.n_users, k), np.float32)
    q = rng.normal(0, 0.3, (data.n_items, k)).astype(np.float32)

    def objective() -> float:
        return _dense_objective(data, p, q, alpha, reg_u[:, 0], reg_i[:, 0])

    values = [objective()]
    with engine:
        for _ in range(6):
            p, _ = cg_half_step(
                engine,
                us,
                q,
                p,
                target=None,
                weight=w,
                gram=engine.xp.gram(q),
                diag=reg_u,
                steps=steps,
            )
            values.append(objective())
            q, f = cg_half_step(
                engine,
                its,
                p,
                q,
                target=None,
                weight=w,
                gram=engine.xp.gram(p),
                diag=reg_i,
                steps=steps,
            )
            values.append(objective())
            tracked = (
                len(w)
                + float(w.sum(dtype=np.float64))
                + 2 * f
                + reg * float((p.astype(np.float64) ** 2).sum())
            )
            assert tracked == pytest.approx(values[-1], rel=1e-5)
    assert np.all(np.diff(values) <= 1e-6 * values[0]), values
    assert values[-1] < 0.8 * values[0]


def test_cg_fit_matches_exact_fit(blocks: Interactions) -> None:
    kw = dict(n_factors=4, reg=0.5, alpha=2.0, iterations=15, seed=1, weighting=None)
    exact = IALS(solver="exact", **kw).fit(blocks)
    cg = IALS(solver="cg", cg_steps=3, **kw).fit(blocks)
    assert cg.history_[-1]["train_loss"] == pytest.approx(
        exact.history_[-1]["train_loss"], rel=1e-3
    )
    many = IALS(solver="cg", cg_steps=8, **kw).fit(blocks)
    scores = exact.user_factors_ @ exact.item_factors_.T
    np.testing.assert_allclose(many.user_factors_ @ many.item_factors_.T, scores, atol=2e-3)
    for user in ("a02", "b13"):
        assert set(cg.recommend(user, k=3).ids.tolist()) == set(
            exact.recommend(user, k=3).ids.tolist()
        )


def torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run iALS's CUDA CG code path (torch sparse products) on the CPU."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(
        ials_mod, "cg_engine", lambda _dev, *args, **kw: TorchCG(*args, device=cpu, **kw)
    )


def test_torch_cg_matches_numpy_cg(blocks: Interactions, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(n_factors=4, reg=0.5, alpha=2.0, iterations=5, seed=1)
    ref = IALS(**kw).fit(blocks)
    torch_on_cpu(monkeypatch)
    alt = IALS(**kw).fit(blocks)
    np.testing.assert_allclose(alt.user_factors_, ref.user_factors_, atol=1e-4)
    np.testing.assert_allclose(alt.item_factors_, ref.item_factors_, atol=1e-4)
    assert alt.history_[-1]["train_loss"] == pytest.approx(ref.history_[-1]["train_loss"], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_cuda_matches_cpu(blocks: Interactions, solver: str) -> None:
    kw = dict(n_factors=4, reg=0.5, alpha=2.0, iterations=5, seed=1, solver=solver)
    cpu = IALS(device="cpu", **kw).fit(blocks)
    gpu = IALS(device="cuda", **kw).fit(blocks)
    np.testing.assert_allclose(gpu.item_factors_, cpu.item_factors_, atol=1e-3)
    assert gpu.history_[-1]["train_loss"] == pytest.approx(cpu.history_[-1]["train_loss"], rel=1e-4)


def test_threads_do_not_change_the_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = two_blocks(n_per_group=60, block=30, per_user=12, seed=2)
    monkeypatch.setattr(cg_mod, "CG_CHUNK_MIN", 100)  # several chunks on this small set
    one = IALS(n_factors=4, iterations=3, threads=1).fit(data)
    two = IALS(n_factors=4, iterations=3, threads=2).fit(data)
    np.testing.assert_array_equal(one.user_factors_, two.user_factors_)
    np.testing.assert_array_equal(one.item_factors_, two.item_factors_)


def test_weighted_reg_and_log_confidence_fit(blocks: Interactions) -> None:
    model = IALS(
        weighting=None, n_factors=4, reg=0.1, alpha=3.0, iterations=5, confidence="log", eps=0.5, weighted_reg=True
    ).fit(blocks)
    losses = [h["train_loss"] for h in model.history_]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    data = blocks.compact()
    reg_u = 0.1 * np.bincount(data.users, minlength=data.n_users)
    reg_i = 0.1 * np.bincount(data.items, minlength=data.n_items)
    c_minus_1 = 3.0 * np.log1p(data.ratings.astype(np.float64) / 0.5)
    # _dense_objective weighs rated pairs 1 + alpha * rating: pass the log confidences as ratings
    scaled = Interactions(
        data.users,
        data.items,
        c_minus_1.astype(np.float32),
        data.timestamps,
        data.user_map,
        data.item_map,
        (0.0, 100.0),
    )
    dense = _dense_objective(scaled, model.user_factors_, model.item_factors_, 1.0, reg_u, reg_i)
    assert losses[-1] * len(data) == pytest.approx(dense, rel=1e-5)
    assert set(model.recommend("a01", k=3).ids.tolist()) <= set(range(10))


def test_fold_in_of_own_items_recommends_from_the_block(fitted: IALS, blocks: Interactions) -> None:
    folded = fitted.fold_in([0, 1, 2, 3], [5, 4, 5, 3])
    assert isinstance(folded, FoldedUser) and folded.bias == 0.0 and folded.n_ratings == 4
    recs = fitted.recommend(folded, k=4)
    assert set(recs.ids.tolist()) <= set(range(4, 10))
    other = fitted.recommend(fitted.fold_in([12, 13, 99999], [4, 4, 5]), k=3)
    assert set(other.ids.tolist()) <= set(range(10, 20)) - {12, 13}
    # fold-in is a user half-step against the fitted items
    data = blocks.compact()
    side = RatingSide.build(data.users, data.items, data.n_users, data.n_items)
    w = confidence_minus_one(data.ratings, 2.0, "linear", 1.0)
    x = implicit_solve(
        NumpyArrays(), side, fitted.item_factors_, w[side.order], np.full(data.n_users, 0.5, dtype=np.float32)
    )
    u = int(fitted.user_map_.to_index(np.array(["b05"]))[0])
    frame = blocks.to_frame().query("user_id == 'b05'")
    again = fitted.fold_in(frame["item_id"].to_numpy(), frame["rating"].to_numpy())
    np.testing.assert_allclose(again.factors, x[u], rtol=1e-4, atol=1e-5)
    empty = fitted.fold_in([99999], [5])
    assert empty.n_ratings == 0 and not empty.factors.any()


def test_scores_are_preferences_and_predictions_on_the_scale(
    fitted: IALS, blocks: Interactions
) -> None:
    assert fitted.predicts_ratings is False
    assert not hasattr(fitted, "user_bias_") and not hasattr(fitted, "item_bias_")  # it has none
    u = fitted.user_map_.to_index(np.array(["a03"]))
    raw = fitted.user_factors_[u] @ fitted.item_factors_.T
    np.testing.assert_allclose(
        fitted._score_users(u), raw, rtol=1e-5, atol=1e-5
    )  # unclipped preferences
    items = fitted.item_map_.ids
    np.testing.assert_allclose(
        fitted.predict(np.full(len(items), "a03"), items),
        np.clip(1.0 + 4.0 * raw[0], 1.0, 5.0),
        rtol=1e-5,
        atol=1e-5,
    )
    pred = fitted.predict(blocks.raw_users(), blocks.raw_items())
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    rng = np.random.default_rng(0)
    other = fitted.predict(blocks.raw_users(), rng.choice(fitted.item_map_.ids, len(blocks)))
    assert pred.mean() > other.mean() + 1.0


def test_unknown_user_gets_the_popular_items() -> None:
    data = two_blocks(n_per_group=10, block=5, per_user=2, seed=4)
    model = IALS(n_factors=2, iterations=2).fit(data)
    recs = model.recommend("nobody", k=3)
    counts = data.to_frame()["item_id"].value_counts()
    assert counts.loc[recs.ids].tolist() == sorted(counts.to_numpy(), reverse=True)[:3]


def test_bad_parameters_and_ratings_raise(blocks: Interactions) -> None:
    for bad in (
        {"confidence": "exp"},
        {"reg": 0.0},
        {"alpha": -1.0},
        {"n_factors": 0},
        {"eps": 0.0},
        {"solver": "lu"},
        {"cg_steps": 0},
        {"cg_steps": True},
        {"threads": 0},
    ):
        with pytest.raises(CfrecError):
            IALS(**bad).fit(blocks)
    neg = Interactions(
        blocks.users,
        blocks.items,
        blocks.ratings - 3.0,
        blocks.timestamps,
        blocks.user_map,
        blocks.item_map,
        (-2.0, 2.0),
    )
    with pytest.raises(CfrecError, match=">= 0"):
        IALS().fit(neg)


# -------------------------------------------------------------- configuration and persistence
def test_seed_reproducibility(blocks: Interactions, fitted: IALS) -> None:
    again = IALS(weighting=None, n_factors=2, reg=0.5, alpha=2.0, iterations=6, seed=0).fit(blocks)
    np.testing.assert_array_equal(again.user_factors_, fitted.user_factors_)
    np.testing.assert_array_equal(again.item_factors_, fitted.item_factors_)
    other = IALS(weighting=None, n_factors=2, reg=0.5, alpha=2.0, iterations=6, seed=1).fit(blocks)
    assert not np.array_equal(other.item_factors_, fitted.item_factors_)


def test_save_load_identity(fitted: IALS, blocks: Interactions, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "ials")
    loaded = Recommender.load(path)
    assert type(loaded) is IALS and loaded.get_params() == fitted.get_params()
    assert type(IALS.load(path)) is IALS
    u, i = blocks.raw_users(), blocks.raw_items()
    np.testing.assert_array_equal(loaded.predict(u, i), fitted.predict(u, i))
    users = np.array(["a00", "b11", "nobody"], dtype=object)
    for a, b in zip(loaded.recommend(users, k=5), fitted.recommend(users, k=5), strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    fa, fb = loaded.fold_in([0, 2], [5, 3]), fitted.fold_in([0, 2], [5, 3])
    np.testing.assert_array_equal(fa.factors, fb.factors)
    assert loaded.history_ == fitted.history_


# ---------------------------------------------------------------------- scale
@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_large_sparse_never_densifies(solver: str) -> None:
    """200k users x 50k items (10^10 cells), 1M interactions: well under 1 GB with either solver."""
    data = large_sparse_ratings()
    tracemalloc.start()
    try:
        model = IALS(n_factors=8, iterations=2, solver=solver).fit(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.user_factors_.shape == (len(data.present_users()), 8) and len(
        model.item_factors_
    ) == len(data.present_items())
    assert peak < 1 << 30, f"peak {peak / 2**20:.0f} MiB"
    losses = [h["train_loss"] for h in model.history_]
    assert np.isfinite(losses).all() and losses[1] < losses[0]


# ---------------------------------------------------------------------- real data
@pytest.mark.slow
def test_ml100k_u1_beats_popularity(ml100k_dir: Path) -> None:
    split = make_splits(load_dataset("ml-100k"), "u1")[0]
    metrics = ["ndcg@10", "recall@10"]
    model = IALS().fit(split.train)
    ours = evaluate(model, split.test, train=split.train, k=10, metrics=metrics)
    pop = evaluate(
        PopularityRecommender().fit(split.train),
        split.test,
        train=split.train,
        k=10,
        metrics=metrics,
    )
    assert ours["ndcg@10"] > pop["ndcg@10"] + 0.1, (ours, pop)
    assert ours["recall@10"] > pop["recall@10"] + 0.05, (ours, pop)


def test_fold_in_uses_the_current_factors_after_they_change(blocks: Interactions) -> None:
    """The fold-in caches the items' Gram matrix; new factors (a refit, a load) replace it."""
    model = IALS(weighting=None, n_factors=4, iterations=3, seed=0).fit(blocks)
    items = blocks.raw_items()[:3]
    first = model.fold_in(items).factors
    np.testing.assert_array_equal(model.fold_in(items).factors, first)  # cached: same result
    model.item_factors_ = model.item_factors_ * np.float32(2.0)
    y = model.item_factors_.astype(np.float64)
    idx = model.item_map_.to_index(np.asarray(items))
    w = model._weights(np.full(len(idx), model.rating_scale_[1])).astype(np.float64)
    lam = float(model._reg_diag(np.array([len(idx)]))[0])
    a = y.T @ y + (y[idx] * w[:, None]).T @ y[idx] + lam * np.eye(4)
    expected = np.linalg.solve(a, y[idx].T @ (1.0 + w))
    np.testing.assert_allclose(model.fold_in(items).factors, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- interaction logs
def _as_ratings(log: Interactions, values: np.ndarray) -> Interactions:
    """The same pairs as explicit data whose ratings are ``values``."""
    return Interactions(log.users, log.items, np.asarray(values, dtype=np.float32), log.timestamps,
                        log.user_map, log.item_map, (0.0, float(values.max())))


@pytest.fixture(scope="module")
def small_log() -> Interactions:
    return make_synthetic_log(150, 200, 3000, seed=3)


def test_weights_of_a_log_set_the_confidence(small_log: Interactions) -> None:
    params = dict(n_factors=6, reg=2.0, alpha=1.5, iterations=4, seed=0, weighting=None)
    weighted = IALS(**params).fit(small_log)
    assert small_log.weights is not None and len(np.unique(small_log.weights)) > 3
    # the counts are read: the fit is the one of explicit data rated with the counts ...
    as_ratings = IALS(**params).fit(_as_ratings(small_log, small_log.weights))
    np.testing.assert_allclose(weighted.user_factors_, as_ratings.user_factors_, rtol=1e-4, atol=1e-6)
    # ... and not the one of the binary log (every pair weight 1), which differs
    binary = replace(small_log, weights=np.ones(len(small_log), dtype=np.float32))
    flat = IALS(**params).fit(binary)
    assert np.abs(weighted.user_factors_ - flat.user_factors_).max() > 1e-2
    # with alpha = 0 the confidence is 1 everywhere and the weights cannot matter
    zero = {**params, "alpha": 0.0}
    np.testing.assert_allclose(IALS(**zero).fit(small_log).user_factors_,
                               IALS(**zero).fit(binary).user_factors_, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("weighting", ["bm25", "tfidf"])
def test_weighting_is_the_fit_on_reweighted_values(small_log: Interactions, weighting: str) -> None:
    params = dict(n_factors=5, reg=2.0, alpha=2.0, iterations=3, seed=0, confidence="log", weighting=None)
    model = IALS(**{**params, "weighting": weighting}, bm25_k1=10.0, bm25_b=0.5).fit(small_log)
    data = small_log.compact()
    assert data.weights is not None
    w = row_weighting(data.users, data.items, data.weights, data.n_users, data.n_items,
                      weighting, k1=10.0, b=0.5)
    by_hand = IALS(**params).fit(_as_ratings(data, w))
    np.testing.assert_allclose(model.user_factors_, by_hand.user_factors_, rtol=1e-4, atol=1e-6)


def test_weighting_of_a_fold_in_survives_save_and_load(small_log: Interactions, tmp_path: Path) -> None:
    model = IALS(n_factors=5, iterations=3, weighting="bm25").fit(small_log)
    items = small_log.item_map.to_raw(np.arange(6))
    before = model.fold_in(items).factors
    assert model.weighting_stats_ is not None
    loaded = IALS.load(model.save(tmp_path / "m"))
    assert loaded.weighting_stats_ is not None
    np.testing.assert_allclose(loaded.weighting_stats_.idf, model.weighting_stats_.idf)
    np.testing.assert_allclose(loaded.fold_in(items).factors, before, rtol=1e-6)
    # the fold-in weighs the row: a bm25 model folds in differently from an unweighted one
    plain = IALS(weighting=None, n_factors=5, iterations=3).fit(small_log)
    plain.item_factors_ = model.item_factors_
    assert not np.allclose(plain.fold_in(items).factors, before)


def test_planted_log_structure_is_recovered_better_than_by_popularity() -> None:
    log, truth = make_synthetic_log(400, 500, 12_000, taste=3.0, seed=5, return_truth=True)
    data = log.compact()
    model = IALS(n_factors=16, iterations=8, reg=5.0).fit(data)
    pop = PopularityRecommender().fit(data)
    users = np.arange(data.n_users)
    raw_users = data.user_map.to_raw(users)
    truth_users = log.user_map.to_index(raw_users)
    truth_items = log.item_map.to_index(data.item_map.to_raw(np.arange(data.n_items)))
    planted = truth.affinity(np.repeat(truth_users, data.n_items), np.tile(truth_items, len(users)))
    planted = planted.reshape(len(users), data.n_items)

    def taste_agreement(scores: np.ndarray) -> float:
        """Mean over users of the correlation between a model's scores and the planted taste."""
        s = scores - scores.mean(1, keepdims=True)
        t = planted - planted.mean(1, keepdims=True)
        den = np.sqrt((s * s).sum(1) * (t * t).sum(1))
        return float(np.mean(np.divide((s * t).sum(1), den, out=np.zeros(len(s)), where=den > 0)))

    ials_corr = taste_agreement(model.score_rows(users).astype(np.float64))
    pop_corr = taste_agreement(pop.score_rows(users).astype(np.float64))
    assert ials_corr > 0.3 and ials_corr > pop_corr + 0.2, (ials_corr, pop_corr)


def test_bad_weighting_parameters_raise(small_log: Interactions) -> None:
    with pytest.raises(CfrecError, match="weighting must be None or one of 'bm25', 'tfidf'"):
        IALS(weighting="idf").fit(small_log)
    with pytest.raises(CfrecError, match="bm25_b"):
        IALS(weighting="bm25", bm25_b=2.0).fit(small_log)
