"""The web page in headless Chromium, driven as a person would: it loads, a search for "star
wars" finds the film, three films get stars and the recommendations change each time, a film
opens its similar films; a screenshot is kept and the page logs no error and fetches nothing but
the service itself.

Chromium is started by the test and driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: NUL-separated JSON messages on file descriptors 3 and 4), so no
driver package is needed.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import artifact_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOST = "127.0.0.1"

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None,
                                 reason="headless Chromium not installed (apt-get install chromium)")]


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds() -> None:  # Chromium reads commands on fd 3 and writes on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        assert CHROMIUM is not None
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-extensions",
             "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=child_fds,
            close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session: str | None = None

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        box = self._replies.get(msg["id"])
                    if box is not None:
                        box.put(msg)
                else:
                    self.events.append(msg)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True,
             timeout: float = 60.0) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            mid = self._next
            box: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[mid] = box
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        reply = box.get(timeout=timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        self.call("Page.navigate", {"url": url})

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return {expression}; }} catch (e) {{ return false; }} }})()"
        while time.monotonic() < deadline:
            value = self.js(guarded)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for: {expression}")

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                      "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                      "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1})

    def type(self, selector: str, text: str) -> None:
        self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus();"
                "e.select(); })()")
        self.call("Input.insertText", {"text": text})

    def problems(self) -> list[str]:
        out = []
        for ev in self.events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                out.append("console: " + json.dumps(params.get("args", []))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                entry = params["entry"]
                out.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return out

    def requested(self) -> list[str]:
        return [ev["params"]["request"]["url"] for ev in self.events
                if ev.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False, timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_chrome)


@pytest.fixture(scope="module")
def service(ml100k_als_dir: Path):
    """``cfrec serve`` of an ALS model of ML-100K, in a thread on a free loopback port."""
    import uvicorn

    from cfrec.serve import create_app

    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ml100k_als_dir), host=HOST, port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.05)
    yield f"http://{HOST}:{port}"
    server.should_exit = True
    thread.join(timeout=30)


RECS = "[...document.querySelectorAll('#recs .item')].map(li => li.dataset.id)"


def test_search_rate_three_films_and_see_the_recommendations_change(service: str, tmp_path: Path) -> None:
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(service + "/")
        browser.wait("document.getElementById('recs').dataset.state === 'ready' && "
                     "document.getElementById('results').dataset.state === 'ready'")
        assert "ALS" in browser.js("document.getElementById('model').textContent")
        before = browser.js(RECS)
        assert len(before) == 10
        lists = [before]
        for query, title, stars in (("star wars", "Star Wars (1977)", 5),
                                    ("empire strikes", "Empire Strikes Back, The (1980)", 5),
                                    ("return of the jedi", "Return of the Jedi (1983)", 4)):
            version = int(browser.js("document.getElementById('recs').dataset.version"))
            browser.type("#search", query)
            browser.wait(f"document.getElementById('results').dataset.query === {json.dumps(query)} && "
                         "document.getElementById('results').dataset.state === 'ready'")
            first = browser.js("document.querySelector('#results .item .title').textContent")
            assert first == title
            browser.click(f"#results .item:first-child .stars button[data-stars='{stars}']")
            browser.wait(f"Number(document.getElementById('recs').dataset.version) > {version} && "
                         "document.getElementById('recs').dataset.state === 'ready'")
            now = browser.js(RECS)
            assert len(now) == 10 and now != lists[-1], (query, now)
            lists.append(now)
        rated = browser.js("[...document.querySelectorAll('#ratings .item .title')].map(e => e.textContent)")
        assert rated == ["Star Wars (1977)", "Empire Strikes Back, The (1980)", "Return of the Jedi (1983)"]
        assert browser.js("document.querySelectorAll('#ratings .stars button.on').length") == 14
        status = browser.js("document.getElementById('recs-status').textContent")
        assert "3 ratings" in status
        # none of the rated films is recommended back
        assert not {"50", "172", "181"} & set(lists[-1])
        # open a recommended film: its similar films show
        browser.click("#recs .item:first-child .title")
        browser.wait("document.getElementById('similar-list').dataset.state === 'ready' && "
                     "document.querySelectorAll('#similar-list .item').length === 10")
        shot = browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        png = base64.b64decode(shot["data"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        (artifact_dir() / "serve-page.png").write_bytes(png)
        assert browser.problems() == []
        outside = [u for u in browser.requested() if not u.startswith(service) and not u.startswith("data:")]
        assert outside == []
    finally:
        browser.close()


def test_the_page_reads_the_services_error_messages(service: str, tmp_path: Path) -> None:
    """A refused request surfaces the service's own message (what the page's error box shows)."""
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(service + "/")
        browser.wait("document.getElementById('recs').dataset.state === 'ready'")
        # ask the page's own helper for a list longer than the API allows: the API refuses it
        message = browser.js("api('/v1/recommend/1?k=100000').then(() => 'no error', e => e.message)")
        assert "k" in message and "10000" in message
    finally:
        browser.close()
