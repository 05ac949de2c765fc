"""Offline evaluation protocols: one call for a fitted model, holdout, k-fold and predefined folds.

:func:`evaluate` scores a fitted model on a test part: rating error (RMSE, MAE, with how many
predictions fell back to biases) and top-K ranking metrics over the *full* item ranking (every
item the user did not rate in training is a candidate; no sampled negatives).

Relevance rule for explicit ratings: a test item is relevant to its user when the test rating is
``>= relevance`` (4.0 by default; ``None`` makes every test item relevant). On interaction logs
(``test.is_implicit``: no ratings) every held-out interaction is relevant and the threshold does
not apply. Users whose test part
holds no relevant item are excluded from the ranking averages (their number is reported as
``ranking_users_excluded``); catalogue coverage and the mean popularity of recommended items (the share of training users who
chose them) are computed over the lists of all test users.
Relevant test items the model cannot rank (absent from its training data) stay in the
denominators: they are misses for every model alike. Every ranking metric has a cut-off, MRR
included (``mrr@10``: reciprocal rank of the first relevant item within the top 10, else 0); see
:mod:`cfrec.metrics.ranking` for the exact definitions.

:func:`cross_validate` / :func:`run_protocol` fit a fresh model per split and report every fold
plus the mean and the sample standard deviation (``ddof=1``) across folds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfrec._io import to_jsonable
from cfrec.data.interactions import Interactions
from cfrec.data.split import Split
from cfrec.errors import CfrecError
from cfrec.metrics.ranking import RANKING_METRICS, parse_metric, ranking_metrics
from cfrec.metrics.rating import mae, rmse
from cfrec.models.base import (
    KNOWN,
    UNKNOWN_BOTH,
    UNKNOWN_ITEM,
    UNKNOWN_USER,
    Prediction,
    Recommender,
)
from cfrec.ranking import rank

logger = logging.getLogger(__name__)

RATING_METRICS = ("rmse", "mae")
#: Test pairs predicted per call: models gather a factor row per pair (n_pairs x k floats, twice),
#: so a test part of ML-25M's size (5M pairs, 64 factors) predicted at once would hold 2.6 GB of
#: gathered rows; in chunks of this many pairs it holds a few tens of MB.
PREDICT_CHUNK = 1 << 16
DEFAULT_RANKING = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate", "coverage", "popularity")

ModelLike = Recommender | str | Callable[[], Recommender]
"""A model to evaluate: a registry name (``"mf"``, ``"mf:n_factors=64,epochs=30"``, ``"pop"``,
``"mf-lab"``), an unfitted instance (cloned per fold) or a zero-argument factory."""


# ---------------------------------------------------------------------- metric selection
def metric_names(metrics: Sequence[str] | str | None, k: int) -> list[str]:
    """Normalise a metric selection to canonical names (``"ndcg@10"``, ``"rmse"`` ...).

    ``None`` means everything at cut-off ``k``; a ranking metric without ``@`` takes ``k``.
    Raises :class:`CfrecError` naming the bad entry and the valid choices.
    """
    if k < 1:
        raise CfrecError(f"k must be a positive integer, got {k}")
    if metrics is None:
        return [*RATING_METRICS, *(f"{m}@{k}" for m in DEFAULT_RANKING)]
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    out: list[str] = []
    for raw in metrics:
        try:
            base, cut = parse_metric(raw)
        except ValueError as exc:
            raise CfrecError(str(exc)) from None
        if base in RATING_METRICS:
            if cut is not None:
                raise CfrecError(f"metric {raw!r}: {base} takes no cut-off")
            name = base
        elif base in RANKING_METRICS:
            name = f"{base}@{cut or k}"
        else:
            valid = ", ".join([*RATING_METRICS, *(f"{m}@K" for m in RANKING_METRICS)])
            raise CfrecError(f"unknown metric {raw!r}; choose from {valid}")
        if name not in out:
            out.append(name)
    if not out:
        raise CfrecError("no metric selected")
    return out


# ---------------------------------------------------------------------- error breakdown
@dataclass(frozen=True)
class GroupError:
    """Rating error of one group of test ratings."""

    group: str
    n: int
    share: float
    rmse: float
    mae: float

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "n": self.n, "share": self.share,
                "rmse": plain_number(self.rmse), "mae": plain_number(self.mae)}


@dataclass(frozen=True)
class ErrorBreakdown:
    """RMSE/MAE of test ratings split by whether their user and item were seen in training.

    The four disjoint groups (``known user & item``, ``new user``, ``new item``, ``new user &
    item``) partition the test ratings; ``known users`` / ``new users`` are their unions by user.
    """

    groups: tuple[GroupError, ...]

    def __getitem__(self, group: str) -> GroupError:
        for g in self.groups:
            if g.group == group:
                return g
        raise KeyError(group)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {g.group: g.to_dict() for g in self.groups}

    def to_markdown(self) -> str:
        lines = ["| test ratings | n | share | RMSE | MAE |", "|---|---:|---:|---:|---:|"]
        for g in self.groups:
            lines.append(f"| {g.group} | {g.n} | {g.share:.1%} | {format_value(g.rmse)} | {format_value(g.mae)} |")
        return "\n".join(lines)


BREAKDOWN_GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("known user & item", (KNOWN,)),
    ("new user", (UNKNOWN_USER,)),
    ("new item", (UNKNOWN_ITEM,)),
    ("new user & item", (UNKNOWN_BOTH,)),
    ("known users", (KNOWN, UNKNOWN_ITEM)),
    ("new users", (UNKNOWN_USER, UNKNOWN_BOTH)),
    ("all", (KNOWN, UNKNOWN_USER, UNKNOWN_ITEM, UNKNOWN_BOTH)),
)


def error_breakdown(y_true: np.ndarray, prediction: Prediction) -> ErrorBreakdown:
    """Group rating errors by the fallback code of each prediction (known/new user and item)."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prediction.ratings, dtype=np.float64)
    code = np.asarray(prediction.fallback)
    n_all = len(t)
    groups = []
    for name, codes in BREAKDOWN_GROUPS:
        m = np.isin(code, codes)
        n = int(m.sum())
        groups.append(GroupError(name, n, n / n_all if n_all else 0.0, rmse(t[m], p[m]), mae(t[m], p[m])))
    return ErrorBreakdown(tuple(groups))


