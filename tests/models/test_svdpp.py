"""SVD++: fused loss, implicit aggregation, fold-in, persistence, accuracy on ML-100K."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cfrec.data import Interactions
from cfrec.engines.backend import make_generator
from cfrec.engines.matrix import normalized_sets
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models import Recommender, make_model
from cfrec.models import svdpp as svdpp_module
from cfrec.models.mf import BiasedMF
from cfrec.models.persistence import current_version
from cfrec.models.svdpp import (
    _AUTO_RATINGS_COST,
    SVDpp,
    _Implicit,
    _ratings_batch_cost,
    _SVDppLoss,
)
from cfrec.testing import make_ratings
from tests.models.test_mf import _rmse


def _sets(d: Interactions):
    """SVD++'s normalised implicit feedback ``|N(u)|^-1/2`` of a compacted data set."""
    return normalized_sets(d.users, d.items, d.n_users, d.n_items)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return make_ratings(n_users=80, n_items=50, per_user=15, seed=4)


@pytest.fixture(scope="module")
def model(data: Interactions) -> SVDpp:
    return SVDpp(n_factors=6, epochs=10, batch_size=128, lr=0.02, seed=0).fit(data)


def test_implicit_matrix_normalises_by_sqrt_count() -> None:
    d = make_ratings(n_users=5, n_items=6, per_user=3, seed=0)
    d = d.concat(d.subset(np.array([0])))  # a duplicated rating counts once in N(u)
    norm = _sets(d).toarray()
    binary = (d.to_csr(binary=True).toarray() > 0).astype(float)
    expected = binary / np.sqrt(binary.sum(1, keepdims=True))
    np.testing.assert_allclose(norm, expected, rtol=1e-6)


