"""The decode step's projections at batch 1 to 8, as a Triton kernel for CUDA that also does the
work around them: the RMSNorm before q/k/v and gate/up, SiLU(gate)·up before the down
projection, the residual add after the output and down projections.

Why hand-written: on an H200 at batch 1, cuBLAS ran the Llama-3.1-8B shape's q/k/v (4096×6144)
and output (4096×4096) products at 74% of the bandwidth and split the output and down products
along K with a reduce kernel each; the norms, SiLU·up and residual adds were 130 more kernels a
step of 1–3 µs each (benchmarks/RESULTS.md, issue 17's breakdown). Here one program computes
BLOCK_N outputs of every row: it streams its BLOCK_N rows of the weight once, block by block
along K, and multiplies them with the rows of x on the CUDA cores (the kernel is bound by the
weight's bytes, not by the multiplies; a first version padded x to 16 rows for the tensor cores
and ran at 20-45% of the bandwidth, its loads waiting on each block's processing of x). The
RMSNorm's 1 / rms is a factor of each row, applied after the loop, so x is read once. Triton
does not pipeline these plain loads, so a program waits for each block before it asks for the
next; the pipelined shapes (`Blocks.pipe`) ask for the next block before they multiply the last,
holding two in registers. On the H200 that took the Llama-3.1-8B shape's down product (K 14,336)
from 33.5 to 31.3 µs and the compiled step at batch 1 from 232 to 238 tok/s.

Each (shape, input kind, batch) is tuned once, eagerly, on first use: a few block shapes are
timed against cuBLAS inside a CUDA graph, and cuBLAS keeps the product (with the norm and the
rest done op by op) where it is faster, charged for the work the kernel fuses: one small kernel
for each piece of it where the step is compiled (inductor's kernels), the ops themselves where it
is not (`COMPILED`). On the H200, uncompiled, the Qwen2.5-0.5B shape decoded at 961 tok/s where
tuning had kept cuBLAS for its gate/up product on the compiled charge (6.92 + 1.30 µs against
the kernel's 8.29), 1,347 tok/s in another call where the kernel had won by 0.1 µs; compiled,
the Llama-3.1-8B shape's down product went to the kernel on the charge of two pieces (33.7
against 32.2 + 2.4 µs) and the shape decoded at 232 tok/s, 227 where it had kept cuBLAS.
On the H200, at batch 1, the kernel ran the Qwen2.5-0.5B shape's q/k/v and output products in
3.0 and 2.7 µs against cuBLAS's 4.4 and 4.7, the Llama-3.1-8B shape's output product in 10.9
against 13.1 (benchmarks/gpu_gemv_sweep.py); at batch 8 cuBLAS wins every product against the
CUDA cores (the kernel reached 26-32% of the bandwidth there). Tuning also tries the same loop
on the tensor cores (`Blocks.dot`: f(x) padded to 16 rows and rounded to the weight's dtype, the
weight's loads copied ahead into shared memory over 3-6 stages), from 2 rows with f(x) as the
left operand (Ampere's MMA; it won the 8B shape's output product alone), at any batch with the
weight (`Blocks.swap`: Hopper's warpgroup MMA takes 64-row tiles of it from shared memory), the
latter optionally split along K among 2-4 programs, the last of which adds the parts up
(`Blocks.split`). Swapped, the Llama-3.1-8B shape's step at batch 8 went from 82% to 85.7% of
its roofline on the H200, the kernel taking q/k/v, output and down from cuBLAS. At batch 1 the
swapped shapes are candidates too (change 25): there they won the Qwen2.5-0.5B shape's gate/up
and LM head and the 8B shape's q/k/v and LM head, +1.2% on the 0.5B step.
CPU tensors, prefill and a machine without Triton take `torch_model.linear`'s plain path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from tradeoff.engines import dependent_launch
from tradeoff.engines.counters import counters

try:
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    from tradeoff.engines.dependent_launch import prefetch, wait_for_previous
except ImportError:  # the CPU install: no Triton
    triton = None

MAX_ROWS = 8  # rows of x (a decode step's batch) one program multiplies
ENABLED = True  # benchmarks turn it off to time cuBLAS in the same run
PLAIN, NORMED, GATED = 0, 1, 2  # what the kernel does to x before the product


class Blocks(NamedTuple):
    """One launch configuration of the kernel."""

    n: int  # outputs a program computes
    k: int  # weight columns a program loads at a time
    warps: int
    stages: int
    late: bool = False  # sum along K after the loop, not in each block
    dot: bool = False  # multiply on the tensor cores, x padded to 16 rows
    pipe: bool = False  # load the next block along K before multiplying this one
    swap: bool = False  # with dot: the weight's rows fill the MMA's rows, x's rows its columns
    split: int = 1  # with swap: programs that share a tile's K, the last one adding up


# The block shapes that came within 2% of the fastest for some product of the Llama-3.1-8B and
# Qwen2.5-0.5B shapes at batch 1 on an H200, among 128 swept (benchmarks/gpu_gemv_sweep.py,
# RESULTS.md, issue 17): outputs a program computes, weight columns it loads at a time, and
# whether it sums along K after the loop. All ran best with 4 warps and without pipelining.
SWEPT = (
    (4, 1024, False),
    (8, 2048, False),
    (16, 1024, True),
    (16, 512, True),
    (2, 1024, True),
    (2, 2048, True),
)


# Pipelined shapes (`Blocks.pipe`), the best three of the 1-row sweep where a product takes
# several blocks along K (benchmarks/gpu_gemv_sweep.py, RESULTS.md, issue 17): outputs a
# program computes, weight columns a load, late sum, warps. On the H200 the Qwen2.5-0.5B
# shape's down product took 5.95 µs on the first against 6.4 unpipelined, the Llama-3.1-8B
# shape's 31.94 on the second against 33.49 and cuBLAS's 32.06.
PIPED = ((2, 1024, True, 4), (8, 512, True, 8), (8, 1024, False, 4))


# Tensor-core block shapes for 2 to 8 rows, f(x) the left operand: outputs a program computes,
# weight columns a load, warps and pipeline stages; tuning keeps one only where it beats cuBLAS.
DOT_SHAPES = ((32, 256, 4, 3), (64, 256, 4, 3), (64, 128, 4, 4), (128, 128, 8, 3))


# Tensor-core shapes with the weight as the MMA's left operand (`Blocks.swap`), at any batch:
# outputs a program computes, weight columns a load, warps, stages, programs sharing a tile's K.
# The best of 192 swept at 8 rows for each of the Llama-3.1-8B shape's products on an H200, in
# µs against cuBLAS alone (benchmarks/gpu_gemv_sweep.py, RESULTS.md, issue 17's change 18):
# q/k/v and norm 15.77 (cuBLAS 16.99), output and residual 11.27 (13.20), gate/up and norm
# 59.05 (57.33), down with SiLU·up and residual 33.45 split in 4 along K (32.51); the last two
# the best all-round.
SWAPPED = (
    (64, 256, 4, 4, 1),
    (64, 128, 4, 6, 1),
    (128, 128, 8, 3, 1),
    (128, 128, 8, 4, 4),
    (64, 64, 4, 6, 4),
    (64, 256, 4, 5, 1),
)


def candidates(rows: int) -> list[Blocks]:
    """The block shapes tuning tries for `rows` rows (a power of two): the swept ones and the
    pipelined ones, each loading `rows` times fewer columns at a time so that a program
    multiplies as many products (registers); the swapped tensor-core shapes, and from 2 rows the
    others (at batch 8 cuBLAS's tensor cores won every product of the sweep on the CUDA
    cores)."""
    swept = [Blocks(n, max(64, k // rows), 4, 1, late) for n, k, late in SWEPT]
    pipe = [Blocks(n, max(64, k // rows), w, 1, late, pipe=True) for n, k, late, w in PIPED]
    dot = [Blocks(n, k, warps, stages, dot=True) for n, k, warps, stages in DOT_SHAPES]
    swap = [Blocks(n, k, w, s, dot=True, swap=True, split=p) for n, k, w, s, p in SWAPPED]
    return swept + pipe + (dot if rows > 1 else []) + swap


def default(rows: int) -> Blocks:
    """The blocks of a shape that was never tuned."""
    return Blocks(4, max(64, 1024 // rows), 4, 1)


# Whether the steps being tuned are compiled: the engine sets it around a step's tuning. Choices
# are kept by shape alone: in one process, the first engine of a shape tunes it for the rest.
COMPILED = False


@contextmanager
def tuning(compiled: bool) -> Iterator[None]:
    """`COMPILED` set while the block runs: the engine tunes a step that it compiles, or not."""
    global COMPILED
    before, COMPILED = COMPILED, compiled
    try:
        yield
    finally:
        COMPILED = before


Key = tuple[int, int, int, bool, bool, int]  # n, k, input kind, bias, residual, rows
CHOICES: dict[Key, Blocks | None] = {}  # the kernel's blocks, or None where cuBLAS is faster
TIMES: dict[Key, dict[str, float]] = {}  # µs each candidate took in tuning, for the benchmarks


def available(x: Tensor, weight: Tensor) -> bool:
    """Whether this kernel can take x: a decode step's few rows, half precision, on CUDA."""
    return (
        ENABLED
        and triton is not None
        and x.is_cuda
        and x.dim() == 3
        and x.shape[1] == 1
        and x.shape[0] <= MAX_ROWS
        and x.dtype in (torch.bfloat16, torch.float16)
        and weight.dtype == x.dtype
        and x.stride(-1) == 1
        and weight.is_contiguous()
    )


