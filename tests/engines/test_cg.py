"""The conjugate-gradient solver shared by ALS and iALS: products, convergence to the exact
solves, the tracked objective, monotone half-steps, chunking and threads."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from cfrec.engines import cg as solvers
from cfrec.engines.backend import NumpyArrays
from cfrec.engines.cg import CGSide, NumpyCG, TorchCG, cg_half_step
from cfrec.engines.exact import Penalty, RatingSide, implicit_solve, solve_side
from cfrec.engines.matrix import confidence_minus_one
from cfrec.errors import CfrecError


def ratings(n_rows: int = 120, n_cols: int = 70, density: float = 0.15, seed: int = 0):
    """Random sparse (row, col, rating) triples, every row and column rated at least once."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_rows, n_cols)) < density
    mask[np.arange(n_rows), rng.integers(0, n_cols, n_rows)] = True
    mask[rng.integers(0, n_rows, n_cols), np.arange(n_cols)] = True
    rows, cols = np.nonzero(mask)
    perm = rng.permutation(len(rows))  # the engines must not rely on any input order
    rows, cols = rows[perm].astype(np.int32), cols[perm].astype(np.int32)
    return rows, cols, rng.integers(1, 6, len(rows)).astype(np.float32)


def numpy_engine(rows, cols, n_rows, n_cols, width, threads=1, chunk=None) -> NumpyCG:
    return NumpyCG(rows, cols, n_rows, n_cols, width=width, threads=threads, chunk=chunk)


def torch_engine(device: str) -> Callable[..., TorchCG]:
    def make(rows, cols, n_rows, n_cols, width, threads=1, chunk=None) -> TorchCG:
        return TorchCG(
            rows,
            cols,
            n_rows,
            n_cols,
            device=torch.device(device),
            width=width,
            threads=threads,
            chunk=chunk,
        )

    return make


ENGINES = [
    pytest.param(numpy_engine, id="numpy"),
    pytest.param(torch_engine("cpu"), id="torch-cpu"),
    pytest.param(
        torch_engine("cuda"),
        id="torch-cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available"),
    ),
]


def dense_weights(rows, cols, values, n_rows, n_cols) -> np.ndarray:
    out = np.zeros((n_rows, n_cols))
    out[rows, cols] = values
    return out


def to_np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


# ---------------------------------------------------------------------- chunks
def test_chunk_bounds_cover_rows_without_splitting_one() -> None:
    counts = np.array([5, 0, 3, 40, 1, 1, 7, 0, 2])
    indptr = np.r_[0, np.cumsum(counts)]
    bounds = solvers.cg_chunk_bounds(indptr, 8)
    assert bounds[0] == 0 and bounds[-1] == len(counts) and np.all(np.diff(bounds) > 0)
    assert np.diff(indptr[bounds]).sum() == counts.sum()
    # every chunk but its last row holds fewer than the target: only a long row overshoots
    assert np.all(indptr[bounds[1:] - 1] - indptr[bounds[:-1]] < 8)
    assert len(bounds) - 1 >= counts.sum() // (8 + counts.max())
    assert list(solvers.cg_chunk_bounds(np.zeros(4, np.int64), 8)) == [0, 3]
    assert solvers.cg_chunk_size(10) == solvers.CG_CHUNK_MIN
    assert solvers.cg_chunk_size(10**10) == solvers.CG_CHUNK_MAX


