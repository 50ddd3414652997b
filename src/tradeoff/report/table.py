"""Per-configuration summaries and frontiers as Rich tables, every unit and source in a header."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.markup import escape
from rich.table import Table

from tradeoff.analysis.metrics import accuracy_text

if TYPE_CHECKING:
    from tradeoff.analysis.frontier import FrontierRow


def short_reason(missing: str) -> str:
    """'no RAPL: /sys/... does not exist; no NVML: ...' -> 'no RAPL; no NVML'."""
    return ", ".join(part.split(":", 1)[0].strip() for part in missing.split(";"))


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


ROOFLINE_MISSING_NOTE = (
    "roofline eff. -: the device's peaks are unknown (run `tradeoff calibrate` before "
    "profiling), or the model runs behind a server on unknown hardware"
)
UNSCORED_NOTE = (
    "n/a (unscored): these records have no reference answers (served traffic), so they have "
    "costs but no accuracy, and no frontier"
)


FIRST_TOKEN_NOTE = (
    "TTFT s, decode tok/s: means over the queries that produced a first token ({counts}); every "
    "other column counts every query, failed ones included (they score 0 and their costs count)"
)
INPUT_TOKENS_NOTE = "in tok: mean over the queries whose input tokens were reported ({counts})"


def _counts(rows: list[dict[str, Any]], key: str) -> str | None:
    """'3 of 5 for A, 4 of 5 for B' over the rows where `key` counts fewer than all queries."""
    short = [f"{r[key]} of {r['n']} for {r['config']}" for r in rows if r[key] < r["n"]]
    return ", ".join(short) or None


def summary_table(rows: list[dict[str, Any]], title: str | None = None) -> tuple[Table, list[str]]:
    """The table of `analysis.metrics.summarize` rows, and footnotes giving each missing
    measurement's full reason and what each mean is over."""
    table = Table(title=title, title_justify="left")
    table.add_column("config", style="bold")
    table.add_column("n", justify="right")
    for header in [
        "accuracy [95% CI]",
        "in tok",
        "out tok",
        "TTFT s",
        "e2e s",
        "decode tok/s",
        "energy J/query",
        "GFLOPs/query\n(analytic)",
        "roofline eff.\n(analytic)",
        "errors",
    ]:
        table.add_column(header, justify="right")
    notes: list[str] = []
    for r in rows:
        if r["energy_j"] is not None:
            energy = f"{r['energy_j']:.2f} ({r['energy_source']})"
        else:
            reason = f"energy not measured: {r['energy_missing'] or 'not measured'}"
            energy = f"n/a ({short_reason(r['energy_missing'] or 'not measured')})"
            energy += f"[{_footnote(notes, reason)}]"
        if r["gflops"] is not None or not r["gflops_missing"]:
            gflops = _num(r["gflops"], ".2f")
        else:
            gflops = f"n/a[{_footnote(notes, r['gflops_missing'])}]"
        table.add_row(
            escape(r["config"]),
            str(r["n"]),
            accuracy_text(r["accuracy"], r["accuracy_low"], r["accuracy_high"]),
            _num(r["input_tokens"], ".1f"),
            _num(r["output_tokens"], ".1f"),
            _num(r["ttft_s"], ".3f"),
            _num(r["e2e_s"], ".3f"),
            _num(r["decode_tps"], ".1f"),
            escape(energy),
            escape(gflops),
            "-" if r["roofline_eff"] is None else f"{r['roofline_eff']:.1%}",
            str(r["errors"]) if not r["errors"] else f"[red]{r['errors']}[/red]",
        )
    footnotes = [f"[{i + 1}] {note}" for i, note in enumerate(notes)]
    first_token = _counts(rows, "n_first_token")
    if first_token:
        footnotes.append(FIRST_TOKEN_NOTE.format(counts=first_token))
    input_tokens = _counts(rows, "n_input_tokens")
    if input_tokens:
        footnotes.append(INPUT_TOKENS_NOTE.format(counts=input_tokens))
    if any(r["roofline_eff"] is None for r in rows):
        footnotes.append(ROOFLINE_MISSING_NOTE)
    else:
        footnotes.append(
            "roofline eff. = analytic least time on the calibrated peaks / measured engine time"
        )
    if any(math.isnan(r["accuracy"]) for r in rows):
        footnotes.append(UNSCORED_NOTE)
    return table, footnotes


