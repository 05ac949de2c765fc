"""Hostile rating files: decompression bombs, endless lines, and chunked reading that must not
change what a file means."""

from __future__ import annotations

import gzip
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cfrec.data.io import guard, load_ratings
from cfrec.data.io.guard import parse_size
from cfrec.errors import DataError

ROW = b"1,2,3\n"


def _bomb_gzip(path: Path, megabytes: int, *, tail: bytes = b"") -> Path:
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(b"user,item,rating\n")
        block = ROW * ((1 << 20) // len(ROW))
        for _ in range(megabytes):
            fh.write(block)
    if tail:  # another gzip member: the trailer of the last member is all a reader sees
        with open(path, "ab") as fh:
            fh.write(gzip.compress(tail))
    return path


# ---------------------------------------------------------------------------------------------
# decompression bombs
# ---------------------------------------------------------------------------------------------


def test_gzip_bomb_is_refused_before_reading_naming_the_sizes(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    path = _bomb_gzip(tmp_path / "r.csv.gz", 24)
    monkeypatch.setattr(guard, "MIN_LIMIT", 1 << 20)  # the default rule, scaled down
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_ratings(path)
    assert time.perf_counter() - start < 2.0
    msg = str(err.value)
    assert "\n" not in msg
    size = 17 + 24 * len(ROW) * ((1 << 20) // len(ROW))
    assert f"{size:,} bytes" in msg and "gzip trailer" in msg
    assert f"{path.stat().st_size:,} bytes" in msg
    assert "limit of 1,048,576 bytes" in msg or f"limit of {100 * path.stat().st_size:,}" in msg
    assert "max_input_size=" in msg


def test_zip_bomb_is_refused_from_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "r.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("r.csv", "w") as fh:
        fh.write(b"user,item,rating\n" + ROW * (3 << 20))
    with pytest.raises(DataError, match=r"decompresses to 18,874,385 bytes .*ZIP directory.*"
                       r"limit of 4,194,304 bytes"):
        load_ratings(path, max_input_size="4MB")
    assert len(load_ratings(path, max_input_size="none", duplicates="first")) == 1


def test_gzip_whose_trailer_understates_is_caught_by_the_ratio_of_its_start(
        tmp_path: Path) -> None:
    path = _bomb_gzip(tmp_path / "r.csv.gz", 16, tail=ROW)  # last member: 6 bytes
    with pytest.raises(DataError, match=r"decompresses to .*over the limit of 8,388,608 bytes"):
        load_ratings(path, max_input_size=8 << 20)


def test_gzip_with_a_plain_start_is_stopped_while_reading(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    rng = np.random.default_rng(0)
    varied = "".join(f"{u},{i},{r}\n" for u, i, r in zip(
        rng.integers(1, 10**6, 20_000), rng.integers(1, 10**6, 20_000),
        rng.integers(1, 6, 20_000), strict=True)).encode()
    path = tmp_path / "r.csv.gz"
    with open(path, "wb") as fh:
        fh.write(gzip.compress(b"user,item,rating\n" + varied))
        fh.write(gzip.compress(ROW * (3 << 20)))   # 18 MiB in a few KB
        fh.write(gzip.compress(ROW))                # a small last trailer
    monkeypatch.setattr(guard, "_PROBE_INPUT", 1 << 14)  # the estimate sees only the plain start
    with pytest.raises(DataError, match=r"decompresses to more than [\d,]+ bytes .*read so far.*"
                       r"limit of 4,194,304 bytes") as err:
        load_ratings(path, max_input_size="4MB", duplicates="first")
    assert "max_input_size=" in str(err.value)
    assert len(load_ratings(path, max_input_size=0, duplicates="first")) > 19_000


def test_cli_names_the_flag_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    from cfrec.cli import main

    path = _bomb_gzip(tmp_path / "r.csv.gz", 6)
    rc = main(["stats", str(path), "--max-input-size", "2MB"])
    err = capsys.readouterr().err
    size = 17 + 6 * len(ROW) * ((1 << 20) // len(ROW))
    assert rc == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert f"decompresses to {size:,} bytes" in err and "--max-input-size" in err
    rc = main(["stats", str(path), "--max-input-size", "none", "--json"])
    assert rc == 0, capsys.readouterr().err


@pytest.mark.parametrize(("text", "size"), [("4GB", 4 << 30), ("500m", 500 << 20), ("1.5k", 1536),
                                            ("none", 0), ("0", 0), (1000, 1000), (None, None)])
def test_sizes_parse(text: Any, size: int | None) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-3", "4XB", ""])
def test_bad_sizes_are_named(text: str) -> None:
    with pytest.raises(DataError, match="max_input_size"):
        parse_size(text)


# ---------------------------------------------------------------------------------------------
# lines without end
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip", [False, True])
def test_a_huge_line_without_separator_is_named(tmp_path: Path, skip: bool) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(b"user,item,rating\n1,2,3\n" + b"x" * (20 << 20) + b"\n4,5,3\n")
    with pytest.raises(DataError) as err:
        load_ratings(path, on_bad_rows="skip" if skip else "error")
    msg = str(err.value)
    assert "line 3 is 20,971,520 bytes long with no separator ','" in msg
    assert "missing id" not in msg and "\n" not in msg


def test_a_long_line_with_separators_is_named_too(tmp_path: Path) -> None:
    path = tmp_path / "r.tsv"
    path.write_bytes(b"user\titem\trating\r" + b"1\t2\t3\r" * 3 + b"7\t" * 40_000 + b"\r")
    with pytest.raises(DataError, match=r"line 5 is 80,000 bytes long \(a row has 3 fields"):
        load_ratings(path, chunk_bytes=1 << 12)


# ---------------------------------------------------------------------------------------------
# chunk boundaries change nothing
# ---------------------------------------------------------------------------------------------


def _arrays(data: Any) -> dict[str, Any]:
    out = {k: getattr(data, k) for k in ("users", "items", "ratings", "timestamps")}
    out["user_ids"] = data.user_map.ids
    out["item_ids"] = data.item_map.ids
    if data.weights is not None:
        out["weights"] = data.weights
    return out


def _same(a: Any, b: Any) -> None:
    x, y = _arrays(a), _arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        assert x[k].dtype == y[k].dtype, k
        assert np.array_equal(x[k], y[k]), k


def _random_file(path: Path, rng: np.random.Generator, n: int, *, text_ids: bool) -> Path:
    users = rng.integers(0, 300, n)
    items = rng.integers(0, 500, n)
    lines = ["customer_id;sku;stars;created_at"]
    for k, (u, i) in enumerate(zip(users, items, strict=True)):
        uid = f'"{u:05d}"' if text_ids and k % 3 == 0 else str(u)
        lines.append(f"{uid};{'p' if text_ids and k % 7 == 0 else ''}{i};"
                     f"{rng.integers(1, 11) / 2};{1_600_000_000 + int(rng.integers(0, 10**6))}")
    path.write_text("\r".join(lines) + "\r", encoding="utf-8")  # CR-only line ends
    return path


@pytest.mark.parametrize("text_ids", [False, True])
@pytest.mark.parametrize("compress", [None, "gz", "zip"])
def test_tiny_chunks_read_the_same_arrays(tmp_path: Path, text_ids: bool, compress: str | None
                                          ) -> None:
    path = _random_file(tmp_path / "r.csv", np.random.default_rng(1), 3000, text_ids=text_ids)
    if compress == "gz":
        gz = tmp_path / "r.csv.gz"
        gz.write_bytes(gzip.compress(path.read_bytes()))
        path = gz
    elif compress == "zip":
        zp = tmp_path / "r.zip"
        with zipfile.ZipFile(zp, "w") as zf:
            zf.write(path, "r.csv")
        path = zp
    whole, rep_whole = load_ratings(path, return_report=True)
    for chunk in (40, 97, 1 << 12):
        part, rep_part = load_ratings(path, chunk_bytes=chunk, return_report=True)
        _same(whole, part)
        assert rep_part == rep_whole
    if text_ids:
        assert "00007" in whole.user_map and 7 not in whole.user_map.to_list()


@pytest.mark.parametrize("sep", ["::", " "])
def test_tiny_chunks_on_other_parsers(tmp_path: Path, sep: str) -> None:
    rng = np.random.default_rng(2)
    rows = [f"{u}{sep}{i}{sep}{r}{sep}{t}" for u, i, r, t in zip(
        rng.integers(1, 50, 800), rng.integers(1, 90, 800), rng.integers(1, 6, 800),
        rng.integers(0, 10**9, 800), strict=True)]
    path = tmp_path / "r.dat"
    path.write_text("\n".join(rows) + "\n", encoding="latin-1")
    kw: dict[str, Any] = {"encoding": "latin-1", "duplicates": "mean"}
    if sep == " ":
        kw["sep"] = "space"
        kw["sep"] = r"\s+"
    whole = load_ratings(path, **kw)
    _same(whole, load_ratings(path, chunk_bytes=50, **kw))


def test_interactions_with_weights_in_tiny_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    text = "user,track,plays\n" + "".join(
        f"u{u},{i},{p}\n" for u, i, p in zip(rng.integers(0, 40, 2000), rng.integers(0, 60, 2000),
                                             rng.integers(0, 9, 2000), strict=True))
    path = tmp_path / "plays.csv"
    path.write_text(text)
    whole = load_ratings(path)
    assert whole.is_implicit
    _same(whole, load_ratings(path, chunk_bytes=33))


BAD_CASES = [
    ("missing id", 2, "1,10,4\n2,11,3\n,12,5\n4,13,2\n"),
    ("bad rating", 3, "1,10,4\n2,11,3\n3,12,5\n4,13,x\n5,14,1\n"),
    ("ragged", 2, "1,10,4\n2,11,3\n3,12\n4,13,2\n"),
    ("first of two", 1, "1,10,4\n2,11,abc\n3,12,5\n4,,2\n"),
    ("item then rating", 1, "1,10,4\n2,,3\n3,12,5\n4,13,x\n"),
]


@pytest.mark.parametrize(("what", "bad_row", "body"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_tiny_chunks_raise_the_same_error(tmp_path: Path, what: str, bad_row: int, body: str
                                         ) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n" + body)
    with pytest.raises(DataError) as whole:
        load_ratings(path)
    assert whole.value.line == bad_row + 2
    for chunk in (8, 16, 30):
        with pytest.raises(DataError) as part:
            load_ratings(path, chunk_bytes=chunk)
        assert str(part.value) == str(whole.value)


def test_tiny_chunks_skip_the_same_rows(tmp_path: Path) -> None:
    body = "".join(f"{k},{k % 7},{'x' if k % 13 == 0 else 1 + k % 5}\n" if k % 17 else f"{k},,3\n"
                   for k in range(1, 400))
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n" + body + "5,6\n")
    whole, rw = load_ratings(path, on_bad_rows="skip", return_report=True)
    assert rw.skipped_rows > 40
    for chunk in (16, 100):
        part, rp = load_ratings(path, on_bad_rows="skip", chunk_bytes=chunk, return_report=True)
        _same(whole, part)
        assert rp == rw


def test_duplicate_error_names_the_same_lines_after_skipped_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,1,3\n,2,4\n2,2,5\n3,3,1\n,,\n2,2,4\n")
    msgs = set()
    for chunk in (None, 12):
        with pytest.raises(DataError, match="duplicate rating") as err:
            load_ratings(path, on_bad_rows="skip", duplicates="error", chunk_bytes=chunk)
        msgs.add(str(err.value))
        assert err.value.line == 7
    assert len(msgs) == 1 and "also at line 4" in msgs.pop()
