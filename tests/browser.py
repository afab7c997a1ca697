"""Open an HTML file in headless Chromium and report what a reader would see. Standard library only.

Chromium is driven over its DevTools protocol through a pipe (`--remote-debugging-pipe`: commands
on fd 3, replies on fd 4, one JSON message per NUL-terminated chunk), so no WebSocket client and no
network port are needed. Used by tests/test_report_browser.py; also a command-line tool:

    python tests/browser.py results/report.html report.png
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The flags the issue asks for: this machine has no network, and a fresh profile each time.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]

# Waits for every image to decode, then lists what the checks need.
INSPECT = """
(async () => {
  await Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
  return {
    images: Array.from(document.images).map(i => ({
      alt: i.alt, width: i.naturalWidth, height: i.naturalHeight, scheme: i.src.split(':')[0]})),
    sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
    brokenAnchors: Array.from(document.querySelectorAll('a[href^="#"]'))
      .map(a => a.getAttribute('href').slice(1)).filter(id => !document.getElementById(id)),
    scrollWidth: document.documentElement.scrollWidth,
    // how far any table would scroll sideways inside its own box (0: it fits)
    tableOverflow: Math.max(0, ...Array.from(document.querySelectorAll('.table-wrap'))
      .map(w => w.scrollWidth - w.clientWidth)),
    verdictWidths: Array.from(document.querySelectorAll('table.study-table td.verdict'))
      .map(td => td.getBoundingClientRect().width),
    title: document.title,
    verdicts: Array.from(document.querySelectorAll('table.study-table td.verdict'))
      .map(td => td.innerText.trim()).filter(t => t),
    bestBadges: Array.from(document.querySelectorAll('table.study-table .badge'))
      .map(b => b.innerText.trim()).filter(t => t === 'best').length,
  };
})()
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self, binary: str, profile: str | Path, timeout: float = 60):
        self.timeout = timeout
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def fds():  # in the child: the pipe ends on fds 3 and 4, where Chromium expects them
            os.dup2(to_child, 100)
            os.dup2(from_child, 101)
            os.dup2(100, 3)
            os.dup2(101, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(3, 4),
            preexec_fn=fds,
        )
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _send(self, message: dict) -> None:
        os.write(self._write, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium exited: " + self.proc.stderr.read().decode()[-2000:])
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url: str, width: int = 1366, height: int = 900) -> None:
        """Load `url` in a laptop-sized viewport and wait for its load event."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads) so far."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                out.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(params["entry"].get("text", "error"))
        return out

    def screenshot(self, path: str | Path, full_page: bool = True) -> None:
        """A PNG of the page (the whole page by default, not only the viewport)."""
        params = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
        data = self.call("Page.captureScreenshot", session=True, **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)
        self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def inspect(html: str | Path, screenshot: str | Path | None = None, binary: str | None = None):
    """Open `html` and return (page facts from INSPECT, console errors); optionally a screenshot."""
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        with Chromium(binary, profile) as browser:
            browser.open(Path(html).resolve().as_uri())
            facts = browser.evaluate(INSPECT)
            if screenshot:
                browser.screenshot(screenshot)
            return facts, browser.errors()


if __name__ == "__main__":
    facts, errors = inspect(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    print(json.dumps({"errors": errors, **facts}, indent=1)[:5000])
