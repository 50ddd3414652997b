"""The host's conditions sampled while a run measures (`meters.conditions`), read from this
machine's /proc. Other workers may share the machine while tests run, so no test asserts that
the host was quiet; only that a CPU hog the test starts is seen."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from tradeoff.meters.conditions import BUSY_OTHER_CORES, HostSampler, summarize
from tradeoff.report.table import host_notes
from tradeoff.store import Store


@contextlib.contextmanager
def cpu_hog() -> Iterator[subprocess.Popen]:
    """A process spinning on one core, a child of the test process (not of the sampled one)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        yield hog
    finally:
        hog.kill()
        hog.wait()


def sample_in_a_process(body: str) -> dict:
    """Run a sampler in a fresh Python process around `body` (code run while it samples every
    0.25 s); the summary it returns."""
    code = (
        "import json, subprocess, sys, time\n"
        "from tradeoff.meters.conditions import HostSampler\n"
        "sampler = HostSampler(lambda s: None, period_s=0.25).start()\n"
        f"{body}\n"
        "print(json.dumps(sampler.stop()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def test_a_cpu_hog_outside_the_run_makes_the_host_busy():
    with cpu_hog():
        summary = sample_in_a_process("time.sleep(2.5)")
    assert summary["samples"] >= 8 and summary["cores"] >= 1
    assert summary["other_cores_mean"] >= 0.5, summary
    assert summary["ours_cores_mean"] < 0.5, summary  # the sampling process itself idles
    assert summary["busy"] is True
    assert "other processes used" in summary["busy_reason"]


def test_the_runs_own_children_are_its_own_cpu_time():
    """A child that burns one CPU second and is reaped while sampling counts as the run's own:
    its time moves from the live child's /proc/<pid>/stat to the parent's cutime, neither lost
    nor counted twice (dispatch helpers are such children)."""
    summary = sample_in_a_process(
        "subprocess.run([sys.executable, '-c', "
        "'import time\\nwhile time.process_time() < 1.0: pass'], check=True)\n"
        "time.sleep(0.5)"
    )
    ours_s = summary["ours_cores_mean"] * summary["seconds"]
    # the child's second, its interpreter's start-up, the sampler's reads: 1.0 to about 1.4 s
    # on a quiet machine, 1.75 s seen with other processes on both cores; counted twice would
    # be 2 s or more, lost under 0.5
    assert 0.95 <= ours_s <= 1.9, summary


def test_samples_are_written_in_batches_while_sampling():
    """A killed run keeps the samples written before it died: they go out every few samples,
    not only at the end."""
    batches: list[list[dict]] = []
    sampler = HostSampler(batches.append, period_s=0.05, flush_every=3).start()
    deadline = time.monotonic() + 10
    while not batches and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batches and len(batches[0]) == 3  # written while still sampling
    summary = sampler.stop()
    written = [s for batch in batches for s in batch]
    assert summary["samples"] == len(written)
    assert [s["t"] for s in written] == sorted(s["t"] for s in written)
    s = written[0]
    assert s["cores"] >= 1 and s["interval_s"] > 0 and s["load1"] >= 0
    assert s["busy_cores"] >= 0 and s["ours_cores"] >= 0 and s["other_cores"] >= 0
    json.dumps(written)  # stored as JSON


def sample(t: float, other: float, steal: float | None = 0.0, **extra) -> dict:
    return {
        "t": t,
        "interval_s": 1.0,
        "load1": 1.0 + t,
        "cores": 2,
        "busy_cores": 1.0 + other,
        "ours_cores": 1.0,
        "other_cores": other,
        "steal_share": steal,
        **extra,
    }


def test_summary_means_are_weighted_by_time_and_the_verdict_names_its_reason():
    quiet = summarize([sample(0, 0.1), {**sample(1, 0.4), "interval_s": 0.5}])
    assert quiet["other_cores_mean"] == pytest.approx((0.1 + 0.4 * 0.5) / 1.5, abs=1e-3)
    assert quiet["other_cores_mean"] < BUSY_OTHER_CORES and quiet["busy"] is False
    assert quiet["load1_max"] == 2.0 and quiet["busy_reason"] is None
    line, busy = host_notes(quiet)
    assert busy is None
    assert line == (
        "host (2 s sampled from /proc): 2 cores; load avg 1.3 (max 2); "
        "other processes 0.2 cores (10%); steal 0%"
    )

    brief = summarize([{**sample(0, 0.0), "interval_s": 0.3}])  # a run of a third of a second
    assert host_notes(brief) == (
        "host: the run took under a second, too short to sample its conditions",
        None,
    )

    stolen = summarize([sample(0, 0.0, steal=0.08), sample(1, 0.0, steal=None)])
    assert stolen["steal_share_mean"] == 0.08  # over the samples that report steal
    assert stolen["busy"] and "withheld 8% of the CPU time (steal)" in stolen["busy_reason"]

    # A GPU cannot be sampled here: these samples are shaped as a GPU host's (NVML) would be.
    gpu = [
        {"uuid": "GPU-1", "sm_mhz": 1980, "mem_mhz": 3201, "other_pids": [], "other_processes": 0},
        {"uuid": "GPU-1", "sm_mhz": 1410, "mem_mhz": 3201, "other_pids": [9], "other_processes": 1},
    ]
    shared = summarize([sample(0, 0.0, gpus=gpu[:1]), sample(1, 0.0, gpus=gpu[1:])])
    assert shared["gpu_sm_mhz"] == [1410, 1980] and shared["gpu_mem_mhz"] == [3201, 3201]
    assert shared["gpu_other_processes_max"] == 1 and shared["gpu_other_pids"] == [9]
    line, busy = host_notes(shared)
    assert line is not None and busy is not None
    assert "GPU clocks: SM 1410-1980 MHz, memory 3201 MHz; other GPU processes: 1" in line
    assert busy.startswith("measured on a busy host: 1 other process(es) ran on the GPU;")

    assert summarize([]) == {"samples": 0, "busy": False, "busy_reason": None}
    assert host_notes(summarize([])) == (None, None)


def test_samples_are_stored_apart_from_the_records_writers_transaction(tmp_path):
    """The sampler writes from its own thread: its samples must not join (or be rolled back
    with) a transaction the records' writer has open on the store's connection."""
    store = Store.create(tmp_path / "run", {}, {})
    try:
        store.conn.execute("BEGIN IMMEDIATE")
        writer = threading.Thread(target=store.add_host_samples, args=([sample(5, 0.1)],))
        writer.start()
        time.sleep(0.2)  # waiting for the write lock the open transaction holds
        store.conn.execute("ROLLBACK")
        writer.join(30)
        assert store.host_samples() == [sample(5, 0.1)]
    finally:
        store.close()


def test_a_profile_run_on_a_busy_host_stores_its_conditions_and_the_report_says_so(
    tmp_path: Path,
):
    out = tmp_path / "run"
    with cpu_hog():  # some seconds of queries: a run under one is reported as too short to sample
        done = run_cli(
            "profile", "--model", "smollm2-135m", "--task", "arith", "--limit", "10",
            "--max-tokens", "16", "--out", str(out),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    store = Store.open(out)
    try:
        samples, meters = store.host_samples(), store.run()["meters"]
    finally:
        store.close()
    assert samples and all(s["cores"] >= 1 for s in samples)
    [session] = meters  # the session's summary, beside the energy meter's (none on this CPU)
    conditions = session["host_conditions"]
    assert conditions["samples"] == len(samples)
    assert conditions["busy"] is True and conditions["other_cores_mean"] >= 0.5, conditions
    shown = run_cli("report", str(out))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    [host] = [line for line in lines if line.startswith("host (")]
    assert "cores; load avg" in host and "other processes" in host and "steal" in host
    [busy] = [line for line in lines if line.startswith("measured on a busy host: ")]
    assert "other processes used" in busy and "rerun on a quiet machine" in busy
