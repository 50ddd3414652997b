"""What `tradeoff serve` adds to a request's latency, and whether it holds up over a long soak.

    python benchmarks/bench_serve.py [--requests 120] [--concurrency 1,4,16] [--soak 2000]

An upstream llama.cpp server (llama-cpp-python's `llama_cpp.server`, the bundled smollm2-135m,
one thread) runs on loopback, and `tradeoff serve` serves it as a `single` configuration.

1. Latency added, at each concurrency: the same streamed chat request is sent directly to the
   upstream and through tradeoff, in alternating blocks, by the same client code (aiohttp and
   tradeoff's SSEDecoder, as tradeoff's own upstream client, the openai engine, uses them), so
   that client work cancels out of the paired difference. Reported:
   - paired: for each request through tradeoff, the client's end-to-end time minus the
     upstream call's own end-to-end time as tradeoff's upstream client measured it (from the
     request's stored record); the same for time to first token. Queueing at the upstream is
     in both, so this is what tradeoff itself adds;
   - unpaired: p50 and p99 through tradeoff minus p50 and p99 direct (noisier: both include the
     upstream's own variation).
2. Soak: `--soak` requests through tradeoff (streamed and not, alternating); the server's
   resident memory after the first tenth (warm-up) and at the end; served = stored.

Prints a markdown block for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
from section import SRC, pythonpath

from tradeoff.engines.bundled import bundled_path
from tradeoff.engines.sse import SSEDecoder
from tradeoff.store import Store

MODEL = "smollm2-135m"
MESSAGES = [{"role": "user", "content": "Name a colour."}]


def start_upstream(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_path(MODEL)),
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
            "--interrupt_requests", "False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit("llama_cpp.server did not start")
        time.sleep(0.25)


def start_fast_upstream(delay_ms: float) -> tuple[subprocess.Popen, int]:
    """benchmarks/fast_server.py: canned streams, no model, so no CPU taken from tradeoff."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fast_server.py")), "--port", "0",
         "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r":(\d+)/v1", line)
    if not match:
        raise SystemExit(f"fast_server did not start: {line}")
    return proc, int(match.group(1))


def start_tradeoff(spec: Path, out: Path, src: Path = SRC) -> tuple[subprocess.Popen, str]:
    """`tradeoff serve` from this tree, or from the source tree `src` (another version)."""
    env = {**os.environ, "PYTHONPATH": pythonpath(src)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "serve", "--spec", str(spec), "--out", str(out),
         "--port", "0", "--max-concurrency", "256"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r" at (http://\S+)/v1 ", line)
    if not match:
        raise SystemExit(f"tradeoff serve did not start: {line}")
    return proc, match.group(1)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Timed:
    __slots__ = ("id", "e2e", "ttft", "ok")

    def __init__(self) -> None:
        self.id: str | None = None
        self.e2e = 0.0
        self.ttft: float | None = None
        self.ok = False


class Client:
    """The load generator's HTTP client, the same for both paths: one aiohttp session with the
    settings of tradeoff's own upstream client (the openai engine), SSE split by SSEDecoder, so
    the client work on the two sides of the paired difference is the same code."""

    def __init__(self) -> None:
        # Made inside the running event loop (aiohttp sessions belong to one).
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=0),
            headers={
                "content-type": "application/json",
                "accept": "text/event-stream",
                "accept-encoding": "identity",
            },
            timeout=aiohttp.ClientTimeout(sock_connect=300, sock_read=300),
            auto_decompress=False,
        )

    async def aclose(self) -> None:
        await self.session.close()


async def ask(client: Client, root: str, model: str, max_tokens: int, stream: bool = True) -> Timed:
    """One chat request, timed on this client's clock; the id of the answer."""
    # The fields tradeoff sends upstream (usage in the stream, a seed), so that the upstream
    # does the same work on both paths.
    body = json.dumps(
        {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0.0,
         "seed": 0, "stream": stream, "stream_options": {"include_usage": True}}
    ).encode()  # fmt: skip
    timed = Timed()
    t0 = time.perf_counter()
    async with client.session.post(f"{root}/v1/chat/completions", data=body) as response:
        status = response.status
        if not stream:
            data = json.loads(await response.read())
            timed.id, timed.ok = data.get("id"), status == 200
        else:
            feed = SSEDecoder().feed
            async for received in response.content.iter_any():
                for payload in feed(received):
                    if payload == b"[DONE]":
                        timed.ok = status == 200
                        continue
                    chunk = json.loads(payload)
                    timed.id = timed.id or chunk.get("id")
                    choices = chunk.get("choices") or []
                    if (
                        timed.ttft is None
                        and choices
                        and (choices[0].get("delta") or {}).get("content")
                    ):
                        timed.ttft = time.perf_counter() - t0
    timed.e2e = time.perf_counter() - t0
    return timed


