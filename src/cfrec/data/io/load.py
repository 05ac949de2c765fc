"""The public loader :func:`load_ratings` and its :class:`LoadReport`."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack, overload

import numpy as np

from cfrec.data.interactions import (
    IMPLICIT_SCALE,
    RATING_DTYPE,
    TIME_DTYPE,
    WEIGHT_DTYPE,
    Interactions,
)
from cfrec.data.io.build import IdPieces, _release_arrow_memory, build_interactions
from cfrec.data.io.columns import _resolve_roles
from cfrec.data.io.duplicates import aggregate_interactions, resolve_duplicates
from cfrec.data.io.guard import check_estimate, input_limit, parse_size
from cfrec.data.io.readers import UseAnotherParser, _ParquetReader, _TextReader
from cfrec.data.io.roles import Role
from cfrec.data.io.source import _data_stem, _inspect
from cfrec.data.io.values import (
    _Check,
    _empty_rows,
    _ids,
    _ratings,
    _Shifted,
    _timestamps,
    _weights,
    finish_ids,
)
from cfrec.data.options import (
    BAD_ROW_POLICIES,
    FEEDBACK_KINDS,
    BadRowPolicy,
    DuplicatePolicy,
    Feedback,
    check_choice,
    check_duplicates,
    check_rating_scale,
    option,
    parse_columns,
    parse_implicit_value,
)
from cfrec.errors import DataError

logger = logging.getLogger(__name__)

#: How many skipped lines a report names.
NAMED_LINES = 5
#: Bytes of text parsed at a time: memory beyond the loaded arrays stays about this size.
DEFAULT_CHUNK_BYTES = 1 << 23


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_ratings` read and what it changed.

    Attributes
    ----------
    path
        The file read.
    rows
        Data rows in the file (header excluded; rows the parser skipped for their field count
        included).
    ratings
        Rows kept: ratings after resolving duplicates, or ``(user, item)`` pairs of
        interactions after aggregating repeated events.
    duplicates_resolved
        Rows merged away: by the duplicate policy (ratings) or by aggregation (interactions).
    policy
        The duplicate policy applied (ratings), or ``"aggregate"`` (interactions).
    users, items
        Distinct users and items.
    columns
        The column read for each role (``{"user": "userId", "item": "movieId", ...}``); no
        ``"time"`` key when the file has no time column, a ``"weight"`` key for a weight column.
    header
        Whether the file has a header line (``False``: fields read as user, item, rating, time).
    sep
        The field separator used (``""`` for Parquet).
    rating_scale
        The scale the ratings were checked against (``(0, 1)`` for interactions).
    scale_source
        ``"given"`` (``rating_scale=``), ``"movielens"`` (a release's known scale),
        ``"inferred"`` (the observed range, which a caller may want to show) or ``"implicit"``.
    feedback
        ``"explicit"`` (ratings) or ``"implicit"`` (interactions).
    aggregation
        For interactions, how each pair's weight was made: ``"count"`` (events per pair) or
        ``"sum of <column>"``; ``None`` for ratings.
    skipped_rows
        Malformed rows skipped under ``on_bad_rows="skip"``.
    skipped_lines
        The first few of them: 1-based lines (Parquet: row numbers).
    empty_rows
        Rows with every field read empty (``,,``), dropped.
    unrated_rows
        Rows rated ``implicit_value`` ("interacted, not rated"), dropped from ratings.
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
    feedback: str = "explicit"
    aggregation: str | None = None
    skipped_rows: int = 0
    skipped_lines: tuple[int, ...] = ()
    empty_rows: int = 0
    unrated_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "rows": self.rows, "ratings": self.ratings,
            "duplicates_resolved": self.duplicates_resolved, "policy": self.policy,
            "users": self.users, "items": self.items, "columns": dict(self.columns),
            "header": self.header, "sep": self.sep,
            "rating_scale": None if self.rating_scale is None else list(self.rating_scale),
            "scale_source": self.scale_source, "feedback": self.feedback,
            "aggregation": self.aggregation, "skipped_rows": self.skipped_rows,
            "skipped_lines": list(self.skipped_lines), "empty_rows": self.empty_rows,
            "unrated_rows": self.unrated_rows,
        }


TimeCol = str | Literal[False] | None


class _LoadOptions(TypedDict, total=False):
    """The keyword options of :func:`load_ratings` other than ``return_report``, typed once for
    both of its overloads (the defaults are the implementation's)."""

    user_col: str | None
    item_col: str | None
    rating_col: str | None
    time_col: TimeCol
    weight_col: str | None
    sep: str | None
    columns: Sequence[str] | None
    rating_scale: tuple[float, float] | None
    duplicates: DuplicatePolicy
    encoding: str
    name: str | None
    scale_source: str
    feedback: Feedback
    implicit_value: float | None
    on_bad_rows: BadRowPolicy
    max_input_size: int | str | None
    chunk_bytes: int | None


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
    weight_col: str | None = None,
    sep: str | None = None,
    columns: Sequence[str] | None = None,
    rating_scale: tuple[float, float] | None = None,
    duplicates: DuplicatePolicy = "last",
    encoding: str = "utf-8",
    name: str | None = None,
    scale_source: str = "given",
    feedback: Feedback = "auto",
    implicit_value: float | None = None,
    on_bad_rows: BadRowPolicy = "error",
    max_input_size: int | str | None = None,
    chunk_bytes: int | None = None,
    return_report: bool = False,
) -> Interactions | tuple[Interactions, LoadReport]:
    """Load ratings or interactions from a CSV, TSV, ``::``-separated or Parquet file.

    Columns are found from the header line, by the words of each name (any case; see
    :mod:`cfrec.data.io.roles` and ``docs/data-files.md``):

    ========  =====================================================================
    role      header names recognised (examples)
    ========  =====================================================================
    user      user, user_id, userId, User-ID, uid, customer_id, member, visitor
    item      item, movieId, ISBN, artistID, product, sku, asin, track, song, book ...
    rating    rating, Book-Rating, score, stars
    time      timestamp, time, ts, date, datetime (Unix seconds or ISO-8601 dates)
    weight    count, plays, playcount, weight, quantity, qty, clicks, views, n, dwell_time
    ========  =====================================================================

    A file with a rating column holds ratings (``feedback="explicit"``); one without holds
    interactions (``"implicit"``): each ``(user, item)`` pair becomes one row whose weight is the
    number of its events, or the sum of the weight column, with its latest timestamp (see
    :class:`~cfrec.data.Interactions` for how implicit data is stored).

    A file whose first line is all numbers has no header: its fields are read as user, item
    and, when there are more, rating and timestamp; this is logged once (a warning). Two header
    names for one role are an error that lists both; ``user_col=`` ... pick one.

    Parameters
    ----------
    path
        The file. Parquet is recognised by its suffix or signature; ``gzip``, ``bz2``, ``xz`` and
        single-file ``zip`` text files are decompressed (by their signature).
    user_col, item_col, rating_col, weight_col
        Column names for the user id, item id, rating and interaction weight; ``None`` detects
        them. A name is matched exactly, else ignoring case and surrounding spaces. Naming a
        weight column reads interactions (unless ``feedback="explicit"``).
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
        What to do with repeated ``(user, item)`` ratings: ``"last"`` (default) keeps the latest
        by timestamp (the later line on ties, or without time), ``"first"`` the earliest,
        ``"mean"`` averages the ratings and keeps the latest timestamp, ``"error"`` raises naming
        both lines. Interactions are aggregated instead.
    encoding
        Text encoding; ``"utf-8"`` also accepts a byte-order mark.
    name
        Dataset name; defaults to the file name without its extensions.
    scale_source
        How a given ``rating_scale`` is described in errors and the report: ``"given"``, or
        ``"movielens"`` for a release's known scale (used by :func:`~cfrec.data.load_dataset`).
    feedback
        ``"auto"`` (default: ratings when a rating column is found, else interactions),
        ``"explicit"`` (a rating column is required) or ``"implicit"`` (any rating column is
        ignored; every row is an interaction).
    implicit_value
        A rating value meaning "interacted, not rated" (the 0 of a 1-10 scale): such rows are
        dropped from ratings (and counted in the report) and not checked against the scale;
        with ``feedback="implicit"`` they are interactions like every other row.
    on_bad_rows
        ``"error"`` (default) stops at the first malformed row (a wrong field count, a missing
        id, a bad rating, weight or time); ``"skip"`` drops such rows and reports how many and
        the first lines. Rows whose every field read is empty (``,,``) are always dropped and
        counted.
    max_input_size
        The most bytes a compressed file may decompress to (bytes, or text such as ``"4GB"``;
        ``0`` or ``"none"``: no limit). The default is 100 times the compressed size and at
        least 1 GiB. The size is estimated before reading (a ZIP directory's size, a gzip
        trailer, the ratio of the first MB) and counted while reading; a file over the limit
        is refused, naming the sizes.
    chunk_bytes
        Bytes of text parsed at a time (default 8 MiB). The file is read in chunks and each
        is converted to typed columns as it is read, so the memory a parse needs beyond the
        loaded arrays stays about this size; the result does not depend on it.
    return_report
        Also return a :class:`LoadReport` (rows read, duplicates resolved, columns used ...).

    Raises
    ------
    DataError
        Missing, empty or binary file; no rows; a role without a column, or with two; a ragged
        row; an empty or non-numeric rating, an out-of-scale rating, a missing id, a bad
        timestamp or weight, undecodable bytes, or a duplicate under ``duplicates="error"``.
        The message names the file, the 1-based line, the field and the value found, and ends
        with the option that helps (:meth:`~cfrec.errors.DataError.render` spells it as a CLI
        flag).
    """
    duplicates = check_duplicates(duplicates)
    plan = _plan(path, user_col=user_col, item_col=item_col, rating_col=rating_col,
                 time_col=time_col, weight_col=weight_col, sep=sep, columns=columns,
                 rating_scale=rating_scale, encoding=encoding, scale_source=scale_source,
                 feedback=feedback, implicit_value=implicit_value, on_bad_rows=on_bad_rows,
                 max_input_size=max_input_size, chunk_bytes=chunk_bytes)
    path, reader, roles, kind = plan.path, plan.reader, plan.roles, plan.kind
    scale, scale_source, unrated_value = plan.scale, plan.scale_source, plan.unrated_value
    chunk = plan.chunk_bytes
    engines = reader.engines()
    for k, engine in enumerate(engines):
        cols = plan.columns()
        try:
            for batch in reader.batches(roles, chunk, engine):
                cols.add(batch)
            break
        except UseAnotherParser:
            if k == len(engines) - 1:
                raise
            del cols
            _release_arrow_memory()
    _release_arrow_memory()

    n_rows, n_empty, n_bad, n_unrated = cols.rows, cols.empty, cols.bad, cols.unrated
    if n_rows == n_empty:
        what = "rating rows" if kind == "explicit" else "rows"
        raise DataError(f"no {what} after the header" if reader.has_header else f"no {what}",
                        path=path)
    skipped_lines = _skipped_lines(reader, cols.bad_rows, n_bad)
    n_skipped = n_bad + reader.ragged_skipped
    if cols.kept == 0:
        raise DataError(f"no rows left: {n_skipped:,} skipped as malformed, {n_empty:,} empty, "
                        f"{n_unrated:,} unrated", path=path)
    users_raw = cols.users.finish("user")
    items_raw = cols.items.finish("item")
    values = cols.column("values", RATING_DTYPE if kind == "explicit" else WEIGHT_DTYPE)
    ts = cols.column("ts", TIME_DTYPE)
    drops = cols.drops

    stem = name if name is not None else _data_stem(path)
    if kind == "explicit":
        assert values is not None
        if scale is None:
            scale = (float(values.min()), float(values.max()))
            scale_source = "inferred"
            logger.info("%s: no rating scale given; using the observed range [%g, %g] (pass "
                        "rating_scale=(low, high) to declare it)", path, *scale)
        data = build_interactions(users_raw, items_raw, values, ts, rating_scale=scale,
                                  name=stem)
        del users_raw, items_raw, values, ts
        located = reader if not drops else _KeptRows(reader, cols.chunks)
        data, n_resolved = resolve_duplicates(data, duplicates, reader=located, inplace=True)
        policy, aggregation = str(duplicates), None
    else:
        weights = (values if values is not None
                   else np.ones(len(users_raw[1]), dtype=np.float32))
        data = build_interactions(users_raw, items_raw, np.ones(len(weights), RATING_DTYPE), ts,
                                  rating_scale=IMPLICIT_SCALE, name=stem, weights=weights,
                                  feedback="implicit")
        del users_raw, items_raw, values, ts, weights
        data, n_resolved = aggregate_interactions(data, inplace=True)
        policy, scale, scale_source = "aggregate", IMPLICIT_SCALE, "implicit"
        aggregation = f"sum of {roles['weight']}" if "weight" in roles else "count"
    _release_arrow_memory()  # the raw id columns lived in pyarrow's pool
    _log_changes(path, kind, n_resolved, duplicates, aggregation, n_skipped, skipped_lines,
                 n_empty, n_unrated, unrated_value)
    if not return_report:
        return data
    report = LoadReport(str(path), n_rows + reader.ragged_skipped, len(data), n_resolved, policy,
                        data.n_users, data.n_items, columns={r: c for r, c in roles.items()},
                        header=reader.has_header, sep=reader.sep_label, rating_scale=scale,
                        scale_source=scale_source, feedback=kind, aggregation=aggregation,
                        skipped_rows=n_skipped, skipped_lines=skipped_lines, empty_rows=n_empty,
                        unrated_rows=n_unrated)
    return data, report


