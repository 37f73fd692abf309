"""Headless Chromium for the explorer's browser tests and benchmark (like p2pico.testing).

Neighbours: ui/driver.mjs (the Node side: playwright-core driving Debian's
/usr/bin/chromium), tests/test_ui_browser.py and scripts/bench/ui.py (its users).

``open_browser()`` starts the driver and yields a :class:`Browser`; each method is one
command, answered in order.  Every wait has a timeout, so a test fails with the
page's console lines instead of hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UI_PACKAGE = ROOT / "ui"
DRIVER = UI_PACKAGE / "driver.mjs"
CHROMIUM = Path(os.environ.get("P2PICO_CHROMIUM", "/usr/bin/chromium"))


class BrowserError(RuntimeError):
    pass


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (UI_PACKAGE / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (cd ui && npm ci)"
    return None


class Browser:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._selector = selectors.DefaultSelector()
        assert proc.stdout is not None
        self._selector.register(proc.stdout, selectors.EVENT_READ)
        self._buffer = b""
        self._next = 0
        self.version: str | None = None

    def _read_line(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise BrowserError(f"the browser driver did not answer within {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise BrowserError(f"the browser driver exited ({self.proc.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, op: str, *, wait: float = 60.0, **args: Any) -> Any:
        """Send one command; ``wait`` bounds how long its answer may take."""
        self._next += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "id": self._next, **args}).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            reply = self._read_line(wait)
            if reply.get("id") == self._next:
                break
        if "error" in reply:
            console = "\n".join(reply.get("console") or [])
            raise BrowserError(f"{op} failed: {reply['error']}\npage console:\n{console}")
        return reply.get("ok")

    # -- the commands -----------------------------------------------------------------

    def goto(self, url: str) -> str:
        return str(self.call("goto", url=url))

    def eval(self, expr: str) -> Any:
        """Evaluate a JavaScript expression in the page (a promise is awaited)."""
        return self.call("eval", expr=expr)

    def wait_for(self, expr: str, timeout: float = 30.0) -> Any:
        """Wait until a JavaScript expression is truthy in the page; return its value."""
        return self.call("waitFor", wait=timeout + 10, expr=expr, timeout=int(timeout * 1000))

    def click(self, selector: str) -> None:
        self.call("click", selector=selector)

    def fill(self, selector: str, value: str) -> None:
        self.call("fill", selector=selector, value=value)

    def select(self, selector: str, value: str) -> None:
        self.call("select", selector=selector, value=value)

    def set_file(self, selector: str, name: str, content: str) -> None:
        self.call("setFile", selector=selector, name=name, content=content)

    def text(self, selector: str) -> str:
        return str(self.call("text", selector=selector))

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
        where: dict[str, Any] = {"from": list(start), "to": list(end)}
        self.call("drag", steps=steps, **where)

    def click_at(self, x: float, y: float) -> None:
        self.call("clickAt", at=[x, y])

    def screenshot(self, path: Path, selector: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.call("screenshot", path=str(path), selector=selector)
        return path

    def console(self) -> list[str]:
        lines = self.call("console")
        return [str(x) for x in lines]


@contextlib.contextmanager
def open_browser(
    *, width: int = 1400, height: int = 860, ready_timeout: float = 60.0
) -> Iterator[Browser]:
    """Start Chromium through ui/driver.mjs; stop it on exit."""
    why = missing()
    if why is not None:
        raise BrowserError(why)
    proc = subprocess.Popen(
        ["node", str(DRIVER)],
        cwd=UI_PACKAGE,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={
            **os.environ,
            "NODE_OPTIONS": "",
            "P2PICO_VIEW_W": str(width),
            "P2PICO_VIEW_H": str(height),
        },
    )
    browser = Browser(proc)
    try:
        ready = browser._read_line(ready_timeout)
        if not ready.get("ready"):
            raise BrowserError(f"the browser driver did not start: {ready}")
        browser.version = ready.get("version")
        yield browser
    finally:
        with contextlib.suppress(Exception):
            browser.call("quit", wait=10)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
