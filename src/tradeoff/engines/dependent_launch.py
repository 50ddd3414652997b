"""Programmatic dependent launch (CUDA, Hopper and later) for the engine's Triton kernels.

A decode step is a chain of short kernels, each waiting for the last to finish before it starts:
on an H200 the Qwen2.5-0.5B shape's products take 2.7-3.0 µs for 0.4-0.5 µs of weight bytes,
the rest launch, ramp and the first loads' latency (benchmarks/RESULTS.md, issue 17). Launched
with `launch_pdl`, a kernel may start while the one before it finishes: it prefetches what does
not depend on that kernel (its weights, the cache's earlier positions) and only then waits for
it (`griddepcontrol.wait`, which returns once the previous kernel has completed and its writes
are visible), then lets the next kernel start. A kernel launched without it, or after one that
never lets it start early, simply starts when the one before it ends.

Off by default; the torch engine's `pdl=1` turns it on while it tunes and captures a decode
step (`enabled`). On an H200 (benchmarks/RESULTS.md, issue 17) the Qwen2.5-0.5B shape's
captured step took 674-676 µs with it against 717-720 without, the GPU idle between kernels
3-4 µs a step against 39-44; the Llama-3.1-8B shape's took longer with it (4,688 against 4,468
µs at batch 1, with other tuning choices). Under torch.compile the 0.5B shape's step took
1,303 µs with it, against about 720 compiled without it: 297 kernels against 137 (a compiled
step without it, measured the session before), inductor adding 170 elementwise kernels (about 7
a layer, 1-9 µs each) around the engine's when they are launched this way. The engine refuses
`pdl=1` with `compile`.
The instructions exist on CUDA only: Triton's interpreter cannot run them, so the CPU tests
cover the kernels with it off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU install: no Triton
    triton = None

ENABLED = False


@contextmanager
def enabled(on: bool) -> Iterator[None]:
    """`ENABLED` set to `on` while the block runs: kernels launched or captured in it."""
    global ENABLED
    before, ENABLED = ENABLED, on
    try:
        yield
    finally:
        ENABLED = before


def options() -> dict[str, Any]:
    """The launch options a kernel that calls `wait_for_previous` is launched with."""
    return {"launch_pdl": True} if ENABLED else {}


if triton is not None:

    @triton.jit
    def wait_for_previous():
        """Wait until the previous kernel has finished and its writes are visible, then let
        the next kernel start (its programs wait in turn before they read what this writes)."""
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def prefetch(at):
        """Ask for the cache lines at the addresses `at` to be brought into L2 (a hint: it
        loads nothing into registers and never faults)."""
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1]; // dummy $0",
            "=r,l",
            [at],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )
