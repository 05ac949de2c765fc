#!/usr/bin/env python
"""Speed and memory at scale: cfrec against implicit and Surprise on the same synthetic arrays.

For each size (``ml-10m`` and ``ml-25m`` by default; ``ml-1m`` for quick runs) the script draws
``synthetic_like(size, seed=0)`` once and caches its arrays (int32 user and item indices,
float32 ratings) as ``.npy`` files under ``--cache``. Every measurement then runs in its own
child process, which loads those arrays, builds its library's input and fits one model, so
that each peak RSS is that fit's alone (the child's ``VmHWM``; sampled from ``/proc`` by the
parent when the child is killed before it can report):

* cfrec models through the public API (``make_model(name, **params).fit(data)``): ``mf``
  (BiasedMF, ``n_factors=100``), ``svdpp`` and ``neumf`` (their defaults), ``als`` and ``ials``
  (``n_factors=64``; iALS on all ratings), ``baseline``, ``pop``, or any registered model;
* ``implicit-als``: implicit's ``AlternatingLeastSquares(factors=64)`` on the users x items CSR
  whose values are cfrec iALS' confidences ``c = 1 + alpha * r`` (``log`` confidence: ``1 +
  alpha * log(1 + r / eps)``) for every rating, with ``regularization`` = cfrec iALS' ``reg``:
  both minimise the same objective; implicit solves it with its default conjugate gradient;
* ``implicit-bpr``: implicit's ``implicit.cpu.bpr.BayesianPersonalizedRanking(factors=128)`` on
  the users x items CSR of cfrec BPR's positives (ratings ``>=`` its ``threshold``, as ones): the
  same pairs cfrec ``bpr`` (``n_factors=128``) samples, one triple per positive an epoch;
* ``surprise-svd``: Surprise's ``SVD(n_factors=100)`` on ``Dataset.load_from_df`` of the same
  (user, item, rating) rows.

cfrec's compiled kernels are loaded before each timed fit (``cfrec.engines.compiled.warm_up``, its
seconds reported as ``warm_up_seconds``): numba's start is paid once per process, as by a user's
later fits; ``--cold`` counts it in the fit instead (a process's first fit). Each fit's CPU
seconds are recorded too (``fit_cpu_seconds``; with ``--long`` their slope and intercept), the
figure to compare on a loaded machine.

With ``--long N`` every model is fitted a second time, in its own process, with its epoch or
iteration count set to ``N``: the cost of an epoch is then the slope between the two fits'
wall-clock ``fit`` seconds and the set-up (everything a fit pays once) the intercept, each
library measured the same way whatever it reports itself.

Per model: seconds per epoch or iteration (cfrec: the ``seconds`` of ``history_``; implicit:
its per-iteration callback; Surprise: ``(fit with n epochs - fit with 0 epochs) / n``, i.e.
without its factor initialisation, its global mean being computed beforehand, with its
trainset), full ``fit`` seconds, the seconds to load the arrays and to
build the library's input (Surprise's trainset included; both excluded from fit seconds), RSS
before ``fit`` and the peak RSS of the whole process (which does include the loaded data). A
model that fails, runs past ``--timeout`` or is killed (out of memory) becomes a row saying so.

Usage::

    python benchmarks/scale.py                                   # ml-10m and ml-25m, every model
    python benchmarks/scale.py --sizes ml-10m --epochs 1 --iterations 1 --json scale.json
    python benchmarks/scale.py --sizes ml-1m --models mf,surprise-svd,ials,implicit-als
    python benchmarks/scale.py --param svdpp.n_factors=100 --threads 1
    python benchmarks/scale.py --sizes ml-10m --models bpr,implicit-bpr --epochs 1 --long 4

Threading is left at each library's default unless ``--threads N`` is given (then
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` are set for the children,
cfrec's children call ``torch.set_num_threads(N)`` and implicit gets ``num_threads=N``).
implicit and scikit-surprise are benchmark-only dependencies (``pip install -e ".[bench]"``).
The Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.fspath(Path(__file__).resolve().parent))
from _bench_util import (  # noqa: E402  (the helper module sits next to this script)
    GB,
    current_rss,
    default_cache,
    environment,
    fmt_gb,
    fmt_seconds,
    markdown_table,
    peak_rss,
    read_json,
    run_child,
    write_json_atomic,
)

SCRIPT = Path(__file__).resolve()
SIZES = ("ml-1m", "ml-10m", "ml-25m")
DEFAULT_SIZES = ("ml-10m", "ml-25m")
PEERS = ("implicit-als", "implicit-bpr", "surprise-svd")
#: Run order: each cfrec model next to the peer it is compared with, so load changes hit both.
DEFAULT_MODELS = ("mf", "surprise-svd", "ials", "implicit-als", "bpr", "implicit-bpr", "als", "svdpp",
                  "neumf", "baseline", "pop")
#: Hyperparameters the issue's comparisons fix; everything else stays at the model's default.
CFREC_PARAMS: dict[str, dict[str, Any]] = {"mf": {"n_factors": 100}, "als": {"n_factors": 64},
                                           "ials": {"n_factors": 64}, "bpr": {"n_factors": 128}}
PEER_PARAMS: dict[str, dict[str, Any]] = {"implicit-als": {"factors": 64}, "implicit-bpr": {"factors": 128},
                                          "surprise-svd": {"n_factors": 100}}
EPOCH_PARAMS = ("epochs", "n_epochs", "max_epochs")
ITERATION_PARAMS = ("iterations", "n_iterations", "n_iter", "max_iter")
#: Hidden --tiny sizes, for tests of the harness itself (structure, not speed).
TINY = {"n_users": 300, "n_items": 200, "n_ratings": 6000}
SEED = 0


# ====================================================================== data cache
def dataset_dir(cache: Path, size: str, tiny: bool) -> Path:
    return cache / f"synthetic-{size}-seed{SEED}{'-tiny' if tiny else ''}"


def ensure_dataset(cache: Path, size: str, *, tiny: bool, timeout: float | None) -> dict[str, Any]:
    """Generate and cache the arrays of ``synthetic_like(size, seed=0)`` (in a child process,
    so that this process stays small); return the cached metadata."""
    folder = dataset_dir(cache, size, tiny)
    meta = read_json(folder / "meta.json")
    if meta is not None and all((folder / f"{a}.npy").is_file() for a in ("users", "items", "ratings")):
        return dict(meta, cached=True)
    log(f"[{size}] generating synthetic_like({size!r}, seed={SEED}) into {folder}")
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache))
    spec = {"kind": "generate", "size": size, "tiny": tiny, "folder": os.fspath(work / "data"),
            "result": os.fspath(work / "result.json")}
    run = run_child(SCRIPT, spec, workdir=work, timeout=timeout)
    result = read_json(work / "result.json")
    if run.status != "ok" or not result or result.get("status") != "ok":
        why = (result or {}).get("error") or run.describe()
        raise SystemExit(f"generating synthetic {size} failed: {why}")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(work / "data", folder)
    shutil.rmtree(work, ignore_errors=True)
    meta = dict(result["meta"], generation_peak_rss=result.get("peak_rss_self", run.peak_rss))
    write_json_atomic(folder / "meta.json", meta)
    return dict(meta, cached=False)


def child_generate(spec: dict[str, Any]) -> dict[str, Any]:
    from cfrec.data import synthetic_like

    start = time.perf_counter()
    overrides = TINY if spec["tiny"] else {}
    data = synthetic_like(spec["size"], seed=SEED, **overrides)
    seconds = time.perf_counter() - start
    folder = Path(spec["folder"])
    folder.mkdir(parents=True)
    np.save(folder / "users.npy", data.users)
    np.save(folder / "items.npy", data.items)
    np.save(folder / "ratings.npy", data.ratings)
    values = np.unique(data.ratings)
    meta = {"size": spec["size"], "tiny": spec["tiny"], "seed": SEED, "name": data.name,
            "n_ratings": len(data), "n_users": data.n_users, "n_items": data.n_items,
            "rating_scale": list(data.rating_scale), "rating_values": values.tolist(),
            "generation_seconds": seconds,
            "note": "raw user id = index + 1, raw item id = index + 1 (synthetic vocabularies)"}
    return {"meta": meta, "peak_rss_self": peak_rss()}


def load_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.load(folder / "users.npy"), np.load(folder / "items.npy"),
            np.load(folder / "ratings.npy"))


# ====================================================================== child: one fit
def child_cfrec(spec: dict[str, Any]) -> dict[str, Any]:
    """Fit one cfrec model on the cached arrays through the public API."""
    t0 = time.perf_counter()
    users, items, ratings = load_arrays(Path(spec["data"]))
    load_s = time.perf_counter() - t0
    import torch

    from cfrec.data import IdMap, Interactions
    from cfrec.models import make_model

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    meta = spec["meta"]
    t0 = time.perf_counter()
    data = Interactions(
        users=users, items=items, ratings=ratings,
        timestamps=np.zeros(len(users), dtype=np.int64),
        user_map=IdMap.from_sorted_unique(np.arange(1, meta["n_users"] + 1, dtype=np.int64)),
        item_map=IdMap.from_sorted_unique(np.arange(1, meta["n_items"] + 1, dtype=np.int64)),
        rating_scale=(float(meta["rating_scale"][0]), float(meta["rating_scale"][1])),
        name=meta["name"],
    )
    build_s = time.perf_counter() - t0
    model = make_model(spec["model"], **spec["params"])
    warm_s = None
    if not spec.get("cold"):  # numba's start and the kernels' loads: once per process, not the fit's
        from cfrec.engines.compiled import warm_up

        t0 = time.perf_counter()
        warm_up()
        warm_s = time.perf_counter() - t0
    rss_before = current_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(data)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    history = list(getattr(model, "history_", None) or [])
    epochs = [float(h["seconds"]) for h in history if isinstance(h, dict) and "seconds" in h]
    return {"load_seconds": load_s, "build_seconds": build_s, "fit_seconds": fit_s,
            "fit_cpu_seconds": fit_cpu, "warm_up_seconds": warm_s,
            "epoch_seconds": epochs, "epochs_run": len(history),
            "rss_before_fit": rss_before, "peak_rss_self": peak_rss(),
            "torch_threads": torch.get_num_threads(), "params": model.get_params()}


def child_implicit(spec: dict[str, Any]) -> dict[str, Any]:
    """implicit's ALS on the users x items CSR of cfrec iALS' confidences."""
    t0 = time.perf_counter()
    users, items, ratings = load_arrays(Path(spec["data"]))
    load_s = time.perf_counter() - t0
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares

    conf = spec["confidence"]
    t0 = time.perf_counter()
    r = ratings.astype(np.float32)
    if conf["kind"] == "log":
        values = 1.0 + conf["alpha"] * np.log1p(r / conf["eps"])
    else:
        values = 1.0 + conf["alpha"] * r
    meta = spec["meta"]
    user_items = sp.csr_matrix((values.astype(np.float32), (users, items)),
                               shape=(meta["n_users"], meta["n_items"]))
    del r, values, users, items, ratings
    build_s = time.perf_counter() - t0
    params = dict(spec["params"])
    if spec.get("threads"):
        params["num_threads"] = int(spec["threads"])
    epochs: list[float] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = AlternatingLeastSquares(**params)
        rss_before = current_rss()
        t0 = time.perf_counter()
        model.fit(user_items, show_progress=False,
                  callback=lambda _it, elapsed, _loss: epochs.append(float(elapsed)))
        fit_s = time.perf_counter() - t0
    notes = sorted({str(w.message).splitlines()[0][:200] for w in caught})
    return {"load_seconds": load_s, "build_seconds": build_s, "fit_seconds": fit_s,
            "epoch_seconds": epochs, "epochs_run": len(epochs), "rss_before_fit": rss_before,
            "peak_rss_self": peak_rss(), "params": params, "warnings": notes,
            "implementation": f"{type(model).__module__}.{type(model).__name__}",
            "input": "users x items CSR, values c = 1 + alpha*f(r) for every rating"}


def child_implicit_bpr(spec: dict[str, Any]) -> dict[str, Any]:
    """implicit's BPR on the users x items CSR of cfrec BPR's positives (ones)."""
    t0 = time.perf_counter()
    users, items, ratings = load_arrays(Path(spec["data"]))
    load_s = time.perf_counter() - t0
    import scipy.sparse as sp
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    t0 = time.perf_counter()
    threshold = spec["threshold"]
    keep = np.ones(len(ratings), dtype=bool) if threshold is None else ratings >= threshold
    meta = spec["meta"]
    user_items = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (users[keep], items[keep])),
                               shape=(meta["n_users"], meta["n_items"]))
    user_items.data[:] = 1.0  # a pair rated twice is one positive
    del users, items, ratings, keep
    build_s = time.perf_counter() - t0
    params = dict(spec["params"])
    if spec.get("threads"):
        params["num_threads"] = int(spec["threads"])
    epochs: list[float] = []
    model = BayesianPersonalizedRanking(**params)
    rss_before = current_rss()
    t0 = time.perf_counter()
    model.fit(user_items, show_progress=False, callback=lambda *a: epochs.append(float(a[1])))
    fit_s = time.perf_counter() - t0
    return {"load_seconds": load_s, "build_seconds": build_s, "fit_seconds": fit_s,
            "epoch_seconds": epochs, "epochs_run": len(epochs), "rss_before_fit": rss_before,
            "peak_rss_self": peak_rss(), "params": params, "positives": int(user_items.nnz),
            "implementation": f"{type(model).__module__}.{type(model).__name__}",
            "input": "users x items CSR of the ratings >= cfrec BPR's threshold, as ones"}


def child_surprise(spec: dict[str, Any]) -> dict[str, Any]:
    """Surprise SVD; its epoch time excludes the factor initialisation (a 0-epoch fit)."""
    t0 = time.perf_counter()
    users, items, ratings = load_arrays(Path(spec["data"]))
    load_s = time.perf_counter() - t0
    import pandas as pd
    import surprise

    meta = spec["meta"]
    t0 = time.perf_counter()
    frame = pd.DataFrame({"user": users.astype(np.int64) + 1, "item": items.astype(np.int64) + 1,
                          "rating": ratings.astype(np.float64)})
    del users, items, ratings
    reader = surprise.Reader(rating_scale=tuple(meta["rating_scale"]))
    trainset = surprise.Dataset.load_from_df(frame, reader).build_full_trainset()
    del frame
    trainset_s = time.perf_counter() - t0
    # Surprise computes the global mean lazily, in Python, on the first fit, and caches it on the
    # trainset; computing it here keeps it out of both fits below (else the 0-epoch fit would
    # absorb it and the difference would undercount the epochs). It is reported on its own.
    t0 = time.perf_counter()
    _ = trainset.global_mean
    mean_s = time.perf_counter() - t0
    params = dict(spec["params"])
    n_epochs = int(params.get("n_epochs", 20))
    rss_before = current_rss()
    t0 = time.perf_counter()
    surprise.SVD(**dict(params, n_epochs=0)).fit(trainset)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    surprise.SVD(**params).fit(trainset)
    fit_s = time.perf_counter() - t0
    per = (fit_s - init_s) / n_epochs if n_epochs else None
    return {"load_seconds": load_s, "build_seconds": trainset_s + mean_s,
            "trainset_seconds": trainset_s, "global_mean_seconds": mean_s,
            "fit_seconds": fit_s, "init_seconds": init_s,
            "epoch_seconds": [] if per is None else [per] * n_epochs, "epochs_run": n_epochs,
            "rss_before_fit": rss_before, "peak_rss_self": peak_rss(), "params": params,
            "epoch_method": "(fit with n_epochs - fit with 0 epochs) / n_epochs, global mean "
                            "computed beforehand"}


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    runners = {"generate": child_generate, "cfrec": child_cfrec, "implicit": child_implicit,
               "implicit-bpr": child_implicit_bpr, "surprise": child_surprise}
    try:
        out = {"status": "ok", **runners[spec["kind"]](spec)}
    except MemoryError:
        out = {"status": "error", "error": "out of memory (MemoryError)"}
    except Exception as exc:  # a failed fit is a result row, not a crash of the benchmark
        traceback.print_exc()
        out = {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    write_json_atomic(spec["result"], out)
    return 0


# ====================================================================== parent: plan and run
def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["svdpp.n_factors=100", ...]`` -> ``{"svdpp": {"n_factors": 100}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, value = item.partition("=")
        model, dot, key = head.partition(".")
        if not (sep and dot and model and key):
            raise SystemExit(f"--param {item!r}: expected MODEL.KEY=VALUE, e.g. svdpp.n_factors=100")
        out.setdefault(model.strip(), {})[key.strip()] = parse_value(value.strip())
    return out


def bound_params(defaults: dict[str, Any], epochs: int, iterations: int) -> tuple[dict[str, Any], str | None]:
    """The epoch- or iteration-count parameter of a model set to the run's bound."""
    for key in EPOCH_PARAMS:
        if key in defaults:
            return {key: epochs}, key
    for key in ITERATION_PARAMS:
        if key in defaults:
            return {key: iterations}, key
    return {}, None


