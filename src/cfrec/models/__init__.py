"""Recommender models. Import a model by name through :func:`make_model` or directly."""

from cfrec.models.base import FactorRecommender, FoldedUser, Prediction, Recommender, Recs
from cfrec.models.registry import make_model, model_class, model_names

__all__ = [
    "FactorRecommender",
    "FoldedUser",
    "Prediction",
    "Recommender",
    "Recs",
    "make_model",
    "model_class",
    "model_names",
]
