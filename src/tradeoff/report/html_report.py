"""`tradeoff report DIR --html`: one self-contained page per run (every script and style inline:
it opens offline) with what ran and where, the summary table (sortable), the frontier on every
cost axis the run has, accuracy by task, latency distributions per configuration, a load run's
statistics per load point, energy against output tokens with a fitted line, the router
evaluations kept with the run, and the records (filtered, paged).

Every figure comes from the same analysis as the terminal tables (`analysis.metrics`,
`analysis.frontier`, `analysis.load`, `policy.evaluate`); the plots aggregate (quantiles, means,
a bounded sample of points), and the records table inlines at most `html_records.MAX_RECORDS`,
so the page's size follows the number of configurations and tasks, not of records. A run still
being written is reported as far as it has got.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradeoff.errors import UserError
from tradeoff.paths import written_whole
from tradeoff.report import vega
from tradeoff.report.html_page import column_table, menu, notes, page, run_name, table, when
from tradeoff.report.html_records import records_section, sample
from tradeoff.report.notes import LOAD_RUN_NOTE, all_failed_note, no_records, unfinished_note

if TYPE_CHECKING:
    from tradeoff.analysis.load import Slo
    from tradeoff.analysis.metrics import Summary

ENERGY_POINTS = 200  # records drawn per configuration in the energy plot (the fit uses all)

QUANTILES = np.linspace(0.0, 1.0, 101)  # the points of each latency distribution drawn
LATENCIES = {"ttft_s": "time to first token", "itl_s": "inter-token latency", "e2e_s": "end to end"}


def write_report(directory: Path, path: Path, slo: Slo | None = None) -> Path:
    """Write the report of the run in `directory` to `path` (a load run's goodput under `slo`,
    else the one it was measured under); returns `path`."""
    text = report_html(directory, slo)
    with written_whole(path) as part:
        part.write_text(text, encoding="utf-8")
    return path


# What the page reads of every record (the analysis's lean columns); a sample's text is read
# apart (`html_records`), and a load run's load-point records whole (`analysis.load`).
COLUMNS = ("task", "item_id", "sample", "load_point")


def report_html(directory: Path, slo: Slo | None = None) -> str:
    from tradeoff.analysis.metrics import SUMMARY_COLUMNS, summaries
    from tradeoff.analysis.operating_point import measured_records
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        run = store.run()
        measured = measured_records(store, [*SUMMARY_COLUMNS, *COLUMNS])
        configs = store.configs()
        samples = store.host_samples()
        points = store.load_points()
        under_load = store.records(load_only=True) if points else None
        evaluations = store.evaluations("router")
        if measured.empty:
            raise UserError(no_records(directory))
        shown = sample(measured)
        texts = store.records(
            columns=["task", "item_id", "sample", "load_point", "output"],
            items=list(dict.fromkeys(zip(shown["task"], shown["item_id"], strict=True))),
        )
        items = store.items()
        unmeasured = store.unmeasured_count()
    finally:
        store.close()
    names = [c["name"] for c in configs]
    summarized = summaries(measured, names)
    sections = [
        _header(directory, run, measured, samples),
        _summary(summarized, bool((measured["load_point"] != "").any())),
        _frontier(summarized, names),
        _by_task(measured, names),
        _latencies(measured, summarized, names),
        _load(under_load, points, run, configs, slo),
        _energy(measured, summarized, names),
        _routers(evaluations),
        records_section(shown, measured, texts, items, names, unmeasured),
    ]
    return page(f"tradeoff report: {run_name(directory)}", sections)


# Sections -----------------------------------------------------------------------------------


def _took(run: dict[str, Any]) -> str:
    """The time spent measuring: each session's, summed (a run stopped and resumed the next day
    did not take a day), those cut short said."""
    sessions = run.get("sessions") or []
    ended = [s["ended_at"] - s["started_at"] for s in sessions if s.get("ended_at")]
    if not sessions and run.get("created_at") and run.get("ended_at"):  # a store with no sessions
        ended = [run["ended_at"] - run["created_at"]]
    if not ended:
        return "still running, or cut short"
    short = sum(1 for s in sessions if not s.get("ended_at"))
    unended = "still running, or cut short" if run.get("status") == "running" else "cut short"
    return (
        f"{sum(ended):,.0f} s"
        + (f" in {len(ended)} sessions" if len(ended) > 1 else "")
        + (f", and {short} session(s) {unended} (not counted)" if short else "")
    )


def _header(
    directory: Path, run: dict[str, Any], records: pd.DataFrame, samples: list[dict[str, Any]]
) -> str:
    from tradeoff.config import shown_spec
    from tradeoff.meters.conditions import summarize
    from tradeoff.report.table import host_notes, meter_notes

    host = run.get("host") or {}
    started = run.get("created_at")
    versions = ", ".join(f"{k} {v}" for k, v in sorted((host.get("versions") or {}).items()) if v)
    facts = {
        "run": f"{run.get('id')} ({run.get('status')})",
        "directory": str(directory.resolve()),
        "started": when(started),
        "took": _took(run),
        "records": f"{len(records):,} measured",
        "host": f"{host.get('hostname', '-')}: {host.get('cpu', '-')}, "
        f"{host.get('cpu_cores', '-')} cores",
        "GPUs": ", ".join(host.get("gpus") or []) or "none",
        "versions": versions or "-",
    }
    if host.get("nodes"):  # a Ray run: the driver above, its workers' machines here
        facts["Ray nodes"] = "; ".join(
            f"{n.get('hostname', '-')}: {n.get('cpu', '-')}, {n.get('cpu_cores', '-')} cores, "
            f"GPUs: {', '.join(n.get('gpus') or []) or 'none'}"
            for n in host["nodes"]
        )
    line, busy = host_notes(summarize(samples))
    lines = [*meter_notes(run.get("meters") or []), *([line] if line else [])]
    lines += [busy] if busy else []
    if unfinished := unfinished_note(directory):
        lines.insert(0, f"note: {unfinished}")
    spec = json.dumps(shown_spec(run.get("spec")), indent=2, default=str)
    return (
        f"<h1>tradeoff report: {html.escape(run_name(directory))}</h1>"
        '<dl class="facts">'
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items())
        + "</dl>"
        + notes(lines)
        + f"<details><summary>the spec</summary><pre>{html.escape(spec)}</pre></details>"
    )


def _summary(summarized: list[Summary], pooled: bool) -> str:
    from tradeoff.report.table import summary_table

    table, lines = summary_table([s.row() for s in summarized], wide=True)
    lines += [LOAD_RUN_NOTE] if pooled else []
    return "<h2>Summary</h2>" + column_table(table) + notes(lines)


def _frontier(summarized: list[Summary], names: list[str]) -> str:
    """The frontier on every cost axis with a cost for some configuration; a menu picks the axis."""
    from tradeoff.analysis.costs import COST_AXES
    from tradeoff.analysis.frontier import axis_label, frontier_of
    from tradeoff.report.charts import frontier_chart, unplaced_notes
    from tradeoff.report.table import UNSCORED

    if all(math.isnan(s.accuracy) for s in summarized):
        return f"<h2>Frontier</h2><p class='note'>Nothing to place on a frontier: {UNSCORED}.</p>"
    axes = {}
    for name in COST_AXES:
        rows = frontier_of(summarized, name)
        if any(r.cost is not None for r in rows):
            axes[axis_label(name, rows)] = rows
    if not axes:
        return "<h2>Frontier</h2><p class='note'>No configuration has a cost on any axis.</p>"
    lines = [
        "Hover a point for its details; the bars are 95% intervals of accuracy. The frontier "
        "(the line) joins the configurations no other beats on both accuracy and the chosen cost."
    ]
    lines += [f"{label}: {note}" for label, rows in axes.items() for note in unplaced_notes(rows)]
    if failed := all_failed_note(next(iter(axes.values()))):
        lines.append(failed)
    return "<h2>Frontier</h2>" + vega.embed("frontier", frontier_chart(axes, names)) + notes(lines)


def _by_task(records: pd.DataFrame, names: list[str]) -> str:
    import altair as alt

    from tradeoff.analysis.metrics import accuracy_of
    from tradeoff.report.charts import config_axis

    rows = []
    for (config, task), group in records.groupby(["config", "task"], sort=False, observed=True):
        acc, low, high = accuracy_of(group)
        if math.isnan(acc):  # unscored (served traffic): the frontier's note says so
            continue
        rows.append({"config": config, "task": task, "accuracy": acc, "low": low, "high": high,
                     "n": len(group)})  # fmt: skip
    if not rows:
        return ""
    data = pd.DataFrame(rows)
    heat = (
        alt.Chart(data)
        .mark_rect()
        .encode(
            # slanted, whole: side by side, two file tasks' paths ran into each other
            x=alt.X(
                "task:N", title="task", axis=alt.Axis(grid=False, labelAngle=-30, labelLimit=0)
            ),
            y=alt.Y(
                "config:N",
                title=None,  # the title would overlap long names (Vega places it by a guess)
                sort=names,
                axis=config_axis(grid=False),
            ),
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


def _latencies(records: pd.DataFrame, summarized: list[Summary], names: list[str]) -> str:
    """Each configuration's distribution of each latency, as 101 quantiles (a CDF)."""
    import altair as alt

    from tradeoff.analysis.costs import failed as failed_records
    from tradeoff.analysis.costs import imported
    from tradeoff.report.charts import colours, config_colour

    rows, failed = [], []
    for config, group in records.groupby("config", sort=False):
        timed = group[~imported(group)]  # imported outcomes hold 0 s, not a time
        errors = timed["error"].notna()  # a client gone too: no answer was timed
        if failed_records(timed).any():
            failed.append(f"{config} {int(failed_records(timed).sum())} of {len(timed)}")
        timed = timed[~errors]  # a failure's time is not a latency of an answer
        for column, title in LATENCIES.items():
            values = timed[column].dropna().to_numpy(dtype=float)
            if len(values) == 0:
                continue
            # Measured values only (no point between two requests), each at its share.
            shown = np.quantile(values, QUANTILES, method="inverted_cdf")
            for v in shown:
                share = float(np.mean(values <= v))
                rows.append({"config": config, "latency": title, "share": share, "ms": 1e3 * v})
    if not rows:
        return _unmeasured("Latency", "a measured latency", summarized, "latency")
    data = pd.DataFrame(rows).drop_duplicates()
    present = set(data["latency"])
    pick = menu([t for t in LATENCIES.values() if t in present], "latency", "latency: ", last=True)
    lines = ["completed requests only, each step a measured latency"]
    if failed:
        lines[0] += f"; failed requests left out: {', '.join(failed)}"
    chart = (
        alt.Chart(data)
        .transform_filter(alt.datum.latency == pick)
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("ms:Q", title="milliseconds", scale=alt.Scale(type="log")),
            y=alt.Y("share:Q", title="share of requests at or below", axis=alt.Axis(format="%")),
            color=config_colour(colours(names, [n for n in names if n in set(data["config"])])),
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
    return "<h2>Latency</h2>" + vega.embed("latency", chart) + notes(lines)


def _load(
    records: pd.DataFrame | None,
    points: list[dict[str, Any]],
    run: dict[str, Any],
    configs: list[dict[str, Any]],
    slo: Slo | None = None,
) -> str:
    """A load run's latency percentiles and (correct) goodput against achieved throughput."""
    if not points or records is None:
        return ""
    from tradeoff.analysis.load import run_load_stats
    from tradeoff.report.charts import load_chart
    from tradeoff.report.load_table import load_table

    rows, source = run_load_stats(records, points, configs, run.get("spec") or {}, slo)
    if not rows:
        return ""
    table, lines = load_table(rows, True, source, title="")
    return (
        "<h2>Under load</h2>"
        + vega.embed("load", load_chart(rows, source, [c["name"] for c in configs]))
        + column_table(table)
        + notes(lines)
    )


def _energy(records: pd.DataFrame, summarized: list[Summary], names: list[str]) -> str:
    """Energy per query against output tokens per configuration, where measured, with the
    fitted line: J per output token (slope) and fixed J per query (intercept)."""
    import altair as alt

    from tradeoff.analysis.energy_fit import fit_energy
    from tradeoff.report.charts import colours, config_colour
    from tradeoff.report.columns import number

    fits, dots, lines = [], [], []
    for config, group in records.groupby("config", sort=False):
        fit = fit_energy(group, str(config))
        fits.append(fit)
        measured = group[group["energy_j"].notna() & group["error"].isna()]
        if measured.empty:
            continue
        drawn = measured.sample(min(len(measured), ENERGY_POINTS), random_state=0)
        dots += [
            {"config": config, "output tokens": int(t), "J": float(j)}
            for t, j in zip(drawn["output_tokens"], drawn["energy_j"], strict=True)
        ]
        if fit.j_per_token is not None and fit.j_fixed is not None:
            ends = [float(measured["output_tokens"].min()), float(measured["output_tokens"].max())]
            lines += [
                {"config": config, "output tokens": t, "J": fit.j_fixed + fit.j_per_token * t}
                for t in ends
            ]
    if not dots:
        return _unmeasured("Energy", "a measured energy per query", summarized, "energy")
    drawn = {dot["config"] for dot in dots}
    colour = config_colour(colours(names, [n for n in names if n in drawn]))
    pick = alt.selection_point(fields=["config"], bind="legend")
    scatter = (
        alt.Chart(pd.DataFrame(dots))
        .mark_circle(size=24)
        .encode(
            x=alt.X("output tokens:Q"),
            y=alt.Y("J:Q", title="energy per query, J"),
            color=colour,
            opacity=alt.condition(pick, alt.value(0.55), alt.value(0.05)),
            tooltip=["config:N", "output tokens:Q", alt.Tooltip("J:Q", format=",.4g")],
        )
        .add_params(pick)
    )
    layers = [scatter]
    if lines:
        layers.append(
            alt.Chart(pd.DataFrame(lines))
            .mark_line(strokeWidth=2)
            .encode(
                x="output tokens:Q",
                y="J:Q",
                color=colour,
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)),
            )
        )
    chart = alt.layer(*layers).properties(
        width=820, height=360, title="energy per query against output tokens, with fitted lines"
    )
    header = ["configuration", "n", "J / output token", "95% CI", "fixed J / query", "R²",
              "energy source", "no line because"]  # fmt: skip
    rows = [
        [
            f.config,
            str(f.n),
            number(f.j_per_token, ".4g"),
            "-"
            if f.j_per_token_low is None
            else f"[{f.j_per_token_low:.4g}, {f.j_per_token_high:.4g}]",
            number(f.j_fixed, ".4g"),
            number(f.r2, ".3f"),
            f.source,
            f.missing or "",
        ]
        for f in fits
    ]
    return (
        "<h2>Energy</h2>"
        + vega.embed("energy", chart)
        + f'<div id="energy-fits">{table(header, rows, {0, 6, 7})}</div>'
        + notes(
            [
                "Least squares over each configuration's measured, successful records: energy "
                "per query = fixed J + J per output token × output tokens. The plot shows up to "
                f"{ENERGY_POINTS} records per configuration (the fit uses all); click a legend "
                "entry to pick one configuration out."
            ]
        )
    )


