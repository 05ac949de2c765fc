"""Rating-prediction error metrics: RMSE and MAE.

Both take the true and the predicted ratings as equal-length arrays and compute in float64, so
the result does not depend on the dtype of the inputs. An empty input gives ``nan`` (there is no
error to average), which lets protocol code report empty groups without special cases.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    return t, p


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error ``sqrt(mean((y_true - y_pred)^2))``; ``nan`` when empty."""
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean(np.square(t - p))))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error ``mean(|y_true - y_pred|)``; ``nan`` when empty."""
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        return float("nan")
    return float(np.mean(np.abs(t - p)))


def squared_error_sum(y_true: Any, y_pred: Any) -> float:
    """Sum of squared errors (float64): lets group RMSEs be combined exactly."""
    t, p = _pair(y_true, y_pred)
    return float(np.sum(np.square(t - p)))
