"""Repeated (user, item) pairs: ratings resolved by an explicit policy, interactions aggregated."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from cfrec.data.interactions import RATING_DTYPE, Interactions
from cfrec.data.options import (
    DuplicatePolicy,
    check_duplicates,
    option,
)
from cfrec.errors import DataError


def resolve_duplicates(
    data: Interactions, policy: DuplicatePolicy = "last", *, reader: Any = None
) -> tuple[Interactions, int]:
    """Resolve repeated ``(user, item)`` pairs by ``policy``; return the data and rows removed.

    Detection sorts the pair keys; only rows involved in a duplicate are then grouped.
    Kept rows stay in file order.
    """
    policy = check_duplicates(policy)
    n = len(data)
    key, rows = _repeated_pairs(data)
    if rows is None:
        return data, 0
    # group the involved rows by pair, then by time, then by file position (stable lexsort)
    order = rows[np.lexsort((rows, data.timestamps[rows], key[rows]))]
    k = key[order]
    starts = np.r_[True, k[1:] != k[:-1]]
    ends = np.r_[k[1:] != k[:-1], True]
    n_removed = int(len(order) - starts.sum())

    if policy == "error":
        by_pos = rows[np.lexsort((rows, key[rows]))]
        kp = key[by_pos]
        second = np.flatnonzero(kp[1:] == kp[:-1]) + 1
        j = int(by_pos[second].min())  # earliest row that repeats an earlier pair
        first_of_pair = int(by_pos[np.searchsorted(kp, key[j])])
        u = np.asarray(data.user_map.to_raw(data.users[j])).tolist()
        i = np.asarray(data.item_map.to_raw(data.items[j])).tolist()
        hints = (option("duplicates").hint('"last"', "last", "keep the latest rating of a pair "
                                           "(or first, mean)"),)
        if reader is not None:
            loc_a, loc_b = reader.where(first_of_pair), reader.where(j)
            here = "" if loc_b["line"] is not None else f"row {loc_b['row']}: "
            there = (f"line {loc_a['line']}" if loc_a["line"] is not None
                     else f"row {loc_a['row']}")
            raise DataError(
                f"{here}duplicate rating for user {u!r}, item {i!r} (also at {there})",
                path=loc_b["path"], line=loc_b["line"], field="user/item", value=(u, i),
                expected="one rating per (user, item) pair", hints=hints,
            )
        raise DataError(f"duplicate rating for user {u!r}, item {i!r} (rows {first_of_pair} and {j})",
                        field="user/item", value=(u, i), hints=hints)

    keep = np.ones(n, dtype=bool)
    keep[rows] = False
    ratings = data.ratings
    timestamps = data.timestamps
    if policy == "last":
        keep[order[ends]] = True
    elif policy == "first":
        keep[order[starts]] = True
    else:  # mean: the pair's first row in the file carries the mean rating and latest timestamp
        group = np.cumsum(starts) - 1
        sums = np.bincount(group, weights=data.ratings[order].astype(np.float64))
        counts = np.bincount(group)
        first_rows = np.minimum.reduceat(order, np.flatnonzero(starts))
        ratings = data.ratings.copy()
        timestamps = data.timestamps.copy()
        ratings[first_rows] = (sums / counts).astype(RATING_DTYPE)
        timestamps[first_rows] = data.timestamps[order[ends]]
        keep[first_rows] = True
    out = replace(data, users=data.users[keep], items=data.items[keep], ratings=ratings[keep],
                  timestamps=timestamps[keep])
    return out, n_removed



def aggregate_interactions(data: Interactions) -> tuple[Interactions, int]:
    """One row per ``(user, item)`` pair of implicit data; return it and the rows merged away.

    A pair's weight is the sum of its rows' weights (their count when every weight is 1) and
    its timestamp the latest of them; the pair keeps the file position of its first row.
    Detection sorts the pair keys; only rows involved in a repeat are then grouped.
    """
    if data.weights is None:
        raise ValueError("aggregate_interactions needs implicit data (with weights)")
    key, rows = _repeated_pairs(data)
    if rows is None:
        return data, 0
    order = rows[np.lexsort((rows, key[rows]))]
    k = key[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    first_rows = order[starts]  # rows are in file order within a pair
    sums = np.add.reduceat(data.weights[order].astype(np.float64), starts)
    latest = np.maximum.reduceat(data.timestamps[order], starts)
    weights = data.weights.copy()
    timestamps = data.timestamps.copy()
    weights[first_rows] = sums.astype(weights.dtype)
    timestamps[first_rows] = latest
    keep = np.ones(len(data), dtype=bool)
    keep[rows] = False
    keep[first_rows] = True
    out = replace(data, users=data.users[keep], items=data.items[keep],
                  ratings=data.ratings[keep], timestamps=timestamps[keep], weights=weights[keep])
    return out, int(len(data) - keep.sum())


def _repeated_pairs(data: Interactions) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's (user, item) key, and the rows whose pair occurs more than once (None when no
    pair repeats). Sorting the keys finds repeats (~0.5 s for 25M keys, faster than hashing);
    only the rows involved are then looked up."""
    key = data.users.astype(np.int64) * np.int64(max(data.n_items, 1)) + data.items
    sorted_keys = np.sort(key)
    repeats = sorted_keys[1:] == sorted_keys[:-1]
    if not repeats.any():
        return key, None
    dup_keys = np.unique(sorted_keys[1:][repeats])
    del sorted_keys, repeats
    return key, np.flatnonzero(pd.Index(dup_keys).get_indexer(key) >= 0)
