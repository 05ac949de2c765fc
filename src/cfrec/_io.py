"""Atomic file writes, one-line I/O errors and JSON conversion shared by every module that
writes files.

A file is written to a temporary sibling (``.NAME.XXXXXXXX.tmp``), flushed to disk and renamed
over the target, so a reader never sees a half-written file and a failure leaves any previous
file untouched. A failure of the system (disk full, quota, permission, read-only file system)
raises :class:`~cfrec.errors.StorageError`: one line naming the file, what failed and what was
kept; the temporary file is removed.

The writer holds an exclusive ``flock`` on its temporary from the instant it exists until it is
renamed or removed, so the next write to the same target tells a temporary left by a killed run
(no lock: the kernel drops a dead process's locks) from one a live writer is filling (locked),
and removes only the former (:func:`remove_stale`); two concurrent writers never take each
other's files.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfrec.errors import StorageError

try:  # advisory locks tell a live writer's temporary from a dead one's (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows: stale temporaries are left alone
    fcntl = None  # type: ignore[assignment]


_REASONS = {
    errno_codes.ENOSPC: "the disk is full (no space left on device)",
    errno_codes.EDQUOT: "the disk quota is exceeded",
    errno_codes.EACCES: "permission denied",
    errno_codes.EPERM: "operation not permitted",
    errno_codes.EROFS: "the file system is read-only",
    errno_codes.ENOENT: "no such file or directory (missing, or removed while in use)",
    errno_codes.EIO: "an input/output error of the device",
    errno_codes.EFBIG: "the file is too large for this file system or the process's file-size limit",
}
_CODE_RE = re.compile(r"(?:code: |Errno |os error )(\d+)")


def os_error_reason(exc: BaseException) -> tuple[int | None, str]:
    """``(errno, reason in words)`` of an OS-level failure: an ``OSError``, or an error of a
    library that wraps one in its message (safetensors' ``SafetensorError`` says ``code: 28``)."""
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if code is None:
        found = _CODE_RE.search(str(exc))
        code = int(found.group(1)) if found else None
    if code in _REASONS:
        return code, _REASONS[code]
    if code is not None:
        return code, os.strerror(code).lower()
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip().splitlines()[0]
    return None, text[:200]


def storage_error(exc: BaseException, doing: str, path: str | Path, kept: str,
                  detail: str = "") -> StorageError:
    """The one-line :class:`~cfrec.errors.StorageError` for ``exc``: ``"cannot DOING PATH: REASON;
    KEPT"`` (``detail``, e.g. ``"writing model.json"``, says which step failed; e.g. ``"cannot write recs.csv: the disk is full ...; the previous recs.csv is
    unchanged"``)."""
    if isinstance(exc, StorageError):
        return exc
    code, reason = os_error_reason(exc)
    other = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    at = f" while {detail}" if detail else ""
    if not at and other and Path(str(other)).name != Path(path).name and not Path(str(other)).name.startswith("."):
        at = f" ({other})"
    tail = f"; {kept}" if kept else ""
    return StorageError(f"cannot {doing} {path}: {reason}{at}{tail}", errno=code, filename=str(path))


def is_os_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the system rather than of the data: an ``OSError``,
    or safetensors' error wrapping one (disk full while serialising)."""
    if isinstance(exc, OSError):
        return True
    return type(exc).__name__ == "SafetensorError" and _CODE_RE.search(str(exc)) is not None


def _try_lock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file or folder open as ``fd`` (a cleaner did not take it)."""
    try:
        mine, named = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def locked_temp_file(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new temporary file ``folder/PREFIX XXXXXXXX SUFFIX``, open and exclusively locked.

    The lock is held until the descriptor is closed (or the process dies), so
    :func:`remove_stale` never takes a live writer's file; a file a cleaner took in the instant
    between creating and locking it is noticed and replaced by a fresh one.
    """
    for _ in range(100):
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        if _try_lock(fd) and _still_named(fd, Path(name)):
            return fd, Path(name)
        os.close(fd)
    raise OSError(errno_codes.EAGAIN, "could not create a temporary file that stays", str(folder))


def locked_mkdir(path: Path) -> int:
    """Create the folder ``path`` and return a descriptor holding an exclusive lock on it (see
    :func:`locked_temp_file`); raises ``FileExistsError`` when ``path`` exists."""
    for _ in range(100):
        os.mkdir(path)
        fd = os.open(path, os.O_RDONLY)
        if _try_lock(fd) and _still_named(fd, path):
            return fd
        os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(path)
    raise OSError(errno_codes.EAGAIN, "could not create a folder that stays", str(path))


def remove_stale(candidate: Path) -> bool:
    """Remove ``candidate`` (a temporary file or folder of ours) if no live writer holds its lock
    (writers hold one from the moment they create it: :func:`locked_temp_file`,
    :func:`locked_mkdir`; a killed writer's lock died with it). Returns whether it was removed.
    Symbolic links and other users' files are left alone."""
    if fcntl is None:  # pragma: no cover - no advisory locks: leave them
        return False
    try:
        st = candidate.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        return False
    try:
        fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if not _try_lock(fd) or not _still_named(fd, candidate):
            return False  # a live writer holds it (or it was replaced meanwhile)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                candidate.unlink()
        return not os.path.lexists(candidate)
    finally:
        os.close(fd)


def temp_pattern(path: Path) -> re.Pattern[str]:
    """The names :func:`atomic_path` gives temporaries of ``path`` (``.NAME.XXXXXXXX.tmp``)."""
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Remove temporaries of ``path`` that killed writers left beside it (see :func:`remove_stale`);
    returns the removed paths."""
    path = Path(path)
    pattern = temp_pattern(path)
    try:
        names = [entry.name for entry in os.scandir(path.parent)]
    except OSError:
        return []
    return [path.parent / n for n in names if pattern.fullmatch(n) and remove_stale(path.parent / n)]


def file_mode() -> int:
    """Permissions of a new file: ``0o666`` less the process umask (read without changing it where
    /proc allows, as ``open()`` would apply it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Stale temporaries of ``path`` from killed runs are removed first. An OS failure inside the
    block or while committing (disk full, quota, permission ...) becomes a one-line
    :class:`~cfrec.errors.StorageError`; the temporary file is removed in every case.
    """
    path = Path(path)
    kept = f"the previous {path.name} is unchanged" if path.exists() else "nothing was written"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        fd, tmp = locked_temp_file(path.parent, f".{path.name}.", ".tmp")
    except OSError as exc:
        raise storage_error(exc, "write", path, kept) from None
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, file_mode())  # mkstemp makes 0600 files; give the usual permissions
            os.replace(tmp, path)
        except Exception as exc:
            if is_os_failure(exc):
                raise storage_error(exc, "write", path, kept) from None
            raise
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines kept as given)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf become null, numpy values plain) atomically."""
    text = json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def attributes(obj: Any, *names: str) -> dict[str, Any]:
    """``{name: getattr(obj, name)}`` for ``names``, in that order: the fields a ``to_dict`` or
    ``summary`` copies under their own names, each named once."""
    return {name: getattr(obj, name) for name in names}


def to_jsonable(obj: Any) -> Any:
    """Plain-Python copy of ``obj`` for strict JSON: numpy scalars/arrays unwrapped, NaN/inf/NA -> None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj
