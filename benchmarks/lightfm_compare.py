#!/usr/bin/env python
"""LightFM beside cfrec's hybrid ranker on ML-100K with genres: warm folds u1..u5 and cold items.

LightFM (a benchmark-only dependency, never imported by cfrec) is wrapped here as a cfrec model
so that both go through the same protocols and scoring (``run_benchmark``): its item features are
``[identity | genres]`` (not normalised, as the hybrid's default), positives are ratings >= 4, and
a held-out item's vector is its genres' embeddings (LightFM's ``get_item_representations`` on
the item's feature row without an identity column). User biases are left out of the scores (a
constant per user does not change a ranking).

LightFM does not build on current setuptools; it was installed in its own environment::

    python -m venv /tmp/lfm-venv
    /tmp/lfm-venv/bin/pip install "setuptools<70" wheel numpy scipy
    /tmp/lfm-venv/bin/pip install --no-build-isolation lightfm

and this script adds that environment's site-packages at the end of ``sys.path``::

    python benchmarks/lightfm_compare.py --site /tmp/lfm-venv/lib/python3.11/site-packages
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from cfrec.data import load_dataset
from cfrec.data.features import Features
from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.evaluation.benchmark import run_benchmark
from cfrec.evaluation.cold_items import item_features_of
from cfrec.models.base import EpochCallback
from cfrec.models.params import hyperparameters, param
from cfrec.models.ranking_only import RankingRecommender


@hyperparameters
class LightFMRanker(RankingRecommender):
    """LightFM behind cfrec's interface (fit, score, fold_in_item from features)."""

    name = "lightfm"
    takes_new_items = True

    n_factors: int = param(default=64, ge=1)
    loss: Literal["warp", "bpr"] = "warp"
    epochs: int = param(default=30, ge=1)
    lr: float = param(default=0.05, gt=0)
    threshold: float | None = 4.0
    threads: int = param(default=2, ge=1)
    seed: int | None = param(default=0, ge=0)

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        from lightfm import LightFM

        n_users, n_items = train.n_users, train.n_items
        pos = train.ratings >= self.threshold if self.threshold is not None else np.ones(len(train), bool)
        x = sp.coo_matrix((np.ones(int(pos.sum()), np.float32), (train.users[pos], train.items[pos])),
                          shape=(n_users, n_items))
        feats = train.item_features
        self.names_ = IdMap([]) if feats is None else feats.names
        raw = (sp.csr_matrix((n_items, 0), dtype=np.float32) if feats is None
               else sp.csr_matrix(feats.align(self.item_map_)))
        design = sp.hstack([sp.identity(n_items, dtype=np.float32, format="csr"), raw], format="csr")
        model = LightFM(no_components=int(self.n_factors), loss=str(self.loss), learning_rate=float(self.lr),
                        random_state=None if self.seed is None else int(self.seed))
        model.fit(x.tocsr(), item_features=design, epochs=int(self.epochs), num_threads=int(self.threads))
        bias, emb = model.get_item_representations(design)
        self.item_factors_ = emb.astype(np.float32)
        self.item_bias_ = bias.astype(np.float32)
        self.user_factors_ = model.get_user_representations()[1].astype(np.float32)
        self.feature_factors_ = model.item_embeddings[n_items:].astype(np.float32)
        self.feature_bias_ = model.item_biases[n_items:].astype(np.float32)

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dot = np.einsum("ij,ij->i", self.user_factors_[users], self.item_factors_[items])
        return (dot + self.item_bias_[items]).astype(np.float32)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return (self.user_factors_[users] @ self.item_factors_.T + self.item_bias_[None, :]).astype(np.float32)

    def fold_in_item(self, item: Any, features: Any = None, *, users: Any = None, ratings: Any = None) -> Any:
        assert isinstance(item, Features) and features is None and users is None
        cols = self.names_.to_index(item.names.ids, missing="-1") if len(self.names_) else \
            np.full(item.n_features, -1)
        coo = item.matrix.tocoo()
        keep = cols[coo.col] >= 0
        rows = sp.csr_matrix((coo.data[keep], (coo.row[keep], cols[coo.col[keep]])),
                             shape=(len(item), len(self.names_)))
        q, b = rows @ self.feature_factors_, rows @ self.feature_bias_
        merged = IdMap(np.concatenate([self.item_map_.ids, item.ids.ids]))
        old_pos, new_pos = merged.to_index(self.item_map_.ids), merged.to_index(item.ids.ids)
        n = len(merged)
        grown_q = np.zeros((n, q.shape[1]), np.float32)
        grown_q[old_pos], grown_q[new_pos] = self.item_factors_, q
        grown_b = np.zeros(n, np.float32)
        grown_b[old_pos], grown_b[new_pos] = self.item_bias_, b
        seen = self.seen_
        self.seen_ = sp.csr_array((seen.data, old_pos.astype(np.int32)[seen.indices], seen.indptr),
                                  shape=(seen.shape[0], n))
        self.item_factors_, self.item_bias_, self.item_map_ = grown_q, grown_b, merged
        return self


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--site", required=True, help="site-packages of an environment holding lightfm")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--only", choices=("warm", "cold"), action="append")
    args = ap.parse_args()
    sys.path.append(args.site)
    import lightfm

    print(f"lightfm {lightfm.__version__}", file=sys.stderr)
    data = load_dataset("ml-100k")
    data = dataclasses.replace(data, item_features=item_features_of(data))
    for part in args.only or ["warm", "cold"]:
        if part == "warm":
            res = run_benchmark(data, protocol="folds", models=[LightFMRanker(), "hybrid"])
        else:
            res = run_benchmark(data, protocol=f"cold-items:0.1:n={args.seeds}", models=[LightFMRanker(), "hybrid"])
        print(res.to_markdown() + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
