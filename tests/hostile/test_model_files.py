"""Model folders rewritten by an attacker (checksums recomputed, so every file looks valid): each is
refused before use with one line naming the file, from the library, the CLI and the service."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cfrec.cli import main
from cfrec.errors import ModelFileError
from cfrec.models import Recommender
from cfrec.models.mf import BiasedMF
from cfrec.models.persistence import current_version
from cfrec.testing import make_ratings

Arrays = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = BiasedMF(n_factors=4, epochs=1, seed=0).fit(make_ratings())
    return model.save(tmp_path_factory.mktemp("good") / "model")


def _copy(saved: Path, tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "model"
    shutil.copytree(saved, path)
    version = current_version(path)
    assert version is not None
    return path, version


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rewrite(version: Path, arrays: Arrays | None = None, meta_text: str | None = None) -> None:
    """Write new weights and/or model.json into a version and record the weights' fresh checksum."""
    weights, meta_path = version / "weights.safetensors", version / "model.json"
    if arrays is not None:
        save_file(arrays, str(weights))
    text = meta_text if meta_text is not None else meta_path.read_text(encoding="utf-8")
    sha = _sha(weights)
    text = text.replace(json.loads(meta_path.read_text(encoding="utf-8"))["weights_sha256"], sha)
    meta_path.write_text(text, encoding="utf-8")


def _with_arrays(change: Callable[[Arrays], None]) -> Callable[[Path], None]:
    def corrupt(version: Path) -> None:
        arrays = load_file(str(version / "weights.safetensors"))
        change(arrays)
        _rewrite(version, arrays)
    return corrupt


