"""MovieLens loaders: every release's own format, folders and zips, the data home, downloads, offline."""

from __future__ import annotations

import dataclasses
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.data import movielens as ml
from cfrec.data.io import load_ratings
from cfrec.data.movielens import (
    MOVIELENS,
    data_home,
    download_movielens,
    is_cached,
    load_movielens,
)
from cfrec.errors import CfrecError, DataError, DatasetUnavailable

_ORIGINAL_FETCH = ml._fetch  # saved before the empty_home fixture replaces it

# ---------------------------------------------------------------------------------------------
# small files in each release's own format (helpers also used by test_datasets and the CLI tests)
# ---------------------------------------------------------------------------------------------
ML1M_RATINGS = [  # user, item, rating, timestamp
    (1, 1193, 5, 978300760), (1, 661, 3, 978302109), (2, 1193, 4, 978298413),
    (2, 3408, 4, 978299000), (3, 661, 1, 978297000), (3, 3408, 2, 978301000),
]


def write_ml1m(folder: Path) -> Path:
    """An ML-1M style release: '::' separated, latin-1 movies.dat, users.dat with codes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_bytes(
        "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ML1M_RATINGS).encode("ascii"))
    (folder / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "3408::Misérables, Les (1998)::Drama\n".encode("latin-1"))
    (folder / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    return folder


def write_ml10m(folder: Path) -> Path:
    """An ML-10M style release: '::' ratings with half stars, UTF-8 movies.dat, no users.dat."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_bytes(b"1::122::5::838985046\n1::185::4.5::838983525\n"
                                         b"2::122::0.5::868245777\n")
    (folder / "movies.dat").write_bytes(
        "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action|Crime|Thriller\n"
        "200::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n".encode())
    (folder / "tags.dat").write_bytes(b"15::4973::excellent!::1215184630\n")
    return folder


ML20M_RATINGS = [(1, 2, 3.5, 1112486027), (1, 29, 0.5, 1112484676), (2, 11, 4.0, 974820889),
                 (3, 2, 5.0, 944916017), (3, 131254, 2.5, 1427780000)]


def write_ml20m(folder: Path) -> Path:
    """An ML-20M style release: CRLF CSV, half stars, quoted titles with commas, links.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{u},{i},{r:g},{t}\r\n" for u, i, r, t in ML20M_RATINGS)
    (folder / "ratings.csv").write_bytes(("userId,movieId,rating,timestamp\r\n" + rows).encode())
    (folder / "movies.csv").write_bytes(
        'movieId,title,genres\r\n'
        '2,Jumanji (1995),Adventure|Children|Fantasy\r\n'
        '11,"American President, The (1995)",Comedy|Drama|Romance\r\n'
        '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama\r\n'
        '131254,Kein Bund für\'s Leben (2007),(no genres listed)\r\n'
        '131262,"Innocence, ""Part 2"" (2006-2007)",Adventure\r\n'
        '999999,Untitled Project,Drama\r\n'.encode())
    (folder / "links.csv").write_bytes(b"movieId,imdbId,tmdbId\r\n2,0113497,8844\r\n11,0112346,\r\n")
    return folder


def zip_folder(folder: Path, archive: Path, arcroot: str | None = None) -> Path:
    """Zip ``folder`` the way GroupLens does: every file under one top folder."""
    root = arcroot if arcroot is not None else folder.name
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{root}/", "")
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{root}/{f.name}")
    return archive


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data home; any attempt to download fails loudly instead of touching the network."""
    home = tmp_path / "home"
    monkeypatch.setenv("CFREC_DATA_HOME", str(home))

    def no_network(spec, home, progress):  # noqa: ANN001
        import requests

        raise requests.ConnectionError("Failed to resolve 'files.grouplens.org' "
                                       "([Errno -2] Name or service not known)")

    monkeypatch.setattr(ml, "_fetch", no_network)
    return home


# ---------------------------------------------------------------------------------------------
# registry and data home
# ---------------------------------------------------------------------------------------------
def test_registry_covers_every_release_with_grouplens_urls() -> None:
    assert list(MOVIELENS) == ["ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m",
                               "ml-latest-small"]
    for name, spec in MOVIELENS.items():
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert spec.sha256 is None or len(spec.sha256) == 64
        assert spec.known_hash is not None and spec.known_hash.startswith(("sha256:", "md5:"))
    assert MOVIELENS["ml-10m"].zip_folder == "ml-10M100K"
    assert MOVIELENS["ml-100k"].rating_scale == (1.0, 5.0)
    assert MOVIELENS["ml-25m"].rating_scale == (0.5, 5.0)
    assert MOVIELENS["ml-1m"].n_ratings == 1_000_209


