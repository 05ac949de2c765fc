"""The cold-item protocol: hold out a fraction of the items with all their ratings, train without
them, then score them from their features alone.

``cold-items[:FRACTION][:n=REPEATS]`` (``cold-items`` = ``cold-items:0.1:n=5``): each repeat
draws ``FRACTION`` of the items (seeded by the benchmark's seed and the repeat), moves every
rating of them to the test part, and trains on the rest with the features of the training items
only. A model that takes new items (:attr:`~cfrec.models.base.Recommender.takes_new_items`) is
then given the held-out items through :meth:`~cfrec.models.base.Recommender.fold_in_item`, from
their features alone, and measured on their ratings:

* RMSE/MAE on every held-out rating (models that predict ratings);
* NDCG@k and Recall@k ranking the held-out items only, for every training user with a relevant
  held-out item (rating ``>= relevance``; every one on interaction logs).

Two references need no model that takes new items and are always reported:

* ``baseline+feature-mean``: the bias baseline ``mu + b_u + b_i``; a new item's ``b_i`` is the
  mean over its genres of the mean bias of the training items having that genre (weighted
  by the feature values; 0 for an item with no known genre). Its ranking is by that bias.
* ``pop-in-genre``: the same genre means of the training items' rating counts: a new item is
  as popular as the items sharing its genres, the same list for everyone.

Both use the ``genre=`` features when the data has them (a MovieLens release also carries
decades and tags, which the models may use), and every feature otherwise.

Features are the data's ``item_features``; without them, an ``item_info`` column ``genres``
(MovieLens, synthetic data) is used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfrec.data.features import Features
from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError
from cfrec.metrics.ranking import hit_matrix, ndcg_at_k, recall_at_k
from cfrec.models.base import Recommender

PREFIX = "cold-items"
REFERENCES = ("baseline+feature-mean", "pop-in-genre")


@dataclass(frozen=True)
class ColdItemsSpec:
    """A parsed ``cold-items`` protocol: the fraction of items held out and the repeats."""

    fraction: float = 0.1
    repeats: int = 5


def parse_cold_items(protocol: str) -> ColdItemsSpec | None:
    """The spec of a ``cold-items[:FRACTION][:n=REPEATS]`` protocol; None for other protocols."""
    parts = [p.strip() for p in protocol.strip().lower().split(":")]
    if parts[0] != PREFIX:
        return None
    fraction, repeats = 0.1, 5
    for part in parts[1:]:
        try:
            if part.startswith("n="):
                repeats = int(part[2:])
            else:
                fraction = float(part)
        except ValueError:
            raise CfrecError(f"bad protocol {protocol!r}: cold-items[:FRACTION][:n=REPEATS], e.g. "
                             "cold-items:0.1 or cold-items:0.2:n=3") from None
    if not 0 < fraction < 1 or repeats < 1:
        raise CfrecError(f"bad protocol {protocol!r}: the fraction must be in (0, 1) and n >= 1")
    return ColdItemsSpec(fraction, repeats)


def item_features_of(data: Interactions) -> Features:
    """The data's item features, else its ``item_info`` genres as ``genre=NAME`` features."""
    if data.item_features is not None:
        return data.item_features
    info = data.item_info
    if info is None or "genres" not in info.columns:
        raise CfrecError(f"the cold-item protocol scores held-out items from their features, and "
                         f"{data.name} has none; give item features (--item-features FILE)")
    genres = info["genres"].map(lambda g: list(g) if isinstance(g, list | tuple | np.ndarray) else [])
    ids = np.repeat(info.index.to_numpy(), genres.map(len).to_numpy())
    names = [f"genre={g}" for gs in genres for g in gs]
    return Features.from_pairs(ids, names, owner="item", source=f"{data.name} genres")


@dataclass(frozen=True)
class ColdSplit:
    """Training ratings without the held-out items, and all of the held-out items' ratings."""

    train: Interactions
    test: Interactions
    held_out: np.ndarray  # raw ids of the held-out items
    features: Features  # every item's features (the held-out ones are given after training)


def cold_item_split(data: Interactions, fraction: float, seed: int) -> ColdSplit:
    """Hold out ``fraction`` of the rated items (at least one) with all their ratings."""
    feats = item_features_of(data)
    present = data.present_items()
    rng = np.random.default_rng(seed)
    n_out = max(1, int(round(fraction * len(present))))
    held_idx = np.sort(rng.choice(present, n_out, replace=False))
    mask = np.isin(data.items, held_idx)
    held = data.item_map.ids[held_idx]
    train_ids = data.item_map.ids[np.setdiff1d(present, held_idx)]
    train = replace(data.subset(~mask), item_features=subset_features(feats, train_ids))
    return ColdSplit(train, data.subset(mask), held, feats)


