#!/usr/bin/env python
"""Default threading against one thread: every registered model's fit on ML-100K's ``u1.base``.

Each fit runs in a fresh child process, so no thread pool or cache carries over: once with the
environment as a user has it (cfrec's thread policy chooses; nothing set), once with
``CFREC_NUM_THREADS=1`` (cfrec's own setting, which pins its torch and BLAS work to one thread).
The two settings alternate for ``--repeats`` rounds and each model's median fit seconds are
compared: the ratio default / one thread should be at most 1.1 for every model.

Usage::

    python benchmarks/threads_ml100k.py                       # every model, 3 rounds
    python benchmarks/threads_ml100k.py --models mf,als --repeats 5 --json threads.json

The Markdown table goes to stdout, progress to stderr. Timings depend on the machine's load:
``uptime`` before and after is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD = r"""
import json, sys, time
from cfrec.data import predefined_split
from cfrec.models import make_model
split = predefined_split("u1")
model = make_model(sys.argv[1])
start = time.perf_counter()
model.fit(split.train)
print(json.dumps({"fit_seconds": time.perf_counter() - start}))
"""


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fit_once(model: str, one_thread: bool, timeout: float) -> float:
    env = {k: v for k, v in os.environ.items() if k != "CFREC_NUM_THREADS"}
    if one_thread:
        env["CFREC_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, model], env=env, cwd=tmp, capture_output=True,
                             text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{model} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["fit_seconds"])


def main(argv: list[str] | None = None) -> int:
    from cfrec.models.registry import model_names

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated model names (default: every registered model)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of (default, one thread) fits (default 3)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per fit before it is killed")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if "CFREC_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        print("note: CFREC_NUM_THREADS/OMP_NUM_THREADS are set in this shell; the default runs drop "
              "CFREC_NUM_THREADS only", file=sys.stderr)
    models = args.models.split(",") if args.models else list(model_names())
    before = load_average()
    rows: list[dict[str, Any]] = []
    for name in models:
        times: dict[str, list[float]] = {"default": [], "one": []}
        for _ in range(int(args.repeats)):
            for key, one in (("default", False), ("one", True)):
                times[key].append(fit_once(name, one, args.timeout))
        d, o = statistics.median(times["default"]), statistics.median(times["one"])
        rows.append({"model": name, "default_s": d, "one_thread_s": o, "ratio": d / o, "runs": times})
        print(f"{name}: default {d:.2f} s, one thread {o:.2f} s, ratio {d / o:.2f}", file=sys.stderr, flush=True)
    after = load_average()
    print(f"Fit on ML-100K u1.base, median of {args.repeats} fresh processes per setting, "
          f"{os.cpu_count()} CPUs; load average before {before}, after {after}.\n")
    print("| model | default threads s | CFREC_NUM_THREADS=1 s | ratio | ≤ 1.1 |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['default_s']:.2f} | {r['one_thread_s']:.2f} | {r['ratio']:.2f} | "
              f"{'yes' if r['ratio'] <= 1.1 else 'no'} |")
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps({"load_before": before, "load_after": after, "rows": rows}, indent=2))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
