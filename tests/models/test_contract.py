"""The built-in models under the contract of :mod:`cfrec.testing` (more in each model's own
test module), and real-data checks every model shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions
from cfrec.models import Recommender
from cfrec.models.baseline import Baseline
from cfrec.models.mf import BiasedMF
from cfrec.models.popularity import PopularityRecommender
from cfrec.models.svdpp import SVDpp
from cfrec.testing import RecommenderContract, make_ratings

__all__ = ["make_ratings"]  # kept importable here for the other test modules


# ---------------------------------------------------------------------- the models under contract
class TestBaselineContract(RecommenderContract):
    has_factors = False

    def make_model(self) -> Recommender:
        return Baseline()


class TestBiasedMFContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return BiasedMF(n_factors=8, epochs=15, batch_size=128, lr=0.02, seed=0)


class TestBiasedMFLabContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return BiasedMF.lab(epochs=5, batch_size=128)


class TestSVDppContract(RecommenderContract):
    def make_model(self) -> Recommender:
        return SVDpp(n_factors=8, epochs=15, batch_size=128, lr=0.02, seed=0)


class TestPopularityContract(RecommenderContract):
    has_factors = False

    def make_model(self) -> Recommender:
        return PopularityRecommender()


# ---------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.parametrize("factory", [lambda: BiasedMF(epochs=2), lambda: SVDpp(epochs=2)], ids=["mf", "svdpp"])
def test_recommend_all_ml100k_users(factory: Any, ml100k_dir: Path) -> None:
    df = pd.read_csv(ml100k_dir / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    data = Interactions.from_frame(df, rating_scale=(1.0, 5.0))
    model = factory().fit(data)
    users = data.user_map.ids
    recs = model.recommend(users, k=10)
    assert len(recs) == 943 and recs.ids.shape == (943, 10) and (recs.lengths == 10).all()
    seen = set(zip(df["user_id"], df["item_id"], strict=True))
    assert not any((u, i) in seen for u, r in zip(users, recs, strict=True) for i in r.ids.tolist())
    # batched ids equal one-user-at-a-time ids
    np.testing.assert_array_equal(recs.ids[5], model.recommend(users[5], k=10).ids)


# ---------------------------------------------------------------------- more models
class TestALSContract(RecommenderContract):
    def make_model(self) -> Recommender:
        from cfrec.models.als import ALS

        return ALS(n_factors=8, iterations=5, seed=0)


class TestNeuMFContract(RecommenderContract):
    def make_model(self) -> Recommender:
        from cfrec.models.neumf import NeuMF

        return NeuMF(n_factors=8, mlp_layers=(16, 8), epochs=10, batch_size=128, lr=3e-3, reg=0.001,
                     seed=0, device="cpu")


class TestNeuMFImplicitContract(RecommenderContract):
    def make_model(self) -> Recommender:
        from cfrec.models.neumf import NeuMF

        return NeuMF(mode="implicit", n_factors=8, mlp_layers=(16, 8), epochs=5, batch_size=256,
                     lr=3e-3, reg=0.0, seed=0, device="cpu")


class TestIALSContract(RecommenderContract):
    def make_model(self) -> Recommender:
        from cfrec.models.ials import IALS

        return IALS(n_factors=8, iterations=5, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pop", "ials", "mf"])
def test_ml100k_lists_are_strictly_ordered_by_unclipped_scores(name: str, ml100k_u1) -> None:
    """Scores are the model's own, not clipped ratings: no run of ties at the top of the scale."""
    from cfrec.models import make_model

    train, _ = ml100k_u1
    model = make_model(name).fit(train)
    users = train.user_map.to_raw(np.arange(0, 943, 37))
    recs = model.recommend(users, k=10)
    assert (np.diff(recs.scores, axis=1) < 0).all(), name
    if name == "mf":  # the best unclipped predictions pass the top of the scale; ratings are clipped
        assert recs.scores.max() > 5.0 and recs.ratings.max() <= 5.0
        np.testing.assert_allclose(recs.ratings, np.clip(recs.scores, 1.0, 5.0), rtol=1e-6)
    else:
        assert recs.ratings is None
