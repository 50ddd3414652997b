"""Writing served requests to the run store without holding up the answers.

Records are written on one background thread after the answer has gone out. A write that fails
(disk full, database locked or damaged) is logged and counted in /metrics; the server keeps
serving, and the client has its answer either way.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor

from tradeoff.serve.metrics import ServerMetrics
from tradeoff.store import Store
from tradeoff.types import Item, Record

log = logging.getLogger("tradeoff.serve")


class RecordWriter:
    def __init__(self, store: Store, metrics: ServerMetrics):
        self.store = store
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tradeoff-store")
        self._pending: set[asyncio.Future[None]] = set()

    def submit(self, item: Item, record: Record) -> None:
        """Queue `record` (with its request as `item`) for writing; returns at once."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self.store.write_record, record, item)
        self._pending.add(future)
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None] | Future[None]) -> None:
        self._pending.discard(future)  # type: ignore[arg-type]
        exc = future.exception()
        if exc is None:
            self.metrics.stored.inc()
        else:
            self.metrics.store_errors.inc()
            log.error("could not store a served request's record: %s: %s",
                      type(exc).__name__, exc)  # fmt: skip

    async def drain(self) -> None:
        """Wait for every queued write (at shutdown)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
