"""The `tradeoff` command line: parses, calls the library, prints. Bad input exits with code 2.

Each command lives in the module named for what it does; this one lists them, in the order
`tradeoff --help` shows them.
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from typer import rich_utils

from tradeoff.cli import compare, hardware, imports, listing, load, policy, report, run, serve
from tradeoff.cli.output import OutputFailed, err_console, to_stdout
from tradeoff.errors import RunFailed, UserError

# click's exceptions: typer re-exports only some, and from 0.2x on it carries its own copy of click
clicks = sys.modules[typer.BadParameter.__module__]
NO_ARGS = getattr(clicks, "NoArgsIsHelpError", ())  # click 8.2 and later; before, help and exit 0
# What a path given can raise wherever it is first looked at (pathlib's exists() and is_dir()
# pass over only a missing file): the name itself is unusable. A failure of the work (a full
# disk mid-run) is not one of these, and is said where it happens.
PATH_ERRORS = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.EPERM}


def _flag_type(original: Callable[..., Any]) -> Callable[..., Any]:
    """typer's help shows an on/off flag's type, `<bool>`, as if it took a value (`--wide true`
    is refused): a flag shows none. A repeatable option shows the type of one value, not
    `<list[str]>`, which takes a narrow terminal's width from the help beside it."""

    def display_type_rich(self: Any, ctx: Any) -> Any:
        if getattr(self, "is_flag", False):
            return None
        shown = original(self, ctx)
        return re.sub(r"^<list\[(.*)\]>$", r"<\1>", shown) if isinstance(shown, str) else shown

    return display_type_rich


for _kind in ("TyperOption", "TyperArgument"):
    _param = getattr(typer.core, _kind, None)
    if _param is not None and hasattr(_param, "display_type_rich"):  # typer 0.2x; older: none
        _param.display_type_rich = _flag_type(_param.display_type_rich)


def _help_console(original: Callable[..., Any]) -> Callable[..., Any]:
    """typer prints `--help` through a console of its own: a standard output it cannot write
    (`--help > /dev/full`) ended in a traceback. Its writes fail as every command's do."""

    def console(stderr: bool = False) -> Any:
        made = original(stderr=stderr)
        if not stderr:
            printing = made.print

            def print_(*objects: Any, **kwargs: Any) -> None:
                with to_stdout():
                    printing(*objects, **kwargs)

            made.print = print_
        return made

    return console


rich_utils._get_rich_console = _help_console(rich_utils._get_rich_console)

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
    """Run the command line, every way it can end on one line: bad input (typer's usage errors
    too) exits with 2, a run that failed on good input with 1, a Ctrl-C with 130. Typer runs
    outside its standalone mode so that its usage errors reach here, not its boxed rendering of
    them."""
    try:
        code = app(standalone_mode=False)
    except NO_ARGS as exc:  # `tradeoff` alone: its help
        rich_utils.rich_format_error(exc)
        sys.exit(exc.exit_code)
    except clicks.UsageError as exc:
        fail(usage_error(exc), 2)
    except clicks.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except typer.Abort:  # end of input at a prompt
        fail("aborted", 1)
    except UserError as exc:
        fail(str(exc), 2)
    except RunFailed as exc:
        fail(str(exc), 1)
    except OutputFailed as exc:
        # The standard output could not be written (a full disk behind `> file`): as `--output`
        # says it (`output.writing`). Its buffer goes nowhere, not into a second failure at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        fail(str(exc), 2)
    except OSError as exc:
        if exc.errno not in PATH_ERRORS or exc.filename is None:
            raise
        fail(f"cannot use {exc.filename}: {exc.strerror}; give another path", 2)
    except KeyboardInterrupt:  # before a command's own handler: while its modules load
        err_console.print("interrupted before the command began; nothing was written")
        sys.exit(130)
    if code == 130:  # typer's own end of a Ctrl-C, silent (commands that say why sys.exit)
        err_console.print("interrupted")
    sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int) -> NoReturn:
    err_console.print(
        f"error: {message}", style="red", highlight=False, soft_wrap=True, markup=False
    )
    sys.exit(code)


def usage_error(exc: Any) -> str:
    """A usage error on one line: the command, the problem, and where the valid choices are."""
    message = " ".join(exc.format_message().replace("Value error, ", "").split()).rstrip(".")
    ctx = exc.ctx
    if ctx is None:
        return message
    if message.startswith("No such command"):
        message += f"; commands: {', '.join(ctx.command.list_commands(ctx))}"
    return f"{ctx.command_path}: {message[0].lower()}{message[1:]} (see {ctx.command_path} --help)"
