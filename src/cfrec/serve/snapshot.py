"""The model a service answers with: an immutable, checked snapshot of one model version
(:class:`ServedModel`), and the holder that swaps in a new version on reload (:class:`ModelHolder`).

A request reads the holder's current snapshot once and uses it to the end, so a reload in the
middle of a request cannot mix two models. The library's scoring and fold-in only read a fitted
model (NeuMF's fold-in takes gradients with respect to the new vectors alone), so concurrent
requests share a snapshot safely. A reload loads the folder's current version, checks it
(finite scores for a known user and a folded-in one; this also builds the vocabularies' lookup
tables, so requests never race to build them) and only then swaps the holder's reference; until
then, and for good if the new version fails its check, the old model answers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfrec._version import __version__
from cfrec.catalog import Catalog
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import Recommender
from cfrec.models.persistence import read_meta

logger = logging.getLogger("cfrec.serve.app")

#: Models whose calls cost less CPU time than this (the load check's best timings of a
#: recommendation and a one-rating fold-in) answer small requests on the event loop.
INLINE_SECONDS = 0.002


@dataclass(frozen=True)
class ServedModel:
    """An immutable snapshot of one loaded, checked model version and what the API shows of it.

    Attributes
    ----------
    model
        The fitted model (only read, never changed, while it serves).
    catalog
        Its items' metadata and popularity.
    version
        Name of the version folder it was loaded from.
    card
        The ``/v1/model`` body.
    inline
        Whether its calls are fast enough to run on the event loop.
    """

    model: Recommender
    catalog: Catalog
    path: Path
    version: str
    card: dict[str, Any]
    inline: bool
    has_similar: bool
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.catalog)


def _version_name(path: Path, folder: Path, meta: dict[str, Any]) -> str:
    if folder != path:
        return folder.name
    return "unversioned-" + str(meta.get("weights_sha256", ""))[:12]


def _best_seconds(fn: Callable[[], Any], repeat: int = 5) -> float:
    """The least CPU time of ``repeat`` calls in this thread: what the call costs, not what
    other work on the machine took meanwhile (so where a model is scored does not depend on the
    load at start-up)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def load_served(path: str | Path, *, inline: bool | None = None) -> ServedModel:
    """Load the current version of the model folder ``path`` and check it can serve.

    The version folder named by ``CURRENT`` is read once, so the weights and the card always
    belong to the same version even if a save replaces it meanwhile. The check ranks for a
    training user and for a user folded in from the most-rated item, asks for similar items,
    and requires finite scores; it raises :class:`~cfrec.errors.ModelFileError` otherwise.
    ``inline`` forces where calls run (``None``: decided from the check's timings).
    """
    path = Path(path)
    folder, meta = read_meta(path)
    model = Recommender.load(folder)
    catalog = Catalog.from_model(model)
    n_items = len(catalog)
    if n_items == 0:
        raise ModelFileError(f"{folder}: the model has no items")
    k = min(10, n_items)
    lo, hi = model.rating_scale_
    timings: dict[str, float] = {}
    try:
        if len(model.user_map_):
            user = model.user_map_.to_list()[0]
            _require_finite(model.recommend(user, k, exclude_seen=False).scores, folder,
                            "recommendation scores")
            timings["recommend"] = _best_seconds(lambda: model.recommend(user, k))
            model.user_map_.index_of(str(user))  # builds the lookup table path ids go through
        top = catalog.raw_id(int(catalog.popular(1)[0]))
        _require_finite(model.recommend(model.fold_in([top], [hi]), k).scores, folder,
                        "fold-in scores")
        timings["fold_in"] = _best_seconds(lambda: model.recommend(model.fold_in([top], [hi]), k))
        catalog.index_of(str(top))  # builds the item lookup table the same way
        model.predict(top, top)
        model.score(top, top)
    except CfrecError as exc:
        raise ModelFileError(f"{folder}: the model failed its serving check ({exc})") from None
    has_similar = model.has_similar_items  # the model's own answer (popularity, baseline: no)
    if has_similar:
        try:
            model.similar_items(top, k=min(k, max(n_items - 1, 1)))
        except CfrecError as exc:
            raise ModelFileError(f"{folder}: the model failed its serving check ({exc})") from None
    if inline is None:
        inline = max(timings.values(), default=0.0) < INLINE_SECONDS
    fit_info = dict(meta.get("fit_info") or {})
    card = {
        "model_class": type(model).__name__,
        "model_name": str(meta.get("model_name") or type(model).name or type(model).__name__),
        "model_version": _version_name(path, folder, meta),
        "path": str(path.resolve()),
        "params": dict(meta.get("params") or {}),
        "predicts_ratings": bool(model.predicts_ratings),
        "score_label": model.score_label,
        "cold_start_label": model.cold_start_label,
        "fallback_labels": {name: model.fallback_labels[code] for code, name in
                            enumerate(("none", "unknown_user", "unknown_item", "unknown_both"))},
        "rating_scale": [float(lo), float(hi)],
        "n_users": len(model.user_map_),
        "n_items": n_items,
        "n_ratings": _int_or_none(fit_info.get("n_ratings")),
        "dataset": _str_or_none(fit_info.get("dataset")),
        "fingerprint": _str_or_none(fit_info.get("fingerprint")),
        "metrics": fit_info.get("test") if isinstance(fit_info.get("test"), dict) else None,
        "fit_info": fit_info,
        "trained_with_cfrec": _str_or_none(meta.get("cfrec_version")),
        "cfrec_version": __version__,
        "has_titles": catalog.has_titles,
        "has_similar": has_similar,
        "loaded_at": time.time(),
        "scoring": "event-loop" if inline else "thread-pool",
    }
    card = _finite_json(card)
    logger.info("loaded %s (%s, %d users, %d items) from %s; check %s; scoring on the %s",
                card["model_version"], card["model_class"], card["n_users"], n_items, folder,
                ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in timings.items()), card["scoring"])
    return ServedModel(model, catalog, path, card["model_version"], card, inline, has_similar,
                       timings)