# ---------------------------------------------------------------------- products
@pytest.mark.parametrize("make", ENGINES)
@pytest.mark.parametrize("weighted", [False, True])
def test_products_equal_dense_reference(make, weighted: bool) -> None:
    rows, cols, r = ratings()
    n_rows, n_cols, d = 120, 70, 5
    rng = np.random.default_rng(1)
    engine = make(rows, cols, n_rows, n_cols, d, chunk=100)  # several chunks
    w_all = r * 0.7 if weighted else None
    t_all = rng.normal(size=len(r)).astype(np.float32)
    with engine:
        for side, n, n_other, (a, b) in (
            (engine.user_side, n_rows, n_cols, (rows, cols)),
            (engine.item_side, n_cols, n_rows, (cols, rows)),
        ):
            v = rng.normal(size=(n, d)).astype(np.float32)
            fixed = rng.normal(size=(n_other, d)).astype(np.float32)
            w_dense = dense_weights(a, b, w_all if weighted else np.ones(len(r)), n, n_other)
            t_dense = dense_weights(a, b, t_all, n, n_other)
            s = v.astype(np.float64) @ fixed.T.astype(np.float64) * (w_dense != 0)
            w_side = None if w_all is None else engine.xp.asarray(w_all[side.order], np.float32)
            t_side = engine.xp.asarray(t_all[side.order], np.float32)
            tv, tf = engine.xp.asarray(v, np.float32), engine.xp.asarray(fixed, np.float32)
            applied = to_np(engine.apply(side, tv, tf, w_side))
            np.testing.assert_allclose(applied, (w_dense * s) @ fixed, rtol=1e-4, atol=1e-4)
            res, t_s, w_ss = engine.residual(side, tv, tf, w_side, t_side)
            np.testing.assert_allclose(
                to_np(res), (t_dense - w_dense * s) @ fixed, rtol=1e-4, atol=1e-4
            )
            assert t_s == pytest.approx(float((t_dense * s).sum()), rel=1e-5)
            assert w_ss == pytest.approx(float((w_dense * s * s).sum()), rel=1e-5)
            if weighted:  # no target: the implicit-feedback target 1 + w
                res, t_s, _ = engine.residual(side, tv, tf, w_side, None)
                c = (1.0 + w_dense) * (w_dense != 0)
                np.testing.assert_allclose(
                    to_np(res), (c - w_dense * s) @ fixed, rtol=1e-4, atol=1e-4
                )
                assert t_s == pytest.approx(float((c * s).sum()), rel=1e-5)
            # the side's bookkeeping: other-side index and counts
            assert np.array_equal(np.asarray(side.other), b[side.order])
            np.testing.assert_array_equal(side.counts, np.bincount(a, minlength=n))


