"""``cfrec train --nproc 2``: the blocked fit launched on this machine saves the model of one
process; a rank killed mid-job stops the job, names the rank and leaves ``--out`` as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cfrec.cli import main
from cfrec.distributed.launch import FAULT_ENV, strip_nproc
from cfrec.models.base import Recommender

ARGS = ["--model", "ials", "--factors", "8", "--param", "iterations=4", "--split", "none"]


def _train_nproc(dataset: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cfrec", "train", str(dataset), *ARGS, "--nproc", "2", "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


@pytest.fixture
def ratings(ml100k_dir: Path) -> Path:
    return ml100k_dir / "u1.base"


def test_strip_nproc() -> None:
    assert strip_nproc(["train", "x", "--nproc", "2", "--out", "o"]) == ["train", "x", "--out", "o"]
    assert strip_nproc(["train", "--nproc=4", "x"]) == ["train", "x"]


@pytest.mark.slow
def test_nproc_saves_the_single_process_model(ratings: Path, tmp_path: Path) -> None:
    assert main(["train", str(ratings), *ARGS, "--out", str(tmp_path / "one")]) == 0
    done = _train_nproc(ratings, tmp_path / "two")
    assert done.returncode == 0, done.stderr
    assert "on 2 processes" in done.stdout and done.stdout.count("saved to") == 1  # rank 0 alone prints
    one, two = Recommender.load(tmp_path / "one"), Recommender.load(tmp_path / "two")
    scale = np.abs(one.item_factors_).max()
    assert np.abs(two.item_factors_ - one.item_factors_).max() <= 1e-4 * scale
    assert np.abs(two.user_factors_ - one.user_factors_).max() <= 1e-4 * np.abs(one.user_factors_).max()
    assert two.fit_info_["distributed"]["world_size"] == 2
    assert two.recommend(one.user_map_.ids[0], k=10).ids.tolist() == one.recommend(one.user_map_.ids[0],
                                                                                    k=10).ids.tolist()


@pytest.mark.slow
def test_killed_rank_leaves_the_previous_model(ratings: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert main(["train", str(ratings), *ARGS, "--out", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    failed = _train_nproc(ratings, out, **{FAULT_ENV: "1:2"})
    assert failed.returncode != 0
    assert "rank 1 of 2 was killed by SIGKILL" in failed.stderr
    assert "Traceback" not in failed.stderr
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_restarted_job_resumes_from_its_checkpoint(ratings: Path, tmp_path: Path) -> None:
    """Rank 1 is killed at iteration 3; the job restarts once, resumes after iteration 2 and
    saves the model of an uninterrupted single-process fit."""
    assert main(["train", str(ratings), *ARGS, "--out", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "cfrec", "train", str(ratings), *ARGS, "--nproc", "2", "--max-restarts", "1",
           "--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, FAULT_ENV: "1:3"})
    assert done.returncode == 0, done.stderr
    one, two = Recommender.load(tmp_path / "one"), Recommender.load(tmp_path / "two")
    assert [r["epoch"] for r in two.history_] == [1, 2, 3, 4]
    assert np.abs(two.item_factors_ - one.item_factors_).max() <= 1e-4 * np.abs(one.item_factors_).max()
    assert np.abs(two.user_factors_ - one.user_factors_).max() <= 1e-4 * np.abs(one.user_factors_).max()


@pytest.mark.slow
def test_restarted_dsgd_job_equals_an_uninterrupted_one(ratings: Path, tmp_path: Path) -> None:
    """BiasedMF by stratified blocks through the CLI: rank 1 killed at epoch 3, the job restarts
    from its checkpoint of epoch 2 and saves the model of a job never interrupted."""
    args = ["--model", "mf", "--factors", "8", "--epochs", "5", "--split", "none", "--nproc", "2"]

    def train(out: str, *extra: str, **env: str) -> tuple[Recommender, str]:
        cmd = [sys.executable, "-m", "cfrec", "train", str(ratings), *args, *extra, "--out", str(tmp_path / out)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        return Recommender.load(tmp_path / out), done.stdout

    whole, _ = train("whole")
    resumed, printed = train("resumed", "--max-restarts", "1", "--checkpoint", str(tmp_path / "ckpt"),
                             **{FAULT_ENV: "1:3"})
    assert printed.count("training mf") == 2  # the job was restarted once
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3, 4, 5]
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    assert whole.fit_info_["distributed"]["world_size"] == 2
