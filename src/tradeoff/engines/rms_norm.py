"""RMSNorm as one Triton kernel for CUDA, where the norm is not fused into a product.

Why hand-written: in a decode step `decode_linear` fuses each layer's norms into the product
after them, but where tuning keeps cuBLAS for a product (the Qwen2.5-0.5B shape's LM head: 67.2
µs against the kernel's 92.1 with the norm) the final norm ran op by op, about seven elementwise
and reduction kernels that took 16.7 µs of the step on an H200 (benchmarks/RESULTS.md, issue
17's change 20); the prefill runs every layer's norms that way too when it is not compiled. Here
one program normalises one row, as transformers computes it: in float32, rounded to x's dtype,
then multiplied by the weight and rounded again. Compiled code keeps the ops (inductor fuses
them itself); CPU tensors and a machine without Triton take `torch_model.rms_norm`'s ops.
Measured in the 0.5B shape's step since then: no change, as tuning now gives its LM head the
swapped kernel, which fuses the norm; it is kept for the shapes whose LM head stays cuBLAS's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tradeoff.engines import dependent_launch

try:
    import triton
    import triton.language as tl

    from tradeoff.engines.dependent_launch import wait_for_previous
except ImportError:  # the CPU install: no Triton
    triton = None

ENABLED = True  # benchmarks turn it off to time the ops in the same run
MAX_FEATURES = 32_768  # one program holds a row in registers


if triton is not None:

    @triton.jit  # no annotations but constexpr: Triton reads them
    def _rms_norm(
        x_ptr,
        w_ptr,
        y_ptr,
        n,
        x_row,
        y_row,
        EPS: tl.constexpr,
        BLOCK: tl.constexpr,
        PDL: tl.constexpr,
    ):
        """y[row] = w * round(x[row] / rms(x[row])), each product rounded to y's dtype."""
        row = tl.program_id(0)
        if PDL:  # launched as a dependent: x is the previous kernel's output
            wait_for_previous()
        cols = tl.arange(0, BLOCK)
        ok = cols < n
        x = tl.load(x_ptr + row * x_row + cols, mask=ok, other=0.0).to(tl.float32)
        h = (x * tl.rsqrt(tl.sum(x * x, axis=0) / n + EPS)).to(y_ptr.dtype.element_ty)
        w = tl.load(w_ptr + cols, mask=ok, other=0.0)
        y = w.to(tl.float32) * h.to(tl.float32)
        tl.store(y_ptr + row * y_row + cols, y.to(y_ptr.dtype.element_ty), mask=ok)


def available(x: Tensor, weight: Tensor) -> bool:
    """Whether the kernel can take x: on CUDA, in the weight's dtype, rows of at most
    `MAX_FEATURES` contiguous features, outside compilation."""
    return (
        ENABLED
        and triton is not None
        and not torch.compiler.is_compiling()  # first: nothing below is traced
        and x.is_cuda
        and x.dtype == weight.dtype
        and x.shape[-1] == weight.numel() <= MAX_FEATURES
        and x.stride(-1) == 1
        and weight.is_contiguous()
    )


def fused(x: Tensor, weight: Tensor, eps: float) -> Tensor | None:
    """RMSNorm of x's last dimension with `weight` in one kernel, or None where the caller
    computes it op by op (`available`)."""
    if not available(x, weight):
        return None
    rows = x.reshape(-1, x.shape[-1])
    out = torch.empty_like(rows)
    launch(rows, weight, eps, out)
    return out.view(x.shape)


def launch(rows: Tensor, weight: Tensor, eps: float, out: Tensor) -> None:
    """The kernel of `fused` on rows (rows, features), writing out (rows, features)."""
    assert triton is not None
    n = rows.shape[-1]
    _rms_norm[(rows.shape[0],)](
        rows,
        weight,
        out,
        n,
        rows.stride(0),
        out.stride(0),
        EPS=eps,
        BLOCK=triton.next_power_of_2(n),
        PDL=dependent_launch.ENABLED,
        num_warps=4 if n <= 4096 else 8,
        **dependent_launch.options(),
    )