def _with_meta(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def corrupt(version: Path) -> None:
        meta = json.loads((version / "model.json").read_text(encoding="utf-8"))
        change(meta)
        _rewrite(version, meta_text=json.dumps(meta))  # json.dumps writes NaN as NaN, as an attacker may
    return corrupt


def _nested(version: Path) -> None:
    text = (version / "model.json").read_text(encoding="utf-8")
    deep = "[" * 100_000 + "]" * 100_000
    _rewrite(version, meta_text=text.replace('"history": [', f'"history": [{deep}, ', 1))


def _set(arrays: Arrays, name: str, value: np.ndarray) -> None:
    arrays[name] = value


def _negative_seen(arrays: Arrays) -> None:
    arrays["base.seen_indices"] = arrays["base.seen_indices"].copy()
    arrays["base.seen_indices"][3] = -1


def _huge_indptr(arrays: Arrays) -> None:  # the row pointers that once drove recommend to 15.9 GB
    ptr = arrays["base.seen_indptr"].copy()
    ptr[5:] += 2_000_000_000
    arrays["base.seen_indptr"] = ptr


def _decreasing_indptr(arrays: Arrays) -> None:
    ptr = arrays["base.seen_indptr"].copy()
    ptr[5], ptr[6] = ptr[6], ptr[5]
    arrays["base.seen_indptr"] = ptr


def _nan_bias(arrays: Arrays) -> None:
    arrays["base.item_bias"] = arrays["base.item_bias"].copy()
    arrays["base.item_bias"][0] = np.nan


def _params(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta["params"].update(changes)


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "model.json nested 100,000 deep": (_nested, r"model\.json: JSON nested 100,00\d levels deep"),
    "factor inner dimension disagrees": (
        _with_arrays(lambda a: _set(a, "model.item_factors", np.zeros((40, 5), np.float32))),
        r"weights\.safetensors: the array 'model\.item_factors' has shape \(40, 5\), expected \(items, factors\)"),
    "factor rows disagree with the vocabulary": (
        _with_arrays(lambda a: _set(a, "model.user_factors", a["model.user_factors"][:-1])),
        r"weights\.safetensors: the array 'model\.user_factors' has shape \(59, 4\)"),
    "negative seen index": (_with_arrays(_negative_seen), r"weights\.safetensors: .*'base\.seen'.*column index -1"),
    "huge seen_indptr": (_with_arrays(_huge_indptr), r"weights\.safetensors: .*'base\.seen': row pointers run from 0"),
    "decreasing seen_indptr": (_with_arrays(_decreasing_indptr), r"weights\.safetensors: .*'base\.seen': row pointers decrease"),
    "seen_indptr of the wrong length": (
        _with_arrays(lambda a: _set(a, "base.seen_indptr", a["base.seen_indptr"][:-2])),
        r"weights\.safetensors: the array 'base\.seen_indptr' has shape \(59,\), expected \(users\+1\)"),
    "seen indices as floats": (
        _with_arrays(lambda a: _set(a, "base.seen_indices", a["base.seen_indices"].astype(np.float32))),
        r"weights\.safetensors: the array 'base\.seen_indices' has dtype F32, expected indices"),
    "NaN item bias": (_with_arrays(_nan_bias), r"weights\.safetensors: the array 'base\.item_bias' holds 1 NaN"),
    "extra tensor": (_with_arrays(lambda a: _set(a, "model.payload", np.zeros(1000, np.float32))),
                     r"weights\.safetensors: unknown tensor 'model\.payload' \(4\.0 kB\)"),
    "missing tensor": (_with_arrays(lambda a: a.pop("model.item_factors")),
                       r"weights\.safetensors: the array 'model\.item_factors' is missing"),
    "NaN global_mean": (_with_meta(lambda m: m.update(global_mean=float("nan"))),
                        r"model\.json: global_mean must be a finite number, got nan"),
    "null global_mean": (_with_meta(lambda m: m.update(global_mean=None)),
                         r"model\.json: global_mean must be a finite number, got None"),
    "inverted rating scale": (_with_meta(lambda m: m.update(rating_scale=[5, 1])), r"model\.json: rating_scale"),
    "user ids not a list": (_with_meta(lambda m: m.update(user_ids={"a": 1})), r"model\.json: user_ids must be a list"),
    "device gibberish": (_with_meta(_params(device="rm -rf /")), r"model\.json: params\.device 'rm -rf /' is not a device"),
    "threads 1e9 (whole)": (_with_meta(_params(threads=1_000_000_000)),
                            r"model\.json: params\.threads must be .*<= 1024, got 1000000000"),
    "threads 1e9 (float)": (_with_meta(_params(threads=1e9)), r"model\.json: params\.threads must be"),
    "unknown hyperparameter": (_with_meta(_params(shell="ls")), r"model\.json: params\.shell: BiasedMF has no such"),
    "negative factors": (_with_meta(_params(n_factors=-4)), r"model\.json: params\.n_factors must be"),
}


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_each_corrupted_folder_is_refused_naming_the_file(saved: Path, tmp_path: Path, case: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    corrupt, expected = CORRUPTIONS[case]
    path, version = _copy(saved, tmp_path)
    Recommender.load(path)  # sound before the attack
    corrupt(version)
    with pytest.raises(ModelFileError, match=expected) as info:
        Recommender.load(path)
    assert "\n" not in str(info.value) and str(version) in str(info.value)
    capsys.readouterr()
    assert main(["recommend", str(path), "--user", "u001", "--history", "0"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: ") and str(version) in line


def _extra_declared_tensor(weights: Path, name: str, nbytes: int) -> None:
    """Append to a safetensors file a header entry (and sparse zero data) of ``nbytes``."""
    raw = weights.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    header[name] = {"dtype": "F32", "shape": [nbytes // 4], "data_offsets": [len(data), len(data) + nbytes]}
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(weights, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head + data)
        fh.truncate(8 + len(head) + len(data) + nbytes)  # sparse: no disk used


def test_a_device_this_machine_lacks(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    """A model saved for a GPU loads on a machine with none and runs on the CPU (logged); an index
    beyond the GPUs a machine has is refused."""
    import torch

    path, version = _copy(saved, tmp_path)
    _with_meta(_params(device="cuda:7"))(version)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = Recommender.load(path)
    assert model.get_params()["device"] == "cpu" and "runs on the CPU" in caplog.text
    assert np.isfinite(model.predict([1], [1])).all()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ModelFileError, match=r"params\.device 'cuda:7' names a device this machine lacks"):
        Recommender.load(path)


def test_a_2gb_extra_tensor_is_refused_from_the_header_alone(saved: Path, tmp_path: Path) -> None:
    path, version = _copy(saved, tmp_path)
    weights = version / "weights.safetensors"
    _extra_declared_tensor(weights, "model.payload", 2 << 30)
    meta = json.loads((version / "model.json").read_text(encoding="utf-8"))
    meta["weights_sha256"] = None  # hashing 2 GB of zeros proves nothing more (the check runs first)
    (version / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"unknown tensor 'model\.payload' \(2\.1 GB\)"):
        Recommender.load(path)


def test_a_header_claiming_more_than_the_file_holds(saved: Path, tmp_path: Path) -> None:
    path, version = _copy(saved, tmp_path)
    weights = version / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[:8] = struct.pack("<Q", 1 << 40)
    weights.write_bytes(bytes(raw))
    _rewrite(version)
    with pytest.raises(ModelFileError, match=r"weights\.safetensors: safetensors header of 1,099,511,627,776 bytes"):
        Recommender.load(path)


def test_a_huge_items_json_is_not_parsed(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cfrec.models import persistence

    path, version = _copy(saved, tmp_path)
    (version / "items.json").write_text(json.dumps({"ids": list(range(10_000))}), encoding="utf-8")
    monkeypatch.setattr(persistence, "MAX_JSON_BYTES", 20_000)
    with pytest.raises(ModelFileError, match=r"items\.json: [\d,]+ bytes of item metadata \(at most 20,000 read\)"):
        Recommender.load(path)


def test_the_service_answers_409_naming_the_file(saved: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from cfrec.serve.app import create_app

    path, version = _copy(saved, tmp_path)
    token = "a-test-admin-token-of-enough-length"
    with TestClient(create_app(path, admin_token=token)) as client:
        for case in ("model.json nested 100,000 deep", "factor inner dimension disagrees", "negative seen index",
                     "NaN global_mean"):
            shutil.rmtree(version)
            shutil.copytree(current_version(saved) or saved, version)
            CORRUPTIONS[case][0](version)
            answer = client.post("/v1/admin/reload", params={"force": "true"},
                                 headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 409, (case, answer.text)
            assert str(version) in answer.text, case
        assert client.get("/v1/recommend/u001").status_code == 200  # the old model still serves


def test_the_models_declare_what_they_save() -> None:
    """A model class that saves arrays declares them, so its folders refuse unknown tensors (a
    model that does not is loaded with its bases' arrays checked and its own let through)."""
    from cfrec.models.names import get_spec

    declared = ("baseline", "mf", "als", "svdpp", "neumf", "bmf", "ials", "ease", "itemknn", "bpr", "multvae",
                "pop", "hybrid")
    for name in declared:
        cls = get_spec(name).cls()
        assert all("state_layout" in k.__dict__ or "_declared_arrays" in k.__dict__ for k in cls.__mro__
                   if "_state" in k.__dict__ or "_fallback_state" in k.__dict__), name
