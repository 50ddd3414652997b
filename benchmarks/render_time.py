"""How long an HTML report takes to show in headless Chromium: from navigation start until every
chart of the page holds its SVG and the records table its first page, read from the page's own
clock (`performance.now()`, real time) through the DevTools protocol, polled every 10 ms.

    python benchmarks/render_time.py PAGE.html [--rounds 3]

Each round starts a fresh Chromium (Debian's `chromium`, headless, no network), so a round
includes parsing the inlined Vega libraries and data as a reader's first view does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

# null until the page loaded, every chart drew and the records table has rows; then ms since
# navigation start
DRAWN = """(() => {
  const charts = Array.from(document.querySelectorAll(".chart"));
  const drawn = charts.every(c => c.querySelector("svg"));
  const rows = document.querySelector("#records tbody tr, table tbody tr");
  const loaded = document.readyState === "complete";
  return drawn && rows && loaded ? performance.now() : null;
})()"""
POLL_S = 0.01


@dataclass
class Render:
    drawn_ms: float  # navigation start to every chart drawn
    load_ms: float  # navigation start to the load event (scripts parsed and run)
    charts: int
    errors: str  # what the page's #script-errors holds


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("render_time needs Debian's chromium: apt-get install chromium")
    return found


async def _call(ws: aiohttp.ClientWebSocketResponse, ids: itertools.count, method: str,
                **params: Any) -> dict[str, Any]:  # fmt: skip
    n = next(ids)
    await ws.send_json({"id": n, "method": method, "params": params})
    while True:
        message = await ws.receive_json()
        if message.get("id") == n:
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            return dict(message.get("result", {}))


async def _value(ws: aiohttp.ClientWebSocketResponse, ids: itertools.count, expression: str) -> Any:
    result = await _call(ws, ids, "Runtime.evaluate", expression=expression, returnByValue=True)
    return result.get("result", {}).get("value")


async def render(page: Path, timeout_s: float = 60.0) -> Render:
    """One fresh headless Chromium: navigate to `page`, wait until every chart drew."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            port = None
            for line in proc.stderr:
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                if found:
                    port = int(found.group(1))
                    break
            if port is None:
                raise RuntimeError("chromium did not open its DevTools port")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/json") as answer:
                    targets = json.loads(await answer.text())
                url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                async with session.ws_connect(url, max_msg_size=0) as ws:
                    return await _measure(ws, page, timeout_s)
        finally:
            proc.kill()
            proc.wait()


async def _measure(ws: aiohttp.ClientWebSocketResponse, page: Path, timeout_s: float) -> Render:
    ids = itertools.count(1)
    await _call(ws, ids, "Page.enable")
    await _call(ws, ids, "Page.navigate", url=page.resolve().as_uri())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    drawn = None
    while drawn is None:
        if loop.time() > deadline:
            raise RuntimeError(f"{page}: the charts did not draw within {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)
        drawn = await _value(ws, ids, DRAWN)
    load = await _value(ws, ids, "performance.getEntriesByType('navigation')[0].loadEventEnd")
    charts = await _value(ws, ids, "document.querySelectorAll('.chart svg').length")
    errors = await _value(
        ws, ids, "(document.getElementById('script-errors') || {textContent: ''}).textContent"
    )
    return Render(float(drawn), float(load or 0.0), int(charts), str(errors).strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.rounds):
        r = asyncio.run(render(args.page))
        print(f"drawn {r.drawn_ms:,.0f} ms, load event {r.load_ms:,.0f} ms, {r.charts} charts"
              + (f", script errors: {r.errors}" if r.errors else ""))  # fmt: skip


if __name__ == "__main__":
    main()
