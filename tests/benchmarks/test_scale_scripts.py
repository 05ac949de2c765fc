"""The scale benchmark harness, the end-to-end driver and ``write_movielens``.

Structure, not speed: the scripts run end to end on tiny synthetic sets (hidden ``--tiny``),
produce their tables and JSON with the expected fields, turn failures into rows, and the
MovieLens writer round-trips through ``load_dataset``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.data import MOVIELENS, Interactions, load_dataset, make_synthetic, synthetic_like
from cfrec.data import movielens_write as writer_module
from cfrec.data.synthetic import write_movielens
from cfrec.errors import CfrecError, DataError

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"cfrec_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


util = _load("_bench_util")
scale = _load("scale")
e2e = _load("ml25m_end_to_end")


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ====================================================================== write_movielens
@pytest.mark.parametrize(("layout", "half_stars"), [("ml-25m", True), ("ml-latest-small", False),
                                                    ("ml-1m", False), ("ml-10m", True)])
def test_write_movielens_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     layout: str, half_stars: bool) -> None:
    scale_ = (0.5, 5.0) if half_stars else (1.0, 5.0)
    data = make_synthetic(60, 90, 1500, rating_scale=scale_, half_stars=half_stars, seed=3)
    monkeypatch.setattr(writer_module, "_WRITE_CHUNK", 97)  # many chunks, a ragged last one
    folder = write_movielens(data, tmp_path / layout, layout)
    back = load_dataset(folder)

    assert len(back) == len(data)
    np.testing.assert_array_equal(back.raw_users(), data.raw_users())
    np.testing.assert_array_equal(back.raw_items(), data.raw_items())
    np.testing.assert_array_equal(back.ratings, data.ratings)
    np.testing.assert_array_equal(back.timestamps, data.timestamps)
    assert back.rating_scale == MOVIELENS[layout].rating_scale  # the release's, from the folder name
    assert back.name == layout

    csv = layout not in ("ml-1m", "ml-10m")
    ratings_file = folder / ("ratings.csv" if csv else "ratings.dat")
    lines = ratings_file.read_text().splitlines()
    assert len(lines) == len(data) + csv
    if csv:
        assert lines[0] == "userId,movieId,rating,timestamp"
        assert all(len(line.split(",")) == 4 and "." in line.split(",")[2] for line in lines[1:])
    else:
        assert all(line.count("::") == 3 for line in lines)
        assert all("." not in line.split("::")[2] for line in lines if line.split("::")[2] in "12345")

    # metadata: genres and years as written; titles gain MovieLens' " (year)" suffix
    assert data.item_info is not None and back.item_info is not None
    rated = back.item_map.ids
    before, after = data.item_info.loc[rated], back.item_info.loc[rated]
    assert list(after["title"]) == [f"{t} ({y})" for t, y in zip(before["title"], before["year"],
                                                                  strict=True)]
    assert list(after["year"]) == list(before["year"])
    assert [list(g) for g in after["genres"]] == [list(g) for g in before["genres"]]


def test_write_movielens_keeps_a_title_year_and_quotes_commas(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 10], "rating": [4.0, 3.5, 5.0],
                          "timestamp": [100, 200, 300]})
    info = pd.DataFrame({"title": ["American President, The (1995)", 'Say "Hi"'],
                         "year": pd.array([1995, pd.NA], dtype="Int64"),
                         "genres": [["Comedy", "Drama"], []]},
                        index=pd.Index([10, 20], name="item_id"))
    data = Interactions.from_frame(frame, rating_scale=(0.5, 5.0), item_info=info)
    back = load_dataset(write_movielens(data, tmp_path / "ml-25m"))
    assert back.item_info is not None
    assert list(back.item_info["title"]) == ["American President, The (1995)", 'Say "Hi"']
    assert [list(g) for g in back.item_info["genres"]] == [["Comedy", "Drama"], []]
    assert "(no genres listed)" in (tmp_path / "ml-25m" / "movies.csv").read_text()
    np.testing.assert_array_equal(back.ratings, data.ratings)


def test_write_movielens_refuses_what_the_format_cannot_hold(tmp_path: Path) -> None:
    data = make_synthetic(20, 30, 200, rating_scale=(0.5, 5.0), half_stars=True, seed=1)
    with pytest.raises(CfrecError, match="ml-100k"):
        write_movielens(data, tmp_path / "a", "ml-100k")
    with pytest.raises(DataError, match=r"outside the ml-1m scale \[1, 5\]"):
        write_movielens(data, tmp_path / "b", "ml-1m")
    text = pd.DataFrame({"user_id": ["ann", "bob"], "item_id": [1, 2], "rating": [4.0, 3.0]})
    with pytest.raises(DataError, match="user ids are not integers"):
        write_movielens(Interactions.from_frame(text), tmp_path / "c")
    write_movielens(data, tmp_path / "d", "ml-10m")
    with pytest.raises(CfrecError, match="already holds ratings.dat"):
        write_movielens(data, tmp_path / "d", "ml-25m")
    frame = pd.DataFrame({"user_id": [1], "item_id": [7], "rating": [4.0]})
    info = pd.DataFrame({"title": ["A::B"], "genres": [["Drama"]]}, index=pd.Index([7], name="item_id"))
    with pytest.raises(DataError, match="'::'"):
        write_movielens(Interactions.from_frame(frame, item_info=info), tmp_path / "e", "ml-1m")


def test_synthetic_ml25m_preset_rates_in_half_stars() -> None:
    data = synthetic_like("ml-25m", seed=0, n_users=400, n_items=300, n_ratings=20_000)
    values = np.unique(data.ratings)
    assert data.rating_scale == (0.5, 5.0)
    assert set(values.tolist()) <= {x / 2 for x in range(1, 11)}
    assert {0.5, 5.0} <= set(values.tolist()) and np.any(values != np.round(values))


# ====================================================================== shared helpers
def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_run_child_reports_each_way_a_child_can_end(tmp_path: Path) -> None:
    ok = util.run_child(_script(tmp_path, """
        import sys, time
        block = bytearray(96 * 2**20)  # touched: resident
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(0.5)  # held for several samples (the parent samples every 0.05 s)
        print("fine", file=sys.stderr)
    """), {"x": 1}, workdir=tmp_path / "ok", timeout=60)
    assert (ok.status, ok.returncode, ok.describe()) == ("ok", 0, "ok")
    assert ok.peak_rss is not None and ok.peak_rss >= 96 * 2**20
    assert json.loads((tmp_path / "ok" / "spec.json").read_text()) == {"x": 1}
    assert "fine" in ok.stderr_tail

    crashed = util.run_child(_script(tmp_path, "raise SystemExit('bad input here')"), {},
                             workdir=tmp_path / "crash", timeout=60)
    assert crashed.status == "crashed" and "exit 1" in crashed.describe()
    assert "bad input here" in crashed.describe()

    slow = util.run_child(_script(tmp_path, "import time; time.sleep(60)"), {},
                          workdir=tmp_path / "slow", timeout=0.5)
    assert slow.status == "timeout" and slow.seconds < 30 and slow.describe().startswith("timeout")

    killed = util.run_child(_script(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
                            {}, workdir=tmp_path / "kill", timeout=60)
    assert killed.status == "killed" and "SIGKILL" in killed.describe()


def test_peak_rss_is_reset_between_stages() -> None:
    if not util.reset_peak_rss():
        pytest.skip("this OS cannot reset the peak-RSS mark")
    big = np.ones(64 * 2**20 // 8)  # 64 MB, resident
    high = util.peak_rss()
    del big
    assert util.reset_peak_rss()
    assert util.peak_rss() <= high - 32 * 2**20


def test_write_json_atomic_is_strict_json(tmp_path: Path) -> None:
    path = util.write_json_atomic(tmp_path / "out" / "r.json",
                                  {"a": math.nan, "b": (1, np.float32(2.5)), "c": tmp_path})
    assert json.loads(path.read_text()) == {"a": None, "b": [1, 2.5], "c": str(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_markdown_table() -> None:
    text = util.markdown_table(["a", "b"], [[1, None]], ["l", "r"])
    assert text.splitlines() == ["| a | b |", "| --- | ---: |", "| 1 |  |"]


# ====================================================================== scale.py
def _row(model: str, per: float | None, rss: float, status: str = "ok") -> dict[str, object]:
    return {"size": "ml-10m", "library": "x", "model": model, "label": model, "factors": 8,
            "status": status, "seconds_per_epoch": per, "epoch_seconds": [per] if per else [],
            "peak_rss": rss * util.GB, "fit_seconds": per, "error": "boom"}


def test_scale_ratios_and_table() -> None:
    rows = [_row("mf", 10.0, 1.0), _row("surprise-svd", 5.0, 2.0), _row("ials", 3.0, 1.5),
            _row("implicit-als", 6.0, 1.0), _row("svdpp", None, 1.0, status="timeout")]
    got = {r["comparison"]: r["value"] for r in scale.ratios(rows, "ml-10m")}
    assert got["BiasedMF s/epoch ÷ Surprise SVD s/epoch"] == pytest.approx(2.0)
    assert got["iALS s/iteration ÷ implicit ALS s/iteration"] == pytest.approx(0.5)
    assert got["iALS peak RSS − implicit ALS peak RSS (GB)"] == pytest.approx(0.5)
    assert got["iALS peak RSS ÷ implicit ALS peak RSS"] == pytest.approx(1.5)
    assert got["ALS s/iteration ÷ implicit ALS s/iteration"] is None  # no ALS row
    assert got["SVD++ s/epoch ÷ BiasedMF s/epoch"] is None  # SVD++ timed out
    args = scale.parse_args(["--sizes", "ml-10m"])
    meta = {"ml-10m": {"n_ratings": 10, "n_users": 2, "n_items": 3}}
    text = scale.markdown(rows, meta, args)
    assert "| model | name | factors | epochs / iters | s / epoch or iter | fit s |" in text
    assert "**timeout**: boom" in text
    assert "| BiasedMF s/epoch ÷ Surprise SVD s/epoch | 2.00 | ≤ 1 | no |" in text
    assert "| iALS s/iteration ÷ implicit ALS s/iteration | 0.50 | ≤ 1 | yes |" in text


def test_scale_reuse_keeps_earlier_rows_for_models_not_rerun(tmp_path: Path) -> None:
    earlier = [_row("mf", 10.0, 1.0), _row("surprise-svd", 99.0, 2.0), _row("ials", 3.0, 1.0)]
    path = util.write_json_atomic(tmp_path / "old.json", {"benchmark": "scale", "results": earlier,
                                                          "datasets": {}, "environment": {}})
    previous = scale.load_previous(path, ["ml-10m"])
    merged = scale.merge_rows(previous["rows"], [_row("surprise-svd", 5.0, 2.0), _row("pop", 0.1, 1.0)])
    assert [r["model"] for r in merged] == ["mf", "surprise-svd", "ials", "pop"]
    assert [bool(r.get("reused_from")) for r in merged] == [True, False, True, False]
    assert merged[1]["seconds_per_epoch"] == 5.0
    text = scale.markdown(merged, {"ml-10m": {"n_ratings": 1, "n_users": 1, "n_items": 1}},
                          scale.parse_args([]))
    assert "| mf (x) † | mf |" in text and "kept with `--reuse`" in text
    scale.check_same_data({"n_ratings": 5, "seed": 0}, {"n_ratings": 5, "seed": 0}, "ml-10m")
    with pytest.raises(SystemExit, match="other data"):
        scale.check_same_data({"n_ratings": 5}, {"n_ratings": 6}, "ml-10m")


def test_scale_bounds_the_epoch_parameter_each_model_has() -> None:
    assert scale.bound_params({"epochs": 20, "lr": 1}, 1, 2) == ({"epochs": 1}, "epochs")
    assert scale.bound_params({"iterations": 15}, 1, 2) == ({"iterations": 2}, "iterations")
    assert scale.bound_params({"reg_item": 5.0}, 1, 2) == ({}, None)
    assert scale.parse_overrides(["svdpp.n_factors=100", "mf.optimizer=sgd"]) == {
        "svdpp": {"n_factors": 100}, "mf": {"optimizer": "sgd"}}
    with pytest.raises(SystemExit):
        scale.parse_overrides(["n_factors=3"])


@pytest.fixture
def tiny_arrays(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """The cached arrays of the hidden --tiny ml-1m set, as scale.py's generator writes them."""
    out = scale.child_generate({"size": "ml-1m", "tiny": True, "folder": os.fspath(tmp_path / "d")})
    return tmp_path / "d", out["meta"]


