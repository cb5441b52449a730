"""A headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for web UI checks.

Only what the tests need: open a page, run JavaScript, read values back. The browser runs with a
fresh profile and no background networking, and is killed on exit.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

from websockets.sync.client import connect

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000")


class Browser:
    def __init__(self, executable: str = "chromium") -> None:
        path = shutil.which(executable)
        if path is None:
            raise FileNotFoundError(f"{executable} not found: install Debian's chromium package "
                                    "(make test does when apt is available)")
        with socket.socket() as s:
            s.bind(("localhost", 0))
            port = s.getsockname()[1]
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self._proc = subprocess.Popen([path, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
                                       f"--remote-debugging-port={port}", "about:blank"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tabs = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/json/list", timeout=2) as r:
                    tabs = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.2)
        if not tabs:
            self.close()
            raise RuntimeError("chromium's DevTools endpoint did not come up")
        url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
        self._ws = connect(url, max_size=2 ** 24)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def open(self, url: str, ready: str, timeout: float = 60) -> None:
        """Navigate and wait until the JavaScript expression ``ready`` is truthy."""
        self.call("Page.navigate", url=url)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.js(ready):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{url}: page not ready after {timeout:.0f}s ({ready})")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        t0 = time.time()
        while time.time() - t0 < timeout:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"not true after {timeout:.0f}s: {expression}")

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        self._proc.kill()
        self._proc.wait(timeout=10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def trial_table_with_metric_columns(browser: Browser, port: int, metrics: list[str]) -> dict[str, Any]:
    """Open NNI's trial table, add ``metrics`` through "Add/Remove columns", return headers and rows."""
    browser.open(f"http://localhost:{port}/detail",
                 ready="Array.from(document.querySelectorAll('button'))"
                       ".some(b => b.innerText.includes('Add/Remove columns'))")
    browser.wait_for("document.querySelectorAll('[role=row]').length > 1")
    browser.js("Array.from(document.querySelectorAll('button'))"
               ".find(b => b.innerText.includes('Add/Remove columns')).click()")
    want = json.dumps([f"{m} (metric)" for m in metrics])
    # Checkbox labels start with an icon glyph, hence endsWith.
    browser.wait_for(f"Array.from(document.querySelectorAll('label')).some(l => {want}.some(w => "
                     "l.innerText.replace(/\\s+/g, ' ').trim().endsWith(w)))")
    clicked = browser.js(f"""(() => {{
        let n = 0;
        for (const l of document.querySelectorAll('label')) {{
            const t = l.innerText.replace(/\\s+/g, ' ').trim();
            if ({want}.some(w => t.endsWith(w))) {{ l.click(); n++; }}
        }}
        Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Save').click();
        return n;
    }})()""")
    browser.wait_for(f"{len(metrics)} <= Array.from(document.querySelectorAll('[role=columnheader]'))"
                     ".filter(h => h.innerText.includes('(metric)')).length")
    headers = browser.js("Array.from(document.querySelectorAll('[role=columnheader]')).map(h => h.innerText.trim())")
    rows = browser.js("Array.from(document.querySelectorAll('[role=row]')).slice(1)"
                      ".map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))")
    return {"clicked": clicked, "headers": headers, "rows": rows}
