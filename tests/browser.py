"""Open a page in a real headless Chromium (Debian's) over the DevTools protocol and report
what a user's browser would do with it: console messages and uncaught exceptions, dialogs
that tried to open (dismissed), and values read from the page once it has loaded.

The websocket client is tornado's (a dependency of Jupyter, so already installed)."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*"]


@dataclass
class PageRun:
    console: list[tuple[str, str]] = field(default_factory=list)   # (level, text)
    exceptions: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    load_s: float = 0.0

    @property
    def errors(self) -> list[str]:
        return self.exceptions + [t for lvl, t in self.console if lvl in ("error", "assert")]


def open_page(path: Path, expressions: dict[str, str], settle_s: float = 1.0, timeout: float = 120) -> PageRun:
    """Load ``path`` (file://), wait for its load event plus ``settle_s``, evaluate each
    JavaScript expression (its value, JSON-serializable) and return what happened."""
    with tempfile.TemporaryDirectory(prefix="forensics-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ws_url = _devtools_url(proc, time.time() + 30)
            return asyncio.run(asyncio.wait_for(_drive(ws_url, path, expressions, settle_s), timeout))
        finally:
            proc.kill()
            proc.wait(10)


def _devtools_url(proc: subprocess.Popen, deadline: float) -> str:
    for line in proc.stderr:
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return m.group(1)
        if time.time() > deadline:
            break
    raise RuntimeError("chromium did not start its DevTools endpoint")


async def _drive(ws_url: str, path: Path, expressions: dict[str, str], settle_s: float) -> PageRun:
    from tornado.websocket import websocket_connect
    ws = await websocket_connect(ws_url, max_message_size=256 * 1024 * 1024)
    run = PageRun()
    ids = iter(range(1, 1_000_000))
    pending: dict[int, asyncio.Future] = {}
    loaded = asyncio.Event()
    session = None

    async def send(method: str, params: dict | None = None, sid: str | None = None):
        i = next(ids)
        fut = asyncio.get_running_loop().create_future()
        pending[i] = fut
        msg = {"id": i, "method": method, "params": params or {}}
        if sid:
            msg["sessionId"] = sid
        await ws.write_message(json.dumps(msg))
        return await fut

    async def pump():
        while True:
            raw = await ws.read_message()
            if raw is None:
                return
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in pending:
                fut = pending.pop(msg["id"])
                if "error" in msg:
                    fut.set_exception(RuntimeError(f"DevTools: {msg['error']}"))
                else:
                    fut.set_result(msg.get("result", {}))
                continue
            method, p = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                run.console.append((p.get("type", ""), text))
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                run.exceptions.append(d.get("exception", {}).get("description") or d.get("text", ""))
            elif method == "Page.javascriptDialogOpening":
                run.dialogs.append(f"{p.get('type')}: {p.get('message')}")
                asyncio.ensure_future(send("Page.handleJavaScriptDialog", {"accept": False}, session))
            elif method == "Page.loadEventFired":
                loaded.set()

    reader = asyncio.ensure_future(pump())
    try:
        target = await send("Target.createTarget", {"url": "about:blank"})
        session = (await send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}))["sessionId"]
        for domain in ("Page", "Runtime"):
            await send(f"{domain}.enable", {}, session)
        t0 = time.monotonic()
        await send("Page.navigate", {"url": path.resolve().as_uri()}, session)
        await loaded.wait()
        run.load_s = time.monotonic() - t0
        await asyncio.sleep(settle_s)
        for name, expr in expressions.items():
            res = await send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
            run.values[name] = res.get("result", {}).get("value")
    finally:
        reader.cancel()
        ws.close()
    return run
