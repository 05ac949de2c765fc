"""Fuzzing load_ratings: random bytes, random CSV dialects, random headers and random bad cells.

Every generated file either loads with exactly the rows that were written (after the default
``duplicates="last"`` policy) or raises :class:`DataError`; never another exception, never a
silently wrong row. Files with one injected bad cell must raise, naming the line it is on.
Example counts are bounded so the module runs in well under 30 s on two cores.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cfrec.data.io import load_ratings
from cfrec.data.io.roles import column_role
from cfrec.errors import DataError

# CI runs a fixed set of 120 examples per test; CFREC_FUZZ_EXAMPLES=2000 runs more, at random
_DEEP = os.environ.get("CFREC_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_DEEP) if _DEEP else 120, deadline=None, derandomize=not _DEEP,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ALIASES = {
    "user": ["user", "user_id", "userid", "userId", "uid", "UserID", "customer_id"],
    "item": ["item", "item_id", "itemid", "movieId", "movie_id", "MovieID", "product_id", "iid"],
    "rating": ["rating", "ratings", "score", "stars", "Rating"],
    "time": ["timestamp", "time", "ts", "date", "datetime"],
}
EXTRA_NAMES = ["title", "note", "comment", "extra"]
SEPS = [",", "\t", ";", "|", "::"]
RATINGS = [x / 2 for x in range(1, 11)]


def load(text: str | bytes, suffix: str = ".csv", **kwargs):  # noqa: ANN201
    """Write ``text`` to a fresh file and load it (hypothesis forbids function-scoped tmp_path)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"ratings{suffix}"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return load_ratings(path, return_report=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# a generated file: its text, the rows it holds and the physical line of each row
# ---------------------------------------------------------------------------------------------
@dataclass
class Written:
    text: str
    rows: list[tuple]             # (user, item, rating, unix seconds) as the loader must return
    lines: list[int]              # 1-based physical line of each data row
    cells: list[dict[str, str]]   # the text written in each role's field, per row
    header: bool
    sep: str
    roles: list[str]              # field order (roles and extra columns)


id_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_-", min_size=1, max_size=6)


@st.composite
def files(draw: st.DrawFn, *, multiline: bool = True) -> Written:
    """A valid ratings file in a random dialect (separator, quoting, line ends, BOM, header).

    With ``multiline``, extra text columns of quoted files may hold newlines (which sends the
    file to the fallback parser).
    """
    sep = draw(st.sampled_from(SEPS))
    header = draw(st.booleans())
    string_ids = header and draw(st.booleans())
    has_time = draw(st.booleans())
    time_format = draw(st.sampled_from(["unix", "iso", "date", "mixed"])) if has_time else None
    if not header and time_format in ("mixed",):
        time_format = "unix"
    extras = draw(st.lists(st.sampled_from(EXTRA_NAMES), max_size=2, unique=True)) if header else []
    fields = ["user", "item", "rating"] + (["time"] if has_time else []) + extras
    if header:
        fields = draw(st.permutations(fields))
    quoting = csv.QUOTE_NONE if sep == "::" else draw(
        st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONE]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    bom = draw(st.booleans())

    n = draw(st.integers(1, 25))
    if string_ids:
        users = draw(st.lists(id_text, min_size=n, max_size=n))
        items = draw(st.lists(id_text | st.sampled_from(["NA", "nan", "null", "007", "7"]),
                              min_size=n, max_size=n))
    else:
        users = [str(v) for v in draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))]
        items = [str(v) for v in draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))]
    ratings = draw(st.lists(st.sampled_from(RATINGS), min_size=n, max_size=n))
    rating_text = [draw(st.sampled_from([f"{r:g}", f"{r:.1f}", f"{r:.2f}"])) for r in ratings]
    seconds = draw(st.lists(st.integers(0, 2 * 10**9), min_size=n, max_size=n))
    time_text = []
    for s in seconds:
        fmt = time_format if time_format != "mixed" else draw(st.sampled_from(["unix", "iso"]))
        if fmt == "unix":
            time_text.append(str(s))
        elif fmt == "iso":
            time_text.append(datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        else:
            time_text.append(datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%d"))
    if time_format == "date":
        seconds = [s - s % 86400 for s in seconds]
    if not has_time:
        seconds = [0] * n
    quoted = quoting in (csv.QUOTE_MINIMAL, csv.QUOTE_ALL)
    alphabet = "abc xyz" + ("\n" if multiline and quoted else "") + (sep if quoted else "")
    extra_text = {e: draw(st.lists(st.text(alphabet=alphabet, max_size=8), min_size=n,
                                   max_size=n)) for e in extras}

    def cell(role: str, k: int) -> str:
        return {"user": users[k], "item": items[k], "rating": rating_text[k],
                "time": time_text[k] if has_time else ""}.get(role) or extra_text[role][k]

    def format_record(values: list[str]) -> str:
        if sep == "::":
            return "::".join(values)
        buf = io.StringIO()
        # the line terminator tells the writer to quote fields holding a newline
        writer = csv.writer(buf, delimiter=sep, quoting=quoting, lineterminator="\r\n",
                            escapechar=None if quoting != csv.QUOTE_NONE else "\\")
        writer.writerow(values)
        return buf.getvalue()[:-2]

    out: list[str] = []
    lines: list[int] = []
    physical = 0  # lines written so far (a quoted newline adds one)
    if header:
        names = []
        for f in fields:
            if f in ALIASES:
                alias = draw(st.sampled_from(ALIASES[f]))
                alias = draw(st.sampled_from([alias, alias.upper(), alias.lower(), alias.title()]))
                alias = " " * draw(st.integers(0, 2)) + alias + " " * draw(st.integers(0, 2))
            else:
                alias = f
            names.append(alias)
        out.append(format_record(names))
        physical += 1
    cells = []
    for k in range(n):
        if draw(st.integers(0, 9)) == 0:
            out.append("")  # a blank line
            physical += 1
        record = format_record([cell(f, k) for f in fields])
        out.append(record)
        lines.append(physical + 1)
        physical += 1 + record.count("\n")
        cells.append({f: cell(f, k) for f in fields})
    if draw(st.booleans()):
        out.append("")  # trailing blank line
    text = ("\ufeff" if bom else "") + newline.join(out) + newline

    def parse_id(values: list[str]) -> list[object]:
        canonical = all(re.fullmatch(r"-?[0-9]+", v) and v == str(int(v)) for v in values)
        return [int(v) for v in values] if canonical else list(values)

    rows = list(zip(parse_id(users), parse_id(items), ratings, seconds, strict=True))
    return Written(text, rows, lines, cells, header, sep, fields)


def expected_after_last(rows: list[tuple]) -> set[tuple]:
    """The rows ``duplicates="last"`` keeps: the latest by time per pair, the later line on ties."""
    kept: dict[tuple, tuple] = {}
    for row in rows:
        key = (row[0], row[1])
        if key not in kept or row[3] >= kept[key][3]:
            kept[key] = row
    return set(kept.values())


# ---------------------------------------------------------------------------------------------
# valid files in random dialects load exactly
# ---------------------------------------------------------------------------------------------
@FUZZ
@given(written=files())
def test_random_dialects_load_every_row(written: Written) -> None:
    data, report = load(written.text)
    want = expected_after_last(written.rows)
    got = set(data.to_frame().itertuples(index=False, name=None))
    assert got == want
    assert report.rows == len(written.rows) and len(data) == len(want)
    assert report.duplicates_resolved == len(written.rows) - len(want)
    assert report.header == written.header
    assert report.sep == written.sep


# ---------------------------------------------------------------------------------------------
# one bad cell: always a DataError naming the line
# ---------------------------------------------------------------------------------------------
BAD_RATINGS = ["", "nan", "NaN", "five", "inf", "4 stars", "--", "NA"]


@st.composite
def broken_files(draw: st.DrawFn) -> tuple[str, int | None, str, dict]:
    written = draw(files(multiline=False))
    k = draw(st.integers(0, len(written.rows) - 1))
    line = written.lines[k]
    kind = draw(st.sampled_from(["rating", "scale", "user", "extra_field", "missing_field",
                                 "time"]))
    if kind == "time" and "time" not in written.roles:
        kind = "rating"
    first_headerless = k == 0 and not written.header
    if first_headerless and kind in ("extra_field", "missing_field"):
        kind = "rating"  # the first record of a headerless file sets the field count
    cells = dict(written.cells[k])
    kwargs: dict = {}
    values = [cells[f] for f in written.roles]
    if kind == "rating":
        cells["rating"] = draw(st.sampled_from(BAD_RATINGS))
    elif kind == "scale":
        cells["rating"] = draw(st.sampled_from(["9", "0", "-1", "5.5", "100"]))
        kwargs["rating_scale"] = (0.5, 5.0)
    elif kind == "user":
        cells["user"] = ""
    elif kind == "time":
        cells["time"] = draw(st.sampled_from(["", "yesterday", "2001-13-45"]))
    values = [cells[f] for f in written.roles]
    if kind == "extra_field":
        values = values + ["1"]
    elif kind == "missing_field":
        values = values[:-1]
    sep = written.sep

    def quote(v: str) -> str:  # as the file's writer did: a separator inside needs quotes
        return f'"{v}"' if sep != "::" and (sep in v or '"' in v) else v

    record = sep.join(quote(v) for v in values)
    # replace the row's physical line (rows never contain newlines)
    newline = "\r\n" if "\r\n" in written.text else "\n"
    text_lines = written.text.split(newline)
    text_lines[line - 1] = ("\ufeff" if line == 1 and text_lines[0].startswith("\ufeff") else ""
                            ) + record
    # the first record of a headerless file is taken for a header when it holds a non-number:
    # any DataError will do there, so no line is expected
    return newline.join(text_lines), None if first_headerless else line, kind, kwargs


@FUZZ
@given(case=broken_files())
def test_one_bad_cell_is_an_error_on_its_line(case: tuple[str, int | None, str, dict]) -> None:
    text, line, kind, kwargs = case
    with pytest.raises(DataError) as err:
        load(text, **kwargs)
    if line is None:
        return
    assert err.value.line == line, (kind, str(err.value))
    if kind in ("extra_field", "missing_field"):
        assert "fields, expected" in str(err.value) or "field" in str(err.value)
    assert "C error" not in str(err.value) and "Traceback" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# random headers: recognised, ambiguous or missing, never a crash
# ---------------------------------------------------------------------------------------------
header_names = st.one_of(
    st.sampled_from([a for names in ALIASES.values() for a in names] + EXTRA_NAMES),
    st.text(alphabet="abcdefgiklmnorstuvxyz_ ", min_size=1, max_size=10),
)


@FUZZ
@given(names=st.lists(header_names, min_size=1, max_size=6),
       rows=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.sampled_from(RATINGS)),
                     min_size=1, max_size=8))
