"""What the GPU offers the roofline and the energy meter, measured on the lent machine:

    PYTHONPATH=src python3 benchmarks/gpu_probe.py [--seconds 6]

1. `tradeoff.meters.calibrate.calibrate_cuda` (the code behind `tradeoff calibrate --device
   cuda`): device copy bandwidth and bf16 matmul FLOP/s, beside the datasheet peaks.
2. NVML's total-energy counter: how often its value changes (sampled every 0.5 ms during a
   matmul loop), the idle power, and the energy of a timed matmul burst by the counter against
   the integral of sampled power.
3. `tradeoff.meters.split` on the real counter: four overlapping "requests" (threads issuing
   matmuls on their own CUDA streams, a matmul counted as a token, at different sizes) share
   the counter's steps; their energies plus the idle energy against the counter's total.
Prints a markdown block for benchmarks/RESULTS.md. Needs torch and nvidia-ml-py (both on the
lent machines); nothing else of tradeoff's dependencies.
"""

from __future__ import annotations

import argparse
import threading
import time

import pynvml
import torch

from tradeoff.meters.calibrate import calibrate_cuda
from tradeoff.meters.hardware import datasheet_peaks
from tradeoff.meters.split import IntervalSplitter, Sampler


def counter_j(handle: object) -> float:
    return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3


def power_w(handle: object) -> float:
    return pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3


def matmul_loop(seconds: float, n: int = 8192) -> int:
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(8):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        done += 8
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()

    cal = calibrate_cuda(args.seconds)
    peaks = cal.peaks
    sheet = datasheet_peaks(peaks.device)

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    torch.cuda.synchronize()
    time.sleep(2.0)  # settle after the calibration's load
    idle = []
    e0, t0 = counter_j(handle), time.perf_counter()
    for _ in range(40):
        idle.append(power_w(handle))
        time.sleep(0.05)
    idle_counter_w = (counter_j(handle) - e0) / (time.perf_counter() - t0)

    samples: list[tuple[float, float, float]] = []  # (time, counter J, power W)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), counter_j(handle), power_w(handle)))
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t_start = time.perf_counter()
    products = matmul_loop(3.0)
    t_end = time.perf_counter()
    time.sleep(0.2)
    stop.set()
    sampler.join()
    inside = [s for s in samples if t_start <= s[0] <= t_end]
    changes = [b[0] - a[0] for a, b in zip(inside, inside[1:]) if b[1] != a[1]]
    change_times = [s[0] for a, s in zip(inside, inside[1:]) if s[1] != a[1]]
    periods = [b - a for a, b in zip(change_times, change_times[1:])]
    by_counter = inside[-1][1] - inside[0][1]
    by_power = sum((b[0] - a[0]) * (a[2] + b[2]) / 2 for a, b in zip(inside, inside[1:]))
    span = inside[-1][0] - inside[0][0]
    flops = 2 * 8192**3 * products

    split = IntervalSplitter()

    def request(name: str, n: int, count: int) -> None:
        a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
        stream = torch.cuda.Stream()
        split.start(name)
        with torch.cuda.stream(stream):
            for _ in range(count):
                torch.matmul(a, a)
                stream.synchronize()
                split.tokens(name)
        split.end(name)

    sizes = {"r1": (8192, 400), "r2": (8192, 200), "r3": (4096, 800), "r4": (2048, 1600)}
    e_start = counter_j(handle)
    with Sampler(lambda: counter_j(handle), split, period_s=0.002) as sampler:
        time.sleep(0.3)
        threads = [
            threading.Thread(target=request, args=(name, n, count))
            for name, (n, count) in sizes.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        shares = {name: sampler.energy_j(name, timeout_s=1.0) for name in sizes}
        time.sleep(0.3)
    e_total = counter_j(handle) - e_start

    rows: list[tuple[str, str]] = []
    bw, fl = peaks.bytes_per_s, peaks.flops_per_s
    rows.append(("calibrate: device copy bandwidth, read + write", f"{bw / 1e12:.2f} TB/s"))
    rows.append(("calibrate: bf16 8192^3 matmul", f"{fl / 1e12:.0f} TFLOP/s"))
    if sheet is not None:
        rows.append(
            (
                f"datasheet ({sheet.source.removeprefix('datasheet: ')})",
                f"{sheet.bytes_per_s / 1e12:.2f} TB/s ({bw / sheet.bytes_per_s:.0%} reached), "
                f"{sheet.flops_per_s / 1e12:.0f} TFLOP/s ({fl / sheet.flops_per_s:.0%} reached)",
            )
        )
    rows.append(
        ("idle power, NVML power reading, mean of 40 over 2 s", f"{sum(idle) / len(idle):.1f} W")
    )
    rows.append(("idle power, energy counter over the same 2 s", f"{idle_counter_w:.1f} W"))
    rows.append(
        (
            f"energy counter: changes in a {span:.1f} s matmul loop, sampled every 0.5 ms",
            str(len(changes)),
        )
    )
    if periods:
        periods.sort()
        median, worst = periods[len(periods) // 2] * 1e3, periods[-1] * 1e3
        rows.append(
            ("energy counter: time between changes, median / max", f"{median:.1f} / {worst:.1f} ms")
        )
    rows.append(
        ("matmul loop: energy by the counter", f"{by_counter:.1f} J ({by_counter / span:.0f} W)")
    )
    gap = (by_power - by_counter) / by_counter
    rows.append(
        ("matmul loop: integral of sampled power", f"{by_power:.1f} J ({gap:+.1%} vs counter)")
    )
    rows.append(("matmul loop: energy per TFLOP", f"{by_counter / (flops / 1e12):.3f} J"))
    per_request = ", ".join(
        f"{name} ({sizes[name][0]}^3 x {sizes[name][1]}) {joules:.1f} J"
        for name, joules in shares.items()
        if joules is not None
    )
    rows.append(("split: four overlapping requests", per_request))
    attributed = sum(j for j in shares.values() if j is not None)
    rows.append(
        (
            "split: requests + idle against the counter's steps while sampling",
            f"{attributed:.1f} + {split.idle_j:.1f} = {attributed + split.idle_j:.1f} J "
            f"of {split.total_j:.1f} J",
        )
    )
    rows.append(
        (
            "split: the counter from before the sampler started to after it stopped",
            f"{e_total:.1f} J (the part outside the sampled span is neither)",
        )
    )

    print(f"Command: `PYTHONPATH=src python3 benchmarks/gpu_probe.py --seconds {args.seconds:g}`\n")
    print(f"Device: {peaks.device}; torch {torch.__version__}\n")
    print("| measurement | value |")
    print("| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
