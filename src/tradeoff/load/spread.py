"""A load point spread over several processes, when one cannot keep its pace.

One process sent 500 paced requests/s with a send lag p99 under 1 ms on a quiet 16-core host,
but not 1,000 (benchmarks/RESULTS.md, issue 13): past a few hundred a second its own CPU delays
the sends. As GuideLLM does, such a point is then driven from several processes. Each drives
every P-th request of the same schedule (process k the requests k, k + P, ...), all timed from
one start (time.perf_counter: the system's monotonic clock, the same in every process), each
with its share of the in-flight requests. Every record comes back to this process, the run
store's only writer, which counts them toward the progress, --max-errors and --max-error-rate,
and tells the helpers when to stop (Ctrl-C, too many errors).

The helpers are `python -m tradeoff.load.spread`, started as points first need them and reused
by the points after. Only models behind servers are spread: a model computed in this process
(llama.cpp, torch) answers one request at a time wherever it is called from.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from tradeoff import eventloop
from tradeoff.config import Config, RunSpec, parse_spec, resolve_configs
from tradeoff.dispatch import CONCURRENCY_PER_PROCESS, Helper, why_failed
from tradeoff.errors import RunFailed
from tradeoff.load.driver import PointDriver, PointProgress
from tradeoff.load.options import LoadOptions
from tradeoff.load.profiles import LoadPoint, due_within
from tradeoff.meters.host import usable_cores
from tradeoff.runner import Stop, Writer
from tradeoff.session import open_engines
from tradeoff.strategies.calls import HELPER_UNMETERED, CallMeter
from tradeoff.types import Record
from tradeoff.work import PerTurn, Plan, load_tasks

# "auto": one process per this many paced requests/s (a margin under the 500 one process kept
# within 1 ms), or per CONCURRENCY_PER_PROCESS requests in flight; at most one per core.
RATE_PER_PROCESS = 250
# The point starts this long after its helpers are sent their part, so that all begin together.
START_AHEAD_S = 0.1


def point_processes(setting: str | int, point: LoadPoint, options: LoadOptions) -> int:
    """How many processes drive `point` (this one included): `setting` (the spec's
    `processes`), or for "auto" one per RATE_PER_PROCESS requests/s or CONCURRENCY_PER_PROCESS
    requests in flight, at most one per core. Never more than the requests it may keep in flight
    (its concurrency; a rate's --max-concurrency), each process keeping its share of them, nor
    than the requests it has to send (--max-requests; a rate's due within --max-seconds): a
    process beyond those would send nothing. One request at a time needs one process."""
    if point.kind == "synchronous":
        return 1
    in_flight = options.max_concurrency if point.paced else point.concurrency or 1
    if setting != "auto":
        wanted = int(setting)
    elif point.paced:
        wanted = min(math.ceil((point.rate or 0.0) / RATE_PER_PROCESS), usable_cores())
    else:
        wanted = min(math.ceil(in_flight / CONCURRENCY_PER_PROCESS), usable_cores())
    most = min(wanted, in_flight, options.max_requests or sys.maxsize)
    seconds = options.max_seconds
    if point.paced and seconds is not None:
        most = min(most, due_within(point, options.seed, options.rampup_s, seconds, most))
    return max(1, most)


def spreadable(configs: list[Config]) -> bool:
    """Whether every model of the run is behind a server."""
    refs = [ref for c in configs for ref in c.models.values()]
    return bool(refs) and all(ref.startswith("openai:") for ref in refs)


class _Helper:
    """A helper process, its messages read on a thread into a queue on the parent's loop."""

    def __init__(self, init: tuple[Any, ...], loop: asyncio.AbstractEventLoop):
        self.process = Helper.start("tradeoff.load.spread")
        self.process.conn.send(init)
        self.messages: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.loop = loop
        threading.Thread(target=self._read, name="tradeoff-spread", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                message = self.process.conn.recv()
                self.loop.call_soon_threadsafe(self.messages.put_nowait, message)
        except (EOFError, OSError):
            code = self.process.process.wait()  # its end of the connection closed as it exited
            gone = ("failed", f"helper process exited (code {code})")
            with contextlib.suppress(RuntimeError):  # the loop has ended
                self.loop.call_soon_threadsafe(self.messages.put_nowait, gone)

    def send(self, message: tuple[str, Any]) -> None:
        with contextlib.suppress(OSError):  # it has died: its reader says so
            self.process.conn.send(message)


class Spread:
    """The helper processes of one load run."""

    def __init__(
        self,
        spec: RunSpec,
        options: LoadOptions,
        api_key: str | None,
        notify: Callable[[str], None],
    ):
        self.setting = spec.processes
        self.options = options
        self.init = ("init", spec.model_dump(mode="json"), api_key, dataclasses.asdict(options))
        self.notify = notify
        self.helpers: list[_Helper] = []

    def processes(self, point: LoadPoint) -> int:
        return point_processes(self.setting, point, self.options)

    async def _ensure(self, count: int, to_continue: str) -> None:
        """At least `count` helpers, each ready to drive."""
        loop = asyncio.get_running_loop()
        new = [_Helper(self.init, loop) for _ in range(count - len(self.helpers))]
        self.helpers += new
        for helper in new:
            kind, payload = await helper.messages.get()
            if kind != "ready":
                raise RunFailed(
                    f"a load helper process failed to start ({why_failed(payload)}): this point "
                    f"sent nothing{to_continue}"
                )

    async def drive(self, driver: PointDriver, processes: int, writer: Writer, stop: Stop) -> None:
        """Drive the point from this process (`driver`, stride 0 of `processes`) and
        `processes - 1` helpers, the helpers' records to `writer`. Raises RunFailed if a helper
        fails (what came back is kept)."""
        await self._ensure(processes - 1, stop.to_continue)
        if stop.requested:  # while the helpers started: the point sends nothing
            driver.status = "stopped"
            return
        helpers = self.helpers[: processes - 1]
        self.notify(f"{driver.progress.label}: sent from {processes} processes")
        t0 = time.perf_counter() + START_AHEAD_S
        job = (driver.config.config_id, dataclasses.asdict(driver.point), t0, processes)
        for k, helper in enumerate(helpers, 1):
            helper.send(("point", (*job, k)))
        failures: list[str] = []

        async def follow(helper: _Helper) -> None:
            sent = in_flight = 0
            while True:
                kind, payload = await helper.messages.get()
                if kind == "records":
                    records, now_sent, now_in_flight = payload
                    for record in records:
                        writer.add(record)
                    driver.progress.sent += now_sent - sent
                    driver.progress.in_flight += now_in_flight - in_flight
                    sent, in_flight = now_sent, now_in_flight
                    driver.ended(len(records), sum(r.error is not None for r in records))
                elif kind == "point-done":
                    unsent, ended = payload
                    driver.progress.in_flight -= in_flight
                    driver.progress.unsent += unsent
                    if ended != "finished" and driver.status == "finished":
                        driver.status = ended  # its part was cut short (a stop)
                    return
                else:
                    failures.append(str(payload))
                    driver.status = "failed"  # this process sends no more
                    return

        async def relay_stop() -> None:
            while not stop.requested and driver.status == "finished":
                await asyncio.sleep(0.02)
            for helper in helpers:
                helper.send(("stop", None))

        relay = asyncio.ensure_future(relay_stop())
        try:
            await asyncio.gather(driver.run(t0), *(follow(h) for h in helpers))
        finally:
            relay.cancel()
        if failures:
            raise RunFailed(
                f"a load helper process failed ({why_failed(failures[0])}): the records made so "
                f"far are stored, and --resume measures this load point again{stop.to_continue}"
            )

    def close(self, patience_s: float = 10.0) -> None:
        """End the helpers: each is told to (closing our end alone would not do: the thread
        reading it holds the socket open), exits, and is reaped; killed once `patience_s` has
        passed (0: at once, as an abort leaves)."""
        for helper in self.helpers:
            helper.send(("end", None))
        for helper in self.helpers:
            helper.process.close(patience_s)


# The helper process ----------------------------------------------------------------------------


class _Flag:
    requested = False


class _Sending:
    """A helper's record sink: records go back to the parent once per turn of the loop."""

    def __init__(self, conn: Connection, progress: PointProgress):
        self.turn = PerTurn[Record](
            lambda batch: conn.send(("records", (batch, progress.sent, progress.in_flight)))
        )

    async def write(self, record: Record) -> None:
        self.turn.add(record)

    def flush(self) -> None:
        self.turn.flush()
        if self.turn.failed is not None:
            raise self.turn.failed


def _main(fd: int) -> None:
    """A helper process: open the run's engines, then drive the parts of load points it is
    sent until the parent closes the connection."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    conn = Connection(fd)
    try:
        _, spec_data, api_key, options_data = conn.recv()
    except (EOFError, OSError):
        return  # the run ended before it needed this helper
    try:
        # --max-errors and --max-error-rate are judged on the point's every process, by the
        # parent, which tells the helpers to stop: a helper's own share may fail more often
        options = LoadOptions(**{**options_data, "max_errors": None, "max_error_rate": None})
        eventloop.run(_helper(parse_spec(spec_data), api_key, options, conn))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


async def _helper(
    spec: RunSpec, api_key: str | None, options: LoadOptions, conn: Connection
) -> None:
    configs = resolve_configs(spec)
    # The parent has checked that the servers answer.
    engines = await open_engines(configs, timeout_s=spec.timeout_s, api_key=api_key, check=False)
    try:
        plan = Plan(spec, configs, load_tasks(spec), CallMeter(engines, None, HELPER_UNMETERED))
        by_id = {c.config_id: c for c in configs}
        loop = asyncio.get_running_loop()
        jobs: asyncio.Queue[tuple[tuple[Any, ...], _Flag] | None] = asyncio.Queue()
        # The latest point's stop flag, set by the parent's "stop". Made as its part arrives,
        # not as the loop takes it: a stop right behind the part (a Ctrl-C as the point began)
        # set the point before's flag, and the part was driven whole.
        current = [_Flag()]

        def listen() -> None:
            try:
                while True:
                    kind, payload = conn.recv()
                    if kind == "stop":
                        current[0].requested = True
                    elif kind == "end":
                        raise EOFError
                    else:
                        current[0] = flag = _Flag()
                        loop.call_soon_threadsafe(jobs.put_nowait, (payload, flag))
            except (EOFError, OSError):  # the parent is done ("end") or gone
                current[0].requested = True
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(jobs.put_nowait, None)

        threading.Thread(target=listen, daemon=True).start()
        conn.send(("ready", None))
        while (job := await jobs.get()) is not None:
            (config_id, point_data, t0, of, k), flag = job
            config, point = by_id[config_id], LoadPoint(**point_data)
            progress = PointProgress(point.label, options.max_requests, options.max_seconds)
            sending = _Sending(conn, progress)
            driver = PointDriver(
                plan, config, point, options, sending, flag, progress, lambda p: None, (k, of)
            )
            await driver.run(t0)
            sending.flush()
            conn.send(("point-done", (progress.unsent, driver.status)))
    finally:
        for engine in engines.values():
            await engine.aclose()


if __name__ == "__main__":
    _main(int(sys.argv[1]))
