"""The JSON API through FastAPI's TestClient: every endpoint, its answers checked against the
library, and every kind of bad input answered by a 4xx JSON error that names the field."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cfrec.catalog import Catalog
from cfrec.errors import CfrecError
from cfrec.models.base import Recommender
from cfrec.models.persistence import current_version
from cfrec.serve import create_app
from cfrec.serve.app import MAX_BODY_BYTES
from tests.serve.conftest import clustered_data, save


@pytest.fixture(scope="module")
def mf(mf_dir: Path) -> Recommender:
    return Recommender.load(mf_dir)


@pytest.fixture(scope="module")
def client(mf_dir: Path):
    with TestClient(create_app(mf_dir)) as c:
        yield c


def error_of(response, status: int, field: str | None = None) -> dict:
    """The JSON error body of a refused request (status checked, no traceback leaked)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text and 'File "' not in response.text
    err = response.json()["error"]
    assert err["status"] == status and err["code"] and err["message"]
    if field is not None:
        assert err["field"] == field, err
    return err


# ---------------------------------------------------------------------- health and card
def test_health_ready_and_model_card(client: TestClient, mf: Recommender, mf_dir: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["model_version"] == current_version(mf_dir).name
    card = client.get("/v1/model").json()
    assert card["model_class"] == "BiasedMF" and card["model_name"] == "mf"
    assert card["params"] == json.loads(json.dumps(mf.get_params()))
    assert card["n_users"] == len(mf.user_map_) and card["n_items"] == len(mf.item_map_)
    assert card["fingerprint"] == mf.fit_info_["fingerprint"] and len(card["fingerprint"]) == 64
    assert card["predicts_ratings"] is True and card["rating_scale"] == [1.0, 5.0]
    assert card["has_titles"] and card["has_similar"]
    assert card["cfrec_version"] and card["trained_with_cfrec"]


def test_docs_and_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/healthz", "/readyz", "/v1/model", "/v1/recommend/{user_id}", "/v1/recommend",
            "/v1/similar/{item_id}", "/v1/predict", "/v1/items", "/v1/admin/reload"} <= paths
    assert "/" not in paths
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------------- recommend
def test_recommend_known_user_matches_the_library(client: TestClient, mf: Recommender) -> None:
    body = client.get("/v1/recommend/3", params={"k": 5}).json()
    recs = mf.recommend(3, 5)
    assert body["user"] == 3 and body["known"] and not body["cold_start"]
    assert [it["id"] for it in body["items"]] == recs.ids.tolist()
    np.testing.assert_allclose([it["score"] for it in body["items"]], recs.scores, rtol=1e-6)
    np.testing.assert_allclose([it["predicted_rating"] for it in body["items"]], recs.ratings, rtol=1e-6)
    assert [it["rank"] for it in body["items"]] == [1, 2, 3, 4, 5]
    seen = set(mf.item_map_.to_raw(mf.seen_[[mf.user_map_.to_index(3)]].indices).tolist())
    assert body["n_train_ratings"] == len(seen)
    assert not seen & {it["id"] for it in body["items"]}
    first = body["items"][0]
    assert set(first) == {"id", "title", "year", "genres", "n_ratings", "rank", "score", "predicted_rating"}


def test_recommend_include_seen(client: TestClient, mf: Recommender) -> None:
    body = client.get("/v1/recommend/3", params={"k": 30, "exclude_seen": "false"}).json()
    assert not body["exclude_seen"] and len(body["items"]) == 30
    assert [it["id"] for it in body["items"]] == mf.recommend(3, 30, exclude_seen=False).ids.tolist()


def test_unknown_user_gets_the_cold_start_list(client: TestClient, mf: Recommender) -> None:
    body = client.get("/v1/recommend/nobody", params={"k": 4}).json()
    assert body["user"] == "nobody" and not body["known"] and body["cold_start"]
    assert [it["id"] for it in body["items"]] == mf.recommend("nobody", 4).ids.tolist()


