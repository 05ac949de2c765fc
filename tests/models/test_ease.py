"""EASE: the closed form against a dense solve, the item limit, exact fold-in, persistence, contract."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import cfrec.models.ease as ease_mod
from cfrec.data import Interactions, load_dataset, make_splits, make_synthetic_log
from cfrec.errors import CfrecError, ModelFileError
from cfrec.evaluation import evaluate
from cfrec.models import FoldedUser, Recommender
from cfrec.models.ease import EASE, dense_solve_cost, ease_memory_bytes
from cfrec.models.popularity import PopularityRecommender
from cfrec.testing import RecommenderContract


def random_ratings(n_users: int = 30, n_items: int = 12, per_user: int = 5, seed: int = 0) -> Interactions:
    """Random 1..5 ratings, ``per_user`` distinct items per user; every item rated at least once."""
    rng = np.random.default_rng(seed)
    rows = [(u, int(i), float(rng.integers(1, 6)), 0)
            for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False)]
    rows += [(n_users, i, 4.0, 0) for i in range(n_items)]  # one user who rated everything
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0), name="random")


def dense_ease(data: Interactions, lam: float, threshold: float | None, power: float) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``B`` written out densely: ``B = I - P / diag(P)`` with ``P = (X'X + lam I)^-1``."""
    d = data.compact()
    r = d.ratings.astype(np.float64)
    keep = np.ones(len(r), dtype=bool) if threshold is None else r >= threshold
    x = np.zeros((d.n_users, d.n_items))
    x[d.users[keep], d.items[keep]] = (r[keep] / 5.0) ** power
    p = np.linalg.inv(x.T @ x + lam * np.eye(d.n_items))
    b = np.eye(d.n_items) - p / np.diag(p)[None, :]
    return x, b


@pytest.fixture(scope="module")
def data() -> Interactions:
    return random_ratings()


# ---------------------------------------------------------------------- the closed form
@pytest.mark.parametrize(("lam", "threshold", "power", "dtype"), [
    (3.0, None, 1.5, "float64"), (0.5, 3.0, 0.0, "float64"), (10.0, 4.0, 1.0, "float64"),
    (3.0, None, 1.5, "float32"),
])
def test_matches_dense_reference_solve(data: Interactions, lam: float, threshold: float | None,
                                       power: float, dtype: str) -> None:
    model = EASE(lam=lam, threshold=threshold, rating_power=power, dtype=dtype).fit(data)  # type: ignore[arg-type]
    x, b = dense_ease(data, lam, threshold, power)
    tol = 1e-6 if dtype == "float64" else 2e-4
    assert model.B_.dtype == np.float32 and model.B_.shape == b.shape
    np.testing.assert_allclose(model.B_, b, atol=tol * np.abs(b).max())
    assert not np.diagonal(model.B_).any()
    np.testing.assert_allclose(model.x_.toarray(), x, rtol=1e-6)
    scores = model._score_users(np.arange(x.shape[0]))
    has = x.any(axis=1)  # a user without interactions is scored like an unknown one
    np.testing.assert_allclose(scores[has], (x @ b)[has], atol=tol * np.abs(x @ b).max())
    np.testing.assert_array_equal(scores[~has], np.broadcast_to(model._cold_user_scores(), scores[~has].shape))
    assert model.residual_ < (1e-6 if dtype == "float64" else 1e-3)


