"""Blocked fits read straight from ``cfrec shard`` output: each of two gloo ranks reads its own
parts, and the factors equal a one-process fit of the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from cfrec.data.io import load_ratings
from cfrec.data.shard import ShardSet, shard_dataset
from cfrec.distributed import Context, fit_blocked
from cfrec.distributed.sharded_input import read_part, read_rank_data
from cfrec.errors import CfrecError
from tests.distributed._workers import SHARDED_CASES, case_model, fit_sharded, write_case_files
from tests.distributed.test_fit import RTOL, _free_port, _rel


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    write_case_files(folder)
    for name in ("ratings.csv", "plays.tsv"):
        shard_dataset(folder / name, folder / f"{name}-shards", 2)
        shard_dataset(folder / name, folder / f"{name}-one", 1)
    return folder


@pytest.fixture(scope="module")
def two_ranks(files: Path) -> Path:
    mp.spawn(fit_sharded, args=(2, _free_port(), str(files)), nprocs=2, join=True)
    return files


@pytest.mark.parametrize("case", [c[0] for c in SHARDED_CASES])
def test_two_ranks_on_shards_equal_one_process_on_the_file(case: str, two_ranks: Path) -> None:
    _, model, params, file = next(c for c in SHARDED_CASES if c[0] == case)
    data = load_ratings(two_ranks / file)
    ref = case_model(model, params).fit(data)
    users, items = np.load(two_ranks / f"{case}-users.npy"), np.load(two_ranks / f"{case}-items.npy")
    assert users.shape == ref.user_factors_.shape and items.shape == ref.item_factors_.shape
    assert _rel(users, ref.user_factors_) <= RTOL
    assert _rel(items, ref.item_factors_) <= RTOL
    assert np.array_equal(np.load(two_ranks / f"{case}-seen.npy"), ref.seen_.toarray())
    assert json.loads((two_ranks / f"{case}-n.json").read_text()) == len(data)  # repeats resolved


@pytest.mark.parametrize("file", ["ratings.csv", "plays.tsv"])
def test_parts_read_as_the_shard_reader_resolves_them(file: str, files: Path) -> None:
    """The lean reader (three columns) gives the rows ``ShardSet.read_part`` gives, repeated
    pairs resolved by the folder's policy."""
    shards = ShardSet.open(files / f"{file}-shards")
    for p in range(shards.parts):
        for by in ("user", "item"):
            part = read_part(shards, p, by)  # type: ignore[arg-type]
            users, items, values, _ = shards.read_part(p, by)  # type: ignore[arg-type]
            assert np.array_equal(part.users, users) and np.array_equal(part.items, items)
            got = part.values(shards.feedback == "implicit")
            assert np.array_equal(got, values)
            assert len(set(zip(users.tolist(), items.tolist(), strict=True))) == len(users)


def test_one_part_on_one_process_is_the_plain_fit(files: Path) -> None:
    part = read_rank_data(files / "ratings.csv-one", Context.local())
    assert part.unique_pairs and part.n_interactions == len(load_ratings(files / "ratings.csv"))
    fitted = fit_blocked(case_model("als", {}), part, Context.local())
    ref = case_model("als", {}).fit(load_ratings(files / "ratings.csv"))
    assert fitted.user_map_ == ref.user_map_ and fitted.item_map_ == ref.item_map_
    assert _rel(fitted.user_factors_, ref.user_factors_) <= RTOL
    assert _rel(fitted.item_bias_, ref.item_bias_) <= RTOL


def test_a_job_of_another_size_is_refused(files: Path) -> None:
    with pytest.raises(CfrecError, match=r"holds 2 parts: train it on 2 processes \(--nproc 2"):
        read_rank_data(files / "ratings.csv-shards", Context.local())
