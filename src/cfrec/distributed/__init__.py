"""Training across processes and machines on torch.distributed (``torchrun``; gloo on CPU, NCCL
on CUDA).

:func:`from_env` joins the job ``torchrun`` started and yields a :class:`Context` that every
communicating function takes explicitly; :func:`rank_data` cuts a training set into a rank's
user and item blocks (:class:`RankData`); :func:`fit_blocked` fits ALS or iALS with each rank
solving its own blocks' rows, to the model a single process fits;
:func:`write_recommendations_sharded` writes every user's list, each rank its users' part. See
``docs/distributed.md``.
"""

from cfrec.distributed.blocks import Blocks, Part, RankData, balanced_bounds, rank_data
from cfrec.distributed.fit import BLOCKED_MODELS, fit_blocked, needed_rows
from cfrec.distributed.runtime import Context, RankFailed, Traffic, from_env, world_size_from_env
from cfrec.distributed.scoring import (
    PartWritten,
    evaluate_sharded,
    summarize_test_sharded,
    write_recommendations_sharded,
)

__all__ = [
    "BLOCKED_MODELS",
    "Blocks",
    "Context",
    "Part",
    "PartWritten",
    "RankData",
    "RankFailed",
    "Traffic",
    "balanced_bounds",
    "evaluate_sharded",
    "fit_blocked",
    "from_env",
    "needed_rows",
    "rank_data",
    "summarize_test_sharded",
    "world_size_from_env",
    "write_recommendations_sharded",
]
