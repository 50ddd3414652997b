"""`tradeoff compare --html`: the comparison of runs as one self-contained page (`html_page.page`:
it opens offline): which runs, the table of paired differences and ratios (sortable), the accuracy
difference and the ratios B/A charted per configuration, and what differs between the runs."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from tradeoff.analysis.compare import QUANTITIES, Comparison, RunInfo
from tradeoff.paths import written_whole
from tradeoff.report import vega
from tradeoff.report.compare_table import (
    config_table,
    differences_table,
    labels,
    ratio_text,
    same_note,
    title,
)
from tradeoff.report.html_page import column_table, notes, page, run_name, table, when


def write_comparison(
    comparisons: list[Comparison], path: Path, left_out: list[str] | None = None
) -> Path:
    """Write the page of `compare_runs`' comparisons (and why any run was left out) to `path`;
    returns `path`."""
    text = comparison_html(comparisons, left_out or [])
    with written_whole(path) as part:
        part.write_text(text, encoding="utf-8")
    return path


def comparison_html(comparisons: list[Comparison], left_out: list[str] | None = None) -> str:
    runs = [comparisons[0].a, *[c.b for c in comparisons]]
    heading = f"tradeoff compare: {' vs '.join(run_name(r.directory) for r in runs)}"
    names = labels(comparisons)
    sections = [f"<h1>{html.escape(heading)}</h1>", _runs(runs, names)]
    if left_out:
        sections.append(notes(left_out))
    for i, (comparison, label) in enumerate(zip(comparisons, names, strict=True), start=1):
        sections.append(_comparison(comparison, i, label))
    return page(heading, sections)


def _host(host: dict[str, Any]) -> str:
    gpus = ", ".join(host.get("gpus") or []) or "no GPU"
    return (
        f"{host.get('hostname', '-')}: {host.get('cpu', '-')}, {host.get('cpu_cores', '-')} "
        f"cores; {gpus}"
    )


def _runs(runs: list[RunInfo], names: list[str]) -> str:
    """One row per run: the baseline A first, then each run compared with it, as `names` (its
    section's heading) names it."""
    header = ["run", "directory", "id", "status", "started", "host", "records"]
    rows = [
        [
            label,
            str(Path(r.directory).resolve()),
            r.id,
            r.status,
            when(r.created_at),
            _host(r.host),
            f"{r.records:,}",
        ]
        for label, r in zip(["A (baseline)", *names], runs, strict=True)
    ]
    return "<h2>Runs</h2>" + table(header, rows, text_columns={0, 1, 2, 3, 4, 5})


def _comparison(c: Comparison, i: int, label: str) -> str:
    configs, lines = config_table(c, label)
    configs.title = None  # the section's heading says it
    differences = differences_table(c.differences)
    return "".join(
        [
            f"<h2>{html.escape(title(c, label))}</h2>",
            column_table(configs),
            notes(lines),
            _accuracy_chart(c, f"accuracy-{i}"),
            _ratio_chart(c, f"ratios-{i}"),
            "<h3>What differs between the runs</h3>",
            notes([same_note(c)]) if differences is None else column_table(differences),
        ]
    )


def _accuracy_chart(c: Comparison, element: str) -> str:
    """The paired accuracy difference per configuration with its interval; a rule at 0."""
    import altair as alt

    from tradeoff.report.charts import config_axis

    rows = [
        {
            "config": r.config,
            "n": r.n,
            "accuracy A": r.accuracy_a,
            "accuracy B": r.accuracy_b,
            "B − A": r.difference,
            "low": r.low,
            "high": r.high,
        }
        for r in c.configs
        if r.difference is not None
    ]
    if not rows:
        return notes(["No accuracy difference to chart: no configuration is scored in both runs."])
    data = pd.DataFrame(rows)
    y = alt.Y("config:N", title=None, sort=c.shared, axis=config_axis())  # names say it
    x = alt.X("B − A:Q", title="accuracy B − A (95% paired t interval)")
    tooltip = [
        "config:N",
        "n:Q",
        alt.Tooltip("accuracy A:Q", format=".3f"),
        alt.Tooltip("accuracy B:Q", format=".3f"),
        alt.Tooltip("B − A:Q", format="+.3f"),
        alt.Tooltip("low:Q", format="+.3f"),
        alt.Tooltip("high:Q", format="+.3f"),
    ]
    base = alt.Chart(data)
    intervals = base.mark_rule(strokeWidth=2, color="#4c78a8").encode(
        x=alt.X("low:Q"), x2="high:Q", y=y, tooltip=tooltip
    )
    dots = base.mark_point(filled=True, size=90, color="#4c78a8").encode(x=x, y=y, tooltip=tooltip)
    zero = (
        alt.Chart(pd.DataFrame({"zero": [0.0]}))
        .mark_rule(color="#888", strokeDash=[4, 3])
        .encode(x="zero:Q")
    )
    chart = (zero + intervals + dots).properties(
        width=760, height=alt.Step(32), title="accuracy difference on the paired items, B − A"
    )
    return vega.embed(element, chart)


def _ratio_chart(c: Comparison, element: str) -> str:
    """Each ratio B/A per configuration, on a log scale; a rule at 1 (the same in both)."""
    import altair as alt

    from tradeoff.report.charts import config_axis

    titles = [q.title for q in QUANTITIES.values()]
    rows = [
        {
            "config": r.config,
            "quantity": quantity.title,
            "unit": ratio.unit or quantity.unit,
            "A": ratio.a,
            "B": ratio.b,
            "B/A": ratio.ratio,
            "ratio": ratio_text(ratio.ratio),
            "n": r.n,
        }
        for r in c.configs
        for key, quantity in QUANTITIES.items()
        if (ratio := r.ratios[key]).ratio is not None and ratio.ratio > 0
    ]
    if not rows:
        return notes(["No ratio to chart.", *_uncharted(c)])
    data = pd.DataFrame(rows)
    shown = [t for t in titles if t in set(data["quantity"])]
    y = alt.Y("config:N", title=None, sort=c.shared, axis=config_axis())  # names say it
    x = alt.X(
        "B/A:Q",
        title="B / A (log scale)",
        scale=alt.Scale(type="log", padding=24),  # no point on the plot's edge
    )
    dots = (
        alt.Chart(data)
        .mark_point(filled=True, size=80)
        .encode(
            x=x,
            y=y,
            yOffset=alt.YOffset("quantity:N", sort=shown),
            color=alt.Color("quantity:N", title="B / A of", scale=alt.Scale(domain=shown)),
            shape=alt.Shape("quantity:N", title="B / A of", scale=alt.Scale(domain=shown)),
            tooltip=[
                "config:N",
                "quantity:N",
                alt.Tooltip("A:Q", format=".4g"),
                alt.Tooltip("B:Q", format=".4g"),
                "unit:N",
                "ratio:N",
                "n:Q",
            ],
        )
    )
    one = (
        alt.Chart(pd.DataFrame({"one": [1.0]}))
        .mark_rule(color="#888", strokeDash=[4, 3])
        .encode(x="one:Q")
    )
    chart = (one + dots).properties(
        width=760,
        height=alt.Step(14),  # per quantity: the offset scale takes the step
        title="latency, energy, tokens and cost per query, B / A (below 1: less in B)",
    )
    return vega.embed(element, chart) + notes(_uncharted(c))


def _uncharted(c: Comparison) -> list[str]:
    """Why each ratio the chart leaves out is not on it, as the table's footnotes say."""
    missing = {
        f"{QUANTITIES[key].title}: {ratio.missing}"
        for r in c.configs
        for key, ratio in r.ratios.items()
        if ratio.ratio is None and ratio.missing
    } | {
        f"{QUANTITIES[key].title} of {r.config}: B/A is 0× (B's value is 0), which a log scale "
        "cannot show"
        for r in c.configs
        for key, ratio in r.ratios.items()
        if ratio.ratio == 0
    }
    return ["not charted, " + m for m in sorted(missing)]
