"""The event loop tradeoff runs on: uvloop where it is installed (about half the CPU per request
of asyncio's own loop for a server or a client of many connections), else asyncio's."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from tradeoff.errors import UserError

T = TypeVar("T")

# A cancellable request (served) checks this often, while it waits, whether its client is gone.
CANCEL_POLL_S = 0.05


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop, as `asyncio.run` does; a library call from
    a running loop (a notebook's, an async application's) is refused in one line saying how."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # none: the usual case
        pass
    else:
        main.close()  # never awaited, and not to be warned of
        raise UserError(
            "tradeoff runs its own event loop, and this thread runs one already (a notebook's, "
            "an async application's): call it in a thread, e.g. "
            "await asyncio.to_thread(tradeoff.runner.profile, ...)"
        )
    with _signal_handlers_kept():
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        return uvloop.run(main)


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """SIGINT's and SIGTERM's handlers as the caller had them once the loop is closed. A run
    installs its own while it runs (`runner.Stop`) and puts back the ones it found, which were
    the loop's own; a KeyboardInterrupt raised inside a run (an `on_progress` callback's, a
    second Ctrl-C's) left the loop before the run's cleanup, which then put back the closed
    loop's handler for good: every later `asyncio.run` of the caller found SIGINT taken and
    left Ctrl-C to raise wherever it struck."""
    if threading.current_thread() is not threading.main_thread():  # handlers are the main's
        yield
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:  # (None: installed other than from Python; left as it is)
                signal.signal(sig, handler)


@contextlib.contextmanager
def steady(switch_s: float | None = None) -> Iterator[None]:
    """While the block runs: what was loaded so far (models, libraries), which never becomes
    garbage, frozen out of the collector's full scans (a cost per request at a high rate), and
    the interpreter's switch interval `switch_s` where given. Both are put back as they were: a
    caller that froze objects of its own (to share them across a fork) keeps them frozen, and
    a library call leaves the interval it found. (Frozen objects are never freed at exit:
    nanobind, through torch, reports each of its own as leaked, some 35 lines.)"""
    froze = gc.get_freeze_count() == 0
    interval = sys.getswitchinterval()
    gc.collect()
    gc.freeze()
    if switch_s is not None:
        sys.setswitchinterval(switch_s)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if froze:
            gc.unfreeze()


async def unless_cancelled(waited: asyncio.Future[Any], cancel: threading.Event) -> bool:
    """Wait for `waited` until it is done, or `cancel` (a `Request.cancel`, set from any thread)
    is set first; whether it is done. Not done, it is left to the caller to let go."""
    while not cancel.is_set():
        done, _ = await asyncio.wait({waited}, timeout=CANCEL_POLL_S)
        if done:
            return True
    return waited.done()
