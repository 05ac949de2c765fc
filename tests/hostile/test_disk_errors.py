"""A full disk, a quota, a read-only or forbidden folder, a killed writer: one line naming the file
and what was kept, no temporary file left behind, stale ones of killed runs cleaned on the next
write, and a live writer's temporaries never taken."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cfrec._io import (
    atomic_path,
    clean_stale_temps,
    locked_mkdir,
    locked_temp_file,
    write_text_atomic,
)
from cfrec.cli import main
from cfrec.data.interactions import Interactions
from cfrec.errors import StorageError
from cfrec.models import Recommender, persistence
from cfrec.models.baseline import Baseline
from cfrec.models.export import write_recommendations
from cfrec.models.persistence import current_version
from cfrec.testing import make_ratings

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}


@pytest.fixture(scope="module")
def data() -> Interactions:
    return make_ratings()


def _old_model(data: Interactions, tmp_path: Path) -> Path:
    return Baseline(reg_user=1.0).fit(data).save(tmp_path / "model")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---------------------------------------------------------------------- model saves
def test_safetensors_disk_full_is_one_line_and_the_old_model_stays(data: Interactions, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.numpy
    from safetensors import SafetensorError

    path = _old_model(data, tmp_path)
    before = current_version(path)

    def full(*args: object, **kwargs: object) -> None:
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    with pytest.raises(StorageError) as info:
        Baseline(reg_user=9.0).fit(data).save(path)
    assert str(info.value) == (f"cannot save the model to {path}: the disk is full (no space left on device) "
                               f"while writing weights.safetensors; the previous model at {path} is unchanged")
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert current_version(path) == before and _leftovers(path) == []
    assert Recommender.load(path).get_params()["reg_user"] == 1.0


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "quota"),
                                             (errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
                                             (errno.EIO, "input/output error")])
def test_json_write_failures_name_the_step(data: Interactions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           code: int, words: str) -> None:
    path = _old_model(data, tmp_path)

    def fail(target: Path, obj: object) -> None:
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(persistence, "_write_json", fail)
    with pytest.raises(StorageError, match=rf"^cannot save the model to {path}: .*{words}.* while writing "
                                           rf"model\.json; the previous model at {path} is unchanged$"):
        Baseline().fit(data).save(path)
    assert _leftovers(path) == [] and len([p for p in path.iterdir() if p.is_dir()]) == 1


def test_pointer_failure_removes_the_new_version(data: Interactions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _old_model(data, tmp_path)
    real = os.replace

    def replace(src: object, dst: object) -> None:
        if Path(str(dst)).name == "CURRENT":
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(persistence.os, "replace", replace)
    with pytest.raises(StorageError, match="quota is exceeded while writing CURRENT; the previous model"):
        Baseline().fit(data).save(path)
    assert _leftovers(path) == [] and len([p for p in path.iterdir() if p.is_dir()]) == 1


def test_first_save_says_nothing_was_saved(data: Interactions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(persistence, "_write_json", _enospc)
    with pytest.raises(StorageError, match=r"the disk is full .*while writing model\.json; no model was saved$"):
        Baseline().fit(data).save(tmp_path / "new")
    assert list((tmp_path / "new").iterdir()) == []


# ---------------------------------------------------------------------- atomic files
def test_recommendations_file_disk_full_keeps_the_old_file(data: Interactions, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model = Baseline().fit(data)
    out = tmp_path / "recs.csv"
    out.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)
    with pytest.raises(StorageError, match=rf"^cannot write {out}: the disk is full .*; the previous recs\.csv is "
                                           r"unchanged$"):
        write_recommendations(model, out, k=3)
    assert out.read_text(encoding="utf-8") == "old\n" and _leftovers(tmp_path) == []


def test_cli_prints_one_line_for_a_full_disk(data: Interactions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = Baseline().fit(data).save(tmp_path / "model")
    monkeypatch.setattr(pd.DataFrame, "to_csv", _enospc)
    capsys.readouterr()
    assert main(["recommend", str(path), "--all", "--out", str(tmp_path / "recs.csv"), "-k", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"error: cannot write {tmp_path / 'recs.csv'}: the disk is full")
    assert _leftovers(tmp_path) == []


def test_cli_prints_one_line_for_an_unwrapped_os_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """An OS failure no command words itself (here: reading a file that vanished) is one line too."""
    import cfrec.cli.query as cli_query

    def vanished(path: Path) -> None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))

    monkeypatch.setattr(cli_query, "load_model", vanished)
    capsys.readouterr()
    assert main(["recommend", str(tmp_path / "gone"), "--user", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'gone'}: no such file or directory (missing, or removed while in use)"


def test_a_model_file_vanishing_mid_read_is_a_model_file_error(data: Interactions, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from cfrec.errors import ModelFileError

    path = _old_model(data, tmp_path)
    real = persistence.read_header

    def gone(weights: Path) -> dict[str, Any]:
        weights.unlink()
        return real(weights)

    monkeypatch.setattr(persistence, "read_header", gone)
    with pytest.raises(ModelFileError, match=r"weights\.safetensors: cannot read it: no such file or directory"):
        Recommender.load(path)


# ---------------------------------------------------------------------- stale temporaries
_KILLED_IN_WRITE = """
import os, signal, sys
from cfrec._io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half", encoding="utf-8")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "recs.csv"
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", _KILLED_IN_WRITE, str(target)], env=ENV, timeout=120)
        assert proc.returncode == -signal.SIGKILL
    # each killed run already removed its predecessor's temporary: one is left, of the last run
    assert len(_leftovers(tmp_path)) == 1 and not target.exists()
    foreign = tmp_path / ".other.csv.abcdefgh.tmp"  # another target's: not ours to take
    foreign.write_text("x", encoding="utf-8")
    write_text_atomic(target, "done\n")
    assert _leftovers(tmp_path) == [foreign.name] and target.read_text(encoding="utf-8") == "done\n"


