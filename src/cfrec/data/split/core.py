"""Split objects and the splitters: global and per-user temporal, random pairs, k-fold."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.errors import DataError

logger = logging.getLogger(__name__)

PREDEFINED = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
"""ML-100K's predefined splits: ``u1``..``u5`` are 5-fold 80/20 splits with disjoint test parts;
``ua``/``ub`` hold out exactly 10 ratings per user."""

SPEC_FORMS = (
    "temporal[:FRACTION]",
    "user-temporal[:FRACTION]",
    "user-temporal:n=N",
    "random[:FRACTION]",
    "kfold[:K]",
    "cvK (e.g. cv5, cv10)",
    "u1..u5, ua, ub (ML-100K predefined)",
    "folds (= u1..u5)",
)


@dataclass(frozen=True)
class ColdStartReport:
    """How much of a test part a model cannot have seen in training."""

    test_ratings: int
    unknown_user: int  # test ratings whose user has no train rating
    unknown_item: int  # ... whose item has no train rating
    unknown_either: int  # ... whose user or item is unknown

    @property
    def user_share(self) -> float:
        return self.unknown_user / self.test_ratings if self.test_ratings else 0.0

    @property
    def item_share(self) -> float:
        return self.unknown_item / self.test_ratings if self.test_ratings else 0.0

    @property
    def share(self) -> float:
        return self.unknown_either / self.test_ratings if self.test_ratings else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "test_ratings": self.test_ratings,
            "unknown_user": self.unknown_user,
            "unknown_item": self.unknown_item,
            "unknown_either": self.unknown_either,
            "unknown_user_share": self.user_share,
            "unknown_item_share": self.item_share,
            "cold_start_share": self.share,
        }


@dataclass(frozen=True)
class Split:
    """A train part and a test part over the same vocabularies."""

    train: Interactions
    test: Interactions
    name: str = "split"

    def cold_start(self) -> ColdStartReport:
        """Count test ratings whose user or item is absent from train."""
        known_u = self.train.user_counts() > 0
        known_i = self.train.item_counts() > 0
        uu = ~known_u[self.test.users]
        ui = ~known_i[self.test.items]
        return ColdStartReport(len(self.test), int(uu.sum()), int(ui.sum()), int((uu | ui).sum()))


# ---------------------------------------------------------------------------------- helpers
def _check_fraction(test_fraction: float, field: str = "test_fraction") -> float:
    try:
        frac = float(test_fraction)
    except (TypeError, ValueError):
        raise DataError(f"expected a number in (0, 1), got {test_fraction!r}", field=field) from None
    if not 0.0 < frac < 1.0:
        raise DataError(f"expected a number strictly between 0 and 1, got {test_fraction!r}",
                        field=field)
    return frac


def _round_half_up(x: np.ndarray | float) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _n_test(n: int, frac: float) -> int:
    return min(n, int(_round_half_up(n * frac)))


def _lex_order(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Stable lexicographic row order by non-negative integer keys, primary key first.

    Packs as many leading keys as fit into one uint64 and argsorts that, which is several times
    faster than :func:`numpy.lexsort` on tens of millions of rows; rows still tied after the
    packed keys are ordered recursively by the remaining keys (only those rows are re-sorted).
    Rows equal on every key keep their input order.
    """
    n = len(keys[0])
    if n == 0:
        return np.empty(0, dtype=np.int64)
    packed = np.zeros(n, dtype=np.uint64)
    used = 0
    j = 0
    while j < len(keys):
        k = keys[j]
        bits = int(k.max()).bit_length()
        if j > 0 and used + bits > 64:
            break
        if bits:
            packed <<= np.uint64(bits)
            packed |= k.astype(np.uint64, copy=False)
        used += bits
        j += 1
    order = np.argsort(packed, kind="stable")
    if j == len(keys):
        return order
    sk = packed[order]
    del packed
    same_as_next = sk[1:] == sk[:-1]
    tied = np.zeros(n, dtype=bool)
    tied[:-1] = same_as_next
    tied[1:] |= same_as_next
    pos = np.flatnonzero(tied)
    if len(pos) == 0:
        return order
    run = np.cumsum(np.concatenate(([True], ~same_as_next)))[pos]
    run -= run[0]
    sub = order[pos]
    nxt = np.asarray(keys[j])[sub]
    if int(run[-1]).bit_length() + int(nxt.max()).bit_length() > 64:
        nxt = np.unique(nxt, return_inverse=True)[1]  # dense rank: same order, fewer bits
    # the run id and the next key always pack together, so every level makes progress
    inner = _lex_order([run, nxt, *(np.asarray(k)[sub] for k in keys[j + 1:])])
    order[pos] = sub[inner]
    return order


def _make(data: Interactions, test_mask: np.ndarray, name: str) -> Split:
    split = Split(data.subset(~test_mask), data.subset(test_mask), name)
    if logger.isEnabledFor(logging.INFO):
        cs = split.cold_start()
        logger.info("%s on %s: %d train / %d test ratings, %.1f%% of test cold (user or item unseen)",
                    name, data.name, len(split.train), len(split.test), 100 * cs.share)
    return split


def _fmt(frac: float) -> str:
    return f"{frac:g}"


