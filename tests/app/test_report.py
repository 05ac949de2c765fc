"""The HTML report: content, self-containment, split detection, and a headless-browser check."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cfrec.app import report as rp
from cfrec.data import Interactions, make_splits
from tests.clustered import PlantedFactors, clustered_frame
from tests.conftest import artifact_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IMG_SRC = re.compile(r'<img src="([^"]*)"')


NO_TSNE = 10**9  # tsne_min_ratings that leaves the (slow) t-SNE map out where a test does not need it


@pytest.fixture(scope="module")
def clustered() -> Interactions:
    frame, info = clustered_frame()
    return Interactions.from_frame(frame, rating_scale=(1.0, 5.0), item_info=info, name="clustered")


@pytest.fixture(scope="module")
def split(clustered: Interactions):
    return make_splits(clustered, "random:0.2", seed=0)[0]


@pytest.fixture(scope="module")
def model(split) -> PlantedFactors:
    return PlantedFactors().fit(split.train)


@pytest.fixture(scope="module")
def built(model, clustered: Interactions) -> rp.Report:
    return rp.build_report(model, clustered, tsne_min_ratings=5, similar_min_ratings=0)


# ---------------------------------------------------------------------- content
def test_report_is_self_contained(built: rp.Report) -> None:
    page = built.html
    assert f'<meta http-equiv="Content-Security-Policy" content="{rp.CSP}">' in page
    srcs = IMG_SRC.findall(page)
    assert len(srcs) == 6  # distribution, per user, per item, heatmap, learning curves, t-SNE
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    # nothing is fetched: no external src/href, no scripts, no stylesheets by link
    assert not re.search(r'(?:src|href)="(?!data:|#)', page)
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_report_finds_and_verifies_the_training_split(built: rp.Report, split) -> None:
    assert built.split_name == "random-0.2" and built.split_verified
    assert built.notes == []
    assert built.cold_start == split.cold_start().to_dict()


def test_report_metrics_match_evaluate(built: rp.Report, model, split) -> None:
    expected = rp.evaluate_model(model, split.test, train=split.train, k=10)
    assert built.metrics == pytest.approx(expected)
    assert f"<td class=\"num\">{rp._fmt(expected['rmse'])}</td>" in built.html
    base = rp.compare_to_baseline(split.train, split.test)
    assert built.baseline_metrics == pytest.approx(base)
    assert "Baseline (biases only)" in built.html


def test_report_similar_items_for_the_three_films(built: rp.Report) -> None:
    assert [s.title for s in built.similar] == ["Toy Story (1995)", "Star Wars (1977)", "Pulp Fiction (1994)"]
    for s, genre in zip(built.similar, ("Animation", "Sci-Fi", "Crime"), strict=True):
        # planted embeddings: the 9 other items of the film's genre cluster come first
        assert s.neighbours["genres"].head(9).str.startswith(genre).all()
        assert s.neighbours["similarity"].is_monotonic_decreasing
        assert f"<h3>{html.escape(s.title)} <span" in built.html


def test_report_recommendations_next_to_top_rated(built: rp.Report, split) -> None:
    assert [u.user_id for u in built.users] == [1, 2]  # lowest ids with enough ratings and a test rating
    ur = built.users[0]
    train_rows = split.train.raw_users() == 1
    assert ur.n_train == int(train_rows.sum())
    assert ur.top_rated["rating"].is_monotonic_decreasing
    assert set(ur.top_rated["item_id"]) <= set(split.train.raw_items()[train_rows])
    assert not set(ur.recommended["item_id"]) & set(split.train.raw_items()[train_rows])  # unrated only
    test_items = dict(zip(split.test.raw_items()[split.test.raw_users() == 1],
                          split.test.ratings[split.test.raw_users() == 1], strict=True))
    for item, rating in zip(ur.recommended["item_id"], ur.recommended["test_rating"], strict=True):
        assert (rating == test_items[item]) if item in test_items else np.isnan(rating)


def test_report_warns_when_split_cannot_be_verified(clustered: Interactions, split) -> None:
    full = PlantedFactors().fit(clustered)
    rep = rp.build_report(full, clustered, split="random:0.2", tsne_min_ratings=NO_TSNE)
    assert not rep.split_verified
    assert any("trained on the whole dataset" in n for n in rep.notes)
    assert any("pairs the model saw in training" in n for n in rep.notes)  # 100% overlap measured
    assert "not verified" in rep.html


def test_report_for_a_bias_only_model(clustered: Interactions, split) -> None:
    from cfrec.models.baseline import Baseline

    rep = rp.build_report(Baseline().fit(split.train), clustered)
    assert set(rep.skipped) == {"training", "embeddings", "similar"}
    assert rep.baseline_metrics is None  # no point comparing the baseline with itself
    assert len(IMG_SRC.findall(rep.html)) == 4
    assert "Not shown" in rep.html


def test_synthetic_data_is_labelled(split) -> None:
    data = split.train.concat(split.test)
    synthetic = type(data)(data.users, data.items, data.ratings, data.timestamps, data.user_map, data.item_map,
                           data.rating_scale, data.item_info, None, "synthetic (ML-100K-shaped)")
    model = PlantedFactors().fit(split.train)
    rep = rp.build_report(model, synthetic, split=split, tsne_min_ratings=NO_TSNE, notes=["why synthetic"])
    assert rep.synthetic
    assert "SYNTHETIC DATA" in rep.html and "why synthetic" in rep.html
    assert "synthetic (ML-100K-shaped) (SYNTHETIC)" in rep.html


def test_write_is_atomic(tmp_path, built: rp.Report) -> None:
    path = built.write(tmp_path / "out" / "report.html")
    assert path.read_text(encoding="utf-8") == built.html
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


# ---------------------------------------------------------------------- helpers
def test_resolve_split_picks_the_matching_fold(clustered: Interactions) -> None:
    folds = make_splits(clustered, "kfold:3", seed=0)
    model = PlantedFactors().fit(folds[2].train)
    chosen, verified, notes = rp.resolve_split(model, clustered, "kfold:3")
    assert verified and chosen.name == folds[2].name and notes == []


def test_find_items_by_title_then_popular(model) -> None:
    counts = np.asarray(model.seen_.sum(axis=0)).ravel()
    by_pop = model.item_map_.ids[np.argsort(-counts, kind="stable")].tolist()
    top_up = next(i for i in by_pop if i not in (11, 21))
    assert rp.find_items(model, ["star wars", "no such film", "PULP"]) == [11, 21, top_up]
    no_titles = PlantedFactors().fit(Interactions.from_frame(_frame_without_info(model)))
    assert no_titles.item_info_ is None
    assert rp.find_items(no_titles, rp.DEFAULT_FILMS) == by_pop[:3]


def _frame_without_info(model):
    import pandas as pd

    coo = model.seen_.tocoo()
    return pd.DataFrame({"user_id": model.user_map_.ids[coo.row], "item_id": model.item_map_.ids[coo.col],
                         "rating": 4.0})


def test_similar_items_min_ratings_filter(model) -> None:
    counts = np.asarray(model.seen_.sum(axis=0)).ravel()
    cut = int(np.median(counts))
    table = rp.similar_items_table(model, 1, k=5, min_ratings=cut).neighbours
    assert len(table) == 5 and (table["n_ratings"] >= cut).all()
    unfiltered = rp.similar_items_table(model, 1, k=5).neighbours
    assert unfiltered["item_id"].tolist() == model.similar_items(1, k=5).ids.tolist()


# ---------------------------------------------------------------------- headless browser
CHECK_JS = """(function () {
  var errors = [];
  var origError = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return origError.apply(console, arguments);
  };
  window.addEventListener("error", function (e) {
    var t = e.target || {};
    errors.push("error: " + (e.message || t.src || t.href || "resource failed"));
  }, true);
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("csp: blocked " + e.blockedURI + " (" + e.violatedDirective + ")");
  });
  window.addEventListener("load", function () {
    setTimeout(function () {
      var imgs = Array.prototype.slice.call(document.images);
      var result = {
        images: imgs.length,
        widths: imgs.map(function (i) { return i.naturalWidth; }),
        broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                    .map(function (i) { return i.alt; }),
        errors: errors
      };
      var pre = document.createElement("pre");
      pre.id = "cfrec-check";
      pre.textContent = JSON.stringify(result);
      document.body.appendChild(pre);
      document.title = "cfrec-check-done";
    }, 50);
  });
})();"""

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage"]


def _instrumented(page: str) -> str:
    """A copy of the page with the check script allowed by hash in its own CSP (nothing else)."""
    digest = base64.b64encode(hashlib.sha256(CHECK_JS.encode()).digest()).decode()
    csp_old = f'content="{rp.CSP}"'
    assert csp_old in page
    page = page.replace(csp_old, f'content="{rp.CSP}; script-src \'sha256-{digest}\'"', 1)
    head_end = page.index(">", page.index("Content-Security-Policy")) + 1
    return page[:head_end] + f"<script>{CHECK_JS}</script>" + page[head_end:]


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def browser_check(page_path: Path, tmp_path: Path) -> dict:
    """Open an instrumented copy of the page in headless Chromium; return the in-page check result."""
    copy = tmp_path / f"check-{page_path.name}"
    copy.write_text(_instrumented(page_path.read_text(encoding="utf-8")), encoding="utf-8")
    proc = _chromium(["--virtual-time-budget=15000", "--dump-dom", copy.as_uri()], tmp_path / "profile-dom")
    match = re.search(r'<pre id="cfrec-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the check script did not run; chromium said:\n{proc.stderr[-3000:]}"
    return json.loads(html.unescape(match.group(1)))


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path, built: rp.Report) -> None:
    page = built.write(tmp_path / "report.html")
    result = browser_check(page, tmp_path)
    assert result["images"] == 6
    assert result["broken"] == [] and all(w > 0 for w in result["widths"]), result
    assert result["errors"] == [], result
    # keep the page and a screenshot for a person to look at
    out = artifact_dir()
    shutil.copyfile(page, out / "report.html")
    proc = _chromium([f"--screenshot={out / 'report.png'}", "--window-size=1280,4000", page.as_uri()],
                     tmp_path / "profile-shot")
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", proc.stderr[-2000:]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_browser_check_catches_broken_and_external_images(tmp_path) -> None:
    """The check itself can fail: a corrupt data URI and an external image are both reported."""
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{rp.CSP}"><title>t</title></head><body>'
            '<img alt="corrupt" src="data:image/png;base64,AAAA">'
            '<img alt="external" src="https://example.invalid/x.png"></body></html>')
    path = tmp_path / "bad.html"
    path.write_text(page, encoding="utf-8")
    result = browser_check(path, tmp_path)
    assert sorted(result["broken"]) == ["corrupt", "external"]
    assert any(e.startswith("csp: blocked https://example.invalid") for e in result["errors"]), result
