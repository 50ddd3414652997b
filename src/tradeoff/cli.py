"""The `tradeoff` command line: parses, calls the library, prints. Bad input exits with code 2."""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tradeoff.errors import UserError

app = typer.Typer(
    help="Measure, optimize and serve LLM inference on the accuracy-cost frontier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide: when printing to a file or pipe, do not wrap them at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)


class SummaryFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


class ListFormat(str, Enum):
    table = "table"
    json = "json"


class FrontierFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class CostAxisName(str, Enum):
    auto = "auto"
    energy = "energy"
    latency = "latency"
    tokens = "tokens"
    flops = "flops"
    dollars = "dollars"
    given = "given"


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("errors {task.fields[errors]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _run_profile(spec: Any, out: Path | None, resume: Path | None, api_key: str | None):
    from tradeoff.runner import profile

    # The bar starts at the first progress report, once models are loaded: a bad reference
    # fails before anything is drawn.
    bar = _progress_bar()
    task_id = None
    t0 = time.perf_counter()

    def on_progress(done: int, total: int, skipped: int, errors: int) -> None:
        nonlocal task_id
        if task_id is None:
            bar.start()
            task_id = bar.add_task("profiling", total=total, rate="", errors=0)
        elapsed = time.perf_counter() - t0
        rate = f"{done / elapsed:.2f} req/s" if done and elapsed > 0 else ""
        desc = "profiling" + (f" ({skipped} stored)" if skipped else "")
        bar.update(task_id, total=total, completed=done, rate=rate, errors=errors, description=desc)

    try:
        result = profile(
            spec,
            out,
            resume=resume,
            api_key=api_key,
            on_progress=on_progress,
            notify=lambda msg: err_console.print(f"[yellow]{msg}[/yellow]"),
        )
    finally:
        if task_id is not None:
            bar.stop()
    if result.status == "stopped":
        err_console.print(
            f"stopped after {result.done} records; continue with: "
            f"tradeoff profile --resume {result.directory}",
            soft_wrap=True,
        )
        raise typer.Exit(130)
    return result


def _print_summary(directory: Path) -> None:
    from tradeoff.analysis.metrics import summarize
    from tradeoff.report.table import summary_table
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        rows = summarize(store.records(), [c["name"] for c in store.configs()])
        meters = store.run()["meters"]
    finally:
        store.close()
    table, notes = summary_table(rows, title=f"tradeoff run {directory}")
    console.print(table)
    for note in notes:
        console.print(note, style="dim")
    for m in meters:  # one per session metered by a stepped counter (NVML)
        idle = "n/a" if m.get("idle_w") is None else f"{m['idle_w']:.1f} W"
        console.print(
            f"{m['source']} idle baseline: {idle} over {m['idle_measured_s']:g} s before the "
            f"first request (not subtracted); the counter moved {m['counter_total_j']:.1f} J "
            f"while metering, {m['idle_j']:.1f} J of it between requests",
            style="dim",
        )


@app.command()
def demo(
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/demo-TIME).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Items per built-in task.")] = 20,
) -> None:
    """Profile both bundled models on the built-in tasks (no network, no GPU); print the table."""
    from tradeoff.demo import demo_spec

    out = out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    result = _run_profile(demo_spec(limit), out, None, None)
    _print_summary(result.directory)
    rows, label = _frontier_rows(result.directory, "auto")
    _print_frontier(rows, label)
    plot = result.directory / "frontier.html"
    _write_plot(rows, label, plot, result.directory)
    wall = time.perf_counter() - t0
    console.print(
        f"run directory: {result.directory}  ({result.done} records in {wall:.0f} s)\n"
        f"frontier plot: {plot}  (tradeoff frontier {result.directory} --plot frontier.png "
        "for a PNG; tradeoff report DIR --records for every query)",
        soft_wrap=True,
    )


@app.command("profile")
def profile_cmd(
    spec_file: Annotated[
        Path | None, typer.Argument(help="Run spec (YAML). Or use the flags.")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model: a bundled name, gguf:PATH or openai:BASE_URL#MODEL. Repeatable.",
        ),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            "-t",
            help="Task: a built-in name, jsonl:PATH or hf:NAME[:CONFIG][:SPLIT]. Repeatable.",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Items per task (default: all).")] = None,
    samples: Annotated[int | None, typer.Option(help="Samples per item and configuration.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most output tokens per request.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling and generated tasks.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight at once.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds per request (openai engine).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory to create.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run stored in this directory.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key for openai: models (default $OPENAI_API_KEY).")
    ] = None,
) -> None:
    """Profile configurations on tasks; every (configuration, item, sample) becomes a stored record.

    Ctrl-C stops after the requests in flight; --resume DIR continues a stopped or killed run.
    """
    from tradeoff.config import load_spec, parse_spec

    overrides = {
        "limit": limit,
        "samples": samples,
        "concurrency": concurrency,
        "timeout_s": timeout,
    }
    sampling = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
    if resume is not None:
        if spec_file or model or task or out:
            raise UserError(
                "--resume DIR takes no spec, --model, --task or --out: the run's own spec is used"
            )
        if any(v is not None for v in [*overrides.values(), *sampling.values()]):
            raise UserError(
                "--resume DIR continues the stored run as specified; drop the other options"
            )
        result = _run_profile(None, None, resume, api_key)
        _print_summary(result.directory)
        return
    if out is None:
        raise UserError("--out DIR is required: the run directory to create (or --resume DIR)")
    if spec_file is not None:
        if model or task:
            raise UserError("give either a spec file or --model/--task flags, not both")
        spec = load_spec(spec_file)
        data = spec.model_dump(mode="json")
    else:
        if not model or not task:
            raise UserError("give a spec file, or at least one --model and one --task")
        data = {"models": model, "tasks": task}
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["sampling"] = {
        **data.get("sampling", {}),
        **{k: v for k, v in sampling.items() if v is not None},
    }
    spec = parse_spec(data, str(spec_file) if spec_file else "flags")
    result = _run_profile(spec, out, None, api_key)
    _print_summary(result.directory)
    console.print(f"run directory: {result.directory}")


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="A run directory.")],
    format: Annotated[
        SummaryFormat, typer.Option("--format", "-f", help="Output format.")
    ] = SummaryFormat.table,
    records: Annotated[
        bool, typer.Option("--records", help="Per-query records instead of the summary.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file (required for parquet)."),
    ] = None,
) -> None:
    """Per-configuration summary of a run (or, with --records, every per-query record)."""
    import pandas as pd

    from tradeoff.analysis.metrics import summarize
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        df = store.records()
        names = [c["name"] for c in store.configs()]
    finally:
        store.close()
    if format is SummaryFormat.table and not records:
        _print_summary(directory)
        return
    table = df if records else pd.DataFrame(summarize(df, names))
    if format is SummaryFormat.table:
        show = table.drop(columns=["calls", "extra"], errors="ignore")
        rich_table = Table(*[str(c) for c in show.columns])
        for row in show.itertuples(index=False):
            rich_table.add_row(*["" if v is None else str(v) for v in row])
        console.print(rich_table)
        return
    if format is SummaryFormat.parquet:
        target = output or directory / ("records.parquet" if records else "summary.parquet")
        table.to_parquet(target, index=False)
        err_console.print(f"wrote {target}")
        return
    if format is SummaryFormat.json:
        text = table.to_json(orient="records", indent=2)
    else:
        text = table.to_csv(index=False)
    if output:
        output.write_text(text)
        err_console.print(f"wrote {output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("frontier")
def frontier_cmd(
    directory: Annotated[Path, typer.Argument(help="A run directory.")],
    cost: Annotated[
        CostAxisName, typer.Option("--cost", "-c", help="What a query costs.")
    ] = CostAxisName.auto,
    format: Annotated[
        FrontierFormat, typer.Option("--format", "-f", help="Output format.")
    ] = FrontierFormat.table,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", "-p", help="Also draw the frontier to this .png or .html file."),
    ] = None,
) -> None:
    """Accuracy against cost per configuration, Pareto-optimal ones marked (★), with
    cost-of-pass, accuracy per joule, IPW and E³. --cost auto: energy where it was measured for
    every query, else latency."""
    import pandas as pd

    if plot is not None and plot.suffix.lower() not in (".png", ".html"):
        raise UserError(f"--plot {plot}: give a file ending in .png or .html")
    rows, label = _frontier_rows(directory, cost.value)
    if format is FrontierFormat.table:
        _print_frontier(rows, label)
    else:
        data = [r.to_dict() for r in rows]
        if format is FrontierFormat.json:
            text = json.dumps(data, indent=2)
        else:
            text = pd.DataFrame(data).to_csv(index=False)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if plot is not None:
        _write_plot(rows, label, plot, directory)
        err_console.print(f"wrote {plot}", highlight=False, soft_wrap=True)


