"""Id encoding and the construction of an Interactions, shared with the MovieLens loaders."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd

from cfrec.data.idmap import INDEX_DTYPE, IdMap
from cfrec.data.interactions import (
    RATING_DTYPE,
    TIME_DTYPE,
    WEIGHT_DTYPE,
    FeedbackKind,
    Interactions,
)

_DENSE_ID_LIMIT = 1 << 26


def encode_ids(raw: Any, *, what: str = "id") -> tuple[IdMap, np.ndarray]:
    """Build a sorted vocabulary for ``raw`` ids and return it with the int32 index of each row.

    ``raw`` is a numpy array or a pyarrow string array. Non-negative integer ids (every
    MovieLens release) are encoded in O(n) through a dense lookup table instead of a sort plus
    hash lookup; other ids go through :meth:`IdMap.encode`.
    """
    if not isinstance(raw, np.ndarray) and _is_arrow(raw):
        return IdMap.encode(raw, what=what)
    raw = np.asarray(raw)
    if raw.dtype.kind in "iu" and len(raw):
        lo, hi = int(raw.min()), int(raw.max())
        if lo >= 0 and hi < max(_DENSE_ID_LIMIT, 4 * len(raw)) and hi < np.iinfo(np.int32).max:
            present = np.zeros(hi + 1, dtype=bool)
            present[raw] = True
            ids = np.flatnonzero(present).astype(np.int64)
            lut = np.full(hi + 1, -1, dtype=INDEX_DTYPE)
            lut[ids] = np.arange(len(ids), dtype=INDEX_DTYPE)
            return IdMap.from_sorted_unique(ids), lut[raw]
    return IdMap.encode(raw, what=what)


def _is_arrow(values: Any) -> bool:
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(values, (pa.Array, pa.ChunkedArray))


def _release_arrow_memory() -> None:
    """Return memory pyarrow's allocator keeps after a parse (frames from ``to_pandas`` live in it)."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()


def _compact(values: np.ndarray, dtype: Any) -> np.ndarray:
    """``values`` as a contiguous ``dtype`` array that does not keep a larger buffer alive.

    A column taken from a pandas frame is often a row of a 2-D block holding several columns;
    keeping that view would keep the whole block (for 25M ratings, hundreds of MB) in memory.
    """
    arr = np.ascontiguousarray(values, dtype=dtype)
    owner = arr
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    return arr.copy() if owner is not arr and owner.nbytes > arr.nbytes else arr


def build_interactions(
    users_raw: Any,
    items_raw: Any,
    ratings: np.ndarray,
    timestamps: np.ndarray | None,
    *,
    rating_scale: tuple[float, float],
    item_info: pd.DataFrame | None = None,
    user_info: pd.DataFrame | None = None,
    name: str = "ratings",
    weights: np.ndarray | None = None,
    feedback: FeedbackKind = "explicit",
) -> Interactions:
    """Encode raw ids (numpy or pyarrow arrays) and assemble an :class:`Interactions`."""
    umap, users = encode_ids(users_raw, what="user")
    imap, items = encode_ids(items_raw, what="item")
    ts = (np.zeros(len(users), dtype=TIME_DTYPE) if timestamps is None
          else _compact(timestamps, TIME_DTYPE))
    return Interactions(
        users=_compact(users, INDEX_DTYPE),
        items=_compact(items, INDEX_DTYPE),
        ratings=_compact(ratings, RATING_DTYPE),
        timestamps=ts,
        user_map=umap,
        item_map=imap,
        rating_scale=(float(rating_scale[0]), float(rating_scale[1])),
        item_info=item_info,
        user_info=user_info,
        name=name,
        weights=None if weights is None else _compact(weights, WEIGHT_DTYPE),
        feedback=feedback,
    )

