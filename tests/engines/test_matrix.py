"""The interaction-matrix builder: masks, weights, confidence, CSR layout, normalised sets."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.engines.matrix import (
    confidence_minus_one,
    interaction_matrix,
    interaction_weights,
    normalized_sets,
    positives,
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
