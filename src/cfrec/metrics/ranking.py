"""Top-K ranking metrics, vectorised over users.

Every function works on a *hit matrix*: a boolean array ``hits`` of shape (n_users, K) where
``hits[u, j]`` says whether the item at rank ``j + 1`` of user ``u``'s list is relevant to ``u``.
:func:`hit_matrix` builds it from top-K lists and the relevant (user, item) pairs with one sorted
key lookup, so scoring all ML-1M users takes milliseconds. ``n_relevant[u]`` is the number of
relevant items of user ``u`` in the ground truth (including items the model cannot rank, such as
items absent from training: they count as misses for every model alike).

Definitions (binary relevance, rank ``j`` counted from 1, cut-off ``k``):

* ``precision@k = hits / k`` (``k`` slots, even if fewer candidates were available);
* ``recall@k = hits / n_relevant``;
* ``hit_rate@k = 1`` if any of the first ``k`` items is relevant, else 0;
* ``ndcg@k = DCG / IDCG`` with ``DCG = sum_j rel_j / log2(j + 1)`` and the ideal DCG of
  ``min(n_relevant, k)`` relevant items at the top (scikit-learn's ``ndcg_score`` with binary
  gains agrees);
* ``ap@k = sum_j precision@j * rel_j / min(n_relevant, k)`` (MAP@k is its mean over users);
* ``rr@k = 1 / rank`` of the first relevant item within the first ``k``, 0 when there is none
  (MRR@k is its mean);
* ``coverage@k`` = share of the catalogue that appears in at least one top-``k`` list;
* ``popularity@k`` = mean over lists of the mean popularity of the items in the first ``k``
  slots, an item's popularity being the share of training users who interacted with it (how
  much a model leans on the head of the catalogue: popularity ranks highest on it).

Per-user functions return ``nan`` for users with ``n_relevant == 0`` where the metric is
undefined (recall, NDCG, AP); :func:`ranking_metrics` averages over users with at least one
relevant item only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: Metric families that take a cut-off ``@k``.
RANKING_METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate", "coverage", "popularity")


def hit_matrix(top_items: np.ndarray, rel_rows: np.ndarray, rel_items: np.ndarray) -> np.ndarray:
    """Boolean (n_rows, K): is ``top_items[r, j]`` among the relevant items of row ``r``?

    Parameters
    ----------
    top_items
        (n_rows, K) integer item indices, best first; negative entries are empty slots.
    rel_rows, rel_items
        The relevant pairs: row positions into ``top_items`` and item indices in the same index
        space (duplicates are fine).
    """
    top = np.asarray(top_items, dtype=np.int64)
    if top.ndim != 2:
        raise ValueError(f"top_items must be 2-D (users x K), got shape {top.shape}")
    rows = np.asarray(rel_rows, dtype=np.int64).ravel()
    items = np.asarray(rel_items, dtype=np.int64).ravel()
    if rows.shape != items.shape:
        raise ValueError("rel_rows and rel_items differ in length")
    if len(items) and items.min() < 0:
        raise ValueError("rel_items must be non-negative indices (drop items the model cannot rank)")
    if len(rows) and (rows.min() < 0 or rows.max() >= top.shape[0]):
        raise ValueError("rel_rows must index the rows of top_items")
    width = int(max(top.max(initial=-1), items.max(initial=-1))) + 1
    keys = np.unique(rows * width + items)
    if len(keys) == 0:
        return np.zeros(top.shape, dtype=bool)
    query = np.arange(top.shape[0], dtype=np.int64)[:, None] * width + top
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return (keys[pos] == query) & (top >= 0)


def _cut(hits: np.ndarray, k: int | None) -> tuple[np.ndarray, int]:
    h = np.asarray(hits, dtype=bool)
    if h.ndim != 2:
        raise ValueError(f"hits must be 2-D (users x K), got shape {h.shape}")
    if k is None:
        k = h.shape[1]
    if k < 1:
        raise ValueError("k must be >= 1")
    return h[:, :k], int(k)


def _n_rel(n_relevant: np.ndarray, n_rows: int) -> np.ndarray:
    n = np.asarray(n_relevant, dtype=np.float64).ravel()
    if len(n) != n_rows:
        raise ValueError(f"n_relevant has {len(n)} entries for {n_rows} users")
    return n


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def precision_at_k(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user precision@k: relevant items among the first ``k`` slots, divided by ``k``."""
    h, k = _cut(hits, k)
    return h.sum(axis=1) / float(k)


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user recall@k: relevant items in the first ``k`` over all of the user's relevant items."""
    h, _ = _cut(hits, k)
    return _safe_div(h.sum(axis=1).astype(np.float64), _n_rel(n_relevant, len(h)))


