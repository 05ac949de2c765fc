"""The interaction-matrix builder: masks, weights, confidence, CSR layout, normalised sets."""

from __future__ import annotations

import numpy as np
import pytest

import cfrec.engines.matrix as matrix_mod
from cfrec.data import make_synthetic
from cfrec.engines.matrix import (
    confidence_minus_one,
    interaction_matrix,
    interaction_values,
    interaction_weights,
    normalized_sets,
    positives,
    row_weighting,
    weighting_stats,
)
from cfrec.errors import CfrecError


def test_positives_and_weights() -> None:
    r = np.array([1.0, 4.0, 5.0, 3.5], dtype=np.float32)
    assert positives(r, None).all()
    assert positives(r, 4.0).tolist() == [False, True, True, False]
    keep, w = interaction_weights(r, threshold=4.0, power=0.0, top=5.0, model="M")
    assert keep.tolist() == [False, True, True, False] and w.tolist() == [1.0, 1.0] and w.dtype == np.float32
    keep, w = interaction_weights(r, threshold=None, power=2.0, top=5.0, model="M")
    np.testing.assert_allclose(w, (r / 5.0) ** 2, rtol=1e-6)
    assert w.dtype == np.float32 and keep.all()


def test_weights_need_positive_ratings_and_name_the_model() -> None:
    r = np.array([-1.0, 2.0])
    with pytest.raises(CfrecError, match=r"^EASE rating_power=1 .* rating_power=0 for binary"):
        interaction_weights(r, threshold=None, power=1.0, top=5.0, model="EASE")
    _, w = interaction_weights(r, threshold=0.0, power=1.0, top=5.0, model="EASE")  # negatives dropped
    assert w.tolist() == [pytest.approx(0.4)]
    _, w = interaction_weights(r, threshold=None, power=0.0, top=5.0, model="EASE")  # binary: any rating
    assert w.tolist() == [1.0, 1.0]


def test_confidence() -> None:
    r = np.array([0.0, 1.0, 4.0])
    np.testing.assert_allclose(confidence_minus_one(r, 2.0, "linear", 1.0), 2.0 * r)
    np.testing.assert_allclose(confidence_minus_one(r, 2.0, "log", 0.5), 2.0 * np.log1p(r / 0.5), rtol=1e-6)
    assert confidence_minus_one(r, 2.0, "log", 0.5).dtype == np.float32


def test_interaction_matrix_sums_duplicates_in_a_sorted_layout() -> None:
    users, items = np.array([1, 0, 1, 1]), np.array([2, 1, 0, 2])
    x = interaction_matrix(users, items, np.array([1.0, 2.0, 3.0, 0.5], np.float32), 3, 4)
    assert x.shape == (3, 4) and x.has_sorted_indices
    assert x.data.dtype == np.float32 and x.indices.dtype == x.indptr.dtype
    assert x.toarray().tolist() == [[0, 2, 0, 0], [3, 0, 1.5, 0], [0, 0, 0, 0]]


def test_normalized_sets() -> None:
    rows, others = np.array([0, 0, 0, 2, 0]), np.array([1, 3, 4, 0, 1])  # (0, 1) twice: one member
    m = normalized_sets(rows, others, 3, 5).toarray()
    np.testing.assert_allclose(m[0], [0, 3 ** -0.5, 0, 3 ** -0.5, 3 ** -0.5], rtol=1e-6)
    assert m[1].tolist() == [0] * 5 and m[2].tolist() == [1, 0, 0, 0, 0]


# A tiny log: 3 users x 3 items, written out as a dense matrix for the hand computations.
#   user 0: item 0 x2, item 1 x1      (length 3)
#   user 1: item 0 x4                 (length 4)
#   user 2: item 0 x1, item 2 x5      (length 6)
_USERS = np.array([0, 0, 1, 2, 2])
_ITEMS = np.array([0, 1, 0, 0, 2])
_COUNTS = np.array([2.0, 1.0, 4.0, 1.0, 5.0], dtype=np.float32)


def test_confidence_by_hand_on_the_tiny_log() -> None:
    # linear: c - 1 = alpha * w; log: c - 1 = alpha * ln(1 + w / eps)
    assert confidence_minus_one(_COUNTS, 0.5, "linear", 1.0).tolist() == [1.0, 0.5, 2.0, 0.5, 2.5]
    expected = [3 * np.log(1 + 2 / 2), 3 * np.log(1.5), 3 * np.log(3), 3 * np.log(1.5), 3 * np.log(3.5)]
    np.testing.assert_allclose(confidence_minus_one(_COUNTS, 3.0, "log", 2.0), expected, rtol=1e-6)


