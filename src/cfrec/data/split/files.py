"""ML-100K's predefined splits (``u1``..``u5``, ``ua``, ``ub``) read from the release's files."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from cfrec.data.idmap import IdMap
from cfrec.data.interactions import RATING_DTYPE, TIME_DTYPE, Interactions
from cfrec.data.split.core import PREDEFINED, Split
from cfrec.errors import CfrecError, DataError, DatasetUnavailable, UnknownIdError

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- ML-100K files
def _resolve_data_home(data_home: str | Path | None) -> Path:
    if data_home is not None:
        return Path(data_home).expanduser()
    try:
        from cfrec.data.movielens import data_home as _data_home
    except ImportError:  # same rule as the loaders: $CFREC_DATA_HOME, else the user cache
        env = os.environ.get("CFREC_DATA_HOME")
        if env:
            return Path(env).expanduser()
        import platformdirs

        return Path(platformdirs.user_cache_dir("cfrec"))
    return Path(_data_home())


_PART_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def _read_part(path: Path) -> pd.DataFrame:
    """Read one ML-100K ``uN.base``/``uN.test`` file (tab-separated user item rating timestamp)."""
    try:
        df = pd.read_csv(
            path, sep="\t", header=None, names=list(_PART_COLUMNS), engine="c",
            dtype={"user_id": np.int64, "item_id": np.int64, "rating": RATING_DTYPE,
                   "timestamp": TIME_DTYPE},
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise _locate_bad_line(path) or DataError(f"cannot parse: {exc}", path=path) from exc
    if len(df) and not np.isfinite(df["rating"].to_numpy()).all():
        line = int(np.flatnonzero(~np.isfinite(df["rating"].to_numpy()))[0]) + 1
        raise DataError("expected a finite number", path=path, line=line, field="rating")
    return df


def _locate_bad_line(path: Path) -> DataError | None:
    """Find the first malformed line (error path only, so a plain loop is fine)."""
    parsers = (int, int, float, int)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 4:
                return DataError(f"expected 4 tab-separated fields (user item rating timestamp), "
                                 f"got {len(fields)}", path=path, line=lineno)
            for value, parse, col in zip(fields, parsers, _PART_COLUMNS, strict=True):
                try:
                    parse(value)
                except ValueError:
                    kind = "an integer" if parse is int else "a number"
                    return DataError(f"expected {kind}, got {value!r}", path=path, line=lineno,
                                     field=col)
    return None


def predefined_split(
    name: str,
    *,
    data_home: str | Path | None = None,
    data: Interactions | None = None,
) -> Split:
    """One of ML-100K's predefined splits (``u1``..``u5``, ``ua``, ``ub``), read from its files.

    Reads ``<data_home>/ml-100k/<name>.base`` (train) and ``<name>.test`` (test). Both parts use
    the full ML-100K vocabularies: those of ``data`` when given (it must be ML-100K, e.g.
    ``cfrec.data.load_dataset("ml-100k")``, whose titles and metadata are then kept), otherwise
    vocabularies built from the two files (each pair covers all 100,000 ratings).

    Parameters
    ----------
    name
        ``"u1"``..``"u5"``, ``"ua"`` or ``"ub"``.
    data_home
        Folder holding ``ml-100k/``; defaults to ``CFREC_DATA_HOME`` or the cfrec cache. A path
        to the ``ml-100k`` folder itself is accepted too.
    data
        The full ML-100K, to share its vocabularies and metadata.

    Raises
    ------
    DatasetUnavailable
        The split files are not there.
    DataError
        A file is malformed, or holds ids absent from ``data``.
    """
    key = str(name).strip().lower()
    if key not in PREDEFINED:
        raise CfrecError(f"unknown ML-100K split {name!r}; expected one of {', '.join(PREDEFINED)}")
    home = _resolve_data_home(data_home)
    folder = home / "ml-100k"
    if not (folder / f"{key}.base").is_file() and (home / f"{key}.base").is_file():
        folder = home
    base_path, test_path = folder / f"{key}.base", folder / f"{key}.test"
    missing = [str(p) for p in (base_path, test_path) if not p.is_file()]
    if missing:
        raise DatasetUnavailable(
            f"ML-100K split {key!r} needs {' and '.join(missing)}; download ML-100K "
            f"(`cfrec download ml-100k`) or point CFREC_DATA_HOME / data_home at a folder "
            f"holding ml-100k/"
        )
    base, test = _read_part(base_path), _read_part(test_path)
    if data is not None:
        umap, imap = data.user_map, data.item_map
        scale, item_info, user_info = data.rating_scale, data.item_info, data.user_info
        data_name = data.name
    else:
        umap = IdMap(np.concatenate([base["user_id"].to_numpy(), test["user_id"].to_numpy()]))
        imap = IdMap(np.concatenate([base["item_id"].to_numpy(), test["item_id"].to_numpy()]))
        scale, item_info, user_info = (1.0, 5.0), None, None
        data_name = "ml-100k"
    parts = []
    for df, path in ((base, base_path), (test, test_path)):
        try:
            parts.append(Interactions.from_frame(
                df, user_map=umap, item_map=imap, rating_scale=scale, item_info=item_info,
                user_info=user_info, name=data_name,
            ))
        except UnknownIdError as exc:
            raise DataError(
                f"{exc}; the given data ({data.name if data is not None else '?'}) is not the full "
                f"ML-100K: pass cfrec.data.load_dataset('ml-100k') or no data",
                path=path,
            ) from None
    if data is not None:  # the release's side features travel with its folds, as its metadata does
        parts = [replace(p, item_features=data.item_features, user_features=data.user_features) for p in parts]
    split = Split(parts[0], parts[1], key)
    logger.info("ML-100K split %s: %d train / %d test ratings", key, len(split.train),
                len(split.test))
    return split


