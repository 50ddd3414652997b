"""The load table: one row per configuration and load point (`analysis.load.load_stats`), what was
asked beside what was achieved, latency percentiles, goodput, and saturation marked with why."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rich.markup import escape

from tradeoff.analysis.load import SATURATION_MARGIN, SLO_FORM, TREND_MIN_N, parse_slo
from tradeoff.report.columns import (
    Column,
    ColumnTable,
    build_table,
    missing_cell,
    number,
    visible,
)
from tradeoff.report.notes import CHUNKS_NOTE, TPOT_DEFINITION

DEFINITIONS = (
    "measured requests only: warm-up and cool-down ({excluded}) are left out. req/s: completed "
    "requests / the measured window (first send to last end); conc.: mean requests in flight, "
    "their summed e2e / window; ok/fail: completed / failed requests; tok/s: over the window, of "
    "completed requests; latencies: over completed requests, ITL each request's mean gap between "
    f"tokens, {TPOT_DEFINITION}; percentiles: numpy.percentile, linear interpolation"
)
SATURATED_NOTE = (
    "▲ saturated, the upstream did not keep up: at a rate, its answers' pace fell more than "
    "{margin:.0%} behind the schedule's; or queue delay grew through the load point. Which, and "
    "by how much:"
)
NO_SLO_NOTE = "goodput needs a service-level objective: give --slo ({form})"
UNSCORED_NOTE = "correct goodput: these requests have no reference answers (unscored)"


def target_label(r: dict[str, Any]) -> str:
    """What a load point asked: '10/s', '4 conc.', '≤256 conc.', or '-'."""
    if r["target_rate"] is not None:
        return f"{r['target_rate']:g}/s"
    if r["target_concurrency"] is not None:
        return f"{r['target_concurrency']} conc."
    if r["max_concurrency"] is not None:
        return f"≤{r['max_concurrency']} conc."
    return "-"


def describe_slo(slo: str, source: str | None = None) -> str:
    """A stored SLO ('ttft=0.5,e2e=10') as a reader should see it: 'ttft ≤ 0.5 s, e2e ≤ 10 s',
    then where it came from ('--slo', "the run's spec") when known."""
    objectives = parse_slo(slo).objectives()
    given = ", ".join(f"{key} ≤ {seconds:g} s" for key, seconds in objectives.items())
    return given + (f" (from {source})" if source else "")


def _done_failed(r: dict[str, Any]) -> str:
    failed = f"[red]{r['failed']}[/red]" if r["failed"] else "0"
    return f"{r['completed']}/{failed}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _goodput(r: dict[str, Any], key: str, notes: list[str]) -> str:
    if r["slo"] is None:
        return missing_cell(notes, NO_SLO_NOTE.format(form=SLO_FORM.removeprefix("give ")))
    if r[key] is None and not r.get("n_measure", 1):
        return missing_cell(notes, _none_measured(r))
    if r[key] is None and key == "correct_goodput":
        return missing_cell(notes, UNSCORED_NOTE)
    return number(r[key], ".3g")


def _saturated(r: dict[str, Any]) -> str:
    return "[yellow]▲[/yellow]" if r["saturated"] else ""


def _energy(r: dict[str, Any], key: str, fmt: str, notes: list[str]) -> str:
    if r[key] is None and r["energy_missing"]:
        return missing_cell(notes, f"energy not measured: {r['energy_missing']}")
    return number(r[key], fmt)


def _dollars(r: dict[str, Any], notes: list[str]) -> str:
    if r["usd_per_m_output_tokens"] is None:
        return missing_cell(notes, f"$/M out tok unknown: {r['usd_missing']}")
    return number(r["usd_per_m_output_tokens"], ".3g")


NONE_COMPLETED = "latencies n/a: no request of the load point completed (see its failures)"
NONE_MEASURED = (
    "n/a: the load point measured no request (each one it sent was warm-up or cool-down: "
    "give it more requests or seconds, or less --warmup)"
)
NONE_SENT = (
    "n/a: the load point sent no request (its --max-seconds ran out before the first went out: "
    "give it more seconds)"
)


STOPPED_UNSENT = (
    "n/a: the load point sent no request ({why} before its first went out: --resume measures "
    "it again)"
)
# Why a point that did not finish sent nothing, by its status
WHY_UNSENT = {"stopped": "it was stopped", "failed": "a process of it failed"}


def _none_measured(r: dict[str, Any]) -> str:
    """Why a point measured nothing: it sent nothing (stopped first, a process of it failed, or
    out of time), or only warm-up and cool-down requests."""
    if r.get("n_warmup", 1) or r.get("n_cooldown", 1):
        return NONE_MEASURED
    why = WHY_UNSENT.get(r.get("status") or "")
    return STOPPED_UNSENT.format(why=why) if why else NONE_SENT


NO_PACE = (
    f"pace n/a: fewer than {TREND_MIN_N} measured requests answered, or all of them scheduled "
    "at once"
)


def _timed(key: str, show: Callable[[float | None], str]) -> Callable[[Any, list[str]], str]:
    """A time's cell as `show` writes it, or n/a saying why where no request completed."""

    def cell(r: dict[str, Any], notes: list[str]) -> str:
        if r[key] is None and not r["completed"]:
            return missing_cell(
                notes, NONE_COMPLETED if r.get("n_measure", 1) else _none_measured(r)
            )
        return show(r[key])

    return cell