def test_fold_in_matches_the_library(client: TestClient, mf: Recommender) -> None:
    ratings = [{"item": 11, "rating": 5}, {"item": "12", "rating": 5}, {"item": 1, "rating": 1.5},
               {"item": 9999, "rating": 4}, {"item": 11, "rating": 4.5}]
    body = client.post("/v1/recommend", json={"ratings": ratings, "k": 6}).json()
    folded = mf.fold_in([11, 12, 1, 9999, 11], [5, 5, 1.5, 4, 4.5])
    recs = mf.recommend(folded, 6)
    assert [it["id"] for it in body["items"]] == recs.ids.tolist()
    np.testing.assert_allclose([it["score"] for it in body["items"]], recs.scores, rtol=1e-5)
    assert body["unknown_items"] == [9999] and body["duplicate_items"] == [11]
    assert body["n_ratings_used"] == 3 and not body["cold_start"]
    assert not {11, 12, 1} & {it["id"] for it in body["items"]}


def test_fold_in_without_known_items_is_the_cold_start_list(client: TestClient, mf: Recommender) -> None:
    empty = client.post("/v1/recommend", json={"ratings": []}).json()
    unknown = client.post("/v1/recommend", json={"ratings": [{"item": "zzz", "rating": 3}]}).json()
    cold = mf.recommend("nobody", 10).ids.tolist()
    for body in (empty, unknown):
        assert body["cold_start"] and body["n_ratings_used"] == 0
        assert [it["id"] for it in body["items"]] == cold
    assert unknown["unknown_items"] == ["zzz"]


def test_fold_in_can_keep_rated_items(client: TestClient, mf: Recommender) -> None:
    body = client.post("/v1/recommend", json={"ratings": [{"item": 11, "rating": 5}], "k": 30,
                                              "exclude_rated": False}).json()
    assert 11 in [it["id"] for it in body["items"]]


# ---------------------------------------------------------------------- similar, predict, items
def test_similar_matches_the_library(client: TestClient, mf: Recommender) -> None:
    body = client.get("/v1/similar/11", params={"k": 3}).json()
    recs = mf.similar_items(11, 3)
    assert body["item"]["id"] == 11 and body["item"]["title"] == "Star Wars (1977)"
    assert [it["id"] for it in body["items"]] == recs.ids.tolist()
    np.testing.assert_allclose([it["similarity"] for it in body["items"]], recs.scores, rtol=1e-5)


def test_predict_known_and_fallbacks(client: TestClient, mf: Recommender) -> None:
    body = client.get("/v1/predict", params={"user": 3, "item": 11}).json()
    assert body["fallback"] == "none" and body["known_user"] and body["known_item"]
    assert body["predicted_rating"] == pytest.approx(float(mf.predict(3, 11)[0]), rel=1e-6)
    assert body["item_info"]["title"] == "Star Wars (1977)"
    new_user = client.get("/v1/predict", params={"user": "nobody", "item": 11}).json()
    assert new_user["fallback"] == "unknown_user"
    assert new_user["predicted_rating"] == pytest.approx(float(mf.predict("nobody", 11)[0]), rel=1e-6)
    new_item = client.get("/v1/predict", params={"user": 3, "item": "nope"}).json()
    assert new_item["fallback"] == "unknown_item" and new_item["score"] is None
    assert new_item["item_info"] is None and new_item["predicted_rating"] is not None


def test_items_search_and_popular(client: TestClient, mf: Recommender) -> None:
    body = client.get("/v1/items", params={"q": "STAR wars"}).json()
    assert [it["id"] for it in body["items"]] == [11] and body["total"] == 1
    films = client.get("/v1/items", params={"q": "film", "limit": 5}).json()
    assert films["total"] == 27 and len(films["items"]) == 5
    counts = [it["n_ratings"] for it in films["items"]]
    assert counts == sorted(counts, reverse=True)
    popular = client.get("/v1/items", params={"limit": 3}).json()
    catalog = Catalog.from_model(mf)
    assert [it["id"] for it in popular["items"]] == catalog.ids[catalog.popular(3)].tolist()
    assert client.get("/v1/items", params={"q": "no such title"}).json()["items"] == []


