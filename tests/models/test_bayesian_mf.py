"""BayesianMF: exact conditionals, planted-truth recovery, posterior convergence, fold-in,
persistence, bad hyperparameters, the torch backend, the shared contract and ML-100K."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cfrec.data import Interactions
from cfrec.engines.backend import TorchArrays
from cfrec.engines.gibbs import (
    GibbsChain,
    Priors,
    Residuals,
)
from cfrec.engines.matrix import normalized_sets
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.bayesian_mf import BayesianMF
from cfrec.testing import RecommenderContract


def planted_ratings(n_users: int = 300, n_items: int = 200, k: int = 3, density: float = 0.3,
            noise: float = 0.3, seed: int = 0) -> tuple[Interactions, Interactions, dict[str, Any]]:
    """Continuous ratings ``3 + b_u + b_i + p_u.q_i + noise`` on random pairs; 80/20 train/test,
    with the planted parameters (indexed by raw id - 1)."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.8, (n_users, k))
    q = rng.normal(0, 0.8, (n_items, k))
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.5, n_items)
    u, i = np.nonzero(rng.random((n_users, n_items)) < density)
    clean = 3.0 + bu[u] + bi[i] + np.einsum("ij,ij->i", p[u], q[i])
    df = pd.DataFrame({"user_id": u + 1, "item_id": i + 1, "rating": clean + rng.normal(0, noise, len(u)),
                       "timestamp": 0})
    data = Interactions.from_frame(df, rating_scale=(-20.0, 20.0), name="planted")
    test = rng.random(len(data)) < 0.2
    truth = {"noise": noise, "p": p, "q": q, "bu": bu, "bi": bi}
    return data.subset(~test), data.subset(test), truth


def clean_scores(truth: dict[str, Any], data: Interactions) -> np.ndarray:
    u, i = data.raw_users().astype(np.int64) - 1, data.raw_items().astype(np.int64) - 1
    return 3.0 + truth["bu"][u] + truth["bi"][i] + np.einsum("ij,ij->i", truth["p"][u], truth["q"][i])


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def small(**params: Any) -> BayesianMF:
    base: dict[str, Any] = {"n_factors": 3, "n_sweeps": 60, "burn_in": 20, "max_samples": 40,
                            "implicit": False, "implicit_items": False, "seed": 0, "device": "cpu"}
    return BayesianMF(**{**base, **params})


@pytest.fixture(scope="module")
def planted_data() -> tuple[Interactions, Interactions, dict[str, Any]]:
    return planted_ratings()


@pytest.fixture(scope="module")
def bmf_fitted(planted_data: tuple[Interactions, Interactions, dict[str, Any]]) -> BayesianMF:
    train, test, _ = planted_data
    return small().fit(train, test)


@pytest.fixture(scope="module")
def bmf_implicit(planted_data: tuple[Interactions, Interactions, dict[str, Any]]) -> BayesianMF:
    train, _, _ = planted_data
    return small(implicit=True, implicit_items=True).fit(train)


# ---------------------------------------------------------------------- known answers
def test_recovers_planted_ratings_and_noise(planted_data, bmf_fitted) -> None:
    train, test, truth = planted_data
    pred = bmf_fitted.predict(test.raw_users(), test.raw_items())
    # held-out error is the noise plus a small estimation error; the clean scores are close
    assert truth["noise"] * 0.95 < rmse(pred, test.ratings) < truth["noise"] * 1.25
    assert rmse(pred, clean_scores(truth, test)) < 0.5 * truth["noise"]
    # the sampled noise level matches the planted one
    noise = 1.0 / np.sqrt(bmf_fitted.sample_noise_precision_.astype(np.float64))
    assert noise.mean() == pytest.approx(truth["noise"], rel=0.1)


def test_recovers_planted_factor_subspace(planted_data, bmf_fitted) -> None:
    """Factors are identified up to an invertible linear map: each planted dimension is a linear
    function of the posterior-mean vectors."""
    _, _, truth = planted_data
    for learned, raw_ids, planted_side in ((bmf_fitted.item_embeddings(), bmf_fitted.item_map_.ids, truth["q"]),
                                           (bmf_fitted.user_embeddings(), bmf_fitted.user_map_.ids, truth["p"])):
        target = planted_side[np.asarray(raw_ids, dtype=np.int64) - 1]
        design = np.hstack([np.ones((len(learned), 1)), learned.astype(np.float64)])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        resid = target - design @ coef
        r2 = 1 - (resid**2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)
        assert r2.min() > 0.9, r2


