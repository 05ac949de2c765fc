"""The training driver: the epoch bookkeeping every iterative model shares.

A model supplies one epoch (a sweep of ALS, a Gibbs sweep, a pass of minibatches) as a function
that returns that epoch's record; :class:`Trainer` runs the epochs and owns the rest: timing,
the divergence check (a non-finite ``train_loss`` or validation RMSE raises
:class:`~cfrec.errors.TrainingDiverged`), validation, early stopping with the best epoch
restored, the per-epoch history, logging and the ``on_epoch`` progress callback (which receives
each record with ``epochs``, the planned count, added).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from cfrec.errors import TrainingDiverged

logger = logging.getLogger(__name__)

EpochStep = Callable[[int], dict[str, Any]]
"""Runs epoch ``e`` (1-based) and returns its record: ``train_loss`` and anything else to keep."""

ProgressCallback = Callable[[dict[str, Any]], None]

_T = TypeVar("_T")


@dataclass
class Trainer:
    """Runs a model's epochs (see the module docstring).

    Parameters
    ----------
    name
        The model's name, in logs and errors.
    epochs
        Epochs to run (fewer when early stopping ends the run).
    on_epoch
        Called after every epoch with a copy of its record plus ``epochs``.
    lr
        The learning rate that :class:`~cfrec.errors.TrainingDiverged` reports (None: no hint).
    patience
        With a ``validate`` function: stop after this many epochs without a validation RMSE
        improvement of more than ``min_delta`` (None: never stop early).
    min_delta
        The smallest decrease of the validation RMSE that counts as an improvement.
    log_level
        Level of the one log line per epoch.
    """

    name: str
    epochs: int
    on_epoch: ProgressCallback | None = None
    lr: float | None = None
    patience: int | None = None
    min_delta: float = 1e-4
    log_level: int = logging.DEBUG

    def run(self, step: EpochStep, *, validate: Callable[[], float] | None = None,
            snapshot: Callable[[], Any] | None = None,
            restore: Callable[[Any], None] | None = None) -> list[dict[str, Any]]:
        """Run the epochs; return the history (one record an epoch, in order).

        Each record is ``{"epoch": e, **step(e)}``, then ``valid_rmse`` (with ``validate``) and
        ``seconds`` (the epoch and its validation). With ``patience``, ``snapshot`` is called
        whenever the validation RMSE improves and, when the run ends, ``restore`` gets the best
        epoch's snapshot back; every record then says whether it was that epoch (``best``).
        """
        history: list[dict[str, Any]] = []
        best_rmse, best_state, best_epoch, bad_epochs = math.inf, None, 0, 0
        stopping = self.patience is not None and validate is not None
        for epoch in range(1, self.epochs + 1):
            start = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, **step(epoch)}
            self._check_finite(epoch, record["train_loss"])
            if validate is not None:
                rmse = float(validate())
                self._check_finite(epoch, rmse)
                record["valid_rmse"] = rmse
                if rmse < best_rmse - self.min_delta:
                    best_rmse, best_epoch, bad_epochs = rmse, epoch, 0
                    if stopping and snapshot is not None:
                        best_state = snapshot()
                else:
                    bad_epochs += 1
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            logger.log(self.log_level, "%s epoch %d: %s", self.name, epoch,
                       ", ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)))
            if self.on_epoch is not None:
                self.on_epoch(dict(record, epochs=self.epochs))
            if stopping and self.patience is not None and bad_epochs >= self.patience:
                logger.info("%s: early stop at epoch %d (best epoch %d)", self.name, epoch, best_epoch)
                break
        if best_state is not None and restore is not None:
            restore(best_state)
            for rec in history:
                rec["best"] = rec["epoch"] == best_epoch
        return history

    def _check_finite(self, epoch: int, value: float) -> None:
        if not math.isfinite(value):
            raise TrainingDiverged(self.name, epoch, self.lr, value)


def after_setup(sweeps: Generator[_T | None, None, None]) -> Generator[_T, None, None]:
    """Run a solver's sweep generator through its set-up and return it.

    The generator yields None once its set-up (layouts, weights, starting factors) is done,
    then one item a sweep: a sweep's seconds, timed around each later item, leave the set-up
    out (as implicit's per-iteration times and the torch models' epochs do); the fit's total
    time still counts it.
    """
    if next(sweeps) is not None:
        raise RuntimeError("a sweep generator yields None once its set-up is done")
    return cast(Generator[_T, None, None], sweeps)
