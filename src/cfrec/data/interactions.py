"""The one data container of cfrec: ratings or interactions, the id vocabularies and metadata."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cfrec.data.features import Features
from cfrec.data.idmap import INDEX_DTYPE, IdMap
from cfrec.errors import DataError

if TYPE_CHECKING:
    import torch

RATING_DTYPE = np.float32
TIME_DTYPE = np.int64
WEIGHT_DTYPE = np.float32
#: The rating scale of implicit data: ``ratings`` is 1 (interacted) on every row.
IMPLICIT_SCALE = (0.0, 1.0)
FeedbackKind = Literal["explicit", "implicit"]


@dataclass(frozen=True, eq=False)
class Interactions:
    """Ratings or interactions ``(user, item, rating, timestamp[, weight])`` over shared vocabularies.

    Indices are dense int32 positions in ``user_map`` / ``item_map``; ratings are float32 and
    timestamps int64 Unix seconds (0 where unknown). Raw ids go in and out of every public
    function; the indices are an internal detail that models and splits share.

    Two kinds of data share this container, told apart by ``feedback``:

    * ``"explicit"``: star ratings. ``ratings`` holds them and ``weights`` is ``None``.
    * ``"implicit"``: interactions (clicks, plays, purchases), one row per ``(user, item)``
      pair. ``ratings`` is 1.0 on every row (the binary "interacted" preference, so a ranking
      model that reads ``ratings`` trains on binary input unchanged) and ``rating_scale`` is
      ``(0, 1)``; ``weights`` holds each pair's strength: the number of events, or the sum of
      a weight column (plays, quantity, dwell), float32 and >= 0. ``timestamps`` holds the
      pair's latest event. Rating-prediction models refuse implicit data.

    Attributes
    ----------
    users, items
        int32 index arrays of shape (n_ratings,).
    ratings
        float32 array of shape (n_ratings,).
    timestamps
        int64 array of shape (n_ratings,).
    user_map, item_map
        Vocabularies of raw ids. A split's train and test share the full data's vocabularies.
    rating_scale
        ``(low, high)`` of the rating scale; predictions are clipped to it.
    item_info
        Item metadata indexed by raw item id (columns such as ``title``, ``year``, ``genres``).
    user_info
        User metadata indexed by raw user id, when the dataset has it.
    name
        Dataset name for reports (``"ml-100k"``, ``"synthetic"``, a file name ...).
    weights
        float32 array of shape (n_ratings,) for implicit data (events or summed weight per
        pair); ``None`` for explicit data.
    feedback
        ``"explicit"`` or ``"implicit"``.
    item_features, user_features
        Side features (:class:`~cfrec.data.features.Features`, keyed by raw id, so they survive
        subsets, splits and re-indexing) for the models that use them; ``None`` when absent.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    user_map: IdMap
    item_map: IdMap
    rating_scale: tuple[float, float] = (1.0, 5.0)
    item_info: pd.DataFrame | None = field(default=None, repr=False)
    user_info: pd.DataFrame | None = field(default=None, repr=False)
    name: str = "ratings"
    weights: np.ndarray | None = field(default=None, repr=False)
    feedback: FeedbackKind = "explicit"
    item_features: Features | None = field(default=None, repr=False)
    user_features: Features | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.users)
        arrays = [("items", self.items), ("ratings", self.ratings), ("timestamps", self.timestamps)]
        if self.weights is not None:
            arrays.append(("weights", self.weights))
        for label, arr in arrays:
            if len(arr) != n:
                raise ValueError(f"{label} has {len(arr)} entries, users has {n}")
        if self.users.dtype != INDEX_DTYPE or self.items.dtype != INDEX_DTYPE:
            raise TypeError("users and items must be int32 index arrays")
        if self.ratings.dtype != RATING_DTYPE or self.timestamps.dtype != TIME_DTYPE:
            raise TypeError("ratings must be float32 and timestamps int64")
        if self.feedback not in ("explicit", "implicit"):
            raise ValueError(f"feedback must be 'explicit' or 'implicit', not {self.feedback!r}")
        if self.weights is not None and self.weights.dtype != WEIGHT_DTYPE:
            raise TypeError("weights must be float32")
        if self.feedback == "implicit" and self.weights is None:
            raise ValueError("implicit data needs weights (ones when every pair counts the same)")
        if self.feedback == "explicit" and self.weights is not None:
            raise ValueError("explicit data carries no weights")

    @property
    def is_implicit(self) -> bool:
        """Whether this holds interactions (no ratings) rather than explicit ratings."""
        return self.feedback == "implicit"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        user_col: str = "user_id",
        item_col: str = "item_id",
        rating_col: str = "rating",
        time_col: str | None = "timestamp",
        rating_scale: tuple[float, float] | None = None,
        item_info: pd.DataFrame | None = None,
        user_info: pd.DataFrame | None = None,
        user_map: IdMap | None = None,
        item_map: IdMap | None = None,
        name: str = "ratings",
        feedback: FeedbackKind = "explicit",
        weight_col: str | None = None,
    ) -> Interactions:
        """Build from a frame of raw ids; vocabularies are built from the data unless given.

        ``rating_scale`` defaults to the observed (min, max) of the ratings. With
        ``feedback="implicit"`` the frame needs no rating column: each row is one ``(user,
        item)`` pair (not aggregated here) whose weight is ``weight_col`` (default 1).
        """
        implicit = feedback == "implicit"
        needed = (user_col, item_col) if implicit else (user_col, item_col, rating_col)
        for col in (*needed, *([weight_col] if weight_col is not None else [])):
            if col not in df.columns:
                raise DataError(f"missing column; have {list(df.columns)}", field=col)
        umap = user_map if user_map is not None else IdMap(df[user_col].to_numpy())
        imap = item_map if item_map is not None else IdMap(df[item_col].to_numpy())
        users = umap.to_index(df[user_col].to_numpy(), what="user")
        items = imap.to_index(df[item_col].to_numpy(), what="item")
        if implicit:
            weights = (np.ones(len(df), dtype=WEIGHT_DTYPE) if weight_col is None
                       else df[weight_col].to_numpy(dtype=WEIGHT_DTYPE))
            return cls(users, items, np.ones(len(df), dtype=RATING_DTYPE), _times(df, time_col),
                       umap, imap, IMPLICIT_SCALE, item_info, user_info, name, weights, "implicit")
        ratings = df[rating_col].to_numpy(dtype=RATING_DTYPE)
        ts = _times(df, time_col)
        if rating_scale is None:
            rating_scale = (
                (float(ratings.min()), float(ratings.max())) if len(ratings) else (1.0, 5.0)
            )
        return cls(users, items, ratings, ts, umap, imap, (float(rating_scale[0]), float(rating_scale[1])),
                   item_info, user_info, name)

    # ------------------------------------------------------------------ basic facts
    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        if self.is_implicit:
            return (f"Interactions(name={self.name!r}, interactions={len(self)}, "
                    f"users={self.n_users}, items={self.n_items}, feedback='implicit')")
        return (f"Interactions(name={self.name!r}, ratings={len(self)}, users={self.n_users}, "
                f"items={self.n_items}, scale={self.rating_scale})")

    @property
    def n_users(self) -> int:
        """Size of the user vocabulary (may exceed the users present in this subset)."""
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    @property
    def nbytes(self) -> int:
        """Bytes held by the rating arrays and vocabularies (not the metadata)."""
        vocab = self.user_map.ids.nbytes + self.item_map.ids.nbytes
        weights = 0 if self.weights is None else self.weights.nbytes
        return int(self.users.nbytes + self.items.nbytes + self.ratings.nbytes + self.timestamps.nbytes
                   + weights + vocab)

    def present_users(self) -> np.ndarray:
        """Indices of users with at least one rating here."""
        return np.flatnonzero(np.bincount(self.users, minlength=self.n_users))

    def present_items(self) -> np.ndarray:
        return np.flatnonzero(np.bincount(self.items, minlength=self.n_items))

    def user_counts(self) -> np.ndarray:
        """Ratings per user index, shape (n_users,)."""
        return np.bincount(self.users, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    # ------------------------------------------------------------------ raw-id views
    def raw_users(self) -> np.ndarray:
        return self.user_map.to_raw(self.users)

    def raw_items(self) -> np.ndarray:
        return self.item_map.to_raw(self.items)

    def to_frame(self) -> pd.DataFrame:
        """Rows with raw ids: columns user_id, item_id, rating, timestamp (and weight if implicit)."""
        frame = pd.DataFrame({
            "user_id": self.raw_users(),
            "item_id": self.raw_items(),
            "rating": self.ratings,
            "timestamp": self.timestamps,
        })
        if self.weights is not None:
            frame["weight"] = self.weights
        return frame

    def item_titles(self, raw_items: Any) -> list[str]:
        """Titles for raw item ids, falling back to ``str(id)`` where metadata is missing."""
        raw = np.atleast_1d(np.asarray(raw_items, dtype=object))
        if self.item_info is None or "title" not in self.item_info.columns:
            return [str(r) for r in raw]
        titles = self.item_info["title"]
        return [str(titles.get(r, r)) for r in raw]

    # ------------------------------------------------------------------ conversion
    def to_csr(self, *, binary: bool = False, weighted: bool = False,
               dtype: Any = np.float32) -> sp.csr_array:
        """Users x items sparse matrix (always this orientation). Duplicate pairs are summed.

        Values are the ratings, ones with ``binary``, or the weights with ``weighted`` (implicit
        data only).
        """
        if weighted:
            if self.weights is None:
                raise DataError("explicit ratings have no weights; use binary=True or the ratings")
            data = self.weights.astype(dtype, copy=False)
        else:
            data = np.ones(len(self), dtype=dtype) if binary else self.ratings.astype(dtype, copy=False)
        mat = sp.csr_array((data, (self.users, self.items)), shape=(self.n_users, self.n_items))
        mat.sum_duplicates()
        return mat

    def to_tensors(self, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """Tensors ``users``/``items`` (int64, for embedding lookups), ``ratings`` (float32), ``timestamps``
        (and ``weights``, float32, for implicit data)."""
        import torch

        def own(a: np.ndarray) -> np.ndarray:  # torch warns on (and would alias) read-only arrays
            return a if a.flags.writeable else a.copy()

        out = {
            "users": torch.as_tensor(own(self.users), dtype=torch.int64, device=device),
            "items": torch.as_tensor(own(self.items), dtype=torch.int64, device=device),
            "ratings": torch.as_tensor(own(self.ratings), dtype=torch.float32, device=device),
            "timestamps": torch.as_tensor(own(self.timestamps), dtype=torch.int64, device=device),
        }
        if self.weights is not None:
            out["weights"] = torch.as_tensor(own(self.weights), dtype=torch.float32, device=device)
        return out

    # ------------------------------------------------------------------ derivation
    def subset(self, selector: np.ndarray) -> Interactions:
        """Rows picked by a boolean mask or index array; vocabularies and metadata are shared."""
        sel = np.asarray(selector)
        return replace(
            self,
            users=self.users[sel],
            items=self.items[sel],
            ratings=self.ratings[sel],
            timestamps=self.timestamps[sel],
            weights=None if self.weights is None else self.weights[sel],
        )

    def with_vocab(self, user_map: IdMap, item_map: IdMap, *, drop_unknown: bool = False) -> Interactions:
        """Re-index onto other vocabularies (for example a model's), optionally dropping unknown ids."""
        u = user_map.to_index(self.raw_users(), missing="-1")
        i = item_map.to_index(self.raw_items(), missing="-1")
        keep = (u >= 0) & (i >= 0)
        if not drop_unknown and not keep.all():
            j = int(np.flatnonzero(~keep)[0])
            which = "user" if u[j] < 0 else "item"
            raw = self.raw_users()[j] if u[j] < 0 else self.raw_items()[j]
            raw = raw.item() if isinstance(raw, np.generic) else raw  # 42, not np.int64(42)
            raise DataError(f"{which} id {raw!r} is not in the target vocabulary")
        return replace(
            self, users=u[keep], items=i[keep], ratings=self.ratings[keep],
            timestamps=self.timestamps[keep], user_map=user_map, item_map=item_map,
            weights=None if self.weights is None else self.weights[keep],
        )

    def as_implicit(self, weight: Literal["one", "rating"] = "one") -> Interactions:
        """These rows as interactions: every rating an interaction (rows are not aggregated).

        ``weight="one"`` gives each pair weight 1; ``"rating"`` keeps the rating as its weight.
        Implicit data is returned as it is.
        """
        if self.is_implicit:
            return self
        if weight not in ("one", "rating"):
            raise ValueError(f"weight must be 'one' or 'rating', not {weight!r}")
        weights = (np.ones(len(self), dtype=WEIGHT_DTYPE) if weight == "one"
                   else self.ratings.astype(WEIGHT_DTYPE))
        return replace(self, ratings=np.ones(len(self), dtype=RATING_DTYPE),
                       rating_scale=IMPLICIT_SCALE, weights=weights, feedback="implicit")

    def compact(self) -> Interactions:
        """Shrink the vocabularies to the ids that occur here (what a model trained on this sees)."""
        pu, pi = self.present_users(), self.present_items()
        if len(pu) == self.n_users and len(pi) == self.n_items:
            return self
        umap = IdMap.from_sorted_unique(self.user_map.ids[pu].copy())
        imap = IdMap.from_sorted_unique(self.item_map.ids[pi].copy())
        u_new = np.full(self.n_users, -1, dtype=INDEX_DTYPE)
        u_new[pu] = np.arange(len(pu), dtype=INDEX_DTYPE)
        i_new = np.full(self.n_items, -1, dtype=INDEX_DTYPE)
        i_new[pi] = np.arange(len(pi), dtype=INDEX_DTYPE)
        return replace(self, users=u_new[self.users], items=i_new[self.items], user_map=umap, item_map=imap)

    def concat(self, other: Interactions) -> Interactions:
        """Rows of both (of one feedback kind); they must share vocabularies."""
        if other.feedback != self.feedback:
            raise DataError(f"cannot concatenate {self.feedback} and {other.feedback} data")
        same_users = other.user_map is self.user_map or other.user_map == self.user_map
        same_items = other.item_map is self.item_map or other.item_map == self.item_map
        if not (same_users and same_items):
            other = other.with_vocab(self.user_map, self.item_map)
        return replace(
            self,
            users=np.concatenate([self.users, other.users]),
            items=np.concatenate([self.items, other.items]),
            ratings=np.concatenate([self.ratings, other.ratings]),
            timestamps=np.concatenate([self.timestamps, other.timestamps]),
            weights=(None if self.weights is None or other.weights is None
                     else np.concatenate([self.weights, other.weights])),
        )

    def fingerprint(self) -> str:
        """SHA-256 over raw ids, ratings, timestamps (and weights), stable across vocabularies and row order.

        Each row is mixed into a 64-bit hash; the sorted row hashes (a multiset) and the raw ids
        present are digested, so a subset hashes the same whatever vocabulary it is indexed in.
        """
        if len(self) >= FINGERPRINT_COMPILED_MIN:
            compiled = self._compiled_row_hashes(hashlib.sha256())
            if compiled is not None:
                digest, hashes = compiled
                hashes.sort()
                digest.update(hashes.data)  # the array's own bytes (no copy of them)
                return str(digest.hexdigest())
        d = self.compact()  # vocabularies reduced to the ids present, so a subset hashes alike
        h = hashlib.sha256()
        for ids in (d.user_map.ids, d.item_map.ids):
            h.update(np.ascontiguousarray(ids if ids.dtype.kind in "iu" else ids.astype(str)).tobytes())
        with np.errstate(over="ignore"):
            row = _mix64((d.users.astype(np.uint64) << np.uint64(32)) | d.items.astype(np.uint64))
            row ^= _mix64(d.timestamps.view(np.uint64) ^ np.uint64(0x9E3779B97F4A7C15))
            row ^= _mix64(d.ratings.view(np.uint32).astype(np.uint64) + np.uint64(0xD1B54A32D192ED03))
            if d.weights is not None:
                row ^= _mix64(d.weights.view(np.uint32).astype(np.uint64) + np.uint64(0x8CB92BA72F3D8DD7))
        row.sort()
        h.update(row.data)
        return h.hexdigest()


    def _compiled_row_hashes(self, h: Any) -> tuple[Any, np.ndarray] | None:
        """:meth:`fingerprint`'s vocabulary digest (into ``h``) and row hashes, the rows hashed in
        one compiled pass against the compacted indices without building the compacted copy;
        None where numba is missing."""
        try:
            from cfrec.engines.compiled import row_fingerprints
        except ImportError:  # pragma: no cover - numba is a dependency
            return None
        remap = []
        for idx, n, vocab in ((self.users, self.n_users, self.user_map), (self.items, self.n_items, self.item_map)):
            present = np.flatnonzero(np.bincount(idx, minlength=n))
            ids = vocab.ids[present]
            h.update(np.ascontiguousarray(ids if ids.dtype.kind in "iu" else ids.astype(str)).tobytes())
            new = np.full(n, -1, dtype=np.int64)
            new[present] = np.arange(len(present), dtype=np.int64)
            remap.append(new)
        weights = self.weights if self.weights is not None else self.ratings
        row = row_fingerprints(self.users, self.items, remap[0], remap[1], self.timestamps.view(np.uint64),
                               self.ratings.view(np.uint32), weights.view(np.uint32), self.weights is not None)
        return h, row


def _times(df: pd.DataFrame, time_col: str | None) -> np.ndarray:
    if time_col is not None and time_col in df.columns:
        return df[time_col].to_numpy(dtype=TIME_DTYPE)
    return np.zeros(len(df), dtype=TIME_DTYPE)


#: Rows from which :meth:`Interactions.fingerprint` hashes them in one compiled pass (smaller
#: data is hashed by numpy, with no compiled code to load).
FINGERPRINT_COMPILED_MIN = 1 << 18


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash of each element."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
