"""One entry point for every data source: a MovieLens name, a MovieLens folder or zip, or any file."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from cfrec.data.interactions import Interactions
from cfrec.data.io import load_ratings
from cfrec.data.movielens import MOVIELENS, is_movielens_path, load_movielens, load_movielens_path
from cfrec.errors import CfrecError, DataError


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    data_home: str | os.PathLike[str] | None = None,
    download: bool = True,
    **load_ratings_kwargs: Any,
) -> Interactions:
    """Load ratings from a MovieLens name or a path.

    Resolution order: a known MovieLens name (``"ml-100k"`` ...; see :data:`MOVIELENS`), then an
    existing path: a folder or zip holding a MovieLens release (its variant is recognised by its
    files), or any ratings file, read by :func:`~cfrec.data.io.load_ratings` with
    ``load_ratings_kwargs`` (column names, separator, rating scale ...).

    Raises
    ------
    CfrecError
        ``name_or_path`` is neither a known name nor an existing path (lists the known names).
    DatasetUnavailable, DataError
        From the loaders.
    """
    key = os.fspath(name_or_path)
    if key in MOVIELENS:
        if load_ratings_kwargs:
            raise TypeError(f"options {sorted(load_ratings_kwargs)} apply to rating files, "
                            f"not to the MovieLens release {key!r}")
        return load_movielens(key, data_home=data_home, download=download)
    path = Path(key).expanduser()
    if path.exists():
        if is_movielens_path(path):
            if load_ratings_kwargs:
                raise TypeError(f"options {sorted(load_ratings_kwargs)} apply to rating files, "
                                f"not to the MovieLens release at {path}")
            return load_movielens_path(path)
        if path.is_dir():
            raise DataError("folder is not a MovieLens release (no u.data, ratings.dat or "
                            "ratings.csv in a MovieLens format); give the ratings file itself",
                            path=path)
        return load_ratings(path, **load_ratings_kwargs)
    close = difflib.get_close_matches(key, list(MOVIELENS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    looks_like_path = any(ch in key for ch in "/\\.") and not key.startswith("ml-")
    what = "no such file or dataset" if looks_like_path else "unknown dataset"
    raise CfrecError(
        f"{what} {key!r}{hint}; known datasets: {', '.join(MOVIELENS)}; or give the path of a "
        "ratings file (CSV/TSV/Parquet), an extracted MovieLens folder or its zip"
    )
