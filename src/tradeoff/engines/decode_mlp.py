"""A decode step's whole feed-forward block at batch 1 to 8 as one Triton kernel for CUDA:
RMSNorm, the gate and up products, SiLU(gate)·up, the down product and the residual add.

Why hand-written: on an H200 the Qwen2.5-0.5B shape's gate/up and down products, each its own
`decode_linear` kernel, took 8.3 and 6.7 µs for 4.1 and 2.1 µs of weight bytes (49% and 31% of
the bandwidth, benchmarks/RESULTS.md, issue 17): each kernel is too small to keep enough loads
in flight, and the down product's 896 outputs leave few programs to stream its 4,864 columns.
Here one program takes BLOCK_J of the intermediate features: their gate and up rows (so SiLU·up
needs nothing from another program), then the same features' columns of the down weight, which
it multiplies into its share of every output and adds to a float32 buffer with atomic adds (the
down product split along its K, as many programs as gate/up). The last program to finish,
counted with an acquire-release atomic as `decode_attention`'s combine is, rounds the sums to
the model's dtype, adds the residual, writes the output and sets the buffer back to zero. One
kernel where there were two, and the down product's weight streamed by every program.

The atomic adds' order varies from run to run, so the float32 sums may differ in their last
bits before they are rounded. Tuning (`_tune`, once per shape, eagerly, on first use) keeps the
kernel only where it beats the two products as `decode_linear` tuned them; elsewhere the block
runs as two products (`torch_model.FeedForward`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from tradeoff.engines import decode_linear, dependent_launch

try:
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    from tradeoff.engines.dependent_launch import prefetch, wait_for_previous
except ImportError:  # the CPU install: no Triton
    triton = None

ENABLED = True  # benchmarks turn it off to time the two products in the same run


class Blocks(NamedTuple):
    """One launch configuration of the kernel."""

    j: int  # intermediate features a program takes
    k: int  # the gate/up weights' columns it loads at a time
    d: int  # the down weight's rows it loads at a time
    warps: int


# Guesses until swept on a GPU: 16-64 features a program (76-304 programs for the 0.5B shape's
# 4,864), the down weight's rows read 32-128 bytes at a time. Triton does not pipeline these
# loops' loads (sm_90, checked in the PTX), so the larger blocks keep more loads in flight.
SHAPES = (
    (16, 256, 128, 4),
    (16, 1024, 256, 8),
    (32, 128, 128, 4),
    (32, 512, 128, 8),
    (32, 256, 64, 8),
    (64, 128, 64, 8),
)


def candidates(rows: int, ffn: int) -> list[Blocks]:
    """The block shapes tuning tries for `rows` rows (a power of two) and `ffn` intermediate
    features: each loading `rows` times fewer columns at a time, so that a program multiplies
    as many products (registers); only those whose features tile `ffn`."""
    shapes = (Blocks(j, max(64, k // rows), max(16, d // rows), w) for j, k, d, w in SHAPES)
    return list(dict.fromkeys(b for b in shapes if ffn % b.j == 0))


Key = tuple[int, int, int]  # intermediate features, model width, rows
CHOICES: dict[Key, Blocks | None] = {}  # the kernel's blocks, or None where two products are faster
TIMES: dict[Key, dict[str, float]] = {}  # µs each candidate took in tuning, for the benchmarks
_SCRATCH: dict[tuple[str, int, int], tuple[Tensor, Tensor]] = {}  # `_scratch`'s


def available(x: Tensor, w13: Tensor, w2: Tensor) -> bool:
    """Whether this kernel can take x: a decode step's few rows, half precision, on CUDA."""
    return (
        ENABLED
        and triton is not None
        and x.is_cuda
        and x.dim() == 3
        and x.shape[1] == 1
        and x.shape[0] <= decode_linear.MAX_ROWS
        and x.dtype in (torch.bfloat16, torch.float16)
        and w13.dtype == w2.dtype == x.dtype
        and x.stride(-1) == 1
        and w13.is_contiguous()
        and w2.is_contiguous()
    )


