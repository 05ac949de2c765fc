"""predict, recommend --all and the honest outputs for ranking models, on small files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.cli import main


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def ratings(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    rows = [(u, int(i), int(rng.integers(1, 6))) for u in range(1, 41)
            for i in rng.choice(np.arange(100, 130), 10, replace=False)]
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    pd.DataFrame(rows, columns=["user", "item", "rating"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def models(ratings, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, extra in (("baseline", []), ("ials", ["--param", "iterations=3"])):
        assert main(["train", str(ratings), "--model", name, "--out", str(root / name), *extra]) == 0
        out[name] = root / name
    return out


def test_predict_names_how_each_prediction_was_made(models, capsys) -> None:
    rc, out, err = run(capsys, "predict", models["baseline"], "--user", "3", "--item", "101", "--item", "999",
                       "--json")
    assert rc == 0, err
    preds = json.loads(out)["predictions"]
    assert [p["item_id"] for p in preds] == [101, 999]
    assert preds[0]["how"] == "personalised" and preds[1]["how"].startswith("unknown item")
    assert all(1.0 <= p["prediction"] <= 5.0 for p in preds)
    rc, out, _ = run(capsys, "predict", models["ials"], "--user", "3", "--item", "101")
    assert rc == 0 and "not rating estimates" in out


def test_recommend_all_streams_every_user_and_refuses_bad_combinations(models, ratings, tmp_path, capsys) -> None:
    target = tmp_path / "recs.csv"
    rc, out, err = run(capsys, "recommend", models["ials"], "--all", "-k", "3", "--out", target)
    assert rc == 0, err
    frame = pd.read_csv(target)
    assert len(frame) == 40 * 3 and frame["known"].all() and "rating" not in frame  # a ranking model
    users = tmp_path / "users.txt"
    users.write_text("user_id\n3\n7\nstranger\n", encoding="utf-8")
    rc, out, err = run(capsys, "recommend", models["baseline"], "--all", "--users", users, "--out",
                       tmp_path / "some.parquet", "-k", "2")
    assert rc == 0, err
    assert "1 unknown to the model" in out
    some = pd.read_parquet(tmp_path / "some.parquet")
    assert some["user_id"].astype(str).tolist() == ["3", "3", "7", "7", "stranger", "stranger"]
    assert some["rating"].between(1, 5).all() and not some["known"].iloc[-1]
    for args in (["--all"], ["--user", "3", "--out", str(tmp_path / "x.csv")], ["--all", "--user", "3"], []):
        rc, _, err = run(capsys, "recommend", models["baseline"], *args)
        assert rc == 1 and err.startswith("error:"), args


def test_recommend_shows_which_model_ranked(models, capsys) -> None:
    rc, out, err = run(capsys, "recommend", models["ials"], "--user", "3", "--json")
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["model"] == "ials" and all(r["predicted_rating"] is None for r in obj["recommendations"])
    assert all(r["because"] is None or r["because"]["item_id"] != r["item_id"] for r in obj["recommendations"])
    rc, out, _ = run(capsys, "recommend", models["baseline"], "--user", "3")
    assert rc == 0 and "ranked by Baseline" in out and "predicted rating" in out


def test_recommend_reason_does_not_depend_on_the_history_shown(models, capsys) -> None:
    reasons = []
    for history in ("0", "1", "5"):
        rc, out, err = run(capsys, "recommend", models["ials"], "--user", "3", "--history", history, "--json")
        assert rc == 0, err
        obj = json.loads(out)
        reasons.append([None if r["because"] is None else r["because"]["item_id"] for r in obj["recommendations"]])
        if history != "0":  # the dataset was read, so a rating-based choice would have differed
            assert obj["rated"] is not None and len(obj["rated"]) == int(history)
    assert reasons[0] == reasons[1] == reasons[2] and any(r is not None for r in reasons[0])
    rc, out, _ = run(capsys, "recommend", models["ials"], "--user", "3", "--history", "0")
    assert rc == 0 and "among the user's 10 training items" in out


def test_evaluate_shows_no_rmse_for_a_ranking_model(models, ratings, capsys) -> None:
    rc, out, err = run(capsys, "evaluate", models["ials"], "--json")
    assert rc == 0, err
    metrics = json.loads(out)["metrics"]
    assert metrics["rmse"] is None and metrics["mae"] is None and 0 <= metrics["ndcg@10"] <= 1
    rc, out, _ = run(capsys, "evaluate", models["ials"])
    assert rc == 0 and "RMSE and MAE are n/a" in out


def test_train_strict_refuses_a_fit_worse_than_the_bias_baseline(ratings, tmp_path, capsys) -> None:
    args = ["train", ratings, "--model", "mf", "--lr", "1000", "--epochs", "1", "--param", "patience=none",
            "--param", "optimizer=adam"]  # Adam: bounded steps, a finite but useless fit
    rc, _, err = run(capsys, *args, "--out", tmp_path / "loose")
    assert rc == 0 and "WARNING" in err and "worse than the bias baseline" in err
    rc, _, err = run(capsys, *args, "--out", tmp_path / "strict", "--strict")
    assert rc == 1 and "nothing saved (--strict)" in err and not (tmp_path / "strict").exists()
