"""load_ratings: formats, column mapping, every error path (file, line, field), duplicate policies."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfrec.data.io import LoadReport, encode_ids, load_ratings
from cfrec.errors import DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def frame_rows(data) -> list[tuple]:  # noqa: ANN001
    return list(data.to_frame().itertuples(index=False, name=None))


# ---------------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------------
def test_csv_with_header(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\n1,10,4,100\n2,10,3.5,50\n1,11,5,75\n")
    data = load_ratings(f)
    assert frame_rows(data) == [(1, 10, 4.0, 100), (2, 10, 3.5, 50), (1, 11, 5.0, 75)]
    assert data.name == "r" and data.rating_scale == (3.5, 5.0)  # observed range by default
    assert data.users.dtype == np.int32 and data.timestamps.dtype == np.int64


def test_column_mapping_tsv_crlf_and_scale(tmp_path: Path) -> None:
    f = write(tmp_path / "r.tsv", "uid\tmovie\tstars\twhen\r\nu1\tm1\t1\t10\r\nu2\tm1\t5\t20\r\n")
    data = load_ratings(f, user_col="uid", item_col="movie", rating_col="stars", time_col="when",
                        rating_scale=(1, 5), name="mine")
    assert frame_rows(data) == [("u1", "m1", 1.0, 10), ("u2", "m1", 5.0, 20)]
    assert data.rating_scale == (1.0, 5.0) and data.name == "mine"


def test_headerless_file_with_sniffed_separator(tmp_path: Path) -> None:
    f = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    data = load_ratings(f, columns=["user_id", "item_id", "rating", "timestamp"])
    assert frame_rows(data) == [(196, 242, 3.0, 881250949), (186, 302, 3.0, 891717742)]


@pytest.mark.parametrize("sep", [";", "|", "::"])
def test_other_separators_are_detected(tmp_path: Path, sep: str) -> None:
    f = write(tmp_path / "r.txt", f"1{sep}2{sep}3{sep}4\n5{sep}6{sep}2.5{sep}8\n")
    data = load_ratings(f, columns=["user_id", "item_id", "rating", "timestamp"])
    assert frame_rows(data) == [(1, 2, 3.0, 4), (5, 6, 2.5, 8)]


def test_quoted_fields_and_extra_columns(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", 'user_id,title,item_id,rating\n1,"Heat, The",10,4\n2,"x",11,2\n')
    data = load_ratings(f, time_col=None)
    assert frame_rows(data) == [(1, 10, 4.0, 0), (2, 11, 2.0, 0)]


def test_missing_default_time_column_means_no_time(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,10,4\n")
    assert load_ratings(f).timestamps.tolist() == [0]


def test_iso_dates_become_unix_seconds(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\n"
                                  "1,10,4,1970-01-02T00:00:00Z\n2,10,3,2000-01-01 00:00:01\n")
    assert load_ratings(f).timestamps.tolist() == [86400, 946684801]


def test_utf8_bom_and_latin1(tmp_path: Path) -> None:
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbfuser_id,item_id,rating\nAna,1,5\n")
    assert frame_rows(load_ratings(f)) == [("Ana", 1, 5.0, 0)]
    g = write(tmp_path / "l1.csv", "user_id,item_id,rating\nJosé,1,5\n", encoding="latin-1")
    assert frame_rows(load_ratings(g, encoding="latin-1")) == [("José", 1, 5.0, 0)]


def test_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": np.array([3, 1], dtype=np.int64), "item_id": ["a", "b"],
                          "rating": np.array([0.5, 5.0], dtype=np.float32),
                          "timestamp": np.array([7, 8], dtype=np.int64)})
    frame.to_parquet(tmp_path / "r.parquet")
    data = load_ratings(tmp_path / "r.parquet", rating_scale=(0.5, 5))
    assert frame_rows(data) == [(3, "a", 0.5, 7), (1, "b", 5.0, 8)]


def test_float_ids_that_are_whole_become_ints(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": [1.0, 2.0], "item_id": [3.0, 4.0], "rating": [1, 2]}).to_parquet(
        tmp_path / "f.parquet")
    data = load_ratings(tmp_path / "f.parquet")
    assert data.user_map.is_numeric and data.raw_users().tolist() == [1, 2]


def test_encode_ids_dense_and_general_paths_agree() -> None:
    raw = np.array([50, 7, 50, 3, 7], dtype=np.int64)
    vocab, idx = encode_ids(raw)
    assert vocab.ids.tolist() == [3, 7, 50] and idx.tolist() == [2, 1, 2, 0, 1]
    big = raw * 10**12  # too sparse for a lookup table: falls back to IdMap
    vocab2, idx2 = encode_ids(big)
    assert vocab2.ids.tolist() == [3 * 10**12, 7 * 10**12, 50 * 10**12] and idx2.tolist() == idx.tolist()
    vocab3, idx3 = encode_ids(np.array(["b", "a", "b"], dtype=object))
    assert vocab3.ids.tolist() == ["a", "b"] and idx3.tolist() == [1, 0, 1]


# ---------------------------------------------------------------------------------------------
# errors: file, line, field and what was expected
# ---------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_ratings(tmp_path / "nope.csv")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder"):
        load_ratings(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    f = write(tmp_path / "e.csv", "")
    with pytest.raises(DataError, match=r"e\.csv: file is empty"):
        load_ratings(f)


def test_header_only(tmp_path: Path) -> None:
    f = write(tmp_path / "h.csv", "user_id,item_id,rating\n")
    with pytest.raises(DataError, match=r"h\.csv: no rating rows"):
        load_ratings(f)


def test_missing_column_names_it_and_lists_the_header(tmp_path: Path) -> None:
    # "user" is recognised since issue 10; "person" is not a user column name
    f = write(tmp_path / "m.csv", "person,item_id,rating\n1,2,3\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert err.value.field == "user" and err.value.line == 1
    assert "m.csv, line 1, field 'user': no user id column" in str(err.value)
    assert "['person', 'item_id', 'rating']" in str(err.value)
    assert 'user_col="NAME"' in str(err.value) and "--user-col NAME" in err.value.render("cli")


def test_headerless_file_with_too_many_fields_gets_a_hint(tmp_path: Path) -> None:
    f = write(tmp_path / "u.data", "1\t2\t3\t4\t5\n")
    with pytest.raises(DataError, match=r"line 1: the first line has 5 fields and no header") as err:
        load_ratings(f)
    assert "--columns c1,c2,c3,c4,c5" in err.value.render("cli")


def test_explicit_time_column_must_exist(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "user_id,item_id,rating\n1,2,3\n")
    with pytest.raises(DataError, match=r"field 'when': missing column"):
        load_ratings(f, time_col="when")


def test_non_numeric_rating_names_line_and_field(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,1,4\n1,2,5\n2,1,four\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert (err.value.line, err.value.field) == (4, "rating")
    assert str(err.value) == f"{f}, line 4, field 'rating': 'four' is not a rating; expected a number"
    assert err.value.value == "four"


def test_empty_rating_field(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,1,4\n1,2,\n")
    with pytest.raises(DataError, match=r"r\.csv, line 3, field 'rating': missing rating"):
        load_ratings(f)


def test_line_numbers_count_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    text = ('user_id,note,item_id,rating\n'
            '1,"two\nlines",1,4\n'   # lines 2-3
            '\n'                      # line 4, blank (pandas skips it)
            '2,x,1,3\n'               # line 5
            '3,y,1,NaN\n')            # line 6
    f = write(tmp_path / "r.csv", text)
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert err.value.line == 6 and err.value.field == "rating"


def test_headerless_line_numbers(tmp_path: Path) -> None:
    f = write(tmp_path / "r.tsv", "1\t1\t4\n1\t2\t9\n")
    with pytest.raises(DataError, match=r"line 2, field 'rating': rating 9 is outside the rating scale \[1, 5\]"):
        load_ratings(f, columns=["user_id", "item_id", "rating"], rating_scale=(1, 5))


def test_rating_outside_scale(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,1,4\n1,2,0\n")
    with pytest.raises(DataError) as err:
        load_ratings(f, rating_scale=(0.5, 5.0))
    assert err.value.line == 3 and "outside the rating scale [0.5, 5]" in str(err.value)


def test_missing_id(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,1,4\n,2,5\n")
    with pytest.raises(DataError, match=r"line 3, field 'user_id': missing id"):
        load_ratings(f)


def test_bad_timestamp(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\n1,1,4,100\n1,2,5,yesterday\n")
    with pytest.raises(DataError, match=r"line 3, field 'timestamp': timestamp 'yesterday'"):
        load_ratings(f)


def test_undecodable_bytes_name_offset_line_and_latin1(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    head = b"user_id,item_id,rating\n1,1,4\n"
    f.write_bytes(head + b"Jos\xe9,2,5\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    msg = str(err.value)
    assert err.value.line == 3
    assert f"byte offset {len(head) + 3}" in msg and 'encoding="latin-1"' in msg


def test_undecodable_byte_deep_in_a_large_file(tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    body = b"".join(b"%d,%d,3\n" % (i, i) for i in range(200_000))
    f.write_bytes(b"user_id,item_id,rating\n" + body + b"\xff,1,1\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert err.value.line == 200_002
    assert f"byte offset {len(body) + 23}" in str(err.value)


def test_ragged_row(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,1,4\n1,2,5,9,9\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert str(err.value) == (f"{f}, line 3: found 5 fields, expected 3 like the header "
                              "(user_id, item_id, rating); separator ','")
    assert "C error" not in str(err.value)


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": [1, 2], "item_id": [1, 1], "rating": [3.0, np.nan]}).to_parquet(
        tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet, field 'rating': row 2: missing rating"):
        load_ratings(tmp_path / "p.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_ratings(tmp_path / "bad.parquet")


# ---------------------------------------------------------------------------------------------
# duplicates
# ---------------------------------------------------------------------------------------------
DUPES = ("user_id,item_id,rating,timestamp\n"
         "1,10,1,300\n"   # line 2 } pair (1,10): latest is line 3
         "1,10,5,400\n"   # line 3 }
         "2,10,2,500\n"   # line 4   unique
         "1,10,3,100\n"   # line 5 } earliest of (1,10)
         "2,11,4,50\n"    # line 6 } pair (2,11), same time: file order breaks the tie
         "2,11,2,50\n")   # line 7 }


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("last", [(1, 10, 5.0, 400), (2, 10, 2.0, 500), (2, 11, 2.0, 50)]),
        ("first", [(2, 10, 2.0, 500), (1, 10, 3.0, 100), (2, 11, 4.0, 50)]),
        ("mean", [(1, 10, 3.0, 400), (2, 10, 2.0, 500), (2, 11, 3.0, 50)]),
    ],
)
def test_duplicate_policies(tmp_path: Path, policy: str, expected: list[tuple],
                            caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path / "d.csv", DUPES)
    with caplog.at_level(logging.WARNING, logger="cfrec.data.io"):
        data, report = load_ratings(f, duplicates=policy, return_report=True)
    assert frame_rows(data) == expected
    assert report == LoadReport(str(f), 6, 3, 3, policy, 2, 2,
                                columns={"user": "user_id", "item": "item_id", "rating": "rating",
                                         "time": "timestamp"},
                                header=True, sep=",", rating_scale=(1.0, 5.0),
                                scale_source="inferred")
    assert "resolved 3 duplicate (user, item) ratings" in caplog.text


def test_duplicates_error_names_both_lines(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", DUPES)
    with pytest.raises(DataError) as err:
        load_ratings(f, duplicates="error")
    assert err.value.line == 3
    assert "duplicate rating for user 1, item 10 (also at line 2)" in str(err.value)


def test_no_duplicates_report(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,1,4\n1,2,5\n")
    _, report = load_ratings(f, return_report=True)
    assert report.duplicates_resolved == 0 and report.rows == report.ratings == 2
    assert report.to_dict()["policy"] == "last"


def test_bad_arguments(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,1,4\n")
    with pytest.raises(DataError, match="duplicates policy 'newest' is not one of first, last, "
                                        "mean, error") as err:
        load_ratings(f, duplicates="newest")  # type: ignore[arg-type]
    assert "--duplicates last" in err.value.render("cli")
    with pytest.raises(DataError, match="low < high"):
        load_ratings(f, rating_scale=(5, 1))
    with pytest.raises(DataError, match="unknown text encoding 'latin-99'"):
        load_ratings(f, encoding="latin-99")


# ---------------------------------------------------------------------------------------------
# property: writing a frame and reading it back gives the same ratings
# ---------------------------------------------------------------------------------------------
ids = st.one_of(st.integers(0, 10**9),
                st.text(st.characters(categories=("L", "N")), min_size=1, max_size=6)
                .filter(lambda s: not s.strip().lstrip("+-").replace(".", "", 1).isdigit()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10),
                  st.integers(0, 2 * 10**9)),
        min_size=1, max_size=40, unique_by=lambda r: (r[0], r[1]),
    ),
    fmt=st.sampled_from(["csv", "tsv", "parquet"]),
    string_items=st.booleans(),
)
def test_round_trip(tmp_path: Path, rows: list[tuple], fmt: str, string_items: bool) -> None:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame["rating"] = frame["rating"] / 2.0  # half stars 0.5 .. 5
    if string_items:
        frame["item_id"] = "i" + frame["item_id"].astype(str)
    path = tmp_path / f"round.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="," if fmt == "csv" else "\t", index=False)
    data = load_ratings(path, rating_scale=(0.5, 5.0))
    back = data.to_frame()
    assert back["user_id"].tolist() == frame["user_id"].tolist()
    assert back["item_id"].tolist() == frame["item_id"].tolist()
    assert back["rating"].tolist() == frame["rating"].tolist()
    assert back["timestamp"].tolist() == frame["timestamp"].tolist()
    assert data.n_users == frame["user_id"].nunique()


def test_fast_and_fallback_readers_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cfrec.data import io as cio

    text = ('user_id,title,item_id,rating,timestamp\r\n'
            '1,"a, ""quoted"" title",10,4.5,2001-01-01T00:00:00Z\r\n'
            '\r\n'
            'u2,,10,3,2001-01-02\r\n'
            '3,c,x11,0.5,2001-01-03T12:00:00\r\n')
    f = write(tmp_path / "r.csv", text)
    real = cio._TextReader._read_arrow
    used = []
    monkeypatch.setattr(cio._TextReader, "_read_arrow",
                        lambda self, *a: used.append(real(self, *a) is not None) or real(self, *a))
    fast = load_ratings(f)
    assert used == [True]  # pyarrow read this one
    monkeypatch.setattr(cio._TextReader, "_read_arrow", lambda self, *a: None)
    slow = load_ratings(f)
    assert frame_rows(fast) == frame_rows(slow) == [
        ("1", "10", 4.5, 978307200), ("u2", "10", 3.0, 978393600), ("3", "x11", 0.5, 978523200)]


@pytest.mark.parametrize("ext", ["gz", "bz2", "xz", "zip"])
def test_compressed_files(tmp_path: Path, ext: str) -> None:
    import bz2
    import gzip
    import lzma
    import zipfile

    text = b"user_id\titem_id\trating\n1\t10\t4\n2\t10\t3\n2\t11\tbad\n"
    path = tmp_path / f"ratings.tsv.{ext}"
    if ext == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("ratings.tsv", text)
    else:
        path.write_bytes({"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[ext](text))
    with pytest.raises(DataError, match=r"line 4, field 'rating': 'bad' is not a rating"):
        load_ratings(path)
    good = text.replace(b"bad", b"5")
    if ext == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("ratings.tsv", good)
    else:
        path.write_bytes({"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[ext](good))
    data = load_ratings(path)
    assert data.name == "ratings" and frame_rows(data) == [(1, 10, 4.0, 0), (2, 10, 3.0, 0), (2, 11, 5.0, 0)]


def test_columns_must_name_every_field(tmp_path: Path) -> None:
    f = write(tmp_path / "u.data", "\n196\t242\t3\t881250949\n")
    with pytest.raises(DataError, match=r"u\.data, line 2: columns= names 3 fields but the line has 4"):
        load_ratings(f, columns=["user_id", "item_id", "rating"])


def test_every_row_longer_than_the_header(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n1,2,3,4\n5,6,7,8\n")
    with pytest.raises(DataError, match=r"r\.csv, line 2: found 4 fields, expected 3 like the header"):
        load_ratings(f)
