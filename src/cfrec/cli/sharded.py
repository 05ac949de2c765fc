"""The distributed paths of ``train`` and ``recommend --all``: sharded input and sharded output.

* ``cfrec train SHARD_DIR --model ials --nproc P`` (or under ``torchrun``): ``SHARD_DIR`` is a
  folder ``cfrec shard`` wrote; rank ``p`` reads its user part, its item part and the
  vocabularies (:func:`cfrec.distributed.sharded_input.read_rank_data`), never the whole file.
  A sharded folder has no test part: ``--split none`` (``auto`` means ``none`` here); any other
  split is refused, naming the flag.
* ``cfrec recommend MODEL --all --out DIR --nproc N`` (or under ``torchrun``): every rank loads
  the model and writes its users' lists to its own Parquet part in ``DIR``
  (:func:`cfrec.distributed.write_recommendations_sharded`).

Only rank 0 prints and writes the model.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfrec.cli._app import command_line, console, echo_json, epoch_printer, fail, load_model, say
from cfrec.cli._stages import StageLog

if TYPE_CHECKING:
    from cfrec.models.base import Recommender

#: Models trained from sharded folders (the blocked ALS and iALS, whose blocks are the folder's).
SHARDED_MODELS = ("als", "ials")

#: glibc's ``mallopt`` parameter of the size from which an allocation gets its own mapping.
_M_MMAP_THRESHOLD = -3


def return_freed_memory() -> None:
    """Let this process's large freed arrays go back to the system at once.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
    the arrays a rank builds and drops while setting up its blocks stay in its heap and add to
    its peak. A fixed threshold of 1 MB keeps every large array in its own mapping. Called in the
    processes of a distributed job only (a setting of the whole process, not of the library).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return


def in_distributed_job() -> bool:
    """Whether this process is a rank of a job of several (``WORLD_SIZE`` > 1, set by torchrun),
    told without importing torch."""
    return os.environ.get("WORLD_SIZE", "").strip() not in ("", "0", "1")


def job_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def job_world(nproc: int | None, max_restarts: int = 0) -> int:
    """The world size of this job (1: one process), or 0 after launching ``--nproc`` processes
    here running this same command (without ``--nproc``)."""
    from cfrec.distributed import world_size_from_env

    world = world_size_from_env()
    if world > 1:
        if nproc is not None and nproc != 1:
            fail(f"--nproc {nproc} inside a torchrun job of {world} processes: give one or the other")
        if job_rank() != 0:
            console.quiet = True  # only rank 0 prints
        return world
    if nproc is None or nproc == 1:
        return 1
    from cfrec.distributed.launch import launch_local, strip_nproc

    argv = command_line.get()
    launch_local(nproc, strip_nproc(list(sys.argv[1:] if argv is None else argv)), max_restarts=max_restarts)
    return 0


def distributed_world(cls: type[Recommender], nproc: int | None, max_restarts: int = 0) -> int:
    """The world size of a ``train`` job (1: a plain fit), or 0 after launching ``--nproc``
    processes here; a model without a distributed fit is refused."""
    from cfrec.distributed import BLOCKED_MODELS, world_size_from_env

    world = world_size_from_env()
    if world == 1 and (nproc is None or nproc == 1):
        return 1
    if cls.name not in BLOCKED_MODELS:
        fail(f"{cls.name} has no distributed fit (models with one: {', '.join(BLOCKED_MODELS)}); drop --nproc "
             f"or start it without torchrun")
    return job_world(nproc, max_restarts)


