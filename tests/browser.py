"""A small driver for headless Chromium over the Chrome DevTools Protocol.

Only what the dashboard's end-to-end test needs: open a loopback URL,
evaluate JavaScript, wait for a condition, take a screenshot, and collect
uncaught JavaScript exceptions. It talks CDP over one websocket (the
``websockets`` library's synchronous client), with a timeout on every wait,
and :class:`Browser` is a context manager that always kills the browser and
removes its profile.

    with Browser.launch() as browser:
        browser.navigate("http://127.0.0.1:8080/#/")
        browser.wait_for("document.querySelector('#runs-table') !== null")
        png = browser.screenshot()
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

__all__ = ["Browser", "BrowserError", "JavaScriptError", "find_chromium"]

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEVTOOLS_LINE = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(RuntimeError):
    """The browser failed to start, answered with an error, or a wait timed out."""


class JavaScriptError(BrowserError):
    """An expression evaluated in the page threw."""


def find_chromium() -> str | None:
    """The Chromium executable (``$CHROMIUM`` first), or ``None``."""
    override = os.environ.get("CHROMIUM")
    for candidate in (override, *CHROMIUM_CANDIDATES):
        if not candidate:
            continue
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _require_loopback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not _is_loopback(parts.hostname or ""):
        raise ValueError(f"only loopback http(s) URLs may be opened, got {url!r}")


class Browser:
    """One headless Chromium with one page, driven over CDP.

    Use :meth:`launch` in a ``with`` block. ``exceptions`` collects every
    ``Runtime.exceptionThrown`` event (uncaught errors and unhandled promise
    rejections in the page); ``console_errors`` collects ``console.error``
    calls; ``navigations`` counts main-frame navigations (a reload counts).
    """

    def __init__(self, process: subprocess.Popen[bytes], profile: Path, stderr_path: Path) -> None:
        self.process = process
        self.profile = profile
        self.stderr_path = stderr_path
        self.ws: ClientConnection | None = None
        self.session_id: str | None = None
        self.target_id: str | None = None
        self.exceptions: list[dict[str, Any]] = []
        self.console_errors: list[dict[str, Any]] = []
        self.navigations: list[str] = []
        self._ids = itertools.count(1)
        self._closed = False
        self._stack = contextlib.ExitStack()

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def launch(
        cls,
        *,
        executable: str | None = None,
        width: int = 1280,
        height: int = 900,
        startup_timeout: float = 30.0,
    ) -> Self:
        """Start Chromium headless with a fresh profile and open one blank page."""
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError("Chromium is not installed (run .ci/install-chromium)")
        profile = Path(tempfile.mkdtemp(prefix="runwatch-e2e-chromium-"))
        stderr_path = profile / "chromium-stderr.log"
        args = [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-dev-shm-usage",
            "--metrics-recording-only",
            "--mute-audio",
            # Nothing outside this machine: no proxy, and no name resolves but localhost.
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            f"--window-size={width},{height}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile / 'profile'}",
            "about:blank",
        ]
        stderr = stderr_path.open("wb")
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group, so every helper process dies with it
            )
        except BaseException:
            stderr.close()
            shutil.rmtree(profile, ignore_errors=True)
            raise
        stderr.close()  # the child holds its own copy
        browser = cls(process, profile, stderr_path)
        try:
            browser._connect(startup_timeout, width, height)
        except BaseException:
            browser.close()
            raise
        return browser

    def _connect(self, timeout: float, width: int, height: int) -> None:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
            match = DEVTOOLS_LINE.search(text)
            if match:
                url = match.group(1)
                break
            if self.process.poll() is not None:
                raise BrowserError(f"Chromium exited with {self.process.returncode} at startup:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise BrowserError(f"Chromium did not print its DevTools URL within {timeout} s:\n{text[-3000:]}")
            time.sleep(0.05)
        _require_ws_loopback(url)
        # Entered as a context manager (websockets >= 17.1 warns otherwise); closed by close().
        self.ws = self._stack.enter_context(
            connect(url, max_size=None, open_timeout=max(1.0, deadline - time.monotonic()), proxy=None)
        )
        remaining = max(1.0, deadline - time.monotonic())
        self.target_id = self.send("Target.createTarget", {"url": "about:blank"}, timeout=remaining)["targetId"]
        self.session_id = self.send(
            "Target.attachToTarget", {"targetId": self.target_id, "flatten": True}, timeout=remaining
        )["sessionId"]
        for method in ("Runtime.enable", "Page.enable", "Log.enable"):
            self.send(method, session=True, timeout=remaining)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=True,
            timeout=remaining,
        )

    def close(self) -> None:
        """Kill the browser and every process it started; remove its profile. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stack.close()  # closes the DevTools websocket
        except Exception:
            pass
        process = self.process
        if process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Helpers (renderer, GPU, zygote) may outlive the main process briefly.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if process.returncode is None:
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # until the group is gone (or only zombies awaiting a reaper remain)
            try:
                os.killpg(process.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol --------------------------------------------------------------------

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = False, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send one CDP command and wait (at most ``timeout`` s) for its result; events are handled meanwhile."""
        if self.ws is None or self._closed:
            raise BrowserError("the browser is closed")
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session_id
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method} within {timeout} s")
            reply = self._receive(remaining)
            if reply is None:
                continue
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self._handle_event(reply)

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        assert self.ws is not None
        try:
            raw = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            raise BrowserError(f"the DevTools connection closed: {exc}") from exc
        result: dict[str, Any] = json.loads(raw)
        return result

    def _handle_event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.exceptions.append(params.get("exceptionDetails", {}))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(params)
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.console_errors.append(params["entry"])
        elif method == "Page.frameNavigated" and not params.get("frame", {}).get("parentId"):
            self.navigations.append(params["frame"].get("url", ""))

    def pump(self, seconds: float = 0.0) -> None:
        """Handle the events that arrive within ``seconds`` (at least those already queued)."""
        deadline = time.monotonic() + seconds
        while True:
            message = self._receive(max(0.01, deadline - time.monotonic()))
            if message is None:
                if time.monotonic() >= deadline:
                    return
                continue
            self._handle_event(message)

    # -- page ------------------------------------------------------------------------

    def navigate(self, url: str, *, timeout: float = 15.0) -> None:
        """Open ``url`` (loopback only) and wait for its load event."""
        _require_loopback(url)
        result = self.send("Page.navigate", {"url": url}, session=True, timeout=timeout)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url} failed: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout=timeout, what=f"{url} to load")

    def evaluate(self, expression: str, *, timeout: float = 10.0) -> Any:
        """The JSON value of a JavaScript expression (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True, "timeout": int(timeout * 1000)},
            session=True,
            timeout=timeout + 1.0,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise JavaScriptError(f"{expression!r} threw: {text}")
        return result.get("result", {}).get("value")

    def wait_for(
        self,
        expression: str,
        *,
        timeout: float = 10.0,
        interval: float = 0.02,
        what: str | None = None,
        predicate: Callable[[Any], bool] = bool,
    ) -> Any:
        """Poll ``expression`` until ``predicate`` accepts its value; returns that value."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while True:
            try:
                value = self.evaluate(expression, timeout=max(1.0, min(5.0, deadline - time.monotonic())))
            except JavaScriptError:
                value = None  # the page may be between documents
            if predicate(value):
                return value
            if time.monotonic() >= deadline:
                raise BrowserError(f"timed out after {timeout} s waiting for {what or expression} (last: {value!r})")
            self.pump(interval)

    def screenshot(self, path: Path | str | None = None, *, timeout: float = 20.0) -> bytes:
        """A PNG of the viewport; written to ``path`` too when given."""
        result = self.send("Page.captureScreenshot", {"format": "png"}, session=True, timeout=timeout)
        png = base64.b64decode(result["data"])
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(png)
        return png

    def exception_texts(self) -> list[str]:
        """Readable lines for the collected uncaught exceptions."""
        lines = []
        for details in self.exceptions:
            description = details.get("exception", {}).get("description") or details.get("text", "")
            where = f"{details.get('url', '')}:{details.get('lineNumber', '?')}:{details.get('columnNumber', '?')}"
            lines.append(f"{description} at {where}")
        return lines


def _require_ws_loopback(url: str) -> None:
    if urlsplit(url).scheme != "ws" or not _is_loopback(urlsplit(url).hostname or ""):
        raise BrowserError(f"the DevTools endpoint is not on loopback: {url}")
