"""MovieLens: the GroupLens releases by name, downloaded once, checksum-verified, cached, parsed fast.

Every release keeps its own format, and each is read by a column parser (pyarrow's CSV reader),
never line by line in Python:

* ``ml-100k``: tab-separated ``u.data``; ``|``-separated latin-1 ``u.item`` with 19 genre flags
  named in ``u.genre``; ``u.user`` (age, gender, occupation, zip).
* ``ml-1m``, ``ml-10m``: ``::``-separated ``ratings.dat``; ``movies.dat`` ``MovieID::Title::Genres``
  (latin-1 in ML-1M); ML-1M also has ``users.dat``. The ``::`` files are parsed by reading ``:``
  as the delimiter and skipping the empty fields between the two colons, so no copy of the file
  is made. The ML-10M zip unpacks to ``ml-10M100K/``; cfrec stores it as ``ml-10m/``.
* ``ml-20m``, ``ml-25m``, ``ml-32m``, ``ml-latest-small``: ``ratings.csv`` with header
  ``userId,movieId,rating,timestamp`` (half stars 0.5..5.0), ``movies.csv`` with quoted titles.

Downloads go to the data home (:func:`data_home`): ``CFREC_DATA_HOME`` or the user cache folder,
laid out as ``<home>/<name>/``. Archives are verified against SHA-256 digests that independent
public sources agree on (GroupLens itself publishes only MD5 sidecars, recorded in ``md5``).

Item metadata (``Interactions.item_info``) is indexed by the raw movie id with columns ``title``
(the original title, year included, e.g. ``"Star Wars (1977)"``), ``year`` (nullable Int64, the
last ``(YYYY)`` in the title, or ML-100K's release date) and ``genres`` (list of str; empty for
movies without a genre: ML-100K "unknown", later releases "(no genres listed)").
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.data.io.build import _release_arrow_memory, build_interactions
from cfrec.data.movielens_files import (
    Layout,
    _read_items_100k,
    _read_items_csv,
    _read_items_dat,
    _read_users,
    _Source,
)
from cfrec.errors import CfrecError, DataError, DatasetUnavailable

logger = logging.getLogger(__name__)

ENV_DATA_HOME = "CFREC_DATA_HOME"
BASE_URL = "https://files.grouplens.org/datasets/movielens"



@dataclass(frozen=True)
class MovieLensSpec:
    """One MovieLens release: where to get it, how to check it, how it is laid out, how big it is.

    ``n_ratings``/``n_users``/``n_items`` are the published sizes (items = movies with a rating).
    """

    name: str
    zip_folder: str  # top folder inside the zip
    layout: Layout
    rating_scale: tuple[float, float]
    n_ratings: int
    n_users: int
    n_items: int
    zip_mb: float
    sha256: str | None
    md5: str | None
    has_user_info: bool
    description: str

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.name}.zip"

    @property
    def ratings_file(self) -> str:
        return {"100k": "u.data", "dat": "ratings.dat", "csv": "ratings.csv"}[self.layout]

    @property
    def known_hash(self) -> str | None:
        """The hash pooch verifies: SHA-256 where established, else the GroupLens MD5, else None."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        return f"md5:{self.md5}" if self.md5 else None


