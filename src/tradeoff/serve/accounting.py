"""Writing served requests to the run store without holding up the answers.

Records are queued once the answer has gone out and written by one background thread in
batches: a batch every FLUSH_S seconds, one transaction each (one thread hand-off per batch, not
per request). A batch that fails is retried record by record, so one bad record costs only
itself. A write that fails (disk full, database locked or damaged) is logged and counted in
/metrics; the server keeps serving, and the client has its answer either way. A crash loses at
most the records of the last FLUSH_S seconds and of the requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tradeoff.serve.metrics import ServerMetrics
from tradeoff.store import Store
from tradeoff.types import Item, Record

log = logging.getLogger("tradeoff.serve")

FLUSH_S = 0.02
Prepared = tuple[list[Any], tuple[str, ...]]


class RecordWriter:
    def __init__(self, store: Store, metrics: ServerMetrics):
        self.store = store
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tradeoff-store")
        self._queued: list[tuple[str, Prepared]] = []
        self._flush: asyncio.TimerHandle | None = None
        self._writing: set[asyncio.Future[tuple[int, list[str]]]] = set()

    def submit(self, item: Item, record: Record) -> None:
        """Queue `record` (with its request as `item`) for the store; returns at once."""
        self._queued.append((record.item_id, self.store.prepare(record, item)))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._write_queued)

    def _write_queued(self) -> None:
        self._flush = None
        batch, self._queued = self._queued, []
        if not batch:
            return
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)
        self._writing.add(future)
        future.add_done_callback(self._written)

    def _write(self, batch: list[tuple[str, Prepared]]) -> tuple[int, list[str]]:
        """(records written, the errors of those that failed). Runs on the store's thread."""
        try:
            self.store.write_prepared([rows for _, rows in batch])
            return len(batch), []
        except Exception:
            pass
        written, errors = 0, []
        for request_id, rows in batch:
            try:
                self.store.write_prepared([rows])
                written += 1
            except Exception as exc:
                errors.append(f"{request_id}: {type(exc).__name__}: {exc}")
        return written, errors

    def _written(self, future: asyncio.Future[tuple[int, list[str]]]) -> None:
        self._writing.discard(future)
        written, errors = future.result()
        self.metrics.stored.inc(written)
        for error in errors:
            self.metrics.store_errors.inc()
            log.error("could not store a served request's record: %s", error)

    async def drain(self) -> None:
        """Write everything queued and wait for it (at shutdown)."""
        if self._flush is not None:
            self._flush.cancel()
        self._write_queued()
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
