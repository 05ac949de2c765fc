"""Id vocabulary: raw user/item ids <-> dense int32 indices."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import pandas as pd

from cfrec.errors import DataError, UnknownIdError

INDEX_DTYPE = np.int32
#: Lookups of at most this many ids go through :meth:`IdMap.index_of` (a dict) one by one: a
#: pandas or Arrow hash lookup costs tens of microseconds whatever the length.
SMALL_LOOKUP = 16
#: The one text form of an integer id: an optional minus sign and digits without leading zeros
#: (``"50"``, ``"-3"``, ``"0"``); ``"050"``, ``"+50"``, ``"5e1"``, ``" 50"`` or ``"50\\n"`` are
#: other ids, never a guess at an integer one.
_INT_TEXT = re.compile(r"0|-?[1-9][0-9]{0,999}")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class IdMap:
    """A frozen, sorted vocabulary of raw ids (ints or strings).

    Raw ids are what users see (MovieLens ``userId``); indices ``0..n-1`` are what models use.
    Integer ids are kept as int64 and looked up through a pandas hash index. String ids are kept
    as an object array of Python ``str`` (never numpy's fixed-width unicode, which drops trailing
    NUL characters, so ``"\\x00"`` would come back as ``""``) and looked up through pyarrow's
    hash kernels, which are several times faster than hashing Python objects.

    Parameters
    ----------
    raw_ids
        Any iterable of raw ids; duplicates are removed and the rest sorted (strings by code
        point).
    """

    __slots__ = ("_arrow", "_dict", "_ids", "_index")
    _ids: np.ndarray            # sorted unique raw ids: int64, or object (Python str)
    _index: pd.Index | None     # pandas hash index, built on the first lookup that needs it
    _arrow: Any                 # the string ids as an Arrow array, for Arrow hash lookups
    _dict: dict[Any, int] | None  # raw id -> index, built on the first scalar lookup

    def __init__(self, raw_ids: Iterable[Any] | np.ndarray) -> None:
        values = raw_ids if isinstance(raw_ids, np.ndarray) else _from_iterable(raw_ids)
        if values.dtype.kind in "iub":
            arr = np.sort(pd.unique(values.astype(np.int64, copy=False)))
        elif values.dtype.kind == "f":
            arr = np.sort(pd.unique(values))
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise DataError("float ids must be whole numbers (and not missing)")
            arr = arr.astype(np.int64)
        else:
            arrow = _strings_to_arrow(values) if len(values) > 64 else None
            if arrow is not None:
                import pyarrow.compute as pc

                uniques = pc.unique(arrow)
                # UTF-8 byte order is code-point order, so Arrow's sort agrees with Python's
                uniques = uniques.take(pc.sort_indices(uniques))
                self._set(uniques.to_numpy(zero_copy_only=False))
                self._arrow = uniques
                return
            arr = _sorted_unique_strings(_as_str_objects(values))
        self._set(arr)

    def _set(self, ids: np.ndarray) -> None:
        self._ids = ids
        self._index = None
        self._arrow = None
        self._dict = None

    @classmethod
    def from_sorted_unique(cls, ids: np.ndarray) -> IdMap:
        """Build from ids already sorted and unique (skips the sort)."""
        obj = cls.__new__(cls)
        obj._set(ids)
        return obj

    @classmethod
    def encode(cls, raw: Any, *, what: str = "id") -> tuple[IdMap, np.ndarray]:
        """The vocabulary of ``raw`` and the int32 index of every element, in one pass.

        String ids are converted to Arrow once and reused for both steps; other ids go through
        the constructor and :meth:`to_index`.
        """
        arrow = None
        if _is_arrow(raw):  # a pyarrow string array straight from a parser: no Python objects
            import pyarrow as pa

            arrow = _single_array(raw.cast(pa.string()) if len(raw) else raw)
        else:
            raw = np.asarray(raw) if not isinstance(raw, np.ndarray) else raw
            if raw.dtype.kind in "OUS" and len(raw):
                arrow = _strings_to_arrow(raw)
        if arrow is not None:
            import pyarrow.compute as pc

            # one hash pass gives the distinct ids and each row's code; sorting the (small)
            # dictionary and relabelling the codes is cheaper than a second hash lookup
            encoded = pc.dictionary_encode(arrow)
            order = pc.sort_indices(encoded.dictionary)
            uniques = encoded.dictionary.take(order)
            rank = np.empty(len(order), dtype=INDEX_DTYPE)
            rank[order.to_numpy(zero_copy_only=False)] = np.arange(len(order), dtype=INDEX_DTYPE)
            vocab = cls.from_sorted_unique(uniques.to_numpy(zero_copy_only=False))
            vocab._arrow = uniques
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            return vocab, rank[codes]
        vocab = cls(raw)
        return vocab, vocab.to_index(raw, what=what)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw: object) -> bool:
        try:
            return raw in self._hash_index()
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

    def _hash_index(self) -> pd.Index:
        if self._index is None:
            self._index = pd.Index(self._ids, dtype=self._ids.dtype)
        return self._index

    @property
    def ids(self) -> np.ndarray:
        """The raw ids in index order (read-only view)."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    @property
    def is_numeric(self) -> bool:
        return self._ids.dtype.kind in "iu"

    def index_of(self, raw: Any, *, missing: Literal["raise", "-1"] = "-1", what: str = "id") -> int:
        """Index of one raw id: a dict lookup of well under a microsecond, for paths that look
        up one id at a time (a request, one user).

        Agrees with :meth:`to_index`: the canonical text of an integer (``"50"``, not ``"050"``,
        ``"+50"``, ``"5e1"`` or ``" 50"``) finds an integer id, an integer finds a string id
        (``50`` -> ``"50"``); any other form of an id is looked up by :meth:`to_index` itself. An unknown id gives -1, or with ``missing="raise"``
        :class:`UnknownIdError` worded as :meth:`to_index` words it.
        """
        i = self._index_of(raw)
        if i < 0 and missing == "raise":
            raise _unknown_id(raw, what, self.is_numeric)
        return i

    def raw_id(self, index: int) -> Any:
        """The raw id of one index as a plain Python ``int`` or ``str`` (for JSON)."""
        value = self._ids[index]
        return value.item() if isinstance(value, np.generic) else value

    def _index_of(self, raw: Any) -> int:
        table = self._dict
        if table is None:
            # built once; concurrent first calls build equal dicts and one of them is kept
            table = self._dict = {v: i for i, v in enumerate(self._ids.tolist())}
        kind = type(raw)
        if kind is int or kind is str:  # the usual case: a known id, of the vocabulary's type
            found = table.get(raw)      # (int keys and str keys never equal each other)
            if found is not None:
                return found
        if isinstance(raw, np.generic):
            raw = raw.item()
        key: Any = raw
        if self._ids.dtype.kind in "iu":
            if isinstance(raw, str):
                if not _INT_TEXT.fullmatch(raw):
                    return -1
                key = int(raw)
            elif isinstance(raw, bool) or not isinstance(raw, int):
                return self._index_of_slow(raw)
        elif isinstance(raw, int) and not isinstance(raw, bool):
            key = str(raw)
        elif not isinstance(raw, str):
            return self._index_of_slow(raw)
        return table.get(key, -1)

    def _index_of_slow(self, raw: Any) -> int:
        values = np.empty(1, dtype=object)
        values[0] = raw
        return int(self._lookup(values)[0])

    def to_index(
        self, raw: Any, *, missing: Literal["raise", "-1"] = "raise", what: str = "id"
    ) -> np.ndarray:
        """Map raw ids (scalar or array) to int32 indices.

        Parameters
        ----------
        raw
            One raw id or a sequence/array of them. Integer ids given as their canonical text
            (``"12"``; not ``"012"``, ``"+12"``, ``"1.2e1"`` or ``" 12"``) or as whole floats are
            found in an integer vocabulary, and integers in a string one (``12`` -> ``"12"``).
        missing
            ``"raise"`` raises :class:`UnknownIdError` naming the first unknown id;
            ``"-1"`` marks unknown ids with -1.
        what
            Word used in the error message ("user", "item").
        """
        scalar = np.ndim(raw) == 0 if not isinstance(raw, str) else True
        values = (_query_values(raw) if self._ids.dtype == object
                  else np.atleast_1d(np.asarray(raw)))
        if len(values) <= SMALL_LOOKUP and values.dtype.kind in "iuOU":
            idx = np.fromiter((self._index_of(v) for v in values.tolist()), dtype=INDEX_DTYPE,
                              count=len(values))
        else:
            idx = self._lookup(values)
        if missing == "raise" and (idx < 0).any():
            raise _unknown_id(values[np.flatnonzero(idx < 0)[0]], what, self.is_numeric)
        return idx[0] if scalar else idx

    def _lookup(self, values: np.ndarray) -> np.ndarray:
        """int32 indices of an array of raw ids (-1 where unknown), by a vectorised hash lookup."""
        if self._ids.dtype == object:
            return self._string_lookup(values)
        valid = None
        if self._ids.dtype.kind in "iu" and values.dtype.kind not in "iu":
            values, valid = _coerce_numeric(values)
        idx = self._hash_index().get_indexer(_as_index(values)).astype(INDEX_DTYPE, copy=False)
        if valid is not None:
            idx[~valid] = -1
        return idx

    def _string_lookup(self, values: np.ndarray) -> np.ndarray:
        """int32 indices of ``values`` (an array; non-strings are looked up as their text)."""
        if len(self._ids) == 0 or len(values) == 0:
            return np.full(len(values), -1, dtype=INDEX_DTYPE)
        query = _strings_to_arrow(values) if len(values) > 64 else None
        if query is not None:
            if self._arrow is None:
                self._arrow = _strings_to_arrow(self._ids)
            if self._arrow is not None:
                import pyarrow.compute as pc

                if query.type != self._arrow.type:
                    query = query.cast(self._arrow.type)
                found = pc.index_in(query, value_set=self._arrow)
                return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(
                    INDEX_DTYPE, copy=False)
        keys = _as_str_objects(values)
        return self._hash_index().get_indexer(_as_index(keys)).astype(INDEX_DTYPE, copy=False)

    def to_raw(self, idx: Any) -> np.ndarray:
        """Map indices back to raw ids."""
        return self._ids[np.asarray(idx)]

    def to_list(self) -> list[Any]:
        """Raw ids as plain Python values (for JSON)."""
        return self._ids.tolist()

    @classmethod
    def from_list(cls, values: list[Any]) -> IdMap:
        """Rebuild a vocabulary from :meth:`to_list` output (skips the sort when already sorted)."""
        arr = _from_iterable(values)
        if arr.dtype.kind in "iub":
            arr = arr.astype(np.int64)
        else:
            arr = _as_str_objects(arr)
        if len(arr) > 1 and not bool(np.all(arr[1:] > arr[:-1])):
            return cls(arr)
        return cls.from_sorted_unique(arr)


