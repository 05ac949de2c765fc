"""MovieLens-shaped synthetic ratings with a known answer.

Ratings follow the biased matrix-factorisation model the library's models fit,
``r = mu + b_u + b_i + p_u . q_i + noise``, rounded to the rating scale's step and clipped to it,
so tests can check that a model recovers what was planted. Item popularity follows a power law
and user activity is long-tailed, as in MovieLens; each user rates during a sub-interval of the
time window, so temporal splits behave like MovieLens's (test users are mostly new); item
metadata (titles, years, genres correlated with the planted factors) feeds the plots.

Generating 25 million ratings takes well under a minute and under 2 GB: (user, item) pairs are
sampled per user without replacement by rejection in vectorised rounds, never through a dense
users x items matrix.

:func:`~cfrec.data.movielens_write.write_movielens` (re-exported here) writes any such data set
(or any :class:`Interactions` with integer ids) as a MovieLens release folder in that release's
own format, streamed in chunks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypedDict, Unpack, overload

import numpy as np
import pandas as pd

from cfrec.data.idmap import INDEX_DTYPE, IdMap
from cfrec.data.interactions import RATING_DTYPE, TIME_DTYPE, Interactions
from cfrec.data.movielens import MOVIELENS
from cfrec.data.movielens_write import write_movielens as write_movielens
from cfrec.errors import CfrecError, DataError

logger = logging.getLogger(__name__)

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
"""The MovieLens genre names, reused for synthetic items."""

# How many ML-100K movies list each genre; synthetic items draw their main genre with these weights.
_GENRE_WEIGHTS = np.array([251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56, 61, 247, 101,
                           251, 71, 27], dtype=np.float64)
_GENRE_PULL = 0.7  # correlation of an item's factors with its main genre's direction

_CHUNK = 1 << 21  # rows per chunk for per-rating arithmetic (bounds temporary memory)
_GRID_CELLS = 1 << 23  # cells per chunk of the heavy-user sampler (8M: ~200 MB of temporaries)
# Planted magnitudes for a 1..5 scale (scaled with the width otherwise), chosen so that the
# synthetic ML-100K has about MovieLens's rating mean, spread and star shares.
_MEAN = 0.65  # mean noiseless score over the observed pairs, as a share of the scale
_USER_BIAS_SD = 0.5
_ITEM_BIAS_SD = 0.75
_POP_BIAS_CORR = 0.4  # correlation of item bias with log popularity
_FACTOR_SD = 0.7  # standard deviation of p_u . q_i


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The parameters a synthetic data set was drawn from (indexed like its vocabularies).

    User index ``u`` is raw user id ``u + 1``; item index ``i`` is raw item id ``i + 1``.

    Attributes
    ----------
    mu
        Planted global offset, set so that the noiseless scores of the observed pairs average
        65% up the scale (3.6 on 1..5; the observed mean after rounding and clipping is ~3.5).
    user_bias, item_bias
        Planted biases, float32, shapes (n_users,) and (n_items,).
    user_factors, item_factors
        Planted factors, float32, shapes (n_users, k) and (n_items, k).
    noise
        Standard deviation of the Gaussian noise added before rounding.
    item_popularity
        Sampling weight of each item (sums to 1); the observed counts follow it.
    user_activity
        Number of ratings drawn for each user.
    genre_directions
        Unit vectors (n_genres, k) in factor space, one per name in :data:`GENRES`.
    item_genre
        Each item's main genre (index into :data:`GENRES`); its factors were drawn around that
        genre's direction.
    """

    mu: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    noise: float
    rating_scale: tuple[float, float]
    item_popularity: np.ndarray
    user_activity: np.ndarray
    genre_directions: np.ndarray
    item_genre: np.ndarray

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Noiseless, unrounded, unclipped scores for user and item indices (float64)."""
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        dot = np.einsum("ij,ij->i", self.user_factors[u].astype(np.float64),
                        self.item_factors[i].astype(np.float64))
        return self.mu + self.user_bias[u].astype(np.float64) + self.item_bias[i] + dot

    def expected_ratings(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Noiseless scores clipped to the rating scale: the best any model can predict on average."""
        lo, hi = self.rating_scale
        return np.clip(self.scores(users, items), lo, hi)


