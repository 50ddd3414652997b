"""Several processes dispatching one run's requests, for models behind servers.

One Python process drives an OpenAI-compatible server at about 1,500-2,000 requests/s on a
small machine (benchmarks/RESULTS.md): past that, the client's own CPU is the limit, not the
server. As GuideLLM does, the requests are then spread over several processes, each with its
own event loop, connections and share of the concurrency. The parent dispatches too, from the
start, and hands out work in chunks to each helper process once it is up (a second or so), so a
short run never waits for them; every record comes back to the parent, the run store's only
writer. Models computed in this process (llama.cpp, torch) are never dispatched this way.

The helpers are `python -m tradeoff.dispatch`, started fresh (a user's script is not run again in
them, as multiprocessing's spawn would); each talks to the parent over its own socket pair with
multiprocessing.connection (pickled messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from itertools import islice
from multiprocessing.connection import Connection, wait

from tradeoff import eventloop
from tradeoff.config import Config, RunSpec, parse_spec, resolve_configs
from tradeoff.errors import RunFailed
from tradeoff.meters.host import usable_cores
from tradeoff.session import open_engines
from tradeoff.strategies.calls import HELPER_UNMETERED, CallMeter
from tradeoff.types import Record
from tradeoff.work import Emit, PerTurn, Plan, Work, load_tasks, run_work

# "auto": one process per this many requests in flight, no more than one per core.
CONCURRENCY_PER_PROCESS = 32

Batch = list[tuple[Record, float]]


def processes_for(spec: RunSpec, configs: list[Config]) -> int:
    """How many processes dispatch the run, this one included: the spec's `processes`, or for
    "auto" one per CONCURRENCY_PER_PROCESS requests in flight, at most one per core; always 1
    (this process alone) when a model is computed in this process (not `openai:`)."""
    refs = [ref for c in configs for ref in c.models.values()]
    if not refs or not all(ref.startswith("openai:") for ref in refs):
        return 1
    if spec.processes != "auto":
        return max(1, min(spec.processes, spec.concurrency))
    return max(1, min(usable_cores(), spec.concurrency // CONCURRENCY_PER_PROCESS))


def share(total: int, k: int, of: int) -> int:
    """Process k's part of `total` spread over `of` processes (the first ones take the rest):
    the parts add up to `total`, so the processes together keep no more in flight than asked."""
    return total // of + (k < total % of)


def unused_processes(spec: RunSpec, configs: list[Config], on_ray: bool) -> str | None:
    """Why a `processes` above 1 that the user gave is not used (a note for them), or None."""
    if spec.processes == "auto" or spec.processes <= 1:
        return None
    given = f"--processes {spec.processes} is not used"
    if on_ray:
        return f"{given}: on Ray the workers send the requests"
    if any(not ref.startswith("openai:") for c in configs for ref in c.models.values()):
        return f"{given}: a model computed in this process (llama.cpp, torch) is driven from it"
    return None


def start_helpers(count: int) -> list[Helper]:
    """Start `count` helper processes (a second or so until they are ready to work: start them
    before the rest of the run's setup)."""
    return [Helper.start() for _ in range(count)]


async def run_in_processes(
    plan: Plan,
    api_key: str | None,
    work: list[Work],
    helpers: list[Helper],
    stopped: Callable[[], bool],
    emit: Emit,
    emit_batch: Callable[[Batch], None],
    to_continue: str,
) -> int:
    """Run `work` from this process (records to `emit`) and the `helpers` (batches of records to
    `emit_batch`, on this event loop), the concurrency split exactly (`share`; `processes_for`
    starts no more processes than requests in flight). Work is handed out as it is asked for;
    once `stopped()`, none is, and every process finishes what is in flight. Returns how many
    records the helpers made; raises RunFailed if one fails (what it had done is kept; the
    message ends with `to_continue`, how to resume the run). The helpers are closed on
    return."""
    spec = plan.spec
    loop = asyncio.get_running_loop()
    queue = iter(work)
    of = len(helpers) + 1
    if spec.concurrency < of:
        raise ValueError(f"{of} processes for {spec.concurrency} requests in flight")
    for k, helper in enumerate(helpers, 1):
        helper.conn.send((spec.model_dump(mode="json"), api_key, share(spec.concurrency, k, of)))

    def hand_out(helper: Helper, count: int) -> None:
        """On this loop: the next `count` requests to `helper` (none once stopped)."""
        helper.conn.send(("work", [] if stopped() else list(islice(queue, count))))

    async def relay_stop() -> None:
        """Tell the helpers as soon as the run is stopped: they drop the work they hold and
        finish what is in flight. (Sent from this loop: a connection has one sender.)"""
        while not stopped():
            await asyncio.sleep(0.1)
        for helper in helpers:
            with contextlib.suppress(OSError):
                helper.conn.send(("stop", None))

    finished: asyncio.Future[list[str]] = loop.create_future()

    from_helpers = 0

    def received(batch: Batch) -> None:
        nonlocal from_helpers
        from_helpers += len(batch)
        emit_batch(batch)

    def receive() -> None:
        failures: list[str] = []
        try:
            failures = _receive(helpers, loop, hand_out, received)
        except (OSError, ValueError, RuntimeError):  # connections or loop closed: the run is over
            pass
        finally:
            with contextlib.suppress(RuntimeError):  # the loop has ended
                loop.call_soon_threadsafe(_resolve, finished, failures)

    threading.Thread(target=receive, name="tradeoff-dispatch", daemon=True).start()
    stopper = asyncio.ensure_future(relay_stop())
    aborted = True
    try:

        async def next_work() -> Work | None:
            return next(queue, None)

        await run_work(plan, next_work, share(spec.concurrency, 0, of), stopped, emit)
        failures = await finished
        aborted = False
    finally:
        stopper.cancel()
        for helper in helpers:  # left by an exception (an abort): nothing would take their records
            helper.close(patience_s=0 if aborted else 10)
    if failures:
        raise RunFailed(
            f"a dispatch process failed ({why_failed(failures[0])}): the records made so far "
            f"are stored{to_continue}"
        )
    return from_helpers


def why_failed(failure: str) -> str:
    """A helper's failure in one line: its error, without the traceback that follows it."""
    return failure.splitlines()[0] if failure.strip() else "no reason given"


def _resolve(future: asyncio.Future[list[str]], failures: list[str]) -> None:
    if not future.done():
        future.set_result(failures)


class Helper:
    """A helper process and the parent's end of its connection."""

    def __init__(self, process: subprocess.Popen[bytes], conn: Connection):
        self.process = process
        self.conn = conn

    @classmethod
    def start(cls, module: str = "tradeoff.dispatch") -> Helper:
        """`python -m MODULE FD`: the module's helper, talking over the socket FD."""
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", module, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            start_new_session=True,  # Ctrl-C is the parent's: it tells the helpers when to stop
        )
        theirs.close()
        return cls(process, Connection(ours.detach()))

    def close(self, patience_s: float = 10.0) -> None:
        """Close the connection (a helper still waiting for work then exits) and reap it, killed
        once `patience_s` has passed (0: at once, as an abort leaves)."""
        self.conn.close()
        try:
            self.process.wait(timeout=patience_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _receive(
    helpers: list[Helper],
    loop: asyncio.AbstractEventLoop,
    hand_out: Callable[[Helper, int], None],
    emit_batch: Callable[[Batch], None],
) -> list[str]:
    """Read the helpers' messages (on a thread: reads block) until each has finished, passing
    requests for work and records to the event loop. A helper that dies is a failure."""
    open_ = {h.conn: h for h in helpers}
    failures: list[str] = []
    while open_:
        for ready in wait(list(open_), timeout=1.0):  # a timeout: a dead helper's EOF is seen
            helper = next(h for c, h in open_.items() if c is ready)
            try:
                kind, payload = helper.conn.recv()
            except (EOFError, OSError):
                del open_[helper.conn]
                code = helper.process.wait()
                failures.append(f"helper process exited with code {code} before finishing")
                continue
            if kind == "want":
                loop.call_soon_threadsafe(hand_out, helper, payload)
            elif kind == "records":
                loop.call_soon_threadsafe(emit_batch, payload)
            else:
                del open_[helper.conn]
                if kind == "failed":
                    failures.append(payload)
    return failures


def _main(fd: int) -> None:
    """A helper process: ask for work, run it, send the records back once per turn of its event
    loop, and say when it is done (or why it failed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    import tradeoff.engines.openai  # noqa: F401 - its libraries load while the parent sets up

    conn = Connection(fd)
    try:
        spec_data, api_key, concurrency = conn.recv()
    except (EOFError, OSError):
        return  # the run ended (or failed) before it had work for this helper
    try:
        eventloop.run(_dispatch(parse_spec(spec_data), api_key, concurrency, conn))
        conn.send(("done", None))
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


async def _dispatch(spec: RunSpec, api_key: str | None, concurrency: int, conn: Connection) -> None:
    configs = resolve_configs(spec)
    # The parent has checked that the servers answer.
    engines = await open_engines(configs, timeout_s=spec.timeout_s, api_key=api_key, check=False)
    try:
        plan = Plan(spec, configs, load_tasks(spec), CallMeter(engines, None, HELPER_UNMETERED))
        source = _WorkFrom(conn, asyncio.get_running_loop(), concurrency)
        sending = PerTurn[tuple[Record, float]](lambda batch: conn.send(("records", batch)))

        async def emit(record: Record, engine_s: float) -> None:
            sending.add((record, engine_s))

        await run_work(plan, source.next, concurrency, source.stop.is_set, emit)
        sending.flush()
        if sending.failed is not None:
            raise sending.failed
    finally:
        for engine in engines.values():
            await engine.aclose()


class _WorkFrom:
    """The helper's supply of work: chunks asked of the parent ahead of need, kept in a local
    queue; the parent's answers (and a request to stop) are read on a thread."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop, concurrency: int):
        self.conn = conn
        self.loop = loop
        self.chunk = max(2 * concurrency, 16)
        self.queue: asyncio.Queue[Work | None] = asyncio.Queue()
        self.stop = threading.Event()
        self.asked = False
        self.exhausted = False
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        try:
            while True:
                kind, payload = self.conn.recv()
                if kind == "stop":
                    self.stop.set()
                else:
                    self.loop.call_soon_threadsafe(self._arrived, payload)
        except (EOFError, OSError):
            self.stop.set()  # the parent is gone: finish what is in flight
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self.loop.call_soon_threadsafe(self._arrived, [])

    def _arrived(self, chunk: list[Work]) -> None:
        self.asked = False
        for w in chunk:
            self.queue.put_nowait(w)
        if not chunk:
            self.exhausted = True
            self.queue.put_nowait(None)

    def _ask(self) -> None:
        if not self.asked and not self.exhausted:
            self.asked = True
            self.conn.send(("want", self.chunk))

    def next(self) -> Awaitable[Work | None]:
        if self.queue.qsize() < self.chunk // 2:
            self._ask()
        return self._get()

    async def _get(self) -> Work | None:
        w = await self.queue.get()
        if w is None:
            self.queue.put_nowait(None)  # for the other workers
        return w


if __name__ == "__main__":
    _main(int(sys.argv[1]))
