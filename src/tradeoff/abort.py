"""What a second Ctrl-C (or SIGTERM) does, the first having asked a run or a server to finish
what is in flight.

The command line ends its process at once (exit 130), and every process it started with it, as a
terminal's user expects of a second Ctrl-C. A library call may do neither: the process is its
caller's (a notebook's kernel, an application), and so are processes it did not start. There
the second signal raises KeyboardInterrupt in the caller; the run's own cleanup (its helper
processes, its models, its store, whose committed records stay resumable) runs as the
exception leaves it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

_ends_process = False


def end_process() -> None:
    """From now on an abort ends this process: the command line's entry point says so."""
    global _ends_process
    _ends_process = True


def abort() -> NoReturn:
    """Abort what runs: the process, on the command line; else KeyboardInterrupt in the caller."""
    if not _ends_process:
        raise KeyboardInterrupt
    _kill_descendants()
    os._exit(130)  # records written so far are committed; in-flight ones are lost


def _kill_descendants() -> None:
    """Kill every process this one started, and theirs: an abort skips the shutdown that stops
    them (a `--ray local` cluster's processes, which ignore the terminal's Ctrl-C, outlived an
    abort). Listed from Linux's /proc before any is killed, so none is missed by being reparented
    as its parent dies; elsewhere nothing is killed."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # after the command's name, in parentheses: state, then the parent's pid
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [os.getpid()]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so that what it interrupts is undone (a
    half-written import removed, a half-written file): Python's default ended the process at once,
    its cleanup not run."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread: the caller handles signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
