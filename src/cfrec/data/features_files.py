"""Readers of side features: a MovieLens release's own (genres, decades, tags, demographics) and
any CSV of features, long (``item_id,feature[,value]``) or wide (one column per attribute).

Feature names say what they are and group themselves by the text before ``=``
(``genre=Comedy``, ``decade=1990s``, ``tag=dark comedy``, ``age=25-34``, ``gender=F``,
``occupation=writer``, ``zip=9``; a numeric column ``runtime`` keeps its own name): feature models
give each such family its own prior.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfrec.data.features import FeatureOwner, Features
from cfrec.errors import DataError, OptionHint

#: Age buckets of ML-1M's users.dat, applied to ML-100K's ages too (so both releases share them).
AGE_BUCKETS = ((0, "Under 18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-49"),
               (50, "50-55"), (56, "56+"))
#: Words a header uses for the id column of a features file, per owner.
_ID_WORDS = {"item": ("item_id", "itemid", "item", "movieid", "movie_id", "movie", "id"),
             "user": ("user_id", "userid", "user", "id")}
_FEATURE_WORDS = ("feature", "features", "tag", "name", "attribute")
_VALUE_WORDS = ("value", "weight", "score", "relevance", "count")


def feature_flag(owner: FeatureOwner) -> OptionHint:
    """The hint naming the features option of ``owner`` (``--item-features FILE``)."""
    return OptionHint(f"{owner}_features", f'{owner}_features="FILE"', f"--{owner}-features FILE")


# ---------------------------------------------------------------------- MovieLens releases
def _decade(years: Any) -> np.ndarray:
    y = pd.to_numeric(pd.Series(years), errors="coerce")
    return np.where(y.notna(), (y // 10 * 10).astype("Int64").astype(str) + "s", "")


def item_features_from_info(item_info: pd.DataFrame | None, tags: pd.DataFrame | None = None, *,
                            source: str = "", min_tag_items: int = 2) -> Features | None:
    """Item features of a MovieLens release from its ``item_info`` (genres, release decade) and,
    when given, its tags (``item_id``, ``tag`` rows; ``tag=<text>`` weighted ``log(1 + times
    applied)``, tags on fewer than ``min_tag_items`` movies dropped). None when there is nothing."""
    ids: list[np.ndarray] = []
    names: list[np.ndarray] = []
    values: list[np.ndarray] = []
    if item_info is not None and len(item_info):
        index = item_info.index.to_numpy()
        if "genres" in item_info.columns:
            genres = item_info["genres"].map(lambda g: list(g) if isinstance(g, (list, tuple, np.ndarray)) else [])
            lengths = genres.map(len).to_numpy()
            flat = np.asarray([g for gs in genres for g in gs], dtype=object)
            ids.append(np.repeat(index, lengths))
            names.append(np.asarray(["genre=" + str(g) for g in flat], dtype=object))
            values.append(np.ones(len(flat), dtype=np.float32))
        if "year" in item_info.columns:
            dec = _decade(item_info["year"].to_numpy())
            has = dec != ""
            ids.append(index[has])
            names.append(np.asarray(["decade=" + d for d in dec[has]], dtype=object))
            values.append(np.ones(int(has.sum()), dtype=np.float32))
    if tags is not None and len(tags):
        norm = tags["tag"].astype(str).str.strip().str.lower()
        frame = pd.DataFrame({"item_id": tags["item_id"].to_numpy(), "tag": norm.to_numpy()})
        frame = frame[frame["tag"] != ""]
        counts = frame.groupby(["item_id", "tag"], sort=True).size().reset_index(name="n")
        spread = counts.groupby("tag")["item_id"].transform("size")
        counts = counts[spread >= min_tag_items]
        ids.append(counts["item_id"].to_numpy())
        names.append(("tag=" + counts["tag"]).to_numpy(dtype=object))
        values.append(np.log1p(counts["n"].to_numpy()).astype(np.float32))
    if not ids or not sum(len(i) for i in ids):
        return None
    return Features.from_pairs(np.concatenate(ids), np.concatenate(names), np.concatenate(values),
                               owner="item", source=source)


def age_bucket(ages: Any) -> np.ndarray:
    """ML-1M's age groups (``"25-34"`` ...) of ages in years."""
    a = np.asarray(ages, dtype=np.float64)
    lows = np.array([lo for lo, _ in AGE_BUCKETS], dtype=np.float64)
    labels = np.array([lab for _, lab in AGE_BUCKETS], dtype=object)
    return labels[np.clip(np.searchsorted(lows, a, side="right") - 1, 0, len(lows) - 1)]


