"""The files of a MovieLens release: a folder or zip read as one source, and the readers of
its item and user metadata (titles, years, genres, demographics)."""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from cfrec.errors import DataError

Layout = Literal["100k", "dat", "csv"]
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
_NO_GENRE = {"unknown", "(no genres listed)", ""}
# ML-1M users.dat codes, from the ML-1M README.
_ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
_ML1M_AGES = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55",
              56: "56+"}
_YEAR_RE = r".*\((\d{4})(?:[-\u2013]\d{0,4})?\)"  # the last "(1995)" or "(2006-2007)" in a title


class _Source:
    """Files of one MovieLens release, in a folder or inside a zip (read without extracting)."""

    def __init__(self, root: Path, zf: zipfile.ZipFile | None = None, prefix: str = "") -> None:
        self.root, self.zf, self.prefix = root, zf, prefix

    @classmethod
    def open_path(cls, path: Path) -> _Source:
        if path.is_dir():
            return cls(path)
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"not a zip archive or folder ({exc})", path=path) from exc
        names = zf.namelist()
        for marker in ("u.data", "ratings.dat", "ratings.csv"):
            hits = sorted((n for n in names if n == marker or n.endswith("/" + marker)), key=len)
            if hits:
                return cls(path, zf, hits[0][: -len(marker)])
        zf.close()
        raise DataError("zip holds no MovieLens ratings file (u.data, ratings.dat or ratings.csv)",
                        path=path)

    @property
    def folder_name(self) -> str:
        if self.zf is None:
            return self.root.name
        return self.prefix.rstrip("/").rsplit("/", 1)[-1] or self.root.stem

    def has(self, name: str) -> bool:
        if self.zf is None:
            return (self.root / name).is_file()
        try:
            self.zf.getinfo(self.prefix + name)
        except KeyError:
            return False
        return True

    def label(self, name: str) -> str:
        return f"{self.root}:{self.prefix}{name}" if self.zf else str(self.root / name)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self.zf is None:
            with open(self.root / name, "rb") as fh:
                yield fh
        else:
            with self.zf.open(self.prefix + name) as fh:
                yield fh

    def read_text(self, name: str, encoding: str | None = None) -> str:
        """Text of a metadata file: ``encoding``, or UTF-8 falling back to latin-1."""
        with self.open(name) as fh:
            raw = fh.read()
        if encoding is not None:
            return raw.decode(encoding)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def close(self) -> None:
        if self.zf is not None:
            self.zf.close()


def _years(titles: pd.Series) -> pd.Series:
    return pd.to_numeric(titles.str.extract(_YEAR_RE, expand=False), errors="coerce").astype("Int64")


def _genre_lists(genres: pd.Series) -> pd.Series:
    """'Action|Comedy' -> ['Action', 'Comedy']; '(no genres listed)' -> []."""
    split = genres.fillna("").astype(str).str.split("|")
    return split.map(lambda gs: [g for g in gs if g not in _NO_GENRE])


def _item_frame(ids: Any, titles: pd.Series, years: pd.Series, genres: pd.Series) -> pd.DataFrame:
    frame = pd.DataFrame({"title": titles.to_numpy(), "year": years.to_numpy(),
                          "genres": genres.to_numpy()},
                         index=pd.Index(np.asarray(ids, dtype=np.int64), name="item_id"))
    frame["year"] = frame["year"].astype("Int64")
    return frame


def _read_items_100k(src: _Source) -> pd.DataFrame:
    genre_names = list(_ML100K_GENRES)
    if src.has("u.genre"):
        rows = [ln.split("|") for ln in src.read_text("u.genre", "latin-1").splitlines() if ln.strip()]
        genre_names = [name for name, _ in sorted(((r[0], int(r[1])) for r in rows), key=lambda t: t[1])]
    text = src.read_text("u.item", "latin-1")  # ML-100K metadata is latin-1 (e.g. "Misérables")
    names = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genre_names]
    try:
        raw = pd.read_csv(io.StringIO(text), sep="|", header=None, names=names,
                          dtype=str, keep_default_na=False, quoting=3)
    except pd.errors.ParserError as exc:
        raise DataError(f"malformed u.item ({exc})", path=src.label("u.item")) from exc
    flags = raw[genre_names].to_numpy() == "1"
    labels = np.asarray(genre_names, dtype=object)
    genres = pd.Series([[g for g in labels[row] if g not in _NO_GENRE] for row in flags])
    titles = raw["title"].str.strip()
    release = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce")
    years = _years(titles).fillna(pd.Series(release.dt.year, dtype="Int64"))
    return _item_frame(raw["item_id"].astype(np.int64), titles, years, genres)


def _read_items_dat(src: _Source) -> pd.DataFrame:
    lines = pd.Series(src.read_text("movies.dat").splitlines())
    lines = lines[lines.str.strip() != ""]
    parts = lines.str.split("::", n=2, expand=True)
    if parts.shape[1] != 3:
        raise DataError("expected MovieID::Title::Genres lines", path=src.label("movies.dat"))
    titles = parts[1].str.strip()
    return _item_frame(parts[0].astype(np.int64), titles, _years(titles), _genre_lists(parts[2]))


def _read_items_csv(src: _Source) -> pd.DataFrame:
    with src.open("movies.csv") as fh:
        raw = pd.read_csv(fh, dtype={"movieId": np.int64, "title": str, "genres": str},
                          encoding="utf-8", keep_default_na=False)
    titles = raw["title"].str.strip()
    frame = _item_frame(raw["movieId"], titles, _years(titles), _genre_lists(raw["genres"]))
    if src.has("links.csv"):
        with src.open("links.csv") as fh:
            link_dtypes: dict[str, str | type[np.int64]] = {
                "movieId": np.int64, "imdbId": "Int64", "tmdbId": "Int64"}
            links = pd.read_csv(fh, dtype=link_dtypes)
        links = links.set_index("movieId")
        frame["imdb_id"] = links["imdbId"].reindex(frame.index).astype("Int64")
        frame["tmdb_id"] = links["tmdbId"].reindex(frame.index).astype("Int64")
    return frame


def _read_users(src: _Source, layout: Layout) -> pd.DataFrame | None:
    if layout == "100k" and src.has("u.user"):
        with src.open("u.user") as fh:
            users = pd.read_csv(fh, sep="|", header=None, encoding="latin-1",
                                names=["user_id", "age", "gender", "occupation", "zip"],
                                dtype={"user_id": np.int64, "age": np.int64, "gender": str,
                                       "occupation": str, "zip": str})
        return users.set_index("user_id")
    if layout == "dat" and src.has("users.dat"):
        lines = pd.Series(src.read_text("users.dat").splitlines())
        parts = lines[lines.str.strip() != ""].str.split("::", expand=True)
        age = parts[2].astype(np.int64)
        occupation_code = parts[3].astype(np.int64)
        occupations = np.asarray(_ML1M_OCCUPATIONS, dtype=object)
        users = pd.DataFrame(
            {
                "age": age.to_numpy(),
                "age_group": age.map(_ML1M_AGES).to_numpy(),
                "gender": parts[1].to_numpy(),
                "occupation": np.where(occupation_code < len(occupations),
                                       occupations[np.clip(occupation_code, 0, len(occupations) - 1)],
                                       occupation_code.astype(str)),
                "zip": parts[4].str.strip().to_numpy(),
            },
            index=pd.Index(parts[0].astype(np.int64).to_numpy(), name="user_id"),
        )
        return users
    return None
