"""Model folders: crash-safe replacement, permissions, the earlier layout, early --out checks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cfrec.errors import ModelFileError
from cfrec.models import Recommender
from cfrec.models.baseline import Baseline
from cfrec.models.persistence import (
    POINTER_FILE,
    SAVE_STEPS,
    check_writable,
    clean_model_folder,
    current_version,
    sparse_from_state,
    sparse_to_state,
)
from cfrec.testing import make_ratings

REPO = Path(__file__).resolve().parents[2]

#: A writer that saves model B over model A and SIGKILLs itself right after step ``argv[2]``.
_KILLED_WRITER = """
import os, signal, sys
from cfrec.models.baseline import Baseline
from cfrec.models import persistence
from cfrec.testing import make_ratings

path, when = sys.argv[1], sys.argv[2]
model = Baseline(reg_user=50.0).fit(make_ratings())

def hook(step):
    if step == when:
        os.kill(os.getpid(), signal.SIGKILL)

arrays, meta = model.to_state()
persistence.save(path, arrays, meta, on_step=hook)
"""


def _params(path: Path) -> dict:
    return Recommender.load(path).get_params()


@pytest.mark.parametrize("step", SAVE_STEPS)
def test_a_writer_killed_after_any_step_leaves_a_complete_model(tmp_path: Path, step: str) -> None:
    data = make_ratings()
    old = Baseline(reg_user=1.0).fit(data)
    path = old.save(tmp_path / "model")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path), step], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    loaded = Recommender.load(path)  # always a complete model: the old one or the new one
    replaced = SAVE_STEPS.index(step) >= SAVE_STEPS.index("pointer_replaced")
    assert loaded.get_params()["reg_user"] == (50.0 if replaced else 1.0)
    np.testing.assert_array_equal(loaded.predict(["u001"], [100]),
                                  (Baseline(reg_user=50.0) if replaced else old).fit(data).predict(["u001"], [100]))
    # the next save removes what the interrupted one left behind
    Baseline(reg_user=7.0).fit(data).save(path)
    leftovers = [p.name for p in path.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == [] and _params(path)["reg_user"] == 7.0
    assert len([p for p in path.iterdir() if p.is_dir()]) <= 2  # current + the one it replaced


def test_versions_kept_and_files_get_the_usual_permissions(tmp_path: Path) -> None:
    data = make_ratings()
    path = tmp_path / "m"
    first = Baseline().fit(data).save(path)
    v1 = current_version(first)
    Baseline(reg_item=9.0).fit(data).save(path)
    v2 = current_version(path)
    assert v1 is not None and v2 is not None and v1 != v2 and v1.is_dir()  # the replaced one stays
    Baseline(reg_item=3.0).fit(data).save(path)
    assert not v1.exists() and v2.is_dir()  # older than the previous: removed
    mode = 0o666 & ~_umask()
    version = current_version(path)
    assert version is not None
    for f in version.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == mode, f
    assert stat.S_IMODE((path / POINTER_FILE).stat().st_mode) == mode


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_folders_of_the_earlier_layout_load_and_are_upgraded(tmp_path: Path) -> None:
    data = make_ratings()
    model = Baseline(reg_user=3.0).fit(data)
    flat = tmp_path / "flat"
    version = current_version(model.save(tmp_path / "new"))
    assert version is not None
    shutil.copytree(version, flat)  # model.json etc. directly in the folder
    stale = tmp_path / ".flat.tmp-123"  # a sibling leftover of that layout's writer
    stale.mkdir()
    assert _params(flat)["reg_user"] == 3.0
    Baseline(reg_user=4.0).fit(data).save(flat)
    assert _params(flat)["reg_user"] == 4.0
    assert not (flat / "model.json").exists() and (flat / POINTER_FILE).is_file()
    assert not stale.exists()


def test_pointer_to_nothing_is_a_clear_error(tmp_path: Path) -> None:
    path = Baseline().fit(make_ratings()).save(tmp_path / "m")
    (path / POINTER_FILE).write_text("v-20000101T000000-1-deadbeef\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match="points to no complete model"):
        Recommender.load(path)


def test_check_writable_refuses_before_training(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "new" / "model") == tmp_path / "new" / "model"
    (tmp_path / "empty").mkdir()
    check_writable(tmp_path / "empty")
    afile = tmp_path / "a.txt"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(ModelFileError, match="is a file"):
        check_writable(afile)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ModelFileError, match="not a cfrec model folder"):
        check_writable(other)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions
            pytest.skip("running as a user who may write anywhere")
        with pytest.raises(ModelFileError, match="not writable"):
            check_writable(locked / "model")
    finally:
        locked.chmod(0o700)


def test_wrong_shape_weights_name_the_file(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    path = Baseline().fit(make_ratings()).save(tmp_path / "m")
    version = current_version(path)
    assert version is not None
    weights = version / "weights.safetensors"
    arrays = load_file(str(weights))
    arrays["base.user_bias"] = arrays["base.user_bias"][:-3]
    save_file(arrays, str(weights))
    meta = json.loads((version / "model.json").read_text(encoding="utf-8"))
    meta["weights_sha256"] = None
    (version / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"weights\.safetensors: the array .base\.user_bias. has shape \(57,\), expected \(users\) \(users=60"):
        Recommender.load(path)


def test_clean_leaves_a_foreign_folder_alone(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "model.json.bak").write_text("x", encoding="utf-8")
    assert clean_model_folder(folder) == []
    assert (folder / "model.json.bak").is_file()


def test_sparse_state_round_trip_and_checks() -> None:
    m = sp.csr_array(np.array([[0, 1.5, 0], [0, 0, 0], [2, 0, -3]], dtype=np.float64))
    arrays = sparse_to_state("sim", m)
    assert sorted(arrays) == ["sim_data", "sim_indices", "sim_indptr"]
    assert (arrays["sim_indptr"].dtype, arrays["sim_indices"].dtype, arrays["sim_data"].dtype) == (
        np.int64, np.int32, np.float32)
    back = sparse_from_state(arrays, "sim", (3, 3), "similarities")
    assert back.dtype == np.float32 and back.shape == (3, 3)
    np.testing.assert_array_equal(back.toarray(), m.toarray())
    with pytest.raises(ModelFileError, match="similarities: the weights lack the array 'sim_data'"):
        sparse_from_state({k: v for k, v in arrays.items() if k != "sim_data"}, "sim", (3, 3), "similarities")
    for bad in ({"sim_indptr": arrays["sim_indptr"][:-1]}, {"sim_indices": arrays["sim_indices"] + 3},
                {"sim_indptr": arrays["sim_indptr"][::-1].copy()}, {"sim_data": arrays["sim_data"][:-1]}):
        with pytest.raises(ModelFileError, match="does not form a 3 x 3 sparse matrix"):
            sparse_from_state({**arrays, **bad}, "sim", (3, 3), "similarities")
    with pytest.raises(ModelFileError, match="does not form a 4 x 3"):
        sparse_from_state(arrays, "sim", (4, 3), "similarities")


# ---------------------------------------------------------------------- format version 1
FORMAT_V1 = Path(__file__).parent / "data" / "format_v1"


@pytest.mark.parametrize("name", sorted(p.name for p in FORMAT_V1.iterdir() if p.is_dir()))
def test_folders_of_format_version_1_load_and_predict_as_saved(name: str, tmp_path: Path) -> None:
    """Folders written by the previous format (every model saved zero biases; the framework's
    arrays read by the persistence module itself) load with the same predictions and lists they
    were saved with, and save again in the current format."""
    expected = json.loads((FORMAT_V1 / "expected.json").read_text(encoding="utf-8"))[name]
    meta = json.loads((current_version(FORMAT_V1 / name) / "model.json").read_text(encoding="utf-8"))
    assert meta["format_version"] == 1
    model = Recommender.load(FORMAT_V1 / name)
    users, items = np.array(expected["users"], dtype=object), np.array(expected["items"])
    # a ranking model's fallbacks for unknown ids changed since (an unknown item at the bottom of
    # the scale, an unknown user by popularity): its personalised pairs must still be as saved
    kept = (np.ones(len(users), dtype=bool) if model.predicts_ratings
            else model.predict_detailed(users, items).fallback == 0)
    assert kept.any()
    np.testing.assert_array_equal(model.predict(users, items)[kept], np.float32(expected["predict"])[kept])
    assert model.recommend("u003", k=5).ids.tolist() == expected["recommend"]
    again = Recommender.load(model.save(tmp_path / name))
    np.testing.assert_array_equal(again.predict(users, items), model.predict(users, items))
    meta = json.loads((current_version(tmp_path / name) / "model.json").read_text(encoding="utf-8"))
    assert meta["format_version"] == 2


def test_the_format_module_writes_plain_arrays_and_meta(tmp_path: Path) -> None:
    """persistence.save/load round-trip any ``(arrays, meta)``: nothing there knows a model."""
    from cfrec.models import persistence

    arrays = {"a": np.arange(5, dtype=np.int32), "b": np.ones((2, 3), dtype=np.float32)}
    meta = {"model_class": "Anything", "numbers": [1, 2.5], "items": {"ids": [1, 2], "title": ["x", "y"]}}
    persistence.save(tmp_path / "m", arrays, meta)
    saved = persistence.load(tmp_path / "m")
    assert saved.meta["numbers"] == [1, 2.5] and saved.meta["items"] == meta["items"]
    assert saved.meta["format_version"] == persistence.FORMAT_VERSION
    for key, value in arrays.items():
        np.testing.assert_array_equal(saved.arrays[key], value)
    assert (saved.folder / "items.json").is_file()
    with pytest.raises(ModelFileError, match="not a registered model class"):
        Recommender.load(tmp_path / "m")
