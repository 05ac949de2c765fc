"""The documented figures a cheap command regenerates are what the command prints now."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import docs_figures


def test_every_marked_figure_has_a_source() -> None:
    names = set()
    for rel in docs_figures.FILES:
        names |= {m.group("name") for m in docs_figures.MARK.finditer((docs_figures.ROOT / rel).read_text())}
    assert names >= {"lab-temporal", "lab-temporal-rmse"}
    # each marked name is one a source renders (checked by rendering a sample output)
    sample = "test RMSE 1.2345 (bias baseline 1.0000)  MAE 0.9 on 1 ratings"
    rendered = set(docs_figures._lab_temporal(sample))
    assert names <= rendered


def test_apply_reports_and_rewrites_a_drifted_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "page.md"
    page.write_text("scores <!-- figure: x -->**1.0818**<!-- /figure --> RMSE\n")
    monkeypatch.setattr(docs_figures, "ROOT", tmp_path)
    monkeypatch.setattr(docs_figures, "FILES", ("page.md",))
    assert docs_figures.apply({"x": "**1.0818**"}, write=False) == []
    assert docs_figures.apply({"x": "**1.0914**"}, write=False) == ["page.md: x"]
    assert "1.0818" in page.read_text()
    docs_figures.apply({"x": "**1.0914**"}, write=True)
    assert page.read_text() == "scores <!-- figure: x -->**1.0914**<!-- /figure --> RMSE\n"


@pytest.mark.slow
def test_documented_figures_match_the_commands(ml100k_dir: Path) -> None:
    stale = docs_figures.apply(docs_figures.regenerate(), write=False)
    assert not stale, f"run `make docs-figures`: {stale}"
