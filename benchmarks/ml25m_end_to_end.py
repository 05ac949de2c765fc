#!/usr/bin/env python
"""ML-25M end to end: load, split, fit, full-ranking evaluation and save, each stage timed.

The real ML-25M is not needed: ``synthetic_like("ml-25m", seed=0)`` (25,000,095 half-star
ratings, 162,541 users, 59,047 items) is written once as an ML-25M-format release folder
(``ratings.csv`` with header ``userId,movieId,rating,timestamp`` and ``movies.csv``) by
:func:`cfrec.data.synthetic.write_movielens` and kept under ``--cache``. Then, for each model
(ALS and iALS at 64 factors by default), one child process runs the pipeline a user would,
through cfrec's public API only:

0. ``import cfrec``: imports cfrec and builds the model (which imports its module and torch);
1. ``load``: ``load_dataset(folder)`` parses the release;
2. ``split``: ``make_splits(data, "random:0.2")[0]``, a random 20% of the ratings held out
   (seed 0; ``--split`` takes any spec, e.g. ``user-temporal:0.2``); the full data set is
   released afterwards, only the split is kept;
3. ``fit``: ``model.fit(split.train)`` for ``model = make_model(name, n_factors=64)``;
4. ``evaluate``: ``evaluate(model, split.test, metrics=["ndcg@10", "recall@10"])``, ranking
   every item for every test user (test ratings >= 4 are relevant; users without one are
   excluded from the averages and counted);
5. ``save``: ``model.save(folder)``.

Each stage reports its seconds, its own peak RSS (the mark is reset between stages by writing
``5`` to ``/proc/self/clear_refs``; where that is impossible the peak since the process started
is shown and labelled so) and the RSS after it. Writing the data folder is timed the same way.

Usage::

    python benchmarks/ml25m_end_to_end.py                         # ML-25M size, ALS and iALS
    python benchmarks/ml25m_end_to_end.py --size ml-1m --json e2e.json   # a quick run
    python benchmarks/ml25m_end_to_end.py --prepare-only          # only write the data folder
    python benchmarks/ml25m_end_to_end.py --models ials --iterations 5 --threads 1

The Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.fspath(Path(__file__).resolve().parent))
from _bench_util import (  # noqa: E402  (the helper module sits next to this script)
    current_rss,
    default_cache,
    environment,
    fmt_gb,
    fmt_seconds,
    markdown_table,
    peak_rss,
    read_json,
    reset_peak_rss,
    run_child,
    write_json_atomic,
)

SCRIPT = Path(__file__).resolve()
SIZES = ("ml-1m", "ml-10m", "ml-25m")
#: The MovieLens format written for each synthetic size (the release of that size).
LAYOUTS = {"ml-1m": "ml-1m", "ml-10m": "ml-10m", "ml-25m": "ml-25m"}
TINY = {"n_users": 300, "n_items": 200, "n_ratings": 6000}
SEED = 0
#: The issue's goal for the ML-25M size, per model: whole pipeline time and peak memory.
TARGET_SECONDS, TARGET_GB = 600.0, 8.0
MARKER = "synthetic.json"
#: The stages of the pipeline child, in order.
PIPELINE = ("import cfrec", "load", "split", "fit", "evaluate", "save")


# ====================================================================== stages inside a child
class Stages:
    """Times stages and measures each one's peak RSS; saves progress after every stage."""

    def __init__(self, result_path: Path, payload: dict[str, Any]) -> None:
        self.result_path = result_path
        self.payload = payload
        self.payload.setdefault("stages", [])

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        resettable = reset_peak_rss()
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
        self.payload["stages"].append({
            "stage": name, "seconds": seconds, "peak_rss": peak_rss(), "rss_after": current_rss(),
            "peak_since": "stage start" if resettable else "process start"})
        self.save()
        return value

    def save(self, **extra: Any) -> None:
        self.payload.update(extra)
        write_json_atomic(self.result_path, self.payload)


def child_write(spec: dict[str, Any]) -> None:
    """Generate the synthetic data set and write it as a MovieLens release folder."""
    stages = Stages(Path(spec["result"]), {"status": "running"})
    synthetic = stages.run("import cfrec", lambda: importlib.import_module("cfrec.data.synthetic"))
    overrides = TINY if spec["tiny"] else {}
    data = stages.run("generate", lambda: synthetic.synthetic_like(spec["size"], seed=SEED,
                                                                   **overrides))
    values = np.unique(data.ratings)
    folder = Path(spec["folder"])
    stages.run("write", lambda: synthetic.write_movielens(data, folder, spec["layout"]))
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    meta = {"size": spec["size"], "tiny": spec["tiny"], "seed": SEED, "layout": spec["layout"],
            "n_ratings": len(data), "n_users": data.n_users, "n_items": data.n_items,
            "rating_scale": list(data.rating_scale), "rating_values": values.tolist(),
            "rating_step": _rating_step(values), "files": files}
    stages.save(status="ok", meta=meta)


