"""`cfrec train`, `recommend` and `similar` end to end on ML-100K's u1 fold, plus their error paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.cli import main
from cfrec.models.base import Recommender
from cfrec.models.registry import model_class

#: Quick settings for the torch models (slow tests: they still take seconds each on a shared CPU).
TORCH_QUICK = {
    "mf": ["--epochs", "2"],
    "svdpp": ["--epochs", "2"],
    "neumf": ["--epochs", "2"],
}


#: Trained once per module: the closed-form models are fast enough for the unit suite.
FAST = {"baseline": [], "als": ["--param", "iterations=3"]}
MODELS = list(FAST)
FACTOR_MODELS = [m for m in MODELS if m != "baseline"]
TORCH_MODELS = list(TORCH_QUICK)


def test_the_models_these_tests_use_are_registered():
    for name in [*MODELS, *TORCH_MODELS]:
        assert model_class(name).name == name


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    return lines[0]


def u1_train(ml100k_dir: Path) -> pd.DataFrame:
    return pd.read_csv(ml100k_dir / "u1.base", sep="\t", names=["user", "item", "rating", "ts"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ml100k_dir) -> dict[str, Path]:
    """Each available model trained once on u1 (quick settings), by model name."""
    out = {}
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse env fixture is not active yet
        mp.setenv("CFREC_DATA_HOME", str(ml100k_dir.parent))
        for name in MODELS:
            folder = root / name
            rc = main(["train", "ml-100k", "--model", name, "--split", "u1", "--out", str(folder), "--json",
                       *FAST[name]])
            assert rc == 0, name
            out[name] = folder
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCH_MODELS)
def test_train_torch_model_end_to_end(name, tmp_path, capsys, ml100k_dir):
    rc, out, err = run(capsys, "train", "ml-100k", "--model", name, "--split", "u1", "--seed", "1",
                       "--out", tmp_path / "m", "--json", *TORCH_QUICK[name])
    assert rc == 0, err
    summary = json.loads(out)
    assert 1 <= summary["epochs_run"] <= 2 and summary["params"]["seed"] == 1
    assert "epoch   1/2" in err  # one progress line per epoch (stderr in --json mode)
    assert summary["test"]["rmse"] < 1.05
    rc, out, err = run(capsys, "recommend", tmp_path / "m", "--user", "1", "-k", "5", "--json")
    assert rc == 0, err
    assert len(json.loads(out)["recommendations"]) == 5
    rc, out, err = run(capsys, "similar", tmp_path / "m", "--item", "50", "-k", "3", "--json")
    assert rc == 0, err
    assert len(json.loads(out)["neighbours"]) == 3


@pytest.mark.parametrize(("args", "fragment"), [
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--model", "baseline", "--param", "n_factors=8"], "no hyperparameter 'n_factors'"),
    (["--model", "baseline", "--param", "reg_user=abc"], "Baseline reg_user must be a finite number >= 0, got 'abc'"),
    (["--model", "als", "--param", "reg=-1"], "ALS reg must be a finite number >= 0, got -1.0"),
    (["--model", "baseline", "--param", "reg_user"], "expected NAME=VALUE"),
    (["--model", "baseline", "--epochs", "3"], "--epochs: baseline (Baseline) has no hyperparameter 'epochs'"),
    (["--model", "baseline", "--preset", "lab"], "has no preset 'lab'"),
    (["--model", "baseline", "--split", "folds"], "yields 5 folds"),
    (["--model", "baseline", "--split", "sideways"], "bad split spec"),
    ([], "choose a model with --model"),
])
def test_train_errors_are_one_line(args, fragment, tmp_path, capsys, ml100k_dir):
    rc, out, err = run(capsys, "train", "ml-100k", "--out", tmp_path / "m", *args)
    assert rc == 1
    assert fragment in one_error_line(err)
    assert not (tmp_path / "m").exists()


def test_train_params_json_conflict_and_model_from_file(tmp_path, capsys, ml100k_dir):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"model": "baseline", "params": {"reg_user": 3, "reg_item": 7}}))
    rc, out, err = run(capsys, "train", "ml-100k", "--params-json", best, "--param", "reg_item=9",
                       "--out", tmp_path / "m", "--json")
    assert rc == 0, err
    params = json.loads(out)["params"]
    assert params["reg_user"] == 3.0 and params["reg_item"] == 9.0  # --param overrides the file
    if "als" in MODELS:
        rc, _, err = run(capsys, "train", "ml-100k", "--model", "als", "--params-json", best,
                         "--out", tmp_path / "m2")
        assert rc == 1 and "holds parameters for 'baseline'" in one_error_line(err)


# ---------------------------------------------------------------------- recommend
def test_recommend_known_user_json(trained, capsys, ml100k_dir):
    train = u1_train(ml100k_dir)
    mine = train[train["user"] == 1]
    rated = set(mine["item"])
    rc, out, err = run(capsys, "recommend", trained["baseline"], "--user", "1", "-k", "7", "--json")
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["known"] is True and obj["user"] == 1 and obj["n_train_ratings"] == len(rated)
    recs = obj["recommendations"]
    assert len(recs) == 7
    assert not {r["item_id"] for r in recs} & rated  # rated items are excluded
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True) and all(1 <= s <= 5 for s in scores)
    assert all(r["title"] and r["title"] != str(r["item_id"]) for r in recs)
    # the user's own top-rated training items, best first, straight from u1.base
    top = obj["rated"]
    assert len(top) == 5 and all(t["item_id"] in rated for t in top)
    assert [t["rating"] for t in top] == sorted(mine["rating"], reverse=True)[:5]
    # the same ranking the model gives through the library
    model = Recommender.load(trained["baseline"])
    assert [r["item_id"] for r in recs] == model.recommend(1, 7).ids.tolist()


def test_recommend_include_seen_marks_rated_items(trained, capsys, ml100k_dir):
    rated = set(u1_train(ml100k_dir).query("user == 13")["item"])
    rc, out, _ = run(capsys, "recommend", trained["baseline"], "--user", "13", "-k", "30",
                     "--include-seen", "--json")
    assert rc == 0
    recs = json.loads(out)["recommendations"]
    assert [r["seen"] for r in recs] == [r["item_id"] in rated for r in recs]
    assert any(r["seen"] for r in recs)


def test_recommend_new_user_gets_the_support_shrunk_bias_list(trained, capsys, ml100k_dir):
    rc, out, _ = run(capsys, "recommend", trained["baseline"], "--user", "99999", "-k", "5", "--json")
    assert rc == 0
    obj = json.loads(out)
    assert obj["known"] is False and obj["fallback"] == "popular"
    model = Recommender.load(trained["baseline"])
    counts = np.bincount(model.seen_.indices, minlength=len(model.item_map_))
    shrunk = model.item_bias_ * counts / (counts + np.median(counts[counts > 0]))  # support-aware
    by_bias = model.item_map_.to_raw(np.argsort(-shrunk, kind="stable")[:5]).tolist()
    assert [r["item_id"] for r in obj["recommendations"]] == by_bias
    assert obj["fallback_label"] == model.cold_start_label
    rc, out, _ = run(capsys, "recommend", trained["baseline"], "--user", "99999", "-k", "3")
    assert rc == 0 and "new user" in out and "not personalised" in out


def test_recommend_degrades_without_dataset(trained, capsys, tmp_path, ml100k_dir):
    rc, out, err = run(capsys, "recommend", trained["baseline"], "--user", "1", "-k", "3",
                       "--dataset", tmp_path / "gone.csv")
    assert rc == 0, err
    assert "note:" in out and "--dataset" in out
    assert "recommended for user 1" in out
    rc, out, _ = run(capsys, "recommend", trained["baseline"], "--user", "1", "--history", "0", "--json")
    assert rc == 0 and json.loads(out)["rated"] is None


def test_recommend_missing_model_dir(tmp_path, capsys):
    rc, _, err = run(capsys, "recommend", tmp_path / "nothing", "--user", "1")
    assert rc == 1 and "not a model folder" in one_error_line(err)


# ---------------------------------------------------------------------- similar
def test_similar_title_query_picks_most_rated_match(trained, capsys, ml100k_dir):
    name = FACTOR_MODELS[0]
    rc, out, err = run(capsys, "similar", trained[name], "--item", "STAR", "-k", "4", "--json")
    assert rc == 0, err
    obj = json.loads(out)
    matches = obj["matches"]
    assert len(matches) > 1 and all("star" in m["title"].lower() for m in matches)
    # titles holding "star" as a word first, each group most-rated first (cfrec.catalog's order)
    from cfrec.catalog import normalize_title

    as_word = [" star " in f" {normalize_title(m['title'])} " for m in matches]
    assert as_word == sorted(as_word, reverse=True)
    word_counts = [m["n_ratings"] for m, w in zip(matches, as_word, strict=True) if w]
    assert word_counts == sorted(word_counts, reverse=True)
    assert obj["item"] == matches[0] and obj["item"]["item_id"] == 50  # Star Wars (1977), the most rated
    assert obj["item"]["n_ratings"] == int((u1_train(ml100k_dir)["item"] == 50).sum())
    neigh = obj["neighbours"]
    assert len(neigh) == 4 and 50 not in [n["item_id"] for n in neigh]
    sims = [n["similarity"] for n in neigh]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)


def test_similar_exact_id_wins_and_min_ratings_filters(trained, capsys, ml100k_dir):
    name = FACTOR_MODELS[0]
    rc, out, _ = run(capsys, "similar", trained[name], "--item", "172", "--json", "--min-ratings", "100")
    assert rc == 0
    obj = json.loads(out)
    assert obj["item"]["item_id"] == 172 and len(obj["matches"]) == 1
    assert len(obj["neighbours"]) == 5 and all(n["n_ratings"] >= 100 for n in obj["neighbours"])
    rc, out, _ = run(capsys, "similar", trained[name], "--item", "star wars")
    assert rc == 0 and "most similar to Star Wars (1977)" in out


def test_similar_errors(trained, capsys, tmp_path, ml100k_dir):
    rc, _, err = run(capsys, "similar", trained["baseline"], "--item", "no such film at all")
    assert rc == 1 and "no item id or title matches 'no such film at all'" in one_error_line(err)
    rc, _, err = run(capsys, "similar", trained["baseline"], "--item", "star wars")
    assert rc == 1 and "no item embeddings" in one_error_line(err)
    rc, _, err = run(capsys, "similar", tmp_path / "nothing", "--item", "1")
    assert rc == 1 and "not a model folder" in one_error_line(err)


def test_ratings_file_without_titles(tiny, tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    tiny.to_frame().to_csv(path, index=False)
    rc, out, err = run(capsys, "train", path, "--model", "baseline", "--split", "none", "--out", tmp_path / "m")
    assert rc == 0, err
    rc, out, err = run(capsys, "recommend", tmp_path / "m", "--user", "1", "-k", "2", "--json")
    assert rc == 0, err
    obj = json.loads(out)
    # user 1 rated items 10, 11, 12; the dataset is reloaded from its path for the history
    assert {r["item_id"] for r in obj["recommendations"]} == {13, 14}
    assert all(r["title"] is None for r in obj["recommendations"])
    assert [r["item_id"] for r in obj["rated"]] == [11, 10, 12]  # ratings 5, 5, 1; ties: most recent first
    rc, out, _ = run(capsys, "recommend", tmp_path / "m", "--user", "1", "-k", "2")
    assert rc == 0 and "title" not in out
    rc, _, err = run(capsys, "similar", tmp_path / "m", "--item", "star")
    assert rc == 1 and "no titles to search" in one_error_line(err)


@pytest.mark.parametrize("model", ["als", "neumf", "bpr", "ials"])
def test_a_bad_hyperparameter_fails_before_any_data_is_read(model, tmp_path, capsys, monkeypatch):
    import cfrec.cli.models as cli_models

    def no_loading(*args, **kwargs):
        raise AssertionError("data was read before the hyperparameters were checked")

    monkeypatch.setattr(cli_models, "load_data", no_loading)
    monkeypatch.setenv("CFREC_DATA_HOME", str(tmp_path / "empty"))  # nothing to read or download
    rc, out, err = run(capsys, "train", "ml-100k", "--model", model, "--param", "reg=-1", "--out", tmp_path / "m")
    assert rc == 1
    line = one_error_line(err)
    assert re.search(r"\b\w+ reg must be a finite number >=? 0, got -1\.0$", line), line


def test_predict_takes_titles_as_similar_does_and_refuses_what_matches_nothing(trained, capsys) -> None:
    rc, out, err = run(capsys, "predict", trained["als"], "--user", "42", "--item", "star wars", "--json")
    assert rc == 0, err
    pred = json.loads(out)["predictions"][0]
    assert pred["item_id"] == 50 and pred["how"] == "personalised"
    rc, out, err = run(capsys, "predict", trained["als"], "--user", "42", "--item", "no such film qqzx")
    assert rc == 1 and "no item id or title matches 'no such film qqzx'" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    rc, out, _ = run(capsys, "predict", trained["als"], "--user", "42", "--item", "99999", "--json")
    assert rc == 0 and json.loads(out)["predictions"][0]["how"].startswith("unknown item")


def test_predict_help_says_what_a_ranking_model_shows(capsys) -> None:
    assert main(["predict", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "ranking model" in text and "not a rating estimate" in text and "ranking score)" not in text
