"""Column validation, vectorised: Python only formats the first offender as a DataError."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from cfrec.data.interactions import RATING_DTYPE, TIME_DTYPE
from cfrec.data.io.readers import _ParquetReader
from cfrec.data.io.roles import _ROLE_WORD
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


def _ids(col: Any, name: str, role: str, reader: Any) -> Any:
    """Raw ids: int64 numpy where every id is a canonical integer, else a pyarrow string array.

    Text ids are read as strings, so ``"007"`` stays ``"007"`` unless every id of the column is
    written as a plain integer (then ``7`` and ``"7"`` are the same id).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    kind = arr.type
    word = _ROLE_WORD[role]

    def missing(text: str | None) -> tuple[str, str, list[OptionHint]]:
        return f"missing id (the field is empty); expected a {word}", f"a {word}", []

    if pa.types.is_dictionary(kind):
        arr = arr.dictionary_decode()
        kind = arr.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if not arr.null_count:
            as_int = _canonical_ints(arr)  # the common case: plain integers, no spaces
            if as_int is not None:
                return as_int
        arr = pc.utf8_trim_whitespace(arr)
        empty = pc.or_kleene(pc.is_null(arr), pc.equal(pc.binary_length(arr), 0))
        if pc.any(empty).as_py():
            j = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
            raise _fail(reader, j, name, role, missing)
        as_int = _canonical_ints(arr)
        return as_int if as_int is not None else arr
    if arr.null_count:
        j = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise _fail(reader, j, name, role, missing)
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if pa.types.is_floating(kind):
        values = arr.to_numpy(zero_copy_only=False)
        whole = np.isfinite(values) & (values == np.round(values))
        if whole.all():
            return values.astype(np.int64)
        j = int(np.flatnonzero(~whole)[0])
        raise _fail(reader, j, name, role, lambda text: (
            f"id {values[j].item()!r} is not a whole number or a string", f"a {word}", []))
    return _ids(pc.cast(arr, pa.string()), name, role, reader)


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


def _ratings(col: Any, name: str, scale: tuple[float, float] | None, scale_source: str,
             reader: Any) -> np.ndarray:
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(
            arr.type):
        values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        if arr.null_count:
            values = np.where(arr.is_null().to_numpy(zero_copy_only=False), np.nan, values)
    else:
        text = arr.to_pandas() if not pa.types.is_null(arr.type) else pd.Series(
            [None] * len(arr), dtype=object)
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    in_scale = f" in [{scale[0]:g}, {scale[1]:g}]" if scale is not None else ""
    bad = ~np.isfinite(values)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])

        def describe(text: str | None) -> tuple[str, str, list[OptionHint]]:
            if text is None and not (isinstance(reader, _ParquetReader)):
                text = ""
            if text is None or text.strip() == "":
                return (f"missing rating (the field is empty); expected a number{in_scale}",
                        f"a number{in_scale}", [])
            note = (" (a decimal comma? write 3.5, not 3,5)"
                    if re.fullmatch(r"\s*\d+,\d+\s*", text) else "")
            return (f"{text.strip()!r} is not a rating; expected a number{in_scale}{note}",
                    f"a number{in_scale}", [])

        raise _fail(reader, j, name, "rating", describe)
    if scale is not None:
        lo, hi = float(scale[0]), float(scale[1])
        out = (values < lo) | (values > hi)
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

            raise _fail(reader, j, name, "rating", describe_out)
    return values.astype(RATING_DTYPE)


def _timestamps(col: Any, name: str, reader: Any) -> np.ndarray:
    """Unix seconds from numbers, Arrow timestamps or ISO-8601 date strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    expected = "Unix seconds or an ISO-8601 date"

    def empty(text: str | None) -> tuple[str, str, list[OptionHint]]:
        if text is not None and text.strip():
            return (f"timestamp {text.strip()!r} is neither {expected}", expected,
                    [option("time_col").hint("False", "none", "ignore time")])
        return f"missing timestamp (the field is empty); expected {expected}", expected, []

    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        if arr.null_count:
            j = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise _fail(reader, j, name, "time", empty)
        secs = pc.cast(pc.cast(arr, pa.timestamp("s", tz=getattr(arr.type, "tz", None)))
                       if pa.types.is_date(arr.type) else arr, pa.timestamp("s"), safe=False)
        return secs.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(TIME_DTYPE)
    if pa.types.is_integer(arr.type):
        if arr.null_count:
            j = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise _fail(reader, j, name, "time", empty)
        return arr.to_numpy(zero_copy_only=False).astype(TIME_DTYPE, copy=False)
    if pa.types.is_floating(arr.type):
        values = arr.to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(values) | (np.abs(values) > 2.0**62)
        if bad.any():
            raise _fail(reader, int(np.flatnonzero(bad)[0]), name, "time", empty)
        return np.floor(values).astype(TIME_DTYPE)
    text = arr.to_pandas() if not pa.types.is_null(arr.type) else pd.Series(
        [None] * len(arr), dtype=object)
    numeric = pd.to_numeric(text, errors="coerce")
    dt = pd.to_datetime(text.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601")
    bad = (dt.isna() & numeric.isna()).to_numpy()
    bad = bad | (numeric.abs() > 2.0**62).fillna(False).to_numpy(dtype=bool)
    if bad.any():
        raise _fail(reader, int(np.flatnonzero(bad)[0]), name, "time", empty)
    seconds = ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("Float64")
    merged = numeric.astype("Float64").fillna(seconds)
    return np.floor(merged.to_numpy(dtype=np.float64)).astype(TIME_DTYPE)


