"""Who may ask what: the Host and Origin checks of every request and the admin token.

* **Host** (against DNS rebinding: a web page whose name is made to point at 127.0.0.1 talks to
  the service as a same-origin page of that name): a request's ``Host`` must name this service
  -- a loopback name or address (``localhost``, ``127.0.0.1``, ``[::1]``), the address it
  listens on, or a name given in ``allowed_hosts``; any other is refused with 403. ``"*"``
  accepts every name (a service behind a proxy that checks it).
* **Origin** (against cross-site posts: a page on another site sending a form or a ``fetch`` to
  the service): a request that can change something (any method but GET, HEAD, OPTIONS) and
  carries an ``Origin`` (or ``Sec-Fetch-Site: cross-site``) must come from the service's own
  origin, else 403. The service's own page posts from its own origin.
* **Admin endpoints** (``/v1/admin/...``: reload; and ``POST /v1/items``, which writes a new
  model version) need ``Authorization: Bearer <token>`` with the
  token the service was started with: without one, 401; a wrong one, 403. A service started
  without a token has its admin endpoints turned off (403): reload it with ``SIGHUP``, a local
  signal from the machine's own users.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from cfrec.serve.errors import error_body
from cfrec.serve.middleware import ASGIApp, Receive, Scope, Send

#: Path prefix of the endpoints that need the admin token.
ADMIN_PREFIX = "/v1/admin/"
#: Other (method, path) pairs that need it: they change the model folder.
ADMIN_WRITES = frozenset({("POST", "/v1/items")})
#: Host names every service answers to (loopback).
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    host = host.strip("[]")
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return host.lower() in ("localhost", "localhost.localdomain")


def host_name(value: str) -> str:
    """The name part of a ``Host`` header or an origin's netloc, lower case, without the port
    (``"[::1]:8000"`` -> ``"::1"``; ``"Example.org:80"`` -> ``"example.org"``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.index("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def allowed_host_names(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str] | None:
    """The ``Host`` names a service listening on ``bind_host`` answers to (None: any name)."""
    names = set(LOOPBACK_HOSTS)
    for name in extra:
        if name.strip() == "*":
            return None
        names.add(host_name(name))
    bind = bind_host.strip("[]").lower()
    if bind and bind not in ("0.0.0.0", "::"):
        names.add(bind)
    return frozenset(names)


class RequestGuard:
    """ASGI middleware: the Host and Origin checks, and the admin token (see the module)."""

    def __init__(self, app: ASGIApp, *, admin_token: str | None = None,
                 allowed_hosts: frozenset[str] | None = LOOPBACK_HOSTS) -> None:
        self.app = app
        self.admin_token = admin_token.encode() if admin_token else None
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is not None:
            status, code, message, field = refusal
            headers = [(b"www-authenticate", b'Bearer realm="cfrec admin"')] if status == 401 else []
            await _refuse(send, status, code, message, field, headers)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> tuple[int, str, str, str] | None:
        """``(status, code, message, field)`` of a refused request, or None to let it through."""
        host = origin = fetch_site = authorization = None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"sec-fetch-site":
                fetch_site = value.decode("latin-1").strip().lower()
            elif key == b"authorization":
                authorization = value
        name = host_name(host) if host else ""
        if self.allowed_hosts is not None and name not in self.allowed_hosts:
            shown = host if host is not None else "(none)"
            return (403, "foreign_host", f"Host {shown[:100]!r} is not a name of this service "
                                         "(start it with --allowed-host NAME to answer to it)",
                    "header Host")
        path: str = scope.get("path", "")
        admin = path.startswith(ADMIN_PREFIX) or (scope.get("method"), path) in ADMIN_WRITES
        if admin or scope.get("method") not in _SAFE_METHODS:
            if origin is not None and not _same_origin(origin, scope.get("scheme", "http"), host):
                return (403, "foreign_origin", f"a request from the origin {origin[:100]!r} may not "
                                               "change this service (cross-site)", "header Origin")
            if fetch_site == "cross-site":
                return (403, "foreign_origin", "a cross-site request may not change this service",
                        "header Sec-Fetch-Site")
        if admin:
            if self.admin_token is None:
                return (403, "admin_disabled", "admin endpoints are turned off: start the service "
                                               "with an admin token (--admin-token-file, "
                                               "CFREC_ADMIN_TOKEN) to use them, or reload with "
                                               "SIGHUP", "header Authorization")
            if authorization is None:
                return (401, "admin_token_missing", "admin endpoints need the header "
                                                    "'Authorization: Bearer <admin token>'",
                        "header Authorization")
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(),
                                                                       self.admin_token):
                return (403, "admin_token_wrong", "the admin token is wrong",
                        "header Authorization")
        return None


def _same_origin(origin: str, scheme: str, host: str | None) -> bool:
    """Whether ``origin`` is the origin this request reached the service at (scheme, name and
    port of its ``Host``)."""
    if origin == "null" or host is None:
        return False
    parts = urlsplit(origin)
    return parts.scheme == scheme and bool(parts.netloc) and \
        parts.netloc.lower() == host.strip().lower()


async def _refuse(send: Send, status: int, code: str, message: str, field: str,
                  headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(error_body(status, code, message, field)).encode("ascii")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})
