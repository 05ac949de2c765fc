"""CLI commands report, quickstart and export (through ``cfrec.cli.main``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.cli import main
from cfrec.data import load_dataset, make_splits
from cfrec.errors import DatasetUnavailable
from cfrec.models.base import Recommender
from cfrec.models.registry import make_model
from tests.clustered import clustered_frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ratings CSV and an ALS model trained on its random 80/20 split (seed 0)."""
    root = tmp_path_factory.mktemp("cli-report")
    frame, _ = clustered_frame()
    csv = root / "ratings.csv"
    frame.to_csv(csv, index=False)
    data = load_dataset(csv)
    split = make_splits(data, "random:0.2", seed=0)[0]
    model = make_model("als", n_factors=4, iterations=3).fit(split.train)
    return csv, model.save(root / "model")


def test_report_command(tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    csv, model_dir = trained
    trials = tmp_path / "trials.csv"
    pd.DataFrame({"n_factors": [2, 4, 8], "weight_decay": [0.0, 0.01, 0.1], "train_rmse": [0.9, 0.8, 0.7],
                  "valid_rmse": [1.0, 0.95, 0.97]}).to_csv(trials, index=False)
    out = tmp_path / "r" / "report.html"
    rc = main(["report", str(model_dir), "--out", str(out), "--dataset", str(csv), "--tuning", str(trials)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    page = out.read_text(encoding="utf-8")
    assert "random-0.2 (verified" in page  # found the model's split by fingerprint
    # 4 data plots + learning curves + 2 tuning plots; no t-SNE: no item has the default 50 ratings
    assert 'id="tuning"' in page and page.count("<img ") == 7
    assert "a t-SNE map needs at least 5 (lower min_ratings)" in page
    assert re.search(r"test RMSE \d\.\d{4} on split random-0\.2 \(baseline \d\.\d{4}\)", captured.out)
    assert f"report written to {out.resolve()}" in captured.out


def test_report_errors_are_one_line(tmp_path: Path, trained: tuple[Path, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, model_dir = trained
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert "not a model folder" in err and "Traceback" not in err
    # the model records only the dataset name "ratings", which cannot be reloaded
    assert main(["report", str(model_dir), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert "pass --dataset" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_command(tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                        fmt: str) -> None:
    _, model_dir = trained
    assert main(["export", str(model_dir), "--out", str(tmp_path / "emb"), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "exported 30 item and 40 user embeddings (dimension 4)" in out
    model = Recommender.load(model_dir)
    items = np.load(tmp_path / "emb" / "item_embeddings.npy", allow_pickle=False)
    np.testing.assert_array_equal(items, model.item_embeddings())
    table = pd.read_csv(tmp_path / "emb" / "items.csv") if fmt == "csv" else pd.read_parquet(
        tmp_path / "emb" / "items.parquet")
    assert table["item_id"].tolist() == model.item_map_.ids.tolist()


def test_export_errors(tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    csv, model_dir = trained
    assert main(["export", str(model_dir), "--out", str(tmp_path), "--format", "xlsx"]) == 1
    assert "--format must be parquet or csv" in capsys.readouterr().err
    baseline = make_model("baseline").fit(load_dataset(csv)).save(tmp_path / "baseline")
    assert main(["export", str(baseline), "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert "no item embeddings" in err and "Traceback" not in err


def test_quickstart_offline_then_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    def unavailable(name, **kwargs):
        raise DatasetUnavailable(f"{name}: not cached and no network")

    monkeypatch.setattr("cfrec.data.datasets.load_dataset", unavailable)
    monkeypatch.setattr("cfrec.app.quickstart.ML100K_SHAPE", (120, 150, 4000))
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC DATA: could not get ml-100k: ml-100k: not cached and no network" in out
    assert "[SYNTHETIC DATA]" in out and "All of the above is SYNTHETIC DATA" in out
    # the top-5 caption says what the numbers are and which model ordered the list
    assert re.search(r"Top 5 recommendations for user \S+ \[SYNTHETIC DATA\] \((predicted rating|score), title\), "
                     r"(ranked by|retrieved by) ", " ".join(out.split())), out
    report = tmp_path / "cfrec-quickstart" / "report.html"  # the default output folder
    assert f"Report written to {report}" in out
    assert "SYNTHETIC DATA" in report.read_text(encoding="utf-8")

    # `cfrec report` on the quickstart's model regenerates the same synthetic data and split
    again = tmp_path / "again.html"
    assert main(["report", str(tmp_path / "cfrec-quickstart" / "model"), "--out", str(again)]) == 0
    page = again.read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" in page and "user-temporal-0.2 (verified" in page