def _frontier_rows(directory: Path, cost: str) -> tuple[list[Any], str]:
    from tradeoff.analysis.costs import resolve
    from tradeoff.analysis.frontier import axis_label, frontier
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        records = store.records()
        names = [c["name"] for c in store.configs()]
    finally:
        store.close()
    cost = resolve(cost, records).name
    rows = frontier(records, cost, names)
    return rows, axis_label(cost, rows)


def _print_frontier(rows: list[Any], label: str) -> None:
    from tradeoff.report.table import frontier_table

    table, notes = frontier_table(rows, label)
    console.print(table)
    for note in notes:
        console.print(note, style="dim", markup=False, highlight=False)


def _write_plot(rows: list[Any], label: str, plot: Path, directory: Path) -> None:
    from tradeoff.report.plot import plot_html, plot_png

    try:
        if plot.suffix.lower() == ".png":
            plot_png(rows, label, plot)
        else:
            plot_html(rows, label, plot, title=f"tradeoff frontier: {directory}")
    except OSError as exc:
        raise UserError(f"cannot write {plot}: {exc.strerror}") from None


@app.command()
def models(
    format: Annotated[ListFormat, typer.Option("--format", "-f")] = ListFormat.table,
) -> None:
    """The models available with no network: the bundled ones, the shipped architecture shapes
    for the torch engine (and how to name others)."""
    from dataclasses import asdict

    from tradeoff.engines import list_models

    listing = list_models()
    if format is ListFormat.json:
        print(json.dumps([asdict(m) for m in listing], indent=2))
        return
    width = max(len(m.name) for m in listing)
    for m in listing:
        console.print(
            f"{m.name:<{width}} {m.prompt_mode:<10} {m.description} [{m.detail}]", markup=False
        )
    console.print(
        "also: gguf:PATH (any local GGUF file), torch:HF_DIR (a Hugging Face model directory), "
        "openai:BASE_URL#MODEL (any OpenAI-compatible server)",
        style="dim",
    )


