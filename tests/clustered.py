"""Small data with known structure (genre clusters with MovieLens-like titles) and a factor model
with planted embeddings, for the drawing, report and export tests (fixtures ``clustered`` and
``planted``, made available to every test by the root conftest)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions
from cfrec.models._bias import fit_biases
from cfrec.models.factor import FactorRecommender

GENRES = ("Animation", "Sci-Fi", "Crime")
#: Titles planted at the first item of each genre cluster (ids 1, 11, 21).
FAMOUS = {1: "Toy Story (1995)", 11: "Star Wars (1977)", 21: "Pulp Fiction (1994)"}


def clustered_frame(n_users: int = 40, per_genre: int = 10, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings where each user mostly rates (high) one genre cluster of items; plus item metadata.

    Item ``g * per_genre + j + 1`` belongs to genre ``g``; item popularity falls with ``j`` so the
    first item of each cluster is the most rated.
    """
    rng = np.random.default_rng(seed)
    n_items = per_genre * len(GENRES)
    rows = []
    t = 0
    for u in range(1, n_users + 1):
        fav = (u - 1) % len(GENRES)
        for i in range(1, n_items + 1):
            g, j = divmod(i - 1, per_genre)
            p = (0.9 if g == fav else 0.25) * (1.0 - 0.06 * j)
            if rng.random() < p:
                r = 5 if g == fav else int(rng.integers(1, 4))
                rows.append((u, i, r, t))
                t += 60
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    titles = {i: FAMOUS.get(i, f"Film {i} ({1980 + i})") for i in range(1, n_items + 1)}
    info = pd.DataFrame({
        "title": [titles[i] for i in range(1, n_items + 1)],
        "year": [1980 + i for i in range(1, n_items + 1)],
        "genres": [[GENRES[(i - 1) // per_genre], "Drama"] for i in range(1, n_items + 1)],
    }, index=pd.Index(range(1, n_items + 1), name="item_id"))
    return frame, info


@pytest.fixture
def clustered() -> Interactions:
    frame, info = clustered_frame()
    return Interactions.from_frame(frame, rating_scale=(1.0, 5.0), item_info=info, name="clustered")


class PlantedFactors(FactorRecommender):
    """Biases fitted in closed form; item vectors = the item's genre axis (plus small noise)."""

    name = "planted"

    def __init__(self, *, n_genres: int = 3, per_genre: int = 10, noise: float = 0.05, seed: int = 0) -> None:
        self.n_genres = n_genres
        self.per_genre = per_genre
        self.noise = noise
        self.seed = seed

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: Any) -> None:
        self.user_bias_, self.item_bias_ = fit_biases(
            train.users, train.items, train.ratings, train.n_users, train.n_items,
            global_mean=self.global_mean_)
        rng = np.random.default_rng(self.seed)
        ids = train.item_map.ids
        pos = ids.astype(np.int64) - 1 if train.item_map.is_numeric else np.arange(len(ids))
        genre = pos // self.per_genre
        items = np.eye(self.n_genres, dtype=np.float32)[genre]
        self.item_factors_ = (items + self.noise * rng.standard_normal(items.shape)).astype(np.float32)
        self.user_factors_ = (0.1 * rng.standard_normal((train.n_users, self.n_genres))).astype(np.float32)
        for epoch in range(1, 4):  # a fake history so the learning-curve code has something to draw
            self.history_.append({"epoch": epoch, "train_loss": 1.0 / epoch, "valid_rmse": 1.0 + 0.1 / epoch,
                                  "seconds": 0.0})


@pytest.fixture
def planted(clustered: Interactions) -> PlantedFactors:
    return PlantedFactors().fit(clustered)
