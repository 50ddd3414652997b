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

from tradeoff.engines import decode_attention, dependent_launch

pytest.importorskip("triton")

HERE = Path(__file__).parent


def interpreted(script: Path, *args: str) -> dict[str, float]:
    """The errors `script` prints as its last line (JSON), run in Triton's interpreter."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(HERE.parent / "src")}
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_engine_s_triton_kernels_compute_what_the_plain_path_computes():
    errors = interpreted(HERE / "triton_interpret.py")
    for path in ["", ", tensor cores", ", tensor cores, swapped", ", tensor cores, swapped, split"]:
        assert errors[f"decode_linear{path}"] < 1e-5, errors
    hows = ["", ", grouped", ", combined", ", grouped, combined"]
    hows += [f", blocks of {n}{g}" for n in (32, 128) for g in ("", ", grouped")]
    hows += [", every block", ", every block, grouped"]
    for how in hows:
        assert errors[f"decode_attention{how}"] < 1e-5, errors
        assert errors[f"decode_attention, new token{how}"] < 1e-5, errors
    assert errors["decode_greedy"] == 0.0, errors  # every token as torch.argmax picks it
    assert errors["rms_norm"] < 1e-5, errors


def test_grouped_attention_is_chosen_for_16_bit_caches_with_enough_key_value_heads():
    assert decode_attention.GROUPED is None  # the rule, unless a benchmark forces it
    grouped = decode_attention.grouped
    assert grouped(1, 8, 4, torch.bfloat16)  # Llama-3.1-8B at batch 1: 8 programs a block
    assert grouped(8, 8, 4, torch.float16)
    assert not grouped(1, 2, 7, torch.bfloat16)  # Qwen2.5-0.5B at batch 1: 2 would be too few
    assert grouped(4, 2, 7, torch.bfloat16)
    assert not grouped(8, 8, 1, torch.bfloat16)  # nothing to share
    assert not grouped(8, 8, 4, torch.float32)  # float32 stays on the CUDA cores, exact
    with dependent_launch.enabled(True):  # the combine kernel's launch hidden: grouped anyway
        assert grouped(1, 2, 7, torch.bfloat16)
        assert not grouped(1, 2, 7, torch.float32) and not grouped(1, 8, 1, torch.bfloat16)


def test_the_split_kernel_combines_per_query_head_and_a_kernel_combines_grouped_heads():
    assert decode_attention.COMBINED is None  # the rule, unless a benchmark forces it
    assert decode_attention.combined(False) and not decode_attention.combined(True)


def test_the_attention_s_blocks_of_positions_follow_the_step_s_shape():
    assert decode_attention.BLOCK is None  # the rule, unless a benchmark forces a size
    block = decode_attention.block
    assert block(8, 8, True) == 128  # Llama-3.1-8B at batch 8
    assert block(1, 8, True) == 64  # Llama-3.1-8B at batch 1
    assert block(1, 2, True) == 32  # Qwen2.5-0.5B at batch 1, grouped with pdl=1
    assert block(1, 2, False) == block(8, 8, False) == 64  # a program per query head


def test_the_attention_skips_the_blocks_past_its_position_in_long_caches_only():
    assert decode_attention.SKIP is None  # the rule, unless a benchmark forces it
    assert decode_attention.skip(16)  # Qwen2.5-0.5B with pdl=1: 512 positions in blocks of 32
    assert decode_attention.skip(32)  # Llama-3.1-8B at batch 1, the default 2,048 positions
    assert not decode_attention.skip(8)  # Llama-3.1-8B at batch 1, 512 positions
    assert not decode_attention.skip(4)  # ... and at batch 8, in blocks of 128


def compile_for_hopper(kernel, types: dict[str, str], constants: dict, aligned=(), **options):
    """The kernel compiled to PTX and a cubin for an sm_90 GPU (H100, H200) by Triton's own
    compiler and the ptxas it ships, no GPU needed: what the interpreter cannot check, the
    GPU-only paths (tensor cores, dependent launch), at least compiles. `aligned`: the
    arguments a launch finds divisible by 16 (Triton specialises on it: vector and async
    loads)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {**types, **{name: "constexpr" for name in constants}}
    where = {(kernel.arg_names.index(name),): value for name, value in constants.items()}
    hints = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    source = ASTSource(fn=kernel, signature=signature, constexprs=where, attrs=hints)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def test_the_gpu_only_paths_compile_for_an_sm90_gpu():
    from tradeoff.engines import decode_linear

    ints = dict.fromkeys(("rows", "n", "k", "x_row", "y_row", "res_row"), "i32")
    ptrs = dict.fromkeys(("x_ptr", "w_ptr", "y_ptr", "bias_ptr", "res_ptr", "norm_ptr"), "*bf16")
    ptrs |= {"part_ptr": "*fp32", "count_ptr": "*i32"}
    aligned = [name for name in {**ptrs, **ints} if name != "rows"]  # the 8B shape at batch 8
    for kind, dot, swap, split, pdl, pipe, even in [
        (1, True, False, 1, False, False, True),
        (2, True, False, 1, True, False, True),
        (0, False, False, 1, True, False, True),
        (1, False, False, 1, False, True, True),
        (2, False, False, 1, True, True, False),
        (1, True, True, 1, False, False, True),
        (0, True, True, 4, True, False, True),
    ]:
        blocks = next(
            b
            for b in decode_linear.candidates(8)
            if (b.dot, b.swap, b.split, b.pipe) == (dot, swap, split, pipe)
            and (b.n >= 64 or not swap)  # 64 rows or more: the warpgroup MMA
        )
        constants = dict(INPUT=kind, BIAS=False, RESIDUAL=kind != 1, EPS=1e-5, EVEN=even)
        constants |= dict(ROWS=16 if dot else 8, BLOCK_N=blocks.n, BLOCK_K=blocks.k)
        constants |= dict(LATE=blocks.late, DOT=dot, PDL=pdl, PIPE=pipe, SWAP=swap, SPLIT=split)
        compiled = compile_for_hopper(
            decode_linear._decode_linear_kernel,
            {**ptrs, **ints},
            constants,
            aligned=aligned,
            num_warps=blocks.warps,
            num_stages=blocks.stages,
            launch_pdl=pdl,
        )
        ptx = compiled.asm["ptx"]
        assert ("griddepcontrol.wait" in ptx) == pdl
        assert ("prefetch.global.L2" in ptx) == pdl
        assert ("mma" in ptx) == dot  # the tensor cores, or not
        # swapped, the weight's 64-row tiles go to Hopper's warpgroup MMA from shared memory,
        # filled by asynchronous copies, several blocks ahead
        assert ("wgmma.mma_async" in ptx) == swap
        assert ("cp.async.cg.shared.global" in ptx) == dot
        assert ("atom.global.gpu.acq_rel.add" in ptx) == (split > 1)  # the last part adds up
    ptrs = dict.fromkeys(("q_ptr", "k_ptr", "v_ptr", "new_ptr", "cos_ptr", "sin_ptr"), "*bf16")
    ptrs |= {"part_ptr": "*fp32", "pos_ptr": "*i64", "count_ptr": "*i32", "out_ptr": "*bf16"}
    strides = ("n_heads", "q_row", "q_head", "k_row", "k_head", "k_pos", "v_row", "v_head", "v_pos")
    strides += ("o_row", "o_head")
    for new, group, heads, head_dim, pdl, combine in [
        (True, 4, 4, 128, True, False),
        (True, 7, 1, 64, False, True),
        (True, 7, 7, 64, True, True),  # the Qwen2.5-0.5B shape's group, combined in the kernel
    ]:
        constants = dict(NEW=new, GROUP=group, HEADS=heads, HEAD_DIM=head_dim, BLOCK_POS=64)
        constants |= dict(TILE=16 if heads > 1 else 1, SPLITS=8, SCALE=head_dim**-0.5, PDL=pdl)
        compiled = compile_for_hopper(
            decode_attention._decode_attention_split,
            {**ptrs, **dict.fromkeys(strides, "i32")},
            constants | {"COMBINE": combine, "SKIP": True},
            launch_pdl=pdl,
        )
        assert ("griddepcontrol.wait" in compiled.asm["ptx"]) == pdl
        assert ("mma" in compiled.asm["ptx"]) == (heads > 1)
        # the count: acquire-release at the GPU's scope, so the last program sees the others'
        assert ("atom.global.gpu.acq_rel.add" in compiled.asm["ptx"]) == combine


