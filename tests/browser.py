"""Headless Chromium for the tests of tradeoff's HTML pages (Debian's `chromium`; no network):
a page's DOM after its scripts ran, a script run inside a copy of a page, a screenshot, a chart's
points and tooltips; and what a plot's file must be (a real PNG, a page that loads nothing)."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

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
    driver = f"<script>setTimeout(function () {{ {script} }}, 500);</script></body>"
    # The last one: the Vega bundle inlined above holds "</body>" in a string of its own.
    head, _, tail = text.rpartition("</body>")
    out.write_text(head + driver + tail, encoding="utf-8")
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


# Each symbol (point) of a Vega chart: its data row and how it is painted. Vega's SVG renderer
# keeps a drawn item on its element as __data__.
_SYMBOLS = """
var paths = document.querySelectorAll("#%s g.mark-symbol.role-mark path");
var found = Array.from(paths).map(function (p) {
  return {datum: p.__data__.datum, fill: p.getAttribute("fill"),
          stroke: p.getAttribute("stroke"), shape: p.__data__.shape}; });
var out = document.createElement("pre"); out.id = "symbols";
out.textContent = JSON.stringify(found); document.body.appendChild(out);
"""

# Moves the pointer onto the first symbol of a chart whose data row has `field` = `value`, then
# copies the tooltip Vega shows into the page.
_HOVER = """
var target = Array.from(document.querySelectorAll("#%s g.mark-symbol.role-mark path")).find(
  function (p) { return p.__data__.datum[%s] === %s; });
var box = target.getBoundingClientRect();
["pointermove", "mousemove"].forEach(function (kind) {
  target.dispatchEvent(new MouseEvent(kind, {bubbles: true, clientX: box.x + box.width / 2,
                                             clientY: box.y + box.height / 2})); });
setTimeout(function () {
  var tip = document.getElementById("vg-tooltip-element"), out = document.createElement("pre");
  out.id = "hovered"; out.textContent = tip ? tip.innerText : "no tooltip";
  document.body.appendChild(out); }, 200);
"""


def _pre(dom: str, element_id: str) -> str:
    found = re.search(rf'<pre id="{element_id}">(.*?)</pre>', dom, re.S)
    assert found, f"the driving script wrote no #{element_id}: {script_errors(dom)}"
    return html.unescape(found.group(1))


def symbols(page: Path, chart: str, out: Path) -> list[dict[str, Any]]:
    """Every point drawn in `#chart`: {"datum": its data row, "fill", "stroke", "shape"}."""
    return json.loads(_pre(drive(page, _SYMBOLS % chart, out), "symbols"))


def hover(page: Path, chart: str, field: str, value: str, out: Path) -> str:
    """The tooltip's text (label and value on lines of their own) when the pointer is on the
    point of `#chart` whose data row has `field` = `value`."""
    script = _HOVER % (chart, json.dumps(field), json.dumps(value))
    return _pre(drive(page, script, out), "hovered")


def assert_self_contained(text: str) -> None:
    """The page loads nothing: every script inline, no src= or href= outside them."""
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)
    assert "<script" not in markup, "every script is inline, with no src"
    assert not re.search(r"<[a-z]+[^>]*\s(src|href)=", markup), "nothing loaded from outside"
    assert "</html>" in text


def png_size(data: bytes) -> tuple[int, int]:
    """A PNG's width and height in pixels (its IHDR chunk), after checking its signature."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def legends(dom: str) -> dict[str, list[str]]:
    """Each legend Vega drew, by its title: its entries (read from its aria-label)."""
    found = re.findall(r'aria-label="Symbol legend titled &#39;(.*?)&#39; .*? values: (.*?)"', dom)
    found += re.findall(r"aria-label=\"Symbol legend titled '(.*?)' .*? values: (.*?)\"", dom)
    return {html.unescape(title): html.unescape(values).split(", ") for title, values in found}
