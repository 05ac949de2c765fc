"""The compiled per-sample BPR loop: its layout and its steps against a numpy replay."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cfrec.engines.hogwild import (
    PARALLEL_SAMPLES,
    HogwildBPR,
    fit_threads,
    positive_layout,
    training_layout,
)


def pairwise_layout(users: np.ndarray, items: np.ndarray, positive: np.ndarray, n_users: int, n_items: int,
                    seed: int) -> tuple[np.ndarray, ...]:
    """The rated items (scipy's canonical binary CSR, as a fit holds it) and the positives."""
    seen = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    seen.sum_duplicates()
    return (seen.indptr.astype(np.int64), seen.indices, *positive_layout(users, items, positive, n_users,
                                                                          n_items, seed))


def _data(seed: int = 0, n_users: int = 30, n_items: int = 25, n: int = 400) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n).astype(np.int32)
    items = rng.integers(0, n_items, n).astype(np.int32)  # repeats of a pair included
    positive = rng.random(n) < 0.6
    return users, items, positive


def test_layout_holds_each_users_positives_once_in_a_seeded_order() -> None:
    users, items, positive = _data()
    seen_ptr, seen, pos_ptr, pos = pairwise_layout(users, items, positive, 30, 25, 7)
    keys = users.astype(np.int64) * 25 + items
    owner = np.repeat(np.arange(30), np.diff(seen_ptr))
    np.testing.assert_array_equal(owner * 25 + seen, np.unique(keys))  # sorted within users, no repeats
    pos_owner = np.repeat(np.arange(30), np.diff(pos_ptr))
    got = pos_owner * 25 + pos
    assert len(np.unique(got)) == len(got)
    np.testing.assert_array_equal(np.sort(got), np.unique(keys[positive]))
    again = pairwise_layout(users, items, positive, 30, 25, 7)
    np.testing.assert_array_equal(again[3], pos)  # the same seed, the same order
    assert not np.array_equal(pairwise_layout(users, items, positive, 30, 25, 8)[3], pos)


def _trainer(optimizer: str, weights: np.ndarray | None = None, threads: int = 1,
             seed: int = 3) -> tuple[HogwildBPR, np.ndarray]:
    users, items, positive = _data()
    layout = pairwise_layout(users, items, positive, 30, 25, 1)
    rng = np.random.default_rng(5)
    tables = ((rng.standard_normal((30, 6)) * 0.3).astype(np.float32),
              (rng.standard_normal((25, 6)) * 0.3).astype(np.float32),
              (rng.standard_normal(25) * 0.1).astype(np.float32))
    train = np.flatnonzero(np.diff(layout[2]) > 0)
    trainer = HogwildBPR(layout, train, tables, optimizer, 0.01, 0.003, weights, threads, seed)
    trainer.record = np.full((len(layout[3]), 2), -1, np.int64)
    return trainer, train


def _replay(trainer: HogwildBPR, tables: list[np.ndarray], opt: str, lr: float, epoch: int,
            state: dict[str, list[np.ndarray]]) -> float:
    """The epoch's samples, in the recorded order, stepped in float64 with the written rules."""
    p, q, b = tables
    owner = np.repeat(np.arange(len(trainer.pos_ptr) - 1), np.diff(trainer.pos_ptr))
    rec = trainer.record
    order = np.argsort(rec[:, 0])
    reg, bias_reg = trainer.reg, trainer.bias_reg
    total = 0.0
    b1, b2, eps = 0.9, 0.999, trainer.eps
    for n, e in enumerate(order):
        u, i, j = owner[e], trainer.pos_items[e], rec[e, 1]
        x = p[u] @ (q[i] - q[j]) + b[i] - b[j]
        total += np.logaddexp(0.0, -x) + reg * (p[u] @ p[u] + q[i] @ q[i] + q[j] @ q[j]) + bias_reg * (
            b[i] ** 2 + b[j] ** 2)
        z = 1.0 / (1.0 + np.exp(x))
        grads = [(p, u, 2 * reg * p[u] - z * (q[i] - q[j]), 0), (q, i, 2 * reg * q[i] - z * p[u], 1),
                 (q, j, 2 * reg * q[j] + z * p[u], 1), (b, i, 2 * bias_reg * b[i] - z, 2),
                 (b, j, 2 * bias_reg * b[j] + z, 2)]
        t = (epoch - 1) * trainer.n_samples + n + 1
        for table, row, g, k in grads:
            if opt == "sgd":
                table[row] -= lr * g
            elif opt == "adagrad":
                s = state["first"][k]
                s[row] += g * g
                table[row] -= lr * g / (np.sqrt(s[row]) + eps)
            else:
                m, v = state["first"][k], state["second"][k]
                m[row] = b1 * m[row] + (1 - b1) * g
                v[row] = b2 * v[row] + (1 - b2) * g * g
                table[row] -= lr / (1 - b1 ** t) * m[row] / (np.sqrt(v[row]) / np.sqrt(1 - b2 ** t) + eps)
    return total / len(order)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam"])
