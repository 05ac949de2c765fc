"""Ranking metrics: hand-computed cases, cross-checks against scikit-learn's ``ndcg_score`` and
against straightforward per-user reference implementations written here, and property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from cfrec.metrics import (
    average_precision_at_k,
    catalogue_coverage,
    hit_matrix,
    hit_rate_at_k,
    ndcg_at_k,
    parse_metric,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    reciprocal_rank,
)


# ---------------------------------------------------------------------- independent references
def ref_precision(ranked: list[int], relevant: set[int], k: int) -> float:
    return sum(1 for i in ranked[:k] if i in relevant) / k


def ref_recall(ranked: list[int], relevant: set[int], k: int) -> float:
    return sum(1 for i in ranked[:k] if i in relevant) / len(relevant)


def ref_ap(ranked: list[int], relevant: set[int], k: int) -> float:
    hits, total = 0, 0.0
    for pos, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            hits += 1
            total += hits / pos
    return total / min(len(relevant), k)


def ref_rr(ranked: list[int], relevant: set[int], k: int) -> float:
    for pos, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            return 1.0 / pos
    return 0.0


def ref_hit(ranked: list[int], relevant: set[int], k: int) -> float:
    return float(any(i in relevant for i in ranked[:k]))


def random_case(rng: np.random.Generator, n_users: int, n_items: int, k: int):
    """Random scores over a catalogue; relevant sets; top-k lists by score."""
    scores = rng.random((n_users, n_items))
    relevant = [set(rng.choice(n_items, size=rng.integers(1, n_items // 2 + 1), replace=False).tolist())
                for _ in range(n_users)]
    top = np.argsort(-scores, axis=1)[:, :k]
    rows = np.concatenate([[u] * len(r) for u, r in enumerate(relevant)])
    items = np.concatenate([sorted(r) for r in relevant])
    n_rel = np.array([len(r) for r in relevant])
    return scores, relevant, top, rows, items, n_rel


# ---------------------------------------------------------------------- hand-computed
def test_hand_computed_single_user() -> None:
    # ranked list 7, 3, 9, 1, 4; relevant {3, 4, 8} (8 never ranked)
    top = np.array([[7, 3, 9, 1, 4]])
    hits = hit_matrix(top, [0, 0, 0], [3, 4, 8])
    assert hits.tolist() == [[False, True, False, False, True]]
    n = np.array([3])
    assert precision_at_k(hits, 5)[0] == pytest.approx(2 / 5)
    assert recall_at_k(hits, n, 5)[0] == pytest.approx(2 / 3)
    assert hit_rate_at_k(hits, 1)[0] == 0.0
    assert hit_rate_at_k(hits, 2)[0] == 1.0
    assert reciprocal_rank(hits)[0] == pytest.approx(1 / 2)
    assert reciprocal_rank(hits, 1)[0] == 0.0
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(hits, n, 5)[0] == pytest.approx(dcg / idcg)
    assert average_precision_at_k(hits, n, 5)[0] == pytest.approx((1 / 2 + 2 / 5) / 3)
    # at k=2 only one relevant slot counts in the ideal: AP = (1/2) / min(3, 2)
    assert average_precision_at_k(hits, n, 2)[0] == pytest.approx(0.5 / 2)
    assert ndcg_at_k(hits, n, 2)[0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_empty_slots_and_no_relevant() -> None:
    top = np.array([[2, -1, -1], [0, 1, 2]])
    hits = hit_matrix(top, [1], [1])
    assert hits.tolist() == [[False, False, False], [False, True, False]]
    n = np.array([0, 1])
    assert math.isnan(recall_at_k(hits, n)[0])
    assert math.isnan(ndcg_at_k(hits, n)[0])
    assert math.isnan(average_precision_at_k(hits, n)[0])
    res = ranking_metrics(top, [1], [1], n, n_items=4, ks=[3])
    # only user 1 is averaged
    assert res["recall@3"] == 1.0
    assert res["precision@3"] == pytest.approx(1 / 3)
    assert res["mrr@3"] == pytest.approx(1 / 2)
    assert res["coverage@3"] == pytest.approx(3 / 4)  # items 0, 1, 2 shown, over both users


def test_hit_matrix_no_relevant_at_all_and_validation() -> None:
    top = np.array([[0, 1]])
    assert not hit_matrix(top, [], []).any()
    with pytest.raises(ValueError, match="non-negative"):
        hit_matrix(top, [0], [-1])
    with pytest.raises(ValueError, match="index the rows"):
        hit_matrix(top, [3], [0])
    with pytest.raises(ValueError, match="2-D"):
        hit_matrix(np.array([0, 1]), [0], [0])


def test_coverage() -> None:
    top = np.array([[0, 1, 2], [0, 3, 2]])
    assert catalogue_coverage(top, 10) == pytest.approx(0.4)
    assert catalogue_coverage(top, 10, k=1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="outside a catalogue"):
        catalogue_coverage(top, 3)


def test_parse_metric() -> None:
    assert parse_metric("NDCG@10") == ("ndcg", 10)
    assert parse_metric("hr@5") == ("hit_rate", 5)
    assert parse_metric("rmse") == ("rmse", None)
    with pytest.raises(ValueError, match="cut-off"):
        parse_metric("ndcg@x")
    with pytest.raises(ValueError, match="cut-off"):
        parse_metric("ndcg@0")


# ---------------------------------------------------------------------- cross-checks
@pytest.mark.parametrize("seed", range(5))
def test_ndcg_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = 30, int(rng.integers(12, 40))
    for k in (1, 3, 10):
        scores, relevant, top, rows, items, n_rel = random_case(rng, n_users, n_items, k)
        ours = ndcg_at_k(hit_matrix(top, rows, items), n_rel, k)
        for u in range(n_users):
            y_true = np.zeros(n_items)
            y_true[list(relevant[u])] = 1.0
            expected = ndcg_score(y_true[None, :], scores[u][None, :], k=k)
            assert ours[u] == pytest.approx(expected, abs=1e-12), (seed, k, u)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_reference_implementations(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n_users, n_items, k = 40, int(rng.integers(15, 60)), int(rng.integers(1, 12))
    _, relevant, top, rows, items, n_rel = random_case(rng, n_users, n_items, k)
    # some relevant items the model cannot rank: counted in n_relevant only
    n_rel = n_rel + rng.integers(0, 3, size=n_users)
    hidden = [r | {n_items + 1000 + j for j in range(extra)} for r, extra in
              zip(relevant, n_rel - np.array([len(r) for r in relevant]), strict=True)]
    hits = hit_matrix(top, rows, items)
    ranked = top.tolist()
    checks = [
        (precision_at_k(hits, k), ref_precision),
        (recall_at_k(hits, n_rel, k), ref_recall),
        (average_precision_at_k(hits, n_rel, k), ref_ap),
        (reciprocal_rank(hits, k), ref_rr),
        (hit_rate_at_k(hits, k), ref_hit),
    ]
    for values, ref in checks:
        expected = [ref(ranked[u], hidden[u], k) for u in range(n_users)]
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12, err_msg=ref.__name__)
    means = ranking_metrics(top, rows, items, n_rel, n_items=n_items, ks=[k])
    assert means[f"precision@{k}"] == pytest.approx(np.mean([ref_precision(ranked[u], hidden[u], k)
                                                             for u in range(n_users)]))
    assert means[f"coverage@{k}"] == pytest.approx(len(set(top.ravel().tolist())) / n_items)


def test_cutoffs_from_one_longer_list_agree_with_shorter_lists() -> None:
    rng = np.random.default_rng(7)
    _, _, top, rows, items, n_rel = random_case(rng, 25, 30, 10)
    long = ranking_metrics(top, rows, items, n_rel, n_items=30, ks=[3, 10])
    short = ranking_metrics(top[:, :3], rows, items, n_rel, n_items=30, ks=[3])
    for key, value in short.items():
        assert long[key] == pytest.approx(value)


# ---------------------------------------------------------------------- properties
@st.composite
def ranking_cases(draw):
    n_items = draw(st.integers(2, 25))
    k = draw(st.integers(1, n_items))
    n_users = draw(st.integers(1, 6))
    tops, rels = [], []
    for _ in range(n_users):
        perm = draw(st.permutations(list(range(n_items))))
        tops.append(perm[:k])
        rels.append(draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items)))
    return np.array(tops), rels, k, n_items


@settings(max_examples=60, deadline=None)
@given(ranking_cases())
def test_metrics_bounded(case) -> None:
    top, rels, k, n_items = case
    rows = np.concatenate([[u] * len(r) for u, r in enumerate(rels)])
    items = np.concatenate([sorted(r) for r in rels])
    n_rel = np.array([len(r) for r in rels])
    res = ranking_metrics(top, rows, items, n_rel, n_items=n_items, ks=[k])
    for key, value in res.items():
        assert 0.0 <= value <= 1.0 + 1e-12, key
    # recall can reach 1 only when every relevant item fits in the list
    hits = hit_matrix(top, rows, items)
    assert np.all(recall_at_k(hits, n_rel) <= np.minimum(k, n_rel) / n_rel + 1e-12)


@settings(max_examples=60, deadline=None)
@given(ranking_cases())
def test_perfect_ranking_scores_one(case) -> None:
    _, rels, k, n_items = case
    # put every relevant item first, then the rest
    top = np.array([sorted(r) + [i for i in range(n_items) if i not in r] for r in rels])[:, :k]
    rows = np.concatenate([[u] * len(r) for u, r in enumerate(rels)])
    items = np.concatenate([sorted(r) for r in rels])
    n_rel = np.array([len(r) for r in rels])
    hits = hit_matrix(top, rows, items)
    np.testing.assert_allclose(ndcg_at_k(hits, n_rel), 1.0)
    np.testing.assert_allclose(average_precision_at_k(hits, n_rel), 1.0)
    np.testing.assert_allclose(reciprocal_rank(hits), 1.0)
    np.testing.assert_allclose(hit_rate_at_k(hits), 1.0)
    np.testing.assert_allclose(recall_at_k(hits, n_rel), np.minimum(n_rel, k) / n_rel)


@settings(max_examples=40, deadline=None)
@given(ranking_cases())
def test_reversed_relevance_never_beats_perfect(case) -> None:
    top, rels, k, n_items = case
    rows = np.concatenate([[u] * len(r) for u, r in enumerate(rels)])
    items = np.concatenate([sorted(r) for r in rels])
    n_rel = np.array([len(r) for r in rels])
    hits = hit_matrix(top, rows, items)
    # moving all hits to the front can only raise NDCG and AP
    front = np.sort(hits, axis=1)[:, ::-1]
    assert np.all(ndcg_at_k(hits, n_rel) <= ndcg_at_k(front, n_rel) + 1e-12)
    assert np.all(average_precision_at_k(hits, n_rel) <= average_precision_at_k(front, n_rel) + 1e-12)


def test_mean_popularity_skips_empty_slots_and_empty_lists() -> None:
    from cfrec.metrics import mean_popularity

    pop = np.array([0.5, 0.25, 0.0, 1.0])
    top = np.array([[0, 1, -1], [3, 2, 1], [-1, -1, -1]])
    # row 0: (0.5 + 0.25) / 2; row 1: (1 + 0 + 0.25) / 3; row 2 holds no item and does not count
    assert mean_popularity(top, pop) == pytest.approx((0.375 + 1.25 / 3) / 2)
    assert mean_popularity(top, pop, k=1) == pytest.approx((0.5 + 1.0) / 2)
    assert math.isnan(mean_popularity(np.full((2, 2), -1), pop))
    with pytest.raises(ValueError, match="no popularity"):
        mean_popularity(np.array([[4]]), pop)
    res = ranking_metrics(top, np.array([0]), np.array([0]), np.array([1, 1, 1]), n_items=4, ks=[2],
                          names=["popularity"], item_popularity=pop)
    assert res["popularity@2"] == pytest.approx((0.375 + 0.5) / 2)
