"""ALS: exact and conjugate-gradient half-steps, planted low-rank recovery, persistence, devices,
threads, scale, real data."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cfrec.data import Interactions
from cfrec.engines import cg as cg_mod
from cfrec.engines import exact as solvers
from cfrec.engines.backend import NumpyArrays, TorchArrays
from cfrec.engines.cg import NumpyCG, TorchCG, cg_half_step
from cfrec.engines.exact import RatingSide, solve_side
from cfrec.errors import CfrecError
from cfrec.models import Recommender
from cfrec.models import als as als_mod
from cfrec.models.als import ALS
from tests.models.conftest import large_sparse_ratings


def planted(
    n_users: int = 300,
    n_items: int = 200,
    k: int = 3,
    density: float = 0.3,
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[Interactions, Interactions, dict]:
    """Continuous ratings ``mu + b_u + b_i + p_u.q_i + noise`` on random pairs; 80/20 train/test."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.8, (n_users, k))
    q = rng.normal(0, 0.8, (n_items, k))
    bu, bi = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    mask = rng.random((n_users, n_items)) < density
    u, i = np.nonzero(mask)
    r = 3.0 + bu[u] + bi[i] + np.einsum("ij,ij->i", p[u], q[i]) + rng.normal(0, noise, len(u))
    df = pd.DataFrame({"user_id": u + 1, "item_id": i + 1, "rating": r, "timestamp": 0})
    data = Interactions.from_frame(df, rating_scale=(-20.0, 20.0), name="planted")
    test_mask = rng.random(len(data)) < 0.2
    return data.subset(~test_mask), data.subset(test_mask), {"noise": noise}


def rmse(model: Recommender, test: Interactions) -> float:
    pred = model.predict(test.raw_users(), test.raw_items())
    return float(np.sqrt(np.mean((pred - test.ratings) ** 2)))


@pytest.fixture(scope="module")
def planted_data() -> tuple[Interactions, Interactions, dict]:
    return planted()


@pytest.fixture(scope="module")
def fitted(planted_data) -> ALS:
    train, test, _ = planted_data
    return ALS(n_factors=3, reg=0.01, reg_const=0.5, reg_bias=0.5, iterations=25, device="cpu").fit(
        train, test
    )


# ---------------------------------------------------------------------- known answers
def test_recovers_planted_low_rank_to_noise_level(planted_data, fitted) -> None:
    train, test, truth = planted_data
    err = rmse(fitted, test)
    # Held-out error is the noise plus a small estimation error; a bias-only model is far off.
    assert truth["noise"] * 0.9 < err < truth["noise"] * 1.4, err
    biases_only = ALS(
        n_factors=1, reg=0.01, reg_const=1e6, reg_bias=0.5, iterations=5, device="cpu"
    ).fit(train)
    assert rmse(biases_only, test) > 5 * err


def test_each_half_step_decreases_objective_and_is_exact(planted_data) -> None:
    train, _, _ = planted_data
    data = train.compact()
    pen = solvers.Penalty(reg=0.05, reg_const=2.0, reg_bias=1.0)
    ops = NumpyArrays()
    by_user = RatingSide.build(data.users, data.items, data.n_users, data.n_items)
    by_item = RatingSide.build(data.items, data.users, data.n_items, data.n_users)
    mu = float(data.ratings.mean())
    resid = data.ratings - np.float32(mu)
    rng = np.random.default_rng(1)
    k = 4
    q = rng.normal(0, 0.1, (data.n_items, k)).astype(np.float32)
    bi = np.zeros(data.n_items, np.float32)
    p = np.zeros((data.n_users, k), np.float32)
    bu = np.zeros(data.n_users, np.float32)
    n_u, n_i = by_user.counts, by_item.counts
    users, items = data.users.astype(np.int64), data.items.astype(np.int64)

    def objective() -> float:
        return solvers.explicit_objective(ops, users, items, resid, bu, bi, p, q, n_u, n_i, pen)[0]

    values = [objective()]
    for _ in range(4):
        sol, _ = solve_side(ops, by_user, q, resid[by_user.order] - bi[by_user.indices], pen)
        bu, p = sol[:, 0].copy(), sol[:, 1:].copy()
        values.append(objective())
        sol, sse = solve_side(ops, by_item, p, resid[by_item.order] - bu[by_item.indices], pen)
        bi, q = sol[:, 0].copy(), sol[:, 1:].copy()
        values.append(objective())
        # the cheap SSE identity used during training equals the direct sum of squares
        direct_sse = solvers.explicit_objective(
            ops, users, items, resid, bu, bi, p, q, n_u, n_i, solvers.Penalty(0.0, 0.0, 0.0)
        )[0]
        assert sse == pytest.approx(direct_sse, rel=1e-4)
    diffs = np.diff(values)
    assert np.all(diffs <= 1e-5 * values[0]), values
    assert values[-1] < 0.5 * values[0]

    # Exactness: user 0's solution equals a direct ridge regression on its own ratings.
    rows = np.flatnonzero(users == 0)
    y = np.hstack([np.ones((len(rows), 1)), q[items[rows]].astype(np.float64)])
    t = resid[rows] - bi[items[rows]]
    lam = np.r_[pen.reg_bias, np.full(k, pen.reg * len(rows) + pen.reg_const)]
    expected = np.linalg.solve(y.T @ y + np.diag(lam), y.T @ t)
    sol, _ = solve_side(ops, by_user, q, resid[by_user.order] - bi[by_user.indices], pen)
    np.testing.assert_allclose(sol[0], expected, rtol=1e-4, atol=1e-5)


