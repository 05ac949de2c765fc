"""Errors as JSON: every refused request gets ``{"error": {"status", "code", "message", "field"}}``
naming the offending field (``"k"``, ``"ratings[2].rating"``, ``"body"``); an unexpected
exception becomes a generic 500 body (logged with its traceback, never sent). Bodies are encoded
with orjson where it is installed."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as _StarletteJSON

from cfrec.errors import CfrecError, UnknownIdError

_orjson: Any
try:  # optional (the ``serve`` extra): JSON encoding 10-20x faster than the standard library's
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without the extra
    _orjson = None

logger = logging.getLogger("cfrec.serve.app")


class ApiError(Exception):
    """A request the service refuses: rendered as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers


def error_body(status: int, code: str, message: str, field: str | None = None,
                details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"status": status, "code": code, "message": message, "field": field}
    if details:
        err["details"] = details
    return {"error": err}


def json_bytes(content: Any) -> bytes:
    """``content`` as compact JSON: orjson (UTF-8) where it is installed and can encode it, else
    the standard library, ASCII-escaped (any string, even one with a lone surrogate, encodes),
    refusing NaN. Bodies are built without NaN (non-finite numbers are sent as null)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(content)
        except (TypeError, ValueError):  # e.g. a lone surrogate, an int over 64 bits
            pass
    return json.dumps(content, ensure_ascii=True, allow_nan=False,
                      separators=(",", ":")).encode("ascii")


class JSONResponse(_StarletteJSON):
    """Strict JSON (see :func:`json_bytes`)."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.code, exc.message, exc.field),
                        status_code=exc.status, headers=exc.headers)


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "ratings", 2, "rating")`` -> ``"ratings[2].rating"``; ``("query", "k")`` -> ``"k"``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        where = parts.pop(0)
        if not parts:
            return str(where)
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    details = [{"field": _field_name(e.get("loc", ())),
                "message": str(e.get("msg", "invalid")).removeprefix("Value error, ")}
               for e in errors]
    first = errors[0] if errors else {}
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        msg = "the request body is not valid JSON"
        ctx = first.get("ctx") or {}
        if ctx.get("error"):
            msg += f" ({ctx['error']})"
        return JSONResponse(error_body(400, "malformed_json", msg, "body"), status_code=400)
    name = details[0]["field"] if details else None
    message = details[0]["message"] if details else "invalid request"
    if kind == "missing" and name:
        message = f"{name} is required"
    elif name:
        message = f"{name}: {message}"
    return JSONResponse(error_body(422, "invalid_value", message, name, details), status_code=422)


def _part(request: Request) -> str:
    """The part of a request its parameters came from: the body of a POST, else the query."""
    return "body" if request.method in ("POST", "PUT", "PATCH") else "query"


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error raised while handling a request with a JSON error body."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        return _validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # which part of the request was wrong: no such path, a method the path does not take
        where = {404: "path", 405: "method"}.get(exc.status_code, _part(request))
        return JSONResponse(error_body(exc.status_code, code, str(exc.detail), where),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(UnknownIdError)
    async def _unknown(request: Request, exc: UnknownIdError) -> Response:
        return JSONResponse(error_body(404, "unknown_id", str(exc), _part(request)), status_code=404)

    @app.exception_handler(CfrecError)
    async def _cfrec_error(request: Request, exc: CfrecError) -> Response:
        return JSONResponse(error_body(422, "invalid_value", str(exc), _part(request)),
                            status_code=422)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> Response:
        logger.error("internal error", exc_info=exc)
        return JSONResponse(error_body(500, "internal", "internal server error"), status_code=500)
