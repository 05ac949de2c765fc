"""Descriptive statistics of a rating set: sizes, sparsity, rating distribution, activity, time span.

Counts are of the users and items that have at least one rating in the data given (a split's test
part shares the full vocabulary, but its statistics describe only its own ratings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from cfrec.data.features import Features
from cfrec.data.interactions import Interactions


@dataclass(frozen=True)
class CountSummary:
    """Min / median / mean / max of a per-user or per-item rating count."""

    min: int
    median: float
    mean: float
    max: int

    @classmethod
    def of(cls, counts: np.ndarray) -> CountSummary:
        if len(counts) == 0:
            return cls(0, 0.0, 0.0, 0)
        return cls(int(counts.min()), float(np.median(counts)), float(counts.mean()),
                   int(counts.max()))


@dataclass(frozen=True)
class WeightSummary:
    """Min / median / mean / max of the interaction weights per ``(user, item)`` pair."""

    min: float
    median: float
    mean: float
    max: float


@dataclass(frozen=True)
class FeatureSummary:
    """Side features of one kind: how many entities have some, how many features, in how many
    families (the text before ``=``: ``genre``, ``age`` ...), nonzeros, and where they came from."""

    with_features: int
    features: int
    families: int
    nonzeros: int
    source: str

    @classmethod
    def of(cls, features: Features | None) -> FeatureSummary | None:
        if features is None:
            return None
        names = [str(n) for n in features.names.to_list()]
        per_row = np.diff(features.matrix.indptr)
        return cls(int((per_row > 0).sum()), len(names), len({n.split("=", 1)[0] for n in names}),
                   int(features.matrix.nnz), features.source)

    def describe(self) -> str:
        return (f"{self.features:,} in {self.families} famil{'y' if self.families == 1 else 'ies'} "
                f"on {self.with_features:,} ({self.nonzeros:,} nonzeros; {self.source or 'given'})")


@dataclass(frozen=True)
class DatasetStats:
    """Statistics of one rating set; :meth:`to_dict` gives JSON-ready values at full precision.

    Attributes
    ----------
    sparsity
        ``1 - ratings / (users * items)`` over users and items that have ratings
        (ML-100K: 0.93695).
    rating_histogram
        Rating value -> count, ascending by value.
    rating_std
        Population standard deviation (ddof=0).
    first_timestamp, last_timestamp
        Unix seconds, ``None`` when the data has no time (all timestamps 0).
    feedback
        ``"explicit"`` (ratings) or ``"implicit"`` (interactions: ``ratings`` then counts the
        ``(user, item)`` pairs and the rating fields describe the constant 1).
    weight_total, weight_per_pair
        For interactions: the sum of the weights (events, or summed weight column) and
        min / median / mean / max per pair; ``None`` for ratings.
    """

    name: str
    ratings: int
    users: int
    items: int
    sparsity: float
    density: float
    rating_scale: tuple[float, float]
    rating_mean: float
    rating_std: float
    rating_histogram: dict[float, int]
    ratings_per_user: CountSummary
    ratings_per_item: CountSummary
    first_timestamp: int | None
    last_timestamp: int | None
    feedback: str = "explicit"
    weight_total: float | None = None
    weight_per_pair: WeightSummary | None = None
    item_features: FeatureSummary | None = None
    user_features: FeatureSummary | None = None

    @property
    def first_date(self) -> str | None:
        return _iso(self.first_timestamp)

    @property
    def last_date(self) -> str | None:
        return _iso(self.last_timestamp)

    @property
    def span_days(self) -> float | None:
        if self.first_timestamp is None or self.last_timestamp is None:
            return None
        return (self.last_timestamp - self.first_timestamp) / 86400.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (histogram keys are strings such as ``"4"`` or ``"4.5"``)."""
        out = asdict(self)
        out["rating_scale"] = list(self.rating_scale)
        out["rating_histogram"] = {_key(v): c for v, c in self.rating_histogram.items()}
        out["first_date"] = self.first_date
        out["last_date"] = self.last_date
        out["span_days"] = self.span_days
        return out