if triton is not None:

    @triton.jit  # no annotations but constexpr: Triton reads them
    def _decode_mlp_kernel(
        x_ptr,
        w13_ptr,
        w2_ptr,
        norm_ptr,
        acc_ptr,
        count_ptr,
        y_ptr,
        rows,
        dim,
        ffn,
        x_row,
        y_row,
        EPS: tl.constexpr,
        ROWS: tl.constexpr,
        BLOCK_J: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_D: tl.constexpr,
        PDL: tl.constexpr,
    ):
        """y = x + down(SiLU(gate) * up), gate and up = w13 @ RMSNorm(x) with weight norm: this
        program's BLOCK_J features j of the ffn, gate rows w13[j], up rows w13[ffn + j], their
        down columns w2[:, j], added into acc (rows × dim, float32, zeros); the last program
        writes y from acc and sets acc and the count back to zero. PDL: launched as a dependent,
        it prefetches its first block of gate rows before it waits for the kernel before it."""
        j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)  # BLOCK_J tiles ffn
        kk = tl.arange(0, BLOCK_K)
        if PDL:  # one address per 128-byte line of the first block, kept inside the weight
            lines = tl.minimum(tl.arange(0, BLOCK_K // 64) * 64, dim - 1)
            prefetch(w13_ptr + j[:, None] * dim + lines[None, :])
            wait_for_previous()
        m = tl.arange(0, ROWS)
        row_ok = m < rows
        gate = tl.zeros([ROWS, BLOCK_J], dtype=tl.float32)
        up = tl.zeros([ROWS, BLOCK_J], dtype=tl.float32)
        squares = tl.zeros([ROWS], dtype=tl.float32)
        for k0 in range(0, dim, BLOCK_K):
            k_ok = k0 + kk < dim
            x = tl.load(
                x_ptr + m[:, None] * x_row + k0 + kk[None, :],
                mask=row_ok[:, None] & k_ok[None, :],
                other=0.0,
            ).to(tl.float32)
            squares += tl.sum(x * x, axis=1)  # RMSNorm: scaled by g now, by 1 / rms after
            x *= tl.load(norm_ptr + k0 + kk, mask=k_ok, other=0.0).to(tl.float32)[None, :]
            at = w13_ptr + j[:, None] * dim + k0 + kk[None, :]
            wg = tl.load(at, mask=k_ok[None, :], other=0.0).to(tl.float32)
            wu = tl.load(at + ffn * dim, mask=k_ok[None, :], other=0.0).to(tl.float32)
            gate += tl.sum(x[:, None, :] * wg[None, :, :], axis=2)
            up += tl.sum(x[:, None, :] * wu[None, :, :], axis=2)
        scale = tl.rsqrt(squares / dim + EPS)[:, None]
        dtype = y_ptr.dtype.element_ty  # rounded as the gate/up product's output would be
        gate = (gate * scale).to(dtype).to(tl.float32)
        up = (up * scale).to(dtype).to(tl.float32)
        h = gate / (1.0 + tl.exp(-gate)) * up  # SiLU(gate) * up: (ROWS, BLOCK_J)
        dd = tl.arange(0, BLOCK_D)
        for d0 in range(0, dim, BLOCK_D):
            d_ok = d0 + dd < dim
            w = tl.load(
                w2_ptr + (d0 + dd)[:, None] * ffn + j[None, :], mask=d_ok[:, None], other=0.0
            ).to(tl.float32)
            part = tl.sum(h[:, None, :] * w[None, :, :], axis=2)  # (ROWS, BLOCK_D)
            at = acc_ptr + m[:, None] * dim + d0 + dd[None, :]
            tl.atomic_add(at, part, mask=row_ok[:, None] & d_ok[None, :], sem="relaxed")
        tl.debug_barrier()  # every thread's adds above come before the count's release
        done = tl.atomic_add(count_ptr, 1, sem="acq_rel", scope="gpu")
        if done == tl.num_programs(0) - 1:  # the last program: the sums are complete
            tl.store(count_ptr, 0)
            for d0 in range(0, dim, BLOCK_D):
                ok = row_ok[:, None] & (d0 + dd < dim)[None, :]
                at = acc_ptr + m[:, None] * dim + d0 + dd[None, :]
                total = tl.load(at, mask=ok, other=0.0, cache_modifier=".cg")  # not from L1
                r = tl.load(x_ptr + m[:, None] * x_row + d0 + dd[None, :], mask=ok, other=0.0)
                y = total.to(dtype).to(tl.float32) + r.to(tl.float32)  # `residual + y`
                tl.store(y_ptr + m[:, None] * y_row + d0 + dd[None, :], y.to(dtype), mask=ok)
                tl.store(at, tl.zeros_like(total), mask=ok)

    def _launch(
        blocks: Blocks,
        x: Tensor,
        w13: Tensor,
        w2: Tensor,
        norm: Tensor,
        eps: float,
        acc: Tensor,
        count: Tensor,
        out: Tensor,
        launch: Any,
    ) -> None:
        dim, ffn = w2.shape
        rows = triton.next_power_of_2(x.shape[0])
        launch(_decode_mlp_kernel)[(ffn // blocks.j,)](
            x,
            w13,
            w2,
            norm,
            acc,
            count,
            out,
            x.shape[0],
            dim,
            ffn,
            x.stride(0),
            out.stride(0),
            EPS=eps,
            ROWS=rows,
            BLOCK_J=blocks.j,
            BLOCK_K=blocks.k,
            BLOCK_D=blocks.d,
            PDL=dependent_launch.ENABLED,
            num_warps=blocks.warps,
            num_stages=1,
            **dependent_launch.options(),
        )

    @triton_op("tradeoff::decode_mlp", mutates_args=("acc", "count"))
    def _decode_mlp(
        x: Tensor, w13: Tensor, w2: Tensor, norm: Tensor, eps: float, acc: Tensor, count: Tensor
    ) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.empty_like(rows)
        blocks = CHOICES.get(_key(x, w2)) or candidates(_key(x, w2)[-1], w2.shape[1])[0]
        _launch(blocks, rows, w13, w2, norm, eps, acc, count, out, wrap_triton)
        return out.view(x.shape)


def _key(x: Tensor, w2: Tensor) -> Key:
    rows = 1 << (x.numel() // x.shape[-1] - 1).bit_length()  # the power of two the kernel pads to
    return (w2.shape[1], w2.shape[0], rows)


def _scratch(x: Tensor) -> tuple[Tensor, Tensor] | None:
    """The float32 sums (rows × dim) and the program count, zeros, for x's shape on its device,
    or None where first asked for while compiling or capturing a graph: made once and shared by
    every layer and step, since the kernel's last program sets both back to zero."""
    key = (str(x.device), x.numel() // x.shape[-1], x.shape[-1])
    if key not in _SCRATCH:
        if torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing():
            return None
        acc = torch.zeros(key[1:], dtype=torch.float32, device=x.device)
        _SCRATCH[key] = acc, torch.zeros(1, dtype=torch.int32, device=x.device)
    return _SCRATCH[key]


def _tune(x: Tensor, w13: Tensor, w2: Tensor, norm: Tensor, eps: float) -> Blocks | None:
    """The fastest candidate's blocks, or None where the two products as `decode_linear` tuned
    them are faster: each candidate timed inside a CUDA graph with both weights arriving from
    memory (`decode_linear.graph_us`); the two products' time is the sum of their best times in
    `decode_linear`'s own tuning (cuBLAS charged for the work around it), timed here op by op
    where `decode_linear` cannot take them."""
    from tradeoff.engines.torch_model import plain_linear  # imports this module

    rows = x.reshape(-1, x.shape[-1])
    key = _key(x, w2)
    h = decode_linear.fused(x, w13, None, None, norm, eps)  # tunes the two products
    if h is None:
        h = plain_linear(x, w13, None, None, norm, eps, False)
    decode_linear.fused(h, w2, None, x, None, 0.0, True)
    up_key = decode_linear._key(x, w13, None, None, norm, False)
    down_key = decode_linear._key(h, w2, None, x, None, True)
    if up_key in decode_linear.TIMES and down_key in decode_linear.TIMES:
        two = sum(_best(decode_linear.TIMES[k]) for k in (up_key, down_key))
    else:

        def op_by_op(a: Tensor, b: Tensor) -> None:
            gate_up = plain_linear(x, a, None, None, norm, eps, False)
            plain_linear(gate_up, b, None, x, None, 0.0, True)

        two = decode_linear.graph_us(op_by_op, w13, w2)
    times = {"two products": two}
    best, best_us = None, two
    acc = torch.zeros_like(rows, dtype=torch.float32)
    count = torch.zeros(1, dtype=torch.int32, device=x.device)
    out = torch.empty_like(rows)
    for blocks in candidates(key[-1], w2.shape[1]):

        def run(a: Tensor, b: Tensor, blocks: Blocks = blocks) -> None:
            _launch(blocks, rows, a, b, norm, eps, acc, count, out, lambda f: f)

        try:
            us = decode_linear.graph_us(run, w13, w2)
        except Exception:  # noqa: BLE001 - a shape this GPU or Triton refuses is not a candidate
            us = float("nan")  # raised while warming up, before the graph's capture began
        times[name(blocks)] = us
        if us < best_us:
            best, best_us = blocks, us
    TIMES[key] = times
    return best


def _best(times: dict[str, float]) -> float:
    """The time `decode_linear` runs a product in after tuning: its best candidate, or cuBLAS
    with the work the kernel would fuse."""
    cublas = times["cublas"] + times["the work fused"]
    kernel = [us for label, us in times.items() if label not in ("cublas", "the work fused")]
    return min([cublas, *(us for us in kernel if us == us)])  # NaN: a refused candidate


def name(blocks: Blocks) -> str:
    """How tuning tables name a candidate: 'j32 k256 d64 w8'."""
    return f"j{blocks.j} k{blocks.k} d{blocks.d} w{blocks.warps}"


def fused(x: Tensor, w13: Tensor, w2: Tensor, norm: Tensor, eps: float) -> Tensor | None:
    """x + w2 @ (SiLU(gate) * up), gate and up = w13 @ RMSNorm(x) (w13: gate rows then up
    rows; the norm's weight `norm` and epsilon `eps`), through the kernel for x (rows, 1, dim).
    None where the caller runs the two products: the kernel cannot take x, or they are faster
    on this shape. A shape seen for the first time outside compilation and graph capture is
    tuned now; inside them, never seen before, it runs the two products."""
    if not available(x, w13, w2):
        return None
    key = _key(x, w2)
    if key not in CHOICES:
        if torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing():
            return None
        CHOICES[key] = _tune(x, w13, w2, norm, eps)
    scratch = _scratch(x)
    if CHOICES[key] is None or scratch is None:
        return None
    return _decode_mlp(x, w13, w2, norm, eps, *scratch)
