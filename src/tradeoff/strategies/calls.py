"""Measured engine calls: every call a strategy makes goes through here and comes back as a
`Call` with its energy (or why it is missing) and its analytic FLOPs, bytes and roofline time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Generic, TypeVar

from tradeoff.engines.base import Engine, InProcessEngine, ModelInfo, PassSink
from tradeoff.engines.emit import TextSink
from tradeoff.eventloop import unless_cancelled
from tradeoff.meters.account import EnergyAccount, Settled
from tradeoff.meters.energy import CounterError, EnergyMeter
from tradeoff.meters.flops import eval_flops
from tradeoff.meters.hardware import device_peaks
from tradeoff.meters.roofline import Peaks, eval_cost
from tradeoff.types import CANCELLED, Call, Generation, Request, StopEarly

REMOTE_ENERGY = "remote server: its energy is not visible to the client"
SETTLING = "settling: in the record once the energy counter steps past the answer (~100 ms)"
# Why a helper process's own work (a router's decision) has no energy: it opens no meter.
HELPER_UNMETERED = "not metered: a process dispatching to servers reads no energy counter"
CPU_WORK = "{source} meters the models' GPUs; this is work on the CPU, which no meter here reads"

T = TypeVar("T")

# Where the request running in this task keeps its waits for the in-process engines, behind other
# requests (`CallMeter._engine`): (from, to) perf_counter spans; None where nobody keeps them.
ENGINE_WAITS: ContextVar[list[tuple[float, float]] | None] = ContextVar(
    "engine_waits", default=None
)

# Forward passes of one call: (first position, positions fed). A call's analytic costs are the
# sum over its passes.
Passes = list[tuple[int, int]]


@cache
def _device_peaks(device: str, dtype: str | None) -> Peaks | None:
    return device_peaks(device, dtype)[0]


def request_passes(input_tokens: int, output_tokens: int, end_pass: bool = False) -> Passes:
    """The passes of a plain request: prefill of the prompt, then one pass per output token after
    the first (which the prefill's last position gives), and one more where a pass produced the
    end of the sequence after them (`Generation.end_pass`)."""
    p = max(input_tokens, 0)
    return [(0, p)] + [(p + i, 1) for i in range(_decodes(output_tokens, end_pass))]


def _decodes(output_tokens: int, end_pass: bool) -> int:
    """Passes after the prefill: one per output token after the first, and the end's."""
    return max(output_tokens - 1, 0) + (end_pass and output_tokens > 0)


def _batch_passes(gens: list[Generation]) -> Passes | None:
    """A batch runs until its longest answer is done: every row is charged the passes of that
    one (its prompt, its output tokens)."""
    ok = [g for g in gens if g.error is None and g.input_tokens]
    if not ok:
        return None
    longest = max(ok, key=lambda g: _decodes(g.output_tokens, g.end_pass))
    return request_passes(ok[0].input_tokens or 0, longest.output_tokens, longest.end_pass)


@dataclass
class Measured(Generic[T]):
    """Work a strategy does itself, in this process, outside its engine calls (a router's
    decision): what it returned, its wall time, and its energy or why that is missing."""

    value: T
    seconds: float  # time.perf_counter across the work
    energy_j: float | None
    energy_missing: str | None  # why energy_j is None


def _read(energy: EnergyMeter | None) -> tuple[float | None, str | None]:
    """The counter's reading (None with none), or None and why it could not be read: that
    costs the energy of the work it was read around, not the work."""
    if energy is None:
        return None, None
    try:
        return energy.read_j(), None
    except CounterError as exc:
        return None, str(exc)


def _across(
    energy: EnergyMeter | None, e0: float | None, failed: str | None
) -> tuple[float | None, str | None]:
    """The counter's difference from reading `e0` (`failed`: why there is none) to now."""
    if failed is not None or e0 is None:
        return None, failed
    e1, failed = _read(energy)
    return (None, failed) if e1 is None else (e1 - e0, None)


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    """work's value and its seconds, timed on the thread that runs it."""
    t0 = time.perf_counter()
    value = work()
    return value, time.perf_counter() - t0


def _waited(since: float) -> None:
    """Keep a wait for the engines from `since` to now, where the request keeps them."""
    waits = ENGINE_WAITS.get()
    if waits is not None:
        waits.append((since, time.perf_counter()))


@dataclass
class CallMeter:
    """Runs engine calls and measures them.

    In-process engines share this machine's CPU (or GPU), so their calls run one at a time under
    one lock. With a fine-grained counter (RAPL) a call's energy is the counter's difference
    across it; with a stepped one (NVML, `account`) the counter's steps are split among the
    requests active in them on its GPUs by their cost-weighted tokens, and a model on the CPU
    beside them is not metered (`CPU_WORK`): its work moves no GPU's counter.
    """

    engines: dict[str, Engine]
    energy: EnergyMeter | None
    energy_missing: str
    inproc_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The peaks of the host CPU in-process engines run on, for roofline times (None: unknown);
    # an engine on a GPU (ModelInfo.device) uses that device's calibrated or datasheet peaks.
    peaks: Peaks | None = None
    account: EnergyAccount | None = None
    # Return calls before their share of a stepped counter is known (a session's: no answer's
    # latency waits for the counter's next step); `settle_calls` completes them.
    defer_settle: bool = False
    # The cancel events (`Request.cancel`) of the served requests an in-process model is
    # computing now: `tradeoff serve` waits for those longer once their client left.
    computing: set[threading.Event] = field(default_factory=set)

    def in_process(self, alias: str) -> InProcessEngine | None:
        engine = self.engines[alias]
        return engine if isinstance(engine, InProcessEngine) else None

    @property
    def inline(self) -> bool:
        """Whether the in-process models run on the event loop's thread (`InProcessEngine.inline`):
        no other request starts while one computes."""
        return any(isinstance(e, InProcessEngine) and e.inline for e in self.engines.values())

    def batches(self, alias: str) -> bool:
        """Whether the model decodes several draws of one prompt as one batch (torch)."""
        engine = self.in_process(alias)
        return engine is not None and engine.batches

    def account_for(self, engine: InProcessEngine) -> EnergyAccount | None:
        """The stepped counter's account (NVML) where `engine` runs on a GPU; None for a model
        on the CPU, whose work moves no GPU's counter."""
        return self.account if engine.gpu_uuid else None

    @property
    def cpu_energy(self) -> EnergyMeter | None:
        """The counter read around work on this process's CPU: a fine-grained one (RAPL), never
        a stepped one (NVML), which meters the models' GPUs."""
        return self.energy if self.energy is not None and not self.energy.stepped else None

    @property
    def cpu_missing(self) -> str:
        """Why work on the CPU has no energy where `cpu_energy` is None."""
        return CPU_WORK.format(source=self.energy.source) if self.energy else self.energy_missing

    def peaks_for(self, info: ModelInfo) -> Peaks | None:
        if not info.device:
            return self.peaks
        return _device_peaks(info.device, info.shape.dtype if info.shape else None)

    def pass_weight(self, info: ModelInfo) -> Callable[[int, int, int], float]:
        """Weight of a token produced by a pass: the pass's roofline time shared by its rows
        (its bytes when the device's peaks are unknown; 1 when the shape is unknown)."""
        shape, peaks = info.shape, self.peaks_for(info)
        if shape is None or shape.weight_bytes is None:
            return lambda start, n, batch: 1.0

        def weight(start: int, n: int, batch: int) -> float:
            cost = eval_cost(shape, start, n, batch)
            return (cost.roofline_s(peaks) if peaks else cost.bytes) / batch

        return weight

    async def call(self, alias: str, request: Request, on_text: TextSink | None = None) -> Call:
        """One measured engine call; `on_text` streams the answer's text as it is generated."""
        engine = self.in_process(alias)
        if engine is None:
            remote = self.engines[alias]
            gen = await remote.agenerate(request, on_text)
            return self._call(alias, remote.info, gen, None, None, REMOTE_ENERGY)
        info = engine.info
        account, energy = self.account_for(engine), self.cpu_energy
        used: float | None = None
        failed: str | None = None
        async with self._engine(request.cancel) as taken:
            if not taken:  # cancelled while it waited for the engine: nothing ran, 0 J
                return self._not_run(alias, engine, request)
            if account is not None:
                # Opened once the engine is this request's: a request waiting for the lock does
                # no work, and took a share of every step of another's that wrote no token.
                rid = account.begin()
                sink = account.sink(rid, self.pass_weight(info))
                try:
                    gen = await engine.agenerate(request, on_text, sink)
                finally:
                    account.end(rid)
            else:
                e0, failed = _read(energy)
                gen = await engine.agenerate(request, on_text)
                used, failed = _across(energy, e0, failed)
        if account is not None:
            call = self._call(alias, info, gen, None, None, SETTLING)
            call.pending = asyncio.ensure_future(account.settle(rid))
            return (await self._unless_deferred([call]))[0]
        if used is not None and energy is not None:
            return self._call(alias, info, gen, used, energy.source, None)
        return self._call(alias, info, gen, None, None, failed or self.cpu_missing)

    @asynccontextmanager
    async def _engine(self, cancel: threading.Event | None) -> AsyncIterator[bool]:
        """The in-process lock, held inside; not taken (False) where the request was cancelled
        (`cancel` set) while it waited (a served client gone: it waited for every request ahead
        of it, holding a place among the server's requests in flight, only to stop at once).
        The wait goes to `ENGINE_WAITS` where the request keeps them."""
        since = time.perf_counter()
        if cancel is None:
            async with self.inproc_lock:
                _waited(since)
                yield True
            return
        acquire = asyncio.ensure_future(self.inproc_lock.acquire())
        try:
            taken = await unless_cancelled(acquire, cancel)
        except BaseException:
            self._let_go(acquire)
            raise
        _waited(since)
        if not taken:
            self._let_go(acquire)
            yield False
            return
        request_cancel = cancel.root if isinstance(cancel, StopEarly) else cancel
        self.computing.add(request_cancel)
        try:
            yield True
        finally:
            self.computing.discard(request_cancel)
            self.inproc_lock.release()

    def not_run(self, alias: str, request: Request) -> Call:
        """`alias`'s call for a request cancelled before the engine was its own (`turns`)."""
        engine = self.in_process(alias)
        if engine is None:
            raise TypeError(f"'{alias}' is not an in-process model")
        return self._not_run(alias, engine, request)

    def _not_run(self, alias: str, engine: InProcessEngine, request: Request) -> Call:
        """A call cancelled before its engine was free: no token, no energy (0 J where a meter
        reads where it runs; before, the record's energy was missing for it)."""
        gen = Generation.cancelled_before(request.mode, time.perf_counter())
        account, energy = self.account_for(engine), self.cpu_energy
        source = account.meter.source if account else (energy.source if energy else None)
        if source is None:
            return self._call(alias, engine.info, gen, None, None, self.cpu_missing)
        return self._call(alias, engine.info, gen, 0.0, source, None)

    def _let_go(self, acquire: asyncio.Future[Any]) -> None:
        """Give up a wait for the lock: cancelled, it takes none (asyncio.Lock passes its turn
        on); released where it already had it."""
        if not acquire.done():
            acquire.cancel()
        elif not acquire.cancelled() and acquire.exception() is None:
            self.inproc_lock.release()

    async def measure(
        self, work: Callable[[], T], cancel: threading.Event | None = None
    ) -> Measured[T] | None:
        """Run `work` (a strategy's own computation on this process's CPU, e.g. a router's
        decision) on a worker thread, holding the in-process lock as an in-process call does, so
        that no engine computes while it runs: its time is its own, and so is its energy. The
        event loop stays free meanwhile: an embedding router's decision takes tens of
        milliseconds on a small CPU, which `tradeoff serve`'s other requests must not wait out.
        Where the models run on the loop's thread (`inline`), it runs there too, as their calls
        do: on a thread it let the other requests start, and its own call then waited for them.

        Its energy is attributed as an in-process call's is with a fine-grained counter (RAPL):
        the counter's difference across it. RAPL updates about every millisecond, so one short
        piece of work reads 0 or a whole update; summed over many, the counter's total is kept.
        Missing, with the reason, when the session has no counter, or when its counter is the
        GPUs' (NVML), which none of this CPU work moves. None, and not run, where `cancel` was
        set while it waited for the engines (its served client gone)."""
        energy = self.cpu_energy
        async with self._engine(cancel) as taken:
            if not taken:
                return None
            e0, failed = _read(energy)
            if self.inline:
                value, seconds = _timed(work)
            else:
                value, seconds = await asyncio.to_thread(_timed, work)
            used, failed = _across(energy, e0, failed)
        return Measured(
            value, seconds, used, None if used is not None else failed or self.cpu_missing
        )

    async def call_batch(self, alias: str, requests: list[Request]) -> list[Call]:
        """Requests that share a prompt (a vote's draws), as one batch where the engine batches
        (the torch engine), else one after another. A batch's energy is split among its rows
        by their tokens; each row's roofline time is the batch's, its FLOPs and bytes a share."""
        engine = self.in_process(alias)
        if engine is None or not engine.batches or len(requests) < 2:
            return [await self.call(alias, r) for r in requests]
        info = engine.info
        account, energy = self.account_for(engine), self.cpu_energy
        n = len(requests)
        rids: list[str] = []
        used: float | None = None
        failed: str | None = None
        async with self._engine(requests[0].cancel) as taken:  # opened once the engine is theirs
            if not taken:
                return [self._not_run(alias, engine, r) for r in requests]
            if account is not None:
                weight = self.pass_weight(info)
                rids = [account.begin() for _ in requests]
                sinks: list[PassSink] = [account.sink(r, weight) for r in rids]
                try:
                    gens = await engine.agenerate_batch(requests, sinks)
                finally:
                    for rid in rids:
                        account.end(rid)
            else:
                e0, failed = _read(energy)
                gens = await engine.agenerate_batch(requests)
                used, failed = _across(energy, e0, failed)
        passes = _batch_passes(gens)
        if account is not None:
            calls = [self._call(alias, info, g, None, None, SETTLING, passes, n) for g in gens]
            for call, rid in zip(calls, rids):
                call.pending = asyncio.ensure_future(account.settle(rid))
            return await self._unless_deferred(calls)
        total = sum(g.output_tokens for g in gens)
        calls = []
        for g in gens:
            energy_j: float | None = None
            source: str | None = None
            missing: str | None = failed or self.cpu_missing
            if used is not None and energy is not None:
                share = g.output_tokens / total if total else 1 / n
                energy_j, source, missing = used * share, energy.source, None
            calls.append(self._call(alias, info, g, energy_j, source, missing, passes, n))
        return calls

    @asynccontextmanager
    async def turns(self, aliases: list[str], request: Request) -> AsyncIterator[Turns | None]:
        """In-process models that take turns within one request (`switch`), holding the lock
        for all of them. Inside, the loop reports each model's passes (`Turns.sink`) and each
        hand-over (`Turns.turn`); afterwards `Turns.calls` gives one measured call per model.
        None inside where `request` was cancelled while it waited for the engines (`_engine`):
        nothing ran (`not_run`)."""
        engines = {}
        for alias in aliases:
            engine = self.in_process(alias)
            if engine is None:
                raise TypeError(f"'{alias}' is not an in-process model")
            engines[alias] = engine
        turns = Turns(self, engines)
        async with self._engine(request.cancel) as taken:  # opened once the engines are theirs
            if not taken:
                yield None
                return
            for alias, engine in engines.items():
                if (account := self.account_for(engine)) is not None:
                    turns.rids[alias] = account.begin()
            try:
                turns.turn(aliases[0])
                yield turns
                turns.turn(None)
            finally:
                if self.account is not None:
                    for rid in turns.rids.values():
                        self.account.end(rid)

    async def _unless_deferred(self, calls: list[Call]) -> list[Call]:
        """The calls, their energies settled here unless they settle later (`defer_settle`)."""
        if not self.defer_settle:
            await self.settle_calls(calls)
        return calls

    def _apply(self, call: Call, s: Settled) -> None:
        call.energy_j, call.energy_missing = s.energy_j, s.missing
        call.energy_source = (
            self.account.meter.source if self.account and s.energy_j is not None else None
        )
        call.mean_power_w, call.device_memory_bytes = s.mean_power_w, s.peak_memory_bytes

    async def settle_calls(self, calls: list[Call]) -> None:
        """Wait for the calls' deferred energies and fill them in."""
        for call in calls:
            if call.pending is not None:
                self._apply(call, await call.pending)
                call.pending = None

    def _call(
        self,
        alias: str,
        info: ModelInfo,
        gen: Generation,
        energy_j: float | None,
        source: str | None,
        missing: str | None,
        passes: Passes | None = None,
        batch: int = 1,
    ) -> Call:
        """The call with its analytic costs: FLOPs and bytes of its passes (`passes`, else those
        of a plain request of its tokens) and their roofline time. A row of a batch of `batch`
        gets a share of the batch's bytes and the batch's whole roofline time. A failed call
        has none (what ran is unknown), but a cancelled one (its client gone) counts the tokens
        it computed before it stopped."""
        call = Call(alias, gen, energy_j, source, missing, batch=batch)
        shape = info.shape
        failed = gen.error is not None and gen.error != CANCELLED
        if shape is None or failed or gen.input_tokens is None:
            return call
        if passes is None:
            passes = request_passes(gen.input_tokens, gen.output_tokens, gen.end_pass)
        call.flops = sum(eval_flops(shape, start, n) for start, n in passes)
        if shape.weight_bytes is not None:
            costs = [eval_cost(shape, start, n, batch) for start, n in passes]
            call.bytes = sum(c.bytes for c in costs) / batch
            peaks = self.peaks_for(info)
            if peaks is not None and info.in_process:
                call.roofline_s = sum(c.roofline_s(peaks) for c in costs)
        return call


@dataclass
class Turns:
    """The measurement of models taking turns within one request (see `CallMeter.turns`).

    With a stepped counter (NVML) each model's passes on a GPU are a request of the energy
    account; with a fine-grained one (RAPL) the counter is read at each hand-over and the
    difference goes to the model whose turn ended; with none that reads where a model runs, its
    energy is missing with the reason."""

    meter: CallMeter
    engines: dict[str, InProcessEngine]
    rids: dict[str, str] = field(default_factory=dict)
    energy_j: dict[str, float] = field(default_factory=dict)
    failed: str | None = None  # why the counter could not be read at a hand-over
    _current: str | None = None
    _mark: float | None = None

    def sink(self, alias: str) -> PassSink | None:
        """Where `alias`'s passes are reported (for the energy account), or None."""
        account = self.meter.account
        if account is None or alias not in self.rids:
            return None
        return account.sink(self.rids[alias], self.meter.pass_weight(self.engines[alias].info))

    def turn(self, alias: str | None) -> None:
        """`alias` generates from now on (None: the request is over)."""
        energy = self.meter.cpu_energy
        if energy is None or self.failed is not None:
            return
        now, self.failed = _read(energy)
        if now is None:
            return
        if self._current is not None and self._mark is not None:
            self.energy_j[self._current] = self.energy_j.get(self._current, 0.0) + now - self._mark
        self._current, self._mark = alias, now

    async def calls(self, done: dict[str, tuple[Generation, Passes]]) -> list[Call]:
        """One call per model that ran (`done`: its generation and its passes). A model that
        never ran has no call; with the energy account, what it was given goes to the others."""
        meter, energy = self.meter, self.meter.cpu_energy
        shares = asyncio.ensure_future(self._shares(list(done))) if self.rids else None
        calls = []
        for alias, (gen, passes) in done.items():
            info = self.engines[alias].info
            if shares is not None and alias in self.rids:
                call = meter._call(alias, info, gen, None, None, SETTLING, passes)
                call.pending = asyncio.ensure_future(_share(shares, alias))
            elif energy is not None and self.failed is None:
                energy_j = self.energy_j.get(alias, 0.0)
                call = meter._call(alias, info, gen, energy_j, energy.source, None, passes)
            else:
                missing = self.failed or meter.cpu_missing
                call = meter._call(alias, info, gen, None, None, missing, passes)
            calls.append(call)
        return await meter._unless_deferred(calls)

    async def _shares(self, done: list[str]) -> dict[str, Settled]:
        """Each GPU model's share of the account once settled; what one that never ran (not in
        `done`) was given goes to the first that did."""
        assert self.meter.account is not None
        settled = {alias: await self.meter.account.settle(rid) for alias, rid in self.rids.items()}
        idle = sum(s.energy_j or 0.0 for a, s in settled.items() if a not in done)
        ran = [alias for alias in done if alias in settled]
        if ran and idle:
            s = settled[ran[0]]
            settled[ran[0]] = Settled(
                (s.energy_j or 0.0) + idle, s.missing, s.mean_power_w, s.peak_memory_bytes
            )
        return settled


async def _share(shares: asyncio.Future[dict[str, Settled]], alias: str) -> Settled:
    return (await shares)[alias]
