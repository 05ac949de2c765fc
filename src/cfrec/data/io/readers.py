"""Column readers: Parquet, and delimited text parsed by pyarrow (pandas when pyarrow refuses it).

Only the error paths scan a file in Python, to name the line, the field and the text it holds.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from cfrec.data.io.roles import Role
from cfrec.data.io.sniff import (
    _head_lines,
    _head_records,
    _looks_numeric,
    _sniff_sep,
    _unique_names,
)
from cfrec.data.io.source import _SNIFF_BYTES, _find_undecodable, _short, _Source
from cfrec.data.options import option
from cfrec.errors import DataError

logger = logging.getLogger(__name__)

_UNIT_SEP = "\x1f"  # stands in for a multi-character separator such as '::'
#: Names given to the fields of a file without a header line, in this order.
HEADERLESS_NAMES = ("user_id", "item_id", "rating", "timestamp")


class _ParquetReader:
    """Columns of a Parquet file; rows are reported 1-based (Parquet has no lines)."""

    has_header = True
    sep_label = ""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        try:
            self._schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable Parquet file ({_short(exc)})", path=path) from exc
        self._table: Any = None

    def header(self) -> list[str]:
        return [str(n) for n in self._schema.names]

    def read(self, roles: dict[Role, str]) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = list(dict.fromkeys(roles.values()))
        try:
            table = pq.read_table(self.path, columns=cols)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable Parquet file ({_short(exc)})",
                            path=self.path) from exc
        self._table = table
        return {c: table.column(c) for c in cols}

    def where(self, row: int) -> dict[str, Any]:
        return {"path": self.path, "line": None, "row": row + 1}

    def cell(self, row: int, col: str) -> tuple[int | None, int | None, str | None]:
        """(line, fields found, text) of a value; Parquet has no lines and typed values."""
        value = None if self._table is None else self._table.column(col)[row].as_py()
        return None, None, None if value is None else str(value)

    def expected_fields(self) -> int | None:
        return None

    ragged_skipped = 0

    def ragged_lines(self, limit: int) -> list[int]:
        return []

    def lines_of(self, rows: list[int]) -> dict[int, int | None]:
        """Parquet has no lines: rows are named by their 1-based number instead."""
        return {r: None for r in rows}


class _TextReader:
    """A delimited text file, parsed by pyarrow (pandas when pyarrow refuses it)."""

    def __init__(self, path: Path, source: _Source, sep: str | None, names: list[str] | None,
                 codec: str, *, skip_bad: bool = False) -> None:
        self.path = path
        #: skip rows with a wrong field count (``on_bad_rows="skip"``) instead of raising
        self.skip_bad = skip_bad
        #: rows skipped for their field count (``None`` until read)
        self.ragged_skipped = 0
        self._ragged_longer_only = False  # pandas skips only rows with too many fields
        self.source = source
        self.codec = codec
        self.encoding = "utf-8-sig" if codec == "utf-8" else codec
        head_text = self._decode_head(source.head)
        self.lines = _head_lines(head_text, cut=len(source.head) == _SNIFF_BYTES)
        if not self.lines:
            raise DataError("file is empty (only blank lines); expected rating rows (user, item, "
                            "rating[, timestamp])", path=path)
        if sep is not None and sep == "":
            raise DataError("empty separator", field="sep",
                            hints=(option("sep").hint('","', ","),))
        cut = len(source.head) == _SNIFF_BYTES
        self.sep = sep if sep is not None else _sniff_sep(path, head_text, self.lines, cut=cut)
        self.sep_label = self.sep
        if len(self.sep) == 1:
            first_line, first = _head_records(head_text, self.sep, cut=cut, limit=1)[0]
        else:
            first_line, first = self.lines[0][0], self._split(self.lines[0][1])
        if first:
            first[0] = first[0].lstrip("\ufeff")
        self.first_line = first_line
        if names is not None:
            if len(first) != len(names):
                raise DataError(
                    f"columns= names {len(names)} fields but the line has {len(first)} "
                    f"(separator {self.sep!r}); name every field", path=path, line=first_line,
                    hints=(option("columns").hint(), option("sep").hint()))
            self.has_header, self.names = False, list(names)
        elif first and all(_looks_numeric(f) for f in first):
            self.has_header = False
            if len(first) not in (2, 3, 4):
                raise DataError(
                    f"the first line has {len(first)} fields and no header names (all look like "
                    "numbers), so it seems to be data; a file without a header is read as user, "
                    f"item[, rating[, timestamp]] (2 to 4 fields, separator {self.sep!r})",
                    path=path, line=first_line,
                    hints=(option("columns").hint(
                        "[" + ", ".join(f'"c{k}"' for k in range(1, len(first) + 1)) + "]",
                        ",".join(f"c{k}" for k in range(1, len(first) + 1)),
                        "name every field"),))
            self.names = list(HEADERLESS_NAMES[: len(first)])
            logger.warning("%s has no header line; reading its %d fields as %s", path,
                           len(first), ", ".join(("user", "item", "rating", "timestamp")[
                               : len(first)]))
        else:
            self.has_header = True
            self.names = [f.strip().strip('"').strip() for f in first]
        self.unique_names = _unique_names(self.names)
        self._frame_source: Any = None

    # -- head
    def _decode_head(self, head: bytes) -> str:
        decoder = codecs.getincrementaldecoder(self.encoding)()
        try:
            return decoder.decode(head, final=len(head) < _SNIFF_BYTES)
        except UnicodeDecodeError as exc:
            raise self._decode_error(exc) from exc

    def header(self) -> list[str]:
        return list(self.names)

    def expected_fields(self) -> int:
        return len(self.names)

    def _split(self, line: str) -> list[str]:
        if self.sep == r"\s+":
            return line.split()
        if len(self.sep) > 1:
            return line.split(self.sep)
        try:
            return next(csv.reader([line], delimiter=self.sep), [])
        except csv.Error:
            return line.split(self.sep)

    # -- reading
    def _utf8_input(self) -> Any:
        """A path or BytesIO of UTF-8 text with single-character separators, for the parsers.

        An uncompressed UTF-8 file is handed over as its path (pyarrow maps it and parses blocks
        in parallel); anything else is decoded once in C and re-encoded.
        """
        if self._frame_source is not None:
            return self._frame_source
        plain = self.source.compression is None and self.codec == "utf-8"
        if plain and (len(self.sep) == 1 or self.sep == r"\s+"):
            self._frame_source = self.path
            return self.path
        with self.source.open() as fh:
            raw = fh.read()
        if self.codec == "utf-8":  # bad bytes surface in the parsers, which locate them
            data = raw[3:] if raw.startswith(codecs.BOM_UTF8) else raw
        else:
            try:
                data = raw.decode(self.encoding).encode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._decode_error(exc) from exc
        del raw
        if len(self.sep) > 1 and self.sep != r"\s+":
            data = data.replace(self.sep.encode("utf-8"), _UNIT_SEP.encode())
        self._frame_source = data
        return data

    @property
    def _parse_sep(self) -> str:
        return _UNIT_SEP if len(self.sep) > 1 and self.sep != r"\s+" else self.sep

    def read(self, roles: dict[Role, str]) -> dict[str, Any]:
        """The role columns as pyarrow arrays (id columns as strings)."""
        cols = list(dict.fromkeys(roles.values()))
        id_cols = {roles["user"], roles["item"]}
        source = self._utf8_input()
        table = self._read_arrow(source, cols, id_cols)
        if table is not None:
            return {c: table.column(c) for c in cols}
        frame = self._read_pandas(source, cols, id_cols)
        import pyarrow as pa

        return {c: pa.Array.from_pandas(frame[c]) for c in cols}

    def _read_arrow(self, source: Any, cols: list[str], id_cols: set[str]) -> Any:
        if self.sep == r"\s+" or (self.has_header and self.first_line != 1):
            return None
        import pyarrow as pa
        import pyarrow.csv as pacsv

        read = pacsv.ReadOptions(column_names=self.unique_names,
                                 skip_rows=1 if self.has_header else 0, block_size=1 << 24)
        sep = self._parse_sep
        # Quoted newlines are rare in rating files and halve pyarrow's speed when allowed; a file
        # that has them fails here and is read by pandas.
        skipped: list[int] = []

        def on_invalid(row: Any) -> str:
            skipped.append(1)
            return "skip"

        parse = pacsv.ParseOptions(delimiter=sep, newlines_in_values=False,
                                   quote_char=False if sep == _UNIT_SEP else '"',
                                   double_quote=sep != _UNIT_SEP,
                                   invalid_row_handler=on_invalid if self.skip_bad else None)
        convert = pacsv.ConvertOptions(include_columns=cols, null_values=[""],
                                       strings_can_be_null=True, quoted_strings_can_be_null=True,
                                       column_types={c: pa.string() for c in id_cols})
        try:
            # a stream, not a path: pyarrow would guess a compression from a ".gz" suffix
            with (pa.BufferReader(_arrow_owned(source)) if isinstance(source, bytes)
                  else pa.memory_map(str(source))) as src:
                table = pacsv.read_csv(src, read_options=read, parse_options=parse,
                                       convert_options=convert)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            if "Expected" in str(exc) and "columns" in str(exc):
                ragged = self._first_ragged()
                if ragged is not None:
                    raise ragged from None
            return None
        if any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in table.schema.types):
            return None  # bytes that are not UTF-8: pandas raises and the offset is located
        self.ragged_skipped = len(skipped)
        return table

    def _read_pandas(self, source: Any, cols: list[str], id_cols: set[str]) -> pd.DataFrame:
        sep = self._parse_sep
        options: dict[str, Any] = {
            "sep": sep, "encoding": "utf-8-sig", "engine": "c", "names": self.unique_names,
            "header": 0 if self.has_header else None, "dtype": {c: str for c in id_cols},
            "keep_default_na": False, "na_values": [""], "skip_blank_lines": True,
            "compression": None,  # already decompressed; never guessed from the suffix
        }
        if sep == _UNIT_SEP:
            options["quoting"] = csv.QUOTE_NONE
        if self.skip_bad:  # the C parser skips rows with too many fields; too few read as empty
            options["on_bad_lines"] = "skip"
            self._ragged_longer_only = True
        src = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            frame = pd.read_csv(src, **options)
        except UnicodeDecodeError as exc:
            raise self._decode_error(exc) from exc
        except pd.errors.EmptyDataError:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
        except (pd.errors.ParserError, ValueError) as exc:
            ragged = self._first_ragged()
            if ragged is not None:
                raise ragged from None
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            msg = re.sub(r"^Error tokenizing data\. C error: ", "", msg)
            raise DataError(f"cannot parse the file as fields separated by {self.sep!r} ({msg})",
                            path=self.path, hints=(option("sep").hint(),)) from exc
        if self.skip_bad:
            n = len(self.names)
            self.ragged_skipped = sum(len(r) > n for _, r in self._records(every=True))
        elif not frame.index.equals(pd.RangeIndex(len(frame))):
            ragged = self._first_ragged()
            if ragged is not None:
                raise ragged
        return frame[cols]

    # -- error locations (error path only: these scan the file in Python)
    def _records(self, *, every: bool = False) -> Iterator[tuple[int, list[str]]]:
        """(first physical line, fields) of every data record, skipping blank lines as parsers do
        (and, when skipping bad rows, the records the parser skipped, unless ``every``)."""
        records = self._all_records()
        if every or not self.skip_bad:
            yield from records
            return
        n = len(self.names)
        longer_only = self._ragged_longer_only
        for lineno, record in records:
            if len(record) > n or (len(record) < n and not longer_only):
                continue
            yield lineno, record

    def _all_records(self) -> Iterator[tuple[int, list[str]]]:
        source = self._utf8_input()
        sep = self._parse_sep
        raw: IO[bytes] = (io.BytesIO(source) if isinstance(source, bytes)
                          else open(source, "rb"))
        with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace",
                                   newline="") as fh:
            skip = self.has_header
            if sep == r"\s+" or sep == _UNIT_SEP:
                whitespace = sep == r"\s+"
                for lineno, line in enumerate(fh, start=1):
                    text = line.rstrip("\r\n")
                    blank = not text.strip() if whitespace else not text
                    if blank:
                        continue
                    if skip:
                        skip = False
                        continue
                    yield lineno, (text.split() if whitespace else text.split(sep))
                return
            reader = csv.reader(fh, delimiter=sep)
            last = 0
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error:
                    return
                start, last = last + 1, reader.line_num
                if not record:
                    continue
                if skip:
                    skip = False
                    continue
                yield start, record

    def ragged_lines(self, limit: int) -> list[int]:
        """Lines of the first ``limit`` records skipped for their field count."""
        n, out = len(self.names), []
        for lineno, record in self._records(every=True):
            if len(record) > n or (len(record) < n and not self._ragged_longer_only):
                out.append(lineno)
                if len(out) >= limit:
                    break
        return out

    def lines_of(self, rows: list[int]) -> dict[int, int | None]:
        """Physical lines of 0-based data rows ``rows`` (one scan of the file)."""
        wanted, out = set(rows), {}
        last = max(rows, default=-1)
        for k, (lineno, _) in enumerate(self._records()):
            if k in wanted:
                out[k] = lineno
            if k >= last:
                break
        return {r: out.get(r) for r in rows}

    def _first_ragged(self) -> DataError | None:
        """The first record whose field count differs from the header's, as a DataError."""
        for lineno, record in self._records(every=True):
            if len(record) != len(self.names):
                return self._ragged_error(lineno, len(record))
        return None

    def _ragged_error(self, lineno: int, found: int) -> DataError:
        n = len(self.names)
        like = (f"like the header ({', '.join(self.names)})" if self.has_header
                else f"({', '.join(self.names)})")
        return DataError(
            f"found {found} field{'s' if found != 1 else ''}, expected {n} {like}; separator "
            f"{self.sep!r}", path=self.path, line=lineno, value=found, expected=f"{n} fields",
            hints=(option("sep").hint(),) if found == 1 else ())

    def where(self, row: int) -> dict[str, Any]:
        """DataError location of 0-based data row ``row`` (its 1-based physical line)."""
        line, _, _ = self.cell(row, None)
        return {"path": self.path, "line": line, "row": row + 1}

    def cell(self, row: int, col: str | None) -> tuple[int | None, int | None, str | None]:
        """(physical line, fields found, text of column ``col``) of data row ``row``."""
        for k, (lineno, record) in enumerate(self._records()):
            if k == row:
                text = None
                if col is not None and col in self.unique_names:
                    pos = self.unique_names.index(col)
                    text = record[pos] if pos < len(record) else None
                return lineno, len(record), text
        return None, None, None

    def _decode_error(self, exc: UnicodeDecodeError) -> DataError:
        offset, line, byte = _find_undecodable(self.source, self.encoding)
        what = f"byte 0x{byte:02x}" if byte is not None else "a byte"
        where = (f"{what} (byte offset {offset})" if offset is not None
                 else "somewhere in the file")
        alt = "latin-1" if self.codec != "latin-1" else "utf-8"
        return DataError(f"cannot decode {where} as {self.codec}", path=self.path, line=line,
                         value=self.codec, expected=f"{self.codec} text",
                         hints=(option("encoding").hint(f'"{alt}"', alt,
                                                        "read it in another encoding"),))


def _arrow_owned(data: bytes) -> Any:
    """``data`` copied into an Arrow-allocated buffer.

    pyarrow's reader threads release the buffers they read; a buffer that wraps a Python
    ``bytes`` object needs the GIL for that, and a thread still waiting for it when the
    interpreter exits aborts the process ("terminate called without an active exception",
    seen in about 1 of 40 runs). An Arrow-owned copy (one memcpy) has no such release.
    """
    import pyarrow as pa

    out = pa.BufferOutputStream()
    out.write(data)
    return out.getvalue()