def _unknown_id(bad: Any, what: str, numeric: bool) -> UnknownIdError:
    """The error for an id the vocabulary does not hold: ``unknown user id 42``."""
    bad = bad.item() if isinstance(bad, np.generic) else bad  # 42, not np.int64(42)
    if numeric and isinstance(bad, str) and _INT_TEXT.fullmatch(bad):
        bad = int(bad)  # the integer the text spells, as it was looked up
    label = "id" if what == "id" else f"{what} id"
    return UnknownIdError(f"unknown {label} {bad!r}")


def _is_arrow(values: Any) -> bool:
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(values, (pa.Array, pa.ChunkedArray))


def _from_iterable(raw_ids: Iterable[Any]) -> np.ndarray:
    """An array of ``raw_ids`` that keeps strings as Python objects (never fixed-width unicode).

    Lists of ints become int64 and lists of floats float64; anything holding a string (or a mix)
    becomes an object array.
    """
    items = raw_ids if isinstance(raw_ids, list) else list(raw_ids)
    if not items:
        return np.array([], dtype=np.int64)
    kind = pd.api.types.infer_dtype(items, skipna=False)
    if kind == "integer":
        return np.asarray(items, dtype=np.int64)
    if kind == "boolean":
        return np.asarray(items, dtype=np.int64)
    if kind in ("floating", "mixed-integer-float"):
        return np.asarray(items, dtype=np.float64)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _as_str_objects(values: np.ndarray) -> np.ndarray:
    """``values`` as an object array of Python ``str`` (numbers become their text)."""
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    return pd.Series(values, dtype=object).astype(str).to_numpy(dtype=object)