# One release a row: the top folder inside its zip, its file layout, rating scale, published
# numbers of ratings, users and items (movies with a rating), zip size in MB, whether it has
# user demographics, and what it is.
_Release = tuple[str, Layout, tuple[float, float], int, int, int, float, bool, str]
_RELEASES: dict[str, _Release] = {
    "ml-100k": ("ml-100k", "100k", (1.0, 5.0), 100_000, 943, 1_682, 4.9, True,
                "MovieLens 100K (1998): 1-5 stars, user demographics, predefined u1..u5/ua/ub splits"),
    "ml-1m": ("ml-1m", "dat", (1.0, 5.0), 1_000_209, 6_040, 3_706, 5.9, True, "MovieLens 1M (2003): 1-5 stars, user demographics"),
    "ml-10m": ("ml-10M100K", "dat", (0.5, 5.0), 10_000_054, 69_878, 10_677, 65.6, False, "MovieLens 10M (2009): half stars 0.5-5, tags"),
    "ml-20m": ("ml-20m", "csv", (0.5, 5.0), 20_000_263, 138_493, 26_744, 198.7, False, "MovieLens 20M (2015): half stars, tags, tag genome"),
    "ml-25m": ("ml-25m", "csv", (0.5, 5.0), 25_000_095, 162_541, 59_047, 262.0, False, "MovieLens 25M (2019): half stars, tags, tag genome"),
    "ml-32m": ("ml-32m", "csv", (0.5, 5.0), 32_000_204, 200_948, 84_432, 239.0, False, "MovieLens 32M (2024): half stars, tags"),
    "ml-latest-small": ("ml-latest-small", "csv", (0.5, 5.0), 100_836, 610, 9_724, 1.0, False,
                        "MovieLens latest-small (2018 snapshot): half stars, for teaching"),
}
# (SHA-256, MD5) of each release's zip. SHA-256 digests: each found identically in several
# independent public repositories that pin the GroupLens archives; MD5s: GroupLens' own
# <name>.zip.md5 sidecars (also widely pinned; none published for the later releases).
_DIGESTS: dict[str, tuple[str | None, str | None]] = {
    "ml-100k": ("50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": ("a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", "c4d9eecfca2ab87c1945afe126590906"),
    "ml-10m": ("813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862", "ce571fd55effeba0271552578f2648bd"),
    "ml-20m": ("96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3", "cd245b17a1ae2cc31bb14903e1204af3"),
    "ml-25m": ("8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa", "6b51fb2759a8657d3bfcbfc42b592ada"),
    "ml-32m": ("e4a68655d7386b8f95f2f2424b2ff975dfdd15ffd59e0d864a14dca43e99d6ee", None),
    "ml-latest-small": ("696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436", None),
}


def _release(name: str, row: _Release) -> MovieLensSpec:
    folder, layout, scale, n_ratings, n_users, n_items, zip_mb, has_user_info, description = row
    sha256, md5 = _DIGESTS[name]
    return MovieLensSpec(name, folder, layout, scale, n_ratings, n_users, n_items, zip_mb, sha256, md5,
                         has_user_info, description)


MOVIELENS: dict[str, MovieLensSpec] = {name: _release(name, row) for name, row in _RELEASES.items()}



# ---------------------------------------------------------------------------------------------
# data home
# ---------------------------------------------------------------------------------------------
def data_home(override: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding downloaded datasets: ``override``, else ``$CFREC_DATA_HOME``, else the cache.

    The default is ``platformdirs.user_cache_dir("cfrec")`` (``~/.cache/cfrec`` on Linux). The
    folder is not created here; downloads create it.
    """
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENV_DATA_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cfrec"))


_resolve_home = data_home  # functions below take a parameter named data_home


def _spec(variant: str) -> MovieLensSpec:
    try:
        return MOVIELENS[variant]
    except KeyError:
        raise CfrecError(
            f"unknown MovieLens variant {variant!r}; known: {', '.join(MOVIELENS)}"
        ) from None


def _cached_folder(spec: MovieLensSpec, home: Path) -> Path | None:
    for folder in dict.fromkeys((home / spec.name, home / spec.zip_folder)):
        if (folder / spec.ratings_file).is_file():
            return folder
    return None


def is_cached(variant: str, data_home: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``variant`` is unpacked in the data home (no network access)."""
    return _cached_folder(_spec(variant), _resolve_home(data_home)) is not None


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------
def _how_to_fix(spec: MovieLensSpec, home: Path) -> str:
    return (f"download {spec.url} and unzip it into {home}/ (so that "
            f"{home / spec.zip_folder / spec.ratings_file} exists), or set {ENV_DATA_HOME} to a "
            f"folder that holds {spec.name}/")


def _fetch(spec: MovieLensSpec, home: Path, progress: bool) -> Path:
    """Download the archive with pooch (verified against ``spec.known_hash``) into ``home``."""
    import pooch

    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=60)
    path = pooch.retrieve(spec.url, known_hash=spec.known_hash, fname=f"{spec.name}.zip",
                          path=home, downloader=downloader)
    return Path(path)


def download_movielens(
    variant: str, *, data_home: str | os.PathLike[str] | None = None, progress: bool = True
) -> Path:
    """Download, verify and unpack ``variant`` into ``<home>/<variant>/``; return that folder.

    Does nothing when it is already unpacked. A ``<home>/<variant>.zip`` put there by hand is
    verified and unpacked instead of downloading.

    Raises
    ------
    DatasetUnavailable
        The download failed (offline, server error, checksum mismatch); the message says where to
        put the file by hand.
    """
    spec = _spec(variant)
    home = _resolve_home(data_home)
    folder = _cached_folder(spec, home)
    if folder is not None:
        return folder
    archive = home / f"{spec.name}.zip"
    if archive.is_file():
        return _install_zip(spec, archive, home, verify=True, remove=False)
    try:
        home.mkdir(parents=True, exist_ok=True)
        archive = _fetch(spec, home, progress)
    except ValueError as exc:  # pooch: hash mismatch
        raise DatasetUnavailable(
            f"{spec.name}: the file downloaded from {spec.url} does not match its known checksum "
            f"({exc}); it was not kept. Retry, or {_how_to_fix(spec, home)}"
        ) from exc
    except Exception as exc:  # noqa: BLE001  network, HTTP, permission: one clear message
        reason = _short_reason(exc)
        raise DatasetUnavailable(
            f"{spec.name} is not in the data home {home} and downloading {spec.url} failed "
            f"({reason}); {_how_to_fix(spec, home)}"
        ) from exc
    return _install_zip(spec, archive, home, verify=False, remove=True)


def _short_reason(exc: BaseException) -> str:
    """One short phrase for a failed download (requests' messages run to several hundred chars)."""
    name = type(exc).__name__
    text = str(exc)
    if "NameResolution" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return f"{name}: cannot resolve the host; are you offline?"
    if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout"):
        return f"{name}: no connection to the server"
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code}"
    first = text.splitlines()[0] if text else ""
    return f"{name}: {first[:160]}" if first else name


