"""``POST /v1/items``: add a new item to a model that builds items from features, without a restart.

The served snapshot is never changed: a copy of its model takes the item
(:meth:`~cfrec.models.base.Recommender.fold_in_item`), is saved to the model folder as a new
version (so the item survives a reload or a restart), and the folder is reloaded, which swaps the
new version in as any reload does. Additions are serialised; a model that cannot take new items
answers 409.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import anyio.to_thread
import pandas as pd
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cfrec.errors import CfrecError
from cfrec.models.base import Recommender
from cfrec.serve.errors import ApiError, JSONResponse
from cfrec.serve.routes import Reloader, Service
from cfrec.serve.schemas import error_responses


class NewItem(BaseModel):
    """A new item: its id, its features and optionally a title and users who rated it."""

    model_config = ConfigDict(extra="forbid")

    item_id: int | str = Field(description="Raw id of the new item (an integer for a model with integer ids).")
    features: dict[str, float] | list[str] = Field(
        default_factory=list, description='Feature names (value 1) or {name: value}, e.g. ["genre=Comedy"].')
    title: str | None = Field(default=None, max_length=500, description="Title shown in lists.")
    users: list[int | str] | None = Field(default=None, max_length=10_000,
                                          description="Known users who rated the item (optional).")
    ratings: list[float] | None = Field(default=None, max_length=10_000,
                                        description="Their ratings, one per user (optional).")


class NewItemResult(BaseModel):
    item_id: int | str
    model_version: str
    n_items: int


def _raw_id(model: Recommender, value: int | str, field: str) -> Any:
    if model.item_map_.is_numeric:
        # canonical integer text only, as every id of the service is matched ("+1", " 1", "1e0" are not ids)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"0|-?[1-9][0-9]{0,18}", value):
            return int(value)
        raise ApiError(422, "invalid_parameter", f"{field} must be an integer (canonical, as the model's ids "
                       "are written) for this model", field)
    return str(value)


def _with_item(model: Recommender, body: NewItem) -> Recommender:
    """A copy of ``model`` with the new item (the served model is never changed)."""
    copy = type(model).from_state(*model.to_state())
    item = _raw_id(model, body.item_id, "item_id")
    if body.ratings is not None and (body.users is None or len(body.users) != len(body.ratings)):
        raise ApiError(422, "invalid_parameter", "ratings need users, one rating per user", "ratings")
    try:
        copy.fold_in_item(item, body.features, users=body.users, ratings=body.ratings)
    except CfrecError as exc:
        raise ApiError(409, "not_possible", str(exc)) from None
    info = copy.item_info_
    genres = [str(f).split("=", 1)[1] for f in body.features if str(f).startswith("genre=")]
    row = pd.DataFrame({"title": [body.title or f"Item {item}"], "genres": [genres]},
                       index=pd.Index([item], name="item_id"))
    if info is not None:
        rest = info.drop(index=[item], errors="ignore")
        info = pd.concat([rest, row[[c for c in row.columns if c in info.columns]]])
        copy.item_info_ = info.reindex(copy.item_map_.ids)
    elif body.title is not None or genres:
        copy.item_info_ = row.reindex(copy.item_map_.ids)
    return copy


def add_item_routes(app: FastAPI, service: Service, reload_now: Reloader) -> None:
    """``POST /v1/items`` on ``app`` (see the module notes)."""
    lock = asyncio.Lock()

    @app.post("/v1/items", response_model=NewItemResult, status_code=201, tags=["items"],
              summary="Add a new item from its features (admin token); it is recommended at once, no restart",
              responses=error_responses(400, 401, 403, 409, 413, 422, 503))
    async def add_item(body: NewItem) -> Response:
        async with lock:  # one addition at a time: each builds on the version the last one saved
            served = service.served()
            if not served.model.takes_new_items:
                raise ApiError(409, "not_possible", f"{type(served.model).__name__} cannot take new items; "
                                                    "serve a model that builds items from features (hybrid)")
            model = served.model

            def save() -> None:
                _with_item(model, body).save(service.holder.path)

            await anyio.to_thread.run_sync(save)
            now, _previous, _changed = await reload_now("new item", True)
        return JSONResponse({"item_id": body.item_id, "model_version": now.version,
                             "n_items": len(now.model.item_map_)}, status_code=201)