def _sorted_unique_strings(values: np.ndarray) -> np.ndarray:
    """Sorted unique strings of an object array of str (code-point order, as Python sorts)."""
    uniq = pd.unique(values)
    out = np.empty(len(uniq), dtype=object)
    out[:] = sorted(uniq)
    return out


def _strings_to_arrow(values: np.ndarray) -> Any:
    """An Arrow string array of ``values``, or None when Arrow cannot hold them as text.

    An object array of ``str`` converts directly (no type inference pass over Python objects);
    numbers and other objects are first turned into their text, as the pandas path does. Strings
    with lone surrogates cannot be UTF-8 encoded; those return None and take the pandas path.
    """
    import pyarrow as pa

    errors = (pa.ArrowException, UnicodeEncodeError, TypeError, ValueError)
    if values.dtype == object:
        try:
            arrow = pa.array(values, type=pa.string(), from_pandas=False)
            if not arrow.null_count:
                return _single_array(arrow)
        except errors:
            pass
    try:
        return _single_array(pa.array(_as_str_objects(values), type=pa.string(),
                                      from_pandas=False))
    except errors:
        return None


def _single_array(arrow: Any) -> Any:
    """One contiguous Arrow array: ``string`` (32-bit offsets, faster to hash) when the text
    fits in 2 GiB, else ``large_string``."""
    import pyarrow as pa

    if isinstance(arrow, pa.ChunkedArray):
        if arrow.num_chunks == 1:
            return arrow.chunk(0)
        try:
            return arrow.combine_chunks()
        except pa.ArrowException:  # offsets overflow: more than 2 GiB of text
            return arrow.cast(pa.large_string()).combine_chunks()
    return arrow


