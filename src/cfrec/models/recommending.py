"""The model-independent parts of scoring and ranking a fitted model's items: raw ids to index
pairs, the ``k`` check, candidate restriction, the popularity list of the ranking models, masking padded slots, and nearest items
by cosine similarity of item embeddings. :class:`~cfrec.models.base.Recommender` calls these
with its own scores and vocabularies; this module never imports the base class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from cfrec.data.idmap import IdMap
from cfrec.errors import CfrecError
from cfrec.ranking import Recs, RecsBatch, rank, top_k_row


def pair_indices(user_map: IdMap, item_map: IdMap, users: Any,
                 items: Any) -> tuple[np.ndarray, np.ndarray]:
    """Model indices (int64, -1 for an unknown id) of raw (user, item) pairs: ``users`` one raw id
    (broadcast over ``items``) or an array as long as ``items``."""
    i_idx = (np.array([item_map.index_of(items)], dtype=np.int64) if np.ndim(items) == 0
             else item_map.to_index(np.asarray(items), missing="-1").astype(np.int64))
    if np.ndim(users) == 0:
        u_idx = np.full(len(i_idx), user_map.index_of(users), dtype=np.int64)
    else:
        u_idx = user_map.to_index(np.asarray(users), missing="-1").astype(np.int64)
        if len(u_idx) != len(i_idx):
            raise ValueError(f"users ({len(u_idx)}) and items ({len(i_idx)}) differ in length")
    return u_idx, i_idx


def check_k(k: Any) -> None:
    """Refuse a list length that is not a positive integer."""
    if not isinstance(k, int | np.integer) or k < 1:
        raise CfrecError(f"k must be a positive integer, got {k!r}")


def candidate_indices(item_map: IdMap, candidates: Any) -> np.ndarray | None:
    """Sorted unique model indices of the raw ``candidates`` the model knows (unknown ones are
    dropped), or None when every item is a candidate."""
    if candidates is None:
        return None
    cand_idx = item_map.to_index(np.atleast_1d(np.asarray(candidates)), missing="-1")
    return np.unique(cand_idx[cand_idx >= 0]).astype(np.int64)


def popularity_scores(seen: Any, n_items: int) -> np.ndarray:
    """Training ratings per item divided by the largest count (the most popular item scores 1):
    the cold-start list of the ranking models, whose own scores have no bias to fall back on."""
    counts = np.bincount(seen.indices, minlength=n_items).astype(np.float64)
    return (counts / max(float(counts.max(initial=0.0)), 1.0)).astype(np.float32)


def mask_padded(ratings: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    """A float32 copy of ``ratings`` with NaN where ``idx`` marks a padded slot (-1)."""
    if ratings is None:
        return None
    out = np.asarray(ratings, dtype=np.float32).copy()
    out[idx < 0] = np.nan
    return out


def similar_by_embedding(emb: np.ndarray, item_map: IdMap, items: Any, k: int) -> Recs | RecsBatch:
    """The ``k`` items closest to each of ``items`` (raw ids) by cosine similarity of the rows of
    ``emb`` (the query excluded; items with a zero vector are never neighbours)."""
    norms = np.linalg.norm(emb, axis=1)
    unit = emb / np.maximum(norms, 1e-12)[:, None]
    nonzero = np.flatnonzero(norms > 0)
    if np.ndim(items) == 0:  # one row, itself excluded: the batch path's arithmetic, no set-up
        i = np.array([item_map.index_of(items, missing="raise", what="item")])
        one, sims = top_k_row((unit[i] @ unit.T)[0], int(k), exclude=i, candidates=nonzero)
        return Recs(item_map.to_raw(one), sims)
    raw = np.asarray(items)
    idx = item_map.to_index(raw, what="item").astype(np.int64)
    itself = sp.eye_array(len(unit), dtype=np.float32, format="csr")  # row i excludes item i
    top_idx, top = rank(lambda rows: unit[rows] @ unit.T, idx, len(unit), int(k),
                        exclude=itself, candidates=nonzero)
    return RecsBatch(raw, top_idx, top, None, item_map)
