"""`tradeoff report` and `tradeoff frontier`: a run's per-configuration summary (and, for a load
run, its statistics per load point, `analysis.load`), and accuracy against cost with the
Pareto-optimal configurations marked (both from one aggregation, `analysis.metrics.summaries`)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tradeoff.cli.output import (
    COST_METAVAR,
    FrontierFormat,
    SummaryFormat,
    check_html,
    check_plot,
    check_writable,
    console,
    cost_choice,
    err_console,
    file_option,
    opened,
    write_json,
    write_json_rows,
    write_text,
    writing,
)
from tradeoff.errors import UserError
from tradeoff.paths import written_whole
from tradeoff.report.notes import (
    LOAD_RUN_NOTE,
    POOLED_NOTE,
    TPOT_DEFINITION,
    no_records,
    unfinished_note,
)

if TYPE_CHECKING:
    import pandas as pd

    from tradeoff.analysis.frontier import FrontierRow
    from tradeoff.analysis.load import Slo
    from tradeoff.report.columns import ColumnTable


WIDE_HELP = "Table: every column, the secondary ones too (the other formats always have them)."


# A run's measured records, its configurations' names in order, its meters' summaries (`_read`).
Read = tuple["pd.DataFrame", list[str], list[dict[str, Any]]]


def _read(directory: Path) -> Read:
    """A run's measured records (a load run's warm-up and cool-down requests are stored, never
    counted), with the columns its summary reads and `load_point`; its configurations' names in
    order, and its meters' summaries."""
    from tradeoff.analysis.metrics import SUMMARY_COLUMNS
    from tradeoff.analysis.operating_point import measured_records
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        records = measured_records(store, [*SUMMARY_COLUMNS, "load_point"])
        names, meters = [c["name"] for c in store.configs()], store.run()["meters"]
    finally:
        store.close()
    return records, names, meters


COUNT_COLUMNS = ("sample", "input_tokens", "output_tokens", "peak_rss_bytes")


def _read_records(directory: Path, nested: bool = False) -> pd.DataFrame:
    """A run's records (a load run's warm-up and cool-down ones too, told by `phase`: stored,
    never counted, and the page says this export lists them), every column, then each one's
    prompt and reference, so that a score can be checked from the export, and its item's metadata
    (`meta`: the columns `import outcomes` kept, a benchmark's subject). `calls`, `extra`, chat
    messages and structured references are JSON text for flat formats (CSV, parquet, the table);
    `nested`, for JSON, they are objects (`extra.routed_to` is a field, not text to parse
    again)."""
    import pandas as pd

    from tradeoff.analysis.operating_point import hour_shared, models_of
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        # a load run's measured requests cost their share of their point's hour, as summed
        prices, models = store.run()["spec"].get("prices") or {}, models_of(store.configs())
        records = hour_shared(store.records(), prices, models)
        items = store.items()[["task", "item_id", "prompt", "reference", "meta"]]
    finally:
        store.close()
    if records.empty:
        return records
    # Imported outcomes carry no latency and no output: stored as 0 (the columns are NOT NULL),
    # exported as missing
    imported = records["extra"].map(lambda text: bool(text) and json.loads(text).get("imported"))
    if imported.any():
        for column in ("e2e_s", "output_tokens"):
            records[column] = records[column].where(~imported.astype(bool))
    # Counts stay whole numbers where some are missing (pandas makes such a column float, and
    # the export read 144.0 tokens)
    for column in COUNT_COLUMNS:
        if column in records:
            records[column] = pd.to_numeric(records[column]).round().astype("Int64")
    if nested:
        for column in ("calls", "extra"):
            records[column] = records[column].map(lambda text: json.loads(text) if text else None)
        items["meta"] = items["meta"].map(lambda meta: meta or None)
    else:
        for column in ("calls", "extra"):  # stores before 2026-12-07 kept them ASCII-escaped
            records[column] = records[column].map(_letters_as_letters)
        for column in ("prompt", "reference"):
            items[column] = items[column].map(_as_text)
        items["meta"] = items["meta"].map(
            lambda meta: json.dumps(meta, ensure_ascii=False) if meta else None
        )
    return records.merge(items, on=["task", "item_id"], how="left")


def _letters_as_letters(text: str | None) -> str | None:
    """JSON text with its escaped letters (`\\u00e9`) written as letters."""
    from tradeoff.store import json_text

    if not text or "\\u" not in text:
        return text
    return json_text(json.loads(text))


def _as_text(value: object) -> str | None:
    """A chat prompt (or a structured reference) as JSON text, its letters written as letters."""
    return (
        value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    )


