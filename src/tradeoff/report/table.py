"""Per-configuration summaries and frontiers as console tables, every unit and source in a
header, a missing value as 'n/a[k]' with footnote k giving the reason."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.markup import escape
from rich.table import Table

from tradeoff.analysis.costs import all_imported
from tradeoff.report.columns import (
    Column,
    ColumnTable,
    build_table,
    empty_columns,
    footnote,
    missing_cell,
    number,
    visible,
)
from tradeoff.report.notes import CHUNKS_NOTE, all_failed_note

if TYPE_CHECKING:
    from tradeoff.analysis.frontier import FrontierRow


def short_reason(missing: str) -> str:
    """'no RAPL: /sys/... does not exist; no NVML: ...' -> 'no RAPL; no NVML'."""
    return ", ".join(part.split(":", 1)[0].strip() for part in missing.split(";"))


ROOFLINE_MISSING_NOTE = (
    "roofline eff. -: the device's peaks are unknown (a CPU, or a GPU not in the datasheet "
    "table: run `tradeoff calibrate` before profiling), or the model runs behind a server on "
    "unknown hardware"
)
UNSCORED = (
    "these records have no reference answers (served traffic, synthetic load), so they have costs "
    "but no accuracy"
)
UNSCORED_NOTE = f"accuracy unscored: {UNSCORED}, and no frontier"
FIRST_TOKEN_NOTE = (
    "TTFT s (mean, percentiles), decode tok/s: over the queries that produced a first token "
    "({counts}); every other column counts every query, failed ones included (they score 0 and "
    "their costs count)"
)
PERCENTILES_NOTE = (
    "p50, p90, p95, p99: percentiles over the same queries as the mean (numpy.percentile, "
    "linear interpolation between the two nearest queries)"
)
INPUT_TOKENS_NOTE = "in tok: mean over the queries whose input tokens were reported ({counts})"
SCORED_NOTE = (
    "accuracy, 95% CI: over the records of tasks with reference answers ({counts}); those of "
    "tasks without (synthetic load, served traffic) count toward n and every cost"
)


def _counts(rows: list[dict[str, Any]], key: str) -> str | None:
    """'3 of 5 for A, 4 of 5 for B' over the rows where `key` counts fewer than all queries."""
    short = [f"{r[key]} of {r['n']} for {r['config']}" for r in rows if r[key] < r["n"]]
    return ", ".join(short) or None


def scored_note(rows: list[dict[str, Any]]) -> list[str]:
    """The note on the accuracies over fewer records than n (a scored task beside an unscored
    one), or none; a wholly unscored configuration has its own (`UNSCORED_NOTE`)."""
    counts = _counts([r for r in rows if not math.isnan(r["accuracy"])], "n_scored")
    return [SCORED_NOTE.format(counts=counts)] if counts else []


def _accuracy(acc: float, notes: list[str]) -> str:
    return missing_cell(notes, UNSCORED_NOTE) if math.isnan(acc) else f"{acc:.3f}"


def _interval(acc: float, low: float, high: float) -> str:
    """'0.231–0.882': narrower than '[0.231, 0.882]', so that long names fit beside it."""
    return "" if math.isnan(acc) else f"{low:.3f}–{high:.3f}"


ROOFLINE_HEADER = "roofline eff.\n(analytic)"
LEFT = "left: served requests whose client went away before its answer (HTTP 499); not errors"


def _errors(errors: int) -> str:
    return str(errors) if not errors else f"[red]{errors}[/red]"


def _errors_and_left(r: dict[str, Any], notes: list[str]) -> str:
    """The errors, and beside them the served requests whose client left (not failures)."""
    left = r.get("disconnected") or 0
    return _errors(r["errors"]) + (f" +{left} left[{footnote(notes, LEFT)}]" if left else "")


def _roofline(eff: float | None) -> str:
    return "-" if eff is None else f"{eff:.1%}"


def _energy(r: dict[str, Any], notes: list[str], with_source: bool) -> str:
    if r["energy_j"] is None:
        return missing_cell(notes, f"energy not measured: {r['energy_missing'] or 'not measured'}")
    if with_source:
        return escape(f"{r['energy_j']:.2f} ({r['energy_source']})")
    return f"{r['energy_j']:.2f}"


def _gflops(r: dict[str, Any], notes: list[str]) -> str:
    if r["gflops"] is not None or not r["gflops_missing"]:
        return number(r["gflops"], ".2f")
    return missing_cell(notes, r["gflops_missing"])


def percentile_column(header: str, key: str, p: str, wide: bool) -> Column:
    """A column of one percentile of a latency (`key` as `tradeoff report` writes it, e.g.
    'ttft_s'; `p` e.g. 'p99'), in seconds."""
    label = "p99.9" if p == "p999" else p
    return Column(f"{header}\n{label}", lambda r, _: number(r[f"{key}_{p}"], ".3f"), wide=wide)


def _percentile_columns(
    header: str, key: str, wide: bool, tails_only: bool = False
) -> list[Column]:
    """The p50 (unless `tails_only`), p90, p95 and p99 columns of a latency."""
    shown = ["p90", "p95", "p99"] if tails_only else ["p50", "p90", "p95", "p99"]
    return [percentile_column(header, key, p, wide) for p in shown]


def _summary_columns(energy_sources: set[str], given_unit: str | None = None) -> list[Column]:
    """The summary's columns, the wide ones included. Each energy names its meter where the
    run's configurations were metered by different ones (else a footnote names the one); the
    cost given with imported outcomes where there is one, in `given_unit`."""
    return [
        Column("config", lambda r, _: escape(r["config"]), justify="left", name=True),
        Column("n", lambda r, _: str(r["n"])),
        Column("accuracy", lambda r, notes: _accuracy(r["accuracy"], notes)),
        Column(
            "95% CI", lambda r, _: _interval(r["accuracy"], r["accuracy_low"], r["accuracy_high"])
        ),
        Column("in tok", lambda r, _: number(r["input_tokens"], ".1f"), wide=True),
        Column("out tok", lambda r, _: number(r["output_tokens"], ".1f"), wide=True),
        Column("TTFT s\nmean", lambda r, _: number(r["ttft_s"], ".3f"), wide=True),
        *_percentile_columns("TTFT s", "ttft_s", wide=True),
        Column("e2e s\nmean", lambda r, notes: _latency(r, "e2e_s", notes)),
        Column("e2e s\np50", lambda r, notes: _latency(r, "e2e_s_p50", notes)),
        *_percentile_columns("e2e s", "e2e_s", wide=True, tails_only=True),
        Column("decode\ntok/s", lambda r, _: number(r["decode_tps"], ".1f"), wide=True),
        Column(
            "energy\nJ/query",
            lambda r, notes: _energy(r, notes, with_source=len(energy_sources) > 1),
        ),
        Column("GFLOPs/query\n(analytic)", _gflops, wide=True),
        Column(ROOFLINE_HEADER, lambda r, _: _roofline(r["roofline_eff"]), wide=True),
        *([Column(f"given cost\n{given_unit}/query", _given_cost)] if given_unit else []),
        Column("errors", _errors_and_left),
    ]


def _given_cost(r: dict[str, Any], notes: list[str]) -> str:
    """The mean cost given at import, or n/a where a model was imported without one."""
    if r["given_cost"] is None:
        return missing_cell(notes, f"given cost n/a: {r['config']} was imported without cost=")
    return number(r["given_cost"], ".4g")


def _latency(r: dict[str, Any], key: str, notes: list[str]) -> str:
    """A latency in seconds, or n/a with why (imported outcomes carry none)."""
    if r[key] is None and r.get("e2e_missing"):
        return missing_cell(notes, f"e2e s n/a: {r['e2e_missing']}")
    return number(r[key], ".3f")


def summary_table(
    rows: list[dict[str, Any]], title: str | None = None, wide: bool = False
) -> tuple[ColumnTable, list[str]]:
    """The table of `analysis.metrics.summarize` rows, and footnotes giving each missing value's
    full reason and what each mean is over. Token counts, TTFT, latency tails (p90, p95, p99),
    decode tok/s, GFLOPs and roofline efficiency are shown only when `wide`, and only where a
    configuration has a value (an imported run has none of them)."""
    sources = {r["energy_source"] for r in rows if r["energy_j"] is not None}
    units = sorted({r["given_cost_unit"] for r in rows if r.get("given_cost_unit")})
    every = _summary_columns(sources, "+".join(units) or None)
    # an empty roofline column is kept for its note on how to get one; imported outcomes have
    # nothing to get one from
    imported_only = all_imported(r["gflops_missing"] for r in rows)
    empty = empty_columns(every, rows, kept=() if imported_only else (ROOFLINE_HEADER,))
    columns, more = visible([c for c in every if c.header not in empty], wide, "tradeoff report")
    table, notes = build_table(title, columns, rows)
    footnotes = [f"[{i + 1}] {note}" for i, note in enumerate(notes)] + scored_note(rows)
    if len(sources) == 1:
        footnotes.append(f"energy J/query: measured by {sources.pop()}")
    shown = {c.header for c in table.columns}
    if wide:
        first_token = _counts(rows, "n_first_token")
        if first_token and "TTFT s\nmean" in shown:
            footnotes.append(FIRST_TOKEN_NOTE.format(counts=first_token))
        input_tokens = _counts(rows, "n_input_tokens")
        if input_tokens and "in tok" in shown:
            footnotes.append(INPUT_TOKENS_NOTE.format(counts=input_tokens))
        footnotes.append(PERCENTILES_NOTE)
        if ROOFLINE_HEADER in shown:
            footnotes.append(
                ROOFLINE_MISSING_NOTE
                if any(r["roofline_eff"] is None for r in rows)
                else "roofline eff. = analytic least time on the device's peaks (as `tradeoff "
                "calibrate` measured them, else a GPU's datasheet figures) / measured engine time"
            )
    for r in rows:
        if r["n_counted_in_chunks"]:
            answers = r["n"] - r["errors"] - (r.get("disconnected") or 0)
            counted = CHUNKS_NOTE.format(counted=r["n_counted_in_chunks"], answers=answers)
            footnotes.append(f"{r['config']}: {counted}")
    if wide and empty:
        left_out = ", ".join(h.replace("\n", " ") for h in empty)
        footnotes.append(f"left out, no configuration has a value: {left_out}")
    return table, footnotes + more


def meter_notes(meters: list[dict[str, Any]]) -> list[str]:
    """One line per session metered by a stepped counter (NVML): its idle baseline and how much
    the counter moved, as stored with the run."""
    notes = []
    for m in meters:
        notes += [_worker_note(w) for w in m.get("ray_workers", [])]
        if "source" not in m:  # a session without a stepped counter: host conditions only
            continue
        idle = "n/a" if m.get("idle_w") is None else f"{m['idle_w']:.1f} W"
        notes.append(
            f"{m['source']} idle baseline: {idle} over {m['idle_measured_s']:g} s before the "
            f"first request (not subtracted); the counter moved {m['counter_total_j']:.1f} J "
            f"while metering, {m['idle_j']:.1f} J of it between requests"
        )
    return notes


def _worker_note(worker: dict[str, Any]) -> str:
    """A Ray worker of the run: its models, its node, and what metered it (or why nothing)."""
    where = f"Ray worker for {', '.join(worker['models'])} on {worker.get('hostname', '?')}"
    where += f" (node {str(worker.get('node_id', '?'))[:8]})"
    if worker.get("energy") is None:
        return f"{where}: energy not metered ({worker.get('energy_missing')})"
    idle = worker.get("idle_w")
    return f"{where}: energy from {worker['energy']}" + (
        "" if idle is None else f", idle baseline {idle:.1f} W (not subtracted)"
    )


def _mhz(span: list[int]) -> str:
    low, high = span
    return f"{high} MHz" if low == high else f"{low}-{high} MHz"


def host_notes(
    host: dict[str, Any], effect: str = "latencies and energy may be inflated"
) -> tuple[str | None, str | None]:
    """One line on the host's conditions over the run (`meters.conditions.summarize`), and one
    saying why it was busy and its `effect` on what was measured, or None."""
    if not host.get("samples"):
        return None, None
    if host["seconds"] < 1:  # one sample, or a fraction of a second: no CPU time to share out
        return "host: the run took under a second, too short to sample its conditions", None
    steal = host["steal_share_mean"]
    parts = [
        f"{host['cores']} cores",
        f"load avg {host['load1_mean']:.2g} (max {host['load1_max']:.2g})",
        f"other processes {host['other_cores_mean']:.2g} cores ({host['other_share_mean']:.0%})",
        "steal n/a" if steal is None else f"steal {steal:.0%}",
    ]
    if host["gpu_sm_mhz"]:
        parts.append(f"GPU clocks: SM {_mhz(host['gpu_sm_mhz'])}")
        if host["gpu_mem_mhz"]:
            parts[-1] += f", memory {_mhz(host['gpu_mem_mhz'])}"
        parts.append(f"other GPU processes: {host['gpu_other_processes_max'] or 'none'}")
    source = "/proc, NVML" if host["gpu_sm_mhz"] else "/proc"
    line = f"host ({host['seconds']:.0f} s sampled from {source}): " + "; ".join(parts)
    busy = None
    if host["busy"]:
        busy = (
            f"measured on a busy host: {host['busy_reason']}; {effect} (rerun on a quiet machine)"
        )
    return line, busy


# What `report --records` shows without --wide: who answered what, how well, at what cost.
RECORD_COLUMNS = ("config", "task", "item_id", "sample", "score", "output", "error",
                  "input_tokens", "output_tokens", "ttft_s", "e2e_s", "energy_j")  # fmt: skip
LOAD_RECORD_COLUMNS = ("load_point", "phase")
TIMESTAMPS = ("created_at",)  # Unix seconds, shown as UTC times


def records_table(df: pd.DataFrame, wide: bool = False) -> tuple[Table, str | None]:
    """Records as a table, one column per field (the JSON ones left out; without `wide`, only
    RECORD_COLUMNS), numbers to 4 significant figures and times in UTC; and, without `wide`,
    notes: the columns --wide adds, and why energy_j is blank (its reason is one of them)."""
    shown = df.drop(columns=["calls", "extra"], errors="ignore")
    kept: tuple[str, ...] = RECORD_COLUMNS
    if "load_point" in df and (df["load_point"].fillna("") != "").any():
        kept += LOAD_RECORD_COLUMNS  # a load run's rows are told apart by these
    hidden = [c for c in shown.columns if c not in kept]
    notes = []
    if not wide:
        shown = shown[[c for c in shown.columns if c in kept]]
        if hidden:
            notes.append(f"tradeoff report --records --wide adds: {', '.join(hidden)}")
        if "energy_missing" in df and "energy_j" in shown:
            why = sorted({short_reason(m) for m in df["energy_missing"].dropna() if m})
            if why:  # the reason is a hidden column: say it once
                notes.append(f"energy_j blank: not measured ({'; '.join(why)})")
    cut = not wide and "output" in shown and shown["output"].fillna("").str.len().gt(TEXT_CUT).any()
    if cut:  # one long answer widened every row (a table piped to a file: 5.6 MB for 16 rows)
        shown = shown.assign(output=shown["output"].map(_shortened))
        notes.append(
            f"outputs cut at {TEXT_CUT} characters (…); --wide, or --format csv or json, shows "
            "them whole"
        )
    table = Table(*[str(c) for c in shown.columns])
    for row in shown.itertuples(index=False):
        table.add_row(
            *[escape(controls_escaped(_cell(name, v))) for name, v in zip(shown.columns, row)]
        )
    return table, "\n".join(notes) or None


TEXT_CUT = 200  # characters of an output the records table shows without --wide

# Control characters but the newline and tab a cell shows (C0, DEL, C1): a stored id, prompt or
# output holding ESC [2J cleared the user's terminal (or recoloured it, and broke the columns).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def controls_escaped(text: str) -> str:
    """`text` with each control character written as its escape (`\\x1b`), for a terminal's
    table; the exports keep the text as it is."""
    return CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def _shortened(text: Any) -> Any:
    return text[:TEXT_CUT] + "…" if isinstance(text, str) and len(text) > TEXT_CUT else text


def _cell(column: str, value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and column in TIMESTAMPS:
        return pd.Timestamp(value, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return number(value, ".4g")
    return str(value)


def _cost(r: FrontierRow, notes: list[str]) -> str:
    if r.cost is None:
        why = r.cost_missing or "missing"
        return missing_cell(notes, f"{r.cost_axis} unknown, so not on the frontier: {why}")
    cost = format(r.cost, ".4g")
    return cost + f"[{footnote(notes, r.cost_note)}]" if r.cost_note else cost


def _cost_of_pass(r: FrontierRow, notes: list[str]) -> str:
    if r.cost is None:  # the cost's own footnote says why
        return "n/a"
    if r.accuracy > 0 or math.isnan(r.accuracy):
        return number(r.cost_of_pass, ".4g")
    return missing_cell(notes, "cost of pass n/a: accuracy 0, no correct answer to pay for")


def _energy_missing(r: FrontierRow) -> str:
    why = r.energy_missing or "not measured"
    if r.cost_axis == "energy":  # the cost's own footnote already says why
        return f"energy unknown, so not on the frontier: {why}"
    return f"energy not measured: {why}"


def _per_joule(r: FrontierRow, notes: list[str]) -> str:
    if r.energy_j is None:
        return missing_cell(notes, _energy_missing(r))
    return number(r.accuracy_per_joule, ".3g")


def _ipw(r: FrontierRow, notes: list[str]) -> str:
    if r.energy_j is None:
        return missing_cell(notes, _energy_missing(r))
    return number(r.ipw, ".3g")


def _frontier_columns(unit: str) -> list[Column]:
    return [
        Column("★", lambda r, _: "★" if r.pareto else "", justify="center"),
        Column("config", lambda r, _: escape(r.config), justify="left", name=True),
        Column("n", lambda r, _: str(r.n)),
        Column("accuracy", lambda r, notes: _accuracy(r.accuracy, notes)),
        Column("95% CI", lambda r, _: _interval(r.accuracy, r.accuracy_low, r.accuracy_high)),
        Column(f"cost\n{unit}/query", _cost),
        Column(f"cost of pass\n{unit}/correct", _cost_of_pass),
        Column("accuracy/J\n1/J", _per_joule, wide=True),
        Column("IPW\naccuracy/W", _ipw, wide=True),
        Column("E³\nacc²/out tok", lambda r, _: number(r.e3, ".3g"), wide=True),
        Column(ROOFLINE_HEADER, lambda r, _: _roofline(r.roofline_eff), wide=True),
        Column("errors", lambda r, _: _errors(r.errors)),
    ]


def frontier_table(
    rows: list[FrontierRow], cost_label: str, wide: bool = False
) -> tuple[ColumnTable, list[str]]:
    """The frontier as a table, ★ marking Pareto-optimal configurations, and its footnotes.
    Accuracy per joule, IPW, E³ and roofline efficiency are shown only when `wide`. Cells are
    escaped Rich markup; the footnotes are plain text (print them with markup=False)."""
    unit = rows[0].cost_unit if rows else ""
    # imported outcomes carry no energy, tokens or time: no column of what a run measures
    imported_only = bool(rows) and all_imported(r.energy_missing for r in rows)
    measured = ("accuracy/J\n1/J", "IPW\naccuracy/W", "E³\nacc²/out tok", ROOFLINE_HEADER)
    columns, more = visible(
        [
            column
            for column in _frontier_columns(unit)
            if not (imported_only and column.header in measured)
        ],
        wide,
        "tradeoff frontier",
    )
    table, notes = build_table(f"accuracy against {cost_label}", columns, rows)
    footnotes = (
        [
            "★ Pareto-optimal: no other configuration is more accurate at the same or lower "
            "cost, or as accurate at a lower cost. Failed queries score 0 and their cost counts."
        ]
        if any(r.pareto for r in rows)
        else ["no ★: no configuration has both an accuracy and this cost, so none is compared"]
    )
    footnotes += [f"[{i + 1}] {note}" for i, note in enumerate(notes)]
    footnotes += scored_note([r.to_dict() for r in rows])
    if failed := all_failed_note(rows):
        footnotes.append(failed)
    if wide and not imported_only and any(r.roofline_eff is None for r in rows):
        footnotes.append(ROOFLINE_MISSING_NOTE)
    if not rows:
        footnotes.append("no records stored in this run yet")
    return table, footnotes + more
