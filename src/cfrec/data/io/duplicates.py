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
    data: Interactions, policy: DuplicatePolicy = "last", *, reader: Any = None,
    inplace: bool = False,
) -> tuple[Interactions, int]:
    """Resolve repeated ``(user, item)`` pairs by ``policy``; return the data and rows removed.

    Detection sorts the pair keys; only rows involved in a duplicate are then grouped.
    Kept rows stay in file order. ``inplace`` compacts ``data``'s own arrays instead of copying
    them (the loader's data, which nobody else holds: a copy would double the memory).
    """
    policy = check_duplicates(policy)
    n = len(data)
    rows = _repeated_pairs(data)
    if rows is None:
        return data, 0
    # group the involved rows by pair, then by time, then by file position (stable lexsort)
    key_rows = _pair_keys(data, rows)
    order = rows[np.lexsort((rows, data.timestamps[rows], key_rows))]
    k = _pair_keys(data, order)
    starts = np.r_[True, k[1:] != k[:-1]]
    ends = np.r_[k[1:] != k[:-1], True]
    n_removed = int(len(order) - starts.sum())

    if policy == "error":
        by_pos = rows[np.lexsort((rows, key_rows))]
        kp = _pair_keys(data, by_pos)
        second = np.flatnonzero(kp[1:] == kp[:-1]) + 1
        j = int(by_pos[second].min())  # earliest row that repeats an earlier pair
        first_of_pair = int(by_pos[np.searchsorted(kp, _pair_keys(data, np.array([j]))[0])])
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
        if not inplace:
            ratings = data.ratings.copy()
            timestamps = data.timestamps.copy()
        ratings[first_rows] = (sums / counts).astype(RATING_DTYPE)
        timestamps[first_rows] = data.timestamps[order[ends]]
        keep[first_rows] = True
    out = replace(data, users=_kept(data.users, keep, inplace),
                  items=_kept(data.items, keep, inplace), ratings=_kept(ratings, keep, inplace),
                  timestamps=_kept(timestamps, keep, inplace))
    return out, n_removed


def _kept(values: np.ndarray, keep: np.ndarray, inplace: bool) -> np.ndarray:
    """``values[keep]``; with ``inplace``, moved to the front of ``values`` itself a block at a
    time (no second copy of any column)."""
    if not inplace:
        return values[keep]
    at = 0
    for start in range(0, len(values), _KEY_BLOCK):  # at <= start: a block never overwrites
        part = values[start:start + _KEY_BLOCK][keep[start:start + _KEY_BLOCK]]  # a later one
        values[at:at + len(part)] = part
        at += len(part)
    return values[:at]



def aggregate_interactions(data: Interactions, *, inplace: bool = False
                           ) -> tuple[Interactions, int]:
    """One row per ``(user, item)`` pair of implicit data; return it and the rows merged away.

    A pair's weight is the sum of its rows' weights (their count when every weight is 1) and
    its timestamp the latest of them; the pair keeps the file position of its first row.
    Detection sorts the pair keys; only rows involved in a repeat are then grouped.
    """
    if data.weights is None:
        raise ValueError("aggregate_interactions needs implicit data (with weights)")
    rows = _repeated_pairs(data)
    if rows is None:
        return data, 0
    order = rows[np.lexsort((rows, _pair_keys(data, rows)))]
    k = _pair_keys(data, order)
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    first_rows = order[starts]  # rows are in file order within a pair
    sums = np.add.reduceat(data.weights[order].astype(np.float64), starts)
    latest = np.maximum.reduceat(data.timestamps[order], starts)
    weights = data.weights if inplace else data.weights.copy()
    timestamps = data.timestamps if inplace else data.timestamps.copy()
    weights[first_rows] = sums.astype(weights.dtype)
    timestamps[first_rows] = latest
    keep = np.ones(len(data), dtype=bool)
    keep[rows] = False
    keep[first_rows] = True
    n_removed = int(len(data) - keep.sum())
    out = replace(data, users=_kept(data.users, keep, inplace),
                  items=_kept(data.items, keep, inplace),
                  ratings=_kept(data.ratings, keep, inplace),
                  timestamps=_kept(timestamps, keep, inplace),
                  weights=_kept(weights, keep, inplace))
    return out, n_removed


def _pair_keys(data: Interactions, rows: Any = None) -> np.ndarray:
    """The int64 ``(user, item)`` key of rows ``rows`` (an index array or slice; all rows)."""
    users = data.users if rows is None else data.users[rows]
    key = users.astype(np.int64)
    key *= np.int64(max(data.n_items, 1))
    key += data.items if rows is None else data.items[rows]
    return key


_KEY_BLOCK = 1 << 22


def _repeated_pairs(data: Interactions) -> np.ndarray | None:
    """The rows whose (user, item) pair occurs more than once (None when no pair repeats).

    Sorting the keys finds repeats (~0.5 s for 25M keys, faster than hashing); only the rows
    involved are then looked up, a block of keys at a time (one sorted copy of the keys is
    the only array as long as the data).
    """
    key = _pair_keys(data)
    key.sort()
    repeats = key[1:] == key[:-1]
    if not repeats.any():
        return None
    dup_keys = np.unique(key[1:][repeats])
    del key, repeats
    index = pd.Index(dup_keys)
    n = len(data)
    found = [np.flatnonzero(index.get_indexer(_pair_keys(data, slice(s, s + _KEY_BLOCK))) >= 0)
             + s for s in range(0, n, _KEY_BLOCK)]
    return np.concatenate(found)
