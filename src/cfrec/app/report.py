"""One self-contained HTML report of a fitted model: data, split, metrics, plots, recommendations.

The page has no external resources at all (plots are base64 PNG data URIs, CSS is inline, a
Content-Security-Policy forbids anything else), so it opens offline, can be mailed as one file
and never phones home. It is written atomically.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cfrec._io import write_bytes_atomic
from cfrec._version import __version__
from cfrec.catalog import Catalog
from cfrec.data.interactions import Interactions
from cfrec.data.split import Split, find_training_split, split_spec
from cfrec.data.stats import compute_statistics
from cfrec.errors import CfrecError
from cfrec.evaluation.protocols import evaluate
from cfrec.viz.plots import figure_to_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cfrec.models.base import Recommender

logger = logging.getLogger(__name__)

__all__ = [
    "CSP",
    "DEFAULT_FILMS",
    "Report",
    "SimilarItems",
    "UserRecs",
    "build_report",
    "compare_to_baseline",
    "dataset_statistics",
    "describe_ranker",
    "evaluate_model",
    "find_items",
    "pick_users",
    "resolve_split",
    "similar_items_table",
    "user_recommendations",
    "write_report",
]

#: Title substrings of the films whose neighbours the report lists (MovieLens).
DEFAULT_FILMS: tuple[str, ...] = ("Toy Story", "Star Wars", "Pulp Fiction")

#: The page's Content-Security-Policy: inline styles and data: images, nothing else.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


# ---------------------------------------------------------------------- building blocks
@dataclass(frozen=True)
class UserRecs:
    """A user's own top-rated training items next to the model's recommendations for them."""

    user_id: Any
    n_train: int
    top_rated: pd.DataFrame  # item_id, title, rating
    recommended: pd.DataFrame  # item_id, title, score, predicted (NaN: ranking model), n_ratings, test_rating


@dataclass(frozen=True)
class SimilarItems:
    """The nearest items to one item by cosine similarity of the model's item embeddings."""

    item_id: Any
    title: str
    n_ratings: int
    neighbours: pd.DataFrame  # item_id, title, similarity, n_ratings, genres


def _catalog(model: Recommender, data: Interactions | None = None) -> Catalog:
    """The model's items with their training counts, and the titles of ``data`` where it has
    them (else those saved with the model)."""
    catalog = Catalog.from_model(model)
    if data is not None and data.item_info is not None:
        catalog = Catalog(model.item_map_, data.item_info, catalog.counts)
    return catalog


def _titles(catalog: Catalog, ids: Any) -> list[str]:
    """Titles of raw item ids (``"item <id>"`` where there is none)."""
    out = []
    for raw in np.asarray(ids).tolist():
        i = catalog.item_map.index_of(raw)
        title = catalog.title(i) if i >= 0 else None
        out.append(title if title is not None else f"item {raw}")
    return out


def _genres(catalog: Catalog, ids: Any) -> list[str]:
    return [", ".join(r["genres"]) for r in catalog.records_of(ids)]


def pick_users(model: Recommender, split: Split, n: int = 2, *, min_ratings: int = 20) -> list[Any]:
    """``n`` users to show, deterministically: the lowest raw ids among users the model knows with
    at least ``min_ratings`` training ratings and at least one test rating (relaxed in that order
    when too few qualify)."""
    counts = split.train.user_counts()
    in_test = split.test.user_counts() > 0
    known = np.zeros(split.train.n_users, dtype=bool)
    pos = split.train.user_map.to_index(model.user_map_.ids, missing="-1")
    known[pos[pos >= 0]] = True
    idx = np.flatnonzero(known & (counts > 0))
    for mask in (known & (counts >= min_ratings) & in_test, known & (counts >= min_ratings)):
        if mask.sum() >= n:
            idx = np.flatnonzero(mask)
            break
    return [_py(v) for v in split.train.user_map.to_raw(idx[:n])]


def _py(value: Any) -> Any:
    """A numpy scalar as the plain Python value (raw ids are ints or strings)."""
    return value.item() if isinstance(value, np.generic) else value


