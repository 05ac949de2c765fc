"""The commands on an interaction log (no ratings): evaluate, benchmark, tune and recommend from
liked items alone; rating models refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfrec.cli import main
from cfrec.data import make_synthetic_log


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def log_file(tmp_path_factory) -> Path:
    frame = make_synthetic_log(n_users=100, n_items=60, n_pairs=1400, seed=2).to_frame()
    path = tmp_path_factory.mktemp("log") / "clicks.csv"
    frame[["user_id", "item_id", "timestamp"]].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def ease_dir(log_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "ease"
    assert main(["train", str(log_file), "--model", "ease", "--split", "user-temporal:n=2", "--out", str(out)]) == 0
    return out


def test_train_reports_a_finite_ndcg_on_a_log(log_file, tmp_path, capsys) -> None:
    rc, out, err = run(capsys, "train", log_file, "--model", "pop", "--split", "random:0.2", "--out", tmp_path / "p")
    assert rc == 0 and "NDCG@10 nan" not in out + err and "NDCG@10 0." in out + err


def test_evaluate_a_log_model(ease_dir, capsys) -> None:
    rc, out, _ = run(capsys, "evaluate", ease_dir, "--json")
    assert rc == 0
    res = json.loads(out)
    assert res["relevance"] is None and res["metrics"]["ranking_users_excluded"] == 0
    assert 0 < res["metrics"]["ndcg@10"] <= 1 and 0 < res["metrics"]["popularity@10"] < 1
    rc, out, _ = run(capsys, "evaluate", ease_dir)
    assert rc == 0 and "relevant = every held-out interaction" in out


def test_recommend_from_liked_items(ease_dir, log_file, capsys) -> None:
    rc, out, err = run(capsys, "recommend", ease_dir, "--liked", "1,2", "--liked", "nope", "-k", "4", "--json")
    assert rc == 0, err
    res = json.loads(out)
    ids = [r["item_id"] for r in res["recommendations"]]
    assert res["known_items"] == 2 and res["unknown_items"] == ["nope"] and len(ids) == 4
    assert not {1, 2} & set(ids)
    rc, out, _ = run(capsys, "recommend", ease_dir, "--liked", "nope", "-k", "3")
    assert rc == 0 and "most popular" in out
    rc, _, err = run(capsys, "recommend", ease_dir, "--liked", "1", "--user", "1")
    assert rc != 0 and "--liked describes a new user" in err


def test_liked_items_with_a_rating_model_are_refused(tmp_path, capsys) -> None:
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("user,item,rating\n" + "".join(f"{u},{i},{1 + (u + i) % 5}\n"
                                                      for u in range(1, 20) for i in range(1, 15)))
    assert main(["train", str(ratings), "--model", "baseline", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    rc, _, err = run(capsys, "recommend", tmp_path / "b", "--liked", "3")
    assert rc != 0 and "ranking models" in err and "Traceback" not in err


def test_benchmark_and_tune_accept_a_log_and_refuse_rating_models(log_file, capsys) -> None:
    rc, out, err = run(capsys, "benchmark", log_file, "--protocol", "random:0.2", "--models", "ease")
    assert rc == 0, err
    assert "| pop |" in out and "| ease |" in out and "MAP@10" in out and "RMSE" not in out
    rc, _, err = run(capsys, "benchmark", log_file, "--models", "mf")
    assert rc != 0 and "mf predicts ratings" in err and "ranking model instead" in err
    rc, out, err = run(capsys, "tune", log_file, "--model", "ease", "-p", "lam=1,50")
    assert rc == 0, err
    assert "valid ndcg@10" in out
    rc, _, err = run(capsys, "tune", log_file, "--model", "mf", "-p", "n_factors=4,8")
    assert rc != 0 and "predicts ratings" in err and len(err.strip().splitlines()) <= 2
