"""Bounded reading of compressed input: a size estimate before reading, and a stream that counts.

A small archive can unpack to gigabytes (a "decompression bomb"). Before a compressed file is
parsed, its decompressed size is estimated (the size a ZIP directory records, a gzip trailer's
ISIZE, and the compression ratio of its first megabyte) and compared with a limit; while it is
read, :class:`TextStream` counts the decompressed bytes and stops at the same limit. The default
limit is :data:`RATIO_LIMIT` times the compressed size, and at least :data:`MIN_LIMIT`; the
``max_input_size`` option (``--max-input-size``) sets another one, or none.

:class:`TextStream` also hands the parsers UTF-8 text: other encodings are decoded and
re-encoded as they stream, and a multi-character separator (``::``) is replaced by a
one-character one, line by line.
"""

from __future__ import annotations

import bz2
import codecs
import io
import lzma
import re
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from cfrec.data.options import option
from cfrec.errors import DataError

#: The smallest default limit on decompressed input, in bytes (1 GiB).
MIN_LIMIT = 1 << 30
#: The default limit on decompressed input, as a multiple of the compressed file's size.
RATIO_LIMIT = 100
_PROBE_INPUT = 1 << 20  # compressed bytes decompressed to estimate the ratio
_PROBE_STEP = 1 << 16
_PROBE_OUTPUT = 1 << 26  # ... or until this much came out
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_size(text: str | int | float | None) -> int | None:
    """Bytes from ``"2GB"``, ``"500M"``, ``"1.5g"`` or a number; ``"none"``/``0`` means no limit
    (returned as ``0``); ``None`` means the default. Units are binary (1 GB = 2**30 bytes)."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise _size_error(str(text))
        return int(text)
    raw = str(text).strip().lower().replace("_", "").replace(",", "")
    if raw in ("none", "unlimited", "off", "0"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", raw)
    if m is None or m.group(2) not in _UNITS:
        raise _size_error(str(text))
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _size_error(text: str) -> DataError:
    return DataError(f"max_input_size {text!r} is not a size", field="max_input_size",
                     value=text, expected="a size such as 4GB, 500MB or none",
                     hints=(option("max_input_size").hint('"4GB"', "4GB"),))


def input_limit(path: Path, compression: str | None, max_input_size: int | None) -> int | None:
    """The most decompressed bytes allowed for ``path`` (``None``: no limit).

    Only compressed files are limited: a plain file's size is known and its rows stream.
    """
    if compression is None or max_input_size == 0:
        return None
    if max_input_size is not None:
        return int(max_input_size)
    return max(MIN_LIMIT, RATIO_LIMIT * path.stat().st_size)


def _mb(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB" if n < (1 << 30) else f"{n / (1 << 30):,.2f} GiB"


def too_large(path: Path, size: int, how: str, limit: int, *, exact: bool) -> DataError:
    """The one-line error for input that decompresses past ``limit``."""
    compressed = path.stat().st_size
    default = (f"{RATIO_LIMIT}x the compressed size, at least {_mb(MIN_LIMIT)}"
               if limit == max(MIN_LIMIT, RATIO_LIMIT * compressed) else "max_input_size")
    amount = f"{size:,} bytes ({_mb(size)})" if exact else f"about {_mb(size)}"
    wanted = max(size, limit) * 2
    return DataError(
        f"decompresses to {'more than ' if how == 'read so far' else ''}{amount} ({how}) from "
        f"{compressed:,} bytes, over the limit of {limit:,} bytes ({default}); a decompression "
        "bomb, or a file that needs a higher limit",
        path=path, value=size, expected=f"at most {limit:,} bytes decompressed",
        hints=(option("max_input_size").hint(f'"{_gb(wanted)}"', _gb(wanted),
                                             "allow it (none: no limit)"),))


def _gb(n: int) -> str:
    return f"{-(-n // (1 << 30))}GB"


def check_estimate(path: Path, compression: str | None, member: str | None,
                   limit: int | None) -> None:
    """Refuse a compressed file whose decompressed size, estimated before reading, is over
    ``limit``: a ZIP member's recorded size, a gzip trailer's size, the ratio of the first MB."""
    if limit is None or compression is None:
        return
    if compression == "zip":
        with zipfile.ZipFile(path) as zf:
            size = zf.getinfo(member or "").file_size
        if size > limit:  # zipfile never returns more than the recorded size
            raise too_large(path, size, "the size the ZIP directory records", limit, exact=True)
        return
    if compression == "gzip":
        with open(path, "rb") as fh:
            fh.seek(-4, io.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")
        if isize > limit:  # the size modulo 2**32: a lower bound for one gzip member
            raise too_large(path, isize, "the size its gzip trailer records", limit, exact=True)
    out, used = _probe(path, compression, limit)
    compressed = path.stat().st_size
    if out > limit:
        raise too_large(path, out, "read so far", limit, exact=True)
    if used and used < compressed:
        estimate = int(out / used * compressed)
        if estimate > limit:
            raise too_large(path, estimate, f"estimated from the {out / used:,.0f}:1 "
                            "compression ratio of its start", limit, exact=False)


def _probe(path: Path, compression: str, limit: int) -> tuple[int, int]:
    """(decompressed bytes, compressed bytes used) for up to the first MB of ``path`` (or the
    part of it that decompresses to 64 MiB)."""
    d: Any
    if compression == "gzip":
        d = zlib.decompressobj(wbits=47)
    elif compression == "bz2":
        d = bz2.BZ2Decompressor()
    else:
        d = lzma.LZMADecompressor()
    out = used = 0
    cap = min(limit, _PROBE_OUTPUT)
    try:
        with open(path, "rb") as fh:
            while used < _PROBE_INPUT and out <= cap:
                block = fh.read(_PROBE_STEP)
                if not block:
                    break
                used += len(block)
                data = block
                while data and out <= cap:
                    if compression == "gzip":
                        piece = d.decompress(data, 1 << 24)
                        data = d.unconsumed_tail
                        if d.eof:
                            rest = d.unused_data
                            d = zlib.decompressobj(wbits=47)
                            data = rest + data
                    else:
                        piece = d.decompress(data, 1 << 24)
                        data = b""
                        if getattr(d, "eof", False):
                            rest = d.unused_data
                            d = bz2.BZ2Decompressor() if compression == "bz2" else (
                                lzma.LZMADecompressor())
                            data = rest
                        elif not d.needs_input:
                            while not d.needs_input and out <= cap:
                                more = d.decompress(b"", 1 << 24)
                                if not more:
                                    break
                                out += len(more)
                    out += len(piece)
                    if not piece and not data:
                        break
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError):
        return out, used  # a damaged file is reported by the reader
    return out, used


class TextStream(io.RawIOBase):
    """UTF-8 bytes of a (decompressed) byte stream, counted against a limit.

    ``encoding`` other than UTF-8 is decoded and re-encoded; ``sep`` (a multi-character
    separator) is replaced by ``repl`` in whole lines. A failure raised while a parser reads
    (the size limit, undecodable bytes) is kept in :attr:`failure`, since a parser may wrap it.
    """

    def __init__(self, raw: IO[bytes], *, path: Path, limit: int | None = None,
                 encoding: str | None = None, sep: str | None = None, repl: str = "",
                 on_decode_error: Any = None, block: int = 1 << 20) -> None:
        super().__init__()
        self._raw, self._path, self._limit, self._block = raw, path, limit, block
        self._decoder = (codecs.getincrementaldecoder(encoding)() if encoding is not None
                         else None)
        self._sep = sep.encode("utf-8") if sep else None
        self._repl = repl.encode("utf-8")
        self._on_decode_error = on_decode_error
        self._pending = b""   # ready to hand out
        self._carry = b""     # an unfinished line (separator replacement works on whole lines)
        self._eof = False
        #: decompressed bytes read from the source so far
        self.consumed = 0
        #: the error that stopped reading, if any
        self.failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def _fill(self) -> bytes:
        block = self._raw.read(self._block)
        if not block:
            self._eof = True
            out = b""
            if self._decoder is not None:
                out = self._decode(b"", final=True)
            return self._replace(out, final=True)
        self.consumed += len(block)
        if self._limit is not None and self.consumed > self._limit:
            self.failure = too_large(self._path, self.consumed, "read so far", self._limit,
                                     exact=True)
            raise self.failure
        if self._decoder is not None:
            block = self._decode(block, final=False)
        return self._replace(block, final=False)

    def _decode(self, block: bytes, *, final: bool) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decode(block, final=final).encode("utf-8")
        except UnicodeDecodeError as exc:
            err = self._on_decode_error(exc) if self._on_decode_error is not None else exc
            self.failure = err
            raise err from exc

    def _replace(self, data: bytes, *, final: bool) -> bytes:
        if self._sep is None:
            return data
        data = self._carry + data
        if final:
            self._carry = b""
            return data.replace(self._sep, self._repl)
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        self._carry = data[cut:]
        return data[:cut].replace(self._sep, self._repl)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = len(view)
        while not self._pending and not self._eof:
            self._pending = self._fill()
        if not self._pending:
            return 0
        n = min(want, len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        parts, have = [self._pending], len(self._pending)
        while have < size and not self._eof:
            piece = self._fill()
            parts.append(piece)
            have += len(piece)
        data = b"".join(parts)
        out, self._pending = data[:size], data[size:]
        return out

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