# A run's records of load points, its load points, configurations and spec (`_read_load`).
LoadRead = tuple["pd.DataFrame", list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]


def _read_load(directory: Path) -> LoadRead:
    """A run's records of load points, every column (none for a profile run), its load points,
    configurations and spec."""
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        records = store.records(load_only=True)
        return records, store.load_points(), store.configs(), store.run()["spec"]
    finally:
        store.close()


def _print_table(table: ColumnTable, notes: list[str]) -> None:
    """A table, then its notes. A table that cannot fit the terminal is printed wider than it,
    never cut (Rich crops at the console's width by default)."""
    console.print(table, crop=False)
    for note in notes:
        console.print(note, style="dim", markup=False, highlight=False)


def host_conditions(directory: Path) -> dict[str, Any]:
    """The host's conditions over a run (every session's samples; `meters.conditions`)."""
    from tradeoff.meters.conditions import summarize
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        return summarize(store.host_samples())
    finally:
        store.close()


def print_unfinished(directory: Path) -> None:
    if note := unfinished_note(directory):
        err_console.print(f"note: {note}", style="yellow", highlight=False, soft_wrap=True)


def print_summary(directory: Path, wide: bool = False, read: Read | None = None) -> None:
    """The summary table of a run (`read` already, or read here), its footnotes, its meters'
    idle baselines and the host's conditions while it ran (a warning when the host was busy)."""
    from tradeoff.analysis.metrics import summarize
    from tradeoff.report.table import host_notes, meter_notes, summary_table

    records, names, meters = read or _read(directory)
    table, notes = summary_table(
        summarize(records, names), title=f"tradeoff run {directory}", wide=wide
    )
    host, busy = host_notes(host_conditions(directory))
    if (records["load_point"] != "").any():
        notes.append(LOAD_RUN_NOTE)
    _print_table(table, [*notes, *meter_notes(meters), *([host] if host else [])])
    if busy:
        console.print(busy, style="yellow", markup=False, highlight=False)
    print_unfinished(directory)


def _under_load(directory: Path, records: pd.DataFrame) -> bool:
    """Whether a run has load points: its measured `records` of one, or one stored. (The load
    runner stores a load point before its records, so a profile run is told apart without
    reading its records again.)"""
    return bool((records["load_point"] != "").any()) or _has_load_points(directory)


def _has_load_points(directory: Path) -> bool:
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        return bool(store.load_points())
    finally:
        store.close()


