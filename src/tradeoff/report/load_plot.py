"""Load-run plots: per configuration, latency percentiles and goodput against the throughput it
achieved at each load point (rows of `analysis.load.load_stats`), as a PNG through matplotlib or
as one self-contained HTML file (inline SVG drawn with `report.page`, hover details, no external
resources) that opens offline. Both draw the same `Chart`s."""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradeoff.analysis.load import SLO_FORM
from tradeoff.report.load_table import NO_SLO_NOTE, describe_slo, target_label
from tradeoff.report.page import Scale, axis_ticks, fmt, hover_group, html_page, html_table, use_log

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# matplotlib's tab10, so that a configuration has one colour in the PNG and in the HTML
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
GOODPUT_TITLE = "goodput and correct goodput"
NOTE_WIDTH = 64  # characters of a note in a panel, per line
X_LABEL = "achieved throughput, requests/s (completed / measured window)"
SATURATED_LEGEND = "hollow: saturated, the upstream did not keep up"
DIAGONAL_LEGEND = "dotted: goodput = achieved throughput (every completed request met the SLO)"

# (row field, panel title, unit, factor from seconds): the percentiles the load table shows by
# default, in the panels' order (two columns)
LATENCY_PANELS = (
    ("ttft_s_p50", "TTFT p50", "ms", 1000.0),
    ("ttft_s_p99", "TTFT p99", "ms", 1000.0),
    ("e2e_s_p50", "end-to-end p50", "s", 1.0),
    ("e2e_s_p99", "end-to-end p99", "s", 1.0),
    ("itl_s_p50", "ITL p50", "ms", 1000.0),
)


@dataclass
class Series:
    """One configuration's line in one panel: (x, y, its load_stats row) in order of x."""

    config: str
    colour: str
    label: str
    dashed: bool
    square: bool
    points: list[tuple[float, float, dict[str, Any]]]


@dataclass
class Chart:
    """One panel: its series, whether its y axis is log10, and what to say when it is empty."""

    title: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    y_log: bool = False
    subtitle: str | None = None
    note: str | None = None
    diagonal: bool = False  # y = x, drawn where x and y share one scale

    def ys(self) -> list[float]:
        return [y for s in self.series for _, y, _ in s.points]

    def note_lines(self) -> list[str]:
        """The note, wrapped to the panel's width."""
        return textwrap.wrap(self.note or "", NOTE_WIDTH)


