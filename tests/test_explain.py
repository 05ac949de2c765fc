"""'Because you rated': the rated item whose vector is closest to the recommended one."""

from __future__ import annotations

import numpy as np

from cfrec.explain import because_rated
from cfrec.models.baseline import Baseline
from tests.clustered import FAMOUS


def test_explanations_come_from_the_same_genre_cluster(planted, clustered) -> None:
    # planted item vectors are genre axes: items 1..10, 11..20, 21..30 form three clusters
    because = because_rated(planted, [2, 12, 22, 999], rated=[1, 11, 21, 424242])
    assert because is not None
    assert because.items == [1, 11, 21, None]
    assert np.all(because.similarity[:3] > 0.9) and np.isnan(because.similarity[3])
    assert FAMOUS[because.items[1]] == "Star Wars (1977)"


def test_models_without_item_vectors_explain_nothing(clustered) -> None:
    assert because_rated(Baseline().fit(clustered), [1, 2], [3]) is None
