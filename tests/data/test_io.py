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
    from cfrec.data.io import readers as cio

    text = ('user_id,title,item_id,rating,timestamp\r\n'
            '1,"a, ""quoted"" title",10,4.5,2001-01-01T00:00:00Z\r\n'
            '\r\n'
            'u2,,10,3,2001-01-02\r\n'
            '3,c,x11,0.5,2001-01-03T12:00:00\r\n')
    f = write(tmp_path / "r.csv", text)
    real = cio._TextReader._arrow_batches
    used = []

    def arrow(self: cio._TextReader, *a: object) -> object:
        used.append(True)
        return real(self, *a)

    monkeypatch.setattr(cio._TextReader, "_arrow_batches", arrow)
    fast = load_ratings(f)
    assert used == [True]  # pyarrow read this one

    def refuse(self: cio._TextReader, *a: object) -> object:
        raise cio.UseAnotherParser("refused")
        yield  # a generator, like the real one

    monkeypatch.setattr(cio._TextReader, "_arrow_batches", refuse)
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


# ---------------------------------------------------------------------------------------------
# column detection (issue 10, item 1)
# ---------------------------------------------------------------------------------------------
ALIASES = {
    "user": ["user", "user_id", "userid", "userId", "uid", "UserID", "customer_id"],
    "item": ["item", "item_id", "itemid", "movieId", "movie_id", "MovieID", "product_id", "iid"],
    "rating": ["rating", "ratings", "score", "stars", "Rating"],
    "time": ["timestamp", "time", "ts", "date", "datetime"],
}


@pytest.mark.parametrize("role", list(ALIASES))
def test_every_header_alias_is_recognised(tmp_path: Path, role: str) -> None:
    for k, alias in enumerate(ALIASES[role]):
        names = {"user": "user", "item": "item", "rating": "rating", "time": "timestamp"}
        names[role] = f"  {alias.upper() if k % 2 else alias} "  # any case, spaces around
        header = ",".join(names[r] for r in ("user", "item", "rating", "time"))
        f = write(tmp_path / f"{role}{k}.csv", f"{header}\n1,10,4,100\n2,10,3,200\n")
        data, report = load_ratings(f, return_report=True)
        assert report.columns[role] == names[role].strip(), alias
        assert frame_rows(data) == [(1, 10, 4.0, 100), (2, 10, 3.0, 200)]


def test_header_with_spaces_and_crlf(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user_id, item_id, rating\r\n1, 2, 3\r\n2, 2, 4.5\r\n")
    data = load_ratings(f)
    assert frame_rows(data) == [(1, 2, 3.0, 0), (2, 2, 4.5, 0)]
    assert data.user_map.is_numeric and data.item_map.is_numeric


def test_semicolon_separated_with_user_item_rating_header(tmp_path: Path) -> None:
    f = write(tmp_path / "r.txt", "User;Item;Rating\r\nann;x;4\r\nbob;y;2\r\n")
    _, report = load_ratings(f, return_report=True)
    assert report.sep == ";" and report.columns == {"user": "User", "item": "Item",
                                                    "rating": "Rating"}


@pytest.mark.parametrize(("name", "text", "sep"), [
    ("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n", "::"),
    ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n", "\t"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
                    "2,1,0.5,964982224\n", ","),
])
def test_movielens_format_files_load_with_no_options(tmp_path: Path, name: str, text: str,
                                                     sep: str) -> None:
    f = write(tmp_path / name, text)
    data, report = load_ratings(f, return_report=True)
    rows = [tuple(line.split(sep)) for line in text.splitlines()]
    if report.header:
        rows = rows[1:]
    assert frame_rows(data) == [(int(u), int(i), float(r), int(t)) for u, i, r, t in rows]
    assert report.sep == sep and report.header == (name == "ratings.csv")