def test_random_headers(names: list[str], rows: list[tuple]) -> None:
    width = len(names)
    body = "\n".join(",".join(str(v) for v in (list(r) * 3)[:width]) for r in rows)
    text = ",".join(n.replace(",", "") for n in names) + "\n" + body + "\n"
    try:
        data, report = load(text)
    except DataError:
        return
    assert set(report.columns) >= {"user", "item"}
    assert ("rating" in report.columns) == (report.feedback == "explicit") == (not data.is_implicit)
    assert report.rows == len(rows) and len(data) <= len(rows)
    read_as = [column_role(n.replace(",", "")) for n in names]
    for role in ("user", "item", "rating"):
        hits = read_as.count(role)
        if role != "rating" or report.feedback == "explicit":
            assert hits == 1, (role, names)  # loaded only with exactly one candidate per role
        else:
            assert hits == 0, names  # interactions only when no column reads as a rating
    # the known spellings read as their role
    for role, spellings in ALIASES.items():
        assert {column_role(s) for s in spellings} == {role}


# ---------------------------------------------------------------------------------------------
# random bytes, with and without a text-looking start
# ---------------------------------------------------------------------------------------------
prefixes = st.sampled_from([b"", b"user,item,rating\n", b"1,2,3\n", b"\x89PNG\r\n\x1a\n",
                            b"PK\x03\x04", b"\x1f\x8b\x08", b"%PDF-", b"\xef\xbb\xbf",
                            b"\xff\xfe", b"BZh91AY&SY", b"\xfd7zXZ\x00", b"PAR1"])