def colours(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each configuration's colour, in the order the configurations first appear."""
    names = dict.fromkeys(r["config"] for r in rows)
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _placed(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that can be drawn: an achieved rate (some measured request was sent)."""
    return [r for r in rows if r["achieved_rate"] is not None]


def _series(
    rows: Sequence[dict[str, Any]],
    key: str,
    factor: float,
    label: str,
    dashed: bool = False,
    square: bool = False,
) -> list[Series]:
    """Per configuration, its load points that have `key`, in order of achieved rate."""
    out = []
    for config, colour in colours(rows).items():
        points = sorted(
            (
                (r["achieved_rate"], r[key] * factor, r)
                for r in _placed(rows)
                if r["config"] == config and r[key] is not None
            ),
            key=lambda p: p[0],
        )
        if points:
            out.append(Series(config, colour, label, dashed, square, points))
    return out


def charts(rows: Sequence[dict[str, Any]], slo_source: str | None = None) -> list[Chart]:
    """The panels of a load plot: TTFT p50 and p99, e2e p50 and p99, ITL p50, then goodput and
    correct goodput, each against the achieved rate. `slo_source`: where the SLO came from."""
    out = []
    for key, title, unit, factor in LATENCY_PANELS:
        chart = Chart(title, f"{title}, {unit}")
        chart.series = _series(rows, key, factor, title)
        chart.y_log = use_log(chart.ys())
        if not chart.series:
            chart.note = f"no {title} measured: no completed request has it"
        out.append(chart)
    slos = [r["slo"] for r in rows if r["slo"] is not None]
    if not slos:
        note = NO_SLO_NOTE.format(form=SLO_FORM.removeprefix("give "))
        out.append(Chart(GOODPUT_TITLE, "goodput, requests/s", note=note))
        return out
    goodput = Chart(
        GOODPUT_TITLE,
        "goodput, requests/s",
        subtitle=f"SLO: {describe_slo(slos[0], slo_source)}",
        diagonal=True,
    )
    goodput.series = _series(rows, "goodput", 1.0, "goodput")
    goodput.series += _series(
        rows, "correct_goodput", 1.0, "correct goodput", dashed=True, square=True
    )
    scored = {s.config for s in goodput.series if s.dashed}
    unscored = [c for c in colours(_placed(rows)) if c not in scored]
    if unscored:
        goodput.note = f"correct goodput: n/a for {', '.join(unscored)} (unscored)"
    out.append(goodput)
    return out


def _x_values(rows: Sequence[dict[str, Any]]) -> list[float]:
    return [r["achieved_rate"] for r in _placed(rows)]


def _scaled_as_x(chart: Chart, x_log: bool) -> bool:
    """Whether the chart's y axis takes the x axis's scale and range: goodput's does (y = x on
    the diagonal), unless x is log10 and a goodput of 0 could not be drawn on it; then its y
    axis is linear from 0 and it has no diagonal."""
    return chart.diagonal and (not x_log or all(y > 0 for y in chart.ys()))


def details(row: dict[str, Any]) -> list[tuple[str, str]]:
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


def _unplaced_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"not plotted: {r['config']} at {r['load_point']} (no measured request was sent)"
        for r in rows
        if r["achieved_rate"] is None
    ]


# --- PNG ----------------------------------------------------------------------------------------


def _draw(ax: Axes, chart: Chart, x_log: bool, x_lim: tuple[float, float], labels: bool) -> None:
    for s in chart.series:
        xs, ys = [p[0] for p in s.points], [p[1] for p in s.points]
        ax.plot(xs, ys, "--" if s.dashed else "-", color=s.colour, lw=1.3, zorder=2)
        marker = "s" if s.square else "o"
        for x, y, row in s.points:
            ax.plot(
                x,
                y,
                marker,
                color=s.colour,
                mfc="white" if row["saturated"] else s.colour,
                mew=1.5,
                ms=6,
                zorder=3,
                clip_on=False,
            )
            if labels:
                ax.annotate(
                    row["load_point"], (x, y), xytext=(5, 4), textcoords="offset points", fontsize=6
                )
    same_scale = _scaled_as_x(chart, x_log)
    if x_log:
        ax.set_xscale("log")
    ax.set_xlim(*x_lim)
    if same_scale:
        if x_log:
            ax.set_yscale("log")
        ax.set_ylim(*x_lim)
        ax.axline((1, 1), (2, 2), color="#888888", ls=":", lw=1, zorder=1)
    elif chart.y_log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    if chart.note:
        ax.text(
            0.5,
            0.5 if not chart.series else 0.97,
            "\n".join(chart.note_lines()),
            transform=ax.transAxes,
            ha="center",
            va="center" if not chart.series else "top",
            fontsize=7,
            color="#555555",
        )
    subtitle = f"\n{chart.subtitle}" if chart.subtitle else ""
    ax.set_title(chart.title + subtitle, fontsize=9)
    ax.set_ylabel(chart.y_label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)


def _x_lim(xs: list[float], log: bool) -> tuple[float, float]:
    if not xs:
        return (0.0, 1.0)
    if log:
        return (min(xs) / 1.5, max(xs) * 1.5)
    return (0.0, max(xs) * 1.1 or 1.0)


def plot_load_png(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    title: str = "tradeoff load",
    slo_source: str | None = None,
) -> Path:
    """Six panels, each against the achieved rate: TTFT p50 and p99, e2e p50 and p99, ITL p50,
    goodput and correct goodput. One line per configuration, a marker per load point (hollow:
    saturated); load points named in the first panel."""
    from matplotlib.figure import Figure  # Figure alone draws with Agg; no pyplot state
    from matplotlib.lines import Line2D

    panels = charts(rows, slo_source)
    xs = _x_values(rows)
    x_log = use_log(xs)
    x_lim = _x_lim(xs, x_log)
    fig = Figure(figsize=(11, 12), dpi=110, layout="constrained")
    axes = fig.subplots(3, 2).flatten()
    for i, (ax, chart) in enumerate(zip(axes, panels, strict=True)):
        _draw(ax, chart, x_log, x_lim, labels=i == 0)
        if i >= 4:
            ax.set_xlabel(X_LABEL + (" (log scale)" if x_log else ""), fontsize=8)
    handles = [Line2D([], [], color=c, marker="o", label=name) for name, c in colours(rows).items()]
    handles.append(
        Line2D([], [], color="#555555", marker="o", mfc="white", ls="", label=SATURATED_LEGEND)
    )
    if any(s.dashed for s in panels[-1].series):
        handles.append(
            Line2D([], [], color="#555555", marker="s", ls="--", label="correct goodput")
        )
    if _scaled_as_x(panels[-1], x_log):
        handles.append(Line2D([], [], color="#888888", ls=":", label=DIAGONAL_LEGEND))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    unplaced = _unplaced_notes(rows)
    fig.suptitle(title + ("\n" + "\n".join(unplaced) if unplaced else ""), fontsize=11)
    path = Path(path)
    fig.savefig(path, format="png")
    return path


# --- HTML ---------------------------------------------------------------------------------------

_W, _H = 460, 310
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 40, 44

_LOAD_CSS = """
.panels { display: grid; grid-template-columns: repeat(2, max-content); gap: 12px; }
.legend span.key { display: inline-block; width: 14px; height: 4px; margin: 0 4px 3px 12px;
  vertical-align: middle; }
.legend { margin: 0 0 12px; font-size: 13px; }
"""


def _ticks_svg(x: Scale, y: Scale, xt: list[float], yt: list[float]) -> list[str]:
    out = []
    for t in xt:
        px = x(t)
        out.append(
            f'<line class="grid" x1="{px:.1f}" y1="{_TOP}" x2="{px:.1f}" y2="{_H - _BOTTOM}"/>'
            f'<text class="tick" x="{px:.1f}" y="{_H - _BOTTOM + 15}" text-anchor="middle">'
            f"{format(t, '.4g')}</text>"
        )
    for t in yt:
        py = y(t)
        out.append(
            f'<line class="grid" x1="{_LEFT}" y1="{py:.1f}" x2="{_W - _RIGHT}" y2="{py:.1f}"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">'
            f"{format(t, '.4g')}</text>"
        )
    out.append(
        f'<line class="axis" x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" '
        f'y2="{_H - _BOTTOM}"/>'
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}"/>'
    )
    return out


def _marker(s: Series, px: float, py: float, hollow: bool) -> str:
    fill = "#fff" if hollow else s.colour
    paint = f'stroke="{s.colour}" stroke-width="1.5" fill="{fill}"'
    if s.square:
        return f'<rect x="{px - 4:.1f}" y="{py - 4:.1f}" width="8" height="8" {paint}/>'
    return f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4.5" {paint}/>'


def _svg(chart: Chart, xs: list[float], x_log: bool, labels: bool) -> str:
    e = html.escape
    xt = axis_ticks(xs or [0.0, 1.0], x_log)
    x = Scale(xt[0], xt[-1], _LEFT, _W - _RIGHT, x_log)
    same_scale = _scaled_as_x(chart, x_log)
    y_log = x_log if same_scale else chart.y_log
    yt = xt if same_scale else axis_ticks(chart.ys() or [0.0, 1.0], y_log)
    y = Scale(yt[0], yt[-1], _H - _BOTTOM, _TOP, y_log)
    out = [
        f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{e(chart.title + " against achieved throughput")}">',
        f'<text x="{_LEFT}" y="16" font-weight="bold">{e(chart.title)}</text>',
        f'<text class="tick" x="{_LEFT}" y="31">{e(chart.subtitle or "")}</text>',
        *_ticks_svg(x, y, xt, yt),
        f'<text x="{(_LEFT + _W - _RIGHT) / 2:.1f}" y="{_H - 8}" text-anchor="middle">'
        f"achieved requests/s{' (log scale)' if x_log else ''}</text>",
        f'<text x="14" y="{(_TOP + _H - _BOTTOM) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(_TOP + _H - _BOTTOM) / 2:.1f})">'
        f"{e(chart.y_label + (' (log)' if y_log else ''))}</text>",
    ]
    if same_scale:
        lo, hi = max(xt[0], yt[0]), min(xt[-1], yt[-1])
        out.append(
            f'<line x1="{x(lo):.1f}" y1="{y(lo):.1f}" x2="{x(hi):.1f}" y2="{y(hi):.1f}" '
            'stroke="#888" stroke-dasharray="2 3"><title>goodput = achieved throughput: every '
            "completed request met the SLO</title></line>"
        )
    for s in chart.series:
        pts = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py, _ in s.points)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(
            f'<polyline points="{pts}" fill="none" stroke="{s.colour}" stroke-width="1.5"{dash}/>'
        )
    for s in chart.series:
        for px, py, row in s.points:
            cx, cy = x(px), y(py)
            pairs = [("panel", s.label), *details(row)]
            # Right of the point, or left of it near the plot's right edge (never cut off there).
            left = cx > _W - _RIGHT - 90
            anchor = "end" if left else "start"
            label = (
                f'<text class="tick" x="{cx - 6 if left else cx + 6:.1f}" y="{cy - 6:.1f}" '
                f'text-anchor="{anchor}">{e(row["load_point"])}</text>'
                if labels
                else ""
            )
            out.append(hover_group(pairs) + _marker(s, cx, cy, row["saturated"]) + label + "</g>")
    lines = chart.note_lines()
    top = (_TOP + _H - _BOTTOM) / 2 - 7 * (len(lines) - 1) if not chart.series else _TOP + 14
    for i, line in enumerate(lines):
        out.append(
            f'<text class="tick" x="{(_LEFT + _W - _RIGHT) / 2:.1f}" y="{top + 14 * i:.1f}" '
            f'text-anchor="middle">{e(line)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _legend(rows: Sequence[dict[str, Any]], panels: list[Chart], x_log: bool) -> str:
    e = html.escape
    keys = "".join(
        f'<span class="key" style="background:{c}"></span>{e(name)}'
        for name, c in colours(rows).items()
    )
    marks = [SATURATED_LEGEND]
    if any(s.dashed for s in panels[-1].series):
        marks.append("dashed, squares: correct goodput")
    if _scaled_as_x(panels[-1], x_log):
        marks.append(DIAGONAL_LEGEND)
    return f'<p class="legend">{keys}</p><p class="note">{e("; ".join(marks))}</p>'


def _table(rows: Sequence[dict[str, Any]]) -> str:
    def ms(value: float | None) -> str:
        return fmt(None if value is None else value * 1000, ".4g")

    head = [
        "config",
        "load point",
        "target",
        "req/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "ITL p50 ms",
        "e2e p50 s",
        "e2e p99 s",
        "goodput req/s",
        "correct goodput",
        "saturated",
    ]
    cells = [
        [
            (r["config"], "name"),
            (r["load_point"], ""),
            (target_label(r), "num"),
            (fmt(r["achieved_rate"], ".4g"), "num"),
            (ms(r["ttft_s_p50"]), "num"),
            (ms(r["ttft_s_p99"]), "num"),
            (ms(r["itl_s_p50"]), "num"),
            (fmt(r["e2e_s_p50"], ".4g"), "num"),
            (fmt(r["e2e_s_p99"], ".4g"), "num"),
            (fmt(r["goodput"], ".4g"), "num"),
            (fmt(r["correct_goodput"], ".4g"), "num"),
            (f"▲ {r['saturation_reason']}" if r["saturated"] else "", ""),
        ]
        for r in rows
    ]
    return html_table(head, cells)


def plot_load_html(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    title: str = "tradeoff load",
    slo_source: str | None = None,
) -> Path:
    """One HTML file with no external resources: the panels of `plot_load_png` as inline SVGs
    (hover or focus a point for its details: configuration, load point, achieved rate, the
    percentiles, goodput, saturation and why), then the table of every load point."""
    e = html.escape
    panels = charts(rows, slo_source)
    xs = _x_values(rows)
    x_log = use_log(xs)
    svgs = [_svg(chart, xs, x_log, labels=i == 0) for i, chart in enumerate(panels)]
    notes = [f'<p class="note">{e(note)}</p>' for note in _unplaced_notes(rows)]
    notes.append(
        '<p class="note">One line per configuration, a marker per load point, in order of '
        f"achieved throughput; x: {e(X_LABEL)}. Latencies measured at the client over the "
        "completed requests (percentiles: numpy.percentile, linear); ITL: each request's mean "
        "gap between tokens. Measured requests only: warm-up and cool-down are left out. The "
        "definitions: README.md, Reading the load table.</p>"
    )
    doc = html_page(
        title,
        [
            '<p class="axis">latency percentiles and goodput against achieved throughput, per '
            "configuration and load point</p>",
            _legend(rows, panels, x_log),
            '<div class="panels">',
            *svgs,
            "</div>",
            *notes,
            _table(rows),
        ],
        css=_LOAD_CSS,
    )
    path = Path(path)
    path.write_text(doc + "\n", encoding="utf-8")
    return path
