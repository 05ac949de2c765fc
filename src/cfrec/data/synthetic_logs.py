"""Synthetic interaction logs with a known structure, for tests and benchmarks of ranking models.

A log is drawn in three steps, each with a planted answer:

1. candidate ``(user, item)`` pairs come from :func:`~cfrec.data.synthetic.make_synthetic`'s
   sampler: power-law item popularity and long-tailed user activity, as in MovieLens;
2. each user's taste for an item is the planted ``p_u . q_i`` (standardised: ``affinity``); of
   the candidates, the ``n_pairs`` with the highest ``taste * affinity + Gumbel noise`` are kept
   (a logit choice), so what a user interacts with depends on both popularity and taste;
3. each kept pair gets ``1 + Poisson(lam)`` events, ``lam`` growing with ``exp(affinity / 2)``
   and averaging ``mean_events - 1``, so counts carry the same taste again (confidence).

The result is implicit :class:`~cfrec.data.Interactions` (weights are the event counts);
:func:`log_events` expands it into one row per event, as a raw log file would hold it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, overload

import numpy as np
import pandas as pd

from cfrec.data.interactions import IMPLICIT_SCALE, RATING_DTYPE, WEIGHT_DTYPE, Interactions
from cfrec.data.synthetic import SyntheticTruth, make_synthetic, non_negative
from cfrec.errors import DataError


@dataclass(frozen=True, eq=False)
class LogTruth:
    """What a synthetic log was drawn from.

    Attributes
    ----------
    model
        The planted parameters (factors, item popularity, user activity) of the candidate pairs.
    affinity_scale
        Standard deviation of ``p_u . q_i`` over the candidates; ``affinity`` divides by it.
    taste, mean_events
        The generator's arguments.
    """

    model: SyntheticTruth
    affinity_scale: float
    taste: float
    mean_events: float

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Standardised planted taste ``p_u . q_i / scale`` for user and item indices (float64)."""
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        dot = np.einsum("ij,ij->i", self.model.user_factors[u].astype(np.float64),
                        self.model.item_factors[i].astype(np.float64))
        return dot / self.affinity_scale


@overload
def make_synthetic_log(
    n_users: int = ..., n_items: int = ..., n_pairs: int = ..., *, n_factors: int = ...,
    popularity_exponent: float = ..., taste: float = ..., mean_events: float = ...,
    seed: int | None = ..., start_time: int | str | datetime = ...,
    end_time: int | str | datetime = ..., name: str = ..., return_truth: Literal[False] = ...,
) -> Interactions: ...


@overload
def make_synthetic_log(
    n_users: int = ..., n_items: int = ..., n_pairs: int = ..., *, n_factors: int = ...,
    popularity_exponent: float = ..., taste: float = ..., mean_events: float = ...,
    seed: int | None = ..., start_time: int | str | datetime = ...,
    end_time: int | str | datetime = ..., name: str = ..., return_truth: Literal[True],
) -> tuple[Interactions, LogTruth]: ...


def make_synthetic_log(
    n_users: int = 1000,
    n_items: int = 2000,
    n_pairs: int = 50_000,
    *,
    n_factors: int = 8,
    popularity_exponent: float = 1.0,
    taste: float = 2.0,
    mean_events: float = 3.0,
    seed: int | None = 0,
    start_time: int | str | datetime = "2020-01-01",
    end_time: int | str | datetime = "2020-12-31",
    name: str = "synthetic-log",
    return_truth: bool = False,
) -> Interactions | tuple[Interactions, LogTruth]:
    """Draw an implicit-feedback log: ``n_pairs`` distinct ``(user, item)`` pairs with counts.

    Parameters
    ----------
    n_users, n_items, n_pairs
        Sizes: raw ids ``1..n_users`` and ``1..n_items`` (all in the vocabularies) and exactly
        ``n_pairs`` distinct pairs (at most a quarter of ``n_users * n_items``).
    n_factors
        Rank of the planted taste ``p_u . q_i``.
    popularity_exponent
        Zipf exponent of item popularity among the candidate pairs (0: uniform).
    taste
        How strongly taste decides which candidates are kept (0: popularity alone).
    mean_events
        Mean events per pair (>= 1); each pair has ``1 + Poisson`` events.
    seed
        Seeds every draw; the same arguments give the same log.
    start_time, end_time
        The time window of the events (each pair keeps its latest event's time).
    name
        Dataset name.
    return_truth
        Also return the :class:`LogTruth`.
    """
    if not (isinstance(n_pairs, int) and n_pairs >= 1):
        raise DataError(f"expected a positive integer, got {n_pairs!r}", field="n_pairs")
    cells = int(n_users) * int(n_items)
    if n_pairs * 4 > cells:
        raise DataError(f"{n_pairs} pairs need at least {4 * n_pairs} user x item cells (got "
                        f"{cells}): the candidates are twice as many, at most half the cells",
                        field="n_pairs")
    non_negative(taste=taste, popularity_exponent=popularity_exponent)
    if not (math.isfinite(mean_events) and mean_events >= 1):
        raise DataError(f"expected a number >= 1, got {mean_events!r}", field="mean_events")

    candidates, model = make_synthetic(
        n_users, n_items, 2 * n_pairs, n_factors=n_factors,
        popularity_exponent=popularity_exponent, seed=seed, start_time=start_time,
        end_time=end_time, with_metadata=False, name=name, return_truth=True)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(6)[5])
    dot = np.einsum("ij,ij->i", model.user_factors[candidates.users].astype(np.float64),
                    model.item_factors[candidates.items].astype(np.float64))
    scale = float(dot.std()) or 1.0
    affinity = dot / scale
    utility = taste * affinity + rng.gumbel(size=len(affinity))
    keep = np.sort(np.argpartition(-utility, n_pairs - 1)[:n_pairs])  # file order kept
    affinity = affinity[keep]
    boost = np.exp(0.5 * affinity)
    events = 1 + rng.poisson((mean_events - 1.0) * boost / boost.mean())
    data = replace(
        candidates.subset(keep), ratings=np.ones(n_pairs, dtype=RATING_DTYPE),
        rating_scale=IMPLICIT_SCALE, weights=events.astype(WEIGHT_DTYPE), feedback="implicit")
    if not return_truth:
        return data
    return data, LogTruth(model, scale, float(taste), float(mean_events))


def log_events(data: Interactions, *, seed: int | None = 0, spread: int = 86_400) -> pd.DataFrame:
    """One row per event of implicit ``data`` (``user_id``, ``item_id``, ``timestamp``), shuffled.

    A pair with weight ``w`` gives ``round(w)`` rows (at least 1); the last of them at the
    pair's timestamp, the earlier ones up to ``spread`` seconds before it. Reading the frame
    back (as a file, or through ``Interactions.from_frame`` and aggregation) gives ``data``.
    """
    if data.weights is None:
        raise DataError("log_events needs implicit data (weights are the event counts)")
    counts = np.maximum(np.rint(data.weights).astype(np.int64), 1)
    rows = np.repeat(np.arange(len(data)), counts)
    rng = np.random.default_rng(seed)
    ts = data.timestamps[rows].copy()
    last = np.r_[rows[1:] != rows[:-1], True]
    ts[~last] -= rng.integers(0, max(spread, 1), int((~last).sum()))
    order = rng.permutation(len(rows))
    return pd.DataFrame({"user_id": data.raw_users()[rows[order]],
                         "item_id": data.raw_items()[rows[order]],
                         "timestamp": ts[order]})