@app.command()
def tasks(
    format: Annotated[ListFormat, typer.Option("--format", "-f")] = ListFormat.table,
) -> None:
    """The built-in tasks (and how to name your own)."""
    from dataclasses import asdict

    from tradeoff.tasks import builtin_tasks

    listing = builtin_tasks()
    if format is ListFormat.json:
        print(json.dumps([asdict(t) for t in listing], indent=2))
        return
    for t in listing:
        console.print(f"{t.name:<8} {t.n_items:>4} items  scorer {t.scorer:<8} {t.description}")
    console.print(
        "also: jsonl:PATH (fields prompt|messages, answer), "
        "hf:NAME[:CONFIG][:SPLIT] (local datasets)",
        style="dim",
    )


class CalibrateDevice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


@app.command()
def calibrate(
    device: Annotated[
        CalibrateDevice, typer.Option(help="cpu (numpy) or cuda (PyTorch).")
    ] = CalibrateDevice.cpu,
    seconds: Annotated[
        float, typer.Option(min=0.1, help="Time to spend measuring (the best run is kept).")
    ] = 4.0,
    save: Annotated[
        bool, typer.Option(help="Store the result for the roofline columns of later runs.")
    ] = True,
) -> None:
    """Measure this machine's memory bandwidth and matmul FLOP/s: the roofline's peaks.

    Runs profiled afterwards on this device get an analytic roofline time per request and
    `report` shows the efficiency (roofline time / measured time). Stored in
    ~/.cache/tradeoff/calibration.json (or $TRADEOFF_CALIBRATION).
    """
    from tradeoff.meters.calibrate import calibrate_cpu, calibrate_cuda
    from tradeoff.meters.hardware import datasheet_peaks, save_calibration

    err_console.print(f"measuring {device.value} for about {seconds:g} s ...")
    result = (calibrate_cpu if device is CalibrateDevice.cpu else calibrate_cuda)(seconds)
    peaks = result.peaks
    sheet = datasheet_peaks(peaks.device)
    table = Table(title=escape(peaks.device), title_justify="left")
    table.add_column("measurement")
    table.add_column("measured", justify="right")
    table.add_column("datasheet", justify="right")
    table.add_row(
        "memory bandwidth (read + write)",
        f"{peaks.bytes_per_s / 1e9:,.1f} GB/s",
        f"{sheet.bytes_per_s / 1e9:,.0f} GB/s ({peaks.bytes_per_s / sheet.bytes_per_s:.0%})"
        if sheet
        else "-",
    )
    table.add_row(
        f"matmul ({result.details['precision']})",
        f"{peaks.flops_per_s / 1e12:,.3f} TFLOP/s",
        f"{sheet.flops_per_s / 1e12:,.0f} TFLOP/s ({peaks.flops_per_s / sheet.flops_per_s:.0%})"
        if sheet
        else "-",
    )
    console.print(table)
    console.print(f"method: {result.details['method']}")
    if save:
        path = save_calibration(peaks, result.details)
        console.print(f"saved to {path}")


