"""Side features read from MovieLens releases (tiny fixture releases written here, and the real
ML-100K when present) and from CSV files, long and wide; their errors and command-line flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cfrec.data import load_dataset
from cfrec.data.features_files import age_bucket, merge_features, read_features
from cfrec.data.options import DataOptions
from cfrec.errors import DataError


def _row(features: object, raw_id: object) -> dict[str, float]:
    """The features of one entity as ``{name: value}``."""
    row = features.rows([raw_id])  # type: ignore[attr-defined]
    names = features.names.to_list()  # type: ignore[attr-defined]
    return {str(names[j]): float(v) for j, v in zip(row.indices, row.data, strict=True)}


# ---------------------------------------------------------------------- MovieLens releases
def _write_100k(folder: Path) -> Path:
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t3\t881250950\n1\t20\t5\t881250951\n")
    (folder / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n")
    (folder / "u.item").write_text(
        "10|Heat (1995)|01-Jan-1995||http://x|0|1|1\n"
        "20|Old Film (1931)|01-Jan-1931||http://x|0|0|1\n", encoding="latin-1")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|T8H1A\n")
    return folder


def test_ml100k_release_features(tmp_path: Path) -> None:
    data = load_dataset(_write_100k(tmp_path / "ml-100k"))
    assert data.item_features is not None and data.user_features is not None
    assert _row(data.item_features, 10) == {"genre=Action": 1.0, "genre=Comedy": 1.0, "decade=1990s": 1.0}
    assert _row(data.item_features, 20) == {"genre=Comedy": 1.0, "decade=1930s": 1.0}
    assert _row(data.user_features, 1) == {"age=18-24": 1.0, "gender=M": 1.0, "occupation=technician": 1.0,
                                           "zip=8": 1.0}
    assert _row(data.user_features, 2) == {"age=50-55": 1.0, "gender=F": 1.0, "occupation=other": 1.0,
                                           "zip=other": 1.0}
    off = load_dataset(tmp_path / "ml-100k", options=DataOptions(release_features=False))
    assert off.item_features is None and off.user_features is None


def test_ml1m_release_features(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n2::661::3::978302109\n")
    (folder / "movies.dat").write_text("1193::One Flew (1975)::Drama\n661::James (1996)::Animation|Musical\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    data = load_dataset(folder)
    assert _row(data.item_features, 661) == {"genre=Animation": 1.0, "genre=Musical": 1.0, "decade=1990s": 1.0}
    assert _row(data.user_features, 1) == {"age=Under 18": 1.0, "gender=F": 1.0, "occupation=K-12 student": 1.0,
                                           "zip=4": 1.0}
    assert _row(data.user_features, 2)["occupation=self-employed"] == 1.0
    assert _row(data.user_features, 2)["age=56+"] == 1.0


def test_ml_latest_release_features_with_weighted_tags(tmp_path: Path) -> None:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964981247\n"
                                        "2,3,5.0,964982224\n")
    (folder / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                                       '2,"Jumanji, The (1995)",Adventure\n3,Nothing (2001),(no genres listed)\n')
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,pixar,1\n2,1,Pixar,2\n1,2,pixar,3\n"
                                     "1,3,once,4\n")
    (folder / "README.txt").write_text("MovieLens\n")
    data = load_dataset(folder)
    item = _row(data.item_features, 1)
    assert item["genre=Adventure"] == 1.0 and item["decade=1990s"] == 1.0
    assert item["tag=pixar"] == pytest.approx(np.log1p(2))  # applied twice (case folded)
    assert _row(data.item_features, 2)["tag=pixar"] == pytest.approx(np.log1p(1))
    assert "tag=once" not in data.item_features.names  # on one movie only: dropped
    assert _row(data.item_features, 3) == {"decade=2000s": 1.0}
    assert data.user_features is None  # ML-latest ships no demographics


def test_real_ml100k_features(ml100k_dir: Path) -> None:
    data = load_dataset(ml100k_dir)
    items, users = data.item_features, data.user_features
    assert items is not None and users is not None
    assert len(users) == 943 and (np.diff(users.matrix.indptr) == 4).all()  # age, gender, occupation, zip
    assert sum(n.startswith("genre=") for n in items.names.to_list()) == 18
    assert _row(items, 1)["genre=Animation"] == 1.0 and _row(items, 1)["decade=1990s"] == 1.0


def test_age_buckets_follow_ml1m() -> None:
    assert age_bucket([7, 18, 24, 25, 49, 50, 56, 73]).tolist() == [
        "Under 18", "18-24", "18-24", "25-34", "45-49", "50-55", "56+", "56+"]


# ---------------------------------------------------------------------- CSV files
def test_long_csv(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("item_id,feature,value\n10,director=Mann,1\n10,runtime,1.5\n20,director=Mann,2\n"
                    "20,director=Mann,1\n")
    f = read_features(path, "item")
    assert _row(f, 10) == {"director=Mann": 1.0, "runtime": 1.5}
    assert _row(f, 20) == {"director=Mann": 3.0}  # repeated pairs summed
    no_value = tmp_path / "g.csv"
    no_value.write_text("movieId,tag\n1,scary\n1,funny\n")
    assert _row(read_features(no_value, "item"), 1) == {"scary": 1.0, "funny": 1.0}


def test_wide_csv_categorical_multivalued_numeric(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("user_id,gender,langs,age\nu1,F,en|fr,20\nu2,M,en,30\nu3,,de,40\nu4,F,,50\n")
    f = read_features(path, "user", n_buckets=2)
    u1, u3 = _row(f, "u1"), _row(f, "u3")
    assert u1["gender=F"] == 1.0 and u1["langs=en"] == 1.0 and u1["langs=fr"] == 1.0
    assert "gender=" not in " ".join(u3) and u3["langs=de"] == 1.0  # an empty cell adds nothing
    ages = np.array([_row(f, u)["age"] for u in ("u1", "u2", "u3", "u4")])
    np.testing.assert_allclose(ages, (np.array([20, 30, 40, 50]) - 35) / np.std([20, 30, 40, 50]), rtol=1e-6)
    assert u1["age=q1"] == 1.0 and _row(f, "u4")["age=q2"] == 1.0
    only_buckets = read_features(path, "user", numeric="bucket")
    assert "age" not in only_buckets.names


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("item_id,feature,value\n1,a,1\n2,b,x\n", 3, "value", "not a number"),
    ("item_id,feature,value\n1,a,1\n2,b\n", 3, None, "field(s)"),
    ("item_id,feature\n1,a\n,b\n", 3, "item_id", "missing item id"),
    ("item_id\n1\n", 1, "header", "at least one feature column"),
])
def test_csv_errors_name_file_line_field_and_flag(tmp_path: Path, text: str, line: int, field: str | None,
                                                  words: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_features(path, "item")
    err = info.value
    assert err.line == line and words in str(err) and str(path) in str(err)
    if field is not None:
        assert err.field == field
    if words in ("field(s)", "at least one feature column"):
        assert "--item-features" in err.render("cli")


def test_missing_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such user features file") as info:
        read_features(tmp_path / "nope.csv", "user")
    assert "--user-features" in info.value.render("cli")


def test_feature_files_are_added_to_release_features(tmp_path: Path) -> None:
    folder = _write_100k(tmp_path / "ml-100k")
    extra = tmp_path / "items.csv"
    extra.write_text("item_id,director\n10,Mann\n")
    data = load_dataset(folder, options=DataOptions(item_features=str(extra)))
    assert _row(data.item_features, 10)["director=Mann"] == 1.0
    assert _row(data.item_features, 10)["genre=Action"] == 1.0
    only = load_dataset(folder, options=DataOptions(item_features=str(extra), release_features=False))
    assert _row(only.item_features, 10) == {"director=Mann": 1.0} and only.user_features is None
    merged = merge_features(None, only.item_features)
    assert merged is only.item_features


def test_stats_cli_counts_features_and_takes_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfrec.cli import app, main

    folder = _write_100k(tmp_path / "ml-100k")
    extra = tmp_path / "users.csv"
    extra.write_text("user_id,feature\n1,vip\n")
    runner = CliRunner()
    out = runner.invoke(app, ["stats", str(folder), "--json", "--user-features", str(extra)])
    assert out.exit_code == 0, out.output
    import json

    stats = json.loads(out.stdout)
    assert stats["item_features"]["features"] == 4  # Action, Comedy, 1930s, 1990s
    assert stats["item_features"]["families"] == 2
    assert stats["user_features"]["features"] == 9  # 2 ages, 2 genders, 2 jobs, 2 zips + vip
    off = runner.invoke(app, ["stats", str(folder), "--json", "--no-release-features"])
    assert off.exit_code == 0 and json.loads(off.stdout)["item_features"] is None
    assert main(["stats", str(folder), "--item-features", str(tmp_path / "none.csv")]) == 1
    err = capsys.readouterr().err
    assert "no such item features file" in err and "--item-features FILE" in err and "Traceback" not in err
