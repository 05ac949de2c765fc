"""Which field holds each role (user, item, rating, time, weight): explicit names, then header
names read by their words (:func:`~cfrec.data.io.roles.column_role`), and whether the file holds
ratings or interactions."""

from __future__ import annotations

import re
from typing import Literal

from cfrec.data.io.readers import _ParquetReader, _TextReader
from cfrec.data.io.roles import _ROLE_OPTION, _ROLE_WORD, COLUMN_ALIASES, ROLES, Role, column_role
from cfrec.data.io.sniff import _looks_numeric
from cfrec.data.options import option
from cfrec.errors import DataError, OptionHint


def _resolve_roles(reader: _ParquetReader | _TextReader, explicit: dict[Role, str | None], *,
                   use_time: bool, feedback: str = "auto"
                   ) -> tuple[dict[Role, str], Literal["explicit", "implicit"]]:
    """Map each role to a column of ``reader`` and say what the file holds.

    Explicit names come first, then header names read by their words. ``feedback="auto"`` reads
    ratings when a rating column is found (a weight column is then not read), else interactions;
    ``"implicit"`` reads no rating column, ``"explicit"`` no weight column.
    """
    header = reader.header()
    names = reader.unique_names if isinstance(reader, _TextReader) else header
    path = reader.path
    line = reader.first_line if isinstance(reader, _TextReader) and reader.has_header else None
    what = "header" if reader.has_header else "columns"
    chosen: dict[Role, str] = {}
    taken: set[int] = set()
    for role in ROLES:
        col = explicit.get(role)
        if col is None:
            continue
        hits = [k for k, n in enumerate(header) if n == col]
        if not hits:
            hits = [k for k, n in enumerate(header) if n.strip().lower() == col.strip().lower()]
        if len(hits) != 1:
            problem = "missing column" if not hits else "more than one column is named so"
            raise DataError(f"{problem}; the {what} {'has' if reader.has_header else 'are'} "
                            f"{header}", path=path, line=line, field=col, value=col,
                            expected=f"one of {header}",
                            hints=(option(_ROLE_OPTION[role]).hint(),))
        if hits[0] in taken:
            other = next(r for r, c in chosen.items() if c == names[hits[0]])
            raise DataError(f"column {header[hits[0]]!r} is given for both the {other} and the "
                            f"{role}", path=path, line=line, field=col,
                            hints=(option(_ROLE_OPTION[role]).hint(),))
        chosen[role] = names[hits[0]]
        taken.add(hits[0])
    missing: list[Role] = []
    read_as = [column_role(n) for n in header]
    for role in ROLES:
        if role in chosen or (role == "time" and not use_time):
            continue
        if (role == "rating" and (feedback == "implicit" or (
                feedback == "auto" and explicit.get("weight") is not None))) or (role == "weight" and (
                feedback == "explicit" or (feedback == "auto" and "rating" in chosen))):
            continue
        hits = [k for k, r in enumerate(read_as) if r == role and k not in taken]
        if len(hits) > 1:
            cands = ", ".join(repr(header[k]) for k in hits)
            spec = option(_ROLE_OPTION[role])
            raise DataError(
                f"{len(hits)} columns could hold the {_ROLE_WORD[role]}: {cands}", path=path,
                line=line, field=role, value=[header[k] for k in hits],
                expected=f"one {role} column",
                hints=(spec.hint(f'"{header[hits[0]]}"', _cli_quote(header[hits[0]]),
                                 "pick one"),))
        if hits:
            chosen[role] = names[hits[0]]
            taken.add(hits[0])
        elif role in ("user", "item") or (role == "rating" and feedback == "explicit"):
            missing.append(role)
    if missing:
        raise _missing_roles(reader, header, missing, line, feedback)
    weight_given = explicit.get("weight") is not None
    kind: Literal["explicit", "implicit"] = "explicit" if "rating" in chosen else "implicit"
    if kind == "implicit" or feedback == "implicit" or (feedback == "auto" and weight_given):
        chosen.pop("rating", None)
        kind = "implicit"
    else:
        chosen.pop("weight", None)
    return {r: chosen[r] for r in ROLES if r in chosen}, kind


def _missing_roles(reader: _ParquetReader | _TextReader, header: list[str], missing: list[Role],
                   line: int | None, feedback: str) -> DataError:
    words = [_ROLE_WORD[r] for r in missing]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    known = "; ".join(f"{_ROLE_WORD[r]}: {', '.join(COLUMN_ALIASES[r])}" for r in missing)
    hints: list[OptionHint] = [option(_ROLE_OPTION[r]).hint() for r in missing]
    what = "header" if reader.has_header else "columns"
    text = (f"no {listed} column: the {what} {'has' if reader.has_header else 'are'} {header}; "
            f"names are recognised by their words (any case), e.g. {known}")
    if "rating" in missing and feedback == "explicit":
        hints.append(option("feedback").hint('"implicit"', "implicit",
                                             "read the rows as interactions"))
    if reader.has_header and isinstance(reader, _TextReader):
        numeric = sum(_looks_numeric(h) for h in header)
        if numeric and numeric >= len(header) / 2:
            text += "; the first line looks like data without a header"
        hints.append(option("columns").hint('["user", "item", "rating", "timestamp"]',
                                            "user,item,rating,timestamp",
                                            "name the fields of a file without a header"))
    return DataError(text, path=reader.path, line=line, field=missing[0], value=header,
                     expected=f"a {missing[0]} column", hints=tuple(hints))


def _cli_quote(text: str) -> str:
    return text if re.fullmatch(r"[\w.\-]+", text) else f"'{text}'"