def _rating_step(values: np.ndarray) -> str:
    """``"whole stars"``, ``"half stars"`` or ``"other"``: the grid the ratings lie on."""
    if np.all(values == np.round(values)):
        return "whole stars"
    if np.all(values * 2 == np.round(values * 2)):
        return "half stars"
    return "other"


def child_pipeline(spec: dict[str, Any]) -> None:
    """load -> split -> fit -> evaluate -> save for one model, through cfrec's public API."""
    stages = Stages(Path(spec["result"]), {"status": "running"})
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))

    def imports() -> Any:
        from cfrec.data import load_dataset, make_splits
        from cfrec.evaluation import evaluate
        from cfrec.models import make_model

        # building the model imports its module (and torch), so that fit times only the fit
        return load_dataset, make_splits, evaluate, make_model(spec["model"], **spec["params"])

    load_dataset, make_splits, evaluate, model = stages.run("import cfrec", imports)
    data = stages.run("load", lambda: load_dataset(spec["folder"]))
    stages.save(n_ratings=len(data), n_users=data.n_users, n_items=data.n_items, data_name=data.name)

    def split_and_release() -> Any:
        nonlocal data
        split = make_splits(data, spec["split"], seed=SEED)[0]
        del data  # only the split is needed from here on
        gc.collect()
        return split

    split = stages.run("split", split_and_release)
    stages.save(n_train=len(split.train), n_test=len(split.test))
    stages.run("fit", lambda: model.fit(split.train))
    history = list(getattr(model, "history_", None) or [])
    per = [float(h["seconds"]) for h in history if isinstance(h, dict) and "seconds" in h]
    stages.save(params=model.get_params(), iterations_run=len(history), iteration_seconds=per)
    metrics = stages.run("evaluate", lambda: evaluate(model, split.test, metrics=spec["metrics"]))
    stages.save(metrics=dict(metrics))
    out = Path(spec["out"])
    stages.run("save", lambda: model.save(out))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    stages.save(status="ok", model_folder=os.fspath(out), model_bytes=size)


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        {"write": child_write, "pipeline": child_pipeline}[spec["kind"]](spec)
    except BaseException as exc:  # the failure is a result to report, with what was done so far
        traceback.print_exc()
        done = read_json(spec["result"]) or {}
        why = "out of memory (MemoryError)" if isinstance(exc, MemoryError) else \
            f"{type(exc).__name__}: {str(exc)[:300]}"
        write_json_atomic(spec["result"], dict(done, status="error", error=why))
    return 0


# ====================================================================== parent
def release_folder(cache: Path, size: str, tiny: bool) -> Path:
    """``<cache>/synthetic-seed0/<size>``: named after the release so the loader knows it."""
    return cache / f"synthetic-seed{SEED}{'-tiny' if tiny else ''}" / size


def ensure_release(cache: Path, size: str, *, tiny: bool, timeout: float | None,
                   log_root: Path) -> dict[str, Any]:
    """Write the synthetic release folder in a child process unless it is already cached."""
    folder = release_folder(cache, size, tiny)
    marker = read_json(folder / MARKER)
    if marker is not None:
        return dict(marker, cached=True)
    log(f"writing synthetic_like({size!r}, seed={SEED}) as a {LAYOUTS[size]} folder: {folder}")
    staging = Path(tempfile.mkdtemp(prefix=f".{size}.", dir=folder.parent if folder.parent.exists()
                                    else _mkdir(folder.parent)))
    work = log_root / f"write-{size}"
    spec = {"kind": "write", "size": size, "tiny": tiny, "layout": LAYOUTS[size],
            "folder": os.fspath(staging / size), "result": os.fspath(work / "result.json")}
    run = run_child(SCRIPT, spec, workdir=work, timeout=timeout)
    result = read_json(work / "result.json") or {}
    if run.status != "ok" or result.get("status") != "ok":
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"writing the synthetic {size} folder failed: "
                         f"{result.get('error') or run.describe()}")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging / size, folder)
    shutil.rmtree(staging, ignore_errors=True)
    marker = {**result["meta"], "stages": result["stages"], "folder": os.fspath(folder),
              "last_sampled_peak_rss": run.peak_rss}
    write_json_atomic(folder / MARKER, marker)  # written last: the folder is complete
    return dict(marker, cached=False)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        model, dot, key = head.partition(".")
        if not (sep and dot and model and key):
            raise SystemExit(f"--param {item!r}: expected MODEL.KEY=VALUE, e.g. ials.reg=10")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(model.strip(), {})[key.strip()] = parsed
    return out


