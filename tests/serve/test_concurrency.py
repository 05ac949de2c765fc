"""What the service relies on: fold-in and scoring only read a fitted model, so requests served
at the same time from many threads get exactly what they would get one at a time, and the model
(NeuMF's shared network included) is left as it was."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cfrec.models.base import Recommender
from tests.serve.conftest import clustered_data, save

MODELS = [("mf", {}), ("ials", {}), ("ease", {}), ("pop", {}), ("svdpp", {}), ("baseline", {}),
          ("neumf", {"epochs": 2})]
#: New users: (items, ratings), a few known items each, one unknown.
USERS = [([11, 12, 13], [5, 4, 5]), ([1, 2, 25, 999], [1, 2, 5, 3]), ([21, 22], [5, 5]),
         ([3, 14, 23, 30], [4, 3, 2, 5]), ([7], [2])]


def answer(model: Recommender, job: int) -> tuple:
    """One request's worth of model calls: a fold-in and its top-5, a known user's top-5, a
    prediction (and similar items where the model has item vectors)."""
    items, ratings = USERS[job % len(USERS)]
    folded = model.fold_in(items, ratings)
    mine = model.recommend(folded, 5)
    user = int(model.user_map_.to_raw(job % len(model.user_map_)))
    theirs = model.recommend(user, 5)
    pred = model.predict(np.asarray([user]), np.asarray([items[0]]))
    out = (mine.ids.tolist(), mine.scores.tolist(), folded.factors.tolist(), folded.bias,
           theirs.ids.tolist(), theirs.scores.tolist(), pred.tolist())
    try:
        sim = model.similar_items(items[0], 3)
        out += (sim.ids.tolist(), sim.scores.tolist())
    except Exception:  # no item vectors (popularity, bias-only)
        pass
    return out


@pytest.mark.parametrize(("name", "params"), MODELS, ids=[m[0] for m in MODELS])
def test_concurrent_requests_match_sequential_ones(tmp_path: Path, name: str, params: dict) -> None:
    model = Recommender.load(save(name, clustered_data(), tmp_path / name, **params))
    state_before = learned_arrays(model)
    jobs = list(range(10))
    sequential = [answer(model, j) for j in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda j: answer(model, j), jobs * 2))
    assert concurrent == sequential * 2
    after = learned_arrays(model)
    assert after.keys() == state_before.keys() and state_before
    for key, value in state_before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=f"{name}: {key} changed")


def learned_arrays(model: Recommender) -> dict[str, np.ndarray]:
    """Copies of the learned state (attributes ending in ``_``: arrays, and a network's tensors)."""
    out = {}
    for key, value in vars(model).items():
        if not key.endswith("_"):
            continue
        if isinstance(value, np.ndarray):
            out[key] = value.copy()
        elif hasattr(value, "state_dict"):
            out.update({f"{key}.{k}": v.detach().numpy().copy() for k, v in value.state_dict().items()})
    return out


def test_neumf_fold_in_leaves_the_network_alone(tmp_path: Path) -> None:
    model = Recommender.load(save("neumf", clustered_data(), tmp_path / "neumf", epochs=2))
    net = model.net_
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda j: model.fold_in(*USERS[j % len(USERS)]), range(32)))
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert all(p.grad is None for p in net.parameters())
    assert not net.training
