"""`tradeoff serve` on a GPU: torch models behind the OpenAI-compatible endpoint, metered by NVML.

    PYTHONPATH=src python3 benchmarks/gpu_serve_check.py --out DIR [--requests 10]

Serves `small` and `large` of benchmarks/gpu_profile.yaml (Qwen2.5 shapes, random weights),
sends each `--requests` completions one at a time (32 tokens), and prints per model: the client's
median latency, tradeoff's own latency header, and what the store holds afterwards (records,
energy present, J per request). Needs tradeoff's serve dependencies (httptools). The answer
must not wait for NVML's next counter step: its
`x-tradeoff-energy-missing` header says `settling`, and the record gets the energy.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--spec", default="benchmarks/gpu_profile.yaml")
    args = parser.parse_args()
    run = args.out / "serve-run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "serve", "--spec", args.spec,
         "--config", "small", "--config", "large", "--out", str(run), "--port", str(args.port)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{args.port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # the server could not start: say why
            _, err = proc.communicate()
            sys.exit(f"tradeoff serve exited with {proc.returncode}: {err.strip()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    rows = []
    with httpx.Client(timeout=120) as client:
        for model in ("small", "large"):
            latencies, own, settling = [], [], 0
            for i in range(args.requests):
                t0 = time.perf_counter()
                r = client.post(
                    f"{base}/v1/completions",
                    json={"model": model, "prompt": f"{i} + {i} =", "max_tokens": 32},
                )
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                own.append(float(r.headers["x-tradeoff-latency-ms"]))
                settling += "settling" in r.headers.get("x-tradeoff-energy-missing", "")
            rows.append(
                (model, statistics.median(latencies) * 1e3, statistics.median(own), settling)
            )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    print(err.strip().splitlines()[-1] if err.strip() else "")
    db = sqlite3.connect(run / "tradeoff.sqlite")
    names = dict(db.execute("SELECT config_id, name FROM configs").fetchall())
    stored: dict[str, list[float | None]] = {}
    for cid, energy in db.execute("SELECT config_id, energy_j FROM records"):
        stored.setdefault(names[cid], []).append(energy)
    meters = [json.loads(m[0]) for m in db.execute("SELECT summary FROM meters")]
    print(
        "\n| model | requests | client median ms | x-tradeoff-latency-ms median | answers "
        "with energy settling | records | records with energy | mean J/request |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model, client_ms, own_ms, settling in rows:
        energies = stored.get(model, [])
        have = [e for e in energies if e is not None]
        mean = sum(have) / len(have) if have else float("nan")
        print(f"| {model} | {args.requests} | {client_ms:.1f} | {own_ms:.1f} | {settling} "
              f"| {len(energies)} | {len(have)} | {mean:.2f} |")  # fmt: skip
    total = sum(e for es in stored.values() for e in es if e is not None)
    for m in meters:
        print(
            f"\nidle baseline {m['idle_w']:.1f} W; counter {m['counter_total_j']:.1f} J while "
            f"metering; requests {total:.1f} J; idle between requests {m['idle_j']:.1f} J"
        )


if __name__ == "__main__":
    main()
