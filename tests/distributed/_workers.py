"""Process bodies of the distributed tests (importable by spawned processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cfrec.data import Interactions, make_synthetic, make_synthetic_log

#: (name, model, hyperparameters, data) of every case one job fits.
CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("ials-tfidf", "ials", {}, "log"),
    ("ials-bm25-weighted", "ials", {"weighting": "bm25", "weighted_reg": True}, "log"),
    ("ials-ratings", "ials", {"weighting": None, "n_factors": 6}, "ratings"),
    ("als", "als", {}, "ratings"),
]


METRICS = ["ndcg@10", "recall@5", "map@10", "hit_rate@3"]


def held_out() -> Interactions:
    """A log over the same ids as :func:`case_data`'s, mostly of pairs the models did not see."""
    return make_synthetic_log(n_users=300, n_items=200, n_pairs=3000, seed=11)


def held_out_ratings() -> Interactions:
    """Ratings over about the same ids as :func:`case_data`'s (some users and items unknown)."""
    return make_synthetic(n_users=320, n_items=210, n_ratings=3000, seed=11)


#: The test part each summarized case is scored on, by the kind of its data.
SUMMARIZED = {"ials-tfidf": held_out, "als": held_out_ratings}


def case_data(kind: str) -> Interactions:
    """Small synthetic sets: an implicit log and a rating set (users and items of uneven activity)."""
    if kind == "log":
        return make_synthetic_log(n_users=300, n_items=200, n_pairs=6000, seed=3)
    return make_synthetic(n_users=300, n_items=200, n_ratings=6000, seed=3)


def case_model(model: str, params: dict[str, Any]) -> Any:
    from cfrec.models.als import ALS
    from cfrec.models.ials import IALS

    base = {"n_factors": 8, "iterations": 6, "seed": 5, "device": "cpu"}
    cls = IALS if model == "ials" else ALS
    return cls(**{**base, **params})


