"""Measured engine calls: every call a strategy makes goes through here and comes back as a
`Call` with its energy (or why it is missing) and its analytic FLOPs, bytes and roofline time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tradeoff.engines.base import Engine, ModelInfo, PassSink
from tradeoff.engines.emit import TextSink
from tradeoff.meters.account import EnergyAccount, Settled
from tradeoff.meters.energy import EnergyMeter
from tradeoff.meters.flops import request_flops
from tradeoff.meters.hardware import device_peaks
from tradeoff.meters.roofline import Peaks, eval_cost, request_cost
from tradeoff.types import Call, Generation, Request

REMOTE_ENERGY = "remote server: its energy is not visible to the client"
SETTLING = "settling: in the record once the energy counter steps past the answer (~100 ms)"


@cache
def _device_peaks(device: str) -> Peaks | None:
    return device_peaks(device)[0]


@dataclass
class CallMeter:
    """Runs engine calls and measures them.

    In-process engines share this machine's CPU (or GPU), so their calls run one at a time under
    one lock. With a fine-grained counter (RAPL) a call's energy is the counter's difference
    across it; with a stepped one (NVML, `account`) the counter's steps are split among the
    requests active in them by their cost-weighted tokens.
    """

    engines: dict[str, Engine]
    energy: EnergyMeter | None
    energy_missing: str
    inproc_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The peaks of the host CPU in-process engines run on, for roofline times (None: unknown);
    # an engine on a GPU (ModelInfo.device) uses that device's calibrated or datasheet peaks.
    peaks: Peaks | None = None
    account: EnergyAccount | None = None
    # Return calls before their share of a stepped counter is known (`tradeoff serve`: the
    # answer must not wait for the counter's next step); `settle_calls` completes them.
    defer_settle: bool = False

    def peaks_for(self, info: ModelInfo) -> Peaks | None:
        return _device_peaks(info.device) if info.device else self.peaks

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
        engine = self.engines[alias]
        info = engine.info
        if not info.in_process:
            gen = await engine.agenerate(request, on_text)
            return self._call(alias, info, gen, None, None, REMOTE_ENERGY)
        if self.account is not None:
            rid = self.account.begin()
            sink = self.account.sink(rid, self.pass_weight(info))
            try:
                async with self.inproc_lock:
                    gen = await engine.agenerate(request, on_text, on_pass=sink)  # type: ignore[call-arg]
            finally:
                self.account.end(rid)
            if self.defer_settle:
                call = self._call(alias, info, gen, None, None, SETTLING)
                call.pending = asyncio.ensure_future(self.account.settle(rid))
                return call
            return self._settled(alias, info, gen, await self.account.settle(rid))
        async with self.inproc_lock:
            e0 = self.energy.read_j() if self.energy else None
            gen = await engine.agenerate(request, on_text)
            e1 = self.energy.read_j() if self.energy else None
        if e0 is not None and e1 is not None and self.energy is not None:
            return self._call(alias, info, gen, e1 - e0, self.energy.source, None)
        return self._call(alias, info, gen, None, None, self.energy_missing)

    async def call_batch(self, alias: str, requests: list[Request]) -> list[Call]:
        """Requests that share a prompt (a vote's draws), as one batch where the engine batches
        (the torch engine), else one after another. A batch's energy is split among its rows
        by their tokens; each row's roofline time is the batch's, its FLOPs and bytes a share."""
        engine = self.engines[alias]
        info = engine.info
        batched: Any = getattr(engine, "agenerate_batch", None)
        if batched is None or len(requests) < 2:
            return [await self.call(alias, r) for r in requests]
        n = len(requests)
        if self.account is not None:
            rids = [self.account.begin() for _ in requests]
            weight = self.pass_weight(info)
            sinks: list[PassSink] = [self.account.sink(r, weight) for r in rids]
            try:
                async with self.inproc_lock:
                    gens: list[Generation] = await batched(requests, on_pass=sinks)
            finally:
                for rid in rids:
                    self.account.end(rid)
            settled = [await self.account.settle(rid) for rid in rids]
            calls = [self._settled(alias, info, g, s) for g, s in zip(gens, settled)]
        else:
            async with self.inproc_lock:
                e0 = self.energy.read_j() if self.energy else None
                gens = await batched(requests)
                e1 = self.energy.read_j() if self.energy else None
            total = sum(g.output_tokens for g in gens)
            calls = []
            for g in gens:
                if e0 is not None and e1 is not None and self.energy is not None:
                    share = g.output_tokens / total if total else 1 / n
                    calls.append(
                        self._call(alias, info, g, (e1 - e0) * share, self.energy.source, None)
                    )
                else:
                    calls.append(self._call(alias, info, g, None, None, self.energy_missing))
        self._batch_costs(info, calls, n)
        return calls

    def _batch_costs(self, info: ModelInfo, calls: list[Call], n: int) -> None:
        shape, peaks = info.shape, self.peaks_for(info)
        ok = [c for c in calls if c.generation.error is None and c.generation.input_tokens]
        if shape is None or shape.weight_bytes is None or not ok:
            return
        longest = max(c.generation.output_tokens for c in ok)
        cost = request_cost(shape, ok[0].generation.input_tokens or 0, longest, n)
        for c in ok:
            c.flops, c.bytes = cost.flops / n, cost.bytes / n
            c.roofline_s = cost.roofline_s(peaks) if peaks else None

    def _settled(self, alias: str, info: ModelInfo, gen: Generation, s: Settled) -> Call:
        call = self._call(alias, info, gen, None, None, None)
        self._apply(call, s)
        return call

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
    ) -> Call:
        flops = moved = roofline = None
        shape = info.shape
        if shape is not None and gen.error is None and gen.input_tokens is not None:
            flops = request_flops(shape, gen.input_tokens, gen.output_tokens).total
            if shape.weight_bytes is not None:
                cost = request_cost(shape, gen.input_tokens, gen.output_tokens)
                moved = cost.bytes
                peaks = self.peaks_for(info)
                if peaks is not None and info.in_process:
                    roofline = cost.roofline_s(peaks)
        return Call(
            model=alias,
            generation=gen,
            energy_j=energy_j,
            energy_source=source,
            energy_missing=missing,
            flops=flops,
            bytes=moved,
            roofline_s=roofline,
        )
