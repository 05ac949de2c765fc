"""Saving and loading models: safetensors weights plus JSON metadata, never pickle.

A model is saved into a folder ``PATH`` that holds complete versions and a pointer to the
current one::

    PATH/
      CURRENT                      one line: the name of the current version folder
      v-20261201T221500-1234-a1b2/ model.json  weights.safetensors  items.json

A save writes a new version folder beside the others, flushes it to disk, then atomically
replaces ``CURRENT`` (``os.replace``) and only then removes leftovers of interrupted saves and
versions older than the one it replaced (which stays, for readers that opened it just before). At every instant ``PATH`` therefore holds either the previous complete model or
the new complete one: a crash (even ``SIGKILL``) between any two steps never loses a model.
Folders written by earlier cfrec releases (the files directly in ``PATH``) still load, and are
upgraded in the same crash-safe way on the next save.

This module is the format only: it writes and reads plain ``(arrays, meta)``, which every model
emits and takes back itself (:meth:`~cfrec.models.base.Recommender.to_state` and
``from_state``); it knows nothing of a model's attributes. ``model.json`` holds the format tag
and version, the weights' SHA-256 and the model's metadata (class, hyperparameters, raw id
vocabularies, rating scale, training-data fingerprint, history); ``weights.safetensors`` the
arrays; ``items.json`` the per-item metadata (titles, years, genres). Reading checks the format,
version and checksum and raises :class:`~cfrec.errors.ModelFileError` naming the file at fault.

Which class a folder holds is resolved by :meth:`Recommender.load
<cfrec.models.base.Recommender.load>` as scikit-learn's ``skops`` does with trusted types: the
class a caller names (``MyModel.load(path)``), or a class known to the model registry
(:mod:`cfrec.models.names`). Nothing is imported because a file says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cfrec._io import (
    file_mode,
    is_os_failure,
    locked_mkdir,
    locked_temp_file,
    os_error_reason,
    remove_stale,
    storage_error,
    to_jsonable,
)
from cfrec._version import __version__
from cfrec.errors import ModelFileError
from cfrec.models.layout import Layout, check_header, check_json_depth, check_values, read_header

FORMAT_NAME = "cfrec-model"
#: 2: arrays a model does not have are not written (version 1 wrote zero biases for every model).
FORMAT_VERSION = 2
ITEMS_KEY = "items"  # the meta entry written to items.json
META_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
ITEMS_FILE = "items.json"
POINTER_FILE = "CURRENT"
_VERSION_RE = re.compile(r"^v-\d{8}T\d{6}-\d+-[0-9a-f]{8}$")
_TMP_PREFIX = ".tmp-"
#: Limits on a model folder's JSON files (a real model.json of 10 million users is ~100 MB and
#: nests 6 deep).
MAX_JSON_BYTES = 512 << 20
MAX_JSON_DEPTH = 32

#: Steps of :func:`save`, in order (a test kills the writer after each of them).
SAVE_STEPS = ("started", "weights_written", "meta_written", "version_written", "pointer_written",
              "pointer_replaced", "cleaned")

StepHook = Callable[[str], None]


# ---------------------------------------------------------------------- writing
def check_writable(path: str | Path) -> Path:
    """Fail early (before a long fit) when a model cannot be saved at ``path``.

    ``path`` may be missing, an empty folder or a cfrec model folder; anything else is refused so
    that a save never replaces a folder that is not a model.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelFileError(f"{path} exists and is a file, not a model folder")
    if path.is_dir() and any(path.iterdir()) and current_version(path) is None:
        raise ModelFileError(f"{path} exists and is not a cfrec model folder; refusing to replace it "
                             "(choose another --out or remove it)")
    parent = _existing_ancestor(path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModelFileError(f"cannot write a model at {path}: {parent} is not writable")
    return path


def save(path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], *,
         on_step: StepHook | None = None) -> Path:
    """Write a model's ``(arrays, meta)`` to the model folder ``path`` without a window in which no
    model is there.

    ``arrays`` are named numpy arrays (written to ``weights.safetensors``); ``meta`` is JSON-ready
    (written to ``model.json`` with the format tag, version and the weights' checksum; its
    ``items`` entry, per-item metadata, goes to ``items.json``). ``on_step`` is called with each
    name of :data:`SAVE_STEPS` after that step is durable (tests use it to interrupt a save at
    every point).

    Temporaries that killed saves left in ``path`` are removed first (only unlocked ones, see
    :func:`cfrec._io.remove_stale`). A failure of the system (disk full, quota, permission,
    read-only file system) raises :class:`~cfrec.errors.StorageError` in one line that says the
    previous model is unchanged; whatever this save wrote is removed.
    """
    path = check_writable(path)
    kept = (f"the previous model at {path} is unchanged" if current_version(path) is not None
            else "no model was saved")
    try:
        path.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
    except OSError as exc:
        raise storage_error(exc, "save the model to", path, kept) from None
    version = _new_version_name()
    tmp = path / f"{_TMP_PREFIX}{version}"
    final = path / version
    pointer_tmp = path / f"{_TMP_PREFIX}{POINTER_FILE}-{version}"
    held: list[int] = []
    doing = ["creating a version folder"]
    committed = False
    try:
        _write_version(tmp, arrays, meta, held, doing, on_step)
        doing[0] = "renaming the version folder"
        os.replace(tmp, final)
        _fsync_dir(path)
        _step(on_step, "version_written")
        doing[0] = f"writing {POINTER_FILE}"
        fd, pointer_tmp = locked_temp_file(path, f"{_TMP_PREFIX}{POINTER_FILE}-", "")
        held.append(fd)
        os.write(fd, (version + "\n").encode("ascii"))
        os.fsync(fd)
        os.chmod(pointer_tmp, file_mode())
        _step(on_step, "pointer_written")
        os.replace(pointer_tmp, path / POINTER_FILE)
        committed = True
        _fsync_dir(path)
    except BaseException as exc:
        if not committed:
            for leftover in (tmp, final, pointer_tmp):
                _remove(leftover)
        if isinstance(exc, Exception) and is_os_failure(exc) and not committed:
            raise storage_error(exc, "save the model to", path, kept, doing[0]) from None
        raise
    finally:
        for fd in held:
            os.close(fd)
    _step(on_step, "pointer_replaced")
    clean_model_folder(path)
    _step(on_step, "cleaned")
    return path


