"""Benchmark several models under one protocol: one table of RMSE, MAE, NDCG@k, Recall@k and
fit/predict seconds, beside a most-popular baseline for the ranking metrics.

Every model sees the same splits (built once). Numbers are means over folds with the sample
standard deviation (``ddof=1``) where there are several. A personalised model whose NDCG@k or
Recall@k does not beat the popularity baseline is flagged: for top-K recommendation it has learned
nothing a bestseller list does not already know.

Protocols: any :func:`cfrec.data.make_splits` spec (``folds`` = ML-100K u1..u5, ``cv5``,
``temporal``, ``user-temporal``, ``random:0.1`` ...) or ``online``: the global temporal 80/20
split, with the RMSE/MAE columns measured by the prequential replay of
:mod:`cfrec.evaluation.online` (offline RMSE and the known/new-user breakdown alongside) and the
ranking columns measured offline on the same split. ``online`` (= ``online:group``) reveals each
user's same-second ratings together, after all of them are predicted; ``online:rating`` replays
rating by rating instead; ``online:both`` measures both orders and shows them side by side.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfrec._io import attributes, to_jsonable
from cfrec._version import __version__
from cfrec.data.interactions import Interactions
from cfrec.data.split import Split
from cfrec.errors import CfrecError
from cfrec.evaluation.cold_items import parse_cold_items
from cfrec.evaluation.protocols import (
    FoldResult,
    ModelLike,
    cross_validate,
    fit_and_score,
    format_value,
    resolve_model,
)
from cfrec.models.base import Recommender, check_feedback
from cfrec.models.registry import resolve_name, split_model_list

logger = logging.getLogger(__name__)

POPULARITY = "pop"
ONLINE_SPEC = "temporal:0.2"
#: ``online`` protocol spellings and the reveal orders they replay (the first one fills the RMSE column).
ONLINE_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "online": ("group",), "online:group": ("group",), "online:rating": ("rating",),
    "online:both": ("group", "rating"),
}


def online_reveals(protocol: str) -> tuple[str, ...] | None:
    """The reveal orders an ``online[:group|rating|both]`` protocol replays; None for other protocols."""
    p = protocol.strip().lower()
    if p.split(":")[0] != "online":
        return None
    if p not in ONLINE_PROTOCOLS:
        raise CfrecError(f"bad protocol {protocol!r}: online, online:group (the default order: a user's "
                         f"same-second ratings revealed together), online:rating or online:both")
    return ONLINE_PROTOCOLS[p]


@dataclass
class BenchmarkRow:
    """One model's numbers: ``mean``/``std`` over folds of every metric and timing."""

    model: str
    personalised: bool
    mean: dict[str, float]
    std: dict[str, float]
    n_folds: int
    params: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    beats_popularity: bool | None = None
    predicts_ratings: bool = True

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(attributes(self, "model", "personalised", "beats_popularity",
                                      "predicts_ratings", "n_folds", "params", "mean", "std",
                                      "detail"))