def user_features_from_info(user_info: pd.DataFrame | None, *, source: str = "") -> Features | None:
    """User features of ML-100K/ML-1M from ``user_info``: ``age=`` bucket, ``gender=``,
    ``occupation=`` and ``zip=`` (the first digit of the zip code, a US region; ``zip=other`` for
    a code that does not start with a digit). None without ``user_info``."""
    if user_info is None or not len(user_info):
        return None
    index = user_info.index.to_numpy()
    ids, names = [], []
    if "age_group" in user_info.columns:
        ages = user_info["age_group"].astype(str).to_numpy(dtype=object)
    elif "age" in user_info.columns:
        ages = age_bucket(user_info["age"].to_numpy())
    else:
        ages = None
    if ages is not None:
        ids.append(index)
        names.append(np.asarray(["age=" + a for a in ages], dtype=object))
    for col in ("gender", "occupation"):
        if col in user_info.columns:
            ids.append(index)
            names.append(np.asarray([f"{col}={v}" for v in user_info[col].astype(str)], dtype=object))
    if "zip" in user_info.columns:
        first = user_info["zip"].astype(str).str.strip().str[:1]
        ids.append(index)
        names.append(np.where(first.str.isdigit(), "zip=" + first, "zip=other").astype(object))
    if not ids:
        return None
    return Features.from_pairs(np.concatenate(ids), np.concatenate(names), owner="user", source=source)


def read_release_tags(path: str | os.PathLike[str], text: str | None = None) -> pd.DataFrame:
    """``item_id``, ``tag`` rows of a MovieLens ``tags.csv`` (userId,movieId,tag,timestamp) or
    ``tags.dat`` (UserID::MovieID::Tag::Timestamp). ``text`` is the file's content when already
    read (from a zip)."""
    label = str(path)
    raw = Path(path).read_bytes().decode("utf-8", errors="replace") if text is None else text
    if label.endswith(".dat"):
        rows = [ln.split("::") for ln in raw.splitlines() if ln.strip()]
        for n, parts in enumerate(rows, start=1):
            if len(parts) < 3 or not parts[1].strip().isdigit():
                raise DataError(f"expected UserID::MovieID::Tag::Timestamp, found {'::'.join(parts)[:80]!r}",
                                path=label, line=n, field="MovieID")
        return pd.DataFrame({"item_id": np.array([int(p[1]) for p in rows], dtype=np.int64),
                             "tag": [p[2] for p in rows]})
    try:
        frame = pd.read_csv(io.StringIO(raw), dtype={"tag": str}, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"malformed tags file ({str(exc).splitlines()[0]})", path=label) from None
    if not {"movieId", "tag"} <= set(frame.columns):
        raise DataError(f"a tags file needs the columns movieId and tag, found {list(frame.columns)}",
                        path=label, line=1, field="header", expected="userId,movieId,tag,timestamp")
    ids = pd.to_numeric(frame["movieId"], errors="coerce")
    if ids.isna().any():
        j = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError(f"movie id {frame['movieId'].iloc[j]!r} is not a number", path=label, line=j + 2,
                        field="movieId", expected="an integer movie id")
    return pd.DataFrame({"item_id": ids.astype(np.int64).to_numpy(), "tag": frame["tag"].to_numpy()})