def test_data_home_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CFREC_DATA_HOME", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env"
    assert data_home(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("CFREC_DATA_HOME")
    import platformdirs

    assert data_home() == Path(platformdirs.user_cache_dir("cfrec"))


# ---------------------------------------------------------------------------------------------
# ML-100K, the real files
# ---------------------------------------------------------------------------------------------
def test_ml100k_real_files(ml100k_dir: Path) -> None:
    data = load_movielens("ml-100k", data_home=ml100k_dir.parent, download=False)
    assert data.name == "ml-100k"
    assert (len(data), data.n_users, data.n_items) == (100_000, 943, 1682)
    assert data.rating_scale == (1.0, 5.0)
    assert data.users.dtype == np.int32 and data.items.dtype == np.int32
    assert data.ratings.dtype == np.float32 and data.timestamps.dtype == np.int64
    assert data.nbytes == 100_000 * 20 + (943 + 1682) * 8
    # first line of u.data: 196 242 3 881250949
    assert (data.raw_users()[0], data.raw_items()[0], data.ratings[0], data.timestamps[0]) == (
        196, 242, 3.0, 881250949)
    assert dict(zip(*np.unique(data.ratings, return_counts=True), strict=True)) == {
        1.0: 6110, 2.0: 11370, 3.0: 27145, 4.0: 34174, 5.0: 21201}

    info = data.item_info
    assert info is not None and len(info) == 1682 and info.index.name == "item_id"
    assert info.loc[50, "title"] == "Star Wars (1977)" and info.loc[50, "year"] == 1977
    assert info.loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    assert info.loc[543, "title"] == "Misérables, Les (1995)"  # latin-1 byte 0xE9
    assert info.loc[267, "title"] == "unknown" and pd.isna(info.loc[267, "year"])
    assert info.loc[267, "genres"] == []
    assert str(info["year"].dtype) == "Int64"
    assert data.item_titles([50, 181]) == ["Star Wars (1977)", "Return of the Jedi (1983)"]

    users = data.user_info
    assert users is not None and len(users) == 943
    assert users.loc[1].tolist() == [24, "M", "technician", "85711"]


def test_ml100k_matches_generic_loader(ml100k_dir: Path) -> None:
    named = load_movielens("ml-100k", data_home=ml100k_dir.parent)
    generic = load_ratings(ml100k_dir / "u.data", columns=["user_id", "item_id", "rating", "timestamp"])
    assert named.fingerprint() == generic.fingerprint()


def test_ml100k_from_folder_path_and_zip(ml100k_dir: Path, tmp_path: Path) -> None:
    from_folder = load_movielens(ml100k_dir)
    assert from_folder.name == "ml-100k" and len(from_folder) == 100_000
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in ("u.data", "u.item", "u.genre", "u.user"):
            zf.write(ml100k_dir / f, f"ml-100k/{f}")
    from_zip = load_movielens(archive)
    assert from_zip.fingerprint() == from_folder.fingerprint()
    assert from_zip.item_info.loc[543, "title"] == "Misérables, Les (1995)"


# ---------------------------------------------------------------------------------------------
# ML-1M / ML-10M ('::') and ML-20M+ (CSV) formats, written here in their own format
# ---------------------------------------------------------------------------------------------
def test_ml1m_format(tmp_path: Path) -> None:
    data = load_movielens(write_ml1m(tmp_path / "ml-1m"))
    assert data.name == "ml-1m" and data.rating_scale == (1.0, 5.0)
    frame = data.to_frame()
    assert list(frame.itertuples(index=False, name=None)) == [
        (u, i, float(r), t) for u, i, r, t in ML1M_RATINGS]
    info = data.item_info
    assert info.loc[3408, "title"] == "Misérables, Les (1998)"
    assert info.loc[3408, "year"] == 1998
    assert info.loc[661, "genres"] == ["Animation", "Children's", "Musical"]
    users = data.user_info
    assert users.loc[1, "gender"] == "F" and users.loc[1, "age"] == 1
    assert users.loc[1, "age_group"] == "Under 18" and users.loc[1, "occupation"] == "K-12 student"
    assert users.loc[2, "occupation"] == "self-employed" and users.loc[2, "zip"] == "70072"


def test_ml10m_folder_is_normalised_and_half_stars(tmp_path: Path) -> None:
    data = load_movielens(write_ml10m(tmp_path / "ml-10M100K"))
    assert data.name == "ml-10m" and data.rating_scale == (0.5, 5.0)
    assert data.ratings.tolist() == [5.0, 4.5, 0.5]
    assert data.user_info is None
    assert data.item_info.loc[200, "title"].startswith("Amélie")  # UTF-8 decoded
    assert data.item_info.loc[185, "genres"] == ["Action", "Crime", "Thriller"]


def test_ml20m_csv_format(tmp_path: Path) -> None:
    data = load_movielens(write_ml20m(tmp_path / "ml-20m"))
    assert data.name == "ml-20m" and data.rating_scale == (0.5, 5.0)
    frame = data.to_frame()
    assert list(frame.itertuples(index=False, name=None)) == [
        (u, i, r, t) for u, i, r, t in ML20M_RATINGS]
    info = data.item_info
    assert info.loc[11, "title"] == "American President, The (1995)"
    assert info.loc[29, "title"] == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    assert info.loc[131254, "genres"] == []  # "(no genres listed)"
    assert info.loc[131262, "title"] == 'Innocence, "Part 2" (2006-2007)'
    assert info.loc[131262, "year"] == 2006
    assert pd.isna(info.loc[999999, "year"])
    assert info.loc[2, "imdb_id"] == 113497 and info.loc[2, "tmdb_id"] == 8844
    assert pd.isna(info.loc[11, "tmdb_id"]) and pd.isna(info.loc[29, "imdb_id"])


def test_unknown_csv_folder_keeps_its_name(tmp_path: Path) -> None:
    data = load_movielens(write_ml20m(tmp_path / "my-snapshot"))
    assert data.name == "my-snapshot" and data.rating_scale == (0.5, 5.0)


def test_zip_input_without_extracting(tmp_path: Path) -> None:
    archive = zip_folder(write_ml1m(tmp_path / "src" / "ml-1m"), tmp_path / "ml-1m.zip")
    data = load_movielens(archive)
    assert data.name == "ml-1m" and len(data) == len(ML1M_RATINGS)
    assert data.item_info.loc[3408, "title"] == "Misérables, Les (1998)"
    assert not (tmp_path / "ml-1m").exists()


def test_malformed_ratings_line_is_named(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    with open(folder / "ratings.dat", "ab") as fh:
        fh.write(b"4::12::x::978300000\n")
    with pytest.raises(DataError) as err:
        load_movielens(folder)
    msg = str(err.value)
    assert "ratings.dat" in msg and f"line {len(ML1M_RATINGS) + 1}" in msg and "'rating'" in msg

    (folder / "ratings.dat").write_bytes(b"1::2::3::4\n5::6::7\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 2: expected 4 numeric fields"):
        load_movielens(folder)


def test_rating_outside_the_release_scale(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    (folder / "ratings.dat").write_bytes(b"1::1193::5::978300760\n1::661::7::978302109\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 2, field 'rating': rating 7 is outside"):
        load_movielens(folder)


def test_csv_with_other_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("movieId,userId,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"ratings.csv, line 1: not a MovieLens ratings file: "
                                        r"expected the header userId,movieId,rating,timestamp"):
        load_movielens(tmp_path)


def test_not_a_movielens_folder(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a MovieLens folder"):
        load_movielens(tmp_path / "x")


def test_unknown_variant_lists_known_names() -> None:
    with pytest.raises(CfrecError, match="ml-100k, ml-1m, ml-10m"):
        load_movielens("ml-2m")


# ---------------------------------------------------------------------------------------------
# data home: cache, hand-placed files, downloads, offline
# ---------------------------------------------------------------------------------------------
def test_offline_with_nothing_cached_says_what_to_do(empty_home: Path) -> None:
    assert not is_cached("ml-1m")
    with pytest.raises(DatasetUnavailable) as err:
        load_movielens("ml-1m")
    msg = str(err.value)
    assert "\n" not in msg
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in msg
    assert str(empty_home) in msg and "unzip it into" in msg and "CFREC_DATA_HOME" in msg
    assert "offline" in msg


def test_download_false_never_fetches(empty_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ml, "_fetch", lambda *a: pytest.fail("must not download"))
    with pytest.raises(DatasetUnavailable, match=r"download=False; download https://files"):
        load_movielens("ml-10m", download=False)


def test_unzipped_by_hand_into_the_home(empty_home: Path) -> None:
    # the zip's own top folder, as a user following the error message would leave it
    write_ml10m(empty_home / "ml-10M100K")
    assert is_cached("ml-10m")
    data = load_movielens("ml-10m")
    assert data.name == "ml-10m" and len(data) == 3


def test_download_verifies_unpacks_and_normalises(
    empty_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = zip_folder(write_ml10m(tmp_path / "src"), tmp_path / "served.zip", "ml-10M100K")
    calls = []

    def fake_fetch(spec, home, progress):  # noqa: ANN001
        calls.append((spec.name, home, progress))
        home.mkdir(parents=True, exist_ok=True)
        target = home / f"{spec.name}.zip"
        target.write_bytes(archive.read_bytes())
        return target

    monkeypatch.setattr(ml, "_fetch", fake_fetch)
    folder = download_movielens("ml-10m", progress=False)
    assert folder == empty_home / "ml-10m" and (folder / "ratings.dat").is_file()
    assert calls == [("ml-10m", empty_home, False)]
    assert not (empty_home / "ml-10m.zip").exists()  # the downloaded archive is removed
    assert [p.name for p in empty_home.iterdir()] == ["ml-10m"]  # no temp folder left
    assert download_movielens("ml-10m") == folder and len(calls) == 1  # cached: no second fetch
    assert load_movielens("ml-10m").ratings.tolist() == [5.0, 4.5, 0.5]


def test_hand_placed_zip_is_checked(empty_home: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    empty_home.mkdir()
    zip_folder(write_ml1m(tmp_path / "ml-1m"), empty_home / "ml-1m.zip")
    with pytest.raises(DatasetUnavailable, match=r"is not the GroupLens ml-1m archive \(sha256"):
        load_movielens("ml-1m")
    # with the checksum unknown it is trusted and unpacked; the user's zip is kept
    unverified = dataclasses.replace(MOVIELENS["ml-1m"], sha256=None, md5=None)
    monkeypatch.setitem(MOVIELENS, "ml-1m", unverified)
    data = load_movielens("ml-1m", download=False)
    assert len(data) == len(ML1M_RATINGS) and (empty_home / "ml-1m.zip").exists()
    assert is_cached("ml-1m")


def test_pooch_gets_the_registry_hash_and_mismatch_is_reported(
    empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pooch

    seen = {}

    def fake_retrieve(url, known_hash, fname, path, downloader):  # noqa: ANN001
        seen.update(url=url, known_hash=known_hash, fname=fname, path=Path(path),
                    progress=downloader.progressbar)
        raise ValueError("SHA256 hash of downloaded file (abc) does not match the known hash")

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    monkeypatch.setattr(ml, "_fetch", _ORIGINAL_FETCH)  # the real one, calling (fake) pooch
    with pytest.raises(DatasetUnavailable, match="does not match its known checksum"):
        download_movielens("ml-100k", progress=True)
    assert seen == {"url": MOVIELENS["ml-100k"].url,
                    "known_hash": "sha256:" + MOVIELENS["ml-100k"].sha256,
                    "fname": "ml-100k.zip", "path": empty_home, "progress": True}




# ---------------------------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ml1m_sized_file_parses_in_under_3_seconds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 1_000_209
    frame = pd.DataFrame({"u": rng.integers(1, 6041, n), "i": rng.integers(1, 3953, n),
                          "r": rng.integers(1, 6, n), "t": rng.integers(956703932, 1046454590, n)})
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    text = (frame["u"].astype(str) + "::" + frame["i"].astype(str) + "::"
            + frame["r"].astype(str) + "::" + frame["t"].astype(str))
    (folder / "ratings.dat").write_text("\n".join(text) + "\n")
    start = time.perf_counter()
    data = load_movielens(folder)
    elapsed = time.perf_counter() - start
    assert len(data) == n and data.users.dtype == np.int32
    np.testing.assert_array_equal(data.raw_users(), frame["u"].to_numpy())
    np.testing.assert_array_equal(data.timestamps, frame["t"].to_numpy())
    assert elapsed < 3.0, f"parsing {n} '::' lines took {elapsed:.2f} s"