def user_recommendations(
    model: Recommender,
    train: Interactions,
    user: Any,
    *,
    k: int = 10,
    test: Interactions | None = None,
    n_top: int = 10,
) -> UserRecs:
    """The user's ``n_top`` highest-rated training items (ties: more popular first) and the
    model's top-``k`` recommendations, marking those the user rated in ``test``."""
    catalog = _catalog(model, train)
    u = train.user_map.to_index(np.atleast_1d(np.asarray(user)), what="user")[0]
    rows = np.flatnonzero(train.users == u)
    pop = train.item_counts()
    order = np.lexsort((-pop[train.items[rows]], -train.ratings[rows]))[:n_top]
    top_items = train.item_map.to_raw(train.items[rows[order]])
    top = pd.DataFrame({"item_id": top_items, "title": _titles(catalog, top_items),
                        "rating": train.ratings[rows[order]].astype(np.float64)})
    recs = model.recommend(user, k=k)
    test_ratings = pd.Series(dtype=np.float64)
    if test is not None and len(test):
        t_rows = np.flatnonzero(test.users == u) if test.user_map is train.user_map else np.flatnonzero(
            test.raw_users() == user)
        test_ratings = pd.Series(test.ratings[t_rows].astype(np.float64),
                                 index=test.item_map.to_raw(test.items[t_rows]))
        test_ratings = test_ratings[~test_ratings.index.duplicated(keep="last")]
    rec_counts = [r["n_ratings"] for r in catalog.records_of(recs.ids)]
    predicted = (recs.ratings.astype(np.float64) if recs.ratings is not None
                 else np.full(len(recs), np.nan))
    rec = pd.DataFrame({"item_id": recs.ids, "title": _titles(catalog, recs.ids),
                        "score": recs.scores.astype(np.float64), "predicted": predicted, "n_ratings": rec_counts,
                        "test_rating": test_ratings.reindex(recs.ids).to_numpy(dtype=np.float64)})
    return UserRecs(user, len(rows), top, rec)


def find_items(model: Recommender, patterns: Sequence[str] = DEFAULT_FILMS, *, n: int | None = None,
               data: Interactions | None = None) -> list[Any]:
    """Raw ids of the best title match of each pattern (:meth:`Catalog.search
    <cfrec.catalog.Catalog.search>`: an exact title first, then the most rated).

    Patterns without a match are skipped; the list is topped up with the most rated items not yet
    chosen until it has ``n`` entries (default ``len(patterns)``), so synthetic data without
    titles still gets popular items.
    """
    n = len(patterns) if n is None else n
    catalog = _catalog(model, data)
    chosen: list[int] = []
    for pattern in patterns:
        match = next((i for i in catalog.search(pattern, limit=None).tolist() if i not in chosen), None)
        if match is not None:
            chosen.append(match)
    for i in catalog.by_popularity.tolist():
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    return [catalog.raw_id(i) for i in chosen[:n]]


def similar_items_table(model: Recommender, item: Any, *, k: int = 10, min_ratings: int = 0,
                        data: Interactions | None = None) -> SimilarItems:
    """:meth:`~cfrec.models.base.Recommender.similar_items` with titles, genres and rating counts.

    ``min_ratings`` keeps only neighbours with at least that many training ratings: the vectors
    of rarely rated items stay close to their random start, so their cosine similarities are
    mostly noise.
    """
    catalog = _catalog(model, data)
    counts = catalog.counts
    n_items = len(model.item_map_)
    recs = model.similar_items(item, k=(n_items - 1) if min_ratings > 0 else k)
    idx = model.item_map_.to_index(recs.ids, what="item")
    keep = np.flatnonzero(counts[idx] >= min_ratings)[:k]
    ids, idx = recs.ids[keep], idx[keep]
    own = int(counts[model.item_map_.to_index(np.atleast_1d(np.asarray(item)), what="item")[0]])
    table = pd.DataFrame({"item_id": ids, "title": _titles(catalog, ids),
                          "similarity": recs.scores[keep].astype(np.float64), "n_ratings": counts[idx],
                          "genres": _genres(catalog, ids)})
    return SimilarItems(item, _titles(catalog, [item])[0], own, table)


