"""Limits shared by the library's front ends (the CLI and the HTTP service), defined once so
both accept and refuse the same requests."""

from __future__ import annotations

#: Longest top-k list one request may ask for (``-k`` on the command line, ``k`` in the API).
#: A list is never longer than the catalogue: a larger ``k`` gives every item.
MAX_K = 10_000

#: Most ratings (or liked items) one new user may be folded in from.
MAX_FOLD_IN = 10_000
