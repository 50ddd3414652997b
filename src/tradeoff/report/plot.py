"""Accuracy-cost frontier plots: a PNG through matplotlib, and one self-contained HTML file (inline
SVG drawn here, hover details, no external scripts or styles) that opens offline."""

from __future__ import annotations

import html
import math
from collections import defaultdict
from pathlib import Path

from tradeoff.analysis.frontier import FrontierRow
from tradeoff.report.page import (
    Scale,
    axis_ticks,
    fmt,
    hover_group,
    html_page,
    html_table,
    nice_ticks,
    use_log,
)
from tradeoff.report.table import short_reason

FRONTIER_COLOUR = "#d95f02"
POINT_COLOUR = "#1b6ca8"
DOMINATED_COLOUR = "#8a8a8a"


def _placed(rows: list[FrontierRow]) -> list[FrontierRow]:
    """The rows that can be drawn: a known cost and an accuracy."""
    return [r for r in rows if r.cost is not None and not math.isnan(r.accuracy)]


def _unplaced(rows: list[FrontierRow]) -> list[FrontierRow]:
    return [r for r in rows if r not in _placed(rows)]


def _frontier_path(rows: list[FrontierRow], right: float) -> list[tuple[float, float]]:
    """The frontier as a staircase: the best accuracy reachable at each cost, out to `right`."""
    points = sorted((r.cost, r.accuracy) for r in rows if r.pareto and r.cost is not None)
    path: list[tuple[float, float]] = []
    for cost, acc in points:
        if path:
            path.append((cost, path[-1][1]))
        path.append((cost, acc))
    if path and right > path[-1][0]:
        path.append((right, path[-1][1]))
    return path


def _stack(rows: list[FrontierRow]) -> dict[str, int]:
    """For configurations drawn at the same spot, which of them each is (labels stack up)."""
    seen: dict[tuple[float, float], int] = defaultdict(int)
    order = {}
    for r in rows:
        key = (round(r.cost or 0.0, 12), round(r.accuracy, 12))
        order[r.config] = seen[key]
        seen[key] += 1
    return order


def details(row: FrontierRow) -> list[tuple[str, str]]:
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
        ("E³", f"{fmt(row.e3)} acc²/output token ({row.output_tokens:.1f} tokens/query)"),
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


# --- PNG ----------------------------------------------------------------------------------------