def _query_values(raw: Any) -> np.ndarray:
    """Lookup keys for a string vocabulary as an array, keeping every character of ``str``s."""
    if isinstance(raw, str) or (not isinstance(raw, np.ndarray) and np.ndim(raw) == 0):
        out = np.empty(1, dtype=object)
        out[0] = raw
        return out
    if isinstance(raw, np.ndarray):
        return np.atleast_1d(raw)
    return _from_iterable(raw)


def _coerce_numeric(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys for an integer vocabulary: ``(int64 keys, valid)``. Whole floats (``12.0``), integers
    and the canonical text of an integer (``"12"``) are valid; any other text (``"012"``,
    ``"1e1"``, ``" 12"``), a fraction, NaN or another object is not (it misses)."""
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(values) & (values == np.round(values)) & (
                np.abs(values) < 2.0**63)
        out = np.zeros(len(values), dtype=np.int64)
        out[valid] = values[valid].astype(np.int64)
        return out, valid
    if values.dtype.kind == "b":
        return values.astype(np.int64), np.ones(len(values), dtype=bool)
    keys = [_int_key(v) for v in values.tolist()]
    valid = np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys))
    out = np.fromiter((0 if k is None else k for k in keys), dtype=np.int64, count=len(keys))
    return out, valid


def _int_key(value: Any) -> int | None:
    """The integer id ``value`` names in an integer vocabulary, or None (see :func:`_coerce_numeric`)."""
    if isinstance(value, str):
        if not _INT_TEXT.fullmatch(value):
            return None
        value = int(value)
    elif isinstance(value, float):
        if not (math.isfinite(value) and value == round(value)):
            return None
        value = int(value)
    elif isinstance(value, np.generic):
        return _int_key(value.item())
    elif not isinstance(value, int):  # bool is an int (True is 1), as numpy and pandas read it
        return None
    return int(value) if _INT64_MIN <= value <= _INT64_MAX else None


def _as_index(values: np.ndarray) -> pd.Index:
    """``values`` as a pandas Index of the same dtype (no copy for numeric arrays)."""
    return pd.Index(values, dtype=values.dtype, copy=False)
