"""Clients that misbehave at the HTTP level: a request head of 1 MB is answered 431 within a
second, one of 200 MB is never read, clients trickling their heads (or bodies) are cut after
the documented timeouts, and none of it disturbs a well-behaved client."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.hostile._service import HOST, live_service, port_of, raw_request
from tests.serve.conftest import clustered_data, save


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save("mf", clustered_data(), tmp_path_factory.mktemp("hostile") / "mf")


def test_a_one_megabyte_header_is_answered_431_in_under_a_second(model_dir: Path) -> None:
    with live_service(model_dir) as (base, _):
        head = (b"GET /v1/recommend/3 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bomb: " + b"a" * (1 << 20)
                + b"\r\n\r\n")
        start = time.perf_counter()
        answer = raw_request(port_of(base), head)
        elapsed = time.perf_counter() - start
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b'"field": "headers"' in answer and elapsed < 1.0, elapsed
        assert httpx.get(f"{base}/v1/recommend/3").status_code == 200  # others unaffected


def test_a_200_megabyte_header_is_not_read(model_dir: Path) -> None:
    """The service stops reading a few MB into the header: the client cannot send it all."""
    with live_service(model_dir) as (base, _):
        sent = 0
        chunk = b"b" * (1 << 20)
        start = time.perf_counter()
        with socket.create_connection((HOST, port_of(base)), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bomb: ")
            try:
                while sent < 200 << 20:
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError:  # reset, broken pipe or a send that can no longer proceed
                pass
        assert sent < 16 << 20, f"{sent} bytes of the header were accepted"
        assert time.perf_counter() - start < 10


def test_clients_trickling_headers_are_cut_after_the_head_timeout(model_dir: Path) -> None:
    """50 clients sending their request head one byte per 0.1 s: each is answered 408 and
    closed once the head timeout (1 s here, 10 s by default) has passed; a normal client is
    answered meanwhile."""
    timeout = 1.0
    with live_service(model_dir, head_timeout=timeout) as (base, _):
        port = port_of(base)
        results: list[tuple[float, bytes]] = []

        def trickle() -> None:
            head = b"GET /v1/recommend/3 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200
            start = time.perf_counter()
            got = b""
            with socket.create_connection((HOST, port), timeout=10) as s:
                try:
                    for byte in head:
                        s.sendall(bytes([byte]))
                        time.sleep(0.1)
                        s.setblocking(False)
                        try:
                            got = s.recv(4096)
                        except BlockingIOError:
                            got = b"-"
                        finally:
                            s.setblocking(True)
                        if got != b"-":
                            break
                except OSError:
                    pass
            results.append((time.perf_counter() - start, got))

        threads = [threading.Thread(target=trickle) for _ in range(50)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        assert httpx.get(f"{base}/v1/recommend/3", timeout=5).status_code == 200
        for t in threads:
            t.join(timeout=30)
        assert len(results) == 50
        for elapsed, got in results:
            assert timeout * 0.9 <= elapsed < timeout + 3.0, elapsed  # not the 20 s they wanted
            assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got[:100]
        assert any(got.startswith(b"HTTP/1.1 408 ") for _, got in results)


def test_a_client_that_connects_and_sends_nothing_is_closed(model_dir: Path) -> None:
    with live_service(model_dir, head_timeout=0.5) as (base, _), \
            socket.create_connection((HOST, port_of(base)), timeout=5) as s:
        start = time.perf_counter()
        assert s.recv(100) == b""
        assert time.perf_counter() - start < 3


def test_a_trickled_body_is_cut_after_the_body_timeout(model_dir: Path) -> None:
    with live_service(model_dir, body_timeout=1.0) as (base, _), \
            socket.create_connection((HOST, port_of(base)), timeout=10) as s:
        body = b'{"ratings": [{"item": 11, "rating": 5}]}'
        s.sendall(b"POST /v1/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: "
                  b"application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n")
        start = time.perf_counter()
        got = b""
        try:
            for byte in body:
                s.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass
        try:
            got = s.recv(4096)
        except OSError:
            pass
        assert got.startswith(b"HTTP/1.1 408 ") and b'"field": "body"' in got, got[:200]
        assert time.perf_counter() - start < 4


def test_header_limits_leave_keep_alive_requests_alone(model_dir: Path) -> None:
    """Many requests on one keep-alive connection, with headers close to (under) the limit."""
    with live_service(model_dir, max_head_bytes=8192) as (base, _), \
            httpx.Client(base_url=base) as client:
        for i in range(50):
            r = client.get(f"/v1/recommend/{1 + i % 40}", headers={"X-Pad": "p" * 7000})
            assert r.status_code == 200
        assert client.get("/v1/recommend/3", headers={"X-Pad": "p" * 9000}).status_code == 431
