#!/usr/bin/env python
"""Where a Bayesian FM's warm-fold RMSE comes from: items in the training part, and items without.

On one of ML-100K's official folds (``u1`` .. ``u5``), fits ``bfm`` with its defaults and splits the
test ratings into those whose item is in the training part and those whose item has no training
rating (scored from its features). Each part is scored twice: as the model predicts (the feature
columns plus the expected terms of the id and rated-set columns a new item lacks,
``cfrec.models.fm_terms.MissingTerms``) and from the feature columns alone (the model's
``sample_item_missing_`` and ``sample_user_missing_`` zeroed).

Usage::

    python benchmarks/bfm_cold_split.py u1
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from cfrec.data import load_dataset
from cfrec.data.split.files import predefined_split
from cfrec.models.bayesian_fm import BayesianFM


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fold", nargs="?", default="u1", choices=[f"u{i}" for i in range(1, 6)])
    args = ap.parse_args()
    split = predefined_split(args.fold, data=load_dataset("ml-100k"))
    model = BayesianFM().fit(split.train)
    test = split.test
    users, items = test.user_map.ids[test.users], test.item_map.ids[test.items]
    absent = model.item_map_.to_index(items, missing="-1") < 0
    with_missing = model.predict(users, items)
    model.sample_item_missing_[:] = 0
    model.sample_user_missing_[:] = 0
    alone = model.predict(users, items)

    def rmse(pred: np.ndarray, mask: np.ndarray) -> float:
        return float(np.sqrt(np.mean((pred[mask] - test.ratings[mask]) ** 2)))

    print(f"{args.fold}: {int(absent.sum())} of {len(absent)} test ratings of items absent from training "
          f"(their mean rating {test.ratings[absent].mean():.3f})")
    everything = np.ones(len(absent), dtype=bool)
    for name, pred in (("features + missing terms", with_missing), ("feature columns alone", alone)):
        print(f"  {name}: all {rmse(pred, everything):.4f}, present {rmse(pred, ~absent):.4f}, "
              f"absent {rmse(pred, absent):.4f} (their mean prediction {pred[absent].mean():.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
