#!/usr/bin/env python
"""Blocked iALS and DSGD BiasedMF across processes: time per iteration, peak memory per rank,
bytes sent, and a projection to many machines.

Steps (each its own process, so that each peak RSS is that process's alone)::

    # draw synthetic ml-10m once; write the full arrays and each rank's two parts (.npz)
    python benchmarks/distributed.py prepare --size ml-10m --parts 2 --dir /tmp/ml10m
    # one process (the plain IALS.fit on the full arrays)
    python benchmarks/distributed.py single --dir /tmp/ml10m --threads 1 --save /tmp/one.npz
    # two ranks (torchrun on one machine; each loads only its own part)
    torchrun --standalone --nproc-per-node 2 benchmarks/distributed.py ranks --dir /tmp/ml10m \\
        --threads 1 --save /tmp/two.npz
    # two "machines": two launches with one process each, meeting at 127.0.0.1:29533
    torchrun --nnodes 2 --nproc-per-node 1 --node-rank 0 --rdzv-endpoint 127.0.0.1:29533 \\
        benchmarks/distributed.py ranks --dir /tmp/ml10m --save /tmp/nodes.npz &
    torchrun --nnodes 2 --nproc-per-node 1 --node-rank 1 --rdzv-endpoint 127.0.0.1:29533 \\
        benchmarks/distributed.py ranks --dir /tmp/ml10m
    python benchmarks/distributed.py compare /tmp/one.npz /tmp/two.npz
    # the projection to 8 and 64 machines from measured figures
    python benchmarks/distributed.py project --seconds-per-interaction 5e-8
    # BiasedMF by stratified blocks (DSGD): the same steps with --model mf (epochs: --iterations)
    python benchmarks/distributed.py single --model mf --dir /tmp/ml10m --threads 1 --iterations 4
    torchrun --standalone --nproc-per-node 2 benchmarks/distributed.py ranks --model mf --dir /tmp/ml10m \
        --threads 1 --iterations 4
    # DSGD BiasedMF on ML-100K's u1..u5: test RMSE of one process and of the ranks on each fold
    torchrun --standalone --nproc-per-node 2 benchmarks/distributed.py folds

Peak memory of each rank of the CLI on sharded input against one process on the file (each
process prints its own peak)::

    python benchmarks/distributed.py csv --size ml-25m --out FILE
    cfrec shard FILE --parts 2 --out /tmp/shards
    python benchmarks/distributed.py cli -- train FILE --model ials --out /tmp/one
    torchrun --standalone --nproc-per-node 2 benchmarks/distributed.py cli -- \
        train /tmp/shards --model ials --out /tmp/two

Every run prints one JSON line per process: seconds of each iteration, the median of the
iterations after the first, peak RSS (``ru_maxrss``), bytes sent per iteration (ranks) and the
1-minute load average at the end (the machine may be shared: compare runs made back to back).
The parts written by ``prepare`` stand for the files a sharding step writes: a rank reads its
user block's and its item block's interactions and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _model(args: argparse.Namespace) -> Any:
    from cfrec.models.ials import IALS

    if args.model == "mf":
        from cfrec.models.mf import BiasedMF

        return BiasedMF(n_factors=args.factors, epochs=args.iterations, threads=args.threads, device="cpu")
    return IALS(n_factors=args.factors, iterations=args.iterations, threads=args.threads, device="cpu")


class _CpuClock:
    """CPU seconds of this process in each iteration (``on_epoch``: called after each)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def __call__(self, _: dict[str, Any]) -> None:
        self.marks.append(time.process_time())

    def per_iteration(self) -> list[float]:
        return [round(b - a, 3) for a, b in zip(self.marks[:-1], self.marks[1:], strict=True)]


def _report(record: dict[str, Any], history: list[dict[str, Any]], clock: _CpuClock) -> None:
    secs = [float(r["seconds"]) for r in history]
    cpu = clock.per_iteration()
    record.update(iteration_seconds=[round(s, 3) for s in secs],
                  iteration_cpu_seconds_after_first=cpu,
                  median_iteration_cpu_seconds=round(float(np.median(cpu)), 3) if cpu else None,
                  median_iteration_seconds=round(float(np.median(secs[1:] if len(secs) > 1 else secs)), 3),
                  peak_rss_gb=round(_rss_gb(), 3), load_avg_1min=os.getloadavg()[0])
    print(json.dumps(record), flush=True)