def _engine_shape(model: str) -> Any:
    """The shape of a model tradeoff can load (bundled, gguf:), read from its metadata."""
    import asyncio

    from tradeoff.engines import open_engine

    async def shape() -> Any:
        engine = await open_engine(model)
        await engine.aclose()
        return engine.info.shape

    found = asyncio.run(shape())
    if found is None:
        raise UserError(f"model '{model}': its shape is unknown, so no roofline")
    return found


@app.command()
def roofline(
    model: Annotated[
        str,
        typer.Argument(
            help="A shipped architecture config (llama-3.1-8b, qwen2.5-0.5b, "
            "qwen2.5-7b), a config.json or its directory, or a bundled model name."
        ),
    ],
    device: Annotated[
        str,
        typer.Option(
            help="A GPU name (H100, H200, A100, L4: datasheet, or its "
            "calibration) or cpu (needs `tradeoff calibrate`)."
        ),
    ] = "H100",
    input_tokens: Annotated[int, typer.Option("--input", min=1, help="Prompt tokens.")] = 128,
    output_tokens: Annotated[int, typer.Option("--output", min=1, help="Tokens generated.")] = 256,
    batch: Annotated[int, typer.Option(min=1, help="Requests decoded together.")] = 1,
    dtype: Annotated[
        str | None, typer.Option(help="Weight and KV dtype for configs (default: the config's).")
    ] = None,
) -> None:
    """The analytic least time of a request on a device: FLOPs and bytes moved per pass, and
    whether each phase is bound by compute or by memory."""
    from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config, shipped_configs
    from tradeoff.meters.calibrate import cpu_device
    from tradeoff.meters.hardware import DATASHEET, device_peaks
    from tradeoff.meters.roofline import request_cost

    if model in shipped_configs() or model.endswith(".json") or Path(model).is_dir():
        shape = shape_from_hf_config(load_hf_config(model), dtype)
    else:
        shape = _engine_shape(model)
    if shape.weight_bytes is None:
        raise UserError(f"model '{model}': its weight bytes are unknown, so no roofline")
    name = cpu_device() if device.lower() == "cpu" else device
    peaks, why = device_peaks(name)
    if peaks is None:
        gpus = ", ".join(sorted({needle for needle, *_ in DATASHEET}))
        raise UserError(f"{why}; or name a GPU: {gpus}")
    cost = request_cost(shape, input_tokens, output_tokens, batch)
    prefill_s = cost.prefill.roofline_s(peaks)
    decode_s = sum(p.roofline_s(peaks) for p in cost.decode)
    steps = max(output_tokens - 1, 0)

    def bound(flops: float, moved: float) -> str:
        return "compute" if flops / peaks.flops_per_s >= moved / peaks.bytes_per_s else "memory"

    decode_flops = sum(p.flops for p in cost.decode)
    decode_bytes = sum(p.bytes for p in cost.decode)
    table = Table(
        title=escape(
            f"{model} ({shape.n_params / 1e9:.2f} B parameters, {shape.weight_bytes / 1e9:.2f} GB "
            f"of weights) on {peaks.device} ({peaks.source}), batch {batch}"
        ),
        title_justify="left",
    )
    for column in ["phase", "TFLOPs", "GB moved", "roofline time", "bound", "tokens/s"]:
        table.add_column(column, justify="left" if column == "phase" else "right")
    table.add_row(
        f"prefill ({input_tokens} tokens)",
        f"{cost.prefill.flops / 1e12:.3f}",
        f"{cost.prefill.bytes / 1e9:.2f}",
        f"{prefill_s * 1e3:.2f} ms",
        bound(cost.prefill.flops, cost.prefill.bytes),
        f"{batch * input_tokens / prefill_s:,.0f}",
    )
    if steps:
        table.add_row(
            f"decode ({steps} steps)",
            f"{decode_flops / 1e12:.3f}",
            f"{decode_bytes / 1e9:.2f}",
            f"{decode_s * 1e3:.1f} ms ({decode_s / steps * 1e3:.2f} ms/step)",
            bound(decode_flops / steps, decode_bytes / steps),
            f"{batch * steps / decode_s:,.1f}",
        )
    console.print(table)
    console.print(
        "analytic: FLOPs as `tradeoff.meters.flops`, bytes = weights once per pass + KV cache "
        "read and written; time per pass = max(FLOPs / peak, bytes / peak bandwidth)"
    )


