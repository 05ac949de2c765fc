"""Plot functions: the right axes, labels and plotted numbers; atomic saving."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions
from cfrec.errors import CfrecError
from cfrec.viz import plots


def _frame(rows: list[tuple[int, int, float]]) -> Interactions:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    df["timestamp"] = np.arange(len(df), dtype=np.int64)
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0), name="hand")


# ---------------------------------------------------------------------- rating distribution
def test_rating_distribution_bars_equal_counts(tiny: Interactions) -> None:
    fig = plots.plot_rating_distribution(tiny)
    ax = fig.axes[0]
    bars = ax.patches
    xs = [round(b.get_x() + b.get_width() / 2, 6) for b in bars]
    heights = [b.get_height() for b in bars]
    # tiny's ratings: 1 x3, 2 x2, 3 x1, 4 x4, 5 x6
    assert xs == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert heights == [3, 2, 1, 4, 6]
    assert ax.get_xlabel() == "Rating" and ax.get_ylabel() == "Number of ratings"
    assert "16 ratings" in ax.get_title()
    # share labels on the bars
    assert [t.get_text() for t in ax.texts] == ["19%", "12%", "6%", "25%", "38%"]


def test_rating_distribution_half_stars_bar_width() -> None:
    data = _frame([(1, 1, 0.5), (1, 2, 1.0), (2, 1, 1.0), (2, 3, 4.5)])
    ax = plots.plot_rating_distribution(data).axes[0]
    assert [b.get_height() for b in ax.patches] == [1, 2, 1]
    assert ax.patches[0].get_width() == pytest.approx(0.4)


def test_plot_draws_into_given_axes(tiny: Interactions) -> None:
    fig = plots.new_figure()
    ax1, ax2 = fig.subplots(1, 2)
    out = plots.plot_rating_distribution(tiny, ax=ax2)
    assert out is fig
    assert len(ax1.patches) == 0 and len(ax2.patches) == 5


def test_empty_data_is_a_clear_error(tiny: Interactions) -> None:
    with pytest.raises(CfrecError, match="no ratings"):
        plots.plot_rating_distribution(tiny.subset(np.zeros(len(tiny), dtype=bool)))


# ---------------------------------------------------------------------- ratings per user / item
def test_ratings_per_user_histogram_and_median(tiny: Interactions) -> None:
    counts = np.bincount(tiny.users)
    ax = plots.plot_ratings_per_user(tiny, log=False).axes[0]
    assert sum(p.get_height() for p in ax.patches) == 6  # one entry per user
    median_line = next(line for line in ax.lines if line.get_label().startswith("median"))
    assert median_line.get_xdata()[0] == pytest.approx(np.median(counts))
    assert median_line.get_label() == f"median = {np.median(counts):g}"
    assert ax.get_xlabel() == "Ratings per user" and ax.get_ylabel() == "Number of users"
    assert ax.get_xscale() == "linear"


def test_ratings_per_item_log_and_only_present_items(tiny: Interactions) -> None:
    # keep item 14 out of this subset: its vocabulary slot stays but has no rating
    sub = tiny.subset(tiny.items != tiny.item_map.to_index(np.array([14]))[0])
    ax = plots.plot_ratings_per_item(sub, log=True).axes[0]
    assert ax.get_xscale() == "log"
    assert sum(p.get_height() for p in ax.patches) == 4  # item 14 is not counted as a zero
    counts = np.bincount(sub.items)[np.bincount(sub.items) > 0]
    median_line = next(line for line in ax.lines if line.get_label().startswith("median"))
    assert median_line.get_xdata()[0] == pytest.approx(np.median(counts))
    # bin edges fall on half-integers, so every bin holds whole counts
    edges = [p.get_x() for p in ax.patches]
    assert all(abs((e + 0.5) - round(e + 0.5)) < 1e-9 for e in edges)


def test_ratings_per_item_rank_style_is_sorted_long_tail(tiny: Interactions) -> None:
    ax = plots.plot_ratings_per_item(tiny, style="rank").axes[0]
    curve = ax.lines[0]
    assert list(curve.get_ydata()) == sorted(np.bincount(tiny.items).tolist(), reverse=True)
    assert ax.get_yscale() == "log"
    median_line = next(line for line in ax.lines if line.get_label().startswith("median"))
    assert median_line.get_ydata()[0] == pytest.approx(np.median(np.bincount(tiny.items)))
    with pytest.raises(ValueError, match="style"):
        plots.plot_ratings_per_item(tiny, style="pie")


# ---------------------------------------------------------------------- heatmap
def test_heatmap_matrix_values_and_blanks(tiny: Interactions) -> None:
    hm = plots.heatmap_matrix(tiny, n_users=3, n_items=2)
    # activity: users 1-4 have 3 ratings (ties broken by id) -> 1, 2, 3
    assert hm.user_ids.tolist() == [1, 2, 3]
    # popularity: items 10 and 13 have 4 ratings each -> 10, 13
    assert hm.item_ids.tolist() == [10, 13]
    expected = np.array([[5.0, np.nan], [5.0, 1.0], [1.0, 5.0]])
    np.testing.assert_array_equal(np.isnan(hm.matrix), np.isnan(expected))
    np.testing.assert_allclose(hm.matrix[~np.isnan(expected)], expected[~np.isnan(expected)])


def test_heatmap_duplicate_pairs_are_averaged() -> None:
    data = _frame([(1, 1, 2.0), (1, 1, 4.0), (2, 1, 5.0), (1, 2, 3.0)])
    hm = plots.heatmap_matrix(data)
    assert hm.matrix[0, 0] == pytest.approx(3.0)


def test_heatmap_plot_masks_missing(tiny: Interactions) -> None:
    fig = plots.plot_user_item_heatmap(tiny, n_users=20, n_items=30)
    ax = fig.axes[0]
    shown = ax.images[0].get_array()
    hm = plots.heatmap_matrix(tiny)
    assert shown.shape == (6, 5)
    np.testing.assert_array_equal(np.ma.getmaskarray(shown), np.isnan(hm.matrix))
    assert int((~np.ma.getmaskarray(shown)).sum()) == len(tiny)  # tiny has no duplicate pairs
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"user {u}" for u in hm.user_ids]
    assert len(fig.axes) == 2  # the colour bar
    assert fig.axes[1].get_ylabel() == "Rating"


# ---------------------------------------------------------------------- learning curves
HISTORY = [
    {"epoch": 1, "train_loss": 1.2, "valid_rmse": 1.00, "seconds": 0.1},
    {"epoch": 2, "train_loss": 0.9, "valid_rmse": 0.95, "seconds": 0.1, "best": False},
    {"epoch": 3, "train_loss": 0.7, "valid_rmse": 0.93, "seconds": 0.1, "best": True},
    {"epoch": 4, "train_loss": 0.6, "valid_rmse": 0.94, "seconds": 0.1, "best": False},
]


def test_learning_curves_lines_target_and_best_epoch() -> None:
    fig = plots.plot_learning_curves(HISTORY, target=0.95)
    ax, ax2 = fig.axes
    loss = ax.lines[0]
    assert list(loss.get_xdata()) == [1, 2, 3, 4] and list(loss.get_ydata()) == [1.2, 0.9, 0.7, 0.6]
    valid = next(line for line in ax2.lines if line.get_label() == "validation RMSE")
    assert list(valid.get_ydata()) == [1.00, 0.95, 0.93, 0.94]
    target = next(line for line in ax2.lines if line.get_label() == "target 0.95")
    assert target.get_ydata()[0] == 0.95
    best = ax2.collections[0]
    np.testing.assert_allclose(best.get_offsets(), [[3, 0.93]])
    assert ax.get_xlabel() == "Epoch" and ax.get_ylabel() == "Training loss" and ax2.get_ylabel() == "RMSE"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "best epoch 3 (0.9300)" in legend


def test_learning_curves_refit_phase_is_drawn_separately() -> None:
    history = [dict(h, phase="select") for h in HISTORY] + [
        {"epoch": 1, "train_loss": 1.1, "phase": "refit"}, {"epoch": 2, "train_loss": 0.8, "phase": "refit"},
        {"epoch": 3, "train_loss": 0.65, "phase": "refit"}]
    ax, ax2 = plots.plot_learning_curves(history).axes
    select, refit = ax.lines
    assert list(select.get_ydata()) == [1.2, 0.9, 0.7, 0.6]
    assert list(refit.get_xdata()) == [1, 2, 3] and list(refit.get_ydata()) == [1.1, 0.8, 0.65]
    assert refit.get_linestyle() == "--" and "refit" in refit.get_label()
    assert list(ax2.lines[0].get_ydata()) == [1.00, 0.95, 0.93, 0.94]


def test_learning_curves_from_model_history(planted) -> None:
    fig = plots.plot_learning_curves(planted)
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 0.5, 1 / 3]


def test_learning_curves_without_history_is_clear_error(tiny: Interactions) -> None:
    from cfrec.models.baseline import Baseline

    with pytest.raises(CfrecError, match="no training history"):
        plots.plot_learning_curves(Baseline().fit(tiny))


def test_learning_curves_loss_only() -> None:
    fig = plots.plot_learning_curves([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}])
    assert len(fig.axes) == 1  # no RMSE axis without RMSE values


# ---------------------------------------------------------------------- tuning
def test_rmse_vs_dim_means_and_best() -> None:
    trials = pd.DataFrame({
        "n_factors": [8, 16, 32, 8, 16, 32],
        "train_rmse": [0.90, 0.85, 0.80, 0.92, 0.87, 0.82],
        "valid_rmse": [0.95, 0.93, 0.94, 0.97, 0.95, 0.96],
        "state": ["complete"] * 6,
    })
    ax = plots.plot_rmse_vs_dim(trials).axes[0]
    valid = next(c for c in ax.containers if c.get_label().startswith("validation"))
    np.testing.assert_allclose(valid.lines[0].get_xdata(), [8, 16, 32])
    np.testing.assert_allclose(valid.lines[0].get_ydata(), [0.96, 0.94, 0.95])
    assert ax.get_xlabel() == "Embedding dimension" and ax.get_ylabel() == "RMSE"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "best: 16 (0.9400)" in legend
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "16", "32"]


def test_rmse_vs_dim_optuna_column_names_and_failed_trials() -> None:
    trials = pd.DataFrame({"params_n_factors": [4, 8, 16], "valid_rmse": [1.0, np.nan, 0.9]})
    ax = plots.plot_rmse_vs_dim(trials).axes[0]
    line = ax.containers[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), [4, 16])  # the failed (NaN) trial is dropped


def test_weight_decay_log_axis_with_zero() -> None:
    trials = pd.DataFrame({
        "weight_decay": [0.0, 1e-4, 1e-3, 1e-2],
        "train_rmse": [0.60, 0.70, 0.85, 0.95],
        "valid_rmse": [1.05, 0.96, 0.93, 0.97],
    })
    ax = plots.plot_rmse_vs_weight_decay(trials).axes[0]
    assert ax.get_xscale() == "log"
    assert plots.plot_rmse_vs_weight_decay(trials.rename(columns={"weight_decay": "reg"}),
                                           param="reg").axes[0].get_xlabel() == "reg"
    train = next(c for c in ax.containers if c.get_label().startswith("training"))
    xs = train.lines[0].get_xdata()
    assert xs[0] == pytest.approx(1e-5)  # 0 is drawn a decade left of the smallest positive value
    np.testing.assert_allclose(train.lines[0].get_ydata(), [0.60, 0.70, 0.85, 0.95])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "0"
    assert ax.get_xlabel() == "Weight decay"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "best: 0.001 (0.9300)" in legend


def test_tuning_plot_missing_columns() -> None:
    with pytest.raises(CfrecError, match="no n_factors column"):
        plots.plot_rmse_vs_dim(pd.DataFrame({"lr": [0.1], "valid_rmse": [1.0]}))
    with pytest.raises(CfrecError, match="valid_rmse"):
        plots.plot_rmse_vs_weight_decay(pd.DataFrame({"weight_decay": [0.1], "rmse": [1.0]}))
    with pytest.raises(CfrecError, match="empty"):
        plots.plot_rmse_vs_dim(pd.DataFrame())


# ---------------------------------------------------------------------- saving
@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_save_figure_formats(tmp_path, tiny: Interactions, suffix: str, magic: bytes) -> None:
    path = plots.save_figure(plots.plot_rating_distribution(tiny), tmp_path / f"sub/fig{suffix}")
    assert path.read_bytes().startswith(magic)
    assert os.listdir(tmp_path / "sub") == [f"fig{suffix}"]  # no temporary file left behind


def test_save_figure_bad_suffix(tmp_path, tiny: Interactions) -> None:
    with pytest.raises(CfrecError, match="cannot save a figure"):
        plots.save_figure(plots.plot_rating_distribution(tiny), tmp_path / "fig.jpeg2000")


def test_save_figure_failure_keeps_old_file(tmp_path, tiny: Interactions, monkeypatch) -> None:
    path = tmp_path / "fig.png"
    path.write_bytes(b"old")
    fig = plots.plot_rating_distribution(tiny)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError):
        plots.save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["fig.png"]


def test_figures_are_headless_and_not_registered_with_pyplot(tiny: Interactions) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plots.plot_user_item_heatmap(tiny)
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert fig.canvas.manager is None  # pyplot never saw it: no global figure list to leak into


def test_importing_viz_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = ("import sys, cfrec.viz, cfrec.viz.plots, cfrec.app.report, cfrec.models.export, cfrec.cli; "
            "print(sorted(m for m in ('matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
