"""Leakage-free train/test splits.

Every split keeps the full data's id vocabularies in both parts, so indices agree between train
and test; a model trained on ``split.train`` builds its own vocabulary from the ids it saw.

All splitters are vectorised (one sort or one permutation of the rows, no Python loop per
rating), deterministic given their arguments, and return :class:`Split` objects whose
:meth:`Split.cold_start` tells how much of the test part a model cannot have seen.

Test sizes are ``round(test_fraction * n)`` with halves rounded up, everywhere.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cfrec.data.idmap import IdMap
from cfrec.data.interactions import RATING_DTYPE, TIME_DTYPE, Interactions
from cfrec.errors import CfrecError, DataError, DatasetUnavailable, UnknownIdError

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


# ---------------------------------------------------------------------------------- ML-100K files
def _resolve_data_home(data_home: str | Path | None) -> Path:
    if data_home is not None:
        return Path(data_home).expanduser()
    try:
        from cfrec.data.movielens import data_home as _data_home
    except ImportError:  # same rule as the loaders: $CFREC_DATA_HOME, else the user cache
        env = os.environ.get("CFREC_DATA_HOME")
        if env:
            return Path(env).expanduser()
        import platformdirs

        return Path(platformdirs.user_cache_dir("cfrec"))
    return Path(_data_home())


_PART_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def _read_part(path: Path) -> pd.DataFrame:
    """Read one ML-100K ``uN.base``/``uN.test`` file (tab-separated user item rating timestamp)."""
    try:
        df = pd.read_csv(
            path, sep="\t", header=None, names=list(_PART_COLUMNS), engine="c",
            dtype={"user_id": np.int64, "item_id": np.int64, "rating": RATING_DTYPE,
                   "timestamp": TIME_DTYPE},
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise _locate_bad_line(path) or DataError(f"cannot parse: {exc}", path=path) from exc
    if len(df) and not np.isfinite(df["rating"].to_numpy()).all():
        line = int(np.flatnonzero(~np.isfinite(df["rating"].to_numpy()))[0]) + 1
        raise DataError("expected a finite number", path=path, line=line, field="rating")
    return df


def _locate_bad_line(path: Path) -> DataError | None:
    """Find the first malformed line (error path only, so a plain loop is fine)."""
    parsers = (int, int, float, int)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 4:
                return DataError(f"expected 4 tab-separated fields (user item rating timestamp), "
                                 f"got {len(fields)}", path=path, line=lineno)
            for value, parse, col in zip(fields, parsers, _PART_COLUMNS, strict=True):
                try:
                    parse(value)
                except ValueError:
                    kind = "an integer" if parse is int else "a number"
                    return DataError(f"expected {kind}, got {value!r}", path=path, line=lineno,
                                     field=col)
    return None


def predefined_split(
    name: str,
    *,
    data_home: str | Path | None = None,
    data: Interactions | None = None,
) -> Split:
    """One of ML-100K's predefined splits (``u1``..``u5``, ``ua``, ``ub``), read from its files.

    Reads ``<data_home>/ml-100k/<name>.base`` (train) and ``<name>.test`` (test). Both parts use
    the full ML-100K vocabularies: those of ``data`` when given (it must be ML-100K, e.g.
    ``cfrec.data.load_dataset("ml-100k")``, whose titles and metadata are then kept), otherwise
    vocabularies built from the two files (each pair covers all 100,000 ratings).

    Parameters
    ----------
    name
        ``"u1"``..``"u5"``, ``"ua"`` or ``"ub"``.
    data_home
        Folder holding ``ml-100k/``; defaults to ``CFREC_DATA_HOME`` or the cfrec cache. A path
        to the ``ml-100k`` folder itself is accepted too.
    data
        The full ML-100K, to share its vocabularies and metadata.

    Raises
    ------
    DatasetUnavailable
        The split files are not there.
    DataError
        A file is malformed, or holds ids absent from ``data``.
    """
    key = str(name).strip().lower()
    if key not in PREDEFINED:
        raise CfrecError(f"unknown ML-100K split {name!r}; expected one of {', '.join(PREDEFINED)}")
    home = _resolve_data_home(data_home)
    folder = home / "ml-100k"
    if not (folder / f"{key}.base").is_file() and (home / f"{key}.base").is_file():
        folder = home
    base_path, test_path = folder / f"{key}.base", folder / f"{key}.test"
    missing = [str(p) for p in (base_path, test_path) if not p.is_file()]
    if missing:
        raise DatasetUnavailable(
            f"ML-100K split {key!r} needs {' and '.join(missing)}; download ML-100K "
            f"(`cfrec download ml-100k`) or point CFREC_DATA_HOME / data_home at a folder "
            f"holding ml-100k/"
        )
    base, test = _read_part(base_path), _read_part(test_path)
    if data is not None:
        umap, imap = data.user_map, data.item_map
        scale, item_info, user_info = data.rating_scale, data.item_info, data.user_info
        data_name = data.name
    else:
        umap = IdMap(np.concatenate([base["user_id"].to_numpy(), test["user_id"].to_numpy()]))
        imap = IdMap(np.concatenate([base["item_id"].to_numpy(), test["item_id"].to_numpy()]))
        scale, item_info, user_info = (1.0, 5.0), None, None
        data_name = "ml-100k"
    parts = []
    for df, path in ((base, base_path), (test, test_path)):
        try:
            parts.append(Interactions.from_frame(
                df, user_map=umap, item_map=imap, rating_scale=scale, item_info=item_info,
                user_info=user_info, name=data_name,
            ))
        except UnknownIdError as exc:
            raise DataError(
                f"{exc}; the given data ({data.name if data is not None else '?'}) is not the full "
                f"ML-100K: pass cfrec.data.load_dataset('ml-100k') or no data",
                path=path,
            ) from None
    split = Split(parts[0], parts[1], key)
    logger.info("ML-100K split %s: %d train / %d test ratings", key, len(split.train),
                len(split.test))
    return split


# ---------------------------------------------------------------------------------- spec strings
_FRACTION_SPEC = re.compile(r"(temporal|user-temporal|random)(?::(.*))?")
_KFOLD_SPEC = re.compile(r"(?:kfold(?::(.*))?|cv(\d+))")


def _spec_error(spec: str, why: str = "") -> CfrecError:
    return CfrecError(f"bad split spec {spec!r}{': ' + why if why else ''}; valid forms: "
                      f"{', '.join(SPEC_FORMS)}")


def make_splits(
    data: Interactions | None,
    spec: str,
    *,
    seed: int | None = 0,
    data_home: str | Path | None = None,
) -> list[Split]:
    """Build the splits a spec string names (the CLI's ``--split``).

    Specs: ``temporal[:0.2]`` (global temporal), ``user-temporal[:0.2]`` or
    ``user-temporal:n=5`` (per-user last fraction / last n), ``random[:0.2]``, ``kfold[:5]`` or
    ``cv5``/``cv10`` (k splits), ``u1``..``u5``, ``ua``, ``ub`` (ML-100K's files), ``folds``
    (u1..u5 as five splits). Fractions default to 0.2 and k to 5. ``data`` may be None only for
    the ML-100K specs.

    Raises
    ------
    CfrecError
        The spec is not one of the forms above (the message lists them).
    """
    raw = str(spec)
    s = raw.strip().lower().replace("_", "-")
    if s in PREDEFINED or s == "folds":
        names = PREDEFINED[:5] if s == "folds" else (s,)
        return [predefined_split(n, data_home=data_home, data=data) for n in names]
    if data is None:
        raise CfrecError(f"split spec {raw!r} needs data to split")
    if m := _FRACTION_SPEC.fullmatch(s):
        kind, arg = m.group(1), m.group(2)
        if kind == "user-temporal" and arg is not None and arg.startswith("n="):
            try:
                count = int(arg[2:])
            except ValueError:
                raise _spec_error(raw, f"n must be a positive integer, got {arg[2:]!r}") from None
            if count < 1:
                raise _spec_error(raw, f"n must be a positive integer, got {count}")
            return [user_temporal_split(data, None, test_count=count)]
        frac = 0.2
        if arg is not None:
            try:
                frac = float(arg)
            except ValueError:
                raise _spec_error(raw, f"fraction must be a number, got {arg!r}") from None
            if not 0.0 < frac < 1.0:
                raise _spec_error(raw, f"fraction must be strictly between 0 and 1, got {arg}")
        if kind == "temporal":
            return [temporal_split(data, frac, seed=seed)]
        if kind == "user-temporal":
            return [user_temporal_split(data, frac, seed=seed)]
        return [random_split(data, frac, seed=seed)]
    if m := _KFOLD_SPEC.fullmatch(s):
        arg = m.group(1) if m.group(2) is None else m.group(2)
        try:
            k = 5 if arg is None else int(arg)
        except ValueError:
            raise _spec_error(raw, f"k must be an integer, got {arg!r}") from None
        if k < 2:
            raise _spec_error(raw, f"k must be at least 2, got {k}")
        return kfold_splits(data, k, seed=seed)
    raise _spec_error(raw)


# ---------------------------------------------------------------------------------- validation
CarveKind = Literal["random", "per-user", "temporal"]
CARVE_KINDS: tuple[str, ...] = ("random", "per-user", "temporal")


def carve_validation(
    train: Interactions, fraction: float, seed: int | None, *, kind: CarveKind = "random",
) -> tuple[Interactions, Interactions | None]:
    """Hold out ``fraction`` of the training rows for validation (never the test part).

    ``kind`` matches the validation to what the test protocol measures:

    * ``"random"``: random rows whose user and item keep at least one other training rating, so
      the validation part measures rating prediction rather than cold start;
    * ``"per-user"``: a random ``fraction`` of every user's ratings (users with at least two),
      the holdout ranking metrics are measured on;
    * ``"temporal"``: the latest ``fraction`` of the rows by time, as a temporal split holds out
      the future; a user's ratings of one second stay together (the cut moves to the start of the
      same-second group it would split), as the online replay reveals them together.
    """
    if kind not in CARVE_KINDS:
        raise CfrecError(f"unknown validation carve {kind!r}; choose one of {', '.join(CARVE_KINDS)}")
    if fraction <= 0 or len(train) < 20:
        return train, None
    if kind == "per-user":
        return _carve_per_user(train, fraction, seed)
    if kind == "temporal":
        n = len(train)
        order = np.lexsort((np.arange(n), train.items, train.users, train.timestamps))
        u, ts = train.users[order], train.timestamps[order]
        group_start = np.r_[True, (u[1:] != u[:-1]) | (ts[1:] != ts[:-1])]
        cut = n - _n_test(n, fraction)  # first validation position
        starts = np.flatnonzero(group_start)
        cut = int(starts[np.searchsorted(starts, cut, side="right") - 1])  # never inside a group
        if cut == 0:  # one group reaches back to the first row: keep it for fitting instead
            cut = int(starts[1]) if len(starts) > 1 else n
        if cut >= n:
            return train, None
        mask = np.zeros(n, dtype=bool)
        mask[order[cut:]] = True
        return train.subset(~mask), train.subset(mask)
    rng = np.random.default_rng(seed)
    n_valid = int(round(fraction * len(train)))
    order = rng.permutation(len(train))
    u_left = train.user_counts().copy()
    i_left = train.item_counts().copy()
    chosen = np.zeros(len(train), dtype=bool)
    users, items = train.users, train.items
    # Vectorised greedy pass: take candidates in random order while both ends keep >= 1 rating.
    cand = order[: min(len(order), n_valid * 2)]
    for _ in range(3):
        cu, ci = users[cand], items[cand]
        # rank of each candidate among earlier candidates of the same user / item
        ru = _occurrence_rank(cu)
        ri = _occurrence_rank(ci)
        ok = (ru < u_left[cu] - 1) & (ri < i_left[ci] - 1) & ~chosen[cand]
        take = cand[ok][: n_valid - int(chosen.sum())]
        chosen[take] = True
        np.subtract.at(u_left, users[take], 1)
        np.subtract.at(i_left, items[take], 1)
        if chosen.sum() >= n_valid:
            break
        cand = order[~chosen[order]][: n_valid * 2]
    if not chosen.any():
        return train, None
    return train.subset(~chosen), train.subset(chosen)


def _carve_per_user(train: Interactions, fraction: float, seed: int | None) -> tuple[Interactions, Interactions | None]:
    """Each user's random ``round(fraction * n)`` ratings (at most ``n - 1``), users with n >= 2."""
    rng = np.random.default_rng(seed)
    counts = train.user_counts()
    take = np.minimum(np.floor(fraction * counts + 0.5).astype(np.int64), np.maximum(counts - 1, 0))
    # a random rank within each user: sort by (user, random key)
    order = np.lexsort((rng.random(len(train)), train.users))
    rank = np.empty(len(train), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(len(train)) - np.repeat(starts, counts)
    chosen = rank < take[train.users]
    if not chosen.any():
        return train, None
    return train.subset(~chosen), train.subset(chosen)


def _occurrence_rank(keys: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - run_start
    return rank


# ---------------------------------------------------------------------------------- recovering splits
#: Specs tried, in order, when looking for the split a model was trained on.
SEARCH_SPECS = ("temporal", "user-temporal", "random:0.2", "u1", "u2", "u3", "u4", "u5", "ua", "ub",
                "kfold:5")


def split_spec(name: str) -> str | None:
    """The spec that makes a split of this name (``temporal-0.2`` -> ``temporal:0.2``,
    ``user-temporal-n5`` -> ``user-temporal:n=5``, ``kfold5-3`` -> ``kfold:5``, ``u1`` -> ``u1``);
    ``None`` for a name no spec produces."""
    s = name.strip().lower()
    if re.fullmatch(r"u[1-5]|ua|ub", s):
        return s
    if m := re.fullmatch(r"user-temporal-n(\d+)", s):
        return f"user-temporal:n={m.group(1)}"
    if m := re.fullmatch(r"(temporal|user-temporal|random)-([0-9.e-]+)", s):
        return f"{m.group(1)}:{m.group(2)}"
    if m := re.fullmatch(r"kfold(\d+)-\d+", s):
        return f"kfold:{m.group(1)}"
    return None


def folds_home(source: str | os.PathLike[str] | None) -> Path | None:
    """The data home of an extracted ML-100K folder given as a path (its parent), else None:
    where :func:`predefined_split` finds ``u1.base`` ... for data loaded from that folder."""
    if not source:
        return None
    path = Path(source)
    if path.is_dir() and (path / "u1.base").is_file():
        return path.resolve().parent
    return None


def is_full_ml100k(data: Interactions) -> bool:
    """Whether ``data`` is the whole ML-100K release, whose official folds u1..u5 then apply."""
    return data.name == "ml-100k" and len(data) == 100_000 and data.n_users == 943 and data.n_items == 1682


def single_split(data: Interactions, spec: str, *, seed: int | None = 0,
                 data_home: str | Path | None = None) -> Split | None:
    """One train/test split for commands that train one model.

    ``auto`` is ML-100K's official ``u1`` fold for the whole ML-100K and a seeded random 80/20
    split otherwise; ``none`` returns None (train on everything). Specs yielding several folds are
    refused with a message saying what to do instead.
    """
    text = spec.strip()
    if text.lower() == "none":
        return None
    if text.lower() == "auto":
        text = "u1" if is_full_ml100k(data) else "random:0.2"
    splits = make_splits(data, text, seed=0 if seed is None else seed, data_home=data_home)
    if len(splits) != 1:
        raise CfrecError(f"split {text!r} yields {len(splits)} folds but this command uses one train/test "
                         f"split; pick one fold (e.g. u1) or a single split (random:0.2, temporal:0.2), "
                         f"or cross-validate with 'cfrec benchmark'")
    return splits[0]


def find_training_split(
    data: Interactions,
    fingerprint: str | None,
    *,
    spec: str | None = None,
    recorded: str | None = None,
    seed: int | None = 0,
    data_home: str | Path | None = None,
) -> tuple[Split, bool]:
    """The split whose train part a model was fitted on, and whether that is verified.

    With ``spec``: the fold of ``make_splits(data, spec)`` whose train part has ``fingerprint``
    (else its first fold, unverified). Without: the recorded split name (``fit_info_["split"]``),
    then :data:`SEARCH_SPECS`, until a train part matches. Returns ``(split, True)`` on a match
    and ``(first split made, False)`` otherwise.
    """
    if spec is not None:
        candidates = [spec]
    else:
        parsed = split_spec(recorded) if recorded and recorded.lower() != "none" else None
        ml100k = data.name.lower().startswith("ml-100k")
        candidates = [c for c in (parsed, *SEARCH_SPECS)
                      if c and (ml100k or c == parsed or c not in PREDEFINED)]
    first: Split | None = None
    for cand in dict.fromkeys(candidates):
        try:
            splits = make_splits(data, cand, seed=seed, data_home=data_home)
        except CfrecError:
            if spec is not None:
                raise
            continue  # e.g. u1 on a dataset that is not ML-100K
        first = first or splits[0]
        if fingerprint is None:
            break
        for part in splits:
            if part.train.fingerprint() == fingerprint:
                return part, True
    if first is None:
        raise CfrecError(f"could not make any split of {data.name!r} (tried {', '.join(candidates)})")
    return first, False
