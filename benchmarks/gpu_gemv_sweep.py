"""`decode_linear`'s block shapes, swept wide on the GPU, against cuBLAS (issue 17).

    PYTHONPATH=src python3 benchmarks/gpu_gemv_sweep.py --out DIR
        [--models llama-3.1-8b qwen2.5-0.5b] [--rows 1,8] [--top 3] [--kinds cuda,tc,swap]

For each model shape's four decode-step products (q/k/v with the RMSNorm before it, the output
projection with the residual add, gate/up with the norm, down with SiLU·up and the residual
add; dims from the shipped config) and each batch (rows of x): the µs of cuBLAS's product
alone and of every candidate block shape of the kernel, both ways of summing along K (in every
block, or once after the loop: `late`; loading the next block before multiplying this one or not:
`pipe`), from 2 rows on the tensor cores (`tc`), and there with the weight as the MMA's left
operand, split along K or not (`swap`; `--kinds` picks among these), each timed
by `decode_linear.graph_us` (inside a CUDA graph, the weight arriving from memory), and its
share of the bandwidth measured by `meters.calibrate.calibrate_cuda` in the same run (weight
bytes / µs). The package's own `candidates()` are marked; what the sweep finds best decides
them.

Prints Markdown for benchmarks/RESULTS.md as it goes and writes DIR/gemv_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from tradeoff.engines import decode_linear
from tradeoff.engines.decode_linear import Blocks
from tradeoff.engines.hf_config import load_hf_config
from tradeoff.engines.torch_model import Arch

WIDE_N = (2, 4, 8, 16)
WIDE_K = (128, 256, 512, 1024, 2048)
TC_N = (16, 32, 64, 128)  # the tensor-core shapes, from 2 rows
TC_K = (64, 128, 256, 512)
SWAP_N = (32, 64, 128)  # ... with the weight the left operand, split along K or not
SWAP_K = (64, 128, 256, 512)
SWAP_SPLIT = (1, 2, 4)
SHARED = 200 * 1024  # bytes of shared memory the weight's stages may take (228 KB an SM)


Product = tuple[str, int, int, int, bool, bool]  # name, n, k, input kind, bias, residual


def wide(rows: int, kinds: set[str]) -> list[Blocks]:
    """Every block shape of `kinds` the sweep tries for `rows` (a power of two): on the CUDA
    cores (`cuda`), and from 2 rows on the tensor cores (x padded to 16 rows): x the left
    operand (`tc`), or the weight (`swap`)."""
    cuda_cores = [
        Blocks(n, k, warps, stages, late, pipe=pipe)
        for late in (False, True)
        for n in WIDE_N
        for k in WIDE_K
        if 1024 <= n * k * rows <= 16384
        for warps in (4, 8)
        for stages, pipe in ((1, False), (3, False), (1, True))
    ]
    tensor_cores = [
        Blocks(n, k, warps, stages, dot=True)
        for n in TC_N
        for k in TC_K
        if n * k <= 32768
        for warps in (4, 8)
        for stages in (2, 3, 4)
    ]
    swapped = [
        Blocks(n, k, warps, stages, dot=True, swap=True, split=split)
        for n in SWAP_N
        for k in SWAP_K
        for warps in (4, 8)
        for stages in (3, 4, 5, 6)
        if (n + 16) * k * 2 * stages <= SHARED
        for split in SWAP_SPLIT
    ]
    shapes = {"cuda": cuda_cores, "tc": tensor_cores, "swap": swapped}
    return [b for kind in kinds if rows > 1 or kind == "cuda" for b in shapes[kind]]


def kind(blocks: Blocks) -> str:
    """Which of the sweep's kinds a block shape is, with `late` apart on the CUDA cores."""
    if blocks.dot:
        return "swap" if blocks.swap else "tc"
    return "late" if blocks.late else "cuda"


