"""The CLI's distributed paths: ``train SHARD_DIR --nproc 2`` fits from the parts the model of
one process on the file; a distributed ``train`` scores its test part on every rank;
``recommend --all --nproc 2`` writes one part per rank, the lists of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.cli import main
from cfrec.models.base import Recommender

ARGS = ["--model", "ials", "--factors", "8", "--param", "iterations=4"]


def _cfrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cfrec", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CFREC_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, ml100k_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("cli-shards")
    assert main(["shard", str(ml100k_dir / "u1.base"), "--parts", "2", "--out", str(folder / "s2")]) == 0
    return folder


def test_sharded_input_refuses_a_split_and_a_job_of_another_size(shards: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "m")
    assert main(["train", str(shards / "s2"), *ARGS, "--split", "u1", "--out", out]) == 1
    assert "--split u1: " in capsys.readouterr().err
    assert main(["train", str(shards / "s2"), *ARGS, "--out", out]) == 1
    assert "holds 2 parts: train it on 2 processes (--nproc 2" in capsys.readouterr().err
    assert main(["train", str(shards / "s2"), "--model", "biasedmf", "--out", out]) == 1
    assert "a sharded folder trains als, ials" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_train_on_shards_equals_one_process_on_the_file(shards: Path, ml100k_dir: Path, tmp_path: Path) -> None:
    assert main(["train", str(ml100k_dir / "u1.base"), *ARGS, "--split", "none", "--out", str(tmp_path / "one")]) == 0
    done = _cfrec("train", str(shards / "s2"), *ARGS, "--nproc", "2", "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("saved to") == 1 and "on 2 processes" in done.stdout
    one, two = Recommender.load(tmp_path / "one"), Recommender.load(tmp_path / "two")
    assert one.user_map_ == two.user_map_ and one.item_map_ == two.item_map_
    for a, b in ((two.user_factors_, one.user_factors_), (two.item_factors_, one.item_factors_)):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
    assert (two.seen_ != one.seen_).nnz == 0
    assert two.fit_info_["split"] == "none" and two.fit_info_["distributed"]["world_size"] == 2


@pytest.mark.slow
def test_distributed_train_scores_the_test_part_on_every_rank(ml100k_dir: Path, tmp_path: Path) -> None:
    """The summary the ranks compute together equals one process's summary of the saved model."""
    from cfrec.data import load_dataset
    from cfrec.data.split import single_split
    from cfrec.evaluation.protocols import summarize_test

    done = _cfrec("train", str(ml100k_dir), *ARGS, "--nproc", "2", "--json", "--out", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert "evaluate" in summary["stages"]
    split = single_split(load_dataset(str(ml100k_dir)), "auto", seed=None)
    assert split is not None
    one = summarize_test(Recommender.load(tmp_path / "m"), split.test)
    assert summary["test"]["n"] == one["n"] and summary["test"]["fallback"] == one["fallback"]
    for key in ("ndcg@10", "recall@10"):
        assert summary["test"][key] == pytest.approx(one[key], rel=1e-9)


@pytest.mark.slow
def test_recommend_all_on_two_ranks_writes_the_lists_of_one_process(ml100k_dir: Path, tmp_path: Path) -> None:
    assert main(["train", str(ml100k_dir / "u1.base"), *ARGS, "--split", "none", "--out", str(tmp_path / "m")]) == 0
    done = _cfrec("recommend", str(tmp_path / "m"), "--all", "-k", "7", "--out", str(tmp_path / "recs"),
                  "--nproc", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote") == 1
    parts = sorted((tmp_path / "recs").glob("*.parquet"))
    assert [p.name for p in parts] == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert main(["recommend", str(tmp_path / "m"), "--all", "-k", "7", "--out", str(tmp_path / "one.parquet")]) == 0
    sharded = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(sharded, pd.read_parquet(tmp_path / "one.parquet"))


def test_recommend_nproc_needs_all_and_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(tmp_path / "m")
    assert main(["recommend", model, "--user", "1", "--nproc", "2"]) == 1
    assert "give --all --out DIR" in capsys.readouterr().err
    assert main(["recommend", model, "--all", "--out", str(tmp_path / "x.parquet"), "--nproc", "2"]) == 1
    assert "give a folder" in capsys.readouterr().err
