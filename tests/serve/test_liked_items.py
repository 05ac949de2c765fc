"""POST /v1/recommend with a new user's liked items and no ratings (ranking models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from cfrec.models.base import Recommender
from cfrec.serve import create_app
from tests.serve.test_api import error_of


def test_items_alone_fold_a_new_user_into_a_ranking_model(ials_dir: Path) -> None:
    model = Recommender.load(ials_dir)
    with TestClient(create_app(ials_dir)) as c:
        body = c.post("/v1/recommend", json={"items": [11, 12, 999_999], "k": 5}).json()
        assert body["n_ratings_used"] == 2 and body["unknown_items"] == [999_999]
        assert not body["cold_start"] and body["items"][0]["predicted_rating"] is None
        want = model.recommend(model.fold_in([11, 12]), 5)
        assert [it["id"] for it in body["items"]] == want.ids.tolist()
        np.testing.assert_allclose([it["score"] for it in body["items"]], want.scores, rtol=1e-5)
        assert not {11, 12} & {it["id"] for it in body["items"]}
        cold = c.post("/v1/recommend", json={"items": ["nope"], "k": 3}).json()
        assert cold["cold_start"] and [it["id"] for it in cold["items"]] == model.recommend("nobody", 3).ids.tolist()
        error_of(c.post("/v1/recommend", json={"items": [11], "ratings": [{"item": 12, "rating": 1}]}),
                 422, "items")


def test_items_alone_are_refused_by_a_rating_model(mf_dir: Path) -> None:
    with TestClient(create_app(mf_dir)) as c:
        err = error_of(c.post("/v1/recommend", json={"items": [11, 12]}), 422, "items")
        assert err["code"] == "ratings_needed" and "ranking models" in err["message"]