def plan(models: Sequence[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One entry per measurement: library, model key, label, params (validated here)."""
    from cfrec.models import make_model, model_names

    overrides = parse_overrides(args.param or [])
    known = set(model_names()) | set(PEERS)
    unknown = [m for m in [*models, *overrides] if m not in known]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from "
                         f"{', '.join([*model_names(), *PEERS])}")
    ials = make_model("ials", **{**CFREC_PARAMS["ials"], **overrides.get("ials", {})}).get_params()
    entries = []
    for name in models:
        if name == "implicit-als":
            params = {**PEER_PARAMS[name], "regularization": float(ials["reg"]), "alpha": 1.0,
                      "iterations": args.iterations, "random_state": SEED,
                      **overrides.get(name, {})}
            conf = {"kind": ials.get("confidence", "linear"), "alpha": float(ials.get("alpha", 1.0)),
                    "eps": float(ials.get("eps", 1.0))}
            note = None if not ials.get("weighted_reg") else "cfrec iALS uses weighted_reg: objectives differ"
            entries.append({"library": "implicit", "model": name, "label": "AlternatingLeastSquares",
                            "params": params, "confidence": conf, "bound": "iterations",
                            "factors": params["factors"], "note": note})
        elif name == "implicit-bpr":
            bpr = make_model("bpr", **{**CFREC_PARAMS["bpr"], **overrides.get("bpr", {})}).get_params()
            params = {**PEER_PARAMS[name], "iterations": args.epochs, "random_state": SEED,
                      **overrides.get(name, {})}
            entries.append({"library": "implicit", "kind": "implicit-bpr", "model": name, "label": "BayesianPersonalizedRanking",
                            "params": params, "threshold": bpr["threshold"], "bound": "iterations",
                            "factors": params["factors"], "note": None})
        elif name == "surprise-svd":
            params = {**PEER_PARAMS[name], "n_epochs": args.epochs, "random_state": SEED,
                      **overrides.get(name, {})}
            entries.append({"library": "surprise", "model": name, "label": "SVD", "params": params,
                            "bound": "n_epochs", "factors": params["n_factors"], "note": None})
        else:
            defaults = make_model(name).get_params()
            bound, key = bound_params(defaults, args.epochs, args.iterations)
            params = {**CFREC_PARAMS.get(name, {}), **bound}
            if args.device is not None and "device" in defaults:
                params["device"] = args.device
            params.update(overrides.get(name, {}))
            entry = {"library": "cfrec", "model": name, "params": params, "bound": key,
                     "factors": params.get("n_factors", defaults.get("n_factors")), "note": None}
            try:
                entry["label"] = type(make_model(name, **params)).__name__
            except Exception as exc:  # bad hyperparameters: a row that says so
                entry["label"] = name
                entry["invalid"] = f"{type(exc).__name__}: {exc}"
            entries.append(entry)
    return entries


def measure(entry: dict[str, Any], size: str, meta: dict[str, Any], data_dir: Path,
            args: argparse.Namespace, work_root: Path) -> dict[str, Any]:
    """Run one entry in a child process; return its result row."""
    row: dict[str, Any] = {"size": size, "library": entry["library"], "model": entry["model"],
                           "label": entry["label"], "factors": entry["factors"],
                           "bound_param": entry["bound"], "requested_params": entry["params"],
                           "note": entry.get("note")}
    if "invalid" in entry:
        return dict(row, status="error", error=entry["invalid"])
    work = work_root / f"{size}-{entry['model']}"
    spec = {"kind": entry.get("kind", entry["library"]), "model": entry["model"], "params": entry["params"],
            "data": os.fspath(data_dir), "meta": meta, "threads": args.threads, "cold": args.cold,
            "confidence": entry.get("confidence"), "threshold": entry.get("threshold"),
            "result": os.fspath(work / "result.json")}
    run = run_child(SCRIPT, spec, workdir=work, timeout=args.timeout, threads=args.threads)
    result = read_json(work / "result.json") or {}
    # the child's own VmHWM when it reported, else the last one sampled while it ran
    row.update({"wall_seconds": run.seconds, "peak_rss": result.get("peak_rss_self", run.peak_rss),
                "peak_rss_sampled": run.peak_rss, "rusage_maxrss_upper_bound": run.rusage_maxrss,
                "returncode": run.returncode})
    if run.status != "ok":
        return dict(row, status=run.status, error=run.describe())
    if result.get("status") != "ok":
        return dict(row, status="error", error=result.get("error", "no result written"))
    epochs = result.get("epoch_seconds") or []
    row.update({key: value for key, value in result.items() if key not in ("status", "peak_rss_self")})
    row["status"] = "ok"
    row["seconds_per_epoch"] = float(np.mean(epochs)) if epochs else None
    return row


def add_long_fit(row: dict[str, Any], entry: dict[str, Any], size: str, meta: dict[str, Any], data_dir: Path,
                 args: argparse.Namespace, work_root: Path) -> None:
    """Fit ``entry`` again with its epoch/iteration count set to ``--long``; add the slope
    (seconds an epoch) and intercept (set-up seconds) of fit seconds over the count."""
    short = int(entry["params"][entry["bound"]])
    if args.long <= short:
        return
    longer = dict(entry, model=entry["model"], params={**entry["params"], entry["bound"]: args.long})
    log(f"[{size}] {entry['model']} ({entry['library']}) with {entry['bound']}={args.long} ...")
    other = measure(longer, size, meta, data_dir, args, work_root / "long")
    row["long"] = {"count": args.long, "status": other["status"], "fit_seconds": other.get("fit_seconds"),
                   "fit_cpu_seconds": other.get("fit_cpu_seconds"),
                   "peak_rss": other.get("peak_rss"), "error": other.get("error"),
                   "seconds_per_epoch": other.get("seconds_per_epoch")}
    if other["status"] == "ok":
        slope = (float(other["fit_seconds"]) - float(row["fit_seconds"])) / (args.long - short)
        row["slope_seconds_per_epoch"] = slope
        row["setup_seconds"] = float(row["fit_seconds"]) - short * slope
        if row.get("fit_cpu_seconds") is not None and other.get("fit_cpu_seconds") is not None:
            cpu_slope = (float(other["fit_cpu_seconds"]) - float(row["fit_cpu_seconds"])) / (args.long - short)
            row["slope_cpu_seconds_per_epoch"] = cpu_slope
            row["setup_cpu_seconds"] = float(row["fit_cpu_seconds"]) - short * cpu_slope


# ====================================================================== reuse
def load_previous(path: Path, sizes: Sequence[str]) -> dict[str, Any]:
    """Rows of an earlier ``--json`` file for these sizes (this run's rows replace some)."""
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("benchmark") != "scale":
        raise SystemExit(f"--reuse {path}: not a JSON file written by scale.py --json")
    rows = [dict(r, reused_from=os.fspath(path)) for r in doc.get("results", [])
            if r.get("size") in sizes]
    return {"rows": rows, "datasets": doc.get("datasets", {}),
            "environment": doc.get("environment")}


def check_same_data(old: dict[str, Any] | None, new: dict[str, Any], size: str) -> None:
    """Refuse to mix rows measured on different arrays."""
    keys = ("n_ratings", "n_users", "n_items", "seed", "tiny")
    if old is not None and any(old.get(k) != new.get(k) for k in keys):
        raise SystemExit(f"--reuse: the earlier {size} rows were measured on other data "
                         f"({ {k: old.get(k) for k in keys} } vs { {k: new.get(k) for k in keys} })")


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The earlier rows in their order, each replaced by this run's row for the same size and
    model when there is one; this run's other rows after them."""
    fresh = {(r["size"], r["model"]): r for r in new}
    out = [fresh.pop((r["size"], r["model"]), r) for r in old]
    return out + [r for r in new if (r["size"], r["model"]) in fresh]


# ====================================================================== report
def find(rows: list[dict[str, Any]], size: str, model: str) -> dict[str, Any] | None:
    for row in rows:
        if row["size"] == size and row["model"] == model and row.get("status") == "ok":
            return row
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a / b


def ratios(rows: list[dict[str, Any]], size: str) -> list[dict[str, Any]]:
    """The comparisons the scale issue sets targets for (None where a side is missing)."""
    def spe(model: str) -> float | None:
        row = find(rows, size, model)
        return None if row is None else row.get("seconds_per_epoch")

    def rss(model: str) -> float | None:
        row = find(rows, size, model)
        return None if row is None else row.get("peak_rss")

    out = [
        {"comparison": "BiasedMF s/epoch ÷ Surprise SVD s/epoch", "value": ratio(spe("mf"), spe("surprise-svd")),
         "target": 1.0, "kind": "ratio"},
        {"comparison": "iALS s/iteration ÷ implicit ALS s/iteration",
         "value": ratio(spe("ials"), spe("implicit-als")), "target": 1.0, "kind": "ratio"},
        {"comparison": "ALS s/iteration ÷ implicit ALS s/iteration",
         "value": ratio(spe("als"), spe("implicit-als")), "target": 1.5, "kind": "ratio"},
        {"comparison": "SVD++ s/epoch ÷ BiasedMF s/epoch", "value": ratio(spe("svdpp"), spe("mf")),
         "target": 2.0, "kind": "ratio"},
        {"comparison": "iALS peak RSS ÷ implicit ALS peak RSS", "value": ratio(rss("ials"), rss("implicit-als")),
         "target": None, "kind": "ratio"},
    ]
    a, b = rss("ials"), rss("implicit-als")
    out.append({"comparison": "iALS peak RSS − implicit ALS peak RSS (GB)",
                "value": None if a is None or b is None else (a - b) / GB, "target": 0.3, "kind": "GB"})
    def slope(model: str) -> float | None:
        row = find(rows, size, model)
        return None if row is None else row.get("slope_seconds_per_epoch", row.get("seconds_per_epoch"))

    out.insert(2, {"comparison": "BPR s/epoch ÷ implicit BPR s/epoch (slopes with --long)",
                   "value": ratio(slope("bpr"), slope("implicit-bpr")), "target": 1.0, "kind": "ratio"})
    neumf = spe("neumf")
    out.append({"comparison": "NeuMF s/epoch (reported, no target)", "value": neumf, "target": None,
                "kind": "seconds"})
    return out


def _epochs_cell(row: dict[str, Any]) -> str:
    """Epochs or iterations run: from the history, else the bound set (model keeps none)."""
    bound = row.get("bound_param")
    if not bound:
        return "–"
    if row.get("epochs_run"):
        return str(row["epochs_run"])
    return f"{row.get('requested_params', {}).get(bound, '–')} (no history)"


def markdown(rows: list[dict[str, Any]], datasets: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    parts = []
    for size, meta in datasets.items():
        parts.append(f"### synthetic {size}{' (tiny)' if meta.get('tiny') else ''}: "
                     f"{meta['n_ratings']:,} ratings, {meta['n_users']:,} users, "
                     f"{meta['n_items']:,} items\n")
        table = []
        for row in (r for r in rows if r["size"] == size):
            ok = row.get("status") == "ok"
            epochs = row.get("epoch_seconds") or []
            per = fmt_seconds(row.get("seconds_per_epoch")) if epochs else "–"
            label = row["label"] if row["library"] == "cfrec" else f"{row['label']} ({row['library']})"
            table.append([
                label + (" †" if row.get("reused_from") else ""),
                row["model"], row.get("factors") or "–",
                _epochs_cell(row) if ok else "–", per,
                fmt_seconds(row.get("fit_seconds")) if ok else "–",
                fmt_seconds(row.get("load_seconds")) if ok else "–",
                fmt_seconds(row.get("build_seconds")) if ok else "–",
                fmt_gb(row.get("rss_before_fit")) if ok else "–",
                fmt_gb(row.get("peak_rss")),
                "ok" if ok else f"**{row.get('status')}**: {row.get('error', '')}",
            ])
        parts.append(markdown_table(
            ["model", "name", "factors", "epochs / iters", "s / epoch or iter", "fit s", "load s",
             "input build s", "RSS before fit GB", "peak RSS GB", "status"],
            table, ["l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "l"]))
        sloped = [r for r in rows if r["size"] == size and r.get("slope_seconds_per_epoch") is not None
                  and r.get("long")]
        if sloped:
            parts.append("\nFits of two lengths (each in its own process): s / epoch = the slope of fit "
                         "seconds over the epoch or iteration count, set-up = the intercept.\n")
            parts.append(markdown_table(
                ["model", "counts", "fit s", "s / epoch or iter (slope)", "set-up s (intercept)",
                 "set-up CPU s (intercept)", "s / epoch or iter (own timer, longer fit)", "peak RSS GB"],
                [[r["label"] if r["library"] == "cfrec" else f"{r['label']} ({r['library']})",
                  f"{r['requested_params'][r['bound_param']]} / {r['long']['count']}",
                  f"{fmt_seconds(r['fit_seconds'])} / {fmt_seconds(r['long']['fit_seconds'])}",
                  fmt_seconds(r["slope_seconds_per_epoch"]), fmt_seconds(r["setup_seconds"]),
                  fmt_seconds(r.get("setup_cpu_seconds")), fmt_seconds(r["long"].get("seconds_per_epoch")),
                  f"{fmt_gb(r.get('peak_rss'))} / {fmt_gb(r['long'].get('peak_rss'))}"] for r in sloped],
                ["l", "r", "r", "r", "r", "r", "r", "r"]))
        comp = []
        for item in ratios(rows, size):
            value, target = item["value"], item["target"]
            if item["kind"] == "GB":
                shown, goal = ("–" if value is None else f"{value:+.2f}"), f"≤ +{target}"
            elif item["kind"] == "seconds":
                shown, goal = fmt_seconds(value), "–"
            else:
                shown = "–" if value is None else f"{value:.2f}"
                goal = "–" if target is None else f"≤ {target:g}"
            met = "–" if value is None or target is None else ("yes" if value <= target else "no")
            comp.append([item["comparison"], shown, goal, met])
        parts.append("\n" + markdown_table(["comparison", "value", "issue's target", "met"], comp,
                                           ["l", "r", "r", "l"]) + "\n")
    threads = f"{args.threads} (set for every child)" if args.threads else "library defaults (nothing set)"
    reused = sorted({r["reused_from"] for r in rows if r.get("reused_from")})
    if reused:
        parts.append(f"† measured by an earlier run ({', '.join(f'`{p}`' for p in reused)}) and "
                     "kept with `--reuse`; the other rows by this run.\n")
    parts.append(
        "One fit per child process. *s / epoch or iter*: mean of cfrec's `history_` seconds, of "
        "implicit's per-iteration callback, and for Surprise `(fit with n epochs - fit with 0 "
        "epochs) / n`. *fit s*: wall-clock `fit` (no data loading). *load s* / *input build s*: "
        "reading the cached arrays and building each library's input (cfrec `Interactions`, "
        "implicit's CSR of confidences `1 + alpha*r`, Surprise's `load_from_df` + "
        "`build_full_trainset` + its global mean, which it would otherwise compute lazily in "
        "its first fit), excluded from fit s. *peak RSS*: the whole child process "
        "(its `VmHWM`), loaded data and imports included. "
        + ("numba's start and its kernels' loads are paid in the fit (`--cold`: a process's first fit). "
           if args.cold else
           "cfrec's compiled kernels are loaded before the timed fit (`cfrec.engines.compiled.warm_up`, "
           "once per process, as a user's later fits find them; `--cold` counts them in the fit). ")
        + f"Threads: {threads}; "
        f"{os.cpu_count()} CPUs. Timings depend on the machine's load.")
    return "\n".join(parts)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                   help=f"comma-separated synthetic sizes among {', '.join(SIZES)} (default: %(default)s)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated cfrec model names and peers implicit-als, implicit-bpr, surprise-svd "
                        "(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs for epoch-based models (mf, svdpp, neumf, bpr, Surprise SVD, implicit BPR; default 1)")
    p.add_argument("--iterations", type=int, default=2,
                   help="iterations for ALS-type models (als, ials, baseline, implicit; default 2)")
    p.add_argument("--long", type=int, default=None, metavar="N",
                   help="also fit every model with N epochs/iterations, each in its own process, and "
                        "report the slope (s an epoch) and intercept (set-up s) of the two fits")
    p.add_argument("--param", action="append", metavar="MODEL.KEY=VALUE",
                   help="override a hyperparameter, e.g. svdpp.n_factors=100 (repeatable; JSON values)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every library (default: leave each library's default)")
    p.add_argument("--device", default=None, help="cfrec device for models that take one (cpu, cuda, auto)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds per measurement before it is killed (default %(default)s)")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder for the cached synthetic arrays and child logs "
                        "(default: ~/.cache/cfrec-bench/scale)")
    p.add_argument("--json", type=Path, default=None, help="also write everything as JSON (atomic)")
    p.add_argument("--reuse", type=Path, default=None, metavar="JSON",
                   help="keep the rows of an earlier --json file (same sizes and data) for the "
                        "models this run does not measure, marked as such: to redo one model "
                        "of a long run")
    p.add_argument("--cold", action="store_true",
                   help="count numba's start and the compiled kernels' loads in cfrec's fit (a process's "
                        "first fit); by default they are paid before it, once per process")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests of the harness
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.long is not None and args.long < 2:
        p.error("--long must be at least 2")
    if args.epochs < 1 or args.iterations < 1:
        p.error("--epochs and --iterations must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes:
        raise SystemExit(f"--sizes: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(SIZES)}")
    models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    entries = plan(models, args)
    cache = (args.cache or default_cache("scale")).expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work_root = Path(tempfile.mkdtemp(prefix="runs-", dir=cache))
    env = environment({"args": {k: (os.fspath(v) if isinstance(v, Path) else v)
                                for k, v in vars(args).items() if k != "child"}})
    rows: list[dict[str, Any]] = []
    datasets: dict[str, dict[str, Any]] = {}
    previous = load_previous(args.reuse, sizes) if args.reuse else None
    if previous is not None:
        env["reused"] = {"file": os.fspath(args.reuse), "environment": previous["environment"]}

    def merged() -> list[dict[str, Any]]:
        return rows if previous is None else merge_rows(previous["rows"], rows)

    def save() -> None:
        if args.json is not None:
            out = merged()
            write_json_atomic(args.json, {
                "benchmark": "scale", "environment": env, "datasets": datasets, "results": out,
                "ratios": {size: ratios(out, size) for size in datasets},
                "logs": os.fspath(work_root)})

    for size in sizes:
        meta = ensure_dataset(cache, size, tiny=args.tiny, timeout=args.timeout)
        if previous is not None:
            check_same_data(previous["datasets"].get(size), meta, size)
        datasets[size] = meta
        data_dir = dataset_dir(cache, size, args.tiny)
        for entry in entries:
            log(f"[{size}] {entry['model']} ({entry['library']}) ...")
            row = measure(entry, size, meta, data_dir, args, work_root)
            if args.long and row["status"] == "ok" and entry.get("bound"):
                add_long_fit(row, entry, size, meta, data_dir, args, work_root)
            rows.append(row)
            log(f"[{size}] {entry['model']}: {row['status']}"
                + (f", fit {fmt_seconds(row.get('fit_seconds'))} s, "
                   f"{fmt_seconds(row.get('seconds_per_epoch'))} s/epoch, "
                   f"peak {fmt_gb(row.get('peak_rss'))} GB" if row["status"] == "ok"
                   else f": {row.get('error')}"))
            save()
    save()
    print(markdown(merged(), datasets, args))
    log(f"child logs and specs: {work_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
