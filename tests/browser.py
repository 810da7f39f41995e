"""A small driver of headless Chromium over the Chrome DevTools Protocol, for tests that
need a real browser (the dashboard's JavaScript, its CSP, a screenshot):

    async with Chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{base}/dashboard")
        await page.fill("#token", token)
        async with page.navigation():
            await page.click("button[type=submit]")
        await page.wait_for("document.body.dataset.state === 'ready'")
        await page.screenshot(path)

No Selenium or Playwright: aiohttp's websocket client speaks the protocol. Without a
Chromium installed the test calling it is skipped; .ci/run installs Debian's, so CI
never skips. `page.errors` collects what the page reported as errors (exceptions,
console.error, failed loads, CSP violations), for tests to assert it stays empty.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import pytest

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
"""Where to look for a browser, after $PIXELPOST_CHROMIUM."""
WINDOW_DEFAULT = (1280, 1400)
START_TIMEOUT_DEFAULT = 20.0
TIMEOUT_DEFAULT = 10.0
_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-port=0",
)
# What the page's document going away mid-evaluation looks like (a navigation).
_CONTEXT_GONE = ("Execution context was destroyed", "Cannot find default execution context")


class BrowserError(Exception):
    """The browser failed, or a command or a script in it did."""


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable to drive, or None if there is none."""
    for candidate in (os.environ.get("PIXELPOST_CHROMIUM"), *CANDIDATES):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


