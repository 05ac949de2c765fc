"""Request parameters of the busiest endpoints, read from the request itself.

FastAPI resolves declared parameters through a generic dependency walk that costs about as much
as scoring one user; the hot endpoints instead take the :class:`~starlette.requests.Request` and
validate their few parameters here against small pydantic models, with the same lax parsing,
the same error locations (``("query", "k")``, ``("body", "ratings", 0, "rating")``) and so the
same 422/400 bodies as declared parameters. The same models describe the parameters in the
OpenAPI document (:func:`query_parameters`, :func:`json_body`), so ``/openapi.json`` stays
complete."""

from __future__ import annotations

import email.message
import json
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from cfrec.serve.errors import _orjson

M = TypeVar("M", bound=BaseModel)


def _relocated(exc: ValidationError, where: str) -> RequestValidationError:
    """Pydantic's errors as FastAPI reports a declared parameter's: located under ``where``."""
    return RequestValidationError([{**e, "loc": (where, *e["loc"])} for e in exc.errors()])


def parse_query(request: Request, model: type[M]) -> M:
    """``model`` validated from the query string (the last value of a repeated key, as FastAPI
    reads a scalar parameter); unknown keys are ignored."""
    query: bytes = request.scope.get("query_string", b"")
    values = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)) if query else {}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _relocated(exc, "query") from None


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    sub = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (sub == "json" or sub.endswith("+json"))


async def parse_json_body(request: Request, model: type[M]) -> M:
    """``model`` validated from a JSON request body (see :func:`validate_json_body`)."""
    return validate_json_body(await request.body(), request.headers.get("content-type"), model)


def validate_json_body(raw: bytes, content_type: str | None, model: type[M]) -> M:
    """``model`` validated from the bytes of a JSON request body, with FastAPI's answers to a
    missing body (``body is required``), a body that is not JSON (400 ``malformed_json``) or not
    sent as JSON. Needs no event loop (large bodies are validated in a worker thread)."""
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required",
                                       "input": None}])
    # not sent as JSON: validated as the bytes it is (and refused), as FastAPI does
    data: Any = _loads(raw) if content_type == "application/json" or _is_json(content_type) else raw
    try:
        return model.model_validate(data, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        raise _relocated(exc, "body") from None


def _loads(raw: bytes) -> Any:
    """The JSON value of a request body; a body that is not JSON (bad syntax, not UTF-8, nested
    deeper than the parser goes) is a ``json_invalid`` error of the field ``body`` (400)."""
    if _orjson is not None:
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass  # the standard library decides (NaN, big integers) and words the error
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise _not_json(e.msg, e.pos) from None
    except UnicodeDecodeError as e:
        raise _not_json(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start}",
                        e.start) from None
    except RecursionError:
        raise _not_json("nested too deeply", 0) from None
    except Exception as e:  # noqa: BLE001 - any other undecodable body is still the body's fault
        raise _not_json(f"cannot be decoded ({type(e).__name__})", 0) from None


def _not_json(reason: str, pos: int) -> RequestValidationError:
    return RequestValidationError([{"type": "json_invalid", "loc": ("body", pos),
                                    "msg": "JSON decode error", "input": {},
                                    "ctx": {"error": reason}}])


# ---------------------------------------------------------------------- OpenAPI description
def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` entries of ``model``'s fields, as query parameters."""
    schema = model.model_json_schema()
    out = []
    for name, field in model.model_fields.items():
        prop = dict(schema["properties"][name])
        description = prop.pop("description", None)
        entry: dict[str, Any] = {"name": name, "in": "query", "required": field.is_required(),
                                 "schema": prop}
        if description:
            entry["description"] = description
        out.append(entry)
    return out


def path_parameter(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "title": name.replace("_", " ").title()}}


def json_body(model: type[BaseModel], description: str | None = None) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a required JSON body of ``model`` (the model itself is added
    to the document's components by :func:`add_components`)."""
    out: dict[str, Any] = {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    if description:
        out["description"] = description
    return out


def add_components(openapi: dict[str, Any], *models: type[BaseModel]) -> dict[str, Any]:
    """``openapi`` with the schemas of ``models`` (and the models they use) in its components."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas.setdefault(model.__name__, schema)
    return openapi
