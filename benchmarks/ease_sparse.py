"""EASE's dense solve against its neighbour-restricted sparse solve on a large catalogue.

Builds a synthetic log with a 17,632-item catalogue (the size of a public artist play-count
log) and power-law (Zipf 0.7) popularity, 300,000 pairs of 5,000 users, splits its pairs 80/20 at random, fits EASE densely and over
each item's ``k`` nearest neighbours for a few ``k`` and neighbour rules, and reports fit
seconds and NDCG@10 / Recall@10 (relevant: every held-out pair; every unseen item ranked)
side by side, in one run. ML-100K turned into a log (every rating an interaction) is the check.

    PYTHONPATH=src python benchmarks/ease_sparse.py [--users 5000] [--items 17632] [--pairs 300000]
        [--exponent 0.7] [--lam 50] [--ks 32,64] [--rules cooccurrence,cosine] [--no-dense]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

from cfrec.data import Interactions, load_dataset, make_synthetic_log
from cfrec.data.split import random_split
from cfrec.models.ease import EASE


def ndcg_recall(model: EASE, train: Interactions, test: Interactions, k: int = 10) -> tuple[float, float]:
    """Mean NDCG@k and Recall@k over test users known to the model (relevant: any test pair)."""
    t = test.to_frame()
    known = set(train.raw_users().tolist())
    t = t[t["user_id"].isin(known)]
    users = np.array(sorted(set(t["user_id"].tolist())))
    relevant = t.groupby("user_id")["item_id"].apply(set).to_dict()
    recs = model.recommend(users, k=k)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg, recall = [], []
    for row, user in enumerate(users.tolist()):
        rel = relevant[user]
        hits = np.array([item in rel for item in recs.ids[row]], dtype=float)
        ideal = disc[:min(len(rel), k)].sum()
        ndcg.append(float(hits @ disc) / ideal)
        recall.append(hits.sum() / min(len(rel), k))
    return float(np.mean(ndcg)), float(np.mean(recall))


def _fit(model: EASE, train: Interactions) -> tuple[float, float]:
    """Wall and CPU seconds of the fit (CPU time: all threads of this process, which shows the
    work when other processes share the cores)."""
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(train)
    return time.perf_counter() - start, time.process_time() - cpu


def run(name: str, data: Interactions, lam: float, variants: list[tuple[int, str]], dense: bool) -> None:
    """Sparse variants first, then the dense solve (the long one), then the table with ratios."""
    split = random_split(data, 0.2, seed=0)
    train, test = split.train, split.test
    n_items = len(np.unique(train.items))
    title = f"{name}: {len(train):,} train / {len(test):,} test pairs, {n_items:,} train items, lam={lam:g}"
    rows: list[tuple[str, tuple[float, float], float, float]] = []
    for k, rule in variants:
        model = EASE(lam=lam, solver="sparse", neighbours=k, neighbour_rule=rule)  # type: ignore[arg-type]
        fit_s = _fit(model, train)
        rows.append((f"sparse k={k} {rule}", fit_s, *ndcg_recall(model, train, test)))
        print(rows[-1], flush=True)
    base = None
    if dense:
        model = EASE(lam=lam, solver="dense", max_items=10**6)
        fit_s = _fit(model, train)
        est = model.fit_cost_["estimated_seconds"]
        nd, rec = ndcg_recall(model, train, test)
        base = nd
        rows.insert(0, (f"dense (estimated before: {est:.0f} s, {model.fit_cost_['fit_bytes'] / 1e9:.1f} GB)",
                        fit_s, nd, rec))
        print(rows[0], flush=True)
    print(f"\n## {title}")
    print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print("| solve | fit s wall | fit s CPU | NDCG@10 | Recall@10 | NDCG / dense |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, fit_s, nd, rec in rows:
        ratio = "" if base is None else f"{nd / base:.3f}"
        print(f"| {label} | {fit_s[0]:.1f} | {fit_s[1]:.1f} | {nd:.4f} | {rec:.4f} | {ratio} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--exponent", type=float, default=0.7)
    parser.add_argument("--items", type=int, default=17_632)
    parser.add_argument("--lam", type=float, default=50.0)
    parser.add_argument("--ks", default="64,128,256")
    parser.add_argument("--rules", default="cooccurrence,cosine")
    parser.add_argument("--no-dense", action="store_true")
    parser.add_argument("--no-ml100k", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    variants = [(int(k), r) for k in args.ks.split(",") for r in args.rules.split(",")]
    if not args.no_ml100k:
        run("ML-100K as a log", load_dataset("ml-100k").as_implicit(), args.lam, variants, True)
    log = make_synthetic_log(args.users, args.items, args.pairs, seed=0,
                             popularity_exponent=args.exponent)
    run(f"synthetic log, {args.items:,} items", log, args.lam, variants, not args.no_dense)


if __name__ == "__main__":
    main()