def _install_zip(spec: MovieLensSpec, archive: Path, home: Path, *, verify: bool, remove: bool) -> Path:
    """Unpack ``archive`` into ``home/spec.name`` atomically (temp folder, then rename)."""
    if verify and spec.known_hash is not None:
        import pooch

        alg, expected = spec.known_hash.split(":")
        actual = pooch.file_hash(str(archive), alg=alg)
        if actual != expected:
            raise DatasetUnavailable(
                f"{archive} is not the GroupLens {spec.name} archive ({alg} {actual}, expected "
                f"{expected}); delete it and retry, or {_how_to_fix(spec, home)}"
            )
    target = home / spec.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=home))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)  # extractall drops absolute paths and ".." components
        except zipfile.BadZipFile as exc:
            raise DatasetUnavailable(f"{archive} is not a valid zip file ({exc}); delete it and "
                                     f"retry, or {_how_to_fix(spec, home)}") from exc
        inner = tmp / spec.zip_folder
        if not (inner / spec.ratings_file).is_file():
            found = next(tmp.rglob(spec.ratings_file), None)
            if found is None:
                raise DatasetUnavailable(f"{archive} has no {spec.ratings_file}; it is not the "
                                         f"{spec.name} archive")
            inner = found.parent
        try:
            os.replace(inner, target)
        except OSError:
            if _cached_folder(spec, home) is None:  # not a concurrent install that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if remove:
        archive.unlink(missing_ok=True)
    logger.info("unpacked %s into %s", spec.name, target)
    return target