def model_params(name: str, args: argparse.Namespace, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """n_factors, the iteration bound (when asked), device and overrides; checked by make_model."""
    from cfrec.models import make_model

    defaults = make_model(name).get_params()
    params: dict[str, Any] = {}
    if "n_factors" in defaults:
        params["n_factors"] = args.factors
    if args.iterations is not None:
        for key in ("iterations", "n_iterations", "n_iter", "epochs", "n_epochs"):
            if key in defaults:
                params[key] = args.iterations
                break
    if args.device is not None and "device" in defaults:
        params["device"] = args.device
    params.update(overrides.get(name, {}))
    make_model(name, **params)  # unknown names and parameters fail here, before any work
    return params


def run_model(name: str, params: dict[str, Any], folder: Path, args: argparse.Namespace,
              out_root: Path, log_root: Path) -> dict[str, Any]:
    work = log_root / name
    spec = {"kind": "pipeline", "model": name, "params": params, "folder": os.fspath(folder),
            "split": args.split, "metrics": args.metrics, "threads": args.threads,
            "out": os.fspath(out_root / f"{folder.name}-{name}"),
            "result": os.fspath(work / "result.json")}
    run = run_child(SCRIPT, spec, workdir=work, timeout=args.timeout, threads=args.threads)
    result = read_json(work / "result.json") or {"stages": []}
    # the child resets its peak mark per stage, so the parent's last sample of VmHWM is the
    # peak of the stage that was running last: the unfinished one when the child was killed
    row = {"model": name, **result, "wall_seconds": run.seconds,
           "last_sampled_peak_rss": run.peak_rss}
    if run.status != "ok":
        row.update(status=run.status, error=run.describe())
    elif result.get("status") != "ok":
        row.update(status="error", error=result.get("error", "no result written"))
    done = len(row.get("stages", []))
    if row["status"] != "ok" and done < len(PIPELINE):
        row["unfinished_stage"] = {
            "stage": PIPELINE[done],
            "seconds": max(run.seconds - sum(s["seconds"] for s in row.get("stages", [])), 0.0),
            "peak_rss": run.peak_rss}
    return row


def markdown(release: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    size = release["size"]
    parts = [f"### synthetic {size}{' (tiny)' if release.get('tiny') else ''} in "
             f"{release['layout']} format: {release['n_ratings']:,} ratings, "
             f"{release['n_users']:,} users, {release['n_items']:,} items\n"]
    values = release.get("rating_values") or []
    files = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in release.get("files", {}).items())
    parts.append(f"Ratings {values[0]:g}..{values[-1]:g}, {len(values)} distinct values "
                 f"({release.get('rating_step', '?')}); files: {files}."
                 + (" (cached from an earlier run)" if release.get("cached") else "") + "\n")
    parts.append(markdown_table(
        ["writing the data", "seconds", "peak RSS GB", "RSS after GB"],
        [[s["stage"], fmt_seconds(s["seconds"]), fmt_gb(s["peak_rss"]), fmt_gb(s["rss_after"])]
         for s in release.get("stages", [])], ["l", "r", "r", "r"]))
    if not rows:
        return "\n".join(parts)
    stage_rows = []
    for row in rows:
        for s in row.get("stages", []):
            peak = fmt_gb(s["peak_rss"]) + ("" if s["peak_since"] == "stage start" else " (since start)")
            stage_rows.append([row["model"], s["stage"], fmt_seconds(s["seconds"]), peak,
                               fmt_gb(s["rss_after"])])
        if row.get("status") != "ok":
            late = row.get("unfinished_stage")
            if late:
                stage_rows.append([row["model"], f"{late['stage']} (unfinished)",
                                   f"≥ {fmt_seconds(late['seconds'])}", fmt_gb(late["peak_rss"]), "–"])
            stage_rows.append([row["model"], f"**{row.get('status')}**", row.get("error", ""), "", ""])
    parts.append("\n" + markdown_table(["model", "stage", "seconds", "peak RSS GB (stage)",
                                        "RSS after GB"], stage_rows, ["l", "l", "r", "r", "r"]))
    metric_names = [m.strip() for m in args.metrics]
    summary = []
    for row in rows:
        stages = row.get("stages", [])
        total = sum(s["seconds"] for s in stages)
        peak = max((s["peak_rss"] for s in stages), default=None)
        late = row.get("unfinished_stage") or {}
        if late.get("peak_rss") is not None:
            peak = max(peak or 0, late["peak_rss"])
        per = row.get("iteration_seconds") or []
        metrics = row.get("metrics", {})
        line = [row["model"], (row.get("params") or {}).get("n_factors", "–"),
                row.get("iterations_run", "–"), fmt_seconds(float(np.mean(per))) if per else "–",
                fmt_seconds(total), fmt_gb(peak),
                *(f"{metrics[m]:.4f}" if m in metrics else "–" for m in metric_names),
                f"{int(metrics['ranking_users']):,}" if "ranking_users" in metrics else "–"]
        if size == "ml-25m":
            ok = row.get("status") == "ok" and peak is not None
            line.append("yes" if ok and total < TARGET_SECONDS and peak / 2**30 < TARGET_GB else "no")
        line.append(row.get("status", "–"))
        summary.append(line)
    headers = ["model", "factors", "iterations", "s / iteration", "total s (all stages)",
               "peak RSS GB", *metric_names, "test users ranked"]
    if size == "ml-25m":
        headers.append(f"< {TARGET_SECONDS:.0f} s and < {TARGET_GB:g} GB")
    headers.append("status")
    parts.append("\n" + markdown_table(headers, summary, ["l", *["r"] * (len(headers) - 2), "l"]))
    threads = f"{args.threads} (set for every child)" if args.threads else "library defaults (nothing set)"
    parts.append(f"\nSplit: `{args.split}` (seed {SEED}); ranking over every item for every test "
                 "user, test ratings >= 4 relevant. One process per model; *total s* sums its "
                 "stages (import included). Threads: "
                 f"{threads}; {os.cpu_count()} CPUs. Timings depend on the machine's load.")
    return "\n".join(parts)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="ml-25m", choices=SIZES,
                   help="synthetic size and MovieLens format (default %(default)s)")
    p.add_argument("--models", default="als,ials", help="comma-separated cfrec models (default %(default)s)")
    p.add_argument("--factors", type=int, default=64, help="n_factors of every model (default %(default)s)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations (or epochs) per model (default: each model's own default)")
    p.add_argument("--split", default="random:0.2", help="split spec (default %(default)s)")
    p.add_argument("--metrics", default="ndcg@10,recall@10",
                   help="evaluation metrics (default %(default)s)")
    p.add_argument("--param", action="append", metavar="MODEL.KEY=VALUE",
                   help="override a hyperparameter, e.g. ials.reg=10 (repeatable; JSON values)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every child (default: leave the library's default)")
    p.add_argument("--device", default=None, help="cfrec device for models that take one")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds per child process before it is killed (default %(default)s)")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder for the written data set, saved models and logs "
                        "(default: ~/.cache/cfrec-bench/end-to-end)")
    p.add_argument("--out", type=Path, default=None,
                   help="where the fitted models are saved (default: CACHE/models)")
    p.add_argument("--prepare-only", action="store_true", help="only write the data folder")
    p.add_argument("--json", type=Path, default=None, help="also write everything as JSON (atomic)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests of the harness
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.factors < 1 or (args.iterations is not None and args.iterations < 1):
        p.error("--factors and --iterations must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    overrides = parse_overrides(args.param or [])
    params = {} if args.prepare_only else {name: model_params(name, args, overrides) for name in models}
    cache = _mkdir((args.cache or default_cache("end-to-end")).expanduser().resolve())
    log_root = Path(tempfile.mkdtemp(prefix="runs-", dir=cache))
    out_root = _mkdir((args.out or cache / "models").expanduser().resolve())
    env = environment({"args": {k: (os.fspath(v) if isinstance(v, Path) else v)
                                for k, v in vars(args).items() if k != "child"}})
    release = ensure_release(cache, args.size, tiny=args.tiny, timeout=args.timeout, log_root=log_root)
    rows: list[dict[str, Any]] = []

    def save() -> None:
        if args.json is not None:
            write_json_atomic(args.json, {"benchmark": "end-to-end", "environment": env,
                                          "data": release, "results": rows,
                                          "logs": os.fspath(log_root)})

    save()
    folder = release_folder(cache, args.size, args.tiny)
    for name in models if not args.prepare_only else []:
        log(f"{name}: load -> split -> fit -> evaluate -> save ...")
        row = run_model(name, params[name], folder, args, out_root, log_root)
        rows.append(row)
        log(f"{name}: {row['status']}" + ("" if row["status"] == "ok" else f": {row.get('error')}"))
        save()
    print(markdown(release, rows, args))
    log(f"child logs and specs: {log_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