if triton is not None:

    @triton.jit
    def _load_block(x_at, w_at, norm_ptr, k0, k, kk, row_ok, col_ok, INPUT, EVEN):
        """The weight's block at column k0 (BLOCK_N rows), x's (and up's, when gated) and the
        norm's weight there (when normed), as float32 but the weight; unused parts are xa."""
        if EVEN:  # no masks along K: the loads stay 16-byte vectors
            w = tl.load(w_at + k0)
            xa = tl.load(x_at + k0, mask=row_ok[:, None], other=0.0).to(tl.float32)
            xb = xa
            if INPUT == 2:
                xb = tl.load(x_at + k + k0, mask=row_ok[:, None], other=0.0).to(tl.float32)
            g = xa
            if INPUT == 1:
                g = tl.load(norm_ptr + k0 + kk).to(tl.float32)
        else:
            k_ok = k0 + kk < k
            ok = row_ok[:, None] & k_ok[None, :]
            w = tl.load(w_at + k0, mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            xa = tl.load(x_at + k0, mask=ok, other=0.0).to(tl.float32)
            xb = xa
            if INPUT == 2:
                xb = tl.load(x_at + k + k0, mask=ok, other=0.0).to(tl.float32)
            g = xa
            if INPUT == 1:
                g = tl.load(norm_ptr + k0 + kk, mask=k_ok, other=0.0).to(tl.float32)
        return w, xa, xb, g

    @triton.jit  # no annotations but constexpr: Triton reads them
    def _decode_linear_kernel(
        x_ptr,
        w_ptr,
        y_ptr,
        bias_ptr,
        res_ptr,
        norm_ptr,
        part_ptr,
        count_ptr,
        rows,
        n,
        k,
        x_row,
        y_row,
        res_row,
        INPUT: tl.constexpr,
        BIAS: tl.constexpr,
        RESIDUAL: tl.constexpr,
        EPS: tl.constexpr,
        ROWS: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        EVEN: tl.constexpr,
        LATE: tl.constexpr,
        DOT: tl.constexpr,
        PDL: tl.constexpr,
        PIPE: tl.constexpr,
        SWAP: tl.constexpr,
        SPLIT: tl.constexpr,
    ):
        """y[:, cols] = f(x) @ w[cols].T (+ bias) (+ residual) for this program's BLOCK_N cols;
        f is the identity, RMSNorm with weight norm, or SiLU(x[:, :k]) * x[:, k:]. EVEN: the
        blocks tile n and k exactly (no masks on the weight). LATE: sum along K once, after the
        loop, instead of in every block (the loop then only loads and multiplies). DOT: multiply
        on the tensor cores, f(x) rounded to the weight's dtype, ROWS at least 16; SWAP: as
        w[cols] @ f(x).T, the weight the left operand (its BLOCK_N rows fill the MMA's 64-row
        tiles and stream through shared memory), x's rows the MMA's columns. PDL: launched
        as a dependent, it prefetches its first block of the weight before it waits for the
        kernel before it (`dependent_launch`). PIPE: it loads each next block along K before it
        multiplies the one it holds (two blocks in registers; Triton pipelines no plain load).
        SPLIT (with SWAP): SPLIT programs share a tile's K, each writing its sums into part_ptr
        (float32) and counting itself in count_ptr[tile]; the last adds the parts up and
        finishes the tile, then sets the count back to 0."""
        tile = tl.program_id(0)
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        k_lo, k_hi = 0, k
        if SPLIT > 1:  # this program's part of K: whole blocks, the last part maybe shorter
            span = tl.cdiv(k, SPLIT * BLOCK_K) * BLOCK_K
            k_lo = tl.program_id(1) * span
            k_hi = tl.minimum(k, k_lo + span)
        if PDL:  # one address per 128-byte line of the first block, kept inside the weight
            lines = tl.minimum(k_lo + tl.arange(0, BLOCK_K // 64) * 64, k - 1)
            prefetch(w_ptr + tl.minimum(cols, n - 1)[:, None] * k + lines[None, :])
            wait_for_previous()
        m = tl.arange(0, ROWS)
        kk = tl.arange(0, BLOCK_K)
        row_ok = m < rows
        col_ok = cols < n
        x_at = x_ptr + m[:, None] * x_row + kk[None, :]
        w_at = w_ptr + cols[:, None] * k + kk[None, :]
        if LATE:
            acc3 = tl.zeros([ROWS, BLOCK_N, BLOCK_K], dtype=tl.float32)
        if LATE or DOT:  # the squares summed across the block after the loop: no reduction
            squares2 = tl.zeros([ROWS, BLOCK_K], dtype=tl.float32)  # (and barrier) in it
        acc = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
        squares = tl.zeros([ROWS], dtype=tl.float32)
        if SWAP:
            acc_t = tl.zeros([BLOCK_N, ROWS], dtype=tl.float32)
        if PIPE:  # the first block's loads, before the loop
            w, xa, xb, g = _load_block(x_at, w_at, norm_ptr, 0, k, kk, row_ok, col_ok, INPUT, EVEN)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            if PIPE:  # the next block's loads go out before this block's multiplies; past the
                # last block they read nothing (masked), or the last block again when EVEN
                at = k0 + BLOCK_K
                if EVEN:
                    at = tl.minimum(at, k - BLOCK_K)
                nw, nxa, nxb, ng = _load_block(
                    x_at, w_at, norm_ptr, at, k, kk, row_ok, col_ok, INPUT, EVEN
                )
            else:
                w, xa, xb, g = _load_block(
                    x_at, w_at, norm_ptr, k0, k, kk, row_ok, col_ok, INPUT, EVEN
                )
            if INPUT == 2:
                xs = xa / (1.0 + tl.exp(-xa)) * xb  # SiLU(gate) * up
            else:
                xs = xa
                if INPUT == 1:  # RMSNorm: scale by g now, by the row's 1 / rms after the loop
                    if LATE or DOT:
                        squares2 += xs * xs
                    else:
                        squares += tl.sum(xs * xs, axis=1)
                    xs *= g
            if SWAP:
                acc_t += tl.dot(w, tl.trans(xs.to(w.dtype)))
            elif DOT:
                acc += tl.dot(xs.to(w.dtype), tl.trans(w))
            elif LATE:
                acc3 += xs[:, None, :] * w.to(tl.float32)[None, :, :]
            else:
                acc += tl.sum(xs[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
            if PIPE:
                w, xa, xb, g = nw, nxa, nxb, ng
        if LATE:
            acc = tl.sum(acc3, axis=2)
        if (LATE or DOT) and INPUT == 1:
            squares = tl.sum(squares2, axis=1)
        finish = True  # this program finishes its tile
        if SPLIT > 1:  # each part's sums into part_ptr; the last of the tile's programs adds
            # them up and finishes the tile
            tl.static_assert(SWAP, "split along K on the swapped tensor-core path only")
            size = (BLOCK_N + 1) * ROWS  # a part: its (BLOCK_N, ROWS) sums, then its squares
            at = part_ptr + (tl.program_id(1) * tl.num_programs(0) + tile) * size
            tl.store(at + tl.arange(0, BLOCK_N)[:, None] * ROWS + m[None, :], acc_t)
            tl.store(at + BLOCK_N * ROWS + m, squares)
            tl.debug_barrier()  # every thread's stores above come before the count's release
            done = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu")
            finish = done == SPLIT - 1
            if finish:
                tl.store(count_ptr + tile, 0)  # no other program counts here this launch
                acc_t = tl.zeros([BLOCK_N, ROWS], dtype=tl.float32)
                squares = tl.zeros([ROWS], dtype=tl.float32)
                for part in tl.static_range(SPLIT):  # past the L1 cache: written by others
                    at = part_ptr + (part * tl.num_programs(0) + tile) * size
                    at_t = at + tl.arange(0, BLOCK_N)[:, None] * ROWS + m[None, :]
                    acc_t += tl.load(at_t, cache_modifier=".cg")
                    squares += tl.load(at + BLOCK_N * ROWS + m, cache_modifier=".cg")
        if finish:
            if SWAP:
                acc = tl.trans(acc_t)
            if INPUT == 1:
                acc *= tl.rsqrt(squares / k + EPS)[:, None]
            if BIAS:
                acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            out = acc.to(y_ptr.dtype.element_ty)
            ok = row_ok[:, None] & col_ok[None, :]
            if RESIDUAL:  # rounded as `residual + y` in the model's dtype
                r = tl.load(res_ptr + m[:, None] * res_row + cols[None, :], mask=ok, other=0.0)
                out = (out.to(tl.float32) + r.to(tl.float32)).to(y_ptr.dtype.element_ty)
            tl.store(y_ptr + m[:, None] * y_row + cols[None, :], out, mask=ok)

    def _launch(
        blocks: Blocks,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        residual: Tensor | None,
        norm: Tensor | None,
        eps: float,
        gated: bool,
        out: Tensor,
        launch: Any,
        counts: Tensor | None = None,
    ) -> None:
        n, k = weight.shape
        tiles, rows = triton.cdiv(n, blocks.n), max(16 if blocks.dot else 1, pad(x.shape[0]))
        split = _split(blocks, counts)
        part = out  # the parts' sums when split along K, float32
        if split > 1:
            part = torch.empty(
                split * tiles * (blocks.n + 1) * rows, device=x.device, dtype=torch.float32
            )
        launch(_decode_linear_kernel)[(tiles, split)](
            x,
            weight,
            out,
            bias if bias is not None else weight,
            residual if residual is not None else out,
            norm if norm is not None else weight,
            part,
            counts if split > 1 else part,
            x.shape[0],
            n,
            k,
            x.stride(0),
            out.stride(0),
            residual.stride(0) if residual is not None else 0,
            INPUT=_kind(norm, gated),
            BIAS=bias is not None,
            RESIDUAL=residual is not None,
            EPS=eps,
            ROWS=rows,
            BLOCK_N=blocks.n,
            BLOCK_K=blocks.k,
            EVEN=n % blocks.n == 0 and k % (blocks.k * split) == 0,
            LATE=blocks.late and not blocks.dot,
            DOT=blocks.dot,
            PDL=dependent_launch.ENABLED,
            PIPE=blocks.pipe and not blocks.dot,
            SWAP=blocks.swap and blocks.dot,
            SPLIT=split,
            num_warps=blocks.warps,
            num_stages=blocks.stages,
            **dependent_launch.options(),
        )

    @triton_op("tradeoff::decode_linear", mutates_args=("counts",))
    def _decode_linear(
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        residual: Tensor | None,
        norm: Tensor | None,
        eps: float,
        gated: bool,
        counts: Tensor | None,
    ) -> Tensor:
        rows, res, out = _flat(x, weight, residual)
        blocks = CHOICES.get(_key(rows, weight, bias, residual, norm, gated))
        blocks = blocks or default(pad(rows.shape[0]))
        _launch(blocks, rows, weight, bias, res, norm, eps, gated, out, wrap_triton, counts)
        return out.view(*x.shape[:-1], weight.shape[0])


def pad(rows: int) -> int:
    """The power of two the kernel pads `rows` rows of x to."""
    return 1 << (rows - 1).bit_length()


def _split(blocks: Blocks, counts: Tensor | None) -> int:
    """How many programs share a tile's K: `blocks.split` on the swapped tensor-core path where
    the counters are given, else 1."""
    return blocks.split if blocks.dot and blocks.swap and counts is not None else 1


def _counters(blocks: Blocks | None, n: int, device: torch.device) -> Tensor | None:
    """The counters a launch split along K needs, one for each tile of the n outputs, or None."""
    if blocks is None or blocks.split == 1:
        return None
    return counters(device, -(-n // blocks.n))


def _key(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    norm: Tensor | None,
    gated: bool,
) -> Key:
    rows = pad(x.numel() // x.shape[-1])
    kind = _kind(norm, gated)
    return (weight.shape[0], weight.shape[1], kind, bias is not None, residual is not None, rows)


def _kind(norm: Tensor | None, gated: bool) -> int:
    """What the kernel does to x before the product: PLAIN, NORMED or GATED."""
    return GATED if gated else NORMED if norm is not None else PLAIN


def _flat(
    x: Tensor, weight: Tensor, residual: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor]:
    """x and the residual as (rows, features), and the product's output, uninitialised."""
    rows = x.reshape(-1, x.shape[-1])
    res = None if residual is None else residual.reshape(rows.shape[0], -1)
    out = torch.empty((rows.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    return rows, res, out


def graph_us(run: Callable[[Tensor], object], weight: Tensor, reps: int = 20) -> float:
    """µs one call of `run(w)` takes inside a CUDA graph, as the step runs it (no launch cost),
    each call on its own copy of the weight so that the weight arrives from memory and not from
    the L2 cache: copies of 4× the L2 cache in all, at most 64."""
    l2 = torch.cuda.get_device_properties(weight.device).L2_cache_size
    count = max(1, min(64, -(-4 * l2 // (weight.numel() * weight.element_size()))))
    weights = [weight] + [weight.clone() for _ in range(count - 1)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside the graph: compiling, cuBLAS's workspace
        for w in weights:
            run(w)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for w in weights:
            run(w)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (reps * count)


def _tune(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    norm: Tensor | None,
    eps: float,
    gated: bool,
) -> Blocks | None:
    """The fastest candidate's blocks, or None if cuBLAS is faster; each timed inside a CUDA
    graph with the weight arriving from memory, as in a step (`graph_us`). The kernel also does
    the norm or SiLU·up before the product and the residual add after it, which the plain path
    runs around cuBLAS's product. Where the step is compiled, inductor makes each of those
    pieces one kernel at best (fused with its neighbours' work, never with cuBLAS's product):
    cuBLAS's side is charged one small kernel's time, measured here on x, for each. On the
    H200, charged one kernel for the down product's two pieces, tuning called it a tie and the
    Llama-3.1-8B shape's compiled step took 4,363 µs where it kept cuBLAS, 4,260 where it kept
    the kernel; charged two, it keeps the kernel (benchmarks/RESULTS.md, issue 17). Where the
    step is not compiled, the plain path op by op is timed whole and charged the difference.
    A candidate whose result does not agree with the plain path's (`agrees`) is never kept: its
    time reads infinite, with a warning (a kernel this GPU or Triton version gets wrong)."""
    from tradeoff.engines.torch_model import plain_linear  # imports this module

    rows, res, out = _flat(x, weight, residual)
    want = plain_linear(rows, weight, bias, res, norm, eps, gated)
    plain = rows[:, : weight.shape[1]].contiguous()
    times = {"cublas": graph_us(lambda w: F.linear(plain, w, bias), weight)}
    pieces = (norm is not None or gated) + (residual is not None)
    if not pieces:
        times["the work fused"] = 0.0
    elif COMPILED:
        times["the work fused"] = pieces * graph_us(lambda v: v.mul_(1.0), rows.clone())
    else:

        def op_by_op(w: Tensor) -> None:
            plain_linear(rows, w, bias, res, norm, eps, gated)

        times["the work fused"] = max(0.0, graph_us(op_by_op, weight) - times["cublas"])
    best, best_us = None, times["cublas"] + times["the work fused"]
    for blocks in candidates(_key(x, weight, bias, residual, norm, gated)[-1]):

        def run(w: Tensor, blocks: Blocks = blocks) -> None:
            counts = _counters(blocks, w.shape[0], w.device)
            _launch(blocks, rows, w, bias, res, norm, eps, gated, out, lambda f: f, counts)

        try:
            us = graph_us(run, weight)
        except Exception:  # noqa: BLE001 - a shape this GPU or Triton refuses is not a candidate
            us = float("nan")  # raised while warming up, before the graph's capture began
        else:
            run(weight)
            if not agrees(out, want):
                warnings.warn(
                    f"decode_linear: {name(blocks)} disagrees with the plain path on "
                    f"{tuple(weight.shape)}; not used",
                    RuntimeWarning,
                    stacklevel=2,
                )
                us = float("inf")
        times[name(blocks)] = us
        if us < best_us:
            best, best_us = blocks, us
    TIMES[_key(x, weight, bias, residual, norm, gated)] = times
    return best


AGREE = 2**-5  # of the largest output: bf16 rounds to 2^-8 of it, a wrong kernel to about 1


def agrees(got: Tensor, want: Tensor) -> bool:
    """Whether the kernel's result is the plain path's up to rounding: every element within
    `AGREE` of the largest one (a NaN never is)."""
    bound = AGREE * float(want.float().abs().max())
    return bool(((got.float() - want.float()).abs() <= bound).all())


def name(blocks: Blocks) -> str:
    """How tuning tables name a candidate: '8x512 w4 s1', 'late' when it sums after the loop,
    'tc' when it multiplies on the tensor cores ('swap' with the weight the left operand,
    'splitN' with N programs along K), 'pipe' when it loads a block ahead."""
    how = " tc" if blocks.dot else " late" if blocks.late else ""
    how += " swap" if blocks.swap and blocks.dot else ""
    how += f" split{blocks.split}" if blocks.split > 1 and blocks.swap and blocks.dot else ""
    how += " pipe" if blocks.pipe and not blocks.dot else ""
    return f"{blocks.n}x{blocks.k} w{blocks.warps} s{blocks.stages}{how}"


def fused(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    norm: Tensor | None = None,
    eps: float = 0.0,
    gated: bool = False,
) -> Tensor | None:
    """f(x) @ weight.T (+ bias) (+ residual) through the kernel for x (rows, 1, k), or
    (rows, 1, 2k) when gated: f is RMSNorm with weight `norm` and epsilon `eps` when `norm` is
    given, SiLU(x[..., :k]) * x[..., k:] when `gated`, else the identity. None where the caller
    computes it op by op: the kernel cannot take x, or cuBLAS was faster on this shape. A shape
    seen for the first time outside compilation and graph capture is tuned now."""
    if not available(x, weight):
        return None
    key = _key(x, weight, bias, residual, norm, gated)
    if key not in CHOICES:
        if torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing():
            return _decode_linear(x, weight, bias, residual, norm, eps, gated, None)  # default
        CHOICES[key] = _tune(x, weight, bias, residual, norm, eps, gated)
    if CHOICES[key] is None:
        return None
    counts = _counters(CHOICES[key], weight.shape[0], x.device)
    return _decode_linear(x, weight, bias, residual, norm, eps, gated, counts)
