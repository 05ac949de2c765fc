"""Timed stages of a command (load, split, fit, evaluate, save) with the peak memory of each.

The peak is the process's resident-set high-water mark (Linux ``VmHWM``), reset at the start of
every stage by writing ``5`` to ``/proc/self/clear_refs``; where that is not possible (other
systems, restricted containers) it is the peak since the process started, and says so.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _peak_bytes() -> int:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class Stage:
    name: str
    seconds: float
    peak_bytes: int
    per_stage: bool  # False: the peak is the process's since it started


@dataclass
class StageLog:
    """The stages of one command run, in order."""

    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        per_stage = _reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages.append(Stage(name, time.perf_counter() - start, _peak_bytes(), per_stage))

    def to_dict(self) -> dict[str, Any]:
        return {s.name: {"seconds": s.seconds, "peak_rss_bytes": s.peak_bytes} for s in self.stages}

    def summary(self) -> str:
        """``load 2.1 s (peak 1.20 GB), split 0.4 s (peak 1.31 GB), ...``."""
        parts = [f"{s.name} {s.seconds:.1f} s (peak {s.peak_bytes / 1e9:.2f} GB)" for s in self.stages]
        note = "" if all(s.per_stage for s in self.stages) else " (peaks since start)"
        return ", ".join(parts) + note