# ---------------------------------------------------------------------------------- presets
#: Per preset: the real data set's ``user_activity_exponent`` (matching its ratio of most active to
#: median user) and time window (first to last rating); its sizes and rating scale are its
#: :data:`~cfrec.data.movielens.MOVIELENS` entry's.
_PRESET_SHAPES: dict[str, tuple[float, str, str]] = {
    "ml-100k": (0.2, "1997-09-20", "1998-04-23"),
    "ml-1m": (0.2, "2000-04-25", "2003-02-28"),
    "ml-10m": (0.33, "1995-01-09", "2009-01-05"),
    "ml-25m": (0.45, "1995-01-09", "2019-11-21"),
}


def _preset(name: str, activity: float, start: str, end: str) -> dict[str, object]:
    """:func:`make_synthetic` keywords of a real data set's shape (half stars where its scale
    starts at a half)."""
    spec = MOVIELENS[name]
    return {"n_ratings": spec.n_ratings, "n_users": spec.n_users, "n_items": spec.n_items,
            "rating_scale": spec.rating_scale,
            "half_stars": not float(spec.rating_scale[0]).is_integer(),
            "user_activity_exponent": activity, "start_time": start, "end_time": end}


PRESETS: dict[str, dict[str, object]] = {
    name: _preset(name, *shape) for name, shape in _PRESET_SHAPES.items()
}


@overload
def synthetic_like(
    name: str, seed: int = ..., *, return_truth: Literal[False] = ..., **overrides: object,
) -> Interactions: ...


@overload
def synthetic_like(
    name: str, seed: int = ..., *, return_truth: Literal[True], **overrides: object,
) -> tuple[Interactions, SyntheticTruth]: ...


def synthetic_like(
    name: str, seed: int = 0, *, return_truth: bool = False, **overrides: object,
) -> Interactions | tuple[Interactions, SyntheticTruth]:
    """Synthetic data with the size, rating scale and time window of a MovieLens variant.

    ``name`` is ``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"`` or ``"ml-25m"``; ``return_truth`` and
    ``overrides`` go to :func:`make_synthetic` (e.g. ``n_factors=16`` or ``return_truth=True``).
    """
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise CfrecError(f"no synthetic preset {name!r}; expected one of {', '.join(PRESETS)}")
    params = {**PRESETS[key], "name": f"synthetic-{key}", **overrides}
    # the presets and overrides are untyped keyword values, checked by make_synthetic at run time
    generate: Callable[..., Interactions | tuple[Interactions, SyntheticTruth]] = make_synthetic
    return generate(seed=seed, return_truth=return_truth, **params)


# ---------------------------------------------------------------------------------- generator
class _SyntheticOptions(TypedDict, total=False):
    """The keyword options of :func:`make_synthetic` other than ``return_truth``, typed once for
    both of its overloads (the defaults are the implementation's)."""

    n_factors: int
    noise: float
    rating_scale: tuple[float, float]
    half_stars: bool
    popularity_exponent: float
    user_activity_exponent: float
    min_user_ratings: int
    seed: int | None
    start_time: int | str | datetime
    end_time: int | str | datetime
    with_metadata: bool
    name: str


@overload
def make_synthetic(
    n_users: int = ..., n_items: int = ..., n_ratings: int = ..., *,
    return_truth: Literal[False] = ..., **options: Unpack[_SyntheticOptions],
) -> Interactions: ...


@overload
def make_synthetic(
    n_users: int = ..., n_items: int = ..., n_ratings: int = ..., *,
    return_truth: Literal[True], **options: Unpack[_SyntheticOptions],
) -> tuple[Interactions, SyntheticTruth]: ...


