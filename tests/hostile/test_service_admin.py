"""Admin actions need the key, and no other site can reach the service through a visitor's
browser: reload without the token is 401 (wrong token 403, no token configured 403); a foreign
Origin or Host is 403 (cross-site posts, DNS rebinding); listening on 0.0.0.0 without a token
is refused at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cfrec.cli import main
from cfrec.serve import create_app
from tests.serve.conftest import clustered_data, save

TOKEN = "hostile-test-admin-token-0123"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save("mf", clustered_data(), tmp_path_factory.mktemp("hostile") / "mf")


@pytest.fixture(scope="module")
def client(model_dir: Path):
    app = create_app(model_dir, admin_token=TOKEN, allowed_hosts=(), bind_host="127.0.0.1")
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["status"] == status and err["field"], err
    return err


def test_reload_with_the_token_works(client: TestClient) -> None:
    assert client.post("/v1/admin/reload", headers=GOOD).json()["reloaded"] is False


def test_reload_without_the_token_is_401(client: TestClient) -> None:
    r = client.post("/v1/admin/reload")
    err = error(r, 401)
    assert err["field"] == "header Authorization" and "Bearer" in r.headers["www-authenticate"]


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN,
                                   f"Bearer {TOKEN[:-1]}"])
def test_reload_with_a_wrong_token_is_403(client: TestClient, value: str) -> None:
    error(client.post("/v1/admin/reload", headers={"Authorization": value}), 403)


def test_a_service_without_a_token_has_no_admin_endpoints(model_dir: Path) -> None:
    with TestClient(create_app(model_dir, allowed_hosts=()), base_url=LOCAL) as c:
        err = error(c.post("/v1/admin/reload", headers=GOOD), 403)
        assert err["code"] == "admin_disabled" and "SIGHUP" in err["message"]
        assert c.get("/v1/recommend/3").status_code == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9999",
                                    "https://127.0.0.1:8000", "file://"])
def test_a_foreign_origin_cannot_reload_or_post(client: TestClient, origin: str) -> None:
    err = error(client.post("/v1/admin/reload", headers={**GOOD, "Origin": origin}), 403)
    assert err["code"] == "foreign_origin" and err["field"] == "header Origin"
    error(client.post("/v1/recommend", json={"ratings": [{"item": 11, "rating": 5}]},
                      headers={"Origin": origin}), 403)


def test_a_cross_site_fetch_cannot_post(client: TestClient) -> None:
    error(client.post("/v1/admin/reload", headers={**GOOD, "Sec-Fetch-Site": "cross-site"}), 403)


def test_the_services_own_page_may_post(client: TestClient) -> None:
    r = client.post("/v1/recommend", json={"ratings": [{"item": 11, "rating": 5}]},
                    headers={"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200
    assert client.post("/v1/admin/reload", headers={**GOOD, "Origin": LOCAL}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                                  "10.0.0.1"])
def test_a_foreign_host_is_403_on_every_endpoint(client: TestClient, host: str) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1."""
    for method, path in [("POST", "/v1/admin/reload"), ("GET", "/v1/recommend/3"), ("GET", "/")]:
        err = error(client.request(method, path, headers={**GOOD, "Host": host}), 403)
        assert err["code"] == "foreign_host" and err["field"] == "header Host"


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000"])
def test_loopback_hosts_are_answered(client: TestClient, host: str) -> None:
    assert client.get("/v1/recommend/3", headers={"Host": host}).status_code == 200


def test_allowed_host_names_are_answered(model_dir: Path) -> None:
    app = create_app(model_dir, allowed_hosts=("recs.example.org",), admin_token=TOKEN)
    with TestClient(app, base_url="http://recs.example.org") as c:
        assert c.get("/v1/recommend/3").status_code == 200
        error(c.get("/v1/recommend/3", headers={"Host": "evil.example"}), 403)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_listening_beyond_loopback_without_a_token_is_refused(
        model_dir: Path, host: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CFREC_ADMIN_TOKEN", raising=False)
    assert main(["serve", str(model_dir), "--host", host, "--port", "1"]) == 1
    err = capsys.readouterr().err
    assert "admin token" in err and f"--host {host}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3


def test_a_short_or_empty_token_is_refused(model_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(model_dir), "--admin-token", "short", "--port", "1"]) == 1
    assert "at least 16" in capsys.readouterr().err
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["serve", str(model_dir), "--admin-token-file", str(empty), "--port", "1"]) == 1
    assert "empty" in capsys.readouterr().err
