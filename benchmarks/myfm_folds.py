#!/usr/bin/env python
"""myFM vs cfrec's BayesianMF on MovieLens 100K's five official folds (u1..u5), in the same run.

Both libraries fit Bayesian models by Gibbs sampling on exactly the same rows
(``ml-100k/uN.base``, scored on ``uN.test``), at the same rank, number of sweeps and burn-in
(myFM keeps every post-burn-in sample; cfrec thins them to its ``max_samples``), with the same
implicit feedback. Implicit features are given to myFM as in its MovieLens examples: a
normalised rated-items block beside the user one-hot and, for the item side, a normalised
rated-by-users block beside the item one-hot. myFM is a factorisation machine, so it also has
interactions among the implicit features and between them and the entity they belong to;
cfrec's model is (flipped) SVD++ exactly. Variants:

* ``implicit`` (default): cfrec's default model (implicit feedback on both sides: the items each
  user rated and the users who rated each item, in training).
* ``user-implicit``: Bayesian SVD++ (the user side only; cfrec ``implicit_items=False``).
* ``plain``: no implicit features (Bayesian MF against a user + item FM).
* ``implicit-test``: both sides, and the sets also include the pairs of the test part (never
  their ratings), the protocol of myFM's published ML-100K examples. cfrec needs
  ``implicit_include_valid=True`` for it and gets the test part as ``valid``.
* ``features``: implicit feedback on both sides plus the release's side features (users: age
  group, gender, occupation, zip region; items: genres, release decade), one prior group per
  feature family in both libraries. cfrec runs :class:`~cfrec.models.bayesian_fm.BayesianFM`
  (a factorization machine like myFM), given the same design rows.
* ``features-plain``: ids and side features, no implicit feedback (cfrec's BayesianFM).
* ``features-test``: ``features`` with the implicit sets of ``implicit-test``.
* ``features-day``: ``features`` plus a (user, UTC day of rating) column per day a user rated on
  in training (cfrec ``BayesianFM(user_day=True)``, scored with the test ratings' timestamps;
  myFM gets the same columns as a third relation block, an unseen day an empty row).

For each variant, library and fold the script records RMSE and MAE (clipped to 1..5), fit
wall-clock seconds and fit CPU seconds (less sensitive to other jobs on a shared machine), then
prints a Markdown table and optionally writes everything as JSON.

Usage::

    python benchmarks/myfm_folds.py                               # both libraries, variant implicit
    python benchmarks/myfm_folds.py --variants implicit,plain --folds u1,u2
    python benchmarks/myfm_folds.py --rank 10 --sweeps 200 --burn-in 25 --json myfm.json

Needs ``myfm`` (``pip install 'cfrec[bench]'``) unless ``--no-myfm``: a benchmark-only
dependency, never imported by cfrec itself. ML-100K is read from ``--data-home``, else
``CFREC_DATA_HOME``, else ``../shared/datasets`` next to the repository. Timings are wall-clock
seconds of ``fit`` and depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

# myFM draws a tqdm progress bar on stderr; tqdm reads this switch when it is first imported
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
FOLDS = ("u1", "u2", "u3", "u4", "u5")
#: variant -> (user-side sets, item-side sets, sets include the test pairs)
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "implicit": (True, True, False),
    "user-implicit": (True, False, False),
    "plain": (False, False, False),
    "implicit-test": (True, True, True),
    "features": (True, True, False),
    "features-plain": (False, False, False),
    "features-test": (True, True, True),
    "features-day": (True, True, False),
}
#: variants with the release's side features (user age, gender, occupation, zip region; item
#: genres and decade): cfrec runs its Bayesian factorization machine on them
FEATURE_VARIANTS = ("features", "features-plain", "features-test", "features-day")
#: variants with a (user, day) context block
DAY_VARIANTS = ("features-day",)


def _rmse_mae(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    err = p.astype(np.float64) - y.astype(np.float64)
    return float(np.sqrt(np.mean(err * err))), float(np.mean(np.abs(err)))


def import_myfm() -> Any:
    """Import myFM. Its ``__init__`` imports ``pkg_resources`` for two names it never uses; recent
    setuptools no longer ships that module, so a stand-in is registered when it is missing."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pkg_resources")

        class DistributionNotFound(Exception):
            pass

        stub.DistributionNotFound = DistributionNotFound  # type: ignore[attr-defined]
        stub.get_distribution = importlib.metadata.distribution  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stub
    import myfm

    return myfm


