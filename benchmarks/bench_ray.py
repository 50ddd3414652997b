"""A profile run on Ray, measured on this machine: records/s with 1, 2 and 4 workers beside a
local run, and how many records/s the driver itself absorbs (its store writes, its Ray round
trips), so how many workers one driver serves. Prints a Markdown section for
benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_ray.py [--requests 2000] [--concurrency 16]
        [--delay-ms 0.5] [--workers 1,2,4] [--driver-records 50000]

1. Throughput: one model behind benchmarks/fast_server.py (8-token streams, `--delay-ms` before
   each chunk), the built-in `arith` task (`limit` items x `samples`, about `--requests`),
   `--concurrency` requests in flight per worker. A local run (`processes: 1`, no Ray), then
   `executor: {ray: {address: CLUSTER, workers: W}}` for each W, on one local Ray cluster
   started once (CLUSTER its address). Rate = done / wall_s (first request to last record;
   actors started and models warm before); each run's store is counted against the records
   expected.
2. The driver's ceiling, no model involved: (a) `Store.write_records` in batches of 4, 16, 64
   (and the run's shard size) of real records: one shard a real ShardWorker ran against the same
   server, re-keyed with fresh item ids; (b) `Pool.run` itself handing shards to actors that
   answer each at once with that batch (keyed as the shard asked), 1 and 4 actors, the records
   only counted, or written through the runner's Writer as a Ray run writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shlex
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from bench_openai_dispatch import start_server
from section import commit, loadavg, table

from tradeoff import eventloop
from tradeoff.config import RayExecutor, RunSpec, parse_spec, resolve_configs
from tradeoff.meters.host import host_info
from tradeoff.ray_run import IN_FLIGHT, Batch, Pool, connect, shard_size
from tradeoff.runner import Writer, profile
from tradeoff.store import STORE_FILE, Store
from tradeoff.strategies.calls import CallMeter
from tradeoff.types import Record
from tradeoff.work import Plan, Work, load_tasks

ITEMS = 60  # items of the built-in arith suite (`tradeoff tasks`)
MAX_TOKENS = 8
WRITE_BATCHES = (4, 16, 64)  # records per store transaction
ECHO_SHARD = 64  # records per shard in the round trip (the largest shard a Ray run hands out)
ECHO_ACTORS = (1, 4)


def say(message: str) -> None:
    print(f"[bench_ray] {message}", file=sys.stderr, flush=True)


# 1. Profile runs -----------------------------------------------------------------------------


def cluster() -> str:
    """The address of the cluster this process started (`connect("local")` in main): a run
    given another is refused, and the runs leave it running for the next."""
    address: str = ray.get_runtime_context().gcs_address
    return address


def spec_for(url: str, requests: int, concurrency: int, workers: int | None) -> RunSpec:
    """About `requests` requests of `arith` to the server at `url`; on Ray with `workers`."""
    samples = math.ceil(requests / ITEMS)
    data: dict[str, Any] = {
        "models": {"m": f"openai:{url}#m"},
        "tasks": ["arith"],
        "limit": math.ceil(requests / samples),
        "samples": samples,
        "sampling": {"max_tokens": MAX_TOKENS},
        "concurrency": concurrency,
        "processes": 1,
    }
    if workers is not None:
        data["executor"] = {"ray": {"address": cluster(), "workers": workers}}
    return parse_spec(data)


@dataclass
class Run:
    label: str
    workers: int | None  # None: the local run
    in_flight: int
    done: int
    errors: int
    stored: int
    expected: int
    wall_s: float  # the run's own: first request to last record
    outside_s: float  # the rest of profile(): actors started, models warmed, store opened, closed

    @property
    def rate(self) -> float:
        return self.done / self.wall_s


def stored_records(directory: Path) -> int:
    con = sqlite3.connect(directory / STORE_FILE)
    try:
        return int(con.execute("SELECT count(*) FROM records").fetchone()[0])
    finally:
        con.close()


def profile_run(spec: RunSpec, workers: int | None, scratch: Path) -> Run:
    label = "local" if workers is None else f"ray-{workers}"
    out = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=scratch))
    t0 = time.perf_counter()
    result = profile(spec, out / "run", notify=lambda msg: say(f"{label}: {msg}"))
    total_s = time.perf_counter() - t0
    run = Run(
        label, workers, spec.concurrency * (workers or 1), result.done, result.errors,
        stored_records(out / "run"), (spec.limit or ITEMS) * spec.samples, result.wall_s,
        total_s - result.wall_s,
    )  # fmt: skip
    say(f"{label}: {run.done} records in {run.wall_s:.2f} s, {run.rate:,.0f} records/s")
    return run


# 2. The driver's ceiling ---------------------------------------------------------------------


async def real_batch(spec: RunSpec) -> Batch:
    """One shard of ECHO_SHARD requests, run by a real ShardWorker against the server: the
    records a Ray run's driver receives."""
    configs = resolve_configs(spec)
    work = Plan(spec, configs, load_tasks(spec), CallMeter({}, None, "not metered")).work()
    pool = Pool.start(spec, configs, RayExecutor(address=cluster(), workers=1), None)
    try:
        await pool.ready(say, lambda: False)
        (actor,) = next(iter(pool.actors.values()))
        batch: Batch = await actor.run.remote(work[:ECHO_SHARD])
        return batch
    finally:
        pool.kill()