def make_synthetic(
    n_users: int = 943,
    n_items: int = 1682,
    n_ratings: int = 100_000,
    *,
    n_factors: int = 8,
    noise: float = 0.5,
    rating_scale: tuple[float, float] = (1.0, 5.0),
    half_stars: bool = False,
    popularity_exponent: float = 1.0,
    user_activity_exponent: float = 0.2,
    min_user_ratings: int = 20,
    seed: int | None = 0,
    start_time: int | str | datetime = "1997-09-20",
    end_time: int | str | datetime = "1998-04-23",
    with_metadata: bool = True,
    name: str = "synthetic",
    return_truth: bool = False,
) -> Interactions | tuple[Interactions, SyntheticTruth]:
    """Draw MovieLens-shaped ratings from a planted biased-MF model.

    Parameters
    ----------
    n_users, n_items, n_ratings
        Exact sizes: raw user ids are ``1..n_users``, raw item ids ``1..n_items`` (every id is in
        the vocabulary; rare items may have no rating) and there are exactly ``n_ratings``
        distinct (user, item) pairs.
    n_factors
        Rank of the planted interaction term ``p_u . q_i``.
    noise
        Standard deviation of the Gaussian noise, in rating units (before rounding).
    rating_scale
        ``(low, high)``; ratings are rounded to whole (or half, ``half_stars``) steps from
        ``low`` and clipped to the scale. Bias and factor magnitudes scale with its width.
    popularity_exponent
        Item ``r``-th in popularity is drawn with weight ``r ** -popularity_exponent`` (Zipf);
        0 gives uniform popularity.
    user_activity_exponent
        Tail shape of user activity: each user gets ``min_user_ratings`` plus a share of the rest
        that follows a generalized Pareto distribution with this shape (capped at ``n_items``).
        0 gives an exponential tail, larger values heavier ones; MovieLens is about 0.2
        (ML-100K, ML-1M) to 0.45 (ML-25M, whose most active user rated 32,202 movies).
    min_user_ratings
        Ratings every user gets at least (MovieLens keeps users with >= 20); lowered to
        ``n_ratings // n_users`` when that is smaller.
    seed
        Seeds every draw; the same arguments and seed give identical data. Pairs, model
        parameters, noise, times and metadata use independent streams.
    start_time, end_time
        The time window (Unix seconds, or anything :class:`pandas.Timestamp` parses, UTC).
        Each user is active during a sub-interval: most in one short session, the rest over a
        longer stretch, as in MovieLens.
    with_metadata
        Attach ``item_info`` (title ``"Synthetic item <id>"``, year, genres). Genres are the
        MovieLens genre names whose random directions in factor space lie closest to the item's
        planted factors, so embeddings learned from the data cluster by genre.
    name
        Dataset name.
    return_truth
        Also return the :class:`SyntheticTruth` the data was drawn from.

    Returns
    -------
    Interactions, or ``(Interactions, SyntheticTruth)`` with ``return_truth=True``.
    Rows are ordered by user, then item index.
    """
    n_users = _positive_int(n_users, "n_users")
    n_items = _positive_int(n_items, "n_items")
    n_ratings = _positive_int(n_ratings, "n_ratings")
    n_factors = _positive_int(n_factors, "n_factors")
    min_user_ratings = _positive_int(min_user_ratings, "min_user_ratings", allow_zero=True)
    if n_ratings > n_users * n_items:
        raise DataError(f"{n_ratings} ratings cannot be distinct pairs of {n_users} users x "
                        f"{n_items} items (at most {n_users * n_items})", field="n_ratings")
    lo, hi = (float(rating_scale[0]), float(rating_scale[1]))
    if not hi > lo:
        raise DataError(f"expected (low, high) with high > low, got {rating_scale!r}",
                        field="rating_scale")
    non_negative(noise=noise, popularity_exponent=popularity_exponent,
                 user_activity_exponent=user_activity_exponent)
    t0, t1 = _unix(start_time, "start_time"), _unix(end_time, "end_time")
    if t1 < t0:
        raise DataError(f"end_time ({t1}) is before start_time ({t0})", field="end_time")

    streams = np.random.SeedSequence(seed).spawn(5)
    rng_pairs, rng_model, rng_noise, rng_time, rng_meta = map(np.random.default_rng, streams)

    # --- who rates what -----------------------------------------------------------------
    popularity = _power_law(n_items, popularity_exponent, rng_pairs)
    floor = min(min_user_ratings, n_ratings // n_users)
    activity = _user_activity(n_users, n_items, n_ratings, floor, user_activity_exponent, rng_pairs)
    keys = _sample_pairs(activity, popularity, n_items, rng_pairs)
    users = (keys // n_items).astype(INDEX_DTYPE)
    items = (keys - users.astype(np.int64) * n_items).astype(INDEX_DTYPE)
    del keys

    # --- planted model ------------------------------------------------------------------
    unit = (hi - lo) / 4.0  # the magnitudes below are for a 1..5 scale
    user_bias = (_USER_BIAS_SD * unit * rng_model.standard_normal(n_users)).astype(np.float32)
    # popular items are rated a little higher, as in MovieLens
    log_pop = np.log(popularity)
    z_pop = (log_pop - log_pop.mean()) / (log_pop.std() or 1.0)
    item_bias = (_ITEM_BIAS_SD * unit * (_POP_BIAS_CORR * z_pop + math.sqrt(1 - _POP_BIAS_CORR**2)
                 * rng_model.standard_normal(n_items))).astype(np.float32)
    scale = math.sqrt(_FACTOR_SD * unit / math.sqrt(n_factors))  # p.q has std _FACTOR_SD * unit
    user_factors = (scale * rng_model.standard_normal((n_users, n_factors))).astype(np.float32)
    # items cluster around their main genre's direction (same overall magnitude as pure noise),
    # so learned item embeddings show genre structure in t-SNE plots
    genre_dirs = rng_model.standard_normal((len(GENRES), n_factors))
    genre_dirs /= np.linalg.norm(genre_dirs, axis=1, keepdims=True)
    main_genre = rng_model.choice(len(GENRES), n_items, p=_GENRE_WEIGHTS / _GENRE_WEIGHTS.sum())
    item_factors = (scale * (_GENRE_PULL * math.sqrt(n_factors) * genre_dirs[main_genre]
                             + math.sqrt(1 - _GENRE_PULL**2)
                             * rng_model.standard_normal((n_items, n_factors)))).astype(np.float32)
    # centre the factors: a common component would act as a hidden bias (p_u . mean(q) is a
    # user bias), and the planted biases should be the whole story of the main effects
    item_factors -= item_factors.mean(axis=0)
    user_factors -= user_factors.mean(axis=0)
    # centre the observed ratings (not the planted parameters) at _MEAN of the scale: popular
    # items have higher biases and are rated more, which would otherwise lift the mean
    observed_bias = (np.dot(np.bincount(users, minlength=n_users), user_bias.astype(np.float64))
                     + np.dot(np.bincount(items, minlength=n_items), item_bias.astype(np.float64)))
    mu = float(lo + _MEAN * (hi - lo) - observed_bias / n_ratings)

    step = 0.5 if half_stars else 1.0
    ratings = np.empty(n_ratings, dtype=RATING_DTYPE)
    for a in range(0, n_ratings, _CHUNK):
        u, i = users[a:a + _CHUNK], items[a:a + _CHUNK]
        x = np.einsum("ij,ij->i", user_factors[u], item_factors[i])
        x += mu + user_bias[u] + item_bias[i]
        if noise > 0:
            x += np.float32(noise) * rng_noise.standard_normal(len(u), dtype=np.float32)
        ratings[a:a + _CHUNK] = np.clip(lo + np.round((x - lo) / step) * step, lo, hi)

    timestamps = _timestamps(users, n_users, t0, t1, rng_time)

    item_info = _item_info(item_factors, genre_dirs, main_genre, t1, rng_meta) \
        if with_metadata else None
    data = Interactions(
        users, items, ratings, timestamps,
        IdMap.from_sorted_unique(np.arange(1, n_users + 1, dtype=np.int64)),
        IdMap.from_sorted_unique(np.arange(1, n_items + 1, dtype=np.int64)),
        (lo, hi), item_info, None, name,
    )
    logger.info("generated %s: %d ratings, %d users, %d items (seed %s)", name, n_ratings,
                n_users, n_items, seed)
    if not return_truth:
        return data
    truth = SyntheticTruth(
        mu=float(mu), user_bias=user_bias, item_bias=item_bias, user_factors=user_factors,
        item_factors=item_factors, noise=float(noise), rating_scale=(lo, hi),
        item_popularity=popularity, user_activity=activity,
        genre_directions=genre_dirs.astype(np.float32), item_genre=main_genre.astype(np.int64),
    )
    return data, truth


# ---------------------------------------------------------------------------------- pieces
def _positive_int(value: object, field: str, *, allow_zero: bool = False) -> int:
    if (not isinstance(value, int | np.integer) or isinstance(value, bool)
            or int(value) < (0 if allow_zero else 1)):
        kind = "non-negative" if allow_zero else "positive"
        raise DataError(f"expected a {kind} integer, got {value!r}", field=field)
    return int(value)


def non_negative(**values: float) -> None:
    """Check that every value is a finite number >= 0 (raises :class:`DataError` naming the
    first keyword that is not)."""
    for field, value in values.items():
        if not (math.isfinite(value) and value >= 0):
            raise DataError(f"expected a non-negative number, got {value!r}", field=field)


def _unix(value: int | str | datetime, field: str) -> int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise DataError(f"expected Unix seconds or a date, got {value!r}", field=field) from None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.timestamp())


def _power_law(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights ``rank ** -exponent`` over a random assignment of ranks; sums to 1."""
    rank = rng.permutation(n) + 1.0
    w = rank ** -exponent
    return w / w.sum()


def _user_activity(n_users: int, n_items: int, n_ratings: int, floor: int, shape: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Ratings per user: ``floor`` each plus a long-tailed share of the rest, capped at n_items.

    The shares are the quantiles of a generalized Pareto distribution with shape ``shape`` at
    evenly spaced probabilities, assigned to users in random order: the least active users get
    about ``floor`` (as in MovieLens, which keeps users with >= 20 ratings). Integer counts sum
    exactly to ``n_ratings`` (largest remainders; overflow above the cap goes to users with room).
    """
    tail = (rng.permutation(n_users) + 1.0) / (n_users + 1.0)  # 1 - p, in (0, 1)
    w = -np.log(tail) if shape == 0 else np.expm1(-shape * np.log(tail)) / shape
    counts = np.full(n_users, floor, dtype=np.int64)
    left = n_ratings - floor * n_users
    while left > 0:
        room = n_items - counts
        ww = np.where(room > 0, w, 0.0)
        if not ww.sum() > 0:
            ww = (room > 0).astype(np.float64)
        share = left * ww / ww.sum()
        add = np.minimum(np.floor(share).astype(np.int64), room)
        short = left - int(add.sum())
        if short > 0:  # hand out the remainder by largest fractional part among users with room
            frac = np.where(room - add > 0, share - np.floor(share), -1.0)
            top = np.argsort(-frac, kind="stable")[:short]
            top = top[frac[top] >= 0]
            add[top] += 1
        counts += add
        left -= int(add.sum())
    return counts


def _sample_pairs(counts: np.ndarray, popularity: np.ndarray, n_items: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Sorted unique keys ``user * n_items + item``, exactly ``counts[u]`` items per user.

    Each user's items are a popularity-weighted sample without replacement (successive
    sampling). Most users draw items with replacement and keep the first ``counts[u]`` distinct
    ones in draw order, which is exactly that; the number of draws comes from the expected
    number of distinct items, and the few users left short draw again. Users who would need
    more draws than there are items (they must reach deep into the tail) are sampled by
    Efraimidis-Spirakis over all items instead.
    """
    table = _alias_table(popularity)
    draws = _draws_needed(counts, popularity)
    direct = np.flatnonzero((counts > 0) & (draws <= n_items))
    parts: list[np.ndarray] = []
    short_users: list[np.ndarray] = []
    short_need: list[np.ndarray] = []
    short_held: list[np.ndarray] = []  # what the short users already have
    block = np.cumsum(draws[direct]) // _CHUNK
    for users in np.split(direct, np.flatnonzero(np.diff(block)) + 1):
        if len(users) == 0:
            continue
        keys, need = _draw_block(users, counts[users], draws[users], table, n_items, rng)
        parts.append(keys)
        short = need > 0
        if short.any():
            short_users.append(users[short])
            short_need.append(need[short])
            short_held.append(keys[np.isin(keys // n_items, users[short])])
    heavy = np.flatnonzero((counts > 0) & ~(draws <= n_items))
    fill_users = np.concatenate([heavy, *short_users])
    fill_need = np.concatenate([counts[heavy], *short_need])
    if len(fill_users):
        logger.debug("%d heavy users sampled over all items, %d short users completed",
                     len(heavy), len(fill_users) - len(heavy))
        held = np.sort(np.concatenate([np.empty(0, np.int64), *short_held]))
        parts.append(_complement_fill(fill_users, fill_need, popularity, n_items, held, rng))
    out = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    out.sort()
    return out


def _draws_needed(counts: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Draws with replacement after which a user likely holds ``counts[u]`` distinct items.

    ``E[distinct after m draws] = sum_i 1 - (1 - p_i)^m``, tabulated on a log grid of m and
    inverted, with a margin of about two standard deviations. ``inf`` where out of reach.
    """
    n_items = len(popularity)
    grid = np.unique(np.geomspace(1.0, 8.0 * n_items, 200).round())
    log_miss = np.log1p(-np.minimum(popularity, 1 - 1e-16))
    distinct = np.array([-np.expm1(m * log_miss).sum() for m in grid])  # per grid point
    target = np.minimum(counts * 1.02 + 2.0 * np.sqrt(counts) + 2.0, n_items)
    draws = np.ceil(np.interp(target, distinct, grid))
    draws[target > distinct[-1]] = np.inf
    return draws


def _draw_block(users: np.ndarray, counts: np.ndarray, draws: np.ndarray,
                table: tuple[np.ndarray, np.ndarray], n_items: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Keys of the first ``counts`` distinct draws of each user, and how many each still lacks."""
    local = np.repeat(np.arange(len(users), dtype=np.int64), draws.astype(np.int64))
    keys = users[local] * n_items + _draw(table, len(local), rng)
    _, first = np.unique(keys, return_index=True)  # stable: index of the first occurrence
    first.sort()  # draw order; draws are grouped by user, so this groups by user too
    who = local[first]
    got = np.bincount(who, minlength=len(users))
    rank = np.arange(len(first)) - (np.cumsum(got) - got)[who]
    keep = first[rank < counts[who]]
    return keys[keep], np.maximum(counts - got, 0)


def _alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction) for O(1) draws from the distribution ``p``.

    The loop runs once per item (not per rating) on plain Python floats.
    """
    n = len(p)
    q = (p * (n / p.sum())).tolist()
    prob = [1.0] * n
    alias = list(range(n))
    small = [i for i, x in enumerate(q) if x < 1.0]
    large = [i for i, x in enumerate(q) if x >= 1.0]
    while small and large:
        s, big = small.pop(), large[-1]
        prob[s], alias[s] = q[s], big
        q[big] += q[s] - 1.0
        if q[big] < 1.0:
            small.append(large.pop())
    return np.asarray(prob, dtype=np.float64), np.asarray(alias, dtype=np.int64)


def _draw(table: tuple[np.ndarray, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Item indices drawn with replacement from an alias table."""
    prob, alias = table
    out = np.empty(size, dtype=np.int64)
    for a in range(0, size, _CHUNK):
        m = min(_CHUNK, size - a)
        k = rng.integers(0, len(prob), m)
        out[a:a + m] = np.where(rng.random(m) < prob[k], k, alias[k])
    return out


def _complement_fill(users: np.ndarray, need: np.ndarray, popularity: np.ndarray, n_items: int,
                     held: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw ``need`` more distinct items for each of ``users`` among those it lacks.

    Efraimidis-Spirakis: every (user, item) candidate gets the key ``E / w_item`` with
    ``E ~ Exp(1)``, and each user keeps its ``need`` smallest, which is a popularity-weighted
    sample without replacement. ``held`` (sorted keys) are excluded. Works on a users x items
    grid in chunks of users, so it is used only for the few users the draws cannot serve.
    """
    per = max(1, _GRID_CELLS // n_items)
    inv_w = 1.0 / popularity
    cols = np.arange(n_items)
    out = []
    for a in range(0, len(users), per):
        block, want = users[a:a + per], need[a:a + per]
        prio = rng.standard_exponential((len(block), n_items)) * inv_w
        if len(held):
            grid = (block[:, None] * n_items + cols[None, :]).ravel()
            pos = np.minimum(np.searchsorted(held, grid), len(held) - 1)
            prio[(held[pos] == grid).reshape(prio.shape)] = np.inf
        order = np.argsort(prio, axis=1)
        chosen = order[cols[None, :] < want[:, None]]  # row-major: each user's first want[u]
        out.append(np.repeat(block, want) * n_items + chosen)
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def _timestamps(users: np.ndarray, n_users: int, t0: int, t1: int,
                rng: np.random.Generator) -> np.ndarray:
    """Unix seconds: each user is active from a uniform start for a long-tailed duration.

    Two thirds of users rate in one session of about an hour; the others return over a stretch
    up to the rest of the window (matching ML-100K, where 68% of users rate within one day).
    """
    span = float(t1 - t0)
    start = t0 + rng.random(n_users) * span
    session = rng.random(n_users) < 2 / 3
    duration = np.where(session, rng.exponential(3600.0, n_users),
                        rng.random(n_users) ** 2 * (t1 - start))
    end = np.minimum(start + duration, t1)
    start = np.minimum(start, end)
    out = np.empty(len(users), dtype=TIME_DTYPE)
    for a in range(0, len(users), _CHUNK):
        u = users[a:a + _CHUNK]
        s = start[u]
        out[a:a + _CHUNK] = np.floor(s + rng.random(len(u)) * (end[u] - s)).astype(TIME_DTYPE)
    return out


def _item_info(item_factors: np.ndarray, genre_dirs: np.ndarray, main_genre: np.ndarray,
               t1: int, rng: np.random.Generator) -> pd.DataFrame:
    """Titles, release years and genres: the main genre plus up to two whose directions are close.

    About 40% of items get a second genre (ML-100K movies list 1.7 genres on average).
    """
    n_items = len(item_factors)
    q = item_factors.astype(np.float64)
    cos = (q @ genre_dirs.T) / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    cos += 0.1 * rng.standard_normal(cos.shape)
    cos[np.arange(n_items), main_genre] = np.inf
    order = np.argsort(-cos, axis=1)[:, :3]  # main genre first
    more = np.take_along_axis(cos, order[:, 1:], axis=1) > 0.6
    more[:, 1] &= more[:, 0]
    names = np.asarray(GENRES, dtype=object)
    genres = [
        [names[order[i, 0]], *(names[order[i, 1 + j]] for j in range(2) if more[i, j])]
        for i in range(n_items)  # per item, not per rating
    ]
    last_year = pd.Timestamp(t1, unit="s").year
    age = np.floor(rng.exponential(12.0, n_items)).astype(np.int64)
    years = np.maximum(last_year - age, 1920)
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    return pd.DataFrame(
        {
            "title": [f"Synthetic item {i}" for i in ids],
            "year": pd.array(years, dtype="Int64"),
            "genres": genres,
        },
        index=pd.Index(ids, name="item_id"),
    )
