"""The values a fitted model hands back besides scores: predictions with their fallback codes,
folded-in users and checked fold-in input. Plain data, shared by the model classes and the layers
that read their answers (evaluation, serving)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from cfrec.data.idmap import IdMap
from cfrec.errors import CfrecError

logger = logging.getLogger(__name__)

#: Fallback codes returned by :meth:`Recommender.predict_detailed`.
KNOWN, UNKNOWN_USER, UNKNOWN_ITEM, UNKNOWN_BOTH = 0, 1, 2, 3


class Prediction(NamedTuple):
    """Predicted ratings plus, per pair, which fallback produced them (0 = personalised)."""

    ratings: np.ndarray
    fallback: np.ndarray

    def counts(self) -> dict[str, int]:
        f = self.fallback
        return {
            "personalised": int((f == KNOWN).sum()),
            "unknown_user": int((f == UNKNOWN_USER).sum()),
            "unknown_item": int((f == UNKNOWN_ITEM).sum()),
            "unknown_both": int((f == UNKNOWN_BOTH).sum()),
        }


@dataclass(frozen=True)
class FoldedUser:
    """A user not seen in training, represented against the fixed item side of a fitted model.

    Made by :meth:`Recommender.fold_in`; accepted by ``predict`` and ``recommend`` in place of a
    raw user id. A user with no known item (``n_ratings == 0``) is treated like an unknown user:
    the model's cold-start list and fallbacks.
    """

    bias: float
    factors: np.ndarray  # (n_factors,) float32; empty for bias-only models
    seen: np.ndarray  # model item indices the user rated (excluded from recommendations)
    n_ratings: int
    state: Any = None  # model-specific extras (e.g. a network embedding)
    unknown_items: tuple[Any, ...] = ()  # raw ids the model does not know (ignored)
    duplicate_items: tuple[Any, ...] = ()  # raw ids given more than once (the last rating kept)


@dataclass(frozen=True)
class FoldInInput:
    """Checked fold-in input: unique known item indices with their ratings, and what was dropped."""

    items: np.ndarray  # int64 model item indices, unique
    ratings: np.ndarray  # float64, aligned with items
    unknown: tuple[Any, ...]
    duplicates: tuple[Any, ...]


def check_fold_in_input(item_map: IdMap, rating_scale: tuple[float, float], items: Any, ratings: Any, *,
                        needs_ratings: bool, model: str) -> FoldInInput:
    """Validate fold-in input against a model's vocabulary and rating scale: known unique items
    (the last rating of a repeated item wins) and their ratings; unknown and repeated items are
    logged and reported. Ratings must be finite and on the scale; ``None`` (allowed when the
    model does not ``needs_ratings``) counts every item as liked, rated at the top of the scale.
    """
    items_arr = np.atleast_1d(np.asarray(items, dtype=object if _mixed(items) else None))
    lo, hi = rating_scale
    if ratings is None:
        if needs_ratings:
            raise CfrecError(f"{model} folds a new user in from ratings: give one rating per item")
        r = np.full(len(items_arr), hi, dtype=np.float64)
    else:
        try:
            r = np.atleast_1d(np.asarray(ratings, dtype=np.float64))
        except (TypeError, ValueError):
            raise CfrecError(f"fold-in ratings must be numbers, got {ratings!r}") from None
    if items_arr.ndim != 1 or len(items_arr) != len(r):
        raise CfrecError(f"fold-in: items ({len(items_arr)}) and ratings ({len(r)}) differ in length")
    bad = np.flatnonzero(~np.isfinite(r) | (r < lo) | (r > hi))
    if len(bad):
        j = int(bad[0])
        raise CfrecError(f"fold-in rating {r[j]:g} for item {_plain(items_arr[j])!r} is outside the "
                         f"model's rating scale {lo:g}..{hi:g}")
    idx = item_map.to_index(items_arr, missing="-1").astype(np.int64)
    unknown = tuple(_plain(v) for v in items_arr[idx < 0])
    known = np.flatnonzero(idx >= 0)
    # last occurrence of each item wins
    rev = known[::-1]
    _, first_in_rev = np.unique(idx[rev], return_index=True)
    keep = np.sort(rev[first_in_rev])
    dup_mask = np.ones(len(known), dtype=bool)
    dup_mask[np.searchsorted(known, keep)] = False
    duplicates = tuple(dict.fromkeys(_plain(v) for v in items_arr[known[dup_mask]]))
    if unknown or duplicates:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown item(s) ignored ({_preview(unknown)})")
        if duplicates:
            parts.append(f"{len(duplicates)} item(s) given more than once, last rating kept "
                         f"({_preview(duplicates)})")
        logger.warning("fold-in: %s", "; ".join(parts))
    return FoldInInput(idx[keep], r[keep], unknown, duplicates)


def _mixed(values: Any) -> bool:
    """Whether a list mixes strings and numbers (numpy would turn the numbers into strings)."""
    if isinstance(values, list | tuple) and values:
        kinds = {isinstance(v, str) for v in values}
        return len(kinds) > 1
    return False


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _preview(values: tuple[Any, ...], n: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", ... ({len(values) - n} more)" if len(values) > n else "")

