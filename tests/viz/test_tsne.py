"""t-SNE map: item selection by training count, genre colouring, labels, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.data import Interactions
from cfrec.errors import CfrecError
from cfrec.viz.tsne import NO_GENRE, item_counts, plot_tsne, primary_genres, tsne_item_embeddings
from tests.clustered import GENRES, PlantedFactors, clustered_frame

FAST = 500  # t-SNE iterations (half the default) to keep these tests quick


@pytest.fixture(scope="module")
def fitted() -> PlantedFactors:
    frame, info = clustered_frame()
    return PlantedFactors().fit(Interactions.from_frame(frame, item_info=info, name="clustered"))


@pytest.fixture(scope="module")
def tmap(fitted: PlantedFactors):
    return tsne_item_embeddings(fitted, min_ratings=1, seed=0, max_iter=FAST)


def test_item_counts_are_training_column_sums(planted, clustered: Interactions) -> None:
    counts = item_counts(planted)
    expected = np.bincount(clustered.items, minlength=clustered.n_items)
    np.testing.assert_array_equal(counts, expected[clustered.item_map.to_index(planted.item_map_.ids)])


def test_tsne_keeps_items_with_enough_ratings(fitted) -> None:
    counts = item_counts(fitted)
    threshold = int(np.sort(counts)[len(counts) // 3])  # drop roughly a third of the items
    tmap = tsne_item_embeddings(fitted, min_ratings=threshold, seed=0, max_iter=FAST)
    kept = fitted.item_map_.ids[counts >= threshold]
    assert 0 < len(kept) < len(counts)
    assert sorted(tmap.item_ids.tolist()) == sorted(kept.tolist())
    assert tmap.coords.shape == (len(kept), 2) and tmap.coords.dtype == np.float32
    assert (tmap.counts >= threshold).all()


def test_tsne_separates_planted_genre_clusters(tmap) -> None:
    genre = np.array(tmap.genres)
    # every item's nearest neighbour on the map belongs to its own planted cluster
    d = np.linalg.norm(tmap.coords[:, None, :] - tmap.coords[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(axis=1)
    assert (genre[nearest] == genre).mean() == 1.0
    assert set(genre) == set(GENRES)  # primary genre = first listed genre (not "Drama")


def test_tsne_is_seeded(fitted, tmap) -> None:
    again = tsne_item_embeddings(fitted, min_ratings=1, seed=0, max_iter=FAST)
    np.testing.assert_array_equal(again.coords, tmap.coords)


def test_tsne_needs_embeddings_and_enough_items(planted, tiny: Interactions) -> None:
    from cfrec.models.baseline import Baseline

    with pytest.raises(CfrecError, match="no item embeddings"):
        tsne_item_embeddings(Baseline().fit(tiny))
    with pytest.raises(CfrecError, match="lower min_ratings"):
        tsne_item_embeddings(planted, min_ratings=10_000)


def test_plot_tsne_legend_colours_and_labels(tmap) -> None:
    fig = plot_tsne(tmap)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == sorted(f"{g} (10)" for g in GENRES)
    # one scatter per genre with that genre's points, then one ring per labelled item
    genre_sizes = sorted(len(c.get_offsets()) for c in ax.collections[:3])
    assert genre_sizes == [10, 10, 10]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["Pulp Fiction (1994)", "Star Wars (1977)", "Toy Story (1995)"]
    assert "3 items" not in ax.get_title() and "30 items" in ax.get_title()


def test_plot_tsne_custom_labels_and_fallback(tmap) -> None:
    ax = plot_tsne(tmap, labels=["Film 5 "]).axes[0]
    assert [t.get_text() for t in ax.texts] == ["Film 5 (1985)"]
    renamed = type(tmap)(tmap.coords, tmap.item_ids, [f"x{i}" for i in range(len(tmap.titles))],
                         tmap.genres, tmap.counts, tmap.min_ratings, tmap.model_name)
    ax = plot_tsne(renamed).axes[0]
    assert len(ax.texts) == 8  # no well-known title: the eight most rated items are named


def test_labels_do_not_overlap(tmap) -> None:
    # one label per cluster plus two more: there is room to place them all apart
    fig = plot_tsne(tmap, labels=["Toy Story", "Star Wars", "Pulp Fiction", "Film 5 ", "Film 25 "])
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    frame = fig.axes[0].get_window_extent(renderer)
    assert len(boxes) == 5
    assert not any(a.overlaps(b) for n, a in enumerate(boxes) for b in boxes[n + 1:])
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 for b in boxes)


def test_plot_tsne_from_model(planted) -> None:
    fig = plot_tsne(planted, min_ratings=1, max_iter=FAST)
    assert "30 items with >= 1 training ratings" in fig.axes[0].get_title()


def test_primary_genres_handles_missing() -> None:
    import pandas as pd

    info = pd.DataFrame({"genres": [["Comedy", "Drama"], [], None, "Horror"]}, index=[1, 2, 3, 4])
    assert primary_genres(info, np.array([1, 2, 3, 4, 5])) == ["Comedy", NO_GENRE, NO_GENRE, "Horror", NO_GENRE]
    assert primary_genres(None, np.array([1])) == [NO_GENRE]
