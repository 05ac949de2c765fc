"""Column validation, vectorised: Python only formats the first offender as a DataError."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from cfrec.data.interactions import RATING_DTYPE, TIME_DTYPE, WEIGHT_DTYPE
from cfrec.data.io.readers import _ParquetReader
from cfrec.data.io.roles import _ROLE_WORD, Role
from cfrec.data.options import option
from cfrec.errors import DataError, OptionHint


def _fail(reader: Any, row: int, col: str, role: str, describe: Any) -> DataError:
    """The DataError for data row ``row``: a ragged row if it is one, else ``describe(text)``.

    ``describe`` gets the cell's text as written in the file (``None`` when unknown) and returns
    ``(message, expected, hints)``.
    """
    line, found, text = reader.cell(row, col)
    expected_n = reader.expected_fields()
    if found is not None and expected_n is not None and found != expected_n:
        return reader._ragged_error(line, found)
    message, expected, hints = describe(text)
    loc = reader.where(row) if line is None else {"path": reader.path, "line": line,
                                                  "row": row + 1}
    if loc["line"] is None:
        message = f"row {loc['row']}: {message}"
    return DataError(message, path=loc["path"], line=loc["line"], field=col, value=text,
                     expected=expected, hints=tuple(hints))


class _Check:
    """How a column check treats bad values: raise for the first (``skip`` False) or flag them.

    ``ignore`` marks rows that are neither checked nor flagged (entirely empty rows, dropped
    apart); ``reader`` locates a row for the error. Without ``skip``, the checks of a chunk note
    their first bad row and :meth:`raise_first` raises for the earliest of them, so the error
    names the first bad line of the file whatever the chunk size.
    """

    def __init__(self, reader: Any, *, skip: bool = False, ignore: np.ndarray | None = None
                 ) -> None:
        self.reader, self.skip, self.ignore = reader, skip, ignore
        self._first: tuple[int, str, str, Any] | None = None

    def bad(self, mask: np.ndarray, col: str, role: str, describe: Any) -> np.ndarray | None:
        """``mask`` less the ignored rows (``None`` when no row is left)."""
        if self.ignore is not None:
            mask = mask & ~self.ignore
        if not mask.any():
            return None
        if not self.skip:
            row = int(np.argmax(mask))
            if self._first is None or row < self._first[0]:
                self._first = (row, col, role, describe)
        return mask

    def raise_first(self) -> None:
        """Raise the error of the earliest bad row noted (nothing when none was, or skipping)."""
        if self._first is not None:
            row, col, role, describe = self._first
            raise _fail(self.reader, row, col, role, describe)


class _Shifted:
    """A reader seen from a chunk: row ``k`` of the chunk is row ``start + k`` of the file."""

    def __init__(self, reader: Any, start: int) -> None:
        self.reader, self.start, self.path = reader, start, reader.path

    def cell(self, row: int, col: str | None) -> tuple[int | None, int | None, str | None]:
        return self.reader.cell(self.start + row, col)

    def where(self, row: int) -> dict[str, Any]:
        return self.reader.where(self.start + row)

    def expected_fields(self) -> int | None:
        return self.reader.expected_fields()

    def _ragged_error(self, line: int | None, found: int) -> DataError:
        return self.reader._ragged_error(line, found)


def _arrow_column(col: Any) -> Any:
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _empty_rows(cols: list[Any]) -> np.ndarray | None:
    """Rows whose every cell of ``cols`` is missing (``,,`` lines); ``None`` when there are none.

    Costs nothing in the common case: a column without a missing cell rules every row out.
    """
    arrays = [_arrow_column(c) for c in cols]
    if any(a.null_count == 0 for a in arrays):
        return None
    empty = np.logical_and.reduce([np.asarray(a.is_null().to_numpy(zero_copy_only=False),
                                              dtype=bool) for a in arrays])
    return empty if empty.any() else None


def _ids(col: Any, name: str, role: Role, check: _Check) -> tuple[Any, np.ndarray | None]:
    """Raw ids and the rows whose id is bad (``None``: none).

    Ids are int64 numpy where every id is a canonical integer, else a pyarrow string array (with
    nulls at bad rows, for :func:`finish_ids` after those rows are dropped). Text ids are read as
    strings, so ``"007"`` stays ``"007"`` unless every id of the column is written as a plain
    integer (then ``7`` and ``"7"`` are the same id).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _arrow_column(col)
    kind = arr.type
    word = _ROLE_WORD[role]

    def missing(text: str | None) -> tuple[str, str, list[OptionHint]]:
        return f"missing id (the field is empty); expected a {word}", f"a {word}", []

    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if not arr.null_count:
            as_int = _canonical_ints(arr)  # the common case: plain integers, no spaces
            if as_int is not None:
                return as_int, None
        arr = pc.utf8_trim_whitespace(arr)
        empty = pc.or_kleene(pc.is_null(arr), pc.equal(pc.binary_length(arr), 0))
        if pc.any(empty).as_py():
            empty_np = np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
            bad = check.bad(empty_np, name, role, missing)
            return pc.if_else(empty, pa.scalar(None, arr.type), arr), bad
        as_int = _canonical_ints(arr)
        return (as_int if as_int is not None else arr), None
    if arr.null_count:
        nulls = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        bad = check.bad(nulls, name, role, missing)
        values = pc.fill_null(arr, 0) if not pa.types.is_null(kind) else pa.array(
            np.zeros(len(arr), dtype=np.int64))
        out, more = _ids(values, name, role, check)
        return out, bad if more is None else (more if bad is None else bad | more)
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), None
    if pa.types.is_floating(kind):
        values = arr.to_numpy(zero_copy_only=False)
        whole = np.isfinite(values) & (values == np.round(values))
        if whole.all():
            return values.astype(np.int64), None
        j = int(np.flatnonzero(~whole)[0])
        bad = check.bad(~whole, name, role, lambda text: (
            f"id {values[j].item()!r} is not a whole number or a string", f"a {word}", []))
        return np.where(whole, values, 0).astype(np.int64), bad
    return _ids(pc.cast(arr, pa.string()), name, role, check)


