"""The first 64 KiB of a text file: its lines, the separator, whether the first line is data."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from cfrec.data.io.source import _data_suffix
from cfrec.data.options import option
from cfrec.errors import DataError

_SEP_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".dat": "::"}
_SNIFF_CANDIDATES = ("\t", ",", ";", "|")


def _head_lines(text: str, *, cut: bool) -> list[tuple[int, str]]:
    """Non-blank lines of the sniffed text with their 1-based numbers (at most 50)."""
    lines = io.StringIO(text, newline="").readlines()
    if cut and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    out = []
    for k, line in enumerate(lines, start=1):
        body = line.rstrip("\r\n")
        if body.strip():
            out.append((k, body))
        if len(out) >= 50:
            break
    return out


def _unique_names(names: list[str]) -> list[str]:
    """Names the parsers accept: empty ones become ``column<k>``, repeats get ``.1``, ``.2``."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for k, n in enumerate(names, start=1):
        base = n if n else f"column{k}"
        cand = base
        while cand in seen:
            seen[base] += 1
            cand = f"{base}.{seen[base]}"
        seen.setdefault(cand, 0)
        out.append(cand)
    return out



def _head_records(text: str, sep: str, *, cut: bool, limit: int = 50
                  ) -> list[tuple[int, list[str]]]:
    """The first non-empty CSV records of ``text`` (quote-aware) with their first line numbers.

    When ``text`` is a cut prefix of the file its last record may be partial and is dropped.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    out: list[tuple[int, list[str]]] = []
    last = 0
    try:
        for record in reader:
            start, last = last + 1, reader.line_num
            if record and any(f.strip() for f in record):
                out.append((start, record))
            if len(out) > limit:
                break
    except csv.Error:
        pass
    if cut and len(out) > 1 and len(out) <= limit:
        out = out[:-1]
    return out[:limit]


def _sniff_sep(path: Path, text: str, lines: list[tuple[int, str]], *, cut: bool) -> str:
    """Pick the separator that splits the first records of ``path`` into equal field counts.

    A candidate scores by how many records share its most common field count (at least 2
    fields); one ragged record among fifty does not hide the separator, so it can be named.
    """
    texts = [t for _, t in lines]
    if "::" in texts[0]:
        return "::"
    preferred = _SEP_BY_SUFFIX.get(_data_suffix(path))
    order = ([preferred] if preferred in _SNIFF_CANDIDATES else []) + [
        c for c in _SNIFF_CANDIDATES if c != preferred]
    best: tuple[int, int, str] | None = None
    for cand in order:
        counts = [len(rec) for _, rec in _head_records(text, cand, cut=cut)]
        if not counts:
            continue
        values, freq = np.unique(np.asarray(counts), return_counts=True)
        mode, agree = int(values[np.argmax(freq)]), int(freq.max())
        if mode < 2 or counts[0] < 2 or agree < max(1, (9 * len(counts)) // 10):
            continue
        if best is None or (agree, mode) > (best[0], best[1]):
            best = (agree, mode, cand)
    if best is not None:
        return best[2]
    widths = [len(t.split()) for t in texts]
    if widths[0] >= 2 and widths.count(widths[0]) >= max(1, (9 * len(widths)) // 10):
        return r"\s+"
    raise DataError("cannot detect the field separator from the first lines (tried tab, comma, "
                    "semicolon, |, :: and spaces)", path=path, line=lines[0][0],
                    hints=(option("sep").hint('","', ","),))


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def _looks_numeric(text: str) -> bool:
    """A number or an ISO date (a headerless file's timestamp); empty counts as neither."""
    text = text.strip()
    if not text:
        return False
    try:
        float(text)
    except ValueError:
        return bool(_ISO_DATE.match(text))
    return True