def subset_features(features: Features, raw_ids: np.ndarray) -> Features:
    """The rows of ``raw_ids`` (an empty row for an id without features), with the same
    feature vocabulary."""
    ids = IdMap(np.asarray(raw_ids)) if len(raw_ids) else IdMap([])
    return Features(ids, features.names, features.rows(ids.ids), owner=features.owner, source=features.source)


def feature_means(train_values: np.ndarray, train_rows: sp.csr_array, new_rows: sp.csr_array) -> np.ndarray:
    """For each new row: the mean over its features (weighted by the row's values) of the mean
    value of the training rows having that feature; 0 for a row with no feature any training
    row has."""
    weights = abs(sp.csr_array(train_rows)).astype(np.float64)
    support = np.asarray(weights.sum(axis=0)).reshape(-1)
    per_feature = np.divide(weights.T @ np.asarray(train_values, dtype=np.float64), support,
                            out=np.zeros(len(support)), where=support > 0)
    new = abs(sp.csr_array(new_rows)).astype(np.float64)
    new = sp.csr_array(new @ sp.diags_array((support > 0).astype(np.float64)))  # drop unseen features
    total = np.asarray(new.sum(axis=1)).reshape(-1)
    return np.divide(new @ per_feature, total, out=np.zeros(new.shape[0]), where=total > 0)