@dataclass
class _Plan:
    """How to read one file: its reader, the column of each role and the checks' settings."""

    path: Path
    reader: _ParquetReader | _TextReader
    roles: dict[Role, str]
    kind: str
    skip: bool
    scale: tuple[float, float] | None
    scale_source: str
    unrated_value: float | None
    chunk_bytes: int

    def columns(self) -> _Columns:
        return _Columns(self.reader, self.roles, self.kind, skip=self.skip, scale=self.scale,
                        scale_source=self.scale_source, unrated_value=self.unrated_value)


def _plan(path: str | Path, *, user_col: str | None = None, item_col: str | None = None,
          rating_col: str | None = None, time_col: TimeCol = None, weight_col: str | None = None,
          sep: str | None = None, columns: Sequence[str] | None = None,
          rating_scale: tuple[float, float] | None = None, encoding: str = "utf-8",
          scale_source: str = "given", feedback: Feedback = "auto",
          implicit_value: float | None = None, on_bad_rows: BadRowPolicy = "error",
          max_input_size: int | str | None = None, chunk_bytes: int | None = None) -> _Plan:
    """Check the options, recognise the file and find its columns (nothing is parsed yet)."""
    feedback = check_choice("feedback", feedback, FEEDBACK_KINDS)
    on_bad_rows = check_choice("on_bad_rows", on_bad_rows, BAD_ROW_POLICIES)
    unrated_value = None if implicit_value is None else parse_implicit_value(implicit_value)
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

    skip = on_bad_rows == "skip"
    chunk = DEFAULT_CHUNK_BYTES if chunk_bytes is None else max(1, int(chunk_bytes))
    source = _inspect(path, codec)
    limit = input_limit(path, source.compression, parse_size(max_input_size))
    check_estimate(path, source.compression, source.member, limit)
    reader: _ParquetReader | _TextReader
    if source.parquet:
        reader = _ParquetReader(path)
    else:
        reader = _TextReader(path, source, sep, names, codec, skip_bad=skip, limit=limit)
    explicit: dict[Role, str | None] = {"user": user_col, "item": item_col, "rating": rating_col,
                                        "time": time_col or None, "weight": weight_col}
    roles, kind = _resolve_roles(reader, explicit, use_time=time_col is not False,
                                 feedback=feedback)
    return _Plan(path, reader, roles, kind, skip, scale, scale_source, unrated_value, chunk)


