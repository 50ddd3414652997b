"""Does metering perturb what it measures? Time to first token and decode speed of the torch
engine with and without the NVML energy account's sampler thread, greedy and sampled.

    PYTHONPATH=src python3 benchmarks/gpu_meter_overhead.py [--model qwen2.5-0.5b] [--n 10]

For each case: 10 requests (a 429-character prompt, 64 new tokens) on one warmed engine; the
median time to first token and decode tokens/s. Cases: the engine called directly; through
`CallMeter.call` with the NVML account (its sampler reading the counter, power and memory every
10 ms), as `tradeoff profile` runs it; and the sampler alone with the engine called directly.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch

from tradeoff.engines.torch_engine import TorchEngine
from tradeoff.meters.account import EnergyAccount
from tradeoff.meters.energy import nvml_meter
from tradeoff.strategies.calls import CallMeter
from tradeoff.types import Generation, Request


def stats(gens: list[Generation]) -> tuple[float, float]:
    ttft = statistics.median(g.ttft_s or 0.0 for g in gens)
    tps = statistics.median(g.decode_tokens_per_s or 0.0 for g in gens)
    return ttft * 1e3, tps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    engine = TorchEngine(f"torch:{args.model}?random_weights=1&ctx=1024")
    engine.warm([1])
    meter, why = nvml_meter()
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {args.model}; NVML: "
          f"{'yes' if meter else why}")  # fmt: skip
    rows = []
    for temperature in (0.0, 1.0):
        request = Request(prompt="x" * 429, max_tokens=64, temperature=temperature, seed=1)
        engine.generate(request)
        direct = [engine.generate(request) for _ in range(args.n)]
        rows.append(("direct", temperature, *stats(direct)))
        if meter is None:
            continue
        account = EnergyAccount(meter, idle_s=0.0).open()
        try:
            sampled = [engine.generate(request) for _ in range(args.n)]
            rows.append(("direct, sampler running", temperature, *stats(sampled)))
            calls = CallMeter({"m": engine}, meter, "", account=account)

            async def through_meter(
                cm: CallMeter = calls, r: Request = request
            ) -> list[Generation]:
                await cm.call("m", r)  # the engine's own thread meets this shape first
                return [(await cm.call("m", r)).generation for _ in range(args.n)]

            t0 = time.perf_counter()
            metered = asyncio.run(through_meter())
            wall = time.perf_counter() - t0
            rows.append(("CallMeter + NVML account", temperature, *stats(metered)))
            print(f"CallMeter wall {wall:.2f} s for {args.n} requests (settling included)")
        finally:
            account.close()
    print("\n| case | temperature | median TTFT ms | median decode tok/s |")
    print("| --- | --- | --- | --- |")
    for case, temperature, ttft, tps in rows:
        print(f"| {case} | {temperature:g} | {ttft:.1f} | {tps:.1f} |")


if __name__ == "__main__":
    main()
