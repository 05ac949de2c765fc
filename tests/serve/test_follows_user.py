"""The README's serving model follows its user: through HTTP, five 5-star films of one genre move
the list well away from the new-user list, and the new-user list is of well-rated-by-many films."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cfrec.cli import main
from cfrec.data import load_dataset
from cfrec.serve import create_app

README = Path(__file__).resolve().parents[2] / "README.md"
SCI_FI = [50, 172, 181, 228, 183]  # Star Wars, Empire, Jedi, Wrath of Khan, Alien
ANIMATION = [1, 71, 95, 99, 588]  # Toy Story, Lion King, Aladdin, Snow White, Beauty and the Beast


def readme_serving_train() -> list[str]:
    """The ``cfrec train`` command of the README's Serving section, as arguments."""
    section = README.read_text(encoding="utf-8").split("## Serving", 1)[1].split("\n## ", 1)[0]
    line = re.search(r"^cfrec (train [^#\n]+)", section, re.M)
    assert line, "the Serving section trains no model"
    return line.group(1).split()


@pytest.mark.slow
def test_readme_serving_model_follows_the_user(ml100k_dir: Path, tmp_path: Path) -> None:
    args = readme_serving_train()
    out = args.index("--out")
    args[out + 1] = str(tmp_path / "model")
    assert main(args) == 0
    counts = load_dataset("ml-100k").item_counts()
    with TestClient(create_app(tmp_path / "model")) as client:
        card = client.get("/v1/model").json()
        assert card["cold_start_label"].startswith("number of training ratings")  # EASE's, as served
        assert card["score_label"].startswith("blends of EASE's retrieval score")
        new = client.get("/v1/recommend/nobody?k=10").json()
        assert new["cold_start"]
        cold = [it["id"] for it in new["items"]]
        ids = load_dataset("ml-100k").item_map
        median = float(np.median(counts))
        assert all(counts[ids.to_index(i)] >= median for i in cold), cold
        for films in (SCI_FI, ANIMATION):
            body = {"ratings": [{"item": i, "rating": 5} for i in films], "k": 10}
            got = client.post("/v1/recommend", json=body).json()
            assert not got["cold_start"] and got["n_ratings_used"] == 5
            top = [it["id"] for it in got["items"]]
            assert len(set(top) - set(cold)) >= 6, (films, top, cold)
