"""One entry point for every data source: a MovieLens name, a MovieLens folder or zip, or any file."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, overload

from cfrec.data.interactions import Interactions
from cfrec.data.io import HEADERLESS_NAMES, LoadReport, load_ratings
from cfrec.data.movielens import (
    MOVIELENS,
    is_movielens_path,
    load_movielens,
    load_movielens_path,
    release_ratings_file,
    release_scale,
)
from cfrec.data.options import DATA_OPTIONS, FEATURE_OPTIONS, DataOptions
from cfrec.errors import CfrecError, DataError, OptionHint


@overload
def load_dataset(
    name_or_path: str | os.PathLike[str], *, data_home: str | os.PathLike[str] | None = ...,
    download: bool = ..., options: DataOptions | None = ..., return_report: Literal[False] = ...,
    **load_ratings_kwargs: Any,
) -> Interactions: ...


@overload
def load_dataset(
    name_or_path: str | os.PathLike[str], *, data_home: str | os.PathLike[str] | None = ...,
    download: bool = ..., options: DataOptions | None = ..., return_report: Literal[True],
    **load_ratings_kwargs: Any,
) -> tuple[Interactions, LoadReport]: ...


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    data_home: str | os.PathLike[str] | None = None,
    download: bool = True,
    options: DataOptions | None = None,
    return_report: bool = False,
    **load_ratings_kwargs: Any,
) -> Interactions | tuple[Interactions, LoadReport]:
    """Load ratings from a MovieLens name or a path.

    Resolution order: a known MovieLens name (``"ml-100k"`` ...; see :data:`MOVIELENS`), then an
    existing path: a folder or zip holding a MovieLens release (its variant is recognised by its
    files), or any ratings file, read by :func:`~cfrec.data.io.load_ratings` with the data
    options (column names, separator, rating scale ...).

    ``feedback="implicit"`` (``--feedback implicit``) reads a release as a log: every rating one
    interaction of weight 1 (:meth:`~cfrec.data.Interactions.as_implicit`).

    A file inside a MovieLens release folder keeps the release's known rating scale, so an
    out-of-scale rating is an error naming its line; the release's own ratings file
    (``ml-1m/ratings.dat`` ...) given with no options loads as the release, titles included.

    A MovieLens release comes with its own side features (``item_features``: genres, decades,
    tags; ``user_features``: age, gender, occupation, zip region) unless the options say
    ``release_features=False``; the ``item_features``/``user_features`` options name CSV files
    with further features (read by :func:`~cfrec.data.features_files.read_features`) for any
    source.

    Parameters
    ----------
    name_or_path
        A MovieLens name, or the path of a release folder or zip, or of a ratings file.
    data_home
        Where MovieLens releases are cached (see :func:`~cfrec.data.movielens.data_home`).
    download
        Fetch a named release that is not cached.
    options
        :class:`~cfrec.data.options.DataOptions` for a ratings file; the same options may also be
        given as keyword arguments (``sep=``, ``user_col=`` ...), but not both for one option.
    return_report
        Also return a :class:`~cfrec.data.io.LoadReport` (for a MovieLens release: its rows,
        columns and known scale).


    Raises
    ------
    CfrecError
        ``name_or_path`` is neither a known name nor an existing path (lists the known names).
    DataError
        Data options given for a MovieLens release (whose format is known); and from the loaders.
    DatasetUnavailable
        From the MovieLens loader.
    """
    kwargs = _merge_options(options, load_ratings_kwargs)
    feature_opts = {name: kwargs.pop(name, None) for name in FEATURE_OPTIONS}
    loaded = _load_any(name_or_path, data_home, download, return_report, kwargs)
    if isinstance(loaded, tuple):
        return _with_features(loaded[0], feature_opts), loaded[1]
    return _with_features(loaded, feature_opts)


def _with_features(data: Interactions, opts: dict[str, Any]) -> Interactions:
    """``data`` with the release's features dropped (``release_features=False``) and the
    features of the given files added."""
    from dataclasses import replace

    from cfrec.data.features_files import merge_features, read_features

    items, users = data.item_features, data.user_features
    if opts.get("release_features") is False:
        items = users = None
    if opts.get("item_features"):
        items = merge_features(items, read_features(opts["item_features"], "item"))
    if opts.get("user_features"):
        users = merge_features(users, read_features(opts["user_features"], "user"))
    if items is data.item_features and users is data.user_features:
        return data
    return replace(data, item_features=items, user_features=users)


def _load_any(name_or_path: str | os.PathLike[str], data_home: str | os.PathLike[str] | None,
              download: bool, return_report: bool,
              kwargs: dict[str, Any]) -> Interactions | tuple[Interactions, LoadReport]:
    """:func:`load_dataset` without the feature options."""
    key = os.fspath(name_or_path)
    as_log = kwargs.get("feedback") == "implicit"
    if key in MOVIELENS:
        _refuse_options(kwargs, f"the MovieLens release {key!r}")
        data = _feedback(load_movielens(key, data_home=data_home, download=download), as_log)
        if not return_report:
            return data
        return data, _release_report(data, key, MOVIELENS[key].ratings_file)
    path = Path(key).expanduser()
    if path.exists():
        if is_movielens_path(path):
            _refuse_options(kwargs, f"the MovieLens release at {path}")
            data = _feedback(load_movielens_path(path), as_log)
            if not return_report:
                return data
            return data, _release_report(data, str(path), release_ratings_file(path))
        if path.is_dir():
            raise DataError("folder is not a MovieLens release (a ratings file in a MovieLens format "
                            "beside the release's movie list or README); give the ratings file itself",
                            path=path)
        if not kwargs and release_ratings_file(path.parent) == path.name:
            # a release's own ratings file, as it ships: load the release (titles included)
            data = load_movielens_path(path.parent)
            return (data, _release_report(data, str(path), path.name)) if return_report else data
        release = release_scale(path.parent)
        if release is not None and kwargs.get("rating_scale") is None:
            kwargs.update(rating_scale=release[1], scale_source="movielens")
        return load_ratings(path, return_report=return_report, **kwargs)  # type: ignore[call-overload]
    close = difflib.get_close_matches(key, list(MOVIELENS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    looks_like_path = any(ch in key for ch in "/\\.") and not key.startswith("ml-")
    what = "no such file or dataset" if looks_like_path else "unknown dataset"
    raise CfrecError(
        f"{what} {key!r}{hint}; known datasets: {', '.join(MOVIELENS)}; or give the path of a "
        "ratings file (CSV/TSV/Parquet), an extracted MovieLens folder or its zip"
    )


def _merge_options(options: DataOptions | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``load_ratings`` from ``options`` plus explicit keywords."""
    merged = dict(kwargs)
    if options is None:
        return merged
    for name, value in options.to_kwargs().items():
        if name in merged and merged[name] is not None and merged[name] != value:
            raise TypeError(f"{name} is given both in options= and as a keyword argument")
        merged[name] = value
    return merged


