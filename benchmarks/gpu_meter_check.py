"""Check NVML metering on a GPU: a record's latency against its calls', energies against the
counter's total, and a model on the CPU beside one on the GPU.

    python benchmarks/gpu_meter_check.py --out DIR [--limit 8] [--max-tokens 64] [--load 16]

Profiles three configurations on the arith task: `single` and a batched `vote` of the
Qwen2.5-0.5B shape (random weights) on the GPU, and `single` of a tiny Llama-like shape on the CPU.
Then it reads the run's store and prints, per configuration:
- the gap between each record's e2e and its calls' longest e2e (the time the record spent outside
  its engine calls: before 2026-12-07 it held the wait for NVML's next counter step, ~100 ms);
- J/query and the energy's source, or why it is missing;
and for the run: the records' energies plus the idle energy between them against the counter's
total over the session (they should add up). With `--load N` it then runs `tradeoff load` of
`gpu-single` at a closed loop of 1 (`--profile synchronous`, N requests) and prints the time from
each answer to the next send (before 2026-12-07 the next request waited for the last one's energy
to settle, up to a counter step) and the requests/s it achieved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

TINY = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "vocab_size": 512, "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--load", type=int, default=0, help="requests of a closed loop of 1")
    args = parser.parse_args()
    if args.load == 1 or args.load < 0:
        parser.error("--load takes 2 requests or more (the time between two), or 0: none")
    args.out.mkdir(parents=True, exist_ok=True)
    tiny = args.out / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    head = (
        "models:\n"
        "  gpu: torch:qwen2.5-0.5b?random_weights=1&ctx=512\n"
        f"  cpu: torch:{tiny}?random_weights=1&device=cpu\n"
        "tasks: [arith]\n"
        f"limit: {args.limit}\n"
        f"sampling: {{temperature: 0.0, max_tokens: {args.max_tokens}, seed: 0}}\n"
        "configs:\n"
        "  - {strategy: single, model: gpu, name: gpu-single}\n"
    )
    spec = args.out / "spec.yaml"
    spec.write_text(
        head + "  - {strategy: vote, model: gpu, n: 4, temperature: 0.7, name: gpu-vote}\n"
        "  - {strategy: single, model: cpu, name: cpu-single}\n"
    )
    run = args.out / "run"
    command = [sys.executable, "-m", "tradeoff", "profile", str(spec), "--out", str(run)]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    report(run)
    if args.load:
        run, spec = args.out / "load", args.out / "load.yaml"
        spec.write_text(head)
        command = [
            sys.executable, "-m", "tradeoff", "load", str(spec), "--out", str(run),
            "--profile", "synchronous", "--scrape", "off",
            "--max-requests", str(args.load), "--max-seconds", "600",
        ]  # fmt: skip
        print("$", " ".join(command), flush=True)
        done = subprocess.run(command)
        if done.returncode:  # its records are stored before its chart is drawn (altair, vl-convert)
            print(f"(load exited {done.returncode} after its run)")
        report_load(run)


def report(run: Path) -> None:
    from tradeoff.store import Store

    store = Store.open(run)
    try:
        records = store.records()
        meters = store.run().get("meters") or []
    finally:
        store.close()
    print("\n| config | records | e2e - longest call e2e, median / max ms | J/query (mean) | "
          "energy source | missing because |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for config, group in records.groupby("config", sort=False):
        gaps = []
        for e2e, calls in zip(group["e2e_s"], group["calls"], strict=True):
            spans = [c["e2e_s"] for c in (json.loads(calls) if calls else []) if c.get("e2e_s")]
            if spans:
                gaps.append(1000 * (e2e - max(spans)))
        energy = group["energy_j"].dropna()
        sources = ", ".join(sorted(group["energy_source"].dropna().unique())) or "-"
        missing = "; ".join(sorted(group["energy_missing"].dropna().unique())) or "-"
        gap = f"{statistics.median(gaps):.2f} / {max(gaps):.2f}" if gaps else "n/a"
        joules = f"{energy.mean():.2f}" if len(energy) else "n/a"
        print(f"| {config} | {len(group)} | {gap} | {joules} | {sources} | {missing} |")
    print_counter(records, meters)


def print_counter(records, meters: list[dict]) -> None:
    """The records' energies plus the idle energy between them against the counter's total."""
    records_j = float(records["energy_j"].dropna().sum())
    for m in meters:
        if "counter_total_j" in m:
            total, idle = m["counter_total_j"], m["idle_j"]
            print(
                f"\n{m['source']}: counter moved {total:.3f} J over the session; records "
                f"{records_j:.3f} J + idle {idle:.3f} J = {records_j + idle:.3f} J "
                f"({100 * (records_j + idle) / total:.3f}% of it); idle baseline "
                f"{m['idle_w']:.1f} W (not subtracted)"
            )


def report_load(run: Path) -> None:
    from tradeoff.store import Store

    store = Store.open(run)
    try:
        records = store.records().sort_values("sent_s")
        meters = store.run().get("meters") or []
    finally:
        store.close()
    if len(records) < 2:
        print(f"\nload: {len(records)} records stored, no time between two to measure")
        return
    sent, ends = list(records["sent_s"]), list(records["sent_s"] + records["e2e_s"])
    waits = [1000 * (s - e) for s, e in zip(sent[1:], ends[:-1], strict=True)]
    busy = sum(records["e2e_s"])
    print(
        f"\nload, closed loop of 1, {len(records)} requests: from an answer to the next send, "
        f"median {statistics.median(waits):.2f} ms, max {max(waits):.2f} ms; "
        f"{len(records) / (ends[-1] - sent[0]):.3f} requests/s sent over "
        f"{ends[-1] - sent[0]:.3f} s, of which {busy:.3f} s answering "
        f"({100 * busy / (ends[-1] - sent[0]):.1f}%)"
    )
    print_counter(records, meters)


if __name__ == "__main__":
    main()