def _ms_column(header: str, key: str, wide: bool) -> Column:
    return Column(header, _timed(key, _ms), wide=wide)


def _s_column(header: str, key: str, wide: bool) -> Column:
    return Column(header, _timed(key, lambda v: number(v, ".3f")), wide=wide)


def _pace(r: dict[str, Any], notes: list[str]) -> str:
    return missing_cell(notes, NO_PACE) if r["pace"] is None else number(r["pace"], ".0%")


def _latency_columns() -> list[Column]:
    """TTFT, ITL, TPOT (ms) and e2e (s): p50 and p99 in every table (ITL's p50 only), the
    mean and the other percentiles in wide ones."""
    columns = []
    for name, key, column in [
        ("TTFT ms", "ttft_s", _ms_column),
        ("ITL ms", "itl_s", _ms_column),
        ("TPOT ms", "tpot_s", _ms_column),
        ("e2e s", "e2e_s", _s_column),
    ]:
        default = {"ttft_s": {"p50", "p99"}, "itl_s": {"p50"}, "e2e_s": {"p50", "p99"}}.get(key)
        columns.append(column(f"{name}\nmean", key, True))
        for p, label in [("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99")]:
            columns.append(column(f"{name}\n{label}", f"{key}_{p}", p not in (default or ())))
        columns.append(column(f"{name}\np99.9", f"{key}_p999", True))
    return columns


def point_label(r: Mapping[str, Any]) -> str:
    """The point's label, and how it ended where it did not finish (stopped, errors, running)."""
    status = r.get("status")
    return r["load_point"] + (f" ({status})" if status not in (None, "finished") else "")


def _columns() -> list[Column]:
    return [
        Column("▲", lambda r, _: _saturated(r), justify="center"),
        Column("config", lambda r, _: escape(r["config"]), justify="left", name=True),
        Column("load\npoint", lambda r, _: escape(point_label(r)), justify="left"),
        Column("target", lambda r, _: target_label(r), wide=True),
        Column("req/s", lambda r, _: number(r["achieved_rate"], ".3g")),
        Column("pace", _pace, wide=True),
        Column("conc.", lambda r, _: number(r["concurrency"], ".3g")),
        Column("ok/\nfail", lambda r, _: _done_failed(r)),
        Column("cancelled", lambda r, _: str(r["cancelled"]), wide=True),
        Column("out\ntok/s", lambda r, _: number(r["output_tps"], ".4g")),
        Column("total\ntok/s", lambda r, _: number(r["total_tps"], ".4g"), wide=True),
        *_latency_columns(),
        _ms_column("queue ms\nmean", "queue_delay_s", True),
        _ms_column("queue ms\np50", "queue_delay_s_p50", True),
        _ms_column("queue ms\np99", "queue_delay_s_p99", True),
        Column("goodput\nreq/s", lambda r, notes: _goodput(r, "goodput", notes)),
        Column("correct\ngoodput", lambda r, notes: _goodput(r, "correct_goodput", notes)),
        Column("SLO met\nshare", lambda r, _: number(r["slo_attainment"], ".1%"), wide=True),
        Column(
            "energy\nJ/query",
            lambda r, notes: _energy(r, "energy_j_per_query", ".3g", notes),
            wide=True,
        ),
        Column(
            "energy\nJ/out tok",
            lambda r, notes: _energy(r, "energy_j_per_output_token", ".3g", notes),
            wide=True,
        ),
        Column("$/M\nout tok", _dollars, wide=True),
        Column("warm-up\ncool-down", lambda r, _: f"{r['n_warmup']}/{r['n_cooldown']}", wide=True),
    ]


