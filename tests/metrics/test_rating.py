"""RMSE / MAE against hand-computed values and their basic properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfrec.metrics import mae, rmse, squared_error_sum


def test_known_values() -> None:
    y = [4, 3, 5, 1]
    p = [3.5, 3, 4, 2]
    # errors 0.5, 0, 1, -1 -> squares 0.25, 0, 1, 1
    assert rmse(y, p) == pytest.approx(math.sqrt(2.25 / 4))
    assert mae(y, p) == pytest.approx(2.5 / 4)
    assert squared_error_sum(y, p) == pytest.approx(2.25)


def test_dtype_independent_and_float() -> None:
    y = np.array([1, 2, 3], dtype=np.int8)
    p = np.array([1.5, 2.5, 2.0], dtype=np.float32)
    r = rmse(y, p)
    assert isinstance(r, float)
    assert r == pytest.approx(math.sqrt((0.25 + 0.25 + 1) / 3))


def test_empty_is_nan_and_length_mismatch_raises() -> None:
    assert math.isnan(rmse([], []))
    assert math.isnan(mae(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="3 values but y_pred has 2"):
        rmse([1, 2, 3], [1, 2])


@given(st.lists(st.tuples(st.floats(1, 5), st.floats(1, 5)), min_size=1, max_size=50))
def test_mae_le_rmse_and_zero_on_equal(pairs: list[tuple[float, float]]) -> None:
    y = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    assert mae(y, p) <= rmse(y, p) + 1e-12
    assert rmse(y, y) == 0.0
    assert rmse(y, p) == pytest.approx(rmse(p, y))
