"""Sharded data: a rating or log file split into user-block and item-block Parquet parts.

:func:`shard_dataset` streams a file twice, in chunks, and never holds it whole: the first pass
builds the id vocabularies and each id's interaction count; the second writes every row to
the part of its user block and to the part of its item block. Blocks are contiguous ranges
of the sorted vocabularies, cut where the cumulative counts reach ``k / P`` of all rows, so
the parts hold about as many rows each. Indices in the parts are GLOBAL (positions in the
vocabularies), so a process that reads only its parts still agrees with every other one.

:class:`ShardSet` reads it back: ``ShardSet.open(dir)`` gives the vocabularies and the part
boundaries, and :meth:`ShardSet.read_part` one part as int32 users and items, float32 values
and int64 times. Repeated ``(user, item)`` rows lie in one user part (and one item part), so
they are resolved when a part is read, by the policy given when sharding.

The layout is described in ``docs/data-files.md`` ("Sharded data").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cfrec.data.idmap import INDEX_DTYPE, IdMap
from cfrec.data.interactions import IMPLICIT_SCALE, RATING_DTYPE, TIME_DTYPE
from cfrec.data.io.build import _release_arrow_memory
from cfrec.data.io.load import _Plan, _plan
from cfrec.data.io.readers import UseAnotherParser
from cfrec.data.options import DUPLICATE_POLICIES, check_choice
from cfrec.errors import DataError

FORMAT = "cfrec-shards"
VERSION = 1
META = "shards.json"
Side = Literal["user", "item"]


@dataclass(frozen=True)
class ShardSet:
    """A sharded dataset on disk: vocabularies, part boundaries and counts.

    Attributes
    ----------
    path
        The folder.
    parts
        P, the number of user blocks (and of item blocks).
    user_bounds, item_bounds
        P + 1 global indices: user block ``p`` holds users ``user_bounds[p]`` to
        ``user_bounds[p + 1] - 1`` (the same for items).
    user_rows, item_rows
        Rows (before duplicates are resolved) in each user part and each item part.
    n_users, n_items, rows
        Vocabulary sizes and rows written.
    feedback
        ``"explicit"`` (values are ratings) or ``"implicit"`` (values are weights).
    rating_scale
        The scale the ratings were checked against (``(0, 1)`` for interactions).
    duplicates
        The policy applied to repeated ``(user, item)`` rows when a part is read.
    """

    path: Path
    parts: int
    user_bounds: tuple[int, ...]
    item_bounds: tuple[int, ...]
    user_rows: tuple[int, ...]
    item_rows: tuple[int, ...]
    n_users: int
    n_items: int
    rows: int
    feedback: str
    rating_scale: tuple[float, float]
    duplicates: str

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ShardSet:
        """Read a sharded folder's description (the parts are read by :meth:`read_part`)."""
        folder = Path(path).expanduser()
        meta_path = folder / META
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"not a sharded dataset (no {META})", path=folder) from None
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable {META} ({exc})", path=meta_path) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"not a sharded dataset (format is not {FORMAT!r})", path=meta_path)
        if meta.get("version") != VERSION:
            raise DataError(f"sharded dataset version {meta.get('version')!r}; this cfrec reads "
                            f"version {VERSION}", path=meta_path)
        try:
            return cls(folder, int(meta["parts"]), tuple(map(int, meta["user_bounds"])),
                       tuple(map(int, meta["item_bounds"])), tuple(map(int, meta["user_rows"])),
                       tuple(map(int, meta["item_rows"])), int(meta["n_users"]),
                       int(meta["n_items"]), int(meta["rows"]), str(meta["feedback"]),
                       (float(meta["rating_scale"][0]), float(meta["rating_scale"][1])),
                       str(meta["duplicates"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(f"damaged {META} ({type(exc).__name__}: {exc})",
                            path=meta_path) from exc

    def user_map(self) -> IdMap:
        """The user vocabulary: global user index -> raw id."""
        return _read_vocab(self.path / "users.parquet")

    def item_map(self) -> IdMap:
        """The item vocabulary: global item index -> raw id."""
        return _read_vocab(self.path / "items.parquet")

    def part_path(self, p: int, by: Side = "user") -> Path:
        check_choice("by", by, ("user", "item"))
        if not 0 <= p < self.parts:
            raise ValueError(f"part {p} is out of range: this dataset has {self.parts} parts")
        return self.path / f"by_{by}" / f"part-{p:05d}.parquet"

    def read_part(self, p: int, by: Side = "user") -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                             np.ndarray]:
        """Part ``p`` of the user blocks (``by="user"``) or item blocks, duplicates resolved.

        Returns ``(users int32, items int32, values float32, timestamps int64)`` in global
        indices, in file order: ratings, or for interactions the weight of each pair.
        """
        import pyarrow.parquet as pq

        table = pq.read_table(self.part_path(p, by))
        cols = [table.column(c).to_numpy() for c in ("user", "item", "value", "timestamp", "row")]
        del table
        users, items, values, ts, rows = cols
        users, items, values, ts = _resolve(users.astype(INDEX_DTYPE, copy=False),
                                            items.astype(INDEX_DTYPE, copy=False),
                                            values.astype(RATING_DTYPE, copy=False),
                                            ts.astype(TIME_DTYPE, copy=False), rows,
                                            self.duplicates, self.n_items)
        return users, items, values, ts


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder :func:`shard_dataset` wrote (it holds ``shards.json``)."""
    folder = Path(path).expanduser()
    return folder.is_dir() and (folder / META).is_file()


def _read_vocab(path: Path) -> IdMap:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pq.read_table(path).column("id")
    if pa.types.is_integer(ids.type):
        return IdMap.from_sorted_unique(ids.to_numpy().astype(np.int64))
    return IdMap.encode(ids.combine_chunks())[0]


def _resolve(users: np.ndarray, items: np.ndarray, values: np.ndarray, ts: np.ndarray,
             rows: np.ndarray, policy: str, n_items: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Repeated pairs of one part resolved as the loader does: ``last``/``first`` by time (file
    order on ties), ``mean`` (mean value, latest time), ``aggregate`` (sum, latest time; the
    pair's first row); rows come back in file order."""
    order = np.argsort(rows, kind="stable")  # file order
    users, items, values, ts, rows = (a[order] for a in (users, items, values, ts, rows))
    key = users.astype(np.int64) * max(n_items, 1) + items
    by_pair = np.lexsort((np.arange(len(key)), ts, key)) if policy in ("last", "first") else (
        np.argsort(key, kind="stable"))
    k = key[by_pair]
    starts = np.r_[True, k[1:] != k[:-1]] if len(k) else np.zeros(0, bool)
    if starts.all():
        return users, items, values, ts
    if policy == "error":
        j = int(np.flatnonzero(~starts)[0])
        raise DataError(f"duplicate rating for user index {int(users[by_pair[j]])}, item index "
                        f"{int(items[by_pair[j]])} (file rows {int(rows[by_pair[j - 1]]) + 1} "
                        f"and {int(rows[by_pair[j]]) + 1})", field="user/item",
                        expected="one rating per (user, item) pair")
    ends = np.r_[k[1:] != k[:-1], True]
    first_at = np.flatnonzero(starts)
    if policy == "last":
        keep = by_pair[ends]
    elif policy == "first":
        keep = by_pair[starts]
    else:  # mean / aggregate: the pair's first row in file order carries the result
        keep = np.minimum.reduceat(by_pair, first_at)
        sums = np.add.reduceat(values[by_pair].astype(np.float64), first_at)
        if policy == "mean":
            sums /= np.diff(np.r_[first_at, len(k)])
        values = values.copy()
        values[keep] = sums.astype(values.dtype)
        ts = ts.copy()
        ts[keep] = np.maximum.reduceat(ts[by_pair], first_at)
    keep = np.sort(keep)
    return users[keep], items[keep], values[keep], ts[keep]


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


class _Counts:
    """Distinct ids and their row counts, merged chunk by chunk (numbers or text)."""

    def __init__(self) -> None:
        self.ints: tuple[np.ndarray, np.ndarray] | None = None
        self.text: dict[str, Any] | None = None  # {"ids": pa.Array, "counts": np.ndarray}
        self.numeric = True

    def add(self, raw: Any) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(raw, np.ndarray) and self.numeric:
            ids, counts = np.unique(raw, return_counts=True)
            self.ints = (ids, counts) if self.ints is None else _merge(self.ints, (ids, counts))
            return
        if self.numeric:  # the first text chunk: every id is read as text from now on
            self.numeric = False
            if self.ints is not None:
                ids, counts = self.ints
                self.text = {"ids": pc.cast(pa.array(ids), pa.string()), "counts": counts}
            self.ints = None
        arr = raw if not isinstance(raw, np.ndarray) else pc.cast(pa.array(raw), pa.string())
        vc = pc.value_counts(arr.cast(pa.string()))
        ids, counts = vc.field("values"), vc.field("counts").to_numpy().astype(np.int64)
        if self.text is not None:
            ids = pa.concat_arrays([self.text["ids"], ids])
            counts = np.concatenate([self.text["counts"], counts])
            enc = pc.dictionary_encode(ids)
            counts = np.bincount(enc.indices.to_numpy(), weights=counts,
                                 minlength=len(enc.dictionary)).astype(np.int64)
            ids = enc.dictionary
        self.text = {"ids": ids, "counts": counts}

    def vocabulary(self) -> tuple[Any, np.ndarray]:
        """(sorted distinct ids, count of each): int64 numpy, or a pyarrow string array."""
        import pyarrow.compute as pc

        if self.numeric:
            if self.ints is None:
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            return self.ints[0].astype(np.int64), self.ints[1]
        assert self.text is not None
        order = pc.sort_indices(self.text["ids"])
        return self.text["ids"].take(order), self.text["counts"][order.to_numpy()]


def _merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([a[0], b[0]])
    uniq, inv = np.unique(ids, return_inverse=True)
    return uniq, np.bincount(inv, weights=np.concatenate([a[1], b[1]]),
                             minlength=len(uniq)).astype(np.int64)


def _bounds(counts: np.ndarray, parts: int) -> np.ndarray:
    """P + 1 cut points over the vocabulary so each block holds about 1/P of the rows."""
    total = np.cumsum(counts)
    if not len(total):
        return np.zeros(parts + 1, dtype=np.int64)
    targets = total[-1] * np.arange(1, parts) / parts
    cuts = np.searchsorted(total, targets, side="left") + 1
    cuts = np.minimum(np.maximum.accumulate(cuts), len(counts))
    return np.r_[0, cuts, len(counts)].astype(np.int64)


def _lookup(vocab: Any, raw: Any) -> np.ndarray:
    """Global indices of a chunk's raw ids in a sorted vocabulary."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(vocab, np.ndarray):  # every id of the file is a plain integer
        return np.searchsorted(vocab, raw).astype(INDEX_DTYPE)
    arr = pc.cast(pa.array(raw), pa.string()) if isinstance(raw, np.ndarray) else raw
    return pc.index_in(arr, value_set=vocab).to_numpy(zero_copy_only=False).astype(INDEX_DTYPE)


def _run(plan: _Plan, engine: str, stats: dict[str, int]) -> Iterator[tuple[Any, Any, Any, Any]]:
    """The checked chunks of one pass; ``stats`` gets the rows read and skipped at its end."""
    cols = plan.columns()
    for batch in plan.reader.batches(plan.roles, plan.chunk_bytes, engine):
        checked = cols.check(batch)
        if checked is not None:
            yield checked
    if cols.rows == cols.empty:
        raise DataError("no rows after the header" if plan.reader.has_header else "no rows",
                        path=plan.path)
    stats.update(rows=cols.rows, kept=cols.kept, skipped=cols.bad + plan.reader.ragged_skipped)


def shard_dataset(path: str | os.PathLike[str], out: str | os.PathLike[str], parts: int, *,
                  duplicates: str = "last", overwrite: bool = False,
                  **options: Any) -> ShardSet:
    """Split a rating or log file (any format :func:`~cfrec.data.load_ratings` reads, or a
    MovieLens folder) into ``parts`` user-block and item-block Parquet parts under ``out``.

    Two streaming passes, in chunks: memory holds the vocabularies and one chunk, not the file.
    ``out`` appears only when everything was written (a temporary folder beside it is renamed);
    an existing ``out`` is replaced only with ``overwrite``. ``options`` are
    :func:`~cfrec.data.load_ratings`'s (``sep``, ``rating_scale``, ``on_bad_rows`` ...).
    """
    if not isinstance(parts, int) or parts < 1:
        raise DataError(f"parts must be a whole number >= 1, got {parts!r}", field="parts",
                        value=parts, expected="an integer >= 1")
    duplicates = check_choice("duplicates", duplicates, DUPLICATE_POLICIES)
    src = Path(path).expanduser()
    options = dict(options)
    if src.is_dir():
        src, options = _release_file(src, options)
    target = Path(out).expanduser()
    if target.exists() and not overwrite and any(target.iterdir()):
        raise DataError("exists and is not empty; choose another folder or pass overwrite=True "
                        "(--overwrite)", path=target)
    plan = _plan(src, **options)
    kind = plan.kind
    # pass 1: vocabularies and counts
    engine = ""
    stats: dict[str, int] = {}
    for k, engine in enumerate(plan.reader.engines()):
        users, items = _Counts(), _Counts()
        values_min, values_max = np.inf, -np.inf
        try:
            for u, i, v, _ in _run(plan, engine, stats):
                users.add(u)
                items.add(i)
                if v is not None and len(v):
                    values_min, values_max = min(values_min, float(v.min())), max(
                        values_max, float(v.max()))
            break
        except UseAnotherParser:
            if k == len(plan.reader.engines()) - 1:
                raise
    user_vocab, user_counts = users.vocabulary()
    item_vocab, item_counts = items.vocabulary()
    del users, items
    _release_arrow_memory()
    if kind == "explicit":
        scale = plan.scale if plan.scale is not None else (values_min, values_max)
    else:
        scale = IMPLICIT_SCALE
    ub, ib = _bounds(user_counts, parts), _bounds(item_counts, parts)
    user_rows = [int(user_counts[ub[p]:ub[p + 1]].sum()) for p in range(parts)]
    item_rows = [int(item_counts[ib[p]:ib[p + 1]].sum()) for p in range(parts)]

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)
    try:
        _write(plan, engine, tmp, user_vocab, item_vocab, ub, ib, kind)
        meta = {"format": FORMAT, "version": VERSION, "parts": parts,
                "user_bounds": ub.tolist(), "item_bounds": ib.tolist(),
                "user_rows": user_rows, "item_rows": item_rows,
                "n_users": len(user_vocab), "n_items": len(item_vocab),
                "rows": int(user_counts.sum()), "feedback": kind,
                "rating_scale": [float(scale[0]), float(scale[1])],
                "duplicates": duplicates if kind == "explicit" else "aggregate",
                "source": str(src), "columns": {r: c for r, c in plan.roles.items()},
                "skipped_rows": stats.get("skipped", 0)}
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShardSet.open(target)


def _write(plan: _Plan, engine: str, tmp: Path, user_vocab: Any, item_vocab: Any,
           ub: np.ndarray, ib: np.ndarray, kind: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vocab_ids = (pa.array(user_vocab) if isinstance(user_vocab, np.ndarray) else user_vocab)
    pq.write_table(pa.table({"id": vocab_ids}), tmp / "users.parquet")
    vocab_ids = (pa.array(item_vocab) if isinstance(item_vocab, np.ndarray) else item_vocab)
    pq.write_table(pa.table({"id": vocab_ids}), tmp / "items.parquet")
    schema = pa.schema([("user", pa.int32()), ("item", pa.int32()), ("value", pa.float32()),
                        ("timestamp", pa.int64()), ("row", pa.int64())])
    parts = len(ub) - 1
    writers: dict[str, list[Any]] = {}
    for side in ("user", "item"):
        (tmp / f"by_{side}").mkdir()
        writers[side] = [pq.ParquetWriter(tmp / f"by_{side}" / f"part-{p:05d}.parquet", schema)
                         for p in range(parts)]
    row = 0
    try:
        for u_raw, i_raw, v, ts in _run(plan, engine, {}):
            u = _lookup(user_vocab, u_raw)
            i = _lookup(item_vocab, i_raw)
            n = len(u)
            values = (v.astype(RATING_DTYPE) if v is not None
                      else np.ones(n, dtype=RATING_DTYPE))
            times = ts if ts is not None else np.zeros(n, dtype=TIME_DTYPE)
            rows = np.arange(row, row + n, dtype=np.int64)
            row += n
            for side, idx, bounds in (("user", u, ub), ("item", i, ib)):
                block = np.searchsorted(bounds, idx, side="right") - 1
                order = np.argsort(block, kind="stable")
                cuts = np.searchsorted(block[order], np.arange(parts + 1))
                for p in range(parts):
                    sel = order[cuts[p]:cuts[p + 1]]
                    if len(sel):
                        writers[side][p].write_table(pa.table(
                            [u[sel], i[sel], values[sel], times[sel], rows[sel]], schema=schema))
    finally:
        for side in writers:
            for w in writers[side]:
                w.close()


def _replace(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target`` (an old ``target`` is removed after)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _release_file(folder: Path, options: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The ratings file of a MovieLens release folder, with the release's rating scale."""
    from cfrec.data.movielens import MOVIELENS, release_ratings_file

    name = release_ratings_file(folder)
    if name is None:
        raise DataError("is a folder but not a MovieLens release; give a ratings file",
                        path=folder)
    spec = MOVIELENS.get(folder.name)
    if spec is not None and options.get("rating_scale") is None:
        options["rating_scale"] = spec.rating_scale
    return folder / name, options
