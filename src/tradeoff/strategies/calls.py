"""Measured engine calls: every call a strategy makes goes through here and comes back as a
`Call` with its energy (or why it is missing) and its analytic FLOPs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tradeoff.engines.base import Engine
from tradeoff.engines.emit import TextSink
from tradeoff.meters.energy import EnergyMeter
from tradeoff.meters.flops import request_flops
from tradeoff.meters.roofline import Peaks, request_cost
from tradeoff.types import Call, Request

REMOTE_ENERGY = "remote server: its energy is not visible to the client"


@dataclass
class CallMeter:
    """Runs engine calls and measures them.

    In-process engines share this machine's CPU (or GPU), so their calls run one at a time under
    one lock, and the energy counter's difference across a call is that call's energy.
    """

    engines: dict[str, Engine]
    energy: EnergyMeter | None
    energy_missing: str
    inproc_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The peaks of the device in-process engines run on, for roofline times (None: unknown).
    peaks: Peaks | None = None

    async def call(self, alias: str, request: Request, on_text: TextSink | None = None) -> Call:
        """One measured engine call; `on_text` streams the answer's text as it is generated."""
        engine = self.engines[alias]
        info = engine.info
        if not info.in_process:
            gen = await engine.agenerate(request, on_text)
            energy_j, source, missing = None, None, REMOTE_ENERGY
        else:
            async with self.inproc_lock:
                e0 = self.energy.read_j() if self.energy else None
                gen = await engine.agenerate(request, on_text)
                e1 = self.energy.read_j() if self.energy else None
            if e0 is not None and e1 is not None and self.energy is not None:
                energy_j, source, missing = e1 - e0, self.energy.source, None
            else:
                energy_j, source, missing = None, None, self.energy_missing
        flops = moved = roofline = None
        shape = info.shape
        if shape is not None and gen.error is None and gen.input_tokens is not None:
            flops = request_flops(shape, gen.input_tokens, gen.output_tokens).total
            if shape.weight_bytes is not None:
                cost = request_cost(shape, gen.input_tokens, gen.output_tokens)
                moved = cost.bytes
                if self.peaks is not None and info.in_process:
                    roofline = cost.roofline_s(self.peaks)
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