def _write_version(tmp: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], held: list[int],
                   doing: list[str], on_step: StepHook | None) -> None:
    """Write one complete version into the new folder ``tmp`` (locked while this process lives)."""
    from safetensors.numpy import save_file

    mode = file_mode()
    held.append(locked_mkdir(tmp))
    _step(on_step, "started")
    weights = tmp / WEIGHTS_FILE
    doing[0] = f"writing {WEIGHTS_FILE}"
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(weights))
    _fsync_file(weights)
    _step(on_step, "weights_written")
    body = {k: v for k, v in meta.items() if k != ITEMS_KEY}
    doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "cfrec_version": __version__,
           **to_jsonable(body), "weights_sha256": _sha256(weights)}
    doing[0] = f"writing {META_FILE}"
    _write_json(tmp / META_FILE, doc)
    if meta.get(ITEMS_KEY) is not None:
        doing[0] = f"writing {ITEMS_FILE}"
        _write_json(tmp / ITEMS_FILE, meta[ITEMS_KEY])
    doing[0] = "setting permissions"
    _step(on_step, "meta_written")
    for child in tmp.iterdir():
        os.chmod(child, mode)
    os.chmod(tmp, mode | 0o111)


def _write_json(path: Path, obj: Any) -> None:
    """Strict JSON into a file of a version folder not yet visible (no rename needed)."""
    text = json.dumps(to_jsonable(obj), indent=None, ensure_ascii=False, allow_nan=False) + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Remove what killed saves left in the model folder ``path``: unfinished version folders and
    pointer files (``.tmp-*``), and the sibling temporary folders of older releases, each only when
    no live writer holds it (:func:`cfrec._io.remove_stale`). Returns the removed paths."""
    path = Path(path)
    removed = []
    try:
        inside = [path / n for n in os.listdir(path) if n.startswith(_TMP_PREFIX)]
        beside = [path.parent / n for n in os.listdir(path.parent)
                  if re.fullmatch(rf"\.{re.escape(path.name)}\.(tmp|old)-.*", n)]
    except OSError:
        return []
    for candidate in inside + beside:
        if remove_stale(candidate):
            removed.append(candidate)
    return removed


def clean_model_folder(path: str | Path) -> list[Path]:
    """Remove what the current version does not need: versions older than the previous one,
    interrupted saves (unless a live writer holds them) and the files of the pre-versioned
    layout. Returns the removed paths.

    The version replaced last is kept, so a reader that followed ``CURRENT`` just before a save
    replaced it (a service reloading its model, say) can still read every file of it.
    """
    path = Path(path)
    keep = current_version(path)
    if keep is None or keep == path:
        return []
    versions = sorted((c for c in path.iterdir() if c.is_dir() and _VERSION_RE.match(c.name) and c != keep),
                      key=lambda c: c.stat().st_mtime_ns)
    previous = versions[-1] if versions else None
    removed = clean_stale_temps(path)
    for child in path.iterdir():
        if child in (keep, previous) or child.name == POINTER_FILE or child.name.startswith(_TMP_PREFIX):
            continue
        if _VERSION_RE.match(child.name):  # a version a live save is about to point to is locked
            if remove_stale(child):
                removed.append(child)
        elif child.name in (META_FILE, WEIGHTS_FILE, ITEMS_FILE):
            _remove(child)
            removed.append(child)
    return removed


def current_version(path: str | Path) -> Path | None:
    """The folder holding the current model files of ``path`` (``None``: not a model folder).

    Follows ``CURRENT``; a folder with ``model.json`` directly inside (the earlier layout) is its
    own current version.
    """
    path = Path(path)
    pointer = path / POINTER_FILE
    if pointer.is_file():
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if _VERSION_RE.match(name) and (path / name / META_FILE).is_file():
            return path / name
        return None
    if (path / META_FILE).is_file():
        return path
    return None


# ---------------------------------------------------------------------- reading
def read_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(version folder, model.json content)`` of a model folder, checked for format and version."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(f"{path}: not a model folder (no such directory)")
    folder = current_version(path)
    if folder is None:
        if (path / POINTER_FILE).is_file():
            raise ModelFileError(f"{path / POINTER_FILE}: points to no complete model version")
        raise ModelFileError(f"{path}: not a cfrec model folder (missing {META_FILE})")
    meta_path = folder / META_FILE
    meta = read_json(meta_path, "metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{meta_path}: not written by cfrec (format field is not {FORMAT_NAME!r})")
    try:
        version = int(meta.get("format_version", -1))
    except (TypeError, ValueError, OverflowError):
        version = -1
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{meta_path}: format version {meta.get('format_version')} is newer "
                             f"than this cfrec ({__version__}) understands")
    return folder, meta


@dataclass(frozen=True)
class Saved:
    """What a model folder holds: the model's ``(arrays, meta)`` and where they were read from."""

    folder: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def meta_path(self) -> Path:
        return self.folder / META_FILE

    @property
    def weights_path(self) -> Path:
        return self.folder / WEIGHTS_FILE