def meter_notes(meters: list[dict[str, Any]]) -> list[str]:
    """One line per session metered by a stepped counter (NVML): its idle baseline and how much
    the counter moved, as stored with the run."""
    notes = []
    for m in meters:
        idle = "n/a" if m.get("idle_w") is None else f"{m['idle_w']:.1f} W"
        notes.append(
            f"{m['source']} idle baseline: {idle} over {m['idle_measured_s']:g} s before the "
            f"first request (not subtracted); the counter moved {m['counter_total_j']:.1f} J "
            f"while metering, {m['idle_j']:.1f} J of it between requests"
        )
    return notes


def records_table(df: pd.DataFrame) -> Table:
    """Any table of records or summaries, one column per field (the JSON ones left out)."""
    shown = df.drop(columns=["calls", "extra"], errors="ignore")
    table = Table(*[str(c) for c in shown.columns])
    for row in shown.itertuples(index=False):
        table.add_row(*[escape("" if v is None else str(v)) for v in row])
    return table


def _footnote(notes: list[str], note: str) -> int:
    if note not in notes:
        notes.append(note)
    return notes.index(note) + 1


def frontier_table(rows: list[FrontierRow], cost_label: str) -> tuple[Table, list[str]]:
    """The frontier as a table, ★ marking Pareto-optimal configurations; a value that cannot be
    computed reads 'n/a (reason)[k]', footnote k giving the full reason. Cells are escaped Rich
    markup; the footnotes are plain text (print them with markup=False)."""
    unit = rows[0].cost_unit if rows else ""
    table = Table(title=escape(f"accuracy against {cost_label}"), title_justify="left")
    table.add_column("Pareto", justify="center")
    table.add_column("config", style="bold")
    table.add_column("n", justify="right")
    for header in [
        "accuracy [95% CI]",
        f"cost\n{unit}/query",
        f"cost-of-pass\n{unit}/correct",
        "accuracy/J\n1/J",
        "IPW\naccuracy/W",
        "E³\nacc²/out tok",
        "roofline eff.\n(analytic)",
        "errors",
    ]:
        table.add_column(header, justify="right")
    notes: list[str] = []
    for r in rows:
        if r.cost is None:
            why = r.cost_missing or "missing"
            mark = _footnote(notes, f"{r.cost_axis} unknown, so not on the frontier: {why}")
            cost = escape(f"n/a ({short_reason(why)})[{mark}]")
            cost_of_pass = "n/a"
        else:
            cost = format(r.cost, ".4g")
            if r.cost_note:
                cost += f"[{_footnote(notes, r.cost_note)}]"
            cost_of_pass = (
                _num(r.cost_of_pass, ".4g")
                if r.accuracy > 0 or math.isnan(r.accuracy)
                else "n/a (acc 0)"
            )
        if r.energy_j is None:
            why = r.energy_missing or "not measured"
            if r.cost_axis == "energy":  # the cost's own footnote already says why
                why = f"energy unknown, so not on the frontier: {why}"
            else:
                why = f"energy not measured: {why}"
            per_j = ipw = f"n/a[{_footnote(notes, why)}]"
        else:
            per_j, ipw = _num(r.accuracy_per_joule, ".3g"), _num(r.ipw, ".3g")
        table.add_row(
            "★" if r.pareto else "",
            escape(r.config),
            str(r.n),
            accuracy_text(r.accuracy, r.accuracy_low, r.accuracy_high),
            cost,
            cost_of_pass,
            per_j,
            ipw,
            _num(r.e3, ".3g"),
            "-" if r.roofline_eff is None else f"{r.roofline_eff:.1%}",
            str(r.errors) if not r.errors else f"[red]{r.errors}[/red]",
        )
    footnotes = [
        "★ Pareto-optimal: no other configuration is more accurate at the same or lower cost, "
        "or as accurate at a lower cost. Failed queries score 0 and their cost counts."
    ]
    footnotes += [f"[{i + 1}] {note}" for i, note in enumerate(notes)]
    if any(math.isnan(r.accuracy) for r in rows):
        footnotes.append(UNSCORED_NOTE)
    if any(r.roofline_eff is None for r in rows):
        footnotes.append(ROOFLINE_MISSING_NOTE)
    if not rows:
        footnotes.append("no records stored in this run yet")
    return table, footnotes
