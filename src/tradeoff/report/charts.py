"""Every plot of tradeoff as an altair (Vega-Lite) chart: the accuracy-cost frontier, a load run's
latency and goodput against achieved throughput, a router's curves; written as a PNG (vl-convert,
no browser) or as one self-contained HTML page (`html_page`) that shows a point's details on hover.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import altair as alt

from tradeoff.analysis.frontier import FrontierRow
from tradeoff.analysis.load import SLO_FORM
from tradeoff.paths import written_whole
from tradeoff.policy.evaluate import Evaluation
from tradeoff.report import vega
from tradeoff.report.html_page import column_table, menu, notes, page
from tradeoff.report.load_table import NO_SLO_NOTE, describe_slo, load_table, target_label

FRONTIER_COLOUR = "#d95f02"
# Each point carries its details as one object, shown whole on hover: a configuration's details
# differ (energy measured or not), and a tooltip of fixed fields would show the missing ones.
TOOLTIP = alt.ExprRef("datum.tip")
NOTE_WIDTH = 64  # characters of a note under a load panel's title, per line
MAX_CURVE_POINTS = 1000  # of a router curve drawn: one per item would grow with the run
# Costs below this (dollars per query: 1.3e-6) get e-notation axis labels: fixed point is mostly
# zeros ("0.0000015"), too long to tell apart. A log axis's unlabelled ticks stay unlabelled.
SMALL_COST = 1e-3
SMALL_COST_LABEL = "datum.label == '' ? '' : datum.value == 0 ? '0' : format(datum.value, '.3~e')"

# A configuration's name in a legend: its first 20 and last 23 characters where longer than 44
# (the whole name is in each point's details on hover, and in the tables).
LEGEND_NAME = (
    "length(datum.label) > 44 ? slice(datum.label, 0, 20) + '…' + slice(datum.label, -23)"
    " : datum.label"
)

LOAD_X_TITLE = "achieved throughput, requests/s (completed / measured window)"
SATURATED_LEGEND = "hollow: saturated, the upstream did not keep up"
CORRECT_LEGEND = "dashed, squares: correct goodput"
DIAGONAL_LEGEND = "dotted: goodput = achieved throughput (every completed request met the SLO)"
GOODPUT_TITLE = "goodput and correct goodput"
# (row field, panel title, unit, factor from seconds): the percentiles the load table shows by
# default, in the panels' order (two columns)
LATENCY_PANELS = (
    ("ttft_s_p50", "TTFT p50", "ms", 1000.0),
    ("ttft_s_p99", "TTFT p99", "ms", 1000.0),
    ("e2e_s_p50", "end-to-end p50", "s", 1.0),
    ("e2e_s_p99", "end-to-end p99", "s", 1.0),
    ("itl_s_p50", "ITL p50", "ms", 1000.0),
)
ROUTER_STYLE = {"router": ("#1f77b4", [1, 0]), "oracle": ("#2ca02c", [6, 3])}
OTHER_ROUTER = ("#7f7f7f", [2, 2])  # random, and any other baseline


def fmt(value: float | None, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def use_log(values: Sequence[float]) -> bool:
    """Log scale when the values are positive and span more than two decades."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100


# Vega's category10 and tableau20 schemes, as Vega defines them: given as colours, so that a
# chart drawing some of a page's configurations gives each the colour it has on the others.
CATEGORY10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip
TABLEAU20 = ["#4c78a8", "#9ecae9", "#f58518", "#ffbf79", "#54a24b", "#88d27a", "#b79a20",
             "#f2cf5b", "#439894", "#83bcb6", "#e45756", "#ff9d98", "#79706e", "#bab0ac",
             "#d67195", "#fcbfd2", "#b279a2", "#d6a5c9", "#9e765f", "#d8b5a5"]  # fmt: skip


def colours(names: Sequence[str], shown: Sequence[str] | None = None) -> alt.Scale:
    """One colour per configuration of `names` (distinct for up to 20), for those `shown`
    (default: all): a configuration has its colour whichever of the others a chart draws."""
    palette = CATEGORY10 if len(names) <= 10 else TABLEAU20
    order = {name: i for i, name in enumerate(names)}
    domain = list(names if shown is None else shown)
    return alt.Scale(
        domain=domain, range=[palette[order.get(n, i) % len(palette)] for i, n in enumerate(domain)]
    )


