"""POST /v1/items: a new item from its features is recommended to the users whose tastes match
them at once (no restart), survives a reload and a restart, and is refused where it cannot be."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cfrec.models.hybrid import HybridRanker
from cfrec.serve.app import create_app
from tests.models.test_hybrid import genre_data

COMEDY_FANS = [f"u{u:03d}" for u in range(80) if u % 4 == 1]
OTHERS = [f"u{u:03d}" for u in range(80) if u % 4 != 1]


@pytest.fixture()
def hybrid_dir(tmp_path: Path) -> Path:
    model = HybridRanker(n_factors=8, epochs=30, lr=0.05, reg=1e-3, threads=1, seed=0).fit(genre_data())
    model.save(tmp_path / "hybrid")
    return tmp_path / "hybrid"


TOKEN = "a-test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _share_listing(client: TestClient, users: list[str], item: int) -> float:
    hits = [any(it["id"] == item for it in client.get(f"/v1/recommend/{u}", params={"k": 10}).json()["items"])
            for u in users]
    return sum(hits) / len(hits)


def test_new_item_is_recommended_without_restart_and_survives_reload(hybrid_dir: Path) -> None:
    with TestClient(create_app(hybrid_dir, admin_token=TOKEN), headers=ADMIN) as client:
        before = client.get("/v1/model").json()
        assert _share_listing(client, COMEDY_FANS, 5000) == 0.0
        res = client.post("/v1/items", json={"item_id": 5000, "features": ["genre=comedy"], "title": "New comedy"})
        assert res.status_code == 201, res.text
        body = res.json()
        assert body["n_items"] == 61 and body["model_version"] != before.get("version")
        assert _share_listing(client, COMEDY_FANS, 5000) > 0.8
        assert _share_listing(client, OTHERS, 5000) < 0.2
        listed = next(it for it in client.get(f"/v1/recommend/{COMEDY_FANS[0]}").json()["items"]
                      if it["id"] == 5000)
        assert listed["title"] == "New comedy" and listed["genres"] == ["comedy"]
        similar = client.get("/v1/similar/5000", params={"k": 3}).json()
        assert similar["items"]
        assert client.post("/v1/admin/reload").status_code == 200
        assert _share_listing(client, COMEDY_FANS, 5000) > 0.8
    with TestClient(create_app(hybrid_dir, admin_token=TOKEN), headers=ADMIN) as client:  # a restart reads the saved version
        assert _share_listing(client, COMEDY_FANS, 5000) > 0.8
        second = client.post("/v1/items", json={"item_id": 5001, "features": {"genre=drama": 1.0}})
        assert second.status_code == 201 and second.json()["n_items"] == 62


def test_new_item_errors(hybrid_dir: Path, mf_dir: Path) -> None:
    with TestClient(create_app(hybrid_dir, admin_token=TOKEN), headers=ADMIN) as client:
        taken = client.post("/v1/items", json={"item_id": 100, "features": ["genre=comedy"]})
        no_key = client.post("/v1/items", json={"item_id": 5003, "features": ["genre=comedy"]},
                             headers={"Authorization": ""})
        assert no_key.status_code in (401, 403)  # it writes a model version: an admin action
        assert taken.status_code == 409 and "training data" in taken.json()["error"]["message"]
        bad = client.post("/v1/items", json={"item_id": "abc", "features": []})
        assert bad.status_code == 422
        for odd_id in ("+5004", " 5004", "5e3", "05004"):  # ids are matched exactly, never guessed
            strict = client.post("/v1/items", json={"item_id": odd_id, "features": ["genre=comedy"]})
            assert strict.status_code == 422 and strict.json()["error"]["field"], odd_id
        odd = client.post("/v1/items", json={"item_id": 5002, "features": ["genre=comedy"], "colour": "red"})
        assert odd.status_code == 422
    with TestClient(create_app(mf_dir, admin_token=TOKEN), headers=ADMIN) as client:
        res = client.post("/v1/items", json={"item_id": 5000, "features": ["genre=comedy"]})
        assert res.status_code == 409 and "cannot take new items" in res.json()["error"]["message"]
