"""load_dataset: names, MovieLens folders and zips, generic files, unknown names."""

from __future__ import annotations

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