class Page:
    """One tab, driven over its own DevTools websocket."""

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, *, target_id: str, timeout: float
    ) -> None:
        self.target_id = target_id
        self.timeout = timeout
        """Seconds each command, load or `wait_for` may take (wrap a call in
        `asyncio.timeout` to bound it otherwise)."""
        self.errors: list[str] = []
        """Exceptions, console errors, failed loads and CSP violations, as text."""
        self.console: list[str] = []
        """Every console message, as "type: text"."""
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self._reader = asyncio.create_task(self._read())

    async def _start(self) -> None:
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a DevTools command and return its result."""
        if self._reader.done():
            raise BrowserError(f"{method}: the page's connection is closed")
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            message = {"id": call_id, "method": method, **({"params": params} if params else {})}
            await self._ws.send_str(json.dumps(message))
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            raise BrowserError(f"{method}: no answer within {self.timeout} s") from None
        finally:
            self._pending.pop(call_id, None)

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                self._dispatch(json.loads(message.data))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrowserError("the page's connection closed"))

    def _dispatch(self, data: dict[str, Any]) -> None:
        if "id" in data:
            future = self._pending.get(data["id"])
            if future is None or future.done():
                return
            if "error" in data:
                error = data["error"]
                text = f"{error.get('message')} {error.get('data', '')}"
                future.set_exception(BrowserError(text.strip()))
            else:
                future.set_result(data.get("result", {}))
            return
        method, params = data.get("method", ""), data.get("params", {})
        self._note(method, params)
        for waiter in [w for w in self._waiters if w[0] == method]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(params)

    def _note(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])
            )
            self.console.append(f"{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                self.errors.append(f"console: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            self.errors.append(f"exception: {exception.get('description') or details.get('text')}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.errors.append(
                    f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".rstrip()
                )

    def event(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next `method` event (register it before causing the event)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, future))
        return future

    @contextlib.asynccontextmanager
    async def navigation(self) -> AsyncIterator[None]:
        """Wait, after the block, for the page it caused to load (a form submitted)."""
        loaded = self.event("Page.loadEventFired")
        try:
            yield
            try:
                async with asyncio.timeout(self.timeout):
                    await loaded
            except TimeoutError:
                raise BrowserError(f"no page loaded within {self.timeout} s") from None
        finally:
            loaded.cancel()

    async def goto(self, url: str) -> None:
        """Open `url` and wait for its load event (none comes when only the fragment
        changes: that navigation is over when Chromium answers)."""
        loaded = self.event("Page.loadEventFired")
        try:
            result = await self.send("Page.navigate", {"url": url})
            if result.get("errorText"):
                raise BrowserError(f"cannot open {url}: {result['errorText']}")
            if "loaderId" not in result:
                return
            async with asyncio.timeout(self.timeout):
                await loaded
        except TimeoutError:
            raise BrowserError(f"{url} did not load within {self.timeout} s") from None
        finally:
            loaded.cancel()

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited); its
        exception as BrowserError."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]!r} failed: {description}")
        return result.get("result", {}).get("value")

    async def wait_for(self, condition: str, *, interval: float = 0.05) -> Any:
        """The value of the JavaScript expression `condition` once it is truthy; it is
        tried every `interval` seconds, also across a navigation, for up to `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        last: object = None
        while True:
            try:
                value = await self.evaluate(condition)
            except BrowserError as exc:
                if not any(gone in str(exc) for gone in _CONTEXT_GONE):
                    raise
                value, last = None, exc
            else:
                if value:
                    return value
                last = value
            if loop.time() > deadline:
                raise BrowserError(
                    f"{condition!r} not true within {self.timeout} s (last: {last!r})"
                )
            await asyncio.sleep(interval)

    async def fill(self, selector: str, text: str) -> None:
        """Focus the field `selector`, clear it and type `text` into it."""
        found = await self.evaluate(
            f"(() => {{ const field = document.querySelector({json.dumps(selector)});"
            " if (!field) return false; field.focus(); field.select(); return true; })()"
        )
        if not found:
            raise BrowserError(f"no element matches {selector!r}")
        await self.send("Input.insertText", {"text": text})

    async def click(self, selector: str) -> None:
        """Click the element `selector`."""
        found = await self.evaluate(
            f"(() => {{ const node = document.querySelector({json.dumps(selector)});"
            " if (!node) return false; node.click(); return true; })()"
        )
        if not found:
            raise BrowserError(f"no element matches {selector!r}")

    async def screenshot(
        self, path: Path | str | None = None, *, full_page: bool = False
    ) -> bytes:
        """A PNG of the viewport (or of the whole page), written to `path` if given."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
        result = await self.send("Page.captureScreenshot", params)
        png = base64.b64decode(result["data"])
        if path is not None:
            await asyncio.to_thread(_write, Path(path), png)
        return png

    async def close(self) -> None:
        await self._ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Chromium:
    """A headless Chromium in a throwaway profile, killed on exit."""

    def __init__(
        self,
        executable: str | None = None,
        *,
        window: tuple[int, int] = WINDOW_DEFAULT,
        start_timeout: float = START_TIMEOUT_DEFAULT,
        timeout: float = TIMEOUT_DEFAULT,
    ) -> None:
        self.executable = executable
        self.window = window
        self.start_timeout = start_timeout
        self.timeout = timeout
        """Each page's `timeout`."""
        self.port = 0
        self._profile: Path | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None
        self._pages: list[Page] = []
        self._blank_taken = False

    async def __aenter__(self) -> Chromium:
        executable = self.executable or find_chromium()
        if executable is None:
            pytest.fail(
                "Chromium is needed by this test (looked for $PIXELPOST_CHROMIUM, "
                f"{', '.join(CANDIDATES)}): `apt-get install chromium fonts-dejavu-core` "
                "(.ci/run installs every tool the tests use)",
                pytrace=False,
            )
        self._profile = Path(tempfile.mkdtemp(prefix="pixelpost-chromium-"))
        try:
            with (self._profile / "chromium.log").open("wb") as log:
                self._process = await asyncio.create_subprocess_exec(
                    executable,
                    *_FLAGS,
                    f"--user-data-dir={self._profile / 'profile'}",
                    f"--window-size={self.window[0]},{self.window[1]}",
                    "about:blank",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # its helper processes go with it on exit
                )
            self.port = await self._devtools_port()
            self._http = aiohttp.ClientSession()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stop()

    def _log_tail(self) -> str:
        assert self._profile is not None
        try:
            text = (self._profile / "chromium.log").read_text(errors="replace")
        except OSError:
            return ""
        return text[-2000:]

    async def _devtools_port(self) -> int:
        # Chromium writes the port it bound into the profile once it listens.
        assert self._profile is not None
        assert self._process is not None
        active = self._profile / "profile" / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while True:
            if self._process.returncode is not None:
                raise BrowserError(
                    f"Chromium exited with {self._process.returncode}:\n{self._log_tail()}"
                )
            with contextlib.suppress(OSError, ValueError):
                first = active.read_text().split("\n", 1)[0]
                return int(first)
            if loop.time() > deadline:
                raise BrowserError(
                    f"Chromium did not listen within {self.start_timeout} s:\n{self._log_tail()}"
                )
            await asyncio.sleep(0.02)

    async def _targets(self) -> list[dict[str, Any]]:
        assert self._http is not None
        async with self._http.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            targets: list[dict[str, Any]] = await response.json(content_type=None)
        return targets

    async def new_page(self) -> Page:
        """A tab: the blank one Chromium opened with, then new ones."""
        assert self._http is not None, "use `async with Chromium() as browser`"
        target: dict[str, Any] | None = None
        if not self._blank_taken:
            self._blank_taken = True
            target = next((t for t in await self._targets() if t.get("type") == "page"), None)
        if target is None:
            url = f"http://127.0.0.1:{self.port}/json/new?about:blank"
            async with self._http.put(url) as response:
                target = await response.json(content_type=None)
        assert target is not None
        ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws, target_id=target["id"], timeout=self.timeout)
        self._pages.append(page)
        await page._start()
        return page

    async def _stop(self) -> None:
        for page in self._pages:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await page.close()
        self._pages.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if process is not None:
            # Renderers and helpers left behind share the browser's process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self._process = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None
