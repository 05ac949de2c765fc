"""What a file is before parsing: compression, binary formats, text encoding, names."""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import lzma
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cfrec.data.options import option
from cfrec.errors import DataError

_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
_SNIFF_BYTES = 1 << 16

# file signatures of formats people save by mistake under a .csv name
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF-", "PDF"),
    (b"\x7fELF", "ELF executable"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"ARROW1", "Arrow/Feather"),
    (b"\x93NUMPY", "NumPy .npy"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "old Microsoft Office file (.xls/.doc)"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "Java class or Mach-O file"),
    (b"\x00asm", "WebAssembly"),
    (b"RIFF", "RIFF container (WAV/AVI/WebP)"),
    (b"OggS", "Ogg media"),
    (b"ID3", "MP3"),
    (b"\x1a\x45\xdf\xa3", "Matroska/WebM video"),
    (b"PAR1", "Parquet"),
)
_UTF_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"),
)



@dataclass(frozen=True)
class _Source:
    """How to get the file's bytes, and its first (decompressed) bytes."""

    path: Path
    compression: str | None = None  # "gzip", "bz2", "xz", "zip"
    member: str | None = None       # the file inside a zip
    head: bytes = b""
    parquet: bool = False

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """The file's (decompressed) bytes."""
        with _open_bytes(self.path, self.compression, self.member) as fh:
            yield fh


@contextlib.contextmanager
def _open_bytes(path: Path, compression: str | None, member: str | None = None
                ) -> Iterator[IO[bytes]]:
    if compression == "gzip":
        with gzip.open(path, "rb") as fh:
            yield fh  # type: ignore[misc]  # GzipFile is a BufferedIOBase, not IO[bytes]
    elif compression == "bz2":
        with bz2.open(path, "rb") as fh:
            yield fh
    elif compression == "xz":
        with lzma.open(path, "rb") as fh:
            yield fh
    elif compression == "zip":
        with zipfile.ZipFile(path) as zf, zf.open(member or "") as fh:
            yield fh
    else:
        with open(path, "rb") as fh:
            yield fh


_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile,
                      NotImplementedError, RuntimeError, ValueError)


def _inspect(path: Path, codec: str) -> _Source:
    """Recognise Parquet, compressed text and binary files from their first bytes."""
    with open(path, "rb") as fh:
        magic = fh.read(16)
    if magic.startswith(b"PAR1") or _data_suffix(path) in _PARQUET_SUFFIXES:
        return _Source(path, parquet=True)
    compression: str | None = None
    member: str | None = None
    label = ""
    if magic.startswith(b"\x1f\x8b"):
        compression, label = "gzip", "gzip"
    elif magic.startswith(b"BZh") and (magic[4:10] == b"1AY&SY" or path.suffix.lower() == ".bz2"):
        compression, label = "bz2", "bzip2"
    elif magic.startswith(b"\xfd7zXZ\x00"):
        compression, label = "xz", "xz"
    elif magic[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        compression, label = "zip", "ZIP archive"
        member = _zip_member(path)
    if compression is None:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    else:
        try:
            with _open_bytes(path, compression, member) as fh:
                head = fh.read(_SNIFF_BYTES)
        except _DECOMPRESS_ERRORS as exc:
            raise DataError(f"not a text file (looks like {label}, but it does not decompress: "
                            f"{_short(exc)})", path=path) from exc
        if not head:
            raise DataError(f"file is empty once decompressed ({label}); expected rating rows",
                            path=path)
    _check_text(path, head, codec, inner=compression is not None)
    return _Source(path, compression, member, head)


def _zip_member(path: Path) -> str:
    """The one file inside a zip of a ratings file; any other zip is not a ratings file."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [m for m in zf.namelist() if not m.endswith("/")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"not a text file (looks like a damaged ZIP archive: {_short(exc)})",
                        path=path) from exc
    if len(names) == 1:
        return names[0]
    if "[Content_Types].xml" in names:
        kind = ("an Excel workbook" if any(n.startswith("xl/") for n in names)
                else "a Microsoft Office document")
        raise DataError(f"not a text file (looks like {kind}); save the sheet as CSV",
                        path=path)
    if not names:
        raise DataError("not a text file (an empty ZIP archive)", path=path)
    raise DataError(f"not a text file (looks like a ZIP archive holding {len(names)} files, "
                    f"e.g. {', '.join(sorted(names)[:3])}); give the ratings file inside it, or "
                    "a MovieLens zip", path=path)


def _check_text(path: Path, head: bytes, codec: str, *, inner: bool) -> None:
    """Refuse bytes that are not text in ``codec``, naming the format when it is recognised."""
    where = " once decompressed" if inner else ""
    for sig, label in _MAGIC:
        if head.startswith(sig):
            raise DataError(f"not a text file{where} (looks like {label})", path=path)
    wide = codec.startswith(("utf-16", "utf-32"))
    if not wide:
        for bom, enc in _UTF_BOMS:
            if head.startswith(bom):
                raise DataError(f"the file is {enc.upper()} text (it starts with a {enc.upper()} "
                                "byte-order mark)", path=path,
                                hints=(option("encoding").hint(f'"{enc}"', enc),))
        nul = head.find(b"\x00")
        if nul >= 0:
            line = head.count(b"\n", 0, nul) + 1
            raise DataError(f"not a text file{where} (a NUL byte at byte offset {nul}; binary "
                            "data)", path=path, line=line)
        controls = sum(head.count(bytes([b])) for b in (*range(1, 9), *range(14, 27),
                                                         *range(28, 32)))
        if controls > max(2, len(head) // 100):
            raise DataError(f"not a text file{where} ({controls} control bytes in the first "
                            f"{len(head)} bytes; binary data)", path=path)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]



_COMPRESSED = {".gz", ".bz2", ".xz", ".zip"}


def _data_suffix(path: Path) -> str:
    """The format suffix, looking through a compression suffix (``r.csv.gz`` -> ``.csv``)."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _data_stem(path: Path) -> str:
    """File name without its format and compression suffixes (``r.csv.gz`` -> ``r``)."""
    inner = Path(path.stem) if path.suffix.lower() in _COMPRESSED else path
    return inner.stem or path.name


def _find_undecodable(source: _Source, encoding: str, chunk: int = 1 << 20
                      ) -> tuple[int | None, int | None, int | None]:
    """Byte offset, 1-based line and value of the first byte ``encoding`` cannot decode."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, newlines = 0, 0
    with source.open() as fh:
        while block := fh.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                # exc.start indexes the decoder's buffer: leftover bytes of the previous block + block
                pending = len(exc.object) - len(block)
                pos = max(exc.start - pending, 0)
                bad = offset + pos
                value = exc.object[exc.start] if exc.start < len(exc.object) else None
                return bad, newlines + block.count(b"\n", 0, pos) + 1, value
            offset += len(block)
            newlines += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return offset, newlines + 1, None
    return None, None, None

