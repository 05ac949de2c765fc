"""Evaluation metrics: rating error (RMSE, MAE) and vectorised top-K ranking metrics.

Ranking metrics use binary relevance; :func:`cfrec.evaluation.evaluate` turns explicit ratings
into relevance with a threshold (a test rating ``>= 4`` by default); on interaction logs every
held-out interaction is relevant.
"""

from cfrec.metrics.ranking import (
    RANKING_METRICS,
    average_precision_at_k,
    catalogue_coverage,
    hit_matrix,
    hit_rate_at_k,
    mean_popularity,
    ndcg_at_k,
    parse_metric,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    reciprocal_rank,
)
from cfrec.metrics.rating import mae, rmse, squared_error_sum

__all__ = [
    "RANKING_METRICS",
    "average_precision_at_k",
    "catalogue_coverage",
    "hit_matrix",
    "hit_rate_at_k",
    "mae",
    "mean_popularity",
    "ndcg_at_k",
    "parse_metric",
    "precision_at_k",
    "ranking_metrics",
    "recall_at_k",
    "reciprocal_rank",
    "rmse",
    "squared_error_sum",
]