def describe_ranker(model: Recommender) -> str:
    """How a model's lists are made, for a sentence, from the model's own :attr:`~cfrec.models.base.Recommender.score_label`."""
    from cfrec.models.two_stage import TwoStage

    if isinstance(model, TwoStage):
        return (f"retrieved by {type(model.retriever_).__name__} and ordered by {model.score_label} "
                "(two-stage)")
    return f"ranked by {type(model).__name__} (scores are {model.score_label})"


def _has_embeddings(model: Recommender) -> bool:
    try:
        emb = model.item_embeddings()
    except (NotImplementedError, CfrecError):
        return False
    return emb.ndim == 2 and emb.shape[1] > 0


# ---------------------------------------------------------------------- data, split, metrics
def dataset_statistics(data: Interactions) -> dict[str, Any]:
    """``compute_statistics(data).to_dict()``: the figures of the report's dataset table."""
    return dict(compute_statistics(data).to_dict())


def resolve_split(
    model: Recommender,
    data: Interactions,
    split: Split | str | None = None,
    *,
    data_home: str | Path | None = None,
) -> tuple[Split, bool, list[str]]:
    """The split whose test part the report evaluates on, whether it is verified, and notes.

    A :class:`Split` is used as given; a spec or ``None`` goes to
    :func:`cfrec.data.split.find_training_split` (the split the model recorded, then the usual
    ones, until a train part has the model's training fingerprint). When none matches, the first
    split is used and a note says why its metrics may be optimistic.
    """
    fit_info = getattr(model, "fit_info_", {}) or {}
    fp = fit_info.get("fingerprint")
    notes: list[str] = []
    if isinstance(split, Split):
        return split, fp is not None and split.train.fingerprint() == fp, notes
    spec = (split_spec(split) or split) if split is not None else None
    recorded = fit_info.get("split")
    chosen, verified = find_training_split(data, fp, spec=spec,
                                           recorded=recorded if isinstance(recorded, str) else None,
                                           seed=fit_info.get("split_seed", 0), data_home=data_home)
    if verified:
        return chosen, True, notes
    if fp is not None and data.fingerprint() == fp:
        notes.append("The model was trained on the whole dataset, so there is no held-out part: "
                     f"the metrics below use the test part of the {chosen.name!r} split, which the "
                     "model has seen, and are optimistic.")
    else:
        tried = "" if split is not None else " (nor of any other split tried)"
        notes.append(f"The model's training data does not match the training part of the "
                     f"{chosen.name!r} split{tried}; its test part may overlap what the model saw, "
                     "so the metrics may be optimistic.")
    return chosen, False, notes


def _overlap_share(model: Recommender, test: Interactions) -> float:
    """Share of test ratings whose (user, item) pair the model saw in training."""
    if len(test) == 0:
        return 0.0
    u = model.user_map_.to_index(test.raw_users(), missing="-1").astype(np.int64)
    i = model.item_map_.to_index(test.raw_items(), missing="-1").astype(np.int64)
    known = (u >= 0) & (i >= 0)
    seen = model.seen_
    n_items = seen.shape[1]
    rows = np.repeat(np.arange(seen.shape[0], dtype=np.int64), np.diff(seen.indptr))
    seen_keys = rows * n_items + seen.indices.astype(np.int64)
    hit = np.isin(u[known] * n_items + i[known], seen_keys)
    return float(hit.sum()) / len(test)


def evaluate_model(model: Recommender, test: Interactions, *, train: Interactions | None = None,
                   k: int = 10) -> dict[str, float]:
    """:func:`cfrec.evaluation.evaluate` as floats (the report's metrics table)."""
    return {str(key): float(v) for key, v in evaluate(model, test, train=train, k=k).items()}


def compare_to_baseline(train: Interactions, test: Interactions, *, k: int = 10) -> dict[str, float]:
    """Metrics of the bias-only :class:`~cfrec.models.baseline.Baseline` on the same split."""
    from cfrec.models.baseline import Baseline

    return evaluate_model(Baseline().fit(train), test, train=train, k=k)