def test_headerless_file_is_read_in_order_and_said_once(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path / "r.csv", "1,10,4\n2,10,3.5\n")
    with caplog.at_level(logging.INFO, logger="cfrec.data.io"):
        data, report = load_ratings(f, return_report=True)
    assert frame_rows(data) == [(1, 10, 4.0, 0), (2, 10, 3.5, 0)] and not report.header
    headerless = [r for r in caplog.records if "no header line" in r.getMessage()]
    assert len(headerless) == 1 and headerless[0].levelno == logging.WARNING
    assert "user, item, rating" in headerless[0].getMessage()


def test_headerless_iso_dates(tmp_path: Path) -> None:
    f = write(tmp_path / "r.tsv", "1\t10\t4\t1970-01-02\n2\t10\t3\t1970-01-03T00:00:00Z\n")
    assert load_ratings(f).timestamps.tolist() == [86400, 172800]


def test_ambiguous_header_lists_the_candidates_and_the_option(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,UserID,item,rating\n1,7,10,4\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert err.value.line == 1 and err.value.field == "user"
    assert "2 columns could hold the user id: 'user', 'UserID'" in str(err.value)
    assert 'user_col="user"' in str(err.value)
    assert "--user-col user" in err.value.render("cli") and "user_col" not in err.value.render("cli")
    assert err.value.value == ["user", "UserID"]
    # the explicit name resolves it, in any case
    data = load_ratings(f, user_col="userid")
    assert data.raw_users().tolist() == [7]


def test_explicit_columns_win_over_detection(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,item,rating,score\n1,10,4,0.25\n")
    with pytest.raises(DataError, match="2 columns could hold the rating"):
        load_ratings(f)
    assert load_ratings(f, rating_col="score").ratings.tolist() == [0.25]
    # a role may name a column that detection would give another role
    swapped = load_ratings(f, user_col="item", item_col="user", rating_col="rating")
    assert frame_rows(swapped) == [(10, 1, 4.0, 0)]
    with pytest.raises(DataError, match="given for both the user and the item"):
        load_ratings(f, user_col="user", item_col="USER", rating_col="rating")


def test_time_col_false_ignores_time(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,item,rating,date\n1,10,4,not a date\n")
    with pytest.raises(DataError, match="timestamp 'not a date' is neither"):
        load_ratings(f)
    data, report = load_ratings(f, time_col=False, return_report=True)
    assert data.timestamps.tolist() == [0] and "time" not in report.columns


def test_columns_option_names_a_headerless_file(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "10,1,4,5\n11,2,3,6\n")
    data = load_ratings(f, columns=["movie", "who", "stars", "x"], user_col="who",
                        item_col="movie")
    assert frame_rows(data) == [(1, 10, 4.0, 0), (2, 11, 3.0, 0)]


def test_ids_written_with_leading_zeros_stay_text(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,item,rating\n007,1,4\n7,1,3\n")
    data = load_ratings(f)
    assert data.raw_users().tolist() == ["007", "7"] and len(data) == 2  # two users, no merge
    g = write(tmp_path / "s.csv", "user,item,rating\n7,1,4\n-3,1,3\n")
    assert load_ratings(g).raw_users().tolist() == [7, -3]


# ---------------------------------------------------------------------------------------------
# errors a person can act on (issue 10, item 3)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "label"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
    (b"GIF89a\x01\x00", "GIF"),
    (b"%PDF-1.7\n%\xe2\xe3", "PDF"),
    (b"\x7fELF\x02\x01\x01\x00", "ELF executable"),
    (b"SQLite format 3\x00\x10\x00", "SQLite database"),
])
def test_binary_files_are_named_not_blamed_on_the_encoding(tmp_path: Path, content: bytes,
                                                           label: str) -> None:
    f = tmp_path / "ratings.csv"
    f.write_bytes(content + bytes(range(256)) * 4)
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert str(err.value) == f"{f}: not a text file (looks like {label})"
    assert "encoding" not in str(err.value)


def test_nul_bytes_and_control_bytes_are_binary(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_bytes(b"user,item,rating\n1,2,3\n\x00\x01\x02")
    with pytest.raises(DataError, match=r"line 3: not a text file \(a NUL byte at byte offset 23"):
        load_ratings(f)
    f.write_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 8, 14, 15]) * 20)
    with pytest.raises(DataError, match="control bytes"):
        load_ratings(f)