# ---------------------------------------------------------------------- single evaluation
@dataclass
class Evaluation:
    """What :func:`evaluate_detailed` measured on one test part."""

    metrics: dict[str, float]
    breakdown: ErrorBreakdown | None
    predict_seconds: float
    rank_seconds: float


def evaluate(model: Recommender, test: Interactions, *, train: Interactions | None = None, k: int = 10,
             relevance: float | None = 4.0, metrics: Sequence[str] | str | None = None) -> dict[str, float]:
    """Score a fitted model on ``test``: RMSE, MAE, fallback counts and ranking metrics at ``k``.

    Parameters
    ----------
    model
        A fitted recommender.
    test
        Held-out ratings (raw ids are matched to the model's vocabulary; unknown ids are fine).
    train
        The ratings the model was trained on, if at hand: checked against the model's training
        fingerprint (a mismatch is logged as a warning: rankings exclude the items the *model*
        saw in training).
    k
        Default cut-off for ranking metrics named without ``@``.
    relevance
        Test ratings ``>= relevance`` are relevant; ``None`` makes every test rating relevant.
        Ignored on interaction logs (``test.is_implicit``): every held-out interaction is
        relevant.
    metrics
        Names such as ``["rmse", "ndcg@10", "recall@20"]`` (default: all at ``k``). Ranking is
        skipped when no ranking metric is asked for.

    Returns
    -------
    dict
        The chosen metrics plus ``n_test``, the prediction counts ``personalised`` /
        ``unknown_user`` / ``unknown_item`` / ``unknown_both`` and, with ranking metrics,
        ``ranking_users`` (users averaged) and ``ranking_users_excluded`` (test users without a
        relevant test item).
    """
    return evaluate_detailed(model, test, train=train, k=k, relevance=relevance, metrics=metrics).metrics


