"""Plots of rating data, training runs and tuning results (matplotlib, headless).

Every function builds on a plain :class:`matplotlib.figure.Figure` with an Agg canvas (never
``pyplot``), so nothing here touches global GUI state or needs a display, and it is safe to call
from a server or a worker thread. Each takes an optional ``ax`` to draw into an existing figure
and returns the :class:`~matplotlib.figure.Figure` it drew on; :func:`save_figure` writes it as
PNG, SVG or PDF atomically. matplotlib is imported lazily (``pip install cfrec[viz]``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from cfrec._io import atomic_path
from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = [
    "HeatmapData",
    "heatmap_matrix",
    "plot_learning_curves",
    "plot_rating_distribution",
    "plot_ratings_per_item",
    "plot_ratings_per_user",
    "plot_rmse_vs_dim",
    "plot_rmse_vs_weight_decay",
    "plot_user_item_heatmap",
    "figure_to_png",
    "save_figure",
]

#: Colours used consistently across the plots and the HTML report.
MAIN_COLOR = "#3b6ea8"
ACCENT_COLOR = "#d1603d"
MUTED_COLOR = "#6b7280"

_SAVE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


# ---------------------------------------------------------------------- plumbing
def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise CfrecError("plots need matplotlib: pip install 'cfrec[viz]'") from None


def new_figure(figsize: tuple[float, float] = (6.4, 4.0)) -> Figure:
    """A fresh headless figure on an Agg canvas with the constrained layout engine."""
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.4, 4.0)) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new single-axes figure when ``ax`` is None."""
    if ax is not None:
        return ax.figure.figure, ax  # the root figure (also when ax lives in a subfigure)
    fig = new_figure(figsize)
    return fig, fig.add_subplot()




