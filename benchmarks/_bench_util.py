"""Helpers shared by the scale benchmarks (``scale.py``, ``ml25m_end_to_end.py``).

One measurement runs in one child process so that its peak memory is its own: :func:`run_child`
starts ``python <script> --child <spec.json>``, enforces a wall-clock limit and follows the
child's peak resident set size (``VmHWM`` of ``/proc/<pid>/status``, sampled while it runs, so
it is known even when the child is killed). ``wait4``'s ``ru_maxrss`` is recorded too, but on
Linux it also counts the launching process's RSS at the time of the fork, so it is only an upper
bound. Inside a child, :func:`reset_peak_rss` / :func:`peak_rss` measure the peak of one stage
(``/proc/self/clear_refs`` and ``VmHWM``). Nothing here imports cfrec, torch or a peer library,
so a child pays only for what it measures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

GB = 1024**3
#: Environment variables that set thread counts; recorded, and set for children only on request.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CFREC_NUM_THREADS")


# ---------------------------------------------------------------------- JSON
def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, tuples lists, paths strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as strict JSON to a temporary sibling, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(payload), indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document at ``path``, or None when it is missing or incomplete."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------- memory
def _status_kb(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``), or None where unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def current_rss() -> int | None:
    """Resident set size of this process now, in bytes (None where unknown)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark to its current RSS; False where the OS cannot.

    Linux resets ``VmHWM`` when ``5`` is written to ``/proc/self/clear_refs``.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def peak_rss() -> int:
    """Peak RSS of this process in bytes: ``VmHWM`` (since the last reset), else ``ru_maxrss``
    (since the process started)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return int(kb) * 1024


# ---------------------------------------------------------------------- child processes
@dataclass(frozen=True)
class ChildRun:
    """How a child process ended.

    Attributes
    ----------
    status
        ``"ok"`` (exit 0), ``"timeout"`` (killed at the limit), ``"killed"`` (a signal, e.g. the
        kernel's out-of-memory killer) or ``"crashed"`` (non-zero exit).
    returncode
        Exit code, or minus the signal number.
    seconds
        Wall-clock seconds from start to exit.
    peak_rss
        The child's peak resident set size in bytes: its last ``VmHWM`` seen while it ran
        (sampled every ``poll`` seconds; None if it ended before the first sample).
    rusage_maxrss
        ``ru_maxrss`` from ``wait4`` in bytes: an upper bound (includes the parent's RSS at fork).
    stderr_tail
        The last lines of the child's standard error.
    """

    status: str
    returncode: int
    seconds: float
    peak_rss: int | None
    rusage_maxrss: int
    stderr_tail: str

    def describe(self) -> str:
        """One line for a table cell: what went wrong, if anything."""
        if self.status == "timeout":
            return f"timeout after {self.seconds:.0f} s"
        if self.status == "killed":
            sig = -self.returncode
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            hint = " (out of memory?)" if sig == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        if self.status == "crashed":
            last = self.stderr_tail.strip().splitlines()
            return f"exit {self.returncode}: {last[-1][:200] if last else 'no message'}"
        return "ok"


def child_env(threads: int | None) -> dict[str, str]:
    """The environment for a child: the caller's, plus thread variables only when asked for."""
    env = dict(os.environ)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


def run_child(
    script: str | os.PathLike[str],
    spec: Mapping[str, Any],
    *,
    workdir: str | os.PathLike[str],
    timeout: float | None,
    threads: int | None = None,
    poll: float = 0.05,
) -> ChildRun:
    """Run ``python script --child spec.json`` in its own process group and wait for it.

    The spec is written to ``workdir`` (with the child's stdout and stderr logs). On timeout
    the whole group is killed. The child's peak RSS is sampled from ``/proc`` while it runs,
    so it is known (to within one poll interval) even when the child was killed.
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    spec_path = write_json_atomic(work / "spec.json", spec)
    out_path, err_path = work / "stdout.log", work / "stderr.log"
    cmd = [sys.executable, os.fspath(script), "--child", os.fspath(spec_path)]
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=child_env(threads), start_new_session=True)
        deadline = None if timeout is None else start + timeout
        timed_out = False
        hwm: int | None = None
        while True:
            pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            # VmHWM only grows within one address space, so the last sample (after exec) is
            # the child's own peak so far
            kb = _status_kb("VmHWM", proc.pid)
            if kb is not None:
                hwm = kb * 1024
            if deadline is not None and time.perf_counter() > deadline:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                pid, wstatus, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(poll)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(wstatus)
    proc.returncode = code  # reaped here with wait4; tell Popen so it does not wait again
    if timed_out:
        status = "timeout"
    elif code == 0:
        status = "ok"
    elif code < 0:
        status = "killed"
    else:
        status = "crashed"
    try:
        tail = "\n".join(err_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
    except OSError:
        tail = ""
    return ChildRun(status, code, seconds, hwm, int(usage.ru_maxrss) * 1024, tail)


# ---------------------------------------------------------------------- environment
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Versions, CPU and thread settings of this run (read without importing the libraries)."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": load,
        "thread_env": {var: os.environ.get(var) for var in THREAD_VARS},
        "versions": {dist: _version(dist) for dist in
                     ("cfrec", "numpy", "scipy", "torch", "implicit", "scikit-surprise", "pyarrow")},
        **(extra or {}),
    }


def default_cache(name: str) -> Path:
    """``$XDG_CACHE_HOME/cfrec-bench/<name>`` (else ``~/.cache/...``): data kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cfrec-bench" / name


# ---------------------------------------------------------------------- formatting
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table; ``align`` holds ``"l"`` or ``"r"`` per column."""
    align = align or ["l"] * len(headers)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_seconds(value: float | None) -> str:
    """Seconds with a precision that suits their size; an en dash when unknown."""
    if value is None or not math.isfinite(value):
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_gb(value: float | None) -> str:
    """Bytes as GB (GiB) with two decimals; an en dash when unknown."""
    return "–" if value is None else f"{value / GB:.2f}"
