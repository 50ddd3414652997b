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