@app.command()
def serve(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Run directory for the served requests' records "
            "(created, or a previous serve's directory to append to).",
        ),
    ],
    policy: Annotated[
        Path | None, typer.Option(help="Serve this fitted policy (from `policy fit`).")
    ] = None,
    spec_file: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="Serve configurations of this spec (default: the demo's, on the bundled models).",
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            "-c",
            help="A configuration of the spec to serve, by name "
            "(repeatable; default: all of them).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The model name clients use for --policy (default: the file's stem)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TRADEOFF_API_KEY",
            show_envvar=True,
            help="Clients must send 'Authorization: Bearer KEY'.",
        ),
    ] = None,
    upstream_api_key: Annotated[
        str | None, typer.Option(help="API key for openai: upstreams (default $OPENAI_API_KEY).")
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, help="Requests in flight at once; beyond it, 429.")
    ] = 64,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body; beyond it, 413.")
    ] = 1 << 20,
    max_tokens_limit: Annotated[
        int, typer.Option(min=1, help="Largest max_tokens a request may ask for; beyond it, 422.")
    ] = 4096,
) -> None:
    """Serve a configuration or a policy behind an OpenAI-compatible endpoint.

    Endpoints: POST /v1/chat/completions and /v1/completions (streamed or not), GET /v1/models,
    /health, /metrics (Prometheus) and /openapi.json. The request's `model` names what runs: a
    configuration of the spec, or the policy. Every served request is stored as a record in
    --out, so `tradeoff report` and `tradeoff frontier` work on live traffic. Ctrl-C or SIGTERM
    finish the requests in flight, then stop.
    """
    import logging
    import os

    from tradeoff.config import load_spec
    from tradeoff.demo import demo_spec
    from tradeoff.serve import Limits, ServeOptions, served_configs
    from tradeoff.serve import serve as run_server

    if policy is not None and (spec_file is not None or config):
        raise UserError("give either --policy or --spec/--config, not both")
    if name is not None and policy is None:
        raise UserError("--name names a --policy; configurations are served under their names")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a port number (0 to 65535)")
    spec = None
    if policy is None:
        spec = load_spec(spec_file) if spec_file is not None else demo_spec()
    served = served_configs(spec, config or [], policy, name)
    source: dict[str, Any] = (
        {"policy": str(policy.resolve())}
        if policy is not None
        else {"spec": str(spec_file.resolve()) if spec_file else "demo"}
    )
    logging.basicConfig(format="tradeoff serve: %(levelname)s %(message)s", stream=sys.stderr)
    options = ServeOptions(
        host=host,
        port=port,
        api_key=api_key,
        upstream_api_key=upstream_api_key or os.environ.get("OPENAI_API_KEY"),
        limits=Limits(max_concurrency, max_body_bytes, max_tokens_limit),
    )
    run_server(served, spec, out, source=source, options=options)


