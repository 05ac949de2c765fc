"""Drawing: matplotlib figures of data, training and tuning, and t-SNE maps of item embeddings.

Names are imported lazily, so ``import cfrec.viz`` does not import matplotlib or scikit-learn.
The report and the quickstart that use these figures live in :mod:`cfrec.app`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    # plots.py
    "plot_rating_distribution": "cfrec.viz.plots",
    "plot_ratings_per_user": "cfrec.viz.plots",
    "plot_ratings_per_item": "cfrec.viz.plots",
    "plot_user_item_heatmap": "cfrec.viz.plots",
    "heatmap_matrix": "cfrec.viz.plots",
    "plot_learning_curves": "cfrec.viz.plots",
    "plot_rmse_vs_dim": "cfrec.viz.plots",
    "plot_rmse_vs_weight_decay": "cfrec.viz.plots",
    "save_figure": "cfrec.viz.plots",
    "figure_to_png": "cfrec.viz.plots",
    # tsne.py
    "TsneMap": "cfrec.viz.tsne",
    "tsne_item_embeddings": "cfrec.viz.tsne",
    "plot_tsne": "cfrec.viz.tsne",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cfrec.viz' has no attribute {name!r}")
