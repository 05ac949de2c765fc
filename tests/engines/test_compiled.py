"""The compiled CPU helpers: what they compute, against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.engines.compiled import stable_key_order


@pytest.mark.parametrize("n_keys", [1, 7, 1000])
def test_stable_key_order_is_numpys_stable_argsort(n_keys: int) -> None:
    rng = np.random.default_rng(n_keys)
    keys = rng.integers(0, n_keys, 5000)
    for dtype in (np.int32, np.int64):
        order = stable_key_order(keys.astype(dtype), n_keys)
        assert order.dtype == np.int64
        np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))


def test_stable_key_order_of_nothing_and_of_unused_keys() -> None:
    assert stable_key_order(np.zeros(0, np.int64), 3).tolist() == []
    assert stable_key_order(np.array([4, 0, 4, 2]), 6).tolist() == [1, 3, 0, 2]
