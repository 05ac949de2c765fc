#!/usr/bin/env python
"""How iALS's defaults for logs were chosen: a grid on validation carves of logs, never a test part.

For each log of ``benchmarks/implicit_logs.py`` (the synthetic log and ML-100K as a log), the
same random 80/20 pair split is drawn (same seed); its *training* part alone is carved again
into 80% fit / 20% validation (``carve_validation``, random, ``--carve-seed``). Every
configuration of the grid (weighting x confidence x alpha x reg, at ``n_factors=64`` and the
other defaults) is fitted on the fit part and scored on the validation part with the benchmark's
protocol (full ranking, relevant = every held-out pair, NDCG@10). Configurations are ranked by
their mean over the logs of NDCG@10 relative to that log's best configuration, so each log
weighs the same. The test parts of the benchmark are never read.

Usage::

    python benchmarks/ials_log_defaults.py                   # the full grid (several minutes)
    python benchmarks/ials_log_defaults.py --weightings none,bm25 --alphas 1 --regs 40
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("cfrec_bench_implicit_logs", HERE / "implicit_logs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="iALS defaults for logs, chosen on validation carves")
    ap.add_argument("--datasets", default="synthetic,ml100k-log")
    ap.add_argument("--weightings", default="none,bm25,tfidf")
    ap.add_argument("--confidences", default="linear,log")
    ap.add_argument("--alphas", default="0.5,2,8")
    ap.add_argument("--regs", default="10,40,100")
    ap.add_argument("--seed", type=int, default=0, help="seed of the benchmark's 80/20 split")
    ap.add_argument("--carve-seed", type=int, default=1, help="seed of the validation carve")
    ap.add_argument("--data-home", default=os.environ.get("CFREC_DATA_HOME"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from cfrec.data.split import carve_validation, random_split
    from cfrec.models.ials import IALS

    bench = _bench()
    grid = list(itertools.product(args.weightings.split(","), args.confidences.split(","),
                                  _floats(args.alphas), _floats(args.regs)))
    scores: dict[str, dict[tuple[Any, ...], float]] = {}
    for ds in [d for d in args.datasets.split(",") if d]:
        train = random_split(bench.load(ds, args.data_home), 0.2, seed=args.seed).train
        fit_part, valid = carve_validation(train, 0.2, args.carve_seed)
        assert valid is not None
        fit_part = fit_part.compact()
        proto = bench.make_protocol(fit_part, valid)
        scores[ds] = {}
        for cfg in grid:
            weighting, confidence, alpha, reg = cfg
            t0 = time.perf_counter()
            model = IALS(n_factors=bench.FACTORS, weighting=None if weighting == "none" else weighting,
                         confidence=confidence,
                         alpha=alpha, reg=reg).fit(fit_part)
            ndcg = bench.score_ranking(proto, model.score_rows)["ndcg@10"]
            scores[ds][cfg] = ndcg
            print(f"[{ds}] {cfg}: NDCG@10 {ndcg:.4f} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr, flush=True)
    best = {ds: max(s.values()) for ds, s in scores.items()}
    overall = {cfg: sum(scores[ds][cfg] / best[ds] for ds in scores) / len(scores) for cfg in grid}
    ranked = sorted(grid, key=lambda c: -overall[c])
    head = " | ".join(scores)
    print(f"| weighting | confidence | alpha | reg | {head} | relative to best |")
    print("|---|---|---:|---:|" + "---:|" * (len(scores) + 1))
    for cfg in ranked:
        cells = " | ".join(f"{scores[ds][cfg]:.4f}" for ds in scores)
        print(f"| {cfg[0]} | {cfg[1]} | {cfg[2]:g} | {cfg[3]:g} | {cells} | {overall[cfg]:.4f} |")
    print(f"\nchosen: weighting={ranked[0][0]}, confidence={ranked[0][1]}, alpha={ranked[0][2]:g}, "
          f"reg={ranked[0][3]:g}")
    if args.json:
        args.json.write_text(json.dumps({"grid": [
            {"weighting": c[0], "confidence": c[1], "alpha": c[2], "reg": c[3],
             **{ds: scores[ds][c] for ds in scores}, "relative": overall[c]} for c in ranked]},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