def test_history_records_objective_rmse_and_validation(planted_data, fitted) -> None:
    train, test, _ = planted_data
    hist = fitted.history_
    assert [h["epoch"] for h in hist] == list(range(1, 26))
    assert all({"train_loss", "train_rmse", "valid_rmse", "seconds"} <= set(h) for h in hist)
    losses = [h["train_loss"] for h in hist]
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:], strict=False))
    # the logged validation RMSE of the last iteration is the test RMSE of the fitted model
    assert hist[-1]["valid_rmse"] == pytest.approx(rmse(fitted, test), rel=1e-4)
    # train_rmse is the unclipped training error of the final factors
    data = train.compact()
    pred = fitted._predict_known(data.users.astype(np.int64), data.items.astype(np.int64))
    assert hist[-1]["train_rmse"] == pytest.approx(
        float(np.sqrt(np.mean((pred - data.ratings) ** 2))), rel=1e-3
    )


@pytest.mark.parametrize("steps", [1, 3])
def test_cg_half_steps_never_increase_objective(planted_data, steps: int) -> None:
    """Each CG step minimises every row's objective exactly along its direction, so even one step
    per half-step never increases the regularised objective (measured directly on the ratings)."""
    train, _, _ = planted_data
    data = train.compact()
    pen = solvers.Penalty(reg=0.05, reg_const=2.0, reg_bias=1.0)
    ops = NumpyArrays()
    k = 4
    engine = NumpyCG(data.users, data.items, data.n_users, data.n_items, width=k + 1, chunk=3000)
    us, its = engine.user_side, engine.item_side
    users, items = data.users.astype(np.int64), data.items.astype(np.int64)
    resid = data.ratings - np.float32(data.ratings.mean())
    rng = np.random.default_rng(1)
    user = np.zeros((data.n_users, k + 1), np.float32)
    item = np.zeros((data.n_items, k + 1), np.float32)
    item[:, 1:] = rng.normal(0, 0.1, (data.n_items, k))

    def objective() -> float:
        return solvers.explicit_objective(
            ops,
            users,
            items,
            resid,
            user[:, 0],
            item[:, 0],
            user[:, 1:],
            item[:, 1:],
            us.counts,
            its.counts,
            pen,
        )[0]

    values = [objective()]
    with engine:
        for _ in range(5):
            user, _ = cg_half_step(
                engine,
                us,
                engine.xp.with_ones(item),
                user,
                target=resid[us.order] - item[:, 0][us.other],
                weight=None,
                gram=None,
                diag=pen.diagonal(us.counts, k),
                steps=steps,
            )
            values.append(objective())
            target = resid[its.order] - user[:, 0][its.other]
            item, f = cg_half_step(
                engine,
                its,
                engine.xp.with_ones(user),
                item,
                target=target,
                weight=None,
                gram=None,
                diag=pen.diagonal(its.counts, k),
                steps=steps,
            )
            values.append(objective())
            # the tracked value: sum t^2 + 2 f is the item half-step's objective (+ user penalties)
            user_pen = solvers.penalty_value(
                ops,
                pen,
                us.counts,
                user[:, 0],
                user[:, 1:],
                np.zeros(0, np.float32),
                np.zeros(0, np.float32),
                np.zeros((0, k), np.float32),
            )
            assert float(
                np.sum(target.astype(np.float64) ** 2)
            ) + 2 * f + user_pen == pytest.approx(values[-1], rel=1e-5)
    diffs = np.diff(values)
    assert np.all(diffs <= 1e-6 * values[0]), values
    assert values[-1] < 0.5 * values[0]


