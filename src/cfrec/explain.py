"""Why an item was recommended: the rated item it is most similar to ("because you rated ...").

A recommendation is explained by the item among those the user rated (or liked) whose item
embedding has the highest cosine similarity with the recommended item's, the neighbourhood view
of a factor model (Koren 2008 uses the same idea to justify SVD++ recommendations). Models
without item embeddings (popularity, the bias baseline) give no explanation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cfrec.models.base import Recommender


@dataclass(frozen=True)
class Because:
    """For each recommended item: the rated item most like it (raw id) and their cosine."""

    items: list[Any]  # raw ids, or None where nothing explains the item
    similarity: np.ndarray  # float32 cosines (nan where None)


def because_rated(model: Recommender, recommended: Any, rated: Any) -> Because | None:
    """Explain ``recommended`` raw item ids by the most similar of the ``rated`` raw item ids.

    Returns None for a model without item embeddings. Items unknown to the model are skipped.
    """
    try:
        emb = np.asarray(model.item_embeddings(), dtype=np.float32)
    except NotImplementedError:
        return None
    if emb.ndim != 2 or emb.shape[1] == 0:
        return None
    rec_idx = model.item_map_.to_index(np.atleast_1d(np.asarray(recommended)), missing="-1").astype(np.int64)
    hist = model.item_map_.to_index(np.atleast_1d(np.asarray(rated)), missing="-1").astype(np.int64)
    hist = np.unique(hist[hist >= 0])
    out_items: list[Any] = [None] * len(rec_idx)
    sims = np.full(len(rec_idx), np.nan, dtype=np.float32)
    if not len(hist) or not len(rec_idx):
        return Because(out_items, sims)
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    ok = rec_idx >= 0
    cos = unit[rec_idx[ok]] @ unit[hist].T  # (recommended, rated)
    best = np.argmax(cos, axis=1)
    sims[ok] = cos[np.arange(len(best)), best]
    for pos, raw in zip(np.flatnonzero(ok), model.item_map_.to_raw(hist[best]).tolist(), strict=True):
        out_items[pos] = raw
    return Because(out_items, sims)
