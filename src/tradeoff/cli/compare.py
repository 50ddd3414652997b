"""`tradeoff compare`: runs of the same configurations side by side, each against the first (the
baseline), from `analysis.compare`: accuracy on the items both answered, paired, the ratios of
latency, energy and tokens, and what differs between the runs' hosts and specs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tradeoff.cli.output import (
    ListFormat,
    check_html,
    console,
    err_console,
    file_option,
    write_json,
    writing,
)

if TYPE_CHECKING:
    from tradeoff.analysis.compare import Comparison


def print_comparison(comparison: Comparison, label: str = "B") -> None:
    """One comparison's tables and their notes, B named `label` (`compare_table.labels`)."""
    from tradeoff.report.compare_table import config_table, differences_table, same_note

    table, notes = config_table(comparison, label)
    console.print(table, crop=False)
    for note in notes:
        console.print(note, style="dim", markup=False, highlight=False)
    console.print()
    differences = differences_table(comparison.differences)
    if differences is None:
        console.print(same_note(comparison), style="dim", markup=False, highlight=False)
    else:
        console.print(differences, crop=False)


def compare(
    directories: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run directories: the first is the baseline (A), each other (B) is compared "
            "with it.",
            metavar="DIR_A DIR_B [DIR...]",
            show_default=False,
        ),
    ] = None,
    html: Annotated[
        Path | None,
        file_option(
            "--html",
            help="Also write the comparison as one self-contained HTML page (opens offline) to "
            "this file.",
        ),
    ] = None,
    format: Annotated[
        ListFormat, typer.Option("--format", "-f", help="Output format.")
    ] = ListFormat.table,
) -> None:
    """Compare runs of the same configurations: two machines, two versions of a server,
    yesterday's run and today's. The first directory is the baseline A; each other run B is
    compared with it.

    Per configuration both runs have (matched by name), over the items both answered (a data
    file's task by its file name, wherever each run read it): accuracy in A and in B, the
    paired difference B − A with its 95% t interval, B/A of mean and p50 end-to-end latency,
    mean TTFT, energy, output tokens and cost per query, and the failed queries of each. Then what
    differs between the runs' hosts (machine, CPU, GPUs, library versions) and specs.
    --format json gives every number, each run's values beside their ratio; --html the same
    tables as one page, with the differences and ratios charted. A run still being written is
    compared as stored so far.
    """
    from tradeoff.analysis.compare import check_directories, compare_runs
    from tradeoff.cli.report import print_unfinished
    from tradeoff.report.compare_html import write_comparison
    from tradeoff.report.compare_table import labels

    given = directories or []
    check_directories(given)
    if html is not None:
        check_html("--html", html)
    comparisons, left_out = compare_runs(given)
    if html is not None:  # first: a reader that stops reading the tables early loses no page
        with writing(html):
            write_comparison(comparisons, html, left_out)
    for line in left_out:
        err_console.print(line, style="yellow", highlight=False, soft_wrap=True, markup=False)
    for directory in given:
        print_unfinished(directory)
    if format is ListFormat.json:
        write_json([c.to_dict() for c in comparisons])
    else:
        for i, (comparison, label) in enumerate(zip(comparisons, labels(comparisons), strict=True)):
            if i:
                console.print()
            print_comparison(comparison, label)
    if html is not None:
        err_console.print(f"wrote {html}", highlight=False, soft_wrap=True)
