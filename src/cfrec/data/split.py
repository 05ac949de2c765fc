"""Leakage-free train/test splits.

Every split keeps the full data's id vocabularies in both parts, so indices agree between train
and test; a model trained on ``split.train`` builds its own vocabulary from the ids it saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfrec.data.interactions import Interactions


@dataclass(frozen=True)
class ColdStartReport:
    """How much of a test part a model cannot have seen in training."""

    test_ratings: int
    unknown_user: int  # test ratings whose user has no train rating
    unknown_item: int  # ... whose item has no train rating
    unknown_either: int  # ... whose user or item is unknown

    @property
    def user_share(self) -> float:
        return self.unknown_user / self.test_ratings if self.test_ratings else 0.0

    @property
    def item_share(self) -> float:
        return self.unknown_item / self.test_ratings if self.test_ratings else 0.0

    @property
    def share(self) -> float:
        return self.unknown_either / self.test_ratings if self.test_ratings else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "test_ratings": self.test_ratings,
            "unknown_user": self.unknown_user,
            "unknown_item": self.unknown_item,
            "unknown_either": self.unknown_either,
            "unknown_user_share": self.user_share,
            "unknown_item_share": self.item_share,
            "cold_start_share": self.share,
        }


@dataclass(frozen=True)
class Split:
    """A train part and a test part over the same vocabularies."""

    train: Interactions
    test: Interactions
    name: str = "split"

    def cold_start(self) -> ColdStartReport:
        """Count test ratings whose user or item is absent from train."""
        known_u = self.train.user_counts() > 0
        known_i = self.train.item_counts() > 0
        uu = ~known_u[self.test.users]
        ui = ~known_i[self.test.items]
        return ColdStartReport(len(self.test), int(uu.sum()), int(ui.sum()), int((uu | ui).sum()))
