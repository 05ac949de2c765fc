#!/usr/bin/env python
"""NeuMF's online row on the lab split (``temporal:0.2``, seed 0): both reveal orders, replayed
with the batched fold-in (``online_predictions(..., method="batch")``; the literal replay, one
L-BFGS fold-in per revealed unit, takes over an hour on two cores). Prints the figures and
writes them to ``--json``.

Usage: ``python benchmarks/neumf_online.py --json neumf_online.json``
"""

from __future__ import annotations

import argparse
import json
import time

from cfrec.data import load_movielens, make_splits
from cfrec.evaluation.online import online_evaluate
from cfrec.models.registry import make_model


def main() -> None:
    parser = argparse.ArgumentParser(description="NeuMF's online RMSE on the lab split, both orders")
    parser.add_argument("--json", default="neumf_online.json", help="write the figures here")
    args = parser.parse_args()
    split = make_splits(load_movielens("ml-100k"), "temporal:0.2", seed=0)[0]
    start = time.perf_counter()
    model = make_model("neumf", seed=0).fit(split.train)
    fit_seconds = time.perf_counter() - start
    out: dict[str, object] = {"fit_seconds": fit_seconds}
    print("fit", round(fit_seconds, 1), flush=True)
    for reveal in ("group", "rating"):
        r = online_evaluate(model, split.test, train=split.train, method="batch", reveal=reveal, name="neumf")
        out[reveal] = {"rmse": r.rmse, "mae": r.mae, "offline_rmse": r.offline_rmse, "seconds": r.replay_seconds}
        print(reveal, out[reveal], flush=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
