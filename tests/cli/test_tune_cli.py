"""`cfrec tune` on ML-100K: grid coverage, reproducible trial tables, files reusable by `cfrec train`."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest

from cfrec.cli import main
from cfrec.models.base import Recommender

pytest.importorskip("optuna")

GRID = ["--param", "reg_user=2,20", "--param", "reg_item=3,30"]


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    return lines[0]


def test_tune_grid_writes_files_and_best_params_train(tmp_path, capsys, ml100k_dir):
    rc, out, err = run(capsys, "tune", "ml-100k", "--model", "baseline", "--split", "u1", *GRID,
                       "--out", tmp_path / "run")
    assert rc == 0, err
    assert "valid RMSE" in out and "test RMSE" in out
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert set(zip(trials["reg_user"], trials["reg_item"], strict=True)) == set(
        itertools.product([2.0, 20.0], [3.0, 30.0]))
    assert (trials["state"] == "complete").all()
    assert (trials["valid_rmse"] > trials["train_rmse"]).all()  # the gap is there to see
    summary = json.loads((tmp_path / "run" / "trials.json").read_text())
    assert summary["split"] == "u1" and summary["test"]["n"] == 20_000
    best = json.loads((tmp_path / "run" / "best_params.json").read_text())
    winner = trials.loc[trials["valid_rmse"].idxmin()]
    assert best["model"] == "baseline"
    assert (best["params"]["reg_user"], best["params"]["reg_item"]) == (winner["reg_user"], winner["reg_item"])

    # best params round-trip into `cfrec train`, and training on the same split reproduces the test score
    rc, out, err = run(capsys, "train", "ml-100k", "--split", "u1", "--params-json",
                       tmp_path / "run" / "best_params.json", "--out", tmp_path / "model", "--json")
    assert rc == 0, err
    trained = json.loads(out)
    assert trained["params"] == best["params"]
    assert trained["test"]["rmse"] == pytest.approx(best["test"]["rmse"], rel=1e-6)
    assert Recommender.load(tmp_path / "model").get_params() == best["params"]


def test_tune_same_seed_same_table(tmp_path, capsys, ml100k_dir):
    tables = []
    for run_dir in ("a", "b"):
        rc, _, err = run(capsys, "tune", "ml-100k", "--model", "baseline", "--split", "random:0.2",
                         "--param", "reg_user=0.5:50:log", "--trials", "4", "--seed", "11",
                         "--out", tmp_path / run_dir)
        assert rc == 0, err
        tables.append(pd.read_csv(tmp_path / run_dir / "trials.csv").drop(columns=["fit_seconds"]))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert len(tables[0]) == 4 and tables[0]["reg_user"].between(0.5, 50).all()


def test_tune_json_output(capsys, ml100k_dir):
    rc, out, err = run(capsys, "tune", "ml-100k", "--model", "baseline", "--split", "u2",
                       "--param", "reg_item=1,10", "--param", "iterations=5", "--json")
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["sampler"] == "grid" and obj["n_trials"] == 2
    assert obj["base_params"] == {"iterations": 5}
    assert obj["best_params"]["iterations"] == 5
    assert [t["reg_item"] for t in sorted(obj["trials"], key=lambda t: t["trial"])] in ([1.0, 10.0], [10.0, 1.0])
    assert "trial" in err  # per-trial progress on stderr


@pytest.mark.parametrize(("args", "fragment"), [
    (["--model", "baseline", "--param", "reg_user=1:5", "--sampler", "grid"], "grid search needs value lists"),
    (["--model", "baseline", "--param", "reg_user=5", "--param", "reg_item=5"], "nothing to tune"),
    (["--model", "baseline", "--param", "n_factors=8,16"], "no hyperparameter 'n_factors'"),
    (["--preset", "lab-everything"], "unknown tuning preset"),
    (["--preset", "lab-dim", "--model", "baseline"], "tunes 'mf', not 'baseline'"),
    (["--model", "baseline", "--param", "reg_user=1,2", "--split", "cv5"], "yields 5 folds"),
    (["--model", "baseline", "--param", "reg_user=1,2", "--sampler", "random"], "unknown sampler"),
])
def test_tune_errors_are_one_line(args, fragment, capsys, tmp_path, ml100k_dir):
    rc, _, err = run(capsys, "tune", "ml-100k", *args, "--out", tmp_path / "run")
    assert rc == 1
    assert fragment in one_error_line(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_lab_presets_on_the_lab_split(tmp_path, capsys, ml100k_dir):
    from cfrec.models.mf import BiasedMF

    # the lab exercise, shortened: two embedding sizes, two epochs
    rc, out, err = run(capsys, "tune", "ml-100k", "--preset", "lab-dim", "--param", "n_factors=8,16",
                       "--param", "epochs=2", "--json")
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["split"].startswith("temporal") and obj["n_trials"] == 2
    lab = BiasedMF.lab(epochs=2).get_params()
    assert {k: v for k, v in obj["best_params"].items() if k != "n_factors"} == {
        k: v for k, v in lab.items() if k != "n_factors"}
    # ~85% of the global temporal split's test ratings come from users absent from train
    assert obj["test"]["fallback"]["unknown_user"] / obj["test"]["n"] == pytest.approx(0.85, abs=0.02)

    rc, out, err = run(capsys, "train", "ml-100k", "--model", "mf", "--preset", "lab", "--epochs", "2",
                       "--split", "temporal:0.2", "--out", tmp_path / "lab", "--json")
    assert rc == 0, err
    assert json.loads(out)["params"] == lab


def test_every_tunable_model_has_a_default_space_holding_its_defaults() -> None:
    from cfrec.evaluation.tuning import DEFAULT_SPACES, Range, default_space
    from cfrec.models.names import model_names
    from cfrec.models.registry import make_model, model_class

    for name in model_names():
        assert name in DEFAULT_SPACES, name
        space = default_space(model_class(name))
        defaults = make_model(name).get_params()
        for key, values in space.items():
            value = defaults[key]
            held = (values.low <= value <= values.high) if isinstance(values, Range) else value in values
            assert held, (name, key, value, values)


def test_tune_without_a_space_searches_the_default_one_and_compares_with_the_defaults(
        tmp_path, capsys, ml100k_dir):
    rc, out, err = run(capsys, "tune", "ml-100k", "--model", "ease", "--metric", "ndcg@10", "--trials", "2",
                       "--split", "u1", "--json")
    assert rc == 0, err
    obj = json.loads(out)
    assert set(obj["space"]) == {"lam", "rating_power"} and "the default search space" in err
    t = obj["test"]
    assert t["tuned"] == pytest.approx(t["ndcg@10"])
    assert t["tuned_loses_to_defaults"] == (t["tuned"] < t["defaults"])