def read_json(path: Path, what: str) -> Any:
    """A JSON file of a model folder, read within :data:`MAX_JSON_BYTES` and
    :data:`MAX_JSON_DEPTH` (a file nested 100,000 deep is refused before the parser recurses)."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ModelFileError(f"{path}: {size:,} bytes of {what} (at most {MAX_JSON_BYTES:,} read)")
        text = path.read_text(encoding="utf-8")
        return json.loads(check_json_depth(text, MAX_JSON_DEPTH))
    except ModelFileError as exc:
        raise ModelFileError(str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: corrupted {what} ({exc})") from None
    except OSError as exc:
        raise _unreadable(path, exc) from None


#: Gives the layout of a folder's weights from its metadata and the metadata's path.
LayoutFor = Callable[[dict[str, Any], Path], Layout | None]


def load(path: str | Path, layout_for: LayoutFor | None = None) -> Saved:
    """Read the current version of a model folder written by :func:`save` (or by an earlier
    format version: 1 differs only in always holding bias arrays, which models without biases
    ignore).

    ``layout_for`` maps the metadata to the :class:`~cfrec.models.layout.Layout` the weights must
    follow (raising :class:`~cfrec.errors.ModelFileError` when the metadata itself is wrong);
    the weights' header is checked against it before any data is read and their values after
    (see :mod:`cfrec.models.layout`). The recorded checksum is verified too, though the checks
    do not rely on it. Every failure is a :class:`~cfrec.errors.ModelFileError` naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder, meta = read_meta(path)
    meta_path, weights = folder / META_FILE, folder / WEIGHTS_FILE
    layout = None
    if layout_for is not None:
        try:
            layout = layout_for(meta, meta_path)
        except ModelFileError as exc:
            raise ModelFileError(str(exc) if str(exc).startswith(str(folder)) else f"{meta_path}: {exc}") from None
    if not weights.is_file():
        raise ModelFileError(f"{folder}: missing {WEIGHTS_FILE}")
    try:
        dims = check_header(read_header(weights), layout) if layout is not None else {}
        if meta.get("weights_sha256") and _sha256(weights) != meta["weights_sha256"]:
            raise ModelFileError("checksum mismatch (file corrupted or truncated)")
        try:
            arrays = load_file(str(weights))
        except (SafetensorError, ValueError) as exc:
            raise ModelFileError(f"unreadable weights ({exc})") from None
        if layout is not None:
            check_values(arrays, layout, dims)
    except ModelFileError as exc:
        raise ModelFileError(f"{weights}: {exc}") from None
    except OSError as exc:
        raise _unreadable(weights, exc) from None
    items_path = folder / ITEMS_FILE
    meta[ITEMS_KEY] = read_json(items_path, "item metadata") if items_path.is_file() else None
    return Saved(folder, arrays, meta)


