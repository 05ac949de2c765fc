"""Negative sampling for implicit-feedback training: items a user has not interacted with.

The interactions are held as sorted int64 keys ``user * n_items + item`` (:func:`pair_keys`).
:class:`UniformNegatives` draws uniformly and exactly among a user's unseen items;
:class:`PopularityNegatives` draws with given per-item weights (e.g. popularity), exactly
restricted to the unseen items. Both are vectorised over a whole epoch of draws.
"""

from __future__ import annotations

import numpy as np

#: Rejection rounds of :class:`PopularityNegatives` before the exact per-user fallback.
_REJECTION_ROUNDS = 16
#: Dense entries per block in the exact fallback of :class:`PopularityNegatives`.
_FALLBACK_ENTRIES = 1 << 22


def pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted unique int64 keys ``user * n_items + item`` of (user, item) pairs."""
    return np.unique(users.astype(np.int64) * int(n_items) + items.astype(np.int64))


class PopularityNegatives:
    """Draws of items a user has not rated, with probability proportional to ``weights``.

    Each draw is taken from the whole catalogue by inverse CDF and rejected when it hits one of
    the user's rated items (a sorted-key lookup), for up to :data:`_REJECTION_ROUNDS` vectorised
    rounds; that is exactly the distribution restricted to the unrated items. The few draws still
    rejected after that (users whose rated items hold most of the weight) are drawn exactly from
    their users' unrated items, a dense block of those users at a time.

    Parameters
    ----------
    seen_keys
        Sorted unique keys ``user * n_items + item`` of every rated pair (never drawn).
    weights
        (n_items,) positive sampling weights.
    """

    def __init__(self, seen_keys: np.ndarray, weights: np.ndarray) -> None:
        self.keys = np.asarray(seen_keys, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.n_items = len(self.weights)
        self.cdf = np.cumsum(self.weights)
        self.total = float(self.cdf[-1])

    def _seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        key = users * self.n_items + items
        pos = np.minimum(np.searchsorted(self.keys, key), max(len(self.keys) - 1, 0))
        return self.keys[pos] == key if len(self.keys) else np.zeros(len(key), dtype=bool)

    def draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One unrated item per entry of ``users`` (each user must have an unrated item)."""
        users = np.asarray(users, dtype=np.int64)
        out = np.empty(len(users), dtype=np.int64)
        todo = np.arange(len(users))
        for _ in range(_REJECTION_ROUNDS):
            if not len(todo):
                return out
            cand = np.searchsorted(self.cdf, rng.random(len(todo)) * self.total, side="right")
            cand = np.minimum(cand, self.n_items - 1)
            out[todo] = cand
            todo = todo[self._seen(users[todo], cand)]
        if len(todo):
            self._draw_exact(users, todo, out, rng)
        return out

    def _draw_exact(self, users: np.ndarray, todo: np.ndarray, out: np.ndarray,
                    rng: np.random.Generator) -> None:
        """Exact draws for ``users[todo]`` from each user's unrated items (dense rows, blocked)."""
        which, inverse = np.unique(users[todo], return_inverse=True)
        step = max(1, _FALLBACK_ENTRIES // self.n_items)
        starts = np.searchsorted(self.keys, which * self.n_items)
        ends = np.searchsorted(self.keys, (which + 1) * self.n_items)
        for b0 in range(0, len(which), step):
            b1 = min(b0 + step, len(which))
            block = np.tile(self.weights, (b1 - b0, 1))
            lengths = ends[b0:b1] - starts[b0:b1]
            offsets = np.cumsum(lengths) - lengths
            rows = np.repeat(np.arange(b1 - b0), lengths)
            pos = np.arange(int(lengths.sum())) + np.repeat(starts[b0:b1] - offsets, lengths)
            block[rows, self.keys[pos] - which[b0 + rows] * self.n_items] = 0.0  # rated: weight 0
            cdf = np.cumsum(block, axis=1)
            # one sorted array for the block: row r's cdf shifted by r times more than any total
            shift = float(cdf[:, -1].max()) + 1.0
            flat = (cdf + shift * np.arange(b1 - b0)[:, None]).ravel()
            mine = np.flatnonzero((inverse >= b0) & (inverse < b1))
            r = inverse[mine] - b0
            u = rng.random(len(mine)) * cdf[r, -1] + shift * r
            picked = np.searchsorted(flat, u, side="right") - r * self.n_items
            out[todo[mine]] = np.minimum(picked, self.n_items - 1)


class UniformNegatives:
    """Uniform draws of items a user has not interacted with, exact and vectorised.

    With a user's seen items sorted as ``s_0 < s_1 < ...``, the ``j``-th unseen item is
    ``j + #{k : s_k - k <= j}``; one ``searchsorted`` over all users' adjusted keys answers that
    for a whole batch of draws. No rejection loop, so users who rated nearly everything still get
    correct negatives; a user who rated every item gets -1 (callers drop those).
    """

    def __init__(self, seen_keys: np.ndarray, n_users: int, n_items: int) -> None:
        self.n_items = n_items
        owner = seen_keys // n_items
        self.start = np.searchsorted(seen_keys, np.arange(n_users + 1, dtype=np.int64) * n_items)
        rank = np.arange(len(seen_keys), dtype=np.int64) - self.start[owner]
        # adjusted keys (item - rank) stay sorted within a user; offset users apart
        self.adjusted = owner * (n_items + 1) + (seen_keys - owner * n_items - rank)

    def draw(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        users = users.astype(np.int64)
        n_seen = self.start[users + 1] - self.start[users]
        free = self.n_items - n_seen
        j = np.floor(rng.random(len(users)) * np.maximum(free, 1)).astype(np.int64)
        below = np.searchsorted(self.adjusted, users * (self.n_items + 1) + j, side="right") - self.start[users]
        return np.where(free > 0, j + below, -1)
