"""Per-request energy when requests overlap: split each interval of a cumulative energy counter
among the requests active in it, in proportion to the tokens each produced in it (each token
weighted by its cost where requests differ in model or batch shape).

NVML's total-energy counter moves in steps about 100 ms apart on an H100 (benchmarks/RESULTS.md),
so two readings around a short request say little, and overlapping requests share every step.
An interval runs from one change of the counter to the next. Its energy goes to the requests
active at any time in it (those that ended in it too), by their share of the tokens produced
in it; equally when none produced one; to `idle_j` when no request was active. So the requests'
energies and the idle energy always add up to the counter's total over the run. The idle
baseline (`measure_idle_w`) is reported beside, never subtracted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tradeoff.meters.energy import CounterError

log = logging.getLogger(__name__)


class IntervalSplitter:
    """Thread-safe: requests report from any thread; one sampler calls `sample`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_j: float | None = None
        self._tokens: dict[str, float] = {}  # active requests -> tokens in this interval
        self._ended: dict[str, float] = {}  # ended in this interval -> their tokens in it
        self._energy: dict[str, float] = {}
        self._settled: set[str] = set()
        self.idle_j = 0.0
        self.total_j = 0.0

    def start(self, request: str) -> None:
        with self._lock:
            self._tokens[request] = 0.0
            self._energy[request] = 0.0

    def tokens(self, request: str, n: float = 1.0, cost: float = 1.0) -> None:
        """`n` tokens produced, each weighted by `cost` (e.g. its analytic FLOPs or bytes, so that
        a large model's token outweighs a small one's on a shared GPU; 1 when all are alike)."""
        with self._lock:
            if request in self._tokens:
                self._tokens[request] += n * cost

    def end(self, request: str) -> None:
        """The request is done; it still shares the interval it ended in."""
        with self._lock:
            if request in self._tokens:
                self._ended[request] = self._tokens.pop(request)

    def sample(self, joules: float) -> None:
        """A reading of the cumulative counter (J). An interval closes when the value moved."""
        with self._lock:
            if self._last_j is None:
                self._last_j = joules
                return
            delta = joules - self._last_j
            if delta == 0:
                return
            self._last_j = joules
            self.total_j += delta
            sharing = {**self._tokens, **self._ended}
            if not sharing:
                self.idle_j += delta
            else:
                produced = sum(sharing.values())
                for request, made in sharing.items():
                    share = made / produced if produced > 0 else 1 / len(sharing)
                    self._energy[request] += delta * share
            for request in self._tokens:
                self._tokens[request] = 0.0
            self._settled.update(self._ended)
            self._ended.clear()

    def energy_j(self, request: str) -> float | None:
        """The request's energy once it has ended and its last interval has closed, else None."""
        with self._lock:
            return self._energy[request] if request in self._settled else None

    def forget(self, request: str) -> None:
        """Drop a settled request's entry (a long-running server meters many)."""
        with self._lock:
            if request in self._settled:
                self._settled.discard(request)
                self._energy.pop(request, None)


class Sampler:
    """Reads `read_j` every `period_s` on a thread of its own and feeds `splitter`."""

    def __init__(
        self,
        read_j: Callable[[], float],
        splitter: IntervalSplitter,
        period_s: float = 0.005,
        on_tick: Callable[[], None] | None = None,
    ):
        self.read_j = read_j
        self.splitter = splitter
        self.period_s = period_s
        self.on_tick = on_tick  # also called every period (e.g. to sample power and memory)
        self.failed: str | None = None  # why the counter stopped being read (CounterError)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="energy-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.splitter.sample(self.read_j())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.splitter.sample(self.read_j())
            except CounterError as exc:  # no interval closes from here on
                log.warning("energy not metered from here on: %s", exc)
                self.failed = str(exc)
                return
            if self.on_tick is not None:
                self.on_tick()

    def energy_j(self, request: str, timeout_s: float = 1.0) -> float | None:
        """The ended request's energy, waiting for its last interval to close (the counter's
        next step); None if it did not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (energy := self.splitter.energy_j(request)) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(self.period_s)
        return energy


def measure_idle_w(read_j: Callable[[], float], seconds: float = 2.0) -> float:
    """Mean power (W) over `seconds` with nothing running: the idle baseline, reported apart."""
    e0, t0 = read_j(), time.perf_counter()
    time.sleep(seconds)
    return (read_j() - e0) / (time.perf_counter() - t0)