class _KeptRows:
    """Locates rows of the data kept after dropping some: row ``k`` of the kept rows is found
    through the chunks' ``(start, rows, dropped mask or None)``."""

    def __init__(self, reader: _ParquetReader | _TextReader,
                 chunks: list[tuple[int, int, np.ndarray | None]]) -> None:
        self.reader, self.chunks = reader, chunks

    def where(self, row: int) -> dict[str, Any]:
        k = row
        for start, n, drop in self.chunks:
            kept = n if drop is None else n - int(drop.sum())
            if k < kept:
                at = k if drop is None else int(np.flatnonzero(~drop)[k])
                return self.reader.where(start + at)
            k -= kept
        return self.reader.where(row)


class _Columns:
    """The checked columns of a file, gathered chunk by chunk.

    Each chunk is converted and checked as it is read (the first bad row raises, or bad rows
    are dropped); only typed values are kept: ids as int32 numbers or dictionary codes
    (:class:`IdPieces`), ratings or weights as float32, times as int64.
    """

    def __init__(self, reader: _ParquetReader | _TextReader, roles: dict[Role, str], kind: str,
                 *, skip: bool, scale: tuple[float, float] | None, scale_source: str,
                 unrated_value: float | None) -> None:
        self.reader, self.roles, self.kind, self.skip = reader, roles, kind, skip
        self.scale, self.scale_source, self.unrated_value = scale, scale_source, unrated_value
        self.users, self.items = IdPieces(), IdPieces()
        self.pieces: dict[str, list[np.ndarray]] = {"values": [], "ts": []}
        self.rows = self.empty = self.bad = self.unrated = self.kept = 0
        self.bad_rows: list[int] = []  # the first few bad rows (0-based, in the file)
        self.chunks: list[tuple[int, int, np.ndarray | None]] = []
        self.drops = False

    def add(self, batch: dict[str, Any]) -> None:
        """Check a chunk and keep its typed columns."""
        checked = self.check(batch)
        if checked is None:
            return
        if len(self.chunks) % 8 == 0:
            _release_arrow_memory()  # what the last chunks' parsing freed
        users_raw, items_raw, values, ts = checked
        self.users.add(users_raw)
        self.items.add(items_raw)
        if values is not None:
            self.pieces["values"].append(values)
        if ts is not None:
            self.pieces["ts"].append(ts)

    def check(self, batch: dict[str, Any]) -> tuple[Any, Any, Any, Any] | None:
        """A chunk's kept rows as (user ids, item ids, ratings or weights, times), or ``None``
        for an empty chunk; ids are int64 numpy or pyarrow strings, like :func:`finish_ids`'s.
        Counts what was read, skipped and dropped."""
        roles, start = self.roles, self.rows
        n = len(batch[roles["user"]])
        if not n:
            return None
        self.rows += n
        empty = _empty_rows([batch[c] for c in dict.fromkeys(roles.values())])
        self.empty += 0 if empty is None else int(empty.sum())
        check = _Check(_Shifted(self.reader, start), skip=self.skip, ignore=empty)
        users_raw, bad_u = _ids(batch[roles["user"]], roles["user"], "user", check)
        items_raw, bad_i = _ids(batch[roles["item"]], roles["item"], "item", check)
        unrated = bad_r = bad_w = None
        values: np.ndarray | None
        if self.kind == "explicit":
            values, bad_r, unrated = _ratings(batch[roles["rating"]], roles["rating"], self.scale,
                                              self.scale_source, check, self.unrated_value)
        else:
            values, bad_w = (_weights(batch[roles["weight"]], roles["weight"], check)
                             if "weight" in roles else (None, None))
        ts, bad_t = (_timestamps(batch[roles["time"]], roles["time"], check)
                     if "time" in roles else (None, None))
        check.raise_first()
        bad = _union(bad_u, bad_i, bad_r, bad_w, bad_t)
        drop = _union(bad, empty, unrated)
        if bad is not None:
            self.bad += int(bad.sum())
            need = NAMED_LINES - len(self.bad_rows)
            if need > 0:
                self.bad_rows += [start + int(r) for r in np.flatnonzero(bad)[:need]]
        self.unrated += 0 if unrated is None else int(unrated.sum())
        if drop is not None:
            keep = ~drop
            users_raw, items_raw = _take(users_raw, keep), _take(items_raw, keep)
            values = None if values is None else values[keep]
            ts = None if ts is None else ts[keep]
            self.drops = True
        self.chunks.append((start, n, drop))
        self.kept += len(users_raw)
        return finish_ids(users_raw), finish_ids(items_raw), values, ts

    def column(self, name: str, dtype: Any) -> np.ndarray | None:
        """One column of every kept row (``None`` when the file has none), its chunks freed."""
        pieces = self.pieces[name]
        if not pieces:
            return None
        return _drain(pieces, dtype)


