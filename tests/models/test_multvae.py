"""Mult-VAE: the network's pieces, O(batch) first-layer gradients, KL annealing, fold-in as a
forward pass, parameter checks, persistence and the contract suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cfrec.data import Interactions
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models import Recommender
from cfrec.models.multvae import MultVAE, _MultVAENet
from cfrec.testing import RecommenderContract, make_ratings


def small_model(**overrides: Any) -> MultVAE:
    params: dict[str, Any] = {"hidden": 32, "latent": 8, "epochs": 30, "batch_size": 16, "lr": 3e-3,
                              "anneal_epochs": 10.0, "seed": 0, "device": "cpu"}
    return MultVAE(**{**params, **overrides})


@pytest.fixture(scope="module")
def ratings() -> Interactions:
    return make_ratings()


@pytest.fixture(scope="module")
def model(ratings: Interactions) -> MultVAE:
    return small_model().fit(ratings)


class TestMultVAEContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return small_model()


class TestMultVAEWeightedContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return small_model(threshold=3.0, rating_power=1.0, optimizer="adagrad", lr=0.05, dropout=0.2)


# ---------------------------------------------------------------------- the network
def _dense_encoder(net: _MultVAENet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's encoder on a dense input matrix (eval mode: no dropout)."""
    xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    out = net.enc_out(torch.tanh(xn @ net.enc_in + net.enc_in_bias))
    return out[:, :net.latent], out[:, net.latent:]


def test_sparse_encoder_equals_the_dense_product_and_its_gradient_is_row_sparse() -> None:
    net = _MultVAENet(12, 6, 3, dropout=0.0)
    net.reset(torch.Generator().manual_seed(0))
    x = torch.zeros(3, 12)
    x[0, [1, 4, 5]] = 1.0
    x[1, [4]] = 2.0
    x[2, [0, 11]] = torch.tensor([0.5, 3.0])
    rows, cols = x.nonzero(as_tuple=True)  # row by row
    items = cols.to(torch.int32)
    offsets = (torch.bincount(rows, minlength=3).cumsum(0) - torch.bincount(rows, minlength=3)).to(torch.int32)
    values = x[rows, cols]
    weights = values / torch.zeros(3).index_add_(0, rows, values * values).sqrt().index_select(0, rows)
    mu, log_var = net.encode(items, weights, offsets)
    ref_mu, ref_lv = _dense_encoder(net, x)
    torch.testing.assert_close(mu, ref_mu)
    torch.testing.assert_close(log_var, ref_lv)
    (mu.sum() + log_var.sum()).backward()
    grad = net.enc_in.grad
    assert grad is not None and grad.is_sparse
    index = grad._indices()[0].tolist()
    assert sorted(index) == [0, 1, 4, 5, 11]  # the batch's items' rows, each once
    table = net.enc_in.detach().clone().requires_grad_(True)
    xn = x / x.norm(dim=1, keepdim=True)
    out = net.enc_out(torch.tanh(xn @ table + net.enc_in_bias))
    out.sum().backward()
    torch.testing.assert_close(grad.to_dense(), table.grad)