def load_table(
    rows: list[dict[str, Any]],
    wide: bool = False,
    slo_source: str | None = None,
    title: str | None = "load",
) -> tuple[ColumnTable, list[str]]:
    """The table of `analysis.load.load_stats` rows and its footnotes: each missing value's and
    each saturation's reason, the definitions, the SLO and where it came from (`slo_source`,
    e.g. '--slo' or "the run's spec"). Cells are Rich markup; print the footnotes with
    markup=False."""
    columns, more = visible(_columns(), wide, "tradeoff report")
    table, notes = build_table(title, columns, rows)
    footnotes = [f"[{i + 1}] {note}" for i, note in enumerate(notes)]
    warmup = sum(r["n_warmup"] for r in rows)
    cooldown = sum(r["n_cooldown"] for r in rows)
    footnotes.append(DEFINITIONS.format(excluded=f"{warmup} and {cooldown} requests in all"))
    slos = {r["slo"] for r in rows if r["slo"] is not None}
    if slos:
        footnotes.append(
            "goodput: completed requests/s meeting every objective of the SLO "
            f"{describe_slo(slos.pop(), slo_source)}; "
            "correct goodput: those of them also scored correct (score 1); failed requests meet "
            "none"
        )
    sources = sorted({r["energy_source"] for r in rows if r["energy_source"]})
    if wide and sources:
        footnotes.append(f"energy: measured by {', '.join(sources)}")
    if any(r["saturated"] for r in rows):
        footnotes.append(SATURATED_NOTE.format(margin=SATURATION_MARGIN))
    for r in rows:
        if r["saturated"]:
            footnotes.append(f"▲ {r['config']} at {r['load_point']}: {r['saturation_reason']}")
    for r in rows:
        if r.get("n_shorter_than_asked"):
            footnotes.append(
                f"{r['config']} at {r['load_point']}: {r['n_shorter_than_asked']} of "
                f"{r['n_asked_length']} answers came back shorter than asked (a server that "
                "ignores ignore_eos / min_tokens, or an in-process model at its end of sequence), "
                "so output lengths are not the ones given"
            )
        if r.get("n_counted_in_chunks"):
            footnotes.append(
                f"{r['config']} at {r['load_point']}: "
                + CHUNKS_NOTE.format(counted=r["n_counted_in_chunks"], answers=r["completed"])
            )
    in_process = sorted({r["config"] for r in rows if r.get("in_process")})
    if in_process:
        footnotes.append(
            f"{', '.join(in_process)}: in-process models answer one request at a time; the "
            "others wait inside the model's call, so their queueing shows in TTFT and e2e"
        )
    if not rows:
        footnotes.append("no load points stored in this run yet")
    return table, footnotes + more


def scraped_table(rows: list[dict[str, Any]]) -> tuple[ColumnTable, list[str]]:
    """What the servers reported of themselves per load point (`analysis.scraped`), beside the
    load table: requests running and waiting, KV-cache use, each the mean and max over the
    point's scrapes."""

    def gauge(meaning: str, stat: str, fmt: str) -> Column:
        return Column(
            f"{meaning.replace('_', ' ')}\n{stat}",
            lambda r, _: number(r[f"{meaning}_{stat}"], fmt),
        )

    columns = [
        Column("config", lambda r, _: escape(r["config"]), justify="left", name=True),
        Column("load\npoint", lambda r, _: escape(point_label(r)), justify="left"),
        Column("scrapes\nok/failed", lambda r, _: f"{r['scrapes']}/{r['failed']}"),
        gauge("running", "mean", ".1f"),
        gauge("running", "max", ".0f"),
        gauge("waiting", "mean", ".1f"),
        gauge("waiting", "max", ".0f"),
        gauge("kv_cache", "max", ".2f"),
    ]
    if len({(r["config"], r["load_point"]) for r in rows}) < len(rows):  # several servers each
        server = Column("server", lambda r, _: escape(r["source"]), justify="left")
        columns.insert(2, server)
    table, _ = build_table("the servers' own metrics (scraped)", columns, rows)
    sources = sorted({r["source"] for r in rows})
    metrics = sorted(
        {r[f"{m}_metric"] for r in rows for m in ("running", "waiting", "kv_cache")} - {None}
    )
    notes = [f"scraped from {', '.join(sources)}: {', '.join(metrics) or 'no known gauges'}"]
    return table, notes