def plot_png(rows: list[FrontierRow], cost_label: str, path: str | Path) -> Path:
    """Accuracy (95% interval bars) against cost, the frontier as a staircase through the Pareto
    points, each point labelled. Configurations with no known cost are listed under the plot."""
    from matplotlib.figure import Figure  # Figure alone draws with Agg; no pyplot state

    placed = _placed(rows)
    unplaced = _unplaced(rows)
    fig = Figure(figsize=(8.5, 5.5 + 0.15 * len(unplaced)), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    costs = [r.cost for r in placed if r.cost is not None]
    for pareto in (False, True):
        group = [r for r in placed if r.pareto == pareto]
        if not group:
            continue
        ax.errorbar(
            [r.cost or 0.0 for r in group],
            [r.accuracy for r in group],
            yerr=[
                [r.accuracy - r.accuracy_low for r in group],
                [r.accuracy_high - r.accuracy for r in group],
            ],
            fmt="o",
            color=POINT_COLOUR if pareto else DOMINATED_COLOUR,
            mfc=POINT_COLOUR if pareto else "white",
            capsize=3,
            zorder=3,
            label="Pareto-optimal" if pareto else "dominated",
        )
    path_points = _frontier_path(placed, max(costs) if costs else 0.0)
    if len(path_points) > 1:
        ax.plot(
            [p[0] for p in path_points],
            [p[1] for p in path_points],
            color=FRONTIER_COLOUR,
            lw=1.5,
            zorder=2,
            label="frontier",
        )
    stack = _stack(placed)
    for r in placed:
        ax.annotate(
            r.config,
            (r.cost or 0.0, r.accuracy),
            xytext=(6, 4 + 11 * stack[r.config]),
            textcoords="offset points",
            fontsize=8,
        )
    if use_log(costs):
        ax.set_xscale("log")
    elif costs and min(costs) >= 0:
        ax.set_xlim(left=0, right=max(costs) * 1.15 or 1.0)
    accs = [v for r in placed for v in (r.accuracy_low, r.accuracy_high)]
    if accs and min(accs) >= 0 and max(accs) <= 1:
        ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel(cost_label)
    ax.set_ylabel("accuracy (bars: 95% interval)")
    ax.grid(True, alpha=0.3)
    if placed:
        ax.legend(loc="best", fontsize=8)
    if unplaced:
        # Below the x label; constrained layout makes room for it.
        note = "\n".join(
            f"not plotted, cost unknown: {r.config} ({r.cost_missing})" for r in unplaced
        )
        ax.text(0, -0.12, note, transform=ax.transAxes, va="top", fontsize=7, color="#555555")
    path = Path(path)
    fig.savefig(path, format="png")
    return path


# --- HTML ---------------------------------------------------------------------------------------

_W, _H = 900, 540
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 150, 24, 64


def _svg(rows: list[FrontierRow], cost_label: str) -> str:
    placed = _placed(rows)
    costs = [r.cost for r in placed if r.cost is not None] or [0.0, 1.0]
    log = use_log(costs)
    xt = axis_ticks(costs, log)
    accs = [v for r in placed for v in (r.accuracy_low, r.accuracy_high)] or [0.0, 1.0]
    unit_range = min(accs) >= 0 and max(accs) <= 1
    yt = [i / 10 for i in range(0, 11, 2)] if unit_range else nice_ticks(min(accs), max(accs))
    x = Scale(xt[0], xt[-1], _LEFT, _W - _RIGHT, log)
    y = Scale(yt[0], yt[-1], _H - _BOTTOM, _TOP, False)
    e = html.escape
    out = [
        f'<svg width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{e("accuracy against " + cost_label)}">'
    ]
    for t in xt:
        px = x(t)
        out.append(
            f'<line class="grid" x1="{px:.1f}" y1="{_TOP}" x2="{px:.1f}" y2="{_H - _BOTTOM}"/>'
        )
        out.append(
            f'<text class="tick" x="{px:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">'
            f"{e(format(t, '.4g'))}</text>"
        )
    for t in yt:
        py = y(t)
        out.append(
            f'<line class="grid" x1="{_LEFT}" y1="{py:.1f}" x2="{_W - _RIGHT}" y2="{py:.1f}"/>'
        )
        out.append(
            f'<text class="tick" x="{_LEFT - 8}" y="{py + 4:.1f}" text-anchor="end">'
            f"{e(format(t, '.1f' if unit_range else '.4g'))}</text>"
        )
    out.append(
        f'<line class="axis" x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" '
        f'y2="{_H - _BOTTOM}"/>'
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}"/>'
    )
    mid_x = (_LEFT + _W - _RIGHT) / 2
    out.append(
        f'<text x="{mid_x:.1f}" y="{_H - 18}" text-anchor="middle">'
        f"{e(cost_label + (' (log scale)' if log else ''))}</text>"
    )
    mid_y = (_TOP + _H - _BOTTOM) / 2
    out.append(
        f'<text x="18" y="{mid_y:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 18 {mid_y:.1f})">accuracy (bars: 95% interval)</text>'
    )
    path = _frontier_path(placed, xt[-1])
    if path:
        pts = " ".join(f"{x(c):.1f},{y(a):.1f}" for c, a in path)
        out.append(
            f'<polyline points="{pts}" fill="none" stroke="{FRONTIER_COLOUR}" stroke-width="2">'
            "<title>frontier: the best accuracy reachable at each cost</title></polyline>"
        )
    stack = _stack(placed)
    for r in sorted(placed, key=lambda r: r.pareto):  # Pareto points drawn last, on top
        px, py = x(r.cost or 0.0), y(r.accuracy)
        lo, hi = y(r.accuracy_low), y(r.accuracy_high)
        colour = POINT_COLOUR if r.pareto else DOMINATED_COLOUR
        out.append(
            hover_group(details(r))
            + f'<line x1="{px:.1f}" y1="{lo:.1f}" x2="{px:.1f}" y2="{hi:.1f}" '
            f'stroke="{colour}" stroke-width="1.5"/>'
            f'<line x1="{px - 4:.1f}" y1="{lo:.1f}" x2="{px + 4:.1f}" y2="{lo:.1f}" '
            f'stroke="{colour}"/>'
            f'<line x1="{px - 4:.1f}" y1="{hi:.1f}" x2="{px + 4:.1f}" y2="{hi:.1f}" '
            f'stroke="{colour}"/>'
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" stroke="{colour}" stroke-width="1.5" '
            f'fill="{colour if r.pareto else "#fff"}"/>'
            f'<text x="{px + 8:.1f}" y="{py - 6 - 14 * stack[r.config]:.1f}">'
            f"{e(r.config)}</text></g>"
        )
    lx, ly = _W - _RIGHT + 16, _TOP + 10
    out.append(
        f'<circle cx="{lx}" cy="{ly}" r="5" fill="{POINT_COLOUR}" stroke="{POINT_COLOUR}"/>'
        f'<text x="{lx + 10}" y="{ly + 4}">Pareto-optimal</text>'
        f'<circle cx="{lx}" cy="{ly + 20}" r="5" fill="#fff" stroke="{DOMINATED_COLOUR}" '
        f'stroke-width="1.5"/><text x="{lx + 10}" y="{ly + 24}">dominated</text>'
        f'<line x1="{lx - 6}" y1="{ly + 40}" x2="{lx + 6}" y2="{ly + 40}" '
        f'stroke="{FRONTIER_COLOUR}" stroke-width="2"/><text x="{lx + 10}" y="{ly + 44}">'
        "frontier</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


def _html_table(rows: list[FrontierRow]) -> str:
    unit = rows[0].cost_unit if rows else ""
    head = [
        "Pareto",
        "config",
        "n",
        "accuracy [95% CI]",
        f"cost {unit}/query",
        f"cost-of-pass {unit}/correct",
        "accuracy/J",
        "IPW accuracy/W",
        "E³ acc²/token",
        "errors",
    ]
    cells = []
    for r in rows:
        cost = fmt(r.cost) if r.cost is not None else f"n/a ({short_reason(r.cost_missing or '')})"
        cells.append(
            [
                ("★" if r.pareto else "", ""),
                (r.config, "name"),
                (str(r.n), "num"),
                (f"{r.accuracy:.3f} [{r.accuracy_low:.3f}, {r.accuracy_high:.3f}]", "num"),
                (cost, "num"),
                (fmt(r.cost_of_pass), "num"),
                (fmt(r.accuracy_per_joule, ".3g"), "num"),
                (fmt(r.ipw, ".3g"), "num"),
                (fmt(r.e3, ".3g"), "num"),
                (str(r.errors), "num"),
            ]
        )
    return html_table(head, cells)


def plot_html(
    rows: list[FrontierRow], cost_label: str, path: str | Path, title: str = "tradeoff frontier"
) -> Path:
    """One HTML file with no external resources: the frontier as an inline SVG (hover or focus a
    point for its details) and the table of every configuration."""
    e = html.escape
    unplaced = _unplaced(rows)
    notes = [
        f'<p class="note">Not plotted, cost unknown: {e(r.config)} ({e(r.cost_missing or "")})</p>'
        for r in unplaced
    ]
    notes.append(
        '<p class="note">Pareto-optimal: no other configuration is more accurate at the same or '
        "lower cost, or as accurate at a lower cost. Failed queries score 0 and their cost "
        "counts. accuracy/J and IPW only where energy was measured.</p>"
    )
    notes += [f'<p class="note">{e(r.config)}: {e(r.cost_note)}</p>' for r in rows if r.cost_note]
    doc = html_page(
        title,
        [
            f'<p class="axis">accuracy against {e(cost_label)}</p>',
            _svg(rows, cost_label),
            *notes,
            _html_table(rows),
        ],
    )
    path = Path(path)
    path.write_text(doc + "\n", encoding="utf-8")
    return path