@dataclass
class BenchmarkResult:
    """All rows of a benchmark plus what produced them."""

    dataset: str
    protocol: str
    seed: int
    k: int
    relevance: float | None
    rows: list[BenchmarkRow]
    seconds: float = 0.0
    #: Online protocols: how the test ratings fall into same-second groups (``SameSecondGroups.to_dict``).
    same_second: dict[str, Any] | None = None

    def row(self, model: str) -> BenchmarkRow:
        for r in self.rows:
            if r.model == model:
                return r
        raise KeyError(model)

    @property
    def flagged(self) -> list[str]:
        """Personalised models that do not beat the popularity baseline on NDCG@k or Recall@k."""
        return [r.model for r in self.rows if r.beats_popularity is False]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "cfrec_version": __version__,
            **attributes(self, "dataset", "protocol", "seed", "k", "relevance", "seconds", "same_second"),
            "rows": [r.to_dict() for r in self.rows],
            "flagged_below_popularity": self.flagged,
        })

    def columns(self) -> list[tuple[str, str]]:
        """(metric key, column title) pairs of the table."""
        k = self.k
        reveals = online_reveals(self.protocol)
        if reveals is not None:
            tag = " (by rating)" if reveals == ("rating",) else ""
            cols = [("rmse", f"RMSE online{tag}")]
            if len(reveals) > 1:
                cols += [("rmse_by_rating", "RMSE online by rating"), ("rmse_peek_gain", "by rating - by group")]
            return [*cols, ("offline_rmse", "RMSE offline"),
                    ("rmse_known_users", f"RMSE known users{tag}"), ("rmse_new_users", f"RMSE new users{tag}"),
                    ("mae", f"MAE online{tag}"), (f"ndcg@{k}", f"NDCG@{k}"), (f"recall@{k}", f"Recall@{k}"),
                    ("fit_seconds", "fit s"), ("predict_seconds", f"online replay s{tag}")]
        if self.rows and not any("rmse" in r.mean for r in self.rows):  # an interaction log
            return [(f"ndcg@{k}", f"NDCG@{k}"), (f"recall@{k}", f"Recall@{k}"), (f"map@{k}", f"MAP@{k}"),
                    (f"mrr@{k}", f"MRR@{k}"), (f"coverage@{k}", f"coverage@{k}"),
                    (f"popularity@{k}", f"popularity@{k}"), ("fit_seconds", "fit s"),
                    ("predict_seconds", "predict s")]
        return [("rmse", "RMSE"), ("mae", "MAE"), (f"ndcg@{k}", f"NDCG@{k}"),
                (f"recall@{k}", f"Recall@{k}"), ("fit_seconds", "fit s"),
                ("predict_seconds", "predict s")]

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and formatted cells (``mean ± std`` where there are several folds)."""
        cols = self.columns()
        header = ["model", *(title for _, title in cols)]
        body = []
        for r in self.rows:
            name = r.model + (" (!)" if r.beats_popularity is False else "")
            cells = [name]
            for key, _ in cols:
                if not r.predicts_ratings and key in (
                        "rmse", "mae", "offline_rmse", "rmse_known_users", "rmse_new_users",
                        "rmse_by_rating", "rmse_peek_gain"):
                    cells.append("n/a")
                    continue
                m = r.mean.get(key, math.nan)
                s = r.std.get(key, math.nan)
                cell = format_value(m, key)
                if r.n_folds > 1 and s is not None and math.isfinite(s) and cell != "n/a":
                    cell += f" ± {format_value(s, key)}"
                cells.append(cell)
            body.append(cells)
        return header, body

    def to_markdown(self) -> str:
        header, body = self.table()
        folds = max((r.n_folds for r in self.rows), default=1)
        rel = "every held-out item" if self.relevance is None else f"test rating >= {self.relevance:g}"
        cold = parse_cold_items(self.protocol)
        if cold is not None:
            from cfrec.evaluation.cold_items import describe

            return "\n".join([f"Benchmark on {self.dataset}, protocol {self.protocol}: "
                              f"{describe(cold, self.k, self.relevance)} (mean ± std over seeds)", "",
                              "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
                              *("| " + " | ".join(cells) + " |" for cells in body),
                              *(["", f"(!) does not beat pop-in-genre on NDCG@{self.k}: {', '.join(self.flagged)}"]
                                if self.flagged else [])])
        lines = [
            f"Benchmark on {self.dataset}, protocol {self.protocol} ({folds} fold{'s' if folds > 1 else ''}"
            f"{', mean ± std' if folds > 1 else ''}); ranking over all unrated items, relevant = {rel}",
            "",
            "| " + " | ".join(header) + " |",
            "|---|" + "---:|" * (len(header) - 1),
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        if self.flagged:
            lines += ["", f"(!) does not beat the popularity baseline on NDCG@{self.k} or "
                          f"Recall@{self.k}: {', '.join(self.flagged)}"]
        reveals = online_reveals(self.protocol)
        if reveals is not None and self.same_second is not None:
            from cfrec.evaluation.online import SameSecondGroups

            order = {"group": "each user's same-second ratings predicted before any of them is revealed",
                     "rating": "revealed rating by rating"}
            lines += ["", f"Online replay: {'; '.join(f'{r}: {order[r]}' for r in reveals)}. Same-second "
                          f"groups: {SameSecondGroups.from_dict(self.same_second).describe()}."]
        return "\n".join(lines)


def _parse_models(models: Sequence[ModelLike] | str) -> list[ModelLike]:
    if isinstance(models, str):
        models = split_model_list(models)
    if not models:
        raise CfrecError("no model to benchmark; pass e.g. --models baseline,mf")
    return list(models)


def _is_popularity(model: ModelLike) -> bool:
    if not isinstance(model, str):
        return False
    try:
        return resolve_name(model.split(":")[0])[0].name == POPULARITY
    except CfrecError:
        return False


def run_benchmark(
    data: Interactions | str,
    *,
    protocol: str = "folds",
    models: Sequence[ModelLike] | str = ("baseline", "mf"),
    seed: int = 0,
    k: int = 10,
    relevance: float | None = 4.0,
    data_home: str | Path | None = None,
    popularity: bool = True,
    on_row: Callable[[BenchmarkRow], None] | None = None,
    on_fold: Callable[[str, FoldResult], None] | None = None,
) -> BenchmarkResult:
    """Fit and score every model under ``protocol`` on the same splits; see the module docstring.

    Parameters
    ----------
    data
        Ratings, or a dataset name/path for :func:`cfrec.data.load_dataset`.
    protocol
        ``online`` or a split spec (``folds``, ``cv5``, ``temporal``, ``user-temporal`` ...).
    models
        Model names (``"baseline,mf,als"``; hyperparameters as ``"mf:n_factors=64,epochs=20"``;
        ``"mf-lab"`` for the course lab's recipe), instances or factories.
    seed
        Seeds the splits and every model that takes a ``seed`` hyperparameter.
    popularity
        Add the most-popular baseline row (ranking metrics only) and flag the models below it.
    on_row
        Called with each finished row (progress reporting).
    on_fold
        Called with a model's name and each of its finished folds (progress reporting).
    """
    from cfrec.data import load_dataset, make_splits

    start = time.perf_counter()
    if isinstance(data, str):
        data = load_dataset(data, data_home=data_home)
    specs = _parse_models(models)
    if popularity and not any(_is_popularity(m) for m in specs):
        specs = [POPULARITY, *specs]
    factories = [(_seeded(*resolve_model(m), seed)) for m in specs]
    for factory, _name in factories:  # refuse a rating model on a log before fitting anything
        check_feedback(factory(), data)
    cold = parse_cold_items(protocol)
    if cold is not None:
        return _cold_items_benchmark(data, factories, cold, protocol, seed, k, relevance, start, on_row)
    reveals = online_reveals(protocol)
    online = reveals is not None
    if online and data.is_implicit:
        raise CfrecError(f"the online protocol replays ratings, and {data.name} holds interactions with "
                         "no ratings; use a split protocol (user-temporal:n=1, random:0.2, cv5)")
    metrics = [*(() if data.is_implicit else ("rmse", "mae")), f"ndcg@{k}", f"recall@{k}",
               f"precision@{k}", f"map@{k}", f"mrr@{k}", f"hit_rate@{k}", f"coverage@{k}",
               f"popularity@{k}"]
    if data.is_implicit:
        relevance = None  # every held-out interaction is relevant
    splits = make_splits(data, ONLINE_SPEC if online else protocol, seed=seed, data_home=data_home)
    rows: list[BenchmarkRow] = []
    for factory, name in factories:
        if reveals is not None:
            row = _online_row(factory, name, splits[0], metrics, k, relevance, reveals)
        else:
            row = _offline_row(factory, name, splits, metrics, k, relevance, protocol,
                               None if on_fold is None else functools.partial(on_fold, name))
        rows.append(row)
        logger.info("benchmark %s: %s", name, {m: row.mean.get(m) for m in ("rmse", f"ndcg@{k}")})
        if on_row is not None:
            on_row(row)
    pop = next((r for r in rows if not r.personalised and r.model == POPULARITY), None)
    if pop is not None:
        for r in rows:
            if r.personalised:
                r.beats_popularity = bool(
                    r.mean.get(f"ndcg@{k}", -1) > pop.mean.get(f"ndcg@{k}", math.inf)
                    and r.mean.get(f"recall@{k}", -1) > pop.mean.get(f"recall@{k}", math.inf))
    same_second = None
    if online:
        from cfrec.evaluation.online import same_second_groups

        same_second = same_second_groups(splits[0].test).to_dict()
    return BenchmarkResult(data.name, protocol, seed, k, relevance, rows, time.perf_counter() - start,
                           same_second)


def _seeded(factory: Callable[[], Recommender], name: str, seed: int) -> tuple[Callable[[], Recommender], str]:
    def make() -> Recommender:
        m = factory()
        if "seed" in m._param_names() and "seed=" not in name:
            m.set_params(seed=seed)
        return m
    return make, name


def _offline_row(factory: Callable[[], Recommender], name: str, splits: list[Split],
                 metrics: list[str], k: int, relevance: float | None, protocol: str,
                 on_fold: Callable[[FoldResult], None] | None = None) -> BenchmarkRow:
    personal: list[bool] = []
    rating: list[bool] = []

    def inspect(model: Recommender, _split: Split) -> None:
        personal.append(model.personalised)
        rating.append(model.predicts_ratings)

    res = cross_validate(factory, splits, k=k, relevance=relevance, metrics=metrics, protocol=protocol,
                         on_model=inspect, on_fold=on_fold)
    res.model = name
    return BenchmarkRow(name, all(personal), res.mean(), res.std(), len(res.folds), res.params,
                        {"folds": [f.to_dict() for f in res.folds]}, predicts_ratings=all(rating))


def _online_row(factory: Callable[[], Recommender], name: str, split: Split, metrics: list[str],
                k: int, relevance: float | None, reveals: tuple[str, ...] = ("group",)) -> BenchmarkRow:
    from cfrec.evaluation.online import online_evaluate

    est, fold = fit_and_score(factory, split, k=k, relevance=relevance, metrics=metrics)
    fit_s = fold.fit_seconds
    mean = dict(fold.metrics)
    if not est.predicts_ratings:
        # Ranking-only models (popularity, implicit NeuMF): no rating replay, ranking metrics only.
        mean.update({"fit_seconds": fit_s, "predict_seconds": math.nan, "rank_seconds": fold.rank_seconds})
        return BenchmarkRow(name, est.personalised, mean, {key: math.nan for key in mean}, 1,
                            to_jsonable(est.get_params()), {"offline": fold.to_dict()},
                            predicts_ratings=False)
    from cfrec.evaluation.online import supports_fast

    if not supports_fast(est):
        logger.warning("%s: no vectorised online path; replaying %d test ratings through fold_in, one call "
                       "per revealed group (slow when fold_in is iterative, as in NeuMF)", name, len(split.test))
    on = online_evaluate(est, split.test, train=split.train, name=name, reveal=reveals[0])  # type: ignore[arg-type]
    detail = {"online": on.to_dict()}
    if len(reveals) > 1:
        other = online_evaluate(est, split.test, train=split.train, name=name, reveal=reveals[1])  # type: ignore[arg-type]
        detail[f"online_by_{reveals[1]}"] = other.to_dict()
        mean.update({f"rmse_by_{reveals[1]}": other.rmse, f"mae_by_{reveals[1]}": other.mae,
                     "rmse_peek_gain": other.rmse - on.rmse,
                     f"predict_seconds_by_{reveals[1]}": other.replay_seconds})
    mean.update({
        "rmse": on.rmse, "mae": on.mae, "offline_rmse": on.offline_rmse, "offline_mae": on.offline_mae,
        "rmse_known_users": on.group("known users").online_rmse,
        "rmse_new_users": on.group("new users").online_rmse,
        "offline_rmse_known_users": on.group("known users").offline_rmse,
        "offline_rmse_new_users": on.group("new users").offline_rmse,
        "fit_seconds": fit_s, "predict_seconds": on.replay_seconds,
        "offline_predict_seconds": fold.predict_seconds, "rank_seconds": fold.rank_seconds,
    })
    return BenchmarkRow(name, est.personalised, mean, {key: math.nan for key in mean}, 1,
                        to_jsonable(est.get_params()), {**detail, "offline": fold.to_dict()})


def _cold_items_benchmark(data: Interactions, factories: list[tuple[Callable[[], Recommender], str]],
                          spec: Any, protocol: str, seed: int, k: int, relevance: float | None, start: float,
                          on_row: Callable[[BenchmarkRow], None] | None) -> BenchmarkResult:
    """The ``cold-items`` protocol (:mod:`cfrec.evaluation.cold_items`): models that take new
    items beside its two references; the popularity row added by default is left out (it
    cannot rank items it never saw)."""
    from cfrec.evaluation.cold_items import REFERENCES, run_cold_items, summarise

    chosen = [(f, n) for f, n in factories if not _is_popularity(n)]
    for factory, name in chosen:
        if not factory().takes_new_items:
            raise CfrecError(f"{name} cannot take new items, so it cannot score held-out items under "
                             f"{protocol}; benchmark a model that builds items from features (e.g. hybrid)")
    if data.is_implicit:
        relevance = None
    runs = run_cold_items(data, chosen, spec, seed=seed, k=k, relevance=relevance)
    rows: list[BenchmarkRow] = []
    reference = REFERENCES[1]
    for name, name_runs in runs.items():
        mean, std = summarise(name_runs)
        personal = all(r.personalised for r in name_runs)
        row = BenchmarkRow(name, personal, mean, std, len(name_runs),
                           detail={"repeats": [dict(r.metrics) for r in name_runs]},
                           predicts_ratings=all(r.predicts_ratings for r in name_runs))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    ref = next(r for r in rows if r.model == reference)
    for r in rows:
        if r.personalised:
            r.beats_popularity = bool(r.mean.get(f"ndcg@{k}", -1) > ref.mean.get(f"ndcg@{k}", math.inf))
    return BenchmarkResult(data.name, protocol, seed, k, relevance, rows, time.perf_counter() - start)
