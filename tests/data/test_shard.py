"""Sharded data: parts hold every row once, in global indices, balanced; written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cfrec.data import load_dataset
from cfrec.data.io import load_ratings
from cfrec.data.shard import ShardSet, shard_dataset
from cfrec.errors import DataError


def _rows(users: Any, items: Any, values: Any, ts: Any, umap: Any, imap: Any) -> list[tuple]:
    return sorted(zip(np.asarray(umap.to_raw(users)).tolist(),
                      np.asarray(imap.to_raw(items)).tolist(),
                      np.round(values, 5).tolist(), ts.tolist(), strict=True))


def _all(shards: ShardSet, by: str) -> tuple[np.ndarray, ...]:
    got = [shards.read_part(p, by=by) for p in range(shards.parts)]  # type: ignore[arg-type]
    return tuple(np.concatenate([g[k] for g in got]) for k in range(4))


def test_ml100k_parts_hold_the_loaded_data_in_global_indices(ml100k_dir: Path,
                                                             tmp_path: Path) -> None:
    shards = shard_dataset(ml100k_dir, tmp_path / "s", 3)
    data = load_dataset(ml100k_dir)
    umap, imap = shards.user_map(), shards.item_map()
    assert umap == data.user_map and imap == data.item_map
    assert shards.rows == len(data) and shards.parts == 3
    expected = _rows(data.users, data.items, data.ratings, data.timestamps, data.user_map,
                     data.item_map)
    for by, bounds in (("user", shards.user_bounds), ("item", shards.item_bounds)):
        assert _rows(*_all(shards, by), umap, imap) == expected
        for p in range(3):
            u, i, _, _ = shards.read_part(p, by=by)  # type: ignore[arg-type]
            idx = u if by == "user" else i
            assert u.dtype == np.int32 and i.dtype == np.int32
            assert bounds[p] <= idx.min() and idx.max() < bounds[p + 1]
    for counts in (shards.user_rows, shards.item_rows):
        assert sum(counts) == len(data)
        assert max(counts) < 1.1 * len(data) / 3  # balanced by cumulative counts


@pytest.mark.parametrize("policy", ["last", "first", "mean"])
def test_text_ids_and_duplicates_resolve_as_the_loader_does(tmp_path: Path, policy: str) -> None:
    rng = np.random.default_rng(0)
    lines = ["customer,sku,stars,ts"]
    for _ in range(3000):
        u, i = int(rng.integers(0, 60)), int(rng.integers(0, 40))
        lines.append(f"c{u:03d},{'0' if i % 4 == 0 else 'p'}{i},{int(rng.integers(1, 6))},"
                     f"{int(rng.integers(0, 50))}")
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    data = load_ratings(path, duplicates=policy)  # type: ignore[arg-type]
    for chunk in (None, 200):
        shards = shard_dataset(path, tmp_path / f"s{chunk}", 4, duplicates=policy,
                               chunk_bytes=chunk, overwrite=True)
        umap, imap = shards.user_map(), shards.item_map()
        assert umap == data.user_map and imap == data.item_map
        expected = _rows(data.users, data.items, data.ratings, data.timestamps, data.user_map,
                         data.item_map)
        for by in ("user", "item"):
            assert _rows(*_all(shards, by), umap, imap) == expected


def test_logs_are_aggregated_per_pair(tmp_path: Path) -> None:
    path = tmp_path / "plays.tsv"
    path.write_text("user\ttrack\tplays\tts\n" + "".join(
        f"u{k % 7}\t{k % 5}\t{k % 3}\t{k}\n" for k in range(200)))
    data = load_ratings(path)
    shards = shard_dataset(path, tmp_path / "s", 2)
    assert shards.feedback == "implicit"
    assert data.weights is not None
    expected = _rows(data.users, data.items, data.weights, data.timestamps, data.user_map,
                     data.item_map)
    assert _rows(*_all(shards, "user"), shards.user_map(), shards.item_map()) == expected


def test_output_appears_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    from cfrec.data import shard as mod

    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,1,3\n2,1,4\n2,3,5\n")
    real = mod._write

    def broken(*args: Any) -> None:
        real(*args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mod, "_write", broken)
    with pytest.raises(OSError):
        shard_dataset(path, tmp_path / "out", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]  # no out, no temp folder
    monkeypatch.setattr(mod, "_write", real)
    shard_dataset(path, tmp_path / "out", 2)
    with pytest.raises(DataError, match="not empty"):
        shard_dataset(path, tmp_path / "out", 1)
    assert ShardSet.open(tmp_path / "out").parts == 2
    assert shard_dataset(path, tmp_path / "out", 1, overwrite=True).parts == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.csv"]


def test_bad_rows_stop_sharding_with_the_loader_error(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,1,3\n2,,4\n")
    with pytest.raises(DataError, match="line 3.*missing id"):
        shard_dataset(path, tmp_path / "out", 2)
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="not a sharded dataset"):
        ShardSet.open(tmp_path)


def test_cli_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfrec.cli import main

    path = tmp_path / "r.csv"
    path.write_text("user;item;rating\n" + "".join(f"{k % 9};{k % 4};{1 + k % 5}\n"
                                                   for k in range(100)))
    rc = main(["shard", str(path), "--parts", "2", "--out", str(tmp_path / "s"), "--json",
               "--duplicates", "mean"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["parts"] == 2 and out["rows"] == 100
    assert ShardSet.open(tmp_path / "s").duplicates == "mean"
    rc = main(["shard", str(path), "--parts", "2", "--out", str(tmp_path / "s")])
    assert rc == 1 and capsys.readouterr().err.startswith("error: ")