def _unreadable(path: Path, exc: OSError) -> ModelFileError:
    _, reason = os_error_reason(exc)
    return ModelFileError(f"{path}: cannot read it: {reason}")


def frame_to_json(info: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame of per-item metadata (index: raw ids) as a JSON-ready dict of columns."""
    out: dict[str, Any] = {"ids": to_jsonable(info.index.tolist())}
    for col in info.columns:
        values = []
        for v in info[col].tolist():
            if isinstance(v, np.ndarray):
                v = v.tolist()
            if v is pd.NA or v is pd.NaT or (isinstance(v, float) and not np.isfinite(v)):
                v = None
            values.append(to_jsonable(v))
        out[col] = values
    return out


def frame_from_json(obj: dict[str, Any]) -> pd.DataFrame:
    """The inverse of :func:`frame_to_json`."""
    obj = dict(obj)
    ids = obj.pop("ids")
    return pd.DataFrame(obj, index=pd.Index(ids, name="item_id"))


# ---------------------------------------------------------------------- sparse state
def sparse_to_state(name: str, matrix: sp.csr_array | sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as three arrays for a model's ``_state()``: ``{name}_indptr`` (int64),
    ``{name}_indices`` (int32) and ``{name}_data`` (float32); :func:`sparse_from_state` reads
    them back. The shape is not stored: the reader knows it from the vocabularies."""
    return {f"{name}_indptr": np.asarray(matrix.indptr, dtype=np.int64),
            f"{name}_indices": np.asarray(matrix.indices, dtype=np.int32),
            f"{name}_data": np.asarray(matrix.data, dtype=np.float32)}


def sparse_from_state(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, int],
                      what: str) -> sp.csr_array:
    """The float32 CSR matrix of ``shape`` that :func:`sparse_to_state` stored under ``name``.

    Raises :class:`~cfrec.errors.ModelFileError` naming ``what`` when an array is missing or the
    arrays do not form a CSR matrix of that shape (pointers that do not start at 0, decrease or
    disagree with the entries; column indices outside the shape).
    """
    try:
        indptr, indices, data = (arrays[f"{name}_{part}"] for part in ("indptr", "indices", "data"))
    except KeyError as exc:
        raise ModelFileError(f"{what}: the weights lack the array {exc}") from None
    n_rows, n_cols = shape
    if (indptr.ndim != 1 or indptr.shape != (n_rows + 1,) or indices.ndim != 1 or indices.shape != data.shape
            or int(indptr[0]) != 0 or int(indptr[-1]) != len(indices) or bool(np.any(np.diff(indptr) < 0))
            or (len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_cols))):
        raise ModelFileError(f"{what} does not form a {n_rows} x {n_cols} sparse matrix")
    return sp.csr_array((data.astype(np.float32), indices.astype(np.int32), indptr.astype(np.int64)),
                        shape=(n_rows, n_cols))


# ---------------------------------------------------------------------- helpers
def _step(hook: StepHook | None, name: str) -> None:
    if hook is not None:
        hook(name)


def _new_version_name() -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"v-{stamp}-{os.getpid()}-{secrets.token_hex(4)}"


def _existing_ancestor(path: Path) -> Path:
    probe = path.resolve() if path.exists() else path.absolute()
    while not probe.exists():
        probe = probe.parent
    return probe


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
