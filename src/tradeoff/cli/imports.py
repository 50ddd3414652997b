"""`tradeoff import outcomes`: per-model outcomes recorded elsewhere become a run directory."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from tradeoff.cli.output import console, err_console

# An import says how far it got once it has taken this long, then as often.
QUIET_S = 5.0


def outcomes(
    file: Annotated[Path, typer.Argument(help="A .csv file, or .jsonl with one object per line.")],
    prompt_col: Annotated[str, typer.Option("--prompt-col", help="Column holding the prompt.")],
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="NAME=SCORE_COL or NAME=SCORE_COL,cost=PRICE (per query); NAME, the "
            "configuration's, holds no comma (--configs separates names). Repeatable.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    cost_unit: Annotated[
        str,
        typer.Option(
            "--cost-unit",
            help="Unit of the cost= prices, on one line (USD, in any case, or $ fills cost_usd).",
        ),
    ] = "USD",
    id_col: Annotated[
        str | None, typer.Option("--id-col", help="Column holding row ids (default: row number).")
    ] = None,
    task: Annotated[
        str,
        typer.Option("--task", help="Task name for the rows (on one line: no control character)."),
    ] = "imported",
) -> None:
    """Outcomes recorded elsewhere (a score column per model) as a run directory.

    One row per prompt and one score column per model become one configuration per model and
    one record per row and model.
    """
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
        on_written=_progress(out),
    )
    console.print(
        f"imported {_counted(result.n_rows, 'row')} x {_counted(len(models), 'model')} = "
        f"{_counted(result.n_records, 'record')} into {result.directory}",
        highlight=False,
        soft_wrap=True,
    )


def _progress(out: Path) -> Callable[[int, int], None]:
    """A line every QUIET_S seconds from the first QUIET_S on: 300,000 rows of two models took
    47 s here with nothing shown."""
    start = time.monotonic()
    shown = start

    def written(done: int, total: int) -> None:
        nonlocal shown
        now = time.monotonic()
        if now - shown >= QUIET_S:
            shown = now
            err_console.print(
                f"importing into {out}: {done:,} of {total:,} records written "
                f"({now - start:.0f} s)",
                highlight=False,
                soft_wrap=True,
            )

    return written


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