def evaluate_detailed(model: Recommender, test: Interactions, *, train: Interactions | None = None,
                      k: int = 10, relevance: float | None = 4.0,
                      metrics: Sequence[str] | str | None = None) -> Evaluation:
    """:func:`evaluate` plus the known/new error breakdown and the time spent predicting and ranking."""
    model._check_fitted()
    if len(test) == 0:
        raise CfrecError("the test set is empty: nothing to evaluate")
    names = metric_names(metrics, k)
    if train is not None:
        _check_train(model, train)
    out: dict[str, float] = {"n_test": len(test)}
    breakdown = None
    t0 = time.perf_counter()
    need_rating = any(n in RATING_METRICS for n in names)
    if need_rating:
        # a model whose predictions use the time of the rating (BayesianFM's user_day) gets it
        times = test.timestamps if getattr(model, "uses_timestamps", False) else None
        pred = predict_pairs(model, test.raw_users(), test.raw_items(), timestamps=times)
    predict_seconds = time.perf_counter() - t0
    if need_rating:  # a model whose predictions are not rating estimates gets n/a (NaN), not an error
        if "rmse" in names:
            out["rmse"] = rmse(test.ratings, pred.ratings) if model.metric_applies("rmse") else math.nan
        if "mae" in names:
            out["mae"] = mae(test.ratings, pred.ratings) if model.metric_applies("mae") else math.nan
        out.update(pred.counts())
        if model.predicts_ratings:
            breakdown = error_breakdown(test.ratings, pred)
    ranking = [n for n in names if n not in RATING_METRICS]
    t0 = time.perf_counter()
    if ranking:
        out.update(_ranking(model, test, ranking, relevance))
    rank_seconds = time.perf_counter() - t0
    ordered = {n: out[n] for n in names}
    ordered.update({key: v for key, v in out.items() if key not in ordered})
    return Evaluation(ordered, breakdown, predict_seconds, rank_seconds)


def predict_pairs(model: Recommender, users: np.ndarray, items: np.ndarray,
                  chunk: int | None = None, timestamps: np.ndarray | None = None) -> Prediction:
    """``model.predict_detailed(users, items)`` for equal-length raw id arrays, ``chunk`` pairs at a
    time (default :data:`PREDICT_CHUNK`), so that the model's per-pair working arrays never exceed
    one chunk (the same values). With ``timestamps`` (one per pair), ``model.predict_at`` instead:
    for a model whose ``uses_timestamps`` is true."""
    chunk = PREDICT_CHUNK if chunk is None else chunk
    n = len(users)

    def part(sl: slice) -> Prediction:
        if timestamps is not None:
            timed: Any = model  # a model that uses_timestamps has predict_at
            out: Prediction = timed.predict_at(users[sl], items[sl], timestamps[sl])
            return out
        return model.predict_detailed(users[sl], items[sl])

    if n <= chunk:
        return part(slice(0, n))
    ratings = np.empty(n, dtype=np.float32)
    fallback = np.empty(n, dtype=np.int8)
    for start in range(0, n, chunk):
        got = part(slice(start, start + chunk))
        ratings[start:start + chunk] = got.ratings
        fallback[start:start + chunk] = got.fallback
    return Prediction(ratings, fallback)


