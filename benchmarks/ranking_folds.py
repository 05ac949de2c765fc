#!/usr/bin/env python
"""Top-10 ranking on MovieLens 100K's official folds (u1..u5): cfrec against implicit, same run.

For every fold, in one process and interleaved so that machine-load drift hits all alike:

* ``cfrec/ials``, ``cfrec/ease``, ``cfrec/bpr`` and ``cfrec/multvae``: cfrec's ranking models
  with their default hyperparameters, scored by ``cfrec.evaluation.evaluate(model, split.test, k=10)``: every
  item the model knows and the user did not rate in training is ranked, test ratings >= 4 are
  relevant, and relevant test items the model cannot rank (not in training) still count in the
  recall and NDCG denominators.
* ``implicit/als``: implicit's ``AlternatingLeastSquares`` (a benchmark-only dependency, never
  imported by cfrec) configured for the objective and hyperparameters of cfrec's iALS defaults:
  16 factors, L2 30, 10 iterations, confidence ``1 + rating`` (implicit's confidence is the value
  of the matrix it is given, so it gets ``1 + alpha * rating`` with ``alpha = 1``). implicit's
  default conjugate-gradient solver runs with its own threads and BLAS limited to one thread, as
  implicit recommends. ``--implicit-params`` overrides any of these.
* ``reference/ease``: EASE written here in plain dense numpy (``G = X'X + lam I``,
  ``P = inv(G)``, ``B = -P / diag(P)``, ``diag(B) = 0``, scores ``X B``), independent of cfrec's
  code, with cfrec's default weighting (every rating, weight ``(r / 5) ** 1.5``, ``lam = 200``);
  and ``reference/ease-paper``: the same code on binary ratings >= 4 with ``lam = 300`` (the
  configuration of the paper's recipe, measured at NDCG@10 0.400 before cfrec had EASE).

The peers are ranked and scored by cfrec's own code (``cfrec.ranking.rank`` with training items
excluded, then ``cfrec.metrics.ranking_metrics``) over the same vocabularies the cfrec models use
(the ids present in the fold's training part). The script checks that this path reproduces
``evaluate``'s figures for the cfrec models (``protocol check``) and that cfrec's EASE scores
match the reference's (``reference check``); both are reported and a failure exits non-zero.

Reported: NDCG@10, Recall@10 and MAP@10 per fold and as mean ± std over folds, fit seconds, and
the paired per-fold NDCG@10 differences of cfrec's best model (by mean NDCG@10) against implicit
ALS, with a paired t-test. Markdown goes to stdout, progress to stderr, ``--json`` writes it all.

Usage::

    python benchmarks/ranking_folds.py                          # all five folds (a few minutes)
    python benchmarks/ranking_folds.py --folds u1,u2 --json ranking.json
    python benchmarks/ranking_folds.py --implicit-params factors=64,regularization=10

Needs ``implicit`` (``pip install 'cfrec[bench]'``) unless ``--no-implicit``. ML-100K is read
from ``--data-home``, else ``CFREC_DATA_HOME``, else ``../shared/datasets`` next to the
repository. Seconds are wall-clock ``fit`` times and depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
FOLDS = ("u1", "u2", "u3", "u4", "u5")
K = 10
RELEVANCE = 4.0
METRICS = ("ndcg@10", "recall@10", "map@10")
#: cfrec's ranking models, each at its defaults.
CFREC_MODELS = ("ials", "ease", "bpr", "multvae")
#: implicit ALS settings matching cfrec's iALS defaults (n_factors=16, reg=30, iterations=10, alpha=1).
IMPLICIT_DEFAULTS: dict[str, Any] = {"factors": 16, "regularization": 30.0, "iterations": 10,
                                     "confidence_alpha": 1.0}
#: Reference EASE configurations: (lam, threshold, rating power).
REFERENCE_EASE = {"reference/ease": (200.0, None, 1.5), "reference/ease-paper": (300.0, 4.0, 0.0)}
#: Largest accepted difference between evaluate() and this script's path (the same code: ~0).
PROTOCOL_TOL = 1e-9
#: Largest accepted relative difference between cfrec's and the reference's EASE scores.
REFERENCE_TOL = 1e-4


# ---------------------------------------------------------------------- the protocol
@dataclass
class Protocol:
    """cfrec's ranking protocol for one fold, over the training part's vocabularies.

    ``rows`` are the test users as training-vocabulary indices (-1: unknown to training);
    ``rel_rows``/``rel_items`` the relevant (row, item) pairs the models can rank, and
    ``n_relevant`` every row's number of distinct relevant test items, rankable or not.
    """

    rows: np.ndarray
    rel_rows: np.ndarray
    rel_items: np.ndarray
    n_relevant: np.ndarray
    seen: sp.csr_array
    popularity: np.ndarray
    n_items: int


def make_protocol(train: Any, test: Any, relevance: float | None = RELEVANCE) -> Protocol:
    """Relevant pairs and exclusions of ``test`` against the compacted ``train`` (public API only):
    held-out ratings ``>= relevance``, or every held-out pair with ``relevance=None`` (logs)."""
    test_users, row_of = np.unique(test.users, return_inverse=True)
    rows = train.user_map.to_index(test.user_map.to_raw(test_users), missing="-1").astype(np.int64)
    rel = (np.ones(len(test.users), dtype=bool) if relevance is None
           else np.asarray(test.ratings >= relevance))
    keys = np.unique(row_of[rel].astype(np.int64) * test.n_items + test.items[rel])
    p_rows, p_items = keys // test.n_items, keys % test.n_items
    n_relevant = np.bincount(p_rows, minlength=len(test_users))
    items = train.item_map.to_index(test.item_map.to_raw(p_items), missing="-1").astype(np.int64)
    ok = items >= 0
    seen = train.to_csr(binary=True)
    counts = np.bincount(train.items, minlength=train.n_items).astype(np.float64)
    return Protocol(rows, p_rows[ok], items[ok], n_relevant, seen,
                    (counts / max(counts.max(), 1.0)).astype(np.float32), train.n_items)


def score_ranking(proto: Protocol, score_rows: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
    """Rank with cfrec's ranking code (training items excluded) and score with its metrics.

    Unknown users (row -1) get the popularity list, as cfrec's ranking models give them.
    """
    from cfrec.metrics import ranking_metrics
    from cfrec.ranking import rank

    def scores(rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), proto.n_items), dtype=np.float32)
        known = rows >= 0
        if known.any():
            out[known] = score_rows(rows[known])
        out[~known] = proto.popularity
        return out

    top, _ = rank(scores, proto.rows, proto.n_items, K, exclude=proto.seen)
    res = ranking_metrics(top, proto.rel_rows, proto.rel_items, proto.n_relevant, n_items=proto.n_items,
                          ks=(K,), names=("ndcg", "recall", "map"))
    return {m: float(res[m]) for m in METRICS}


# ---------------------------------------------------------------------- runners
def run_cfrec(name: str, split: Any, proto: Protocol) -> tuple[dict[str, Any], Any]:
    """Fit a cfrec model (defaults), score it with ``evaluate`` and check this script's path."""
    from cfrec.evaluation import evaluate
    from cfrec.models import make_model

    model = make_model(name)
    t0 = time.perf_counter()
    model.fit(split.train)
    fit_s = time.perf_counter() - t0
    official = evaluate(model, split.test, train=split.train, k=K, metrics=list(METRICS))
    ours = score_ranking(proto, model.score_rows)
    gap = max(abs(official[m] - ours[m]) for m in METRICS)
    return {**{m: float(official[m]) for m in METRICS}, "fit_s": fit_s, "protocol_gap": gap}, model


