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
        _open_files_up_to_the_hard_limit()
        command_line()
    finally:
        _forget_caught_interrupts()


def _open_files_up_to_the_hard_limit() -> None:
    """As many open files as the system lets this process have: each request in flight to a
    server holds a connection, and the usual soft limit of 1,024 failed a load at concurrent:1100
    ("Too many open files"), then its store. (The command's own process: a library call leaves
    its caller's limits alone, its connections capped under them by the openai engine.)"""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):  # not Unix, or a hard limit the system refuses
        pass


def _forget_caught_interrupts() -> None:
    """Under `python -m`, CPython ends the process by SIGINT, whatever its exit code, once a
    KeyboardInterrupt has left code run from a string (`exec` of source text: dataclasses make
    their methods so while a module loads), even one caught since. A Ctrl-C caught here read as
    a signal death (-2), not 130, or 2 after an error, about one time in six early in a run. Each
    run of source text clears that mark at its start; so does this one, after the command's own
    handling has decided the exit code."""
    exec("")  # noqa: S102