def _feedback(data: Interactions, as_log: bool) -> Interactions:
    """A release as interactions (every rating one, weight 1) under ``feedback="implicit"``."""
    return data.as_implicit() if as_log else data


def _refuse_options(kwargs: dict[str, Any], what: str) -> None:
    """A MovieLens release has a known format: rating-file options are a mistake, said clearly.

    ``feedback`` is the exception: ``"implicit"`` reads the release as a log of interactions.
    """
    given = [k for k, v in kwargs.items() if v is not None and k != "feedback"]
    if not given:
        return
    flags = [DATA_OPTIONS[k].flag if k in DATA_OPTIONS else f"--{k.replace('_', '-')}"
             for k in given]
    hint = OptionHint(given[0], ", ".join(f"{k}=" for k in given), ", ".join(flags),
                      verb="drop")
    raise DataError(f"data options apply to rating files, not to {what}, whose format and "
                    "rating scale are known", field=given[0], value=given,
                    expected="no data options", hints=(hint,))


def _release_report(data: Interactions, where: str, ratings_file: str | None) -> LoadReport:
    """A :class:`LoadReport` for a MovieLens release (known columns and scale, no duplicates)."""
    if ratings_file == "ratings.csv":
        header, sep = True, ","
        cols = {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"}
    else:  # u.data (tab) and ratings.dat ('::') have no header line
        header, sep = False, "\t" if ratings_file == "u.data" else "::"
        cols = dict(zip(("user", "item", "rating", "time"), HEADERLESS_NAMES, strict=True))
    return LoadReport(where, len(data), len(data), 0, "last", data.n_users, data.n_items,
                      columns=cols, header=header, sep=sep, rating_scale=data.rating_scale,
                      scale_source="movielens", feedback=data.feedback,
                      aggregation="count" if data.is_implicit else None)
