"""What a grid-wide barrier costs on the GPU against a kernel boundary, and whether a persistent
kernel's phases stream the weights as fast as the engine's kernels (issue 17): the figures that
decide whether one persistent kernel per layer or step, its phases separated by barriers, can
beat the chain of short kernels the Qwen2.5-0.5B shape's decode step is now (about 5.7 kernels
a layer taking 24 µs where the layer's bytes take 7; benchmarks/RESULTS.md).

    PYTHONPATH=src python3 benchmarks/gpu_barrier_probe.py [--part barrier,ffn]
        [--programs 132,66,33] [--phases 64] [--width 1024] [--model qwen2.5-0.5b]
        [--layers 24]
    TRITON_INTERPRET=1 PYTHONPATH=src python3 benchmarks/gpu_barrier_probe.py --check  # CPU

**barrier.** Both sides do the same work, phase after phase: every program reads the whole
vector the last phase wrote (WIDTH float32, as a product reads its input, past the L1 cache)
and writes its slice of the next. Persistent: one launch of PROGRAMS programs (at most one per
SM, so that all are resident), a barrier between phases: each program counts itself in with a
release at the GPU's scope and spins on an acquire until all have; a second count lets the
last program out set both back to 0 for the next launch. Chained: a launch a phase, each
waiting for the one before, launched plainly or as a dependent (`dependent_launch`, as the
engine's `pdl=1`). Every variant is captured in a CUDA graph of REPEATS launches and replayed;
µs a phase is the persistent kernel's time at PHASES phases less its time at 1, over PHASES −
1, and the chained graph's time over its launches. Both sides' final vectors must agree to
float32 rounding (a broken barrier lets a program read a stale vector, off by far more).

**ffn.** The model shape's feed-forward blocks, `--layers` of them a step, each layer its own
random weights (so that a step streams them from memory): gate and up (one product), then
SiLU(gate)·up through the down product, added to the residual. Persistent: the whole step in
one launch, a barrier after each product, each program taking tiles of the weight's rows
one after another (optionally asking for its next tile in L2 as a tile starts); the same tiles
one launch a product, as dependents; and the engine's own products (`decode_linear` tuned,
launched as dependents, the RMSNorm fused), each beside the weight's bytes at the copy
bandwidth. The persistent and chained steps are checked against torch in float32.

A spin that outlasts its limit gives up and is reported, instead of hanging the GPU. Prints
Markdown tables. `--check` runs both kernels in Triton's interpreter against torch, one program
a persistent launch (where a barrier cannot hang).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from tradeoff.engines import dependent_launch
from tradeoff.engines.dependent_launch import prefetch, wait_for_previous

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
def _barrier(count_ptr, stuck_ptr, target, SPIN_LIMIT: tl.constexpr):
    """Count this program in at count_ptr[0] (a release at the GPU's scope, after every
    thread's stores) and spin on an acquire until `target` arrivals are counted; a spin that
    outlasts SPIN_LIMIT iterations gives up and counts itself in stuck_ptr[0]."""
    tl.debug_barrier()  # every thread's stores before this come before the count's release
    tl.atomic_add(count_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
    spins = 0
    while (seen < target) & (spins < SPIN_LIMIT):
        seen = tl.atomic_add(count_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    if seen < target:
        tl.atomic_add(stuck_ptr, 1)
    tl.debug_barrier()  # no thread reads the next phase's input before the count is seen


@triton.jit
def _leave(count_ptr, programs):
    """Count this program out at count_ptr[1]; the last one out, when every program has passed
    every barrier, sets both counts back to 0 for the next launch."""
    if tl.atomic_add(count_ptr + 1, 1, sem="acq_rel", scope="gpu") == programs - 1:
        tl.store(count_ptr, 0)
        tl.store(count_ptr + 1, 0)


@triton.jit
def _persistent(
    buf_ptr, count_ptr, stuck_ptr, PHASES: tl.constexpr, WIDTH: tl.constexpr, SLICE: tl.constexpr,
    SPIN_LIMIT: tl.constexpr,
):  # fmt: skip
    """PHASES phases with a grid-wide barrier after each (`_barrier`, `_leave`)."""
    pid, programs = tl.program_id(0), tl.num_programs(0)
    for phase in range(PHASES):
        _phase_work(buf_ptr, phase, pid, WIDTH, SLICE)
        _barrier(count_ptr, stuck_ptr, (phase + 1) * programs, SPIN_LIMIT)
    _leave(count_ptr, programs)


@triton.jit
def _chained(buf_ptr, phase, WIDTH: tl.constexpr, SLICE: tl.constexpr, PDL: tl.constexpr):
    """One phase a launch; as a dependent it waits for the launch before it first."""
    if PDL:
        wait_for_previous()
    _phase_work(buf_ptr, phase, tl.program_id(0), WIDTH, SLICE)


@triton.jit
def _product_tiles(
    w_ptr, src_ptr, dst_ptr, pid, programs, N: tl.constexpr, K: tl.constexpr,
    GATED: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    LINES: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    """dst[rows] = w[rows] @ f(src) (+ dst[rows] when RESIDUAL) for this program's tiles of
    BLOCK_N rows of w (N × K, 16-bit): tile pid, pid + programs, ...; f is the identity, or
    SiLU(src[:K]) * src[K:] when GATED. src and dst are float32 and read past the L1 cache
    (other programs wrote them). PREFETCH: as a tile starts, the program's next tile's weight
    (LINES 128-byte lines a row) is asked into L2, so that it streams while this one is summed."""
    r = tl.arange(0, BLOCK_N)
    kk = tl.arange(0, BLOCK_K)
    for tile in range(pid, tl.cdiv(N, BLOCK_N), programs):
        rows = tile * BLOCK_N + r
        row_ok = rows < N
        if PREFETCH:
            ahead = tl.minimum((tile + programs) * BLOCK_N + r, N - 1)
            lines = tl.minimum(tl.arange(0, LINES) * 64, K - 1)
            prefetch(w_ptr + ahead[:, None] * K + lines[None, :])
        acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + kk
            ok = cols < K
            w = tl.load(
                w_ptr + rows[:, None] * K + cols[None, :],
                mask=row_ok[:, None] & ok[None, :],
                other=0.0,
            )
            x = tl.load(src_ptr + cols, mask=ok, other=0.0, cache_modifier=".cg")
            if GATED:
                up = tl.load(src_ptr + K + cols, mask=ok, other=0.0, cache_modifier=".cg")
                x = x / (1.0 + tl.exp(-x)) * up
            acc += tl.sum(w.to(tl.float32) * x[None, :], axis=1)
        if RESIDUAL:
            acc += tl.load(dst_ptr + rows, mask=row_ok, other=0.0, cache_modifier=".cg")
        tl.store(dst_ptr + rows, acc, mask=row_ok)


@triton.jit
def _ffn_persistent(
    x_ptr, h_ptr, w13_ptr, w2_ptr, count_ptr, stuck_ptr, LAYERS: tl.constexpr, D: tl.constexpr,
    FFN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LINES_UP: tl.constexpr,
    LINES_DOWN: tl.constexpr, PREFETCH: tl.constexpr, SPIN_LIMIT: tl.constexpr,
):  # fmt: skip
    """LAYERS feed-forward blocks of a decode step in one launch, each two phases with a
    grid-wide barrier after each: h = w13[layer] @ x (gate and up), then x += w2[layer] @
    (SiLU(gate) * up). The RMSNorm before the block is left out."""
    pid, programs = tl.program_id(0), tl.num_programs(0)
    for layer in range(LAYERS):
        up = w13_ptr + layer * (2 * FFN * D)
        _product_tiles(
            up, x_ptr, h_ptr, pid, programs, 2 * FFN, D, False, False, BLOCK_N, BLOCK_K, LINES_UP,
            PREFETCH,
        )  # fmt: skip
        _barrier(count_ptr, stuck_ptr, (2 * layer + 1) * programs, SPIN_LIMIT)
        down = w2_ptr + layer * (D * FFN)
        _product_tiles(
            down, h_ptr, x_ptr, pid, programs, D, FFN, True, True, BLOCK_N, BLOCK_K, LINES_DOWN,
            PREFETCH,
        )  # fmt: skip
        _barrier(count_ptr, stuck_ptr, (2 * layer + 2) * programs, SPIN_LIMIT)
    _leave(count_ptr, programs)


@triton.jit
def _ffn_phase(
    w_ptr, src_ptr, dst_ptr, N: tl.constexpr, K: tl.constexpr, GATED: tl.constexpr,
    RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """One phase of `_ffn_persistent` a launch, one tile a program; as a dependent it waits
    for the launch before it first."""
    if PDL:
        wait_for_previous()
    pid, programs = tl.program_id(0), tl.num_programs(0)
    _product_tiles(
        w_ptr, src_ptr, dst_ptr, pid, programs, N, K, GATED, RESIDUAL, BLOCK_N, BLOCK_K, 1, False
    )


class Tiles(NamedTuple):
    """A feed-forward phase's tiles: rows of the weight a tile, columns a load, warps."""

    n: int
    k: int
    warps: int


FFN_TILES = (Tiles(8, 1024, 4), Tiles(16, 1024, 8), Tiles(32, 512, 8))
FFN_SPIN_LIMIT = 200_000  # a fraction of a second a barrier (a phase takes µs): no hang


class Ffn:
    """LAYERS feed-forward blocks' weights (random, each layer its own, so that a step streams
    them from memory as a model's step does) and the step's vectors, float32."""

    def __init__(self, layers: int, dim: int, ffn: int, device: torch.device):
        self.layers, self.dim, self.ffn = layers, dim, ffn
        gen = torch.Generator(device=device).manual_seed(0)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        w13 = torch.randn(layers, 2 * ffn, dim, generator=gen, device=device) / dim**0.5
        w2 = torch.randn(layers, dim, ffn, generator=gen, device=device) * (0.1 / ffn**0.5)
        self.w13, self.w2 = w13.to(dtype), w2.to(dtype)
        self.start = torch.randn(dim, generator=gen, device=device)
        self.x, self.h = self.start.clone(), torch.empty(2 * ffn, device=device)
        self.counts = torch.zeros(2, dtype=torch.int32, device=device)
        self.stuck = torch.zeros(1, dtype=torch.int32, device=device)

    def reference(self) -> torch.Tensor:
        """The step's x from `start`, op by op in float32."""
        x = self.start.clone()
        for w13, w2 in zip(self.w13.float(), self.w2.float(), strict=True):
            gate, up = (w13 @ x).chunk(2)
            x = x + w2 @ (F.silu(gate) * up)
        return x

    def persistent(self, programs: int, blocks: Tiles, prefetch: bool) -> None:
        lines = [triton.next_power_of_2(triton.cdiv(k, 64)) for k in (self.dim, self.ffn)]
        _ffn_persistent[(programs,)](
            self.x, self.h, self.w13, self.w2, self.counts, self.stuck, self.layers, self.dim,
            self.ffn, blocks.n, blocks.k, *lines, prefetch, FFN_SPIN_LIMIT,
            num_warps=blocks.warps,
        )  # fmt: skip

    def chained(self, blocks: Tiles, pdl: bool) -> None:
        n, d, f = blocks.n, self.dim, self.ffn
        with dependent_launch.enabled(pdl):
            for w13, w2 in zip(self.w13, self.w2, strict=True):
                for w, src, dst, rows, k, gated in (
                    (w13, self.x, self.h, 2 * f, d, False),
                    (w2, self.h, self.x, d, f, True),
                ):
                    _ffn_phase[(triton.cdiv(rows, n),)](
                        w, src, dst, rows, k, gated, gated, n, blocks.k, pdl,
                        num_warps=blocks.warps, **dependent_launch.options(),
                    )  # fmt: skip


def check_ffn_on_cpu() -> float:
    """Triton's interpreter (TRITON_INTERPRET=1), one program, small shapes: the persistent
    step's x against `Ffn.reference`, the largest difference relative to the largest value."""
    ffn = Ffn(layers=3, dim=48, ffn=80, device=torch.device("cpu"))
    want = ffn.reference()
    ffn.persistent(1, Tiles(8, 32, 4), prefetch=False)
    worst = float((ffn.x - want).abs().max() / want.abs().max())
    ffn.x.copy_(ffn.start)
    ffn.chained(Tiles(8, 32, 4), pdl=False)
    worst = max(worst, float((ffn.x - want).abs().max() / want.abs().max()))
    assert int(ffn.counts.abs().sum()) == 0 and int(ffn.stuck.item()) == 0
    return worst


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


def check_barrier_on_cpu(width: int = 64, phases: int = 5) -> float:
    """Triton's interpreter, one program (where a barrier cannot hang): the persistent kernel's
    vector after `phases` phases against the chained kernels' and torch's, the largest
    difference relative to the largest value."""
    counts = torch.zeros(2, dtype=torch.int32)
    stuck = torch.zeros(1, dtype=torch.int32)
    start = torch.randn(2 * width, generator=torch.Generator().manual_seed(0))
    want = start[:width].clone()
    for _ in range(phases):
        want = want * 0.5 + want.sum() / width
    worst = 0.0
    for persistent in (True, False):
        buf = start.clone()
        if persistent:
            _persistent[(1,)](buf, counts, stuck, phases, width, width, SPIN_LIMIT)
        else:
            for phase in range(phases):
                _chained[(2,)](buf, phase, width, width // 2, False)
        got = buf[(phases % 2) * width : (phases % 2 + 1) * width]
        worst = max(worst, float((got - want).abs().max() / want.abs().max()))
    assert int(counts.abs().sum()) == 0 and int(stuck.item()) == 0
    return worst


def copy_gb_s(device: torch.device) -> float:
    """Device memory's bandwidth as a copy of 1 GiB measures it (bytes read and written)."""
    a = torch.empty(2**30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        b.copy_(a)
    end.record()
    end.synchronize()
    return 2 * 5 * a.numel() / (start.elapsed_time(end) * 1e-3) / 1e9


def measure_ffn(model: str, layers: int, programs: list[int]) -> list[tuple[str, float, str]]:
    """µs a layer's feed-forward block takes on the GPU, (variant, µs, note) rows: in one
    persistent launch for the whole step (two barriers a layer; one program an SM at most,
    `programs`), the same tiles one launch a phase (as dependents), and the engine's own two
    products (`decode_linear`, tuned, launched as dependents as with `pdl=1`, the RMSNorm
    fused in gate/up), beside the time the block's weight bytes take at the copy bandwidth."""
    from tradeoff.engines import decode_linear
    from tradeoff.engines.hf_config import load_hf_config
    from tradeoff.engines.torch_model import plain_linear

    config = load_hf_config(model)
    device = torch.device("cuda")
    ffn = Ffn(layers, int(config["hidden_size"]), int(config["intermediate_size"]), device)
    want = ffn.reference()
    weight_bytes = (ffn.w13.numel() + ffn.w2.numel()) * ffn.w13.element_size() / layers
    rows = [
        ("the weight's bytes at the copy bandwidth", weight_bytes / copy_gb_s(device) / 1e3, "")
    ]

    def error(run) -> str:  # the step's x against the reference, from `start`
        ffn.x.copy_(ffn.start)
        run()
        torch.cuda.synchronize()
        worst = float((ffn.x - want).abs().max() / want.abs().max())
        return f"error {worst:.1e}" + ("" if worst < 1e-3 else " WRONG")

    for tiles in FFN_TILES:
        how = f"{tiles.n}x{tiles.k} w{tiles.warps}"
        for count in programs:
            for ahead in (False, True):

                def run(count=count, tiles=tiles, ahead=ahead) -> None:
                    ffn.persistent(count, tiles, ahead)

                note = error(run)
                if int(ffn.stuck.item()):  # not all resident: a timing would wait on spins
                    rows.append((f"persistent, {count} programs, {how}", float("nan"), "STUCK"))
                    ffn.stuck.zero_()
                    ffn.counts.zero_()
                    continue
                label = f"persistent, {count} programs, {how}" + (", prefetch" if ahead else "")
                rows.append((label, graph_us(run, layers), note))
        note = error(lambda tiles=tiles: ffn.chained(tiles, True))
        us = graph_us(lambda tiles=tiles: ffn.chained(tiles, True), layers)
        rows.append((f"a launch a phase as dependents, {how}", us, note))

    norm = torch.ones(ffn.dim, dtype=torch.bfloat16, device=device)

    def linear(x, w, norm=None, gated=False, residual=None) -> torch.Tensor:
        y = decode_linear.fused(x, w, None, residual, norm, 1e-6, gated)
        return y if y is not None else plain_linear(x, w, None, residual, norm, 1e-6, gated)

    x0 = ffn.start.to(torch.bfloat16).view(1, 1, -1)

    def engine() -> None:
        x = x0
        for w13, w2 in zip(ffn.w13, ffn.w2, strict=True):
            h = linear(x, w13, norm=norm)
            x = linear(h, w2, gated=True, residual=x)

    with dependent_launch.enabled(True):
        engine()  # tunes both products
        us = graph_us(engine, layers)
    chosen = decode_linear.CHOICES.values()  # gate/up's, then down's
    names = ", ".join(decode_linear.name(b) if b else "cuBLAS" for b in chosen)
    rows.append(("the engine's products (decode_linear, pdl=1, norm fused)", us, names))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="barrier,ffn", help="barrier, ffn, or both")
    parser.add_argument("--programs", help="programs a barrier spans (default: SMs, 1/2, 1/4)")
    parser.add_argument("--phases", type=int, default=64)
    parser.add_argument("--width", type=int, default=1024, help="float32 values a phase reads")
    parser.add_argument("--model", default="qwen2.5-0.5b", help="the feed-forward block's shape")
    parser.add_argument("--layers", type=int, default=24, help="feed-forward blocks a step")
    parser.add_argument(
        "--check",
        action="store_true",
        help="no GPU: run the kernels in Triton's interpreter (TRITON_INTERPRET=1) on the CPU "
        "against torch, one program a persistent launch, and print the largest errors",
    )
    args = parser.parse_args()
    if args.check:
        print(json.dumps({"barrier": check_barrier_on_cpu(), "ffn": check_ffn_on_cpu()}))
        return
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    asked = args.programs or f"{sms},{sms // 2},{sms // 4}"
    counts = [min(int(p), sms) for p in asked.split(",")]  # one an SM at most: all resident
    header = (
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, Triton {triton.__version__}"
    )
    if "barrier" in args.part:
        barrier_table(counts, triton.next_power_of_2(args.width), args.phases, header)
    if "ffn" in args.part:
        t0 = time.perf_counter()
        rows = measure_ffn(args.model, args.layers, counts[:2])
        print(
            f"\n{header}: the {args.model} shape's feed-forward block, {args.layers} layers a "
            f"step (each its own weights, from memory), µs a layer, {REPEATS} steps a graph, "
            f"{REPLAYS} replays ({time.perf_counter() - t0:.0f} s)\n"
        )
        print("| how | µs a layer | note |\n| --- | --- | --- |")
        for label, us, note in rows:
            print(f"| {label} | {us:.2f} | {note} |")


def barrier_table(counts: list[int], width: int, phases: int, header: str) -> None:
    """The barrier against kernel boundaries, a row for each number of programs."""
    rows = []
    t0 = time.perf_counter()
    for programs in counts:
        results, agree, stuck = measure(programs, width, phases)
        rows.append((programs, results, agree, stuck))
        print(programs, results, "agree" if agree else "DISAGREE", f"stuck {stuck}", flush=True)
    print(
        f"\n{header}: {phases} phases of {width} float32 read a phase, {REPEATS} launches a "
        f"graph, {REPLAYS} replays ({time.perf_counter() - t0:.0f} s)\n"
    )
    keys = list(rows[0][1])
    print("| programs | " + " | ".join(keys) + " | final vectors agree | spins given up |")
    print("|" + " --- |" * (len(keys) + 3))
    for programs, results, agree, stuck in rows:
        cells = " | ".join(f"{results[k]:.2f}" for k in keys)
        print(f"| {programs} | {cells} | {'yes' if agree else 'NO'} | {stuck} |")


if __name__ == "__main__":
    main()
