"""The values a fitted model hands back besides scores: predictions with their fallback codes,
folded-in users and checked fold-in input. Plain data, shared by the model classes and the layers
that read their answers (evaluation, serving)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

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
