"""``cfrec serve --workers 2``: a worker killed with SIGKILL is replaced and the service keeps
answering (it used to stop the whole service)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.hostile._service import HOST, free_port
from tests.serve.conftest import clustered_data, save


def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    folder = save("mf", clustered_data(), tmp_path / "model")
    port = free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "cfrec", "serve", str(folder), "--host", HOST,
                             "--port", str(port), "--workers", "2", "--no-access-log"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://{HOST}:{port}"

    def wait_for(pattern: str, timeout: float = 240) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            found = re.search(pattern, log.read_text(errors="replace"))
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in the log: {log.read_text(errors='replace')[-2000:]}")

    try:
        pids = [int(p) for p in wait_for(r"with 2 workers \(pids (\d+), (\d+)\)").groups()]
        wait_for(r"(?s)startup complete.*startup complete")  # both workers serve
        os.kill(pids[0], signal.SIGKILL)
        new = int(wait_for(rf"worker {pids[0]} exited with status -9; started worker (\d+)")
                  .group(1))
        assert new not in pids
        wait_for(r"(?s)(startup complete.*){3}")  # the new worker serves too
        for _ in range(20):
            assert httpx.get(f"{base}/v1/recommend/3", timeout=30).status_code == 200
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, log.read_text(errors="replace")[-2000:]
