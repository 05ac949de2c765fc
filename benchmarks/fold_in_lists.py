"""BiasedMF's folded-in lists on ML-100K u1: do they follow the user, and do they rank well?

Fits ``BiasedMF()`` on u1.base, then

* folds in five 5-star films of one genre (sci-fi; animation) and counts how many of the top 10
  are not on the new-user list;
* folds in every u1 test user from 5 of their training ratings (and from all of them), ranks
  every item they did not rate in training, and scores NDCG@10 on their u1.test ratings >= 4.

Both for the model's folded-in ranking (``p_u . q_i`` shrunk by item support) and for the
ranking by predicted rating (``mu + b_u + b_i + p_u . q_i``) it replaced.
``python benchmarks/fold_in_lists.py`` (about 40 s of CPU).
"""

from __future__ import annotations

import argparse

import numpy as np

from cfrec.data import load_dataset, predefined_split
from cfrec.models import BiasedMF
from cfrec.models.factor import FactorRecommender

SCI_FI = [50, 172, 181, 228, 183]  # Star Wars, Empire, Jedi, Wrath of Khan, Alien
ANIMATION = [1, 71, 95, 99, 588]  # Toy Story, Lion King, Aladdin, Snow White, Beauty and the Beast


def _top(scores: np.ndarray, exclude: np.ndarray, k: int = 10) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).copy()
    s[exclude] = -np.inf
    top = np.argpartition(-s, k)[:k]
    return top[np.argsort(-s[top], kind="stable")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(argv)
    split = predefined_split("u1")
    catalogue = load_dataset("ml-100k")  # the titles
    train, test = split.train, split.test
    model = BiasedMF(seed=ns.seed).fit(train)
    n_items = len(model.item_map_)
    everything = np.arange(n_items)

    def rankers(folded):  # (name, scores of every item)
        return (("folded-in ranking", model._score_folded(folded, everything)),
                ("by predicted rating", FactorRecommender._score_folded(model, folded, everything)))

    cold = set(_top(model._cold_user_scores(), np.zeros(0, dtype=np.int64)).tolist())
    for genre, films in (("sci-fi", SCI_FI), ("animation", ANIMATION)):
        folded = model.fold_in(films, [5] * len(films))
        for name, scores in rankers(folded):
            top = _top(scores, folded.seen)
            titles = catalogue.item_titles(model.item_map_.to_raw(top[:4]))
            print(f"{genre:>9}, {name:<19}: {len(set(top.tolist()) - cold)} of 10 not on the new-user list "
                  f"({'; '.join(titles)} ...)")

    rng = np.random.default_rng(ns.seed)
    tr_u, tr_i = train.user_map.to_raw(train.users), train.item_map.to_raw(train.items)
    te_u, te_i = test.user_map.to_raw(test.users), test.item_map.to_raw(test.items)
    disc = 1 / np.log2(np.arange(2, 12))
    for mode in ("5 ratings", "all ratings"):
        ndcg: dict[str, list[float]] = {}
        for u in np.unique(te_u):
            rel = model.item_map_.to_index(te_i[(te_u == u) & (test.ratings >= 4)], missing="-1")
            mask = tr_u == u
            if not len(rel) or not mask.any():
                continue
            items, ratings = tr_i[mask], train.ratings[mask]
            if mode == "5 ratings":
                pick = rng.choice(len(items), min(5, len(items)), replace=False)
                folded = model.fold_in(items[pick], ratings[pick])
            else:
                folded = model.fold_in(items, ratings)
            rated = model.item_map_.to_index(items)
            relevant = set(rel[rel >= 0].tolist())
            ideal = disc[:min(len(rel), 10)].sum()
            for name, scores in rankers(folded):
                top = _top(scores, rated)
                ndcg.setdefault(name, []).append(sum(disc[r] for r, i in enumerate(top) if i in relevant) / ideal)
        print(f"u1 test users folded in from {mode}: "
              + ", ".join(f"{name} NDCG@10 {np.mean(v):.4f}" for name, v in ndcg.items())
              + f" ({len(next(iter(ndcg.values())))} users)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
