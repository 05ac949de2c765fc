"""The public loader :func:`load_ratings` and its :class:`LoadReport`."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack, overload

from cfrec.data.interactions import Interactions
from cfrec.data.io.build import _release_arrow_memory, build_interactions
from cfrec.data.io.columns import _resolve_roles
from cfrec.data.io.duplicates import resolve_duplicates
from cfrec.data.io.readers import _ParquetReader, _TextReader
from cfrec.data.io.roles import Role
from cfrec.data.io.source import _data_stem, _inspect
from cfrec.data.io.values import _ids, _ratings, _timestamps
from cfrec.data.options import (
    DuplicatePolicy,
    check_duplicates,
    check_rating_scale,
    option,
    parse_columns,
)
from cfrec.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_ratings` read and what it changed.

    Attributes
    ----------
    path
        The file read.
    rows
        Data rows in the file (header excluded).
    ratings
        Ratings kept after resolving duplicates.
    duplicates_resolved
        Rows merged away by the duplicate policy (``rows - ratings``).
    policy
        The duplicate policy applied.
    users, items
        Distinct users and items.
    columns
        The column read for each role (``{"user": "userId", "item": "movieId", ...}``); no
        ``"time"`` key when the file has no time column.
    header
        Whether the file has a header line (``False``: fields read as user, item, rating[, time]).
    sep
        The field separator used (``""`` for Parquet).
    rating_scale
        The scale the ratings were checked against.
    scale_source
        ``"given"`` (``rating_scale=``), ``"movielens"`` (a release's known scale) or
        ``"inferred"`` (the observed range, which a caller may want to show).
    """

    path: str
    rows: int
    ratings: int
    duplicates_resolved: int
    policy: str
    users: int
    items: int
    columns: dict[str, str] = field(default_factory=dict)
    header: bool = True
    sep: str = ""
    rating_scale: tuple[float, float] | None = None
    scale_source: str = "inferred"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "rows": self.rows, "ratings": self.ratings,
            "duplicates_resolved": self.duplicates_resolved, "policy": self.policy,
            "users": self.users, "items": self.items, "columns": dict(self.columns),
            "header": self.header, "sep": self.sep,
            "rating_scale": None if self.rating_scale is None else list(self.rating_scale),
            "scale_source": self.scale_source,
        }



TimeCol = str | Literal[False] | None


class _LoadOptions(TypedDict, total=False):
    """The keyword options of :func:`load_ratings` other than ``return_report``, typed once for
    both of its overloads (the defaults are the implementation's)."""

    user_col: str | None
    item_col: str | None
    rating_col: str | None
    time_col: TimeCol
    sep: str | None
    columns: Sequence[str] | None
    rating_scale: tuple[float, float] | None
    duplicates: DuplicatePolicy
    encoding: str
    name: str | None
    scale_source: str


@overload
def load_ratings(
    path: str | Path, *, return_report: Literal[False] = ..., **options: Unpack[_LoadOptions]
) -> Interactions: ...


@overload
def load_ratings(
    path: str | Path, *, return_report: Literal[True], **options: Unpack[_LoadOptions]
) -> tuple[Interactions, LoadReport]: ...


