"""Write an :class:`Interactions` as a MovieLens release folder, in that release's own format.

Streamed in chunks, so that loaders, the CLI and benchmarks can run on MovieLens-format files of
every size (for instance ``synthetic_like("ml-25m")`` written as an ML-25M folder).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pandas as pd

from cfrec.data.interactions import Interactions
from cfrec.data.movielens import MOVIELENS
from cfrec.errors import CfrecError, DataError

logger = logging.getLogger(__name__)

_WRITE_CHUNK = 1 << 22  # rating rows per chunk when writing a release (~150 MB of temporaries)
_CSV_HEADER = b"userId,movieId,rating,timestamp\n"
_NO_GENRES = "(no genres listed)"
_TITLE_YEAR = re.compile(r"\(\d{4}(?:[-\u2013]\d{0,4})?\)")  # "(1995)" or "(2006-2007)"


def write_movielens(
    data: Interactions,
    folder: str | os.PathLike[str],
    layout: str = "ml-25m",
) -> Path:
    """Write ratings as a MovieLens release folder, in that release's own file format.

    Lets the loaders, the CLI and end-to-end benchmarks run on MovieLens-format files of any
    size (for instance ``synthetic_like("ml-25m")`` as an ML-25M folder, when the real release
    is not at hand); :func:`cfrec.data.load_dataset` reads the folder back.

    Parameters
    ----------
    data
        Ratings with integer raw user and item ids (MovieLens files hold integer ids).
    folder
        Target folder, created if missing. Name it after the release (``.../ml-25m``) so that
        the loader recognises the variant and its rating scale from the folder name.
    layout
        The release whose format to write: ``"ml-20m"``, ``"ml-25m"``, ``"ml-32m"`` or
        ``"ml-latest-small"`` give ``ratings.csv`` (header ``userId,movieId,rating,timestamp``,
        ratings with one decimal such as ``4.0``) and ``movies.csv`` (``movieId,title,genres``);
        ``"ml-1m"`` or ``"ml-10m"`` give ``::``-separated ``ratings.dat`` and ``movies.dat``.

    Returns
    -------
    Path
        The folder.

    Notes
    -----
    Ratings are written in row order, in chunks of a few million rows (memory stays bounded
    for 25M ratings), each file to a temporary name renamed into place when complete. Loading
    the folder gives the same rows, raw ids, ratings (shortest decimal that reads back as the
    same float32) and timestamps; its vocabularies hold the ids that have ratings. The movies
    file is written only when ``data.item_info`` exists: one line per item of the vocabulary,
    its genres joined by ``|`` (``(no genres listed)`` when none) and its title followed by the
    MovieLens ``" (year)"`` suffix unless the title already carries a year; other metadata
    columns are not written (no ``links.csv``, ``tags.csv`` or ``users.dat``).

    Raises
    ------
    CfrecError
        ``layout`` is not a release with a CSV or ``.dat`` format, or the folder already holds
        a ratings file of another layout (the loader would read that one).
    DataError
        Raw ids are not integers, a rating lies outside the release's rating scale, or a title
        or genre cannot be written in the format (a ``::`` or a line break in a ``.dat`` field).
    """

    key = str(layout).strip().lower()
    choices = [name for name, spec in MOVIELENS.items() if spec.layout in ("csv", "dat")]
    if key not in choices:
        raise CfrecError(f"cannot write MovieLens layout {layout!r}; expected one of "
                         f"{', '.join(choices)}")
    spec = MOVIELENS[key]
    csv = spec.layout == "csv"
    for what, vocab in (("user", data.user_map), ("item", data.item_map)):
        if not vocab.is_numeric:
            raise DataError(f"MovieLens files hold integer ids; the {what} ids are not integers "
                            f"(e.g. {vocab.to_raw(0)!r})", field=f"{what}_id")
    lo, hi = spec.rating_scale
    if len(data):
        bad = (data.ratings < lo) | (data.ratings > hi) | ~np.isfinite(data.ratings)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise DataError(f"rating {float(data.ratings[j]):g} (row {j}) is outside the "
                            f"{spec.name} scale [{lo:g}, {hi:g}]", field="rating")
    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    ratings_name = "ratings.csv" if csv else "ratings.dat"
    for other in ("u.data", "ratings.dat", "ratings.csv"):
        if other != ratings_name and (out / other).exists():
            raise CfrecError(f"{out} already holds {other} (another MovieLens layout); "
                             f"write {spec.name} into an empty folder")
    _write_atomically(out / ratings_name, lambda fh: _write_ratings(fh, data, csv=csv))
    if data.item_info is not None:
        movies = _movies_lines(data, csv=csv)
        _write_atomically(out / ("movies.csv" if csv else "movies.dat"),
                          lambda fh: fh.write(movies))
    logger.info("wrote %d ratings as %s to %s", len(data), spec.name, out)
    return out


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through ``write`` to a temporary sibling, then rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_ratings(fh: BinaryIO, data: Interactions, *, csv: bool) -> None:
    """Stream the ratings in chunks: ``u,i,r,t`` (CSV with header) or ``u::i::r::t`` (.dat)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if csv:
        fh.write(_CSV_HEADER)
        names = ["userId", "movieId", "rating", "timestamp"]
    else:  # "::" is two one-character delimiters around an empty column
        names = ["userId", "_a", "movieId", "_b", "rating", "_c", "timestamp"]
    schema = pa.schema([(n, pa.string() if n == "rating" or n.startswith("_") else pa.int64())
                        for n in names])
    options = pacsv.WriteOptions(include_header=False, delimiter="," if csv else ":",
                                 quoting_style="none")
    with pacsv.CSVWriter(fh, schema, write_options=options) as writer:
        for a in range(0, len(data), _WRITE_CHUNK):
            b = min(a + _WRITE_CHUNK, len(data))
            columns = {
                "userId": pa.array(data.user_map.to_raw(data.users[a:b]).astype(np.int64)),
                "movieId": pa.array(data.item_map.to_raw(data.items[a:b]).astype(np.int64)),
                "rating": _rating_strings(data.ratings[a:b], one_decimal=csv),
                "timestamp": pa.array(data.timestamps[a:b].astype(np.int64)),
            }
            empty = pa.nulls(b - a, pa.string())
            writer.write_table(pa.table([columns.get(n, empty) for n in names], schema=schema))


