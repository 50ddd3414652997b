"""A router's own cost per decision: timed and metered by the real `CallMeter`, stored in every
routed record, inside the route configuration's latency (and energy, where metered), and
reported by `tradeoff serve --policy`. The policy is fitted on a small real run of the bundled
models; RAPL is read from a powercap tree the test writes (this VM has none)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import fitted_policy, serve_process
from serve_support import PATIENCE_S, metric, wait_for

from tradeoff.config import parse_spec
from tradeoff.errors import UserError
from tradeoff.meters.energy import rapl_meter
from tradeoff.records import energy_fields
from tradeoff.runner import profile
from tradeoff.serve.app import _headers
from tradeoff.store import Store
from tradeoff.strategies.calls import CPU_WORK, CallMeter
from tradeoff.types import Call, Generation, Outcome

BASE = {"tasks": ["arith"], "limit": 10, "sampling": {"max_tokens": 4}}  # 10: a policy's least
ASK = [{"role": "user", "content": "What is 7 + 5?"}]


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy between the two bundled models, fitted on a small run of them."""
    root = tmp_path_factory.mktemp("decision")
    return fitted_policy(root, BASE["limit"], BASE["sampling"]["max_tokens"], "latency")


def test_every_routed_record_carries_its_decision_inside_its_latency(policy_file, tmp_path):
    from tradeoff.analysis.metrics import SUMMARY_COLUMNS, summaries

    policy = tmp_path / "policy.json"
    policy.write_bytes(policy_file.read_bytes())
    route = {"strategy": "route", "policy": str(policy)}
    routed = parse_spec({**BASE, "limit": 4, "configs": [route]})
    result = profile(routed, tmp_path / "routed", notify=lambda m: None)
    assert result.status == "finished" and result.errors == 0 and result.done == 4
    store = Store.open(tmp_path / "routed")
    try:
        df = store.records()
        read = store.records(columns=[*SUMMARY_COLUMNS, "extra.decision_s"])
    finally:
        store.close()
    decisions = []
    for _, r in df.iterrows():
        extra = json.loads(r["extra"])
        assert extra["routed_to"] in ("small", "large")
        assert 0 < extra["decision_s"] < r["e2e_s"]  # the record's latency spans its decision
        if "decision_j" in extra:  # a readable RAPL counter: inside the record's energy
            assert 0 <= extra["decision_j"] <= r["energy_j"]
        else:  # none (this VM): missing with the session's reason, never a number
            assert extra["decision_energy_missing"] == r["energy_missing"]
        decisions.append(extra["decision_s"])
    (summary,) = summaries(read)
    latency = summary.costs["latency"].value
    assert latency is not None and latency >= sum(decisions) / len(decisions)
    assert list(read["extra.decision_s"]) == decisions  # read by the store's column path too
    # A policy fitted again to the same path is another configuration: resuming refuses to mix
    # its records with the first one's, and goes on once the file is the one that ran.
    first = policy.read_bytes()
    policy.write_text(json.dumps(json.loads(first), indent=1))
    with pytest.raises(UserError, match=f"configuration 'route-policy' .* its policy {policy}"):
        profile(routed, resume=tmp_path / "routed", notify=lambda m: None)
    policy.write_bytes(first)
    again = profile(routed, resume=tmp_path / "routed", notify=lambda m: None)
    assert again.status == "finished" and again.done == 0


def test_a_route_at_a_concurrency_above_1_takes_its_decision_and_its_calls(policy_file, tmp_path):
    """In a run of in-process models at --concurrency 3, a decision held the models while its
    thread computed, so the other requests started meanwhile and went first: each routed record
    counted their decisions and answers in its e2e, slower than either configuration it routes
    to."""
    route = {"strategy": "route", "policy": str(policy_file)}
    spec = parse_spec({**BASE, "limit": 4, "concurrency": 3, "configs": [route]})
    result = profile(spec, tmp_path / "run", notify=lambda m: None)
    assert result.status == "finished" and result.errors == 0 and result.done == 4
    store = Store.open(tmp_path / "run")
    try:
        df = store.records()
    finally:
        store.close()
    for _, r in df.iterrows():
        own = json.loads(r["extra"])["decision_s"] + sum(c["e2e_s"] for c in json.loads(r["calls"]))
        assert own <= r["e2e_s"] < own + 0.01 + own / 4, (r["e2e_s"], own)
        # one request at a time, as the run said: none waited for the models behind another
        assert r["queue_delay_s"] is not None and r["queue_delay_s"] < 0.005, r["queue_delay_s"]


def _powercap(root: Path, energy_uj: int) -> Path:
    """A package domain laid out as /sys/class/powercap's; its counter file."""
    domain = root / "intel-rapl:0"
    domain.mkdir(parents=True)
    (domain / "max_energy_range_uj").write_text("1000000000\n")
    counter = domain / "energy_uj"
    counter.write_text(f"{energy_uj}\n")
    return counter


def test_a_decision_gets_the_counter_s_difference_across_it_and_nothing_else(tmp_path):
    counter = _powercap(tmp_path, 1_000)
    rapl, why = rapl_meter(tmp_path)
    assert rapl is not None, why
    meter = CallMeter({}, rapl, "")
    counter.write_text("4000\n")  # spent before the decision (another request): not its own

    def decide() -> str:
        counter.write_text("6500\n")  # 2,500 uJ while it decides
        return "large"

    decision = asyncio.run(meter.measure(decide))
    assert decision.value == "large" and decision.seconds > 0
    assert decision.energy_j == pytest.approx(2.5e-3) and decision.energy_missing is None

    # The record's energy is its calls' and its decision's, from the same counter.
    generation = Generation("12", 10, 2, 0.0, 0.1, 0.2)
    outcome = Outcome("12", [Call("large", generation, 0.75, "rapl")], {"decision_j": 2.5e-3})
    assert energy_fields(outcome) == (pytest.approx(0.7525), "rapl", None)


