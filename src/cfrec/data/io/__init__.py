"""Load any rating file (CSV, TSV, ``::``-separated, Parquet) into :class:`Interactions`.

Reading is done by column parsers: pyarrow's multi-threaded CSV reader, pandas' C parser when
pyarrow refuses a file (quoted newlines, whitespace-separated fields), or Parquet. Only the first
64 KiB are looked at in Python, to recognise binary files, pick the separator and find the
columns from the header. Validation is vectorised over whole columns; only when a bad value is
found does Python scan the file, to name the line, the field and the text it holds in the
:class:`~cfrec.errors.DataError`.

Column detection, the messages and their hints are described in ``docs/data-files.md``.

Duplicate ``(user, item)`` pairs are resolved by an explicit policy (see :func:`load_ratings`) and
counted in a :class:`LoadReport`, because silently double-counting a rating biases every model.

Modules: :mod:`~cfrec.data.io.source` (what the file is), :mod:`~cfrec.data.io.sniff` (its first
lines), :mod:`~cfrec.data.io.readers` (column parsers), :mod:`~cfrec.data.io.columns` (which field
holds each role), :mod:`~cfrec.data.io.values` (checked conversion), :mod:`~cfrec.data.io.build`
(ids and the container), :mod:`~cfrec.data.io.duplicates` and :mod:`~cfrec.data.io.load`.
"""

from __future__ import annotations

from cfrec.data.io.build import build_interactions, encode_ids
from cfrec.data.io.duplicates import resolve_duplicates
from cfrec.data.io.load import LoadReport, load_ratings
from cfrec.data.io.readers import HEADERLESS_NAMES
from cfrec.data.io.roles import COLUMN_ALIASES
from cfrec.data.options import DuplicatePolicy

__all__ = [
    "COLUMN_ALIASES",
    "HEADERLESS_NAMES",
    "DuplicatePolicy",
    "LoadReport",
    "build_interactions",
    "encode_ids",
    "load_ratings",
    "resolve_duplicates",
]
