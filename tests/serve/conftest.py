"""Model folders for the service tests: small clustered data (genre clusters with MovieLens-like
titles) fitted with a rating model, a ranking model and a model without item vectors, plus a
string-id variant; and, where the real data is present, an ALS model of ML-100K."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cfrec.data import Interactions
from cfrec.models import make_model, model_class
from cfrec.models.registry import param_names
from tests.clustered import clustered_frame


def clustered_data(string_ids: bool = False) -> Interactions:
    frame, info = clustered_frame()
    if string_ids:
        frame = frame.assign(user_id="u" + frame["user_id"].astype(str),
                             item_id="i" + frame["item_id"].astype(str))
        info = info.set_axis(pd.Index("i" + info.index.astype(str), name="item_id"))
    return Interactions.from_frame(frame, rating_scale=(1.0, 5.0), item_info=info,
                                   name="clustered-str" if string_ids else "clustered")


def save(model_name: str, data: Interactions, out: Path, **params: object) -> Path:
    if "seed" in param_names(model_class(model_name)):
        params.setdefault("seed", 0)
    model = make_model(model_name, **params).fit(data)
    model.save(out)
    return out


@pytest.fixture(scope="session")
def mf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save("mf", clustered_data(), tmp_path_factory.mktemp("serve") / "mf")


@pytest.fixture(scope="session")
def ials_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save("ials", clustered_data(), tmp_path_factory.mktemp("serve") / "ials")


@pytest.fixture(scope="session")
def pop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save("pop", clustered_data(), tmp_path_factory.mktemp("serve") / "pop")


@pytest.fixture(scope="session")
def str_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save("mf", clustered_data(string_ids=True), tmp_path_factory.mktemp("serve") / "mf-str")


@pytest.fixture(scope="session")
def ml100k_als_dir(ml100k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ALS of ML-100K's u1 train part (real titles: the page's search finds "star wars")."""
    from cfrec.data import load_dataset, make_splits

    data = load_dataset("ml-100k", data_home=ml100k_dir.parent, download=False)
    train = make_splits(data, "u1", data_home=ml100k_dir.parent)[0].train
    return save("als", train, tmp_path_factory.mktemp("serve") / "ml100k-als")
