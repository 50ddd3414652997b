"""The `tradeoff` command line: parses, calls the library, prints. Bad input exits with code 2.

Each command lives in the module named for what it does; this one lists them, in the order
`tradeoff --help` shows them.
"""

from __future__ import annotations

import sys

import typer

from tradeoff.cli import hardware, imports, listing, policy, report, run, serve
from tradeoff.cli.output import err_console
from tradeoff.errors import UserError

app = typer.Typer(
    help="Measure, optimize and serve LLM inference on the accuracy-cost frontier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(run.demo)
app.command()(run.profile)
app.command()(report.report)
app.command()(report.frontier)
app.command()(listing.models)
app.command()(listing.tasks)
app.command()(hardware.calibrate)
app.command()(hardware.roofline)
app.command()(serve.serve)

import_app = typer.Typer(
    help="Bring outcomes recorded elsewhere into a run directory (no model run).",
    no_args_is_help=True,
)
import_app.command()(imports.outcomes)
app.add_typer(import_app, name="import")

policy_app = typer.Typer(
    help="Per-query policies: fit a router on a run's records, evaluate it as RouteLLM does.",
    no_args_is_help=True,
)
policy_app.command()(policy.fit)
policy_app.command("eval")(policy.evaluate)
app.add_typer(policy_app, name="policy")


def main() -> None:
    try:
        app(standalone_mode=True)
    except UserError as exc:
        err_console.print(f"error: {exc}", style="red", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
