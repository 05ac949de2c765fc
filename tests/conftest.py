"""Shared fixtures: the real MovieLens data home (skips with a reason when absent) and small data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions
from tests.clustered import clustered, planted  # noqa: F401  (fixtures for every test folder)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO.parent / "shared" / "datasets"


def _data_home() -> Path:
    return Path(os.environ.get("CFREC_DATA_HOME", DEFAULT_HOME))


@pytest.fixture(scope="session")
def data_home() -> Path:
    """The data home holding real MovieLens files (CFREC_DATA_HOME or ../shared/datasets)."""
    return _data_home()


@pytest.fixture(scope="session")
def ml100k_dir(data_home: Path) -> Path:
    path = data_home / "ml-100k"
    if not (path / "u.data").is_file():
        pytest.skip(f"ML-100K not found in {data_home} (set CFREC_DATA_HOME to a folder holding ml-100k/)")
    return path


@pytest.fixture(autouse=True)
def _isolated_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every test at the real data home; tests that need an empty one override it."""
    monkeypatch.setenv("CFREC_DATA_HOME", str(_data_home()))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture
def tiny() -> Interactions:
    """A 6-user x 5-item rating set with a clear two-group structure."""
    rows = [
        (1, 10, 5), (1, 11, 5), (1, 12, 1), (2, 10, 5), (2, 11, 4), (2, 13, 1),
        (3, 12, 5), (3, 13, 5), (3, 10, 1), (4, 12, 4), (4, 13, 5), (4, 11, 2),
        (5, 10, 4), (5, 14, 3), (6, 13, 4), (6, 14, 2),
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    df["timestamp"] = np.arange(len(df), dtype=np.int64) * 100
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0), name="tiny")


def artifact_dir() -> Path:
    """Where tests keep artefacts (screenshots, reports) for a person to look at."""
    path = Path(os.environ.get("CFREC_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