def products(arch: Arch) -> list[Product]:
    """(name, n, k, input kind, bias, residual) of a decode step's four products."""
    q, kv = arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
    return [
        ("q/k/v, norm", q + 2 * kv, arch.dim, decode_linear.NORMED, arch.qkv_bias, False),
        ("output, residual", arch.dim, q, decode_linear.PLAIN, False, True),
        ("gate/up, norm", 2 * arch.ffn, arch.dim, decode_linear.NORMED, False, False),
        ("down, SiLU·up and residual", arch.dim, arch.ffn, decode_linear.GATED, False, True),
    ]


def sweep(
    model: str, rows: int, bandwidth: float, top: int, kinds: set[str]
) -> list[dict[str, Any]]:
    arch = Arch.from_hf(load_hf_config(model))
    out = []
    for product in products(arch):
        row = sweep_product(product, rows, bandwidth, top, kinds)
        out.append({"model": model, **row})
        best = row["top"][0] if row["top"] else ("-", float("nan"))
        print(
            f"| {model} | {rows} | {row['product']} | {row['n']} × {row['k']} | "
            f"{row['at_bandwidth_us']} | {row['cublas_us']} "
            f"({row['at_bandwidth_us'] / row['cublas_us']:.0%}) | {row['candidates_now_best_us']} "
            f"| {row['best_us']['cuda']} | {row['best_us']['late']} | {row['best_us']['tc']} "
            f"| {row['best_us']['swap']} | {best[0]} "
            f"({row['at_bandwidth_us'] / best[1]:.0%}) | {row['sweep_s']} |",
            flush=True,
        )
        torch.cuda.empty_cache()
    return out


def inputs(product: Product, rows: int) -> tuple[torch.Tensor, ...]:
    """Random bf16 weight, x, bias, residual, norm weight and output for one product."""
    label, n, k, kind, has_bias, has_res = product
    dev, dt = torch.device("cuda"), torch.bfloat16
    w = torch.randn(n, k, device=dev, dtype=dt) / k**0.5
    x = torch.randn(rows, 2 * k if kind == decode_linear.GATED else k, device=dev, dtype=dt)
    bias = torch.randn(n, device=dev, dtype=dt) if has_bias else None
    res = torch.randn(rows, n, device=dev, dtype=dt) if has_res else None
    g = torch.rand(k, device=dev, dtype=dt) + 0.5 if kind == decode_linear.NORMED else None
    return w, x, bias, res, g, torch.empty(rows, n, device=dev, dtype=dt)


def compile_all(work: tuple[Product, int, list[Blocks]]) -> int:
    """Compile (by launching once) each block shape for one product, into Triton's on-disk
    cache; run in worker processes so that the timing loop finds every kernel compiled."""
    product, rows, blocks = work
    w, x, bias, res, g, y = inputs(product, rows)
    gated = product[3] == decode_linear.GATED
    done = 0
    for b in blocks:
        try:
            counts = decode_linear._counters(b, w.shape[0], w.device)
            decode_linear._launch(b, x, w, bias, res, g, 1e-5, gated, y, lambda f: f, counts)
            done += 1
        except Exception:  # noqa: BLE001, S112 - the timing loop reports it
            continue
    torch.cuda.synchronize()
    return done


