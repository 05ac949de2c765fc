"""Regularised user and item biases by alternating closed-form updates (Koren 2010, sec. 2.1)."""

from __future__ import annotations

import numpy as np

#: Ratings from which the sweeps run compiled (below, numpy's: no numba to load for small data).
COMPILED_MIN = 1 << 18


def fit_biases(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    *,
    global_mean: float,
    reg_user: float = 15.0,
    reg_item: float = 10.0,
    iterations: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise sum (r - mu - b_u - b_i)^2 + reg_user*|b_u|^2 + reg_item*|b_i|^2.

    Each half-step is exact given the other side, so a handful of sweeps converges.
    Returns float32 ``(user_bias, item_bias)``. From :data:`COMPILED_MIN` ratings each sweep is
    one compiled pass (the same values, without numpy's per-sweep copies of every rating).
    """
    if len(ratings) >= COMPILED_MIN and ratings.dtype == np.float32:
        from cfrec.engines.compiled import bias_sweeps

        b_u, b_i = bias_sweeps(users, items, ratings, float(global_mean), int(n_users), int(n_items),
                               float(reg_user), float(reg_item), int(iterations))
        return b_u.astype(np.float32), b_i.astype(np.float32)
    r = ratings.astype(np.float64) - global_mean
    n_u = np.bincount(users, minlength=n_users).astype(np.float64)
    n_i = np.bincount(items, minlength=n_items).astype(np.float64)
    b_u = np.zeros(n_users)
    b_i = np.zeros(n_items)
    for _ in range(iterations):
        b_i = np.bincount(items, weights=r - b_u[users], minlength=n_items) / (reg_item + n_i)
        b_u = np.bincount(users, weights=r - b_i[items], minlength=n_users) / (reg_user + n_u)
    return b_u.astype(np.float32), b_i.astype(np.float32)
