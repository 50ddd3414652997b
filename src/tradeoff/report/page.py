"""What the self-contained HTML plots share: round ticks and data-to-pixel scales for the inline
SVG drawn in `plot` and `load_plot`, the hover details of a point, a table, and the page around
them (style and script inline: the file opens offline)."""

from __future__ import annotations

import html
import math

CSS = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; }
p.axis { color: #555; margin: 0 0 12px; }
svg { background: #fff; border: 1px solid #ddd; }
svg text { font: 12px system-ui, sans-serif; fill: #222; }
svg .tick { fill: #555; font-size: 11px; }
svg .grid { stroke: #eee; }
svg .axis { stroke: #444; }
svg .pt { cursor: pointer; }
svg .pt:hover circle, svg .pt:focus circle { stroke-width: 3; }
#tip { position: fixed; display: none; pointer-events: none; background: #fffff4;
  border: 1px solid #999; border-radius: 4px; padding: 6px 8px; font-size: 12px;
  box-shadow: 0 2px 6px rgba(0,0,0,.2); max-width: 420px; }
#tip b { display: inline-block; min-width: 86px; color: #555; font-weight: normal; }
table { border-collapse: collapse; margin-top: 16px; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
td.name { white-space: nowrap; }  /* a configuration's name, whole on one line */
p.note { color: #555; font-size: 12px; }
"""

# Hovering a point shows its details, kept in data-tip as escaped "label\tvalue" lines.
SCRIPT = """
(function () {
  var tip = document.getElementById("tip");
  function show(ev) {
    var g = ev.currentTarget;
    tip.textContent = "";
    g.getAttribute("data-tip").split("\\n").forEach(function (line) {
      var parts = line.split("\\t"), div = document.createElement("div"),
          b = document.createElement("b");
      b.textContent = parts[0];
      div.appendChild(b);
      div.appendChild(document.createTextNode(" " + parts.slice(1).join("\\t")));
      tip.appendChild(div);
    });
    tip.style.display = "block";
    move(ev);
  }
  function move(ev) {
    var x = ev.clientX, y = ev.clientY;
    if (x === undefined) {  // keyboard focus: beside the point
      var r = ev.currentTarget.getBoundingClientRect();
      x = r.right;
      y = r.top;
    }
    tip.style.left = Math.min(x + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = Math.min(y + 14, window.innerHeight - tip.offsetHeight - 8) + "px";
  }
  function hide() { tip.style.display = "none"; }
  document.querySelectorAll(".pt").forEach(function (g) {
    g.addEventListener("mouseenter", show);
    g.addEventListener("mousemove", move);
    g.addEventListener("mouseleave", hide);
    g.addEventListener("focus", show);
    g.addEventListener("blur", hide);
  });
})();
"""


def fmt(value: float | None, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def use_log(values: list[float]) -> bool:
    """Log scale when the values are positive and span more than two decades."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    base = 10 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def axis_ticks(values: list[float], log: bool) -> list[float]:
    """Ticks covering the values: powers of ten on a log axis; else round steps from 0 (or from
    the least value, when it is negative) to a tenth above the greatest."""
    if log:
        lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
        return [10.0**e for e in range(lo, hi + 1)]
    low = 0.0 if min(values) >= 0 else min(values)
    high = max(values) * 1.1 if max(values) > 0 else 1.0
    return nice_ticks(low, high)


class Scale:
    """Data to pixel coordinates along one axis, linear or log10."""

    def __init__(self, low: float, high: float, start: float, end: float, log: bool) -> None:
        self.log = log
        self.low, self.high = (math.log10(low), math.log10(high)) if log else (low, high)
        self.start, self.end = start, end

    def __call__(self, value: float) -> float:
        v = math.log10(value) if self.log else value
        span = self.high - self.low or 1.0
        return self.start + (v - self.low) / span * (self.end - self.start)


def hover_group(pairs: list[tuple[str, str]]) -> str:
    """The opening of a point's SVG group: focusable, its details in data-tip for the script and
    in a <title> for readers without it, both escaped. Close it with </g>."""
    e = html.escape
    tip = "\n".join(f"{k}\t{v}" for k, v in pairs)
    title = "\n".join(f"{k}: {v}" for k, v in pairs)
    return f'<g class="pt" tabindex="0" data-tip="{e(tip)}"><title>{e(title)}</title>'


def html_table(head: list[str], rows: list[list[tuple[str, str]]]) -> str:
    """A table of escaped text: `rows` of (text, CSS class) cells, class "num" right-aligned."""
    e = html.escape
    lines = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for cells in rows:
        lines.append("<tr>" + "".join(f'<td class="{c}">{e(v)}</td>' for v, c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def html_page(title: str, body: list[str], css: str = "") -> str:
    """A whole HTML document: `title` as its heading, then `body` (HTML), then the hover box and
    its script; `css` is added to the shared style."""
    e = html.escape
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(title)}</title>",
            f"<style>{CSS}{css}</style>",
            "</head><body>",
            f"<h1>{e(title)}</h1>",
            *body,
            '<div id="tip"></div>',
            f"<script>{SCRIPT}</script>",
            "</body></html>",
        ]
    )