@pytest.mark.parametrize("weighted", [False, True])
def test_compiled_products_equal_the_sampled_and_sparse_products(weighted: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One compiled pass a chunk gives the values of torch's sampled product followed by scipy's
    sparse product (the path without numba), on both sides, with and without targets."""
    monkeypatch.setattr(solvers, "CG_COMPILED_MIN", 0)  # the kernels run whatever the size
    rows, cols, r = ratings(200, 80, 0.15, seed=5)
    rng = np.random.default_rng(4)
    v_u, v_i = rng.normal(size=(200, 7)).astype(np.float32), rng.normal(size=(80, 7)).astype(np.float32)
    t_all = rng.normal(size=len(r)).astype(np.float32)

    def products() -> list[np.ndarray | float]:
        engine = numpy_engine(rows, cols, 200, 80, 7, threads=2, chunk=300)
        out: list[np.ndarray | float] = []
        with engine:
            w = r[engine.user_side.order] * 0.3 if weighted else None
            t = t_all[engine.user_side.order]
            for side, v, fixed in ((engine.user_side, v_u, v_i), (engine.item_side, v_i, v_u)):
                out.append(engine.apply(side, v, fixed, w))
                for target in (t, None):
                    res, t_s, w_ss = engine.residual(side, v, fixed, w, target)
                    out += [res, t_s, w_ss]
        return out

    assert solvers._compiled_products() is not None  # numba is a dependency
    compiled = products()
    monkeypatch.setattr(solvers, "_compiled_products", lambda: None)
    reference = products()
    for a, b in zip(compiled, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_fused_user_half_step_equals_the_step_by_step_passes(implicit: bool,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled row-by-row half-step of the user side gives the vectors and the objective
    of the passes over all rows (explicit: targets, per-column diagonal, no Gram matrix;
    implicit: weights, the 1 + w target, a Gram matrix and one diagonal value a row)."""
    monkeypatch.setattr(solvers, "CG_COMPILED_MIN", 0)  # the kernels run whatever the size
    rows, cols, r = ratings(150, 60, 0.2, seed=8)
    rng = np.random.default_rng(9)
    d = 6
    fixed = rng.normal(0, 0.5, (60, d)).astype(np.float32)
    x0 = rng.normal(0, 0.1, (150, d)).astype(np.float32)

    def half_step() -> tuple[np.ndarray, float]:
        engine = numpy_engine(rows, cols, 150, 60, d, threads=2, chunk=250)
        with engine:
            side = engine.user_side
            if implicit:
                kw = dict(target=None, weight=(0.4 * r[side.order]).astype(np.float32),
                          gram=engine.xp.gram(fixed), diag=np.full((150, 1), 3.0, np.float32))
            else:
                kw = dict(target=(r - r.mean())[side.order].astype(np.float32), weight=None, gram=None,
                          diag=rng.uniform(1, 2, (150, d)).astype(np.float32))
            return cg_half_step(engine, side, fixed, x0, steps=3, **kw)

    assert solvers._compiled_half_step() is not None  # numba is a dependency
    state = rng.bit_generator.state
    fused, f_fused = half_step()
    rng.bit_generator.state = state
    monkeypatch.setattr(solvers, "_compiled_half_step", lambda: None)
    passes, f_passes = half_step()
    np.testing.assert_allclose(fused, passes, rtol=1e-4, atol=1e-5)
    assert f_fused == pytest.approx(f_passes, rel=1e-5)
    assert not np.allclose(fused, x0)


def test_threads_and_chunks_do_not_change_results() -> None:
    """Chunk bounds depend on the data only and parts are added in chunk order: one thread and
    three give the same bits, on both sides."""
    rows, cols, r = ratings(300, 90, 0.2, seed=3)
    rng = np.random.default_rng(2)
    v_u, v_i = (
        rng.normal(size=(300, 6)).astype(np.float32),
        rng.normal(size=(90, 6)).astype(np.float32),
    )
    results = []
    for threads in (1, 3):
        engine = numpy_engine(rows, cols, 300, 90, 6, threads=threads, chunk=150)
        assert len(engine.chunks) > 10 and engine.n_workers == threads
        with engine:
            w = r[engine.user_side.order]
            results.append(
                [
                    engine.apply(engine.user_side, v_u, v_i, w),
                    engine.apply(engine.item_side, v_i, v_u, w),
                    engine.residual(engine.item_side, v_i, v_u, w, None)[0],
                ]
            )
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------- convergence to the exact solve
def explicit_problem(seed: int = 0, k: int = 4):
    rows, cols, r = ratings(seed=seed)
    n_rows, n_cols = 120, 70
    rng = np.random.default_rng(seed + 10)
    fixed = rng.normal(0, 0.5, (n_cols, k)).astype(np.float32)
    target = (r - r.mean()).astype(np.float32)
    return rows, cols, target, n_rows, n_cols, fixed, Penalty(0.05, 1.0, 2.0)


def exact_explicit(rows, cols, target, n_rows, n_cols, fixed, pen) -> np.ndarray:
    side = RatingSide.build(rows, cols, n_rows, n_cols)
    return solve_side(NumpyArrays(), side, fixed, target[side.order], pen)[0]


def cg_explicit(make, rows, cols, target, n_rows, n_cols, fixed, pen, steps, x0=None):
    k = fixed.shape[1]
    engine = make(rows, cols, n_rows, n_cols, k + 1, chunk=200)
    with engine:
        side = engine.user_side
        f1 = np.hstack([np.ones((n_cols, 1), np.float32), fixed])
        start = np.zeros((n_rows, k + 1), np.float32) if x0 is None else x0
        x, f = cg_half_step(
            engine,
            side,
            engine.xp.asarray(f1, np.float32),
            engine.xp.asarray(start, np.float32),
            target=engine.xp.asarray(target[side.order], np.float32),
            weight=None,
            gram=None,
            diag=engine.xp.asarray(pen.diagonal(side.counts, k), np.float32),
            steps=steps,
        )
    return to_np(x), f


@pytest.mark.parametrize("make", ENGINES)
def test_cg_converges_to_exact_explicit_solve(make) -> None:
    problem = explicit_problem()
    exact = exact_explicit(*problem)
    errors = [np.abs(cg_explicit(make, *problem, steps=s)[0] - exact).max() for s in (1, 2, 3, 5)]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 1e-2  # one step is visibly not the solution
    x, _ = cg_explicit(make, *problem, steps=12)  # d = 5: 12 steps solve it to rounding
    np.testing.assert_allclose(x, exact, rtol=1e-4, atol=2e-5)
    # a warm start at the solution stays there
    x, _ = cg_explicit(make, *problem, steps=3, x0=exact)
    np.testing.assert_allclose(x, exact, rtol=1e-4, atol=2e-5)


def implicit_problem(seed: int = 0, k: int = 4):
    rows, cols, r = ratings(seed=seed)
    n_rows, n_cols = 120, 70
    rng = np.random.default_rng(seed + 20)
    fixed = rng.normal(0, 0.3, (n_cols, k)).astype(np.float32)
    weight = confidence_minus_one(r, 2.0, "linear", 1.0)
    reg = np.full(n_rows, 0.8, np.float32)
    return rows, cols, weight, n_rows, n_cols, fixed, reg


def exact_implicit(rows, cols, weight, n_rows, n_cols, fixed, reg) -> np.ndarray:
    side = RatingSide.build(rows, cols, n_rows, n_cols)
    return implicit_solve(NumpyArrays(), side, fixed, weight[side.order], reg)


def cg_implicit(make, rows, cols, weight, n_rows, n_cols, fixed, reg, steps, x0=None):
    k = fixed.shape[1]
    engine = make(rows, cols, n_rows, n_cols, k, chunk=200)
    with engine:
        side = engine.user_side
        tf = engine.xp.asarray(fixed, np.float32)
        start = np.zeros((n_rows, k), np.float32) if x0 is None else x0
        x, f = cg_half_step(
            engine,
            side,
            tf,
            engine.xp.asarray(start, np.float32),
            target=None,
            weight=engine.xp.asarray(weight[side.order], np.float32),
            gram=engine.xp.gram(tf),
            diag=engine.xp.asarray(reg[:, None], np.float32),
            steps=steps,
        )
    return to_np(x), f


@pytest.mark.parametrize("make", ENGINES)
def test_cg_converges_to_exact_implicit_solve(make) -> None:
    problem = implicit_problem()
    exact = exact_implicit(*problem)
    errors = [np.abs(cg_implicit(make, *problem, steps=s)[0] - exact).max() for s in (1, 2, 3)]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 1e-3
    x, _ = cg_implicit(make, *problem, steps=10)  # k = 4
    np.testing.assert_allclose(x, exact, rtol=1e-4, atol=1e-5)


def quadratic_explicit(x, rows, cols, target, n_rows, n_cols, fixed, pen) -> float:
    """sum_r f_r(x_r) = x'Ax/2 - b'x written out per rating (float64)."""
    x = x.astype(np.float64)
    f1 = np.hstack([np.ones((n_cols, 1)), fixed.astype(np.float64)])
    pred = np.einsum("ij,ij->i", x[rows], f1[cols])
    counts = np.bincount(rows, minlength=n_rows)
    diag = pen.diagonal(counts.astype(np.float32), fixed.shape[1]).astype(np.float64)
    return float(0.5 * (pred**2).sum() + 0.5 * (diag * x * x).sum() - (target * pred).sum())


def quadratic_implicit(x, rows, cols, weight, n_rows, n_cols, fixed, reg) -> float:
    x, y = x.astype(np.float64), fixed.astype(np.float64)
    pred = np.einsum("ij,ij->i", x[rows], y[cols])
    xa = x @ (y.T @ y)
    quad = (x * xa).sum() + (weight * pred**2).sum() + (reg[:, None] * x * x).sum()
    return float(0.5 * quad - ((1.0 + weight) * pred).sum())


@pytest.mark.parametrize("make", ENGINES[:2])
def test_tracked_objective_equals_direct_and_falls_with_steps(make) -> None:
    """cg_half_step's returned sum_r f_r(x_r) is the quadratic at the returned vectors, and it
    falls with every extra step (each step is an exact line minimisation)."""
    for problem, run, direct in (
        (explicit_problem(1), cg_explicit, quadratic_explicit),
        (implicit_problem(1), cg_implicit, quadratic_implicit),
    ):
        values = []
        for steps in (1, 2, 3, 4):
            x, f = run(make, *problem, steps=steps)
            assert f == pytest.approx(direct(x, *problem), rel=1e-5, abs=1e-4)
            values.append(f)
        assert all(b < a for a, b in zip(values, values[1:], strict=False)), values
        # from a warm start too (the start's own f enters the bookkeeping)
        width = problem[5].shape[1] + (1 if run is cg_explicit else 0)
        x, f = run(make, *problem, steps=1, x0=np.full((120, width), 0.3, np.float32))
        assert f == pytest.approx(direct(x, *problem), rel=1e-5, abs=1e-4)


def test_steps_must_be_positive() -> None:
    problem = implicit_problem()
    with pytest.raises(CfrecError, match="cg_steps"):
        cg_implicit(numpy_engine, *problem, steps=0)


# ---------------------------------------------------------------------- sides
def test_numpy_sides_share_one_user_major_layout() -> None:
    rows, cols, _ = ratings()
    engine = numpy_engine(rows, cols, 120, 70, 4)
    us, its = engine.user_side, engine.item_side
    assert isinstance(us, CGSide) and us.kind == "rows" and its.kind == "cols"
    assert us.order is its.order  # per-rating inputs are laid out once for both half-steps
    assert np.all(np.diff(rows[us.order]) >= 0)
    assert engine.indices.dtype == np.int32 and us.counts.dtype == np.float32


def test_compiled_kernels_only_from_their_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small data runs numpy, scipy and torch's products (no compiled kernel to load: its first
    load costs more than a small fit); from CG_COMPILED_MIN ratings the compiled ones."""
    rows, cols, _ = ratings(100, 40, 0.2, seed=2)
    calls: list[int] = []
    real = solvers._compiled_products
    monkeypatch.setattr(solvers, "_compiled_products", lambda: calls.append(1) or real())
    assert not numpy_engine(rows, cols, 100, 40, 4, threads=1, chunk=None).compiled
    assert calls == []
    monkeypatch.setattr(solvers, "CG_COMPILED_MIN", len(rows))
    assert numpy_engine(rows, cols, 100, 40, 4, threads=1, chunk=None).compiled
    assert calls


def test_ratings_in_row_order_are_the_layout_itself() -> None:
    """Ratings that come sorted by row are used as they are (no gathered copies, ``take`` gives
    the array back); shuffled ones are gathered; both give the same products."""
    rows, cols, r = ratings(120, 50, 0.2, seed=6)  # shuffled
    by_row = np.argsort(rows, kind="stable")
    rows, cols, r = rows[by_row], cols[by_row], r[by_row]
    perm = np.random.default_rng(1).permutation(len(rows))
    v = np.random.default_rng(2).normal(size=(120, 5)).astype(np.float32)
    fixed = np.random.default_rng(3).normal(size=(50, 5)).astype(np.float32)
    out = []
    for a, b, w in ((rows, cols, r), (rows[perm], cols[perm], r[perm])):
        engine = numpy_engine(a, b, 120, 50, 5)
        side = engine.user_side
        assert side.in_order == (a is rows) and engine.item_side.in_order == side.in_order
        taken = side.take(w)
        assert (taken is w) == side.in_order
        np.testing.assert_array_equal(taken, w[side.order])
        with engine:
            out.append(engine.residual(side, v, fixed, None, taken)[0])
    np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-5)
