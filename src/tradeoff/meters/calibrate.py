"""`tradeoff calibrate`: measure what this machine achieves, for the roofline.

- Memory bandwidth: copy a buffer much larger than the caches; bytes moved = read + written.
- Matmul FLOP/s: square matrix products, 2 n^3 FLOPs each.
The best of repeated runs within the time given is kept (the achievable peak, not the average).
CPU: numpy (float32, its BLAS, all its threads). CUDA: PyTorch (bf16 matmul, device copy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tradeoff.errors import UserError
from tradeoff.meters.host import cpu_model, usable_cores
from tradeoff.meters.roofline import Peaks


@dataclass(frozen=True)
class Calibration:
    peaks: Peaks
    details: dict[str, object]


def _best(run: Callable[[], float], seconds: float, minimum: int = 3) -> float:
    """The shortest time of `run` (which returns its own duration) over `seconds`."""
    best = float("inf")
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < minimum or time.perf_counter() < deadline:
        best = min(best, run())
        runs += 1
    return best


def cpu_device() -> str:
    """This machine's CPU as calibrations name it: the cores this process may run on (under
    `taskset -c 0` of 2, one core was measured and was filed as the machine's 2)."""
    return f"cpu: {cpu_model()} ({usable_cores()} threads)"


def calibrate_cpu(seconds: float = 3.0, buffer_mib: int = 256, n: int = 1024) -> Calibration:
    src = np.ones(buffer_mib * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)

    def copy() -> float:
        t0 = time.perf_counter()
        np.copyto(dst, src)
        return time.perf_counter() - t0

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)

    def matmul() -> float:
        t0 = time.perf_counter()
        np.matmul(a, b)
        return time.perf_counter() - t0

    copy_s = _best(copy, seconds / 2)
    matmul_s = _best(matmul, seconds / 2)
    bandwidth = 2 * src.nbytes / copy_s
    flops = 2 * n**3 / matmul_s
    peaks = Peaks(cpu_device(), flops, bandwidth, "calibrated", "fp32")
    return Calibration(
        peaks,
        {
            "method": f"numpy copy of {buffer_mib} MiB (read + write); float32 {n}x{n} matmul",
            "precision": "float32",
        },
    )


def calibrate_cuda(seconds: float = 3.0, buffer_mib: int = 2048, n: int = 8192) -> Calibration:
    try:
        import torch
    except ImportError:
        raise UserError("--device cuda needs PyTorch (pip install torch)") from None
    if not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA device")
    device = torch.device("cuda")
    src = torch.empty(buffer_mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)

    def timed(fn: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return run

    copy_s = _best(timed(lambda: dst.copy_(src)), seconds / 2)
    matmul_s = _best(timed(lambda: torch.matmul(a, b)), seconds / 2)
    name = torch.cuda.get_device_name(device)
    peaks = Peaks(name, 2 * n**3 / matmul_s, 2 * src.numel() / copy_s, "calibrated", "bf16")
    return Calibration(
        peaks,
        {
            "method": f"torch device copy of {buffer_mib} MiB (read + write); bf16 {n}x{n} matmul",
            "precision": "bfloat16",
        },
    )


def calibrate(device: str, seconds: float = 3.0) -> Calibration:
    """Measure `device`: "cpu" (numpy) or "cuda" (PyTorch)."""
    if device == "cpu":
        return calibrate_cpu(seconds)
    if device == "cuda":
        return calibrate_cuda(seconds)
    raise UserError(f"device '{device}' cannot be calibrated; known: cpu, cuda")
