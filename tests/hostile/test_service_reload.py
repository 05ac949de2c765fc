"""Reloading a corrupt model folder answers 409 naming the file, never 500 or a reset
connection; the old model keeps serving; the traceback of an unexpected failure is logged once;
a reload started by SIGHUP ends in a logged error, never "Task exception was never retrieved"."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cfrec.errors import ModelFileError
from cfrec.models.persistence import current_version
from cfrec.serve import create_app
from cfrec.serve.snapshot import ModelHolder
from tests.serve.conftest import clustered_data, save

TOKEN = "hostile-test-admin-token-0123"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def nest_model_json(version: Path) -> str:
    """model.json with a value nested 100,000 deep (what a stack-hungry parser chokes on)."""
    meta = json.loads((version / "model.json").read_text())
    text = json.dumps(meta)
    deep = "[" * 100_000 + "]" * 100_000
    (version / "model.json").write_text(text[:-1] + f', "extra": {deep}}}')
    return "model.json"


def truncate_weights(version: Path) -> str:
    weights = version / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: len(weights.read_bytes()) // 2])
    return "weights.safetensors"


def garbage_model_json(version: Path) -> str:
    (version / "model.json").write_bytes(b"\xff\xfe not json")
    return "model.json"


@pytest.mark.parametrize("corrupt", [nest_model_json, truncate_weights, garbage_model_json])
def test_a_bad_version_is_409_naming_the_file_and_the_old_model_serves(
        tmp_path: Path, corrupt: Callable[[Path], str], caplog: pytest.LogCaptureFixture) -> None:
    folder = save("mf", clustered_data(), tmp_path / "model")
    app = create_app(folder, admin_token=TOKEN, allowed_hosts=())
    with TestClient(app, base_url="http://127.0.0.1", headers=ADMIN) as c:
        before = c.get("/readyz").json()["model_version"]
        expected = c.get("/v1/recommend/3").json()
        save("mf", clustered_data(), folder, seed=2)
        version = current_version(folder)
        name = corrupt(version)
        with caplog.at_level(logging.ERROR):
            r = c.post("/v1/admin/reload")
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "reload_failed" and before in err["message"]
        assert name in err["message"] or str(version) in err["message"], err["message"]
        assert c.get("/v1/recommend/3").json() == expected
        tracebacks = [rec for rec in caplog.records if rec.exc_info]
        assert len(tracebacks) <= 1


def test_any_loading_failure_becomes_a_model_file_error(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the loader raises (a RecursionError, an IndexError from inconsistent arrays)
    comes out as ModelFileError naming the folder, and the old snapshot stays."""
    folder = save("mf", clustered_data(), tmp_path / "model")
    holder = ModelHolder(folder)
    first, _, _ = holder.reload()
    for exc in (RecursionError("maximum recursion depth exceeded"), IndexError("index 7 is out "
                "of bounds"), ValueError("shapes (3,) and (4,) not aligned")):
        def broken(*_a: object, _exc: BaseException = exc, **_k: object) -> None:
            raise _exc
        monkeypatch.setattr("cfrec.serve.snapshot.load_served", broken)
        with pytest.raises(ModelFileError, match=str(folder)):
            holder.reload(force=True)
        assert holder.current is first and holder.last_error


def test_a_failed_sighup_reload_leaves_no_unretrieved_task_exception(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGHUP to a service whose folder now holds a corrupt version: the reload task logs the
    failure (one line, plus the traceback once for an unexpected exception) and ends cleanly."""
    folder = save("mf", clustered_data(), tmp_path / "model")
    app = create_app(folder, admin_token=TOKEN, handle_sighup=True)
    first = app.state.holder.current
    problems: list[dict] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: problems.append(ctx))
        async with app.router.lifespan_context(app):
            save("mf", clustered_data(), folder, seed=2)
            nest_model_json(current_version(folder))
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(600):
                await asyncio.sleep(0.05)
                if app.state.holder.last_error:
                    break
        await asyncio.sleep(0.1)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
        gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert problems == [] and "never retrieved" not in caplog.text
    assert app.state.holder.current is first
    assert "SIGHUP: reload failed, still serving" in caplog.text and "model.json" in caplog.text
    assert len([r for r in caplog.records if r.exc_info]) <= 1