def test_the_greedy_kernel_compiles_for_an_sm90_gpu():
    from tradeoff.engines import decode_greedy

    for logits in ("*fp32", "*bf16"):  # a decode step leaves its logits in the model's dtype
        ptrs = {"logits_ptr": logits, "tokens_ptr": "*i64", "pos_ptr": "*i64"}
        ptrs |= {"part_ptr": "*fp32", "count_ptr": "*i32", "vocab": "i32", "l_row": "i32"}
        compiled = compile_for_hopper(
            decode_greedy._decode_greedy, ptrs, {"BLOCK": decode_greedy.BLOCK, "BLOCKS": 64}
        )
        # the count: acquire-release at the GPU's scope, so the row's last program sees the
        # others'
        assert "atom.global.gpu.acq_rel.add" in compiled.asm["ptx"]


def test_the_norm_kernel_compiles_for_an_sm90_gpu_and_waits_when_launched_as_a_dependent():
    from tradeoff.engines import rms_norm

    types = dict.fromkeys(("x_ptr", "w_ptr", "y_ptr"), "*bf16")
    types |= dict.fromkeys(("n", "x_row", "y_row"), "i32")
    for pdl in (False, True):
        compiled = compile_for_hopper(
            rms_norm._rms_norm, types, {"EPS": 1e-6, "BLOCK": 1024, "PDL": pdl}, launch_pdl=pdl
        )
        assert ("griddepcontrol.wait" in compiled.asm["ptx"]) == pdl