def test_bm25_and_tfidf_by_hand_on_the_tiny_log() -> None:
    n_users = 3
    # item document frequencies: item 0 in 3 users, item 1 in 1, item 2 in 1
    idf = [max(0.0, np.log(3) - np.log(4)), np.log(3) - np.log(2), np.log(3) - np.log(2)]
    stats = weighting_stats(_USERS, _ITEMS, _COUNTS, n_users, 3)
    np.testing.assert_allclose(stats.idf, idf)
    assert stats.mean_length == pytest.approx((3 + 4 + 6) / 3)
    tfidf = row_weighting(_USERS, _ITEMS, _COUNTS, n_users, 3, "tfidf")
    np.testing.assert_allclose(tfidf, [0.0, 1.0 * idf[1], 0.0, 0.0, np.sqrt(5) * idf[2]], rtol=1e-6)
    k1, b, mean = 2.0, 0.5, 13 / 3
    norm = {0: 1 - b + b * 3 / mean, 1: 1 - b + b * 4 / mean, 2: 1 - b + b * 6 / mean}
    hand = [v * (k1 + 1) / (k1 * norm[u] + v) * idf[i] for u, i, v in zip(_USERS, _ITEMS, _COUNTS, strict=True)]
    bm25 = row_weighting(_USERS, _ITEMS, _COUNTS, n_users, 3, "bm25", k1=k1, b=b)
    np.testing.assert_allclose(bm25, hand, rtol=1e-6)
    assert bm25.dtype == np.float32 and bm25[1] > 0 and bm25[0] == 0  # an item every user has: 0
    assert row_weighting(_USERS, _ITEMS, _COUNTS, n_users, 3, "none").tolist() == _COUNTS.tolist()


def test_bm25_of_a_new_row_uses_the_training_statistics() -> None:
    stats = weighting_stats(_USERS, _ITEMS, _COUNTS, 3, 3)
    # user 2's row alone, weighed against the training statistics, gives its training weights
    alone = row_weighting(np.zeros(2, dtype=np.int64), _ITEMS[3:], _COUNTS[3:], 1, 3, "bm25",
                          k1=2.0, b=0.5, stats=stats)
    full = row_weighting(_USERS, _ITEMS, _COUNTS, 3, 3, "bm25", k1=2.0, b=0.5)
    np.testing.assert_allclose(alone, full[3:], rtol=1e-6)


def test_weighting_rejects_unknown_schemes_and_bad_bm25_parameters() -> None:
    with pytest.raises(CfrecError, match="weighting must be one of"):
        row_weighting(_USERS, _ITEMS, _COUNTS, 3, 3, "idf")
    with pytest.raises(CfrecError, match="BM25 needs"):
        row_weighting(_USERS, _ITEMS, _COUNTS, 3, 3, "bm25", b=1.5)


def test_interaction_values_are_weights_of_logs_and_ratings_of_ratings() -> None:
    ratings = make_synthetic(20, 15, 60, seed=0, with_metadata=False)
    assert interaction_values(ratings).tolist() == ratings.ratings.tolist()
    log = ratings.as_implicit(weight="rating")
    assert np.all(log.ratings == 1.0)
    assert interaction_values(log).tolist() == ratings.ratings.tolist()
    assert interaction_values(log).dtype == np.float32


@pytest.mark.parametrize("scheme", ["tfidf", "bm25"])
def test_compiled_weighting_gives_numpys_values(scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From WEIGHTING_COMPILED_MIN rows the weighting is one compiled pass: the same float32
    values, bit for bit, as numpy's float64 arithmetic, and the same row lengths."""
    rng = np.random.default_rng(3)
    n_users, n_items, n = 50, 30, 2000
    users = np.sort(rng.integers(0, n_users, n)).astype(np.int32)
    items = rng.integers(0, n_items, n).astype(np.int32)
    values = rng.gamma(1.0, 3.0, n).astype(np.float32)
    values[::7] = 0.0
    reference = row_weighting(users, items, values, n_users, n_items, scheme, k1=2.0, b=0.6)
    lengths = matrix_mod.user_sums(users, values, n_users)
    monkeypatch.setattr(matrix_mod, "WEIGHTING_COMPILED_MIN", 0)
    compiled = row_weighting(users, items, values, n_users, n_items, scheme, k1=2.0, b=0.6)
    assert compiled.dtype == np.float32
    np.testing.assert_array_equal(compiled, reference)
    np.testing.assert_array_equal(matrix_mod.user_sums(users, values, n_users), lengths)
    assert np.count_nonzero(compiled) > n // 2
