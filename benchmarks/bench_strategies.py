"""Sweep `switch` and `cascade` thresholds on the bundled models, beside both single models.

    python benchmarks/bench_strategies.py [--task facts] [--limit N] [--out DIR]

Prints, per configuration: accuracy with its 95% interval, the share of output tokens written by
the large model (switch) or of queries escalated to it (cascade), analytic GFLOPs per query,
latency per query, and the share of the large model's accuracy kept: the EAD paper's bar is at
least 95% of the large model's accuracy with the large model on at most 50% of tokens (or
queries). Where the large model is not better than the small one there is nothing to trade, and
the table shows it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tradeoff.analysis.metrics import accuracy_interval
from tradeoff.config import parse_spec
from tradeoff.runner import profile
from tradeoff.store import Store

SWITCH = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 1e9]
CASCADE = [0.0, 0.25, 0.5, 1.0, 2.0, 1e9]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", action="append", help="built-in task(s); default facts")
    parser.add_argument("--limit", type=int, default=None, help="items per task (default all)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs") / time.strftime("sweep-%H%M%S"))
    args = parser.parse_args()
    tasks = args.task or ["facts"]
    pair = ["small", "large"]
    spec = parse_spec(
        {
            "models": {"small": "smollm2-135m", "large": "gemma3-270m"},
            "tasks": tasks,
            "limit": args.limit,
            "sampling": {"max_tokens": args.max_tokens},
            "configs": [
                {"model": "small"},
                {"model": "large"},
                {"strategy": "switch", "models": pair, "threshold": SWITCH},
                {"strategy": "cascade", "models": pair, "signal": "logprob", "threshold": CASCADE},
            ],
        }
    )
    t0 = time.perf_counter()
    result = profile(spec, args.out, notify=lambda m: print(m, file=sys.stderr))
    wall = time.perf_counter() - t0
    store = Store.open(result.directory)
    try:
        df = store.records()
        names = [c["name"] for c in store.configs()]
    finally:
        store.close()
    extra = df["extra"].map(json.loads)
    large_acc = df[df["config"] == "large"]["score"].mean()

    def large_share(name: str) -> str:
        rows = extra[df["config"] == name]
        if name.startswith("switch"):
            tokens = df[df["config"] == name]["output_tokens"].sum()
            return f"{rows.map(lambda e: e['tokens_large']).sum() / max(tokens, 1):.0%} of tokens"
        if name.startswith("cascade"):
            return f"{rows.map(lambda e: e['escalated']).mean():.0%} of queries"
        return "100%" if name == "large" else "0%"

    cmd = "python benchmarks/bench_strategies.py " + " ".join(sys.argv[1:])
    print(
        f"## switch and cascade sweeps ({time.strftime('%Y-%m-%d')}), tasks: {', '.join(tasks)}\n"
    )
    print(f"Command: `{cmd.strip()}` ({len(df)} records, {wall:.0f} s)\n")
    print(
        "| config | accuracy [95% CI] | on the large model | kept of large's accuracy "
        "| GFLOPs/query (analytic) | latency s/query |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        d = df[df["config"] == name]
        acc, low, high = accuracy_interval(d["score"].fillna(0.0).to_numpy(dtype=float))
        kept = f"{acc / large_acc:.0%}" if large_acc > 0 else "n/a"
        print(
            f"| {name} | {acc:.3f} [{low:.3f}, {high:.3f}] | {large_share(name)} | {kept} | "
            f"{d['flops'].mean() / 1e9:.2f} | {d['e2e_s'].mean():.3f} |"
        )
    print(f"\nRun directory: {result.directory}")


if __name__ == "__main__":
    main()
