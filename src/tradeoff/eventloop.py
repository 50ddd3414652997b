"""The event loop tradeoff runs on: uvloop where it is installed (about half the CPU per request
of asyncio's own loop for a server or a client of many connections), else asyncio's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# A cancellable request (served) checks this often, while it waits, whether its client is gone.
CANCEL_POLL_S = 0.05


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop, as `asyncio.run` does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def unless_cancelled(waited: asyncio.Future[Any], cancel: threading.Event) -> bool:
    """Wait for `waited` until it is done, or `cancel` (a `Request.cancel`, set from any thread)
    is set first; whether it is done. Not done, it is left to the caller to let go."""
    while not cancel.is_set():
        done, _ = await asyncio.wait({waited}, timeout=CANCEL_POLL_S)
        if done:
            return True
    return waited.done()
