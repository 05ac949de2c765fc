"""ASGI middleware of the service: an access log line per request and a request body limit.

Access log lines (logger ``cfrec.serve.access``) carry client, method, path, status and latency
in milliseconds; bodies over the limit are refused with 413 before the application parses them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cfrec.serve.errors import error_body

access_logger = logging.getLogger("cfrec.serve.access")

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY_BYTES = 1 << 20

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AccessLog:
    """Logs one line per HTTP request: client, method, path, status and latency (ms)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                who = f"{client[0]}:{client[1]}" if client else "-"
                path = scope.get("path", "")
                query = scope.get("query_string", b"")
                if query:
                    path += "?" + query.decode("latin-1")
                access_logger.info('%s "%s %s" %d %.2f ms', who, scope.get("method", ""), path,
                                   status[0], (time.perf_counter() - start) * 1e3)


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413 (by ``Content-Length`` up front, or
    while reading a body sent without one), before the application parses anything."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = None
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._refuse(send, 400, "invalid Content-Length header")
                    return
        if length is not None and length > self.max_bytes:
            await self._refuse(send, 413, f"request body of {length} bytes is over the limit of "
                                          f"{self.max_bytes} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, status: int, message: str) -> None:
        code = "body_too_large" if status == 413 else "bad_header"
        payload = json.dumps(error_body(status, code, message, "body")).encode("ascii")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})

