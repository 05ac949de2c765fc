"""The hot endpoints' own parameter reading answers as FastAPI's declared parameters would."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient

from cfrec.serve.errors import add_error_handlers
from cfrec.serve.params import (
    add_components,
    json_body,
    parse_json_body,
    parse_query,
    query_parameters,
)
from cfrec.serve.schemas import FoldInRequest, RecommendQuery


@pytest.fixture(scope="module")
def pair() -> TestClient:
    """One app with a declared-parameter route and a request-reading route per case."""
    app = FastAPI()
    add_error_handlers(app)

    @app.get("/declared")
    async def declared(k: Annotated[int, Query(ge=1)] = 10, exclude_seen: bool = True) -> dict:
        return {"k": k, "exclude_seen": exclude_seen}

    @app.get("/read")
    async def read(request: Request) -> dict:
        q = parse_query(request, RecommendQuery)
        return {"k": q.k, "exclude_seen": q.exclude_seen}

    @app.post("/declared")
    async def declared_body(body: FoldInRequest) -> dict:
        return body.model_dump()

    @app.post("/read")
    async def read_body(request: Request) -> dict:
        return (await parse_json_body(request, FoldInRequest)).model_dump()

    return TestClient(app)


@pytest.mark.parametrize("query", ["", "k=3", "k=3&exclude_seen=false", "exclude_seen=1", "k=0",
                                   "k=abc", "k=", "k=2.5", "exclude_seen=maybe", "k=1&k=7",
                                   "other=1", "k=-4&exclude_seen=no"])
def test_query_answers_match_declared(pair: TestClient, query: str) -> None:
    a, b = pair.get(f"/declared?{query}"), pair.get(f"/read?{query}")
    assert (a.status_code, a.json()) == (b.status_code, b.json())


@pytest.mark.parametrize("raw,ctype", [
    (b'{"ratings": [{"item": 1, "rating": 4}], "k": 3}', "application/json"),
    (b'{"ratings": [{"item": 1, "rating": "x"}]}', "application/json"),
    (b'{"k": true}', "application/json"),
    (b'{"k": 2, "extra": 1}', "application/json"),
    (b'{"ratings": [', "application/json"),
    (b"[1, 2]", "application/json"),
    (b"NaN", "application/json"),
    (b"", "application/json"),
    (b'{"k": 2}', "text/plain"),
    (b'{"k": 2}', "application/vnd.api+json"),
])
def test_body_answers_match_declared(pair: TestClient, raw: bytes, ctype: str) -> None:
    a = pair.post("/declared", content=raw, headers={"content-type": ctype})
    b = pair.post("/read", content=raw, headers={"content-type": ctype})
    assert (a.status_code, a.json()) == (b.status_code, b.json())


def test_openapi_description_of_the_models() -> None:
    params = {p["name"]: p for p in query_parameters(RecommendQuery)}
    assert params["k"]["schema"]["minimum"] == 1 and params["k"]["schema"]["default"] == 10
    assert params["exclude_seen"]["schema"]["type"] == "boolean"
    assert not params["k"]["required"] and params["k"]["in"] == "query"
    doc = add_components({}, FoldInRequest)
    assert {"FoldInRequest", "RatingIn"} <= set(doc["components"]["schemas"])
    assert json_body(FoldInRequest)["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/FoldInRequest")
