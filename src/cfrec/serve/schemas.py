"""Request and response bodies of the JSON API (pydantic models: validation and the OpenAPI
description)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from cfrec.limits import MAX_FOLD_IN, MAX_K

#: Most ratings one fold-in request may carry.
MAX_RATINGS = MAX_FOLD_IN
#: What the API says of ``k`` (the CLI's ``-k`` has the same range).
K_DESCRIPTION = (f"List length, 1 to {MAX_K}; a list is never longer than the catalogue "
                 "(a larger k gives every item).")
_INT64 = (-(2**63), 2**63 - 1)


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


#: Most side features one new user may be given, the longest feature name and the largest
#: feature value (in size): features are indicators or small numbers (an age, a year).
MAX_FEATURES = 1_000
MAX_FEATURE_NAME = 256
MAX_FEATURE_VALUE = 1e6


def _feature_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_FEATURE_NAME:
        raise ValueError(f"{where} must be a feature name, a string of 1 to {MAX_FEATURE_NAME} characters, "
                         f"got {_shown(name)}")
    return name


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _features(value: Any) -> dict[str, float] | list[str] | None:
    """A new user's side features: ``{name: number}`` or a list of distinct names (value 1),
    bounded in count, name length and value (a request never builds a large row)."""
    if value is None:
        return None
    if not isinstance(value, dict | list):
        raise ValueError("must be an object {feature name: number} or a list of feature names, got "
                         f"{type(value).__name__}")
    if len(value) > MAX_FEATURES:
        raise ValueError(f"at most {MAX_FEATURES} features, got {len(value)}")
    if isinstance(value, list):
        seen: set[str] = set()
        for j, name in enumerate(value):
            if _feature_name(name, f"entry {j}") in seen:
                raise ValueError(f"entry {j}: feature {name!r} is given twice")
            seen.add(name)
        return list(value)
    out: dict[str, float] = {}
    for name, v in value.items():
        _feature_name(name, "a key")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"the value of {_shown(name)} must be a number, got {_shown(v)}")
        number = float(v) if isinstance(v, float) or abs(v) <= MAX_FEATURE_VALUE else math.inf
        if not abs(number) <= MAX_FEATURE_VALUE:
            raise ValueError(f"the value of {_shown(name)} must be a finite number of size at most "
                             f"{MAX_FEATURE_VALUE:g}, got {_shown(v)}")
        out[name] = number
    return out


RawIdIn = Annotated[int | str, PlainValidator(_raw_id), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": _INT64[0], "maximum": _INT64[1]},
              {"type": "string", "minLength": 1, "maxLength": 256}],
    "description": "A raw item id as the model knows it (integer or string).",
})]
RatingValue = Annotated[float, PlainValidator(_rating), WithJsonSchema({
    "type": "number", "description": "A rating on the model's scale (`rating_scale` of /v1/model; "
                                     "the served model's bounds are given as minimum/maximum)."})]
_NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_FEATURE_NAME}
FeaturesIn = Annotated[dict[str, float] | list[str] | None, PlainValidator(_features), WithJsonSchema({
    "anyOf": [{"type": "object", "maxProperties": MAX_FEATURES, "propertyNames": _NAME_SCHEMA,
               "additionalProperties": {"type": "number", "minimum": -MAX_FEATURE_VALUE,
                                        "maximum": MAX_FEATURE_VALUE}},
              {"type": "array", "maxItems": MAX_FEATURES, "uniqueItems": True, "items": _NAME_SCHEMA},
              {"type": "null"}],
    "description": ("The new user's side features, as the model's user features name them "
                    '(`{"age=25-34": 1, "gender=F": 1}` or `["age=25-34", "gender=F"]`, value 1), '
                    "for models fitted with user features (`bfm`, `hybrid` with `use_user_features`; "
                    "others answer 422). Names the model does not know are ignored and listed in "
                    "`unknown_features`."),
})]
RawIdOut = Annotated[int | str, Field(description="A raw id as the model knows it.")]
K = Annotated[int, Query(ge=1, le=MAX_K, description=K_DESCRIPTION)]


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: RawIdIn
    rating: RatingValue


class FoldInRequest(BaseModel):
    """A new user's ratings, or for a ranking model the items they liked (``items``, no stars),
    and/or their side features; ``k`` recommendations come back."""

    model_config = ConfigDict(extra="forbid")
    ratings: list[RatingIn] = Field(default_factory=list, max_length=MAX_RATINGS)
    items: list[RawIdIn] = Field(default_factory=list, max_length=MAX_RATINGS, description=(
        "Items the user interacted with or liked, without ratings (ranking models; give either "
        "this or ratings)."))
    k: int = Field(10, ge=1, le=MAX_K, strict=True, description=K_DESCRIPTION)
    exclude_rated: bool = Field(True, strict=True, description="Leave the rated items out of the list.")
    features: FeaturesIn = None


class ListQuery(BaseModel):
    """Query parameters of ``GET /v1/similar/{item_id}``."""

    k: int = Field(10, ge=1, le=MAX_K, description=K_DESCRIPTION)


class RecommendQuery(ListQuery):
    """Query parameters of ``GET /v1/recommend/{user_id}``."""

    exclude_seen: bool = Field(True, description="Leave the user's training items out of the list.")


class PredictQuery(BaseModel):
    """Query parameters of ``GET /v1/predict``."""

    user: str = Field(min_length=1, max_length=256, description="Raw user id.")
    item: str = Field(min_length=1, max_length=256, description="Raw item id.")


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
    cold_start: bool = Field(description="True when no rated item and no given feature is known to the model "
                                         "(the list is the cold-start list).")
    n_ratings_used: int
    unknown_items: list[RawIdOut] = Field(description="Items the model does not know (ignored).")
    duplicate_items: list[RawIdOut] = Field(description="Items given twice (the last rating kept).")
    from_features: bool = Field(False, description="True when the user was placed from its side features.")
    unknown_features: list[str] = Field(default_factory=list, description=(
        "Given features the model does not know (ignored)."))
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
    score_label: str = Field(description="What the scores of the model's lists are (the model's own words).")
    cold_start_label: str = Field(description="How the list of a user the model does not know is ordered.")
    fallback_labels: dict[str, str] = Field(description="How a prediction is made for each `fallback` value.")
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


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Malformed request body", 401: "Admin token missing",
            403: "Wrong admin token, foreign Host or Origin, or admin endpoints disabled",
            404: "Unknown id", 409: "Not possible with this model (reload: the new version cannot "
                                    "be loaded; the old one keeps serving)",
            413: "Request body too large", 422: "Invalid parameter",
            429: "Too many large requests queued; retry after the Retry-After seconds",
            503: "No model loaded yet"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}