def _ranking(model: Recommender, test: Interactions, names: list[str],
             relevance: float | None) -> dict[str, float]:
    parsed = [parse_metric(n) for n in names]
    ks = sorted({int(c) for _, c in parsed if c is not None})
    families = list(dict.fromkeys(b for b, _ in parsed))
    # One row per test user (test vocabulary index -> row).
    rows_of_user, row_users = _rows(test.users)
    u_model = model.user_map_.to_index(test.user_map.to_raw(row_users), missing="-1").astype(np.int64)
    rel = (np.ones(len(test), dtype=bool) if relevance is None or test.is_implicit
           else test.ratings >= relevance)
    r_rows = rows_of_user[rel]
    r_items_test = test.items[rel].astype(np.int64)
    # Unique relevant (row, item) pairs; n_relevant counts those the model cannot rank too.
    pair_keys = np.unique(r_rows * np.int64(test.n_items) + r_items_test)
    p_rows, p_items_test = pair_keys // test.n_items, pair_keys % test.n_items
    n_relevant = np.bincount(p_rows, minlength=len(row_users))
    i_model = model.item_map_.to_index(test.item_map.to_raw(p_items_test), missing="-1").astype(np.int64)
    rankable = i_model >= 0
    top, _ = rank(model.score_rows, u_model, len(model.item_map_), max(ks), exclude=model.seen_)
    popularity = None
    if "popularity" in families:
        n_train_users = max(len(model.user_map_), 1)
        seen = model.seen_  # training users per item, without a copy of the matrix
        cols = seen.indices if bool((seen.data > 0).all()) else seen.indices[seen.data > 0]
        popularity = np.bincount(cols, minlength=len(model.item_map_)).astype(np.float64) / n_train_users
    res = ranking_metrics(top, p_rows[rankable], i_model[rankable], n_relevant,
                          n_items=len(model.item_map_), ks=ks, names=families, item_popularity=popularity)
    out = {n: res[n] for n in names}
    out["ranking_users"] = int((n_relevant > 0).sum())
    out["ranking_users_excluded"] = int((n_relevant == 0).sum())
    return out


def _rows(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense row number of each rating's user, and the user index of each row."""
    row_users, rows = np.unique(users, return_inverse=True)
    return rows.astype(np.int64), row_users


def _check_train(model: Recommender, train: Interactions) -> None:
    want = getattr(model, "fit_info_", {}).get("fingerprint")
    if want and want != train.fingerprint():
        logger.warning("the model was not trained on the given train part (fingerprints differ); "
                       "rankings exclude the items the model saw in its own training data")


# ---------------------------------------------------------------------- models
def resolve_model(model: ModelLike) -> tuple[Callable[[], Recommender], str]:
    """A factory making fresh unfitted models, and a display name.

    Strings are registry specs (:func:`cfrec.models.registry.parse_model_spec`): a name or alias
    (``"pop"``, ``"mf-lab"`` for the course lab's recipe), optionally with typed hyperparameters
    ``"name:key=value,key=value"``.
    """
    if isinstance(model, Recommender):
        proto = model
        return proto.clone, type(proto).name or type(proto).__name__
    if isinstance(model, str):
        from cfrec.models.registry import parse_model_spec

        spec, preset, params = parse_model_spec(model)

        def make() -> Recommender:
            return spec.make(preset, **params)

        try:
            make()
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CfrecError):
                raise
            raise CfrecError(f"model {model!r}: {exc}") from None
        except ImportError as exc:
            raise CfrecError(f"model {model!r} is not available in this installation ({exc})") from None
        return make, model.strip()
    if callable(model):
        return model, getattr(model, "__name__", "model")
    raise CfrecError(f"cannot evaluate {model!r}: expected a model name, a Recommender or a factory")


def summarize_test(model: Recommender, test: Interactions, *, k: int = 10) -> dict[str, Any]:
    """What ``cfrec train`` and tuning report about a test part, from :func:`evaluate_detailed`.

    ``rmse``, ``mae``, ``n``, the fallback counts and their share; ranking-only models (whose
    RMSE means nothing) get ``rmse``/``mae`` None and ``ndcg@k``/``recall@k`` over the full item
    ranking instead.
    """
    rating = model.predicts_ratings
    names = ["rmse", "mae"] if rating else ["rmse", "mae", f"ndcg@{k}", f"recall@{k}"]
    metrics = evaluate_detailed(model, test, k=k, metrics=names).metrics
    counts = {key: int(metrics[key]) for key in ("personalised", "unknown_user", "unknown_item",
                                                  "unknown_both")}
    out: dict[str, Any] = {
        "rmse": float(metrics["rmse"]) if rating else None,
        "mae": float(metrics["mae"]) if rating else None,
        "n": int(len(test)),
        "fallback": counts,
        "fallback_share": float(1 - counts["personalised"] / len(test)) if len(test) else 0.0,
    }
    if not rating:
        out.update({key: float(metrics[key]) for key in (f"ndcg@{k}", f"recall@{k}")})
    return out