def fit_cases(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a job that fits every case blocked; rank 0 saves the factors as .npy files."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CFREC_NUM_THREADS="1")
    from cfrec.distributed import fit_blocked, from_env, rank_data

    with from_env("cpu") as ctx:
        for name, model, params, kind in CASES:
            part = rank_data(case_data(kind), ctx.rank, ctx.world_size)
            fitted = fit_blocked(case_model(model, params), part, ctx)
            if name in SUMMARIZED:  # every rank scores the test rows of its own block's users
                from cfrec.distributed import summarize_test_sharded

                summary = summarize_test_sharded(fitted, SUMMARIZED[name](), ctx,
                                                 users=part.blocks.user_range(ctx.rank))
                (Path(out) / f"{name}-summary-rank{ctx.rank}.json").write_text(json.dumps(summary))
                if ctx.is_main:
                    fitted.save(Path(out) / f"{name}-model")
            if ctx.is_main:
                folder = Path(out)
                np.save(folder / f"{name}-users.npy", fitted.user_factors_)
                np.save(folder / f"{name}-items.npy", fitted.item_factors_)
                if model == "als":
                    np.save(folder / f"{name}-user-bias.npy", fitted.user_bias_)
                    np.save(folder / f"{name}-item-bias.npy", fitted.item_bias_)
                np.save(folder / f"{name}-loss.npy", np.array([r["train_loss"] for r in fitted.history_]))
                np.save(folder / f"{name}-bytes.npy", np.array([r["bytes_sent"] for r in fitted.history_]))
                np.save(folder / f"{name}-seen.npy", fitted.seen_.toarray())
            if name == "ials-tfidf":  # every rank scores its users with the saved model
                if ctx.is_main:
                    fitted.save(Path(out) / "model")
                ctx.barrier()
                from cfrec.distributed import write_recommendations_sharded
                from cfrec.models.base import Recommender

                loaded = Recommender.load(Path(out) / "model")
                write_recommendations_sharded(loaded, Path(out) / "recs", ctx, k=7)
                from cfrec.distributed import evaluate_sharded

                metrics = evaluate_sharded(loaded, held_out(), ctx, metrics=METRICS)
                (Path(out) / f"metrics-rank{ctx.rank}.json").write_text(json.dumps(metrics))


def mf_model(**params: Any) -> Any:
    from cfrec.models.mf import BiasedMF

    return BiasedMF(**{"device": "cpu", "seed": 3, **params})


def mf_data() -> Interactions:
    return make_synthetic(n_users=300, n_items=200, n_ratings=6000, seed=3)


def fit_dsgd(rank: int, world: int, port: int, out: str, fold: str) -> None:
    """One rank of a job that fits BiasedMF by DSGD: on ``fold``'s train part (an ML-100K
    ``uN.base`` file; skipped when empty), then a small set uninterrupted and in two runs (3
    epochs with checkpoints, then 6 resuming from them). Rank 0 saves the results."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CFREC_NUM_THREADS="1")
    from cfrec.data import load_dataset
    from cfrec.distributed import fit_blocked, from_env, rank_data

    folder = Path(out)
    with from_env("cpu") as ctx:
        if fold:
            train = load_dataset(fold, columns=["user_id", "item_id", "rating", "timestamp"])
            fitted = fit_blocked(mf_model(seed=0), rank_data(train, ctx.rank, ctx.world_size), ctx)
            if ctx.is_main:
                fitted.save(folder / "fold-model")
        small = rank_data(mf_data(), ctx.rank, ctx.world_size)
        runs = {"whole": fit_blocked(mf_model(epochs=6), small, ctx)}
        fit_blocked(mf_model(epochs=3), small, ctx, checkpoint=folder / "ckpt")
        runs["resumed"] = fit_blocked(mf_model(epochs=6), small, ctx, checkpoint=folder / "ckpt")
        if ctx.is_main:
            for name, model in runs.items():
                np.savez(folder / f"{name}.npz", users=model.user_factors_, items=model.item_factors_,
                         user_bias=model.user_bias_, item_bias=model.item_bias_,
                         epochs=np.array([r["epoch"] for r in model.history_]),
                         loss=np.array([r["train_loss"] for r in model.history_]),
                         sent=np.array([r["bytes_sent"] for r in model.history_]))


#: (name, model, hyperparameters, file) of every case fitted from sharded files.
SHARDED_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("ials-tfidf", "ials", {}, "plays.tsv"),
    ("ials-bm25-weighted", "ials", {"weighting": "bm25", "weighted_reg": True}, "plays.tsv"),
    ("ials-ratings", "ials", {"weighting": None, "n_factors": 6}, "ratings.csv"),
    ("als", "als", {}, "ratings.csv"),
]


def write_case_files(folder: Path) -> None:
    """The case data as files a loader reads, with repeated pairs: ratings given again later (the
    loader keeps the last) and a log whose plays of a pair are split over two rows (summed)."""
    ratings = case_data("ratings")
    users, items = ratings.raw_users(), ratings.raw_items()
    lines = ["user,item,rating,timestamp"]
    lines += [f"{u},{i},{r:g},{t}" for u, i, r, t in zip(users, items, ratings.ratings, ratings.timestamps,
                                                          strict=True)]
    lines += [f"{users[j]},{items[j]},{1 + j % 5},{ratings.timestamps[j] + 1}" for j in range(0, len(users), 37)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    log = case_data("log")
    assert log.weights is not None
    users, items = log.raw_users(), log.raw_items()
    lines = ["user\ttrack\tplays\tts"]
    for j, (u, i, w, t) in enumerate(zip(users, items, log.weights, log.timestamps, strict=True)):
        if j % 11 == 0 and w > 1:  # the same pair on two rows
            lines += [f"{u}\t{i}\t1\t{t - 5}", f"{u}\t{i}\t{w - 1:g}\t{t}"]
        else:
            lines.append(f"{u}\t{i}\t{w:g}\t{t}")
    (folder / "plays.tsv").write_text("\n".join(lines) + "\n")


def fit_sharded(rank: int, world: int, port: int, folder: str) -> None:
    """One rank of a job fitting every sharded case from its own parts (``{file}-shards``);
    rank 0 saves the factors and the seen matrix as .npy files."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CFREC_NUM_THREADS="1")
    from cfrec.distributed import fit_blocked, from_env
    from cfrec.distributed.sharded_input import read_rank_data

    out = Path(folder)
    with from_env("cpu") as ctx:
        for name, model, params, file in SHARDED_CASES:
            part = read_rank_data(out / f"{file}-shards", ctx)
            fitted = fit_blocked(case_model(model, params), part, ctx, release=True)
            assert len(part.by_user) == len(part.by_item) == 0  # the fit dropped them
            if ctx.is_main:
                np.save(out / f"{name}-users.npy", fitted.user_factors_)
                np.save(out / f"{name}-items.npy", fitted.item_factors_)
                np.save(out / f"{name}-seen.npy", fitted.seen_.toarray())
                (out / f"{name}-n.json").write_text(json.dumps(part.n_interactions))