def test_posterior_mean_predictions_converge_as_sweeps_grow(planted_data) -> None:
    """Two chains from different seeds agree more, and both get closer to the truth, the longer
    they run: the Monte Carlo error of the posterior mean shrinks."""
    train, test, truth = planted_data
    clean = clean_scores(truth, test)
    gaps, errors = [], []
    for n in (8, 32, 128):
        preds = [small(n_sweeps=n, burn_in=n // 4, max_samples=n, seed=s).fit(train)
                 .predict(test.raw_users(), test.raw_items()) for s in (1, 2)]
        gaps.append(rmse(preds[0], preds[1]))
        errors.append(rmse(preds[0], clean))
    assert gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < 0.3 * gaps[0] and gaps[2] < 0.05
    assert errors[0] > errors[2], errors


def test_predictions_average_the_kept_samples(bmf_fitted, planted_data) -> None:
    """``predict`` is the mean over kept samples of each sample's score, not the score of the mean."""
    _, test, _ = planted_data
    s, k = len(bmf_fitted.sample_global_), bmf_fitted.n_factors
    u = bmf_fitted.user_map_.to_index(test.raw_users()[:200])
    i = bmf_fitted.item_map_.to_index(test.raw_items()[:200])
    xu = bmf_fitted.user_factors_[u].reshape(-1, s, k).astype(np.float64) * np.sqrt(s)
    qi = bmf_fitted.item_factors_[i].reshape(-1, s, k).astype(np.float64) * np.sqrt(s)
    per_sample = np.einsum("nsk,nsk->ns", xu, qi)
    expected = bmf_fitted.global_mean_ + bmf_fitted.user_bias_[u] + bmf_fitted.item_bias_[i] + per_sample.mean(1)
    np.testing.assert_allclose(bmf_fitted.predict(test.raw_users()[:200], test.raw_items()[:200]), expected,
                               rtol=1e-5, atol=1e-4)
    of_means = np.einsum("nk,nk->n", bmf_fitted.user_embeddings()[u], bmf_fitted.item_embeddings()[i])
    assert np.abs(per_sample.mean(1) - of_means).max() > 1e-4  # not the score of the mean vectors
    assert bmf_fitted.user_factors_.shape == (len(bmf_fitted.user_map_), s * k) and s == 40


def test_history_and_progress(planted_data) -> None:
    train, test, _ = planted_data
    seen: list[dict[str, Any]] = []
    model = small(n_sweeps=12, burn_in=4, max_samples=4).fit(train, test, on_epoch=seen.append)
    assert [r["epoch"] for r in model.history_] == list(range(1, 13))
    assert all(r["epochs"] == 12 for r in seen) and len(seen) == 12
    last = model.history_[-1]
    assert last["kept_samples"] == 4 and last["train_rmse"] == pytest.approx(last["train_loss"] ** 0.5)
    assert {"valid_rmse", "noise_std", "seconds"} <= set(last)
    json.dumps(model.history_)


def test_reproducible_and_seed_dependent(planted_data) -> None:
    train, test, _ = planted_data
    a = small(n_sweeps=10, burn_in=2, seed=3).fit(train).predict(test.raw_users(), test.raw_items())
    b = small(n_sweeps=10, burn_in=2, seed=3).fit(train).predict(test.raw_users(), test.raw_items())
    c = small(n_sweeps=10, burn_in=2, seed=4).fit(train).predict(test.raw_users(), test.raw_items())
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------------- implicit features
def test_implicit_model_fits_and_samples_implicit_factors(planted_data, bmf_implicit) -> None:
    train, test, truth = planted_data
    model = bmf_implicit
    assert model.sample_implicit_ is not None
    assert model.sample_implicit_.shape == (40, len(model.item_map_), 1 + 3)
    assert np.abs(model.sample_implicit_).max() > 0
    assert all(0 <= r[key] <= model.cg_max_iter for r in model.history_
               for key in ("cg_iterations_users", "cg_iterations_items"))
    pred = model.predict(test.raw_users(), test.raw_items())
    assert rmse(pred, test.ratings) < truth["noise"] * 1.3


def test_valid_set_only_feeds_implicit_sets_when_asked(planted_data) -> None:
    train, test, _ = planted_data
    users, items = test.raw_users(), test.raw_items()
    both = {"implicit": True, "implicit_items": True, "n_sweeps": 15, "burn_in": 5}
    plain = small(**both).fit(train).predict(users, items)
    monitored = small(**both).fit(train, test).predict(users, items)
    np.testing.assert_array_equal(plain, monitored)  # valid was only monitored
    with_test_sets = small(**both, implicit_include_valid=True)
    assert not np.array_equal(with_test_sets.fit(train, test).predict(users, items), plain)
    for side in ({"implicit": True}, {"implicit_items": True}):  # either side alone uses them too
        alone = small(**side, n_sweeps=15, burn_in=5)
        assert not np.array_equal(alone.fit(train, test).predict(users, items),
                                  small(**side, n_sweeps=15, burn_in=5, implicit_include_valid=True)
                                  .fit(train, test).predict(users, items))


# ---------------------------------------------------------------------- fold-in
@pytest.mark.parametrize("which", ["plain", "implicit"])
def test_fold_in_of_a_training_user_matches_learned_predictions(planted_data, bmf_fitted, bmf_implicit,
                                                                 which) -> None:
    train, _, _ = planted_data
    model = bmf_fitted if which == "plain" else bmf_implicit
    frame = train.to_frame()
    items = model.item_map_.ids
    for user in (1, 7, 42):
        mine = frame[frame["user_id"] == user]
        folded = model.fold_in(mine["item_id"].to_numpy(), mine["rating"].to_numpy())
        assert folded.factors.shape == (40 * 3,) and folded.n_ratings == len(mine)
        learned, again = model.predict(user, items), model.predict(folded, items)
        assert rmse(learned, again) < 0.1, (user, rmse(learned, again))
        assert np.corrcoef(learned, again)[0, 1] > 0.98


def test_fold_in_edge_cases(bmf_fitted) -> None:
    items = bmf_fitted.item_map_.ids[:5]
    nobody = bmf_fitted.fold_in([999_999], [3.0])  # unknown items only: the unknown-user fallback
    assert nobody.n_ratings == 0 and nobody.unknown_items == (999_999,)
    np.testing.assert_allclose(bmf_fitted.predict(nobody, items), bmf_fitted.predict(999_999, items), rtol=1e-6)
    strong = bmf_fitted.fold_in(items, [5.0] * 5, reg=1e4)  # a huge ridge keeps the user at the prior mean
    weak = bmf_fitted.fold_in(items, [5.0] * 5, reg=1e-3)
    assert bmf_fitted.predict(weak, items).mean() > bmf_fitted.predict(strong, items).mean()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(CfrecError, match="regularisation"):
            bmf_fitted.fold_in(items, [4.0] * 5, reg=bad)
    with pytest.raises(CfrecError):
        bmf_fitted.fold_in(items, [4.0] * 4)
    assert bmf_fitted.fold_in_ridge() is None


# ---------------------------------------------------------------------- persistence
@pytest.mark.parametrize("which", ["plain", "implicit"])
def test_save_load_identity(planted_data, bmf_fitted, bmf_implicit, which, tmp_path: Path) -> None:
    _, test, _ = planted_data
    model = bmf_fitted if which == "plain" else bmf_implicit
    path = model.save(tmp_path / "bmf")
    loaded = BayesianMF.load(path)
    assert type(loaded) is BayesianMF and loaded.get_params() == model.get_params()
    u, i = test.raw_users(), test.raw_items()
    np.testing.assert_array_equal(loaded.predict(u, i), model.predict(u, i))
    for a, b in zip(loaded.recommend([1, 2, 3], k=5), model.recommend([1, 2, 3], k=5), strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(loaded.item_embeddings(), model.item_embeddings())
    np.testing.assert_array_equal(loaded.user_embeddings(), model.user_embeddings())
    np.testing.assert_array_equal(loaded.similar_items(5, k=4).ids, model.similar_items(5, k=4).ids)
    fa, fb = loaded.fold_in([1, 2, 3], [5, 1, 4]), model.fold_in([1, 2, 3], [5, 1, 4])
    np.testing.assert_array_equal(loaded.predict(fa, [4, 5, 6]), model.predict(fb, [4, 5, 6]))


def test_load_checks_array_shapes(bmf_fitted, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    path = bmf_fitted.save(tmp_path / "bmf")
    weights = next(path.rglob("weights.safetensors"))
    meta_path = weights.with_name("model.json")
    arrays = load_file(str(weights))
    arrays["model.sample_item_bias"] = arrays["model.sample_item_bias"][:, :-1].copy()
    save_file(arrays, str(weights))
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["weights_sha256"] = None  # the shape check itself must catch it
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileError, match="sample_item_bias"):
        BayesianMF.load(path)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("params, field", [
    ({"n_factors": 0}, "n_factors"), ({"n_factors": 2.5}, "n_factors"), ({"n_sweeps": 0}, "n_sweeps"),
    ({"burn_in": -1}, "burn_in"), ({"n_sweeps": 10, "burn_in": 10}, "burn_in"),
    ({"max_samples": 0}, "max_samples"), ({"implicit": "yes"}, "implicit"),
    ({"implicit_items": 1}, "implicit_items"),
    ({"implicit": False, "implicit_items": False, "implicit_include_valid": True}, "implicit_include_valid"),
    ({"alpha_0": 0.0}, "alpha_0"), ({"beta_0": -1.0}, "beta_0"), ({"gamma_0": float("inf")}, "gamma_0"),
    ({"reg_0": -1.0}, "reg_0"), ({"init_std": float("nan")}, "init_std"), ({"cg_tol": 1.0}, "cg_tol"),
    ({"cg_max_iter": 0}, "cg_max_iter"), ({"seed": "zero"}, "seed"), ({"device": "tpu"}, "device"),
])
def test_bad_hyperparameters_raise_cfrec_error(planted_data, params, field) -> None:
    train, _, _ = planted_data
    with pytest.raises(CfrecError, match=field if field != "device" else "unknown device"):
        small(**params).fit(train)


# ---------------------------------------------------------------------- torch backend
def test_torch_backend_chain_fits_like_numpy(planted_data) -> None:
    """The whole sampler on the torch backend (CPU here; CUDA in production) reaches the same
    accuracy as on numpy (the random streams differ)."""
    train, test, truth = planted_data
    results = {}
    for name in ("numpy", "torch"):
        model = small(implicit=True, implicit_items=True)
        if name == "torch":
            model._fit = _torch_fit.__get__(model)  # type: ignore[method-assign]
        model.fit(train)
        results[name] = rmse(model.predict(test.raw_users(), test.raw_items()), clean_scores(truth, test))
    assert results["torch"] == pytest.approx(results["numpy"], abs=0.03), results


def _torch_fit(self: BayesianMF, train: Interactions, valid: Interactions | None, on_epoch: Any) -> None:
    """``BayesianMF._fit`` with the torch backend on the CPU."""
    order = np.argsort(train.users, kind="stable")
    users, items = train.users[order], train.items[order]
    resid = train.ratings[order] - np.float32(self.global_mean_)
    user_sets = normalized_sets(users, items, train.n_users, train.n_items) if self.implicit else None
    item_sets = normalized_sets(items, users, train.n_items, train.n_users) if self.implicit_items else None
    seeds = np.random.SeedSequence(self.seed).spawn(2)
    be = Residuals(TorchArrays(torch.device("cpu"), seeds[1]), users, items, resid, train.n_users, train.n_items)
    chain = GibbsChain(be, len(resid), self.n_factors, Priors(1.0, 1.0, 1.0, 1.0), self.init_std,
                       user_sets, item_sets, self.cg_tol, self.cg_max_iter, np.random.default_rng(seeds[0]))
    self._run(chain, be, valid, on_epoch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu_accuracy(planted_data) -> None:
    train, test, truth = planted_data
    errs = [rmse(small(implicit=True, implicit_items=True, device=d).fit(train).predict(test.raw_users(), test.raw_items()),
                 clean_scores(truth, test)) for d in ("cpu", "cuda")]
    assert errs[1] == pytest.approx(errs[0], abs=0.03), errs


# ---------------------------------------------------------------------- the shared contract
class TestBayesianMFContract(RecommenderContract):
    def make_model(self) -> BayesianMF:
        return BayesianMF(n_factors=4, n_sweeps=40, burn_in=10, max_samples=15, seed=0, device="cpu")


class TestBayesianMFPlainContract(RecommenderContract):
    def make_model(self) -> BayesianMF:
        return BayesianMF(n_factors=4, n_sweeps=40, burn_in=10, max_samples=15, implicit=False, seed=0,
                          device="cpu")


# ---------------------------------------------------------------------- real data
@pytest.mark.slow
def test_ml100k_u1_accuracy(ml100k_u1) -> None:
    """Default hyperparameters on ML-100K u1 (the hardest of the five folds): RMSE below 0.895
    (measured 0.889; myFM with the same features and sweeps 0.892)."""
    train, test = ml100k_u1
    model = BayesianMF(device="cpu").fit(train)
    assert rmse(model.predict(test.raw_users(), test.raw_items()), test.ratings) < 0.895
