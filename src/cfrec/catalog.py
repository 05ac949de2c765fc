"""Item metadata and title search for a fitted model: one home for what the service and the
command line show about items.

A :class:`Catalog` is built once from a model (:meth:`Catalog.from_model`): it keeps the model's
item vocabulary, the titles, years and genres saved with it, and how many training ratings each
item had (its popularity). It answers three questions, all in the model's own raw ids:

* :meth:`Catalog.records` -- ``{"id", "title", "year", "genres", "n_ratings"}`` per item, ready
  for JSON;
* :meth:`Catalog.search` -- a case- and accent-insensitive title search. Every word of the query
  must appear in the title (so ``"empire strikes"`` finds ``"Empire Strikes Back, The (1980)"``
  and ``"the empire"`` finds it too); an exact title comes first, then titles holding the query
  as one phrase, then the rest, each group ranked by training popularity, because a user typing
  "star wars" most likely means the film most people rated;
* :meth:`Catalog.resolve` -- one item for a query that is an id or a title (an id wins, then an
  exact title, then the most popular title match), as ``cfrec similar --item`` resolves it.

Titles are normalised once at construction (Unicode NFKD without combining marks, case-folded,
punctuation as spaces), so a search is a few vectorised substring tests over the catalogue.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cfrec.data.idmap import IdMap
from cfrec.errors import CfrecError, UnknownIdError

if TYPE_CHECKING:
    from cfrec.models.base import Recommender

_NON_WORD = re.compile(r"[^\w]+")
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


def normalize_title(text: str) -> str:
    """The searchable form of a title or query: accents removed, case-folded, punctuation and
    runs of spaces turned into single spaces (``"Amélie (2001)"`` -> ``"amelie 2001"``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", plain.casefold()).replace("_", " ").strip()


@dataclass(frozen=True)
class Match:
    """One item matched by :meth:`Catalog.resolve`: its model index and record."""

    index: int
    record: dict[str, Any]


class Catalog:
    """Titles, years, genres and training popularity of a model's items, by raw id.

    Parameters
    ----------
    item_map
        The model's item vocabulary (raw id <-> model index).
    info
        Item metadata indexed by raw id with any of the columns ``title``, ``year`` and
        ``genres`` (a list of names, or one ``|``-separated string); items missing from it have
        no metadata.
    counts
        Training ratings per model item index (``n_items`` non-negative integers); zeros when
        ``None``.

    Attributes
    ----------
    ids
        Raw item ids in model index order.
    counts
        int64 training ratings per item.
    has_titles
        Whether any item has a title.
    """

    def __init__(self, item_map: IdMap, info: pd.DataFrame | None = None,
                 counts: np.ndarray | None = None) -> None:
        n = len(item_map)
        self.item_map = item_map
        self.ids = item_map.ids
        if counts is None:
            counts = np.zeros(n, dtype=np.int64)
        counts = np.asarray(counts)
        if counts.shape != (n,) or (n and int(counts.min()) < 0):
            raise CfrecError(f"catalog counts must be {n} non-negative integers (one per item), "
                             f"got shape {counts.shape}")
        self.counts = counts.astype(np.int64, copy=False)
        frame = (info.reindex(item_map.ids) if info is not None
                 else pd.DataFrame(index=pd.Index(item_map.ids)))
        self._ids_py: list[Any] = item_map.to_list()
        self._titles: list[str | None] = _titles(frame, n)
        self._years: list[int | None] = _years(frame, n)
        self._genres: list[list[str]] = _genres(frame, n)
        self._counts_py: list[int] = self.counts.tolist()
        self.has_titles = any(t is not None for t in self._titles)
        normalized = [normalize_title(t) if t else "" for t in self._titles]
        self._search_text = pd.Series(normalized, dtype=object)
        self._bare = np.array([normalize_title(_YEAR_SUFFIX.sub("", t)) if t else "" for t in self._titles],
                              dtype=object)
        self._norm = np.array(normalized, dtype=object)
        #: item indices from the most to the least rated (ties: lower index first)
        self.by_popularity = np.lexsort((np.arange(n), -self.counts)).astype(np.int64)

    @classmethod
    def from_model(cls, model: Recommender) -> Catalog:
        """The catalogue of a fitted model: its item vocabulary, the metadata saved with it and
        each item's number of training ratings (from its seen-items matrix)."""
        seen = model.seen_
        counts = np.bincount(seen.indices, minlength=seen.shape[1]).astype(np.int64)
        return cls(model.item_map_, model.item_info_, counts)

    def __len__(self) -> int:
        return len(self._ids_py)

    # ------------------------------------------------------------------ lookups
    def index_of(self, raw: Any) -> np.ndarray:
        """Model indices (int64) of raw ids, -1 where an id is unknown. Text finds numeric ids
        (``"50"`` is item 50 of an integer vocabulary)."""
        if isinstance(raw, str) or np.ndim(raw) == 0:
            return np.array([self.item_map.index_of(raw)], dtype=np.int64)
        return self.item_map.to_index(raw, missing="-1").astype(np.int64)

    def record(self, index: int) -> dict[str, Any]:
        """``{"id", "title", "year", "genres", "n_ratings"}`` of one model index (plain Python
        values, ``None`` where unknown)."""
        i = int(index)
        return {"id": self._ids_py[i], "title": self._titles[i], "year": self._years[i],
                "genres": list(self._genres[i]), "n_ratings": self._counts_py[i]}

    def records(self, indices: Any) -> list[dict[str, Any]]:
        """:meth:`record` for each model index, in order."""
        return [self.record(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1).tolist()]

    def records_of(self, ids: Any) -> list[dict[str, Any]]:
        """:meth:`record` for each raw id the model knows (a ranked list's ids), in order."""
        index_of = self.item_map.index_of
        values = ids.reshape(-1).tolist() if isinstance(ids, np.ndarray) else list(ids)
        return [self.record(index_of(v, missing="raise", what="item")) for v in values]

    def raw_id(self, index: int) -> Any:
        """The raw id (a plain ``int`` or ``str``) of a model index."""
        return self._ids_py[int(index)]

    def title(self, index: int) -> str | None:
        return self._titles[int(index)]

    # ------------------------------------------------------------------ search
    def search(self, query: str, limit: int | None = 20) -> np.ndarray:
        """Model indices of the items whose title holds every word of ``query``, best first.

        Exact titles (with or without the year) rank first, then titles that hold the query as
        one phrase, then the others; within each group the most-rated items in training come
        first. A query without any word character matches nothing. ``limit=None`` returns every
        match.
        """
        if limit is not None and limit < 1:
            raise CfrecError(f"search limit must be a positive integer, got {limit!r}")
        needle = normalize_title(query)
        if not needle or not self.has_titles:
            return np.zeros(0, dtype=np.int64)
        hit = np.ones(len(self), dtype=bool)
        for word in needle.split():
            hit &= self._search_text.str.contains(word, regex=False).to_numpy(dtype=bool)
        found = np.flatnonzero(hit)
        if not len(found):
            return found.astype(np.int64)
        exact = (self._norm[found] == needle) | (self._bare[found] == needle)
        padded = np.char.add(np.char.add(" ", self._norm[found].astype(str)), " ")
        phrase = np.char.find(padded, f" {needle} ") >= 0
        tier = np.where(exact, 0, np.where(phrase, 1, 2))
        order = np.lexsort((found, -self.counts[found], tier))
        ranked = found[order].astype(np.int64)
        return ranked if limit is None else ranked[:limit]

    def popular(self, limit: int = 20) -> np.ndarray:
        """Model indices of the ``limit`` most-rated items in training."""
        if limit < 1:
            raise CfrecError(f"limit must be a positive integer, got {limit!r}")
        return self.by_popularity[:limit]

    def resolve(self, query: Any) -> tuple[int, list[Match]]:
        """One item for an id or a title query, plus every title match (best first).

        An id the model knows wins; otherwise the best :meth:`search` match (an exact title, else
        the most-rated title holding the words). Raises :class:`~cfrec.errors.UnknownIdError`
        when nothing matches.
        """
        idx = int(self.index_of(query)[0])
        if idx >= 0:
            return idx, [Match(idx, self.record(idx))]
        text = str(query)
        if not normalize_title(text):
            raise UnknownIdError(f"no item id or title matches {text!r}")
        if not self.has_titles:
            raise UnknownIdError(f"no item with id {text!r}, and the model has no titles to search")
        hits = self.search(text, limit=None)
        if not len(hits):
            raise UnknownIdError(f"no item id or title matches {text!r}")
        return int(hits[0]), [Match(int(i), self.record(int(i))) for i in hits.tolist()]


# ---------------------------------------------------------------------- column readers
def _titles(frame: pd.DataFrame, n: int) -> list[str | None]:
    if "title" not in frame.columns:
        return [None] * n
    out: list[str | None] = []
    for value in frame["title"].tolist():
        out.append(value if isinstance(value, str) and value.strip() else None)
    return out


def _years(frame: pd.DataFrame, n: int) -> list[int | None]:
    if "year" not in frame.columns:
        return [None] * n
    values = pd.to_numeric(frame["year"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(values) & (values == np.round(values))
    return [int(v) if good else None for v, good in zip(values.tolist(), ok.tolist(), strict=True)]


def _genres(frame: pd.DataFrame, n: int) -> list[list[str]]:
    if "genres" not in frame.columns:
        return [[] for _ in range(n)]
    out: list[list[str]] = []
    for value in frame["genres"].tolist():
        if isinstance(value, str):
            out.append([g for g in value.split("|") if g and g != "(no genres listed)"])
        elif isinstance(value, list | tuple | np.ndarray):
            out.append([str(g) for g in value if isinstance(g, str) and g])
        else:
            out.append([])
    return out