def rekeyed(batch: Batch, n: int, prefix: str) -> list[Record]:
    """`n` records cycled from `batch`, each under a fresh item id (the store's key is unique)."""
    return [replace(batch[i % len(batch)][0], item_id=f"{prefix}-{i}") for i in range(n)]


def write_rate(records: list[Record], size: int, directory: Path) -> float:
    """Records/s `Store.write_records` stores in transactions of `size` records."""
    store = Store.create(directory, {}, host_info())
    try:
        t0 = time.perf_counter()
        for i in range(0, len(records), size):
            store.write_records(records[i : i + size])
        elapsed = time.perf_counter() - t0
    finally:
        store.close()
    if stored_records(directory) != len(records):
        raise SystemExit(f"{directory}: {stored_records(directory)} of {len(records)} stored")
    return len(records) / elapsed


class Echo:
    """A Ray worker with nothing to run: each shard answered at once with a prebuilt batch,
    its records keyed as the shard asked (a few attribute stores), as a ShardWorker's are."""

    def __init__(self, batch: Batch):
        self.batch = batch

    def ready(self) -> None:
        return None

    def run(self, shard: list[Work]) -> Batch:
        for (record, _), key in zip(self.batch, shard):
            record.config_id, record.task, record.item_id, record.sample = key
        return self.batch[: len(shard)]


async def round_trip(
    batch: Batch, actors: int, shard: int, records: int, store: Store | None
) -> float:
    """Records/s reaching the driver through `Pool.run` from `actors` Echo actors, each record
    only counted or (with `store`) written by the runner's Writer, as a Ray run writes them."""
    remote = ray.remote(Echo).options(num_cpus=0)
    echoes = [remote.remote(batch) for _ in range(actors)]
    await asyncio.gather(*(echo.ready.remote() for echo in echoes))
    config_id = batch[0][0].config_id
    work: list[Work] = [(config_id, "arith", f"echo-{i}", 0) for i in range(records)]
    pool = Pool(ray, {("echo",): echoes}, {("echo",): {config_id}})
    writer = Writer(store) if store is not None else None
    received = 0

    def emit_batch(done: Batch) -> None:
        nonlocal received
        received += len(done)
        if writer is not None:
            for record, _ in done:
                writer.add(record)

    try:
        t0 = time.perf_counter()
        await pool.run(work, shard, lambda: False, emit_batch)
        if writer is not None:
            writer.flush()
            writer.check()
        elapsed = time.perf_counter() - t0
    finally:
        pool.kill()
    if received != records:
        raise SystemExit(f"round trip: {received} of {records} records reached the driver")
    return received / elapsed


