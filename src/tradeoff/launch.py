"""The `tradeoff` command's entry point. It imports nothing but the standard library before the
command line's modules, so that a Ctrl-C while they load (about a second) ends the command
with one line and exit code 130, as it does later, not with a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from tradeoff.cli import main as command_line
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before the command began; nothing was written\n")
        sys.exit(130)
    command_line()
