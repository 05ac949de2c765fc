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
            fitted = fit_blocked(case_model(model, params), rank_data(case_data(kind), ctx.rank, ctx.world_size),
                                 ctx)
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
