#!/usr/bin/env python
"""Top-10 ranking on interaction logs: cfrec's ranking models against implicit, same split, same run.

Datasets (``--datasets``):

* ``synthetic``: :func:`cfrec.data.make_synthetic_log` (power-law popularity, planted taste,
  ``1 + Poisson`` event counts per pair; weights = counts);
* ``ml100k-log``: MovieLens 100K turned into a log: every rating one interaction of weight 1
  (:meth:`~cfrec.data.Interactions.as_implicit`), the stars thrown away.

Protocol, identical for every model: one random 80/20 split of the pairs (``random_split``,
``--seed``); models are trained on the training part; for each test user every item the
training part knows and the user has no training pair with is ranked (full ranking), and
relevant = every held-out pair. Ranking and metrics are cfrec's own (``cfrec.ranking.rank``,
``cfrec.metrics.ranking_metrics``) for every model, so the peers are scored by the same code.
Test users unknown to training get the training popularity list.

Models:

* ``implicit/als-raw``: implicit's ``AlternatingLeastSquares`` on the raw user x item weights;
* ``implicit/als-bm25``: the same on ``implicit.nearest_neighbours.bm25_weight(weights, K1=100,
  B=0.8)`` (the weighting of implicit's own Last.fm example);
* ``implicit/bpr``: implicit's ``BayesianPersonalizedRanking`` on the binary matrix;
  all at 64 factors, implicit's defaults otherwise (CPU models);
* ``cfrec/ials`` (64 factors, defaults otherwise), ``cfrec/ease``, ``cfrec/bpr``,
  ``cfrec/multvae``, ``cfrec/itemknn-rank`` and ``cfrec/pop``, with their defaults; BPR with
  ``threshold=None`` (every pair is a positive) on logs.

Reported per dataset: NDCG@10, Recall@10 and fit seconds per model, and the two claims checked
in the same run: cfrec's iALS against implicit's best ALS variant, and cfrec's best model against
implicit's best model (relative NDCG@10 difference). Markdown goes to stdout, progress to stderr,
``--json`` writes everything.

Usage::

    python benchmarks/implicit_logs.py                          # both datasets (a few minutes)
    python benchmarks/implicit_logs.py --datasets synthetic --models ials,pop --json logs.json

Needs ``implicit`` (``pip install 'cfrec[bench]'``). ML-100K is read from ``--data-home``, else
``CFREC_DATA_HOME``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.fspath(Path(__file__).resolve().parent))
from ranking_folds import Protocol, score_ranking  # noqa: E402  (the script next to this one)
from ranking_folds import make_protocol as folds_protocol  # noqa: E402

K = 10
FACTORS = 64
METRICS = ("ndcg@10", "recall@10")
CFREC_MODELS = ("ials", "ease", "bpr", "multvae", "itemknn-rank", "pop")
IMPLICIT_MODELS = ("als-raw", "als-bm25", "bpr")
DATASETS = ("synthetic", "ml100k-log")
#: the synthetic log: 2,000 users, 4,000 items, 80,000 pairs (about 3 events each)
SYNTHETIC = {"n_users": 2000, "n_items": 4000, "n_pairs": 80_000, "seed": 0}


def make_protocol(train: Any, test: Any) -> Protocol:
    """Relevant pairs (every held-out pair) and exclusions of ``test`` against ``train``."""
    return folds_protocol(train, test, relevance=None)


def load(name: str, data_home: str | None) -> Any:
    """The implicit :class:`~cfrec.data.Interactions` of one benchmark dataset."""
    from cfrec.data import load_dataset, make_synthetic_log

    if name == "synthetic":
        return make_synthetic_log(**SYNTHETIC)
    if name == "ml100k-log":
        return load_dataset("ml-100k", data_home=data_home, download=False).as_implicit()
    raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def cfrec_params(name: str) -> dict[str, Any]:
    """The benchmark's settings of a cfrec model: iALS at 64 factors; BPR with every pair a
    positive; defaults otherwise."""
    if name == "ials":
        return {"n_factors": FACTORS}
    if name == "bpr":
        return {"threshold": None}
    return {}


def run_cfrec(name: str, train: Any, proto: Protocol) -> dict[str, Any]:
    from cfrec.models import make_model

    model = make_model(name, **cfrec_params(name))
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    return {**score_ranking(proto, model.score_rows), "fit_s": fit_s}


def run_implicit(name: str, train: Any, proto: Protocol, seed: int) -> dict[str, Any]:
    """implicit's CPU models at 64 factors, defaults otherwise; scores ``x_u . y_i``."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from implicit.nearest_neighbours import bm25_weight
    from threadpoolctl import threadpool_limits

    weights = sp.csr_matrix((train.weights.astype(np.float32), (train.users, train.items)),
                            shape=(train.n_users, train.n_items), dtype=np.float32)
    weights.sum_duplicates()
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        t0 = time.perf_counter()
        model: Any
        if name == "als-raw":
            model = AlternatingLeastSquares(factors=FACTORS, random_state=seed)
            model.fit(weights, show_progress=False)
        elif name == "als-bm25":
            model = AlternatingLeastSquares(factors=FACTORS, random_state=seed)
            model.fit(sp.csr_matrix(bm25_weight(weights, K1=100, B=0.8), dtype=np.float32),
                      show_progress=False)
        elif name == "bpr":
            binary = weights.copy()
            binary.data[:] = 1.0
            model = BayesianPersonalizedRanking(factors=FACTORS, random_state=seed)
            model.fit(binary, show_progress=False)
        else:
            raise SystemExit(f"unknown implicit model {name!r}")
        fit_s = time.perf_counter() - t0
    uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return {**score_ranking(proto, lambda rows: uf[rows] @ itf.T), "fit_s": fit_s}


