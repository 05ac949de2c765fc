"""Damped Newton minimisation: the exact optimum of convex objectives, early stops."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from cfrec.engines.newton import damped_newton


def _logistic(a: np.ndarray, lam: float) -> tuple[Callable, Callable]:
    """``sum softplus(-a v) + lam |v|^2`` with its derivatives."""

    def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
        x = a @ v
        return float(np.logaddexp(0.0, -x).sum() + lam * v @ v), x

    def derivatives(v: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
        sig = 0.5 * (1.0 + np.tanh(0.5 * x))
        grad = -a.T @ (1.0 - sig) + 2.0 * lam * v
        return grad, lambda: (a * (sig * (1.0 - sig))[:, None]).T @ a + 2.0 * lam * np.eye(a.shape[1])

    return objective, derivatives


def test_reaches_the_optimum_of_a_regularised_logistic_loss() -> None:
    a = np.random.default_rng(0).standard_normal((200, 5)) + 0.3
    objective, derivatives = _logistic(a, 0.5)
    got = damped_newton(objective, derivatives, np.zeros(5), 50)
    want = minimize(lambda v: objective(v)[0], np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(derivatives(got, objective(got)[1])[0]).max() < 1e-8


def test_a_quadratic_takes_one_step_and_a_vanished_gradient_none() -> None:
    target = np.array([1.0, -2.0, 3.0])
    hessians: list[int] = []

    def objective(v: np.ndarray) -> tuple[float, None]:
        return float((v - target) @ (v - target)), None

    def derivatives(v: np.ndarray, _: None) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
        return 2.0 * (v - target), lambda: hessians.append(1) or 2.0 * np.eye(3)

    np.testing.assert_allclose(damped_newton(objective, derivatives, np.zeros(3), 10), target)
    assert len(hessians) == 1  # the second gradient vanishes: no Hessian asked for
    start = target.copy()
    out = damped_newton(objective, derivatives, start, 10)
    np.testing.assert_array_equal(out, target)
    assert len(hessians) == 1 and out is not start  # a copy, the caller's start untouched
