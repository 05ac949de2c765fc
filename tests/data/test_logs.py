"""Interaction logs as data: files with no ratings, weights, aggregation, header words, bad rows.

The fixtures are small synthetic files in the shapes logs come in: ``user,item``;
``user,item,timestamp``; a tab-separated CRLF play-count log (``userID artistID weight``); a
``customer_id;product_id;quantity`` file with string SKUs; a book-rating dump (``User-ID``,
``ISBN``, ``Book-Rating``, quoted ids, CR-only line ends, empty ``,,`` rows at the end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.cli import main
from cfrec.data import Interactions, load_dataset, make_synthetic_log
from cfrec.data.io import load_ratings
from cfrec.data.io.roles import column_role, header_words
from cfrec.data.options import DataOptions
from cfrec.errors import DataError
from cfrec.models import Recommender

SRC = Path(__file__).resolve().parents[2] / "src"


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def pairs(data: Interactions) -> dict[tuple, float]:
    """{(raw user, raw item): weight} of implicit data."""
    assert data.weights is not None
    return {(u.item() if hasattr(u, "item") else u, i.item() if hasattr(i, "item") else i): float(w)
            for u, i, w in zip(data.raw_users(), data.raw_items(), data.weights, strict=True)}


# ---------------------------------------------------------------------------------------------
# the four shapes of a log, loaded with no options
# ---------------------------------------------------------------------------------------------
def _events(n_users: int = 40, n_items: int = 40, n_pairs: int = 320, seed: int = 1) -> pd.DataFrame:
    log = make_synthetic_log(n_users, n_items, n_pairs, mean_events=2.0, seed=seed)
    frame = log.to_frame()
    frame["weight"] = frame["weight"].astype(int)
    return frame


def shape_user_item(folder: Path) -> Path:
    f = _events()
    rows = [f"{u},{i}" for u, i, w in zip(f.user_id, f.item_id, f.weight, strict=True)
            for _ in range(w)]  # one line per event: repeats are aggregated into counts
    return write(folder / "clicks.csv", "user,item\n" + "\n".join(rows) + "\n")


def shape_user_item_time(folder: Path) -> Path:
    f = _events(seed=2)
    lines = "\n".join(f"{u},{i},{t}" for u, i, t in zip(f.user_id, f.item_id, f.timestamp,
                                                         strict=True))
    return write(folder / "views.csv", "user,item,timestamp\n" + lines + "\n")


def shape_play_counts(folder: Path) -> Path:
    f = _events(seed=3)
    lines = "\r\n".join(f"{u}\t{i + 50}\t{w * 137}" for u, i, w in zip(f.user_id, f.item_id,
                                                                       f.weight, strict=True))
    return write(folder / "user_artists.dat", "userID\tartistID\tweight\r\n" + lines + "\r\n")


def shape_purchases(folder: Path) -> Path:
    f = _events(seed=4)
    lines = "\n".join(f"C{u:04d};{i:06d};{w}" for u, i, w in zip(f.user_id, f.item_id, f.weight,
                                                                   strict=True))
    return write(folder / "orders.txt", "customer_id;product_id;quantity\n" + lines + "\n")


SHAPES = {"user,item": shape_user_item, "user,item,timestamp": shape_user_item_time,
          "play counts (tsv, CRLF)": shape_play_counts, "purchases (;, SKUs)": shape_purchases}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_log_shapes_load_as_interactions_with_no_options(tmp_path: Path, shape: str) -> None:
    path = SHAPES[shape](tmp_path)
    data, report = load_ratings(path, return_report=True)
    assert data.feedback == "implicit" and data.is_implicit and report.feedback == "implicit"
    assert data.weights is not None and data.weights.dtype == np.float32
    assert np.all(data.ratings == 1.0) and data.rating_scale == (0.0, 1.0)
    assert "rating" not in report.columns
    key = data.users.astype(np.int64) * data.n_items + data.items
    assert len(np.unique(key)) == len(data)  # one row per (user, item) pair
    expected_agg = {"user,item": "count", "user,item,timestamp": "count",
                    "play counts (tsv, CRLF)": "sum of weight",
                    "purchases (;, SKUs)": "sum of quantity"}[shape]
    assert report.aggregation == expected_agg
    if shape == "user,item":
        raw = pd.read_csv(path)
        counts = raw.groupby(["user", "item"]).size()
        assert report.rows == len(raw) and report.duplicates_resolved == len(raw) - len(counts)
        assert pairs(data) == {k: float(v) for k, v in counts.items()}
    if shape == "purchases (;, SKUs)":
        assert data.item_map.ids.dtype.kind in "OUT"  # SKUs keep their text
        assert all(len(s) == 6 for s in data.raw_items())  # "000012" keeps its leading zeros
        assert report.columns == {"user": "customer_id", "item": "product_id",
                                  "weight": "quantity"}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_log_shapes_train_ials_and_save_from_the_command_line(
        tmp_path: Path, shape: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = SHAPES[shape](tmp_path)
    out = tmp_path / "model"
    rc = main(["train", str(path), "--model", "ials", "--out", str(out), "-p", "n_factors=4",
               "-p", "iterations=2"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert "read interactions, not ratings" in err
    model = Recommender.load(out)  # saved, and it ranks the log's own items for its users
    data = load_ratings(path)
    user = data.raw_users()[0]
    recs = model.recommend(user, k=3)
    assert len(recs.ids) == 3 and set(recs.ids) <= set(data.raw_items())

    rc = main(["stats", str(path)])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "interactions" in text and "read interactions, not ratings" in err
    how = ("number of events" if "count" in load_ratings(path, return_report=True)[1].aggregation
           else "sum of its events'")
    assert how in err


def test_python_m_cfrec_train_on_a_play_count_log(tmp_path: Path) -> None:
    path = shape_play_counts(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(SRC), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "cfrec", "train", str(path), "--model", "ials",
                           "--out", str(tmp_path / "m"), "-p", "iterations=2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m").is_dir() and "saved to" in proc.stdout


def test_stats_json_reports_the_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shape_purchases(tmp_path)
    rc = main(["stats", str(path), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out)
    assert d["feedback"] == "implicit" and d["load"]["aggregation"] == "sum of quantity"
    assert d["weight_total"] == pytest.approx(sum(_events(seed=4)["weight"]))
    assert d["weight_per_pair"]["min"] >= 1


def test_a_rating_model_refuses_interactions_naming_the_ranking_models(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shape_user_item(tmp_path)
    rc = main(["train", str(path), "--model", "biasedmf", "--out", str(tmp_path / "m")])
    _, err = capsys.readouterr()
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 1 and len(errors) == 1 and "Traceback" not in err
    assert "predicts ratings" in errors[0] and "ials" in errors[0] and "ease" in errors[0]
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------------------
# the book-rating dump
# ---------------------------------------------------------------------------------------------
def book_dump(folder: Path, n_empty: int = 300) -> Path:
    rows = ['"User-ID","ISBN","Book-Rating"',
            '"276725","034545104X","0"',
            '"276726","0155061224","5"',
            '"276727","0446520802","0"',
            '"276729","052165615X","3"',
            '"276729","0521795028","6"',
            '"276733","2080674722",""',           # a missing rating
            '"","0373760132","8"',                 # a missing user id
            '"276744","038550120X","7","extra"',   # one field too many
            '"276746","0425115801","0"']
    text = "\r".join(rows + [",,"] * n_empty) + "\r"
    return write(folder / "BX-Book-Ratings.csv", text.encode("latin-1"))


def test_book_dump_loads_with_on_bad_rows_skip_and_says_what_it_skipped(tmp_path: Path) -> None:
    path = book_dump(tmp_path)
    with pytest.raises(DataError) as err:
        load_ratings(path)  # error stays the default: a malformed row is named (the parser
    assert err.value.line == 9 and "found 4 fields" in str(err.value)  # finds ragged ones first)

    data, report = load_ratings(path, on_bad_rows="skip", return_report=True)
    assert report.columns == {"user": "User-ID", "item": "ISBN", "rating": "Book-Rating"}
    assert report.feedback == "explicit" and report.empty_rows == 300
    assert report.skipped_rows == 3 and report.skipped_lines == (7, 8, 9)
    assert len(data) == 6
    assert "0155061224" in set(data.raw_items()) and "034545104X" in set(data.raw_items())
    assert sorted(data.raw_users().tolist()) == [276725, 276726, 276727, 276729, 276729, 276746]

    # 0 means "interacted, not rated": dropped from ratings, counted; kept as interactions
    rated, r2 = load_ratings(path, on_bad_rows="skip", implicit_value=0, return_report=True)
    assert r2.unrated_rows == 3 and len(rated) == 3 and rated.rating_scale == (3.0, 6.0)
    logs, r3 = load_ratings(path, on_bad_rows="skip", feedback="implicit", return_report=True)
    assert logs.is_implicit and len(logs) == 7 and r3.unrated_rows == 0
    assert r3.skipped_rows == 2  # the rating is not read: an empty one is no longer bad


def test_book_dump_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = book_dump(tmp_path)
    rc = main(["stats", str(path)])
    _, err = capsys.readouterr()
    assert rc == 1 and "line 9" in err and err.count("error:") == 1
    rc = main(["stats", str(path), "--on-bad-rows", "skip", "--implicit-value", "0",
               "--rating-scale", "1,10"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "skipped 3 malformed row(s) (--on-bad-rows skip), at line(s) 7, 8, 9" in err
    assert "dropped 300 empty row(s)" in err and "dropped 3 row(s) rated 0" in err


# ---------------------------------------------------------------------------------------------
# header names read by their words
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "role"), [
    ("User-ID", "user"), ("userID", "user"), ("userid", "user"), ("customer_id", "user"),
    ("member", "user"), ("visitor", "user"), ("Member ID", "user"), ("reviewerID", "user"),
    ("ISBN", "item"), ("artistID", "item"), ("product", "item"), ("sku", "item"),
    ("asin", "item"), ("track", "item"), ("song", "item"), ("book", "item"),
    ("article", "item"), ("video", "item"), ("movieId", "item"), ("track_id", "item"),
    ("Book-Rating", "rating"), ("rating", "rating"), ("stars", "rating"),
    ("timestamp", "time"), ("created_at", "time"), ("unixReviewTime", "time"),
    ("count", "weight"), ("plays", "weight"), ("playcount", "weight"), ("play_count", "weight"),
    ("weight", "weight"), ("quantity", "weight"), ("qty", "weight"), ("clicks", "weight"),
    ("views", "weight"), ("n", "weight"), ("dwell_time", "weight"),
    ("title", None), ("Book-Title", None), ("session_id", None), ("id", None), ("genres", None),
])
def test_header_names_are_read_by_their_words(name: str, role: str | None) -> None:
    assert column_role(name) == role, header_words(name)


def test_two_columns_for_one_role_list_the_candidates(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "customer_id,member,sku,count\nA,1,x,2\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert "2 columns could hold the user id: 'customer_id', 'member'" in str(err.value)
    assert "--user-col customer_id" in err.value.render("cli")
    data = load_ratings(f, user_col="member")
    assert pairs(data) == {(1, "x"): 2.0}


def test_weight_column_named_explicitly_and_feedback_forced(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,item,rating,amount_paid\n1,a,4,2.5\n1,a,5,1\n2,b,3,4\n")
    explicit = load_ratings(f)  # a rating column: ratings (duplicates policy applies)
    assert not explicit.is_implicit and explicit.ratings.tolist() == [5.0, 3.0]
    weighted = load_ratings(f, weight_col="amount_paid")  # a weight column asked for: a log
    assert weighted.is_implicit and pairs(weighted) == {(1, "a"): 3.5, (2, "b"): 4.0}
    counted = load_ratings(f, feedback="implicit")  # the ratings are ignored: events counted
    assert pairs(counted) == {(1, "a"): 2.0, (2, "b"): 1.0}
    g = write(tmp_path / "g.csv", "user,item\n1,2\n")
    with pytest.raises(DataError, match="no rating column") as err:
        load_ratings(g, feedback="explicit")
    assert "--feedback implicit" in err.value.render("cli")


def test_aggregation_sums_weights_and_keeps_the_latest_time(tmp_path: Path) -> None:
    f = write(tmp_path / "plays.csv",
              "user,track,plays,ts\nu1,t1,3,100\nu2,t1,1,50\nu1,t1,2,300\nu1,t2,7,10\nu1,t1,1,200\n")
    data, report = load_ratings(f, return_report=True)
    assert report.duplicates_resolved == 2 and report.rows == 5 and report.ratings == 3
    frame = data.to_frame()
    assert frame.values.tolist() == [["u1", "t1", 1.0, 300, 6.0], ["u2", "t1", 1.0, 50, 1.0],
                                     ["u1", "t2", 1.0, 10, 7.0]]  # first-seen order kept
    with pytest.raises(DataError, match="weight -2 is negative") as err:
        load_ratings(write(tmp_path / "neg.csv", "user,item,count\n1,2,3\n1,3,-2\n"))
    assert err.value.line == 3


def test_string_ids_keep_their_exact_text(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,isbn\n007,0001\n7,0001\n0007,1\n")
    data = load_ratings(f)
    assert set(data.raw_users()) == {"007", "7", "0007"}
    assert set(data.raw_items()) == {"0001", "1"}


def test_cr_only_line_ends_quotes_and_separators_inside_quotes(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv",
              'visitor,article,dwell_time\r"v,1","a ""1""",12.5\r"v2",a2,3\r\r"v,1",a2,1\r')
    data = load_ratings(f)
    assert pairs(data) == {("v,1", 'a "1"'): 12.5, ("v2", "a2"): 3.0, ("v,1", "a2"): 1.0}


