"""One client cannot stall the rest: fold-ins from 10,000 ratings are parsed and scored off the
event loop, in a bounded pool that answers 429 with Retry-After when it is full, while small
requests keep being answered on the loop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from cfrec.serve.pool import INLINE_MAX_BODY
from tests.hostile._service import live_service, port_of
from tests.serve.conftest import clustered_data, save

BIG = {"ratings": [{"item": 1 + i % 30, "rating": 1 + i % 5} for i in range(10_000)], "k": 10}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save("mf", clustered_data(), tmp_path_factory.mktemp("hostile") / "mf")


POSTER = """
import http.client, json, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
body = json.dumps({"ratings": [{"item": 1 + i % 30, "rating": 1 + i % 5} for i in range(10_000)]})
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
end = time.monotonic() + seconds
while time.monotonic() < end:
    start = time.perf_counter()
    conn.request("POST", "/v1/recommend", body, {"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    print(response.status, time.perf_counter() - start, flush=True)
"""


def test_a_big_fold_in_in_progress_holds_no_other_request(
        model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a fold-in from 10,000 ratings is being scored (held here until released), GETs
    and small fold-ins are answered: the big one is not on the event loop."""
    from cfrec.serve.routes import Service

    release, entered = threading.Event(), threading.Event()
    original = Service.recommend_new

    def held(self: Service, served: object, body: object) -> object:
        if len(body.ratings) > 100:  # type: ignore[attr-defined]
            entered.set()
            release.wait(60)
        return original(self, served, body)  # type: ignore[arg-type]

    monkeypatch.setattr(Service, "recommend_new", held)
    with live_service(model_dir, inline=True) as (base, _):
        results: list[int] = []
        big = threading.Thread(target=lambda: results.append(
            httpx.post(f"{base}/v1/recommend", json=BIG, timeout=120).status_code))
        big.start()
        try:
            assert entered.wait(60)
            for user in (3, 4, 5):
                assert httpx.get(f"{base}/v1/recommend/{user}", timeout=30).status_code == 200
            assert client_small_fold_in(base) == 200
            assert results == []  # the big one is still being scored
        finally:
            release.set()
            big.join()
        assert results == [200]


def test_four_clients_posting_big_fold_ins_get_answers_off_the_event_loop(
        model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four clients (other processes) post fold-ins from 10,000 ratings without pause while a
    fifth sends GETs: every answer is a 200 and every big fold-in ran in a pool thread. (The
    latencies this buys are measured by benchmarks/serve_load.py --stall, in quiet processes.)"""
    from cfrec.serve.routes import Service

    where: list[str] = []
    original = Service.recommend_new

    def recording(self: Service, served: object, body: object) -> object:
        where.append(threading.current_thread().name)
        return original(self, served, body)  # type: ignore[arg-type]

    monkeypatch.setattr(Service, "recommend_new", recording)
    with live_service(model_dir, pool_queue=64) as (base, _):
        posters = [subprocess.Popen([sys.executable, "-c", POSTER, str(port_of(base)), "3"],
                                    stdout=subprocess.PIPE, text=True) for _ in range(4)]
        gets = 0
        with httpx.Client(base_url=base, timeout=60) as client:
            while any(p.poll() is None for p in posters) or gets < 3:
                assert client.get("/v1/recommend/3").status_code == 200
                gets += 1
        lines = [line.split() for p in posters for line in p.communicate(timeout=120)[0].splitlines()]
        assert {status for status, _ in lines} == {"200"} and len(lines) >= 4
        assert len(where) == len(lines) and threading.main_thread().name not in where


def client_small_fold_in(base: str) -> int:
    body = {"ratings": [{"item": 11, "rating": 5}]}
    assert len(str(body)) < INLINE_MAX_BODY
    return httpx.post(f"{base}/v1/recommend", json=body).status_code


def test_a_full_pool_answers_429_with_retry_after(model_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from cfrec.serve.routes import Service

    release = threading.Event()
    entered = threading.Event()
    original = Service.recommend_new

    def slow(self: Service, served: object, body: object) -> object:
        entered.set()
        release.wait(30)
        return original(self, served, body)  # type: ignore[arg-type]

    monkeypatch.setattr(Service, "recommend_new", slow)
    with live_service(model_dir, pool_threads=1, pool_queue=1, inline=True) as (base, _):
        results: list[int] = []

        def post() -> None:
            results.append(httpx.post(f"{base}/v1/recommend", json=BIG, timeout=60).status_code)

        running = threading.Thread(target=post)
        running.start()
        assert entered.wait(30)
        queued = threading.Thread(target=post)
        queued.start()
        time.sleep(0.5)  # one running, one waiting: the pool is full
        refused = httpx.post(f"{base}/v1/recommend", json=BIG, timeout=60)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "busy"
        assert httpx.get(f"{base}/v1/recommend/3").status_code == 200  # small ones still served
        release.set()
        running.join()
        queued.join()
        assert results == [200, 200]
        k_large = httpx.get(f"{base}/v1/recommend/3", params={"k": 5000})
        assert k_large.status_code == 200 and len(k_large.json()["items"]) <= 30
