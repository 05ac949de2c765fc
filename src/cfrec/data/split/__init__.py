"""Leakage-free train/test splits.

Every split keeps the full data's id vocabularies in both parts, so indices agree between train
and test; a model trained on ``split.train`` builds its own vocabulary from the ids it saw.

All splitters are vectorised (one sort or one permutation of the rows, no Python loop per
rating), deterministic given their arguments, and return :class:`Split` objects whose
:meth:`Split.cold_start` tells how much of the test part a model cannot have seen.

Test sizes are ``round(test_fraction * n)`` with halves rounded up, everywhere.
"""

from cfrec.data.split.core import (
    PREDEFINED,
    SPEC_FORMS,
    ColdStartReport,
    Split,
    kfold_splits,
    random_split,
    temporal_split,
    user_temporal_split,
)
from cfrec.data.split.files import predefined_split
from cfrec.data.split.specs import (
    CARVE_KINDS,
    SEARCH_SPECS,
    CarveKind,
    carve_validation,
    find_training_split,
    folds_home,
    is_full_ml100k,
    make_splits,
    single_split,
    split_spec,
)

__all__ = [
    "CARVE_KINDS",
    "PREDEFINED",
    "SEARCH_SPECS",
    "SPEC_FORMS",
    "CarveKind",
    "ColdStartReport",
    "Split",
    "carve_validation",
    "find_training_split",
    "folds_home",
    "is_full_ml100k",
    "kfold_splits",
    "make_splits",
    "predefined_split",
    "random_split",
    "single_split",
    "split_spec",
    "temporal_split",
    "user_temporal_split",
]

