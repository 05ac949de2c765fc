"""What the commands print about a model comes from the model: no rating error for ranking-only
models in ``benchmark`` and ``report``, fallback and new-user wording from the model's labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cfrec.cli import main
from cfrec.data import load_dataset, make_splits, make_synthetic
from cfrec.models.registry import make_model

RANKING_ONLY = ("ease", "ials:n_factors=4,iterations=2", "bpr:n_factors=4,epochs=2", "multvae:epochs=2")
#: A rating error printed as a number ("RMSE 2.2877", "rmse 2.2877", "| 1.0 |" in an RMSE column).
RATING_NUMBER = re.compile(r"(?i)\b(rmse|mae)\b[^\n|]{0,12}\d\.\d")


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "ratings.csv"
    make_synthetic(60, 40, 1500, seed=3).to_frame().to_csv(path, index=False)
    return path


def test_benchmark_prints_no_rating_error_for_ranking_models(ratings_file: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["benchmark", str(ratings_file), "--protocol", "cv2", "--models", ",".join(RANKING_ONLY),
               "--no-popularity", "--k", "5"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "NDCG@5" in out.err  # the progress lines are there ...
    assert not RATING_NUMBER.search(out.err), out.err  # ... without an RMSE
    rows = [line for line in out.out.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert len(rows) == len(RANKING_ONLY)
    for line in rows:  # table rows: the RMSE and MAE cells are n/a
        if line.startswith("| "):
            assert line.split("|")[2].strip() == "n/a" and line.split("|")[3].strip() == "n/a", line


@pytest.mark.parametrize("spec", ["ease", "ials:n_factors=4,iterations=2"])
def test_report_on_a_ranking_model_shows_no_rating_error(spec: str, ratings_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = load_dataset(ratings_file)
    split = make_splits(data, "random:0.2", seed=0)[0]
    model = make_model(spec).fit(split.train)
    out = tmp_path / "report.html"
    rc = main(["report", str(model.save(tmp_path / "m")), "--out", str(out), "--dataset", str(ratings_file)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"<td>(rmse|mae)</td>", page, re.I)
    assert not RATING_NUMBER.search(captured.out + captured.err)
    assert "mu + b_i" not in page and model.fallback_labels[1] in page


def test_new_user_and_fallback_wording_is_the_models(ratings_file: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = load_dataset(ratings_file)
    for spec in ("ease", "mf:epochs=2", "two-stage:rater=baseline"):
        model = make_model(spec).fit(data)
        folder = model.save(tmp_path / spec.split(":")[0])
        assert main(["recommend", str(folder), "--user", "nobody", "-k", "3"]) == 0
        out = capsys.readouterr().out
        assert model.cold_start_label in " ".join(out.split()), out
        assert main(["predict", str(folder), "--user", "nobody", "--item", str(data.raw_items()[0])]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert model.fallback_labels[1] in out
    assert "EASE" in model.cold_start_label and "mu + b_i" not in model.cold_start_label


def test_two_stage_heading_says_its_scores_are_blends(ratings_file: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = load_dataset(ratings_file)
    model = make_model("two-stage:rater=baseline").fit(data)
    user = data.raw_users()[0]
    assert main(["recommend", str(model.save(tmp_path / "ts")), "--user", str(user), "-k", "5"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "scores are blends of EASE's retrieval score (weight 0.9) and Baseline's predicted rating" in out
    assert "predicted ratings before clipping" not in out
    assert out.count("ranked by") == 1  # said once, above the table
