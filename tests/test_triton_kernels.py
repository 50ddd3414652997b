"""The torch engine's Triton kernels, run by Triton's interpreter on the CPU: the same kernels
the engine launches on CUDA, checked against the plain path each replaces (SDPA; RMSNorm, SiLU
and F.linear op by op). Speed is the GPU's business (benchmarks/RESULTS.md, issue 17); what
the kernels compute is checked here, in float32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tradeoff.engines import decode_attention

pytest.importorskip("triton")

HERE = Path(__file__).parent


def test_the_engine_s_triton_kernels_compute_what_the_plain_path_computes():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(HERE.parent / "src")}
    proc = subprocess.run(
        [sys.executable, str(HERE / "triton_interpret.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert errors["decode_linear"] < 1e-5, errors
    for how in ("", ", grouped"):
        assert errors[f"decode_attention{how}"] < 1e-5, errors
        assert errors[f"decode_attention, new token{how}"] < 1e-5, errors


def test_grouped_attention_is_chosen_for_16_bit_caches_with_enough_key_value_heads():
    assert decode_attention.GROUPED is None  # the rule, unless a benchmark forces it
    grouped = decode_attention.grouped
    assert grouped(1, 8, 4, torch.bfloat16)  # Llama-3.1-8B at batch 1: 8 programs a block
    assert grouped(8, 8, 4, torch.float16)
    assert not grouped(1, 2, 7, torch.bfloat16)  # Qwen2.5-0.5B at batch 1: 2 would be too few
    assert grouped(4, 2, 7, torch.bfloat16)
    assert not grouped(8, 8, 1, torch.bfloat16)  # nothing to share
    assert not grouped(8, 8, 4, torch.float32)  # float32 stays on the CUDA cores, exact