def test_blocked_gram_and_solve_match_the_dense_solve(data: Interactions, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks: the Gram matrix in six column blocks on threads, the triangle copy and the
    scaling in row blocks; the upper triangle of ``G`` (all the solve reads) is exact and the
    weights are unchanged."""
    whole = EASE(lam=3.0).fit(data)
    monkeypatch.setattr(ease_mod, "_BLOCK_ENTRIES", 30)
    x = whole.x_.toarray().astype(np.float64)
    g = ease_mod.gram_matrix(whole.x_, 3.0, "float64")
    assert g.flags.f_contiguous
    np.testing.assert_allclose(np.triu(g), np.triu(x.T @ x + 3.0 * np.eye(x.shape[1])), rtol=1e-12)
    blocked = EASE(lam=3.0).fit(data)
    np.testing.assert_allclose(blocked.B_, whole.B_, rtol=1e-6, atol=1e-7)
    _, b = dense_ease(data, 3.0, None, 1.5)
    np.testing.assert_allclose(blocked.B_, b, atol=1e-6 * np.abs(b).max())


def test_weights_solve_the_constrained_least_squares(data: Interactions) -> None:
    """Optimality: ``(X'X + lam I) B - X'X`` is diagonal (the multipliers of ``diag(B) = 0``), so
    no off-diagonal weight can move without raising the objective."""
    model = EASE(lam=2.0).fit(data)
    x = model.x_.toarray().astype(np.float64)
    grad = (x.T @ x + 2.0 * np.eye(x.shape[1])) @ model.B_.astype(np.float64) - x.T @ x
    off = grad - np.diag(np.diag(grad))
    assert np.abs(off).max() < 1e-5 * np.abs(x.T @ x).max()
    # and the objective is below that of nearby feasible matrices
    def objective(b: np.ndarray) -> float:
        return float(((x - x @ b) ** 2).sum() + 2.0 * (b ** 2).sum())
    rng = np.random.default_rng(0)
    best = objective(model.B_.astype(np.float64))
    for _ in range(5):
        step = rng.normal(0, 1e-2, model.B_.shape)
        np.fill_diagonal(step, 0.0)
        assert objective(model.B_ + step) > best


def test_pairs_users_and_predictions_agree(data: Interactions) -> None:
    model = EASE(lam=3.0).fit(data)
    users = np.repeat(np.arange(len(model.user_map_)), len(model.item_map_))
    items = np.tile(np.arange(len(model.item_map_)), len(model.user_map_))
    full = model._score_users(np.arange(len(model.user_map_)))
    np.testing.assert_allclose(model._score_pairs(users, items), full.ravel(), rtol=1e-5, atol=1e-6)
    pred = model.predict(data.raw_users(), data.raw_items())
    s = model._score_pairs(model.user_map_.to_index(data.raw_users()), model.item_map_.to_index(data.raw_items()))
    np.testing.assert_allclose(pred, np.clip(1.0 + 4.0 * s, 1.0, 5.0), rtol=1e-6)
    assert model.predicts_ratings is False
    assert not hasattr(model, "user_bias_") and not hasattr(model, "item_bias_")  # it has none


# ---------------------------------------------------------------------- the item limit
def test_catalogue_above_max_items_is_refused_before_allocating(data: Interactions,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_allocation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Gram matrix must not be formed for a refused catalogue")

    monkeypatch.setattr(ease_mod, "gram_matrix", no_allocation)
    with pytest.raises(CfrecError, match=r"12 items .*max_items=10.*'ials'"):
        EASE(max_items=10).fit(data)


def test_refusal_message_states_the_memory() -> None:
    """ML-25M's 59,047 items: 13.9 GB for the float32 weights, 41.8 GB to fit with float64."""
    assert ease_memory_bytes(59_047, "float32") == (4 * 59_047 ** 2, 4 * 59_047 ** 2)
    with pytest.raises(CfrecError) as info:
        EASE(solver="dense").check_catalogue(59_047)
    msg = str(info.value)
    for part in ("59,047 items", "41.8 GB while fitting", "13.9 GB with dtype='float32'",
                 "13.9 GB for the fitted model", "max_items=20,000", "'ials'", "solver='sparse'"):
        assert part in msg, (part, msg)
    EASE(solver="dense").check_catalogue(20_000)  # at the limit: accepted
    EASE(solver="dense", max_items=60_000).check_catalogue(59_047)
    EASE().check_catalogue(59_047)  # "auto" solves a catalogue that large over neighbours
    # with a cost, the refusal also names the time at the stated rate: 59,047^3 / 100 GFLOP/s
    cost = EASE(solver="dense", solve_gflops=100.0).solve_cost(59_047)
    assert cost.seconds == pytest.approx(59_047 ** 3 / 100e9) and not cost.measured
    with pytest.raises(CfrecError, match=r"about 34 min at 100 GFLOP/s.*solver='sparse'"):
        EASE(solver="dense").check_catalogue(59_047, cost)


def test_bad_parameters_and_ratings_raise(data: Interactions) -> None:
    for bad in ({"lam": 0.0}, {"lam": float("nan")}, {"rating_power": -1.0}, {"threshold": "4"},
                {"max_items": 0}, {"max_items": 2.5}, {"dtype": "float16"}, {"solver": "fast"},
                {"neighbours": 0}, {"neighbours": 1.5}, {"neighbour_rule": "jaccard"},
                {"implicit_weight": "sqrt"}, {"solve_gflops": 0.0}):
        with pytest.raises(CfrecError, match="EASE"):
            EASE(**bad).fit(data)  # type: ignore[arg-type]
    neg = Interactions(data.users, data.items, data.ratings - 3.0, data.timestamps,
                       data.user_map, data.item_map, (-2.0, 2.0))
    with pytest.raises(CfrecError, match="positive ratings"):
        EASE().fit(neg)
    binary = EASE(rating_power=0.0).fit(neg)  # binary interactions need no positive ratings
    assert set(np.unique(binary.x_.data).tolist()) == {1.0}
    EASE(threshold=1.0).fit(neg)  # nor do the kept ratings when the threshold drops the others


# ---------------------------------------------------------------------- fold-in and cold start
def test_fold_in_of_a_training_user_gives_that_users_scores(data: Interactions) -> None:
    model = EASE(lam=3.0, threshold=3.0).fit(data)
    frame = data.to_frame()
    for user in (0, 7, 30):
        rows = frame[frame["user_id"] == user]
        folded = model.fold_in(rows["item_id"].to_numpy(), rows["rating"].to_numpy())
        assert isinstance(folded, FoldedUser) and folded.n_ratings == len(rows)
        u = model.user_map_.to_index(np.array([user]))
        np.testing.assert_allclose(folded.factors, model.x_[u].toarray()[0], rtol=1e-7)
        items = model.item_map_.ids
        np.testing.assert_allclose(model.predict(folded, items), model.predict(user, items), rtol=1e-6)
        a, b = model.recommend(folded, k=5), model.recommend(user, k=5)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_fold_in_applies_the_threshold_and_excludes_every_given_item(data: Interactions) -> None:
    model = EASE(lam=3.0, threshold=4.0, rating_power=0.0).fit(data)
    folded = model.fold_in([0, 1, 2, 99999], [5, 2, 4, 5])
    assert folded.unknown_items == (99999,) and folded.n_ratings == 3
    idx = model.item_map_.to_index(np.array([0, 1, 2]))
    assert folded.factors[idx].tolist() == [1.0, 0.0, 1.0] and folded.factors.sum() == 2.0
    recs = model.recommend(folded, k=9)
    assert not {0, 1, 2} & set(recs.ids.tolist())
    expected = folded.factors @ model.B_
    np.testing.assert_allclose(model._score_folded(folded, np.arange(len(model.item_map_))), expected, rtol=1e-6)
    # without ratings every known item is an interaction of weight 1; the last duplicate wins
    plain = model.fold_in([0, 1, 1])
    assert plain.factors[idx].tolist() == [1.0, 1.0, 0.0] and plain.duplicate_items == (1,)
    again = model.fold_in([1, 0, 1], [5, 5, 1])
    assert again.factors[idx].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(CfrecError, match="rating scale"):
        model.fold_in([0], [7])
    with pytest.raises(CfrecError, match="differ in length"):
        model.fold_in([0, 1], [5])


def test_users_without_interactions_get_the_popular_items(data: Interactions) -> None:
    model = EASE(lam=3.0, threshold=5.0).fit(data)
    frame = data.to_frame()
    per_user_max = frame.groupby("user_id")["rating"].max()
    user = int(per_user_max[per_user_max < 5].index[0])  # every rating below the threshold
    u = model.user_map_.to_index(np.array([user]))
    np.testing.assert_array_equal(model._score_users(u)[0], model._cold_user_scores())
    folded = model.fold_in([0, 1], [2, 3])
    assert folded.n_ratings == 2 and not folded.factors.any()
    np.testing.assert_array_equal(model._score_folded(folded, np.arange(len(model.item_map_))),
                                  model._cold_user_scores())
    nobody = model.recommend("nobody", k=3)
    counts = frame["item_id"].value_counts()
    assert counts.loc[nobody.ids].tolist() == sorted(counts.to_numpy(), reverse=True)[:3]


# ---------------------------------------------------------------------- persistence
def test_save_load_identity(data: Interactions, tmp_path: Path) -> None:
    model = EASE(lam=3.0, threshold=2.0).fit(data)
    path = model.save(tmp_path / "ease")
    loaded = EASE.load(path)
    assert type(loaded) is EASE and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.B_, model.B_)
    assert (loaded.x_ != model.x_).nnz == 0 and loaded.residual_ == model.residual_
    u, i = data.raw_users(), data.raw_items()
    np.testing.assert_array_equal(loaded.predict(u, i), model.predict(u, i))
    for a, b in zip(loaded.recommend([0, 5, "nobody"], k=4), model.recommend([0, 5, "nobody"], k=4), strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(loaded.fold_in([0, 3], [5, 4]).factors, model.fold_in([0, 3], [5, 4]).factors)
    assert type(Recommender.load(path)) is EASE  # through the registry


def test_inconsistent_state_is_a_model_file_error(data: Interactions) -> None:
    model = EASE(lam=3.0).fit(data)
    state = model._state()
    for key, bad in (("B", state["B"][:-1]), ("x_indptr", state["x_indptr"][:-1]),
                     ("x_indices", state["x_indices"] + 100)):
        with pytest.raises(ModelFileError):
            model._set_state({**state, key: bad}, {})
    with pytest.raises(ModelFileError, match="lack"):
        model._set_state({k: v for k, v in state.items() if k != "B"}, {})


def test_similar_items_are_columns_of_b(data: Interactions) -> None:
    model = EASE(lam=3.0).fit(data)
    emb = model.item_embeddings()
    np.testing.assert_array_equal(emb, model.B_.T)
    assert not emb.flags.writeable
    np.testing.assert_allclose(model.user_embeddings() @ emb.T,
                               model._score_users(np.arange(len(model.user_map_))), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- cost and the sparse solve
def test_the_dense_solve_states_its_cost_before_it_starts(data: Interactions, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    solve = ease_mod.ease_solve

    def recording_solve(gram: np.ndarray) -> np.ndarray:
        seen.extend(r.getMessage() for r in caplog.records)  # what was logged before the solve
        return solve(gram)

    monkeypatch.setattr(ease_mod, "ease_solve", recording_solve)
    with caplog.at_level(logging.INFO, logger="cfrec.models.ease"):
        model = EASE(lam=3.0, solve_gflops=2.0).fit(data)
    assert model.solver_ == "dense"
    stated = [m for m in seen if m.startswith("EASE dense solve of 12 items")]
    assert len(stated) == 1, seen
    # 12^3 operations at the stated 2 GFLOP/s: 8.6e-7 s; 12 * 12^2 bytes while fitting
    assert "about 0.0 s (1.7e-09 TFLOP at 2 GFLOP/s stated) and 0 MB while fitting" in stated[0]
    assert model.fit_cost_["estimated_seconds"] == pytest.approx(12 ** 3 / 2e9)
    assert [r.levelno for r in caplog.records if r.getMessage() in stated] == [logging.INFO]


def test_a_long_dense_solve_is_announced_as_a_warning(data: Interactions, caplog: pytest.LogCaptureFixture) -> None:
    """A warning is what the command line shows (it logs at WARNING level)."""
    with caplog.at_level(logging.WARNING, logger="cfrec.models.ease"):
        EASE(lam=3.0, solve_gflops=1e-10).fit(data)  # 12^3 operations at 0.1 operations/s
    (record,) = [r for r in caplog.records if "dense solve" in r.getMessage()]
    assert record.levelno == logging.WARNING and "about 4.8 h" in record.getMessage()


def test_the_measured_rate_is_positive_and_scales_the_estimate() -> None:
    cost = dense_solve_cost(4_000, "float32")
    assert cost.measured and cost.gflops > 0
    assert cost.seconds == pytest.approx(4_000 ** 3 / (cost.gflops * 1e9))
    assert cost.fit_bytes == 4 * 4_000 ** 2


def test_sparse_solve_with_every_neighbour_is_the_dense_solve(data: Interactions) -> None:
    dense = EASE(lam=3.0, solver="dense").fit(data)
    sparse = EASE(lam=3.0, solver="sparse", neighbours=11).fit(data)  # 12 items: all 11 others
    assert sparse.solver_ == "sparse" and sp.issparse(sparse.B_)
    np.testing.assert_allclose(sparse.B_.toarray(), dense.B_, atol=1e-6 * np.abs(dense.B_).max())
    users = np.arange(len(dense.user_map_))
    np.testing.assert_allclose(sparse._score_users(users), dense._score_users(users), rtol=1e-5, atol=1e-6)
    for a, b in zip(sparse.recommend([0, 7, 30], k=5), dense.recommend([0, 7, 30], k=5), strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)


def test_sparse_solve_keeps_k_neighbours_and_scores_consistently(data: Interactions) -> None:
    model = EASE(lam=3.0, solver="sparse", neighbours=4).fit(data)
    b = model.B_.toarray()
    assert (np.count_nonzero(b, axis=0) <= 4).all() and not np.diagonal(b).any()
    users = np.repeat(np.arange(len(model.user_map_)), len(model.item_map_))
    items = np.tile(np.arange(len(model.item_map_)), len(model.user_map_))
    full = model._score_users(np.arange(len(model.user_map_)))
    np.testing.assert_allclose(model._score_pairs(users, items), full.ravel(), rtol=1e-5, atol=1e-6)
    folded = model.fold_in([0, 3, 5], [5, 4, 3])
    np.testing.assert_allclose(model._score_folded(folded, np.arange(12)), folded.factors @ b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.item_embeddings(), b.T)


def test_auto_solver_goes_sparse_above_the_documented_size(data: Interactions,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert EASE().fit(data).solver_ == "dense"
    monkeypatch.setattr(ease_mod, "DENSE_AUTO_MAX_ITEMS", 10)
    assert EASE().fit(data).solver_ == "sparse"
    assert EASE(solver="dense").fit(data).solver_ == "dense"  # forced either way
    assert EASE(solver="sparse", max_items=5).fit(data).solver_ == "sparse"  # no dense limit


def test_sparse_model_save_load(data: Interactions, tmp_path: Path) -> None:
    model = EASE(lam=3.0, solver="sparse", neighbours=5).fit(data)
    loaded = EASE.load(model.save(tmp_path / "sparse"))
    assert loaded.solver_ == "sparse" and sp.issparse(loaded.B_)
    assert (loaded.B_ != model.B_).nnz == 0
    for a, b in zip(loaded.recommend([0, 5, "nobody"], k=4), model.recommend([0, 5, "nobody"], k=4), strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    state = model._state()
    assert "B" not in state and {"B_indptr", "B_indices", "B_data"} <= set(state)
    with pytest.raises(ModelFileError):
        model._set_state({**state, "B_indices": state["B_indices"] + 100}, {})
    with pytest.raises(ModelFileError, match="lack"):
        model._set_state({k: v for k, v in state.items() if not k.startswith("B")}, {})


@pytest.mark.parametrize(("weighting", "expected"), [("binary", lambda w: np.ones_like(w)),
                                                     ("log", np.log1p), ("count", lambda w: w)])
def test_implicit_log_weights_enter_x(weighting: str, expected: Any) -> None:
    log = make_synthetic_log(40, 30, 300, seed=1)
    assert log.is_implicit and log.weights is not None and log.weights.max() > 1
    model = EASE(lam=5.0, implicit_weight=weighting).fit(log)  # type: ignore[arg-type]
    rows = model.user_map_.to_index(log.raw_users())
    cols = model.item_map_.to_index(log.raw_items())
    np.testing.assert_allclose(model.x_.toarray()[rows, cols], expected(log.weights), rtol=1e-6)
    folded = model.fold_in(log.raw_items()[:2])  # a new user's items count as one event each
    np.testing.assert_allclose(folded.factors[cols[:2]], expected(np.ones(2, dtype=np.float32)), rtol=1e-6)
    loaded_meta = model._extra_meta()
    assert loaded_meta["implicit"] is True


# ---------------------------------------------------------------------- the shared contract
class TestEASEContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return EASE(lam=10.0)


class TestSparseEASEContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return EASE(lam=10.0, solver="sparse", neighbours=8)


# ---------------------------------------------------------------------- real data
@pytest.mark.slow
def test_ml100k_u1_beats_popularity_and_finds_sequels(ml100k_dir: Path) -> None:
    split = make_splits(load_dataset("ml-100k"), "u1")[0]
    metrics = ["ndcg@10", "recall@10"]
    model = EASE().fit(split.train)
    ours = evaluate(model, split.test, train=split.train, k=10, metrics=metrics)
    pop = evaluate(PopularityRecommender().fit(split.train), split.test, train=split.train, k=10, metrics=metrics)
    assert ours["ndcg@10"] > pop["ndcg@10"] + 0.15, (ours, pop)
    assert model.fit_info_["fit_seconds"] < 30
    assert 181 in model.similar_items(50, k=3).ids.tolist()  # Star Wars -> Return of the Jedi
