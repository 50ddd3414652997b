"""One configuration driven at one load point: requests sent on the point's schedule (paced) or
as others end (closed loop), each stamped with its load point, phase (its warm-up known as it is
sent; its cool-down is marked once the point has ended: `tradeoff.load.run`), scheduled and
actual send times and queue delay, and handed to a sink as it ends.

A point may be spread over several processes (`tradeoff.load.spread`): each drives every P-th
request of the same schedule from the same start, so `stride` and `t0` are given to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, count, islice, takewhile
from typing import Protocol

from tradeoff.config import Config
from tradeoff.dispatch import share
from tradeoff.load.options import LoadOptions
from tradeoff.load.profiles import LoadPoint, expected_due, send_times
from tradeoff.types import Record
from tradeoff.work import Answered, Plan, Work

# The requests due but not sent when a rate's --max-seconds ran out are counted one by one up
# to this many; the rest of its schedule (constant:100000000 due 100 million) by its length.
COUNTED = 100_000
# Errors are judged as a rate only once this many requests of a load point have ended.
MIN_FOR_ERROR_RATE = 10
# A paced send wakes this long before it is due and spends the rest yielding to the loop's other
# work (`PointDriver._until`): timers are rounded to a millisecond, and on a machine idle between
# sends waking from sleep took milliseconds more (benchmarks/RESULTS.md, issue 13).
SPIN_S = 0.002
# A wait for a paced send looks at least this often for a stop (Ctrl-C): a signal handler sets the
# flag without waking the event loop, and the next send may be due minutes later.
STOP_POLL_S = 0.1


class RecordSink(Protocol):
    """Where a driven request's record goes: the run store's writer, or a helper process's
    connection to the parent."""

    async def write(self, record: Record) -> None: ...


class Stopping(Protocol):
    requested: bool


@dataclass
class PointProgress:
    """What the progress display shows for the running load point (every process's requests,
    once their records are back)."""

    label: str
    total: int | None  # requests, when --max-requests bounds the point
    max_seconds: float | None
    sent: int = 0
    done: int = 0
    errors: int = 0
    in_flight: int = 0
    # due within --max-seconds, not sent: its time ran out while they waited for a free slot
    # (--max-concurrency) or for a process that could not keep the pace
    unsent: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


class PointDriver:
    """Drives one configuration at one load point: the requests of stride k of P (the indices
    k, k + P, ...; all of them when P is 1), in the items' order (cycling, `sample` counting
    the cycles), timed from `t0` (time.perf_counter(), the same clock in every process)."""

    def __init__(
        self,
        plan: Plan,
        config: Config,
        point: LoadPoint,
        options: LoadOptions,
        sink: RecordSink,
        stop: Stopping,
        progress: PointProgress,
        on_progress: Callable[[PointProgress], None],
        stride: tuple[int, int] = (0, 1),
    ):
        self.plan, self.config, self.point, self.options = plan, config, point, options
        self.sink, self.stop, self.progress = sink, stop, progress
        self.on_progress = on_progress
        self.k, self.of = stride
        self.items = list(plan.items)
        self.t0 = 0.0
        # or "errors" (--max-errors / --max-error-rate), "failed" (a helper process failed),
        # "stopped" (a stop came before its schedule's last send: not once its sends were made)
        self.status = "finished"
        # records waiting for their energy to settle (`one`); whether storing one failed
        self.settling: set[asyncio.Task[None]] = set()
        self.broken = False

    def work(self, index: int) -> Work:
        task, item_id = self.items[index % len(self.items)]
        return (self.config.config_id, task, item_id, index // len(self.items))

    def more(self, index: int, scheduled_s: float) -> bool:
        """Whether the index-th request, due at `scheduled_s`, is still part of this point: not
        past --max-requests, and due and sent within --max-seconds (a send that waited for a
        slot past it is not sent: the point ends on time, as GuideLLM's max_seconds does)."""
        o = self.options
        if self.status != "finished" or self.broken:
            return False
        if o.max_requests is not None and index >= o.max_requests:
            return False
        now = time.perf_counter() - self.t0
        if o.max_seconds is not None and max(scheduled_s, now) >= o.max_seconds:
            return False
        if self.stop.requested:
            self.status = "stopped"
            return False
        return True

    async def one(self, index: int, scheduled_s: float) -> None:
        sent_s = time.perf_counter() - self.t0
        self.progress.sent += 1
        self.progress.in_flight += 1
        answered = await self.plan.answer(self.work(index))
        self.progress.in_flight -= 1
        self.ended(1, answered.outcome.error is not None)
        stored = self._stored(answered, index, scheduled_s, sent_s)
        if not answered.settling:
            await stored
            return
        # its energy waits for a stepped counter's next step (NVML's, 100 ms apart): the next
        # request (a closed loop's, a --max-concurrency slot's) is not held back by it
        task = asyncio.ensure_future(stored)
        self.settling.add(task)
        task.add_done_callback(self._settled)

    async def _stored(
        self, answered: Answered, index: int, scheduled_s: float, sent_s: float
    ) -> None:
        record, _ = await self.plan.record(answered)
        stamped = dataclasses.replace(
            record,
            load_point=self.point.label,
            phase=self.options.phase(index, sent_s),
            scheduled_s=scheduled_s,
            sent_s=sent_s,
            queue_delay_s=max(sent_s - scheduled_s, 0.0),
        )
        await self.sink.write(stamped)

    def _settled(self, task: asyncio.Task[None]) -> None:
        """A record stored once its energy settled; one whose storing failed stops the sends
        and is kept, to be raised as the point ends (as a failure in `one` is at once)."""
        if task.cancelled() or task.exception() is not None:
            self.broken = True
        else:
            self.settling.discard(task)

    def ended(self, n: int, errors: int) -> None:
        """`n` requests ended (`errors` of them failed), here or in another process: counted,
        judged against --max-errors and --max-error-rate, shown."""
        o, p = self.options, self.progress
        p.done += n
        p.errors += errors
        if (
            o.max_errors is not None
            and p.errors >= o.max_errors
            or (
                o.max_error_rate is not None
                and p.done >= MIN_FOR_ERROR_RATE
                and p.errors / p.done > o.max_error_rate
            )
        ):
            self.status = "errors"
        self.on_progress(p)

    async def run(self, t0: float | None = None) -> None:
        """Drive the point from `t0` (now when not given; a later time is waited for)."""
        self.t0 = time.perf_counter() if t0 is None else t0
        self.progress.started = self.t0
        try:
            await self._until(0.0)
            if self.point.paced:
                await self._paced()
            else:
                workers = 1 if self.point.kind == "synchronous" else self.point.concurrency or 1
                await self._closed_loop(workers)
        except BaseException:  # what was answered is stored all the same
            await asyncio.gather(*self.settling, return_exceptions=True)
            raise
        await asyncio.gather(*self.settling)  # the point's answers stored before it ends

    async def _closed_loop(self, total: int) -> None:
        """`total` requests always in flight, this process's share of them here: each sent as
        soon as one ends (due then). The requests are dealt as the workers are, so that each
        process sends in proportion to its workers: dealt evenly, a process of 1 worker beside
        one of 2 sent its half alone at the end of a --max-requests point. No more workers than
        requests are started (3 million of them, idle, read as the server's latency)."""
        if self.options.max_requests is not None:
            total = min(total, self.options.max_requests)
        first = sum(share(total, j, self.of) for j in range(self.k))
        workers = share(total, self.k, self.of)
        # this process's workers are the total's first+0 .. first+workers-1, round after round
        counter = (r * total + first + w for r in count() for w in range(workers))

        async def worker() -> None:
            while True:
                due = time.perf_counter() - self.t0
                index = next(counter)
                if not self.more(index, due):
                    return
                await self.one(index, due)

        await asyncio.gather(*(worker() for _ in range(workers)))

    async def _paced(self) -> None:
        """Requests sent when due, however many are in flight up to this process's share of
        --max-concurrency (`point_processes` starts no more processes than it allows); past it,
        each waits for a slot, and the wait is its queue delay."""
        slots = asyncio.Semaphore(share(self.options.max_concurrency, self.k, self.of))
        running: set[asyncio.Task[None]] = set()
        times: Iterator[float] = send_times(self.point, self.options.seed, self.options.rampup_s)
        schedule = enumerate(times)
        for index, due in schedule:
            if not self.more(index, due):
                self.progress.unsent += self._unsent(chain([(index, due)], schedule))
                break
            if index % self.of != self.k:
                continue
            await self._until(due)
            if self.stop.requested:  # while it waited: nothing more is sent
                self.status = "stopped"
                break
            await slots.acquire()
            if not self.more(index, due):  # while it waited for a slot (a stop, its time up)
                slots.release()
                self.progress.unsent += self._unsent(chain([(index, due)], schedule))
                break
            task = asyncio.ensure_future(self.one(index, due))
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(lambda _: slots.release())
        if running:
            await asyncio.gather(*running)

    def _unsent(self, left: Iterator[tuple[int, float]]) -> int:
        """Of the requests `left` in the schedule, this process's that were due within the
        point's bounds but not sent because its time ran out (none when it was stopped)."""
        o = self.options
        if self.stop.requested or self.status != "finished" or o.max_seconds is None:
            return 0
        end: float = o.max_seconds
        last = sys.maxsize if o.max_requests is None else o.max_requests
        due = list(islice(takewhile(lambda it: it[0] < last and it[1] < end, left), COUNTED))
        unsent = sum(index % self.of == self.k for index, _ in due)
        if len(due) == COUNTED:  # the rest without walking it: rate × seconds steps, blocking
            first, then = due[-1][0] + 1, min(expected_due(self.point, o.rampup_s, end), last)
            unsent += max(share(then, self.k, self.of) - share(first, self.k, self.of), 0)
        return unsent

    async def _until(self, due: float) -> None:
        """Return at `due` seconds after t0, or once a stop is requested: asleep until SPIN_S
        before it, then yielding to the loop's other work until it comes (a timer alone wakes up
        to a millisecond late, and a machine that idles between sends wakes later still)."""
        while not self.stop.requested:
            delay = due - (time.perf_counter() - self.t0)
            if delay <= SPIN_S:
                break
            await asyncio.sleep(min(delay - SPIN_S, STOP_POLL_S))
        while not self.stop.requested and time.perf_counter() - self.t0 < due:
            await asyncio.sleep(0)