def claims(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """cfrec's iALS against implicit's best ALS, cfrec's best against implicit's best (NDCG@10)."""
    def best(prefix: str, names: tuple[str, ...] | None = None) -> tuple[str, float] | None:
        cands = {k: v["ndcg@10"] for k, v in results.items()
                 if k.startswith(prefix) and (names is None or k.split("/", 1)[1] in names)}
        return max(cands.items(), key=lambda kv: kv[1]) if cands else None

    out: dict[str, Any] = {}
    ials, als = results.get("cfrec/ials"), best("implicit/", ("als-raw", "als-bm25"))
    if ials and als:
        out["ials_vs_best_als"] = {"against": als[0], "ials": ials["ndcg@10"], "als": als[1],
                                   "relative": ials["ndcg@10"] / als[1] - 1.0,
                                   "holds": ials["ndcg@10"] >= als[1]}
    ours, theirs = best("cfrec/"), best("implicit/")
    if ours and theirs:
        rel = ours[1] / theirs[1] - 1.0
        out["best_vs_best"] = {"cfrec": ours[0], "implicit": theirs[0], "cfrec_ndcg": ours[1],
                               "implicit_ndcg": theirs[1], "relative": rel, "holds": rel >= 0.05}
    return out


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"cfrec {env['cfrec']}, implicit {env['implicit']}, numpy {env['numpy']}; "
             f"{env['cpu_count']} CPUs, {env['platform']}. Random 80/20 pair split (seed "
             f"{report['seed']}); relevant = every held-out pair; full ranking; {FACTORS} factors for "
             "every factor model of implicit and for cfrec's iALS.", ""]
    for ds, block in report["datasets"].items():
        info = block["info"]
        lines += [f"### {ds}: {info['users']} users, {info['items']} items, {info['pairs']} pairs, "
                  f"{info['test_users']} test users", "",
                  "| model | NDCG@10 | Recall@10 | fit s |", "|---|---:|---:|---:|"]
        for name, r in block["results"].items():
            lines.append(f"| {name} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['fit_s']:.2f} |")
        c = block["claims"]
        if "ials_vs_best_als" in c:
            a = c["ials_vs_best_als"]
            lines += ["", f"cfrec/ials vs {a['against']}: {a['ials']:.4f} vs {a['als']:.4f} "
                      f"({a['relative']:+.1%}; at least matches: {'yes' if a['holds'] else 'NO'})"]
        if "best_vs_best" in c:
            b = c["best_vs_best"]
            lines.append(f"best cfrec ({b['cfrec']}) vs best implicit ({b['implicit']}): "
                         f"{b['cfrec_ndcg']:.4f} vs {b['implicit_ndcg']:.4f} ({b['relative']:+.1%}; "
                         f">= +5%: {'yes' if b['holds'] else 'NO'})")
        lines.append("")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    import implicit

    import cfrec

    return {"cfrec": cfrec.__version__, "implicit": implicit.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1] if __doc__ else None)
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    ap.add_argument("--models", default=",".join(CFREC_MODELS), help="cfrec models, comma-separated")
    ap.add_argument("--implicit-models", default=",".join(IMPLICIT_MODELS),
                    help="implicit models, comma-separated (empty: none)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split and the models")
    ap.add_argument("--data-home", default=os.environ.get("CFREC_DATA_HOME"))
    ap.add_argument("--json", type=Path, help="write the full report here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cfrec.data.split import random_split

    report: dict[str, Any] = {"seed": args.seed, "environment": environment(), "datasets": {},
                              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    ours = [m for m in args.models.split(",") if m]
    theirs = [m for m in args.implicit_models.split(",") if m]
    for ds in [d for d in args.datasets.split(",") if d]:
        data = load(ds, args.data_home)
        split = random_split(data, 0.2, seed=args.seed)
        train = split.train.compact()
        proto = make_protocol(train, split.test)
        results: dict[str, dict[str, Any]] = {}
        # interleaved: implicit's models, then cfrec's, on the same split in the same process
        for name in theirs:
            print(f"[{ds}] implicit/{name} ...", file=sys.stderr, flush=True)
            results[f"implicit/{name}"] = run_implicit(name, train, proto, args.seed)
        for name in ours:
            print(f"[{ds}] cfrec/{name} ...", file=sys.stderr, flush=True)
            results[f"cfrec/{name}"] = run_cfrec(name, train, proto)
        info = {"users": data.n_users, "items": data.n_items, "pairs": len(data),
                "test_users": int(len(proto.rows)), "train_pairs": len(train)}
        report["datasets"][ds] = {"info": info, "results": results, "claims": claims(results)}
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
