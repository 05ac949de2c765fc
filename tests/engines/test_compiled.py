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


def test_compiled_bias_sweeps_give_numpys_biases(monkeypatch: pytest.MonkeyPatch) -> None:
    """From COMPILED_MIN ratings fit_biases runs one compiled pass a sweep: bit for bit the
    biases of numpy's bincount sweeps."""
    import cfrec.models._bias as bias

    rng = np.random.default_rng(5)
    users = rng.integers(0, 40, 3000).astype(np.int32)
    items = rng.integers(0, 25, 3000).astype(np.int32)
    ratings = rng.integers(1, 6, 3000).astype(np.float32)
    mean = float(ratings.mean(dtype=np.float64))
    reference = bias.fit_biases(users, items, ratings, 42, 25, global_mean=mean)
    monkeypatch.setattr(bias, "COMPILED_MIN", 0)
    compiled = bias.fit_biases(users, items, ratings, 42, 25, global_mean=mean)
    for a, b in zip(compiled, reference, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert np.abs(compiled[1]).max() > 0.01 and compiled[0][40:].tolist() == [0.0, 0.0]


def test_grouped_shuffle_keeps_keys_in_order_and_shuffles_within_them() -> None:
    """Keys in increasing order, each key's rows a seeded permutation of them (every row once)."""
    from cfrec.engines.compiled import grouped_shuffle

    rng = np.random.default_rng(0)
    keys = rng.integers(0, 30, 5000).astype(np.int32)
    order = grouped_shuffle(keys, 32, 7)
    assert sorted(order.tolist()) == list(range(5000))
    assert np.all(np.diff(keys[order]) >= 0)
    assert np.array_equal(order, grouped_shuffle(keys, 32, 7))
    other = grouped_shuffle(keys, 32, 8)
    assert not np.array_equal(order, other) and np.array_equal(keys[order], keys[other])
    stable = np.argsort(keys, kind="stable")
    assert not np.array_equal(order, stable)  # shuffled within the keys, not the stable order
    assert grouped_shuffle(np.zeros(0, np.int32), 0, 1).tolist() == []
