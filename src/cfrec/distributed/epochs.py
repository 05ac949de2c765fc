"""The epoch loop every distributed fit shares: resume from the last checkpoint, count the bytes
each epoch sends, checkpoint after each and report progress (rank 0 alone)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cfrec.distributed.checkpoint import Checkpoints
from cfrec.distributed.launch import maybe_kill
from cfrec.distributed.runtime import Context
from cfrec.engines.driver import Trainer
from cfrec.models.base import EpochCallback


def run_epochs(name: str, total: int, on_epoch: EpochCallback | None, ctx: Context,
         blocks: Callable[[], tuple[np.ndarray, np.ndarray]],
         restore: Callable[[np.ndarray, np.ndarray], None], step: Callable[[int], dict[str, Any]],
         checkpoints: Checkpoints | None) -> list[dict[str, Any]]:
    """Run the ``total`` iterations (or epochs) not yet done: from the last checkpoint when
    there is one (``restore`` gets its user and item blocks), checkpointing ``blocks()`` after
    each when asked. ``step`` gets the iteration's number (1-based, over the whole job)."""
    done = 0
    records: list[dict[str, Any]] = []
    resumed = checkpoints.resume() if checkpoints is not None else None
    if resumed is not None:
        done, records = resumed.iteration, list(resumed.history)
        restore(resumed.users, resumed.items)

    def iteration(epoch: int) -> dict[str, Any]:
        maybe_kill(ctx.rank, done + epoch)
        before = ctx.sent.total
        record = step(done + epoch)
        record["bytes_sent"] = ctx.sent.total - before
        record["epoch"] = done + epoch
        return record

    def finished(record: dict[str, Any]) -> None:
        record = {key: value for key, value in record.items() if key != "epochs"}
        records.append(record)
        if checkpoints is not None:
            users, items = blocks()
            checkpoints.save(int(record["epoch"]), users, items, records)
        if on_epoch is not None:
            on_epoch({**record, "epochs": total})

    Trainer(name, max(0, total - done), finished).run(iteration)
    return records
