"""Ids and bodies a hostile client sends: other spellings of an integer id are unknown ids
(never a guess), and every refused body names the part of the request that was wrong."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from cfrec.serve import create_app
from tests.serve.conftest import clustered_data, save

SPELLINGS = ["1e0", "5e0", "003", "+3", "3\n", " 3", "\u00a03", "3.0", "0x3", "-0"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    folder = save("mf", clustered_data(), tmp_path_factory.mktemp("hostile") / "mf")
    with TestClient(create_app(folder), base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.mark.parametrize("user", SPELLINGS)
def test_other_spellings_of_a_user_id_are_unknown_users(client: TestClient, user: str) -> None:
    known = client.get("/v1/recommend/3").json()
    assert known["known"] is True
    body = client.get("/v1/recommend/" + user.replace("\n", "%0A").replace("\u00a0", "%C2%A0")
                      .replace(" ", "%20").replace("+", "%2B")).json()
    assert body["known"] is False and body["cold_start"] is True, body


@pytest.mark.parametrize("item", ["1.1e1", "011", "+11", "11 ", "\u00a011"])
def test_other_spellings_of_an_item_id_are_unknown_items(client: TestClient, item: str) -> None:
    assert client.get("/v1/predict", params={"user": "3", "item": "11"}).json()["known_item"]
    body = client.get("/v1/predict", params={"user": "3", "item": item}).json()
    assert body["known_item"] is False and body["fallback"] == "unknown_item"
    error = client.get(f"/v1/similar/{item.replace(' ', '%20')}")
    assert error.status_code == 404 and error.json()["error"]["field"] == "item_id"
    fold = client.post("/v1/recommend", json={"ratings": [{"item": item, "rating": 5}]}).json()
    assert fold["unknown_items"] == [item] and fold["cold_start"] is True


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"ratings": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"ratings": [{"item": "\xff\xfe", "rating": 5}]}',
    b"\xff\xfe\x00{",
    b'{"ratings": [{"item": 11, "rating": 5}',
    b"",
])
def test_bodies_that_are_not_json_name_the_body(client: TestClient, body: bytes) -> None:
    r = client.post("/v1/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), r.text
    err = r.json()["error"]
    assert err["field"] == "body", err
    assert "Traceback" not in r.text


def test_every_error_names_a_field_or_a_part_of_the_request(client: TestClient) -> None:
    answers = [client.get("/nowhere"), client.delete("/v1/recommend/3"),
               client.get("/v1/recommend/3?k=99999999999"),
               client.post("/v1/recommend", json={"ratings": [], "k": 10_001}),
               client.post("/v1/recommend", content=json.dumps({"ratings": []}),
                           headers={"content-type": "text/plain"})]
    for r in answers:
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"]["field"], (r.request.url, r.text)
