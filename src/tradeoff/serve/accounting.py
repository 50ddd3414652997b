"""Writing served requests to the run store without holding up the answers.

Records are queued once the answer has gone out and written by one background thread in
batches: a batch every FLUSH_S seconds, one transaction each (one thread hand-off per batch, not
per request). A batch that fails is retried record by record, so one bad record costs only
itself. A write that fails (disk full, database locked or damaged) is logged and counted in
/metrics; the server keeps serving, and the client has its answer either way. A crash loses at
most the records of the last FLUSH_S seconds and of the requests in flight; an abort (a second
Ctrl-C) writes those queued first, if the store takes them within ABORT_WRITE_S.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tradeoff.serve.metrics import ServerMetrics
from tradeoff.store import Store
from tradeoff.types import Item, Record

log = logging.getLogger("tradeoff.serve")

FLUSH_S = 0.02
# How long an abort waits for the store to take the records queued: an abort is to end at once,
# and a database another process holds locked would keep it waiting LOCK_TIMEOUT_S.
ABORT_WRITE_S = 2.0
Prepared = tuple[list[Any], tuple[str, ...]]


class RecordWriter:
    def __init__(self, store: Store, metrics: ServerMetrics):
        self.store = store
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tradeoff-store")
        self._queued: list[tuple[str, Prepared]] = []
        self._flush: asyncio.TimerHandle | None = None
        # the batches on the store's thread, with their number of records
        self._writing: dict[asyncio.Future[tuple[int, list[str]]], int] = {}

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
        self._writing[future] = len(batch)
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
        self._writing.pop(future, None)
        self._count(*future.result())

    def _count(self, written: int, errors: list[str]) -> None:
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

    def write_now(self) -> int:
        """At an abort, where the event loop runs no more: write what is queued, after the
        batches the store's thread is writing, waiting for it at most ABORT_WRITE_S. How many
        records may be unwritten by then (0: all written, or failed and logged as failures)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._queued = self._queued, []
        unsure = len(batch) + sum(self._writing.values())
        last = self._executor.submit(self._write, batch)  # one thread: after those it writes
        done, _ = concurrent.futures.wait([last], timeout=ABORT_WRITE_S)
        if not done:
            return unsure
        self._count(*last.result())
        return 0

    def close(self) -> None:
        self._executor.shutdown(wait=True)
