"""load_dataset: names, MovieLens folders and zips, generic files, unknown names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfrec.data import load_dataset
from cfrec.data.options import DataOptions
from cfrec.errors import CfrecError, DataError
from tests.data.test_movielens import ML1M_RATINGS, write_ml1m, write_ml20m, zip_folder


def test_known_name(ml100k_dir: Path) -> None:
    data = load_dataset("ml-100k", data_home=ml100k_dir.parent, download=False)
    assert data.name == "ml-100k" and (len(data), data.n_users, data.n_items) == (100_000, 943, 1682)


def test_name_uses_the_environment_data_home(ml100k_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFREC_DATA_HOME", str(ml100k_dir.parent))
    assert len(load_dataset("ml-100k", download=False)) == 100_000


def test_extracted_folder_variant_detected_by_files(tmp_path: Path) -> None:
    # folder name says nothing; users.dat next to ratings.dat marks ML-1M
    data = load_dataset(write_ml1m(tmp_path / "downloaded"))
    assert data.name == "ml-1m" and len(data) == len(ML1M_RATINGS)
    assert data.user_info is not None and data.item_info is not None


def test_movielens_zip(tmp_path: Path) -> None:
    archive = zip_folder(write_ml20m(tmp_path / "ml-20m"), tmp_path / "ml-20m.zip")
    data = load_dataset(str(archive))
    assert data.name == "ml-20m" and data.rating_scale == (0.5, 5.0)
    assert data.item_info.loc[11, "title"] == "American President, The (1995)"


def test_generic_file_with_options(tmp_path: Path) -> None:
    f = tmp_path / "mine.csv"
    f.write_text("u,i,r\n1,2,3\n4,5,1\n")
    data = load_dataset(f, user_col="u", item_col="i", rating_col="r", rating_scale=(1, 5))
    assert data.name == "mine" and len(data) == 2 and data.rating_scale == (1.0, 5.0)


def test_single_movielens_file_is_a_generic_file(ml100k_dir: Path) -> None:
    data = load_dataset(ml100k_dir / "u1.base", columns=["user_id", "item_id", "rating", "timestamp"])
    assert len(data) == 80_000 and data.name == "u1"


def test_options_do_not_apply_to_movielens(ml100k_dir: Path) -> None:
    # a DataError (issue 10), so the command line prints one line instead of a traceback
    with pytest.raises(DataError, match="apply to rating files") as err:
        load_dataset("ml-100k", data_home=ml100k_dir.parent, sep=",")
    assert "drop sep=" in str(err.value) and "drop --sep" in err.value.render("cli")
    with pytest.raises(DataError, match="not to the MovieLens release at") as err:
        load_dataset(ml100k_dir, options=DataOptions(rating_scale=(1, 5), user_col="u"))
    assert "drop --user-col, --rating-scale" in err.value.render("cli")


def test_folder_without_ratings(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder is not a MovieLens release"):
        load_dataset(tmp_path)


def test_generic_file_named_like_movielens_is_not_taken_for_it(tmp_path: Path) -> None:
    # same file name as ML-20M's, other columns: must not be parsed as userId,movieId,...
    (tmp_path / "ratings.csv").write_text("item,user,rating\n10,1,4\n11,2,5\n")
    with pytest.raises(DataError, match="folder is not a MovieLens release"):
        load_dataset(tmp_path)
    data = load_dataset(tmp_path / "ratings.csv", user_col="user", item_col="item")
    assert list(data.to_frame().itertuples(index=False, name=None)) == [(1, 10, 4.0, 0), (2, 11, 5.0, 0)]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(CfrecError) as err:
        load_dataset("ml-20")
    msg = str(err.value)
    assert "unknown dataset 'ml-20'" in msg and "did you mean 'ml-20m'" in msg
    assert "ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-32m, ml-latest-small" in msg


def test_missing_path() -> None:
    with pytest.raises(CfrecError, match="no such file or dataset 'data/ratings.csv'"):
        load_dataset("data/ratings.csv")


# ---------------------------------------------------------------------------------------------
# files by path (issue 10): detection, MovieLens files keep their scale, options, reports
# ---------------------------------------------------------------------------------------------
def test_release_ratings_file_by_path_loads_the_release(ml100k_dir: Path) -> None:
    data, report = load_dataset(ml100k_dir / "u.data", return_report=True)
    assert data.name == "ml-100k" and len(data) == 100_000 and data.rating_scale == (1.0, 5.0)
    assert data.item_info is not None and report.scale_source == "movielens"
    assert (report.header, report.sep) == (False, "\t")


def test_other_file_of_a_release_keeps_the_known_scale(ml100k_dir: Path) -> None:
    data, report = load_dataset(ml100k_dir / "u1.test", return_report=True)
    assert len(data) == 20_000 and data.rating_scale == (1.0, 5.0)
    assert report.scale_source == "movielens" and not report.header


def test_ml1m_files_by_path(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    data = load_dataset(folder / "ratings.dat")
    assert data.name == "ml-1m" and data.item_info is not None and len(data) == len(ML1M_RATINGS)
    # with options it is read as a ratings file, still on the release's scale
    data2, report = load_dataset(folder / "ratings.dat", duplicates="error", return_report=True)
    assert len(data2) == len(ML1M_RATINGS) and data2.rating_scale == (1.0, 5.0)
    assert report.scale_source == "movielens" and report.sep == "::"
    (folder / "extra.dat").write_text("1::1193::5::978300760\n2::661::9::978300761\n")
    with pytest.raises(DataError) as err:
        load_dataset(folder / "extra.dat")
    assert str(err.value) == (f"{folder / 'extra.dat'}, line 2, field 'rating': rating 9 is "
                              "outside the MovieLens scale [1, 5]; pass rating_scale=(1, 9) to "
                              "declare a wider scale")


def test_movielens_format_files_need_no_options(tmp_path: Path) -> None:
    texts = {"ratings.dat": "1::1193::5::978300760\n1::661::3::978302109\n",
             "u.data": "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
             "ratings.csv": "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
                            "1,3,4.5,964981247\n"}
    for k, (name, text) in enumerate(texts.items()):
        # beside the release's README, the file's folder is a release: the known scale applies
        own = tmp_path / f"release{k}"
        own.mkdir()
        (own / name).write_text(text)
        (own / "README.txt").write_text("Summary\n=======\nThis dataset (ml-latest) describes ...\n")
        data, report = load_dataset(own / name, return_report=True)
        assert len(data) == 2 and report.scale_source == "movielens", name
        # u.data is ML-100K (1-5); ratings.dat without users.dat is ML-10M and ratings.csv a
        # later release (half stars 0.5-5)
        assert data.rating_scale == ((1.0, 5.0) if name == "u.data" else (0.5, 5.0))
        # alone in its folder, or under another name, it is any ratings file: scale inferred
        for folder, file in ((f"alone{k}", name), (f"other{k}", f"mine{Path(name).suffix}")):
            (tmp_path / folder).mkdir()
            (tmp_path / folder / file).write_text(text)
            data, report = load_dataset(tmp_path / folder / file, return_report=True)
            assert len(data) == 2 and report.scale_source == "inferred", (folder, name)


def test_a_file_named_like_a_release_is_not_taken_for_one(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``ratings.csv`` with MovieLens' header and ratings 1-5, alone in its folder: scale 1-5,
    inferred and said, from ``load_dataset``, ``load_ratings`` and ``cfrec stats`` alike."""
    from cfrec.cli import main
    from cfrec.data import load_ratings

    path = tmp_path / "ratings.csv"
    rows = [f"{u},{i},{1 + (u * i) % 5},{1000 + u * 10 + i}" for u in range(1, 9) for i in range(1, 7)]
    path.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    for loader in (load_dataset, load_ratings):
        data, report = loader(path, return_report=True)
        assert data.rating_scale == (1.0, 5.0) and report.scale_source == "inferred", loader
    assert main(["stats", str(path), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["rating_scale"] == [1.0, 5.0]
    assert "rating scale 1..5 inferred" in out.err
    with pytest.raises(DataError, match="give the ratings file itself"):  # nor is its folder a release
        load_dataset(tmp_path)


def test_crlf_and_semicolon_files_by_path(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"user,item,rating\r\n1,2,3\r\n2,2,5\r\n")
    (tmp_path / "b.csv").write_bytes(b"user;item;rating\n1;2;3\n2;2;5\n")
    for name in ("a.csv", "b.csv"):
        data = load_dataset(tmp_path / name)
        assert list(data.to_frame().itertuples(index=False, name=None)) == [
            (1, 2, 3.0, 0), (2, 2, 5.0, 0)], name


def test_data_options_object_for_a_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.txt"
    f.write_text("a|b|c\n1|2|3\n1|2|5\n")
    opts = DataOptions(sep="|", user_col="a", item_col="b", rating_col="c", rating_scale=(1, 5),
                       duplicates="mean")
    data, report = load_dataset(f, options=opts, return_report=True)
    assert data.ratings.tolist() == [4.0] and report.duplicates_resolved == 1
    assert report.scale_source == "given"
    assert len(load_dataset(f, options=DataOptions(sep="|", user_col="a"), item_col="b",
                            rating_col="c")) == 1
    with pytest.raises(TypeError, match="user_col is given both"):
        load_dataset(f, options=DataOptions(user_col="a"), user_col="b")


def test_report_for_a_named_release(ml100k_dir: Path) -> None:
    data, report = load_dataset("ml-100k", data_home=ml100k_dir.parent, return_report=True)
    assert report.rows == report.ratings == len(data) and report.rating_scale == (1.0, 5.0)
    assert report.scale_source == "movielens" and report.duplicates_resolved == 0


def test_a_stray_movielens_file_does_not_impose_its_scale(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n")
    (tmp_path / "mine.csv").write_text("user,item,rating\n1,1,4\n1,2,9\n")
    data, report = load_dataset(tmp_path / "mine.csv", return_report=True)
    assert data.rating_scale == (4.0, 9.0) and report.scale_source == "inferred"
    (tmp_path / "u.item").write_text("242|Kolya (1996)|24-Jan-1997||http://x|" + "0|" * 18 + "0\n")
    with pytest.raises(DataError, match="rating 9 is outside the MovieLens scale"):
        load_dataset(tmp_path / "mine.csv")  # now a release folder: its scale applies
