"""What a grid-wide barrier costs on the GPU against a kernel boundary (issue 17): the figure
that decides whether one persistent kernel per layer, its phases separated by barriers, can
beat the chain of short kernels the Qwen2.5-0.5B shape's decode step is now (about 5.7 kernels
a layer taking 24 µs where the layer's bytes take 7; benchmarks/RESULTS.md).

    PYTHONPATH=src python3 benchmarks/gpu_barrier_probe.py [--programs 132,66,33]
        [--phases 64] [--width 1024]

Both sides do the same work, phase after phase: every program reads the whole vector the last
phase wrote (WIDTH float32, as a product reads its input, past the L1 cache) and writes its
slice of the next. **Persistent**: one launch of PROGRAMS programs (at most one per SM, so that
all are resident), a barrier between phases: each program counts itself in with a release at
the GPU's scope and spins on an acquire until all have; a second count lets the last program
out set both back to 0 for the next launch. **Chained**: a launch a phase, each waiting for
the one before, launched plainly or as a dependent (`dependent_launch`, as the engine's
`pdl=1`). Every variant is captured in a CUDA graph of REPEATS launches and replayed; µs a
phase is the persistent kernel's time at PHASES phases less its time at 1, over PHASES − 1,
and the chained graph's time over its launches. Both sides' final vectors must agree to float32
rounding (a broken barrier lets a program read a stale vector, off by far more). A spin that
outlasts SPIN_LIMIT iterations gives up and is reported, instead of hanging the GPU. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch
import triton
import triton.language as tl

from tradeoff.engines import dependent_launch
from tradeoff.engines.dependent_launch import wait_for_previous

REPEATS = 20  # launches (persistent) or chains (chained) captured in one graph
REPLAYS = 20
SPIN_LIMIT = 10_000_000


@triton.jit
def _phase_work(buf_ptr, phase, pid, WIDTH: tl.constexpr, SLICE: tl.constexpr):
    """One phase of one program: the whole vector of the last phase in (past L1: other programs
    wrote it), this program's slice of the next out."""
    src = buf_ptr + (phase % 2) * WIDTH
    dst = buf_ptr + ((phase + 1) % 2) * WIDTH
    total = tl.sum(tl.load(src + tl.arange(0, WIDTH), cache_modifier=".cg"), axis=0)
    mine = pid * SLICE + tl.arange(0, SLICE)
    ok = mine < WIDTH
    x = tl.load(src + mine, mask=ok, other=0.0, cache_modifier=".cg")
    tl.store(dst + mine, x * 0.5 + total * (1.0 / WIDTH), mask=ok)


@triton.jit
def _persistent(
    buf_ptr, count_ptr, stuck_ptr, PHASES: tl.constexpr, WIDTH: tl.constexpr, SLICE: tl.constexpr,
    SPIN_LIMIT: tl.constexpr,
):  # fmt: skip
    """PHASES phases with a grid-wide barrier after each; count_ptr[0] counts arrivals,
    count_ptr[1] exits, both set back to 0 by the last program out; stuck_ptr[0] counts
    spins that gave up."""
    pid, programs = tl.program_id(0), tl.num_programs(0)
    for phase in range(PHASES):
        _phase_work(buf_ptr, phase, pid, WIDTH, SLICE)
        tl.debug_barrier()  # every thread's stores above come before the count's release
        tl.atomic_add(count_ptr, 1, sem="release", scope="gpu")
        target = (phase + 1) * programs
        seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
        spins = 0
        while (seen < target) & (spins < SPIN_LIMIT):
            seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
            spins += 1
        if seen < target:
            tl.atomic_add(stuck_ptr, 1)
        tl.debug_barrier()  # no thread reads the next phase's input before the count is seen
    if tl.atomic_add(count_ptr + 1, 1, sem="acq_rel", scope="gpu") == programs - 1:
        tl.store(count_ptr, 0)  # every program has passed every barrier
        tl.store(count_ptr + 1, 0)


@triton.jit
def _chained(buf_ptr, phase, WIDTH: tl.constexpr, SLICE: tl.constexpr, PDL: tl.constexpr):
    """One phase a launch; as a dependent it waits for the launch before it first."""
    if PDL:
        wait_for_previous()
    _phase_work(buf_ptr, phase, tl.program_id(0), WIDTH, SLICE)


def graph_us(run, launches: int) -> float:
    """µs per launch of `run` (REPEATS launches captured in one graph, replayed)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run()  # compiles outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(REPEATS):
            run()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPLAYS):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (REPLAYS * REPEATS * launches)


def measure(programs: int, width: int, phases: int) -> tuple[dict[str, float], bool, int]:
    """µs a phase on each side with `programs` programs; whether their final vectors agree;
    how many spins gave up."""
    device = torch.device("cuda")
    counts = torch.zeros(2, dtype=torch.int32, device=device)
    stuck = torch.zeros(1, dtype=torch.int32, device=device)
    cut = triton.next_power_of_2(triton.cdiv(width, programs))
    start = torch.randn(2 * width, device=device)
    buf = start.clone()

    def persistent(n: int) -> None:
        _persistent[(programs,)](buf, counts, stuck, n, width, cut, SPIN_LIMIT)

    def chained(n: int, pdl: bool) -> None:
        with dependent_launch.enabled(pdl):
            for phase in range(n):
                _chained[(programs,)](buf, phase, width, cut, pdl, **dependent_launch.options())

    # the same phases on each side from the same vector: they agree, or a barrier broke
    finals = []
    for run in (lambda: persistent(phases), lambda: chained(phases, False)):
        buf.copy_(start)
        run()
        torch.cuda.synchronize()
        finals.append(buf[(phases % 2) * width : (phases % 2 + 1) * width].clone())
    agree = torch.allclose(finals[0], finals[1], rtol=1e-5, atol=1e-6)
    one = graph_us(lambda: persistent(1), 1)
    many = graph_us(lambda: persistent(phases), 1)
    results = {
        "persistent, µs a phase": (many - one) / (phases - 1),
        "persistent, a launch of one phase, µs": one,
        "chained, µs a phase": graph_us(lambda: chained(phases, False), phases),
        "chained as dependents, µs a phase": graph_us(lambda: chained(phases, True), phases),
    }
    return results, agree, int(stuck.item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    parser.add_argument("--programs", default=f"{sms},{sms // 2},{sms // 4}")
    parser.add_argument("--phases", type=int, default=64)
    parser.add_argument("--width", type=int, default=1024, help="float32 values a phase reads")
    args = parser.parse_args()
    width, phases = triton.next_power_of_2(args.width), args.phases
    rows = []
    t0 = time.perf_counter()
    for asked in (int(p) for p in args.programs.split(",")):
        programs = min(asked, sms)  # one a SM at most: all resident, or the barrier hangs
        results, agree, stuck = measure(programs, width, phases)
        rows.append((programs, results, agree, stuck))
        print(programs, results, "agree" if agree else "DISAGREE", f"stuck {stuck}", flush=True)
    print(
        f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, Triton "
        f"{triton.__version__}: {phases} phases of {width} float32 read a phase, {REPEATS} "
        f"launches a graph, {REPLAYS} replays ({time.perf_counter() - t0:.0f} s)\n"
    )
    keys = list(rows[0][1])
    print("| programs | " + " | ".join(keys) + " | final vectors agree | spins given up |")
    print("|" + " --- |" * (len(keys) + 3))
    for programs, results, agree, stuck in rows:
        cells = " | ".join(f"{results[k]:.2f}" for k in keys)
        print(f"| {programs} | {cells} | {'yes' if agree else 'NO'} | {stuck} |")


if __name__ == "__main__":
    main()
