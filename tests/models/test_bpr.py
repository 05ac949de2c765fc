"""BPR: the fused loss against autograd, exact negatives, popularity-aware sampling, fold-in,
divergence, parameter checks, persistence and the contract suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import cfrec.models.bpr as bpr_mod
from cfrec.data import Interactions
from cfrec.engines import hogwild
from cfrec.engines.torch_loop import make_optimizer
from cfrec.errors import CfrecError, ModelFileError, TrainingDiverged
from cfrec.models import Recommender
from cfrec.models.bpr import BPR, _BPRLoss, _BPRNet
from cfrec.testing import RecommenderContract, make_ratings
from tests.engines.test_negatives import _seen_sets


def small_model(**overrides: Any) -> BPR:
    params: dict[str, Any] = {"n_factors": 8, "epochs": 12, "batch_size": 64, "lr": 0.1, "reg": 1e-3,
                              "threshold": None, "seed": 0, "device": "cpu"}
    return BPR(**{**params, **overrides})


@pytest.fixture(scope="module")
def ratings() -> Interactions:
    """The contract's planted ratings, for this module's own tests."""
    return make_ratings()


class TestBPRContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return small_model()


class TestBPRPopularNegativesContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return small_model(threshold=4.0, neg_exponent=0.75, optimizer="adagrad", lr=0.1)


# ---------------------------------------------------------------------- the loss
@pytest.mark.parametrize(("reg", "bias_reg"), [(0.0, 0.0), (0.01, 0.003)])
def test_fused_loss_and_gradients_equal_autograd(reg: float, bias_reg: float) -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    q = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(9, generator=gen, dtype=torch.float64)
    u = torch.tensor([0, 3, 3, 6, 1])
    i = torch.tensor([2, 2, 5, 8, 0])
    j = torch.tensor([4, 7, 2, 1, 0])  # repeats across positives and negatives
    ij = torch.cat([i, j])
    fused = [t.clone().requires_grad_() for t in (p, q, b)]
    loss = _BPRLoss.apply(*fused, u, ij, reg, bias_reg)
    loss.backward()
    ref = [t.clone().requires_grad_() for t in (p, q, b)]
    rp, rq, rb = ref
    x = (rp[u] * (rq[i] - rq[j])).sum(1) + rb[i] - rb[j]
    expected = (F.softplus(-x) + reg * (rp[u].square().sum(1) + rq[i].square().sum(1)
                                        + rq[j].square().sum(1))
                + bias_reg * (rb[i].square() + rb[j].square())).mean()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for a, e in zip(fused, ref, strict=True):
        assert a.grad is not None and a.grad.is_sparse  # row-sparse: the batch's rows only
        torch.testing.assert_close(a.grad.to_dense(), e.grad)


@pytest.mark.parametrize("optimizer", ["adam", "adagrad", "sgd"])
def test_a_step_updates_only_the_batchs_rows(optimizer: str) -> None:
    """O(batch) steps: rows of users and items outside the triples keep their values."""
    net = _BPRNet(20, 30, 4, 0.1, torch.Generator().manual_seed(0))
    opt = make_optimizer(optimizer, list(net.parameters()), lr=0.1)
    before = [t.detach().clone() for t in net.parameters()]
    u = torch.tensor([1, 5, 5, 9])
    ij = torch.tensor([0, 3, 7, 7, 12, 3, 20, 29])
    for _ in range(2):
        loss = _BPRLoss.apply(net.user_factors, net.item_factors, net.item_bias, u, ij, 1e-3, 1e-3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for table, old, rows in zip(net.parameters(), before, (u, ij, ij), strict=True):
        touched = np.zeros(len(old), dtype=bool)
        touched[rows.numpy()] = True
        np.testing.assert_array_equal(table.detach().numpy()[~touched], old.numpy()[~touched])
        assert (table.detach().numpy()[touched] != old.numpy()[touched]).any(axis=-1 if old.ndim > 1 else 0).all()


# ---------------------------------------------------------------------- negatives






def _record_triples(monkeypatch: pytest.MonkeyPatch, compiled: bool,
                    triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Record every (user, positive, negative) a fit steps on, on the compiled CPU path or the
    batched torch path."""
    if compiled:
        class Recording(hogwild.HogwildBPR):
            def epoch(self, epoch: int, lr: float) -> float:
                self.record = np.full((len(self.pos_items), 2), -1, np.int64)
                loss = super().epoch(epoch, lr)
                owner = np.repeat(np.arange(len(self.pos_ptr) - 1), np.diff(self.pos_ptr))
                done = self.record[:, 0] >= 0
                triples.append((owner[done], self.pos_items[done], self.record[done, 1]))
                return loss

        monkeypatch.setattr(hogwild, "HogwildBPR", Recording)
        return
    real = _BPRLoss.apply

    def recording(p: torch.Tensor, q: torch.Tensor, b: torch.Tensor, u: torch.Tensor, ij: torch.Tensor,
                  reg: float, bias_reg: float) -> torch.Tensor:
        n = len(u)
        triples.append((u.numpy().copy(), ij[:n].numpy().copy(), ij[n:].numpy().copy()))
        return real(p, q, b, u, ij, reg, bias_reg)

    monkeypatch.setattr(bpr_mod, "_hogwild", lambda: None)
    monkeypatch.setattr(_BPRLoss, "apply", recording)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "batched"])