# ---------------------------------------------------------------------- string ids
def test_string_ids_are_served_as_the_model_knows_them(str_dir: Path) -> None:
    model = Recommender.load(str_dir)
    with TestClient(create_app(str_dir)) as c:
        body = c.get("/v1/recommend/u3", params={"k": 3}).json()
        assert body["user"] == "u3" and body["known"]
        assert [it["id"] for it in body["items"]] == model.recommend("u3", 3).ids.tolist()
        assert all(isinstance(it["id"], str) for it in body["items"])
        sim = c.get("/v1/similar/i11", params={"k": 2}).json()
        assert sim["item"]["title"] == "Star Wars (1977)"
        post = c.post("/v1/recommend", json={"ratings": [{"item": "i11", "rating": 5},
                                                          {"item": 11, "rating": 5}]}).json()
        assert post["n_ratings_used"] == 1 and post["unknown_items"] == [11]
        error_of(c.get("/v1/similar/11"), 404, "item_id")


# ---------------------------------------------------------------------- ranking models
def test_ranking_model_shows_scores_and_no_predicted_rating(ials_dir: Path) -> None:
    model = Recommender.load(ials_dir)
    with TestClient(create_app(ials_dir)) as c:
        assert c.get("/v1/model").json()["predicts_ratings"] is False
        body = c.get("/v1/recommend/3", params={"k": 4}).json()
        assert not body["predicts_ratings"]
        assert all(it["predicted_rating"] is None for it in body["items"])
        np.testing.assert_allclose([it["score"] for it in body["items"]], model.recommend(3, 4).scores,
                                   rtol=1e-5)
        post = c.post("/v1/recommend", json={"ratings": [{"item": 11, "rating": 5}]}).json()
        assert all(it["predicted_rating"] is None for it in post["items"])
        pred = c.get("/v1/predict", params={"user": 3, "item": 11}).json()
        assert pred["predicted_rating"] is None and pred["score"] is not None


def test_model_without_item_vectors_refuses_similar(pop_dir: Path) -> None:
    with TestClient(create_app(pop_dir)) as c:
        assert c.get("/v1/model").json()["has_similar"] is False
        error_of(c.get("/v1/similar/11"), 409, "item_id")
        assert c.get("/v1/recommend/3").status_code == 200


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("url", "field"), [
    ("/v1/recommend/3?k=0", "k"),
    ("/v1/recommend/3?k=-4", "k"),
    ("/v1/recommend/3?k=10001", "k"),   # over cfrec.limits.MAX_K
    ("/v1/recommend/3?k=ten", "k"),
    ("/v1/recommend/3?exclude_seen=maybe", "exclude_seen"),
    ("/v1/similar/11?k=0", "k"),
    ("/v1/similar/11?k=10001", "k"),
    ("/v1/items?limit=0", "limit"),
    ("/v1/items?limit=100000", "limit"),
    ("/v1/predict?user=3", "item"),
    ("/v1/predict?item=3", "user"),
])
def test_bad_query_parameters(client: TestClient, url: str, field: str) -> None:
    err = error_of(client.get(url), 422, field)
    assert field in err["message"]


def test_k_over_the_catalogue_gives_every_item_as_the_cli_does(client: TestClient) -> None:
    """The catalogue has 30 items: k=31 (within cfrec.limits.MAX_K) lists all of them, as
    ``cfrec recommend -k 31`` does; the schema states the maximum."""
    body = client.get("/v1/recommend/3?k=31&exclude_seen=false").json()
    assert body["k"] == 31 and len(body["items"]) == 30
    assert len(client.get("/v1/similar/11?k=31").json()["items"]) == 29
    schema = client.get("/openapi.json").json()
    k = next(p for p in schema["paths"]["/v1/recommend/{user_id}"]["get"]["parameters"]
             if p["name"] == "k")
    assert k["schema"]["maximum"] == 10_000 and k["schema"]["minimum"] == 1
    rating = schema["components"]["schemas"]["RatingIn"]["properties"]["rating"]
    assert (rating["minimum"], rating["maximum"]) == (1.0, 5.0)  # the served model's scale
    assert "bytes" in schema["paths"]["/v1/recommend"]["post"]["requestBody"]["description"]


