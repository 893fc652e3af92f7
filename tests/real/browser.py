"""A real headless Chromium driven over the DevTools protocol (a websocket), for the console test and bench.

Debian's `chromium` package (apt-get install -y chromium). No selenium/driver: Chromium listens on a free
port (`--remote-debugging-port=0`, written to `DevToolsActivePort` in its profile folder), each tab is a
websocket, and `Runtime.evaluate` runs JavaScript in the page.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """One tab: `call` a DevTools method, `evaluate` JavaScript, `navigate` and wait for the load event."""

    def __init__(self, ws_url: str, timeout_s: float = 20.0) -> None:
        from websockets.sync.client import connect

        self._conn = connect(ws_url, max_size=None, open_timeout=timeout_s)
        self.ws = self._conn.__enter__()
        self.timeout_s = timeout_s
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + self.timeout_s
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method} failed: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of `expression` (promises awaited); raises on a JavaScript exception."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"JavaScript error in {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def navigate(self, url: str) -> float:
        """Open `url` and wait for its load event; returns seconds from the request to the load event."""
        self.call("Page.enable")
        self.events.clear()
        t0 = time.perf_counter()
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + self.timeout_s
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            self.events.append(msg)
        return time.perf_counter() - t0

    def wait_for(self, expression: str, timeout_s: float = 10.0, poll_s: float = 0.02) -> Any:
        """Poll `expression` until it is truthy; returns its value or raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(poll_s)
        raise TimeoutError(f"the page never made {expression!r} true within {timeout_s} s")

    def close(self) -> None:
        self._conn.__exit__(None, None, None)


class Chromium:
    """A headless Chromium process with its own throw-away profile; `new_page()` opens tabs."""

    def __init__(self, binary: str | None = None, timeout_s: float = 30.0) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise FileNotFoundError("no Chromium found; apt-get install -y chromium")
        self.profile = Path(tempfile.mkdtemp(prefix="s2r-chromium-"))
        # --no-sandbox: CI and containers run as root, where Chromium's sandbox refuses to start.
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
             # Tabs opened over DevTools count as background tabs: keep their timers and rendering at full rate.
             "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
             "--disable-backgrounding-occluded-windows",
             "--remote-allow-origins=*", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium ({binary}) did not open its DevTools port within {timeout_s} s")
            time.sleep(0.05)
        self.port = int(port_file.read_text().splitlines()[0])
        self.timeout_s = timeout_s

    def new_page(self) -> Page:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
            target = json.loads(r.read())
        return Page(target["webSocketDebuggerUrl"], self.timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
