"""POST /v1/recommend with a new user's side features: a feature-only user of a model fitted with
user features gets the items of its planted taste; bad features, and features sent to a model
that cannot use them, are refused with a 422 naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cfrec.models.bayesian_fm import BayesianFM
from cfrec.models.hybrid import HybridRanker
from cfrec.serve.app import create_app
from cfrec.serve.schemas import MAX_FEATURES
from tests.models.test_bayesian_fm import genre_ratings
from tests.models.test_hybrid import genre_data


@pytest.fixture(scope="module")
def hybrid_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Hybrid rankers of the genre data (each user a fan of one genre), with and without user features."""
    out = {}
    for name, use in (("with", True), ("without", False)):
        path = tmp_path_factory.mktemp("serve") / f"hybrid-{name}"
        HybridRanker(n_factors=8, epochs=30, lr=0.05, reg=1e-3, threshold=4.0, threads=1, seed=0,
                     use_user_features=use).fit(genre_data()).save(path)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def bfm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "bfm"
    BayesianFM(n_factors=4, n_sweeps=60, burn_in=20, max_samples=20, seed=0).fit(genre_ratings()).save(path)
    return path


def _post(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/recommend", json=body)


def test_feature_only_user_of_the_hybrid_ranker_gets_its_genre(hybrid_dirs: dict[str, Path]) -> None:
    """Items ``100 + i`` have genre ``i % 4`` (action, comedy, drama, horror); training fans of a
    genre rate it 5 and the rest 1-2. A new user known only as a drama fan gets dramas."""
    with TestClient(create_app(hybrid_dirs["with"])) as client:
        for genre, g in (("comedy", 1), ("drama", 2)):
            res = _post(client, features=[f"fan={genre}"], k=10)
            assert res.status_code == 200, res.text
            body = res.json()
            assert body["from_features"] and not body["cold_start"] and body["unknown_features"] == []
            share = sum((int(it["id"]) - 100) % 4 == g for it in body["items"]) / len(body["items"])
            assert share >= 0.8, (genre, [it["id"] for it in body["items"]])
        # the mapping form is the same user; an unknown name is reported, not an error
        listed = _post(client, features=["fan=drama"], k=10).json()
        mapped = _post(client, features={"fan=drama": 1, "fan=jazz": 1.0}, k=10).json()
        assert [it["id"] for it in mapped["items"]] == [it["id"] for it in listed["items"]]
        assert mapped["unknown_features"] == ["fan=jazz"] and mapped["from_features"]
        # only unknown features: nothing is known of the user, so the cold-start list
        unknown = _post(client, features=["fan=jazz"], k=10).json()
        assert unknown["cold_start"] and not unknown["from_features"]
        assert unknown["unknown_features"] == ["fan=jazz"]
        assert [it["id"] for it in unknown["items"]] == [it["id"] for it in _post(client, k=10).json()["items"]]
        # features with a few liked items: those items are left out, the taste kept
        both = _post(client, items=[102, 106, 110], features=["fan=drama"], k=10).json()
        ids = [it["id"] for it in both["items"]]
        assert both["n_ratings_used"] == 3 and not {102, 106, 110} & set(ids)
        assert sum((int(i) - 100) % 4 == 2 for i in ids) >= 7


def test_feature_only_user_of_the_bayesian_fm_gets_its_taste(bfm_dir: Path) -> None:
    """Planted taste: users of kind x rate genre A 4.5 and genre B 2, kind y the other way round."""
    data = genre_ratings()
    assert data.item_features is not None
    genre_a = {int(i) for i in data.item_map.ids if data.item_features.rows([i])[0, 0] > 0}
    with TestClient(create_app(bfm_dir)) as client:
        for kind, liked in (("kind=x", True), ("kind=y", False)):
            res = _post(client, features={kind: 1.0}, k=10)
            assert res.status_code == 200, res.text
            body = res.json()
            assert body["from_features"] and not body["cold_start"]
            assert all((it["id"] in genre_a) == liked for it in body["items"]), (kind, body["items"])
            assert all(it["predicted_rating"] > 3.5 for it in body["items"])
        # features with ratings on the model's scale
        a_items = sorted(genre_a)[:3]
        rated = _post(client, ratings=[{"item": i, "rating": 4.5} for i in a_items], features=["kind=x"]).json()
        ids = [it["id"] for it in rated["items"]]
        assert rated["n_ratings_used"] == 3 and all(i in genre_a for i in ids) and not set(ids) & set(a_items)


@pytest.mark.parametrize(("features", "says"), [
    ({"kind=x": "high"}, "must be a number"),
    ({"kind=x": True}, "must be a number"),
    ({"kind=x": 1e300}, "size at most"),
    ({"kind=x": 10**400}, "size at most"),
    ({"": 1.0}, "feature name"),
    (["kind=x", 3], "entry 1"),
    (["kind=x", "kind=x"], "given twice"),
    (["x" * 257], "1 to 256 characters"),
    ([f"f{j}" for j in range(MAX_FEATURES + 1)], f"at most {MAX_FEATURES}"),
    ("kind=x", "list of feature names"),
    (5, "list of feature names"),
])
def test_bad_features_are_refused_naming_the_field(bfm_dir: Path, features: Any, says: str) -> None:
    with TestClient(create_app(bfm_dir)) as client:
        res = _post(client, features=features)
        assert res.status_code == 422, res.text
        err = res.json()["error"]
        assert err["field"] == "features" and says in err["message"], err


def test_models_without_user_features_refuse_them(mf_dir: Path, hybrid_dirs: dict[str, Path]) -> None:
    for path in (mf_dir, hybrid_dirs["without"]):
        with TestClient(create_app(path)) as client:
            res = _post(client, features=["fan=drama"])
            assert res.status_code == 422, res.text
            err = res.json()["error"]
            assert err["field"] == "features" and err["code"] == "features_not_supported"
            assert "does not place a new user from side features" in err["message"]
            assert _post(client, features=[]).status_code == 200  # no features: the usual fold-in