def run_implicit(train: Any, proto: Protocol, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """implicit's ALS on confidences ``1 + alpha * rating``; scores ``x_u . y_i``."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    p = dict(params)
    alpha = float(p.pop("confidence_alpha"))
    conf = sp.csr_array((1.0 + alpha * train.ratings.astype(np.float32), (train.users, train.items)),
                        shape=(train.n_users, train.n_items), dtype=np.float32)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(random_state=seed, **p)
        t0 = time.perf_counter()
        model.fit(sp.csr_matrix(conf), show_progress=False)
        fit_s = time.perf_counter() - t0
    uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return {**score_ranking(proto, lambda rows: uf[rows] @ itf.T), "fit_s": fit_s}


def reference_ease_scores(train: Any, lam: float, threshold: float | None, power: float) -> np.ndarray:
    """EASE in plain dense numpy (Steck 2019): the scores ``X B`` of every training user."""
    r = train.ratings.astype(np.float64)
    keep = np.ones(len(r), dtype=bool) if threshold is None else r >= threshold
    x = np.zeros((train.n_users, train.n_items))
    x[train.users[keep], train.items[keep]] = (r[keep] / train.rating_scale[1]) ** power
    g = x.T @ x + lam * np.eye(train.n_items)
    p = np.linalg.inv(g)
    b = p / (-np.diag(p))
    np.fill_diagonal(b, 0.0)
    return x @ b


def run_reference(train: Any, proto: Protocol, config: tuple[float, float | None, float]) -> tuple[dict[str, Any], np.ndarray]:
    t0 = time.perf_counter()
    scores = reference_ease_scores(train, *config).astype(np.float32)
    fit_s = time.perf_counter() - t0
    return {**score_ranking(proto, lambda rows: scores[rows]), "fit_s": fit_s}, scores


# ---------------------------------------------------------------------- report
def summarise(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, per_fold in results.items():
        rows = list(per_fold.values())
        if not rows:
            continue
        stats: dict[str, float] = {"folds": len(rows)}
        for metric in (*METRICS, "fit_s"):
            vals = [r[metric] for r in rows]
            stats[metric] = statistics.fmean(vals)
            stats[metric + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[key] = stats
    return out


def paired(results: dict[str, dict[str, dict[str, Any]]], a: str, b: str, folds: list[str]) -> dict[str, Any]:
    """Per-fold NDCG@10 differences ``a - b`` with their mean, std and a paired t-test."""
    diffs = [results[a][f]["ndcg@10"] - results[b][f]["ndcg@10"] for f in folds]
    out: dict[str, Any] = {"model": a, "against": b, "per_fold": dict(zip(folds, diffs, strict=True)),
                           "mean": statistics.fmean(diffs), "folds_ahead": sum(d > 0 for d in diffs)}
    if len(diffs) > 1:
        from scipy.stats import ttest_rel

        sd = statistics.stdev(diffs)
        test = ttest_rel([results[a][f]["ndcg@10"] for f in folds], [results[b][f]["ndcg@10"] for f in folds])
        out.update(std=sd, t=float(test.statistic), p=float(test.pvalue))
    return out


def markdown(report: dict[str, Any]) -> str:
    folds, summary, env = report["folds"], report["summary"], report["environment"]
    lines = [
        f"### ML-100K top-{K} ranking, official folds {', '.join(folds)}"
        + (" (mean ± std over folds)" if len(folds) > 1 else ""),
        "",
        f"Every unrated item the model knows is ranked; test ratings >= {RELEVANCE:g} are relevant. "
        f"cfrec {env['cfrec']}, implicit {env.get('implicit') or 'not run'}, numpy {env['numpy']}; "
        f"{env['cpu_count']} CPUs, {env['platform']}.",
        "",
        "| model | NDCG@10 | Recall@10 | MAP@10 | fit s / fold |",
        "|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        def cell(metric: str, digits: int, s: dict[str, float] = s) -> str:
            value = f"{s[metric]:.{digits}f}"
            return value + (f" ± {s[metric + '_std']:.{digits}f}" if s["folds"] > 1 else "")

        lines.append(f"| {key} | {cell('ndcg@10', 4)} | {cell('recall@10', 4)} | {cell('map@10', 4)} | "
                     f"{cell('fit_s', 3)} |")
    lines += ["", "NDCG@10 per fold:", "", "| model | " + " | ".join(folds) + " |", "|---" * (len(folds) + 1) + "|"]
    for key, per_fold in report["results"].items():
        lines.append(f"| {key} | " + " | ".join(f"{per_fold[f]['ndcg@10']:.4f}" for f in folds) + " |")
    pr = report.get("paired")
    if pr:
        lines += ["", f"Paired NDCG@10 difference, {pr['model']} − {pr['against']} (same folds, same run):", "",
                  "| " + " | ".join(folds) + " | mean | std | ahead | paired t | p |",
                  "|---" * (len(folds) + 5) + "|",
                  "| " + " | ".join(f"{pr['per_fold'][f]:+.4f}" for f in folds)
                  + f" | {pr['mean']:+.4f} | {pr.get('std', float('nan')):.4f} | {pr['folds_ahead']}/{len(folds)} "
                  f"| {pr.get('t', float('nan')):.2f} | {pr.get('p', float('nan')):.2g} |"]
    checks = report["checks"]
    lines += ["", f"Protocol check (this script's ranking path vs `evaluate`, largest metric gap): "
                  f"{checks['protocol_gap']:.1e} ({'ok' if checks['protocol_ok'] else 'FAILED'})."]
    if "reference_gap" in checks:
        lines.append(f"Reference check (cfrec EASE vs reference EASE scores, largest relative gap): "
                     f"{checks['reference_gap']:.1e} ({'ok' if checks['reference_ok'] else 'FAILED'}).")
    return "\n".join(lines)


def environment(with_implicit: bool) -> dict[str, Any]:
    import cfrec

    env: dict[str, Any] = {
        "cfrec": cfrec.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if with_implicit:
        import implicit

        env["implicit"] = implicit.__version__
    return env


def write_json(path: Path, obj: Any) -> None:
    """Write JSON beside ``path`` and rename it into place (no half-written file on a crash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, allow_nan=True, default=_plain)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------- main
def _parse_params(text: str | None) -> dict[str, Any]:
    params = dict(IMPLICIT_DEFAULTS)
    if not text:
        return params
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SystemExit(f"error: --implicit-params expects key=value pairs, got {part!r}")
        try:
            params[key] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise SystemExit(f"error: --implicit-params value for {key!r} must be a number, got {value!r}") from None
    return params


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", default=",".join(FOLDS), help="folds to run (default: u1,u2,u3,u4,u5)")
    ap.add_argument("--no-implicit", action="store_true", help="leave out implicit's ALS")
    ap.add_argument("--implicit-params", help="override implicit ALS settings, e.g. factors=64,regularization=10 "
                                              f"(default: {IMPLICIT_DEFAULTS})")
    ap.add_argument("--data-home", help="folder holding ml-100k/ (default: CFREC_DATA_HOME or ../shared/datasets)")
    ap.add_argument("--seed", type=int, default=0, help="implicit's random_state (cfrec models use their default seed)")
    ap.add_argument("--json", type=Path, help="also write the full results as JSON here")
    args = ap.parse_args(argv)
    args.folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    bad = [f for f in args.folds if f not in FOLDS]
    if bad or not args.folds:
        ap.error(f"unknown fold(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(FOLDS)}")
    args.implicit = _parse_params(args.implicit_params)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(args.data_home or os.environ.get("CFREC_DATA_HOME") or REPO.parent / "shared" / "datasets")
    if not (home / "ml-100k" / "u1.base").is_file():
        print(f"error: ML-100K folds not found under {home}/ml-100k (set --data-home or CFREC_DATA_HOME)",
              file=sys.stderr)
        return 1
    os.environ["CFREC_DATA_HOME"] = str(home)
    with_implicit = not args.no_implicit
    if with_implicit:
        try:
            import implicit  # noqa: F401
        except ImportError:
            print("error: implicit is not installed (pip install 'cfrec[bench]'), or pass --no-implicit",
                  file=sys.stderr)
            return 1
    from cfrec.data import load_dataset, predefined_split

    data = load_dataset("ml-100k", data_home=home, download=False)
    keys = [f"cfrec/{name}" for name in CFREC_MODELS] + (["implicit/als"] if with_implicit else []) + list(REFERENCE_EASE)
    results: dict[str, dict[str, dict[str, Any]]] = {key: {} for key in keys}
    protocol_gap, reference_gap = 0.0, 0.0
    for fold in args.folds:
        split = predefined_split(fold, data_home=home, data=data)
        train = split.train.compact()  # the vocabularies every cfrec model builds from this part
        proto = make_protocol(train, split.test)
        models = {}
        for name in CFREC_MODELS:
            r, models[name] = run_cfrec(name, split, proto)
            results[f"cfrec/{name}"][fold] = r
            protocol_gap = max(protocol_gap, r["protocol_gap"])
        if with_implicit:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # implicit's BLAS-thread notice: handled
                results["implicit/als"][fold] = run_implicit(train, proto, args.implicit, args.seed)
        for key, config in REFERENCE_EASE.items():
            r, scores = run_reference(train, proto, config)
            results[key][fold] = r
            if key == "reference/ease":
                ease = models["ease"]
                if ease.item_map_ != train.item_map or ease.user_map_ != train.user_map:
                    raise SystemExit("error: cfrec EASE's vocabulary differs from the compacted training part")
                ours = ease.score_rows(np.arange(train.n_users))
                reference_gap = max(reference_gap, float(np.abs(ours - scores).max() / np.abs(scores).max()))
        line = "  ".join(f"{k} {results[k][fold]['ndcg@10']:.4f}" for k in keys)
        print(f"{fold} ndcg@10: {line}", file=sys.stderr)
    summary = summarise(results)
    best = max((k for k in summary if k.startswith("cfrec/")), key=lambda k: summary[k]["ndcg@10"])
    report: dict[str, Any] = {
        "dataset": "ml-100k",
        "protocol": {"k": K, "relevance": RELEVANCE, "ranked": "every training item the user did not rate"},
        "folds": args.folds,
        "environment": environment(with_implicit),
        "implicit_params": args.implicit if with_implicit else None,
        "reference_ease": {k: {"lam": c[0], "threshold": c[1], "rating_power": c[2]} for k, c in REFERENCE_EASE.items()},
        "results": results,
        "summary": summary,
        "best_cfrec_model": best,
        "paired": paired(results, best, "implicit/als", args.folds) if with_implicit else None,
        "checks": {"protocol_gap": protocol_gap, "protocol_ok": protocol_gap <= PROTOCOL_TOL,
                   "reference_gap": reference_gap, "reference_ok": reference_gap <= REFERENCE_TOL},
    }
    print(markdown(report))
    if args.json:
        write_json(args.json, report)
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0 if report["checks"]["protocol_ok"] and report["checks"]["reference_ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