def test_a_live_writers_temporary_is_never_taken(tmp_path: Path) -> None:
    target = tmp_path / "recs.csv"
    fd, live = locked_temp_file(tmp_path, ".recs.csv.", ".tmp")  # another writer, still writing
    try:
        stale = tmp_path / ".recs.csv.zzzzzzzz.tmp"
        stale.write_text("dead", encoding="utf-8")
        assert clean_stale_temps(target) == [stale]
        with atomic_path(target) as tmp:  # a second concurrent writer
            tmp.write_text("mine", encoding="utf-8")
        assert live.exists() and target.read_text(encoding="utf-8") == "mine"
    finally:
        os.close(fd)
    assert clean_stale_temps(target) == [live]  # its writer is gone now


def test_a_live_model_save_is_never_taken_by_a_concurrent_one(data: Interactions, tmp_path: Path) -> None:
    path = _old_model(data, tmp_path)
    fd = locked_mkdir(path / ".tmp-v-20261207T000000-1-0000aaaa")  # a save in progress elsewhere
    dead = path / ".tmp-v-20261207T000000-2-0000bbbb"  # a save killed earlier
    dead.mkdir()
    (dead / "weights.safetensors").write_bytes(b"x" * 100)
    try:
        Baseline(reg_user=2.0).fit(data).save(path)
        assert _leftovers(path) == [".tmp-v-20261207T000000-1-0000aaaa"]
    finally:
        os.close(fd)
    Baseline(reg_user=3.0).fit(data).save(path)
    assert _leftovers(path) == [] and Recommender.load(path).get_params()["reg_user"] == 3.0


def test_a_locked_file_is_seen_as_live_through_flock(tmp_path: Path) -> None:
    """The check the cleaner relies on: a second open file of the same process conflicts."""
    fd, live = locked_temp_file(tmp_path, ".x.", ".tmp")
    other = os.open(live, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(other)
        os.close(fd)


# ---------------------------------------------------------------------- a real full file system
def _can_mount_tmpfs(where: Path) -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"],
                           capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here ({probe.stderr.strip()[:120]})"


def test_training_into_a_full_tmpfs(data: Interactions, tmp_path: Path) -> None:
    """In a private mount namespace (``unshare -rm``, no root needed where user namespaces are
    allowed): a 256 KiB tmpfs that holds one small model; a bigger one does not fit."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    reason = _can_mount_tmpfs(mnt)
    if reason:
        pytest.skip(reason)
    ratings = tmp_path / "ratings.csv"
    pd.DataFrame({"user_id": data.user_map.to_raw(data.users), "item_id": data.item_map.to_raw(data.items),
                  "rating": data.ratings}).to_csv(ratings, index=False)
    cfrec = f"{sys.executable} -m cfrec train {ratings} --split none --rating-scale 1,5 -o {mnt}/m"
    script = (f"mount -t tmpfs -o size=256k tmpfs {mnt} && {cfrec} -m baseline > /dev/null 2>&1 && "
              f"{cfrec} -m mf --factors 1200 --epochs 1 > /dev/null 2> {tmp_path}/err.txt; echo rc=$? && "
              f"ls -A {mnt}/m && ls -A {mnt}/m/v-* && {sys.executable} -c 'from cfrec.models import Recommender; "
              f"print(type(Recommender.load(\"{mnt}/m\")).__name__)'")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, capture_output=True, text=True,
                          timeout=600)
    err = (tmp_path / "err.txt").read_text(encoding="utf-8").strip()
    assert "rc=1" in proc.stdout, (proc.stdout, proc.stderr, err)
    assert err == (f"error: cannot save the model to {mnt}/m: the disk is full (no space left on device) while "
                   f"writing weights.safetensors; the previous model at {mnt}/m is unchanged"), err
    listing = proc.stdout.split("rc=1", 1)[1].split()
    assert [n for n in listing if n.startswith(".")] == [] and "Baseline" in listing, proc.stdout
    assert np.sum([n.startswith("v-") for n in listing]) == 1