def _implicit_reference(d: Interactions, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``N_norm`` and the per-item L2 weight of the docstring's formula, written out."""
    norm = torch.as_tensor(_sets(d).toarray(), dtype=torch.float64)
    binary = (norm > 0).double()
    counts, popularity = binary.sum(1), binary.sum(0)
    c = float((counts ** 2).sum() / len(d) / d.n_items)
    weight = torch.where(popularity > 0, c * (len(d) / batch_size) / popularity.clamp(min=1), 0.0)
    return norm, weight


def test_batch_implicit_term_equals_the_all_users_computation() -> None:
    d = make_ratings(n_users=30, n_items=20, per_user=6, seed=3)
    implicit = _Implicit.build(d, 64, "users", torch.device("cpu"))
    y = torch.randn(d.n_items, 4)
    every_user = torch.as_tensor(_sets(d).toarray()) @ y
    users = torch.tensor([7, 0, 29, 3])
    torch.testing.assert_close(implicit.sums(y, users), every_user[users], rtol=1e-5, atol=1e-6)
    items, segment, offsets, weights = implicit.segments(users)
    # each batch user's own rated items, nothing else
    seen = _sets(d).tocsr()
    for pos, u in enumerate(users.tolist()):
        mine = items[segment == pos].tolist()
        assert mine == seen.indices[seen.indptr[u]:seen.indptr[u + 1]].tolist()
        assert torch.allclose(weights[segment == pos], torch.tensor(seen.data[seen.indptr[u]]))
    assert offsets.tolist() == [0, *np.cumsum([np.diff(seen.indptr)[u] for u in users.tolist()])[:-1]]


@pytest.mark.parametrize("implicit_reg", [0.0, 0.05])
def test_fused_loss_matches_autograd_over_all_users(implicit_reg: float) -> None:
    """The batch-only loss and its row-sparse gradients equal autograd through ``N_norm @ Y`` for
    every user, with the L2 of the y_j summed in the step written out per (user, item) pair."""
    torch.manual_seed(0)
    d = make_ratings(n_users=6, n_items=8, per_user=4, seed=1)
    implicit = _Implicit.build(d, 5, "users", torch.device("cpu"))
    dense, weight = _implicit_reference(d, 5)
    k = 3
    init = [torch.randn(6, k), torch.randn(8, k), torch.randn(6), torch.randn(8), torch.randn(8, k)]
    ours = [t.clone().double().requires_grad_(True) for t in init]
    ref = [t.clone().double().requires_grad_(True) for t in init]
    mu = torch.tensor(3.4, dtype=torch.float64)
    u = torch.tensor([0, 1, 1, 5, 0, 2, 3])  # users 0 and 1 twice; user 4 not in the batch
    i = torch.tensor([7, 0, 7, 3, 3, 3, 1])
    r = torch.tensor([5.0, 1.0, 4.0, 3.0, 2.0, 4.0, 1.0], dtype=torch.float64)
    reg, b_reg = 0.1, 0.02
    implicit.norm, implicit.y_weight = implicit.norm.double(), implicit.y_weight.double()
    loss = _SVDppLoss.apply(*ours, mu, u, i, r, implicit, reg, implicit_reg, b_reg)
    P, Q, BU, BI, Y = ref
    x = P[u] + (dense @ Y)[u]
    pred = mu + BU[u] + BI[i] + (x * Q[i]).sum(1)
    pairs = (dense[torch.unique(u)] > 0).double()  # (batch user, rated item) pairs
    y_pen = (pairs.sum(0) * weight * (Y ** 2).sum(1)).sum()
    expected = (((pred - r) ** 2 + reg * ((P[u] ** 2).sum(1) + (Q[i] ** 2).sum(1))
                 + b_reg * (BU[u] ** 2 + BI[i] ** 2)).mean() + implicit_reg * y_pen)
    torch.testing.assert_close(loss, expected)
    (0.7 * loss).backward()
    (0.7 * expected).backward()
    for a, b in zip(ours, ref, strict=True):
        assert a.grad.is_sparse
        torch.testing.assert_close(a.grad.to_dense(), b.grad)
    # y gets gradient only on the items the batch's users rated
    touched = set(ours[4].grad.coalesce().indices()[0].tolist())
    assert touched == set(torch.nonzero(pairs.sum(0)).view(-1).tolist())


def _steps(model: SVDpp, d: Interactions, n_steps: int) -> tuple[list[float], list[np.ndarray]]:
    """Losses and final tables of the first ``n_steps`` minibatch steps of ``model``'s fit."""
    net, loss_fn, _ = model._build(d, torch.device("cpu"), make_generator(0))
    opt = model._make_optimizer(net)
    losses = []
    for batch in list(model._batch_order(d, torch.device("cpu"))(make_generator(1)))[:n_steps]:
        loss = loss_fn(batch)
        opt.zero_grad()
        if loss.requires_grad:
            loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    tables = [net.user_factors, net.item_factors, net.user_bias, net.item_bias, net.implicit_factors]
    return losses, [t.detach().numpy().copy() for t in tables]


@pytest.mark.parametrize("batching", ["users", "ratings"])
def test_compiled_step_equals_the_autograd_step_with_adam(batching: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU's compiled step (loss, row-sparse gradients and lazy Adam in one pass) moves every
    table as :class:`_SVDppLoss` followed by the engine's Adam does, penalties and weight decay
    included, and reports the same loss."""
    d = make_ratings(n_users=40, n_items=25, per_user=7, seed=6).compact()
    settings = dict(n_factors=5, batch_size=48, batching=batching, reg=0.05, implicit_reg=0.2,
                    bias_reg=0.03, weight_decay=0.01, lr=0.05, init_std=0.3)
    compiled = SVDpp(**settings)
    compiled.global_mean_ = float(d.ratings.mean())
    net, _, _ = compiled._build(d, torch.device("cpu"), make_generator(0))
    assert net.compiled_step is not None  # numba is a dependency: the CPU takes the compiled step
    fast_losses, fast = _steps(compiled, d, 4)
    monkeypatch.setattr(svdpp_module, "_compiled_step", lambda: None)
    reference = SVDpp(**settings)
    reference.global_mean_ = compiled.global_mean_
    ref_losses, ref = _steps(reference, d, 4)
    np.testing.assert_allclose(fast_losses, ref_losses, rtol=1e-5)
    for a, b in zip(fast, ref, strict=True):
        assert not np.array_equal(a, np.zeros_like(a))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_compiled_and_autograd_fits_agree(data: Interactions, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = SVDpp(n_factors=4, epochs=4, batch_size=128, lr=0.02, seed=0).fit(data)
    monkeypatch.setattr(svdpp_module, "_compiled_step", lambda: None)
    slow = SVDpp(n_factors=4, epochs=4, batch_size=128, lr=0.02, seed=0).fit(data)
    np.testing.assert_allclose(fast.user_factors_, slow.user_factors_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fast.implicit_factors_, slow.implicit_factors_, rtol=1e-3, atol=1e-4)
    assert [r["train_loss"] for r in fast.history_] == pytest.approx([r["train_loss"] for r in slow.history_],
                                                                     rel=1e-4)


def test_network_predictions_equal_the_all_users_formula(model: SVDpp, data: Interactions) -> None:
    d = data.compact()
    net, _, predict = model._build(d, torch.device("cpu"), make_generator(0))
    with torch.no_grad():
        net.implicit_factors.normal_()
        users, items = torch.tensor([3, 3, 0, 41, 7]), torch.tensor([1, 2, 2, 0, 9])
        norm = torch.as_tensor(_sets(d).toarray())
        x = net.user_factors + norm @ net.implicit_factors
        by_hand = net.global_bias + net.user_bias[users] + net.item_bias[items] + (x[users] * net.item_factors[items]).sum(1)
        torch.testing.assert_close(predict(users, items), by_hand, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.effective_users(), x, rtol=1e-5, atol=1e-5)


def test_ratings_batching_and_invalid_batching(data: Interactions) -> None:
    by_ratings = SVDpp(n_factors=4, epochs=2, batch_size=128, batching="ratings").fit(data)
    by_users = SVDpp(n_factors=4, epochs=2, batch_size=128).fit(data)
    assert np.isfinite(by_ratings.user_factors_).all()
    assert not np.allclose(by_ratings.user_factors_, by_users.user_factors_)
    with pytest.raises(CfrecError, match="batching"):
        SVDpp(batching="items").fit(data)


def test_auto_batching_takes_ratings_batches_only_when_they_are_cheap() -> None:
    """Random rating batches sum every rated item of every user they hold: on small data (each
    batch holds most users anyway) an epoch of them costs a few passes over the ratings, on data
    with many users it would cost many times more."""
    small = make_ratings(n_users=40, n_items=30, per_user=10, seed=0).compact()
    many = make_ratings(n_users=3000, n_items=50, per_user=20, seed=0).compact()
    assert _ratings_batch_cost(small, 4096) == pytest.approx(1.0)  # one batch holds everything
    assert SVDpp(batch_size=4096)._batching(small) == "ratings"
    assert _ratings_batch_cost(many, 256) > 2 * _AUTO_RATINGS_COST
    assert SVDpp(batch_size=256)._batching(many) == "users"
    assert SVDpp(batch_size=4096, batching="users")._batching(small) == "users"


def test_ratings_batching_divides_each_pair_by_the_users_expected_steps() -> None:
    d = make_ratings(n_users=50, n_items=20, per_user=8, seed=2).compact()
    by_users = _Implicit.build(d, 100, "users", torch.device("cpu"))
    by_ratings = _Implicit.build(d, 100, "ratings", torch.device("cpu"))
    assert torch.equal(by_users.user_weight, torch.ones(50))
    steps = len(d) / 100
    share = 8 / len(d)
    expected = 1.0 / (steps * (1 - (1 - share) ** 100))
    torch.testing.assert_close(by_ratings.user_weight, torch.full((50,), expected), rtol=1e-5, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu_closely(data: Interactions) -> None:
    cpu = SVDpp(n_factors=4, epochs=3, batch_size=128, device="cpu").fit(data)
    gpu = SVDpp(n_factors=4, epochs=3, batch_size=128, device="cuda").fit(data)
    np.testing.assert_allclose(gpu.user_factors_, cpu.user_factors_, rtol=1e-3, atol=1e-4)


def test_user_factors_are_the_effective_vectors(model: SVDpp, data: Interactions) -> None:
    norm = _sets(data.compact()).toarray()
    expected = model.user_explicit_ + norm @ model.implicit_factors_
    np.testing.assert_allclose(model.user_factors_, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(model.implicit_factors_).sum() > 0  # y was trained
    # a prediction by hand: mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2 sum y_j)
    u, i = model.user_map_.to_index(np.array(["u004"]))[0], model.item_map_.to_index(np.array([103]))[0]
    by_hand = (model.global_mean_ + model.user_bias_[u] + model.item_bias_[i]
               + model.item_factors_[i] @ expected[u])
    assert model.predict("u004", [103])[0] == pytest.approx(np.clip(by_hand, 1, 5), abs=1e-4)


def test_fold_in_uses_implicit_factors(model: SVDpp) -> None:
    items = [100, 102, 105, 110]
    idx = model.item_map_.to_index(np.array(items))
    z = model.implicit_factors_[idx].sum(0) / np.sqrt(len(items))
    # with an overwhelming ridge the explicit part vanishes: only the implicit sum remains
    folded = model.fold_in(items, [4, 4, 4, 4], reg=1e9)
    np.testing.assert_allclose(folded.factors, z, rtol=1e-4, atol=1e-6)
    assert abs(folded.bias) < 1e-6
    # with a moderate ridge, [b, p] solve the least squares left after the implicit part
    folded = model.fold_in(items, [5, 3, 4, 1], reg=2.0)
    q = model.item_factors_[idx].astype(np.float64)
    resid = np.array([5, 3, 4, 1]) - model.global_mean_ - model.item_bias_[idx] - q @ z
    x = np.hstack([np.ones((4, 1)), q])
    sol = np.linalg.solve(x.T @ x + 2.0 * np.eye(x.shape[1]), x.T @ resid)
    assert folded.bias == pytest.approx(sol[0], abs=1e-5)
    np.testing.assert_allclose(folded.factors, sol[1:] + z, rtol=1e-4, atol=1e-5)
    assert sorted(folded.seen.tolist()) == sorted(idx.tolist())


def test_fold_in_ignores_unknown_items_and_handles_none(model: SVDpp) -> None:
    folded = model.fold_in([100, 424242], [5, 1])
    assert folded.n_ratings == 1
    empty = model.fold_in([], [])
    assert empty.bias == 0.0 and not empty.factors.any()
    with pytest.raises(CfrecError, match="differ in length"):
        model.fold_in([100, 101], [5])


def test_persistence_keeps_implicit_factors(model: SVDpp, tmp_path: Path) -> None:
    path = model.save(tmp_path / "svdpp")
    loaded = Recommender.load(path)
    assert isinstance(loaded, SVDpp)
    np.testing.assert_array_equal(loaded.implicit_factors_, model.implicit_factors_)
    np.testing.assert_array_equal(loaded.user_explicit_, model.user_explicit_)
    f1, f2 = loaded.fold_in([100, 101], [5, 2]), model.fold_in([100, 101], [5, 2])
    np.testing.assert_array_equal(f1.factors, f2.factors)


def test_missing_implicit_factors_is_a_model_file_error(model: SVDpp, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    saved = model.save(tmp_path / "svdpp")
    path = current_version(saved)
    arrays = load_file(str(path / "weights.safetensors"))
    del arrays["model.implicit_factors"]
    save_file(arrays, str(path / "weights.safetensors"))
    meta_path = path / "model.json"
    import json

    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["weights_sha256"] = None
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileError):
        Recommender.load(path)


def test_registry_and_validation_history(data: Interactions) -> None:
    model = make_model("svdpp", n_factors=4, epochs=3, batch_size=256, valid_fraction=0.1, patience=None)
    assert isinstance(model, SVDpp)
    model.fit(data)
    assert [h["epoch"] for h in model.history_] == [1, 2, 3]
    assert all(np.isfinite(h["valid_rmse"]) for h in model.history_)


# ---------------------------------------------------------------------- ML-100K
@pytest.mark.slow
def test_ml100k_u1_accuracy_beats_biased_mf(ml100k_u1) -> None:
    """Defaults on u1 (measured ~0.912; BiasedMF ~0.925; Surprise SVD++ ~0.94 on u1)."""
    train, test = ml100k_u1
    svdpp = _rmse(SVDpp().fit(train), test)
    mf = _rmse(BiasedMF().fit(train), test)
    assert svdpp < 0.920, svdpp
    assert svdpp < mf - 0.005, (svdpp, mf)
