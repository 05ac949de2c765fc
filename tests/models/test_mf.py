"""BiasedMF: fused loss, lab preset, training behaviour, accuracy on ML-100K."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cfrec.data import Interactions
from cfrec.engines.backend import make_generator
from cfrec.engines.torch_loop import make_optimizer
from cfrec.errors import CfrecError, TrainingDiverged
from cfrec.models import make_model
from cfrec.models.baseline import Baseline
from cfrec.models.mf import BiasedMF, _BiasedMFLoss, _compiled_funk_loop, funk_step
from cfrec.models.persistence import current_version
from cfrec.testing import make_ratings


def _rmse(model, test: Interactions) -> float:
    pred = model.predict(test.raw_users(), test.raw_items())
    return float(np.sqrt(np.mean((pred.astype(np.float64) - test.ratings) ** 2)))


def _split(data: Interactions, frac: float = 0.2, seed: int = 0) -> tuple[Interactions, Interactions]:
    test = np.random.default_rng(seed).random(len(data)) < frac
    return data.subset(~test), data.subset(test)


# ---------------------------------------------------------------------- fused loss
@pytest.mark.parametrize(("reg", "bias_reg", "learn_mu"), [(0.1, 0.02, False), (0.0, 0.0, True), (0.3, 0.0, True)])
def test_fused_loss_matches_autograd(reg: float, bias_reg: float, learn_mu: bool) -> None:
    torch.manual_seed(0)
    dt = torch.float64
    p, q = torch.randn(5, 3, dtype=dt), torch.randn(7, 3, dtype=dt)
    bu, bi = torch.randn(5, dtype=dt), torch.randn(7, dtype=dt)
    mu = torch.tensor(3.5, dtype=dt)
    u = torch.tensor([0, 1, 1, 4, 0, 2])  # repeated users and items must accumulate
    i = torch.tensor([6, 0, 6, 3, 3, 3])
    r = torch.tensor([5.0, 1.0, 4.0, 3.0, 2.0, 4.0], dtype=dt)
    leaves = [t.clone().requires_grad_(True) for t in (p, q, bu, bi)]
    ref_leaves = [t.clone().requires_grad_(True) for t in (p, q, bu, bi)]
    mu_a, mu_b = mu.clone().requires_grad_(learn_mu), mu.clone().requires_grad_(learn_mu)

    ours = _BiasedMFLoss.apply(*leaves, mu_a, u, i, r, reg, bias_reg)
    P, Q, BU, BI = ref_leaves
    pred = mu_b + BU[u] + BI[i] + (P[u] * Q[i]).sum(1)
    ref = (((pred - r) ** 2) + reg * ((P[u] ** 2).sum(1) + (Q[i] ** 2).sum(1))
           + bias_reg * (BU[u] ** 2 + BI[i] ** 2)).mean()
    torch.testing.assert_close(ours, ref)
    (2.5 * ours).backward()  # a non-unit upstream gradient must scale everything
    (2.5 * ref).backward()
    for a, b in zip(leaves, ref_leaves, strict=True):
        assert a.grad.is_sparse  # row-sparse: the batch's rows only, repeats summed by to_dense
        assert set(a.grad.coalesce().indices()[0].tolist()) <= set(u.tolist()) | set(i.tolist())
        torch.testing.assert_close(a.grad.to_dense(), b.grad)
    if learn_mu:
        torch.testing.assert_close(mu_a.grad, mu_b.grad)
    else:
        assert mu_a.grad is None


def test_a_training_step_reads_and_writes_only_the_batch_rows() -> None:
    """O(batch) steps: the users and items outside a batch, and their Adam state, stay as they were."""
    data = make_ratings(n_users=60, n_items=40, per_user=8)
    model = BiasedMF(n_factors=4, weight_decay=1e-3, optimizer="adam")
    model.global_mean_ = float(data.ratings.mean())
    net, loss_fn, _ = model._build(data, torch.device("cpu"), make_generator(0))
    opt = make_optimizer("adam", list(net.parameters()), lr=0.05, weight_decay=1e-3)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    batch = torch.arange(0, 50)
    loss = loss_fn(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    users, items = set(data.users[:50].tolist()), set(data.items[:50].tolist())
    for name, rows in (("user_factors", users), ("user_bias", users), ("item_factors", items), ("item_bias", items)):
        after = getattr(net, name).detach()
        changed = {int(r) for r in torch.nonzero((after != before[name]).reshape(len(after), -1).any(1)).view(-1)}
        assert changed == rows, name


def test_a_funk_step_is_per_rating_sgd_on_the_batch_rows_only() -> None:
    """The default optimiser: every rating moves its rows by its own gradient, from the values
    before the batch; rows outside the batch keep their values."""
    data = make_ratings(n_users=60, n_items=40, per_user=8)
    model = BiasedMF(n_factors=4)
    model.global_mean_ = float(data.ratings.mean())
    net, _, _ = model._build(data, torch.device("cpu"), make_generator(0))
    before = {k: v.detach().clone().double() for k, v in net.state_dict().items()}
    u = torch.tensor([3, 3, 7, 12, 40], dtype=torch.int64)
    i = torch.tensor([1, 5, 5, 9, 1], dtype=torch.int64)
    r = torch.tensor([4.0, 2.0, 5.0, 3.0, 1.0])
    lr, reg, bias_reg = 0.05, 0.1, 0.02
    mse = funk_step(net, u, i, r, lr, reg, bias_reg)
    p, q, bu, bi = (before[k].clone() for k in ("user_factors", "item_factors", "user_bias", "item_bias"))
    mu = float(before["global_bias"])
    want = {"user_factors": p.clone(), "item_factors": q.clone(), "user_bias": bu.clone(), "item_bias": bi.clone()}
    errs = []
    for uu, ii, rr in zip(u.tolist(), i.tolist(), r.tolist(), strict=True):
        e = mu + bu[uu] + bi[ii] + p[uu] @ q[ii] - rr
        errs.append(float(e))
        want["user_factors"][uu] -= lr * (e * q[ii] + reg * p[uu])
        want["item_factors"][ii] -= lr * (e * p[uu] + reg * q[ii])
        want["user_bias"][uu] -= lr * (e + bias_reg * bu[uu])
        want["item_bias"][ii] -= lr * (e + bias_reg * bi[ii])
    for name, expected in want.items():
        np.testing.assert_allclose(getattr(net, name).detach().double().numpy(), expected.numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    assert float(mse) == pytest.approx(float(np.mean(np.square(errs))), rel=1e-5)


def test_the_compiled_cpu_loop_is_sequential_per_rating_sgd() -> None:
    """On the CPU each rating's move is applied before the next rating's (Funk's loop)."""
    kernel = _compiled_funk_loop()
    assert kernel is not None
    rng = np.random.default_rng(0)
    p, q = rng.normal(0, 0.1, (5, 3)).astype(np.float32), rng.normal(0, 0.1, (4, 3)).astype(np.float32)
    bu, bi = rng.normal(0, 0.1, 5).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)
    u = np.array([0, 0, 3, 1, 0], dtype=np.int32)
    i = np.array([2, 1, 2, 2, 2], dtype=np.int32)
    r = np.array([4.0, 1.0, 5.0, 3.0, 2.0], dtype=np.float32)
    mu, lr, reg, bias_reg = 3.5, 0.05, 0.1, 0.02
    ref = [a.astype(np.float64) for a in (p, q, bu, bi)]
    sse = 0.0
    for uu, ii, rr in zip(u, i, r, strict=True):
        rp, rq, rbu, rbi = ref
        e = mu + rbu[uu] + rbi[ii] + rp[uu] @ rq[ii] - rr
        sse += e * e
        rbu[uu] -= lr * (e + bias_reg * rbu[uu])
        rbi[ii] -= lr * (e + bias_reg * rbi[ii])
        pu = rp[uu].copy()
        rp[uu] -= lr * (e * rq[ii] + reg * pu)
        rq[ii] -= lr * (e * pu + reg * rq[ii])
    got = kernel(u, i, r, p, q, bu, bi, mu, lr, reg, bias_reg)
    assert got == pytest.approx(sse, rel=1e-5)
    for a, b in zip((p, q, bu, bi), ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_funk_refuses_a_learned_global_bias_and_weight_decay() -> None:
    data = make_ratings(n_users=20, n_items=10, per_user=4)
    with pytest.raises(CfrecError, match="BiasedMF learn_global_bias must be False with optimizer='funk'"):
        BiasedMF(learn_global_bias=True)  # refused at construction, before any data
    with pytest.raises(CfrecError, match="BiasedMF weight_decay must be 0 with optimizer='funk'"):
        BiasedMF(weight_decay=1e-4)
    assert BiasedMF(learn_global_bias=True, optimizer="adam", epochs=1).fit(data).is_fitted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu_closely() -> None:
    data = make_ratings()
    # Adam: the same batched arithmetic on both devices (per-rating SGD is sequential on the CPU)
    cpu = BiasedMF(n_factors=8, epochs=3, batch_size=256, device="cpu", optimizer="adam").fit(data)
    gpu = BiasedMF(n_factors=8, epochs=3, batch_size=256, device="cuda", optimizer="adam").fit(data)
    np.testing.assert_allclose(gpu.user_factors_, cpu.user_factors_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gpu.item_bias_, cpu.item_bias_, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------- lab preset
def test_lab_preset_hyperparameters_and_overrides() -> None:
    lab = BiasedMF.lab()
    expected = {"n_factors": 64, "epochs": 30, "batch_size": 1024, "lr": 0.005, "weight_decay": 1e-5,
                "optimizer": "adam", "init_std": 0.01, "init_biases": False, "learn_global_bias": True,
                "reg": 0.0, "bias_reg": 0.0, "patience": None, "valid_fraction": 0.0}
    assert {k: lab.get_params()[k] for k in expected} == expected
    tweaked = BiasedMF.lab(epochs=3, seed=5)
    assert tweaked.epochs == 3 and tweaked.seed == 5 and tweaked.n_factors == 64
    assert isinstance(tweaked, BiasedMF)
    assert BiasedMF(**lab.get_params()).get_params() == lab.get_params()


def test_lab_initialisation() -> None:
    """N(0, 0.01) embeddings, zero biases, a learnable global bias at the training mean."""
    data = make_ratings(n_users=200, n_items=150, per_user=20)
    model = BiasedMF.lab()
    model.global_mean_ = float(data.ratings.mean())
    net, _, _ = model._build(data, torch.device("cpu"), make_generator(0))
    assert net.user_factors.shape == (200, 64) and net.item_factors.shape == (150, 64)
    assert float(net.user_factors.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(net.item_factors.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert float(net.user_bias.detach().abs().sum()) == 0 and float(net.item_bias.detach().abs().sum()) == 0
    assert net.global_bias.requires_grad
    assert float(net.global_bias.detach()) == pytest.approx(model.global_mean_)
    assert isinstance(net.global_bias, torch.nn.Parameter)


def test_default_model_keeps_mean_fixed_and_lab_learns_it() -> None:
    data = make_ratings()
    mean = float(np.mean(data.ratings, dtype=np.float64))
    assert BiasedMF(epochs=2, n_factors=4).fit(data).global_mean_ == pytest.approx(mean)
    lab = BiasedMF.lab(epochs=5, batch_size=64).fit(data)
    assert lab.global_mean_ != pytest.approx(mean, abs=1e-4)
    # fallbacks use the learned global bias
    assert lab.predict(["nobody"], [99999])[0] == pytest.approx(np.clip(lab.global_mean_, 1, 5))


# ---------------------------------------------------------------------- training behaviour
def test_learns_planted_structure_better_than_baseline() -> None:
    data = make_ratings(n_users=300, n_items=120, per_user=30, n_factors=3, noise=0.2, seed=1)
    train, test = _split(data)
    base = _rmse(Baseline().fit(train), test)
    mf = _rmse(BiasedMF(n_factors=16, epochs=30, batch_size=512, lr=0.01, seed=0).fit(train), test)
    assert mf < base - 0.05, (mf, base)


def test_the_compiled_layout_at_scale_learns_as_well_and_reproduces(monkeypatch: pytest.MonkeyPatch) -> None:
    """From GROUPED_SHUFFLE_MIN ratings the per-rating loop's layout is drawn by the compiled
    grouped shuffle: a fit is as good as with torch's layout and the same seed gives the same
    factors."""
    import cfrec.models.mf as mf_mod

    data = make_ratings(n_users=300, n_items=120, per_user=30, n_factors=3, noise=0.2, seed=1)
    train, test = _split(data)
    params = dict(n_factors=16, epochs=30, batch_size=512, lr=0.01, seed=0)
    torch_layout = _rmse(BiasedMF(**params).fit(train), test)
    monkeypatch.setattr(mf_mod, "GROUPED_SHUFFLE_MIN", 0)
    a, b = BiasedMF(**params).fit(train), BiasedMF(**params).fit(train)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert _rmse(a, test) < torch_layout + 0.02, (_rmse(a, test), torch_layout)


def test_sgd_optimizer_trains() -> None:
    data = make_ratings(n_users=300, n_items=120, per_user=30, seed=1)
    train, test = _split(data)
    model = BiasedMF(optimizer="sgd", lr=5.0, n_factors=8, epochs=40, batch_size=512).fit(train)
    losses = [h["train_loss"] for h in model.history_]
    assert losses[-1] < losses[0]
    assert _rmse(model, test) < _rmse(Baseline().fit(train), test) + 0.02


@pytest.mark.parametrize("optimizer", ["sgd", "funk"])
def test_huge_learning_rate_raises_training_diverged(optimizer: str) -> None:
    data = make_ratings()
    with pytest.raises(TrainingDiverged, match=r"learning rate 1e\+06") as info:
        BiasedMF(optimizer=optimizer, lr=1e6, epochs=5, batch_size=64).fit(data)
    assert info.value.lr == 1e6
    assert "BiasedMF" in str(info.value)


@pytest.mark.parametrize("bad", [{"n_factors": 0}, {"epochs": 0}, {"batch_size": 0}, {"valid_fraction": 1.5},
                                 {"reg": -1.0}, {"optimizer": "rmsprop"}, {"lr": 0.0}, {"patience": 0},
                                 {"device": "tpu"}])
def test_invalid_hyperparameters_are_clear_errors(bad: dict) -> None:
    with pytest.raises(CfrecError):
        BiasedMF(**bad).fit(make_ratings())


def test_history_and_on_epoch_callback() -> None:
    data = make_ratings()
    seen: list[dict] = []
    model = BiasedMF(n_factors=4, epochs=3, batch_size=256).fit(data, on_epoch=seen.append)
    assert [h["epoch"] for h in model.history_] == [1, 2, 3]
    assert all(h["train_loss"] > 0 and h["seconds"] >= 0 for h in model.history_)
    assert [s["epoch"] for s in seen] == [1, 2, 3] and seen[0]["epochs"] == 3


def test_early_stopping_on_given_validation_restores_best_epoch() -> None:
    data = make_ratings(n_users=300, n_items=120, per_user=30, seed=2)
    train, valid = _split(data, 0.15, seed=1)
    # no regularisation and a high learning rate: validation RMSE turns up quickly
    model = BiasedMF(n_factors=32, reg=0.0, bias_reg=0.0, lr=0.05, epochs=60, batch_size=256, patience=3)
    model.fit(train, valid)
    hist = model.history_
    assert len(hist) < 60  # stopped early
    best = min(hist, key=lambda h: h["valid_rmse"])
    assert best["best"] and best["epoch"] == len(hist) - 3
    assert _rmse(model, valid) == pytest.approx(best["valid_rmse"], abs=1e-4)


def test_valid_fraction_carves_training_data() -> None:
    data = make_ratings(n_users=200, n_items=100, per_user=25)
    model = BiasedMF(n_factors=8, epochs=6, batch_size=256, valid_fraction=0.1, patience=None).fit(data)
    assert all("valid_rmse" in h for h in model.history_)
    assert model.fit_info_["n_ratings"] == len(data)  # the model still knows every training pair
    assert model.seen_.nnz == len(data)


def test_refit_trains_again_on_all_data_for_the_best_epoch_count() -> None:
    data = make_ratings(n_users=300, n_items=120, per_user=30, seed=3)
    model = BiasedMF(n_factors=32, reg=0.0, bias_reg=0.0, lr=0.05, epochs=40, batch_size=256, patience=2,
                     valid_fraction=0.1, refit=True).fit(data)
    select = [h for h in model.history_ if h["phase"] == "select"]
    refit = [h for h in model.history_ if h["phase"] == "refit"]
    # the epoch early stopping kept (an improvement counts from min_delta on)
    best = next(h["epoch"] for h in select if h.get("best"))
    assert min(h["valid_rmse"] for h in select) >= next(h["valid_rmse"] for h in select if h.get("best")) - 1e-4
    assert len(refit) == best and all("valid_rmse" not in h for h in refit)


def test_registry_and_persisted_params(tmp_path: Path) -> None:
    model = make_model("mf", n_factors=4, epochs=2)
    assert isinstance(model, BiasedMF)
    model.fit(make_ratings())
    meta = json.loads((current_version(model.save(tmp_path / "m")) / "model.json").read_text(encoding="utf-8"))
    assert meta["model_name"] == "mf" and meta["params"]["n_factors"] == 4
    assert len(meta["history"]) == 2


def test_a_folded_user_is_ranked_by_taste_shrunk_by_support_and_predicted_as_a_rating() -> None:
    data = make_ratings(n_users=60, n_items=40, per_user=14, seed=5)
    model = BiasedMF(n_factors=4, epochs=5, seed=0).fit(data)
    items = data.raw_items()[:5]
    folded = model.fold_in(items, [5.0] * 5)
    recs = model.recommend(folded, k=10)
    idx = model.item_map_.to_index(recs.ids)
    counts = np.bincount(model.seen_.indices, minlength=len(model.item_map_)).astype(np.float64)
    weights = counts / (counts + np.median(counts[counts > 0]))
    taste = model.item_factors_[idx] @ folded.factors * weights[idx]
    np.testing.assert_allclose(recs.scores, taste, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(recs.scores) <= 1e-7)
    rating = model.global_mean_ + folded.bias + model.item_bias_[idx] + model.item_factors_[idx] @ folded.factors
    np.testing.assert_allclose(recs.ratings, np.clip(rating, 1, 5), rtol=1e-5)
    np.testing.assert_allclose(model.predict(folded, recs.ids), recs.ratings, rtol=1e-6)
    assert "folded-in" in model.score_label


# ---------------------------------------------------------------------- ML-100K
@pytest.mark.slow
def test_ml100k_u1_accuracy(ml100k_u1) -> None:
    """Defaults on the official u1 fold (measured 0.924-0.925; Surprise SVD: ~0.95 on u1)."""
    train, test = ml100k_u1
    rmse = _rmse(BiasedMF().fit(train), test)
    baseline = _rmse(Baseline().fit(train), test)
    assert rmse < 0.930, rmse
    assert rmse < baseline - 0.025


@pytest.mark.slow
def test_ml100k_a_handful_of_ratings_moves_the_folded_list(ml100k_u1) -> None:
    """Five 5-star films of one genre change most of the new-user top 10 (ranked by predicted
    rating they changed 2 and 1 of 10: the item biases drowned the small folded vector)."""
    train, _ = ml100k_u1
    model = BiasedMF(seed=0).fit(train)
    cold = set(model.recommend("nobody", k=10).ids.tolist())
    for films in ([50, 172, 181, 228, 183], [1, 71, 95, 99, 588]):  # sci-fi; animation
        top = model.recommend(model.fold_in(films, [5] * 5), k=10).ids.tolist()
        assert len(set(top) - cold) >= 6, (films, top, cold)


@pytest.mark.slow
def test_ml100k_lab_preset_on_global_temporal_split(ml100k_dir: Path) -> None:
    """The course lab: ~1.07 RMSE, because most test ratings come from users absent in train."""
    from cfrec.data import load_movielens, temporal_split

    data = load_movielens(ml100k_dir)

    split = temporal_split(data, 0.2)
    train, test = split.train, split.test
    model = BiasedMF.lab().fit(train)
    pred = model.predict_detailed(test.raw_users(), test.raw_items())
    rmse = float(np.sqrt(np.mean((pred.ratings.astype(np.float64) - test.ratings) ** 2)))
    assert 1.04 < rmse < 1.10, rmse
    assert pred.counts()["unknown_user"] > 0.8 * len(test)


def test_validation_data_without_patience_changes_nothing() -> None:
    """Validation only watches a fit unless early stopping is on: the weights are the last epoch's."""
    data = make_ratings()
    train, valid = data.subset(np.arange(len(data)) % 5 != 0), data.subset(np.arange(len(data)) % 5 == 0)
    plain = BiasedMF.lab(epochs=6, seed=0).fit(train)
    watched = BiasedMF.lab(epochs=6, seed=0).fit(train, valid)
    assert [r["epoch"] for r in watched.history_] == [1, 2, 3, 4, 5, 6]
    assert all("valid_rmse" in r and "best" not in r for r in watched.history_)
    np.testing.assert_array_equal(watched.user_factors_, plain.user_factors_)


def test_model_classes_import_by_name_from_the_package() -> None:
    from cfrec.models import BPR, EASE, IALS, MultVAE, NeuMF  # noqa: F401
    from cfrec.models import BiasedMF as ByName

    assert ByName is BiasedMF
    with pytest.raises(ImportError):
        from cfrec.models import NotAModel  # type: ignore[attr-defined]  # noqa: F401
