#!/usr/bin/env python
"""Item-kNN hyperparameters chosen on validation carves of ML-100K's training folds.

Each carve holds out a random 20% of the ratings of ``uN.base`` (seeded) and fits on the other
80%; the ``uN.test`` files are never read. For every grid point the script reports the
validation RMSE per carve and their mean, best first. ``k`` and ``min_k`` act only at prediction
time, so one fit serves every ``k``.

Usage::

    python benchmarks/itemknn_tuning.py                  # carves of u1.base and u2.base
    python benchmarks/itemknn_tuning.py --folds u1 --top 20
    python benchmarks/itemknn_tuning.py --similarity adjusted_cosine --shrinkage 10,25 --regs 5/3,2/1
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _list(text: str, kind: type) -> list[Any]:
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", default="u1,u2", help="training folds to carve (default: u1,u2)")
    ap.add_argument("--valid-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=15, help="rows of the table (default: 15)")
    ap.add_argument("--similarity", default="pearson_baseline,adjusted_cosine,cosine")
    ap.add_argument("--shrinkage", default="25,50,100,200")
    ap.add_argument("--regs", default="15/10,10/5,5/3", help="reg_user/reg_item pairs (default: 15/10,10/5,5/3)")
    ap.add_argument("--min-support", default="1,5")
    ap.add_argument("--max-neighbors", default="500,1000,2000")
    ap.add_argument("--k", default="10,20,30,40,60,80")
    ap.add_argument("--data-home", help="folder holding ml-100k/ (default: CFREC_DATA_HOME)")
    args = ap.parse_args(argv)
    home = Path(args.data_home or os.environ.get("CFREC_DATA_HOME") or REPO.parent / "shared" / "datasets")
    from cfrec.data import load_dataset, predefined_split, random_split
    from cfrec.models.itemknn import ItemKNN

    data = load_dataset("ml-100k", data_home=home, download=False)
    carves = []
    for fold in [f.strip() for f in args.folds.split(",") if f.strip()]:
        train = predefined_split(fold, data_home=home, data=data).train
        carves.append(random_split(train, args.valid_fraction, seed=args.seed))
    grid: dict[str, list[Any]] = {
        "similarity": _list(args.similarity, str),
        "shrinkage": _list(args.shrinkage, float),
        "regs": [tuple(float(v) for v in pair.split("/")) for pair in _list(args.regs, str)],
        "min_support": _list(args.min_support, int),
        "max_neighbors": _list(args.max_neighbors, int),
    }
    ks = _list(args.k, int)
    rows: dict[tuple[Any, ...], list[float]] = {}
    start = time.perf_counter()
    for sim, shrink, (ru, ri), support, width in itertools.product(*grid.values()):
        for carve in carves:
            model = ItemKNN(similarity=sim, shrinkage=shrink, reg_user=ru, reg_item=ri, min_support=support,
                            max_neighbors=width).fit(carve.train)
            users, items = carve.test.raw_users(), carve.test.raw_items()
            for k in ks:
                model.k = k
                err = model.predict(users, items).astype(np.float64) - carve.test.ratings
                rows.setdefault((sim, shrink, ru, ri, support, width, k), []).append(float(np.sqrt(np.mean(err**2))))
    ranked = sorted(rows.items(), key=lambda kv: statistics.fmean(kv[1]))
    print(f"{len(rows)} settings on {len(carves)} carve(s) in {time.perf_counter() - start:.0f}s\n")
    print("| similarity | shrinkage | reg_user | reg_item | min_support | max_neighbors | k | "
          + " | ".join(f"carve {i + 1}" for i in range(len(carves))) + " | mean |")
    print("|---" * (8 + len(carves)) + "|")
    surprise = ("pearson_baseline", 100.0, 15.0, 10.0, 1, 2000, 40)
    shown = ranked[: args.top] + ([(surprise, rows[surprise])] if surprise in rows else [])
    for key, vals in shown:
        cells = " | ".join(str(v) for v in key)
        print(f"| {cells} | " + " | ".join(f"{v:.4f}" for v in vals) + f" | {statistics.fmean(vals):.4f} |")
    if surprise in rows:
        print("\n(last row: Surprise KNNBaseline's settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
