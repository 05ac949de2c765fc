"""Export a model's item and user embeddings for other tools (Parquet or CSV, plus ``.npy``).

Layout of the output folder::

    items.parquet | items.csv   item_id, title, genres, n_ratings, bias, f0 .. f{k-1}
    users.parquet | users.csv   user_id, n_ratings, bias, f0 .. f{k-1}
    item_embeddings.npy         float32 (n_items, k), rows in the same order as the table
    user_embeddings.npy         float32 (n_users, k)
    manifest.json               model, sizes, id types and the file list (written last)

Every file is written atomically; ``.npy`` files load with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from cfrec._io import atomic_path
from cfrec._io import write_bytes_atomic as atomic_write_bytes
from cfrec._version import __version__
from cfrec.errors import CfrecError, DataError

if TYPE_CHECKING:
    from cfrec.models.base import Recommender

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMAT", "ExportResult", "ExportedEmbeddings", "RecommendationsWritten", "export_embeddings",
           "load_embeddings", "write_recommendations"]

EXPORT_FORMAT = "cfrec-embeddings"
MANIFEST = "manifest.json"
Format = Literal["parquet", "csv"]


@dataclass(frozen=True)
class ExportResult:
    """Paths written by :func:`export_embeddings`."""

    out_dir: Path
    files: dict[str, Path]
    n_items: int
    n_users: int
    n_factors: int


@dataclass(frozen=True)
class ExportedEmbeddings:
    """An export read back by :func:`load_embeddings`."""

    items: pd.DataFrame
    users: pd.DataFrame
    item_vectors: np.ndarray
    user_vectors: np.ndarray
    manifest: dict[str, Any]


def _embeddings(model: Recommender, side: str) -> np.ndarray:
    try:
        emb = model.item_embeddings() if side == "item" else model.user_embeddings()
    except NotImplementedError:
        raise CfrecError(f"{type(model).__name__} has no {side} embeddings to export") from None
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[1] == 0:
        raise CfrecError(f"{type(model).__name__} has no {side} embeddings to export (0 factors): "
                         "use a factor model such as mf or als")
    return emb


def _genres_text(value: Any) -> str | None:
    if value is None or isinstance(value, float):
        return None
    if isinstance(value, str):
        return value
    return "|".join(map(str, value))


def _write_table(frame: pd.DataFrame, path: Path, fmt: Format) -> Path:
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
    return path


def _write_npy(array: np.ndarray, path: Path) -> Path:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def export_embeddings(model: Recommender, out_dir: str | Path, *, format: Format = "parquet") -> ExportResult:
    """Write ``model``'s item and user embeddings with raw ids, titles, biases and rating counts.

    Factor columns are ``f0..f{k-1}``; the ``.npy`` matrices hold the same numbers in the same
    row order (model index order). Titles and genres come from the model's item metadata
    (genres joined with ``|``).
    """
    if format not in ("parquet", "csv"):
        raise CfrecError(f"unknown export format {format!r}; use 'parquet' or 'csv'")
    model._check_fitted()
    item_vec, user_vec = _embeddings(model, "item"), _embeddings(model, "user")
    k = item_vec.shape[1]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CfrecError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    cols = [f"f{j}" for j in range(k)]
    item_ids = model.item_map_.ids
    seen = model.seen_
    items = pd.DataFrame({"item_id": item_ids})
    info = getattr(model, "item_info_", None)
    if info is not None:
        if "title" in info.columns:
            items["title"] = [t if isinstance(t, str) else None
                              for t in info["title"].reindex(item_ids).tolist()]
        if "genres" in info.columns:
            items["genres"] = [_genres_text(g) for g in info["genres"].reindex(item_ids).tolist()]
    items["n_ratings"] = np.asarray(seen.sum(axis=0)).ravel().astype(np.int64)
    items["bias"] = np.asarray(getattr(model, "item_bias_", np.zeros(len(item_ids))), dtype=np.float32)
    items = pd.concat([items, pd.DataFrame(item_vec, columns=cols)], axis=1)
    users = pd.DataFrame({"user_id": model.user_map_.ids,
                          "n_ratings": np.diff(seen.indptr).astype(np.int64),
                          "bias": np.asarray(getattr(model, "user_bias_", np.zeros(len(seen.indptr) - 1)),
                                             dtype=np.float32)})
    users = pd.concat([users, pd.DataFrame(user_vec, columns=cols)], axis=1)

    ext = "parquet" if format == "parquet" else "csv"
    files = {
        "items": _write_table(items, out / f"items.{ext}", format),
        "users": _write_table(users, out / f"users.{ext}", format),
        "item_embeddings": _write_npy(item_vec, out / "item_embeddings.npy"),
        "user_embeddings": _write_npy(user_vec, out / "user_embeddings.npy"),
    }
    manifest = {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "cfrec_version": __version__,
        "model_class": type(model).__name__,
        "model_name": model.name,
        "table_format": format,
        "n_items": int(len(item_ids)),
        "n_users": int(len(users)),
        "n_factors": int(k),
        "item_id_type": "int" if model.item_map_.is_numeric else "str",
        "user_id_type": "int" if model.user_map_.is_numeric else "str",
        "global_mean": float(model.global_mean_),
        "files": {key: path.name for key, path in files.items()},
    }
    files["manifest"] = atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    logger.info("exported %d item and %d user embeddings (dim %d) to %s", len(item_ids), len(users), k, out)
    return ExportResult(out, files, int(len(item_ids)), int(len(users)), int(k))


def load_embeddings(out_dir: str | Path) -> ExportedEmbeddings:
    """Read an export back (tables with their raw id types, float32 matrices, the manifest)."""
    out = Path(out_dir)
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        raise CfrecError(f"{out}: not an embeddings export (missing {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"corrupted manifest ({exc})", path=manifest_path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise DataError(f"not written by cfrec export (format is not {EXPORT_FORMAT!r})", path=manifest_path,
                        field="format")
    files = manifest.get("files", {})
    tables = {}
    for key in ("items", "users"):
        path = out / files.get(key, "")
        id_col = "item_id" if key == "items" else "user_id"
        id_type = manifest.get(f"{key[:-1]}_id_type", "int")
        if not path.is_file():
            raise CfrecError(f"{out}: missing {files.get(key, key)}")
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, dtype={id_col: "int64" if id_type == "int" else str},
                                keep_default_na=False, na_values={"title": [""], "genres": [""]})
        tables[key] = table
    vectors = {}
    for key in ("item_embeddings", "user_embeddings"):
        path = out / files.get(key, "")
        if not path.is_file():
            raise CfrecError(f"{out}: missing {files.get(key, key)}")
        try:
            vectors[key] = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"unreadable array ({exc})", path=path) from None
    for key, side in (("item_embeddings", "items"), ("user_embeddings", "users")):
        if len(vectors[key]) != len(tables[side]):
            raise DataError(f"{len(vectors[key])} rows, but {files[side]} has {len(tables[side])}",
                            path=out / files[key])
    return ExportedEmbeddings(tables["items"], tables["users"], vectors["item_embeddings"],
                              vectors["user_embeddings"], manifest)


# ---------------------------------------------------------------------- recommendations
@dataclass(frozen=True)
class RecommendationsWritten:
    """What :func:`write_recommendations` wrote."""

    path: Path
    users: int
    known_users: int
    rows: int


def write_recommendations(
    model: Recommender,
    path: str | Path,
    *,
    users: Any = None,
    k: int = 10,
    exclude_seen: bool = True,
    budget: int | None = None,
) -> RecommendationsWritten:
    """Stream the top-``k`` list of many users to a CSV or Parquet file, in bounded memory.

    Columns: ``user_id``, ``rank`` (1-based), ``item_id``, ``score`` (the model's ranking score),
    ``rating`` (predicted, for models that predict ratings) and ``known`` (False: a user the model
    does not know, given its cold-start list). Users are processed in chunks sized to a memory
    budget (see :mod:`cfrec.ranking`), each chunk appended to the file as it is ranked; the file
    appears at ``path`` only when complete (written beside it, then renamed).

    Parameters
    ----------
    users
        Raw user ids (default: every user the model knows, in vocabulary order).
    k
        List length.
    budget
        Score elements ranked at once (default :data:`cfrec.ranking.CHUNK_ELEMENTS`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cfrec.ranking import CHUNK_ELEMENTS, RecsBatch, iter_rank

    model._check_fitted()
    if not isinstance(k, int | np.integer) or k < 1:
        raise CfrecError(f"k must be a positive integer, got {k!r}")
    path = Path(path)
    fmt = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv" if path.suffix.lower() == ".csv" else None
    if fmt is None:
        raise CfrecError(f"{path}: write recommendations to a .csv or .parquet file")
    raw = model.user_map_.ids if users is None else np.atleast_1d(np.asarray(users))
    u_idx = model.user_map_.to_index(raw, missing="-1").astype(np.int64)
    n_items = len(model.item_map_)
    rows = 0
    with atomic_path(path) as tmp:
        writer: Any = None
        try:
            for start, idx, top in iter_rank(model.score_rows, u_idx, n_items, int(k),
                                             exclude=model.seen_ if exclude_seen else None,
                                             budget=budget or CHUNK_ELEMENTS):
                block = u_idx[start:start + len(idx)]
                batch = RecsBatch(raw[start:start + len(idx)], idx, top, model._ratings_of(block, idx),
                                  model.item_map_)
                frame = batch.to_frame("user_id")
                frame["known"] = np.repeat(block >= 0, batch.lengths)
                rows += len(frame)
                if fmt == "csv":
                    frame.to_csv(tmp, mode="a", header=writer is None, index=False)
                    writer = True
                else:
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
            if writer is None:  # no user at all: an empty table with the columns
                empty = pd.DataFrame({"user_id": raw[:0], "rank": np.zeros(0, np.int32), "item_id": model.item_map_.ids[:0],
                                      "score": np.zeros(0, np.float32), "known": np.zeros(0, bool)})
                (empty.to_csv(tmp, index=False) if fmt == "csv" else empty.to_parquet(tmp, index=False))
        finally:
            if fmt == "parquet" and writer not in (None, True):
                writer.close()
    return RecommendationsWritten(path, len(raw), int((u_idx >= 0).sum()), rows)