@FUZZ
@given(prefix=prefixes, body=st.binary(max_size=600),
       suffix=st.sampled_from([".csv", ".tsv", ".dat", ".gz", ".parquet", ""]))
def test_random_bytes_never_crash(prefix: bytes, body: bytes, suffix: str) -> None:
    content = prefix + body
    assume(content)
    try:
        data, report = load(content, suffix=suffix)
    except DataError:
        return
    # it parsed: then it had at least as many lines as rows
    assert 0 < len(data) <= report.rows <= content.count(b"\n") + content.count(b"\r") + 1


@FUZZ
@given(lines=st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
                              max_size=30), min_size=1, max_size=12))
def test_random_text_never_crashes(lines: list[str]) -> None:
    text = "\n".join(lines)
    assume(text.strip())
    try:
        data, report = load(text)
    except DataError:
        return
    assert 0 < len(data) <= report.rows <= len(text.splitlines()) + text.count("\r")


# ---------------------------------------------------------------------------------------------
# the generators themselves: a file built by hand reads as the generator says
# ---------------------------------------------------------------------------------------------
def test_expected_rows_follow_the_last_policy() -> None:
    rows = [(1, 2, 3.0, 10), (1, 2, 4.0, 5), (1, 2, 5.0, 10), (2, 2, 1.0, 0)]
    assert expected_after_last(rows) == {(1, 2, 5.0, 10), (2, 2, 1.0, 0)}
    assert np.isfinite(RATINGS).all() and len(SEPS) == 5
