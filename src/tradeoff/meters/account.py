"""Per-request energy, power and device memory from a counter that moves in steps (NVML).

An `EnergyAccount` starts a sampler thread over the meter's counter, measures the idle baseline
first (reported beside the requests, never subtracted), and splits every step of the counter
among the requests active in it by their cost-weighted tokens (`tradeoff.meters.split`). Each
request is opened with `begin`, reports its forward passes through `sink`, and is closed with
`end`; `settle` waits for the counter's next step and gives the request's share (none, with
the reason, once the counter could no longer be read).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tradeoff.meters.energy import EnergyMeter
from tradeoff.meters.split import IntervalSplitter, Sampler, measure_idle_w

SETTLE_TIMEOUT_S = 2.0


@dataclass
class Usage:
    """Power and memory seen by the sampler while one request was active."""

    power_sum_w: float = 0.0
    power_samples: int = 0
    peak_memory_bytes: int | None = None

    @property
    def mean_power_w(self) -> float | None:
        return self.power_sum_w / self.power_samples if self.power_samples else None


@dataclass
class Settled:
    energy_j: float | None
    missing: str | None
    mean_power_w: float | None
    peak_memory_bytes: int | None


@dataclass
class EnergyAccount:
    meter: EnergyMeter
    period_s: float = 0.01
    idle_s: float = 2.0
    idle_w: float | None = None
    splitter: IntervalSplitter = field(default_factory=IntervalSplitter)
    _usage: dict[str, Usage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Any = field(default_factory=lambda: itertools.count())
    _sampler: Sampler | None = None

    def open(self) -> EnergyAccount:
        """Measure the idle baseline, then start sampling."""
        if self.idle_s > 0:
            self.idle_w = measure_idle_w(self.meter.read_j, self.idle_s)
        self._sampler = Sampler(self.meter.read_j, self.splitter, self.period_s, self._tick)
        self._sampler.__enter__()
        return self

    @property
    def failed(self) -> str | None:
        """Why the counter stopped being read mid-run (its sampler's CounterError), or None."""
        return self._sampler.failed if self._sampler is not None else None

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.__exit__()
            self._sampler = None

    def _tick(self, only: Usage | None = None) -> None:
        with self._lock:
            if not self._usage:
                return
            active = [only] if only else list(self._usage.values())
        power = self.meter.power_w()
        memory = self.meter.memory_used_bytes()
        with self._lock:
            for usage in active:
                if power is not None:
                    usage.power_sum_w += power
                    usage.power_samples += 1
                if memory is not None:
                    usage.peak_memory_bytes = max(usage.peak_memory_bytes or 0, memory)

    def begin(self) -> str:
        rid = f"r{next(self._ids)}"
        self.splitter.start(rid)
        usage = Usage()
        with self._lock:
            self._usage[rid] = usage
        self._tick(usage)  # one sample at the start: a request may be shorter than a period
        return rid

    def sink(
        self, rid: str, weight: Callable[[int, int, int], float]
    ) -> Callable[[int, int, int], None]:
        """A pass sink for request `rid`: each pass's produced token weighted by `weight`."""

        def on_pass(start: int, n: int, batch: int) -> None:
            self.splitter.tokens(rid, 1.0, weight(start, n, batch))

        return on_pass

    def end(self, rid: str) -> None:
        self.splitter.end(rid)

    async def settle(self, rid: str, timeout_s: float = SETTLE_TIMEOUT_S) -> Settled:
        """The ended request's energy once the counter has stepped past its end."""
        deadline = time.monotonic() + timeout_s
        while (energy := self.splitter.energy_j(rid)) is None:
            if self.failed is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(self.period_s)
        with self._lock:
            usage = self._usage.pop(rid, Usage())
        self.splitter.forget(rid)
        missing = None
        if energy is None:
            missing = (
                self.failed or f"{self.meter.source} counter did not step within {timeout_s:g} s"
            )
        return Settled(energy, missing, usage.mean_power_w, usage.peak_memory_bytes)

    def summary(self) -> dict[str, Any]:
        """What run metadata keeps: the idle baseline and the counter's totals so far."""
        return {
            "source": self.meter.source,
            "idle_w": self.idle_w,
            "idle_measured_s": self.idle_s,
            "idle_note": "measured with nothing running, before the first request; not subtracted",
            "counter_total_j": self.splitter.total_j,
            "idle_j": self.splitter.idle_j,
        }