def _unmeasured(heading: str, what: str, summarized: list[Summary], axis: str) -> str:
    """A section with nothing to draw: no configuration has `what`, and why, as each one's
    cost on `axis` says (`analysis.costs`), each reason once."""
    reasons = [m for m in dict.fromkeys(s.costs[axis].missing for s in summarized) if m]
    why = f": {'; '.join(reasons)}" if reasons else ""
    return f"<h2>{heading}</h2><p class='note'>No configuration has {what}{html.escape(why)}.</p>"


def _routers(evaluations: list[dict[str, Any]]) -> str:
    """The router evaluations kept with the run (`tradeoff policy eval`): the latest of each
    router, configurations and source (a second router's evaluation replaced the first's),
    accuracy against the share of strong calls beside oracle and random."""
    if not evaluations:
        return ""
    from tradeoff.policy.evaluate import Evaluation
    from tradeoff.report.charts import router_chart
    from tradeoff.report.router_table import policy_line, router_heading, router_tables

    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for data in evaluations:
        configs = tuple(data.get("configs") or (data["weak"], data["strong"]))
        latest[(data.get("router"), configs, data["source"])] = data
    parts = ["<h2>Routing</h2>"]
    for i, data in enumerate(latest.values()):
        result = Evaluation.from_dict(data)
        parts += [
            f"<p>{html.escape(router_heading(result))} (evaluated {when(data['created_at'])})</p>",
            *(f"<p>{html.escape(line)}</p>" for line in [policy_line(result)] if line),
            # as `policy eval` warned (an in-sample evaluation overstates the router)
            *(f"<p class='note'>warning: {html.escape(w)}</p>" for w in result.warnings),
            vega.embed(f"router-{i}", router_chart(result)),
            *(column_table(t) for t in router_tables(result)),
        ]
    return "".join(parts)
