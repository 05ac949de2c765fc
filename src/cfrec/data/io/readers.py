"""Column readers: Parquet, and delimited text parsed by pyarrow (pandas when pyarrow refuses it).

Only the error paths scan a file in Python, to name the line, the field and the text it holds.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from cfrec.data.io.guard import TextStream
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


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class UseAnotherParser(Exception):
    """A parser cannot read this file; the next one of :meth:`_TextReader.engines` may."""


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

    def header(self) -> list[str]:
        return [str(n) for n in self._schema.names]

    def engines(self) -> tuple[str, ...]:
        return ("parquet",)

    def batches(self, roles: dict[Role, str], chunk_bytes: int, engine: str = "parquet"
                ) -> Iterator[dict[str, Any]]:
        """The role columns in record batches of about ``chunk_bytes // 32`` rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = list(dict.fromkeys(roles.values()))
        try:
            with pq.ParquetFile(self.path) as pf:
                for batch in pf.iter_batches(batch_size=max(1, chunk_bytes // 32), columns=cols):
                    yield {c: batch.column(c) for c in cols}
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable Parquet file ({_short(exc)})",
                            path=self.path) from exc

    def where(self, row: int) -> dict[str, Any]:
        return {"path": self.path, "line": None, "row": row + 1}

    def cell(self, row: int, col: str | None) -> tuple[int | None, int | None, str | None]:
        """(line, fields found, text) of a value; Parquet has no lines and typed values."""
        if col is None:
            return None, None, None
        import pyarrow.parquet as pq

        value = pq.read_table(self.path, columns=[col]).column(col)[row].as_py()
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
                 codec: str, *, skip_bad: bool = False, limit: int | None = None) -> None:
        self.path = path
        #: the most decompressed bytes read (``None``: no limit)
        self.limit = limit
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
        self._stream: TextStream | None = None

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
    @property
    def _multi_sep(self) -> bool:
        return len(self.sep) > 1 and self.sep != r"\s+"

    def _plain(self) -> bool:
        """Whether the file's bytes are already what the parsers read (uncompressed UTF-8 with a
        one-character separator)."""
        return self.source.compression is None and self.codec == "utf-8" and not self._multi_sep

    @contextlib.contextmanager
    def _open_utf8(self) -> Iterator[IO[bytes]]:
        """The file as a stream of UTF-8 text with a one-character separator.

        Compressed files are decompressed as they are read, counted against the size limit;
        other encodings are decoded and re-encoded, and ``::`` becomes one character, all in
        blocks: no step holds the whole file.
        """
        if self._plain():
            with open(self.path, "rb") as fh:
                yield fh
            return
        with self.source.open() as raw:
            stream = TextStream(raw, path=self.path, limit=self.limit,
                                encoding=None if self.codec == "utf-8" else self.encoding,
                                sep=self.sep if self._multi_sep else None, repl=_UNIT_SEP,
                                on_decode_error=self._decode_error)
            self._stream = stream
            with io.BufferedReader(stream, 1 << 20) as fh:
                yield fh

    def _failure(self) -> BaseException | None:
        """The error that stopped the decompressing stream (size limit, undecodable bytes)."""
        return None if self._stream is None else self._stream.failure

    @property
    def _parse_sep(self) -> str:
        return _UNIT_SEP if self._multi_sep else self.sep

    def engines(self) -> tuple[str, ...]:
        """The parsers to try in turn: pyarrow, then pandas when pyarrow refuses the file."""
        if self.sep == r"\s+" or (self.has_header and self.first_line != 1):
            return ("pandas",)
        return ("arrow", "pandas")

    def batches(self, roles: dict[Role, str], chunk_bytes: int, engine: str = "arrow"
                ) -> Iterator[dict[str, Any]]:
        """The role columns (strings as read) in chunks of about ``chunk_bytes`` of text each.

        Raises :class:`UseAnotherParser` when ``engine`` cannot read the file (the caller
        starts again with the next one of :meth:`engines`).
        """
        cols = list(dict.fromkeys(roles.values()))
        self.ragged_skipped = 0
        self._stream = None
        if engine == "arrow":
            yield from self._arrow_batches(cols, chunk_bytes)
        else:
            yield from self._pandas_batches(cols, chunk_bytes)

    def _arrow_batches(self, cols: list[str], chunk_bytes: int) -> Iterator[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        read = pacsv.ReadOptions(column_names=self.unique_names,
                                 skip_rows=1 if self.has_header else 0, block_size=chunk_bytes)
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
        # every column as text: types are decided per column by the checked conversions, the
        # same for every chunk (a streaming reader would fix them from the first block)
        convert = pacsv.ConvertOptions(include_columns=cols, null_values=[""],
                                       strings_can_be_null=True, quoted_strings_can_be_null=True,
                                       column_types={c: pa.string() for c in cols})
        with self._open_utf8() as fh:
            # a stream, not a path: pyarrow would guess a compression from a ".gz" suffix
            src: Any = pa.OSFile(str(self.path)) if self._plain() else fh
            try:
                stream = pacsv.open_csv(src, read_options=read, parse_options=parse,
                                        convert_options=convert)
                while True:
                    try:
                        batch = stream.read_next_batch()
                    except StopIteration:
                        break
                    self.ragged_skipped = len(skipped)
                    yield {c: batch.column(c) for c in cols}
            except (pa.ArrowException, OSError) as exc:
                failure = self._failure()
                if failure is not None:
                    raise failure from None
                text = str(exc)
                if "straddl" in text:
                    raise self._long_line_error(chunk_bytes) from None
                if "Expected" in text and "columns" in text:
                    ragged = self._first_ragged()
                    if ragged is not None:
                        raise ragged from None
                raise UseAnotherParser(text) from None
            finally:
                if src is not fh:
                    src.close()
        self.ragged_skipped = len(skipped)

    def _pandas_batches(self, cols: list[str], chunk_bytes: int) -> Iterator[dict[str, Any]]:
        import pyarrow as pa

        sep = self._parse_sep
        id_cols = set(cols)  # every column as text, converted by the checks
        options: dict[str, Any] = {
            "sep": sep, "encoding": "utf-8-sig", "engine": "c", "names": self.unique_names,
            "header": 0 if self.has_header else None, "dtype": {c: str for c in id_cols},
            "keep_default_na": False, "na_values": [""], "skip_blank_lines": True,
            "compression": None,  # already decompressed; never guessed from the suffix
            "chunksize": max(1, chunk_bytes // 32), "usecols": cols,
        }
        if sep == _UNIT_SEP:
            options["quoting"] = csv.QUOTE_NONE
        if self.skip_bad:  # the C parser skips rows with too many fields; too few read as empty
            options["on_bad_lines"] = "skip"
            self._ragged_longer_only = True
        start = 0
        with self._open_utf8() as fh:
            try:
                with pd.read_csv(fh, **options) as chunks:
                    for frame in chunks:
                        if not self.skip_bad and not frame.index.equals(
                                pd.RangeIndex(start, start + len(frame))):
                            ragged = self._first_ragged()
                            if ragged is not None:
                                raise ragged
                        start += len(frame)
                        yield {c: pa.Array.from_pandas(frame[c]) for c in cols}
            except UnicodeDecodeError as exc:
                raise self._decode_error(exc) from exc
            except pd.errors.EmptyDataError:
                return
            except (pd.errors.ParserError, ValueError) as exc:
                failure = self._failure()
                if failure is not None:
                    raise failure from None
                ragged = self._first_ragged()
                if ragged is not None:
                    raise ragged from None
                msg = (str(exc).strip().splitlines()[-1] if str(exc).strip()
                       else type(exc).__name__)
                msg = re.sub(r"^Error tokenizing data\. C error: ", "", msg)
                if "buffer overflow" in msg or "out of memory" in msg:
                    raise self._long_line_error(chunk_bytes) from None
                raise DataError(f"cannot parse the file as fields separated by {self.sep!r} "
                                f"({msg})", path=self.path, hints=(option("sep").hint(),)
                                ) from exc
        if self.skip_bad:
            n = len(self.names)
            self.ragged_skipped = sum(len(r) > n for _, r in self._records(every=True))

    def _long_line_error(self, chunk_bytes: int) -> DataError:
        """The error for a line longer than a read block: names it, its length and whether it
        holds the separator at all."""
        sep = self._parse_sep.encode("utf-8") if self.sep != r"\s+" else None

        def holds_sep(piece: bytes) -> bool:
            return (sep in piece) if sep is not None else (b" " in piece or b"\t" in piece)

        line, length, has_sep, prev_cr, at = 1, 0, False, False, 0
        with self._open_utf8() as fh:
            while not at and (block := fh.read(1 << 20)):
                pos = 1 if prev_cr and block.startswith(b"\n") else 0
                prev_cr = False
                for m in _LINE_BREAK.finditer(block, pos):
                    piece = block[pos:m.start()]
                    length += len(piece)
                    has_sep = has_sep or holds_sep(piece)
                    if length > chunk_bytes:
                        at = line
                        break
                    line, length, has_sep, pos = line + 1, 0, False, m.end()
                    prev_cr = m.group() == b"\r" and m.end() == len(block)
                else:
                    piece = block[pos:]
                    length += len(piece)
                    has_sep = has_sep or holds_sep(piece)
        at = at or line
        fields = ", ".join(self.names)
        if not has_sep:
            what = (f"with no separator {self.sep!r} in it; a row has {len(self.names)} fields "
                    f"({fields}): not rating rows, or another separator")
        else:
            what = f"(a row has {len(self.names)} fields: {fields}); not rating rows"
        return DataError(f"line {at} is {length:,} bytes long {what}; lines longer than "
                         f"{chunk_bytes:,} bytes are not read", path=self.path, line=at,
                         value=f"{length:,} bytes", expected=f"a row of {len(self.names)} fields",
                         hints=(option("sep").hint(),) if not has_sep else ())

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
        sep = self._parse_sep
        with self._open_utf8() as raw, io.TextIOWrapper(raw, encoding="utf-8-sig",
                                                        errors="replace", newline="") as fh:
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
                except csv.Error as exc:
                    if "field larger than field limit" in str(exc):
                        raise self._long_line_error(csv.field_size_limit()) from None
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
