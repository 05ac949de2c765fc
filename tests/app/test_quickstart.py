"""The quickstart pipeline: offline fallback to labelled synthetic data, outputs, real ML-100K run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfrec.app import quickstart as qs
from cfrec.errors import CfrecError, DatasetUnavailable
from cfrec.models.base import Recommender

SMALL = (120, 150, 4000)  # users, items, ratings of the synthetic stand-in in fast tests


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No network and nothing cached: the loader raises DatasetUnavailable; records the calls."""
    calls: list[str] = []

    def unavailable(name, **kwargs):
        calls.append(str(name))
        raise DatasetUnavailable(f"{name} is not in {tmp_path / 'empty-home'} and the download failed "
                                 "(no network)")

    monkeypatch.setenv("CFREC_DATA_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setattr("cfrec.data.datasets.load_dataset", unavailable)
    return calls


def test_offline_runs_the_whole_pipeline_on_labelled_synthetic_data(tmp_path: Path, offline: list[str]) -> None:
    lines: list[str] = []
    result = qs.run_quickstart(tmp_path / "qs", synthetic_shape=SMALL, epochs=2, progress=lines.append)
    assert offline == ["ml-100k"]  # it did try the real data first
    assert result.synthetic and "no network" in (result.unavailable_reason or "")
    assert result.dataset == qs.SYNTHETIC_NAME
    assert any(line.startswith("SYNTHETIC DATA: could not get ml-100k") for line in lines)
    # every stage ran and left its output
    assert result.stats["ratings"] == SMALL[2]
    assert {"rmse", "mae"} <= set(result.metrics) and result.baseline_metrics is not None
    assert len(result.recommendations) == 2 and all(len(r.recommended) == 10 for r in result.recommendations)
    assert len(result.similar) == 3 and all(len(s.neighbours) > 0 for s in result.similar)
    page = result.report_path.read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" in page and "no network" in page
    assert "<title>cfrec report:" in page and "synthetic (ML-100K-shaped)" in page
    # the lab's seed exercises ran on the training part and were plotted
    assert '<section id="tuning">' in page
    assert "RMSE vs embedding dimension" in page and "RMSE vs weight decay" in page
    assert any(line.startswith("lab exercise lab-dim") for line in lines)
    summary = json.loads(result.summary_path.read_text(encoding="utf-8"))
    assert summary["synthetic"] is True and summary["dataset"] == qs.SYNTHETIC_NAME
    model = Recommender.load(result.model_dir)
    assert model.fit_info_["synthetic"] == {"shape": list(SMALL), "seed": 0, "name": qs.SYNTHETIC_NAME}
    assert model.fit_info_["split"] == result.split


def test_real_data_is_not_labelled_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cfrec.data import make_synthetic

    def fake_real(name, **kwargs):  # stands in for a cached ML-100K
        return make_synthetic(*SMALL, seed=1, name="ml-100k")

    monkeypatch.setattr("cfrec.data.datasets.load_dataset", fake_real)
    result = qs.run_quickstart(tmp_path, epochs=1, exercises=False)
    assert '<section id="tuning">' not in result.report_path.read_text(encoding="utf-8")
    assert not result.synthetic and result.unavailable_reason is None
    assert "SYNTHETIC DATA" not in result.report_path.read_text(encoding="utf-8")
    assert Recommender.load(result.model_dir).fit_info_["source"] == "ml-100k"


def test_model_choice_and_params(tmp_path: Path) -> None:
    with pytest.raises(CfrecError, match="unknown model"):
        qs.run_quickstart(tmp_path, synthetic=True, model="nope", exercises=False)
    assert qs._model_params("als", None, 3)["iterations"] == 3
    assert qs._model_params("mf", None, None)["refit"] is True  # the registry's quickstart settings
    with pytest.raises(CfrecError, match="no hyperparameter"):
        qs._model_params("baseline", {"n_factors": 4}, None)


@pytest.mark.slow
def test_quickstart_on_real_ml100k(tmp_path: Path, ml100k_dir: Path) -> None:
    result = qs.run_quickstart(tmp_path, data_home=ml100k_dir.parent, download=False)
    assert not result.synthetic and result.dataset == "ml-100k"
    assert result.stats["ratings"] == 100_000
    assert result.metrics["rmse"] < result.baseline_metrics["rmse"]  # the factor model beats biases
    assert [s.title for s in result.similar] == ["Toy Story (1995)", "Star Wars (1977)", "Pulp Fiction (1994)"]
    star_wars = result.similar[1].neighbours["title"].head(3).tolist()
    assert "Return of the Jedi (1983)" in star_wars or "Empire Strikes Back, The (1980)" in star_wars
    assert '<section id="tuning">' in result.report_path.read_text(encoding="utf-8")
    assert set(result.seconds) >= {"load", "split", "train", "evaluate", "report"}
