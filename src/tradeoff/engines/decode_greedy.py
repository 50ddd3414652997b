"""A greedy decode step's last work on the GPU: each row's token (the first of its largest
logits, as `torch.argmax` picks it) written where the next step reads its input, and the position
moved on by one, so that greedy decoding launches nothing between two steps' graphs.

Why hand-written: torch's argmax over the Qwen2.5-0.5B shape's 151,936 logits ran as one
reduction kernel of 8.1 µs on an H200, then a copy and an add (benchmarks/RESULTS.md, issue 17).
Here one kernel does all three: each program takes BLOCK logits of a row and keeps their largest
and its first index; the last of a row's programs to finish, counted as the attention's combine
counts (`counters`), picks among them, ties going to the earliest block, and the last of row 0
moves the position on. CPU tensors, and a machine without Triton, take the torch ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tradeoff.engines.counters import counters

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU install: no Triton
    triton = None

BLOCK = 4096  # logits a program takes


if triton is not None:

    @triton.jit  # no annotations but constexpr: Triton reads them
    def _decode_greedy(
        logits_ptr,
        tokens_ptr,
        pos_ptr,
        part_ptr,
        count_ptr,
        vocab,
        l_row,
        BLOCK: tl.constexpr,
        BLOCKS: tl.constexpr,
    ):
        """One block of one row's logits a program: its largest logit and that logit's first
        index into part_ptr (rows × BLOCKS values, then as many indices, float32: exact below
        2^24); the row's last program writes the row's token, row 0's also adds 1 to pos."""
        block, row = tl.program_id(0), tl.program_id(1)
        rows = tl.num_programs(1)
        at = block * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(logits_ptr + row * l_row + at, mask=at < vocab, other=float("-inf"))
        x = x.to(tl.float32)  # exact from the model's 16-bit logits
        best = tl.max(x, axis=0)
        first = tl.min(tl.where(x == best, at, vocab), axis=0)
        tl.store(part_ptr + row * BLOCKS + block, best)
        tl.store(part_ptr + (rows + row) * BLOCKS + block, first.to(tl.float32))
        tl.debug_barrier()  # every thread's stores above come before the count's release
        done = tl.atomic_add(count_ptr + row, 1, sem="acq_rel", scope="gpu")
        if done == tl.num_programs(0) - 1:
            tl.store(count_ptr + row, 0)  # no other program counts here this launch
            b = tl.arange(0, BLOCKS)
            ran = b < tl.num_programs(0)  # the blocks past the vocabulary's end never ran
            values = tl.load(
                part_ptr + row * BLOCKS + b, mask=ran, other=float("-inf"), cache_modifier=".cg"
            )
            firsts = tl.load(
                part_ptr + (rows + row) * BLOCKS + b, mask=ran, other=vocab, cache_modifier=".cg"
            )
            top = tl.max(values, axis=0)
            token = tl.min(tl.where(values == top, firsts, vocab), axis=0).to(tl.int64)
            tl.store(tokens_ptr + row, tl.minimum(token, vocab - 1))  # a NaN row: the last
            if row == 0:
                tl.store(pos_ptr, tl.load(pos_ptr) + 1)


def advance(logits: Tensor, tokens: Tensor, pos: Tensor) -> None:
    """tokens (rows, 1) ← each row's greedy token of logits (rows, vocab); pos (1,)
    += 1. In one kernel on CUDA where the counters exist (they cannot be made while a graph is
    captured: a step runs eagerly first), else torch's argmax and add."""
    rows, vocab = logits.shape
    count = counters(logits.device, rows) if logits.is_cuda and triton is not None else None
    if count is None or logits.stride(1) != 1:
        torch.argmax(logits, dim=-1, keepdim=True, out=tokens)
        pos.add_(1)
        return
    launch(logits, tokens, pos, count)


def launch(logits: Tensor, tokens: Tensor, pos: Tensor, count: Tensor) -> None:
    """The kernel of `advance`, counting in `count` (rows zeros, left zero)."""
    assert triton is not None and tokens.is_contiguous()
    rows, vocab = logits.shape
    blocks = triton.cdiv(vocab, BLOCK)
    spread = triton.next_power_of_2(blocks)
    part = torch.empty(2 * rows * spread, dtype=torch.float32, device=logits.device)
    _decode_greedy[(blocks, rows)](
        logits, tokens, pos, part, count, vocab, logits.stride(0), BLOCK=BLOCK, BLOCKS=spread
    )
