"""The results of the online (prequential) evaluation of :mod:`cfrec.evaluation.online`: the
per-rating predictions, the error table by group of test ratings and the count of same-second
groups, with their JSON and Markdown forms."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfrec.evaluation.protocols import format_value, plain_number


@dataclass(frozen=True)
class OnlineGroup:
    """Online vs offline error for one group of test ratings."""

    group: str
    n: int
    share: float
    online_rmse: float
    offline_rmse: float
    online_mae: float
    offline_mae: float

    def to_dict(self) -> dict[str, Any]:
        return {k: plain_number(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class SameSecondGroups:
    """How the test ratings fall into same-second groups (one user, one timestamp).

    ``sizes`` maps a group size to the number of groups of that size. ``n_after_peer`` is the
    number of ratings a rating-by-rating replay predicts after another rating of their group has
    been revealed (every rating of a group but its first in the tie order).
    """

    n_ratings: int
    n_groups: int
    n_multi_groups: int
    n_in_multi: int
    n_after_peer: int
    largest: int
    sizes: dict[int, int]

    @property
    def share_in_multi(self) -> float:
        return self.n_in_multi / self.n_ratings if self.n_ratings else math.nan

    @property
    def mean_multi_size(self) -> float:
        return self.n_in_multi / self.n_multi_groups if self.n_multi_groups else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_ratings": self.n_ratings, "n_groups": self.n_groups, "n_multi_groups": self.n_multi_groups,
            "n_in_multi_groups": self.n_in_multi, "share_in_multi_groups": plain_number(self.share_in_multi),
            "mean_multi_group_size": plain_number(self.mean_multi_size), "largest_group": self.largest,
            "n_predicted_after_peer_by_rating": self.n_after_peer,
            "group_sizes": {str(k): v for k, v in self.sizes.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SameSecondGroups:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["n_ratings"]), int(d["n_groups"]), int(d["n_multi_groups"]), int(d["n_in_multi_groups"]),
                   int(d["n_predicted_after_peer_by_rating"]), int(d["largest_group"]),
                   {int(k): int(v) for k, v in d["group_sizes"].items()})

    def describe(self) -> str:
        """One sentence for reports."""
        if not self.n_multi_groups:
            return f"no two of the {self.n_ratings:,} test ratings share a user and a second"
        return (f"{self.n_in_multi:,} of {self.n_ratings:,} test ratings ({self.share_in_multi:.1%}) fell in "
                f"{self.n_multi_groups:,} same-second groups of 2-{self.largest} ratings of one user "
                f"(mean {self.mean_multi_size:.2f}); a rating-by-rating replay would predict "
                f"{self.n_after_peer:,} ({self.n_after_peer / self.n_ratings:.1%}) after another "
                f"rating of their group was revealed")


@dataclass
class OnlinePredictions:
    """Per test row (in the test part's row order): the online prediction and its context."""

    predictions: np.ndarray  # float32, clipped to the rating scale
    order: np.ndarray  # replay order: test row positions, first replayed first
    revealed_test: np.ndarray  # test ratings of the same user revealed before this one
    known_before: np.ndarray  # ratings of the user known when predicting (train + revealed test)
    group_size: np.ndarray  # size of the row's same-second group
    method: str
    reveal: str
    reg: float | None  # None: the model's own fold-in default (a model overriding fold_in)


@dataclass
class OnlineResult:
    """Online (prequential) and offline error of one fitted model on one test part."""

    model: str
    dataset: str
    method: str
    reg: float | None
    n_test: int
    rmse: float
    mae: float
    offline_rmse: float
    offline_mae: float
    groups: list[OnlineGroup]
    replay_seconds: float
    reveal: str = "group"
    same_second: SameSecondGroups | None = None
    fit_seconds: float | None = None
    predictions: np.ndarray | None = field(default=None, repr=False)

    def group(self, name: str) -> OnlineGroup:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "protocol": "online",
            "reveal": self.reveal,
            "method": self.method,
            "fold_in_reg": self.reg,
            "n_test": self.n_test,
            "rmse": plain_number(self.rmse),
            "mae": plain_number(self.mae),
            "offline_rmse": plain_number(self.offline_rmse),
            "offline_mae": plain_number(self.offline_mae),
            "fit_seconds": self.fit_seconds,
            "replay_seconds": self.replay_seconds,
            "same_second_groups": self.same_second.to_dict() if self.same_second is not None else None,
            "groups": [g.to_dict() for g in self.groups],
        }

    def headline(self) -> str:
        """What was replayed and the overall result, in plain text."""
        return (f"{self.model} on {self.dataset}, online (prequential) replay of {self.n_test:,} test "
                f"ratings, {_reveal_text(self.reveal)}, fold-in reg {_reg_text(self.reg)}: RMSE "
                f"{format_value(self.rmse)} online vs {format_value(self.offline_rmse)} offline")

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and cells of the breakdown table."""
        header = ["test ratings", "n", "share", "RMSE online", "RMSE offline", "MAE online", "MAE offline"]
        body = [[g.group, f"{g.n:,}", f"{g.share:.1%}", format_value(g.online_rmse),
                 format_value(g.offline_rmse), format_value(g.online_mae), format_value(g.offline_mae)]
                for g in self.groups]
        return header, body

    def to_markdown(self) -> str:
        header, body = self.table_rows()
        lines = [f"**{self.model}**" + self.headline()[len(self.model):], ""]
        if self.same_second is not None:
            lines += [f"Same-second groups: {self.same_second.describe()}.", ""]
        lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)


def _reg_text(reg: float | None) -> str:
    return "(the model's own fold_in default)" if reg is None else f"{reg:g}"


def _reveal_text(reveal: str) -> str:
    return ("each user's same-second group predicted before any of it is revealed" if reveal == "group"
            else "revealed rating by rating (same-second ratings seen before their peers are predicted)")