def _drain(pieces: list[np.ndarray], dtype: Any) -> np.ndarray:
    """The pieces concatenated into one ``dtype`` array, each freed once copied (the column is
    never held twice)."""
    out = np.empty(sum(len(p) for p in pieces), dtype=dtype)
    at = 0
    pieces.reverse()
    while pieces:
        piece = pieces.pop()
        out[at:at + len(piece)] = piece
        at += len(piece)
        del piece
    _release_arrow_memory()
    return out


def _union(*masks: np.ndarray | None) -> np.ndarray | None:
    present = [m for m in masks if m is not None]
    if not present:
        return None
    return np.logical_or.reduce(present) if len(present) > 1 else present[0]


def _take(values: Any, keep: np.ndarray) -> Any:
    """Rows ``keep`` of a numpy or pyarrow array."""
    if isinstance(values, np.ndarray):
        return values[keep]
    import pyarrow as pa

    return values.filter(pa.array(keep))


def _skipped_lines(reader: _ParquetReader | _TextReader, bad_rows: list[int], n_bad: int
                   ) -> tuple[int, ...]:
    """The first lines (Parquet: row numbers) skipped, ragged rows and bad values together."""
    if not n_bad and not reader.ragged_skipped:
        return ()
    lines = list(reader.ragged_lines(NAMED_LINES)) if reader.ragged_skipped else []
    if bad_rows:
        found = reader.lines_of(bad_rows[:NAMED_LINES])
        lines += [line if line is not None else r + 1 for r, line in found.items()]
    return tuple(sorted(lines)[:NAMED_LINES])


def _log_changes(path: Path, kind: str, n_resolved: int, duplicates: str, aggregation: str | None,
                 n_skipped: int, skipped_lines: tuple[int, ...], n_empty: int, n_unrated: int,
                 unrated_value: float | None) -> None:
    if n_resolved and kind == "explicit":
        logger.warning("%s: resolved %d duplicate (user, item) rating%s with duplicates=%r",
                       path, n_resolved, "" if n_resolved == 1 else "s", duplicates)
    elif n_resolved:
        logger.info("%s: aggregated %d repeated (user, item) event%s (%s)", path, n_resolved,
                    "" if n_resolved == 1 else "s", aggregation)
    if n_skipped:
        logger.warning("%s: skipped %d malformed row%s (lines %s)", path, n_skipped,
                       "" if n_skipped == 1 else "s", ", ".join(map(str, skipped_lines)))
    if n_empty:
        logger.info("%s: dropped %d empty row%s", path, n_empty, "" if n_empty == 1 else "s")
    if n_unrated:
        logger.info("%s: dropped %d row%s rated %g (interacted, not rated)", path, n_unrated,
                    "" if n_unrated == 1 else "s", unrated_value)
