"""A 2-D t-SNE map of a model's item embeddings, coloured by genre, with well-known titles named.

Items that share their audience end up with similar embeddings; if the model learned anything,
the map shows neighbourhoods (children's films, horror, classics ...) without ever having been
told the genres.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cfrec.errors import CfrecError
from cfrec.threads import threads_for, using_threads
from cfrec.viz.plots import _axes, _short

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

    from cfrec.models.base import Recommender

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_LABELS", "TsneMap", "item_counts", "plot_tsne", "primary_genres", "tsne_item_embeddings"]

#: Title substrings labelled on the map when present (well-known MovieLens films).
DEFAULT_LABELS: tuple[str, ...] = (
    "Star Wars (1977)", "Return of the Jedi", "Toy Story (1995)", "Aladdin (1992)",
    "Lion King", "Pulp Fiction", "Fargo (1996)", "Godfather, The (1972)",
    "Silence of the Lambs", "Scream (1996)", "Titanic (1997)", "Independence Day",
    "Casablanca", "Sleepless in Seattle", "Terminator 2", "Schindler's List",
)

NO_GENRE = "(no genre)"


@dataclass(frozen=True)
class TsneMap:
    """t-SNE coordinates of the mapped items plus what is needed to draw and read them."""

    coords: np.ndarray  # (n, 2) float32
    item_ids: np.ndarray  # raw ids
    titles: list[str]
    genres: list[str]  # primary (first listed) genre of each item
    counts: np.ndarray  # training ratings of each item
    min_ratings: int
    model_name: str

    def to_frame(self) -> pd.DataFrame:
        """One row per mapped item: item_id, title, genre, n_ratings, x, y."""
        return pd.DataFrame({"item_id": self.item_ids, "title": self.titles, "genre": self.genres,
                             "n_ratings": self.counts, "x": self.coords[:, 0], "y": self.coords[:, 1]})


def item_counts(model: Recommender) -> np.ndarray:
    """Training ratings per model item index (column sums of ``model.seen_``)."""
    model._check_fitted()
    return np.asarray(model.seen_.sum(axis=0)).ravel().astype(np.int64)


def primary_genres(info: pd.DataFrame | None, item_ids: np.ndarray) -> list[str]:
    """The first genre listed for each item (``NO_GENRE`` where there is none)."""
    if info is None or "genres" not in info.columns:
        return [NO_GENRE] * len(item_ids)
    genres = info["genres"].reindex(item_ids)
    out = []
    for g in genres.tolist():
        if isinstance(g, str):
            g = [g]
        out.append(str(g[0]) if g is not None and not isinstance(g, float) and len(g) else NO_GENRE)
    return out


def _titles(info: pd.DataFrame | None, item_ids: np.ndarray) -> list[str]:
    if info is None or "title" not in info.columns:
        return [f"item {i}" for i in item_ids]
    titles = info["title"].reindex(item_ids)
    return [f"item {i}" if not isinstance(t, str) else t for i, t in zip(item_ids, titles.tolist(), strict=True)]


def tsne_item_embeddings(
    model: Recommender,
    *,
    min_ratings: int = 50,
    perplexity: float = 30.0,
    seed: int = 0,
    max_iter: int = 1000,
) -> TsneMap:
    """Project the item embeddings of items with at least ``min_ratings`` training ratings to 2-D.

    Vectors are L2-normalised first, so distances on the map follow the cosine similarity that
    :meth:`~cfrec.models.base.Recommender.similar_items` uses; rarely rated items are left out
    because their vectors are mostly the initial noise. scikit-learn's exact-seeded Barnes-Hut
    t-SNE with PCA initialisation (reproducible for a given ``seed``).
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError:  # pragma: no cover - depends on the environment
        raise CfrecError("the t-SNE map needs scikit-learn: pip install 'cfrec[viz]'") from None
    try:
        emb = np.asarray(model.item_embeddings(), dtype=np.float64)
    except NotImplementedError:
        raise CfrecError(f"{type(model).__name__} has no item embeddings to map") from None
    if emb.ndim != 2 or emb.shape[1] == 0:
        raise CfrecError(f"{type(model).__name__} has no item embeddings to map (0 factors)")
    counts = item_counts(model)
    norms = np.linalg.norm(emb, axis=1)
    keep = np.flatnonzero((counts >= min_ratings) & (norms > 0))
    if len(keep) < 5:
        raise CfrecError(f"only {len(keep)} items have >= {min_ratings} training ratings; "
                         f"a t-SNE map needs at least 5 (lower min_ratings)")
    unit = emb[keep] / norms[keep, None]
    perp = float(min(perplexity, (len(keep) - 1) / 3.0))
    logger.info("t-SNE of %d item embeddings (dim %d, perplexity %.1f)", len(keep), emb.shape[1], perp)
    # scikit-learn's t-SNE would take every core: cfrec's thread policy decides (see cfrec.threads)
    with using_threads(threads_for(len(keep) * len(keep))):
        coords = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed,
                      max_iter=max_iter, learning_rate="auto", n_jobs=threads_for(len(keep) * len(keep))
                      ).fit_transform(unit)
    ids = model.item_map_.to_raw(keep)
    info = getattr(model, "item_info_", None)
    return TsneMap(coords.astype(np.float32), ids, _titles(info, ids), primary_genres(info, ids),
                   counts[keep], int(min_ratings), type(model).__name__)


