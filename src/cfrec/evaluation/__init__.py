"""Evaluation protocols: offline (holdout, k-fold, predefined folds, temporal), online
(prequential replay with fold-in) and the model benchmark.

Tuning (Optuna) is not imported here: use :mod:`cfrec.evaluation.tuning`.
"""

from __future__ import annotations

from cfrec.evaluation.benchmark import BenchmarkResult, run_benchmark
from cfrec.evaluation.online import OnlineResult, online_evaluate, online_predictions, run_online
from cfrec.evaluation.protocols import (
    ErrorBreakdown,
    Evaluation,
    FoldResult,
    GroupError,
    ProtocolResult,
    cross_validate,
    error_breakdown,
    evaluate,
    evaluate_detailed,
    holdout,
    metric_names,
    resolve_model,
    run_protocol,
)

__all__ = [
    "BenchmarkResult",
    "ErrorBreakdown",
    "Evaluation",
    "FoldResult",
    "GroupError",
    "OnlineResult",
    "ProtocolResult",
    "cross_validate",
    "error_breakdown",
    "evaluate",
    "evaluate_detailed",
    "holdout",
    "metric_names",
    "online_evaluate",
    "online_predictions",
    "resolve_model",
    "run_benchmark",
    "run_online",
    "run_protocol",
]
