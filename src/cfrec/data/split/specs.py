"""Split spec strings (the CLI's ``--split``), validation carves and recovering the split a model
was trained on."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.data.split.core import (
    PREDEFINED,
    SPEC_FORMS,
    Split,
    _n_test,
    kfold_splits,
    random_split,
    temporal_split,
    user_temporal_split,
)
from cfrec.data.split.files import predefined_split
from cfrec.errors import CfrecError

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

