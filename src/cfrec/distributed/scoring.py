"""Every user's top-k list, scored by users across the ranks of a job.

Each rank loads the same fitted model, takes a contiguous range of its users (about ``1/P`` of
them, in vocabulary order) and writes their lists to its own Parquet part
(``part-{rank:05d}-of-{P:05d}.parquet``, written beside and renamed when complete, as
:func:`~cfrec.models.export.write_recommendations` does for one file). Read in part order, the
parts hold the rows one process writes for every user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfrec.distributed.runtime import Context


@dataclass(frozen=True)
class PartWritten:
    """This rank's part and the job's totals (summed over the ranks)."""

    path: Path
    rows: int
    users: int
    total_rows: int
    total_users: int


def user_range(n_users: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous share of ``n_users`` users (sizes differ by at most one)."""
    bounds = np.linspace(0, n_users, world + 1).round().astype(np.int64)
    return int(bounds[rank]), int(bounds[rank + 1])


def part_path(folder: str | Path, rank: int, world: int) -> Path:
    return Path(folder) / f"part-{rank:05d}-of-{world:05d}.parquet"


def write_recommendations_sharded(model: Any, folder: str | Path, ctx: Context, *, k: int = 10,
                                  exclude_seen: bool = True) -> PartWritten:
    """Write this rank's users' top-``k`` lists to its part in ``folder``; every rank calls it."""
    from cfrec.models.export import write_recommendations

    lo, hi = user_range(len(model.user_map_), ctx.rank, ctx.world_size)
    path = part_path(folder, ctx.rank, ctx.world_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = write_recommendations(model, path, users=model.user_map_.ids[lo:hi], k=k, exclude_seen=exclude_seen)
    totals = ctx.all_reduce_sum([written.rows, written.users], op="scoring")
    return PartWritten(path, int(written.rows), int(written.users), int(totals[0]), int(totals[1]))


#: Metrics that are means over users with a relevant test item, so the ranks' means combine
#: exactly (weighted by their users): coverage and popularity are not.
PER_USER_METRICS = ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")


def evaluate_sharded(model: Any, test: Any, ctx: Context, *, k: int = 10, relevance: float | None = 4.0,
                     metrics: list[str] | None = None) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on ``test``, each rank ranking its share of the test
    users (a contiguous range of the test's user vocabulary) against every item; the means are
    combined with one all-reduce. Every rank gets the job's metrics (equal to
    :func:`~cfrec.evaluation.evaluate` on one process up to float rounding), plus
    ``ranking_users`` and ``ranking_users_excluded``."""
    from cfrec.errors import CfrecError
    from cfrec.evaluation.protocols import evaluate
    from cfrec.metrics.ranking import parse_metric

    names = metrics or [f"ndcg@{k}", f"recall@{k}", f"precision@{k}"]
    for name in names:
        if parse_metric(name)[0] not in PER_USER_METRICS:
            raise CfrecError(f"{name}: sharded evaluation combines per-user means ({', '.join(PER_USER_METRICS)})")
    lo, hi = user_range(test.n_users, ctx.rank, ctx.world_size)
    mine = test.subset((test.users >= lo) & (test.users < hi))
    local: dict[str, float] = {}
    if len(mine):
        local = evaluate(model, mine, k=k, relevance=relevance, metrics=names)
    n = float(local.get("ranking_users", 0))
    sums = [float(local[name]) * n if n else 0.0 for name in names]
    total = ctx.all_reduce_sum([*sums, n, float(local.get("ranking_users_excluded", 0))], op="metrics")
    users = total[len(names)]
    out = {name: float(total[j] / users) if users else float("nan") for j, name in enumerate(names)}
    out.update(ranking_users=int(users), ranking_users_excluded=int(total[-1]))
    return out


def summarize_test_sharded(model: Any, test: Any, ctx: Context, *, users: tuple[int, int] | None = None,
                           k: int = 10) -> dict[str, Any]:
    """What :func:`~cfrec.evaluation.protocols.summarize_test` reports (RMSE, MAE, the fallback
    counts; NDCG and recall over the full ranking for ranking models), each rank scoring the test
    rows of its users; every rank gets the job's figures.

    ``users`` is the range of the model's user indices this rank scores (default: a contiguous
    ``1/P`` of them); its model needs the seen items of those users only. Test users the model
    does not know are scored by rank 0. Sums are combined with one all-reduce: RMSE from the
    summed squared errors, the ranking metrics as means over the users that have a relevant
    test item, as one process computes them.
    """
    from cfrec.evaluation.protocols import evaluate_detailed

    lo, hi = users if users is not None else user_range(len(model.user_map_), ctx.rank, ctx.world_size)
    idx = model.user_map_.to_index(test.raw_users(), missing="-1")
    mine = (idx >= lo) & (idx < hi) | ((idx < 0) if ctx.is_main else False)
    rating = bool(model.predicts_ratings)
    ranked = [] if rating else [f"ndcg@{k}", f"recall@{k}"]
    counts = ("personalised", "unknown_user", "unknown_item", "unknown_both")
    local = np.zeros(3 + len(counts) + 1 + len(ranked))
    if mine.any():
        got = evaluate_detailed(model, test.subset(mine), k=k, metrics=["rmse", "mae", *ranked]).metrics
        n = float(got["n_test"])
        ranking_users = float(got.get("ranking_users", 0))
        local[:3] = (n, n * float(got["rmse"]) ** 2 if rating else 0.0, n * float(got["mae"]) if rating else 0.0)
        local[3:3 + len(counts)] = [float(got[key]) for key in counts]
        local[3 + len(counts)] = ranking_users
        local[4 + len(counts):] = [float(got[name]) * ranking_users for name in ranked]
    total = ctx.all_reduce_sum(local, op="metrics")
    n = total[0]
    fallback = {key: int(total[3 + j]) for j, key in enumerate(counts)}
    out: dict[str, Any] = {
        "rmse": float(np.sqrt(total[1] / n)) if rating and n else None,
        "mae": float(total[2] / n) if rating and n else None,
        "n": int(n),
        "fallback": fallback,
        "fallback_share": float(1 - fallback["personalised"] / n) if n else 0.0,
    }
    ranking_users = total[3 + len(counts)]
    out.update({name: float(total[4 + len(counts) + j] / ranking_users) if ranking_users else float("nan")
                for j, name in enumerate(ranked)})
    return out
