"""How a stored run goes on: the command that continues it, told by what its stored spec holds
(imported outcomes and served traffic have nothing to continue)."""

from __future__ import annotations

import shlex
from typing import Any

IMPORTED, SERVED = "imported outcomes", "served traffic"


def not_profiled(spec: Any) -> str | None:
    """What a run holds that no command continues: imported outcomes or served traffic; None
    for a run of queries (profile, demo, load)."""
    if isinstance(spec, dict) and "imported_from" in spec:
        return IMPORTED
    if isinstance(spec, dict) and "serve" in spec:
        return SERVED
    return None


# How a run that did not finish ended, by its status; "running" (or one not known here): it
# is being written, or its process died without a word.
UNFINISHED = {
    "stopped": "stopped before it finished",
    "errors": "stopped at its error limit (--max-errors / --max-error-rate)",
    "failed": "stopped when a process of it failed",
}


def unfinished(run: dict[str, Any]) -> str | None:
    """How a stored run of queries that did not finish stands ('stopped before it finished',
    'is running (still being written, or its process died)'); None where it finished, or holds
    what no command continues."""
    if run["status"] == "finished" or not_profiled(run["spec"]):
        return None
    return UNFINISHED.get(
        run["status"], f"is {run['status']} (still being written, or its process died)"
    )


def continued_by(spec: Any) -> str | None:
    """The command whose `--resume` continues the run: `load`, `demo` (its tables and page
    too) or `profile`; None where nothing is to continue (`not_profiled`)."""
    from tradeoff.demo import is_demo

    if not_profiled(spec):
        return None
    if isinstance(spec, dict) and "load" in spec:
        return "load"
    return "demo" if is_demo(spec) else "profile"


def command_line(*words: object) -> str:
    """`tradeoff WORDS` as a shell reads it: a word quoted where it must be (a run directory
    with a space), so that a command we suggest runs as printed when pasted."""
    return shlex.join(["tradeoff", *map(str, words)])


def resume_command(command: str, directory: object) -> str:
    """'tradeoff CMD --resume DIR', DIR quoted for the shell."""
    return command_line(command, "--resume", directory)


def how_to_continue(spec: Any, directory: object) -> str:
    """'; continue with: tradeoff CMD --resume DIR', or '' where nothing is to continue."""
    command = continued_by(spec)
    return "" if command is None else f"; continue with: {resume_command(command, directory)}"
