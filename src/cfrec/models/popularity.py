"""Most-popular recommender: the non-personalised yardstick for ranking metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.errors import ModelFileError
from cfrec.models._bias import fit_biases
from cfrec.models.base import EpochCallback, FoldedUser, Recommender
from cfrec.models.layout import Array
from cfrec.models.params import hyperparameters, param


@hyperparameters
class PopularityRecommender(Recommender):
    """Ranks every user's unseen items by how many training ratings they received.

    The classic ranking baseline: a personalised model whose NDCG@10 or Recall@10 does not beat
    it has learned nothing useful for top-K recommendation. Its ranking score is the item's
    training count, with the (bounded) item bias as a tie-breaker below one count. Rating
    predictions (``mu + b_i``, regularised item biases) exist so the full
    :class:`~cfrec.models.base.Recommender` API works, but the model is meant for ranking;
    benchmarks report its RMSE as n/a.

    Parameters
    ----------
    reg_item
        L2 strength of the item biases used for rating predictions and to break ties.
    """

    name = "pop"
    state_layout = {"base.item_bias": Array(("items",)), "model.item_counts": Array(("items",), "int")}

    reg_item: float = param(default=5.0, ge=0)

    # one list for everyone, by item: nothing about the user enters it
    predicts_ratings = property(lambda self: False)
    personalised = property(lambda self: False)
    cold_start_label = property(lambda self: "number of training ratings (the same list for every user)")
    fallback_labels = property(lambda self: {0: "personalised: mu + b_i", 1: "unknown user: mu + b_i",
                                             2: "unknown item: mu", 3: "both unknown: mu"})

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        _, self.item_bias_ = fit_biases(
            train.users, train.items, train.ratings, train.n_users, train.n_items,
            global_mean=self.global_mean_, reg_user=1e12, reg_item=float(self.reg_item), iterations=1,
        )
        self.item_counts_ = train.item_counts().astype(np.int64)

    def _popularity(self) -> np.ndarray:
        """Ranking score: count, with the (bounded) item bias as a tie-breaker below one count."""
        return (self.item_counts_ + 0.25 + 0.2 * np.tanh(self.item_bias_.astype(np.float64))).astype(np.float32)

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._popularity()[items]

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return np.tile(self._popularity(), (len(users), 1))

    def _cold_user_scores(self) -> np.ndarray:
        return self._popularity()

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        return self._popularity()[items]

    def _predict_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return (self.global_mean_ + self.item_bias_[items]).astype(np.float32)

    def _predict_folded_known(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        return (self.global_mean_ + self.item_bias_[items]).astype(np.float32)

    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """A new user is only the set of items to exclude: popularity is not personalised."""
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        if not len(given.items):
            return self._empty_folded(given, 0)
        return FoldedUser(0.0, np.zeros(0, dtype=np.float32), given.items.astype(np.int32),
                          len(given.items), unknown_items=given.unknown,
                          duplicate_items=given.duplicates)

    def _fallback_ratings(self, u_idx: np.ndarray, i_idx: np.ndarray) -> np.ndarray:
        out = np.full(len(u_idx), self.global_mean_, dtype=np.float32)
        known = i_idx >= 0
        out[known] += self.item_bias_[i_idx[known]]
        return out

    def _fallback_state(self) -> dict[str, np.ndarray]:
        return {"item_bias": np.asarray(self.item_bias_, dtype=np.float32)}

    def _set_fallback_state(self, arrays: dict[str, np.ndarray]) -> None:
        if "item_bias" not in arrays or len(arrays["item_bias"]) != len(self.item_map_):
            raise ModelFileError("item biases are missing or do not match the item vocabulary")
        self.item_bias_ = arrays["item_bias"]

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_counts": self.item_counts_.astype(np.int64)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.item_counts_ = arrays["item_counts"].astype(np.int64)
        if len(self.item_counts_) != len(self.item_map_):
            raise ModelFileError("item counts do not match the item vocabulary")
