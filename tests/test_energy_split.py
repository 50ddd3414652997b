"""Splitting a stepped energy counter among overlapping requests (issue 6's NVML meter). NVML
is not on this machine: the counter here is a function of the clock that moves in steps, as
NVML's does (about every 100 ms on an H100)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tradeoff.meters.account import EnergyAccount
from tradeoff.meters.energy import NvmlMeter
from tradeoff.meters.split import IntervalSplitter, Sampler, measure_idle_w
from tradeoff.strategies.calls import CallMeter, request_passes
from tradeoff.types import Call, Generation, Request


def test_one_interval_is_shared_by_tokens_and_ended_requests_settle_after_it():
    s = IntervalSplitter()
    s.sample(100.0)
    s.start("a")
    s.start("b")
    s.tokens("a", 3)
    s.tokens("b", 1)
    s.end("a")  # ended inside the interval: still shares it
    assert s.energy_j("a") is None  # not settled until the counter moves
    s.sample(100.0)  # no step yet
    s.sample(108.0)
    assert s.energy_j("a") == pytest.approx(6.0) and s.energy_j("b") is None
    s.tokens("b", 2)
    s.sample(110.0)  # "b" alone in this interval
    s.end("b")
    s.sample(111.0)  # "b" ended in this interval: it gets all of it (no tokens: equal share)
    assert s.energy_j("b") == pytest.approx(2.0 + 2.0 + 1.0)
    s.sample(115.0)  # nobody active: idle
    assert s.idle_j == pytest.approx(4.0)
    assert s.total_j == pytest.approx(15.0)
    assert s.energy_j("a") + s.energy_j("b") + s.idle_j == pytest.approx(s.total_j)


def test_active_requests_without_tokens_share_equally():
    s = IntervalSplitter()
    s.sample(0.0)
    for r in "xyz":
        s.start(r)
    s.sample(9.0)  # prefill only, no token yet
    for r in "xyz":
        s.end(r)
    s.sample(9.0)
    s.sample(12.0)
    assert [s.energy_j(r) for r in "xyz"] == pytest.approx([4.0, 4.0, 4.0])


def test_sampler_splits_a_stepped_counter_and_accounts_for_all_of_it():
    power_w, step_s = 300.0, 0.02
    origin = time.perf_counter()

    def counter() -> float:  # moves every 20 ms, like NVML's every 100
        elapsed = time.perf_counter() - origin
        return power_w * step_s * int(elapsed / step_s)

    s = IntervalSplitter()

    def request(name: str, tokens: int, pause_s: float) -> None:
        s.start(name)
        for _ in range(tokens):
            time.sleep(pause_s)
            s.tokens(name)
        s.end(name)

    with Sampler(counter, s, period_s=0.002) as sampler:
        time.sleep(0.05)  # idle first
        fast = threading.Thread(target=request, args=("fast", 40, 0.005))
        slow = threading.Thread(target=request, args=("slow", 10, 0.02))
        fast.start()
        slow.start()
        fast.join()
        slow.join()
        energies = {r: sampler.energy_j(r) for r in ("fast", "slow")}
        time.sleep(0.05)
    assert None not in energies.values()
    assert sum(energies.values()) + s.idle_j == pytest.approx(s.total_j)
    assert energies["fast"] > energies["slow"] > 0  # same span, four times the tokens
    assert s.idle_j > 0


def test_idle_baseline_is_the_mean_power():
    origin = time.perf_counter()

    def counter() -> float:
        return 50.0 * (time.perf_counter() - origin)

    assert measure_idle_w(counter, 0.2) == pytest.approx(50.0, rel=0.05)


def test_tokens_weighted_by_their_cost():
    s = IntervalSplitter()
    s.sample(0.0)
    s.start("small")
    s.start("large")
    s.tokens("small", 10, cost=1.0)
    s.tokens("large", 10, cost=3.0)  # e.g. three times the bytes moved per token
    s.end("small")
    s.end("large")
    s.sample(8.0)
    assert s.energy_j("small") == pytest.approx(2.0) and s.energy_j("large") == pytest.approx(6.0)


class ClockCounter:
    """A stepped counter (as NVML's) of a device drawing a constant POWER_W, stepping every
    STEP_S: each request's share should be POWER_W x the time its engine worked for it."""

    source, stepped = "nvml", True
    POWER_W, STEP_S = 100.0, 0.01

    def __init__(self) -> None:
        self.origin = time.perf_counter()

    def read_j(self) -> float:
        steps = int((time.perf_counter() - self.origin) / self.STEP_S)
        return self.POWER_W * self.STEP_S * steps

    def power_w(self) -> float | None:
        return self.POWER_W

    def memory_used_bytes(self) -> int | None:
        return None


class LostCounter(ClockCounter):
    """A GPU's counter that NVML stops answering after `good` reads (a GPU fallen off the bus):
    from then on it is read through the real NvmlMeter, which finds NVML not initialized."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good
        self.lost = NvmlMeter([object()])

    def read_j(self) -> float:
        self.good -= 1
        return super().read_j() if self.good >= 0 else self.lost.read_j()


def test_a_stepped_counter_that_fails_mid_run_settles_at_once_with_why():
    """An NVML error in the sampler thread killed it silently: every later request waited out the
    settle timeout (2 s) and was stored as "counter did not step". Settling now answers at once
    with the error, and a request settled before it keeps its share."""
    counter = LostCounter(good=20)
    account = EnergyAccount(counter, period_s=0.002, idle_s=0).open()
    try:
        before = account.begin()
        account.end(before)
        assert asyncio.run(account.settle(before)).energy_j is not None
        time.sleep(0.1)  # the counter is lost meanwhile
        after = account.begin()
        account.end(after)
        t0 = time.perf_counter()
        settled = asyncio.run(account.settle(after))
        assert time.perf_counter() - t0 < 0.1
    finally:
        account.close()
    assert settled.energy_j is None
    assert settled.missing == "NVML counter unreadable: Uninitialized"


def test_a_request_waiting_for_the_engine_takes_no_share_of_another_s_prefill(smollm, monkeypatch):
    """Two requests at once on the real llama.cpp engine, long prompts and one-token answers:
    nearly every step is a prefill's, which writes no token. The one waiting for the engine
    took half of the other's (its energy 1.5-2x its own, the other's about half)."""
    counter = ClockCounter()
    monkeypatch.setattr(smollm, "gpu_uuid", "GPU-stand-in")  # on the counter's GPU
    account = EnergyAccount(counter, period_s=0.002, idle_s=0).open()
    meter = CallMeter({"s": smollm}, counter, "", account=account)
    words = " ".join(f"w{i}" for i in range(300))

    async def both() -> list[Call]:
        asks = [Request(prompt=f"{n}: {words}", max_tokens=1) for n in ("one", "two")]
        return list(await asyncio.gather(*(meter.call("s", a) for a in asks)))

    try:
        calls = asyncio.run(both())
    finally:
        account.close()
    for call in calls:
        own = ClockCounter.POWER_W * call.generation.e2e_s
        assert call.energy_j is not None, call.energy_missing
        # within the two steps its start and end fall in, shared with the other
        assert abs(call.energy_j - own) <= 2 * ClockCounter.POWER_W * ClockCounter.STEP_S, (
            call.energy_j,
            own,
        )
        assert call.mean_power_w == ClockCounter.POWER_W


def test_the_passes_counted_are_the_passes_the_engine_ran(smollm):
    """An answer that ends on its own ran one pass more than its tokens: the one whose token
    ended it, counted in its FLOPs and bytes (it was left out); one cut at max_tokens did not.
    An answer that ends at once has no first token."""
    for ask, max_tokens in [("Say hi.", 64), ("Count to ten.", 3)]:
        ran: list[tuple[int, int]] = []
        request = Request(messages=[{"role": "user", "content": ask}], max_tokens=max_tokens)
        gen = smollm.generate(request, on_pass=lambda start, n, _, ran=ran: ran.append((start, n)))
        assert gen.finish_reason == ("stop" if max_tokens == 64 else "length"), gen
        assert gen.end_pass == (gen.finish_reason == "stop")
        assert request_passes(gen.input_tokens, gen.output_tokens, gen.end_pass) == ran
    ended = Generation("", 5, 0, 0.0, None, 0.1, "stop", end_pass=True)
    assert request_passes(5, 0, ended.end_pass) == [(0, 5)]  # the prefill gave the end