def test_headerless_two_fields_are_user_and_item(tmp_path: Path) -> None:
    data, report = load_ratings(write(tmp_path / "r.tsv", "1\t5\n1\t5\n2\t6\n"),
                                return_report=True)
    assert not report.header and data.is_implicit and pairs(data) == {(1, 5): 2.0, (2, 6): 1.0}


def test_skip_names_the_first_lines_and_counts_every_bad_row(tmp_path: Path) -> None:
    good = "".join(f"u{k},i{k % 7},{k % 3 + 1}\n" for k in range(40))
    bad = "".join(f"u{k},,1\n" for k in range(9))  # missing item ids
    f = write(tmp_path / "r.csv", "user,item,count\n" + good + bad + "u1,i1,x\nu1\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert err.value.line == 52 and "found 1 field" in str(err.value)  # the parser's first
    with pytest.raises(DataError) as err:
        load_ratings(write(tmp_path / "s.csv", "user,item,count\n" + good + bad))
    assert err.value.line == 42 and "missing id" in str(err.value)
    data, report = load_ratings(f, on_bad_rows="skip", return_report=True)
    assert report.skipped_rows == 11 and report.skipped_lines == (42, 43, 44, 45, 46)
    assert sum(data.weights) == sum(k % 3 + 1 for k in range(40))


def test_parquet_log(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": ["a", "a", "b"], "product_id": ["001", "001", "002"],
                          "qty": [1, 2, 5]})
    f = tmp_path / "orders.parquet"
    frame.to_parquet(f)
    data, report = load_ratings(f, return_report=True)
    assert pairs(data) == {("a", "001"): 3.0, ("b", "002"): 5.0}
    assert report.aggregation == "sum of qty"