def prepare(args: argparse.Namespace) -> None:
    from cfrec.data import synthetic_like
    from cfrec.distributed import rank_data

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = synthetic_like(args.size, seed=0).compact()
    np.savez(folder / "full.npz", users=data.users, items=data.items, ratings=data.ratings,
             n=np.array([data.n_users, data.n_items]))
    for rank in range(args.parts):
        part = rank_data(data, rank, args.parts)
        np.savez(folder / f"rank{rank}-of-{args.parts}.npz",
                 user_bounds=part.blocks.user_bounds, item_bounds=part.blocks.item_bounds,
                 u_users=part.by_user.users, u_items=part.by_user.items, u_ratings=part.by_user.ratings,
                 i_users=part.by_item.users, i_items=part.by_item.items, i_ratings=part.by_item.ratings,
                 n=np.array([len(data)]))
    print(json.dumps({"prepared": args.size, "ratings": len(data), "users": data.n_users,
                      "items": data.n_items, "parts": args.parts, "dir": str(folder)}))


def csv(args: argparse.Namespace) -> None:
    """Synthetic data written as a MovieLens-style ratings file (``userId,movieId,rating,timestamp``)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from cfrec.data import synthetic_like

    data = synthetic_like(args.size, seed=0)
    table = pa.table({"userId": np.asarray(data.user_map.to_raw(data.users)),
                      "movieId": np.asarray(data.item_map.to_raw(data.items)),
                      "rating": data.ratings.astype(np.float64), "timestamp": data.timestamps})
    pacsv.write_csv(table, args.out, pacsv.WriteOptions(quoting_style="none"))
    print(json.dumps({"written": args.out, "ratings": len(data), "users": data.n_users, "items": data.n_items}))


def single(args: argparse.Namespace) -> None:
    from cfrec.data import Interactions
    from cfrec.data.idmap import IdMap

    with np.load(Path(args.dir) / "full.npz") as z:
        n_users, n_items = (int(x) for x in z["n"])
        data = Interactions(z["users"], z["items"], z["ratings"], np.zeros(len(z["users"]), np.int64),
                            IdMap.from_sorted_unique(np.arange(n_users)),
                            IdMap.from_sorted_unique(np.arange(n_items)), name=args.dir)
    clock = _CpuClock()
    loaded = round(_rss_gb(), 3)
    model = _model(args).fit(data, on_epoch=clock)
    _report({"mode": "single", "model": args.model, "threads": args.threads, "factors": args.factors, "rss_before_fit_gb": loaded},
            model.history_, clock)
    if args.save:
        np.savez(args.save, users=model.user_factors_, items=model.item_factors_)


def ranks(args: argparse.Namespace) -> None:
    from cfrec.data.idmap import IdMap
    from cfrec.distributed import Blocks, Part, RankData, fit_blocked, from_env, needed_rows

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    with np.load(Path(args.dir) / f"rank{rank}-of-{world}.npz") as z:
        blocks = Blocks(z["user_bounds"], z["item_bounds"])
        data = RankData(rank, blocks, Part(z["u_users"], z["u_items"], z["u_ratings"]),
                        Part(z["i_users"], z["i_items"], z["i_ratings"]),
                        IdMap.from_sorted_unique(np.arange(blocks.n_users)),
                        IdMap.from_sorted_unique(np.arange(blocks.n_items)), (1.0, 5.0), False, int(z["n"][0]),
                        args.dir)
    need_items, need_users = needed_rows(data)
    with from_env("cpu") as ctx:
        clock = _CpuClock()
        loaded = round(_rss_gb(), 3)
        model = fit_blocked(_model(args), data, ctx, on_epoch=clock)
        k = args.factors
        bound = 2 * (blocks.n_users + blocks.n_items) * k * 4
        info = model.fit_info_["distributed"]
        sent = [int(r["bytes_sent"]) for r in model.history_]
        _report({"mode": "ranks", "model": args.model, "rank": ctx.rank, "world": ctx.world_size, "threads": args.threads,
                 "factors": k, "rss_before_fit_gb": loaded, "bytes_sent_per_iteration": sent[-1],
                 "bytes_sent_per_iteration_all_ranks": info["bytes_sent_per_iteration_all_ranks"],
                 "bound_2x_users_plus_items_k_4B": bound,
                 # what an all-to-all of only the rows this rank's interactions name would receive
                 "needed_rows_items_users": [need_items, need_users],
                 "all_to_all_bytes_received_per_iteration": (need_items + need_users) * (k * 4 + 4),
                 # DSGD: this rank's seconds in the per-rating loop each epoch (the rest is waiting
                 # for the slowest block of a sub-epoch, and the ring)
                 "compute_seconds": [round(float(r["compute_seconds"]), 3) for r in model.history_
                                     if "compute_seconds" in r]},
                model.history_, clock)
        if args.save and ctx.is_main:
            np.savez(args.save, users=model.user_factors_, items=model.item_factors_)


def folds(args: argparse.Namespace) -> None:
    """DSGD BiasedMF and the single-process fit on ML-100K's u1..u5 (each rank fits its share;
    rank 0 also fits one process and prints both test RMSEs of each fold)."""
    from cfrec.data import load_dataset
    from cfrec.distributed import fit_blocked, from_env, rank_data
    from cfrec.evaluation.protocols import summarize_test
    from cfrec.models.mf import BiasedMF

    home = Path(os.environ.get("CFREC_DATA_HOME", "")) / "ml-100k"
    columns = ["user_id", "item_id", "rating", "timestamp"]
    rows = []
    with from_env("cpu") as ctx:
        for fold in args.folds.split(","):
            train = load_dataset(home / f"{fold}.base", columns=columns)
            dsgd = fit_blocked(BiasedMF(device="cpu"), rank_data(train, ctx.rank, ctx.world_size), ctx)
            if ctx.is_main:
                test = load_dataset(home / f"{fold}.test", columns=columns)
                one = summarize_test(BiasedMF(device="cpu").fit(train), test)["rmse"]
                two = summarize_test(dsgd, test)["rmse"]
                rows.append({"fold": fold, "one_process_rmse": round(one, 4), "ranks_rmse": round(two, 4),
                             "difference": round(two - one, 4)})
                print(json.dumps(rows[-1]), flush=True)
        if ctx.is_main:
            print(json.dumps({"world": ctx.world_size, "largest_abs_difference":
                              max(abs(r["difference"]) for r in rows), "load_avg_1min": os.getloadavg()[0]}))


def cli(args: argparse.Namespace) -> None:
    """A ``cfrec`` command run in this process (under torchrun: one rank of it), then one JSON
    line with this process's rank and peak RSS, so each rank's peak is its own."""
    from cfrec.cli import main as cfrec_main

    start = time.perf_counter()
    code = cfrec_main(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
    print(json.dumps({"mode": "cli", "argv": args.argv, "rank": int(os.environ.get("RANK", "0")),
                      "world": int(os.environ.get("WORLD_SIZE", "1")), "exit": code,
                      "seconds": round(time.perf_counter() - start, 1), "peak_rss_gb": round(_rss_gb(), 3),
                      "load_avg_1min": os.getloadavg()[0]}), file=sys.stderr, flush=True)


def compare(args: argparse.Namespace) -> None:
    with np.load(args.a) as a, np.load(args.b) as b:
        out = {side: float(np.abs(a[side] - b[side]).max() / np.abs(a[side]).max()) for side in ("users", "items")}
    print(json.dumps({"max_abs_difference_relative_to_max": out}))


def project(args: argparse.Namespace) -> None:
    """Iteration time and memory per machine of blocked iALS at scale, from measured rates.

    Assumptions (printed with the table): compute splits evenly over the machines (blocks
    balanced by interactions) at the measured seconds per interaction of one iteration on one
    core (``--seconds-per-interaction``) times ``--cores-per-machine`` cores working in parallel;
    the network is ``--gbit`` Gbit/s per machine at ``--efficiency`` of line rate, not
    overlapped with compute. Two exchanges are costed: the all-gather cfrec does (every machine
    receives every other block's rows: ``(users + items) x k x 4 x (M - 1) / M`` bytes) and an
    all-to-all of only the rows a block's interactions name (at most ``interactions / M`` rows
    of each side, and never more than the side has). Memory per machine: its two parts of the
    interactions at ``--bytes-per-interaction`` (measured: a rank's RSS above an empty process
    over the interactions it holds) plus, for the all-gather, the whole factor tables.
    """
    rows = []
    for total in (1e9, 1e10):
        users, items = total / args.per_user, total / args.per_item
        for machines in (8, 64):
            compute = total * args.seconds_per_interaction / (machines * args.cores_per_machine)
            rate = args.gbit * 1e9 * args.efficiency / 8  # bytes a second
            gather_bytes = (users + items) * args.factors * 4 * (machines - 1) / machines
            needed = (min(users, total / machines) + min(items, total / machines)) * (machines - 1) / machines
            a2a_bytes = needed * (args.factors * 4 + 4)  # rows and their indices
            held = 2 * total / machines * args.bytes_per_interaction
            own_rows = (users + items) / machines * args.factors * 4
            rows.append({
                "interactions": f"{total:.0e}", "machines": machines, "users": int(users), "items": int(items),
                "compute_s": round(compute, 1),
                "all_gather_network_s": round(gather_bytes / rate, 1),
                "all_gather_iteration_s": round(compute + gather_bytes / rate, 1),
                "all_gather_memory_gb": round((held + (users + items) * args.factors * 4 + 3 * own_rows) / 1e9, 1),
                "all_to_all_network_s": round(a2a_bytes / rate, 1),
                "all_to_all_iteration_s": round(compute + a2a_bytes / rate, 1),
                "all_to_all_memory_gb": round((held + needed * args.factors * 4 + 3 * own_rows) / 1e9, 1),
            })
    print(json.dumps({"assumptions": {k: v for k, v in vars(args).items() if k != "func"}, "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--size", default="ml-10m")
    p.add_argument("--parts", type=int, default=2)
    p.add_argument("--dir", required=True)
    p.set_defaults(func=prepare)
    p = sub.add_parser("csv")
    p.add_argument("--size", default="ml-10m")
    p.add_argument("--out", required=True)
    p.set_defaults(func=csv)
    for name, fn in (("single", single), ("ranks", ranks)):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True)
        p.add_argument("--factors", type=int, default=64)
        p.add_argument("--iterations", type=int, default=4)
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--save", default=None)
        p.add_argument("--model", choices=("ials", "mf"), default="ials")
        p.set_defaults(func=fn)
    p = sub.add_parser("folds")
    p.add_argument("--folds", default="u1,u2,u3,u4,u5")
    p.set_defaults(func=folds)
    p = sub.add_parser("cli", help="run a cfrec command here and report this process's peak RSS")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cli)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=compare)
    p = sub.add_parser("project")
    p.add_argument("--seconds-per-interaction", type=float, required=True,
                   help="measured seconds of one iteration per interaction on one machine")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--per-user", type=float, default=150.0, help="interactions per user")
    p.add_argument("--per-item", type=float, default=20000.0, help="interactions per item")
    p.add_argument("--gbit", type=float, default=10.0)
    p.add_argument("--efficiency", type=float, default=0.7)
    p.add_argument("--bytes-per-interaction", type=float, required=True,
                   help="measured bytes a rank holds per interaction of its parts")
    p.add_argument("--cores-per-machine", type=int, default=16)
    p.set_defaults(func=project)
    args = ap.parse_args()
    start = time.perf_counter()
    args.func(args)
    if args.func in (prepare,):
        print(json.dumps({"seconds": round(time.perf_counter() - start, 1)}), file=sys.stderr)


if __name__ == "__main__":
    main()