# ---------------------------------------------------------------------- HTML
_CSS = """
:root { --fg:#1f2933; --muted:#6b7280; --line:#e5e7eb; --accent:#3b6ea8; --warn-bg:#fff4d6; --warn:#8a5a00; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0; background: #fafafa; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.sub, .muted { color: var(--muted); }
.banner { background: var(--warn-bg); color: var(--warn); border: 1px solid #f0d58c; border-radius: 6px;
          padding: 10px 14px; margin: 14px 0; font-weight: 600; }
.note { background: #eef4fb; border-left: 4px solid var(--accent); padding: 8px 12px; margin: 10px 0; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.hit td { background: #eaf7ea; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.grid2 > div { min-width: 0; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
code { background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not math.isfinite(v):
            return "\u2013"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        if v.is_integer():
            return f"{v:,.0f}"
        return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _as_count(value: Any) -> Any:
    """Whole-number floats (counts that went through a float dict) as ints."""
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, row_classes: Sequence[str] | None = None) -> str:
    num_cols = [all(_is_num(r[c]) for r in rows if r[c] is not None and r[c] == r[c]) and any(
        _is_num(r[c]) for r in rows) for c in range(len(headers))]
    head = "".join(f'<th class="num">{_e(h)}</th>' if num_cols[c] else f"<th>{_e(h)}</th>"
                   for c, h in enumerate(headers))
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        cells = "".join(f'<td class="num">{_e(_fmt(v))}</td>' if num_cols[c] else f"<td>{_e(_fmt(v))}</td>"
                        for c, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _stat_rows(d: Mapping[str, Any]) -> list[list[Any]]:
    """Statistic rows; a nested mapping becomes one row ``key: value · key: value``."""
    rows: list[list[Any]] = []
    for key, value in d.items():
        label = str(key).replace("_", " ")
        if isinstance(value, Mapping):
            rows.append([label, " · ".join(f"{k}: {_fmt(v)}" for k, v in value.items())])
        elif isinstance(value, list | tuple) and len(value) > 12:
            rows.append([label, f"{len(value)} values"])
        else:
            rows.append([label, value])
    return rows


def _img(fig: Figure, alt: str, caption: str | None = None, *, dpi: int = 100) -> str:
    png = figure_to_png(fig, dpi=dpi)
    fig.clear()
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{src}" alt="{_e(alt)}">{cap}</figure>'


@dataclass
class Report:
    """The rendered report plus the numbers in it (for printing or further use)."""

    html: str
    title: str
    dataset: str
    synthetic: bool
    split_name: str
    split_verified: bool
    metrics: dict[str, float]
    baseline_metrics: dict[str, float] | None
    cold_start: dict[str, float | int]
    users: list[UserRecs] = field(default_factory=list)
    similar: list[SimilarItems] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # section -> why it is missing

    def write(self, path: str | Path) -> Path:
        """Write the page atomically; returns the path."""
        out = write_bytes_atomic(path, self.html.encode("utf-8"))
        logger.info("report written to %s (%d bytes)", out, len(self.html))
        return out


def build_report(
    model: Recommender,
    data: Interactions,
    *,
    split: Split | str | None = None,
    metrics: Mapping[str, float] | None = None,
    baseline_metrics: Mapping[str, float] | None = None,
    tuning: pd.DataFrame | Sequence[pd.DataFrame] | None = None,
    users: Sequence[Any] | None = None,
    films: Sequence[str] = DEFAULT_FILMS,
    k: int = 10,
    synthetic: bool | None = None,
    notes: Sequence[str] = (),
    title: str | None = None,
    target_rmse: float | None = None,
    tsne_min_ratings: int = 50,
    similar_min_ratings: int = 20,
    data_home: str | Path | None = None,
    recommender: Recommender | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Render the HTML report of ``model`` on ``data``.

    Parameters
    ----------
    model
        A fitted model.
    data
        The full dataset the model's split was made from.
    split
        A :class:`Split`, a split spec, or ``None`` to find the split the model was trained on
        (see :func:`resolve_split`); its test part is what the metrics measure.
    metrics, baseline_metrics
        Precomputed metrics of the model (and of the bias-only Baseline) on the split's test
        part; computed here when omitted (``baseline_metrics`` only for non-Baseline models).
    tuning
        Optional tuning trials, one table or several (columns for params plus
        ``train_rmse``/``valid_rmse``): adds the RMSE-vs-dimension and weight-decay plots for
        the tables that have those columns.
    users, films
        Users to show recommendations for (default: :func:`pick_users`) and title substrings of
        the items to list neighbours of (default: Toy Story, Star Wars, Pulp Fiction; popular
        items where they do not occur).
    synthetic
        Label the whole page as synthetic data (default: when the dataset name says so).
    notes
        Extra sentences shown at the top (e.g. why synthetic data was used).
    tsne_min_ratings, similar_min_ratings
        Training ratings an item needs to appear on the t-SNE map / in the similar-items lists.
    recommender
        The model whose lists the recommendations section shows (default: ``model``), fitted on
        the same training part: a ranking model, or a two-stage one that shows ``model``'s
        predicted ratings beside a better ranker's lists.
    """
    from cfrec.viz import plots
    from cfrec.viz.tsne import plot_tsne

    model._check_fitted()
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    synthetic = ("synthetic" in data.name.lower()) if synthetic is None else synthetic
    model_label = type(model).__name__
    title = title or f"cfrec report: {model_label} on {data.name}" + (" (synthetic data)" if synthetic and "synthetic" not in data.name.lower() else "")
    all_notes = list(notes)
    skipped: dict[str, str] = {}

    say("choosing the evaluation split")
    the_split, verified, split_notes = resolve_split(model, data, split, data_home=data_home)
    all_notes += split_notes
    overlap = _overlap_share(model, the_split.test)
    if overlap > 0:
        all_notes.append(f"{overlap:.1%} of the test ratings are (user, item) pairs the model saw in "
                         "training: those metrics are not a held-out measurement.")
    cold = the_split.cold_start().to_dict()

    say("evaluating")
    metrics = dict(metrics) if metrics is not None else evaluate_model(model, the_split.test, train=the_split.train, k=k)
    if baseline_metrics is None and model.name != "baseline":
        baseline_metrics = compare_to_baseline(the_split.train, the_split.test, k=k)
    baseline_metrics = dict(baseline_metrics) if baseline_metrics is not None else None
    fallback = model.predict_detailed(the_split.test.raw_users(), the_split.test.raw_items()).counts() \
        if len(the_split.test) else {}

    sections: list[tuple[str, str, str]] = []  # (anchor, heading, html)

    # -- overview
    params = model.get_params()
    fit_info = getattr(model, "fit_info_", {})
    overview = _table(["", ""], [
        ["Dataset", data.name + (" (SYNTHETIC)" if synthetic else "")],
        ["Model", f"{model_label} ({model.name})"],
        ["Hyperparameters", ", ".join(f"{k_}={v!r}" for k_, v in params.items()) or "\u2013"],
        ["Trained on", f"{_fmt(fit_info.get('n_ratings', '?'))} ratings, {len(model.user_map_):,} users, "
                       f"{len(model.item_map_):,} items"],
        ["Evaluation split", f"{the_split.name} (" + ("verified: its training part is exactly the "
                             "model's training data)" if verified else "not verified, see the notes above)")],
    ])
    sections.append(("overview", "Overview", overview))

    # -- dataset
    say("dataset statistics and plots")
    stats = dataset_statistics(data)
    ds_html = _table(["Statistic", "Value"], _stat_rows(stats))
    ds_html += _img(plots.plot_rating_distribution(data), "Rating distribution",
                    "How often each rating value occurs.")
    ds_html += '<div class="grid2"><div>' + _img(
        plots.plot_ratings_per_user(data), "Ratings per user",
        "Ratings per user (log scale): most users rate few items, a few rate very many.") + \
        "</div><div>" + _img(plots.plot_ratings_per_item(data), "Ratings per item",
                             "Ratings per item (log scale): the popularity long tail.") + "</div></div>"
    ds_html += _img(plots.plot_user_item_heatmap(data), "User-item heatmap",
                    "The densest corner of the rating matrix; grey cells are unrated.")
    sections.append(("dataset", "Dataset", ds_html))

    # -- split and metrics
    say("metrics")
    cs_rows: list[list[Any]] = [["test ratings", cold["test_ratings"]],
               ["from users with no training rating", f"{cold['unknown_user']:,} ({cold['unknown_user_share']:.1%})"],
               ["of items with no training rating", f"{cold['unknown_item']:,} ({cold['unknown_item_share']:.1%})"],
               ["either (predicted by a bias fallback)", f"{cold['unknown_either']:,} ({cold['cold_start_share']:.1%})"]]
    names = list(dict.fromkeys([*metrics, *(baseline_metrics or {})]))
    scores = [m for m in names if m.lower() in ("rmse", "mae") and model.metric_applies(m)] + \
        [m for m in names if "@" in m]
    header = ["Metric", model_label] + (["Baseline (biases only)"] if baseline_metrics is not None else [])
    m_rows = [[m, metrics.get(m, math.nan)] + ([baseline_metrics.get(m, math.nan)] if baseline_metrics is not None else [])
              for m in scores]
    shown = {"n_test", *fallback} if fallback else set()
    counts = {m: metrics[m] for m in names if m not in scores and m in metrics and m not in shown
              and model.metric_applies(m)}
    metrics_html = (f"<p>Measured on the test part of the <code>{_e(the_split.name)}</code> split "
                    f"({len(the_split.test):,} ratings; training part {len(the_split.train):,}), top-{k} "
                    "lists exclude each user's training items.</p>" + _table(header, m_rows))
    if fallback:
        metrics_html += ("<h3>How the test predictions were made</h3>" + _table(
            ["Prediction", "Test ratings"],
            [[label, fallback[key]] for key, label in zip(
                ("personalised", "unknown_user", "unknown_item", "unknown_both"),
                (model.fallback_labels[code] for code in range(4)), strict=True)]))
    metrics_html += "<h3>Cold start in the test part</h3>" + _table(["", ""], cs_rows)
    if counts:
        metrics_html += "<h3>Other evaluation figures</h3>" + _table(
            ["", ""], [[m.replace("_", " "), _as_count(v)] for m, v in counts.items()])
    sections.append(("metrics", "Metrics", metrics_html))

    # -- training
    history = getattr(model, "history_", None) or []
    if history:
        has_valid = any(h.get("valid_rmse") is not None for h in history)
        caption = ("Training loss (left axis) and RMSE on the validation ratings carved from the "
                   "training part (right axis); the circled epoch is the one kept." if has_valid else
                   "Training loss and RMSE per epoch (no validation ratings were held out).")
        train_html = _img(plots.plot_learning_curves(model, target=target_rmse), "Learning curves", caption)
        sections.append(("training", "Training", train_html))
    else:
        skipped["training"] = f"{model_label} has no per-epoch history (fitted in closed form)."

    # -- embeddings
    has_emb = _has_embeddings(model)
    if has_emb:
        say("t-SNE map of the item embeddings")
        try:
            emb_html = _img(plot_tsne(model, min_ratings=tsne_min_ratings), "t-SNE map of item embeddings",
                            "Items close on the map have similar embeddings (cosine); colours are "
                            "the first listed genre, which the model never saw.", dpi=90)
            sections.append(("embeddings", "Item embeddings", emb_html))
        except CfrecError as exc:
            skipped["embeddings"] = str(exc)
    else:
        skipped["embeddings"] = f"{model_label} has no item embeddings (bias-only model)."

    # -- recommendations
    say("recommendations and similar items")
    lister = recommender if recommender is not None else model
    rec_users = list(users) if users is not None else pick_users(model, the_split, 2)
    user_recs = [user_recommendations(lister, the_split.train, u, k=k, test=the_split.test) for u in rec_users]
    rec_html = ("<p>Each user's highest-rated training items next to the top-"
                f"{k} unrated items {_e(describe_ranker(lister))}; green rows are items the user went on "
                "to rate in the test part (with that rating).</p>")
    for ur in user_recs:
        left = _table(["Top-rated in training", "Rating"],
                      [[t, r] for t, r in zip(ur.top_rated["title"], ur.top_rated["rating"], strict=True)])
        rated = lister.predicts_ratings
        right = _table(["Recommended", "Predicted rating" if rated else "Score", "Training ratings", "Test rating"],
                       [[t, p if rated else s, int(c), tr if tr == tr else "\u2013"] for t, s, p, c, tr in
                        zip(ur.recommended["title"], ur.recommended["score"], ur.recommended["predicted"],
                            ur.recommended["n_ratings"], ur.recommended["test_rating"], strict=True)],
                       row_classes=["hit" if tr == tr else "" for tr in ur.recommended["test_rating"]])
        rec_html += (f"<h3>User {_e(ur.user_id)} <span class=\"muted\">({ur.n_train} training ratings)</span></h3>"
                     f'<div class="grid2"><div>{left}</div><div>{right}</div></div>')
    sections.append(("recommendations", "Recommendations", rec_html))

    similar: list[SimilarItems] = []
    if has_emb:
        sim_html = ("<p>Nearest items by cosine similarity of the learned item embeddings "
                    "(<code>similar_items</code>), with how many training ratings each has"
                    + (f"; only items with at least {similar_min_ratings} training ratings are listed, "
                       "since the vectors of rarer items are mostly noise" if similar_min_ratings > 0 else "")
                    + ".</p>")
        for item in find_items(model, films, data=data):
            si = similar_items_table(model, item, k=k, min_ratings=similar_min_ratings, data=data)
            similar.append(si)
            sim_html += (f"<h3>{_e(si.title)} <span class=\"muted\">({si.n_ratings} training ratings)</span></h3>"
                         + _table(["Similar item", "Cosine", "Training ratings", "Genres"],
                                  [[t, s, int(c), g] for t, s, c, g in zip(
                                      si.neighbours["title"], si.neighbours["similarity"],
                                      si.neighbours["n_ratings"], si.neighbours["genres"], strict=True)]))
        sections.append(("similar", "Similar items", sim_html))
    else:
        skipped["similar"] = f"{model_label} has no item embeddings to compare."

    # -- tuning
    tables = [tuning] if isinstance(tuning, pd.DataFrame) else list(tuning or [])
    tune_html = ""
    for table in (t for t in tables if len(t)):
        for fn, label in ((plots.plot_rmse_vs_dim, "RMSE vs embedding dimension"),
                          (plots.plot_rmse_vs_weight_decay, "RMSE vs weight decay")):
            try:
                tune_html += _img(fn(table), label)
            except CfrecError as exc:
                if len(tables) == 1:
                    skipped[f"tuning: {label}"] = str(exc)
    if tune_html:
        sections.append(("tuning", "Tuning", tune_html))

    # -- page
    banner = ""
    if synthetic:
        banner = ('<div class="banner">SYNTHETIC DATA: every number and plot on this page comes from '
                  "a generated dataset shaped like MovieLens, not from real people's ratings.</div>")
    notes_html = "".join(f'<div class="note">{_e(n)}</div>' for n in all_notes)
    skipped_html = ""
    if skipped:
        skipped_html = "<h2>Not shown</h2><ul>" + "".join(
            f"<li><b>{_e(s)}</b>: {_e(why)}</li>" for s, why in skipped.items()) + "</ul>"
    nav = "<nav>" + "".join(f'<a href="#{a}">{_e(h)}</a>' for a, h, _ in sections) + "</nav>"
    body = "".join(f'<section id="{a}"><h2>{_e(h)}</h2>{content}</section>' for a, h, content in sections)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=\"sub\">Generated {generated} by cfrec {_e(__version__)}</p>"
        f"{banner}{notes_html}{nav}{body}{skipped_html}"
        f"<footer>cfrec {_e(__version__)} \u00b7 self-contained page: no scripts, no external resources."
        f"{' Synthetic data.' if synthetic else ''}</footer>"
        "</main></body></html>\n"
    )
    logger.info("report rendered in %.1fs", time.perf_counter() - started)
    return Report(page, title, data.name, synthetic, the_split.name, verified, metrics, baseline_metrics,
                  cold, user_recs, similar, all_notes, skipped)


def write_report(model: Recommender, data: Interactions, path: str | Path, **kwargs: Any) -> Report:
    """:func:`build_report` and write the page to ``path`` atomically."""
    report = build_report(model, data, **kwargs)
    report.write(path)
    return report