async def run_block(
    client: Client, root: str, model: str, n: int, concurrency: int, max_tokens: int,
    stream: bool | None = True,
) -> list[Timed]:  # fmt: skip
    """`n` requests, `concurrency` in flight; stream=None alternates streamed and not."""
    results: list[Timed] = []
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            mode = stream if stream is not None else i % 2 == 0
            results.append(await ask(client, root, model, max_tokens, mode))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def upstream_times(out: Path) -> dict[str, tuple[float, float | None]]:
    """Request id -> (upstream call end-to-end s, upstream call TTFT s), from the store."""
    store = Store.open(out)
    try:
        df = store.records()
    finally:
        store.close()
    times = {}
    for item_id, calls in zip(df["item_id"], df["calls"]):
        (call,) = json.loads(calls)
        times[item_id] = (call["e2e_s"], call["ttft_s"])
    return times


async def latency(args: argparse.Namespace, upstream: str, served: dict[str, str]) -> list[dict]:
    """Blocks of requests to each path (direct, and each tradeoff in `served`), in an order that
    rotates every round, so that drift in the machine's load falls on all alike."""
    rows = []
    client = Client()
    try:
        paths = {"direct": upstream, **served}
        for root in paths.values():  # warm-up, every path
            await run_block(client, root, MODEL, 8, 2, args.max_tokens)
        for concurrency in args.concurrency:
            timed: dict[str, list[Timed]] = {name: [] for name in paths}
            block = max(concurrency * 2, 20)
            rounds = max(len(paths), -(-args.requests // block))  # at least `requests` each
            names = list(paths)
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    timed[name] += await run_block(
                        client, paths[name], MODEL, block, concurrency, args.max_tokens
                    )
            rows.append({"concurrency": concurrency, **timed})
    finally:
        await client.aclose()
    return rows


async def soak(args: argparse.Namespace, served: str, pid: int) -> dict:
    client = Client()
    try:
        warm = max(args.soak // 10, 1)
        first = await run_block(
            client, served, MODEL, warm, args.soak_concurrency, args.soak_tokens, None
        )
        rss_warm = rss_mib(pid)
        t0 = time.perf_counter()
        rest = await run_block(
            client, served, MODEL, args.soak - warm, args.soak_concurrency, args.soak_tokens, None
        )
        wall = time.perf_counter() - t0
        rss_end = rss_mib(pid)
    finally:
        await client.aclose()
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{served}/metrics")).text
    served_total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tradeoff_served_total")
    )
    return {
        "requests": args.soak,
        "ok": sum(t.ok for t in first + rest),
        "rss_warm": rss_warm,
        "rss_end": rss_end,
        "rate": (args.soak - warm) / wall,
        "served_metric": int(served_total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=120, help="per path and concurrency")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16]
    )
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--soak", type=int, default=2000)
    parser.add_argument("--soak-concurrency", type=int, default=8)
    parser.add_argument("--soak-tokens", type=int, default=2)
    parser.add_argument(
        "--upstream",
        choices=["llama", "fast"],
        default="llama",
        help="llama: llama_cpp.server with the bundled model; fast: benchmarks/fast_server.py "
        "(canned tokens, --fast-delay-ms apart), which leaves the CPU to tradeoff",
    )
    parser.add_argument("--fast-delay-ms", type=float, default=5.0)
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="also serve through tradeoff from this source tree (e.g. a worktree of an earlier "
        "commit: its src/), measured side by side in the same run",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.upstream == "fast":
            upstream_proc, port = start_fast_upstream(args.fast_delay_ms)
        else:
            port = _free_port()
            upstream_proc = start_upstream(port)
        upstream = f"http://127.0.0.1:{port}"
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(
            f"models:\n  {MODEL}: 'openai:{upstream}/v1#{MODEL}'\ntasks: [arith]\ntimeout_s: 300\n"
        )
        out = Path(tmp) / "run"
        procs: dict[str, subprocess.Popen] = {}
        served: dict[str, str] = {}
        outs = {"via": out}
        if args.before:
            outs["before"] = Path(tmp) / "run-before"
        try:
            for name, directory in outs.items():
                src = Path(args.before) if name == "before" else SRC
                procs[name], served[name] = start_tradeoff(spec, directory, src)
            rows = asyncio.run(latency(args, upstream, served))
            soaked = asyncio.run(soak(args, served["via"], procs["via"].pid)) if args.soak else None
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(120)
            upstream_proc.terminate()
            upstream_proc.wait(60)
        times = {name: upstream_times(directory) for name, directory in outs.items()}
        stored = len(times["via"])
    warm_up = 8  # the first block of latency(), through tradeoff
    sent_via = warm_up + sum(len(r["via"]) for r in rows) + (soaked["requests"] if soaked else 0)
    print_results(args, rows, times, soaked, stored, sent_via)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def print_results(
    args: argparse.Namespace,
    rows: list[dict],
    times: dict[str, dict[str, tuple[float, float | None]]],
    soaked: dict | None,
    stored: int,
    sent_via: int,
) -> None:
    cmd = "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:])
    print(f"Command: `{cmd.strip()}`\n")
    upstream = (
        "llama_cpp.server (smollm2-135m, 1 thread)"
        if args.upstream == "llama"
        else f"benchmarks/fast_server.py (canned tokens {args.fast_delay_ms:g} ms apart)"
    )
    print(
        f"Streamed chat requests, max_tokens {args.max_tokens}, temperature 0; upstream "
        f"{upstream} on loopback. Milliseconds.\n"
    )
    print(
        "| tradeoff | concurrency | n per path | direct p50 / p99 | via tradeoff p50 / p99 | "
        "added, unpaired p50 / p99 | added, paired p50 / p99 | TTFT added, paired p50 / p99 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    labels = {"via": "this tree", "before": f"before ({args.before})"}
    for r in rows:
        direct = [t.e2e * 1e3 for t in r["direct"] if t.ok]
        for name in [n for n in ("via", "before") if n in r]:
            via = [t.e2e * 1e3 for t in r[name] if t.ok]
            paired, paired_ttft = [], []
            for t in r[name]:
                if t.ok and t.id in times[name]:
                    up_e2e, up_ttft = times[name][t.id]
                    paired.append(t.e2e * 1e3 - up_e2e * 1e3)
                    if t.ttft is not None and up_ttft is not None:
                        paired_ttft.append(t.ttft * 1e3 - up_ttft * 1e3)
            print(
                f"| {labels[name]} | {r['concurrency']} | {len(direct)} / {len(via)} "
                f"| {pct(direct, 50):.1f} / {pct(direct, 99):.1f} "
                f"| {pct(via, 50):.1f} / {pct(via, 99):.1f} "
                f"| {pct(via, 50) - pct(direct, 50):+.2f} / {pct(via, 99) - pct(direct, 99):+.2f} "
                f"| {pct(paired, 50):.2f} / {pct(paired, 99):.2f} "
                f"| {pct(paired_ttft, 50):.2f} / {pct(paired_ttft, 99):.2f} |"
            )
            errors = len(r[name]) - len(via)
            if errors:
                print(f"\n{errors} failed requests through {labels[name]}, concurrency "
                      f"{r['concurrency']}")  # fmt: skip
        if len(r["direct"]) != len(direct):
            print(f"\n{len(r['direct']) - len(direct)} failed direct requests")
    print()
    if soaked:
        growth = (soaked["rss_end"] - soaked["rss_warm"]) / soaked["rss_warm"] * 100
        print(
            f"Soak: {soaked['requests']} requests through tradeoff, concurrency "
            f"{args.soak_concurrency}, max_tokens {args.soak_tokens}, streamed and not "
            "alternating.\n"
        )
        print("| measurement | value |")
        print("| --- | --- |")
        print(f"| answered 200 | {soaked['ok']} of {soaked['requests']} |")
        print(f"| rate after warm-up | {soaked['rate']:.1f} requests/s |")
        print(f"| server RSS after warm-up ({soaked['requests'] // 10} requests) | "
              f"{soaked['rss_warm']:.1f} MiB |")  # fmt: skip
        print(f"| server RSS at the end | {soaked['rss_end']:.1f} MiB ({growth:+.1f}%) |")
        print(f"| served (tradeoff_served_total) | {soaked['served_metric']} |")
        print(f"| stored records after SIGTERM | {stored} |")
        print(f"| sent through tradeoff in this run, warm-up included | {sent_via} |")


if __name__ == "__main__":
    main()
