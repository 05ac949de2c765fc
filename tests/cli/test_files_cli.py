"""Any rating file through every command, and one clear line for every bad one (no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cfrec.cli import main
from cfrec.models import Recommender


def _rows(n_users: int = 30, n_items: int = 25, seed: int = 0, half_stars: bool = False):
    rng = np.random.default_rng(seed)
    out = []
    for u in range(1, n_users + 1):
        for i in rng.choice(np.arange(1, n_items + 1), 8, replace=False):
            r = float(rng.integers(1, 11)) / 2 if half_stars else float(rng.integers(1, 6))
            out.append((u, int(i), r, 880_000_000 + len(out)))
    return out


def _write(path: Path, header: str | None, rows, sep: str = ",", eol: str = "\n", fmt=None) -> Path:
    lines = [] if header is None else [header]
    for u, i, r, t in rows:
        lines.append(fmt(u, i, r, t) if fmt else sep.join([str(u), str(i), f"{r:g}", str(t)]))
    path.write_bytes((eol.join(lines) + eol).encode("utf-8"))
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


# ---------------------------------------------------------------------- formats that just work
@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rows = _rows()
    latest = tmp_path / "ml-latest-small"
    latest.mkdir()
    ml1m = tmp_path / "ml-1m"
    ml1m.mkdir()
    return {
        "latest-csv": _write(latest / "ratings.csv", "userId,movieId,rating,timestamp", _rows(half_stars=True)),
        "ml1m-dat": _write(ml1m / "ratings.dat", None, rows, sep="::"),
        "u.data": _write(tmp_path / "u.data", None, rows, sep="\t"),
        "crlf-csv": _write(tmp_path / "crlf.csv", "user,item,rating", [r[:3] + (0,) for r in rows], eol="\r\n",
                           fmt=lambda u, i, r, t: f"{u},{i},{r:g}"),
        "semicolon": _write(tmp_path / "semi.csv", "user_id;item_id;rating;timestamp", rows, sep=";"),
    }


@pytest.mark.parametrize("name", ["latest-csv", "ml1m-dat", "u.data", "crlf-csv", "semicolon"])
def test_train_reads_common_rating_files_without_flags(files, name, tmp_path, capsys) -> None:
    out = tmp_path / f"model-{name}"
    rc, stdout, err = run(capsys, "train", files[name], "--model", "baseline", "--out", out)
    assert rc == 0, err
    model = Recommender.load(out)
    assert len(model.user_map_) == 30 and "saved to" in stdout and "stages: load" in stdout
    if name == "latest-csv":
        assert model.rating_scale_ == (0.5, 5.0)  # the release's known scale


def test_data_options_on_every_command(tmp_path, capsys) -> None:
    rows = _rows()
    odd = _write(tmp_path / "odd.txt", "who|what|stars|when", rows, sep="|")
    opts = ["--user-col", "who", "--item-col", "what", "--rating-col", "stars", "--time-col", "when",
            "--rating-scale", "1,5"]
    rc, out, err = run(capsys, "stats", odd, *opts, "--json")
    assert rc == 0, err
    assert json.loads(out)["ratings"] == len(rows)
    rc, _, err = run(capsys, "train", odd, "--model", "baseline", "--out", tmp_path / "m", *opts)
    assert rc == 0, err
    rc, out, err = run(capsys, "evaluate", tmp_path / "m", "--dataset", odd, *opts, "--json")
    assert rc == 0, err
    assert json.loads(out)["train_matches_model"] is True
    rc, out, err = run(capsys, "benchmark", odd, "--models", "baseline", "--protocol", "random:0.2", *opts)
    assert rc == 0, err
    assert "| baseline |" in out
    rc, _, err = run(capsys, "tune", odd, "--model", "baseline", "--param", "reg_user=1,5", *opts)
    assert rc == 0, err
    for command in ("stats", "train", "evaluate", "benchmark", "tune", "report", "quickstart"):
        rc, out, _ = run(capsys, command, "-h")
        assert rc == 0 and "--rating-scale" in out and "--duplicates" in out, command


def test_benchmark_picks_cv5_off_ml100k_and_says_so(files, capsys) -> None:
    rc, out, err = run(capsys, "benchmark", files["crlf-csv"], "--models", "baseline")
    assert rc == 0, err
    assert "protocol cv5" in err and "| baseline |" in out


# ---------------------------------------------------------------------- the malformed corpus
def _corpus(tmp_path: Path) -> dict[str, tuple[Path, list[str], str]]:
    """file -> (path, extra flags, fragments the one error line must hold)."""
    good = "user,item,rating\n1,10,4\n2,11,5\n"

    def text(name: str, body: str) -> Path:
        p = tmp_path / name
        p.write_text(body, encoding="utf-8")
        return p

    png = tmp_path / "photo.csv"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return {
        "empty": (text("empty.csv", ""), [], "empty"),
        "header only": (text("header.csv", "user,item,rating\n"), [], "no rating rows"),
        "missing rating": (text("missing.csv", good + "3,12,\n"), [], "line 4"),
        "nan": (text("nan.csv", good + "3,12,nan\n"), [], "nan"),
        "five": (text("five.csv", good + "3,12,five\n"), [], "five"),
        "out of scale": (text("nine.csv", good + "3,12,9\n"), ["--rating-scale", "1,5"], "line 4"),
        "no rating column": (text("norating.csv", "user,item\n1,10\n2,11\n"), ["--feedback", "explicit"],
                             "rating"),
        "ragged": (text("ragged.csv", good + "3,12,4,99,extra\n"), [], "line 4"),
        "binary": (png, [], "PNG"),
    }


@pytest.mark.parametrize("command", ["stats", "train"])
def test_malformed_files_get_one_line_naming_the_file_and_problem(tmp_path, capsys, command) -> None:
    for label, (path, flags, fragment) in _corpus(tmp_path).items():
        args = [command, path, *flags] + (["--model", "baseline", "--out", tmp_path / "m"] if command == "train" else [])
        rc, _, err = run(capsys, *args)
        line = _one_error_line(err)
        assert rc == 1, label
        assert path.name in line and fragment.lower() in line.lower(), (label, line)
        assert not (tmp_path / "m").exists(), label  # nothing trained, nothing written


def test_duplicates_are_resolved_counted_and_selectable(tmp_path, capsys) -> None:
    rows = _rows()
    dup = _write(tmp_path / "dups.csv", "user,item,rating,timestamp", rows + [(1, rows[0][1], 1.0, 999_999_999)])
    rc, out, err = run(capsys, "train", dup, "--model", "baseline", "--out", tmp_path / "m")
    assert rc == 0, err
    assert "1 repeated (user, item) rating(s) resolved with --duplicates last" in err
    rc, _, err = run(capsys, "train", dup, "--model", "baseline", "--out", tmp_path / "m2", "--duplicates", "error")
    assert rc == 1 and "--duplicates" in _one_error_line(err)


def test_version_and_short_help(capsys) -> None:
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.startswith("cfrec ")
    rc, out, _ = run(capsys, "-h")
    assert rc == 0 and "train" in out and "predict" in out
