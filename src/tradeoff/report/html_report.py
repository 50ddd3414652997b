"""`tradeoff report DIR --html`: one self-contained page per run (every script and style inline:
it opens offline) with what ran and where, the summary table (sortable), the frontier on every
cost axis the run has, accuracy by task, and latency distributions per configuration.

Every figure comes from the same analysis as the terminal tables (`analysis.metrics`,
`analysis.frontier`); the plots aggregate (quantiles, means), so the page's size follows the
number of configurations and tasks, not of records.
"""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradeoff.report import vega
from tradeoff.report.html_page import column_table, menu, notes, page

QUANTILES = np.linspace(0.0, 1.0, 101)  # the points of each latency distribution drawn
LATENCIES = {"ttft_s": "time to first token", "itl_s": "inter-token latency", "e2e_s": "end to end"}


def write_report(directory: Path, path: Path) -> Path:
    """Write the report of the run in `directory` to `path`; returns `path`."""
    path.write_text(report_html(directory), encoding="utf-8")
    return path


def report_html(directory: Path) -> str:
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        run = store.run()
        records = store.records()
        names = [c["name"] for c in store.configs()]
        samples = store.host_samples()
    finally:
        store.close()
    measured = records[records["phase"].fillna("measure") == "measure"]
    sections = [
        _header(directory, run, measured, samples),
        _summary(measured, names, run),
        _frontier(measured, names),
        _by_task(measured, names),
        _latencies(measured, names),
    ]
    return page(f"tradeoff report: {directory.name}", sections)


# Sections -----------------------------------------------------------------------------------


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _header(
    directory: Path, run: dict[str, Any], records: pd.DataFrame, samples: list[dict[str, Any]]
) -> str:
    from tradeoff.meters.conditions import summarize
    from tradeoff.report.table import host_notes, meter_notes

    host = run.get("host") or {}
    started, ended = run.get("created_at"), run.get("ended_at")
    took = f"{ended - started:,.0f} s" if started and ended else "still running, or cut short"
    versions = ", ".join(f"{k} {v}" for k, v in sorted((host.get("versions") or {}).items()) if v)
    facts = {
        "run": f"{run.get('id')} ({run.get('status')})",
        "directory": str(directory.resolve()),
        "started": _when(started),
        "took": took,
        "records": f"{len(records):,} measured",
        "host": f"{host.get('hostname', '-')}: {host.get('cpu', '-')}, "
        f"{host.get('cpu_cores', '-')} cores",
        "GPUs": ", ".join(host.get("gpus") or []) or "none",
        "versions": versions or "-",
    }
    line, busy = host_notes(summarize(samples))
    lines = [*meter_notes(run.get("meters") or []), *([line] if line else [])]
    lines += [busy] if busy else []
    spec = json.dumps(run.get("spec"), indent=2, default=str)
    return (
        f"<h1>tradeoff report: {html.escape(directory.name)}</h1>"
        '<dl class="facts">'
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items())
        + "</dl>"
        + notes(lines)
        + f"<details><summary>the spec</summary><pre>{html.escape(spec)}</pre></details>"
    )


def _summary(records: pd.DataFrame, names: list[str], run: dict[str, Any]) -> str:
    from tradeoff.analysis.metrics import summarize
    from tradeoff.report.table import summary_table

    table, lines = summary_table(summarize(records, names), wide=True)
    return "<h2>Summary</h2>" + column_table(table) + notes(lines)


def _frontier(records: pd.DataFrame, names: list[str]) -> str:
    """The frontier on every cost axis with a cost for some configuration; a menu picks the axis."""
    from tradeoff.analysis.costs import COST_AXES
    from tradeoff.analysis.frontier import axis_label, frontier
    from tradeoff.report.charts import frontier_chart, unplaced_notes

    axes = {}
    for name in COST_AXES:
        rows = frontier(records, name, names)
        if any(r.cost is not None for r in rows):
            axes[axis_label(name, rows)] = rows
    if not axes:
        return "<h2>Frontier</h2><p class='note'>No configuration has a cost on any axis.</p>"
    lines = [
        "Hover a point for its details; the bars are 95% intervals of accuracy. The frontier "
        "(the line) joins the configurations no other beats on both accuracy and the chosen cost."
    ]
    lines += [f"{label}: {note}" for label, rows in axes.items() for note in unplaced_notes(rows)]
    return "<h2>Frontier</h2>" + vega.embed("frontier", frontier_chart(axes, names)) + notes(lines)


def _by_task(records: pd.DataFrame, names: list[str]) -> str:
    import altair as alt

    from tradeoff.analysis.metrics import accuracy_interval, record_scores

    rows = []
    for (config, task), group in records.groupby(["config", "task"], sort=False):
        acc, low, high = accuracy_interval(record_scores(group))
        rows.append({"config": config, "task": task, "accuracy": acc, "low": low, "high": high,
                     "n": len(group)})  # fmt: skip
    if not rows:
        return ""
    data = pd.DataFrame(rows)
    heat = (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=alt.X("task:N", title="task"),
            y=alt.Y("config:N", title="configuration", sort=names),
            color=alt.Color(
                "accuracy:Q", scale=alt.Scale(domain=[0, 1], scheme="viridis"), title="accuracy"
            ),
            tooltip=["config:N", "task:N", "accuracy:Q", "low:Q", "high:Q", "n:Q"],
        )
    )
    text = heat.mark_text(fontSize=11).encode(
        text=alt.Text("accuracy:Q", format=".2f"),
        color=alt.condition(alt.datum.accuracy > 0.6, alt.value("black"), alt.value("white")),
    )
    chart = (heat + text).properties(
        title="accuracy by task and configuration", width=alt.Step(90), height=alt.Step(30)
    )
    return "<h2>Accuracy by task</h2>" + vega.embed("by-task", chart)


def _latencies(records: pd.DataFrame, names: list[str]) -> str:
    """Each configuration's distribution of each latency, as 101 quantiles (a CDF)."""
    import altair as alt

    rows = []
    for config, group in records.groupby("config", sort=False):
        for column, title in LATENCIES.items():
            values = group[column].dropna().to_numpy(dtype=float)
            if len(values) == 0:
                continue
            for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True):
                rows.append({"config": config, "latency": title, "share": q, "ms": 1e3 * v})
    if not rows:
        return ""
    data = pd.DataFrame(rows)
    pick = menu(list(data["latency"]), "latency", "latency: ", last=True)
    chart = (
        alt.Chart(data)
        .transform_filter(alt.datum.latency == pick)
        .mark_line()
        .encode(
            x=alt.X("ms:Q", title="milliseconds", scale=alt.Scale(type="log")),
            y=alt.Y("share:Q", title="share of requests at or below", axis=alt.Axis(format="%")),
            color=alt.Color("config:N", title="configuration", sort=names),
            tooltip=[
                "config:N",
                "latency:N",
                alt.Tooltip("share:Q", format=".0%"),
                alt.Tooltip("ms:Q", format=",.1f"),
            ],  # fmt: skip
        )
        .add_params(pick)
        .properties(width=820, height=360, title="latency distribution (CDF)")
    )
    return "<h2>Latency</h2>" + vega.embed("latency", chart)
