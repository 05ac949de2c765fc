"""benchmarks/implicit_logs.py on a tiny log: every held-out pair is relevant, the peers and cfrec
are scored by the same code, and the claims are computed from the table."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from cfrec.data import make_synthetic_log
from cfrec.data.split import random_split

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"cfrec_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_held_out_pair_is_relevant() -> None:
    bench = _load("implicit_logs")
    split = random_split(make_synthetic_log(60, 80, 900, seed=1), 0.2, seed=0)
    train = split.train.compact()
    proto = bench.make_protocol(train, split.test)
    assert proto.n_relevant.sum() == len(split.test)  # one row per pair: each one relevant
    # a model scoring exactly the held-out pairs highest is perfect
    truth = np.zeros((train.n_users, train.n_items), dtype=np.float32)
    known = proto.rel_rows, proto.rel_items
    rows_known = proto.rows[known[0]]
    truth[rows_known, known[1]] = 1.0
    perfect = bench.score_ranking(proto, lambda rows: truth[rows])
    assert perfect["recall@10"] > 0.9


def test_claims_from_a_table() -> None:
    bench = _load("implicit_logs")
    table = {"implicit/als-raw": {"ndcg@10": 0.20}, "implicit/als-bm25": {"ndcg@10": 0.25},
             "implicit/bpr": {"ndcg@10": 0.27}, "cfrec/ials": {"ndcg@10": 0.26},
             "cfrec/ease": {"ndcg@10": 0.28}}
    c = bench.claims(table)
    assert c["ials_vs_best_als"]["against"] == "implicit/als-bm25" and c["ials_vs_best_als"]["holds"]
    assert c["best_vs_best"]["cfrec"] == "cfrec/ease" and c["best_vs_best"]["implicit"] == "implicit/bpr"
    assert c["best_vs_best"]["relative"] == pytest.approx(0.28 / 0.27 - 1) and not c["best_vs_best"]["holds"]


def test_runs_end_to_end_on_a_tiny_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("implicit")
    bench = _load("implicit_logs")
    monkeypatch.setattr(bench, "SYNTHETIC", {"n_users": 80, "n_items": 120, "n_pairs": 1500, "seed": 0})
    out = tmp_path / "r.json"
    assert bench.main(["--datasets", "synthetic", "--models", "ials,pop",
                       "--implicit-models", "als-raw,als-bm25", "--json", str(out)]) == 0
    report = json.loads(out.read_text())["datasets"]["synthetic"]
    assert set(report["results"]) == {"implicit/als-raw", "implicit/als-bm25", "cfrec/ials", "cfrec/pop"}
    assert all(0 <= r["ndcg@10"] <= 1 and r["fit_s"] >= 0 for r in report["results"].values())
    assert "ials_vs_best_als" in report["claims"]
    assert "| cfrec/ials |" in capsys.readouterr().out
