"""`tradeoff load`: configurations driven at load profiles, with a progress line per load point,
then the load table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tradeoff.cli.options import (
    ApiKey,
    Limit,
    MaxTokens,
    Models,
    Out,
    Processes,
    RayAddress,
    SpecFile,
    Temperature,
    Timeout,
    given_options,
    processes_value,
)
from tradeoff.cli.output import console, err_console, first_errors, interrupted
from tradeoff.errors import UserError
from tradeoff.load.profiles import PROFILE_FORMS
from tradeoff.report.notes import TPOT_DEFINITION
from tradeoff.resumes import command_line, resume_command

if TYPE_CHECKING:
    from tradeoff.load.driver import PointProgress
    from tradeoff.load.run import LoadResult


def load(
    ctx: typer.Context,
    spec_file: SpecFile = None,
    model: Models = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            "-t",
            "--data",
            help="Requests to send: a built-in task, jsonl:PATH, hf:NAME (scored), or "
            "synthetic:prompt=N,output=N (unscored; `tradeoff tasks` lists them). Repeatable.",
        ),
    ] = None,
    profile: Annotated[str, typer.Option(help=f"Load profile: {PROFILE_FORMS}.")] = "sweep",
    max_requests: Annotated[
        int | None, typer.Option(help="Requests per load point (warm-up and cool-down included).")
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(help="Seconds per load point (default 30 unless --max-requests is given)."),
    ] = None,
    warmup: Annotated[
        str | None,
        typer.Option(
            help="The first requests (e.g. 10) of each load point, or those sent in its first "
            "seconds (e.g. 5s): stored, marked, left out of the statistics. Requests need "
            "--max-requests, seconds --max-seconds."
        ),  # fmt: skip
    ] = None,
    cooldown: Annotated[
        str | None,
        typer.Option(
            help="The last requests of each load point, or those sent in its last seconds, "
            "likewise."
        ),
    ] = None,
    rampup: Annotated[
        float, typer.Option(help="Seconds over which a rate grows from 0 to its target.")
    ] = 0.0,
    slo: Annotated[
        str | None,
        typer.Option(
            help="Service-level objective in seconds, e.g. ttft=0.5,itl=0.05,e2e=10: "
            f"goodput counts the requests that meet it. tpot: {TPOT_DEFINITION}."
        ),  # fmt: skip
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(help="Most requests in flight (throughput, and the cap of rates).")
    ] = 256,
    max_errors: Annotated[
        int | None, typer.Option(help="Stop once a load point has this many failed requests.")
    ] = None,
    max_error_rate: Annotated[
        float | None,
        typer.Option(help="Stop once more than this share of a load point's requests failed."),
    ] = None,
    scrape: Annotated[
        str,
        typer.Option(
            help="Sample the server's Prometheus metrics through the run: auto (each "
            "openai: upstream's /metrics, where it answers), off, or a URL."
        ),  # fmt: skip
    ] = "auto",
    processes: Processes = None,
    limit: Limit = None,
    temperature: Temperature = None,
    max_tokens: MaxTokens = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of poisson gaps, sampling and tasks (default: the spec's "
            "sampling.seed, else 0)."
        ),
    ] = None,
    timeout: Timeout = None,
    out: Out = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the load run in this directory (finished points skipped)."),
    ] = None,
    api_key: ApiKey = None,
    ray: RayAddress = None,
) -> None:
    """Drive configurations at load profiles: latency percentiles, throughput, goodput.

    Each configuration runs at each load point of --profile until --max-requests or
    --max-seconds; every request is stored as a record with its load point, scheduled and actual
    send times and queue delay. Ctrl-C stops after the requests in flight; --resume DIR goes on
    from the first load point that did not finish.
    """
    from tradeoff.config import profile_spec
    from tradeoff.load.options import LoadOptions

    if resume is not None:
        if spec_file or model or task or out:
            raise UserError("--resume DIR takes no spec, --model, --task or --out")
        if given := given_options(ctx, "resume", "api_key", "ray"):
            raise UserError(
                f"--resume DIR goes on as the run was started; it takes no {', '.join(given)} "
                "(only --api-key and --ray)"
            )
        _finish(_run(None, None, None, resume, api_key, ray))
        return
    spec = profile_spec(
        spec_file,
        model,
        task,
        out=out,
        resume=None,
        overrides={
            "limit": limit,
            "timeout_s": timeout,
            "processes": processes_value(processes),
        },
        sampling={"temperature": temperature, "max_tokens": max_tokens, "seed": seed},
    )
    assert spec is not None  # (not resumed)
    options = LoadOptions(
        profile=profile,
        max_requests=max_requests,
        max_seconds=max_seconds if max_seconds is not None or max_requests else 30.0,
        warmup=warmup,
        cooldown=cooldown,
        rampup_s=rampup,
        slo=slo,
        max_concurrency=max_concurrency,
        max_errors=max_errors,
        max_error_rate=max_error_rate,
        seed=spec.sampling.seed,  # --seed, or the spec's
        scrape=scrape,
    )
    _finish(_run(spec, options, out, None, api_key, ray))


def _run(spec, options, out, resume, api_key, ray) -> LoadResult:  # type: ignore[no-untyped-def]
    from rich.live import Live
    from rich.text import Text

    from tradeoff.load.run import load as drive

    live = Live(console=err_console, transient=True, refresh_per_second=4)
    line = Text()
    shown: list[str] = []  # the load point on display; its last line stays once it is done

    def on_progress(config: str, p: PointProgress) -> None:
        if not live.is_started:
            live.start()
        if shown and shown[0] != p.label:
            live.console.print(line.copy())
        shown[:] = [p.label]
        # completed requests a second, as the table's req/s: failures are not throughput
        rate = (p.done - p.errors) / p.elapsed_s if p.elapsed_s > 0 else 0.0
        bound = f"{p.sent}/{p.total}" if p.total else f"{p.sent} sent"
        time_bound = f" of {p.max_seconds:g}" if p.max_seconds else ""
        unsent = f", {p.unsent} not sent in time" if p.unsent else ""
        line.plain = (
            f"{p.label}: {bound}, {p.in_flight} in flight, {p.done} done, {p.errors} errors"
            f"{unsent}, {rate:.2f} req/s, {p.elapsed_s:.0f}{time_bound} s"
        )
        live.update(line)

    try:
        return drive(
            spec,
            options,
            out,
            resume=resume,
            api_key=api_key,
            on_progress=on_progress,
            notify=lambda msg: err_console.print(msg, style="yellow"),
            ray=ray,
        )
    except KeyboardInterrupt:  # before the run's own Ctrl-C handler: loading, opening the store
        interrupted("load", resume or out)
    finally:
        if live.is_started:
            live.stop()
            err_console.print(line)


def _failures(result: LoadResult, rows: list[dict[str, Any]]) -> list[str]:
    """For each load point this session ran with failed requests: how many, as the table
    (`rows`) counts them, those of its warm-up and cool-down besides, and the first one's error
    (the table counts them; this says why)."""
    failed = [p for p in result.points if p.errors]
    if not failed:
        return []
    first = first_errors(result.directory, ["config", "load_point"], load_only=True)
    tabled = {(r["config"], r["load_point"]): r for r in rows}
    lines = []
    for p in failed:
        error = first.get((p.config, p.label))
        why = f"; the first: {error[2]}" if error else ""
        row = tabled.get((p.config, p.label))
        if row is None:  # (stored in none of the table's rows)
            counted = f"{p.errors} of {p.done} requests failed"
        else:  # the table's figure: its measured requests only
            counted = f"{row['failed']} of {row['n_measure']} measured requests failed"
            aside = row["n_warmup"] + row["n_cooldown"]
            besides = p.errors - row["failed"] - row["cancelled"]
            if aside and besides > 0:
                counted += f", and {besides} of its {aside} warm-up and cool-down requests"
        lines.append(f"{p.config} @ {p.label}: {counted}{why}")
    return lines


def _unsent(result: LoadResult) -> list[str]:
    """For each load point this session ran whose time ran out with requests still due: how
    many were not sent, and why."""
    return [
        f"{p.config} @ {p.label}: {p.unsent} requests due within --max-seconds were not sent: "
        "the point's time ran out while they waited for a slot (--max-concurrency) or for a "
        "process that could not keep the pace"
        for p in result.points
        if p.unsent
    ]


def _finish(result: LoadResult) -> None:
    """The load table of the whole run (every load point stored, earlier sessions' included),
    what this session skipped, where a sweep stopped early, and how it ended. A Ctrl-C while the
    table and plot are drawn says that the run is stored, and where."""
    from tradeoff.cli.report import draw_load_plot, load_rows, print_load
    from tradeoff.cli.run import _stored

    for skipped in result.skipped:
        err_console.print(f"{skipped}: finished in an earlier session, skipped", soft_wrap=True)
    with _stored(
        result.directory, f"; {command_line('report', result.directory, '--load')} shows it"
    ):
        rows, source = load_rows(result.directory)
        plot = result.directory / "load.html"
        if rows:  # the plot first: a reader that stops reading the table early loses no plot
            draw_load_plot(rows, source, plot, result.directory)
            print_load(rows, source, result.directory)
    for line in _failures(result, rows) + _unsent(result):
        err_console.print(line, style="yellow", soft_wrap=True, highlight=False, markup=False)
    for line in result.sweep_short:
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    for where, why, left in result.sweep_stops:
        rates = "rate" if left == 1 else "rates"
        console.print(
            f"sweep stopped at {where} (saturated: {why}); {left} higher {rates} not run",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    console.print(
        f"run directory: {result.directory}" + (f"  (plot: {plot})" if rows else ""),
        soft_wrap=True,
        highlight=False,
    )
    if result.status == "stopped":
        err_console.print(
            f"stopped; continue with: {resume_command('load', result.directory)}", soft_wrap=True
        )
        sys.exit(130)  # said why: not typer's silent 130
    if result.status == "errors":
        err_console.print("stopped: too many failed requests (--max-errors / --max-error-rate)")
        raise typer.Exit(1)
    if result.points and not any(p.sent for p in result.points):
        err_console.print(
            "no request of this session was sent: each load point's --max-seconds ran out "
            "before its first request went out; give the points more seconds"
        )
        raise typer.Exit(1)
    if result.points and all(p.done and p.errors == p.done for p in result.points):
        err_console.print("every request of this session failed (the first error of each is above)")
        raise typer.Exit(1)