def fit_and_score(
    factory: Callable[[], Recommender],
    split: Split,
    *,
    k: int = 10,
    relevance: float | None = 4.0,
    metrics: Sequence[str] | str | None = None,
) -> tuple[Recommender, FoldResult]:
    """Fit a fresh model on ``split.train`` and score it on ``split.test`` (timed)."""
    est = factory()
    t0 = time.perf_counter()
    est.fit(split.train)
    fit_s = time.perf_counter() - t0
    ev = evaluate_detailed(est, split.test, k=k, relevance=relevance, metrics=metrics)
    return est, FoldResult(split.name, ev.metrics, fit_s, ev.predict_seconds, ev.rank_seconds,
                           split.cold_start().to_dict(), ev.breakdown)


# ---------------------------------------------------------------------- protocols
@dataclass
class FoldResult:
    """One split: metrics, timings, cold-start shares and the known/new error breakdown."""

    split: str
    metrics: dict[str, float]
    fit_seconds: float
    predict_seconds: float
    rank_seconds: float
    cold_start: dict[str, float] = field(default_factory=dict)
    breakdown: ErrorBreakdown | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "metrics": {k: plain_number(v) for k, v in self.metrics.items()},
            "fit_seconds": self.fit_seconds,
            "predict_seconds": self.predict_seconds,
            "rank_seconds": self.rank_seconds,
            "cold_start": self.cold_start,
            "breakdown": self.breakdown.to_dict() if self.breakdown is not None else None,
        }


TIMINGS = ("fit_seconds", "predict_seconds", "rank_seconds")