def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` (``.png``, ``.svg`` or ``.pdf``, picked by suffix), atomically."""
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CfrecError(f"{path}: cannot save a figure as {path.suffix or 'a file without suffix'!r}; "
                         f"use one of {', '.join(_SAVE_FORMATS)}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    logger.info("saved figure %s", path)
    return path


def figure_to_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """PNG bytes of ``fig`` (for embedding in HTML)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis ticks at 1-2-5 steps labelled as plain numbers (no 3x10^1 clutter)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _check_nonempty(data: Interactions, what: str) -> None:
    if len(data) == 0:
        raise CfrecError(f"cannot plot {what}: dataset {data.name!r} has no ratings")


# ---------------------------------------------------------------------- rating data
def plot_rating_distribution(data: Interactions, *, ax: Axes | None = None) -> Figure:
    """Bar chart of how many ratings take each rating value, labelled with their shares.

    Explicit-feedback data is usually skewed towards high ratings (people rate what they chose
    to watch); this shows how much.
    """
    _check_nonempty(data, "the rating distribution")
    fig, ax = _axes(ax)
    values, counts = np.unique(data.ratings, return_counts=True)
    step = float(np.min(np.diff(values))) if len(values) > 1 else 1.0
    bars = ax.bar(values, counts, width=0.8 * step, color=MAIN_COLOR)
    total = counts.sum()
    ax.bar_label(bars, labels=[f"{c / total:.0%}" for c in counts], padding=2, fontsize=8)
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set_xlabel("Rating")
    ax.set_ylabel("Number of ratings")
    ax.set_title(f"Rating distribution ({data.name}, {total:,} ratings)")
    ax.margins(y=0.12)
    return fig


def _plot_counts(counts: np.ndarray, *, what: str, per: str, name: str, log: bool, style: str,
                 ax: Axes | None) -> Figure:
    counts = counts[counts > 0]
    if len(counts) == 0:
        raise CfrecError(f"cannot plot ratings per {per}: no {per} has a rating")
    if style not in ("hist", "rank"):
        raise ValueError(f"style must be 'hist' or 'rank', not {style!r}")
    fig, ax = _axes(ax)
    median = float(np.median(counts))
    mean = float(np.mean(counts))
    hist = style == "hist"  # the counts run along x (a histogram) or along y (the ranked curve)
    if hist:
        lo, hi = int(counts.min()), int(counts.max())
        if log and hi > lo:
            # log-spaced edges snapped to half-integers, so every bin holds whole counts
            bins = np.unique(np.round(np.geomspace(lo, hi + 1, 40))) - 0.5
        else:
            bins = np.histogram_bin_edges(counts, bins=min(50, max(hi - lo + 1, 1)))
        ax.hist(counts, bins=bins.tolist(), color=MAIN_COLOR, alpha=0.9)
        ax.set_xlabel(f"Ratings per {per}")
        ax.set_ylabel(f"Number of {what}")
    else:
        ranked = np.sort(counts)[::-1]
        ax.plot(np.arange(1, len(ranked) + 1), ranked, color=MAIN_COLOR, lw=1.5)
        ax.fill_between(np.arange(1, len(ranked) + 1), ranked, color=MAIN_COLOR, alpha=0.15)
        ax.set_xlabel(f"{per.capitalize()} rank (most ratings first)")
        ax.set_ylabel(f"Ratings per {per}")
    if log:
        (ax.set_xscale if hist else ax.set_yscale)("log")
        _plain_log_ticks(ax.xaxis if hist else ax.yaxis)
    across_counts = ax.axvline if hist else ax.axhline
    across_counts(median, color=ACCENT_COLOR, ls="--", lw=1.5, label=f"median = {median:g}")
    across_counts(mean, color=MUTED_COLOR, ls=":", lw=1.5, label=f"mean = {mean:.1f}")
    ax.set_title(f"Ratings per {per} ({name}, {len(counts):,} {what})")
    ax.legend(frameon=False)
    return fig


def plot_ratings_per_user(data: Interactions, *, log: bool = True, style: str = "hist",
                          ax: Axes | None = None) -> Figure:
    """How many ratings each user gave: a histogram (``style="hist"``) or the ranked long-tail
    curve (``style="rank"``), with median and mean lines.

    ``log`` puts the counts axis on a log scale, where the long tail is readable. Only users
    with at least one rating in ``data`` are counted.
    """
    _check_nonempty(data, "ratings per user")
    return _plot_counts(data.user_counts(), what="users", per="user", name=data.name, log=log,
                        style=style, ax=ax)


def plot_ratings_per_item(data: Interactions, *, log: bool = True, style: str = "hist",
                          ax: Axes | None = None) -> Figure:
    """How many ratings each item received (the popularity long tail); see
    :func:`plot_ratings_per_user`."""
    _check_nonempty(data, "ratings per item")
    return _plot_counts(data.item_counts(), what="items", per="item", name=data.name, log=log,
                        style=style, ax=ax)


@dataclass(frozen=True)
class HeatmapData:
    """The most active users x most rated items block of the rating matrix (NaN = not rated)."""

    matrix: np.ndarray  # (n_users, n_items) float64, NaN where the user did not rate the item
    user_ids: np.ndarray  # raw ids, most active first
    item_ids: np.ndarray  # raw ids, most rated first
    item_titles: list[str]


def heatmap_matrix(data: Interactions, *, n_users: int = 20, n_items: int = 30) -> HeatmapData:
    """Ratings of the ``n_users`` most active users on the ``n_items`` most rated items.

    Ties are broken by index (raw id order). A pair rated more than once shows the mean rating.
    """
    _check_nonempty(data, "a user-item heatmap")
    uc, ic = data.user_counts(), data.item_counts()
    top_u = np.argsort(-uc, kind="stable")[: min(n_users, int((uc > 0).sum()))]
    top_i = np.argsort(-ic, kind="stable")[: min(n_items, int((ic > 0).sum()))]
    row = np.full(data.n_users, -1, dtype=np.int64)
    row[top_u] = np.arange(len(top_u))
    col = np.full(data.n_items, -1, dtype=np.int64)
    col[top_i] = np.arange(len(top_i))
    r, c = row[data.users], col[data.items]
    keep = (r >= 0) & (c >= 0)
    sums = np.zeros((len(top_u), len(top_i)))
    hits = np.zeros((len(top_u), len(top_i)))
    np.add.at(sums, (r[keep], c[keep]), data.ratings[keep])
    np.add.at(hits, (r[keep], c[keep]), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.where(hits > 0, sums / np.maximum(hits, 1.0), np.nan)
    item_ids = data.item_map.to_raw(top_i)
    return HeatmapData(matrix, data.user_map.to_raw(top_u), item_ids, data.item_titles(item_ids))


def plot_user_item_heatmap(data: Interactions, *, n_users: int = 20, n_items: int = 30,
                           ax: Axes | None = None) -> Figure:
    """Heatmap of the most active users x most rated items; unrated cells are blank (masked).

    Even this densest corner of the matrix has holes: the picture of sparsity that collaborative
    filtering has to fill in.
    """
    from matplotlib import colormaps

    hm = heatmap_matrix(data, n_users=n_users, n_items=n_items)
    fig, ax = _axes(ax, figsize=(9.0, 6.0))
    cmap = colormaps["viridis"].with_extremes(bad="#f1f1f1")
    lo, hi = data.rating_scale
    image = ax.imshow(np.ma.masked_invalid(hm.matrix), cmap=cmap, vmin=lo, vmax=hi,
                      aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(len(hm.item_ids)), [_short(t, 26) for t in hm.item_titles],
                  rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(hm.user_ids)), [f"user {u}" for u in hm.user_ids], fontsize=7)
    ax.set_xlabel(f"{len(hm.item_ids)} most rated items")
    ax.set_ylabel(f"{len(hm.user_ids)} most active users")
    filled = np.isfinite(hm.matrix).mean() if hm.matrix.size else 0.0
    ax.set_title(f"Ratings of the most active users on the most rated items ({filled:.0%} filled; "
                 f"grey = not rated)")
    fig.colorbar(image, ax=ax, label="Rating", shrink=0.8)
    return fig


# ---------------------------------------------------------------------- training
def _history(model_or_history: Any) -> list[Mapping[str, Any]]:
    if isinstance(model_or_history, Sequence) and not isinstance(model_or_history, str):
        return list(model_or_history)
    history = getattr(model_or_history, "history_", None)
    if history is None:
        raise CfrecError(f"{type(model_or_history).__name__} has no training history (not fitted?)")
    return list(history)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if h.get(key) is None else float(h[key]) for h in history], dtype=np.float64)


def plot_learning_curves(model_or_history: Any, *, target: float | None = None,
                         ax: Axes | None = None) -> Figure:
    """Training loss and validation RMSE per epoch from ``model.history_`` (or a history list).

    The loss (left axis) is the training objective, usually MSE plus the weight penalty, so it is
    not on the RMSE scale; RMSEs get their own right axis, with an optional ``target`` line (e.g.
    0.95; drawn only where there is an RMSE curve) and the best epoch (the one early stopping
    kept) marked. When the history has a ``refit`` phase (the model retrained on all ratings for
    the chosen number of epochs), its training loss is drawn dashed beside the selection run.
    """
    history = _history(model_or_history)
    if not history:
        raise CfrecError("no training history to plot: the model was fitted in closed form "
                         "(no epochs) or not by an iterative trainer")
    fig, ax = _axes(ax)
    main = [h for h in history if h.get("phase") != "refit"]
    refit = [h for h in history if h.get("phase") == "refit"]
    epochs = np.array([h.get("epoch", n + 1) for n, h in enumerate(main)], dtype=np.int64)
    handles: list[Any] = []
    loss = _series(main, "train_loss")
    if np.isfinite(loss).any():
        handles += ax.plot(epochs, loss, marker="o", ms=3, color=MAIN_COLOR, label="training loss")
        ax.set_ylabel("Training loss", color=MAIN_COLOR)
    if refit:
        r_epochs = np.array([h.get("epoch", n + 1) for n, h in enumerate(refit)], dtype=np.int64)
        handles += ax.plot(r_epochs, _series(refit, "train_loss"), ls="--", marker="o", ms=3,
                           mfc="white", color=MAIN_COLOR, label="training loss, refit on all ratings")
    valid, train_rmse = _series(main, "valid_rmse"), _series(main, "train_rmse")
    if np.isfinite(valid).any() or np.isfinite(train_rmse).any():
        ax2 = ax.twinx()
        if np.isfinite(train_rmse).any():
            handles += ax2.plot(epochs, train_rmse, marker="s", ms=3, color=MUTED_COLOR,
                                label="training RMSE")
        if np.isfinite(valid).any():
            handles += ax2.plot(epochs, valid, marker="o", ms=3, color=ACCENT_COLOR,
                                label="validation RMSE")
            best_flags = [bool(h.get("best")) for h in main]
            best = int(np.argmax(best_flags)) if any(best_flags) else int(np.nanargmin(valid))
            handles.append(ax2.scatter([epochs[best]], [valid[best]], s=90, facecolors="none",
                                       edgecolors="black", zorder=5,
                                       label=f"best epoch {epochs[best]} ({valid[best]:.4f})"))
        if target is not None:
            handles.append(ax2.axhline(target, color="black", ls="--", lw=1,
                                       label=f"target {target:g}"))
        ax2.set_ylabel("RMSE", color=ACCENT_COLOR if np.isfinite(valid).any() else MUTED_COLOR)
    ax.set_xlabel("Epoch")
    if len(epochs) <= 15:
        ax.set_xticks(epochs)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Learning curves")
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.13), ncols=min(len(handles), 3))
    return fig


# ---------------------------------------------------------------------- tuning
_PARAM_ALIASES = {
    "n_factors": ("n_factors", "embedding_dim", "dim", "factors", "n_components"),
    "weight_decay": ("weight_decay", "wd", "l2"),
}


def _find_column(frame: pd.DataFrame, names: Sequence[str], what: str) -> str:
    for name in names:
        for col in (name, f"params_{name}", f"param_{name}", f"params.{name}"):
            if col in frame.columns:
                return col
    raise CfrecError(f"tuning results have no {what} column (looked for {', '.join(names)}); "
                     f"columns are {list(frame.columns)}")


def _curve_data(results: pd.DataFrame, param: str | None, default: str) -> tuple[str, pd.DataFrame, list[str]]:
    if not isinstance(results, pd.DataFrame) or results.empty:
        raise CfrecError("no tuning results to plot (empty table)")
    col = _find_column(results, [param] if param else _PARAM_ALIASES[default], param or default)
    metrics = [m for m in ("train_rmse", "valid_rmse") if m in results.columns]
    if "valid_rmse" not in metrics:
        raise CfrecError(f"tuning results have no valid_rmse column; columns are {list(results.columns)}")
    frame = results[[col, *metrics]].apply(pd.to_numeric, errors="coerce")
    frame = frame[np.isfinite(frame[col]) & np.isfinite(frame["valid_rmse"])]
    if frame.empty:
        raise CfrecError(f"no finished tuning trials with a numeric {col} and valid_rmse")
    return col, frame, metrics


def _param_curve(results: pd.DataFrame, *, param: str | None, default: str, xlabel: str,
                 title: str, log_x: bool, ax: Axes | None) -> Figure:
    col, frame, metrics = _curve_data(results, param, default)
    fig, ax = _axes(ax)
    x_raw = frame[col].to_numpy(dtype=np.float64)
    x_plot = x_raw.copy()
    zero_at = None
    if log_x:
        positive = x_raw[x_raw > 0]
        if len(positive):
            zero_at = float(positive.min()) / 10.0
            x_plot = np.where(x_raw > 0, x_raw, zero_at)
        else:
            log_x = False
    styles = {"train_rmse": (MUTED_COLOR, "s", "training RMSE"),
              "valid_rmse": (ACCENT_COLOR, "o", "validation RMSE")}
    grouped = frame.assign(_x=x_plot).groupby("_x", sort=True)
    for metric in metrics:
        color, marker, label = styles[metric]
        stats = grouped[metric].agg(["mean", "std", "count"])
        ax.scatter(x_plot, frame[metric], color=color, alpha=0.25, s=14)
        yerr = stats["std"].fillna(0.0).to_numpy() if (stats["count"] > 1).any() else None
        ax.errorbar(stats.index.to_numpy(), stats["mean"].to_numpy(), yerr=yerr, color=color,
                    marker=marker, ms=5, capsize=3, label=label + (" (mean \u00b1 sd)" if yerr is not None else ""))
    valid_means = grouped["valid_rmse"].mean()
    best_x = float(cast(float, valid_means.idxmin()))  # the group keys are the numeric x positions
    best_label = "0" if zero_at is not None and best_x == zero_at else f"{frame[col].to_numpy()[x_plot == best_x][0]:g}"
    ax.scatter([best_x], [valid_means.min()], s=160, marker="*", color="black", zorder=5,
               label=f"best: {best_label} ({valid_means.min():.4f})")
    if log_x:
        ax.set_xscale("log")
        if zero_at is not None and (x_raw == 0).any():
            ticks = [t for t in ax.get_xticks() if t > zero_at * 3]
            ax.set_xticks([zero_at, *ticks])
            ax.set_xticklabels(["0", *[f"{t:g}" for t in ticks]])
            ax.axvline(zero_at * 3 ** 0.5, color=MUTED_COLOR, lw=0.8, ls=":")
            lo, hi = zero_at / 2, float(x_plot.max()) * 2
            ax.set_xlim(lo, hi)
    else:
        values = np.unique(x_raw)
        if values.min() > 0 and values.max() / values.min() >= 8:
            ax.set_xscale("log", base=2)  # sizes are usually powers of two
        if len(values) <= 12:
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.xaxis.set_minor_locator(_null_locator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RMSE")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_rmse_vs_dim(results: pd.DataFrame, *, param: str | None = None,
                     ax: Axes | None = None) -> Figure:
    """Training and validation RMSE against embedding size from a table of tuning trials.

    ``results`` has one row per trial with the size column (``n_factors``, or Optuna's
    ``params_n_factors``; ``param`` names another) and ``valid_rmse`` (``train_rmse`` optional).
    Repeated sizes (several seeds) are shown as mean +- sd with the single trials faint behind.
    """
    return _param_curve(results, param=param, default="n_factors",
                        xlabel="Embedding dimension" if param is None else param,
                        title="RMSE vs embedding dimension", log_x=False, ax=ax)


def plot_rmse_vs_weight_decay(results: pd.DataFrame, *, param: str | None = None,
                              ax: Axes | None = None) -> Figure:
    """Training and validation RMSE against weight decay, log x axis, 0 drawn left of a break.

    The gap between the curves is the overfitting that weight decay controls: with none the
    training RMSE is low and validation high; too much and both rise.
    """
    return _param_curve(results, param=param, default="weight_decay",
                        xlabel="Weight decay" if param is None else param,
                        title=f"Training vs validation RMSE by {'weight decay' if param is None else param}",
                        log_x=True, ax=ax)