# ---------------------------------------------------------------------- train
def train_sharded(dataset: str, out: Path, estimator: Any, *, split: str, nproc: int | None,
                  checkpoint: Path | None, max_restarts: int, json_out: bool, seed: int | None) -> None:
    """``cfrec train SHARD_DIR``: every rank fits from its own parts; rank 0 saves the model."""
    from cfrec.data.shard import ShardSet
    from cfrec.distributed import fit_blocked, from_env, world_size_from_env
    from cfrec.distributed.sharded_input import check_processes, fingerprint, read_rank_data

    cls: type[Recommender] = type(estimator)
    shards = ShardSet.open(dataset)
    if split not in ("auto", "none"):
        fail(f"--split {split}: {dataset} is sharded data, which is trained on all its rows; give "
             f"--split none, or split the file first and shard its train part")
    if cls.name not in SHARDED_MODELS:
        fail(f"{cls.name}: a sharded folder trains {', '.join(SHARDED_MODELS)} (their blocks are the folder's); "
             f"train {cls.name} from the file")
    if shards.feedback == "implicit" and estimator.predicts_ratings:
        fail(f"{cls.name} predicts ratings and {dataset} holds interactions without ratings; use a "
             f"ranking model (ials)")
    world = world_size_from_env()
    check_processes(shards, world if world > 1 else (nproc or 1))
    world = distributed_world(cls, nproc, max_restarts)
    if world == 0:  # this process launched the job: its ranks did the work
        return
    if world > 1:
        return_freed_memory()
    stages = StageLog()
    with from_env(estimator.device) as ctx:
        with stages.stage("load"):
            data = read_rank_data(shards, ctx)
        n_interactions = data.n_interactions
        if ctx.is_main:
            say(f"training {cls.name} ({cls.__name__}) on {shards.path.name} (sharded), split none: "
                f"{n_interactions:,} ratings on {world} processes", stderr=json_out)
        with stages.stage("fit"):
            fit_blocked(estimator, data, ctx, on_epoch=epoch_printer(json_out) if ctx.is_main else None,
                        fingerprint=fingerprint(shards), checkpoint=checkpoint, release=True)
        del data
        if not ctx.is_main:
            return
        estimator.fit_info_.update({"source": str(shards.path.resolve()), "split": "none",
                                    "split_seed": 0 if seed is None else seed, "test": None})
        with stages.stage("save"):
            saved = estimator.save(out)
    seconds = stages.stages[1].seconds
    if json_out:
        echo_json({"model": cls.name, "params": estimator.get_params(), "dataset": shards.path.name,
                    "split": "none", "train_ratings": n_interactions, "fit_seconds": seconds,
                    "epochs_run": len(estimator.history_), "test": None, "processes": world,
                    "stages": stages.to_dict(), "out": str(saved.resolve())})
        return
    say(f"fitted in {seconds:.1f} s on {world} processes; no test part (sharded data): trained on every rating")
    say(f"stages: {stages.summary()}")
    say(f"saved to {saved.resolve()}")


# ---------------------------------------------------------------------- recommend --all
def recommend_all_sharded(model_dir: Path, out: Path | None, *, k: int, include_seen: bool,
                          nproc: int | None) -> None:
    """``recommend --all --out DIR`` on several processes: one Parquet part per rank."""
    from cfrec.distributed import from_env, write_recommendations_sharded
    from cfrec.distributed.scoring import part_path

    if out is None:
        fail("--all writes every user's list: give --out DIR (with --nproc, a folder of one Parquet part "
             "per process)")
    if out.suffix.lower() in (".csv", ".parquet", ".tsv"):
        fail(f"--out {out}: with --nproc (or under torchrun) --all writes a folder of one Parquet part per "
             f"process; give a folder")
    world = job_world(nproc)
    if world == 0:
        return
    model = load_model(model_dir)
    with from_env("cpu") as ctx:
        written = write_recommendations_sharded(model, out, ctx, k=k, exclude_seen=not include_seen)
        ctx.barrier()  # every part is in place before rank 0 removes another job's
        if not ctx.is_main:
            return
        keep = {part_path(out, r, world).name for r in range(world)}
        for stale in out.glob("part-*-of-*.parquet"):
            if stale.name not in keep:
                stale.unlink()
    say(f"wrote {written.total_rows:,} recommendations for {written.total_users:,} users in {world} parts "
        f"to {out.resolve()}")
