#!/usr/bin/env python
"""Cold items and warm ranking of the hybrid ranker, with item features (genres).

Three measurements, each through ``cfrec.evaluation.run_benchmark``:

* ``warm``: ML-100K's official folds u1..u5 (``--protocol folds``), BPR and the hybrid ranker
  with their default hyperparameters; the hybrid gets the release's genres as item features.
  NDCG@10 ranks every unrated item, test ratings >= 4 relevant (as ``cfrec benchmark``).
* ``cold``: ``cold-items:0.1`` (10% of the items held out with all their ratings, 5 seeds) on
  ML-100K: the hybrid scores the held-out items from their genres alone, beside the bias
  baseline with a feature-mean (genre-mean) fallback and popularity-within-genre.
* ``cold-ml1m``: the same on data of ML-1M's format and size. Without the ML-1M release the
  data is ``cfrec.data.synthetic_like("ml-1m")``, whose genres are synthetic too (each item's
  main genre is the one its planted factors were drawn around, see :mod:`cfrec.data.synthetic`).

The genres come from the data's ``item_info`` (``cfrec.evaluation.cold_items.item_features_of``)
unless the data already carries ``item_features``. Markdown goes to stdout, progress to stderr;
``--json`` writes every number.

Usage::

    python benchmarks/cold_items.py                     # warm, cold and cold-ml1m (~15 min on 2 cores)
    python benchmarks/cold_items.py --only cold --seeds 2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from _bench_util import environment, write_json_atomic

from cfrec.data import load_dataset, synthetic_like
from cfrec.errors import DatasetUnavailable
from cfrec.evaluation.benchmark import BenchmarkResult, run_benchmark
from cfrec.evaluation.cold_items import item_features_of


def _with_genres(data: Any) -> Any:
    return dataclasses.replace(data, item_features=item_features_of(data))


def _progress(row: Any) -> None:
    print(f"  {row.model}: NDCG@10 {row.mean.get('ndcg@10', float('nan')):.4f}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("warm", "cold", "cold-ml1m"), action="append")
    ap.add_argument("--seeds", type=int, default=5, help="repeats of the cold-item protocol")
    ap.add_argument("--models", default="hybrid", help="models of the cold-item runs")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args()
    parts = args.only or ["warm", "cold", "cold-ml1m"]
    ml100k = _with_genres(load_dataset("ml-100k"))
    results: dict[str, BenchmarkResult] = {}
    protocol = f"cold-items:0.1:n={args.seeds}"
    for part in parts:
        start = time.perf_counter()
        print(f"{part} ...", file=sys.stderr, flush=True)
        if part == "warm":
            res = run_benchmark(ml100k, protocol="folds", models="bpr,hybrid", on_row=_progress)
        elif part == "cold":
            res = run_benchmark(ml100k, protocol=protocol, models=args.models, on_row=_progress)
        else:
            try:
                data = _with_genres(load_dataset("ml-1m", download=False))
            except DatasetUnavailable:
                print("  no ML-1M release: synthetic_like('ml-1m') (synthetic ratings and genres)",
                      file=sys.stderr)
                data = _with_genres(synthetic_like("ml-1m"))
            res = run_benchmark(data, protocol=protocol, models=args.models, on_row=_progress)
        results[part] = res
        print(res.to_markdown() + f"\n\n({part}: {time.perf_counter() - start:.0f} s)\n", flush=True)
    if "warm" in results:
        warm = results["warm"]
        bpr, hyb = warm.row("bpr").mean["ndcg@10"], warm.row("hybrid").mean["ndcg@10"]
        print(f"warm NDCG@10: hybrid {hyb:.4f} / BPR {bpr:.4f} = {hyb / bpr:.3f}")
    for part in ("cold", "cold-ml1m"):
        if part in results:
            res = results[part]
            ref = res.row("pop-in-genre").mean["ndcg@10"]
            for row in res.rows:
                if row.model not in ("pop-in-genre", "baseline+feature-mean"):
                    print(f"{part} NDCG@10: {row.model} {row.mean['ndcg@10']:.4f} / pop-in-genre {ref:.4f} "
                          f"= {row.mean['ndcg@10'] / ref:.2f}x")
    if args.json:
        write_json_atomic(args.json, {"environment": environment(),
                                      "results": {k: v.to_dict() for k, v in results.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
