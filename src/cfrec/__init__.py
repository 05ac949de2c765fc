"""cfrec: collaborative filtering toolkit.

Load rating data, split it without leakage, train latent-factor models in PyTorch, evaluate them
honestly, look inside them and recommend, with raw ids at every public boundary.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from cfrec._version import __version__
from cfrec.data import IdMap, Interactions, Split
from cfrec.errors import (
    CfrecError,
    DataError,
    DatasetUnavailable,
    ModelFileError,
    NotFittedError,
    TrainingDiverged,
)
from cfrec.models.registry import specs as _model_specs

_LAZY = {
    "load_movielens": "cfrec.data",
    "load_ratings": "cfrec.data",
    "load_dataset": "cfrec.data",
    "compute_statistics": "cfrec.data",
    "make_synthetic": "cfrec.data",
    "temporal_split": "cfrec.data",
    "user_temporal_split": "cfrec.data",
    "random_split": "cfrec.data",
    "kfold_splits": "cfrec.data",
    "predefined_split": "cfrec.data",
    "make_splits": "cfrec.data",
    "Recommender": "cfrec.models",
    "FoldedUser": "cfrec.models",
    "make_model": "cfrec.models",
    "register_model": "cfrec.models",
    "Recs": "cfrec.ranking",
    "RecsBatch": "cfrec.ranking",
    "evaluate": "cfrec.evaluation",
    # every built-in model class, from the registry (BiasedMF, ALS, IALS, ...)
    **{spec.class_name: spec.module for spec in _model_specs()},
}

__all__ = [
    "CfrecError",
    "DataError",
    "DatasetUnavailable",
    "IdMap",
    "Interactions",
    "ModelFileError",
    "NotFittedError",
    "Split",
    "TrainingDiverged",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cfrec' has no attribute {name!r}")