# ---------------------------------------------------------------------------------------------
# sources: an extracted folder or a zip archive
# ---------------------------------------------------------------------------------------------
def _layout_of(src: _Source) -> Layout:
    if src.has("u.data"):
        return "100k"
    if src.has("ratings.dat"):
        return "dat"
    if src.has("ratings.csv"):
        return "csv"
    raise DataError("not a MovieLens folder: expected u.data (ML-100K), ratings.dat (ML-1M/10M) "
                    "or ratings.csv (ML-20M and later)", path=src.root)


_CSV_HEADER = "userId,movieId,rating,timestamp"


def _check_format(src: _Source, layout: Layout) -> None:
    """Refuse a ratings file that only shares MovieLens' file name (its columns could differ)."""
    name = _layout_file(layout)
    with src.open(name) as fh:
        first = fh.readline(4096).decode("latin-1").lstrip("\ufeff\xef\xbb\xbf").rstrip("\r\n")
    if layout == "csv":
        ok, expected = first.replace('"', "") == _CSV_HEADER, f"the header {_CSV_HEADER}"
    elif layout == "dat":
        ok, expected = first.count("::") == 3, "UserID::MovieID::Rating::Timestamp lines"
    else:
        ok, expected = first.count("\t") == 3, "user id, item id, rating, timestamp separated by tabs"
    if not ok and first:
        raise DataError(f"not a MovieLens ratings file: expected {expected}, found {first[:80]!r}; "
                        "for other rating files use load_ratings", path=src.label(name), line=1)


def _variant_of(src: _Source, layout: Layout) -> str:
    """Name a release found at a path: by its folder name, else by its files."""
    folder = src.folder_name.lower()
    for spec in MOVIELENS.values():
        if folder in (spec.name, spec.zip_folder.lower()) and spec.layout == layout:
            return spec.name
    if layout == "100k":
        return "ml-100k"
    if layout == "dat":
        return "ml-1m" if src.has("users.dat") else "ml-10m"
    return folder or "movielens"


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------
_RATING_COLS = ("user", "item", "rating", "timestamp")