def test_unknown_item_in_similar_is_404(client: TestClient) -> None:
    err = error_of(client.get("/v1/similar/4242"), 404, "item_id")
    assert "4242" in err["message"]


@pytest.mark.parametrize(("payload", "field"), [
    ({"ratings": [{"item": 11, "rating": 6}]}, "ratings[0].rating"),
    ({"ratings": [{"item": 11, "rating": 5}, {"item": 12, "rating": 0.5}]}, "ratings[1].rating"),
    ({"ratings": [{"item": 11, "rating": "five"}]}, "ratings[0].rating"),
    ({"ratings": [{"item": 11, "rating": True}]}, "ratings[0].rating"),
    ({"ratings": [{"item": 11}]}, "ratings[0].rating"),
    ({"ratings": [{"item": None, "rating": 4}]}, "ratings[0].item"),
    ({"ratings": [{"item": 1.5, "rating": 4}]}, "ratings[0].item"),
    ({"ratings": [{"item": "", "rating": 4}]}, "ratings[0].item"),
    ({"ratings": [{"item": 2**70, "rating": 4}]}, "ratings[0].item"),
    ({"ratings": [{"item": 11, "rating": 4, "extra": 1}]}, "ratings[0].extra"),
    ({"ratings": {"item": 11}}, "ratings"),
    ({"ratings": [], "k": 0}, "k"),
    ({"ratings": [], "k": 10_001}, "k"),
    ({"ratings": [], "k": "10"}, "k"),
    ([1, 2], "body"),
])
def test_bad_fold_in_bodies(client: TestClient, payload: object, field: str) -> None:
    error_of(client.post("/v1/recommend", json=payload), 422, field)


def test_non_finite_ratings_are_refused(client: TestClient) -> None:
    # Python's json module reads NaN and Infinity; the API must not take them as ratings
    for raw in (b'{"ratings": [{"item": 11, "rating": NaN}]}', b'{"ratings": [{"item": 11, "rating": Infinity}]}'):
        error_of(client.post("/v1/recommend", content=raw, headers={"content-type": "application/json"}),
                 422, "ratings[0].rating")


@pytest.mark.parametrize("raw", [b"{not json", b'{"ratings": [', b"", b"\xff\xfe"])
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    resp = client.post("/v1/recommend", content=raw, headers={"content-type": "application/json"})
    if raw == b"":
        error_of(resp, 422, "body")  # no body at all: the body is missing
    else:
        error_of(resp, 400, "body")


def test_oversized_bodies_are_413(client: TestClient) -> None:
    big = json.dumps({"ratings": [{"item": 11, "rating": 5}] * 60_000}).encode()
    assert len(big) > MAX_BODY_BYTES
    error_of(client.post("/v1/recommend", content=big, headers={"content-type": "application/json"}),
             413, "body")

    def chunks():  # no Content-Length: the limit applies while reading
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    error_of(client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"}),
             413, "body")


def test_too_many_ratings_is_422(client: TestClient) -> None:
    body = {"ratings": [{"item": 11, "rating": 5}] * 10_001}
    error_of(client.post("/v1/recommend", json=body), 422, "ratings")


def test_strange_ids_never_fail(client: TestClient) -> None:
    raw = b'{"ratings": [{"item": "\\ud800", "rating": 3}, {"item": "\\u0000", "rating": 3}]}'
    body = client.post("/v1/recommend", content=raw, headers={"content-type": "application/json"})
    assert body.status_code == 200
    assert body.json()["unknown_items"] == ["\ud800", "\x00"]
    for user in ("%F0%9F%8E%AC", "%00", "-1", "1e400", "99999999999999999999999"):
        assert client.get(f"/v1/recommend/{user}").status_code == 200
        assert client.get(f"/v1/predict?user={user}&item={user}").status_code == 200
        error_of(client.get(f"/v1/similar/{user}"), 404, "item_id")


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    error_of(client.get("/v2/nothing"), 404)
    resp = client.delete("/v1/model")
    error_of(resp, 405)
    assert resp.headers["allow"] == "GET"


