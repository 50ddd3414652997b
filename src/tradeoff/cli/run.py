"""`tradeoff demo` and `tradeoff profile`: run configurations on tasks, with a progress bar, and
print the run's summary."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
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
    processes_value,
)
from tradeoff.cli.output import (
    check_html,
    console,
    err_console,
    first_errors,
    interrupted,
    progress_bar,
    writing,
)
from tradeoff.cli.report import frontier_rows, print_frontier, print_summary
from tradeoff.errors import UserError
from tradeoff.resumes import command_line, resume_command

if TYPE_CHECKING:
    from tradeoff.runner import RunResult


def run_profile(
    spec: Any,
    out: Path | None,
    resume: Path | None,
    api_key: str | None,
    rescore_changed: bool = False,
    ray: str | None = None,
    command: str = "profile",
) -> RunResult:
    """`tradeoff.runner.profile` with a progress bar (`spec` is None with `resume`: the run's
    stored spec is used); exit code 130 when stopped by Ctrl-C, naming `tradeoff COMMAND
    --resume DIR`."""
    from tradeoff.runner import profile

    # The bar starts at the first progress report, once models are loaded: a bad reference
    # fails before anything is drawn.
    bar = progress_bar()
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
            rescore_changed=rescore_changed,
            api_key=api_key,
            on_progress=on_progress,
            notify=lambda msg: err_console.print(msg, style="yellow"),
            ray=ray,
            command=command,
        )
    except KeyboardInterrupt:  # before the run's own Ctrl-C handler: loading, opening the store
        interrupted(command, resume or out)
    finally:
        if task_id is not None:
            bar.stop()
    if result.status == "stopped":
        err_console.print(
            f"stopped after {result.done} new records ({result.done + result.skipped} stored in "
            f"all); continue with: {resume_command(command, result.directory)}",
            soft_wrap=True,
        )
        sys.exit(130)  # said why: not typer's silent 130
    return result


def demo(
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/demo-TIME).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Items per built-in task (default 20).")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Continue a stopped demo (its stored records are kept), then print the "
            "tables and write its page.",
        ),
    ] = None,
) -> None:
    """Profile both bundled models on the built-in tasks (no network, no GPU); print the table."""
    from tradeoff.demo import demo_spec

    t0 = time.perf_counter()
    if resume is not None:
        if out is not None or limit is not None:
            raise UserError("--resume continues the demo as it began: give no --out or --limit")
        _check_demo(resume)
        result = run_profile(None, None, resume, None, command="demo")
    else:
        out = out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
        result = run_profile(
            demo_spec(20 if limit is None else limit), out, None, None, command="demo"
        )
    then = f"; {resume_command('demo', result.directory)} prints its tables and writes its page"
    with _stored(result.directory, then):
        print_summary(result.directory)
        rows, label = frontier_rows(result.directory, "auto")
        print_frontier(rows, label)
        from tradeoff.report.html_report import write_report

        with writing(result.directory / "report.html"):
            page = write_report(result.directory, result.directory / "report.html")
    wall = time.perf_counter() - t0
    console.print(
        f"run directory: {result.directory}  ({result.done} records in {wall:.0f} s"
        f"{f', {result.skipped} stored before' if result.skipped else ''})\n"
        f"report: {page}  (the whole run on one page, opens offline; "
        f"{command_line('frontier', result.directory, '--plot', 'frontier.png')} for a PNG; "
        f"{command_line('report', result.directory, '--records')} for every query)",
        soft_wrap=True,
    )


def _check_demo(directory: Path) -> None:
    """`demo --resume` continues a demo, whose page it writes where the demo's goes: another
    profile or load run is refused with its own command, and a page path that cannot be
    written before any work is done."""
    from tradeoff.resumes import continued_by, how_to_continue
    from tradeoff.store import STORE_FILE, Store

    if not (directory / STORE_FILE).is_file():
        return  # not a run: `run_profile` says what it is
    store = Store.open(directory)
    try:
        spec = store.run()["spec"]
    finally:
        store.close()
    command = continued_by(spec)
    if command not in ("demo", None):  # None: imported or served, which `run_profile` refuses
        raise UserError(
            f"{directory} holds a run of `tradeoff {command}`, not a demo"
            f"{how_to_continue(spec, directory)}"
        )
    check_html("--resume", directory / "report.html")


def profile(
    spec_file: SpecFile = None,
    model: Models = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            "-t",
            help="Task: a built-in name, jsonl:PATH, hf:NAME (with :CONFIG and :SPLIT) or "
            "synthetic:prompt=N,output=N (`tradeoff tasks` lists them). Repeatable.",
        ),
    ] = None,
    prompt_field: Annotated[
        str | None,
        typer.Option(help="Field holding the prompt, for the jsonl:/hf: tasks of --task."),
    ] = None,
    answer_field: Annotated[
        str | None,
        typer.Option(help="Field holding the reference answer, for the jsonl:/hf: tasks."),
    ] = None,
    id_field: Annotated[
        str | None, typer.Option(help="Field holding each item's id, for the jsonl:/hf: tasks.")
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="Scorer for the tasks of --task: numeric, choice, exact, contains or regex "
            "(default: chosen from the answers)."
        ),
    ] = None,
    pattern: Annotated[
        str | None, typer.Option(help="The regex scorer's pattern (one group: the answer).")
    ] = None,
    limit: Limit = None,
    samples: Annotated[int | None, typer.Option(help="Samples per item and configuration.")] = None,
    temperature: Temperature = None,
    max_tokens: MaxTokens = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling and generated tasks.")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="Requests in flight at once (in-process models answer one at a time)."),
    ] = None,
    processes: Processes = None,
    timeout: Timeout = None,
    out: Out = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run stored in this directory.")
    ] = None,
    rescore_changed: Annotated[
        bool,
        typer.Option(
            "--rescore-changed",
            help="With --resume: redo the stored items whose content changed since their "
            "records were written (without it, such a resume stops and names them); of one "
            "now past the spec's limit, never asked again, the records are deleted.",
        ),
    ] = False,
    api_key: ApiKey = None,
    ray: RayAddress = None,
) -> None:
    """Profile configurations on tasks; every (configuration, item, sample) becomes a stored record.

    Ctrl-C stops after the requests in flight; --resume DIR continues a stopped or killed run.
    """
    from tradeoff.config import profile_spec

    spec = profile_spec(
        spec_file,
        model,
        task,
        out=out,
        resume=resume,
        task_fields={
            "prompt_field": prompt_field,
            "answer_field": answer_field,
            "id_field": id_field,
            "scorer": scorer,
            "pattern": pattern,
        },
        overrides={
            "limit": limit,
            "samples": samples,
            "concurrency": concurrency,
            "processes": processes_value(processes),
            "timeout_s": timeout,
        },
        sampling={"temperature": temperature, "max_tokens": max_tokens, "seed": seed},
    )
    if spec is None:
        result = run_profile(None, None, resume, api_key, rescore_changed, ray)
        with _stored(result.directory, f"; {command_line('report', result.directory)} shows it"):
            print_summary(result.directory)
        _failures(result)
        return
    if rescore_changed:
        raise UserError("--rescore-changed applies only with --resume DIR")
    result = run_profile(spec, out, None, api_key, ray=ray)
    with _stored(result.directory, f"; {command_line('report', result.directory)} shows it"):
        print_summary(result.directory)
    console.print(f"run directory: {result.directory}")
    _failures(result)


@contextlib.contextmanager
def _stored(directory: Path, then: str) -> Iterator[None]:
    """A Ctrl-C once the run is stored (while its tables print, its page is written): it says
    where the run is and `then` how to see it (it said "interrupted", or that nothing was
    written)."""
    try:
        yield
    except KeyboardInterrupt:
        err_console.print(f"interrupted; the run is stored in {directory}{then}", soft_wrap=True)
        sys.exit(130)


def _failures(result: RunResult) -> None:
    """Where requests failed, each configuration's count and first error (the table counts
    them; this says why); exit 1 when every request of the session failed."""
    if not result.errors:
        return
    for (config,), (failed, total, error) in first_errors(result.directory, ["config"]).items():
        err_console.print(
            f"{config}: {failed} of {total} requests failed; the first: {error}",
            style="yellow", soft_wrap=True, highlight=False, markup=False,
        )  # fmt: skip
    if result.errors == result.done:
        err_console.print("every request of this session failed (the first error of each is above)")
        raise typer.Exit(1)