# ---------------------------------------------------------------------- any CSV
def read_features(path: str | os.PathLike[str], owner: FeatureOwner = "item", *, sep: str | None = None,
                  id_col: str | None = None, multi_sep: str = "|", numeric: str = "both",
                  n_buckets: int = 4, encoding: str = "utf-8") -> Features:
    """Features of items (or users) from a CSV file.

    Two shapes, told apart by the header:

    * **long**: ``item_id,feature[,value]`` (the id column, then a column named ``feature``,
      ``tag`` or ``name``, then optionally ``value``/``weight``); one row per (entity, feature),
      value 1 when absent, repeated rows summed.
    * **wide**: an id column and one column per attribute. A numeric column ``c`` becomes the
      standardised value ``c`` and/or quantile buckets ``c=q1..qN`` (``numeric``: ``"value"``,
      ``"bucket"`` or ``"both"``); any other column one-hot ``c=value``, several values per
      cell when they are separated by ``multi_sep`` (``Action|Comedy``). Empty cells add nothing.

    The id column is ``id_col``, else the first column whose name is a usual id word
    (``item_id``, ``movieId``, ``user_id`` ...), else the first column. Errors name the file, the
    line and the field, and the option that helps.
    """
    label = str(path)
    p = Path(path).expanduser()
    hint = feature_flag(owner)
    if not p.is_file():
        raise DataError(f"no such {owner} features file", path=label, expected="a CSV file", hints=(hint,))
    try:
        text = p.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"not {encoding} text ({exc.reason} at byte {exc.start})", path=label,
                        expected=f"{encoding} text") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"empty {owner} features file", path=label, line=1,
                        expected=f"a header line such as {owner}_id,feature,value", hints=(hint,))
    delim = sep if sep is not None else _sniff_sep(lines[0])
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    rows = [r for r in reader if any(c.strip() for c in r)]
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if len(header) < 2 or any(not h for h in header):
        raise DataError(f"header {lines[0][:80]!r} must name an id column and at least one feature column",
                        path=label, line=1, field="header",
                        expected=f"{owner}_id,feature[,value] or {owner}_id,<attribute>,...", hints=(hint,))
    for n, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"{len(r)} field(s), the header has {len(header)}", path=label, line=n,
                            expected=f"{len(header)} fields separated by {delim!r}", hints=(hint,))
    lowered = [h.lower() for h in header]
    id_idx = _id_column(header, lowered, owner, id_col, label)
    cols = np.array(body, dtype=object).reshape(len(body), len(header)) if body else \
        np.empty((0, len(header)), dtype=object)
    ids_raw = np.array([str(v).strip() for v in cols[:, id_idx]], dtype=object)
    empty = np.flatnonzero(ids_raw == "")
    if len(empty):
        raise DataError(f"missing {owner} id", path=label, line=int(empty[0]) + 2, field=header[id_idx],
                        expected=f"a {owner} id in every row")
    ids = _as_ids(ids_raw)
    rest = [j for j in range(len(header)) if j != id_idx]
    feature_j = [j for j in rest if lowered[j] in _FEATURE_WORDS]
    if feature_j and len(rest) <= 2:  # long form
        fj = feature_j[0]
        vj = [j for j in rest if j != fj]
        names = np.array([str(v).strip() for v in cols[:, fj]], dtype=object)
        missing = np.flatnonzero(names == "")
        if len(missing):
            raise DataError("missing feature name", path=label, line=int(missing[0]) + 2, field=header[fj],
                            expected="a feature name such as genre=Comedy")
        values = None
        if vj:
            values = _numbers(cols[:, vj[0]], label, header[vj[0]], allow_empty=False)
        return Features.from_pairs(ids, names, values, owner=owner, source=label)
    # wide form
    out_ids, out_names, out_values = [], [], []
    for j in rest:
        col = np.array([str(v).strip() for v in cols[:, j]], dtype=object)
        present = col != ""
        num = pd.to_numeric(pd.Series(col[present]), errors="coerce").to_numpy(dtype=np.float64)
        if present.any() and np.isfinite(num).all() and multi_sep not in "".join(col[present]).replace("-", ""):
            x = num
            which = ids[present]
            if numeric in ("value", "both"):
                sd = float(np.std(x))
                out_ids.append(which)
                out_names.append(np.full(len(x), header[j], dtype=object))
                out_values.append(((x - x.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32))
            if numeric in ("bucket", "both"):
                edges = np.unique(np.quantile(x, np.linspace(0, 1, n_buckets + 1)[1:-1]))
                b = np.searchsorted(edges, x, side="right") + 1
                out_ids.append(which)
                out_names.append(np.array([f"{header[j]}=q{k}" for k in b], dtype=object))
                out_values.append(np.ones(len(x), dtype=np.float32))
            if numeric not in ("value", "bucket", "both"):
                raise ValueError(f"numeric must be 'value', 'bucket' or 'both', not {numeric!r}")
            continue
        parts = [[v.strip() for v in cell.split(multi_sep) if v.strip()] if multi_sep else [cell]
                 for cell in col]
        lengths = np.array([len(ps) for ps in parts])
        out_ids.append(np.repeat(ids, lengths))
        out_names.append(np.array([f"{header[j]}={v}" for ps in parts for v in ps], dtype=object))
        out_values.append(np.ones(int(lengths.sum()), dtype=np.float32))
    if not out_ids:
        return Features.from_pairs(np.zeros(0, dtype=ids.dtype), np.zeros(0, dtype=object), owner=owner,
                                   source=label)
    return Features.from_pairs(np.concatenate(out_ids), np.concatenate(out_names),
                               np.concatenate(out_values), owner=owner, source=label)


def _sniff_sep(first: str) -> str:
    for cand in ("\t", ",", ";", "|"):
        if cand in first:
            return cand
    return ","


def _id_column(header: list[str], lowered: list[str], owner: FeatureOwner, id_col: str | None,
               label: str) -> int:
    if id_col is not None:
        if id_col not in header:
            raise DataError(f"no column {id_col!r} in the header {header}", path=label, line=1, field="header",
                            expected=f"a column named {id_col!r}")
        return header.index(id_col)
    for word in _ID_WORDS[owner]:
        if word in lowered:
            return lowered.index(word)
    return 0


def _as_ids(raw: np.ndarray) -> np.ndarray:
    """Integer ids when every id is an integer (as MovieLens ratings' ids are), else strings."""
    if len(raw) and all(re.fullmatch(r"-?\d{1,18}", str(v)) for v in raw):
        return raw.astype(np.int64)
    return raw.astype(str)


def _numbers(col: np.ndarray, label: str, field: str, *, allow_empty: bool) -> np.ndarray:
    text = pd.Series([str(v).strip() for v in col])
    nums = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(nums) if not allow_empty else (~np.isfinite(nums) & (text != "").to_numpy())
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise DataError(f"{text.iloc[j]!r} is not a number", path=label, line=j + 2, field=field,
                        value=text.iloc[j], expected="a finite number (the feature's value or weight)")
    return nums.astype(np.float32)


def merge_features(a: Features | None, b: Features | None) -> Features | None:
    """The union of two feature sets of the same owner: rows of both, columns of both (values of a
    feature both define are summed)."""
    if a is None or b is None:
        return a if b is None else b
    ca, cb = a.matrix.tocoo(), b.matrix.tocoo()
    ids = np.concatenate([a.ids.ids[ca.row], b.ids.ids[cb.row]])
    names = np.concatenate([a.names.ids[ca.col].astype(str), b.names.ids[cb.col].astype(str)])
    values = np.concatenate([ca.data, cb.data])
    source = " + ".join(s for s in (a.source, b.source) if s)
    return Features.from_pairs(ids, names, values, owner=a.owner, source=source)
