"""Ranking-only models: their scores order items for a user and estimate no rating.

:class:`RankingRecommender` is the base of iALS, EASE, BPR and Mult-VAE: ``predicts_ratings`` is
False, an unknown user gets the popularity list (the base class's cold-start policy) and
``predict`` shows a score on the rating scale, a monotone preference and not a rating estimate.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from cfrec.models.base import Recommender, popularity_scores


class RankingRecommender(Recommender):
    """Base of the ranking-only models (iALS, EASE, BPR, Mult-VAE): ``predicts_ratings`` is
    False, an unknown user gets the popularity list (:func:`~cfrec.models.base.popularity_scores`), and
    ``predict`` shows a score on the rating scale by ``score_to_scale``: ``"linear"`` for
    scores in about [0, 1] (:func:`linear_to_scale`), ``"sigmoid"`` for unbounded ones
    (:func:`sigmoid_to_scale`) — a monotone preference, not a rating estimate."""

    score_to_scale: ClassVar[Literal["linear", "sigmoid"]] = "linear"

    @property
    def predicts_ratings(self) -> bool:
        """False: the scores rank items; they do not estimate ratings."""
        return False

    @property
    def fallback_labels(self) -> dict[int, str]:
        return {0: "personalised", 1: "unknown user: item popularity on the rating scale",
                2: "unknown item: the bottom of the rating scale", 3: "both unknown: the bottom of the rating scale"}

    def _fallback_ratings(self, u_idx: np.ndarray, i_idx: np.ndarray) -> np.ndarray:
        """An unknown user's rating is the item's popularity on the scale (the cold-start list's
        order); an unknown item gets the bottom of the scale: the model prefers it to nothing."""
        lo = self.rating_scale_[0]
        out = np.full(len(u_idx), lo, dtype=np.float32)
        ki = i_idx >= 0
        if ki.any():
            pop = popularity_scores(self.seen_, len(self.item_map_))
            out[ki] = linear_to_scale(pop[i_idx[ki]], self.rating_scale_)
        return out

    def _as_ratings(self, scores: np.ndarray) -> np.ndarray:
        to_scale = sigmoid_to_scale if self.score_to_scale == "sigmoid" else linear_to_scale
        return to_scale(scores, self.rating_scale_)


def linear_to_scale(scores: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """``low + s * (high - low)``: a score in about [0, 1] shown on the rating scale (a monotone
    preference, not a rating estimate)."""
    lo, hi = scale
    return (np.float32(lo) + np.float32(hi - lo) * np.asarray(scores, dtype=np.float32)).astype(np.float32)


def sigmoid_to_scale(scores: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """``low + sigmoid(s) * (high - low)``: an unbounded score shown on the rating scale (a
    monotone preference, not a rating estimate)."""
    lo, hi = scale
    sig = 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))
    return (lo + sig * (hi - lo)).astype(np.float32)