def sweep_product(
    product: Product, rows: int, bandwidth: float, top: int, kinds: set[str]
) -> dict[str, Any]:
    """One product's cuBLAS time and every block shape's, µs in a CUDA graph."""
    label, n, k, input_kind, has_bias, has_res = product
    w, x, bias, res, g, y = inputs(product, rows)
    plain = x[:, :k].contiguous()
    padded = decode_linear.pad(rows)
    mine = set(decode_linear.candidates(padded))
    gb = w.numel() * w.element_size() / 1e9
    t0 = time.perf_counter()
    cublas = decode_linear.graph_us(lambda v: F.linear(plain, v, bias), w)
    times: dict[str, float] = {}
    kind_of: dict[str, str] = {}
    for blocks in sorted(set(wide(padded, kinds)) | mine):
        kind_of[decode_linear.name(blocks)] = kind(blocks)

        def run(v: torch.Tensor, b: Blocks = blocks) -> None:
            counts = decode_linear._counters(b, n, v.device)
            gated = input_kind == decode_linear.GATED
            decode_linear._launch(b, x, v, bias, res, g, 1e-5, gated, y, lambda f: f, counts)

        try:
            times[decode_linear.name(blocks)] = decode_linear.graph_us(run, w)
        except Exception as e:  # noqa: BLE001 - a shape the compiler refuses is a result
            print(f"  {decode_linear.name(blocks)}: {type(e).__name__}: {str(e)[:120]}")
    ranked = sorted(times.items(), key=lambda kv: kv[1])
    best = {
        which: min((v for key, v in times.items() if kind_of[key] == which), default=None)
        for which in ("cuda", "late", "tc", "swap")
    }
    return {
        "rows": rows,
        "product": label,
        "n": n,
        "k": k,
        "weight_MB": round(gb * 1e3, 1),
        "at_bandwidth_us": round(gb * 1e9 / bandwidth * 1e6, 2),
        "cublas_us": round(cublas, 2),
        "candidates_now_best_us": round(min(times[decode_linear.name(b)] for b in mine), 2),
        "best_us": {which: v if v is None else round(v, 2) for which, v in best.items()},
        "top": [(key, round(v, 2)) for key, v in ranked[:top]],
        "all_us": {key: round(v, 2) for key, v in times.items()},
        "sweep_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["llama-3.1-8b", "qwen2.5-0.5b"])
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument(
        "--kinds",
        default="cuda,tc,swap",
        help="block shapes to sweep beside candidates(): cuda (CUDA cores), tc (tensor cores, x "
        "the left operand), swap (tensor cores, the weight the left operand, split along K)",
    )
    args = parser.parse_args()
    kinds = set(args.kinds.split(","))
    if not kinds <= {"cuda", "tc", "swap"}:
        parser.error(f"--kinds: {args.kinds!r}; choose from cuda, tc, swap")
    from tradeoff.meters.calibrate import calibrate_cuda

    args.out.mkdir(parents=True, exist_ok=True)
    bandwidth = calibrate_cuda(3.0).peaks.bytes_per_s
    print(
        f"{torch.cuda.get_device_name()}, triton {decode_linear.triton.__version__}, torch "
        f"{torch.__version__}; measured bandwidth {bandwidth / 1e9:,.1f} GB/s (calibrate_cuda)\n"
    )
    print(
        "| shape | rows | product | n × k | µs at the bandwidth | cuBLAS µs (share) | "
        "candidates() best µs | best, sum in each block | best, sum after the loop (late) | "
        "best on the tensor cores (tc) | best swapped (swap) | best of all (share) | sweep s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    batches = [int(r) for r in args.rows.split(",")]
    work = [
        (
            p,
            rows,
            sorted(
                set(wide(decode_linear.pad(rows), kinds))
                | set(decode_linear.candidates(decode_linear.pad(rows)))
            )[i::4],
        )
        for model in args.models
        for p in products(Arch.from_hf(load_hf_config(model)))
        for rows in batches
        for i in range(4)
    ]
    t0 = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    workers = max(1, min(12, (os.cpu_count() or 2) - 2))
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        compiled = sum(pool.map(compile_all, work))
    print(f"compiled {compiled} kernels in {time.perf_counter() - t0:.0f} s ({workers} processes)")
    rows_all: list[dict[str, Any]] = []
    for model in args.models:
        for rows in batches:
            rows_all += sweep(model, rows, bandwidth, args.top, kinds)
            (args.out / "gemv_sweep.json").write_text(json.dumps(rows_all, indent=1))
    for row in rows_all:
        print(f"{row['model']} rows {row['rows']} {row['product']}: top {row['top']}")


if __name__ == "__main__":
    main()
