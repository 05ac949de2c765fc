"""The training driver: records, progress, divergence, early stopping with the best epoch restored."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cfrec.engines.driver import Trainer, after_setup
from cfrec.errors import TrainingDiverged


def test_records_progress_and_history() -> None:
    seen: list[dict[str, Any]] = []
    ran: list[int] = []

    def step(epoch: int) -> dict[str, Any]:
        ran.append(epoch)
        return {"train_loss": 1.0 / epoch, "extra": epoch * 10}

    hist = Trainer("M", 3, seen.append).run(step)
    assert ran == [1, 2, 3]
    assert [list(r) for r in hist] == [["epoch", "train_loss", "extra", "seconds"]] * 3
    assert [r["train_loss"] for r in hist] == [1.0, 0.5, 1.0 / 3]
    assert all(r["seconds"] >= 0 for r in hist)
    assert [r["epochs"] for r in seen] == [3, 3, 3] and seen[1]["extra"] == 20
    assert "epochs" not in hist[0]  # the callback gets a copy


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_or_validation_diverges(bad: float) -> None:
    with pytest.raises(TrainingDiverged, match="M training diverged at epoch 2") as info:
        Trainer("M", 5, lr=0.5).run(lambda e: {"train_loss": 1.0 if e < 2 else bad})
    assert info.value.epoch == 2 and info.value.lr == 0.5 and "smaller" in str(info.value)
    scores = iter([1.0, bad])
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        Trainer("M", 5).run(lambda e: {"train_loss": 1.0}, validate=lambda: next(scores))


def test_early_stopping_restores_the_best_epoch() -> None:
    valid = iter([3.0, 2.0, 2.5, 2.6, 1.0])
    state = {"weights": 0}
    restored: list[Any] = []

    def step(epoch: int) -> dict[str, Any]:
        state["weights"] = epoch
        return {"train_loss": 1.0}

    hist = Trainer("M", 5, patience=2).run(step, validate=lambda: next(valid),
                                           snapshot=lambda: dict(state), restore=restored.append)
    assert [r["valid_rmse"] for r in hist] == [3.0, 2.0, 2.5, 2.6]  # stopped after two bad epochs
    assert restored == [{"weights": 2}]
    assert [r["best"] for r in hist] == [False, True, False, False]


def test_without_patience_validation_is_only_recorded() -> None:
    valid = iter([3.0, 4.0, 5.0])
    snaps: list[int] = []
    hist = Trainer("M", 3).run(lambda e: {"train_loss": 1.0}, validate=lambda: next(valid),
                               snapshot=lambda: snaps.append(1), restore=lambda s: None)
    assert len(hist) == 3 and not snaps and all("best" not in r for r in hist)


def test_after_setup_skips_the_setup_and_checks_the_protocol() -> None:
    def sweeps():
        yield None
        yield from (1, 2)

    assert list(after_setup(sweeps())) == [1, 2]

    def wrong():
        yield 1

    with pytest.raises(RuntimeError, match="yields None once"):
        after_setup(wrong())