def _label_rows(tmap: TsneMap, labels: Sequence[str] | None, n_fallback: int) -> list[int]:
    """Rows to name: the first (most rated) match of each title substring, else the most rated."""
    rows: list[int] = []
    lower = [t.lower() for t in tmap.titles]
    order = np.argsort(-tmap.counts, kind="stable")
    for pattern in (DEFAULT_LABELS if labels is None else labels):
        p = pattern.lower()
        for r in order:
            if p in lower[r] and int(r) not in rows:
                rows.append(int(r))
                break
    if not rows and labels is None:
        rows = [int(r) for r in order[:n_fallback]]
    return rows


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _place_labels(fig: Figure, ax: Axes, tmap: TsneMap, rows: list[int]) -> None:
    """Name the chosen points, trying offsets per label so labels neither overlap each other nor
    leave the axes (greedy in display coordinates; the least-overlapping spot when none is free).
    Labels placed away from their point get a thin leader line."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg canvases have it; FigureCanvasBase's stub lacks it
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    offsets = ((6, 5, "left"), (6, -13, "left"), (-6, 5, "right"), (-6, -13, "right"),
               (0, 12, "center"), (0, -20, "center"), (10, 18, "left"), (10, -26, "left"),
               (-10, 18, "right"), (-10, -26, "right"), (0, 26, "center"), (0, -34, "center"))
    style: dict[str, Any] = {"textcoords": "offset points", "fontsize": 8, "zorder": 5,
                             "bbox": {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75}}
    for r in rows:
        x, y = tmap.coords[r]
        label = _short(tmap.titles[r], 40)
        ax.scatter([x], [y], s=40, facecolors="none", edgecolors="black", lw=1.0, zorder=4)
        best, best_cost = offsets[0], np.inf
        for dx, dy, ha in offsets:
            probe = ax.annotate(label, (x, y), xytext=(dx, dy), ha=ha, **style)
            box = probe.get_window_extent(renderer)
            probe.remove()
            outside = (max(frame.x0 - box.x0, 0) + max(box.x1 - frame.x1, 0)
                       + max(frame.y0 - box.y0, 0) + max(box.y1 - frame.y1, 0)) * box.height
            cost = outside + sum(_overlap(box, other) for other in placed)
            if cost < best_cost:
                best, best_cost, best_box = (dx, dy, ha), cost, box
            if cost == 0:
                break
        dx, dy, ha = best
        far = abs(dx) + abs(dy) > 20
        ax.annotate(label, (x, y), xytext=(dx, dy), ha=ha,
                    arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.35"} if far else None, **style)
        placed.append(best_box)


def _listed_colors(cmap: Colormap) -> list[Any]:
    """The colours of a qualitative (listed) colormap such as ``tab20``."""
    from matplotlib.colors import ListedColormap

    colors = cmap.colors if isinstance(cmap, ListedColormap) else None
    if not isinstance(colors, (list, tuple)):  # pragma: no cover - tab20/tab20b hold a tuple of RGB tuples
        raise TypeError(f"colormap {cmap.name!r} is not a ListedColormap with a list of colours")
    return list(colors)


def plot_tsne(
    model_or_map: Any,
    *,
    min_ratings: int = 50,
    labels: Sequence[str] | None = None,
    seed: int = 0,
    perplexity: float = 30.0,
    max_iter: int = 1000,
    ax: Axes | None = None,
) -> Figure:
    """Scatter of the t-SNE map (:func:`tsne_item_embeddings`) coloured by primary genre.

    ``labels`` are title substrings to name on the map (default :data:`DEFAULT_LABELS`; when none
    of those occur, e.g. on synthetic data, the eight most rated items are named). Pass a
    :class:`TsneMap` to redraw without recomputing; otherwise ``min_ratings``, ``seed``,
    ``perplexity`` and ``max_iter`` go to :func:`tsne_item_embeddings`.
    """
    tmap = model_or_map if isinstance(model_or_map, TsneMap) else tsne_item_embeddings(
        model_or_map, min_ratings=min_ratings, seed=seed, perplexity=perplexity, max_iter=max_iter)
    from matplotlib import colormaps

    fig, ax = _axes(ax, figsize=(10.0, 7.5))
    genres = pd.Series(tmap.genres)
    order = genres.value_counts()
    tab20 = _listed_colors(colormaps["tab20"])  # strong shades first, then their light partners
    palette = [tab20[i] for i in (*range(0, 20, 2), *range(1, 20, 2))] + _listed_colors(colormaps["tab20b"])
    for n, (genre, count) in enumerate(order.items()):
        sel = (genres == genre).to_numpy()
        color = "#b0b0b0" if genre == NO_GENRE else palette[n % len(palette)]
        ax.scatter(tmap.coords[sel, 0], tmap.coords[sel, 1], s=14, alpha=0.8, color=color,
                   edgecolors="none", label=f"{genre} ({count})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {tmap.model_name} item embeddings ({len(tmap.item_ids)} items with "
                 f">= {tmap.min_ratings} training ratings), coloured by first listed genre", fontsize=10)
    ax.legend(title="Primary genre", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              fontsize=8, title_fontsize=9, markerscale=1.5)
    fig.draw_without_rendering()  # settle the layout so label boxes are measured where they end up
    _place_labels(fig, ax, tmap, _label_rows(tmap, labels, 8))
    return fig