def _key(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


_BLOCK = 1 << 22


def _rating_moments(ratings: np.ndarray) -> tuple[float, float, dict[float, int]]:
    """Mean, standard deviation and histogram of the ratings, a block at a time (no float64 or
    sorted copy of the whole column: a stats run stays close to the data's own size)."""
    n = len(ratings)
    if not n:
        return float("nan"), float("nan"), {}
    mean = float(ratings.mean(dtype=np.float64))
    squares = 0.0
    histogram: dict[float, int] = {}
    for start in range(0, n, _BLOCK):
        block = ratings[start:start + _BLOCK].astype(np.float64)
        squares += float(np.square(block - mean).sum())
        values, counts = np.unique(block, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            histogram[v] = histogram.get(v, 0) + c
    return mean, float(np.sqrt(squares / n)), dict(sorted(histogram.items()))


def compute_statistics(data: Interactions) -> DatasetStats:
    """Sizes, sparsity, rating distribution, per-user/per-item activity and time span of ``data``."""
    n = len(data)
    user_counts = data.user_counts()
    item_counts = data.item_counts()
    user_counts = user_counts[user_counts > 0]
    item_counts = item_counts[item_counts > 0]
    n_users, n_items = len(user_counts), len(item_counts)
    cells = n_users * n_items
    density = n / cells if cells else 0.0
    mean, std, histogram = _rating_moments(data.ratings)
    ts = data.timestamps
    w = data.weights
    has_time = n > 0 and bool(np.any(ts != 0))
    return DatasetStats(
        name=data.name,
        ratings=n,
        users=n_users,
        items=n_items,
        sparsity=1.0 - density if cells else 1.0,
        density=density,
        rating_scale=(float(data.rating_scale[0]), float(data.rating_scale[1])),
        rating_mean=mean,
        rating_std=std,
        rating_histogram=histogram,
        ratings_per_user=CountSummary.of(user_counts),
        ratings_per_item=CountSummary.of(item_counts),
        first_timestamp=int(ts.min()) if has_time else None,
        last_timestamp=int(ts.max()) if has_time else None,
        feedback=data.feedback,
        weight_total=None if w is None else float(w.sum(dtype=np.float64)),
        weight_per_pair=None if w is None or not n else WeightSummary(
            float(w.min()), float(np.median(w)), float(w.mean(dtype=np.float64)), float(w.max())),
        item_features=FeatureSummary.of(data.item_features),
        user_features=FeatureSummary.of(data.user_features),
    )


def format_dataset_info(data: Interactions | DatasetStats) -> str:
    """A human-readable summary (the lab's ``print_dataset_info``, returned rather than printed)."""
    s = data if isinstance(data, DatasetStats) else compute_statistics(data)
    lo, hi = s.rating_scale
    lines = [
        f"Dataset {s.name}",
        f"  ratings   {s.ratings:,}",
        f"  users     {s.users:,}",
        f"  items     {s.items:,}",
        f"  sparsity  {s.sparsity:.2%} (density {s.density:.2%})",
    ]
    if s.feedback == "implicit":
        lines[1] = f"  pairs     {s.ratings:,} (interactions, no ratings)"
        if s.weight_per_pair is not None and s.weight_total is not None:
            w = s.weight_per_pair
            lines.append(f"  weight    total {s.weight_total:,.6g}; per pair min {w.min:g}, "
                         f"median {w.median:g}, mean {w.mean:.3g}, max {w.max:g}")
    else:
        lines.append(f"  rating    scale {lo:g}-{hi:g}, mean {s.rating_mean:.3f}, std {s.rating_std:.3f}")
    if s.ratings and s.feedback != "implicit":
        width = max(len(_key(v)) for v in s.rating_histogram)
        lines.append("  histogram")
        peak = max(s.rating_histogram.values())
        for value, count in s.rating_histogram.items():
            bar = "#" * max(1, round(30 * count / peak))
            lines.append(f"    {_key(value):>{width}}  {count:>10,}  {count / s.ratings:6.1%}  {bar}")
    for label, c in (("per user", s.ratings_per_user), ("per item", s.ratings_per_item)):
        noun = "pairs" if s.feedback == "implicit" else "ratings"
        lines.append(f"  {noun} {label}: min {c.min:,}, median {c.median:g}, "
                     f"mean {c.mean:.1f}, max {c.max:,}")
    for label, f in (("item features", s.item_features), ("user features", s.user_features)):
        if f is not None:
            lines.append(f"  {label}: {f.describe()}")
    if s.first_date is not None:
        lines.append(f"  time      {s.first_date[:10]} .. {str(s.last_date)[:10]} ({s.span_days:.0f} days, UTC)")
    else:
        lines.append("  time      (no timestamps)")
    return "\n".join(lines)