def _require_finite(values: np.ndarray, folder: Path, what: str) -> None:
    if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
        raise ModelFileError(f"{folder}: non-finite {what}; the model cannot serve")


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _finite_json(obj: Any) -> Any:
    """JSON-ready copy with non-finite floats as ``None`` (the API never sends NaN)."""
    if isinstance(obj, dict):
        return {str(k): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _finite_json(obj.item())
    return obj


class ModelHolder:
    """The model a service answers with, swapped atomically on reload.

    ``current`` is read without a lock (a reference read is atomic); :meth:`reload` is
    serialised by a lock and replaces the reference only after the new version loaded and passed
    its check.
    """

    def __init__(self, path: str | Path, *, inline: bool | None = None) -> None:
        self.path = Path(path)
        self.inline = inline
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def reload(self, *, force: bool = False) -> tuple[ServedModel, str | None, bool]:
        """Load and check the folder's current version, then swap it in.

        Returns ``(served, previous version, whether a new model was swapped in)``; when the
        folder still points at the version already serving (and ``force`` is False) nothing is
        loaded. Raises :class:`~cfrec.errors.CfrecError` when the new version cannot serve; the
        old one then stays.
        """
        with self._lock:
            old = self._current
            try:
                if old is not None and not force:
                    folder, meta = read_meta(self.path)
                    if _version_name(self.path, folder, meta) == old.version:
                        return old, old.version, False
                new = load_served(self.path, inline=self.inline)
            except CfrecError as exc:
                self.last_error = str(exc)
                raise
            except Exception as exc:  # noqa: BLE001 - any loading failure keeps the old model
                error = _loading_error(self.path, exc)
                if str(error) != self.last_error:  # the traceback once, not on every retry
                    logger.error("loading %s failed unexpectedly", self.path, exc_info=exc)
                self.last_error = str(error)
                raise error from exc
            self._current = new
            self.last_error = None
            return new, None if old is None else old.version, True


def _loading_error(path: Path, exc: BaseException) -> ModelFileError:
    """A :class:`~cfrec.errors.ModelFileError` for an unexpected exception while loading the
    model folder ``path`` (a defect of the folder the loader did not word), naming the file when
    the exception or its traceback shows which one."""
    where = getattr(exc, "filename", None) or _file_in_traceback(exc, path) or path
    if isinstance(exc, RecursionError):
        reason = "a file nests its data too deeply to be read"
    elif isinstance(exc, MemoryError):
        reason = "a file needs more memory than there is to be read"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return ModelFileError(f"{where}: cannot load the model ({reason})")


def _file_in_traceback(exc: BaseException, root: Path) -> Path | None:
    """The file inside ``root`` that the innermost frame of ``exc``'s traceback was reading (a
    path among its local variables), to name it in the error; None when none is found."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    try:
        base = root.resolve()
    except OSError:
        return None
    for frame in reversed(frames):
        for value in list(frame.f_locals.values()):
            if not isinstance(value, str | Path) or len(str(value)) > 4096:
                continue
            try:
                candidate = Path(value).resolve()
                if candidate.is_file() and base in candidate.parents:
                    return candidate
            except (OSError, ValueError):
                continue
    return None
