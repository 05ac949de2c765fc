"""Micro-benchmark of the library's one-user calls: ``recommend``, ``recommend`` of a folded-in
user, ``predict`` and ``similar_items`` for one raw id at a time, as a service calls them.

    python benchmarks/one_user.py --model models/mf            # a saved model folder
    python benchmarks/one_user.py --build                      # BiasedMF of ML-100K (u1 train)

Each call is repeated ``--calls`` times over random known users (items: the most-rated 500) and
the mean microseconds per call are printed; compare two versions of the code by running this
script with each on the same model folder, back to back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def per_call_us(fn: Callable[[Any], Any], args: list[Any], repeat: int = 3) -> float:
    """Best of ``repeat`` passes over ``args``: mean microseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for a in args:
            fn(a)
        best = min(best, (time.perf_counter() - start) / len(args))
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="model folder")
    src.add_argument("--build", action="store_true", help="train BiasedMF on ML-100K's u1 train part")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from cfrec.models.base import Recommender

    with tempfile.TemporaryDirectory(prefix="cfrec-one-user-") as tmp:
        folder = args.model
        if args.build:
            from cfrec.data import load_dataset, make_splits
            from cfrec.models import make_model

            train = make_splits(load_dataset("ml-100k"), "u1")[0].train
            folder = make_model("mf", seed=args.seed).fit(train).save(Path(tmp) / "mf")
        model = Recommender.load(folder)
    rng = np.random.default_rng(args.seed)
    users = model.user_map_.to_list()
    items = model.item_map_.to_list()
    counts = np.bincount(model.seen_.indices, minlength=len(items))
    popular = [items[i] for i in np.argsort(-counts, kind="stable")[:500].tolist()]
    picked_users = [users[i] for i in rng.integers(0, len(users), args.calls).tolist()]
    picked_items = [popular[i] for i in rng.integers(0, len(popular), args.calls).tolist()]
    lo, hi = model.rating_scale_
    folds = [model.fold_in(list(rng.choice(np.asarray(popular, dtype=object), 5, replace=False)),
                           rng.uniform(lo, hi, 5)) for _ in range(min(args.calls, 1000))]
    k = args.k
    rows = {
        "recommend(user, k)": per_call_us(lambda u: model.recommend(u, k), picked_users),
        "recommend(str(user), k)": per_call_us(lambda u: model.recommend(u, k),
                                               [str(u) for u in picked_users]),
        "recommend(folded, k)": per_call_us(lambda f: model.recommend(f, k), folds),
        "predict(user, item)": per_call_us(lambda ui: model.predict(*ui),
                                           list(zip(picked_users, picked_items, strict=True))),
        "similar_items(item, k)": per_call_us(lambda i: model.similar_items(i, k), picked_items),
    }
    print(f"{type(model).__name__}: {len(users)} users, {len(items)} items; {args.calls} calls each, "
          "best of 3 passes")
    for name, us in rows.items():
        print(f"  {name:<26}{us:>9.1f} us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
