"""Two-stage recommendations: candidates from a ranking model, ordered by a rating model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfrec.errors import CfrecError
from cfrec.models import Recommender
from cfrec.models.ials import IALS
from cfrec.models.two_stage import TwoStage
from cfrec.testing import RecommenderContract, make_ratings


def _small(**kw) -> TwoStage:
    params = {"retriever": "ials:n_factors=4,iterations=4", "rater": "mf:n_factors=4,epochs=5,batch_size=128",
              "candidates": 15, "weight": 0.5}
    params.update(kw)
    return TwoStage(**params)


class TestTwoStageContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return _small()

    def fallback_source(self, fitted: Recommender) -> Recommender:
        assert isinstance(fitted, TwoStage)
        return fitted.rater_  # predictions and their fallbacks are the rater's


def test_lists_are_reorderings_of_the_retrievers_candidates() -> None:
    data = make_ratings()
    model = _small().fit(data)
    users = np.array(["u000", "u013", "u040"], dtype=object)
    ranked = model.recommend(users, k=15)
    candidates = model.retriever_.recommend(users, k=15)
    for mine, theirs in zip(ranked, candidates, strict=True):
        assert sorted(mine.ids.tolist()) == sorted(theirs.ids.tolist())  # the same items, reordered
    # weight 1 keeps the retriever's order; weight 0 orders by the rater's predicted rating
    keep = TwoStage.from_parts(model.retriever_, model.rater_, candidates=15, weight=1.0)
    np.testing.assert_array_equal(keep.recommend("u013", k=15).ids, candidates[1].ids)
    keep.weight = 0.0
    by_rating = keep.recommend("u013", k=15)
    assert np.all(np.diff(by_rating.ratings) <= 1e-6)
    np.testing.assert_allclose(by_rating.ratings, model.rater_.predict("u013", by_rating.ids), rtol=1e-6)


def test_predictions_are_the_raters_and_bad_settings_are_refused(tmp_path: Path) -> None:
    data = make_ratings()
    model = _small().fit(data)
    u, i = data.raw_users()[:40], data.raw_items()[:40]
    np.testing.assert_array_equal(model.predict(u, i), model.rater_.predict(u, i))
    loaded = Recommender.load(model.save(tmp_path / "ts"))
    assert isinstance(loaded.retriever_, IALS)
    np.testing.assert_array_equal(loaded.recommend("u005", k=8).ids, model.recommend("u005", k=8).ids)
    with pytest.raises(CfrecError, match="does not predict ratings"):
        TwoStage(rater="ials").fit(data)
    with pytest.raises(CfrecError, match="weight"):
        TwoStage(weight=1.5).fit(data)