# ---------------------------------------------------------------------- scoring
def _test_users(split: ColdSplit, relevance: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test users known in training with a relevant held-out item, and the relevant pairs
    as (row position, held-out position)."""
    test = split.test
    rel = np.ones(len(test), bool) if relevance is None or test.is_implicit else test.ratings >= relevance
    raw_u = test.user_map.ids[test.users[rel]]
    raw_i = test.item_map.ids[test.items[rel]]
    trained = np.isin(raw_u, split.train.user_map.ids[split.train.present_users()])
    raw_u, raw_i = raw_u[trained], raw_i[trained]
    users, rows = np.unique(raw_u, return_inverse=True)
    cols = IdMap(split.held_out).to_index(raw_i)
    return users, rows, cols


def ranking_scores(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int,
                   seed: int = 0) -> dict[str, float]:
    """NDCG@k and Recall@k of a (users, held-out items) score matrix against relevant pairs;
    ties (items of the same genres under a feature-mean score) are broken at random (seeded),
    never by id, which in MovieLens follows the release order."""
    kk = min(k, scores.shape[1])
    tiebreak = np.broadcast_to(np.random.default_rng(seed).random(scores.shape[1]), scores.shape)
    top = np.lexsort((tiebreak, -np.asarray(scores, dtype=np.float64)), axis=-1)[:, :kk]
    hits = hit_matrix(top, rows, cols)
    n_rel = np.bincount(rows, minlength=scores.shape[0])
    return {f"ndcg@{k}": float(ndcg_at_k(hits, n_rel, k).mean()),
            f"recall@{k}": float(recall_at_k(hits, n_rel, k).mean())}


def _rating_errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}


@dataclass
class ColdRun:
    """One model on one cold split: its metrics and timings."""

    metrics: dict[str, float]
    fit_seconds: float
    predict_seconds: float
    predicts_ratings: bool
    personalised: bool


def score_model(model: Recommender, split: ColdSplit, *, k: int, relevance: float | None) -> ColdRun:
    """Fit ``model`` on the split's training part, add the held-out items from their features
    (:meth:`~cfrec.models.base.Recommender.fold_in_item`) and score them."""
    if not model.takes_new_items:
        raise CfrecError(f"{type(model).__name__} cannot take new items, so it has nothing to score the "
                         f"held-out items with; the cold-item protocol compares models that build items "
                         f"from features (and reports {', '.join(REFERENCES)} as references)")
    start = time.perf_counter()
    model.fit(split.train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    model.fold_in_item(subset_features(split.features, split.held_out))
    metrics: dict[str, float] = {}
    if model.predicts_ratings and not split.test.is_implicit:
        test = split.test
        pred = model.predict(test.user_map.ids[test.users], test.item_map.ids[test.items])
        metrics.update(_rating_errors(pred, test.ratings))
    users, rows, cols = _test_users(split, relevance)
    u_idx = model.user_map_.to_index(users).astype(np.int64)
    i_idx = model.item_map_.to_index(split.held_out).astype(np.int64)
    scores = np.vstack([model.score_rows(u_idx[a:a + 1024])[:, i_idx] for a in range(0, len(u_idx), 1024)]
                       or [np.zeros((0, len(i_idx)), np.float32)])
    metrics.update(ranking_scores(scores, rows, cols, k))
    return ColdRun(metrics, fit_s, time.perf_counter() - start, model.predicts_ratings, model.personalised)


def genre_features(features: Features) -> Features:
    """The ``genre=`` columns of ``features`` when it has any (the references are popularity and
    bias *within genre*, whatever else the models are given), else all of them."""
    names = np.asarray(features.names.ids, dtype=object).astype(str)
    keep = np.flatnonzero(np.char.startswith(names.astype(str), "genre="))
    if not len(keep) or len(keep) == len(names):
        return features
    return Features(features.ids, IdMap(names[keep]), features.matrix[:, keep], owner=features.owner,
                    source=features.source)


def score_references(split: ColdSplit, *, k: int, relevance: float | None) -> dict[str, ColdRun]:
    """The two references of the module notes on one split."""
    from cfrec.models.baseline import Baseline

    start = time.perf_counter()
    base = Baseline().fit(split.train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    feats = genre_features(split.features)
    train_rows = feats.align(base.item_map_)
    new_rows = feats.rows(split.held_out)
    new_bias = feature_means(base.item_bias_, train_rows, new_rows)
    counts = np.bincount(base.seen_.indices, minlength=len(base.item_map_)).astype(np.float64)
    new_pop = feature_means(counts, train_rows, new_rows)
    users, rows, cols = _test_users(split, relevance)
    out: dict[str, ColdRun] = {}
    bias_metrics: dict[str, float] = {}
    test = split.test
    if not test.is_implicit:
        u = base.user_map_.to_index(test.user_map.ids[test.users], missing="-1")
        col = IdMap(split.held_out).to_index(test.item_map.ids[test.items])
        pred = base.global_mean_ + np.where(u >= 0, base.user_bias_[np.maximum(u, 0)], 0.0) + new_bias[col]
        bias_metrics.update(_rating_errors(np.clip(pred, *base.rating_scale_), test.ratings))
    # mu + b_u + b_new ranks the held-out items by b_new for every user
    bias_metrics.update(ranking_scores(np.tile(new_bias, (len(users), 1)), rows, cols, k))
    bias_s = time.perf_counter() - start
    out[REFERENCES[0]] = ColdRun(bias_metrics, fit_s, bias_s, not test.is_implicit, False)
    out[REFERENCES[1]] = ColdRun(ranking_scores(np.tile(new_pop, (len(users), 1)), rows, cols, k),
                                 0.0, bias_s, False, False)
    return out


def run_cold_items(data: Interactions, factories: Sequence[tuple[Callable[[], Recommender], str]],
                   spec: ColdItemsSpec, *, seed: int, k: int, relevance: float | None,
                   on_fold: Callable[[str, int, ColdRun], None] | None = None) -> dict[str, list[ColdRun]]:
    """Every model and both references on ``spec.repeats`` cold splits (seeds ``seed``,
    ``seed + 1`` ...): per name, one :class:`ColdRun` a repeat."""
    runs: dict[str, list[ColdRun]] = {name: [] for name in REFERENCES}
    for _, name in factories:
        runs.setdefault(name, [])
    for r in range(spec.repeats):
        split = cold_item_split(data, spec.fraction, seed + r)
        for name, run in score_references(split, k=k, relevance=relevance).items():
            runs[name].append(run)
            if on_fold is not None:
                on_fold(name, r, run)
        for factory, name in factories:
            run = score_model(factory(), split, k=k, relevance=relevance)
            runs[name].append(run)
            if on_fold is not None:
                on_fold(name, r, run)
    return runs


def summarise(runs: list[ColdRun]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation over repeats of every metric and timing."""
    keys = sorted({key for run in runs for key in run.metrics})
    table = {key: np.array([run.metrics.get(key, math.nan) for run in runs]) for key in keys}
    table["fit_seconds"] = np.array([run.fit_seconds for run in runs])
    table["predict_seconds"] = np.array([run.predict_seconds for run in runs])
    mean = {key: float(np.mean(v)) for key, v in table.items()}
    std = {key: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan for key, v in table.items()}
    return mean, std


def describe(spec: ColdItemsSpec, k: int, relevance: float | None) -> str:
    rel = "every held-out interaction" if relevance is None else f"test rating >= {relevance:g}"
    return (f"{spec.fraction:.0%} of the items held out with all their ratings, {spec.repeats} seeds; "
            f"RMSE on their ratings, NDCG@{k}/Recall@{k} ranking the held-out items only; relevant = {rel}")


def as_jsonable(runs: dict[str, list[ColdRun]]) -> dict[str, Any]:
    return {name: [{"metrics": r.metrics, "fit_seconds": r.fit_seconds} for r in rs] for name, rs in runs.items()}
