"""Evaluation protocols: offline (holdout, k-fold, predefined folds, temporal), online
(prequential replay with fold-in) and the model benchmark.

Heavier modules are imported lazily so ``from cfrec.evaluation import evaluate`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

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

_LAZY = {
    "OnlineResult": "cfrec.evaluation.online",
    "online_evaluate": "cfrec.evaluation.online",
    "online_predictions": "cfrec.evaluation.online",
    "run_online": "cfrec.evaluation.online",
    "BenchmarkResult": "cfrec.evaluation.benchmark",
    "run_benchmark": "cfrec.evaluation.benchmark",
}

__all__ = [
    "ErrorBreakdown",
    "Evaluation",
    "FoldResult",
    "GroupError",
    "ProtocolResult",
    "cross_validate",
    "error_breakdown",
    "evaluate",
    "evaluate_detailed",
    "holdout",
    "metric_names",
    "resolve_model",
    "run_protocol",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cfrec.evaluation' has no attribute {name!r}")
