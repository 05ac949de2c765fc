"""Checkpoints of a blocked fit: every rank's own factor blocks after each iteration.

After iteration ``e`` every rank writes ``rank{r}-of-{P}-iter{e}.safetensors`` (its user and
item blocks), all ranks meet, and rank 0 writes ``state.json`` (the iteration, the job's shape,
the hyperparameters and the history so far), each file atomically. ``state.json`` names the last
iteration whose files every rank has finished, so a job restarted after a failure (``torchrun
--max-restarts``, ``cfrec train --max-restarts``) starts from it and runs the remaining
iterations: the same factors as a run never interrupted (the state of an iteration is exactly
its two blocks of factors). Older iterations' files are removed once a newer one is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from cfrec._io import atomic_path, write_json_atomic
from cfrec.distributed.blocks import RankData
from cfrec.distributed.runtime import Context
from cfrec.errors import CfrecError

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Resumed:
    """What a checkpoint gives back: the completed iterations, their history and this rank's
    blocks (``users``, ``items``: float32 numpy)."""

    iteration: int
    history: list[dict[str, Any]]
    users: np.ndarray
    items: np.ndarray


class Checkpoints:
    """Reads and writes one job's checkpoints in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path, ctx: Context, data: RankData, model: Any,
                 fingerprint: str | None) -> None:
        self.folder = Path(folder)
        self.ctx = ctx
        params = {k: v for k, v in model.get_params().items() if k not in ("iterations", "epochs", "threads", "device")}
        self.job = {"model": model.name, "params": params, "world_size": ctx.world_size,
                    "user_bounds": [int(x) for x in data.blocks.user_bounds],
                    "item_bounds": [int(x) for x in data.blocks.item_bounds], "fingerprint": fingerprint}

    def _file(self, iteration: int) -> Path:
        return self.folder / f"rank{self.ctx.rank}-of-{self.ctx.world_size}-iter{iteration}.safetensors"

    def resume(self) -> Resumed | None:
        """The last complete checkpoint of this job, or None when the folder holds none."""
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CfrecError(f"{path}: unreadable checkpoint state ({exc}); remove the folder to start over"
                             ) from None
        job = {k: state.get(k) for k in self.job}
        if job != json.loads(json.dumps(self.job)):
            differ = sorted(k for k in self.job if job.get(k) != json.loads(json.dumps(self.job[k])))
            raise CfrecError(f"{self.folder} holds checkpoints of another job (different {', '.join(differ)}); "
                             f"remove it or give another checkpoint folder")
        iteration = int(state["iteration"])
        arrays = load_file(str(self._file(iteration)))
        return Resumed(iteration, list(state.get("history", [])), arrays["users"], arrays["items"])

    def save(self, iteration: int, users: np.ndarray, items: np.ndarray, history: list[dict[str, Any]]) -> None:
        """Write this rank's blocks after ``iteration``; rank 0 then marks it complete."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._file(iteration)) as tmp:
            save_file({"users": np.ascontiguousarray(users, dtype=np.float32),
                       "items": np.ascontiguousarray(items, dtype=np.float32)}, str(tmp))
        self.ctx.barrier()  # every rank's file of this iteration is in place
        if self.ctx.is_main:
            write_json_atomic(self.folder / STATE_FILE, {**self.job, "iteration": iteration, "history": history})
        self.ctx.barrier()  # the state names this iteration: older files are no longer needed
        for old in self.folder.glob(f"rank{self.ctx.rank}-of-{self.ctx.world_size}-iter*.safetensors"):
            if old != self._file(iteration):
                old.unlink(missing_ok=True)