import_app = typer.Typer(
    help="Bring outcomes recorded elsewhere into a run directory (no model run).",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")


@import_app.command("outcomes")
def import_outcomes_cmd(
    file: Annotated[Path, typer.Argument(help="A .csv file, or .jsonl with one object per line.")],
    prompt_col: Annotated[str, typer.Option("--prompt-col", help="Column holding the prompt.")],
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="NAME=SCORE_COL or NAME=SCORE_COL,cost=PRICE (per query). Repeatable.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    cost_unit: Annotated[
        str, typer.Option("--cost-unit", help="Unit of the cost= prices (USD fills cost_usd).")
    ] = "USD",
    id_col: Annotated[
        str | None, typer.Option("--id-col", help="Column holding row ids (default: row number).")
    ] = None,
    task: Annotated[str, typer.Option("--task", help="Task name for the rows.")] = "imported",
) -> None:
    """Per-model outcomes (one row per prompt, one score column per model) as a run directory:
    one configuration per model, one record per row and model."""
    from tradeoff.importer import import_outcomes, parse_model_option

    models = [parse_model_option(m) for m in model]
    result = import_outcomes(
        file,
        prompt_col=prompt_col,
        models=models,
        out=out,
        cost_unit=cost_unit,
        id_col=id_col,
        task=task,
    )
    console.print(
        f"imported {result.n_rows} rows x {len(models)} models = {result.n_records} records "
        f"into {result.directory}",
        highlight=False,
        soft_wrap=True,
    )