def load_rows(directory: Path, slo: Slo | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """A run's statistics per configuration and load point (none for a profile run), goodput
    under `slo` or else the SLO the run was measured under; and where that SLO came from."""
    return _load_stats(directory, _read_load(directory), slo)


def _load_stats(
    directory: Path, read: LoadRead, slo: Slo | None
) -> tuple[list[dict[str, Any]], str | None]:
    from tradeoff.analysis.load import run_load_stats

    records, points, configs, spec = read
    return run_load_stats(records, points, configs, spec, slo, str(directory))


def print_load(
    rows: list[dict[str, Any]], source: str | None, directory: Path, wide: bool = False
) -> None:
    """The load table of the run in `directory`, then what the servers reported of themselves
    (scraped) during each load point, where they were scraped."""
    from tradeoff.report.load_table import load_table, scraped_table

    _print_table(*load_table(rows, wide, source, title="under load"))
    scraped = scraped_rows_of(directory)
    if scraped:
        console.print()
        _print_table(*scraped_table(scraped))


def scraped_rows_of(directory: Path) -> list[dict[str, Any]]:
    from tradeoff.analysis.scraped import scraped_rows
    from tradeoff.load.scrape import scrape_urls
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        configs = store.configs()
        auto = store.run()["spec"].get("load", {}).get("scrape", "auto") == "auto"
        upstreams = {c["config_id"]: scrape_urls(c["spec"].get("models", {})) for c in configs}
        rows = scraped_rows(store.scrapes(), store.load_points(), upstreams if auto else None)
    finally:
        store.close()
    names = {c["config_id"]: c["name"] for c in configs}
    return [{**r, "config": names.get(r["config_id"], r["config_id"])} for r in rows]


def _no_load_points(directory: Path, option: str = "--plot") -> str:
    does = "draws" if option == "--plot" else "reports"
    return (
        f"{directory} has no load points (a profile run, or a load run that stored none yet); "
        f"{option} {does} a run of tradeoff load"
    )


def draw_load_plot(
    rows: list[dict[str, Any]], source: str | None, path: Path, directory: Path
) -> Path:
    """Draws load statistics (`load_rows`) to `path`, a .png or else an .html file."""
    from tradeoff.report.charts import write_load

    if not rows:
        raise UserError(_no_load_points(directory))
    with writing(path):
        return write_load(rows, path, title=f"tradeoff load: {directory}", slo_source=source)


def write_load_plot(directory: Path, path: Path, slo: Slo | None = None) -> Path:
    """Draws a load run's latency percentiles and goodput against achieved throughput, per
    configuration, to `path` (.png, or one self-contained .html file); goodput under `slo`, else
    the run's own. A run without load points, or a path that cannot be written, is a UserError."""
    check_plot(path)
    rows, source = load_rows(directory, slo)
    return draw_load_plot(rows, source, path, directory)


def frontier_rows(
    directory: Path, cost: str, at: str | None = None, slo: Slo | None = None
) -> tuple[list[FrontierRow], str]:
    """The frontier of a run on `cost` (or auto), and its cost axis as a reader should see it;
    with `at`, of a load run's records at that operating point (`analysis.operating_point`)."""
    from tradeoff.analysis.costs import resolve
    from tradeoff.analysis.frontier import axis_label, frontier

    points: dict[str, str] = {}
    if at is None:
        records, names, _ = _read(directory)
        where = ""
    else:
        records, names, where, points = _records_at(directory, at, slo)
    axis = resolve(cost, records)
    rows = [
        dataclasses.replace(r, load_point=points.get(r.config))
        for r in frontier(records, axis.name, names)
    ]
    return rows, axis_label(axis.name, rows) + where


def _records_at(
    directory: Path, at: str, slo: Slo | None
) -> tuple[pd.DataFrame, list[str], str, dict[str, str]]:
    """The measured records of each configuration at its load point chosen by `at`, priced
    there; the configurations' names in order; the operating point as a reader sees it; and
    each configuration's point, labelled as the load table labels it."""
    from tradeoff.analysis.operating_point import choose, models_of, parse_at, records_at
    from tradeoff.report.load_table import point_label

    point = parse_at(at)
    read = _read_load(directory)
    records, _, configs, spec = read
    chosen = choose(_load_stats(directory, read, slo)[0], point)
    prices = spec.get("prices") or {}
    models = models_of(configs)
    points = {config: point_label(row) for config, row in chosen.items()}
    none_met = " (goodput 0 at every point: none met the SLO)"
    where = ", ".join(
        f"{config} @ {points[config]}"
        + (none_met if point.kind == "max-goodput" and row.get("goodput") == 0 else "")
        + (" (no request measured: not on this frontier)" if not row.get("n_measure") else "")
        for config, row in chosen.items()
    )
    names = [c["name"] for c in configs]
    return records_at(records, chosen, prices, models), names, f", at {point} ({where})", points


def print_frontier(rows: list[FrontierRow], label: str, wide: bool = False) -> None:
    from tradeoff.report.table import frontier_table

    _print_table(*frontier_table(rows, label, wide))


def write_plot(rows: list[FrontierRow], label: str, plot: Path, directory: Path) -> None:
    from tradeoff.report.charts import write_frontier

    with writing(plot):
        write_frontier(rows, label, plot, title=f"tradeoff frontier: {directory}")


def report(
    directory: Annotated[Path, typer.Argument(help="A run directory.")],
    format: Annotated[
        SummaryFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="Output format (default: --output's suffix, .csv, .json or .parquet; else table).",
        ),
    ] = None,
    records: Annotated[
        bool, typer.Option("--records", help="Per-query records instead of the summary.")
    ] = False,
    output: Annotated[
        Path | None,
        file_option(
            "--output",
            "-o",
            help="Write to this file instead of stdout (parquet: instead of DIR/KIND.parquet, "
            "KIND being summary, records or load).",
        ),
    ] = None,
    wide: Annotated[bool, typer.Option("--wide", "-w", help=WIDE_HELP)] = False,
    load: Annotated[
        bool,
        typer.Option(
            "--load",
            help="Only the statistics per configuration and load point, and the servers' own "
            "metrics where they were scraped (load runs).",
        ),
    ] = False,
    slo: Annotated[
        str | None,
        typer.Option(
            "--slo",
            metavar="ttft=S,itl=S,tpot=S,e2e=S",
            help="Goodput under this service-level objective (seconds; any of the keys) instead "
            f"of the one the load run was measured under. tpot: {TPOT_DEFINITION}.",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        file_option(
            "--plot",
            "-p",
            help="Also draw latency percentiles and goodput against achieved throughput per "
            "configuration (load runs) to this .png or .html file.",
        ),
    ] = None,
    html: Annotated[
        bool,
        typer.Option(
            "--html",
            help="Write the run's report as one self-contained HTML page (opens offline) to "
            "DIR/report.html, or to --output.",
        ),
    ] = False,
) -> None:
    """Per-configuration summary of a run (or, with --records, every per-query record), then,
    for a load run, the statistics per configuration and load point (alone with --load); --plot
    draws them against achieved throughput."""
    import pandas as pd

    from tradeoff.analysis.load import parse_slo
    from tradeoff.analysis.metrics import summarize

    objective = None if slo is None else parse_slo(slo)
    if objective is not None and not _has_load_points(directory):
        raise UserError(
            f"--slo judges a load run's goodput; {directory} has no load points (tradeoff load "
            "measures them)"
        )
    if html:
        if records or load or wide or plot is not None or format is not None:
            raise UserError(
                "--html writes the whole report; give it without --records, --load, --wide, "
                "--plot or --format"
            )
        written = _write_html(directory, output, objective)
        err_console.print(f"wrote {written}", highlight=False, soft_wrap=True)
        return
    format = _format_for(format, output)
    if load and records:
        raise UserError("--load and --records each choose what to report; give one of them")
    if plot is not None and records:
        raise UserError("--plot draws the load statistics, not --records; give one of them")
    check_plot(plot)
    if output is not None and format is not SummaryFormat.table:
        check_writable("--output", output)
    tables = format is SummaryFormat.table and not records
    read = _read(directory) if tables and not load else None
    if read is not None and read[0].empty:
        raise UserError(no_records(directory))
    wanted = load or plot is not None or (read is not None and _under_load(directory, read[0]))
    rows, source = load_rows(directory, objective) if wanted else ([], None)
    if plot is not None and not rows:
        raise UserError(_no_load_points(directory))
    if load and not rows:
        raise UserError(_no_load_points(directory, "--load"))
    if plot is not None:  # first: a reader that stops reading the tables early loses no plot
        draw_load_plot(rows, source, plot, directory)
    if tables:
        if not load:
            print_summary(directory, wide, read)
        if rows or load:
            if not load:
                console.print()
            print_load(rows, source, directory, wide)
        if load:  # the summary above says it otherwise
            print_unfinished(directory)
    else:
        if load:
            from tradeoff.analysis.load import load_frame

            table = load_frame(rows)
        elif records:
            table = _read_records(directory, nested=format is SummaryFormat.json)
            if table.empty:  # as the summary: an empty file would look like a run of nothing
                raise UserError(no_records(directory))
        else:
            df, names, _ = _read(directory)
            if df.empty:  # an empty file would look like a summary of nothing
                raise UserError(no_records(directory))
            table = pd.DataFrame(summarize(df, names))
        kind = "records" if records else "load" if load else "summary"
        _write_table(table, format, output, directory / f"{kind}.parquet", wide)
        print_unfinished(directory)  # on stderr: an export of a stopped run holds part of it
    if plot is not None:
        err_console.print(f"wrote {plot}", highlight=False, soft_wrap=True)


SUFFIXES = {"." + f.value: f for f in SummaryFormat if f is not SummaryFormat.table}


def _format_for(format: SummaryFormat | None, output: Path | None) -> SummaryFormat:
    """The format given, or the one `output`'s suffix names; an output the format would not
    write, or one whose suffix names another format, is refused rather than ignored."""
    if output is None:
        return format or SummaryFormat.table
    suffix = output.suffix.lower()
    if suffix == ".html":
        raise UserError(f"--output {output}: the HTML report is written by --html -o {output}")
    named = SUFFIXES.get(suffix)
    chosen = format or named
    if chosen is None:
        raise UserError(
            f"--output {output}: cannot tell the format from {suffix or 'no suffix'!r}; give "
            "--format csv, json or parquet (or a .csv, .json or .parquet name)"
        )
    if chosen is SummaryFormat.table:
        raise UserError(
            "--output writes csv, json or parquet; the table goes to the terminal (give "
            "--format csv, json or parquet)"
        )
    if named is not None and named is not chosen:
        raise UserError(
            f"--output {output} names {named.value} but --format is {chosen.value}; give one "
            "that agrees"
        )
    return chosen


def _write_html(directory: Path, output: Path | None, slo: Slo | None = None) -> Path:
    from tradeoff.report.html_report import write_report
    from tradeoff.store import Store

    Store.open(directory).close()  # a directory that holds no run: one line saying so
    path = output or directory / "report.html"
    check_html("--output" if output else "--html", path)
    with writing(path):
        return write_report(directory, path, slo)


def _write_table(
    table: pd.DataFrame, format: SummaryFormat, output: Path | None, parquet: Path, wide: bool
) -> None:
    """A table in `format` to `output`, or stdout (parquet: to `parquet` unless `output`)."""
    from tradeoff.report.table import records_table

    if format is SummaryFormat.table:
        shown, more = records_table(table, wide)
        console.print(shown)
        if more:
            console.print(more, style="dim", markup=False, highlight=False)
    elif format is SummaryFormat.parquet:
        target = output or parquet
        with writing(target), written_whole(target) as part:
            typed(table).to_parquet(part, index=False)
        err_console.print(f"wrote {target}")
    elif format is SummaryFormat.json:
        write_json_rows(table, output)
    else:
        with opened(output) as out:  # pandas writes it in chunks
            table.to_csv(out, index=False)


# Columns of text in every export (records, summary, load): the rest are numbers.
TEXT_COLUMNS = frozenset(
    ["config", "config_id", "task", "item_id", "output", "parsed", "error", "calls", "extra"]
    + ["load_point", "phase", "prompt", "reference", "meta", "status", "profile", "slo"]
)
TEXT_SUFFIXES = ("_missing", "_source", "_unit", "_reason")


def typed(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with each column that holds no value typed as the column is where it has some,
    text or a float (a record's counts are Int64 already): parquet wrote such a column as
    Arrow's `null` type, and one run's file would not read together with another's."""
    empty = [c for c in table.columns if table[c].dtype == object and table[c].isna().all()]
    text = [c for c in empty if c in TEXT_COLUMNS or c.endswith(TEXT_SUFFIXES)]
    return table.astype({c: "string" if c in text else "float64" for c in empty})


def frontier(
    directory: Annotated[Path, typer.Argument(help="A run directory.")],
    cost: Annotated[
        str,
        typer.Option(
            "--cost", "-c", parser=cost_choice, metavar=COST_METAVAR, help="What a query costs."
        ),
    ] = "auto",
    format: Annotated[
        FrontierFormat, typer.Option("--format", "-f", help="Output format.")
    ] = FrontierFormat.table,
    plot: Annotated[
        Path | None,
        file_option(
            "--plot",
            "-p",
            help="Also draw the frontier to this .png or .html file.",
        ),
    ] = None,
    wide: Annotated[bool, typer.Option("--wide", "-w", help=WIDE_HELP)] = False,
    at: Annotated[
        str | None,
        typer.Option(
            help="A load run's operating point: rate=R, concurrency=N, max-goodput or a load "
            "point's label; costs as measured there (dollars: the hour shared by the requests "
            "served in it)."
        ),
    ] = None,
    slo: Annotated[
        str | None,
        typer.Option(help="The SLO that --at max-goodput judges by (default: the run's)."),
    ] = None,
) -> None:
    """Accuracy against cost per configuration, the Pareto-optimal ones marked (★).

    With cost-of-pass, accuracy per joule, IPW and E³. --cost auto: energy where it was measured
    for every successful query, else the costs given with imported outcomes, else latency.
    """
    import pandas as pd

    from tradeoff.analysis.load import parse_slo

    if slo is not None and (at is None or at.strip() != "max-goodput"):
        raise UserError("--slo goes with --at max-goodput (the SLO it judges a load run by)")
    check_plot(plot)
    objective = None if slo is None else parse_slo(slo)
    rows, label = frontier_rows(directory, cost, at, objective)
    if not rows:
        raise UserError(no_records(directory))
    if plot is not None:
        from tradeoff.report.charts import placed, unplaced_notes

        if not placed(rows):  # an empty chart (imported outcomes on the latency axis, say)
            scored = any(not math.isnan(r.accuracy) for r in rows)
            raise UserError(
                f"--plot has nothing to draw on {label}: {'; '.join(unplaced_notes(rows))}; "
                + (
                    "choose another --cost"
                    if scored  # no cost axis gives an unscored run an accuracy
                    else "its tasks have no reference answers to score (synthetic load, served "
                    "traffic): profile a scored task for a frontier"
                )
            )
    if format is FrontierFormat.table:
        print_frontier(rows, label, wide)
    else:
        data = [r.to_dict() for r in rows]
        if format is FrontierFormat.json:
            write_json(data)
        else:
            write_text(pd.DataFrame(data).to_csv(index=False))
    if plot is not None:
        write_plot(rows, label, plot, directory)
        err_console.print(f"wrote {plot}", highlight=False, soft_wrap=True)
    print_unfinished(directory)  # with --at too: a stopped point is measured over less
    if at is None and _has_load_points(directory):
        err_console.print(f"note: {POOLED_NOTE}", style="yellow", highlight=False, soft_wrap=True)