def _child(tmp_path: Path, spec: dict[str, object]) -> dict[str, object]:
    spec = dict(spec, result=os.fspath(tmp_path / "result.json"))
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert scale.child_main(os.fspath(tmp_path / "spec.json")) == 0
    return json.loads((tmp_path / "result.json").read_text())


def test_scale_children_measure_each_library(tmp_path: Path, tiny_arrays: tuple[Path, dict]) -> None:
    folder, meta = tiny_arrays
    assert meta["n_ratings"] == scale.TINY["n_ratings"]
    assert np.load(folder / "users.npy").dtype == np.int32
    assert np.load(folder / "ratings.npy").dtype == np.float32
    base = {"data": os.fspath(folder), "meta": meta, "threads": None}
    keys = {"load_seconds", "build_seconds", "fit_seconds", "epoch_seconds", "epochs_run",
            "rss_before_fit", "peak_rss_self", "params"}
    cf = _child(tmp_path, {**base, "kind": "cfrec", "model": "als",
                           "params": {"n_factors": 4, "iterations": 2}})
    assert cf["status"] == "ok" and keys <= set(cf) and cf["epochs_run"] == 2
    assert len(cf["epoch_seconds"]) == 2 and cf["params"]["n_factors"] == 4
    assert cf["warm_up_seconds"] > 0 and 0 < cf["fit_cpu_seconds"]  # the kernels loaded before the fit
    if _have("implicit"):
        peer = _child(tmp_path, {**base, "kind": "implicit", "model": "implicit-als",
                                 "params": {"factors": 4, "iterations": 3, "regularization": 30.0,
                                            "random_state": 0},
                                 "confidence": {"kind": "linear", "alpha": 1.0, "eps": 1.0}})
        assert peer["status"] == "ok" and keys <= set(peer) and len(peer["epoch_seconds"]) == 3
    if _have("surprise"):
        peer = _child(tmp_path, {**base, "kind": "surprise", "model": "surprise-svd",
                                 "params": {"n_factors": 4, "n_epochs": 2, "random_state": 0}})
        assert peer["status"] == "ok" and keys <= set(peer) and peer["epochs_run"] == 2
        assert peer["init_seconds"] >= 0 and len(peer["epoch_seconds"]) == 2