@pytest.mark.parametrize("k", [3, 10])
def test_cg_fit_matches_exact_fit(planted_data, k: int) -> None:
    train, test, _ = planted_data
    exact = ALS(n_factors=k, iterations=30, solver="exact", device="cpu").fit(train, test)
    cg = ALS(n_factors=k, iterations=30, solver="cg", cg_steps=3, device="cpu").fit(train, test)
    assert cg.history_[-1]["train_loss"] == pytest.approx(
        exact.history_[-1]["train_loss"], rel=1e-3
    )
    assert rmse(cg, test) == pytest.approx(rmse(exact, test), abs=2e-3)
    many = ALS(n_factors=k, iterations=30, solver="cg", cg_steps=k + 1, device="cpu").fit(train)
    np.testing.assert_allclose(many.user_bias_, exact.user_bias_, atol=5e-3)
    np.testing.assert_allclose(
        many.predict(test.raw_users(), test.raw_items()),
        exact.predict(test.raw_users(), test.raw_items()),
        atol=5e-3,
    )


def test_cg_history_is_the_direct_objective(planted_data) -> None:
    """train_loss / train_rmse come from CG's own bookkeeping; they equal the objective and the
    training RMSE computed from the ratings."""
    train, _, _ = planted_data
    model = ALS(n_factors=3, iterations=4, cg_steps=2, device="cpu").fit(train)
    data = train.compact()
    users, items = data.users.astype(np.int64), data.items.astype(np.int64)
    pen = model._penalty()
    counts_u = np.bincount(users, minlength=data.n_users).astype(np.float32)
    counts_i = np.bincount(items, minlength=data.n_items).astype(np.float32)
    loss, train_rmse = solvers.explicit_objective(
        NumpyArrays(),
        users,
        items,
        data.ratings - np.float32(model.global_mean_),
        model.user_bias_,
        model.item_bias_,
        model.user_factors_,
        model.item_factors_,
        counts_u,
        counts_i,
        pen,
    )
    assert model.history_[-1]["train_loss"] * len(data) == pytest.approx(loss, rel=1e-5)
    assert model.history_[-1]["train_rmse"] == pytest.approx(train_rmse, rel=1e-4)


def test_threads_do_not_change_the_fit(planted_data, monkeypatch: pytest.MonkeyPatch) -> None:
    train, _, _ = planted_data
    monkeypatch.setattr(cg_mod, "CG_CHUNK_MIN", 500)  # several chunks on this small set
    one = ALS(n_factors=4, iterations=3, device="cpu", threads=1).fit(train)
    two = ALS(n_factors=4, iterations=3, device="cpu", threads=2).fit(train)
    np.testing.assert_array_equal(one.user_factors_, two.user_factors_)
    np.testing.assert_array_equal(one.item_bias_, two.item_bias_)


def test_on_epoch_called_each_iteration(tiny) -> None:
    seen: list[dict] = []
    ALS(n_factors=2, iterations=3, device="cpu").fit(tiny, on_epoch=seen.append)
    assert [s["epoch"] for s in seen] == [1, 2, 3]
    assert all(s["epochs"] == 3 and np.isfinite(s["train_loss"]) for s in seen)


def test_invalid_hyperparameters_raise(tiny) -> None:
    with pytest.raises(CfrecError, match="reg"):
        ALS(reg=0.0, reg_const=0.0).fit(tiny)
    with pytest.raises(CfrecError, match="n_factors"):
        ALS(n_factors=0).fit(tiny)
    with pytest.raises(CfrecError, match=">= 0"):
        ALS(reg_bias=-1.0).fit(tiny)
    with pytest.raises(CfrecError, match="solver"):
        ALS(solver="lu").fit(tiny)
    for bad in (0, True, -2):
        with pytest.raises(CfrecError, match="cg_steps"):
            ALS(cg_steps=bad).fit(tiny)
    with pytest.raises(CfrecError, match="threads"):
        ALS(threads=0).fit(tiny)


# ---------------------------------------------------------------------- determinism and devices
def test_seed_reproducible_and_seed_matters(planted_data) -> None:
    train, test, _ = planted_data
    a = ALS(n_factors=3, iterations=5, seed=7, device="cpu").fit(train)
    b = ALS(n_factors=3, iterations=5, seed=7, device="cpu").fit(train)
    c = ALS(n_factors=3, iterations=5, seed=8, device="cpu").fit(train)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    np.testing.assert_array_equal(a.user_bias_, b.user_bias_)
    assert not np.allclose(a.item_factors_, c.item_factors_)
    assert rmse(a, test) == pytest.approx(rmse(c, test), abs=0.01)


def torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ALS's CUDA code paths (torch sparse products, batched Cholesky) on the CPU."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(als_mod, "array_backend", lambda _dev: TorchArrays(cpu))
    monkeypatch.setattr(als_mod, "cg_engine", lambda _dev, *args, **kw: TorchCG(*args, device=cpu, **kw))


@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_torch_solver_matches_numpy_solver(
    planted_data, monkeypatch: pytest.MonkeyPatch, solver: str
) -> None:
    """The CUDA code path, run on CPU, gives the same model."""
    train, test, _ = planted_data
    ref = ALS(n_factors=3, iterations=6, solver=solver, device="cpu").fit(train)
    torch_on_cpu(monkeypatch)
    alt = ALS(n_factors=3, iterations=6, solver=solver, device="cpu").fit(train)
    np.testing.assert_allclose(alt.item_factors_, ref.item_factors_, atol=2e-3)
    np.testing.assert_allclose(alt.user_bias_, ref.user_bias_, atol=2e-3)
    assert alt.history_[-1]["train_loss"] == pytest.approx(ref.history_[-1]["train_loss"], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_cuda_matches_cpu(planted_data, solver: str) -> None:
    train, test, _ = planted_data
    cpu = ALS(n_factors=3, iterations=6, solver=solver, device="cpu").fit(train)
    gpu = ALS(n_factors=3, iterations=6, solver=solver, device="cuda").fit(train)
    np.testing.assert_allclose(gpu.item_factors_, cpu.item_factors_, atol=2e-3)
    assert rmse(gpu, test) == pytest.approx(rmse(cpu, test), abs=1e-4)


# ---------------------------------------------------------------------- persistence and cold start
def test_save_load_identity(fitted, planted_data, tmp_path: Path) -> None:
    _, test, _ = planted_data
    path = fitted.save(tmp_path / "als")
    loaded = Recommender.load(path)
    assert isinstance(loaded, ALS) and loaded.get_params() == fitted.get_params()
    users, items = test.raw_users()[:200], test.raw_items()[:200]
    np.testing.assert_array_equal(loaded.predict(users, items), fitted.predict(users, items))
    a, b = loaded.recommend(users[0], k=5), fitted.recommend(users[0], k=5)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert loaded.history_[-1]["train_loss"] == pytest.approx(fitted.history_[-1]["train_loss"])


def test_fold_in_reproduces_training_user(planted_data) -> None:
    train, _, _ = planted_data
    model = ALS(n_factors=3, iterations=40, device="cpu").fit(train)
    raw_user = train.raw_users()[0]
    mine = train.raw_users() == raw_user
    folded = model.fold_in(train.raw_items()[mine], train.ratings[mine])
    u = model.user_map_.to_index(np.array([raw_user]))[0]
    np.testing.assert_allclose(folded.factors, model.user_factors_[u], atol=2e-3)
    assert folded.bias == pytest.approx(float(model.user_bias_[u]), abs=2e-3)
    items = train.raw_items()[:50]
    np.testing.assert_allclose(
        model.predict(folded, items), model.predict(raw_user, items), atol=5e-3
    )
    # unknown items are ignored; nothing known -> the global mean
    empty = model.fold_in([10**9], [5.0])
    assert empty.n_ratings == 0
    assert model.predict(empty, items[:1])[0] == pytest.approx(
        model.global_mean_ + model.item_bias_[model.item_map_.to_index(items[:1])[0]], abs=1e-5
    )


# ---------------------------------------------------------------------- scale
@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_large_sparse_never_densifies(solver: str) -> None:
    """200k users x 50k items (10^10 cells) with 1M ratings: well under 1 GB with either solver."""
    data = large_sparse_ratings()
    tracemalloc.start()
    try:
        model = ALS(n_factors=8, iterations=2, solver=solver, device="cpu").fit(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.user_factors_.shape[1] == 8 and len(model.item_factors_) == len(
        data.present_items()
    )
    assert peak < 1 << 30, f"peak {peak / 2**20:.0f} MiB"
    assert np.isfinite(model.history_[-1]["train_loss"])


# ---------------------------------------------------------------------- real data


@pytest.mark.slow
def test_ml100k_u1_rmse(ml100k_u1) -> None:
    train, test = ml100k_u1
    model = ALS().fit(train)
    # Measured 0.921 on u1 (mean 0.910 over u1..u5); Surprise SVD gets about 0.95 on u1.
    assert rmse(model, test) < 0.926