# ---------------------------------------------------------------------------------- splitters
def temporal_split(data: Interactions, test_fraction: float = 0.2, *,
                   seed: int | None = None) -> Split:
    """Global temporal split: the latest ``test_fraction`` of all ratings form the test part.

    Every train timestamp is <= every test timestamp, so nothing from the future leaks into
    training. This is the course lab's ``train_test_split_by_time``: on MovieLens most test
    ratings then come from users who joined after the cut (about 85% on ML-100K at 80/20),
    which measures cold start as much as rating prediction.

    Rows are ordered by ``(timestamp, user index, item index)``; rows equal on all three keep
    their input order. Only ratings sharing the cut timestamp are affected by this tie-break.

    Parameters
    ----------
    data
        Ratings to split.
    test_fraction
        Share of ratings in the test part, in (0, 1); the test size is rounded half up.
    seed
        Accepted for a uniform splitter signature and ignored: the split is fully determined
        by the data.
    """
    frac = _check_fraction(test_fraction)
    n = len(data)
    n_test = _n_test(n, frac)
    n_train = n - n_test
    ts = data.timestamps
    mask = np.zeros(n, dtype=bool)
    if n_test == n:
        mask[:] = True
    elif n_test > 0:
        # O(n): find the cut timestamp, then order only the rows tied at it.
        cut = np.partition(ts, n_train - 1)[n_train - 1]
        mask = ts > cut
        tied = np.flatnonzero(ts == cut)
        n_tied_train = n_train - int(np.count_nonzero(ts < cut))
        order = _lex_order([data.users[tied], data.items[tied]])
        mask[tied[order[n_tied_train:]]] = True
    return _make(data, mask, f"temporal-{_fmt(frac)}")


def user_temporal_split(
    data: Interactions,
    test_fraction: float | None = 0.2,
    *,
    test_count: int | None = None,
    min_train: int = 1,
    seed: int | None = None,
) -> Split:
    """Per-user temporal split: each user's latest ratings form the test part.

    Every test user keeps earlier ratings in train, so this measures predicting a known user's
    future rather than cold start (contrast :func:`temporal_split`). Items may still be unseen.

    Parameters
    ----------
    data
        Ratings to split.
    test_fraction
        Share of each user's ratings (rounded half up) to hold out, capped so the user keeps
        ``min_train`` ratings in train; users with ``min_train`` ratings or fewer stay wholly in
        train. Ignored when ``test_count`` is given.
    test_count
        Hold out exactly the last ``test_count`` ratings of each user instead ("leave last n
        out"). Users with fewer than ``test_count + min_train`` ratings stay wholly in train, so
        every test user has exactly ``test_count`` test ratings.
    min_train
        Ratings each test user keeps in train (>= 0).
    seed
        Accepted for a uniform splitter signature and ignored: a user's ratings are ordered by
        ``(timestamp, item index)``, rows equal on both keeping their input order.
    """
    if isinstance(min_train, bool) or not isinstance(min_train, int | np.integer) or min_train < 0:
        raise DataError(f"expected a non-negative integer, got {min_train!r}", field="min_train")
    counts = data.user_counts().astype(np.int64)
    if test_count is not None:
        if isinstance(test_count, bool) or not isinstance(test_count, int | np.integer) \
                or test_count < 1:
            raise DataError(f"expected a positive integer, got {test_count!r}", field="test_count")
        n_test_u = np.where(counts >= test_count + min_train, int(test_count), 0)
        name = f"user-temporal-n{int(test_count)}"
    elif test_fraction is None:
        raise DataError("give test_fraction or test_count", field="test_fraction")
    else:
        frac = _check_fraction(test_fraction)
        n_test_u = np.clip(np.minimum(_round_half_up(counts * frac), counts - min_train), 0, None)
        name = f"user-temporal-{_fmt(frac)}"
    n = len(data)
    mask = np.zeros(n, dtype=bool)
    if n:
        ts = data.timestamps
        order = _lex_order([data.users, ts - ts.min(), data.items])
        su = data.users[order]
        starts = np.cumsum(counts) - counts
        rank = np.arange(n, dtype=np.int64) - starts[su]  # position within the user, by time
        mask[order] = rank >= (counts - n_test_u)[su]
    return _make(data, mask, name)


def random_split(data: Interactions, test_fraction: float = 0.2, *, seed: int | None = 0) -> Split:
    """Random holdout: a uniformly random ``test_fraction`` of ratings (ignores time).

    ``seed=None`` draws fresh entropy (not reproducible).
    """
    frac = _check_fraction(test_fraction)
    n = len(data)
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: _n_test(n, frac)]] = True
    return _make(data, mask, f"random-{_fmt(frac)}")


def kfold_splits(data: Interactions, k: int = 5, *, seed: int | None = 0) -> list[Split]:
    """K-fold cross-validation: shuffled ratings cut into ``k`` disjoint test folds.

    The test folds cover every rating exactly once and differ in size by at most one; split
    ``f`` trains on the other ``k - 1`` folds. Each split holds its own copies of the rows, so
    the list takes about ``k`` times the data's memory.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise DataError(f"expected an integer >= 2, got {k!r}", field="k")
    n = len(data)
    if n < k:
        raise DataError(f"cannot cut {n} ratings into {k} folds", field="k")
    rng = np.random.default_rng(seed)
    fold = np.empty(n, dtype=np.int64)
    fold[rng.permutation(n)] = np.arange(n, dtype=np.int64) * k // n
    return [_make(data, fold == f, f"kfold{k}-{f + 1}") for f in range(k)]


