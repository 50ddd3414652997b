"""What every self-contained HTML page of tradeoff shares (the run's report, a comparison of
runs, a single plot): the page around its sections with style, scripts and the Vega libraries
inline (it opens offline), a sortable table, a chart's menu, notes.

A page records its own script errors in `#script-errors` (empty when none), so that a headless
browser's `--dump-dom` shows whether the page ran cleanly.
"""

from __future__ import annotations

import datetime
import html
import os
import re
from pathlib import Path
from typing import Any

from rich.text import Text

from tradeoff.report import vega

CSS = """
body { font: 14px system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222;
  padding: 0 16px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.note, ul.notes { color: #555; font-size: 12px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.facts dt { color: #555; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: right; vertical-align: top; }
th { cursor: pointer; user-select: none; background: #f6f6f6; position: sticky; top: 0; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
td.text, th.text { text-align: left; white-space: nowrap; }
div.scroll { overflow-x: auto; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
.chart { margin: 8px 0; overflow-x: auto; }  /* a wide chart scrolls, not the page */
form.filters { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; margin: 8px 0; }
#records td.long { text-align: left; white-space: pre-wrap; min-width: 220px; max-width: 420px;
  overflow-wrap: anywhere; font-size: 12px; }  /* a URL, base64: broken within the cell */
#records tr.failed td { background: #fdecea; } #records tr.wrong td { background: #fff7e0; }
"""

# Click a header to sort by it (numbers by value, '-' and 'n/a' last), again to reverse.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) {
        h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      var body = table.tBodies[0], rows = Array.from(body.rows);
      function key(row) { var c = row.cells[col], v = c.getAttribute("data-v");
        return v === null ? c.textContent : (v === "" ? null : parseFloat(v)); }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) return 1; if (y === null) return -1;
        var d = typeof x === "number" && typeof y === "number" ? x - y
          : String(x).localeCompare(String(y));
        return asc ? d : -d; });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?")

# Installed first: any uncaught error or rejected promise of a later script is listed on the page.
ERROR_SCRIPT = """
(function () {
  function note(text) {
    var box = document.getElementById("script-errors");
    if (!box) { box = document.createElement("pre"); box.id = "script-errors";
      (document.body || document.documentElement).appendChild(box); }
    box.textContent += text + "\\n"; box.style.display = "block";
  }
  window.addEventListener("error", function (e) { note("error: " + e.message); });
  window.addEventListener("unhandledrejection", function (e) { note("rejected: " + e.reason); });
  var log = console.error;
  console.error = function () { note("console.error: " + Array.from(arguments).join(" "));
    log.apply(console, arguments); };
})();
"""


def page(title: str, sections: list[str]) -> str:
    """One self-contained page: `sections` (HTML) under the title, every script inline. A file
    name's bytes that are not UTF-8 (held as lone surrogates, which UTF-8 cannot write) show as
    U+FFFD."""
    whole = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{CSS}</style>",
            f"<script>{ERROR_SCRIPT}</script>",
            f"<script>{vega.bundle()}</script>",
            "</head><body>",
            '<pre id="script-errors" style="display:none;color:#b00"></pre>',
            *sections,
            f"<script>{SORT_SCRIPT}</script>",
            "</body></html>",
        ]
    )
    return whole.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def run_name(directory: str | Path) -> str:
    """A run directory's name, as a page's title shows it: that of the directory `.` or `..`
    names (a path's own name is blank), symbolic links kept as given."""
    return Path(os.path.abspath(directory)).name


def plain(markup: str) -> str:
    """A table cell's text without its Rich markup."""
    return Text.from_markup(markup).plain


def table(header: list[str], rows: list[list[str]], text_columns: set[int]) -> str:
    """A sortable table; numeric cells sort by their value."""
    head = "".join(
        f'<th class="{"text" if i in text_columns else ""}">{html.escape(h)}</th>'
        for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if i in text_columns:
                cells.append(f'<td class="text">{html.escape(cell)}</td>')
                continue
            found = NUMBER.match(cell.strip())
            value = found.group(0).replace(",", "") if found else ""
            cells.append(f'<td data-v="{value}">{html.escape(cell)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div class="scroll"><table class="sortable"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


def column_table(table_: Any) -> str:
    """A `report.columns.ColumnTable` (the terminal's table) as a sortable HTML table."""
    header = [c.header.replace("\n", " ") for c in table_.columns]
    rows = [[plain(cell) for cell in row] for row in table_.cells]
    # Right-justified columns hold numbers; a name's (left) and a mark's (centered: the
    # frontier's ★, the load table's ▲) sort by their text (as numbers, every mark was missing)
    text = {i for i, c in enumerate(table_.columns) if c.justify != "right"}
    return table(header, rows, text)


def menu(values: list[Any], name: str, label: str, last: bool = False) -> Any:
    """A chart parameter `name`, chosen from a menu of `values` (its first value, or its last,
    to begin with); charts filter on it."""
    import altair as alt

    options = list(dict.fromkeys(values))
    return alt.param(
        name=name,
        value=options[-1 if last else 0],
        bind=alt.binding_select(options=options, name=label),
    )


def notes(lines: list[str]) -> str:
    if not lines:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


def when(stamp: float | None) -> str:
    """A time.time() stamp as local date and time with its zone; '-' for none."""
    if stamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