# ---------------------------------------------------------------------- runners
def implicit_sets(rows: np.ndarray, others: np.ndarray, n_rows: int, n_others: int) -> sp.csr_matrix:
    """Rows x others: ``|N(r)|^-1/2`` on the set of others each row has a pair with (users x
    items: the items each user rated; items x users: the users who rated each item)."""
    mat = sp.csr_matrix((np.ones(len(rows)), (rows, others)), shape=(n_rows, n_others))
    mat.sum_duplicates()
    mat.data[:] = 1.0
    counts = np.diff(mat.indptr)
    inv = np.zeros(n_rows)
    inv[counts > 0] = counts[counts > 0] ** -0.5
    return sp.csr_matrix(sp.diags(inv) @ mat)


def run_myfm(myfm: Any, variant: str, train: Any, test: Any, rank: int, sweeps: int, burn_in: int,
             seed: int) -> dict[str, Any]:
    """Fit myFM's Gibbs regressor on a fold (ids as one-hot relation blocks); score the test rows."""
    n_users, n_items = train.n_users, train.n_items
    user_side, item_side, with_test = VARIANTS[variant]
    parts = [train, test] if with_test else [train]
    users = np.concatenate([p.users for p in parts])
    items = np.concatenate([p.items for p in parts])
    user_block, groups = sp.identity(n_users, format="csr"), [n_users]
    with_features = variant in FEATURE_VARIANTS
    if with_features:
        user_block, groups = _with_feature_groups(user_block, groups, train.user_features, train.user_map)
    if user_side:
        user_block = sp.hstack([user_block, implicit_sets(users, items, n_users, n_items)], format="csr")
        groups.append(n_items)
    item_block = sp.identity(n_items, format="csr")
    groups.append(n_items)
    if with_features:
        item_block, groups = _with_feature_groups(item_block, groups, train.item_features, train.item_map)
    if item_side:
        item_block = sp.hstack([item_block, implicit_sets(items, users, n_items, n_users)], format="csr")
        groups.append(n_users)

    day_rows: Any = None
    if variant in DAY_VARIANTS:  # one-hot (user, day) columns of the training ratings' pairs
        from cfrec.models.fm_terms import day_keys

        day_table = np.unique(day_keys(train.users, train.timestamps))
        day_block = sp.identity(len(day_table) + 1, format="csr")[:, :len(day_table)]  # last row: unseen
        groups.append(len(day_table))

        def day_rows(part: Any) -> np.ndarray:
            keys = day_keys(part.users, part.timestamps)
            pos = np.minimum(np.searchsorted(day_table, keys), len(day_table) - 1)
            return np.where(day_table[pos] == keys, pos, len(day_table)).astype(np.int64)

    def blocks(part: Any) -> list[Any]:
        out = [myfm.RelationBlock(part.users.astype(np.int64), user_block),
               myfm.RelationBlock(part.items.astype(np.int64), item_block)]
        if day_rows is not None:
            out.append(myfm.RelationBlock(day_rows(part), day_block))
        return out

    empty_train = sp.csr_matrix((len(train), 0))
    fm = myfm.MyFMRegressor(rank=rank, random_seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    fm.fit(empty_train, train.ratings.astype(np.float64), X_rel=blocks(train), n_iter=sweeps,
           n_kept_samples=sweeps - burn_in, group_shapes=groups)
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    pred = np.clip(fm.predict(sp.csr_matrix((len(test), 0)), blocks(test)), *train.rating_scale)
    predict_s = time.perf_counter() - t0
    rmse, mae = _rmse_mae(test.ratings, pred)
    return {"rmse": rmse, "mae": mae, "fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "predict_s": predict_s}


def _with_feature_groups(block: Any, groups: list[int], features: Any, vocab: Any) -> tuple[Any, list[int]]:
    """``block`` with the side features' columns appended, ordered by family (the text before
    ``=``), and one myFM group per family (as cfrec's BayesianFM groups them)."""
    if features is None:
        return block, groups
    from cfrec.models.fm_terms import feature_groups

    fam, _ = feature_groups(features)
    order = np.argsort(fam, kind="stable")
    mat = sp.csr_matrix(features.align(vocab))[:, order]
    sizes = np.bincount(fam)
    return sp.hstack([block, mat], format="csr"), groups + [int(n) for n in sizes if n]


def run_cfrec(variant: str, train: Any, test: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Fit cfrec's BayesianMF (BayesianFM for the feature variants) on a fold; score the test
    rows (unknown ids get its fallbacks)."""
    from cfrec.models.bayesian_fm import BayesianFM
    from cfrec.models.bayesian_mf import BayesianMF

    user_side, item_side, with_test = VARIANTS[variant]
    model: Any
    if variant in FEATURE_VARIANTS:
        fm_params = {k: v for k, v in params.items() if k != "device"}
        model = BayesianFM(**fm_params, implicit=user_side, implicit_items=item_side,
                           implicit_include_valid=with_test, user_day=variant in DAY_VARIANTS)
    else:
        model = BayesianMF(**params, implicit=user_side, implicit_items=item_side,
                           implicit_include_valid=with_test)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(train, test if with_test else None)
    fit_s, fit_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    pred = (model.predict_at(test.raw_users(), test.raw_items(), test.timestamps).ratings
            if variant in DAY_VARIANTS else model.predict(test.raw_users(), test.raw_items()))
    predict_s = time.perf_counter() - t0
    rmse, mae = _rmse_mae(test.ratings, pred)
    seconds = [r["seconds"] for r in model.history_]
    return {"rmse": rmse, "mae": mae, "fit_s": fit_s, "fit_cpu_s": fit_cpu_s, "predict_s": predict_s,
            "seconds_per_sweep": statistics.fmean(seconds), "kept_samples": len(model.sample_global_),
            "cg_iterations": statistics.fmean(r.get("cg_iterations_users", 0) + r.get("cg_iterations_items", 0)
                                              for r in model.history_), "model": type(model).__name__}


# ---------------------------------------------------------------------- report
def summarise(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out = {}
    for key, per_fold in results.items():
        rows = list(per_fold.values())
        if not rows:
            continue
        stats: dict[str, float] = {"folds": len(rows)}
        for metric in ("rmse", "mae", "fit_s", "fit_cpu_s", "predict_s"):
            vals = [r[metric] for r in rows]
            stats[metric] = statistics.fmean(vals)
            stats[metric + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[key] = stats
    return out


def markdown(report: dict[str, Any]) -> str:
    folds, env, cfg = report["folds"], report["environment"], report["config"]
    lines = [
        f"### ML-100K, official folds {', '.join(folds)}: Gibbs-sampled factor models",
        "",
        f"rank {cfg['rank']}, {cfg['sweeps']} sweeps, burn-in {cfg['burn_in']} (myFM keeps all "
        f"{cfg['sweeps'] - cfg['burn_in']} post-burn-in samples, cfrec at most {cfg['max_samples']}); "
        f"cfrec {env['cfrec']} (device {env['device']}), myFM {env.get('myfm') or 'not run'}; "
        f"{env['cpu_count']} CPUs, {env['platform']}.",
        "",
        "| variant | library | " + " | ".join(folds) + " | mean RMSE | MAE | fit s / fold | fit CPU s / fold |",
        "|---|---|" + "---:|" * (len(folds) + 4),
    ]
    for key, per_fold in report["results"].items():
        variant, lib = key.split("/", 1)
        s = report["summary"].get(key)
        if s is None:
            continue
        cells = [f"{per_fold[f]['rmse']:.4f}" if f in per_fold else "" for f in folds]
        lines.append(f"| {variant} | {lib} | " + " | ".join(cells)
                     + f" | {s['rmse']:.4f} | {s['mae']:.4f} | {s['fit_s']:.2f} | {s['fit_cpu_s']:.2f} |")
    return "\n".join(lines)


def environment(device: str | None, with_myfm: bool) -> dict[str, Any]:
    import torch

    import cfrec
    from cfrec.engines.backend import resolve_device

    env: dict[str, Any] = {
        "cfrec": cfrec.__version__,
        "torch": torch.__version__,
        "device": str(resolve_device(device)),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "numpy": np.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if with_myfm:
        env["myfm"] = importlib.metadata.version("myfm")
    return env


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from cfrec.models.bayesian_mf import BayesianMF

    defaults = BayesianMF().get_params()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="implicit",
                    help=f"comma-separated, from {', '.join(VARIANTS)} (default: implicit)")
    ap.add_argument("--folds", default=",".join(FOLDS), help="folds to run (default: u1,u2,u3,u4,u5)")
    ap.add_argument("--rank", type=int, default=defaults["n_factors"],
                    help=f"factors for both (default: BayesianMF's {defaults['n_factors']})")
    ap.add_argument("--sweeps", type=int, default=defaults["n_sweeps"],
                    help=f"Gibbs sweeps for both (default: BayesianMF's {defaults['n_sweeps']})")
    ap.add_argument("--burn-in", type=int, default=defaults["burn_in"],
                    help=f"discarded sweeps for both (default: BayesianMF's {defaults['burn_in']})")
    ap.add_argument("--no-myfm", action="store_true", help="run cfrec only")
    ap.add_argument("--no-cfrec", action="store_true", help="run myFM only")
    ap.add_argument("--data-home", help="folder holding ml-100k/ (default: CFREC_DATA_HOME or ../shared/datasets)")
    ap.add_argument("--device", help="cfrec device (default: CUDA when available)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of both libraries")
    ap.add_argument("--json", type=Path, help="also write the full results as JSON here")
    args = ap.parse_args(argv)
    args.folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    bad = [f for f in args.folds if f not in FOLDS]
    if bad:
        ap.error(f"unknown fold(s) {', '.join(bad)}; choose from {', '.join(FOLDS)}")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    if not 0 <= args.burn_in < args.sweeps:
        ap.error("need 0 <= --burn-in < --sweeps")
    args.max_samples = defaults["max_samples"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(args.data_home or os.environ.get("CFREC_DATA_HOME") or REPO.parent / "shared" / "datasets")
    if not (home / "ml-100k" / "u1.base").is_file():
        print(f"error: ML-100K folds not found under {home}/ml-100k (set --data-home or CFREC_DATA_HOME)",
              file=sys.stderr)
        return 1
    os.environ["CFREC_DATA_HOME"] = str(home)
    from cfrec.data import load_dataset, predefined_split

    myfm = None
    if not args.no_myfm:
        try:
            myfm = import_myfm()
        except ImportError as exc:
            print(f"error: myfm is not importable ({exc}); pip install 'cfrec[bench]', or pass --no-myfm",
                  file=sys.stderr)
            return 1
    libs = ([] if args.no_cfrec else ["cfrec"]) + ([] if myfm is None else ["myfm"])
    params = {"n_factors": args.rank, "n_sweeps": args.sweeps, "burn_in": args.burn_in,
              "seed": args.seed, "device": args.device}
    data = load_dataset("ml-100k", data_home=home, download=False)
    results: dict[str, dict[str, dict[str, Any]]] = {f"{v}/{lib}": {} for v in args.variants for lib in libs}
    for fold in args.folds:
        split = predefined_split(fold, data_home=home, data=data)
        for variant in args.variants:
            # interleave the libraries within a fold so changes in machine load hit both alike
            for lib in libs:
                if lib == "cfrec":
                    r = run_cfrec(variant, split.train, split.test, params)
                else:
                    r = run_myfm(myfm, variant, split.train, split.test, args.rank, args.sweeps,
                                 args.burn_in, args.seed)
                results[f"{variant}/{lib}"][fold] = r
                print(f"{fold} {variant:<13} {lib:<5} rmse {r['rmse']:.4f} mae {r['mae']:.4f} "
                      f"fit {r['fit_s']:.1f}s", file=sys.stderr, flush=True)
    report = {
        "dataset": "ml-100k",
        "folds": args.folds,
        "config": {"rank": args.rank, "sweeps": args.sweeps, "burn_in": args.burn_in,
                   "max_samples": args.max_samples, "seed": args.seed, "variants": args.variants},
        "environment": environment(args.device, myfm is not None),
        "results": results,
        "summary": summarise(results),
    }
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