def load_ratings(
    path: str | Path,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: TimeCol = None,
    sep: str | None = None,
    columns: Sequence[str] | None = None,
    rating_scale: tuple[float, float] | None = None,
    duplicates: DuplicatePolicy = "last",
    encoding: str = "utf-8",
    name: str | None = None,
    scale_source: str = "given",
    return_report: bool = False,
) -> Interactions | tuple[Interactions, LoadReport]:
    """Load explicit ratings from a CSV, TSV, ``::``-separated or Parquet file.

    Columns are found from the header line: names are compared after stripping spaces and
    quotes, ignoring case, with spaces and hyphens read as ``_``:

    ========  =====================================================================
    role      header names recognised
    ========  =====================================================================
    user      user, user_id, userid (userId, UserID), uid, customer_id
    item      item, item_id, itemid, movieId, movie_id (MovieID), product_id, iid
    rating    rating, ratings, score, stars
    time      timestamp, time, ts, date, datetime (Unix seconds or ISO-8601 dates)
    ========  =====================================================================

    A file whose first line is all numbers has no header: its fields are read as user, item,
    rating and, when there is a fourth, timestamp; this is logged once (a warning). Two header
    names for one role are an error that lists both; ``user_col=`` ... pick one. A time column
    is optional.

    Parameters
    ----------
    path
        The file. Parquet is recognised by its suffix or signature; ``gzip``, ``bz2``, ``xz`` and
        single-file ``zip`` text files are decompressed (by their signature).
    user_col, item_col, rating_col
        Column names for the user id, item id and rating; ``None`` detects them. A name is
        matched exactly, else ignoring case and surrounding spaces.
    time_col
        Column with Unix seconds or ISO dates; ``None`` detects it (no time column means every
        timestamp is 0); ``False`` ignores time.
    sep
        Field separator. ``None`` detects it: ``::`` when the first line has it, otherwise the
        one of ``\\t , ; |`` that splits the first lines into equal field counts (the suffix,
        ``.tsv``/``.csv``, breaks ties), else runs of whitespace.
    columns
        Names of every field of a file without a header line; the roles are then found among
        these names as in a header.
    rating_scale
        ``(low, high)``; ratings outside it are an error naming the line. ``None`` uses the
        observed range (logged at INFO level and reported in :class:`LoadReport`).
    duplicates
        What to do with repeated ``(user, item)`` pairs: ``"last"`` (default) keeps the latest by
        timestamp (the later line on ties, or without time), ``"first"`` the earliest, ``"mean"``
        averages the ratings and keeps the latest timestamp, ``"error"`` raises naming both lines.
    encoding
        Text encoding; ``"utf-8"`` also accepts a byte-order mark.
    name
        Dataset name; defaults to the file name without its extensions.
    scale_source
        How a given ``rating_scale`` is described in errors and the report: ``"given"``, or
        ``"movielens"`` for a release's known scale (used by :func:`~cfrec.data.load_dataset`).
    return_report
        Also return a :class:`LoadReport` (rows read, duplicates resolved, columns used ...).

    Raises
    ------
    DataError
        Missing, empty or binary file; no rating rows; a role without a column, or with two;
        a ragged row; an empty or non-numeric rating, an out-of-scale rating, a missing id, a
        bad timestamp, undecodable bytes, or a duplicate under ``duplicates="error"``. The
        message names the file, the 1-based line, the field and the value found, and ends with
        the option that helps (:meth:`~cfrec.errors.DataError.render` spells it as a CLI flag).
    """
    duplicates = check_duplicates(duplicates)
    scale = None if rating_scale is None else check_rating_scale(rating_scale)
    names = None if columns is None else list(parse_columns(list(columns)))
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError("no such file", path=path)
    if path.is_dir():
        raise DataError("is a folder, expected a ratings file (CSV, TSV or Parquet)", path=path)
    if path.stat().st_size == 0:
        raise DataError("file is empty; expected rating rows (user, item, rating[, timestamp])",
                        path=path)
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}", field="encoding", value=encoding,
                        hints=(option("encoding").hint('"latin-1"', "latin-1"),)) from None

    source = _inspect(path, codec)
    reader: _ParquetReader | _TextReader
    if source.parquet:
        reader = _ParquetReader(path)
    else:
        reader = _TextReader(path, source, sep, names, codec)
    explicit: dict[Role, str | None] = {"user": user_col, "item": item_col,
                                        "rating": rating_col, "time": time_col or None}
    roles = _resolve_roles(reader, explicit, use_time=time_col is not False)
    table = reader.read(roles)
    n_rows = len(table[roles["user"]])
    if n_rows == 0:
        raise DataError("no rating rows after the header" if reader.has_header else
                        "no rating rows", path=path)

    users_raw = _ids(table[roles["user"]], roles["user"], "user", reader)
    items_raw = _ids(table[roles["item"]], roles["item"], "item", reader)
    ratings = _ratings(table[roles["rating"]], roles["rating"], scale, scale_source, reader)
    ts = (_timestamps(table[roles["time"]], roles["time"], reader)
          if "time" in roles else None)
    del table
    _release_arrow_memory()
    if scale is None:
        scale = (float(ratings.min()), float(ratings.max()))
        scale_source = "inferred"
        logger.info("%s: no rating scale given; using the observed range [%g, %g] (pass "
                    "rating_scale=(low, high) to declare it)", path, *scale)

    data = build_interactions(users_raw, items_raw, ratings, ts, rating_scale=scale,
                              name=name if name is not None else _data_stem(path))
    del users_raw, items_raw, ratings, ts
    data, n_resolved = resolve_duplicates(data, duplicates, reader=reader)
    _release_arrow_memory()  # the raw id columns lived in pyarrow's pool
    if n_resolved:
        logger.warning("%s: resolved %d duplicate (user, item) rating%s with duplicates=%r",
                       path, n_resolved, "" if n_resolved == 1 else "s", duplicates)
    if not return_report:
        return data
    report = LoadReport(str(path), n_rows, len(data), n_resolved, duplicates, data.n_users,
                        data.n_items, columns={r: c for r, c in roles.items()},
                        header=reader.has_header, sep=reader.sep_label, rating_scale=scale,
                        scale_source=scale_source)
    return data, report