def test_data_options_carry_the_new_options(tmp_path: Path) -> None:
    opts = DataOptions.from_strings(feedback="IMPLICIT", weight_col="plays", implicit_value="0",
                                    on_bad_rows="skip")
    assert opts == DataOptions(feedback="implicit", weight_col="plays", implicit_value=0.0,
                               on_bad_rows="skip")
    with pytest.raises(DataError, match="feedback 'maybe' is not one of auto, explicit, implicit"):
        DataOptions.from_strings(feedback="maybe")
    with pytest.raises(DataError, match="implicit value 'zero' is not a number"):
        DataOptions.from_strings(implicit_value="zero")
    f = write(tmp_path / "r.csv", "user,item,plays\n1,2,3\n1,2,4\n")
    data = load_dataset(f, options=opts)
    assert pairs(data) == {(1, 2): 7.0}


def test_movielens_read_as_a_log(ml100k_dir: Path) -> None:
    ratings = load_dataset("ml-100k", data_home=ml100k_dir.parent)
    data, report = load_dataset("ml-100k", data_home=ml100k_dir.parent, feedback="implicit",
                                return_report=True)
    assert data.is_implicit and len(data) == 100_000 and report.feedback == "implicit"
    assert np.all(data.weights == 1.0) and np.array_equal(data.items, ratings.items)
    assert data.item_info is not None  # titles kept
    kept = ratings.as_implicit(weight="rating")
    assert np.array_equal(kept.weights, ratings.ratings) and kept.as_implicit() is kept
    with pytest.raises(DataError, match="data options apply to rating files"):
        load_dataset("ml-100k", data_home=ml100k_dir.parent, feedback="implicit", sep=",")
