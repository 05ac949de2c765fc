"""Id vocabulary: raw user/item ids <-> dense int32 indices."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import pandas as pd

from cfrec.errors import DataError, UnknownIdError

INDEX_DTYPE = np.int32


class IdMap:
    """A frozen, sorted vocabulary of raw ids (ints or strings).

    Raw ids are what users see (MovieLens ``userId``); indices ``0..n-1`` are what models use.
    Lookups are vectorised through a pandas hash index.

    Parameters
    ----------
    raw_ids
        Any iterable of raw ids; duplicates are removed and the rest sorted.
    """

    __slots__ = ("_ids", "_index")

    def __init__(self, raw_ids: Iterable[Any] | np.ndarray) -> None:
        values = raw_ids if isinstance(raw_ids, np.ndarray) else np.asarray(list(raw_ids))
        if values.dtype.kind in "iuf":
            arr = np.unique(values)
        else:
            arr = np.sort(np.asarray(pd.unique(pd.Series(values.astype(str))), dtype=object))
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind in "OUS":
            arr = arr.astype(str).astype(object)
        elif arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise DataError("float ids must be whole numbers (and not missing)")
            arr = arr.astype(np.int64)
        self._ids: np.ndarray = arr
        self._index = pd.Index(arr)

    @classmethod
    def from_sorted_unique(cls, ids: np.ndarray) -> IdMap:
        """Build from ids already sorted and unique (skips the sort)."""
        obj = cls.__new__(cls)
        obj._ids = ids
        obj._index = pd.Index(ids)
        return obj

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw: object) -> bool:
        try:
            return raw in self._index
        except TypeError:
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and len(self) == len(other) and bool(
            np.array_equal(self._ids, other._ids)
        )

    def __hash__(self) -> int:
        return hash((len(self._ids), str(self._ids[:5])))

    def __repr__(self) -> str:
        head = ", ".join(map(str, self._ids[:3]))
        return f"IdMap(n={len(self)}, ids=[{head}{', ...' if len(self) > 3 else ''}])"

    @property
    def ids(self) -> np.ndarray:
        """The raw ids in index order (read-only view)."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    @property
    def is_numeric(self) -> bool:
        return self._ids.dtype.kind in "iu"

    def to_index(
        self, raw: Any, *, missing: Literal["raise", "-1"] = "raise", what: str = "id"
    ) -> np.ndarray:
        """Map raw ids (scalar or array) to int32 indices.

        Parameters
        ----------
        missing
            ``"raise"`` raises :class:`UnknownIdError` naming the first unknown id;
            ``"-1"`` marks unknown ids with -1.
        what
            Word used in the error message ("user", "item").
        """
        scalar = np.ndim(raw) == 0
        values = np.atleast_1d(np.asarray(raw))
        if self._ids.dtype == object and values.dtype != object:
            values = values.astype(str).astype(object)
        elif self._ids.dtype.kind in "iu" and values.dtype.kind not in "iu":
            values = _coerce_numeric(values)
        idx = self._index.get_indexer(values).astype(INDEX_DTYPE, copy=False)
        if missing == "raise" and (idx < 0).any():
            bad = values[np.flatnonzero(idx < 0)[0]]
            bad = bad.item() if isinstance(bad, np.generic) else bad  # 42, not np.int64(42)
            label = "id" if what == "id" else f"{what} id"
            raise UnknownIdError(f"unknown {label} {bad!r}")
        return idx[0] if scalar else idx

    def to_raw(self, idx: Any) -> np.ndarray:
        """Map indices back to raw ids."""
        return self._ids[np.asarray(idx)]

    def to_list(self) -> list[Any]:
        """Raw ids as plain Python values (for JSON)."""
        return self._ids.tolist()

    @classmethod
    def from_list(cls, values: list[Any]) -> IdMap:
        arr = np.asarray(values)
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        else:
            arr = arr.astype(str).astype(object)
        if len(arr) > 1 and not bool(np.all(arr[1:] > arr[:-1])):
            return cls(arr)
        return cls.from_sorted_unique(arr)


def _coerce_numeric(values: np.ndarray) -> np.ndarray:
    """Turn strings like "12" or floats like 12.0 into int64 where possible; keep others (they miss)."""
    out = np.full(len(values), np.iinfo(np.int64).min, dtype=np.int64)
    for i, v in enumerate(values):  # only reached for non-integer input, typically a handful of ids
        try:
            f = float(v)
            if f == int(f):
                out[i] = int(f)
        except (TypeError, ValueError):
            pass
    return out
