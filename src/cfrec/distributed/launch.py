"""Starting a job of ``N`` processes on this machine, as ``torchrun --standalone`` does.

:func:`launch_local` runs ``python -m cfrec ARGS`` in ``N`` processes under torch's elastic
agent (the launcher inside ``torchrun``), with a rendezvous on a free local port; each process
finds its rank in its environment and joins the job with :func:`~cfrec.distributed.from_env`.
A process that fails (an error, a kill) stops the job; the error names its rank.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid

from cfrec.distributed.runtime import RankFailed
from cfrec.errors import CfrecError
from cfrec.threads import available_cores

#: Set on a rank to make it kill itself (SIGKILL) at an iteration, ``RANK:ITERATION``: rehearses
#: a machine lost mid-job (what ``--out`` and the error then show; a restarted job is spared).
FAULT_ENV = "CFREC_DIST_KILL"


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N`` option."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def threads_per_rank(local_ranks: int) -> int:
    """CPU threads each of ``local_ranks`` processes on one machine gets by default."""
    return max(1, available_cores() // max(1, local_ranks))


def launch_local(nproc: int, argv: list[str], *, max_restarts: int = 0) -> None:
    """Run ``python -m cfrec *argv`` as a job of ``nproc`` processes on this machine.

    Raises :class:`~cfrec.distributed.RankFailed` naming the first rank that failed.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise CfrecError(f"--nproc must be >= 1, got {nproc}")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=max_restarts,
                          monitor_interval=0.2)
    # the agent logs every worker's failure with a traceback; the error below says it in one line
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "cfrec", *argv)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        raise RankFailed(f"rank {rank} of {nproc} {how}; the job stopped and nothing was saved "
                         f"(its own error, if any, is printed above)") from None


def maybe_kill(rank: int, iteration: int) -> None:
    """Kill this process when :data:`FAULT_ENV` names this rank and iteration."""
    raw = os.environ.get(FAULT_ENV, "").strip()
    restarted = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0")
    if raw and raw == f"{rank}:{iteration}" and not restarted:  # a restarted job runs through
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
