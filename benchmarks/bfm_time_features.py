#!/usr/bin/env python
"""Which per-rating (time) features move RMSE on ML-100K: settings chosen on an inner split.

Candidates are scored on an *inner validation split* of ``u1.base`` (10% of its ratings held
out at random, seed 0; ``--fold uN`` scores a fold's own test part instead), so nothing is chosen
on the official test ratings. Two kinds of candidate:

* ``--myfm KIND[,KIND...]``: myFM (ids, the release's features and both rated sets, as the
  ``features`` variant of ``myfm_folds.py``) plus per-rating context columns, one prior group
  each: ``day`` (the user's UTC day of rating, one-hot over the training pairs), ``week``
  (the user's week), ``month`` (the month of rating), ``item-age`` (the film's age at rating,
  log buckets from its release date), ``user-days`` (days since the user's first training
  rating, log buckets), ``item-week`` (the item's week of rating).
* ``--cfrec 'PARAMS'``: cfrec's ``BayesianFM(**PARAMS)`` scored with ``predict_at`` (the
  ratings' timestamps), e.g. ``--cfrec 'user_day=True, n_factors=20'``.

Usage::

    python benchmarks/bfm_time_features.py --myfm "" --myfm day --myfm day,item-age
    python benchmarks/bfm_time_features.py --cfrec "user_day=True" --cfrec "user_day=True, n_sweeps=500"
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from myfm_folds import _with_feature_groups, implicit_sets, import_myfm  # noqa: E402

DAY = 86400
KINDS = ("day", "week", "month", "item-age", "user-days", "item-week")


def parts(home: Path, fold: str) -> tuple[Any, Any]:
    from cfrec.data import load_dataset, predefined_split

    data = load_dataset("ml-100k", data_home=home, download=False)
    if fold != "inner":
        split = predefined_split(fold, data_home=home, data=data)
        return split.train, split.test
    train = predefined_split("u1", data_home=home, data=data).train
    held = np.random.default_rng(0).random(len(train)) < 0.1
    return train.subset(~held), train.subset(held)


def context(part: Any, train: Any, kinds: list[str], released: dict[str, float]) -> tuple[Any, list[int]]:
    """Per-rating one-hot context columns of ``part`` (vocabularies from ``train``) and their groups."""
    n, ts = len(part), part.timestamps.astype(np.int64)
    cols: list[Any] = []
    groups: list[int] = []

    def one_hot(idx: np.ndarray, width: int) -> None:
        ok = idx >= 0
        cols.append(sp.csr_matrix((np.ones(ok.sum()), (np.arange(n)[ok], idx[ok])), shape=(n, width)))
        groups.append(width)

    def keyed(train_keys: np.ndarray, keys: np.ndarray) -> None:
        table = np.unique(train_keys)
        pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        one_hot(np.where(table[pos] == keys, pos, -1), len(table))

    def entity_time(ent_tr: np.ndarray, ent: np.ndarray, seconds: int) -> None:
        keyed(ent_tr.astype(np.int64) * 10**7 + train.timestamps.astype(np.int64) // seconds,
              ent.astype(np.int64) * 10**7 + ts // seconds)

    for kind in kinds:
        if kind == "day":
            entity_time(train.users, part.users, DAY)
        elif kind == "week":
            entity_time(train.users, part.users, 7 * DAY)
        elif kind == "item-week":
            entity_time(train.items, part.items, 7 * DAY)
        elif kind == "month":
            d = pd.to_datetime(ts, unit="s")
            one_hot(np.clip(np.asarray((d.year - 1997) * 12 + d.month - 9), 0, 8), 9)
        elif kind == "item-age":
            rel = np.array([released.get(str(x), np.nan) for x in part.raw_items()], dtype=float)
            age = (ts - rel) / (365.25 * DAY)
            edges = np.array([0.25, 0.5, 1, 2, 4, 8, 16, 32])
            one_hot(np.where(np.isnan(age), len(edges) + 1, np.searchsorted(edges, np.nan_to_num(age))),
                    len(edges) + 2)
        elif kind == "user-days":
            first = np.full(train.n_users, np.iinfo(np.int64).max)
            np.minimum.at(first, train.users, train.timestamps.astype(np.int64))
            edges = np.array([0.5, 1, 2, 4, 8, 16, 32, 64, 128])
            one_hot(np.searchsorted(edges, np.maximum(ts - first[part.users], 0) / DAY), len(edges) + 1)
        else:
            raise SystemExit(f"unknown context kind {kind!r}; choose from {', '.join(KINDS)}")
    if not cols:
        return sp.csr_matrix((n, 0)), []
    return sp.hstack(cols, format="csr"), groups


def run_myfm(myfm: Any, home: Path, train: Any, test: Any, kinds: list[str], rank: int, sweeps: int,
             burn_in: int) -> tuple[float, float]:
    item = pd.read_csv(home / "ml-100k" / "u.item", sep="|", header=None, encoding="latin-1")
    rel = pd.to_datetime(item[2], format="%d-%b-%Y", errors="coerce")
    released = {str(i): (float(r.timestamp()) if pd.notna(r) else np.nan) for i, r in zip(item[0], rel, strict=True)}
    n_u, n_i = train.n_users, train.n_items
    ub, groups = _with_feature_groups(sp.identity(n_u, format="csr"), [n_u], train.user_features, train.user_map)
    ub = sp.hstack([ub, implicit_sets(train.users, train.items, n_u, n_i)], format="csr")
    ib, groups = _with_feature_groups(sp.identity(n_i, format="csr"), groups + [n_i, n_i], train.item_features,
                                      train.item_map)
    ib = sp.hstack([ib, implicit_sets(train.items, train.users, n_i, n_u)], format="csr")
    groups.append(n_u)
    x_tr, ctx_groups = context(train, train, kinds, released)
    x_te, _ = context(test, train, kinds, released)

    def blocks(p: Any) -> list[Any]:
        return [myfm.RelationBlock(p.users.astype(np.int64), ub), myfm.RelationBlock(p.items.astype(np.int64), ib)]

    t0 = time.process_time()
    fm = myfm.MyFMRegressor(rank=rank, random_seed=0)
    fm.fit(x_tr, train.ratings.astype(np.float64), X_rel=blocks(train), n_iter=sweeps,
           n_kept_samples=sweeps - burn_in, group_shapes=ctx_groups + groups)
    pred = np.clip(fm.predict(x_te, blocks(test)), 1, 5)
    return float(np.sqrt(np.mean((pred - test.ratings) ** 2))), time.process_time() - t0


def run_cfrec(train: Any, test: Any, params: dict[str, Any]) -> tuple[float, float]:
    from cfrec.models.bayesian_fm import BayesianFM

    t0 = time.process_time()
    model = BayesianFM(**params).fit(train)
    pred = model.predict_at(test.raw_users(), test.raw_items(), test.timestamps).ratings
    return float(np.sqrt(np.mean((pred - test.ratings) ** 2))), time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--fold", default="inner", help="inner (default: u1.base's inner split) or u1..u5")
    ap.add_argument("--myfm", action="append", default=[], help="comma-separated context kinds ('' for none)")
    ap.add_argument("--cfrec", action="append", default=[], help="BayesianFM keyword arguments, Python syntax")
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--sweeps", type=int, default=200)
    ap.add_argument("--burn-in", type=int, default=25)
    ap.add_argument("--data-home", type=Path, default=Path(os.environ.get("CFREC_DATA_HOME", "../shared/datasets")))
    args = ap.parse_args(argv)
    train, test = parts(args.data_home, args.fold)
    myfm = import_myfm() if args.myfm else None
    for spec in args.myfm:
        kinds = [k for k in spec.split(",") if k]
        rmse, cpu = run_myfm(myfm, args.data_home, train, test, kinds, args.rank, args.sweeps, args.burn_in)
        print(f"{args.fold} myfm context={spec or '-'}: rmse {rmse:.4f} fit+predict cpu {cpu:.1f}s", flush=True)
    for spec in args.cfrec:
        params = eval(f"dict({spec})", {"__builtins__": {"dict": dict, "True": True, "False": False}})
        rmse, cpu = run_cfrec(train, test, params)
        print(f"{args.fold} cfrec {spec}: rmse {rmse:.4f} fit+predict cpu {cpu:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
