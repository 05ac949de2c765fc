"""What one rank of a blocked fit holds: its user block's and its item block's interactions.

Users and items are cut into ``P`` contiguous index ranges (:class:`Blocks`) balanced by their
interaction counts. Rank ``p`` owns user block ``p`` and item block ``p`` (their factor rows) and
holds two parts of the interactions (:class:`Part`): those of its users (for the user half-step)
and those of its items (for the item half-step), both in global indices and in the order of the
source rows. :class:`RankData` adds the vocabularies and the few global facts a fit needs.
:func:`rank_data` cuts an in-memory :class:`~cfrec.data.Interactions` (every rank loads it and
keeps its two parts); a reader of pre-sharded files builds the same :class:`RankData` from the
parts alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError


def balanced_bounds(counts: np.ndarray, parts: int) -> np.ndarray:
    """``parts + 1`` boundaries of contiguous index ranges with about equal sums of ``counts``.

    Boundary ``j`` is the first index where the running count reaches ``j / parts`` of the
    total; every range holds at least one index when there are at least ``parts`` indices.
    """
    n = len(counts)
    if parts < 1:
        raise CfrecError(f"blocks: need at least 1 part, got {parts}")
    if n < parts:
        raise CfrecError(f"blocks: {n} rows cannot be cut into {parts} non-empty blocks; use fewer processes")
    cum = np.cumsum(np.asarray(counts, dtype=np.float64))
    total = cum[-1] if n else 0.0
    cuts = np.searchsorted(cum, total * np.arange(1, parts) / parts, side="left") + 1
    bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    # keep every block non-empty: at least one row each, in order
    for j in range(1, parts):
        bounds[j] = min(max(bounds[j], bounds[j - 1] + 1), n - (parts - j))
    return bounds


@dataclass(frozen=True)
class Blocks:
    """The user and item index ranges of ``P`` blocks: block ``p`` is users
    ``user_bounds[p]:user_bounds[p+1]`` and items ``item_bounds[p]:item_bounds[p+1]``."""

    user_bounds: np.ndarray
    item_bounds: np.ndarray

    @property
    def parts(self) -> int:
        return len(self.user_bounds) - 1

    @property
    def n_users(self) -> int:
        return int(self.user_bounds[-1])

    @property
    def n_items(self) -> int:
        return int(self.item_bounds[-1])

    def user_range(self, p: int) -> tuple[int, int]:
        return int(self.user_bounds[p]), int(self.user_bounds[p + 1])

    def item_range(self, p: int) -> tuple[int, int]:
        return int(self.item_bounds[p]), int(self.item_bounds[p + 1])

    def user_sizes(self) -> np.ndarray:
        return np.diff(self.user_bounds)

    def item_sizes(self) -> np.ndarray:
        return np.diff(self.item_bounds)

    @classmethod
    def balanced(cls, user_counts: np.ndarray, item_counts: np.ndarray, parts: int) -> Blocks:
        """Blocks with about equal interaction counts (see :func:`balanced_bounds`)."""
        return cls(balanced_bounds(user_counts, parts), balanced_bounds(item_counts, parts))


@dataclass
class Part:
    """Interactions in global indices (int32 users and items, float32 ratings; ``weights`` for
    implicit data), in the order of the source rows."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    def release(self) -> None:
        """Drop the arrays (the part is empty afterwards): a fit that owns its data frees them
        as soon as its engines hold what it needs."""
        self.users = self.items = np.zeros(0, dtype=np.int32)
        self.ratings = np.zeros(0, dtype=np.float32)
        self.weights = None if self.weights is None else np.zeros(0, dtype=np.float32)

    def values(self, implicit: bool) -> np.ndarray:
        """Each interaction's strength (as :func:`~cfrec.engines.matrix.interaction_values`):
        the weights of implicit data, else the ratings."""
        v = self.weights if implicit and self.weights is not None else self.ratings
        return np.asarray(v, dtype=np.float32)


@dataclass(frozen=True)
class RankData:
    """One rank's share of a training set for a blocked fit.

    ``by_user`` holds every interaction of the rank's user block, ``by_item`` every
    interaction of its item block. The vocabularies are the whole job's (every user and item
    has at least one interaction); ``n_interactions`` counts them all. ``unique_pairs`` says
    that no ``(user, item)`` pair repeats (as in sharded input, resolved when read), which
    spares the fit the sparse matrices that would sum repeats.
    """

    rank: int
    blocks: Blocks
    by_user: Part
    by_item: Part
    user_map: IdMap
    item_map: IdMap
    rating_scale: tuple[float, float]
    implicit: bool
    n_interactions: int
    name: str = ""
    unique_pairs: bool = False

    @property
    def n_users(self) -> int:
        return self.blocks.n_users

    @property
    def n_items(self) -> int:
        return self.blocks.n_items


def _part(data: Interactions, keep: np.ndarray) -> Part:
    return Part(
        data.users[keep].astype(np.int32, copy=False),
        data.items[keep].astype(np.int32, copy=False),
        np.asarray(data.ratings[keep], dtype=np.float32),
        None if data.weights is None else np.asarray(data.weights[keep], dtype=np.float32),
    )


def rank_data(data: Interactions, rank: int, parts: int) -> RankData:
    """Rank ``rank``'s share of ``data`` cut into ``parts`` blocks balanced by interactions
    (``data`` is compacted first, as a single-process fit does)."""
    if not 0 <= rank < parts:
        raise CfrecError(f"rank {rank} is not in 0..{parts - 1}")
    data = data.compact()
    blocks = Blocks.balanced(np.bincount(data.users, minlength=data.n_users),
                             np.bincount(data.items, minlength=data.n_items), parts)
    u0, u1 = blocks.user_range(rank)
    i0, i1 = blocks.item_range(rank)
    lo, hi = data.rating_scale
    return RankData(
        rank=rank,
        blocks=blocks,
        by_user=_part(data, (data.users >= u0) & (data.users < u1)),
        by_item=_part(data, (data.items >= i0) & (data.items < i1)),
        user_map=data.user_map,
        item_map=data.item_map,
        rating_scale=(float(lo), float(hi)),
        implicit=bool(data.is_implicit),
        n_interactions=len(data),
        name=data.name,
    )
