"""uvicorn's HTTP/1.1 protocol (httptools) with limits on what one connection may send.

uvicorn bounds neither the size of a request head (a 200 MB header is read and kept) nor the
time a client may take to send it (a client trickling one byte every 0.1 s holds its connection
for ever), so ``cfrec serve`` runs this subclass of its httptools protocol:

* a request head (request line and headers) over ``max_head_bytes`` is answered 431 as soon as
  that many bytes have arrived: the rest is never parsed or kept (at most
  :data:`LINGER_BYTES` more are read and dropped for :data:`LINGER_SECONDS` so the client can
  read the answer, then the connection is closed);
* a head must be complete within ``head_timeout`` seconds of the connection opening or of the
  first byte of a keep-alive connection's next request, else 408 and the connection is closed;
* a request body must be complete within ``body_timeout`` seconds of its head, else 408 and the
  connection is closed (the application sees the client disconnect).

Idle keep-alive connections are closed after uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cfrec.serve.errors import error_body

#: Largest request head (request line and headers, bytes) accepted; larger ones get 431.
MAX_HEAD_BYTES = 64 * 1024
#: Seconds a client has to send a request head.
HEAD_TIMEOUT = 10.0
#: Seconds a client has to send a request body once its head has arrived.
BODY_TIMEOUT = 30.0
#: After refusing a request, bytes still read (and dropped) and seconds waited for the client
#: to read the answer before the connection is closed.
LINGER_BYTES = 2 * 1024 * 1024
LINGER_SECONDS = 2.0


class _Refused(Exception):
    """Stops the parser once a request was refused (raised from a parser callback)."""


def _response(status: int, reason: str, code: str, message: str, field: str) -> bytes:
    body = json.dumps(error_body(status, code, message, field)).encode("ascii")
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("ascii") + body


def guarded_protocol(max_head_bytes: int = MAX_HEAD_BYTES, head_timeout: float = HEAD_TIMEOUT,
                     body_timeout: float = BODY_TIMEOUT) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with the limits above (``uvicorn.Config(http=...)``).

    Raises ImportError when httptools is not installed.
    """
    import httptools  # noqa: F401 - the protocol below parses with it
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True          # between requests or inside a request head
            self._head_bytes = 0
            self._timer: asyncio.TimerHandle | None = None
            self._refused = False
            self._dropped = 0

        # -------------------------------------------------------------- timers
        def _arm(self, seconds: float, what: str) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._timed_out, what)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self, what: str) -> None:
            self._timer = None
            if self.transport is None or self.transport.is_closing() or self._refused:
                return
            if what == "head":
                if self.cycle is not None and not self.cycle.response_complete:
                    return  # a request is being answered; the next one's head waits its turn
                if self._head_bytes == 0:  # connected and sent nothing: just close
                    self.transport.close()
                    return
                self._refuse(408, "Request Timeout", "header_timeout",
                             f"the request head was not complete within {head_timeout:g} s",
                             "headers", linger=False)
                return
            # the body did not arrive in time
            if self.cycle is not None and not self.cycle.response_started:
                self.transport.write(_response(
                    408, "Request Timeout", "body_timeout",
                    f"the request body was not complete within {body_timeout:g} s", "body"))
            self.transport.close()

        def _refuse(self, status: int, reason: str, code: str, message: str, field: str,
                    linger: bool = True) -> None:
            self._refused = True
            self._disarm()
            self.transport.write(_response(status, reason, code, message, field))
            if not linger:
                self.transport.close()
                return
            # let the client finish sending what it is sending (dropped) and read the answer
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

        # -------------------------------------------------------------- protocol
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(head_timeout, "head")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._dropped += len(data)
                if self._dropped > LINGER_BYTES:
                    self.transport.close()
                return
            if self._in_head:
                self._head_bytes += len(data)
                if self._timer is None:
                    self._arm(head_timeout, "head")
            try:
                super().data_received(data)
            except _Refused:
                return
            if self._in_head and self._head_bytes > max_head_bytes and not self._refused:
                self._refuse(431, "Request Header Fields Too Large", "header_too_large",
                             f"the request head is over the limit of {max_head_bytes} bytes",
                             "headers")

        # -------------------------------------------------------------- parser callbacks
        def on_headers_complete(self) -> None:
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
            if size > max_head_bytes:
                self._refuse(431, "Request Header Fields Too Large", "header_too_large",
                             f"the request head is over the limit of {max_head_bytes} bytes",
                             "headers")
                raise _Refused
            self._in_head = False
            self._head_bytes = 0
            self._disarm()
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.more_body and _has_body(self.headers):
                self._arm(body_timeout, "body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()
            self._in_head = True
            self._head_bytes = 0

    GuardedHttpToolsProtocol.__name__ = GuardedHttpToolsProtocol.__qualname__ = \
        "GuardedHttpToolsProtocol"
    return GuardedHttpToolsProtocol


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
    return False
