"""The HTTP service: a FastAPI application serving one model folder.

Endpoints (JSON, raw ids as the model knows them: integers or strings)::

    GET  /healthz                      liveness
    GET  /readyz                       200 once a model is loaded and checked, else 503
    GET  /v1/model                     model card
    GET  /v1/recommend/{user_id}       top-k for a training user (a new user: the cold-start list)
    POST /v1/recommend                 top-k for a new user folded in from a few ratings
    GET  /v1/similar/{item_id}         nearest items by cosine of item vectors
    GET  /v1/predict?user=&item=       one score / predicted rating
    GET  /v1/items?q=&limit=           title search (no ``q``: the most-rated items)
    POST /v1/admin/reload              load the model folder's current version and swap it in
    GET  /                             the web page; /openapi.json and /docs describe the API

Design, and why:

* **One immutable snapshot per model.** A :class:`ServedModel` (model, catalogue, model card)
  is never changed after it is built; a request reads the holder's current snapshot once and
  uses it to the end, so a reload in the middle of a request cannot mix two models. The
  library's scoring and fold-in only read a fitted model (NeuMF's fold-in takes gradients with
  respect to the new vectors alone), so concurrent requests share a snapshot safely.
* **Reload without downtime.** ``POST /v1/admin/reload`` (or ``SIGHUP`` to ``cfrec serve``)
  loads the folder's current version in a worker thread, checks it (finite scores for a known
  user and a folded-in one; this also builds the vocabularies' lazy lookup tables, so requests
  never race to build them) and only then swaps the holder's reference. Until then, and for
  good if the new version fails its check, the old model answers. Reloads are serialised.
* **Scoring off the event loop when it is slow.** The load check times a recommendation and a
  fold-in; a model whose calls take under :data:`INLINE_SECONDS` is scored on the event loop,
  where a thread hop would cost about as much as the work; slower models (large catalogues,
  NeuMF's L-BFGS fold-in) run in the worker thread pool so the loop keeps answering.
* **The busiest call skips the framework.** A known user's top-k is ranked by
  :meth:`Service.top_for_user` (the model's scores, its training items removed, one
  :func:`~cfrec.ranking.top_k`; the same lists as ``model.recommend``, about ten times cheaper
  for one user), and :class:`FastRecommend` answers the common form of
  ``GET /v1/recommend/{user_id}`` before FastAPI's routing and parameter resolution, which cost
  as much again; anything else, errors included, is FastAPI's. Bodies are encoded with orjson
  where it is installed.
* **Errors are JSON.** Every 4xx body is ``{"error": {"status", "code", "message", "field"}}``
  naming the offending field (``"k"``, ``"ratings[2].rating"``, ``"body"``); unexpected
  exceptions become a generic 500 body (logged with their traceback, never sent).
* **Access log** lines (logger ``cfrec.serve.access``) carry client, method, path, status and
  latency in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import signal
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as _StarletteJSON

from cfrec._version import __version__
from cfrec.catalog import Catalog, IdIndex
from cfrec.errors import CfrecError, ModelFileError, UnknownIdError
from cfrec.models.base import FoldedUser, Recommender
from cfrec.models.persistence import read_meta
from cfrec.ranking import top_k

_orjson: Any
try:  # optional (the ``serve`` extra): JSON encoding 10-20x faster than the standard library's
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without the extra
    _orjson = None

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("cfrec.serve.access")

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY_BYTES = 1 << 20
#: Most ratings one fold-in request may carry.
MAX_RATINGS = 10_000
#: Most results of one title search.
MAX_SEARCH = 200
#: Model calls faster than this (median of the load check's timings) run on the event loop.
INLINE_SECONDS = 0.002
#: The web page may only load what the service itself serves (no CDN, works offline).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_INT64 = (-(2**63), 2**63 - 1)

T = TypeVar("T")


# ---------------------------------------------------------------------- errors
class ApiError(Exception):
    """A request the service refuses: rendered as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers


def _error_body(status: int, code: str, message: str, field: str | None = None,
                details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"status": status, "code": code, "message": message, "field": field}
    if details:
        err["details"] = details
    return {"error": err}


