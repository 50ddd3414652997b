"""The `tradeoff` command line: parses, calls the library, prints. Bad input exits with code 2.

Each command lives in the module named for what it does; this one lists them, in the order
`tradeoff --help` shows them.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

import typer

from tradeoff.cli import compare, hardware, imports, listing, load, policy, report, run, serve
from tradeoff.cli.output import err_console
from tradeoff.errors import UserError

app = typer.Typer(
    help="Measure, optimize and serve LLM inference on the accuracy-cost frontier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _help(command: Callable[..., None]) -> str:
    """The command's docstring with each paragraph on one line: typer keeps single line breaks,
    which read as sentences cut off once the terminal wraps them again."""
    paragraphs = inspect.cleandoc(command.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _add(group: typer.Typer, command: Callable[..., None], name: str | None = None) -> None:
    group.command(name, help=_help(command))(command)


for command in (
    run.demo,
    run.profile,
    load.load,
    report.report,
    report.frontier,
    compare.compare,
    listing.models,
    listing.tasks,
    hardware.calibrate,
    hardware.roofline,
    serve.serve,
):
    _add(app, command)

import_app = typer.Typer(
    help="Bring outcomes recorded elsewhere into a run directory (no model run).",
    no_args_is_help=True,
)
_add(import_app, imports.outcomes)
app.add_typer(import_app, name="import")

policy_app = typer.Typer(
    help="Per-query policies: fit a router on a run's records, evaluate it as RouteLLM does.",
    no_args_is_help=True,
)
_add(policy_app, policy.fit)
_add(policy_app, policy.evaluate, "eval")
app.add_typer(policy_app, name="policy")


def main() -> None:
    try:
        app(standalone_mode=True)
    except UserError as exc:
        err_console.print(
            f"error: {exc}", style="red", highlight=False, soft_wrap=True, markup=False
        )
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit as exc:
        if interrupted(exc):
            err_console.print("interrupted")
        raise


def interrupted(exc: SystemExit) -> bool:
    """Whether typer ended a command on a Ctrl-C: it exits with 130 and prints nothing (its
    `Exit(130)` raised from the KeyboardInterrupt). A command that stops on Ctrl-C and says so
    itself exits with 130 from no KeyboardInterrupt."""
    ended = exc.__context__
    return exc.code == 130 and ended is not None and isinstance(ended.__cause__, KeyboardInterrupt)