@dataclass
class Echoed:
    actors: int
    shard: int
    written: bool
    rate: float


def round_trips(batch: Batch, shards: list[int], records: int, scratch: Path) -> list[Echoed]:
    found = []
    for shard in shards:
        for actors in ECHO_ACTORS:
            for written in (False, True):
                directory = Path(tempfile.mkdtemp(prefix="echo-", dir=scratch)) / "run"
                store = Store.create(directory, {}, host_info()) if written else None
                try:
                    rate = eventloop.run(round_trip(batch, actors, shard, records, store))
                finally:
                    if store is not None:
                        store.close()
                if written and stored_records(directory) != records:
                    raise SystemExit(f"round trip: {stored_records(directory)} stored")
                found.append(Echoed(actors, shard, written, rate))
                say(
                    f"round trip, {actors} actor(s), shards of {shard}, "
                    f"{'written' if written else 'counted'}: {rate:,.0f} records/s"
                )
    return found


# 3. The section ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--requests", type=int, default=2000, help="about; at least 64")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="in flight per worker")
    parser.add_argument(
        "--delay-ms", type=float, default=0.5, help="server delay before each of 8 chunks"
    )
    parser.add_argument("--workers", default="1,2,4", help="Ray workers of each run, in order")
    parser.add_argument(
        "--driver-records", type=int, default=50_000, help="records per driver measurement"
    )
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if not workers or min(workers) < 1:
        parser.error("--workers: one or more counts of Ray workers, e.g. 1,2,4")
    if args.requests < ECHO_SHARD or args.requests > ITEMS * 1000:
        parser.error(f"--requests: from {ECHO_SHARD} to {ITEMS * 1000}")

    load_before = loadavg()
    say("starting a local Ray cluster")
    connect("local")
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    if nodes != 1:
        raise SystemExit(f"a new local Ray cluster should have 1 node, this one has {nodes}")
    proc, url = start_server(["--delay-ms", str(args.delay_ms)])
    try:
        with tempfile.TemporaryDirectory(prefix="bench_ray-") as tmp:
            scratch = Path(tmp)
            local = spec_for(url, args.requests, args.concurrency, None)
            runs = [profile_run(local, None, scratch)]  # the local run, no Ray
            for w in workers:
                spec = spec_for(url, args.requests, args.concurrency, w)
                runs.append(profile_run(spec, w, scratch))
            say("one shard from a real ShardWorker, for the driver's measurements")
            batch = eventloop.run(real_batch(local))
            shard = shard_size(local)
            sizes = sorted({*WRITE_BATCHES, shard})
            writes: dict[int, float] = {}
            for size in sizes:
                records = rekeyed(batch, args.driver_records, f"write-{size}")
                writes[size] = write_rate(records, size, scratch / f"write-{size}")
                say(f"store writes of {size}: {writes[size]:,.0f} records/s")
            echoes = round_trips(batch, sorted({ECHO_SHARD, shard}), args.driver_records, scratch)
    finally:
        proc.kill()
        proc.wait()
    load_after = loadavg()
    print(section(args, local, runs, batch, shard, writes, echoes, (load_before, load_after)))