def finish_ids(values: Any) -> Any:
    """Ids kept after bad rows were dropped: int64 when every one is a plain integer."""
    if isinstance(values, np.ndarray):
        return values
    as_int = _canonical_ints(values)
    return as_int if as_int is not None else values


_POW10 = 10 ** np.arange(19, dtype=np.int64)


def _canonical_ints(arr: Any) -> np.ndarray | None:
    """int64 values of a string array when every string is a plain integer (no ``+``, ``007``).

    The check is arithmetic: each string's byte length must equal its number's digit count
    (plus one for a minus sign), which rules out signs, leading zeros and spaces.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        # a failing cast of a whole column is slow (seconds for 1M strings): try a slice first
        pc.cast(arr.slice(0, 1024), pa.int64())
        values = pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if not len(values):
        return values.astype(np.int64)
    lo = int(values.min())
    if lo == np.iinfo(np.int64).min:
        return None
    mag = values if lo >= 0 else np.abs(values)
    digits = np.ones(len(values), dtype=np.int64)  # digit count, one comparison per decimal place
    top = int(mag.max())
    for power in _POW10[1:]:
        if power > top:
            break
        digits += mag >= power
    if lo < 0:
        digits += values < 0
    lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False)
    if not np.array_equal(digits, lengths):
        return None
    return values


def _cast(arr: Any, kind: Any) -> Any:
    """``arr`` cast to ``kind``, or ``None`` when some value does not convert (a failing cast of
    a long column is slow, so a slice is tried first)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.cast(arr.slice(0, 1024), kind)
        return pc.cast(arr, kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _text_cast(arr: Any, *kinds: Any) -> Any:
    """A text column cast to the first of ``kinds`` that every value converts to (numbers read
    as text: cast in C); any other column, or text that converts to none of them, as it is."""
    import pyarrow as pa

    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        for kind in kinds:
            typed = _cast(arr, kind)
            if typed is not None:
                return typed
    return arr


def _numbers(col: Any) -> np.ndarray:
    """float64 values of a column, NaN where a cell is empty or not a number."""
    import pyarrow as pa

    arr = _text_cast(_arrow_column(col), pa.float64(), pa.bool_())
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(
            arr.type):
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        if arr.null_count:
            values = np.where(arr.is_null().to_numpy(zero_copy_only=False), np.nan, values)
        return values
    text = arr.to_pandas() if not pa.types.is_null(arr.type) else pd.Series(
        [None] * len(arr), dtype=object)
    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _not_a_number(what: str, expected: str, reader: Any) -> Any:
    """``describe`` for a cell that is empty or not a number."""
    def describe(text: str | None) -> tuple[str, str, list[OptionHint]]:
        if text is None and not isinstance(getattr(reader, "reader", reader), _ParquetReader):
            text = ""
        if text is None or text.strip() == "":
            return (f"missing {what} (the field is empty); expected {expected}", expected, [])
        note = (" (a decimal comma? write 3.5, not 3,5)"
                if re.fullmatch(r"\s*\d+,\d+\s*", text) else "")
        return (f"{text.strip()!r} is not a {what}; expected {expected}{note}", expected, [])
    return describe


def _ratings(col: Any, name: str, scale: tuple[float, float] | None, scale_source: str,
             check: _Check, implicit_value: float | None = None
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Ratings (float32), the rows with a bad one, and the rows holding ``implicit_value``.

    Rows rated ``implicit_value`` ("interacted, not rated") are not checked against the scale.
    """
    values = _numbers(col)
    in_scale = f" in [{scale[0]:g}, {scale[1]:g}]" if scale is not None else ""
    finite = np.isfinite(values)
    bad = None if finite.all() else check.bad(
        ~finite, name, "rating", _not_a_number("rating", f"a number{in_scale}", check.reader))
    unrated = None
    if implicit_value is not None:
        unrated = values == implicit_value
        if check.ignore is not None:
            unrated &= ~check.ignore
        unrated = unrated if unrated.any() else None
    if scale is not None:
        lo, hi = float(scale[0]), float(scale[1])
        out = finite & ((values < lo) | (values > hi))
        if unrated is not None:
            out &= ~unrated
        if check.ignore is not None:
            out &= ~check.ignore
        if out.any():
            j = int(np.flatnonzero(out)[0])
            which = "the rating scale" if scale_source != "movielens" else "the MovieLens scale"
            value = values[j]
            hint = option("rating_scale").hint(
                f"({min(lo, value):g}, {max(hi, value):g})", f"{min(lo, value):g},"
                f"{max(hi, value):g}", "declare a wider scale")

            def describe_out(text: str | None) -> tuple[str, str, list[OptionHint]]:
                return (f"rating {value:g} is outside {which} [{lo:g}, {hi:g}]",
                        f"a number in [{lo:g}, {hi:g}]", [hint])

            more = check.bad(out, name, "rating", describe_out)
            bad = more if bad is None else (bad if more is None else bad | more)
    return (np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(RATING_DTYPE), bad,
            unrated)


def _weights(col: Any, name: str, check: _Check) -> tuple[np.ndarray, np.ndarray | None]:
    """Interaction weights (float32, finite, >= 0) and the rows with a bad one."""
    values = _numbers(col)
    finite = np.isfinite(values)
    bad = None if finite.all() else check.bad(
        ~finite, name, "weight", _not_a_number("weight", "a number >= 0", check.reader))
    negative = finite & (values < 0)
    if negative.any():
        value = values[int(np.flatnonzero(negative)[0])]
        more = check.bad(negative, name, "weight", lambda text: (
            f"weight {value:g} is negative; expected a count or weight >= 0", "a number >= 0", []))
        bad = more if bad is None else (bad if more is None else bad | more)
    return np.nan_to_num(values, nan=0.0).clip(0).astype(WEIGHT_DTYPE), bad


def _timestamps(col: Any, name: str, check: _Check) -> tuple[np.ndarray, np.ndarray | None]:
    """Unix seconds from numbers, Arrow timestamps or ISO-8601 date strings, and bad rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _text_cast(_arrow_column(col), pa.int64(), pa.float64())
    expected = "Unix seconds or an ISO-8601 date"

    def empty(text: str | None) -> tuple[str, str, list[OptionHint]]:
        if text is not None and text.strip():
            return (f"timestamp {text.strip()!r} is neither {expected}", expected,
                    [option("time_col").hint("False", "none", "ignore time")])
        return f"missing timestamp (the field is empty); expected {expected}", expected, []

    def nulls() -> np.ndarray | None:
        return check.bad(np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool),
                         name, "time", empty)

    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        bad = nulls() if arr.null_count else None
        secs = pc.cast(pc.cast(arr, pa.timestamp("s", tz=getattr(arr.type, "tz", None)))
                       if pa.types.is_date(arr.type) else arr, pa.timestamp("s"), safe=False)
        out = pc.fill_null(secs.cast(pa.int64()), 0)
        return out.to_numpy(zero_copy_only=False).astype(TIME_DTYPE), bad
    if pa.types.is_integer(arr.type):
        if arr.null_count:
            bad = nulls()
            return pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(TIME_DTYPE), bad
        return arr.to_numpy(zero_copy_only=False).astype(TIME_DTYPE, copy=False), None
    if pa.types.is_floating(arr.type):
        values = arr.to_numpy(zero_copy_only=False)
        wrong = ~np.isfinite(values) | (np.abs(values) > 2.0**62)
        bad = check.bad(wrong, name, "time", empty) if wrong.any() else None
        return np.floor(np.where(wrong, 0.0, values)).astype(TIME_DTYPE), bad
    text = arr.to_pandas() if not pa.types.is_null(arr.type) else pd.Series(
        [None] * len(arr), dtype=object)
    numeric = pd.to_numeric(text, errors="coerce")
    dt = pd.to_datetime(text.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601")
    wrong = (dt.isna() & numeric.isna()).to_numpy()
    wrong = wrong | (numeric.abs() > 2.0**62).fillna(False).to_numpy(dtype=bool)
    bad = check.bad(wrong, name, "time", empty) if wrong.any() else None
    seconds = ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("Float64")
    merged = numeric.astype("Float64").fillna(seconds).fillna(0.0)
    merged = merged.where(~wrong, 0.0)
    return np.floor(merged.to_numpy(dtype=np.float64)).astype(TIME_DTYPE), bad