def test_the_norm_kernel_leaves_cpu_tensors_to_the_ops():
    from tradeoff.engines import rms_norm
    from tradeoff.engines.torch_model import rms_norm as model_norm
    from tradeoff.engines.torch_model import rms_norm_ops

    x, w = torch.randn(2, 1, 64), torch.rand(64)
    assert rms_norm.fused(x, w, 1e-6) is None
    assert torch.equal(model_norm(x, w, 1e-6), rms_norm_ops(x, w, 1e-6))


def test_tuning_keeps_no_kernel_whose_result_disagrees_with_the_plain_path():
    from tradeoff.engines.decode_linear import agrees

    want = torch.tensor([[4.0, -2.0, 1.0], [0.5, 0.0, -3.0]], dtype=torch.bfloat16)
    assert agrees(want, want)
    assert agrees(want + 0.1, want)  # rounding: within 2^-5 of the largest output
    assert not agrees(want.flip(0), want)  # rows swapped: a wrong layout
    assert not agrees(want * 1.1, want)
    nan = want.clone()
    nan[1, 1] = float("nan")
    assert not agrees(nan, want)


def test_the_barrier_probe_s_kernels_compute_what_torch_computes():
    """benchmarks/gpu_barrier_probe.py's kernels in the interpreter, one program a persistent
    launch: the barrier's phases, and the feed-forward step persistent and chained."""
    errors = interpreted(HERE.parent / "benchmarks" / "gpu_barrier_probe.py", "--check")
    assert errors["barrier"] < 1e-6 and errors["ffn"] < 1e-5, errors
