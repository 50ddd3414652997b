"""How many requests per second OpenAIEngine dispatches, and its CPU cost per request.

Starts benchmarks/fast_server.py (a canned streaming server, no model) on a free loopback port,
drives `OpenAIEngine.agenerate` at a fixed concurrency, and prints a markdown block for
benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_openai_dispatch.py [-r 5000] [-c 64] [--max-tokens 4]
        [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tradeoff.engines.openai import OpenAIEngine
from tradeoff.types import Generation, Request

HERE = Path(__file__).resolve().parent


def start_server(extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start fast_server.py on a free port; return the process and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fast_server.py"), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"fast_server.py did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


async def drive(
    engine: OpenAIEngine, requests: int, concurrency: int, max_tokens: int
) -> tuple[list[Generation], float, float]:
    request = Request(
        messages=[{"role": "user", "content": "What is 6 times 7?"}], max_tokens=max_tokens
    )
    # Warm the connection pool so the figures are for the steady state.
    await asyncio.gather(*(engine.agenerate(request) for _ in range(concurrency)))
    results: list[Generation] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            results.append(await engine.agenerate(request))

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await engine.aclose()
    return results, wall, cpu


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--requests", type=int, default=5000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="server delay per token")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the event loop the engine runs in (tradeoff profile's runner uses asyncio's)",
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    proc, url = start_server(["--delay-ms", str(args.delay_ms)])
    try:
        engine = OpenAIEngine(url, "fast", max_connections=max(256, args.concurrency))
        results, wall, cpu = asyncio.run(
            drive(engine, args.requests, args.concurrency, args.max_tokens)
        )
    finally:
        proc.kill()
        proc.wait()

    errors = [g.error for g in results if g.error]
    latencies = sorted(g.e2e_s for g in results)
    ttfts = sorted(g.ttft_s for g in results if g.ttft_s is not None)
    mean_ms = 1000 * sum(latencies) / len(latencies)
    p50_ms, p99_ms = 1000 * percentile(latencies, 0.5), 1000 * percentile(latencies, 0.99)
    command = "PYTHONPATH=src python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"""### OpenAIEngine dispatch against benchmarks/fast_server.py

```
{command}
```

| measure | value |
|---|---|
| requests (concurrency) | {len(results)} ({args.concurrency}), {args.max_tokens} tokens each |
| event loop | {args.loop} |
| errors | {len(errors)}{f" (first: {errors[0]})" if errors else ""} |
| throughput | {len(results) / wall:,.0f} requests/s (wall {wall:.2f} s) |
| e2e latency (client clock) | mean {mean_ms:.2f} ms, p50 {p50_ms:.2f} ms, p99 {p99_ms:.2f} ms |
| time to first token | p50 {1000 * percentile(ttfts, 0.5):.2f} ms |
| client CPU per request (process_time) | {1e6 * cpu / len(results):.0f} µs |

Client and server share this machine: {os.cpu_count()} CPUs, Python {platform.python_version()},
aiohttp {aiohttp.__version__}; the server runs in its own process.""")


if __name__ == "__main__":
    main()
