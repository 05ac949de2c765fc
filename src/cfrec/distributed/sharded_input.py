"""A rank's share of a blocked fit read straight from ``cfrec shard`` output.

A sharded folder (:class:`~cfrec.data.shard.ShardSet`) holds ``P`` user-block and ``P``
item-block Parquet parts in global indices, the id vocabularies and the block boundaries.
Rank ``p`` of a ``P``-process job reads user part ``p`` and item part ``p`` and the
vocabularies: never another rank's rows, never the whole file. The blocks are the folder's
(cut by ``cfrec shard`` with balanced row counts), so the number of processes must equal its
number of parts.

Only three columns of a part are read (user, item, value: 12 bytes a row); the time and
file-row columns are read only when the part holds a repeated ``(user, item)`` pair, which is
then resolved by the folder's duplicates policy as :meth:`ShardSet.read_part` does. The
vocabularies are read on every rank: one entry per user and item, less than the factor
tables every rank holds anyway.

The parts hold every row of the file: a sharded folder has no test part. A model fitted from
it equals the one-process fit on all the file's rows (``--split none``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from cfrec.data.idmap import INDEX_DTYPE
from cfrec.data.interactions import RATING_DTYPE
from cfrec.data.io.build import _release_arrow_memory
from cfrec.data.shard import META, ShardSet, Side
from cfrec.distributed.blocks import Blocks, Part, RankData
from cfrec.distributed.runtime import Context
from cfrec.errors import CfrecError


def fingerprint(shards: ShardSet) -> str:
    """SHA-256 of the folder's description (sizes, blocks, row counts, source): what a
    checkpoint of a job on it records, so another folder's checkpoints are refused."""
    return hashlib.sha256((shards.path / META).read_bytes()).hexdigest()


def check_processes(shards: ShardSet, world: int) -> None:
    """One process per part, and no empty block (a rank must own some users and items)."""
    if world != shards.parts:
        raise CfrecError(f"{shards.path} holds {shards.parts} parts: train it on {shards.parts} processes "
                         f"(--nproc {shards.parts}, or torchrun with {shards.parts}), or shard the file "
                         f"again with --parts {world}")
    for side, bounds in (("user", shards.user_bounds), ("item", shards.item_bounds)):
        sizes = np.diff(np.asarray(bounds))
        if (sizes <= 0).any():
            raise CfrecError(f"{shards.path}: {side} block {int(np.argmax(sizes <= 0))} is empty (the data has "
                             f"too few {side}s for {shards.parts} parts); shard it with fewer --parts")


def _columns(path: Path, names: tuple[str, ...], dtypes: tuple[type, ...]) -> list[np.ndarray]:
    """Columns of a part, read one row group at a time into arrays of their final type (the
    Parquet reader's buffers stay one row group long)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as file:
        n = file.metadata.num_rows
        out = [np.empty(n, dtype=dt) for dt in dtypes]
        at = 0
        for g in range(file.num_row_groups):
            table = file.read_row_group(g, columns=list(names))
            rows = table.num_rows
            for j, arr in enumerate(out):
                arr[at:at + rows] = table.column(j).to_numpy()
            at += rows
            del table
    if at != n:
        raise CfrecError(f"{path}: read {at} rows, its footer says {n}; shard the file again")
    _release_arrow_memory()
    return out


def _has_repeats(users: np.ndarray, items: np.ndarray, n_items: int) -> bool:
    key = users.astype(np.int64) * max(n_items, 1) + items
    key.sort()
    return bool(len(key) > 1 and np.any(key[1:] == key[:-1]))


def read_part(shards: ShardSet, p: int, by: Side) -> Part:
    """Part ``p`` of the user blocks (``by="user"``) or item blocks as a :class:`Part`
    (int32 global indices, float32 values; implicit data: ratings of one and the weights)."""
    path = shards.part_path(p, by)
    users, items, values = _columns(path, ("user", "item", "value"), (INDEX_DTYPE, INDEX_DTYPE, RATING_DTYPE))
    if _has_repeats(users, items, shards.n_items):
        del users, items, values  # rare: resolve them by the folder's policy, reading every column
        users, items, values, _ = shards.read_part(p, by)
    if shards.feedback == "implicit":  # ratings are one on every row: a view, not an array
        return Part(users, items, np.broadcast_to(np.ones(1, RATING_DTYPE), len(users)), values)
    return Part(users, items, values)


def read_rank_data(shards: ShardSet | str | os.PathLike[str], ctx: Context) -> RankData:
    """This rank's :class:`RankData` from a sharded folder: its user part, its item part, the
    vocabularies and the folder's blocks (every rank calls it: the row total is summed)."""
    if not isinstance(shards, ShardSet):
        shards = ShardSet.open(shards)
    check_processes(shards, ctx.world_size)
    blocks = Blocks(np.asarray(shards.user_bounds, dtype=np.int64), np.asarray(shards.item_bounds, dtype=np.int64))
    by_user = read_part(shards, ctx.rank, "user")
    by_item = read_part(shards, ctx.rank, "item")
    user_map, item_map = shards.user_map(), shards.item_map()
    if (len(user_map), len(item_map)) != (shards.n_users, shards.n_items):
        raise CfrecError(f"{shards.path}: the vocabularies hold {len(user_map)} users and {len(item_map)} items, "
                         f"{META} says {shards.n_users} and {shards.n_items}; shard the file again")
    total = int(ctx.all_reduce_sum([len(by_user)], op="setup")[0])  # after repeated pairs resolved
    return RankData(rank=ctx.rank, blocks=blocks, by_user=by_user, by_item=by_item, user_map=user_map,
                    item_map=item_map, rating_scale=shards.rating_scale,
                    implicit=shards.feedback == "implicit", n_interactions=total, name=shards.path.name,
                    unique_pairs=True)
