"""The JSON API's endpoints: each one reads the current model snapshot once, calls the library's
one-user verbs (``recommend``, ``fold_in``, ``similar_items``, ``predict``, ``score``) and turns
their raw ids into response bodies with the catalogue's item records."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from cfrec.data.idmap import IdMap
from cfrec.errors import CfrecError
from cfrec.serve.errors import ApiError, JSONResponse, json_bytes
from cfrec.serve.middleware import MAX_BODY_BYTES
from cfrec.serve.params import (
    add_components,
    json_body,
    parse_query,
    path_parameter,
    query_parameters,
    validate_json_body,
)
from cfrec.serve.pool import INLINE_MAX_BODY, INLINE_MAX_K, BoundedPool
from cfrec.serve.schemas import (
    MAX_FEATURES,
    MAX_RATINGS,
    FoldInRecommendations,
    FoldInRequest,
    Health,
    ListQuery,
    ModelCard,
    PredictionOut,
    PredictQuery,
    Ready,
    RecommendQuery,
    ReloadResult,
    SearchResults,
    SimilarItems,
    UserRecommendations,
    error_responses,
)
from cfrec.serve.snapshot import ModelHolder, ServedModel

#: Most results of one title search.
MAX_SEARCH = 200

T = TypeVar("T")
#: Reloads the model folder: ``(source, force) -> (served, previous version, changed)``.
Reloader = Callable[[str, bool], Awaitable[tuple[ServedModel, str | None, bool]]]


class Service:
    """The endpoints' logic over a :class:`~cfrec.serve.snapshot.ModelHolder` (one per
    application)."""

    def __init__(self, holder: ModelHolder, pool: BoundedPool | None = None) -> None:
        self.holder = holder
        self.pool = pool if pool is not None else BoundedPool()

    def served(self) -> ServedModel:
        served = self.holder.current
        if served is None:
            detail = f": {self.holder.last_error}" if self.holder.last_error else ""
            raise ApiError(503, "not_ready", f"no model is loaded yet{detail}")
        return served

    async def run(self, served: ServedModel, small: bool, fn: Callable[..., T], *args: Any) -> T:
        """Run a call on the event loop when the request is small (by its own size) and the
        model fast, else in the bounded pool (429 when it is full)."""
        if small and served.inline:
            return fn(*args)
        return await self.pool.run(fn, *args)

    @staticmethod
    def ranked(served: ServedModel, ids: np.ndarray, scores: np.ndarray,
               ratings: np.ndarray | None) -> list[dict[str, Any]]:
        """Response items of a ranked list: item records with rank, score and predicted rating."""
        out = served.catalog.records_of(ids)
        rating_list = [None] * len(out) if ratings is None else ratings.tolist()
        for rank, (rec, s, r) in enumerate(zip(out, scores.tolist(), rating_list, strict=True), 1):
            rec["rank"] = rank
            rec["score"] = _finite(s)
            rec["predicted_rating"] = None if r is None else _finite(r)
        return out

    # ------------------------------------------------------------------ endpoint bodies
    def recommend_user(self, served: ServedModel, user_id: str, k: int,
                       exclude_seen: bool) -> dict[str, Any]:
        model = served.model
        u = model.user_map_.index_of(user_id)
        # a known user as the model spells the id; an unknown one gets the cold-start list
        user = model.user_map_.raw_id(u) if u >= 0 else user_id
        n_train = int(model.seen_.indptr[u + 1] - model.seen_.indptr[u]) if u >= 0 else 0
        recs = model.recommend(user, k, exclude_seen=exclude_seen)
        return {"user": user, "known": u >= 0, "cold_start": u < 0, "n_train_ratings": n_train,
                "k": k, "exclude_seen": exclude_seen,
                "predicts_ratings": model.predicts_ratings, "model_version": served.version,
                "items": self.ranked(served, recs.ids, recs.scores, recs.ratings)}

    def recommend_new_raw(self, served: ServedModel, raw: bytes,
                          content_type: str | None) -> dict[str, Any]:
        """:meth:`recommend_new` from the request body's bytes (validated here, so a large body
        is parsed off the event loop too)."""
        return self.recommend_new(served, validate_json_body(raw, content_type, FoldInRequest))

    def recommend_new(self, served: ServedModel, body: FoldInRequest) -> dict[str, Any]:
        model = served.model
        if body.items and body.ratings:
            raise ApiError(422, "invalid_value", "give either ratings or items (liked, no ratings), not "
                                                 "both", "items")
        if body.items and model.predicts_ratings:
            raise ApiError(422, "ratings_needed", f"{model.name} folds a new user in from ratings: send "
                                                  "ratings [{item, rating}]; items alone work with ranking "
                                                  "models", "items")
        lo, hi = model.rating_scale_
        for j, entry in enumerate(body.ratings):
            if not lo <= entry.rating <= hi:
                name = f"ratings[{j}].rating"
                raise ApiError(422, "rating_off_scale", f"{name}: {entry.rating:g} is outside the "
                                                        f"model's rating scale {lo:g}..{hi:g}", name)
        extra: dict[str, Any] = {}
        if body.features:  # an empty object or list is no features
            if not model.takes_user_features:
                raise ApiError(422, "features_not_supported", f"features: {model.name} does not place a new "
                                                              "user from side features; send ratings or items, "
                                                              "or serve a model fitted with user features (bfm, "
                                                              "hybrid with use_user_features)", "features")
            extra["features"] = body.features
        given = body.items if body.items else [e.item for e in body.ratings]
        ratings = None if body.items else np.fromiter(
            (e.rating for e in body.ratings), dtype=np.float64, count=len(body.ratings))
        folded = model.fold_in(_as_model_ids(model.item_map_, given), ratings, **extra)
        recs = model.recommend(folded, body.k, exclude_seen=body.exclude_rated)
        state = folded.state if isinstance(folded.state, dict) else {}
        from_features = bool(extra) and bool(state.get("features"))
        return {"cold_start": folded.n_ratings == 0 and not from_features,
                "n_ratings_used": int(folded.n_ratings),
                "unknown_items": list(folded.unknown_items),
                "duplicate_items": list(folded.duplicate_items),
                "from_features": from_features,
                "unknown_features": [str(f) for f in state.get("unknown_features", ())] if extra else [],
                "k": body.k, "predicts_ratings": model.predicts_ratings,
                "model_version": served.version,
                "items": self.ranked(served, recs.ids, recs.scores, recs.ratings)}

    def similar(self, served: ServedModel, item_id: str, k: int) -> dict[str, Any]:
        i = served.model.item_map_.index_of(item_id)
        if i < 0:
            raise ApiError(404, "unknown_item", f"unknown item id {item_id!r}", "item_id")
        if not served.has_similar:
            raise ApiError(409, "not_supported", f"{type(served.model).__name__} has no item vectors "
                                                 "to compare; similar items need a factor model",
                           "item_id")
        recs = served.model.similar_items(served.catalog.raw_id(i), k)
        out = served.catalog.records_of(recs.ids)
        for rank, (rec, s) in enumerate(zip(out, recs.scores.tolist(), strict=True), 1):
            rec["rank"] = rank
            rec["similarity"] = _finite(s)
        return {"item": served.catalog.record(i), "k": k, "model_version": served.version,
                "items": out}

    def predict(self, served: ServedModel, user_id: str, item_id: str) -> dict[str, Any]:
        model = served.model
        u = model.user_map_.index_of(user_id)
        i = model.item_map_.index_of(item_id)
        user = model.user_map_.raw_id(u) if u >= 0 else user_id
        item = served.catalog.raw_id(i) if i >= 0 else item_id
        fallback = ("none" if u >= 0 and i >= 0 else "unknown_user" if i >= 0
                    else "unknown_item" if u >= 0 else "unknown_both")
        score = _finite(float(model.score(user, item)[0])) if i >= 0 else None
        rating = _finite(float(model.predict(user, item)[0])) if model.predicts_ratings else None
        return {"user": user, "item": item, "known_user": u >= 0, "known_item": i >= 0,
                "fallback": fallback, "score": score, "predicted_rating": rating,
                "predicts_ratings": model.predicts_ratings, "model_version": served.version,
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


def _as_model_ids(vocab: IdMap, given: list[Any]) -> np.ndarray:
    """Raw ids of a request as one array, known ones as the model spells them (``"50"`` is
    item 50 of an integer vocabulary, ``50`` item ``"50"`` of a string one) and unknown ones as
    given (the model reports them), in one vectorised lookup."""
    ids = _id_array(given)
    if ids.dtype.kind == "i" and vocab.is_numeric:
        return ids  # already the vocabulary's own spelling
    idx = vocab.to_index(ids, missing="-1")
    known = np.flatnonzero(idx >= 0)
    if len(known):
        if ids.dtype.kind == "i":
            ids = ids.astype(object)
        ids[known] = vocab.ids[idx[known]].tolist()
    return ids


def _id_array(items: list[Any]) -> np.ndarray:
    """Raw ids as one array: int64 when all are integers, else an object array of the ids as
    they came (numpy's fixed-width strings would drop trailing NUL characters)."""
    if items and all(isinstance(v, int) for v in items):
        return np.asarray(items, dtype=np.int64)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def json_response(content: Any) -> Response:
    """A 200 JSON answer encoded once (:func:`~cfrec.serve.errors.json_bytes`)."""
    return Response(json_bytes(content), media_type="application/json")


def add_routes(app: FastAPI, service: Service, reload_now: Reloader,
               max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """The API's routes on ``app``, answering from ``service``; ``reload_now`` serves the admin
    reload."""
    holder = service.holder

    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", response_model=Ready, tags=["health"], summary="Readiness: a model is loaded",
             responses=error_responses(503))
    async def readyz() -> Response:
        served = service.served()
        return JSONResponse({"status": "ready", "model_version": served.version})

    @app.get("/v1/model", response_model=ModelCard, tags=["model"], summary="Model card",
             responses=error_responses(503))
    async def model_card() -> Response:
        return JSONResponse(service.served().card)

    # The busiest endpoints read their parameters themselves (see cfrec.serve.params): the same
    # validation and error bodies, described in the OpenAPI document from the same models.
    @app.get("/v1/recommend/{user_id}", response_model=UserRecommendations, tags=["recommend"],
             summary="Top-k items for a user (an unknown user gets the cold-start list)",
             responses=error_responses(422, 429, 503),
             openapi_extra={"parameters": [path_parameter("user_id", "Raw user id."),
                                           *query_parameters(RecommendQuery)]})
    async def recommend_user(request: Request) -> Response:
        served = service.served()
        q = parse_query(request, RecommendQuery)
        return json_response(await service.run(served, q.k <= INLINE_MAX_K, service.recommend_user,
                                               served, request.path_params["user_id"], q.k,
                                               q.exclude_seen))

    @app.post("/v1/recommend", response_model=FoldInRecommendations, tags=["recommend"],
              summary="Top-k items for a new user given a few ratings and/or side features (folded in, "
                      "no retraining)",
              responses=error_responses(400, 413, 422, 429, 503),
              openapi_extra={"requestBody": json_body(
                  FoldInRequest, f"At most {max_body_bytes} bytes (413 beyond) and "
                                 f"{MAX_RATINGS} ratings or items and {MAX_FEATURES} features; "
                                 "ratings on the served model's scale (`rating_scale` of /v1/model).")})
    async def recommend_new(request: Request) -> Response:
        raw = await request.body()
        served = service.served()
        return json_response(await service.run(served, len(raw) <= INLINE_MAX_BODY,
                                               service.recommend_new_raw, served, raw,
                                               request.headers.get("content-type")))

    @app.get("/v1/similar/{item_id}", response_model=SimilarItems, tags=["items"],
             summary="Items closest to an item by cosine similarity of the model's item vectors",
             responses=error_responses(404, 409, 422, 429, 503),
             openapi_extra={"parameters": [path_parameter("item_id", "Raw item id."),
                                           *query_parameters(ListQuery)]})
    async def similar(request: Request) -> Response:
        served = service.served()
        q = parse_query(request, ListQuery)
        return json_response(await service.run(served, q.k <= INLINE_MAX_K, service.similar,
                                               served, request.path_params["item_id"], q.k))

    @app.get("/v1/predict", response_model=PredictionOut, tags=["recommend"],
             summary="Score (and predicted rating) of one user-item pair",
             responses=error_responses(422, 503),
             openapi_extra={"parameters": query_parameters(PredictQuery)})
    async def predict(request: Request) -> Response:
        served = service.served()
        q = parse_query(request, PredictQuery)
        return json_response(await service.run(served, True, service.predict, served, q.user,
                                               q.item))

    @app.get("/v1/items", response_model=SearchResults, tags=["items"],
             summary="Title search, most-rated first (no query: the most-rated items)",
             responses=error_responses(422, 503))
    async def items(q: Annotated[str | None, Query(max_length=200)] = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH)] = 20) -> Response:
        served = service.served()
        return JSONResponse(await service.run(served, True, service.items, served, q, limit))

    @app.post("/v1/admin/reload", response_model=ReloadResult, tags=["admin"],
              summary="Load the model folder's current version and swap it in (the old model "
                      "serves until the new one is loaded and checked)",
              responses=error_responses(401, 403, 409, 422))
    async def reload(force: bool = False) -> Response:
        start = time.perf_counter()
        previous = holder.current.version if holder.current else ""
        try:
            served, _, changed = await reload_now("admin reload", force)
        except CfrecError as exc:  # the holder turns any loading failure into ModelFileError
            still = holder.current.version if holder.current else "nothing"
            raise ApiError(409, "reload_failed", f"{exc}; still serving {still}",
                           "model folder") from None
        return JSONResponse({"reloaded": changed, "model_version": served.version,
                             "previous_version": previous,
                             "seconds": time.perf_counter() - start})

    schema = app.openapi

    def openapi() -> dict[str, Any]:  # the request body model the routes read themselves
        if app.openapi_schema is None:
            app.openapi_schema = add_components(schema(), FoldInRequest)
        served = holder.current
        rating = app.openapi_schema["components"]["schemas"]["RatingIn"]["properties"]["rating"]
        if served is not None:  # the served version's scale (a reload may change it)
            lo, hi = served.model.rating_scale_
            rating["minimum"], rating["maximum"] = float(lo), float(hi)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
