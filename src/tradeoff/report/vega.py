"""Charts as Vega-Lite (through altair), embedded in one self-contained HTML page: the Vega
libraries inlined once per page (vl-convert's bundle, no network when the page opens), each
chart a spec rendered by `vegaEmbed` into its own element.

altair and vl-convert-python were chosen as the one plotting library: a chart is a small JSON
spec (the page's size grows with the data shown, not with the charts), tooltips, selections
and dropdowns come with it, and vl-convert renders the same spec to PNG or SVG without a
browser (for papers).
"""

from __future__ import annotations

import functools
import html
import json
from typing import Any

# What every chart of the page shares: one font, no border around the plot area, room between
# an axis's labels (by default only overlapping labels are thinned out: labels that touch read
# as one number, "0.00000100.0000015", where vl-convert's text is wider than a browser's).
CONFIG: dict[str, Any] = {
    "font": "system-ui, sans-serif",
    "view": {"stroke": None},
    "axis": {
        "labelFontSize": 11,
        "titleFontSize": 12,
        "grid": True,
        "gridColor": "#eee",
        "labelSeparation": 8,
    },
    "legend": {"labelFontSize": 11, "titleFontSize": 12, "labelLimit": 320},
}


@functools.cache
def bundle() -> str:
    """The Vega, Vega-Lite and vega-embed libraries as one script (about 0.9 MB; built once
    per process, a few seconds)."""
    import vl_convert

    return str(vl_convert.javascript_bundle("window.vegaEmbed = vegaEmbed;"))


def script_json(data: Any, **dumps: Any) -> str:
    """`data` as JSON to stand inside a <script> element: with no "<" in it (a text's
    "</script" would end the element, and "<!--<script" leaves the rest of the page inside it),
    as JSON and JavaScript both read \\u003c as "<"."""
    return json.dumps(data, separators=(",", ":"), **dumps).replace("<", "\\u003c")


def spec_of(chart: Any) -> dict[str, Any]:
    """An altair chart's Vega-Lite spec, with the page's shared config."""
    import altair as alt

    # Our charts draw aggregates (quantiles, means, bounded samples), sized by configurations and
    # tasks; altair's 5,000-row guard against inlining raw data would refuse a 20-configuration
    # run's latency curves.
    alt.data_transformers.disable_max_rows()
    spec: dict[str, Any] = chart.to_dict()
    spec["config"] = {**CONFIG, **spec.get("config", {})}
    return spec


def embed(element_id: str, chart: Any) -> str:
    """The element a chart renders into, and the script that renders it (after the bundle)."""
    spec = script_json(spec_of(chart), default=str)
    return (
        f'<div class="chart" id="{html.escape(element_id)}"></div>\n'
        f"<script>vegaEmbed({json.dumps('#' + element_id)}, {spec}, "
        '{"actions": false, "renderer": "svg"}).catch(function (e) {'
        f"document.getElementById({json.dumps(element_id)}).textContent = "
        '"chart failed: " + e; console.error(e);});</script>'
    )


def png(chart: Any, scale: float = 2.0) -> bytes:
    """The chart as a PNG (vl-convert, no browser)."""
    import vl_convert

    return bytes(vl_convert.vegalite_to_png(spec_of(chart), scale=scale))
