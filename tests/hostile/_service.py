"""A service on a free loopback port, in a thread of the test process, run as ``cfrec serve``
runs it (uvicorn with the guarded HTTP protocol), for the hostile-client tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TOKEN = "hostile-test-admin-token-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def live_service(model_dir: Path, *, max_head_bytes: int = 64 * 1024, head_timeout: float = 10.0,
                 body_timeout: float = 30.0, **app_options: Any) -> Iterator[tuple[str, Any]]:
    """``(base url, application)`` of a service answering on a loopback port until the block ends."""
    import uvicorn

    from cfrec.serve import create_app
    from cfrec.serve.protocol import guarded_protocol

    app_options.setdefault("allowed_hosts", ())
    app_options.setdefault("admin_token", TOKEN)
    app = create_app(model_dir, **app_options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", lifespan="on", access_log=False,
        http=guarded_protocol(max_head_bytes, head_timeout, body_timeout)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])