def test_scale_implicit_bpr_child_trains_on_cfrec_bprs_positives(tmp_path: Path,
                                                                  tiny_arrays: tuple[Path, dict]) -> None:
    if not _have("implicit"):
        pytest.skip("implicit is a benchmark extra")
    folder, meta = tiny_arrays
    peer = _child(tmp_path, {"data": os.fspath(folder), "meta": meta, "threads": 1, "kind": "implicit-bpr",
                             "model": "implicit-bpr", "threshold": 4.0,
                             "params": {"factors": 4, "iterations": 2, "random_state": 0}})
    ratings = np.load(folder / "ratings.npy")
    users, items = np.load(folder / "users.npy"), np.load(folder / "items.npy")
    keep = ratings >= 4.0
    assert peer["status"] == "ok" and peer["epochs_run"] == 2
    assert peer["positives"] == len(np.unique(users[keep].astype(np.int64) * meta["n_items"] + items[keep]))


def test_scale_slope_and_intercept_of_two_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--long: a second fit of N epochs; s/epoch is the slope of fit seconds, set-up the intercept."""
    monkeypatch.setattr(scale, "measure", lambda entry, *a: {"status": "ok", "fit_seconds": 20.0,
                                                             "fit_cpu_seconds": 30.0, "peak_rss": 1.0,
                                                             "seconds_per_epoch": 2.5})
    args = scale.parse_args(["--long", "4"])
    row = _row("bpr", 9.0, 1.0)
    row.update(fit_seconds=11.0, fit_cpu_seconds=12.0, bound_param="epochs", requested_params={"epochs": 1})
    scale.add_long_fit(row, {"model": "bpr", "library": "cfrec", "bound": "epochs", "params": {"epochs": 1}},
                       "ml-10m", {}, tmp_path, args, tmp_path)
    assert row["slope_seconds_per_epoch"] == pytest.approx(3.0) and row["setup_seconds"] == pytest.approx(8.0)
    assert row["slope_cpu_seconds_per_epoch"] == pytest.approx(6.0)
    assert row["setup_cpu_seconds"] == pytest.approx(6.0)
    peer = dict(_row("implicit-bpr", 6.0, 1.0), slope_seconds_per_epoch=6.0)
    got = {r["comparison"]: r["value"] for r in scale.ratios([row, peer], "ml-10m")}
    assert got["BPR s/epoch ÷ implicit BPR s/epoch (slopes with --long)"] == pytest.approx(0.5)
    text = scale.markdown([row, peer], {"ml-10m": {"n_ratings": 1, "n_users": 1, "n_items": 1}}, args)
    assert "| bpr (x) | 1 / 4 | 11.0 / 20.0 | 3.00 | 8.00 | 6.00 | 2.50 |" in text


def test_scale_child_failure_is_a_result(tmp_path: Path, tiny_arrays: tuple[Path, dict]) -> None:
    folder, meta = tiny_arrays
    result = _child(tmp_path, {"kind": "cfrec", "model": "pop", "params": {"no_such_param": 1},
                               "data": os.fspath(folder), "meta": meta})
    assert result["status"] == "error" and "TypeError" in result["error"]


def test_scale_timeout_becomes_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "SCRIPT", _script(tmp_path, "import time; time.sleep(60)"))
    args = scale.parse_args(["--timeout", "0.5"])
    entry = {"library": "cfrec", "model": "mf", "label": "BiasedMF", "factors": 100,
             "bound": "epochs", "params": {"epochs": 1}}
    row = scale.measure(entry, "ml-10m", {}, tmp_path, args, tmp_path / "runs")
    assert row["status"] == "timeout" and row["error"].startswith("timeout after")


def test_scale_runs_end_to_end_on_a_tiny_set(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, os.fspath(BENCH / "scale.py"), "--tiny", "--sizes", "ml-1m",
         "--models", "pop,baseline", "--param", "baseline.no_such_param=1",
         "--cache", os.fspath(tmp_path / "cache"), "--json", os.fspath(out), "--timeout", "300"],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| model | name | factors | epochs / iters | s / epoch or iter | fit s | load s |" in proc.stdout
    assert "| comparison | value | issue's target | met |" in proc.stdout
    report = json.loads(out.read_text())
    assert report["datasets"]["ml-1m"]["n_ratings"] == scale.TINY["n_ratings"]
    assert report["environment"]["thread_env"].keys() >= {"OMP_NUM_THREADS"}
    rows = {r["model"]: r for r in report["results"]}
    assert list(rows) == ["pop", "baseline"]
    assert rows["baseline"]["status"] == "error" and "no_such_param" in rows["baseline"]["error"]
    assert "**error**" in proc.stdout
    pop = rows["pop"]
    assert pop["status"] == "ok" and pop["fit_seconds"] >= 0 and pop["peak_rss"] > 0
    assert pop["rss_before_fit"] > 0 and pop["label"] == "PopularityRecommender"
    assert {r["comparison"] for r in report["ratios"]["ml-1m"]} >= {
        "BiasedMF s/epoch ÷ Surprise SVD s/epoch", "iALS s/iteration ÷ implicit ALS s/iteration"}


# ====================================================================== ml25m_end_to_end.py
def test_end_to_end_driver_runs_every_stage(tmp_path: Path) -> None:
    out, cache = tmp_path / "e2e.json", tmp_path / "cache"
    cmd = [sys.executable, os.fspath(BENCH / "ml25m_end_to_end.py"), "--tiny", "--size", "ml-1m",
           "--models", "ials", "--iterations", "2", "--cache", os.fspath(cache), "--timeout", "300"]
    proc = subprocess.run([*cmd, "--json", os.fspath(out)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    data = report["data"]
    assert [s["stage"] for s in data["stages"]] == ["import cfrec", "generate", "write"]
    assert set(data["files"]) == {"ratings.dat", "movies.dat"} and data["rating_step"] == "whole stars"
    (row,) = report["results"]
    assert row["status"] == "ok", row
    assert [s["stage"] for s in row["stages"]] == ["import cfrec", "load", "split", "fit", "evaluate",
                                                   "save"]
    assert all(s["seconds"] >= 0 and s["peak_rss"] > 0 and s["rss_after"] > 0 for s in row["stages"])
    assert row["n_train"] + row["n_test"] == scale.TINY["n_ratings"]
    assert row["iterations_run"] == 2 and row["params"]["n_factors"] == 64
    assert 0.0 <= row["metrics"]["ndcg@10"] <= 1.0 and row["metrics"]["ranking_users"] > 0
    from cfrec.models import Recommender

    model = Recommender.load(row["model_folder"])
    assert type(model).__name__ == "IALS"
    assert "| model | stage | seconds | peak RSS GB (stage) | RSS after GB |" in proc.stdout
    assert "| ials | 64 | 2 |" in proc.stdout

    again = subprocess.run([*cmd, "--prepare-only", "--json", os.fspath(out)], capture_output=True,
                           text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(out.read_text())["data"]["cached"] is True


def test_end_to_end_timeout_names_the_unfinished_stage(tmp_path: Path) -> None:
    args = e2e.parse_args(["--size", "ml-1m", "--timeout", "0.3"])
    row = e2e.run_model("ials", {"n_factors": 4}, tmp_path / "ml-1m", args, tmp_path / "models",
                        tmp_path / "logs")
    assert row["status"] == "timeout" and row["unfinished_stage"]["stage"] in e2e.PIPELINE
    release = {"size": "ml-1m", "layout": "ml-1m", "n_ratings": 1, "n_users": 1, "n_items": 1,
               "rating_values": [1.0, 5.0], "stages": []}
    text = e2e.markdown(release, [row], args)
    assert "(unfinished)" in text and "**timeout**" in text
