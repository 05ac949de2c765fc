"""The part of a saved model every :class:`~cfrec.models.base.Recommender` shares, as plain
``(arrays, meta)`` and back: id vocabularies, global mean, rating scale, the seen-items matrix,
item metadata, fit record and history, and the checks of that metadata before a folder's weights
are read. The base class adds its hooks' own arrays; :mod:`cfrec.models.persistence` writes the
result as files. One-way: the base class imports this module, never the other way round.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.errors import ModelFileError
from cfrec.models import persistence
from cfrec.models.layout import Array


def shared_state(model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A fitted model's shared arrays (its fallback arrays under ``base.``, the seen items, its
    own arrays under ``model.``) and JSON-ready metadata."""
    arrays = {f"base.{k}": v for k, v in model._fallback_state().items()}
    arrays["base.seen_indptr"] = model.seen_.indptr.astype(np.int64)
    arrays["base.seen_indices"] = model.seen_.indices.astype(np.int32)
    arrays.update({f"model.{k}": v for k, v in model._state().items()})
    meta = {
        "model_class": type(model).__name__,
        "model_module": type(model).__module__,
        "model_name": model.name,
        "params": model.get_params(),
        "global_mean": model.global_mean_,
        "rating_scale": list(model.rating_scale_),
        "user_ids": model.user_map_.to_list(),
        "item_ids": model.item_map_.to_list(),
        "fit_info": getattr(model, "fit_info_", {}),
        "history": getattr(model, "history_", []),
        "extra": model._extra_meta(),
        "items": None if model.item_info_ is None else persistence.frame_to_json(model.item_info_),
    }
    return arrays, meta


def restore_shared(model: Any, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Set on a new model what :func:`shared_state` gave, then its own state through its hooks
    (raises :class:`ModelFileError` when the seen items do not fit the vocabularies)."""
    model.user_map_ = IdMap.from_list(meta["user_ids"])
    model.item_map_ = IdMap.from_list(meta["item_ids"])
    model.global_mean_ = float(meta["global_mean"])
    lo, hi = meta["rating_scale"]
    model.rating_scale_ = (float(lo), float(hi))
    n_u, n_i = len(model.user_map_), len(model.item_map_)
    indptr, indices = arrays["base.seen_indptr"], arrays["base.seen_indices"]
    if len(indptr) != n_u + 1 or (len(indices) and int(indices.max()) >= n_i):
        raise ModelFileError("seen-items matrix does not match the id vocabularies")
    model.seen_ = sp.csr_array((np.ones(len(indices), dtype=np.float32), indices, indptr),
                               shape=(n_u, n_i))
    model.fit_info_ = meta.get("fit_info") or {}
    model.history_ = meta.get("history") or []
    items = meta.get("items")
    model.item_info_ = None if items is None else persistence.frame_from_json(items)
    model._set_fallback_state({k[5:]: v for k, v in arrays.items() if k.startswith("base.")})
    model._set_state({k[6:]: v for k, v in arrays.items() if k.startswith("model.")},
                     meta.get("extra") or {})


def saved_sizes(meta: dict[str, Any]) -> dict[str, int]:
    """Check a saved model's shared metadata (id vocabularies, a finite mean and rating scale)
    and give the vocabulary sizes; raises :class:`ModelFileError` naming the field at fault."""
    sizes = {}
    for key, what in (("user_ids", "users"), ("item_ids", "items")):
        ids = meta.get(key)
        if not isinstance(ids, list) or not all(isinstance(i, int | str) and not isinstance(i, bool)
                                                for i in ids):
            raise ModelFileError(f"{key} must be a list of raw ids (whole numbers or text)")
        sizes[what] = len(ids)
    mean = meta.get("global_mean")
    if isinstance(mean, bool) or not isinstance(mean, int | float) or not np.isfinite(mean):
        raise ModelFileError(f"global_mean must be a finite number, got {mean!r}")
    scale = meta.get("rating_scale")
    if (not isinstance(scale, list) or len(scale) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in scale)
            or scale[0] > scale[1]):
        raise ModelFileError(f"rating_scale must be [low, high] of finite numbers, got {scale!r}")
    return sizes


def declared_layout(cls: type) -> dict[str, Array]:
    """The ``state_layout`` tables of a class hierarchy merged, a subclass's entry replacing its
    base's."""
    merged: dict[str, Array] = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get("state_layout", {}))
    return merged


def strict_layout(cls: type) -> bool:
    """Whether names not declared are refused: every class that saves arrays declares them."""
    return all("state_layout" in k.__dict__ or "_declared_arrays" in k.__dict__ for k in cls.__mro__
               if "_state" in k.__dict__ or "_fallback_state" in k.__dict__)


def item_info_for(data: Interactions) -> pd.DataFrame | None:
    """The item metadata a model keeps (title, year, genres, by raw id in model order), or None."""
    info = data.item_info
    if info is None:
        return None
    cols = [c for c in ("title", "year", "genres") if c in info.columns]
    if not cols:
        return None
    return info.reindex(data.item_map.ids)[cols]
