"""Most-popular recommender: the non-personalised yardstick for ranking metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.errors import ModelFileError
from cfrec.models._bias import fit_biases
from cfrec.models.base import EpochCallback, FoldedUser, Recommender


class PopularityRecommender(Recommender):
    """Ranks every user's unseen items by how many training ratings they received.

    The classic ranking baseline: a personalised model whose NDCG@10 or Recall@10 does not beat
    it has learned nothing useful for top-K recommendation. Rating predictions (``mu + b_i``,
    regularised item biases) exist so the full :class:`Recommender` API works, but the model is
    meant for ranking; benchmarks report its RMSE as n/a.

    Ties in popularity are broken by the item bias (better-rated first), then by item index.

    Parameters
    ----------
    reg_item
        L2 strength of the item biases used for rating predictions.
    """

    name = "pop"

    def __init__(self, *, reg_item: float = 5.0) -> None:
        self.reg_item = reg_item

    @property
    def predicts_ratings(self) -> bool:
        return False

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        _, self.item_bias_ = fit_biases(
            train.users, train.items, train.ratings, train.n_users, train.n_items,
            global_mean=self.global_mean_, reg_user=1e12, reg_item=self.reg_item, iterations=1,
        )
        self.user_bias_ = np.zeros(train.n_users, dtype=np.float32)
        self.item_counts_ = train.item_counts().astype(np.int64)

    def _popularity(self) -> np.ndarray:
        """Ranking score: count, with the (bounded) item bias as a tie-breaker below one count."""
        return self.item_counts_ + 0.25 + 0.2 * np.tanh(self.item_bias_.astype(np.float64))

    def _predict_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return (self.global_mean_ + self.item_bias_[items]).astype(np.float32)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._popularity().astype(np.float32), (len(users), len(self.item_map_))).copy()

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        return self._popularity().astype(np.float32)[items]

    def _cold_user_scores(self) -> np.ndarray:
        return self._popularity().astype(np.float32)

    def fold_in(self, items: Any, ratings: Any, *, reg: float | None = None) -> FoldedUser:
        """A new user is only the set of items to exclude: popularity is not personalised."""
        self._check_fitted()
        idx = self.item_map_.to_index(np.atleast_1d(np.asarray(items)), missing="-1")
        idx = np.unique(idx[idx >= 0]).astype(np.int32)
        return FoldedUser(0.0, np.zeros(0, dtype=np.float32), idx, len(idx))

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_counts": self.item_counts_.astype(np.int64)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.item_counts_ = arrays["item_counts"].astype(np.int64)
        if len(self.item_counts_) != len(self.item_map_):
            raise ModelFileError("item counts do not match the item vocabulary")