def _read_ratings(src: _Source, layout: Layout) -> tuple[np.ndarray, ...]:
    """(users, items, ratings, timestamps) arrays of a release's ratings file via pyarrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # MovieLens ids fit in int32; reading them so halves the parse buffers of the id columns.
    types = {"user": pa.int32(), "item": pa.int32(), "rating": pa.float32(),
             "timestamp": pa.int64()}
    if layout == "100k":
        name, names, delim, header = "u.data", list(_RATING_COLS), "\t", False
    elif layout == "dat":  # "1::1193::5::978300760" split on ':' -> empty fields at odd positions
        name, names, delim, header = "ratings.dat", ["user", "_a", "item", "_b", "rating", "_c",
                                                     "timestamp"], ":", False
    else:
        name, names, delim, header = "ratings.csv", list(_RATING_COLS), ",", True
    read = pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0,
                             block_size=1 << 24)
    parse = pacsv.ParseOptions(delimiter=delim, quote_char=False, double_quote=False)
    convert = pacsv.ConvertOptions(include_columns=list(_RATING_COLS), column_types=types)
    try:
        if src.zf is None:  # a path lets pyarrow map the file and parse blocks in parallel
            table = pacsv.read_csv(src.root / name, read_options=read, parse_options=parse,
                                   convert_options=convert)
        else:
            with src.open(name) as fh:
                table = pacsv.read_csv(fh, read_options=read, parse_options=parse,
                                       convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _locate_bad_line(src, name, names, delim, header, exc) from exc
    arrays = []
    for col in _RATING_COLS:
        arrays.append(table.column(col).to_numpy())
        table = table.drop_columns([col])  # free each column once copied out
    del table
    _release_arrow_memory()  # hand the parse buffers back to the OS
    return tuple(arrays)


def _locate_bad_line(src: _Source, name: str, names: list[str], delim: str, header: bool,
                     exc: Exception) -> DataError:
    """Error path only: scan ``name`` for the first malformed line and name it."""
    fields = [n for n in names if not n.startswith("_")]
    shown = "::" if delim == ":" else delim
    expected = f"{len(fields)} numeric fields separated by {shown!r} ({', '.join(fields)})"
    with src.open(name) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if header and lineno == 1:
                continue
            parts = raw.decode("latin-1").rstrip("\r\n").split(delim)
            shape_ok = len(parts) == len(names) and not any(
                p for n, p in zip(names, parts, strict=True) if n.startswith("_"))
            if not shape_ok:
                return DataError(f"expected {expected}, found {raw[:80]!r}", path=src.label(name),
                                 line=lineno)
            for field, part in zip(names, parts, strict=True):
                if field.startswith("_"):
                    continue
                try:
                    float(part)
                except ValueError:
                    return DataError(f"{part!r} is not a number; expected {expected}",
                                     path=src.label(name), line=lineno, field=field)
    msg = str(exc).splitlines()[0]
    return DataError(f"cannot parse ({msg}); expected {expected}", path=src.label(name))


def _load_source(src: _Source, *, name: str, layout: Layout) -> Interactions:
    users, items, ratings, timestamps = _read_ratings(src, layout)
    scale = _scale_of(name, layout)
    if len(ratings):
        out = (ratings < scale[0]) | (ratings > scale[1]) | ~np.isfinite(ratings)
        if out.any():
            j = int(np.flatnonzero(out)[0])
            raise DataError(f"rating {ratings[j]:g} is outside the {name} scale "
                            f"[{scale[0]:g}, {scale[1]:g}]", path=src.label(_layout_file(layout)),
                            line=j + 1 + (layout == "csv"), field="rating")
    if layout == "100k":
        item_info = _read_items_100k(src) if src.has("u.item") else None
    elif layout == "dat":
        item_info = _read_items_dat(src) if src.has("movies.dat") else None
    else:
        item_info = _read_items_csv(src) if src.has("movies.csv") else None
    user_info = _read_users(src, layout)
    data = build_interactions(users, items, ratings, timestamps, rating_scale=scale,
                              item_info=item_info, user_info=user_info, name=name)
    data = _with_release_features(data, src)
    del users, items, ratings, timestamps
    _release_arrow_memory()  # the raw id columns were parsed into pyarrow's pool
    return data


def _with_release_features(data: Interactions, src: _Source) -> Interactions:
    """The release's own side features attached: genres and decades of its movies (plus its
    tags, when it ships ``tags.csv``/``tags.dat``), demographics of its users (ML-100K, ML-1M)."""
    from dataclasses import replace

    from cfrec.data.features_files import (
        item_features_from_info,
        read_release_tags,
        user_features_from_info,
    )

    tags = None
    for tag_file in ("tags.csv", "tags.dat"):
        if src.has(tag_file):
            tags = read_release_tags(src.label(tag_file), text=src.read_text(tag_file))
            break
    item_features = item_features_from_info(data.item_info, tags, source=f"{data.name} release")
    user_features = user_features_from_info(data.user_info, source=f"{data.name} release")
    return replace(data, item_features=item_features, user_features=user_features)


def _layout_file(layout: Layout) -> str:
    return {"100k": "u.data", "dat": "ratings.dat", "csv": "ratings.csv"}[layout]


def load_movielens_path(path: str | os.PathLike[str], *, name: str | None = None) -> Interactions:
    """Load a MovieLens release from an extracted folder or a zip archive (layout detected)."""
    src = _Source.open_path(Path(path).expanduser())
    try:
        layout = _layout_of(src)
        _check_format(src, layout)
        return _load_source(src, name=name or _variant_of(src, layout), layout=layout)
    finally:
        src.close()


def is_movielens_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder or zip that proves to be a MovieLens release: a ratings file
    in a MovieLens format beside the release's movie list or its README. A ``ratings.csv`` with
    MovieLens' header alone proves nothing (any export may share the name and columns): it is
    read as a rating file, its scale inferred and said."""
    p = Path(path).expanduser()
    if not (p.is_dir() or (p.is_file() and zipfile.is_zipfile(p))):
        return False
    try:
        src = _Source.open_path(p)
    except DataError:
        return False
    try:
        layout = _layout_of(src)
        _check_format(src, layout)
        return _proves_release(src, layout)
    except DataError:
        return False
    finally:
        src.close()


