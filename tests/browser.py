"""Headless Chromium for the tests of tradeoff's HTML pages (Debian's `chromium`; no network):
a page's DOM after its scripts ran, a script run inside a copy of a page, a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium")
    return found


def render(page: Path, *flags: str) -> str:
    """The page's DOM after its scripts ran (headless Chromium, no network)."""
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--virtual-time-budget=10000", *flags, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def drive(page: Path, script: str, out: Path) -> str:
    """The DOM of a copy of `page` (written to `out`) with `script` run after the page's own
    scripts: the script acts on the page and writes what it saw into the DOM."""
    text = page.read_text(encoding="utf-8")
    driver = f"<script>setTimeout(function () {{ {script} }}, 500);</script>"
    # The page's own end of body: the last one (the inlined Vega bundle has '</body>' in a string).
    head, end, tail = text.rpartition("</body>")
    assert end, f"{page} has no </body>"
    out.write_text(head + driver + end + tail, encoding="utf-8")
    return render(out)


def script_errors(dom: str) -> str:
    """What the page's error script (report.html_page.ERROR_SCRIPT) caught; empty when none."""
    found = re.search(r'<pre id="script-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, "the page has no #script-errors element"
    return found.group(1).strip()


def screenshot(page: Path, path: Path, width: int = 1250, height: int = 2400) -> Path:
    render(page, f"--screenshot={path}", f"--window-size={width},{height}")
    assert path.stat().st_size > 10_000, f"{path} is nearly empty"
    return path


def chart_drawn(dom: str, chart: str) -> bool:
    """Whether the chart rendered into `#chart` (an SVG inside it, no failure text)."""
    drawn = re.search(rf'id="{chart}"[^>]*>(.*?)</div>\s*<script', dom, re.S)
    return bool(drawn) and "<svg" in drawn.group(1) and "chart failed" not in drawn.group(1)