@dataclass
class ProtocolResult:
    """Per-fold results of one model under one protocol, with mean and std across folds."""

    model: str
    dataset: str
    protocol: str
    folds: list[FoldResult]
    params: dict[str, Any] = field(default_factory=dict)

    def _table(self) -> dict[str, np.ndarray]:
        keys = list(self.folds[0].metrics)
        cols = {key: np.array([float(f.metrics.get(key, math.nan)) for f in self.folds]) for key in keys}
        for t in TIMINGS:
            cols[t] = np.array([getattr(f, t) for f in self.folds], dtype=np.float64)
        return cols

    def mean(self) -> dict[str, float]:
        """Mean over folds of every metric and timing."""
        return {k: float(np.mean(v)) for k, v in self._table().items()}

    def std(self) -> dict[str, float]:
        """Sample standard deviation (ddof=1) over folds; ``nan`` with a single fold."""
        return {k: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan for k, v in self._table().items()}

    def breakdown(self) -> ErrorBreakdown | None:
        """The known/new error breakdown pooled over folds (errors re-combined exactly)."""
        parts = [f.breakdown for f in self.folds if f.breakdown is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        groups = []
        total = sum(p["all"].n for p in parts)
        for name, _ in BREAKDOWN_GROUPS:
            n = sum(p[name].n for p in parts)
            sse = sum(p[name].rmse ** 2 * p[name].n for p in parts if p[name].n)
            sae = sum(p[name].mae * p[name].n for p in parts if p[name].n)
            groups.append(GroupError(name, n, n / total if total else 0.0,
                                     math.sqrt(sse / n) if n else math.nan, sae / n if n else math.nan))
        return ErrorBreakdown(tuple(groups))

    def to_dict(self) -> dict[str, Any]:
        bd = self.breakdown()
        return {
            "model": self.model,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "params": self.params,
            "mean": {k: plain_number(v) for k, v in self.mean().items()},
            "std": {k: plain_number(v) for k, v in self.std().items()},
            "folds": [f.to_dict() for f in self.folds],
            "breakdown": bd.to_dict() if bd is not None else None,
        }

    def to_markdown(self) -> str:
        """Metrics per fold with mean and std, then the known/new-user error breakdown."""
        table = self._table()
        several = len(self.folds) > 1
        head = "| metric | " + " | ".join(f.split for f in self.folds)
        head += " | mean | std |" if several else " |"
        sep = "|---|" + "---:|" * (len(self.folds) + (2 if several else 0))
        lines = [f"**{self.model}** on {self.dataset}, protocol {self.protocol}", "", head, sep]
        mean, std = self.mean(), self.std()
        for key, values in table.items():
            if key in ("n_test",):
                continue
            row = f"| {key} | " + " | ".join(format_value(v, key) for v in values)
            row += f" | {format_value(mean[key], key)} | {format_value(std[key], key)} |" if several else " |"
            lines.append(row)
        bd = self.breakdown()
        if bd is not None and bd["all"].n != bd["known user & item"].n:
            lines += ["", "Rating error by whether the user/item was in the training data:", "",
                      bd.to_markdown()]
        return "\n".join(lines)


def format_value(v: float, key: str = "") -> str:
    """A metric or timing as the tables print it (``n/a`` for missing)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if key in ("personalised", "unknown_user", "unknown_item", "unknown_both", "ranking_users",
               "ranking_users_excluded", "n_test"):
        return f"{v:.0f}"
    if key.endswith("seconds"):
        return f"{v:.3f}"
    return f"{v:.4f}"


def plain_number(v: Any) -> Any:
    """A value fit for strict JSON: numpy scalars unwrapped, NaN and inf as None."""
    if isinstance(v, float | np.floating) and not math.isfinite(float(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def cross_validate(
    model: ModelLike,
    splits: Sequence[Split],
    *,
    k: int = 10,
    relevance: float | None = 4.0,
    metrics: Sequence[str] | str | None = None,
    protocol: str = "cv",
    on_fold: Callable[[FoldResult], None] | None = None,
    on_model: Callable[[Recommender, Split], None] | None = None,
) -> ProtocolResult:
    """Fit a fresh model on each split's train part and evaluate it on the test part.

    ``on_fold`` receives each :class:`FoldResult`; ``on_model`` each fitted model with its split
    (to save or inspect it).
    """
    if not splits:
        raise CfrecError("no splits to evaluate on")
    factory, display = resolve_model(model)
    folds: list[FoldResult] = []
    params: dict[str, Any] = {}
    for split in splits:
        est, fold = fit_and_score(factory, split, k=k, relevance=relevance, metrics=metrics)
        params = est.get_params()
        logger.info("%s on %s: %s", display, split.name,
                    ", ".join(f"{k}={v:.4f}" for k, v in fold.metrics.items() if isinstance(v, float)))
        folds.append(fold)
        if on_model is not None:
            on_model(est, split)
        if on_fold is not None:
            on_fold(fold)
    return ProtocolResult(display, splits[0].train.name, protocol, folds, to_jsonable(params))


def holdout(
    model: ModelLike,
    split: Split,
    *,
    k: int = 10,
    relevance: float | None = 4.0,
    metrics: Sequence[str] | str | None = None,
) -> ProtocolResult:
    """Fit on ``split.train``, evaluate on ``split.test`` (any split: random, temporal, u1 ...)."""
    return cross_validate(model, [split], k=k, relevance=relevance, metrics=metrics,
                          protocol=split.name)


def run_protocol(
    model: ModelLike,
    data: Interactions,
    spec: str,
    *,
    seed: int = 0,
    data_home: str | Path | None = None,
    k: int = 10,
    relevance: float | None = 4.0,
    metrics: Sequence[str] | str | None = None,
    on_fold: Callable[[FoldResult], None] | None = None,
) -> ProtocolResult:
    """Split ``data`` by ``spec`` (see :func:`cfrec.data.make_splits`: ``temporal``, ``cv5``,
    ``folds`` = ML-100K u1..u5 ...) and cross-validate ``model`` over the resulting splits."""
    from cfrec.data import make_splits

    splits = make_splits(data, spec, seed=seed, data_home=data_home)
    return cross_validate(model, splits, k=k, relevance=relevance, metrics=metrics,
                          protocol=spec, on_fold=on_fold)