def test_the_event_loop_keeps_serving_while_a_decision_computes():
    """A decision (an embedding router's takes tens of ms) runs off the event loop's thread:
    other requests' coroutines keep running meanwhile."""
    meter = CallMeter({}, None, "no RAPL: none here")
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    def decide() -> str:
        time.sleep(0.3)  # CPU-bound work holds its thread; the loop's is elsewhere
        return "large"

    async def both() -> tuple[float, float, object]:
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        decision = await meter.measure(decide)
        t1 = time.perf_counter()
        task.cancel()
        return t0, t1, decision

    t0, t1, decision = asyncio.run(both())
    during = [t for t in ticks if t0 < t < t1]
    assert len(during) >= 10, f"the loop ran {len(during)} times in a 0.3 s decision"
    assert decision.value == "large" and 0.3 <= decision.seconds < t1 - t0 + 1e-3


class SteppedCounter:
    """Stands for NVML's counter (a GPU's, stepping about every 100 ms): this VM has no GPU."""

    source = "nvml"
    stepped = True

    def read_j(self) -> float:
        raise AssertionError("a GPU's counter is not read for work on the CPU")

    def power_w(self) -> float | None:
        return None

    def memory_used_bytes(self) -> int | None:
        return None


def test_a_decision_is_missing_energy_with_why_where_the_counter_cannot_see_it():
    on_gpu = asyncio.run(CallMeter({}, SteppedCounter(), "").measure(lambda: "small"))
    assert on_gpu.energy_j is None and on_gpu.energy_missing == CPU_WORK.format(source="nvml")
    unmetered = asyncio.run(CallMeter({}, None, "no RAPL: none here").measure(lambda: "small"))
    assert unmetered.energy_j is None and unmetered.energy_missing == "no RAPL: none here"
    # Measured calls stay the record's energy: the decision ran where their counter cannot read.
    generation = Generation("12", 10, 2, 0.0, 0.1, 0.2)
    outcome = Outcome("12", [Call("small", generation, 0.5, "nvml")], {"decision_s": 1e-4})
    assert energy_fields(outcome) == (0.5, "nvml", None)


@pytest.mark.slow
def test_serving_a_policy_reports_each_decision(policy_file, tmp_path):
    out = tmp_path / "served"
    with serve_process("--policy", str(policy_file), "--out", str(out)) as served:
        body = {"model": "router", "messages": ASK, "max_tokens": 6}
        whole = httpx.post(f"{served.url}/chat/completions", json=body, timeout=PATIENCE_S)
        assert whole.status_code == 200, whole.text
        summary = whole.json()["tradeoff"]
        assert float(whole.headers["x-tradeoff-decision-ms"]) > 0
        assert whole.headers["x-tradeoff-decision-ms"] == f"{summary['decision_s'] * 1e3:.3f}"
        assert 0 < summary["decision_s"] < summary["latency_s"]
        metered = "x-tradeoff-decision-j" in whole.headers  # a readable RAPL counter
        if metered:
            assert 0 <= float(whole.headers["x-tradeoff-decision-j"]) <= summary["energy_j"]
        else:  # none (this VM): the session's reason
            missing = whole.headers["x-tradeoff-decision-energy-missing"]
            assert missing == summary["decision_energy_missing"] == summary["energy_missing"]

        # Streamed: the headers go before the answer; its last chunk's `tradeoff` has it.
        with httpx.stream(
            "POST", f"{served.url}/chat/completions", json={**body, "stream": True},
            timeout=PATIENCE_S,
        ) as streamed:  # fmt: skip
            chunks = [
                json.loads(line.removeprefix("data: "))
                for line in streamed.iter_lines()
                if line.startswith("data: {")
            ]
        assert chunks[-1]["tradeoff"]["decision_s"] > 0

        seconds = "tradeoff_route_decision_seconds_count"
        assert wait_for(lambda: metric(served.root, seconds, model="router") == 2, "observed")
        unmetered = metric(served.root, "tradeoff_route_decisions_unmetered_total", model="router")
        assert unmetered == (0 if metered else 2)
    store = Store.open(out)
    try:
        stored = [json.loads(e) for e in store.records()["extra"]]
    finally:
        store.close()
    assert sorted(e["decision_s"] for e in stored) == sorted(
        [summary["decision_s"], chunks[-1]["tradeoff"]["decision_s"]]
    )


def test_a_slow_decision_is_written_in_milliseconds_not_exponent_form():
    summary = {
        "request_id": "r",
        "config": "router",
        "strategy": "route",
        "tokens_by_model": {"small": {"input": 3, "output": 2}},
        "latency_s": 12.0,
        "ttft_s": None,
        "energy_j": None,
        "energy_missing": "no RAPL",
        "decision_s": 10.0,
    }
    headers = dict(_headers(summary))
    assert headers["x-tradeoff-decision-ms"] == "10000.000"  # was 1e+04
    assert headers["x-tradeoff-latency-ms"] == "12000.000"
