"""Data layer: id vocabularies, the ratings/interactions container, loaders, statistics, splits,
synthetic ratings and logs.

Names are imported lazily so ``import cfrec.data`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.data.split import ColdStartReport, Split

if TYPE_CHECKING:  # the lazy names below, as type checkers should see them
    from cfrec.data.datasets import load_dataset  # noqa: F401
    from cfrec.data.io import LoadReport, load_ratings  # noqa: F401
    from cfrec.data.movielens import (  # noqa: F401
        MOVIELENS,
        MovieLensSpec,
        data_home,
        download_movielens,
        is_cached,
        load_movielens,
    )
    from cfrec.data.split import (  # noqa: F401
        kfold_splits,
        make_splits,
        predefined_split,
        random_split,
        temporal_split,
        user_temporal_split,
    )
    from cfrec.data.stats import DatasetStats, compute_statistics, format_dataset_info  # noqa: F401
    from cfrec.data.synthetic import SyntheticTruth, make_synthetic, synthetic_like  # noqa: F401
    from cfrec.data.synthetic_logs import LogTruth, log_events, make_synthetic_log  # noqa: F401

_LAZY = {
    # loaders (movielens.py, io.py, datasets.py)
    "load_movielens": "cfrec.data.movielens",
    "download_movielens": "cfrec.data.movielens",
    "MOVIELENS": "cfrec.data.movielens",
    "data_home": "cfrec.data.movielens",
    "is_cached": "cfrec.data.movielens",
    "MovieLensSpec": "cfrec.data.movielens",
    "LoadReport": "cfrec.data.io",
    "load_ratings": "cfrec.data.io",
    "load_dataset": "cfrec.data.datasets",
    # statistics
    "compute_statistics": "cfrec.data.stats",
    "DatasetStats": "cfrec.data.stats",
    "format_dataset_info": "cfrec.data.stats",
    # splits
    "temporal_split": "cfrec.data.split",
    "user_temporal_split": "cfrec.data.split",
    "random_split": "cfrec.data.split",
    "kfold_splits": "cfrec.data.split",
    "predefined_split": "cfrec.data.split",
    "make_splits": "cfrec.data.split",
    # synthetic
    "make_synthetic": "cfrec.data.synthetic",
    "synthetic_like": "cfrec.data.synthetic",
    "SyntheticTruth": "cfrec.data.synthetic",
    "make_synthetic_log": "cfrec.data.synthetic_logs",
    "log_events": "cfrec.data.synthetic_logs",
    "LogTruth": "cfrec.data.synthetic_logs",
}

__all__ = ["ColdStartReport", "IdMap", "Interactions", "Split", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cfrec.data' has no attribute {name!r}")
