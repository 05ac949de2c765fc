"""Timed stages of a command (load, split, fit, evaluate, save) with the peak memory of each.

The process's resident-set high-water mark (Linux ``VmHWM``) is never reset: resetting it (by
``/proc/self/clear_refs``) would also reset what the kernel reports to the parent at exit, so
``/usr/bin/time`` or a scheduler would see only the last stage's peak. Instead, a stage that
raises the high-water mark has that exact mark as its peak; a stage that stays below an earlier
stage's mark has the highest resident size sampled every few milliseconds while it ran, shown
with ``~``. The largest peak in the table is therefore the process's maximum RSS.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

SAMPLE_SECONDS = 0.005
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _peak_bytes() -> int:
    """The process's resident high-water mark since it started."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _rss_bytes() -> int | None:
    """The current resident size (``/proc/self/statm``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class _RssSampler:
    """The highest resident size seen by a daemon thread polling every ``SAMPLE_SECONDS``."""

    def __init__(self) -> None:
        self.highest = _rss_bytes() or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cfrec-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            rss = _rss_bytes()
            if rss is None:
                return
            self.highest = max(self.highest, rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.highest, _rss_bytes() or 0)


@dataclass
class Stage:
    name: str
    seconds: float
    peak_bytes: int
    exact: bool  # True: the process's high-water mark, set during this stage; False: sampled


@dataclass
class StageLog:
    """The stages of one command run, in order."""

    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        mark_before = _peak_bytes()
        sampler = _RssSampler()
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            sampled = sampler.stop()
            mark_after = _peak_bytes()
            if mark_after > mark_before or not self.stages:
                self.stages.append(Stage(name, seconds, mark_after, True))
            else:
                self.stages.append(Stage(name, seconds, min(sampled, mark_after), False))

    def to_dict(self) -> dict[str, Any]:
        return {s.name: {"seconds": s.seconds, "peak_rss_bytes": s.peak_bytes,
                         "peak_exact": s.exact} for s in self.stages}

    def summary(self) -> str:
        """``load 2.1 s (peak 1.20 GB), split 0.4 s (peak ~1.01 GB), ...`` (``~``: sampled)."""
        return ", ".join(f"{s.name} {s.seconds:.1f} s (peak {'' if s.exact else '~'}"
                         f"{s.peak_bytes / 1e9:.2f} GB)" for s in self.stages)
