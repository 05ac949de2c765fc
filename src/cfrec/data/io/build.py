"""Id encoding and the construction of an Interactions, shared with the MovieLens loaders."""

from __future__ import annotations

import functools
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


class IdPieces:
    """Raw ids gathered chunk by chunk, encoded into one vocabulary at the end.

    A chunk of plain integer ids is kept as int32 when its values fit (int64 otherwise); a chunk
    of text ids is dictionary-encoded as it arrives (its distinct ids and an int32 code per
    row), so no step holds the text of every row. The vocabulary is the one
    :func:`encode_ids` builds from the whole column: integers when every chunk held plain
    integers, else text (integer chunks then read as their canonical text).
    """

    def __init__(self) -> None:
        self._ints: list[np.ndarray | None] = []
        self._text: list[tuple[Any, np.ndarray] | None] = []
        self.rows = 0

    def add(self, raw: Any) -> None:
        """Append a chunk's ids: an integer numpy array or a pyarrow string array, no nulls."""
        self.rows += len(raw)
        if isinstance(raw, np.ndarray) and raw.dtype.kind in "iu":
            small = len(raw) == 0 or (int(raw.min()) >= np.iinfo(np.int32).min
                                      and int(raw.max()) <= np.iinfo(np.int32).max)
            self._ints.append(raw.astype(np.int32 if small else np.int64, copy=False))
            self._text.append(None)
            return
        self._ints.append(None)
        self._text.append(_dictionary(raw))

    def finish(self, what: str) -> tuple[IdMap, np.ndarray]:
        """The vocabulary and the int32 index of every row, in the order added."""
        if all(t is None for t in self._text):
            pieces = [p for p in self._ints if p is not None]
            self._ints.clear()
            self._text.clear()
            dtype = np.int32 if all(p.dtype == np.int32 for p in pieces) else np.int64
            raw = np.empty(self.rows, dtype=dtype)
            at = 0
            pieces.reverse()
            while pieces:  # each chunk freed once copied: the column is never held twice
                piece = pieces.pop()
                raw[at:at + len(piece)] = piece
                at += len(piece)
                del piece
            _release_arrow_memory()
            if len(raw) and dtype == np.int32 and int(raw.min()) >= 0 and int(raw.max()) < max(
                    _DENSE_ID_LIMIT, 4 * len(raw)):
                present = np.zeros(int(raw.max()) + 1, dtype=bool)
                present[raw] = True
                ids = np.flatnonzero(present).astype(np.int64)
                lut = np.full(len(present), -1, dtype=INDEX_DTYPE)
                lut[ids] = np.arange(len(ids), dtype=INDEX_DTYPE)
                index: Any = raw
                # in place ("clip": no buffered copy; every index is in range)
                np.take(lut, index, out=raw, mode="clip")
                return IdMap.from_sorted_unique(ids), raw
            return encode_ids(raw.astype(np.int64, copy=False), what=what)
        import pyarrow as pa
        import pyarrow.compute as pc

        encoded = [t if t is not None else _dictionary(pc.cast(pa.array(i), pa.string()))
                   for i, t in zip(self._ints, self._text, strict=True)]
        self._ints.clear()
        self._text.clear()
        distinct = pc.unique(pa.concat_arrays([d for d, _ in encoded]))
        uniques = distinct.take(pc.sort_indices(distinct))
        vocab, _ = IdMap.encode(uniques, what=what)
        codes = np.empty(self.rows, dtype=INDEX_DTYPE)
        at = 0
        for dictionary, idx in encoded:
            where = pc.index_in(dictionary, value_set=uniques).to_numpy(zero_copy_only=False)
            codes[at:at + len(idx)] = where.astype(INDEX_DTYPE)[idx]
            at += len(idx)
        return vocab, codes


def _dictionary(raw: Any) -> tuple[Any, np.ndarray]:
    """(distinct values, int32 code of each row) of a pyarrow string array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    if not isinstance(arr, pa.Array):
        arr = pa.array(np.asarray(raw).astype(str))
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    enc = pc.dictionary_encode(arr)
    return enc.dictionary, enc.indices.to_numpy(zero_copy_only=False).astype(INDEX_DTYPE,
                                                                             copy=False)


def _is_arrow(values: Any) -> bool:
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(values, (pa.Array, pa.ChunkedArray))


def _release_arrow_memory() -> None:
    """Return memory pyarrow's allocator keeps after a parse (frames from ``to_pandas`` live in it),
    and the free pages of the C heap (where the chunks of a parse were), to the system."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` (None elsewhere): freed chunks in the middle of the heap stay
    resident until it is called, which after a chunked parse is as much as the data."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


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
    """Encode raw ids (numpy or pyarrow arrays) and assemble an :class:`Interactions`.

    ``users_raw``/``items_raw`` may also be already encoded, as ``(IdMap, int32 indices)``.
    """
    umap, users = (users_raw if isinstance(users_raw, tuple)
                   else encode_ids(users_raw, what="user"))
    imap, items = (items_raw if isinstance(items_raw, tuple)
                   else encode_ids(items_raw, what="item"))
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

