"""`cfrec evaluate` and `cfrec benchmark` end to end: tiny files and ML-100K, plus error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfrec.cli import main
from cfrec.data import load_dataset, make_splits, make_synthetic
from cfrec.models.baseline import Baseline


@pytest.fixture
def ratings_file(tmp_path: Path) -> Path:
    path = tmp_path / "ratings.csv"
    make_synthetic(60, 40, 1200, seed=2).to_frame().to_csv(path, index=False)
    return path


def _train_and_save(source: str, spec: str, out: Path, *, seed: int = 0, record: bool = False) -> Path:
    data = load_dataset(source)
    split = make_splits(data, spec, seed=seed)[0]
    model = Baseline().fit(split.train)
    if record:  # what `cfrec train` adds
        model.fit_info_.update({"source": source, "split": split.name, "split_seed": seed})
    return model.save(out)


def test_evaluate_json_on_a_ratings_file(ratings_file, tmp_path, capsys) -> None:
    model_dir = _train_and_save(str(ratings_file), "random:0.2", tmp_path / "m", seed=3)
    rc = main(["evaluate", str(model_dir), "--dataset", str(ratings_file), "--split", "random:0.2",
               "--seed", "3", "--metrics", "rmse,ndcg@5,hr@3", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    blob = json.loads(out.out)
    assert blob["train_matches_model"] is True and blob["split"] == "random-0.2"
    assert set(blob["metrics"]) >= {"rmse", "ndcg@5", "hit_rate@3", "n_test"}
    assert 0.5 < blob["metrics"]["rmse"] < 1.5
    assert blob["metrics"]["n_test"] == 240


def test_evaluate_finds_the_recorded_or_searched_split(ratings_file, tmp_path, capsys) -> None:
    recorded = _train_and_save(str(ratings_file), "temporal:0.3", tmp_path / "rec", record=True)
    assert main(["evaluate", str(recorded), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "temporal-0.3"
    # no split recorded: found by fingerprint among the usual specs (dataset given explicitly)
    searched = _train_and_save(str(ratings_file), "user-temporal", tmp_path / "s")
    assert main(["evaluate", str(searched), "--dataset", str(ratings_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "user-temporal-0.2"


def test_evaluate_model_trained_on_everything(ratings_file, tmp_path, capsys) -> None:
    data = load_dataset(str(ratings_file))
    model = Baseline().fit(data)
    model.fit_info_.update({"source": str(ratings_file), "split": "none", "split_seed": 0})
    assert main(["evaluate", str(model.save(tmp_path / "all"))]) == 1
    assert "trained on every rating" in capsys.readouterr().err


def test_evaluate_refuses_a_mismatched_split(ratings_file, tmp_path, capsys) -> None:
    model_dir = _train_and_save(str(ratings_file), "random:0.2", tmp_path / "m")
    rc = main(["evaluate", str(model_dir), "--dataset", str(ratings_file), "--split", "temporal"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "fingerprint differs" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one (soft-wrapped) error line
    rc = main(["evaluate", str(model_dir), "--dataset", str(ratings_file), "--split", "temporal",
               "--allow-mismatch", "--metrics", "rmse", "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and "warning" in captured.err
    assert json.loads(captured.out)["train_matches_model"] is False


def test_evaluate_errors_are_one_line(ratings_file, tmp_path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "missing")]) == 1
    assert "not a model folder" in capsys.readouterr().err
    model_dir = _train_and_save(str(ratings_file), "random:0.2", tmp_path / "m")
    assert main(["evaluate", str(model_dir), "--dataset", str(ratings_file), "--metrics", "auc"]) == 1
    assert "unknown metric 'auc'" in capsys.readouterr().err
    assert main(["evaluate", str(model_dir), "--dataset", str(ratings_file), "--split", "diagonal"]) == 1
    assert "bad split spec" in capsys.readouterr().err
    # no recorded dataset name usable and no split found
    other = tmp_path / "other.csv"
    make_synthetic(50, 30, 800, seed=9).to_frame().to_csv(other, index=False)
    assert main(["evaluate", str(model_dir), "--dataset", str(other)]) == 1
    assert "none of the usual splits" in capsys.readouterr().err


def test_benchmark_cli_writes_json(ratings_file, tmp_path, capsys) -> None:
    target = tmp_path / "bench.json"
    rc = main(["benchmark", str(ratings_file), "--protocol", "cv3", "--models", "baseline",
               "--json", str(target), "--k", "5"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "| model | RMSE | MAE | NDCG@5 | Recall@5 | fit s | predict s |" in out.out
    assert "| pop | n/a | n/a |" in out.out
    blob = json.loads(target.read_text())
    assert [r["model"] for r in blob["rows"]] == ["pop", "baseline"] and blob["k"] == 5
    assert main(["benchmark", str(ratings_file), "--models", "baseline,nope", "--protocol", "random"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_evaluate_ml100k_temporal_with_online(ml100k_dir, tmp_path, capsys) -> None:
    model_dir = _train_and_save("ml-100k", "temporal", tmp_path / "lab")
    rc = main(["evaluate", str(model_dir), "--online"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "split temporal-0.2" in out.out.replace("\n", " ")
    text = " ".join(out.out.split())
    assert "new users" in text and "online (prequential) replay of 20,000 test ratings" in text
    # a terminal report, not Markdown source
    assert "**" not in out.out and "|---" not in out.out
    # the lab split's test part: 15,136 of 20,000 ratings share their second with another of the user's
    assert "same-second groups: 15,136 of 20,000 test ratings (75.7%) fell in 4,938 same-second groups of 2-10" \
        in text and "groups by size" in text and "predicted before any of it is revealed" in text
    rc = main(["evaluate", str(model_dir), "--split", "u1"])
    assert rc == 1 and "fingerprint differs" in capsys.readouterr().err


def test_evaluate_online_reveal_orders_json(ml100k_dir, tmp_path, capsys) -> None:
    model_dir = _train_and_save("ml-100k", "temporal", tmp_path / "lab")
    blobs = {}
    for reveal in ("group", "rating"):
        assert main(["evaluate", str(model_dir), "--online", "--reveal", reveal, "--json"]) == 0
        blobs[reveal] = json.loads(capsys.readouterr().out)["online"]
    assert blobs["group"]["reveal"] == "group" and blobs["rating"]["reveal"] == "rating"
    groups = blobs["group"]["same_second_groups"]
    assert groups == blobs["rating"]["same_second_groups"]
    assert groups["n_in_multi_groups"] == 15136 and groups["n_multi_groups"] == 4938 and groups["largest_group"] == 10
    assert groups["n_predicted_after_peer_by_rating"] == 10198 and groups["group_sizes"]["10"] == 48
    # peeking at same-second ratings helps: the rating-by-rating order scores lower
    assert blobs["rating"]["rmse"] < blobs["group"]["rmse"]
    assert main(["evaluate", str(model_dir), "--reveal", "rating"]) == 1
    assert "add --online" in capsys.readouterr().err
    assert main(["evaluate", str(model_dir), "--online", "--reveal", "second"]) == 1
    assert "--reveal: expected group or rating" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_cli_ml100k_folds(ml100k_dir, tmp_path, capsys) -> None:
    target = tmp_path / "folds.json"
    rc = main(["benchmark", "ml-100k", "--protocol", "folds", "--models", "baseline", "--json", str(target)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    blob = json.loads(target.read_text())
    base = next(r for r in blob["rows"] if r["model"] == "baseline")
    assert base["n_folds"] == 5 and 0.93 < base["mean"]["rmse"] < 0.96