# ---------------------------------------------------------------------- the page
def test_page_and_assets_are_served_without_external_references(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, kind in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        resp = client.get(asset)
        assert resp.status_code == 200 and kind in resp.headers["content-type"]
        assert "http://" not in resp.text and "https://" not in resp.text
    assert "http://" not in page.text and "https://" not in page.text
    assert 'src="/static/app.js"' in page.text


# ---------------------------------------------------------------------- reload
TOKEN = "a-test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def test_reload_swaps_in_a_new_version(tmp_path: Path) -> None:
    folder = save("mf", clustered_data(), tmp_path / "model")
    with TestClient(create_app(folder, admin_token=TOKEN), headers=ADMIN) as c:
        before = c.get("/readyz").json()["model_version"]
        same = c.post("/v1/admin/reload").json()
        assert same["reloaded"] is False and same["model_version"] == before
        save("mf", clustered_data(), folder, n_factors=8, seed=1)  # a new version, other weights
        new = Recommender.load(folder)
        result = c.post("/v1/admin/reload").json()
        assert result["reloaded"] is True and result["previous_version"] == before
        assert result["model_version"] == current_version(folder).name != before
        assert c.get("/v1/model").json()["params"]["n_factors"] == 8
        body = c.get("/v1/recommend/3", params={"k": 5}).json()
        assert [it["id"] for it in body["items"]] == new.recommend(3, 5).ids.tolist()
        assert c.post("/v1/admin/reload", params={"force": "true"}).json()["reloaded"] is True


def test_failed_reload_keeps_the_old_model(tmp_path: Path) -> None:
    folder = save("mf", clustered_data(), tmp_path / "model")
    with TestClient(create_app(folder, admin_token=TOKEN), headers=ADMIN) as c:
        before = c.get("/readyz").json()["model_version"]
        expected = c.get("/v1/recommend/3").json()
        save("mf", clustered_data(), folder, seed=2)
        weights = current_version(folder) / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])  # truncated: the checksum fails
        err = error_of(c.post("/v1/admin/reload"), 409)
        assert err["code"] == "reload_failed" and before in err["message"]
        assert c.get("/readyz").json()["model_version"] == before
        assert c.get("/v1/recommend/3").json() == expected


def test_background_load_and_not_ready(tmp_path: Path) -> None:
    folder = save("mf", clustered_data(), tmp_path / "model")
    app = create_app(folder, preload=False)
    c = TestClient(app)  # no lifespan yet: nothing loaded
    assert c.get("/healthz").status_code == 200
    error_of(c.get("/readyz"), 503)
    error_of(c.get("/v1/recommend/3"), 503)
    with TestClient(app) as started:  # the lifespan loads the model in the background
        for _ in range(200):
            if started.get("/readyz").status_code == 200:
                break
            import time

            time.sleep(0.05)
        assert started.get("/readyz").status_code == 200
        assert started.get("/v1/recommend/3").status_code == 200


def test_create_app_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(CfrecError, match="not a model folder|not a cfrec model folder"):
        create_app(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CfrecError):
        create_app(tmp_path / "empty", preload=False)
    broken = tmp_path / "broken"
    shutil.copytree(save("mf", clustered_data(), tmp_path / "ok"), broken)
    (current_version(broken) / "model.json").write_text("{", encoding="utf-8")
    with pytest.raises(CfrecError, match="corrupted metadata"):
        create_app(broken)


# ---------------------------------------------------------------------- access log
def test_access_log_lines_carry_latency(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cfrec.serve.access"):
        client.get("/v1/recommend/3?k=2")
        client.get("/v1/similar/4242")
    lines = [r.getMessage() for r in caplog.records if r.name == "cfrec.serve.access"]
    assert any('"GET /v1/recommend/3?k=2" 200' in line and line.endswith(" ms") for line in lines), lines
    assert any('"GET /v1/similar/4242" 404' in line for line in lines), lines