def _json_bytes(content: Any) -> bytes:
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
    """Strict JSON (see :func:`_json_bytes`)."""

    def render(self, content: Any) -> bytes:
        return _json_bytes(content)


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(_error_body(exc.status, exc.code, exc.message, exc.field),
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
        return JSONResponse(_error_body(400, "malformed_json", msg, "body"), status_code=400)
    name = details[0]["field"] if details else None
    message = details[0]["message"] if details else "invalid request"
    if kind == "missing" and name:
        message = f"{name} is required"
    elif name:
        message = f"{name}: {message}"
    return JSONResponse(_error_body(422, "invalid_value", message, name, details), status_code=422)


# ---------------------------------------------------------------------- request and response models
def _raw_id(value: Any) -> int | str:
    """A raw id in a request body: a JSON integer (int64) or a non-empty string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer or a string id")
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise ValueError("integer id out of the 64-bit range")
    if isinstance(value, str) and not (0 < len(value) <= 256):
        raise ValueError("string id must have 1 to 256 characters")
    return value


def _rating(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError("must be a finite number")
    return out


RawIdIn = Annotated[int | str, PlainValidator(_raw_id), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": _INT64[0], "maximum": _INT64[1]},
              {"type": "string", "minLength": 1, "maxLength": 256}],
    "description": "A raw item id as the model knows it (integer or string).",
})]
RatingValue = Annotated[float, PlainValidator(_rating), WithJsonSchema({
    "type": "number", "description": "A rating on the model's scale (see /v1/model)."})]
RawIdOut = Annotated[int | str, Field(description="A raw id as the model knows it.")]
K = Annotated[int, Query(ge=1, description="List length (at most the catalogue size).")]


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: RawIdIn
    rating: RatingValue


class FoldInRequest(BaseModel):
    """A new user's ratings; ``k`` recommendations come back."""

    model_config = ConfigDict(extra="forbid")
    ratings: list[RatingIn] = Field(default_factory=list, max_length=MAX_RATINGS)
    k: int = Field(10, ge=1, strict=True, description="List length (at most the catalogue size).")
    exclude_rated: bool = Field(True, strict=True, description="Leave the rated items out of the list.")


class ItemOut(BaseModel):
    id: RawIdOut
    title: str | None
    year: int | None
    genres: list[str]
    n_ratings: int = Field(description="Ratings of the item in the training data.")


class RecommendedItem(ItemOut):
    rank: int
    score: float = Field(description="The model's ranking score (what the list is sorted by).")
    predicted_rating: float | None = Field(
        description="Predicted rating on the model's scale; null for ranking-only models.")


class SimilarItem(ItemOut):
    rank: int
    similarity: float = Field(description="Cosine similarity of the item vectors.")


class UserRecommendations(BaseModel):
    user: RawIdOut
    known: bool = Field(description="Whether the user is in the training data.")
    cold_start: bool = Field(description="True when the list is the model's cold-start list.")
    n_train_ratings: int
    k: int
    exclude_seen: bool
    predicts_ratings: bool
    model_version: str
    items: list[RecommendedItem]


class FoldInRecommendations(BaseModel):
    cold_start: bool = Field(description="True when no rated item is known to the model.")
    n_ratings_used: int
    unknown_items: list[RawIdOut] = Field(description="Items the model does not know (ignored).")
    duplicate_items: list[RawIdOut] = Field(description="Items given twice (the last rating kept).")
    k: int
    predicts_ratings: bool
    model_version: str
    items: list[RecommendedItem]


class SimilarItems(BaseModel):
    item: ItemOut
    k: int
    model_version: str
    items: list[SimilarItem]


class PredictionOut(BaseModel):
    user: RawIdOut
    item: RawIdOut
    known_user: bool
    known_item: bool
    fallback: Literal["none", "unknown_user", "unknown_item", "unknown_both"]
    score: float | None = Field(description="The model's ranking score; null for an unknown item.")
    predicted_rating: float | None = Field(description="Null for ranking-only models.")
    predicts_ratings: bool
    model_version: str
    item_info: ItemOut | None


class SearchResults(BaseModel):
    query: str | None
    total: int = Field(description="Items matching the query (before the limit).")
    model_version: str
    items: list[ItemOut]


class ModelCard(BaseModel):
    model_class: str
    model_name: str
    model_version: str
    path: str
    params: dict[str, Any]
    predicts_ratings: bool
    rating_scale: list[float]
    n_users: int
    n_items: int
    n_ratings: int | None
    dataset: str | None
    fingerprint: str | None
    metrics: dict[str, Any] | None = Field(description="Test metrics saved with the model.")
    fit_info: dict[str, Any]
    trained_with_cfrec: str | None
    cfrec_version: str
    has_titles: bool
    has_similar: bool
    loaded_at: float
    scoring: Literal["event-loop", "thread-pool"]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model_version: str


class ReloadResult(BaseModel):
    reloaded: bool
    model_version: str
    previous_version: str
    seconds: float


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    status: int
    code: str
    message: str
    field: str | None
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    error: ErrorInfo


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Malformed request body", 404: "Unknown id", 409: "Not possible with this model",
            413: "Request body too large", 422: "Invalid parameter", 503: "No model loaded yet"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


# ---------------------------------------------------------------------- the served model
@dataclass(frozen=True)
class ServedModel:
    """An immutable snapshot of one loaded, checked model version and what the API shows of it.

    Attributes
    ----------
    model
        The fitted model (only read, never changed, while it serves).
    catalog
        Its items' metadata and popularity.
    version
        Name of the version folder it was loaded from.
    card
        The ``/v1/model`` body.
    inline
        Whether its calls are fast enough to run on the event loop.
    """

    model: Recommender
    catalog: Catalog
    path: Path
    version: str
    card: dict[str, Any]
    inline: bool
    has_similar: bool
    users: IdIndex
    timings: dict[str, float] = field(default_factory=dict)
    #: raw user ids (plain ``int``/``str``) in model index order
    user_ids: list[Any] = field(default_factory=list)
    predicts_ratings: bool = False

    @property
    def n_items(self) -> int:
        return len(self.catalog)


def _version_name(path: Path, folder: Path, meta: dict[str, Any]) -> str:
    if folder != path:
        return folder.name
    return "unversioned-" + str(meta.get("weights_sha256", ""))[:12]


def _median_seconds(fn: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_served(path: str | Path, *, inline: bool | None = None) -> ServedModel:
    """Load the current version of the model folder ``path`` and check it can serve.

    The version folder named by ``CURRENT`` is read once, so the weights and the card always
    belong to the same version even if a save replaces it meanwhile. The check ranks for a
    training user and for a user folded in from the most-rated item, asks for similar items,
    and requires finite scores; it raises :class:`~cfrec.errors.ModelFileError` otherwise.
    ``inline`` forces where calls run (``None``: decided from the check's timings).
    """
    path = Path(path)
    folder, meta = read_meta(path)
    model = Recommender.load(folder)
    catalog = Catalog.from_model(model)
    n_items = len(catalog)
    if n_items == 0:
        raise ModelFileError(f"{folder}: the model has no items")
    k = min(10, n_items)
    lo, hi = model.rating_scale_
    timings: dict[str, float] = {}
    try:
        if len(model.user_map_):
            user = _plain(model.user_map_.to_raw(0))
            _require_finite(model.recommend(user, k, exclude_seen=False).scores, folder,
                            "recommendation scores")
            timings["recommend"] = _median_seconds(lambda: Service.top_for_user(model, 0, k, True))
            # text lookups too: path parameters arrive as text
            model.user_map_.to_index(np.asarray([str(user)], dtype=object), missing="-1")
        top = catalog.raw_id(int(catalog.popular(1)[0]))
        _require_finite(model.recommend(model.fold_in([top], [hi]), k).scores, folder,
                        "fold-in scores")
        timings["fold_in"] = _median_seconds(
            lambda: Service.top_for_folded(model, model.fold_in([top], [hi]), k, True))
        catalog.index_of([str(top)])
        model.predict(np.asarray([top]), np.asarray([top]))
    except CfrecError as exc:
        raise ModelFileError(f"{folder}: the model failed its serving check ({exc})") from None
    has_similar = True
    try:
        model.similar_items(top, k=min(k, max(n_items - 1, 1)))
    except CfrecError:
        has_similar = False  # e.g. popularity or a bias-only model: no item vectors
    if inline is None:
        inline = max(timings.values(), default=0.0) < INLINE_SECONDS
    fit_info = dict(meta.get("fit_info") or {})
    card = {
        "model_class": type(model).__name__,
        "model_name": str(meta.get("model_name") or type(model).name or type(model).__name__),
        "model_version": _version_name(path, folder, meta),
        "path": str(path.resolve()),
        "params": dict(meta.get("params") or {}),
        "predicts_ratings": bool(model.predicts_ratings),
        "rating_scale": [float(lo), float(hi)],
        "n_users": len(model.user_map_),
        "n_items": n_items,
        "n_ratings": _int_or_none(fit_info.get("n_ratings")),
        "dataset": _str_or_none(fit_info.get("dataset")),
        "fingerprint": _str_or_none(fit_info.get("fingerprint")),
        "metrics": fit_info.get("test") if isinstance(fit_info.get("test"), dict) else None,
        "fit_info": fit_info,
        "trained_with_cfrec": _str_or_none(meta.get("cfrec_version")),
        "cfrec_version": __version__,
        "has_titles": catalog.has_titles,
        "has_similar": has_similar,
        "loaded_at": time.time(),
        "scoring": "event-loop" if inline else "thread-pool",
    }
    card = _finite_json(card)
    logger.info("loaded %s (%s, %d users, %d items) from %s; check %s; scoring on the %s",
                card["model_version"], card["model_class"], card["n_users"], n_items, folder,
                ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in timings.items()), card["scoring"])
    users = IdIndex(model.user_map_)
    return ServedModel(model, catalog, path, card["model_version"], card, inline, has_similar,
                       users, timings, user_ids=[_plain(v) for v in model.user_map_.to_list()],
                       predicts_ratings=bool(model.predicts_ratings))


def _require_finite(values: np.ndarray, folder: Path, what: str) -> None:
    if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
        raise ModelFileError(f"{folder}: non-finite {what}; the model cannot serve")


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _finite_json(obj: Any) -> Any:
    """JSON-ready copy with non-finite floats as ``None`` (the API never sends NaN)."""
    if isinstance(obj, dict):
        return {str(k): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _finite_json(obj.item())
    return obj


class ModelHolder:
    """The model a service answers with, swapped atomically on reload.

    ``current`` is read without a lock (a reference read is atomic); :meth:`reload` is
    serialised by a lock and replaces the reference only after the new version loaded and passed
    its check.
    """

    def __init__(self, path: str | Path, *, inline: bool | None = None) -> None:
        self.path = Path(path)
        self.inline = inline
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def reload(self, *, force: bool = False) -> tuple[ServedModel, str | None, bool]:
        """Load and check the folder's current version, then swap it in.

        Returns ``(served, previous version, whether a new model was swapped in)``; when the
        folder still points at the version already serving (and ``force`` is False) nothing is
        loaded. Raises :class:`~cfrec.errors.CfrecError` when the new version cannot serve; the
        old one then stays.
        """
        with self._lock:
            old = self._current
            if old is not None and not force:
                folder, meta = read_meta(self.path)
                if _version_name(self.path, folder, meta) == old.version:
                    return old, old.version, False
            try:
                new = load_served(self.path, inline=self.inline)
            except CfrecError as exc:
                self.last_error = str(exc)
                raise
            self._current = new
            self.last_error = None
            return new, None if old is None else old.version, True


# ---------------------------------------------------------------------- ASGI middleware
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
        payload = json.dumps(_error_body(status, code, message, "body")).encode("ascii")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


_K_TEXT = re.compile(r"[1-9][0-9]{0,8}")
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}
_JSON_HEADERS = [(b"content-type", b"application/json")]
_RECOMMEND_PREFIX = "/v1/recommend/"


class FastRecommend:
    """``GET /v1/recommend/{user_id}`` and ``POST /v1/recommend`` answered without FastAPI's
    per-request machinery.

    The service's busiest calls are short (a fraction of a millisecond of scoring, a millisecond
    for a fold-in), and FastAPI's routing, parameter resolution and response classes cost about
    as much again. This layer answers the common forms of these requests itself:

    * ``GET /v1/recommend/<id>`` (no further ``/``, no ``root_path``) with a query of at most one
      ``k`` (a plain positive decimal) and one ``exclude_seen`` (``true``, ``false``, ``1`` or
      ``0``), ``k`` within the catalogue;
    * ``POST /v1/recommend`` with one ``Content-Type: application/json`` header and a body that
      parses (``json.loads``, as FastAPI does) and validates as :class:`FoldInRequest`.

    It calls the same :class:`Service` methods and sends the same JSON, headers and status, with
    a model loaded. Every other request, and any request whose call raises, goes to the FastAPI
    application unchanged (the body replayed), which then gives its usual answer, errors
    included; so the API's behaviour and its OpenAPI description stay FastAPI's.
    """

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    @staticmethod
    def _params(scope: Scope) -> tuple[str, int, bool] | None:
        """(user id, k, exclude_seen) of a request this layer answers, else None."""
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("root_path"):
            return None
        path: str = scope.get("path", "")
        if not path.startswith(_RECOMMEND_PREFIX):
            return None
        user_id = path[len(_RECOMMEND_PREFIX):]
        if not user_id or "/" in user_id:
            return None
        k, exclude_seen = 10, True
        query: bytes = scope.get("query_string", b"")
        if query:
            seen_keys: set[str] = set()
            for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if key in seen_keys:
                    return None
                seen_keys.add(key)
                if key == "k" and _K_TEXT.fullmatch(value):
                    k = int(value)
                elif key == "exclude_seen" and value in _BOOL_TEXT:
                    exclude_seen = _BOOL_TEXT[value]
                else:
                    return None
        return user_id, k, exclude_seen

    @staticmethod
    def _is_fold_in(scope: Scope) -> bool:
        if (scope["type"] != "http" or scope.get("method") != "POST" or scope.get("root_path")
                or scope.get("path") != "/v1/recommend"):
            return False
        types = [v for k, v in scope.get("headers", []) if k == b"content-type"]
        return types == [b"application/json"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if FastRecommend._is_fold_in(scope):
            await self._fold_in(scope, receive, send)
            return
        params = FastRecommend._params(scope)
        served = self.service.holder.current if params is not None else None
        if params is None or served is None or not 1 <= params[1] <= served.n_items:
            await self.app(scope, receive, send)
            return
        try:
            body = _json_bytes(await self.service.run(served, self.service.recommend_user,
                                                      served, *params))
        except Exception:  # noqa: BLE001 - FastAPI gives the error its usual answer
            await self.app(scope, receive, send)
            return
        await self._send_json(send, body)

    async def _fold_in(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        served = self.service.holder.current
        body = None
        if raw and served is not None:
            try:
                request = FoldInRequest.model_validate(json.loads(raw))
                body = _json_bytes(await self.service.run(served, self.service.recommend_new,
                                                          served, request))
            except Exception:  # noqa: BLE001 - FastAPI gives the error its usual answer
                body = None
        if body is None:
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": raw, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
            return
        await self._send_json(send, body)

    @staticmethod
    async def _send_json(send: Send, body: bytes) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode("ascii")),
                                *_JSON_HEADERS]})
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------- the application
class Service:
    """The endpoints' logic over a :class:`ModelHolder` (one per application)."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def served(self) -> ServedModel:
        served = self.holder.current
        if served is None:
            detail = f": {self.holder.last_error}" if self.holder.last_error else ""
            raise ApiError(503, "not_ready", f"no model is loaded yet{detail}")
        return served

    async def run(self, served: ServedModel, fn: Callable[..., T], *args: Any) -> T:
        """Run a model call on the event loop (fast models) or in the worker thread pool."""
        if served.inline:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def check_k(served: ServedModel, k: int, name: str = "k") -> int:
        if not 1 <= k <= served.n_items:
            raise ApiError(422, "invalid_value", f"{name} must be between 1 and {served.n_items} "
                                                 f"(the catalogue size), got {k}", name)
        return k

    @classmethod
    def rec_items(cls, served: ServedModel, ids: np.ndarray, scores: np.ndarray,
                  ratings: np.ndarray | None) -> list[dict[str, Any]]:
        idx = served.catalog.index_of(ids) if len(ids) else np.zeros(0, dtype=np.int64)
        return cls.rec_records(served, idx, scores, ratings)

    @staticmethod
    def rec_records(served: ServedModel, idx: np.ndarray, scores: np.ndarray,
                    ratings: np.ndarray | None) -> list[dict[str, Any]]:
        """Response items for model item indices, their scores and predicted ratings."""
        out = served.catalog.records(idx)
        score_list = np.asarray(scores, dtype=np.float64).tolist()
        rating_list = (np.asarray(ratings, dtype=np.float64).tolist() if ratings is not None
                       else [None] * len(out))
        for rank, (rec, s, r) in enumerate(zip(out, score_list, rating_list, strict=True), 1):
            rec["rank"] = rank
            rec["score"] = _finite(s)
            rec["predicted_rating"] = None if r is None else _finite(r)
        return out

    @staticmethod
    def top_for_user(model: Recommender, u: int, k: int,
                     exclude_seen: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``model.recommend(user, k, exclude_seen=...)`` for one known user (model index ``u``),
        as item indices, scores and predicted ratings.

        The same steps as the model's batch path (:meth:`Recommender.score_rows`, the user's
        training items set to ``-inf``, :func:`cfrec.ranking.top_k`, the predicted ratings of the
        ranked items) without its batch set-up: id lookups through pandas and a sparse matrix of
        the excluded items cost about ten times the scoring of one user.
        ``tests/serve/test_api.py`` checks both give the same lists.
        """
        rows = np.array([u], dtype=np.int64)
        scores = np.asarray(model.score_rows(rows), dtype=np.float32)
        if not (scores.flags.writeable and scores.flags.owndata):
            scores = scores.copy()  # top_k writes into it: never into a model's own arrays
        if exclude_seen:
            seen = model.seen_
            scores[0, seen.indices[seen.indptr[u]:seen.indptr[u + 1]]] = -np.inf
        idx, top = top_k(scores, k)
        ratings = model._ratings_of(rows, idx)
        n = int((idx[0] >= 0).sum())  # padded slots (fewer than k candidates) last, as in Recs
        return idx[0, :n], top[0, :n], None if ratings is None else ratings[0, :n]

    @staticmethod
    def top_for_folded(model: Recommender, folded: FoldedUser, k: int,
                       exclude_rated: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``model.recommend(folded, k, exclude_seen=...)`` as item indices, scores and predicted
        ratings: the model's own steps for a folded-in user (its fold-in scores, or the
        cold-start scores when no rated item is known; the rated items set to ``-inf``;
        :func:`cfrec.ranking.top_k`) without the sparse matrix and chunking of the batch path."""
        n_items = len(model.item_map_)
        scores = (model._score_folded(folded, np.arange(n_items)) if folded.n_ratings
                  else model._cold_user_scores())
        block = np.array(scores, dtype=np.float32)[None, :]  # a copy: top_k writes into it
        if exclude_rated and len(folded.seen):
            block[0, np.asarray(folded.seen, dtype=np.int64)] = -np.inf
        idx, top = top_k(block, k)
        n = int((idx[0] >= 0).sum())
        ratings = (model._predict_folded(folded, idx[0, :n]).ratings if model.predicts_ratings
                   else None)
        return idx[0, :n], top[0, :n], ratings

    # ------------------------------------------------------------------ endpoint bodies
    def recommend_user(self, served: ServedModel, user_id: str, k: int,
                       exclude_seen: bool) -> dict[str, Any]:
        model = served.model
        self.check_k(served, k)
        u = served.users.get(user_id)
        known = u >= 0
        if known:
            user: Any = served.user_ids[u]
            idx, scores, ratings = self.top_for_user(model, u, k, exclude_seen)
            seen = model.seen_
            n_train = int(seen.indptr[u + 1] - seen.indptr[u])
            items = self.rec_records(served, idx, scores, ratings)
        else:  # an unknown user is ranked as one: the model's cold-start list
            user = user_id
            recs = model.recommend(user, k, exclude_seen=exclude_seen)
            n_train = 0
            items = self.rec_items(served, recs.ids, recs.scores, recs.ratings)
        return {"user": user, "known": known, "cold_start": not known, "n_train_ratings": n_train,
                "k": k, "exclude_seen": exclude_seen,
                "predicts_ratings": served.predicts_ratings, "model_version": served.version,
                "items": items}

    def recommend_new(self, served: ServedModel, body: FoldInRequest) -> dict[str, Any]:
        model = served.model
        self.check_k(served, body.k)
        lo, hi = model.rating_scale_
        for j, entry in enumerate(body.ratings):
            if not lo <= entry.rating <= hi:
                name = f"ratings[{j}].rating"
                raise ApiError(422, "rating_off_scale", f"{name}: {entry.rating:g} is outside the "
                                                        f"model's rating scale {lo:g}..{hi:g}", name)
        given = [e.item for e in body.ratings]
        idx = served.catalog.index_of(given) if given else np.zeros(0, dtype=np.int64)
        # known items as the model spells them (one typed array: the vocabulary's fast path);
        # unknown ones as given, for the model to report
        items = [served.catalog.raw_id(i) if i >= 0 else g
                 for i, g in zip(idx.tolist(), given, strict=True)]
        ratings = [e.rating for e in body.ratings]
        folded: FoldedUser = model.fold_in(_id_array(items), np.asarray(ratings, dtype=np.float64))
        idx, scores, predicted = self.top_for_folded(model, folded, body.k, body.exclude_rated)
        return {"cold_start": folded.n_ratings == 0, "n_ratings_used": int(folded.n_ratings),
                "unknown_items": [_plain(v) for v in folded.unknown_items],
                "duplicate_items": [_plain(v) for v in folded.duplicate_items],
                "k": body.k, "predicts_ratings": bool(model.predicts_ratings),
                "model_version": served.version,
                "items": self.rec_records(served, idx, scores, predicted)}

    def similar(self, served: ServedModel, item_id: str, k: int) -> dict[str, Any]:
        self.check_k(served, k)
        i = int(served.catalog.index_of(item_id)[0])
        if i < 0:
            raise ApiError(404, "unknown_item", f"unknown item id {item_id!r}", "item_id")
        if not served.has_similar:
            raise ApiError(409, "not_supported", f"{type(served.model).__name__} has no item vectors "
                                                 "to compare; similar items need a factor model",
                           "item_id")
        recs = served.model.similar_items(served.catalog.item_map.to_raw(np.asarray([i])), k)[0]
        idx = served.catalog.index_of(recs.ids) if len(recs) else np.zeros(0, dtype=np.int64)
        out = served.catalog.records(idx)
        for rank, (rec, s) in enumerate(zip(out, np.asarray(recs.scores, np.float64).tolist(),
                                            strict=True), 1):
            rec["rank"] = rank
            rec["similarity"] = _finite(s)
        return {"item": served.catalog.record(i), "k": k, "model_version": served.version,
                "items": out}

    def predict(self, served: ServedModel, user_id: str, item_id: str) -> dict[str, Any]:
        model = served.model
        u = served.users.get(user_id)
        i = int(served.catalog.index_of(item_id)[0])
        user: Any = _plain(model.user_map_.to_raw(u)) if u >= 0 else user_id
        item: Any = served.catalog.raw_id(i) if i >= 0 else item_id
        fallback = ("none" if u >= 0 and i >= 0 else "unknown_user" if i >= 0
                    else "unknown_item" if u >= 0 else "unknown_both")
        score = None
        if i >= 0:
            score = _finite(float(model.score_rows(np.asarray([u], dtype=np.int64))[0, i]))
        rating = None
        if model.predicts_ratings:
            u_raw = model.user_map_.to_raw(np.asarray([u])) if u >= 0 else np.asarray([user_id], dtype=object)
            i_raw = (served.catalog.item_map.to_raw(np.asarray([i])) if i >= 0
                     else np.asarray([item_id], dtype=object))
            rating = _finite(float(model.predict(u_raw, i_raw)[0]))
        return {"user": user, "item": item, "known_user": u >= 0, "known_item": i >= 0,
                "fallback": fallback, "score": score, "predicted_rating": rating,
                "predicts_ratings": bool(model.predicts_ratings), "model_version": served.version,
                "item_info": served.catalog.record(i) if i >= 0 else None}

    def items(self, served: ServedModel, q: str | None, limit: int) -> dict[str, Any]:
        catalog = served.catalog
        if q is None or not q.strip():
            idx = catalog.popular(limit)
            total = len(catalog)
        else:
            hits = catalog.search(q, limit=None)
            idx, total = hits[:limit], len(hits)
        return {"query": q, "total": int(total), "model_version": served.version,
                "items": catalog.records(idx)}


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    return str(v) if isinstance(v, np.str_) else v


def _id_array(items: list[Any]) -> np.ndarray:
    """Raw ids as one array: int64 when all are integers, str objects when all are strings,
    else an object array (ints and strings as they came)."""
    if items and all(isinstance(v, int) for v in items):
        return np.asarray(items, dtype=np.int64)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def create_app(model_dir: str | Path, *, preload: bool = True, handle_sighup: bool = False,
               inline: bool | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               fast_paths: bool = True) -> FastAPI:
    """The FastAPI application serving the model folder ``model_dir``.

    Parameters
    ----------
    model_dir
        A folder written by ``cfrec train`` / :meth:`Recommender.save`; its current version is
        served and can be reloaded while serving (``POST /v1/admin/reload``).
    preload
        Load and check the model now, so a bad folder raises
        :class:`~cfrec.errors.CfrecError` here. With ``False`` the model is loaded in the
        background when the application starts: ``/healthz`` answers at once and ``/readyz``
        says 503 until the model is ready.
    handle_sighup
        Reload on ``SIGHUP`` (what ``cfrec serve`` does). Needs the event loop to run in the main
        thread; leave it off when embedding.
    inline
        Force model calls onto the event loop (True) or the thread pool (False); ``None``
        decides per model from the load check's timings (see :data:`INLINE_SECONDS`).
    max_body_bytes
        Largest request body accepted; larger ones get 413.
    fast_paths
        Answer the common form of ``GET /v1/recommend/{user_id}`` without FastAPI's request
        machinery (see :class:`FastRecommend`; the answers are the same). ``False`` sends every
        request through FastAPI.
    """
    path = Path(model_dir)
    holder = ModelHolder(path, inline=inline)
    if preload:
        holder.reload()
    else:
        read_meta(path)  # fail now on a folder that is not a model at all
    service = Service(holder)
    background: set[asyncio.Task[Any]] = set()

    async def reload_now(source: str, force: bool = False) -> tuple[ServedModel, str | None, bool]:
        start = time.perf_counter()
        served, previous, changed = await anyio.to_thread.run_sync(
            lambda: holder.reload(force=force))
        if changed:
            logger.info("%s: now serving %s (was %s), loaded in %.2f s", source, served.version,
                        previous, time.perf_counter() - start)
        return served, previous, changed

    async def reload_in_background(source: str) -> None:
        try:
            await reload_now(source)
        except CfrecError as exc:
            still = holder.current.version if holder.current else "nothing"
            logger.error("%s: reload failed, still serving %s: %s", source, still, exc)

    def spawn(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if not preload:
            spawn(reload_in_background("startup"))
        sighup = False
        if handle_sighup and hasattr(signal, "SIGHUP"):
            try:
                loop.add_signal_handler(signal.SIGHUP, lambda: spawn(reload_in_background("SIGHUP")))
                sighup = True
            except (RuntimeError, ValueError, NotImplementedError):  # not the main thread
                logger.warning("SIGHUP reload unavailable (the event loop is not in the main thread)")
        try:
            yield
        finally:
            if sighup:
                loop.remove_signal_handler(signal.SIGHUP)
            for task in list(background):
                task.cancel()
            logger.info("service stopped")

    app = FastAPI(
        title="cfrec",
        version=__version__,
        summary="Recommendations from a cfrec model folder: top-k lists, new users folded in "
                "from a few ratings, similar items, title search.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.holder = holder
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        return _validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_error_body(exc.status_code, code, str(exc.detail)),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(UnknownIdError)
    async def _unknown(_request: Request, exc: UnknownIdError) -> Response:
        return JSONResponse(_error_body(404, "unknown_id", str(exc)), status_code=404)

    @app.exception_handler(CfrecError)
    async def _cfrec_error(_request: Request, exc: CfrecError) -> Response:
        return JSONResponse(_error_body(422, "invalid_value", str(exc)), status_code=422)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> Response:
        logger.error("internal error", exc_info=exc)
        return JSONResponse(_error_body(500, "internal", "internal server error"), status_code=500)

    # -------------------------------------------------------------- health
    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", response_model=Ready, tags=["health"], summary="Readiness: a model is loaded",
             responses=_errors(503))
    async def readyz() -> Response:
        served = service.served()
        return JSONResponse({"status": "ready", "model_version": served.version})

    # -------------------------------------------------------------- API
    @app.get("/v1/model", response_model=ModelCard, tags=["model"], summary="Model card",
             responses=_errors(503))
    async def model_card() -> Response:
        return JSONResponse(service.served().card)

    @app.get("/v1/recommend/{user_id}", response_model=UserRecommendations, tags=["recommend"],
             summary="Top-k items for a user (an unknown user gets the cold-start list)",
             responses=_errors(422, 503))
    async def recommend_user(user_id: str, k: K = 10, exclude_seen: bool = True) -> Response:
        served = service.served()
        return JSONResponse(await service.run(served, service.recommend_user, served, user_id, k,
                                              exclude_seen))

    @app.post("/v1/recommend", response_model=FoldInRecommendations, tags=["recommend"],
              summary="Top-k items for a new user given a few ratings (folded in, no retraining)",
              responses=_errors(400, 413, 422, 503))
    async def recommend_new(body: FoldInRequest) -> Response:
        served = service.served()
        return JSONResponse(await service.run(served, service.recommend_new, served, body))

    @app.get("/v1/similar/{item_id}", response_model=SimilarItems, tags=["items"],
             summary="Items closest to an item by cosine similarity of the model's item vectors",
             responses=_errors(404, 409, 422, 503))
    async def similar(item_id: str, k: K = 10) -> Response:
        served = service.served()
        return JSONResponse(await service.run(served, service.similar, served, item_id, k))

    @app.get("/v1/predict", response_model=PredictionOut, tags=["recommend"],
             summary="Score (and predicted rating) of one user-item pair",
             responses=_errors(422, 503))
    async def predict(user: Annotated[str, Query(min_length=1, max_length=256)],
                      item: Annotated[str, Query(min_length=1, max_length=256)]) -> Response:
        served = service.served()
        return JSONResponse(await service.run(served, service.predict, served, user, item))

    @app.get("/v1/items", response_model=SearchResults, tags=["items"],
             summary="Title search, most-rated first (no query: the most-rated items)",
             responses=_errors(422, 503))
    async def items(q: Annotated[str | None, Query(max_length=200)] = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH)] = 20) -> Response:
        served = service.served()
        return JSONResponse(await service.run(served, service.items, served, q, limit))

    @app.post("/v1/admin/reload", response_model=ReloadResult, tags=["admin"],
              summary="Load the model folder's current version and swap it in (the old model "
                      "serves until the new one is loaded and checked)",
              responses=_errors(409, 422))
    async def reload(force: bool = False) -> Response:
        start = time.perf_counter()
        previous = holder.current.version if holder.current else ""
        try:
            served, _, changed = await reload_now("admin reload", force=force)
        except CfrecError as exc:
            still = holder.current.version if holder.current else "nothing"
            raise ApiError(409, "reload_failed", f"{exc}; still serving {still}") from None
        return JSONResponse({"reloaded": changed, "model_version": served.version,
                             "previous_version": previous,
                             "seconds": time.perf_counter() - start})

    # -------------------------------------------------------------- the page
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP,
                                     "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if fast_paths:
        app.add_middleware(FastRecommend, service=service)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(AccessLog)
    return app
