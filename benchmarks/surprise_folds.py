#!/usr/bin/env python
"""Surprise vs cfrec on MovieLens 100K's five official folds (u1..u5), in the same run.

Every model sees exactly the same train/test rows (read from ``ml-100k/uN.base``/``uN.test``).
Surprise runs with its default settings (only ``random_state`` fixed and ``verbose`` off; KNNBaseline
item-based on ``pearson_baseline`` similarities, the setting cfrec's ``itemknn`` mirrors);
cfrec models run with their defaults. For each model and fold the script records RMSE, MAE,
fit seconds and predict seconds, then prints Markdown tables (means over folds, RMSE per fold,
fit-time ratios Surprise / cfrec) and optionally writes everything as JSON.

Usage::

    python benchmarks/surprise_folds.py                        # everything (Surprise SVD++ is slow)
    python benchmarks/surprise_folds.py --skip-surprise-svdpp --folds u1,u2
    python benchmarks/surprise_folds.py --models mf,als --json results.json
    python benchmarks/surprise_folds.py --models itemknn --surprise-models KNNBaseline

Needs ``scikit-surprise`` (``pip install 'cfrec[bench]'``) unless ``--no-surprise``; it is a
benchmark-only dependency, never imported by cfrec itself. ML-100K is read from
``--data-home``, else ``CFREC_DATA_HOME``, else ``../shared/datasets`` next to the repository.
Timings depend on the machine and its load: they are wall-clock seconds of ``fit`` only.

A process's first fit of a cfrec model that runs compiled kernels also pays numba's start and
the kernels' loads from the disk cache (one to two seconds of CPU, once per process). By default
each cfrec model is therefore fitted once on the first fold's training part before the folds
are timed; that first fit is reported on its own ("first fit in a process") and the per-fold
figures are the fits a user makes after it. ``--cold`` skips it (the first fold then pays).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cfrec._io import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
FOLDS = ("u1", "u2", "u3", "u4", "u5")
SURPRISE_MODELS = ("BaselineOnly", "SVD", "SVDpp", "KNNBaseline")
#: (cfrec model, Surprise model) pairs compared in the ratio table.
PAIRS = (("baseline", "BaselineOnly"), ("mf", "SVD"), ("als", "SVD"), ("svdpp", "SVDpp"), ("neumf", "SVD"),
         ("itemknn", "KNNBaseline"))


def _rmse_mae(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    err = p.astype(np.float64) - y.astype(np.float64)
    return float(np.sqrt(np.mean(err * err))), float(np.mean(np.abs(err)))


# ---------------------------------------------------------------------- runners
def run_surprise(name: str, train: Any, test: Any, seed: int) -> dict[str, Any]:
    """Fit one Surprise algorithm (default settings) on a fold; score the same test rows."""
    import surprise

    if name == "BaselineOnly":
        algo = surprise.BaselineOnly(verbose=False)
    elif name == "SVD":
        algo = surprise.SVD(random_state=seed)
    elif name == "SVDpp":
        algo = surprise.SVDpp(random_state=seed)
    elif name == "KNNBaseline":  # item-based, on the baseline residuals' Pearson correlation
        algo = surprise.KNNBaseline(sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False)
    else:
        raise ValueError(name)
    lo, hi = train.rating_scale
    frame = train.to_frame()[["user_id", "item_id", "rating"]]
    trainset = surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=(lo, hi))).build_full_trainset()
    t0 = time.perf_counter()
    algo.fit(trainset)
    fit_s = time.perf_counter() - t0
    users, items = test.raw_users(), test.raw_items()
    t0 = time.perf_counter()
    pred = np.fromiter((algo.predict(u, i).est for u, i in zip(users.tolist(), items.tolist(), strict=True)),
                       dtype=np.float64, count=len(test))
    predict_s = time.perf_counter() - t0
    rmse, mae = _rmse_mae(test.ratings, pred)
    return {"rmse": rmse, "mae": mae, "fit_s": fit_s, "predict_s": predict_s}


def run_cfrec(name: str, train: Any, test: Any, device: str | None) -> dict[str, Any]:
    """Fit one cfrec model (default hyperparameters) on a fold; score the test rows."""
    from cfrec.models.registry import make_model, model_class

    params: dict[str, Any] = {}
    if device is not None and "device" in model_class(name)._param_names():
        params["device"] = device
    model = make_model(name, **params)
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(test.raw_users(), test.raw_items())
    predict_s = time.perf_counter() - t0
    rmse, mae = _rmse_mae(test.ratings, pred)
    return {"rmse": rmse, "mae": mae, "fit_s": fit_s, "predict_s": predict_s,
            "epochs_run": len(getattr(model, "history_", []) or [])}


def available_cfrec_models(wanted: list[str] | None) -> list[str]:
    """The cfrec models to run: those asked for, else every registered model that predicts
    ratings (ranking-only models such as pop and ials have no meaningful RMSE)."""
    from cfrec.models.registry import model_class, model_names

    if wanted:
        for name in wanted:
            model_class(name)  # an unknown name fails here, with the list of known ones
        return wanted
    return [name for name in model_names() if model_class(name)().predicts_ratings]


# ---------------------------------------------------------------------- report
def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over folds per model."""
    out = {}
    for key, per_fold in results.items():
        rows = list(per_fold.values())
        if not rows:
            continue
        stats = {}
        for metric in ("rmse", "mae", "fit_s", "predict_s"):
            vals = [r[metric] for r in rows]
            stats[metric] = statistics.fmean(vals)
            stats[metric + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        stats["folds"] = len(rows)
        out[key] = stats
    return out


def ratios(summary: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    out = []
    for cf, sp in PAIRS:
        a, b = summary.get(f"cfrec/{cf}"), summary.get(f"surprise/{sp}")
        if a is None or b is None:
            continue
        out.append({
            "cfrec": cf, "surprise": sp,
            "surprise_fit_s": b["fit_s"], "cfrec_fit_s": a["fit_s"],
            "fit_ratio": b["fit_s"] / a["fit_s"] if a["fit_s"] > 0 else float("inf"),
            "rmse_diff": a["rmse"] - b["rmse"],
            "mae_diff": a["mae"] - b["mae"],
        })
    return out


def markdown(report: dict[str, Any]) -> str:
    folds = report["folds"]
    summary = report["summary"]
    env = report["environment"]
    lines = [
        f"### ML-100K, official folds {', '.join(folds)}" + (" (mean ± std over folds)" if len(folds) > 1 else ""),
        "",
        f"cfrec {env['cfrec']} (torch {env['torch']}, device {env['device']}, {env['torch_threads']} torch threads), "
        f"Surprise {env.get('surprise') or 'not run'}; {env['cpu_count']} CPUs, {env['platform']}.",
        "",
        "| library | model | RMSE | MAE | fit s / fold | predict s / fold |",
        "|---|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        lib, model = key.split("/", 1)

        def cell(metric: str, digits: int, s: dict[str, float] = s) -> str:
            value = f"{s[metric]:.{digits}f}"
            return value + (f" ± {s[metric + '_std']:.{digits}f}" if s["folds"] > 1 else "")

        lines.append(f"| {lib} | {model} | {cell('rmse', 4)} | {cell('mae', 4)} | {cell('fit_s', 2)} | "
                     f"{s['predict_s']:.3f} |")
    lines += ["", "RMSE per fold:", "", "| model | " + " | ".join(folds) + " |",
              "|---" * (len(folds) + 1) + "|"]
    for key, per_fold in report["results"].items():
        cells = [f"{per_fold[f]['rmse']:.4f}" if f in per_fold else "" for f in folds]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if report.get("first_fit_s"):
        lines += ["", f"First fit in a process, on {folds[0]} (numba's start and the compiled kernels' loads included, "
                  "once per process; not in the figures above): "
                  + ", ".join(f"{m} {s:.2f} s" for m, s in report["first_fit_s"].items()) + "."]
    if report["ratios"]:
        lines += ["", "Fit time, Surprise / cfrec (above 1: cfrec fits faster); RMSE difference cfrec - Surprise:",
                  "", "| cfrec | Surprise | Surprise fit s | cfrec fit s | ratio | ΔRMSE | ΔMAE |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["ratios"]:
            lines.append(f"| {r['cfrec']} | {r['surprise']} | {r['surprise_fit_s']:.2f} | {r['cfrec_fit_s']:.2f} "
                         f"| {r['fit_ratio']:.2f}x | {r['rmse_diff']:+.4f} | {r['mae_diff']:+.4f} |")
    return "\n".join(lines)


def environment(device: str | None, with_surprise: bool) -> dict[str, Any]:
    import torch

    import cfrec
    from cfrec.engines.backend import resolve_device

    env = {
        "cfrec": cfrec.__version__,
        "torch": torch.__version__,
        "device": str(resolve_device(device)),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "numpy": np.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if env["device"].startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    if with_surprise:
        import surprise

        env["surprise"] = surprise.__version__
    return env




# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="cfrec models, comma-separated (default: every registered model that predicts ratings)")
    ap.add_argument("--folds", default=",".join(FOLDS), help="folds to run (default: u1,u2,u3,u4,u5)")
    ap.add_argument("--no-surprise", action="store_true", help="run cfrec only")
    ap.add_argument("--surprise-models", default=",".join(SURPRISE_MODELS),
                    help=f"Surprise models, comma-separated (default: {','.join(SURPRISE_MODELS)})")
    ap.add_argument("--skip-surprise-svdpp", action="store_true",
                    help="skip Surprise SVD++ (about 15 s a fold on a laptop core)")
    ap.add_argument("--data-home", help="folder holding ml-100k/ (default: CFREC_DATA_HOME or ../shared/datasets)")
    ap.add_argument("--device", help="cfrec torch device (default: cuda when available)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0, help="Surprise random_state (cfrec models use their default seed)")
    ap.add_argument("--json", type=Path, help="also write the full results as JSON here")
    ap.add_argument("--cold", action="store_true",
                    help="no untimed first fit of each cfrec model: the first fold pays numba's start")
    args = ap.parse_args(argv)
    args.folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    bad = [f for f in args.folds if f not in FOLDS]
    if bad:
        ap.error(f"unknown fold(s) {', '.join(bad)}; choose from {', '.join(FOLDS)}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    args.surprise_models = [m.strip() for m in args.surprise_models.split(",") if m.strip()]
    unknown = [m for m in args.surprise_models if m not in SURPRISE_MODELS]
    if unknown:
        ap.error(f"unknown Surprise model(s) {', '.join(unknown)}; choose from {', '.join(SURPRISE_MODELS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(args.data_home or os.environ.get("CFREC_DATA_HOME") or REPO.parent / "shared" / "datasets")
    if not (home / "ml-100k" / "u1.base").is_file():
        print(f"error: ML-100K folds not found under {home}/ml-100k (set --data-home or CFREC_DATA_HOME)",
              file=sys.stderr)
        return 1
    os.environ["CFREC_DATA_HOME"] = str(home)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from cfrec.data import load_dataset, predefined_split

    with_surprise = not args.no_surprise
    if with_surprise:
        try:
            import surprise  # noqa: F401
        except ImportError:
            print("error: scikit-surprise is not installed (pip install 'cfrec[bench]'), or pass --no-surprise",
                  file=sys.stderr)
            return 1
    cf_models = available_cfrec_models(args.models)
    sp_models = [m for m in args.surprise_models
                 if with_surprise and not (m == "SVDpp" and args.skip_surprise_svdpp)]
    data = load_dataset("ml-100k", data_home=home, download=False)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for key in [f"surprise/{m}" for m in sp_models] + [f"cfrec/{m}" for m in cf_models]:
        results[key] = {}
    first_fit: dict[str, float] = {}
    if not args.cold and args.folds:
        split = predefined_split(args.folds[0], data_home=home, data=data)
        for m in cf_models:
            first_fit[m] = run_cfrec(m, split.train, split.test, args.device)["fit_s"]
            print(f"first fit in this process: cfrec/{m} {first_fit[m]:.2f}s ({args.folds[0]}, not counted)",
                  file=sys.stderr)
    for fold in args.folds:
        split = predefined_split(fold, data_home=home, data=data)
        # Interleave libraries within a fold so machine-load drift hits both alike.
        for m in sp_models:
            r = run_surprise(m, split.train, split.test, args.seed)
            results[f"surprise/{m}"][fold] = r
            print(f"{fold} surprise/{m:<12} rmse {r['rmse']:.4f} mae {r['mae']:.4f} fit {r['fit_s']:.2f}s",
                  file=sys.stderr)
        for m in cf_models:
            r = run_cfrec(m, split.train, split.test, args.device)
            results[f"cfrec/{m}"][fold] = r
            print(f"{fold} cfrec/{m:<15} rmse {r['rmse']:.4f} mae {r['mae']:.4f} fit {r['fit_s']:.2f}s",
                  file=sys.stderr)
    summary = summarise(results)
    report = {
        "dataset": "ml-100k",
        "folds": args.folds,
        "environment": environment(args.device, with_surprise),
        "results": results,
        "summary": summary,
        "ratios": ratios(summary),
        "first_fit_s": first_fit,
    }
    print(markdown(report))
    if args.json:
        write_json_atomic(args.json, report)
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
