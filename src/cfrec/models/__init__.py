"""Recommender models. Make one by name with :func:`make_model` or import its class.

Every model honours the :class:`Recommender` interface (``fit``, ``predict``, ``recommend``,
``similar_items``, ``fold_in``, ``save``, ``load``); :mod:`cfrec.models.registry` lists them.
"""

from cfrec.models.base import FoldedUser, Prediction, Recommender
from cfrec.models.factor import (
    BiasedRecommender,
    FactorRecommender,
    ItemInterceptRecommender,
    LatentFactorRecommender,
    RidgeFoldIn,
)
from cfrec.models.params import Runtime, hyperparameters, param
from cfrec.models.ranking_only import RankingRecommender
from cfrec.models.registry import (
    make_model,
    model_class,
    model_names,
    register_model,
    unregister_model,
)
from cfrec.ranking import Recs, RecsBatch


def __getattr__(name: str) -> type[Recommender]:
    """The model classes by their class name (``from cfrec.models import NeuMF``), imported on
    first use so that ``import cfrec.models`` stays light."""
    from cfrec.models.registry import find_class

    found = find_class(name)
    if found is None:
        raise AttributeError(f"module 'cfrec.models' has no attribute {name!r}")
    return found


__all__ = [
    "BiasedRecommender",
    "FactorRecommender",
    "ItemInterceptRecommender",
    "LatentFactorRecommender",
    "RankingRecommender",
    "FoldedUser",
    "Prediction",
    "Recommender",
    "Recs",
    "RecsBatch",
    "RidgeFoldIn",
    "Runtime",
    "hyperparameters",
    "param",
    "make_model",
    "model_class",
    "model_names",
    "register_model",
    "unregister_model",
]