policy_app = typer.Typer(
    help="Per-query policies: fit a router on a run's records, evaluate it as RouteLLM does.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


def _policy_table(directory: Path, configs: str, cost: str) -> tuple[Any, list[dict[str, Any]]]:
    from tradeoff.policy.fit import outcome_table
    from tradeoff.store import Store

    names = [c.strip() for c in configs.split(",") if c.strip()]
    store = Store.open(directory)
    try:
        table = outcome_table(store.records(), store.items(), names, cost)
        specs = {c["name"]: c["spec"] for c in store.configs()}
    finally:
        store.close()
    return table, [specs.get(n, {}) for n in names]


@policy_app.command("fit")
def policy_fit(
    directory: Annotated[Path, typer.Argument(help="A run directory with records.")],
    configs: Annotated[str, typer.Option(help="Configurations to choose between: A,B[,C...]")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Policy file to write (JSON).")],
    target_accuracy: Annotated[
        float | None, typer.Option(help="Cheapest routing reaching this accuracy.")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="Most accurate routing within this mean cost per query.")
    ] = None,
    strong_fraction: Annotated[
        float | None, typer.Option(help="Share of queries for the most accurate configuration.")
    ] = None,
    cost: Annotated[
        str, typer.Option(help="auto, energy, latency, tokens, flops, dollars or given (imported).")
    ] = "auto",
) -> None:
    """Learn which configuration to use per query (from text features that need no network),
    calibrated on out-of-fold predictions to one target."""
    from tradeoff.policy.fit import fit_policy

    targets = {
        k: v
        for k, v in {
            "accuracy": target_accuracy,
            "budget": budget,
            "strong_fraction": strong_fraction,
        }.items()
        if v is not None
    }
    if len(targets) != 1:
        raise UserError("give exactly one of --target-accuracy, --budget, --strong-fraction")
    if strong_fraction is not None and not 0.0 <= strong_fraction <= 1.0:
        raise UserError("--strong-fraction is a share: give a number in [0, 1]")
    table, specs = _policy_table(directory, configs, cost)
    policy = fit_policy(table, targets, specs)
    policy.save(out)
    cal = policy.calibration
    console.print(
        f"wrote {out}: {len(table.configs)} configurations, {len(table.keys)} items, cost "
        f"{table.cost_axis}; calibrated (out of fold): accuracy {cal['accuracy']:.3f}, mean cost "
        f"{cal['cost']:.4g}, {cal['strong_fraction']:.0%} to {table.configs[policy.strong]}",
        soft_wrap=True,
        highlight=False,
    )


@policy_app.command("eval")
def policy_eval(
    directory: Annotated[Path, typer.Argument(help="A run directory with records.")],
    policy: Annotated[Path | None, typer.Option(help="Evaluate this policy file.")] = None,
    cv: Annotated[
        int | None, typer.Option(help="Or fit and evaluate with K-fold cross-validation.")
    ] = None,
    configs: Annotated[
        str | None, typer.Option(help="A,B[,C...] (with --cv; a policy names its own).")
    ] = None,
    cost: Annotated[str, typer.Option(help="Cost axis, as for policy fit.")] = "auto",
    format: Annotated[ListFormat, typer.Option("--format", "-f")] = ListFormat.table,
    plot: Annotated[
        Path | None, typer.Option("--plot", "-p", help="Also draw the curves to a .png or .html.")
    ] = None,
) -> None:
    """Router curves and metrics (AUC, APGR, CPT(50%), CPT(80%), cost saved at 95% of the
    strongest configuration's accuracy) beside the oracle and the random router."""
    from dataclasses import asdict

    from tradeoff.policy.evaluate import evaluate_cv, evaluate_policy
    from tradeoff.policy.fit import Policy

    if (policy is None) == (cv is None):
        raise UserError("give either --policy FILE or --cv K")
    if plot is not None and plot.suffix.lower() not in (".png", ".html"):
        raise UserError(f"--plot {plot}: give a file ending in .png or .html")
    if policy is not None:
        fitted = Policy.load(policy)
        table, _ = _policy_table(directory, ",".join(fitted.configs), fitted.cost_axis)
        result = evaluate_policy(table, fitted, str(policy))
    else:
        if configs is None:
            raise UserError("--cv needs --configs A,B[,C...]")
        if cv is None or cv < 2:
            raise UserError("--cv K needs K >= 2")
        table, _ = _policy_table(directory, configs, cost)
        result = evaluate_cv(table, cv)
    if plot is not None:
        from tradeoff.report.router_plot import plot_router

        try:
            plot_router(result, plot)
        except OSError as exc:
            raise UserError(f"cannot write {plot}: {exc.strerror}") from None
        err_console.print(f"wrote {plot}", highlight=False, soft_wrap=True)
    if format is ListFormat.json:
        data = asdict(result)
        for router in data["routers"]:
            curve = router.pop("curve")
            router["curve"] = {
                k: [float(v) for v in curve[k]] for k in ("strong_fraction", "accuracy", "cost")
            }
        print(json.dumps(data, indent=2, allow_nan=True))
        return
    console.print(
        f"{result.items} items, {result.source}; weak {result.weak}: accuracy "
        f"{result.acc_weak:.3f}, cost {result.cost_weak:.4g}; strong {result.strong}: accuracy "
        f"{result.acc_strong:.3f}, cost {result.cost_strong:.4g} ({result.cost_axis} per query)",
        soft_wrap=True,
        highlight=False,
    )
    table_out = Table(
        "router",
        "AUC",
        "APGR",
        "CPT(50%)\n% strong",
        "CPT(80%)\n% strong",
        "cost saved at 95%\nof strong accuracy",
    )

    def pct(v: float) -> str:
        return "n/a" if v != v else f"{100 * v:.1f}%"

    for r in result.routers:
        table_out.add_row(
            r.label,
            f"{r.auc:.3f}",
            f"{r.apgr:.3f}",
            pct(r.cpt50),
            pct(r.cpt80),
            pct(r.cost_saved_95),
        )
    console.print(table_out)
    import numpy as np

    grid = np.linspace(0.0, 1.0, 11)
    curve_table = Table("accuracy at % strong calls", *[f"{100 * g:.0f}%" for g in grid])
    for r in result.routers:
        acc = np.interp(grid, r.curve.strong_fraction, r.curve.accuracy)
        curve_table.add_row(r.label, *[f"{a:.3f}" for a in acc])
    console.print(curve_table)
    console.print(
        "APGR: share of the weak-to-strong accuracy gap recovered, averaged over the curve "
        "(random 0.5); CPT(x%): strong calls needed to recover x% of the gap; n/a: not reached.",
        style="dim",
    )


def main() -> None:
    try:
        app(standalone_mode=True)
    except UserError as exc:
        err_console.print(f"error: {exc}", style="red", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
