"""The harness's own cost: time per request spent outside the engine call, and the rate at which
the whole runner (dispatch, score, store) drives the `openai` engine against a fast local server.

    python benchmarks/bench_harness.py [--requests 5000] [--concurrency 64]
    python benchmarks/bench_harness.py --before /tmp/before/src [--rounds 5]   # side by side

1. In-process: `tradeoff profile` on the bundled smollm2-135m with max_tokens 1, one request at a
   time; overhead per request = (runner wall time - time inside engine calls) / requests.
2. HTTP: the runner against benchmarks/fast_server.py (a canned streaming server in another
   process) at the given concurrency; dispatch rate = records written per second of wall time,
   and the client process's CPU time per request (an upper bound on the harness's share).
3. With `--before SRC` (the src/ of another version, e.g. a worktree of an earlier commit): the
   HTTP part only, for this tree and that one alternately, `--rounds` times each, every run in a
   fresh process; medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tradeoff.config import parse_spec
from tradeoff.runner import profile

HERE = Path(__file__).resolve().parent


def in_process(n_items: int) -> dict[str, float]:
    spec = parse_spec(
        {
            "models": {"small": "smollm2-135m"},
            "tasks": ["arith", "choice", "facts"],
            "limit": n_items,
            "sampling": {"max_tokens": 1},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        r = profile(spec, Path(tmp) / "run", notify=lambda m: None)
    return {
        "requests": r.done,
        "wall_s": r.wall_s,
        "engine_s": r.engine_s,
        "overhead_ms": 1e3 * (r.wall_s - r.engine_s) / r.done,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def over_http(requests: int, concurrency: int) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, str(HERE / "fast_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        url = line.strip().rsplit(" ", 1)[-1]
        samples = -(-requests // 60)  # arith has 60 items
        spec = parse_spec(
            {
                "models": {"fast": f"openai:{url}#fast"},
                "tasks": ["arith"],
                "samples": samples,
                "concurrency": concurrency,
                "sampling": {"max_tokens": 4},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, helpers0 = time.process_time(), _children_cpu()
            r = profile(spec, Path(tmp) / "run", notify=lambda m: None)
            # this process, and the dispatch helpers it started and waited for (not the server,
            # which is still running)
            cpu = time.process_time() - cpu0 + _children_cpu() - helpers0
    finally:
        server.terminate()
        server.wait()
    return {
        "requests": r.done,
        "errors": r.errors,
        "wall_s": r.wall_s,
        "rate": r.done / r.wall_s,
        "cpu_ms": 1e3 * cpu / r.done,
    }


def over_http_in(src: Path, requests: int, concurrency: int) -> dict[str, float]:
    """`over_http` in a fresh process that imports tradeoff from the source tree `src`."""
    code = (
        "import json, sys; from bench_harness import over_http; "
        f"print(json.dumps(over_http({requests}, {concurrency})))"
    )
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def compare(args: argparse.Namespace) -> None:
    trees = {"this tree": HERE.parent / "src", f"before ({args.before})": Path(args.before)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    names = list(trees)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(over_http_in(trees[name], args.requests, args.concurrency))
    made = sorted({int(x["requests"]) for results in runs.values() for x in results})
    requests = str(made[0]) if len(made) == 1 else f"{made[0]}-{made[-1]}"
    cmd = "python benchmarks/bench_harness.py " + " ".join(sys.argv[1:])
    print(f"Command: `{cmd.strip()}`\n")
    print(
        f"The runner against benchmarks/fast_server.py, {requests} requests of 4 tokens at "
        f"concurrency {args.concurrency}, {args.rounds} runs per tree in alternation, each in a "
        f"fresh process ({os.cpu_count()} cores).\n"
    )
    print(
        "| tradeoff | dispatch rate, median (runs) | client CPU per request, median "
        "(dispatching processes) | errors |"
    )
    print("| --- | --- | --- | --- |")
    medians = {}
    for name, results in runs.items():
        medians[name] = statistics.median(x["rate"] for x in results)
        rates = ", ".join(f"{x['rate']:.0f}" for x in results)
        cpu = statistics.median(x["cpu_ms"] for x in results)
        errors = sum(x["errors"] for x in results)
        print(
            f"| {name} | {medians[name]:,.0f} requests/s ({rates}) | {cpu:.3f} ms | {errors:.0f} |"
        )
    this, before = (medians[n] for n in names)
    print(f"\nthis tree / before: {this / before:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=5000,
        help="requests over HTTP, rounded up to whole passes over arith's 60 items (default "
        "5000: 5040 run)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--items", type=int, default=60, help="items per task, in-process part")
    parser.add_argument("--before", metavar="SRC", help="compare with this source tree")
    parser.add_argument("--rounds", type=int, default=5, help="runs per tree, with --before")
    args = parser.parse_args()
    if args.before:
        compare(args)
        return
    a = in_process(args.items)
    b = over_http(args.requests, args.concurrency)
    cmd = "python benchmarks/bench_harness.py " + " ".join(sys.argv[1:])
    print(f"## Harness overhead ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n")
    print(f"Command: `{cmd.strip()}`\n")
    print("| measurement | value |")
    print("| --- | --- |")
    print(
        f"| in-process llama.cpp, {a['requests']:.0f} requests of 1 token: time outside the "
        f"engine call per request | {a['overhead_ms']:.3f} ms |"
    )
    print(
        f"| openai engine via the runner, {b['requests']:.0f} requests, concurrency "
        f"{args.concurrency}, fast local server: dispatch rate | {b['rate']:.0f} requests/s |"
    )
    print(f"| same run: client CPU time per request (all of it) | {b['cpu_ms']:.3f} ms |")
    print(f"| same run: errors | {b['errors']:.0f} |")


if __name__ == "__main__":
    main()