@pytest.mark.parametrize("neg_exponent", [0.0, 1.0])
def test_training_negatives_never_include_the_users_rated_items(neg_exponent: float, compiled: bool,
                                                                ratings: Interactions,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every (user, negative) triple of every epoch of a fit: the negative is unrated by the user,
    positives are the ratings >= threshold, and a user who rated every item does not train."""
    frame = ratings.to_frame()
    full = pd.DataFrame({"user_id": "everything", "item_id": sorted(frame["item_id"].unique()),
                         "rating": 5.0, "timestamp": 0})
    data = Interactions.from_frame(pd.concat([frame, full], ignore_index=True), rating_scale=(1.0, 5.0))
    triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    _record_triples(monkeypatch, compiled, triples)
    model = small_model(epochs=3, threshold=4.0, neg_exponent=neg_exponent).fit(data)
    d = data.compact()
    rated = _seen_sets(d.users, d.items)
    positives = {(int(u), int(i)) for u, i, r in zip(d.users, d.items, d.ratings, strict=True) if r >= 4}
    u, i, j = (np.concatenate(a) for a in zip(*triples, strict=True))
    assert len(u) == 3 * (len(positives) - d.n_items)  # three epochs; "everything" never trains
    assert not any(jj in rated[uu] for uu, jj in zip(u.tolist(), j.tolist(), strict=True))
    assert {(int(a), int(b)) for a, b in zip(u, i, strict=True)} == {
        pair for pair in positives if pair[0] != int(model.user_map_.to_index(np.array(["everything"]))[0])}
    np.testing.assert_array_equal(model.item_counts_, np.bincount(i[: len(u) // 3], minlength=d.n_items))
    # users without a positive, and the user with no negative, keep a zero vector
    everything = model.user_map_.to_index(np.array(["everything"]))[0]
    assert not model.user_factors_[everything].any()


# ---------------------------------------------------------------------- fold-in
@pytest.fixture(scope="module")
def model(ratings: Interactions) -> BPR:
    return small_model(epochs=15).fit(ratings)


def _fold_in_objective(model: BPR, pos: np.ndarray, neg: np.ndarray, vec: np.ndarray, lam: float) -> float:
    q, b = model.item_factors_.astype(np.float64), model.item_intercept_.astype(np.float64)
    s = q @ vec + b
    x = s[pos][:, None] - s[neg][None, :]
    return float(np.logaddexp(0.0, -x).mean() + lam * vec @ vec)


def test_fold_in_minimises_its_objective(model: BPR) -> None:
    items = [100, 103, 110, 121, 135]
    folded = model.fold_in(items)
    idx = model.item_map_.to_index(np.array(items))
    neg = np.setdiff1d(np.arange(len(model.item_map_)), idx)
    vec = folded.factors.astype(np.float64)
    best = _fold_in_objective(model, idx, neg, vec, model.reg)
    assert np.abs(vec).max() > 0
    rng = np.random.default_rng(0)
    for _ in range(20):  # convex: every nearby vector is worse
        assert _fold_in_objective(model, idx, neg, vec + rng.normal(0, 1e-3, vec.shape), model.reg) > best
    # more regularisation, a shorter vector
    assert np.linalg.norm(model.fold_in(items, reg=1.0).factors) < np.linalg.norm(vec)


def test_fold_in_is_pure_deterministic_and_order_free(model: BPR) -> None:
    before = {k: v.copy() for k, v in model._state().items()}
    a = model.fold_in([100, 103, 110], [5, 4, 5])
    b = model.fold_in([110, 100, 103], [5, 5, 4])
    np.testing.assert_array_equal(a.factors, b.factors)
    np.testing.assert_array_equal(a.factors, model.fold_in([100, 103, 110], [5, 4, 5]).factors)
    for key, value in model._state().items():
        np.testing.assert_array_equal(value, before[key])


def test_fold_in_ranks_like_the_trained_user(model: BPR, ratings: Interactions) -> None:
    """Folding in a training user's items gives scores close in order to the user's learned ones."""
    frame = ratings.to_frame()
    corr = []
    for user in ("u001", "u010", "u033"):
        rows = frame[frame["user_id"] == user]
        folded = model.fold_in(rows["item_id"].to_numpy())
        u = model.user_map_.to_index(np.array([user]))
        trained = model._score_users(u)[0]
        again = model._score_folded(folded, np.arange(len(model.item_map_)))
        corr.append(pd.Series(trained).corr(pd.Series(again), method="spearman"))
    assert min(corr) > 0.7, corr


def test_fold_in_with_threshold_and_samples_negatives_above_the_budget(
        ratings: Interactions, monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model(threshold=4.0, epochs=3).fit(ratings)
    low = model.fold_in([100, 101], [2, 3])  # known items, no positive: a zero vector, items excluded
    assert low.n_ratings == 2 and not low.factors.any()
    assert not {100, 101} & set(model.recommend(low, k=10).ids.tolist())
    full = model.fold_in([100, 101, 102], [5, 4, 1])
    np.testing.assert_array_equal(full.factors, model.fold_in([100, 101, 102], [5, 5, 3]).factors)
    monkeypatch.setattr(bpr_mod, "_FOLD_IN_PAIRS", 20)  # 2 positives x 10 sampled negatives
    sampled = model.fold_in([100, 101, 102], [5, 4, 1])
    np.testing.assert_array_equal(sampled.factors, model.fold_in([100, 101, 102], [5, 4, 1]).factors)
    assert not np.array_equal(sampled.factors, full.factors)


# ---------------------------------------------------------------------- training
def test_history_and_on_epoch(ratings: Interactions) -> None:
    records: list[dict[str, Any]] = []
    model = small_model(epochs=4).fit(ratings, on_epoch=records.append)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and all(r["epochs"] == 4 for r in records)
    assert [r["epoch"] for r in model.history_] == [1, 2, 3, 4]
    losses = [r["train_loss"] for r in model.history_]
    assert losses[-1] < losses[0] < np.log(2) + 0.05  # starts near log 2 and falls


def test_training_diverged_on_a_non_finite_loss(ratings: Interactions) -> None:
    with pytest.raises(TrainingDiverged, match="BPR training diverged"):
        small_model(optimizer="sgd", lr=1e30, init_std=1.0, epochs=3).fit(ratings)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "batched"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam"])
def test_both_paths_rank_the_training_positives_first(optimizer: str, compiled: bool, ratings: Interactions,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled per-sample loop (CPU) and the batched steps (CUDA's path, run here on the CPU)
    learn with every optimiser: training positives score above random items."""
    if not compiled:
        monkeypatch.setattr(bpr_mod, "_hogwild", lambda: None)
    lr = {"sgd": 0.05, "adagrad": 0.1, "adam": 0.01}[optimizer]
    model = small_model(optimizer=optimizer, lr=lr, epochs=20).fit(ratings)
    assert model.history_[-1]["train_loss"] < model.history_[0]["train_loss"]
    u, i = ratings.raw_users(), ratings.raw_items()
    other = np.random.default_rng(0).choice(model.item_map_.ids, len(ratings))
    assert model.predict(u, i).mean() > model.predict(u, other).mean() + 0.2


def test_hogwild_threads_train(ratings: Interactions) -> None:
    """Two shards in parallel (lock-free): every positive is stepped on each epoch and the fit learns."""
    one = small_model(threads=1, epochs=20).fit(ratings)
    two = small_model(threads=2, epochs=20).fit(ratings)
    assert abs(two.history_[-1]["train_loss"] - one.history_[-1]["train_loss"]) < 0.1
    assert two.history_[-1]["train_loss"] < two.history_[0]["train_loss"]


def test_seeds_reproduce_and_differ(ratings: Interactions) -> None:
    a = small_model(epochs=2).fit(ratings)
    b = small_model(epochs=2).fit(ratings)
    c = small_model(epochs=2, seed=1).fit(ratings)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert not np.array_equal(a.item_factors_, c.item_factors_)


@pytest.mark.parametrize("bad", [
    {"n_factors": 0}, {"epochs": 2.5}, {"batch_size": True}, {"lr": 0.0}, {"lr": float("inf")},
    {"reg": -1.0}, {"bias_reg": "x"}, {"neg_exponent": -0.5}, {"threshold": "4"}, {"optimizer": "rmsprop"},
    {"fold_in_reg": 0.0}, {"lr_decay": 0.0}, {"threads": 0}, {"fold_in_steps": 0},
])
def test_bad_parameters_raise_naming_the_field(bad: dict[str, Any], ratings: Interactions) -> None:
    name = next(iter(bad))
    with pytest.raises(CfrecError, match=name):
        small_model(**bad).fit(ratings)


def test_a_threshold_no_rating_reaches_is_a_clear_error() -> None:
    frame = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": [1, 2, 1], "rating": [1.0, 1.0, 1.0]})
    data = Interactions.from_frame(frame, time_col=None, rating_scale=(0.0, 1.0))
    with pytest.raises(CfrecError, match=r"threshold=4.0 keeps none.*threshold=None"):
        small_model(threshold=4.0).fit(data)
    assert small_model(threshold=None, epochs=1).fit(data).is_fitted


def test_scores_and_ratings(model: BPR, ratings: Interactions) -> None:
    users = np.repeat(np.arange(3), len(model.item_map_))
    items = np.tile(np.arange(len(model.item_map_)), 3)
    full = model._score_users(np.arange(3))
    np.testing.assert_allclose(model._score_pairs(users, items), full.ravel(), rtol=1e-5, atol=1e-6)
    expected = model.user_factors_[:3] @ model.item_factors_.T + model.item_intercept_
    np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-6)
    pred = model.predict(model.user_map_.ids[0], model.item_map_.ids)
    np.testing.assert_allclose(pred, 1.0 + 4.0 / (1.0 + np.exp(-full[0].astype(np.float64))), rtol=1e-5)
    assert not model.predicts_ratings and not hasattr(model, "item_bias_")  # no biases it does not have