def hit_rate_at_k(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user hit rate@k: 1.0 when at least one of the first ``k`` items is relevant."""
    h, _ = _cut(hits, k)
    return np.asarray(h.any(axis=1), dtype=np.float64)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user NDCG@k with binary gains (see the module docstring)."""
    h, k = _cut(hits, k)
    n = _n_rel(n_relevant, len(h))
    disc = _discounts(k)
    dcg = h.astype(np.float64) @ disc[: h.shape[1]]
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal_cum[np.minimum(n, k).astype(np.int64)]
    return _safe_div(dcg, idcg)


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user AP@k: mean of precision@j at the ranks j of hits, normalised by ``min(n_relevant, k)``."""
    h, k = _cut(hits, k)
    n = _n_rel(n_relevant, len(h))
    ranks = np.arange(1, h.shape[1] + 1, dtype=np.float64)
    prec_at_hit = np.cumsum(h, axis=1) / ranks * h
    return _safe_div(prec_at_hit.sum(axis=1), np.minimum(n, k))


def reciprocal_rank(hits: np.ndarray, k: int | None = None) -> np.ndarray:
    """Per-user reciprocal rank of the first relevant item within the first ``k``; 0 when none."""
    h, _ = _cut(hits, k)
    any_hit = h.any(axis=1)
    first = np.argmax(h, axis=1)
    return np.where(any_hit, 1.0 / (first + 1.0), 0.0)


def catalogue_coverage(top_items: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Share of the ``n_items`` catalogue appearing in at least one of the top-``k`` lists."""
    top = np.asarray(top_items, dtype=np.int64)
    if top.ndim != 2:
        raise ValueError(f"top_items must be 2-D (users x K), got shape {top.shape}")
    if n_items <= 0:
        return float("nan")
    if k is not None:
        top = top[:, :k]
    shown = np.unique(top[top >= 0])
    if len(shown) and shown.max() >= n_items:
        raise ValueError(f"item index {int(shown.max())} is outside a catalogue of {n_items} items")
    return len(shown) / float(n_items)


def mean_popularity(top_items: np.ndarray, item_popularity: np.ndarray, k: int | None = None) -> float:
    """Mean over lists of the mean ``item_popularity`` of the items in each top-``k`` list.

    Empty slots (negative entries) are skipped; a list with no item at all does not count.
    ``item_popularity`` is indexed by item (e.g. the share of training users who chose it).
    """
    top = np.asarray(top_items, dtype=np.int64)
    if top.ndim != 2:
        raise ValueError(f"top_items must be 2-D (users x K), got shape {top.shape}")
    if k is not None:
        top = top[:, :k]
    pop = np.asarray(item_popularity, dtype=np.float64).ravel()
    filled = top >= 0
    if filled.any() and top[filled].max() >= len(pop):
        raise ValueError(f"item index {int(top[filled].max())} has no popularity (only {len(pop)} items)")
    values = np.where(filled, pop[np.where(filled, top, 0)] if len(pop) else 0.0, 0.0)
    n_filled = filled.sum(axis=1)
    shown = n_filled > 0
    if not shown.any():
        return float("nan")
    return float(np.mean(values[shown].sum(axis=1) / n_filled[shown]))


def parse_metric(name: str) -> tuple[str, int | None]:
    """Split ``"ndcg@10"`` into ``("ndcg", 10)``; ``"rmse"`` -> ``("rmse", None)``.

    Accepted aliases: ``hr``/``hit``/``hitrate`` -> ``hit_rate``; ``ap`` -> ``map``;
    ``prec`` -> ``precision``. Raises ``ValueError`` on a malformed cut-off.
    """
    base, _, cut = name.strip().lower().partition("@")
    base = {"hr": "hit_rate", "hit": "hit_rate", "hitrate": "hit_rate", "hit-rate": "hit_rate",
            "ap": "map", "prec": "precision", "rr": "mrr"}.get(base, base)
    if not cut:
        return base, None
    if not cut.isdigit() or int(cut) < 1:
        raise ValueError(f"bad cut-off in metric {name!r}: expected a positive integer after '@'")
    return base, int(cut)


def ranking_metrics(
    top_items: np.ndarray,
    rel_rows: np.ndarray,
    rel_items: np.ndarray,
    n_relevant: np.ndarray,
    *,
    n_items: int,
    ks: Iterable[int] = (10,),
    names: Iterable[str] = RANKING_METRICS,
    item_popularity: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean ranking metrics at each cut-off in ``ks``, keyed ``"ndcg@10"`` and so on.

    Accuracy metrics are averaged over rows with ``n_relevant > 0``; coverage and popularity are
    computed over all rows (every list shown). ``top_items`` must have at least ``max(ks)``
    columns unless the catalogue is smaller. ``popularity`` needs ``item_popularity`` (one value
    per item); without it that metric is left out.
    """
    ks = sorted({int(k) for k in ks})
    names = list(names)
    unknown = [n for n in names if n not in RANKING_METRICS]
    if unknown:
        raise ValueError(f"unknown ranking metric(s) {unknown}; choose from {list(RANKING_METRICS)}")
    hits = hit_matrix(top_items, rel_rows, rel_items)
    n_rel = np.asarray(n_relevant, dtype=np.float64).ravel()
    active = n_rel > 0
    h, n = hits[active], n_rel[active]
    out: dict[str, float] = {}

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values)) if len(values) else float("nan")

    for k in ks:
        for name in names:
            key = f"{name}@{k}"
            if name == "precision":
                out[key] = mean(precision_at_k(h, k))
            elif name == "recall":
                out[key] = mean(recall_at_k(h, n, k))
            elif name == "ndcg":
                out[key] = mean(ndcg_at_k(h, n, k))
            elif name == "map":
                out[key] = mean(average_precision_at_k(h, n, k))
            elif name == "mrr":
                out[key] = mean(reciprocal_rank(h, k))
            elif name == "hit_rate":
                out[key] = mean(hit_rate_at_k(h, k))
            elif name == "coverage":
                out[key] = catalogue_coverage(top_items, n_items, k)
            elif name == "popularity" and item_popularity is not None:
                out[key] = mean_popularity(top_items, item_popularity, k)
    return out