def test_output_layer_and_likelihood_equal_log_softmax_against_a_dense_target() -> None:
    """The fused last layer + multinomial likelihood: loss and all three gradients."""
    gen = torch.Generator().manual_seed(3)
    net = _MultVAENet(9, 5, 2, dropout=0.0)
    net.reset(gen)
    hidden = torch.randn(4, 5, generator=gen, requires_grad=True)
    target = torch.zeros(4, 9)
    target[0, [1, 2, 8]] = 1.0
    target[1, [0]] = 3.0
    target[3, [4, 5]] = torch.tensor([0.5, 2.0])  # row 2: no target at all
    segment, items = target.nonzero(as_tuple=True)
    values = target[segment, items]
    ours = net.nll(hidden, items.to(torch.int32), segment, values)
    ours.backward()
    grads = [t.grad.clone() for t in (hidden, net.dec_out.weight, net.dec_out.bias)]
    for t in (hidden, net.dec_out.weight, net.dec_out.bias):
        t.grad = None
    ref = -(torch.log_softmax(net.dec_out(hidden), dim=1) * target).sum() / 4
    ref.backward()
    torch.testing.assert_close(ours, ref)
    for mine, theirs in zip(grads, (hidden.grad, net.dec_out.weight.grad, net.dec_out.bias.grad), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_eval_mode_is_deterministic_and_training_adds_noise() -> None:
    net = _MultVAENet(10, 5, 2, dropout=0.5)
    net.reset(torch.Generator().manual_seed(0))
    net.generator = torch.Generator().manual_seed(1)
    mu = torch.zeros(4, 2)
    lv = torch.zeros(4, 2)
    net.eval()
    torch.testing.assert_close(net.sample(mu, lv), mu)
    net.train()
    assert not torch.equal(net.sample(mu, lv), mu)


# ---------------------------------------------------------------------- training
def test_beta_is_annealed_to_its_cap(ratings: Interactions) -> None:
    m = small_model(epochs=6, anneal_epochs=3.0, beta_cap=0.3).fit(ratings)
    betas = [r["beta"] for r in m.history_]
    assert len(betas) == 6
    assert all(a <= b for a, b in zip(betas, betas[1:], strict=False))  # never falls
    assert 0.0 < betas[0] < 0.3 and betas[-1] == pytest.approx(0.3)


def test_training_lowers_the_loss_and_seeds_reproduce(ratings: Interactions) -> None:
    a = small_model(epochs=8, beta_cap=0.0).fit(ratings)
    losses = [r["train_loss"] for r in a.history_]
    assert losses[-1] < losses[0]
    b = small_model(epochs=8, beta_cap=0.0).fit(ratings)
    c = small_model(epochs=8, beta_cap=0.0, seed=1).fit(ratings)
    np.testing.assert_array_equal(a.item_embeddings(), b.item_embeddings())
    assert not np.array_equal(a.item_embeddings(), c.item_embeddings())


@pytest.mark.parametrize("bad", [
    {"hidden": 0}, {"latent": 1.5}, {"epochs": True}, {"batch_size": 0}, {"dropout": 1.0},
    {"dropout": -0.1}, {"lr": 0.0}, {"weight_decay": -1.0}, {"beta_cap": float("nan")},
    {"anneal_epochs": -1.0}, {"rating_power": "1"}, {"threshold": "4"}, {"optimizer": "rmsprop"},
    {"threads": 0},
])
def test_bad_parameters_raise_naming_the_field(bad: dict[str, Any], ratings: Interactions) -> None:
    name = next(iter(bad))
    with pytest.raises(CfrecError, match=name):
        small_model(**bad).fit(ratings)


def test_rating_power_needs_positive_ratings() -> None:
    frame = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": [1, 2, 1], "rating": [0.0, 1.0, 1.0]})
    d = Interactions.from_frame(frame, time_col=None, rating_scale=(0.0, 1.0))
    with pytest.raises(CfrecError, match="rating_power"):
        small_model(rating_power=1.0, epochs=1).fit(d)


# ---------------------------------------------------------------------- scoring and fold-in
def test_scores_pairs_and_users_agree(model: MultVAE) -> None:
    n_i = len(model.item_map_)
    users = np.repeat(np.arange(4), n_i)
    items = np.tile(np.arange(n_i), 4)
    full = model._score_users(np.arange(4))
    np.testing.assert_allclose(model._score_pairs(users, items), full.ravel(), rtol=1e-5, atol=1e-5)
    pred = model.predict(model.user_map_.ids[0], model.item_map_.ids)
    np.testing.assert_allclose(pred, 1.0 + 4.0 / (1.0 + np.exp(-full[0].astype(np.float64))), rtol=1e-5)
    assert not model.predicts_ratings


def test_fold_in_equals_scoring_the_same_history(model: MultVAE, ratings: Interactions) -> None:
    """A new user with a training user's items (and ratings) gets exactly that user's scores."""
    frame = ratings.to_frame()
    for user in ("u001", "u017", "u042"):
        rows = frame[frame["user_id"] == user]
        u = model.user_map_.to_index(np.array([user]))
        trained = model._score_users(u)[0]
        for folded in (model.fold_in(rows["item_id"].to_numpy()),
                       model.fold_in(rows["item_id"].to_numpy()[::-1], rows["rating"].to_numpy()[::-1])):
            again = model._score_folded(folded, np.arange(len(model.item_map_)))
            np.testing.assert_allclose(again, trained, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(folded.factors, model.user_embeddings()[u[0]], rtol=1e-5, atol=1e-6)
        recs = model.recommend(model.fold_in(rows["item_id"].to_numpy()), k=5)
        assert not set(recs.ids.tolist()) & set(rows["item_id"].tolist())  # given items excluded


def test_fold_in_is_pure_and_reports_unknown_items(model: MultVAE) -> None:
    before = {k: v.copy() for k, v in model._state().items()}
    folded = model.fold_in([100, 103, 99_999])
    assert list(folded.unknown_items) == [99_999] and folded.n_ratings == 2
    for key, value in model._state().items():
        np.testing.assert_array_equal(value, before[key])
    cold = model.fold_in([99_999])
    np.testing.assert_array_equal(model.recommend(cold, k=5).ids, model.recommend("nobody", k=5).ids)


def test_with_threshold_only_high_ratings_are_input(ratings: Interactions) -> None:
    m = small_model(threshold=4.0, epochs=2).fit(ratings)
    kept = ratings.ratings >= 4.0
    assert m.x_.nnz == int(kept.sum()) and np.all(m.x_.data == 1.0)
    low = m.fold_in([100, 101], [2, 3])  # known items, none an interaction: input is empty
    assert low.n_ratings == 2
    assert not {100, 101} & set(m.recommend(low, k=10).ids.tolist())


# ---------------------------------------------------------------------- persistence
def test_save_load_round_trip_and_checks(model: MultVAE, tmp_path: Path) -> None:
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, MultVAE)
    np.testing.assert_array_equal(loaded._score_users(np.arange(5)), model._score_users(np.arange(5)))
    state = model._state()
    del state["x_data"]
    with pytest.raises(ModelFileError, match="x_data"):
        loaded._set_state(state, {})
    state = model._state()
    state["x_indptr"] = state["x_indptr"][:-1]
    with pytest.raises(ModelFileError, match="input matrix"):
        loaded._set_state(state, {})
    state = model._state()
    state["net.dec_out.weight"] = state["net.dec_out.weight"][:, :-1]
    with pytest.raises(ModelFileError, match="do not match"):
        loaded._set_state(state, {})


@pytest.mark.slow
def test_ml100k_u1_beats_popularity(ml100k_u1: tuple[Interactions, Interactions]) -> None:
    from cfrec.evaluation import evaluate
    from cfrec.models.popularity import PopularityRecommender

    train, test = ml100k_u1
    pop = evaluate(PopularityRecommender().fit(train), test, k=10, metrics=["ndcg@10"])["ndcg@10"]
    vae = evaluate(MultVAE(epochs=30, seed=0, device="cpu").fit(train), test, k=10,
                   metrics=["ndcg@10"])["ndcg@10"]
    assert vae > pop + 0.05, (vae, pop)
