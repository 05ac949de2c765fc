"""BiasedMF by stratified blocks (DSGD): the single-process fit with one process; with two
processes on gloo the test RMSE of that fit on ML-100K's u1 fold, and a resumed job equal to an
uninterrupted one."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from cfrec.data import Interactions, load_dataset
from cfrec.distributed import Context, fit_blocked, rank_data
from cfrec.errors import CfrecError
from cfrec.evaluation.protocols import summarize_test
from cfrec.models.base import Recommender
from tests.distributed._workers import fit_dsgd, mf_data, mf_model

COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fold(ml100k_dir: Path, part: str) -> Interactions:
    return load_dataset(ml100k_dir / f"u1.{part}", columns=COLUMNS)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, data_home: Path) -> tuple[Path, bool]:
    """One job of two processes on gloo (start-up is the cost): the u1 fold when ML-100K is
    there, then the small set uninterrupted and resumed."""
    out = tmp_path_factory.mktemp("dsgd")
    fold = data_home / "ml-100k" / "u1.base"
    mp.spawn(fit_dsgd, args=(2, _free_port(), str(out), str(fold) if fold.is_file() else ""), nprocs=2, join=True)
    return out, fold.is_file()


@pytest.mark.parametrize("compiled_layout", [False, True], ids=["torch-layout", "compiled-layout"])
def test_one_process_is_the_single_process_fit(compiled_layout: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if compiled_layout:  # the layout of large data, drawn by the compiled grouped shuffle
        import cfrec.models.mf as mf_mod

        monkeypatch.setattr(mf_mod, "GROUPED_SHUFFLE_MIN", 0)
    data = mf_data()
    ref = mf_model(epochs=4).fit(data)
    ctx = Context.local()
    fitted = fit_blocked(mf_model(epochs=4), rank_data(data, 0, 1), ctx)
    for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(ref, name))
    assert fitted.global_mean_ == ref.global_mean_
    np.testing.assert_allclose([r["train_loss"] for r in fitted.history_], [r["train_loss"] for r in ref.history_],
                               rtol=1e-6)
    assert ctx.sent.total == 0


def test_two_ranks_match_the_rmse_of_one_process(two_ranks: tuple[Path, bool], ml100k_dir: Path) -> None:
    out, have_fold = two_ranks
    assert have_fold
    train, test = _fold(ml100k_dir, "base"), _fold(ml100k_dir, "test")
    one = summarize_test(mf_model(seed=0).fit(train), test)["rmse"]
    model = Recommender.load(out / "fold-model")
    two = summarize_test(model, test)["rmse"]
    assert model.fit_info_["distributed"]["world_size"] == 2
    assert one < 0.93 and abs(two - one) <= 0.003, (one, two)


def test_resumed_job_equals_an_uninterrupted_one(two_ranks: tuple[Path, bool]) -> None:
    out, _ = two_ranks
    with np.load(out / "whole.npz") as whole, np.load(out / "resumed.npz") as resumed:
        assert resumed["epochs"].tolist() == whole["epochs"].tolist() == [1, 2, 3, 4, 5, 6]
        for name in ("users", "items", "user_bias", "item_bias", "loss"):
            np.testing.assert_array_equal(resumed[name], whole[name])
        # each epoch passes every item block once around the ring: [b_i, q_i] rows, no users
        model = mf_model()
        n_items = len(whole["item_bias"])
        assert np.all(whole["sent"] > 0)
        assert np.all(whole["sent"] <= n_items * (model.n_factors + 1) * 4 + 64)
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == [
        "rank0-of-2-iter6.safetensors", "rank1-of-2-iter6.safetensors", "state.json"]


def test_refuses_settings_it_does_not_train() -> None:
    data = rank_data(mf_data(), 0, 1)
    with pytest.raises(CfrecError, match="optimizer=funk"):
        fit_blocked(mf_model(optimizer="adam"), data, Context.local())
    with pytest.raises(CfrecError, match="valid_fraction=0"):
        fit_blocked(mf_model(valid_fraction=0.1), data, Context.local())