def _rating_strings(ratings: np.ndarray, *, one_decimal: bool) -> Any:
    """Ratings as the shortest decimals that read back as the same float32 (``4.0``/``3.5`` in
    CSV releases, ``4``/``3.5`` in ``.dat`` ones); each distinct value is formatted once."""
    import pyarrow as pa

    values, inverse = np.unique(ratings.astype(np.float32, copy=False), return_inverse=True)
    trim: Literal["0", "-"] = "0" if one_decimal else "-"
    text = pa.array([np.format_float_positional(v, trim=trim) for v in values], pa.string())
    return text.take(pa.array(inverse.astype(np.int32)))


def _movies_lines(data: Interactions, *, csv: bool) -> bytes:
    """The movies file: ``movieId,title,genres`` (quoted where needed) or ``id::title::genres``."""
    info = data.item_info
    if info is None:
        return b""
    ids = data.item_map.ids.astype(np.int64)
    frame = info.reindex(pd.Index(ids, name=info.index.name))
    titles = (frame["title"] if "title" in frame.columns
              else pd.Series([None] * len(ids), index=frame.index, dtype=object))
    years = (frame["year"] if "year" in frame.columns
             else pd.Series([pd.NA] * len(ids), index=frame.index, dtype="Int64"))
    genre_lists = (frame["genres"] if "genres" in frame.columns
                   else pd.Series([None] * len(ids), index=frame.index, dtype=object))
    out_titles: list[str] = []
    out_genres: list[str] = []
    for item, title, year, genres in zip(ids.tolist(), titles.tolist(), years.tolist(),
                                         genre_lists.tolist(), strict=True):  # per item
        text = "" if title is None or title is pd.NA or title != title else str(title).strip()
        if year is not None and year is not pd.NA and year == year and not _TITLE_YEAR.search(text):
            text = f"{text} ({int(year)})".strip()
        names = list(genres) if isinstance(genres, list | tuple | np.ndarray) else []
        for name in names:
            if "|" in str(name):
                raise DataError(f"genre {name!r} of item {item} contains '|', the genre "
                                "separator", field="genres")
        joined = "|".join(str(g) for g in names) or _NO_GENRES
        if not csv and ("::" in text or "::" in joined or any(c in text for c in "\r\n")):
            raise DataError(f"title {text!r} of item {item} contains '::' or a line break, which "
                            "a .dat file cannot hold; write a CSV layout", field="title")
        out_titles.append(text)
        out_genres.append(joined)
    if csv:
        table = pd.DataFrame({"movieId": ids, "title": out_titles, "genres": out_genres})
        return table.to_csv(index=False, lineterminator="\n").encode("utf-8")
    lines = [f"{i}::{t}::{g}\n" for i, t, g in zip(ids.tolist(), out_titles, out_genres, strict=True)]
    return "".join(lines).encode("utf-8")
