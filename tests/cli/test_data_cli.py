"""CLI: cfrec datasets / download / stats — exit codes, one-line errors, JSON on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfrec.cli import main
from cfrec.data import movielens as ml
from tests.data.test_movielens import write_ml1m, zip_folder


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CFREC_DATA_HOME", str(home))

    def no_network(spec, home, progress):  # noqa: ANN001
        import requests

        raise requests.ConnectionError("Failed to resolve 'files.grouplens.org'")

    monkeypatch.setattr(ml, "_fetch", no_network)
    return home


def test_stats_json_ml100k(capsys: pytest.CaptureFixture[str], ml100k_dir: Path) -> None:
    rc, out, err = run(capsys, "stats", "ml-100k", "--json", "--data-home", str(ml100k_dir.parent))
    assert rc == 0, err
    d = json.loads(out)  # stdout holds the JSON and nothing else
    assert (d["users"], d["items"], d["ratings"]) == (943, 1682, 100_000)
    assert round(d["sparsity"], 3) == 0.937 and d["sparsity"] == 1 - 100_000 / (943 * 1682)
    assert d["rating_histogram"]["4"] == 34174


def test_stats_table(capsys: pytest.CaptureFixture[str], ml100k_dir: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFREC_DATA_HOME", str(ml100k_dir.parent))
    rc, out, _ = run(capsys, "stats", "ml-100k")
    assert rc == 0
    assert "100,000" in out and "943" in out and "1,682" in out and "0.937" in out
    assert "34,174" in out  # histogram row for 4 stars


def test_stats_of_a_headerless_file(capsys: pytest.CaptureFixture[str], ml100k_dir: Path) -> None:
    rc, out, err = run(capsys, "stats", str(ml100k_dir / "u1.test"), "--json",
                       "--columns", "user_id,item_id,rating,timestamp")
    assert rc == 0, err
    d = json.loads(out)
    assert (d["ratings"], d["users"], d["items"]) == (20_000, 459, 1410)


def test_stats_bad_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text("user_id,item_id,rating\n1,2,3\n1,3,x\n")
    rc, out, err = run(capsys, "stats", str(f))
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and "r.csv, line 3, field 'rating'" in err


def test_stats_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "stats", "ml-5m")
    assert rc == 1 and "unknown dataset 'ml-5m'" in err and "ml-100k" in err
    assert "Traceback" not in err


def test_stats_offline_one_line(capsys: pytest.CaptureFixture[str], offline: Path) -> None:
    rc, out, err = run(capsys, "stats", "ml-1m")
    assert rc == 1 and out == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in err and str(offline) in err


def test_stats_no_download(capsys: pytest.CaptureFixture[str], offline: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ml, "_fetch", lambda *a: pytest.fail("must not download"))
    rc, _, err = run(capsys, "stats", "ml-1m", "--no-download")
    assert rc == 1 and "download=False" in err


def test_datasets_lists_every_release(capsys: pytest.CaptureFixture[str], ml100k_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFREC_DATA_HOME", str(ml100k_dir.parent))
    monkeypatch.setenv("COLUMNS", "200")
    rc, out, _ = run(capsys, "datasets")
    assert rc == 0
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ ml-")}
    assert list(rows) == list(ml.MOVIELENS)
    assert "yes" in rows["ml-100k"] and "no" in rows["ml-25m"]
    assert "25,000,095" in rows["ml-25m"]
    assert f"data home: {ml100k_dir.parent}" in out


def test_download_offline(capsys: pytest.CaptureFixture[str], offline: Path) -> None:
    rc, out, err = run(capsys, "download", "ml-1m")
    assert rc == 1 and "unzip it into" in err and len(err.strip().splitlines()) == 1


def test_download_unknown_name(capsys: pytest.CaptureFixture[str], offline: Path) -> None:
    rc, _, err = run(capsys, "download", "ml-3m")
    assert rc == 1 and "unknown MovieLens variant 'ml-3m'" in err


def test_download_then_cached(capsys: pytest.CaptureFixture[str], offline: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_folder(write_ml1m(tmp_path / "src" / "ml-1m"), tmp_path / "served.zip")
    unverified = ml.MOVIELENS["ml-1m"].__class__(**{**ml.MOVIELENS["ml-1m"].__dict__,
                                                    "sha256": None, "md5": None})
    monkeypatch.setitem(ml.MOVIELENS, "ml-1m", unverified)

    def fake_fetch(spec, home, progress):  # noqa: ANN001
        home.mkdir(parents=True, exist_ok=True)
        (home / "ml-1m.zip").write_bytes(archive.read_bytes())
        assert progress is False  # --quiet
        return home / "ml-1m.zip"

    monkeypatch.setattr(ml, "_fetch", fake_fetch)
    rc, out, err = run(capsys, "download", "ml-1m", "--quiet")
    assert rc == 0, err
    assert "ml-1m downloaded to" in out and (offline / "ml-1m" / "ratings.dat").is_file()
    rc, out, _ = run(capsys, "download", "ml-1m")
    assert rc == 0 and "already in" in out