def config_axis(**options: Any) -> alt.Axis:
    """An axis of configurations' names: each whole, as a cut name could be another
    configuration's (Vega cuts at 180 px: two long names that differ at the end read alike)."""
    return alt.Axis(labelLimit=0, **options)


def config_legend(scale: alt.Scale) -> alt.Legend:
    """The configurations' legend, on `colours`' scale: every configuration listed (Vega lists
    30, then "…10 entries"); a long name cut in its middle, so that the chart stays within the
    page and names that differ at either end still read apart (cut at its end, at 160 px, two
    long names read alike; whole, a 90-character name pushed the chart past the page); past the
    palette's colours, its title says they repeat."""
    title: str | list[str] = "configuration"
    if len(set(scale.range)) < len(scale.range):
        title = ["configuration", f"(colours repeat past {len(TABLEAU20)}:", "hover for names)"]
    return alt.Legend(title=title, labelLimit=0, labelExpr=LEGEND_NAME, symbolLimit=0)


def config_colour(scale: alt.Scale) -> alt.Color:
    """The configuration's colour channel, on `colours`' scale: the same colour for a
    configuration in every chart of a page (one on Vega's default scheme gave it another)."""
    return alt.Color("config:N", title="configuration", scale=scale, legend=config_legend(scale))


def write_chart(chart: alt.TopLevelMixin, path: str | Path, title: str, below: str = "") -> Path:
    """`chart` to `path`: a .png (vl-convert, no browser), else one self-contained HTML page
    titled `title`, the chart in `#chart`, then `below` (HTML: tables, notes)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        content = vega.png(chart)
    else:
        heading = f"<h1>{html.escape(title)}</h1>"
        content = (page(title, [heading, vega.embed("chart", chart), below]) + "\n").encode()
    with written_whole(path) as part:
        part.write_bytes(content)
    return path


# --- the frontier --------------------------------------------------------------------------------


def frontier_details(row: FrontierRow) -> list[tuple[str, str]]:
    """What a reader hovering over one configuration is told, as (label, value) pairs."""
    unit = row.cost_unit
    if row.pareto:
        status = "Pareto-optimal"
    elif row.cost is None:
        status = f"not on the frontier: cost unknown ({row.cost_missing})"
    else:
        status = f"dominated by {row.dominated_by}"
    cost = (
        f"{fmt(row.cost)} {unit}/query ({row.cost_source})"
        if row.cost is not None
        else f"n/a ({row.cost_missing})"
    )
    if row.cost_note:
        cost += f"; {row.cost_note}"
    if row.cost_of_pass is not None:
        cost_of_pass = f"{fmt(row.cost_of_pass)} {unit}/correct answer"
    else:
        cost_of_pass = "n/a (no correct answer)" if row.cost is not None else "n/a"
    pairs = [
        ("config", row.config),
        ("frontier", status),
        (
            "accuracy",
            f"{row.accuracy:.3f} [95% CI {row.accuracy_low:.3f}, {row.accuracy_high:.3f}]",
        ),
        ("cost", cost),
        ("cost-of-pass", cost_of_pass),
        ("E³", f"{fmt(row.e3)} acc²/output token ({fmt(row.output_tokens, '.1f')} tokens/query)"),
    ]
    if row.energy_j is not None:
        pairs += [
            ("accuracy/J", f"{fmt(row.accuracy_per_joule)} 1/J ({row.energy_j:.4g} J/query)"),
            ("IPW", f"{fmt(row.ipw)} accuracy/W ({fmt(row.power_w)} W, {row.energy_source})"),
        ]
    else:
        pairs.append(("energy", f"not measured: {row.energy_missing}"))
    pairs += [("n", str(row.n)), ("errors", str(row.errors))]
    return pairs


def placed(rows: Sequence[FrontierRow]) -> list[FrontierRow]:
    """The rows that can be drawn: a known cost and an accuracy."""
    return [r for r in rows if r.cost is not None and not math.isnan(r.accuracy)]


def unplaced_notes(rows: Sequence[FrontierRow]) -> list[str]:
    """The configurations that cannot be drawn, one line per reason."""
    by_reason: dict[str, list[str]] = {}
    drawn = placed(rows)
    for r in rows:
        if r not in drawn:
            reason = f"cost unknown ({r.cost_missing})" if r.cost is None else "no accuracy"
            by_reason.setdefault(reason, []).append(r.config)
    return [f"not plotted, {reason}: {', '.join(names)}" for reason, names in by_reason.items()]


def frontier_chart(axes: dict[str, list[FrontierRow]], names: list[str]) -> alt.LayerChart:
    """Accuracy (95% intervals as bars) against cost, the frontier as a staircase through the
    Pareto points, a colour per configuration (`names` order) in the legend, each point's
    details on hover. `axes`: the rows on each cost axis, by the axis's label; with more than
    one, a menu picks the axis and the title follows it."""
    points: list[dict[str, Any]] = []
    for label, rows in axes.items():
        # Configurations drawn on one spot hide each other: each one's details name the others.
        spots: dict[tuple[float, float], list[str]] = {}
        for r in placed(rows):
            spots.setdefault((r.cost or 0.0, r.accuracy), []).append(r.config)
        for r in placed(rows):
            tip = dict(frontier_details(r))
            others = [c for c in spots[(r.cost or 0.0, r.accuracy)] if c != r.config]
            if others:
                tip["same point as"] = ", ".join(others)
            points.append(
                {
                    "axis": label,
                    "config": r.config,
                    "cost": r.cost,
                    "accuracy": r.accuracy,
                    "low": r.accuracy_low,
                    "high": r.accuracy_high,
                    "status": "Pareto-optimal" if r.pareto else "dominated",
                    "tip": tip,
                }
            )
    drawn = {p["config"] for p in points}
    legend = [n for n in names if n in drawn] + sorted(drawn - set(names))
    base = alt.Chart()  # the data once, on the layer
    subtitle = ["bars: 95% intervals; line: the frontier, the best accuracy reachable at each cost"]
    params = []
    if len(axes) == 1:
        ((label, rows),) = axes.items()
        log = use_log([p["cost"] for p in points])
        domain: Any = _cost_domain([p["cost"] for p in points], log)
        x_title = label + (" (log scale)" if log else "")
        label_expr = SMALL_COST_LABEL if _small(domain) else None
        title: Any = f"accuracy against {label}"
        subtitle += unplaced_notes(rows)
    else:
        log = False  # one scale for every axis: its type cannot follow the menu
        pick = menu(list(axes), "axis", "cost axis: ")
        params.append(pick)
        base = base.transform_filter(alt.datum.axis == pick)
        domains = {
            label: _cost_domain([p["cost"] for p in points if p["axis"] == label], log=False)
            for label in axes
        }
        domain = alt.ExprRef(f"{json.dumps(domains)}[axis]")  # the chosen axis's
        small = {label: _small(d) for label, d in domains.items()}
        label_expr = (
            f"{json.dumps(small)}[axis] ? ({SMALL_COST_LABEL}) : datum.label"
            if any(small.values())
            else None
        )
        x_title = "cost per query, on the axis chosen in the menu (its unit in the title)"
        title = alt.ExprRef("'accuracy against ' + axis")
    x = alt.X(
        "cost:Q",
        title=x_title,
        scale=alt.Scale(type="log" if log else "linear", domain=domain, nice=False),
        axis=alt.Axis(labelExpr=label_expr) if label_expr else alt.Undefined,
    )
    in_unit = all(p["low"] >= 0 and p["high"] <= 1 for p in points)
    y = alt.Y(
        "accuracy:Q",
        title="accuracy",
        scale=alt.Scale(domain=[0, 1]) if in_unit else alt.Scale(zero=False),
    )
    colour = config_colour(colours([*names, *sorted(drawn - set(names))], legend))
    bars = base.mark_rule(strokeWidth=1.5, strokeOpacity=0.6, tooltip=TOOLTIP).encode(
        x=x, y="low:Q", y2="high:Q", color=colour
    )
    line = (
        base.transform_filter(alt.datum.status == "Pareto-optimal")
        .mark_line(color=FRONTIER_COLOUR, strokeWidth=2, interpolate="step-after")
        .encode(x=x, y=y, order="cost:Q")
    )
    dots = base.mark_point(filled=True, size=90, opacity=1, tooltip=TOOLTIP).encode(
        x=x,
        y=y,
        color=colour,
        shape=alt.Shape(
            "status:N",
            title="frontier",
            scale=alt.Scale(domain=["Pareto-optimal", "dominated"], range=["circle", "diamond"]),
        ),
    )
    return (
        alt.layer(bars, line, dots, data=alt.Data(values=points))
        .add_params(*params)
        .properties(width=760, height=420, title=alt.TitleParams(text=title, subtitle=subtitle))
    )


def _cost_domain(costs: list[float], log: bool) -> list[float]:
    """An x range with room around the points (none on the plot's edge), below 0 only where a
    cost is."""
    if not costs:
        return [0.0, 1.0]
    low, high = min(costs), max(costs)
    if log:
        return [low / 1.5, high * 1.5]
    room = 0.08 * (high - low) or 0.1 * abs(high) or 1.0
    return [low - room if low - room >= 0 or low < 0 else 0.0, high + room]


def _small(domain: list[float]) -> bool:
    """Whether a cost axis's range is below SMALL_COST (and not just 0)."""
    return 0 < max(abs(v) for v in domain) < SMALL_COST


def write_frontier(
    rows: list[FrontierRow], label: str, path: str | Path, title: str = "tradeoff frontier"
) -> Path:
    """The frontier on one cost axis (`label`) to a .png, or to an .html page with the table of
    every configuration under it."""
    from tradeoff.report.table import frontier_table

    chart = frontier_chart({label: rows}, [r.config for r in rows])
    table, footnotes = frontier_table(rows, label, wide=True)
    return write_chart(chart, path, title, column_table(table) + notes(footnotes))


# --- load ----------------------------------------------------------------------------------------


def load_details(row: dict[str, Any]) -> list[tuple[str, str]]:
    """What a reader hovering over one load point is told, as (label, value) pairs."""

    def spread(key: str, factor: float) -> str:
        values = {p: row[f"{key}_{p}"] for p in ("p50", "p90", "p95", "p99")}
        return " · ".join(
            f"{p} {fmt(None if v is None else v * factor, '.4g')}" for p, v in values.items()
        )

    if row["slo"] is None:
        goodput = correct = "n/a: no SLO"
    else:
        goodput = f"{fmt(row['goodput'])} requests/s ({row['n_slo_met']} met the SLO {row['slo']})"
        correct = (
            "n/a: unscored"
            if row["correct_goodput"] is None
            else f"{fmt(row['correct_goodput'])} requests/s ({row['n_correct_slo_met']} correct)"
        )
    status = f" ({row['status']})" if row.get("status") else ""
    return [
        ("config", row["config"]),
        ("load point", f"{row['load_point']}{status}, target {target_label(row)}"),
        ("achieved", f"{fmt(row['achieved_rate'])} requests/s"),
        ("requests", f"{row['completed']} completed, {row['failed']} failed"),
        ("concurrency", f"{fmt(row['concurrency'], '.3g')} in flight (mean)"),
        ("output", f"{fmt(row['output_tps'])} tokens/s"),
        ("TTFT ms", spread("ttft_s", 1000.0)),
        ("ITL ms", spread("itl_s", 1000.0)),
        ("e2e s", spread("e2e_s", 1.0)),
        ("goodput", goodput),
        ("correct goodput", correct),
        ("saturated", f"yes: {row['saturation_reason']}" if row["saturated"] else "no"),
    ]


def _load_points(
    rows: Sequence[dict[str, Any]], key: str, factor: float, series: str
) -> list[dict[str, Any]]:
    """The drawn points of one panel's series: each load point with an achieved rate and `key`
    (times `factor`)."""
    return [
        {
            "series": series,
            "config": r["config"],
            "x": r["achieved_rate"],
            "y": r[key] * factor,
            "saturated": r["saturated"],
            "tip": {"panel": series, **dict(load_details(r))},
        }
        for r in rows
        if r["achieved_rate"] is not None and r[key] is not None
    ]


def _panel(
    points: list[dict[str, Any]],
    title: str,
    subtitle: list[str],
    x: alt.X,
    y: alt.Y,
    colour: alt.Scale,
    diagonal: tuple[float, float] | None = None,
) -> alt.LayerChart:
    """One small chart: a line per configuration and series, a marker per load point (hollow
    when saturated; squares and dashes for correct goodput); with `diagonal` (its ends), the
    dotted line y = x."""
    base = alt.Chart()  # the data once, on the layer
    # One domain for every panel: the panels share their scales.
    series = [panel[1] for panel in LATENCY_PANELS] + ["goodput", "correct goodput"]
    correct = [s == "correct goodput" for s in series]
    lines = base.mark_line(strokeWidth=1.5).encode(
        x=x,
        y=y,
        color=config_colour(colour),
        strokeDash=alt.StrokeDash(
            "series:N",
            legend=None,
            scale=alt.Scale(domain=series, range=[[6, 4] if c else [1, 0] for c in correct]),
        ),
        order="x:Q",
    )
    marks = base.mark_point(filled=True, size=45, strokeWidth=1.5, opacity=1, tooltip=TOOLTIP)
    dots = marks.encode(
        x=x,
        y=y,
        stroke=alt.Stroke(
            "config:N", title="configuration", scale=colour, legend=config_legend(colour)
        ),
        fill=alt.when(alt.datum.saturated)
        .then(alt.value("white"))
        # a legend of its own (legend=None) would take the configurations' legend away
        .otherwise(
            alt.Fill("config:N", title="configuration", scale=colour, legend=config_legend(colour))
        ),
        shape=alt.Shape(
            "series:N",
            legend=None,
            scale=alt.Scale(domain=series, range=["square" if c else "circle" for c in correct]),
        ),
    )
    layers: list[Any] = [lines, dots]
    if diagonal is not None:
        lo, hi = diagonal
        layers.insert(
            0,
            alt.Chart(alt.Data(values=[{"x": lo, "y": lo}, {"x": hi, "y": hi}]))
            .mark_line(color="#888888", strokeDash=[2, 3], strokeWidth=1)
            .encode(x=x, y=y),
        )
    return alt.layer(*layers, data=alt.Data(values=points)).properties(
        width=420,
        height=240,
        title=alt.TitleParams(title, subtitle=subtitle or "", anchor="start", fontSize=13),
    )


def load_chart(
    rows: Sequence[dict[str, Any]], slo_source: str | None = None, names: Sequence[str] = ()
) -> alt.ConcatChart:
    """The panels of a load run (rows of `analysis.load.load_stats`), two a row, each against
    the throughput achieved: TTFT p50 and p99, e2e p50 and p99, ITL p50, then goodput and correct
    goodput under the SLO (from `slo_source`) beside the line goodput = throughput. A colour per
    configuration, a marker per load point (hollow: saturated), its details on hover."""
    found = dict.fromkeys(r["config"] for r in rows)  # in `names` order: a page's colours
    colour = colours([*(n for n in names if n in found), *(c for c in found if c not in names)])
    xs = [r["achieved_rate"] for r in rows if r["achieved_rate"] is not None]
    x_log = use_log(xs)
    if not xs:
        x_range = [0.0, 1.0]
    elif x_log:
        x_range = [min(xs) / 1.5, max(xs) * 1.5]
    else:
        x_range = [0.0, max(xs) * 1.1 or 1.0]
    x_scale = alt.Scale(type="log" if x_log else "linear", domain=x_range, nice=False)
    x = alt.X("x:Q", title=LOAD_X_TITLE + (" (log scale)" if x_log else ""), scale=x_scale)
    panels = []
    for key, title, unit, factor in LATENCY_PANELS:
        points = _load_points(rows, key, factor, title)
        if use_log([p["y"] for p in points]):
            y = alt.Y("y:Q", title=f"{title}, {unit} (log)", scale=alt.Scale(type="log"))
        else:
            y = alt.Y("y:Q", title=f"{title}, {unit}")
        note = [] if points else [f"no {title} measured: no completed request has it"]
        panels.append(_panel(points, title, note, x, y, colour))
    goodput, diagonal = _goodput_panel(rows, slo_source, x, x_log, x_scale, colour)
    panels.append(goodput)
    legend = [SATURATED_LEGEND]
    if any(r["correct_goodput"] is not None and r["achieved_rate"] is not None for r in rows):
        legend.append(CORRECT_LEGEND)
    if diagonal:
        legend.append(DIAGONAL_LEGEND)
    unplaced = [
        f"not plotted: {r['config']} at {r['load_point']} (no measured request was sent)"
        for r in rows
        if r["achieved_rate"] is None
    ]
    failures = [
        f"{r['config']} at {r['load_point']} {r['failed']} of {r['n_measure']}"
        for r in rows
        if r.get("failed")
    ]
    if failures:  # a point whose requests failed would look merely slow, or sit at 0
        unplaced += _wrap(
            "failed requests, in neither throughput nor goodput nor the latencies: "
            + "; ".join(failures)
        )
    return alt.concat(*panels, columns=2).properties(
        title=alt.TitleParams(
            "latency percentiles and goodput against achieved throughput",
            subtitle=["; ".join(legend), *unplaced],
            anchor="start",
        )
    )


def _goodput_panel(
    rows: Sequence[dict[str, Any]],
    slo_source: str | None,
    x: alt.X,
    x_log: bool,
    x_scale: alt.Scale,
    colour: alt.Scale,
) -> tuple[alt.LayerChart, bool]:
    """Goodput and correct goodput, and whether the diagonal is drawn: on the x axis's scale,
    with the diagonal, unless x is log and a goodput of 0 could not be drawn on it (then linear
    from 0)."""
    y_title = "goodput, requests/s"
    slos = [r["slo"] for r in rows if r["slo"] is not None]
    if not slos:
        note = NO_SLO_NOTE.format(form=SLO_FORM.removeprefix("give "))
        y = alt.Y("y:Q", title=y_title)
        return _panel([], GOODPUT_TITLE, _wrap(note), x, y, colour), False
    points = _load_points(rows, "goodput", 1.0, "goodput")
    points += _load_points(rows, "correct_goodput", 1.0, "correct goodput")
    subtitle = _wrap(f"SLO: {describe_slo(slos[0], slo_source)}")
    scored = {p["config"] for p in points if p["series"] == "correct goodput"}
    drawn = dict.fromkeys(r["config"] for r in rows if r["achieved_rate"] is not None)
    unscored = [c for c in drawn if c not in scored]
    if unscored:
        note = f"correct goodput: n/a for {', '.join(unscored)} (unscored)"
        subtitle += _wrap(note)
    if x_log and not all(p["y"] > 0 for p in points):
        y = alt.Y("y:Q", title=y_title)
        return _panel(points, GOODPUT_TITLE, subtitle, x, y, colour), False
    lo, hi = x_scale.domain
    lowest = min((p["y"] for p in points), default=lo) / 1.5
    y_scale = x_scale
    if x_log and lowest < lo:  # a goodput far under every throughput was drawn below the panel
        y_scale = alt.Scale(type="log", domain=[lowest, hi], nice=False)
    y = alt.Y("y:Q", title=y_title + (" (log)" if x_log else ""), scale=y_scale)
    return _panel(points, GOODPUT_TITLE, subtitle, x, y, colour, diagonal=(lo, hi)), True


def _wrap(text: str) -> list[str]:
    """A note as the lines of a panel's subtitle; names are never split at their hyphens."""
    return textwrap.wrap(text, NOTE_WIDTH, break_long_words=False, break_on_hyphens=False)


def write_load(
    rows: list[dict[str, Any]],
    path: str | Path,
    title: str = "tradeoff load",
    slo_source: str | None = None,
) -> Path:
    """A load run's panels (`load_chart`) to a .png, or to an .html page with the load table."""
    table, footnotes = load_table(rows, wide=True, slo_source=slo_source)
    how = (
        "One line per configuration, a marker per load point, in order of achieved throughput. "
        "Latencies measured at the client over the completed requests; the definitions: "
        "README.md, Reading the load table."
    )
    below = notes([how]) + column_table(table) + notes(footnotes)
    return write_chart(load_chart(rows, slo_source), path, title, below)


# --- router curves -------------------------------------------------------------------------------


def _thinned(n: int) -> list[int]:
    """At most MAX_CURVE_POINTS indices out of `n`, evenly spaced, the first and last kept."""
    if n <= MAX_CURVE_POINTS:
        return list(range(n))
    step = (n - 1) / (MAX_CURVE_POINTS - 1)
    return sorted({round(i * step) for i in range(MAX_CURVE_POINTS)})


def _end(accuracy: float, name: str, at: float, align: Literal["left", "right"]) -> alt.LayerChart:
    """A horizontal rule at one end's accuracy, named above it at `at` % of strong calls."""
    end = alt.Chart(alt.Data(values=[{"accuracy": accuracy, "end": name}]))
    rule = end.mark_rule(color="#bbbbbb", strokeWidth=1).encode(y="accuracy:Q")
    text = end.mark_text(
        align=align, baseline="bottom", dx=4 if align == "left" else -4, dy=-2, color="#777777"
    ).encode(x=alt.datum(at), y="accuracy:Q", text="end:N")
    return rule + text


def _policy_mark(e: Evaluation) -> list[alt.Chart]:
    """A policy file's own routing of the items as served, as a marked point (where the share
    it gives is to the curves' strong configuration); where knowing each query's task routes
    otherwise, that routing too, an open mark: the curves know each query's task, so it lies on
    the policy's curve and the served one may not. None for a router's curve alone."""
    op = e.operating
    if not op or op.get("strong") != e.strong:
        return []
    marks = [(op, f"the policy as served (λ {op['lam']:.4g})", "the policy as served", True)]
    if op.get("with_tasks"):
        known = "the policy, each query's task known"
        marks.append((op["with_tasks"], known, known, False))
    layers: list[alt.Chart] = []
    for point, name, text, filled in marks:
        share, accuracy = 100 * float(point["strong_fraction"]), float(point["accuracy"])
        tip = {"point": name, "strong calls": f"{share:.1f}%", "accuracy": f"{accuracy:.3f}"}
        at = alt.Chart(alt.Data(values=[{"share": share, "accuracy": accuracy, "tip": tip}]))
        mark = at.mark_point(
            shape="diamond", size=160, filled=filled, color="#222222", tooltip=TOOLTIP
        )
        label = at.mark_text(align="left", dx=10, dy=12 if filled else -12, color="#222222").encode(
            x="share:Q", y="accuracy:Q", text=alt.datum(text)
        )
        layers += [mark.encode(x="share:Q", y="accuracy:Q"), label]
    return layers


def router_chart(evaluation: Evaluation) -> alt.LayerChart:
    """Accuracy against the share of calls to the strong configuration, one line per router
    (the router, the oracle, random) with its APGR in the legend, and rules at the weak and
    strong configurations' accuracies."""
    e = evaluation
    points = []
    labels = []
    for r in e.routers:
        label = f"{r.label} (APGR {r.apgr:.2f})"
        labels.append(label)
        curve = r.curve
        for i in _thinned(len(curve.strong_fraction)):
            share, accuracy = 100 * float(curve.strong_fraction[i]), float(curve.accuracy[i])
            tip = {"router": label, "strong calls": f"{share:.1f}%", "accuracy": f"{accuracy:.3f}"}
            points.append({"router": label, "share": share, "accuracy": accuracy, "tip": tip})
    styles = [ROUTER_STYLE.get(r.label, OTHER_ROUTER) for r in e.routers]
    router = alt.Scale(domain=labels, range=[s[0] for s in styles])
    x = alt.X("share:Q", title=f"% of calls to the strong configuration ({e.strong})")
    y = alt.Y("accuracy:Q", title="accuracy (mean score)", scale=alt.Scale(zero=False))
    # One legend of colour and dashes (legend=None on either channel would take it away).
    colour = alt.Color("router:N", title="router", scale=router)
    dashes = alt.Scale(domain=labels, range=[s[1] for s in styles])
    base = alt.Chart()  # the data once, on the layer
    lines = base.mark_line(strokeWidth=2).encode(
        x=x,
        y=y,
        color=colour,
        strokeDash=alt.StrokeDash("router:N", title="router", scale=dashes),
        order="share:Q",
    )
    # Unseen points along the lines, to hover: drawn, they would thicken the lines.
    dots = base.mark_point(size=60, opacity=0, tooltip=TOOLTIP).encode(x=x, y=y)
    # The weak end named where the curves have left it (right), the strong one where they have
    # not reached it yet (left).
    ends = [
        _end(e.acc_weak, f"{e.weak} (weak): {e.acc_weak:.3f}", 100, "right"),
        _end(e.acc_strong, f"{e.strong} (strong): {e.acc_strong:.3f}", 0, "left"),
    ]
    return alt.layer(*ends, lines, dots, *_policy_mark(e), data=alt.Data(values=points)).properties(
        width=640,
        height=400,
        title=alt.TitleParams(
            f"{e.weak} → {e.strong}, {e.items} items, {e.source}",
            subtitle=f"accuracy against the share of calls to the strong configuration; cost "
            f"axis {e.cost_axis}",
        ),
    )


def write_router(evaluation: Evaluation, path: str | Path) -> Path:
    """A router's curves to a .png, or to an .html page with its metrics tables."""
    from tradeoff.report.router_table import (
        ROUTER_NOTE,
        policy_line,
        router_heading,
        router_tables,
    )

    e = evaluation
    below = "".join(f"<p>{html.escape(t)}</p>" for t in (router_heading(e), policy_line(e)) if t)
    below += "".join(column_table(t) for t in router_tables(e)) + notes([ROUTER_NOTE])
    title = f"tradeoff router evaluation: {e.weak} → {e.strong}"
    return write_chart(router_chart(e), path, title, below)
