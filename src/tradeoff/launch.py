"""The `tradeoff` command's entry point. It imports nothing but the standard library before the
command line's modules, so that a Ctrl-C while they load (about a second) ends the command
with one line and exit code 130, as it does later, not with a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        try:
            from tradeoff.cli import main as command_line
        except KeyboardInterrupt:
            sys.stderr.write("interrupted before the command began; nothing was written\n")
            sys.exit(130)
        from tradeoff.abort import end_process

        end_process()  # a second Ctrl-C ends the command; a library call raises in its caller
        command_line()
    finally:
        _forget_caught_interrupts()


def _forget_caught_interrupts() -> None:
    """Under `python -m`, CPython ends the process by SIGINT, whatever its exit code, once a
    KeyboardInterrupt has left code run from a string (`exec` of source text: dataclasses make
    their methods so while a module loads), even one caught since. A Ctrl-C caught here read as
    a signal death (-2), not 130, or 2 after an error, about one time in six early in a run. Each
    run of source text clears that mark at its start; so does this one, after the command's own
    handling has decided the exit code."""
    exec("")  # noqa: S102
