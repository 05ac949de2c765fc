"""The process group of a distributed job, passed explicitly as a :class:`Context`.

A job is started by ``torchrun`` (or ``cfrec train --nproc N``, which wraps it): every process
finds its rank, the world size and the rendezvous address in its environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`from_env` joins the
group with gloo for CPU tensors or NCCL for CUDA ones (picked from the device) and returns a
:class:`Context`; the library never keeps it in a global, every function that communicates takes
it as an argument. :meth:`Context.local` is the one-process context (no group, every collective
a copy), so the blocked code runs the same with one process.

Every collective counts the bytes this rank sends (``Context.sent``), and turns a failure of the
transport (a peer that died, a timeout) into a :class:`~cfrec.errors.CfrecError` naming this
rank and the operation, instead of a backend traceback.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cfrec.errors import CfrecError

#: Seconds a collective waits for the other ranks before the job fails (override with
#: ``CFREC_DIST_TIMEOUT``): long enough for a rank's data loading and set-up.
DEFAULT_TIMEOUT = 1800.0


class RankFailed(CfrecError):
    """A rank of a distributed job failed, or lost contact with the others."""


@dataclass
class Traffic:
    """Bytes this rank sent, per operation name (payload only, as the algorithm needs it)."""

    bytes: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, op: str, n: int) -> None:
        self.bytes[op] = self.bytes.get(op, 0) + int(n)
        self.calls[op] = self.calls.get(op, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


@dataclass
class Context:
    """One process's place in a distributed job.

    Attributes
    ----------
    rank, world_size
        This process's rank and the number of processes.
    device
        Where the tensors of the collectives live (CPU for gloo, this rank's GPU for NCCL).
    backend
        ``"gloo"``, ``"nccl"``, or ``"local"`` for the one-process context.
    group
        The torch process group (None for the one-process context).
    sent
        Bytes this rank has sent so far, by operation.
    """

    rank: int
    world_size: int
    device: torch.device
    backend: str
    group: Any = None
    sent: Traffic = field(default_factory=Traffic)

    @classmethod
    def local(cls, device: torch.device | None = None) -> Context:
        """The context of a job of one process: collectives return their input."""
        return cls(0, 1, device or torch.device("cpu"), "local")

    @property
    def is_main(self) -> bool:
        """Whether this rank prints and writes (rank 0)."""
        return self.rank == 0

    # ------------------------------------------------------------------ collectives
    def _tensor(self, a: Any) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a.contiguous()
        return t.to(self.device)

    @contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        try:
            yield
        except (RuntimeError, dist.DistError) as exc:
            # the transport's first sentence, without its source location
            detail = re.sub(r"^\[[^\]]*\]\s*", "", (str(exc).splitlines() or [""])[0]).split(". ")[0]
            raise RankFailed(f"rank {self.rank}: {op} across {self.world_size} ranks failed: another rank "
                             f"stopped or timed out (its own error says why) [{detail}]") from None

    def all_gather_rows(self, block: Any, sizes: list[int] | np.ndarray, op: str = "all_gather") -> Any:
        """Every rank's ``block`` of rows stacked in rank order (blocks of ``sizes[r]`` rows).

        Uneven blocks are padded to the largest on the wire (gloo's all_gather needs equal
        sizes); the bytes counted are what this rank sends: its padded block to each of the
        other ranks. Returns the backend type of ``block`` (numpy in, numpy out).
        """
        sizes = [int(s) for s in sizes]
        if self.world_size == 1:
            return block
        as_numpy = isinstance(block, np.ndarray)
        t = self._tensor(block)
        width = tuple(t.shape[1:])
        longest = max(sizes)
        if t.shape[0] != sizes[self.rank]:
            raise CfrecError(f"rank {self.rank}: block of {t.shape[0]} rows, expected {sizes[self.rank]}")
        if t.shape[0] < longest:
            t = torch.cat([t, t.new_zeros((longest - t.shape[0], *width))])
        parts = [t.new_empty((longest, *width)) for _ in range(self.world_size)]
        with self._guard(op):
            dist.all_gather(parts, t, group=self.group)
        self.sent.add(op, t.numel() * t.element_size() * (self.world_size - 1))
        full = torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])
        return full.cpu().numpy() if as_numpy else full

    def all_reduce_sum(self, values: Any, op: str = "all_reduce") -> np.ndarray:
        """The element-wise sum over ranks of ``values`` (float64 numpy out, summed in float64)."""
        a = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
        if self.world_size == 1:
            return a.copy()
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        with self._guard(op):
            dist.all_reduce(t, group=self.group)
        # a ring all-reduce sends about twice the payload from every rank
        self.sent.add(op, 2 * t.numel() * t.element_size() * (self.world_size - 1) // self.world_size)
        return t.cpu().numpy()

    def ring_shift(self, block: np.ndarray, rows: int, op: str = "ring") -> np.ndarray:
        """Pass blocks one step around the ring: send ``block`` to rank ``rank - 1`` and return
        the block of ``rows`` rows (same trailing shape and dtype) that rank ``rank + 1`` sends
        (indices modulo the world size). Every rank sends its block once, with no padding."""
        if self.world_size == 1:
            return block
        t = self._tensor(block)
        out = t.new_empty((int(rows), *t.shape[1:]))
        to, source = (self.rank - 1) % self.world_size, (self.rank + 1) % self.world_size
        with self._guard(op):
            requests = dist.batch_isend_irecv([dist.P2POp(dist.isend, t, to, self.group),
                                               dist.P2POp(dist.irecv, out, source, self.group)])
            for request in requests:
                request.wait()
        self.sent.add(op, t.numel() * t.element_size())
        return np.asarray(out.cpu().numpy())

    def gather_arrays(self, a: np.ndarray, op: str = "gather") -> list[np.ndarray] | None:
        """Every rank's 1-d array on rank 0 (in rank order); None on the other ranks."""
        if self.world_size == 1:
            return [a]
        lengths = self.all_reduce_sum(np.eye(self.world_size)[self.rank] * len(a), op=op).astype(np.int64)
        longest = int(lengths.max())
        t = torch.zeros(longest, dtype=torch.from_numpy(a[:0]).dtype, device=self.device)
        t[: len(a)] = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        with self._guard(op):
            dist.all_gather(parts, t, group=self.group)  # gloo has no uneven gather: pad
        self.sent.add(op, t.numel() * t.element_size() * (self.world_size - 1))
        if not self.is_main:
            return None
        return [p[:n].cpu().numpy() for p, n in zip(parts, lengths, strict=True)]

    def gather_concat(self, a: np.ndarray, op: str = "gather") -> np.ndarray | None:
        """Every rank's 1-d array concatenated in rank order on rank 0 (None on the others),
        received straight into the result (no padding, no per-rank copies: the whole array is
        the only one rank 0 allocates)."""
        if self.world_size == 1:
            return a
        lengths = self.all_reduce_sum(np.eye(self.world_size)[self.rank] * len(a), op=op).astype(np.int64)
        a = np.ascontiguousarray(a)
        if not self.is_main:
            if len(a):
                with self._guard(op):
                    dist.send(self._tensor(a), dst=0, group=self.group)
                self.sent.add(op, a.nbytes)
            return None
        out = np.empty(int(lengths.sum()), dtype=a.dtype)
        out[: len(a)] = a
        at = len(a)
        for r in range(1, self.world_size):
            n = int(lengths[r])
            if n:
                view = torch.from_numpy(out[at: at + n])
                with self._guard(op):
                    if self.device.type == "cpu":
                        dist.recv(view, src=r, group=self.group)
                    else:  # NCCL receives into device memory
                        buf = torch.empty(n, dtype=view.dtype, device=self.device)
                        dist.recv(buf, src=r, group=self.group)
                        view.copy_(buf.cpu())
            at += n
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            with self._guard("barrier"):
                dist.barrier(group=self.group)


# ---------------------------------------------------------------------- joining a job
def world_size_from_env() -> int:
    """``WORLD_SIZE`` of a ``torchrun`` job (1 outside one)."""
    raw = os.environ.get("WORLD_SIZE", "").strip()
    try:
        return max(1, int(raw)) if raw else 1
    except ValueError:
        raise CfrecError(f"WORLD_SIZE={raw!r}: expected a whole number (set by torchrun)") from None


def _timeout() -> datetime.timedelta:
    raw = os.environ.get("CFREC_DIST_TIMEOUT", "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise CfrecError(f"CFREC_DIST_TIMEOUT={raw!r}: expected seconds") from None
    return datetime.timedelta(seconds=seconds)


def _attempt_store(world: int) -> dist.Store | None:
    """The launcher's key-value store under a prefix of this attempt, for a job torchrun restarts
    (``--max-restarts``): without it, a restarted rank can read the address a rank of the failed
    attempt published and fail to connect to it. None outside such a job (plain ``env://``)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=False, timeout=_timeout())
    return dist.PrefixStore(f"cfrec/attempt_{attempt}", agent)


def pick_backend(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for CPU ones."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def from_env(device: str | torch.device | None = None) -> Iterator[Context]:
    """Join the job ``torchrun`` started (from its environment) and leave it on exit.

    ``device``: ``"cpu"`` (gloo), ``"cuda"`` (NCCL, this rank's ``LOCAL_RANK`` GPU) or
    None/``"auto"`` (CUDA where available). Outside a multi-process job it yields
    :meth:`Context.local`.
    """
    from cfrec.engines.backend import resolve_device

    dev = resolve_device(device)
    if world_size_from_env() == 1:
        yield Context.local(dev)
        return
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise CfrecError(f"WORLD_SIZE is set but {name} is not: start distributed jobs with torchrun "
                             f"(or cfrec train --nproc N)")
    rank, world = int(os.environ["RANK"]), world_size_from_env()
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    backend = pick_backend(dev)
    try:
        store = _attempt_store(world)
        if store is None:
            dist.init_process_group(backend, rank=rank, world_size=world, timeout=_timeout())
        else:
            dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=_timeout())
    except (RuntimeError, ValueError, dist.DistError) as exc:
        raise RankFailed(f"rank {rank}: could not join the {world}-process job at "
                         f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({backend}): "
                         f"{str(exc).splitlines()[0]}") from None
    try:
        yield Context(rank, world, dev, backend, dist.group.WORLD)
    finally:
        dist.destroy_process_group()
