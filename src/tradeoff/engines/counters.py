"""Zeroed int32 counters that a kernel's programs count themselves in, so that the last of a
group to finish does the group's final work (`decode_attention`'s combine, `decode_linear`'s
sum along a split K). Each kernel sets its counters back to 0 before it ends, so one tensor
of a size serves every layer, step and kernel on its device."""

from __future__ import annotations

import torch
from torch import Tensor

_ZEROS: dict[tuple[str, int], Tensor] = {}  # by device and size


def counters(device: torch.device, n: int) -> Tensor | None:
    """n zeroed counters on device, made on first use, or None when first asked for while
    compiling or capturing a CUDA graph (no tensor can be made and kept there)."""
    key = (str(device), n)
    if key not in _ZEROS:
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if torch.compiler.is_compiling() or capturing:
            return None
        _ZEROS[key] = torch.zeros(n, dtype=torch.int32, device=device)
    return _ZEROS[key]