#: Files whose presence beside a ratings file proves a MovieLens release (GroupLens ships both).
_README_FILES = ("README", "README.txt", "README.html")


def _proves_release(src: _Source, layout: Layout) -> bool:
    """Whether the folder holds the release's movie list or its README beside the ratings."""
    return src.has(_ITEMS_FILE[layout]) or any(src.has(name) for name in _README_FILES)


_ITEMS_FILE = {"100k": "u.item", "dat": "movies.dat", "csv": "movies.csv"}


def release_scale(path: str | os.PathLike[str]) -> tuple[str, tuple[float, float]] | None:
    """``(variant, rating scale)`` of the MovieLens release folder ``path``, else None.

    Used to keep a release's known scale when another of its files (``u1.base`` ...) is loaded
    by path. Only a folder with both the ratings file and the movie list counts, so a folder
    that merely holds some ``u.data`` does not impose a 1-5 scale on its other files.
    """
    p = Path(path).expanduser()
    if not (p.is_dir() and is_movielens_path(p)):
        return None
    src = _Source(p)
    layout = _layout_of(src)
    if not src.has(_ITEMS_FILE[layout]):
        return None
    name = _variant_of(src, layout)
    return name, _scale_of(name, layout)


def _scale_of(name: str, layout: Layout) -> tuple[float, float]:
    """The release's scale; a release folder of unknown name gets its layout's usual scale."""
    spec = MOVIELENS.get(name)
    return spec.rating_scale if spec is not None else (1.0, 5.0) if layout == "100k" else (0.5, 5.0)


def release_ratings_file(path: str | os.PathLike[str]) -> str | None:
    """The ratings file name (``u.data`` ...) of the MovieLens release folder ``path``, else None."""
    p = Path(path).expanduser()
    if not (p.is_dir() and is_movielens_path(p)):
        return None
    return _layout_file(_layout_of(_Source(p)))


def load_movielens(
    variant: str | os.PathLike[str] = "ml-100k",
    *,
    data_home: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Interactions:
    """Load a MovieLens release as :class:`Interactions` with item (and user) metadata.

    Parameters
    ----------
    variant
        A name in :data:`MOVIELENS` (``"ml-100k"``, ``"ml-1m"``, ``"ml-10m"``, ``"ml-20m"``,
        ``"ml-25m"``, ``"ml-32m"``, ``"ml-latest-small"``), or the path of an extracted release
        folder or its zip.
    data_home
        Where releases are cached; see :func:`data_home`.
    download
        Fetch the release when it is not cached. With ``False`` a missing release raises.

    Returns
    -------
    Interactions
        int32 user/item indices, float32 ratings, int64 Unix-second timestamps, the release's
        rating scale, ``item_info`` (title, year, genres) and ``user_info`` (ML-100K, ML-1M);
        ``name`` is the variant.

    Raises
    ------
    DatasetUnavailable
        Not cached and it could not (or may not) be downloaded; says where to put it by hand.
    DataError
        A file does not have the release's format (names the file and line).
    """
    key = os.fspath(variant)
    if key not in MOVIELENS:
        if Path(key).expanduser().exists():
            return load_movielens_path(key)
        raise CfrecError(f"unknown MovieLens variant {key!r}; known: {', '.join(MOVIELENS)} "
                         "(or the path of an extracted release or its zip)")
    spec = MOVIELENS[key]
    home = _resolve_home(data_home)
    folder = _cached_folder(spec, home)
    if folder is None:
        if not download and not (home / f"{spec.name}.zip").is_file():
            raise DatasetUnavailable(
                f"{spec.name} is not in the data home {home} and download=False; "
                f"{_how_to_fix(spec, home)}"
            )
        folder = download_movielens(spec.name, data_home=home)
    src = _Source(folder)
    return _load_source(src, name=spec.name, layout=spec.layout)
