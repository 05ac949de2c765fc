"""Implicit-feedback ALS: exact half-steps, the objective, block structure, scale, persistence."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cfrec.models.als_solvers as solvers
from cfrec.data import Interactions, load_dataset, make_splits
from cfrec.errors import CfrecError
from cfrec.evaluation import evaluate
from cfrec.models import FoldedUser, Recommender
from cfrec.models.als_solvers import RatingSide
from cfrec.models.ials import IALS
from cfrec.models.popularity import PopularityRecommender
from tests.models.conftest import large_sparse_ratings


def two_blocks(n_per_group: int = 20, block: int = 10, per_user: int = 6, seed: int = 0) -> Interactions:
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
    return IALS(n_factors=2, reg=0.5, alpha=2.0, iterations=6, seed=0).fit(blocks)


def _dense_objective(data: Interactions, x: np.ndarray, y: np.ndarray, alpha: float, reg_u: np.ndarray,
                     reg_i: np.ndarray) -> float:
    """The iALS objective written out over the full (small) users x items matrix."""
    c = np.ones((data.n_users, data.n_items))
    pref = np.zeros_like(c)
    c[data.users, data.items] += alpha * data.ratings
    pref[data.users, data.items] = 1.0
    s = x.astype(np.float64) @ y.astype(np.float64).T
    return float((c * (pref - s) ** 2).sum() + reg_u @ (x.astype(np.float64) ** 2).sum(1)
                 + reg_i @ (y.astype(np.float64) ** 2).sum(1))


# ---------------------------------------------------------------------- known answers
def test_recommendations_come_from_the_users_block(fitted: IALS) -> None:
    for user in ("a00", "a07", "b03", "b19"):
        recs = fitted.recommend(user, k=3)
        block = range(0, 10) if user.startswith("a") else range(10, 20)
        assert len(recs.ids) == 3 and set(recs.ids.tolist()) <= set(block), (user, recs.ids)


def test_loss_decreases_every_iteration_and_matches_dense_objective(blocks: Interactions) -> None:
    model = IALS(n_factors=4, reg=0.5, alpha=2.0, iterations=8, seed=1).fit(blocks)
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
        w = solvers.confidence_minus_one(data.ratings, 1.5, kind, 2.0)
        reg = np.full(data.n_users, 0.7, dtype=np.float32)
        x = solvers.implicit_solve_numpy(side, q, w[side.order], reg)
        c = np.ones((data.n_users, data.n_items))
        pref = np.zeros_like(c)
        c[data.users, data.items] += w
        pref[data.users, data.items] = 1.0
        y = q.astype(np.float64)
        for u in (0, 7, 33):
            a = (y * c[u][:, None]).T @ y + 0.7 * np.eye(3)
            np.testing.assert_allclose(x[u], np.linalg.solve(a, y.T @ (c[u] * pref[u])), rtol=1e-4, atol=1e-5)
        # the torch (CUDA) path solves the same systems
        xt = solvers.implicit_solve_torch(side, torch.as_tensor(q), torch.as_tensor(w[side.order]),
                                          torch.as_tensor(reg))
        np.testing.assert_allclose(xt.numpy(), x, rtol=1e-4, atol=1e-5)


def test_weighted_reg_and_log_confidence_fit(blocks: Interactions) -> None:
    model = IALS(n_factors=4, reg=0.1, alpha=3.0, iterations=5, confidence="log", eps=0.5,
                 weighted_reg=True).fit(blocks)
    losses = [h["train_loss"] for h in model.history_]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    data = blocks.compact()
    reg_u = 0.1 * np.bincount(data.users, minlength=data.n_users)
    reg_i = 0.1 * np.bincount(data.items, minlength=data.n_items)
    c_minus_1 = 3.0 * np.log1p(data.ratings.astype(np.float64) / 0.5)
    # _dense_objective weighs rated pairs 1 + alpha * rating: pass the log confidences as ratings
    scaled = Interactions(data.users, data.items, c_minus_1.astype(np.float32), data.timestamps,
                          data.user_map, data.item_map, (0.0, 100.0))
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
    w = solvers.confidence_minus_one(data.ratings, 2.0, "linear", 1.0)
    x = solvers.implicit_solve_numpy(side, fitted.item_factors_, w[side.order],
                                   np.full(data.n_users, 0.5, dtype=np.float32))
    u = int(fitted.user_map_.to_index(np.array(["b05"]))[0])
    frame = blocks.to_frame().query("user_id == 'b05'")
    again = fitted.fold_in(frame["item_id"].to_numpy(), frame["rating"].to_numpy())
    np.testing.assert_allclose(again.factors, x[u], rtol=1e-4, atol=1e-5)
    empty = fitted.fold_in([99999], [5])
    assert empty.n_ratings == 0 and not empty.factors.any()


def test_scores_are_preferences_and_predictions_on_the_scale(fitted: IALS, blocks: Interactions) -> None:
    assert fitted.predicts_ratings is False
    assert not fitted.user_bias_.any() and not fitted.item_bias_.any()
    u = fitted.user_map_.to_index(np.array(["a03"]))
    raw = fitted.user_factors_[u] @ fitted.item_factors_.T
    np.testing.assert_allclose(fitted._score_users(u), raw, rtol=1e-5, atol=1e-5)  # unclipped preferences
    items = fitted.item_map_.ids
    np.testing.assert_allclose(fitted.predict(np.full(len(items), "a03"), items),
                               np.clip(1.0 + 4.0 * raw[0], 1.0, 5.0), rtol=1e-5, atol=1e-5)
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
    for bad in ({"confidence": "exp"}, {"reg": 0.0}, {"alpha": -1.0}, {"n_factors": 0}, {"eps": 0.0}):
        with pytest.raises(CfrecError):
            IALS(**bad).fit(blocks)  # type: ignore[arg-type]
    neg = Interactions(blocks.users, blocks.items, blocks.ratings - 3.0, blocks.timestamps,
                       blocks.user_map, blocks.item_map, (-2.0, 2.0))
    with pytest.raises(CfrecError, match=">= 0"):
        IALS().fit(neg)


# ---------------------------------------------------------------------- configuration and persistence
def test_seed_reproducibility(blocks: Interactions, fitted: IALS) -> None:
    again = IALS(n_factors=2, reg=0.5, alpha=2.0, iterations=6, seed=0).fit(blocks)
    np.testing.assert_array_equal(again.user_factors_, fitted.user_factors_)
    np.testing.assert_array_equal(again.item_factors_, fitted.item_factors_)
    other = IALS(n_factors=2, reg=0.5, alpha=2.0, iterations=6, seed=1).fit(blocks)
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
def test_large_sparse_never_densifies() -> None:
    """200k users x 50k items (10^10 cells) with 1M interactions: well under 1 GB."""
    data = large_sparse_ratings()
    tracemalloc.start()
    try:
        model = IALS(n_factors=8, iterations=2).fit(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.user_factors_.shape == (len(data.present_users()), 8) and len(model.item_factors_) == len(data.present_items())
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
    pop = evaluate(PopularityRecommender().fit(split.train), split.test, train=split.train, k=10, metrics=metrics)
    assert ours["ndcg@10"] > pop["ndcg@10"] + 0.1, (ours, pop)
    assert ours["recall@10"] > pop["recall@10"] + 0.05, (ours, pop)