def section(
    args: argparse.Namespace,
    spec: RunSpec,
    runs: list[Run],
    batch: Batch,
    shard: int,
    writes: dict[int, float],
    echoes: list[Echoed],
    loads: tuple[str, str],
) -> str:
    local, on_ray = runs[0], runs[1:]
    command = "PYTHONPATH=src python " + " ".join(shlex.quote(a) for a in sys.argv)
    run_rows = [
        [
            "local (no Ray, `processes: 1`)"
            if run.workers is None
            else f"Ray, {run.workers} worker(s)",
            str(run.in_flight),
            f"{run.rate:,.0f}",
            f"{run.rate / local.rate:.2f}",
            f"{run.wall_s:.2f}",
            f"{run.outside_s:.1f}",
            f"{run.stored:,} / {run.expected:,}" + ("" if run.stored == run.expected else " **!**"),
            str(run.errors),
        ]
        for run in runs
    ]
    write_rows = [[str(size), f"{rate:,.0f}"] for size, rate in writes.items()]
    echo_rows = [
        [
            str(e.actors),
            str(e.shard),
            "written (Writer)" if e.written else "counted",
            f"{e.rate:,.0f}",
        ]
        for e in echoes
    ]
    header = [
        "run",
        "in flight",
        "records/s",
        "x local",
        "wall s",
        "outside s",
        "stored / expected",
    ]
    run_table = table([*header, "errors"], run_rows)
    record, _ = batch[0]
    one = next((r for r in on_ray if r.workers == 1), None)
    per_worker = one.rate if one else on_ray[0].rate / (on_ray[0].workers or 1)
    ceiling = max(e.rate for e in echoes if e.written and e.shard == shard)
    best = max(on_ray, key=lambda r: r.rate)
    store_only = writes[shard]
    nodes, cores = len(ray.nodes()), os.cpu_count()
    actors = " and ".join(map(str, ECHO_ACTORS))
    held_back = (
        "the driver's ceiling"
        if best.rate >= ceiling
        else f"something other than the driver's ceiling (here: the {cores} cores that the "
        "server, the actors, Ray's processes and the driver share)"
    )
    return f"""## Issue 15: a profile run on Ray, and how many workers one driver serves

Measured {time.strftime("%Y-%m-%d")} on {os.cpu_count()} cores; load average (1 / 5 / 15 min) \
{loads[0]} before, {loads[1]} after; tradeoff at {commit()}; Python \
{platform.python_version()}, Ray {ray.__version__}.

Command: `{command}`

One local Ray cluster of {nodes} node(s) (`ray.init`, started once) on this machine; the \
driver, its actors, Ray's own processes and benchmarks/fast_server.py share its {cores} cores.

### Throughput against benchmarks/fast_server.py

One model `openai:URL#m`, task `arith`, `limit` {spec.limit} x `samples` {spec.samples} = \
{local.expected:,} requests of {MAX_TOKENS} tokens, the \
server waiting {args.delay_ms:g} ms before each chunk; {args.concurrency} in flight per worker \
(shards of {shard}, {IN_FLIGHT} in flight per actor). Records/s = done / wall_s, wall_s from the \
first request to the last record (RunResult.wall_s); outside: the rest of `profile()` (Ray actors \
started and their models warmed, store opened and closed). Stored: count of the run store's \
records against those expected.

{run_table}

### The driver's ceiling, no model involved

Store writes: `Store.write_records` into a fresh store, {args.driver_records:,} records per row \
in transactions of the size shown; the records: one shard a real ShardWorker ran against the \
server above ({len(record.calls)} call each, output {record.output!r}), re-keyed with fresh \
item ids.

{table(["records per transaction", "records/s"], write_rows)}

Ray round trip: `Pool.run` itself, {args.driver_records:,} records in shards handed to actors \
that answer each at once with that batch keyed as the shard asked ({IN_FLIGHT} in flight per \
actor, `ray.wait` on the pending refs); each record reaching the driver counted, or also \
written through the runner's `Writer` (one transaction per event-loop turn) as a Ray run does.

{table(["actors", "shard", "at the driver", "records/s"], echo_rows)}

### What this means

One Ray worker here ({args.concurrency} in flight) stores {per_worker:,.0f} records/s. The \
driver absorbs at most {ceiling:,.0f} records/s through Ray and its store in shards of {shard} \
(the better of {actors} actors; its store alone takes {store_only:,.0f} records/s in \
transactions of {shard}). One driver therefore serves {ceiling / per_worker:.1f} workers of this \
rate: **{math.floor(ceiling / per_worker)} worker(s)** before it is the bottleneck. The best Ray \
run here, {best.workers} worker(s), stored {best.rate:,.0f} records/s, \
{best.rate / local.rate:.2f}x the local run's {local.rate:,.0f} and {best.rate / ceiling:.0%} of \
the driver's ceiling: the Ray runs here were held back by {held_back}."""


if __name__ == "__main__":
    main()