def test_archives_that_are_not_a_ratings_file(tmp_path: Path) -> None:
    import gzip
    import zipfile

    two = tmp_path / "two.csv"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "user,item,rating\n1,2,3\n")
        zf.writestr("b.csv", "x")
    with pytest.raises(DataError, match=r"not a text file \(looks like a ZIP archive holding 2 "
                                        r"files, e\.g\. a\.csv, b\.csv\)"):
        load_ratings(two)
    xlsx = tmp_path / "r.xlsx"
    with zipfile.ZipFile(xlsx, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(DataError, match=r"looks like an Excel workbook\); save the sheet as CSV"):
        load_ratings(xlsx)
    broken = tmp_path / "r.csv.gz"
    broken.write_bytes(gzip.compress(b"user,item,rating\n" * 100)[:25])
    with pytest.raises(DataError, match=r"not a text file \(looks like gzip, but it does not "
                                        r"decompress"):
        load_ratings(broken)
    png_inside = tmp_path / "img.csv.gz"
    png_inside.write_bytes(gzip.compress(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50))
    with pytest.raises(DataError, match=r"not a text file once decompressed \(looks like PNG\)"):
        load_ratings(png_inside)
    single = tmp_path / "one.bin"  # a single-file zip is read whatever its suffix
    with zipfile.ZipFile(single, "w") as zf:
        zf.writestr("r.csv", "user,item,rating\n1,2,3\n")
    assert len(load_ratings(single)) == 1


def test_utf16_file_gets_the_encoding_option(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_bytes("user,item,rating\n1,2,3\n2,2,4\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16 text") as err:
        load_ratings(f)
    assert "--encoding utf-16" in err.value.render("cli")
    assert frame_rows(load_ratings(f, encoding="utf-16")) == [(1, 2, 3.0, 0), (2, 2, 4.0, 0)]


@pytest.mark.parametrize("literal", ["nan", "NaN", "NA", "five", "inf", "-inf", "null", "N/A"])
def test_non_numbers_in_the_rating_column_are_named(tmp_path: Path, literal: str) -> None:
    f = write(tmp_path / "r.csv", f"user,item,rating\n1,1,4\n1,2,{literal}\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert str(err.value) == (f"{f}, line 3, field 'rating': {literal!r} is not a rating; "
                              "expected a number")
    assert "empty" not in str(err.value) and err.value.value == literal


def test_empty_rating_on_line_3_says_empty(tmp_path: Path) -> None:
    for sep in (",", "\t", "::"):
        f = write(tmp_path / "r.txt", f"1{sep}1{sep}4\n1{sep}2{sep}5\n1{sep}3{sep}\n")
        with pytest.raises(DataError) as err:
            load_ratings(f)
        assert (err.value.line, err.value.field) == (3, "rating"), sep
        assert "missing rating (the field is empty)" in str(err.value)


def test_short_row_names_the_field_counts(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,item,rating,timestamp\n1,1,4,5\n1,2\n2,2,3,3\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert str(err.value) == (f"{f}, line 3: found 2 fields, expected 4 like the header "
                              "(user, item, rating, timestamp); separator ','")
    assert (err.value.value, err.value.expected) == (2, "4 fields")


def test_ragged_row_found_by_the_fallback_parser(tmp_path: Path) -> None:
    # a quoted newline sends the file to pandas; its ragged row is still named by line
    f = write(tmp_path / "r.csv", 'user,note,item,rating\n1,"a\nb",1,4\n2,x,1,3,3\n')
    with pytest.raises(DataError, match=r"line 4: found 5 fields, expected 4 like the header"):
        load_ratings(f)


def test_declared_scale_is_enforced_and_inferred_scale_is_reported(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path / "r.csv", "user,item,rating\n1,1,4\n1,2,9\n")
    with pytest.raises(DataError) as err:
        load_ratings(f, rating_scale=(1, 5))
    assert (err.value.line, err.value.field) == (3, "rating")
    assert "rating 9 is outside the rating scale [1, 5]" in str(err.value)
    assert "--rating-scale 1,9" in err.value.render("cli")
    with caplog.at_level(logging.INFO, logger="cfrec.data.io"):
        data, report = load_ratings(f, return_report=True)
    assert data.rating_scale == (4.0, 9.0) and report.scale_source == "inferred"
    assert report.rating_scale == (4.0, 9.0)
    assert sum("observed range [4, 9]" in r.getMessage() for r in caplog.records) == 1
    _, given = load_ratings(f, rating_scale=(1, 10), return_report=True)
    assert given.scale_source == "given" and given.rating_scale == (1.0, 10.0)


def test_wrong_encoding_names_the_line_and_the_option(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,item,rating\nAna,1,5\nJosé,2,4\n", encoding="latin-1")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    assert err.value.line == 3 and "cannot decode byte 0xe9" in str(err.value)
    assert 'encoding="latin-1"' in str(err.value)
    assert "--encoding latin-1" in err.value.render("cli")
    assert load_ratings(f, encoding="latin-1").raw_users().tolist() == ["Ana", "José"]
    with pytest.raises(DataError, match=r"line 3: cannot decode byte 0xe9 .* as ascii"):
        load_ratings(f, encoding="ascii")


def test_decimal_comma_is_pointed_out(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user;item;rating\n1;2;3,5\n2;2;4\n")
    with pytest.raises(DataError, match=r"line 2, field 'rating': '3,5' is not a rating; expected "
                                        r"a number \(a decimal comma"):
        load_ratings(f)


def test_only_blank_lines(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "\n  \r\n\n")
    with pytest.raises(DataError, match="file is empty"):
        load_ratings(f)
    g = write(tmp_path / "h.csv", "user,item,rating\r\n\r\n\r\n")
    with pytest.raises(DataError, match="no rating rows after the header"):
        load_ratings(g)


def test_no_rating_column_lists_the_recognised_names(tmp_path: Path) -> None:
    f = write(tmp_path / "tags.csv", "userId,movieId,tag,timestamp\n1,2,funny,3\n")
    with pytest.raises(DataError) as err:
        load_ratings(f, feedback="explicit")
    msg = err.value.render("cli")
    assert "line 1, field 'rating': no rating column: the header has ['userId', 'movieId', " in msg
    assert "rating, Book-Rating, score, stars" in msg and "--rating-col NAME" in msg
    assert "--feedback implicit" in msg
    # without feedback="explicit" the same file is a log of interactions
    data = load_ratings(f)
    assert data.feedback == "implicit" and data.weights.tolist() == [1.0]


def test_duplicates_error_hint_and_counts(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", DUPES)
    with pytest.raises(DataError) as err:
        load_ratings(f, duplicates="error")
    assert "--duplicates last" in err.value.render("cli")
    assert 'duplicates="last"' in str(err.value)
    for policy, kept in (("first", 3), ("last", 3), ("mean", 3)):
        data, report = load_ratings(f, duplicates=policy, return_report=True)
        assert (report.rows, report.ratings, report.duplicates_resolved) == (6, kept, 3)
        assert len(data) == kept and report.to_dict()["policy"] == policy


def test_data_error_carries_what_the_cli_needs(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "user,item,rating\n1,1,4\n1,2,five\n")
    with pytest.raises(DataError) as err:
        load_ratings(f)
    e = err.value
    assert (e.path, e.line, e.field, e.value, e.expected) == (str(f), 3, "rating", "five",
                                                              "a number")
    assert e.reason == "'five' is not a rating; expected a number" and e.location() == (
        f"{f}, line 3, field 'rating'")
    assert isinstance(e, ValueError) and e.render("python") == str(e)


# ---------------------------------------------------------------------------------------------
# data options defined once (issue 10, item 2, data half)
# ---------------------------------------------------------------------------------------------
def test_every_data_option_has_one_flag() -> None:
    from dataclasses import fields

    from cfrec.data.options import DATA_OPTIONS, DataOptions

    assert [f.name for f in fields(DataOptions)] == list(DATA_OPTIONS)
    assert {k: v.flag for k, v in DATA_OPTIONS.items()} == {
        "sep": "--sep", "columns": "--columns", "user_col": "--user-col",
        "item_col": "--item-col", "rating_col": "--rating-col", "time_col": "--time-col",
        "rating_scale": "--rating-scale", "encoding": "--encoding", "duplicates": "--duplicates",
        "weight_col": "--weight-col", "feedback": "--feedback", "implicit_value": "--implicit-value",
        "on_bad_rows": "--on-bad-rows", "item_features": "--item-features",
        "user_features": "--user-features", "release_features": "--no-release-features",
        "max_input_size": "--max-input-size"}
    assert DATA_OPTIONS["rating_scale"].metavar == "LOW,HIGH"
    assert DATA_OPTIONS["duplicates"].metavar == "first|last|mean|error"
    assert all(spec.help for spec in DATA_OPTIONS.values())


def test_data_options_from_command_line_text(tmp_path: Path) -> None:
    from cfrec.data.options import DataOptions

    opts = DataOptions.from_strings(sep="tab", columns="u, i ,r", user_col="u", item_col="i",
                                    rating_col="r", time_col="none", rating_scale="1,5",
                                    encoding="latin-1", duplicates="MEAN")
    assert opts == DataOptions(sep="\t", columns=("u", "i", "r"), user_col="u", item_col="i",
                               rating_col="r", time_col=False, rating_scale=(1.0, 5.0),
                               encoding="latin-1", duplicates="mean")
    assert opts.to_kwargs()["columns"] == ["u", "i", "r"] and not opts.is_default()
    assert DataOptions().to_kwargs() == {} and DataOptions().is_default()
    assert DataOptions.from_strings(sep=None, rating_scale=None) == DataOptions()
    f = write(tmp_path / "r.tsv", "1\t10\t4\n2\t10\t2\n1\t10\t2\n", encoding="latin-1")
    data = load_ratings(f, **opts.to_kwargs())
    assert frame_rows(data) == [(1, 10, 3.0, 0), (2, 10, 2.0, 0)]
    with pytest.raises(TypeError, match="unknown data option"):
        DataOptions.from_strings(seperator=",")


@pytest.mark.parametrize(("text", "expected"), [
    ("1,5", (1.0, 5.0)), (" 0.5 , 5 ", (0.5, 5.0)), ("1-5", (1.0, 5.0)), ("0.5..5", (0.5, 5.0)),
    ("[1, 10]", (1.0, 10.0)), ("-1,1", (-1.0, 1.0)), ((1, 5), (1.0, 5.0)),
])
def test_parse_rating_scale(text: object, expected: tuple[float, float]) -> None:
    from cfrec.data.options import parse_rating_scale

    assert parse_rating_scale(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["5", "5,1", "1,1", "a,b", "1,5,9", "", "1,inf"])
def test_parse_rating_scale_rejects_with_the_flag(text: str) -> None:
    from cfrec.data.options import parse_rating_scale

    with pytest.raises(DataError) as err:
        parse_rating_scale(text)
    assert err.value.field == "rating_scale" and "--rating-scale 1,5" in err.value.render("cli")
    assert "rating_scale=(1, 5)" in str(err.value)


def test_parse_columns_and_sep() -> None:
    from cfrec.data.options import parse_columns, parse_sep

    assert parse_columns("user, item,rating ,timestamp") == ("user", "item", "rating",
                                                            "timestamp")
    for bad in ("user,item", "user,,rating", "a,b,a"):
        with pytest.raises(DataError, match="columns") as err:
            parse_columns(bad)
        assert "--columns user,item,rating,timestamp" in err.value.render("cli")
    assert parse_sep("\\t") == "\t" and parse_sep("TAB") == "\t" and parse_sep("::") == "::"
    assert parse_sep("space") == r"\s+"
    with pytest.raises(DataError, match="empty separator"):
        parse_sep("")


def test_options_module_has_no_command_line_imports() -> None:
    import subprocess
    import sys

    code = ("import sys, cfrec.data.options; "
            "bad = [m for m in ('typer', 'click', 'rich') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hints_are_spelled_for_each_audience() -> None:
    from cfrec.data.options import option
    from cfrec.errors import OptionHint

    hint = option("rating_scale").hint("(1, 5)", "1,5", "declare the scale")
    assert hint == OptionHint("rating_scale", "rating_scale=(1, 5)", "--rating-scale 1,5",
                              "declare the scale")
    err = DataError("rating 9 is outside", path="r.csv", line=3, field="rating",
                    hints=(hint, option("duplicates").hint('"last"', "last")))
    assert str(err) == ("r.csv, line 3, field 'rating': rating 9 is outside; pass "
                        'rating_scale=(1, 5) to declare the scale, or pass duplicates="last"')
    assert err.render("cli") == ("r.csv, line 3, field 'rating': rating 9 is outside; pass "
                                 "--rating-scale 1,5 to declare the scale, or pass "
                                 "--duplicates last")
    import copy

    assert copy.copy(err).render("cli") == err.render("cli")
    from cfrec.errors import CfrecError

    assert CfrecError("plain").render("cli") == "plain"


def test_carriage_return_lines_and_whitespace_fields(tmp_path: Path) -> None:
    f = tmp_path / "cr.csv"
    f.write_bytes(b"user,item,rating\r1,2,3\r2,2,4\r")
    assert frame_rows(load_ratings(f)) == [(1, 2, 3.0, 0), (2, 2, 4.0, 0)]
    g = tmp_path / "ws.txt"
    g.write_bytes(b"1  2   3\n2 2 4\n3\t2  five\n")
    with pytest.raises(DataError, match=r"line 3, field 'rating': 'five' is not a rating"):
        load_ratings(g)
    g.write_bytes(b"1  2   3\n2 2 4\n3\t2  5\n")
    data, report = load_ratings(g, return_report=True)
    assert report.sep == r"\s+" and len(data) == 3


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "dat"])
def test_million_rows_parse_in_seconds_with_detection(tmp_path: Path, fmt: str) -> None:
    import time

    rng = np.random.default_rng(0)
    n = 1_000_000
    cols = np.c_[rng.integers(1, 6041, n), rng.integers(1, 3953, n), rng.integers(1, 6, n),
                 rng.integers(956703932, 1046454590, n)]
    path = tmp_path / f"big.{fmt}"
    with open(path, "w") as fh:
        if fmt == "csv":
            fh.write("userId,movieId,rating,timestamp\n")
        np.savetxt(fh, cols, fmt="%d", delimiter="," if fmt == "csv" else "::")
    start = time.perf_counter()
    data, report = load_ratings(path, rating_scale=(1, 5), duplicates="first", return_report=True)
    elapsed = time.perf_counter() - start
    assert report.rows == n and report.header == (fmt == "csv")
    assert data.users.dtype == np.int32 and data.user_map.is_numeric
    assert report.duplicates_resolved == n - len(np.unique(cols[:, 0] * 10_000 + cols[:, 1]))
    assert elapsed < 4.0, f"parsing {n} {fmt} lines took {elapsed:.2f} s"