def test_saved_arrays_are_checked(model: BPR, tmp_path: Path) -> None:
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, BPR)
    np.testing.assert_array_equal(loaded.item_intercept_, model.item_intercept_)
    state = model._state()
    del state["item_intercept"]
    with pytest.raises(ModelFileError, match="item_intercept"):
        loaded._set_state(state, {})
    state = model._state()
    state["item_counts"] = state["item_counts"][:-1]
    with pytest.raises(ModelFileError, match="do not match"):
        loaded._set_state(state, {})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu_quality(ratings: Interactions) -> None:
    cpu = small_model().fit(ratings)
    gpu = small_model(device="cuda").fit(ratings)
    assert gpu.user_factors_.dtype == np.float32 and np.isfinite(gpu.item_factors_).all()
    u, i = ratings.raw_users(), ratings.raw_items()
    rng = np.random.default_rng(0)
    other = rng.choice(gpu.item_map_.ids, len(ratings))
    assert gpu.predict(u, i).mean() > gpu.predict(u, other).mean()
    assert abs(gpu.history_[-1]["train_loss"] - cpu.history_[-1]["train_loss"]) < 0.1


@pytest.mark.slow
def test_ml100k_u1_beats_popularity(ml100k_u1: tuple[Interactions, Interactions]) -> None:
    from cfrec.evaluation import evaluate
    from cfrec.models.popularity import PopularityRecommender

    train, test = ml100k_u1
    pop = evaluate(PopularityRecommender().fit(train), test, k=10, metrics=["ndcg@10"])["ndcg@10"]
    bpr = evaluate(BPR(device="cpu").fit(train), test, k=10, metrics=["ndcg@10"])["ndcg@10"]
    assert bpr > pop + 0.1, (bpr, pop)