def test_one_shard_steps_equal_a_numpy_replay(optimizer: str) -> None:
    trainer, _ = _trainer(optimizer)
    ref = [t.astype(np.float64) for t in trainer.tables]
    state = {"first": [np.zeros_like(t) for t in ref], "second": [np.zeros_like(t) for t in ref]}
    for epoch, lr in ((1, 0.05), (2, 0.03)):
        loss = trainer.epoch(epoch, lr)
        assert (trainer.record[:, 0] >= 0).all()  # every positive drawn once
        expected = _replay(trainer, ref, optimizer, lr, epoch, state)
        assert loss == pytest.approx(expected, rel=1e-4)
        for got, want in zip(trainer.tables, ref, strict=True):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("weighted", [False, True])
def test_negatives_are_unrated_and_follow_the_weights(weighted: bool) -> None:
    weights = np.linspace(1.0, 40.0, 25) if weighted else None
    trainer, train = _trainer("sgd", weights)
    owner = np.repeat(np.arange(30), np.diff(trainer.pos_ptr))
    draws = np.zeros(25)
    for epoch in range(1, 41):
        trainer.epoch(epoch, 1e-6)
        for e, j in enumerate(trainer.record[:, 1]):
            u = owner[e]
            assert j not in trainer.seen_items[trainer.seen_ptr[u]:trainer.seen_ptr[u + 1]]
        np.add.at(draws, trainer.record[:, 1], 1)
    # popular items are drawn more often with weights, about evenly without
    low, high = draws[:8].sum(), draws[-8:].sum()
    assert (high > 2 * low) if weighted else (0.5 < high / low < 2.0)


@pytest.mark.parametrize("weighted", [False, True])
def test_a_user_with_one_unrated_item_gets_it_exactly(weighted: bool) -> None:
    """After the rejections run out, the exact draw over the unrated items."""
    n_items = 50
    items = np.array([i for i in range(n_items) if i != 17] + [3], dtype=np.int32)
    users = np.zeros(len(items), dtype=np.int32)
    layout = pairwise_layout(users, items, np.ones(len(items), bool), 1, n_items, 0)
    tables = (np.zeros((1, 4), np.float32), np.zeros((n_items, 4), np.float32), np.zeros(n_items, np.float32))
    weights = np.ones(n_items) if weighted else None
    trainer = HogwildBPR(layout, np.array([0]), tables, "sgd", 0.0, 0.0, weights, 1, 0)
    trainer.record = np.zeros((len(layout[3]), 2), np.int64)
    trainer.epoch(1, 0.1)
    assert len(layout[3]) == n_items - 1 and (trainer.record[:, 1] == 17).all()


def test_one_shard_reproduces_and_shards_cover_every_user() -> None:
    a, _ = _trainer("adam")
    b, _ = _trainer("adam")
    for epoch in (1, 2):
        assert a.epoch(epoch, 0.01) == b.epoch(epoch, 0.01)
    for x, y in zip(a.tables, b.tables, strict=True):
        np.testing.assert_array_equal(x, y)
    c, _ = _trainer("adam", threads=3)
    loss = c.epoch(1, 0.01)
    assert np.isfinite(loss) and (c.record[:, 0] >= 0).all()  # every positive stepped once


def test_training_layout_trains_users_with_a_positive_and_an_unrated_item() -> None:
    users = np.array([0, 0, 1, 1, 1, 2], np.int32)
    items = np.array([0, 1, 0, 1, 2, 2], np.int32)
    positive = np.array([True, False, True, True, True, False])
    seen = sp.csr_array((np.ones(6, np.float32), (users, items)), shape=(4, 3))
    layout, trainable = training_layout(seen, users, items, positive, 0)
    # user 1 rated every item (no negative), user 2 has no positive, user 3 no rating at all
    np.testing.assert_array_equal(trainable, [True, False, False, False])
    np.testing.assert_array_equal(layout[0], seen.indptr)
    np.testing.assert_array_equal(np.diff(layout[2]), [1, 3, 0, 0])


def test_fit_threads_follow_the_setting_then_the_data_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CFREC_NUM_THREADS", raising=False)
    assert fit_threads(3, 10) == 3
    assert fit_threads(None, PARALLEL_SAMPLES - 1) == 1
    monkeypatch.setenv("CFREC_NUM_THREADS", "2")
    assert fit_threads(None, 10) == 2


def test_train_runs_the_epochs_with_the_rate_decayed_after_each() -> None:
    trainer, _ = _trainer("sgd")
    rates: list[float] = []
    run = trainer.epoch
    trainer.epoch = lambda e, lr: rates.append(lr) or run(e, lr)  # type: ignore[method-assign]
    seen: list[int] = []
    history = trainer.train("BPR", 3, 0.2, 0.5, lambda record: seen.append(record["epoch"]))
    assert [h["epoch"] for h in history] == [1, 2, 3] == seen
    np.testing.assert_allclose(rates, [0.2, 0.1, 0.05])
    assert all(np.isfinite(h["train_loss"]) for h in history)
    empty = HogwildBPR(pairwise_layout(*_data(), 30, 25, 1), np.zeros(0, np.int32), trainer.tables, "sgd",
                       0.0, 0.0, None, 1, 0)
    assert empty.train("BPR", 3, 0.2, 0.5, None) == []  # nothing to sample: no epoch
