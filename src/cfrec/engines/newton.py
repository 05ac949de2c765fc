"""Damped Newton minimisation of small smooth convex objectives: the fold-in of one new user's
or item's vector against fixed factors (BPR's and the hybrid ranker's pairwise losses), where
the Hessian is a few hundred numbers and a handful of exact steps converge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: ``objective(v) -> (value, aux)``: ``aux`` is what the derivatives reuse (the scores at ``v``).
Objective = Callable[[np.ndarray], tuple[float, Any]]
#: ``derivatives(v, aux) -> (gradient, hessian)``, the Hessian as a function of nothing, called
#: only when a step is taken (not after the gradient has vanished).
Derivatives = Callable[[np.ndarray, Any], tuple[np.ndarray, Callable[[], np.ndarray]]]


def damped_newton(objective: Objective, derivatives: Derivatives, start: np.ndarray, steps: int, *,
                  tol: float = 1e-9, halvings: int = 30) -> np.ndarray:
    """Minimise ``objective`` from ``start`` (float64) by at most ``steps`` Newton steps.

    Each step is halved until it decreases the objective by at least ``1e-4`` of the decrease
    its slope promises (a backtracking, Armijo, line search). The descent stops early when the
    gradient vanishes (no entry above ``tol``) or when ``halvings`` halvings find no decrease.
    """
    vec = np.array(start, dtype=np.float64)
    loss, aux = objective(vec)
    for _ in range(steps):
        grad, hessian = derivatives(vec, aux)
        if np.abs(grad).max() < tol:
            break
        step = np.linalg.solve(hessian(), -grad)
        slope = float(grad @ step)
        t = 1.0
        for _ in range(halvings):
            new_loss, new_aux = objective(vec + t * step)
            if new_loss <= loss + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            break
        vec, loss, aux = vec + t * step, new_loss, new_aux
    return vec
