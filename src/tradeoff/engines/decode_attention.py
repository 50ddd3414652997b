"""Attention of one decode token over the static KV cache, as a Triton kernel for CUDA.

Why hand-written: for a single query, `scaled_dot_product_attention` with the cache's boolean
mask ran cuDNN's flash kernel over all the cache's positions, 9.2 µs a layer on an H200 for the
Llama-3.1-8B shape, plus a kernel that turned the mask into a bias (benchmarks/RESULTS.md, issue
17's breakdown): 7% of a decode step. This kernel reads only the positions written so far
(0..pos, `pos` read on the device, so a captured CUDA graph replays it at every position) and
needs no mask.

Flash decoding: one program per (row, block of positions (`block`), and either a query head or a
key/value head with the GROUP query heads that share it (GQA), see `grouped`), each writing its
block's max score, sum of weights and weighted values (float32, as SDPA computes); then the
blocks are combined, per (row, query head): by the last of the split programs of those heads to
finish, or by a second kernel (`combined`: the former per query head, the latter grouped, by
default). A first version
looped over the blocks in one program per (row, head): 18.3 µs a layer on the H200 against
cuDNN's 9.2, its blocks' loads one after another. A program per query head reads its key/value
head's block GROUP times and multiplies on the CUDA cores: 21.3 µs a layer at batch 8 against
cuDNN's 10.2; a program per key/value head multiplies the group's queries (padded to 16) on the
tensor cores: 6.9 µs.

`fused` also takes the step's rotary and cache writes from the model (three kernels a layer,
1-1.6 µs each): it reads the q/k/v projection's output, rotates the query and the new key in the
split kernel, uses the new key and value at the current position, and writes them into the cache
from one program per key/value head. CPU tensors, and a machine without Triton, take rotary,
`index_copy_` and SDPA in `torch_model.Attention`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tradeoff.engines import dependent_launch
from tradeoff.engines.counters import counters

try:
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    from tradeoff.engines.dependent_launch import wait_for_previous
except ImportError:  # the CPU install: no Triton, SDPA only
    triton = None

# Positions a split program takes: None for `block`'s rule; benchmarks force a size.
BLOCK: int | None = None
ENABLED = True  # benchmarks turn it off to time and check SDPA in the same run
# Whether the GROUP query heads that share a key/value head share a split program (their products
# on the tensor cores, the cache's block loaded once) or each query head has its own (products on
# the CUDA cores in float32). None: `grouped`'s rule; benchmarks force it either way.
GROUPED: bool | None = None
# Whether the split kernel's last program of each group of heads combines the blocks (one kernel
# a layer) or a combine kernel does (two). None: `combined`'s rule; benchmarks force it either
# way to time both.
COMBINED: bool | None = None
# Whether the split programs whose block of positions lies past the last position written return
# at once (and the combine reads only the blocks up to it), or every block of the cache is
# attended to, the later ones masked. None: `skip`'s rule; benchmarks force it either way.
SKIP: bool | None = None


def grouped(rows: int, kv_heads: int, group: int, dtype: torch.dtype) -> bool:
    """Whether a step attends with one split program per key/value head: for 16-bit caches
    with grouped heads where that still leaves 8 programs or more a block of positions, or
    where the kernels launch as dependents (`dependent_launch`), which hides the combine
    kernel's launch. On the H200 (RESULTS.md, issue 17) a layer of the Llama-3.1-8B shape (8
    key/value heads, groups of 4) took 4.1 µs this way against 4.6 at batch 1 and 6.9 against
    21.3 at batch 8; the Qwen2.5-0.5B shape (2 key/value heads, groups of 7) 3.3 against 2.8
    at batch 1, but its step with `pdl=1` took 661.5 µs this way against 674.1."""
    if GROUPED is not None:
        return GROUPED
    if group == 1 or dtype not in (torch.bfloat16, torch.float16):
        return False
    return rows * kv_heads >= 8 or dependent_launch.ENABLED


def block(rows: int, kv_heads: int, grouped: bool) -> int:
    """Positions each split program takes (`BLOCK` unless None): on the grouped path 128 at 8
    rows or more, 32 where fewer than 8 programs would share a block, else 64. On the H200
    (RESULTS.md, issue 17) the Llama-3.1-8B shape's compiled step at batch 8 took 4,629.5 µs
    with 128 against 4,752.2 with 64 (its attention 7.2 µs a layer against 9.8); the
    Qwen2.5-0.5B shape's step at batch 1, grouped with `pdl=1`, 655.0 with 32 against 661.5
    with 64 and 674.1 with 16."""
    if BLOCK is not None:
        return BLOCK
    if grouped and rows >= 8:
        return 128
    if grouped and rows * kv_heads < 8:
        return 32
    return 64


def combined(grouped: bool) -> bool:
    """Whether the split kernel's last program combines the blocks (`COMBINED` unless None):
    on the per-head path, not on the grouped one. On an H200 (RESULTS.md, issue 17) the
    Qwen2.5-0.5B shape's step took 717 against 728 µs combined per head; grouped, the last
    program combining its group's heads one after another took 6.3 µs a layer against 3.9 +
    1.3 (Llama-3.1-8B shape, batch 1, launched plainly), 13.4 against 9.9 + 1.6 at batch 8;
    the 0.5B shape's grouped step with `pdl=1` decoded 1,332 against 1,581 tok/s."""
    return COMBINED if COMBINED is not None else not grouped


def skip(splits: int) -> bool:
    """Whether a step skips the blocks past its last position (`SKIP` unless None): where the
    cache has more than 8 blocks. On the H200 (RESULTS.md, issue 17, change 17), with the
    engine's default 2,048 positions, the Llama-3.1-8B shape's step at batch 8 (16 blocks) took
    5,975 µs skipping them against 6,391, and the Qwen2.5-0.5B shape with `pdl=1` (64 blocks of
    32) decoded 1,451.8-1,453.4 tok/s against 1,425.3-1,426.2. With 512 positions the 0.5B
    shape (16 blocks) gained 0.5% in one call and nothing in another; with 4 and 8 blocks (the
    8B shape at batch 8 and 1) the combine, waiting for the position to know which blocks to
    read, lost more than the split kernel gained (7.13 + 1.89 against 7.30 + 1.45 µs a layer
    at batch 8)."""
    return SKIP if SKIP is not None else splits > 8


if triton is not None:

    @triton.jit
    def _rotary(at, cos_ptr, sin_ptr, last, d, HEAD_DIM: tl.constexpr):
        """The heads of x at `at` (d: offsets along a head) rotated as `torch_model._rotate`
        does (x·cos + rotate_half(x)·sin) at position `last` (the tables' row), in float32,
        rounded once to x's dtype as the compiled model rounds it."""
        half = HEAD_DIM // 2
        x = tl.load(at + d).to(tl.float32)
        partner = tl.load(at + (d + half) % HEAD_DIM).to(tl.float32)
        rotated = tl.where(d < half, -partner, partner)
        c = tl.load(cos_ptr + last * HEAD_DIM + d).to(tl.float32)
        s = tl.load(sin_ptr + last * HEAD_DIM + d).to(tl.float32)
        return (x * c + rotated * s).to(at.dtype.element_ty)

    @triton.jit  # no annotations but constexpr: Triton reads them
    def _decode_attention_split(
        q_ptr,
        k_ptr,
        v_ptr,
        part_ptr,
        pos_ptr,
        new_ptr,
        cos_ptr,
        sin_ptr,
        n_heads,
        q_row,
        q_head,
        k_row,
        k_head,
        k_pos,
        v_row,
        v_head,
        v_pos,
        NEW: tl.constexpr,
        GROUP: tl.constexpr,
        HEADS: tl.constexpr,
        TILE: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_POS: tl.constexpr,
        SPLITS: tl.constexpr,
        SCALE: tl.constexpr,  # 1 / sqrt(HEAD_DIM), a constant: a float argument may come as fp64
        PDL: tl.constexpr,
        count_ptr,
        out_ptr,
        o_row,
        o_head,
        COMBINE: tl.constexpr,
        SKIP: tl.constexpr,
    ):
        """HEADS query heads of one row over one block of positions: each head's max score,
        sum of exp(score - max) and weighted sum of values, into part[row * n_heads + head,
        split]. HEADS is 1 (TILE 1: products on the CUDA cores, in float32) or the GROUP heads
        that share a key/value head (TILE: GROUP padded to at least 16 rows, the products on
        the tensor cores, the block of keys and values loaded once for all of them).
        NEW: q is the first part of a row of the q/k/v projection (new_ptr) and this step's key
        and value follow it: the queries and key are rotated here (row `last` of the cos and
        sin tables), the key and value taken at `last` from there and written into the cache
        by one program. PDL: launched as a dependent (`dependent_launch`), it loads the cache's
        earlier positions before it waits for the kernel before it. COMBINE: the last of the
        live programs of this program's HEADS heads to finish (counted in count_ptr[program],
        which it sets back to 0 for the next step) combines their blocks into out_ptr, a head
        after another, and no combine kernel runs.
        SKIP: a program whose block lies past `last` returns at once (`_live`)."""
        program, split = tl.program_id(0), tl.program_id(1)
        last = tl.load(pos_ptr)  # attend to positions 0..last
        live = _live(last, BLOCK_POS, SPLITS, SKIP)
        if split >= live:
            return
        blocks = n_heads // HEADS
        row, first = program // blocks, (program % blocks) * HEADS
        kv_head = first // GROUP
        d = tl.arange(0, HEAD_DIM)
        g = tl.arange(0, TILE)
        head, real = first + g, g < HEADS  # the tile's rows past HEADS are padding
        if TILE == 1:  # one query head: (HEAD_DIM,)
            q_off, q_d = first, d
        else:  # the group's heads, the padding a copy of the last: (TILE, HEAD_DIM)
            q_off, q_d = tl.minimum(head, first + HEADS - 1)[:, None], d[None, :]
        p = split * BLOCK_POS + tl.arange(0, BLOCK_POS)
        valid = p <= last  # a position past `last` loads nothing and weighs nothing
        k_at = k_ptr + row * k_row + kv_head * k_head + p[:, None] * k_pos + d[None, :]
        v_at = v_ptr + row * v_row + kv_head * v_head + p[:, None] * v_pos + d[None, :]
        if NEW:
            here = (p == last)[:, None]
            k = tl.load(k_at, mask=valid[:, None] & ~here, other=0.0)
            v = tl.load(v_at, mask=valid[:, None] & ~here, other=0.0)
            if PDL:  # the cache's earlier positions never depend on the kernel before
                wait_for_previous()
            at = new_ptr + row * q_row
            key_at = at + (n_heads + kv_head) * HEAD_DIM
            k_new = _rotary(key_at, cos_ptr, sin_ptr, last, d, HEAD_DIM)
            v_new = tl.load(key_at + (n_heads // GROUP) * HEAD_DIM + d)
            k = tl.where(here, k_new[None, :], k)
            v = tl.where(here, v_new[None, :], v)
            writer = (first % GROUP == 0) & (split == last // BLOCK_POS)  # one program a kv head
            write = d < tl.where(writer, HEAD_DIM, 0)
            cache_at = row * k_row + kv_head * k_head + last * k_pos + d
            tl.store(k_ptr + cache_at, k_new, mask=write)
            tl.store(v_ptr + row * v_row + kv_head * v_head + last * v_pos + d, v_new, mask=write)
            q = _rotary(at + q_off * HEAD_DIM, cos_ptr, sin_ptr, last, q_d, HEAD_DIM)
        else:
            if PDL:
                wait_for_previous()
            k = tl.load(k_at, mask=valid[:, None], other=0.0)
            v = tl.load(v_at, mask=valid[:, None], other=0.0)
            q = tl.load(q_ptr + row * q_row + q_off * q_head + q_d)
        if TILE == 1:  # on the CUDA cores, in float32
            q = q.to(tl.float32) * SCALE
            score = tl.sum(k.to(tl.float32) * q[None, :], axis=1)
            score = tl.where(valid, score, float("-inf"))
            best = tl.max(score, axis=0)
            w = tl.exp(score - tl.where(best == float("-inf"), 0.0, best))
            out = part_ptr + ((row * n_heads + first) * SPLITS + split) * (HEAD_DIM + 2)
            tl.store(out + d, tl.sum(w[:, None] * v.to(tl.float32), axis=0))
            tl.store(out + HEAD_DIM, best)
            tl.store(out + HEAD_DIM + 1, tl.sum(w, axis=0))
        else:  # on the tensor cores: (TILE, BLOCK_POS) scores
            score = tl.dot(q, tl.trans(k))
            score = tl.where(valid[None, :], score * SCALE, float("-inf"))
            best = tl.max(score, axis=1)
            w = tl.exp(score - tl.where(best == float("-inf"), 0.0, best)[:, None])
            acc = tl.dot(w.to(v.dtype), v)  # the weights rounded as flash attention rounds them
            out = part_ptr + ((row * n_heads + head) * SPLITS + split) * (HEAD_DIM + 2)
            tl.store(out[:, None] + d[None, :], acc, mask=real[:, None])
            tl.store(out + HEAD_DIM, best, mask=real)
            tl.store(out + HEAD_DIM + 1, tl.sum(w, axis=1), mask=real)
        if COMBINE:  # the last of these heads' live programs to finish combines them
            tl.debug_barrier()  # every thread's stores above come before the count's release
            done = tl.atomic_add(count_ptr + program, 1, sem="acq_rel", scope="gpu")
            if done == live - 1:
                tl.store(count_ptr + program, 0)  # no other program counts here this step
                for h in tl.static_range(HEADS):
                    _combine(
                        part_ptr, out_ptr, row, first + h, n_heads, o_row, o_head, live,
                        HEAD_DIM, SPLITS,
                    )  # fmt: skip

    @triton.jit
    def _live(last, BLOCK_POS: tl.constexpr, SPLITS: tl.constexpr, SKIP: tl.constexpr):
        """How many blocks of positions the split kernel attends to: those up to `last`'s, or,
        without SKIP, all SPLITS (the later ones masked to nothing)."""
        if SKIP:
            return last // BLOCK_POS + 1
        else:
            return SPLITS

    @triton.jit
    def _combine(
        part_ptr, out_ptr, row, head, n_heads, o_row, o_head, live, HEAD_DIM: tl.constexpr,
        SPLITS: tl.constexpr,
    ):  # fmt: skip
        """The first `live` blocks' partial sums of one (row, query head), rescaled to the
        largest max; the blocks past them, which hold whatever an earlier step left there, are
        not read. The loads skip the L1 cache: other programs of the same kernel may have
        written them."""
        d = tl.arange(0, HEAD_DIM)
        s = tl.arange(0, SPLITS)
        at = part_ptr + ((row * n_heads + head) * SPLITS + s) * (HEAD_DIM + 2)
        written = s < live
        best = tl.load(at + HEAD_DIM, mask=written, other=float("-inf"), cache_modifier=".cg")
        total = tl.load(at + HEAD_DIM + 1, mask=written, other=0.0, cache_modifier=".cg")
        acc_at = at[:, None] + d[None, :]
        acc = tl.load(acc_at, mask=written[:, None], other=0.0, cache_modifier=".cg")
        scale = tl.exp(best - tl.max(best, axis=0))  # 0 for blocks past the last position
        out = tl.sum(scale[:, None] * acc, axis=0) / tl.sum(scale * total, axis=0)
        tl.store(out_ptr + row * o_row + head * o_head + d, out.to(out_ptr.dtype.element_ty))

    @triton.jit
    def _decode_attention_combine(
        part_ptr,
        out_ptr,
        pos_ptr,
        n_heads,
        o_row,
        o_head,
        HEAD_DIM: tl.constexpr,
        BLOCK_POS: tl.constexpr,
        SPLITS: tl.constexpr,
        PDL: tl.constexpr,
        SKIP: tl.constexpr,
    ):
        """One (row, query head) a program: `_combine`, where the split kernel does not."""
        live = _live(tl.load(pos_ptr), BLOCK_POS, SPLITS, SKIP)
        if PDL:
            wait_for_previous()
        program = tl.program_id(0)
        row, head = program // n_heads, program % n_heads
        _combine(part_ptr, out_ptr, row, head, n_heads, o_row, o_head, live, HEAD_DIM, SPLITS)

    def _attend(
        k: Tensor,
        v: Tensor,
        pos: Tensor,
        out: Tensor,
        out_strides: tuple[int, int],
        n_heads: int,
        q: Tensor | None = None,
        new: Tensor | None = None,
        cos: Tensor | None = None,
        sin: Tensor | None = None,
        counts: Tensor | None = None,
    ) -> None:
        """Attention of q (batch, heads, 1, head_dim), or of the q/k/v projection's rows `new`
        with this step's rotary and cache writes, into out: the split kernel, then the combine
        kernel unless the split kernel combines (`combined`, given `counts`: zeros, one per
        program)."""
        b, head_dim = k.shape[0], k.shape[-1]
        group = n_heads // k.shape[1]
        heads = group if grouped(b, k.shape[1], group, k.dtype) else 1
        positions = block(b, k.shape[1], heads > 1)
        splits = triton.next_power_of_2(triton.cdiv(k.shape[2], positions))
        skipping = skip(splits)
        part = torch.empty(
            (b * n_heads, splits, head_dim + 2), dtype=torch.float32, device=k.device
        )
        query = q if q is not None else new
        assert query is not None
        q_strides = (q.stride(0), q.stride(1)) if q is not None else (query.stride(0), head_dim)
        combine = counts is not None and combined(heads > 1)
        wrap_triton(_decode_attention_split)[(b * n_heads // heads, splits)](
            query,
            k,
            v,
            part,
            pos[-1:],
            query,
            cos if cos is not None else k,
            sin if sin is not None else k,
            n_heads,
            *q_strides,
            k.stride(0),
            k.stride(1),
            k.stride(2),
            v.stride(0),
            v.stride(1),
            v.stride(2),
            NEW=new is not None,
            GROUP=group,
            HEADS=heads,
            TILE=1 if heads == 1 else max(16, triton.next_power_of_2(heads)),
            HEAD_DIM=head_dim,
            BLOCK_POS=positions,
            SPLITS=splits,
            SCALE=1.0 / math.sqrt(head_dim),
            PDL=dependent_launch.ENABLED,
            count_ptr=counts if combine else part,
            out_ptr=out,
            o_row=out_strides[0],
            o_head=out_strides[1],
            COMBINE=combine,
            SKIP=skipping,
            **dependent_launch.options(),
        )
        if combine:
            return
        wrap_triton(_decode_attention_combine)[(b * n_heads,)](
            part,
            out,
            pos[-1:],
            n_heads,
            *out_strides,
            HEAD_DIM=head_dim,
            BLOCK_POS=positions,
            SPLITS=splits,
            PDL=dependent_launch.ENABLED,
            SKIP=skipping,
            **dependent_launch.options(),
        )

    @triton_op("tradeoff::decode_attention", mutates_args=("counts",))
    def _decode_attention(
        q: Tensor, k: Tensor, v: Tensor, pos: Tensor, counts: Tensor | None
    ) -> Tensor:
        out = torch.empty_like(q)
        strides = (out.stride(0), out.stride(1))
        _attend(k, v, pos, out, strides, q.shape[1], q=q, counts=counts)
        return out

    @triton_op("tradeoff::decode_attention_new", mutates_args=("k", "v", "counts"))
    def _decode_attention_new(
        qkv: Tensor,
        cos: Tensor,
        sin: Tensor,
        k: Tensor,
        v: Tensor,
        pos: Tensor,
        n_heads: int,
        counts: Tensor | None,
    ) -> Tensor:
        head_dim = k.shape[-1]
        out = torch.empty((qkv.shape[0], 1, n_heads * head_dim), dtype=qkv.dtype, device=qkv.device)
        strides = (out.stride(0), head_dim)
        _attend(k, v, pos, out, strides, n_heads, new=qkv, cos=cos, sin=sin, counts=counts)
        return out


def _counts(device: torch.device, n: int) -> Tensor | None:
    """The counters the split kernel's programs count themselves in, for n (row, query head)
    pairs on device (`counters`), or None where `COMBINED` turns combining in it off."""
    return counters(device, n) if COMBINED is not False else None


def decode_attention(q: Tensor, k: Tensor, v: Tensor, pos: Tensor) -> Tensor:
    """Softmax attention of q (batch, heads, 1, head_dim), rotated and its key and value already
    in the cache, over the cache k, v (batch, kv heads, length, head_dim) at positions
    0..pos[-1]; the result has q's shape and dtype. The model attends through `fused` (where
    `takes` holds) or SDPA; this entry point is the same kernel without the new token's work."""
    assert triton is not None and q.shape[2] == 1
    return _decode_attention(q, k, v, pos, _counts(q.device, q.shape[0] * q.shape[1]))


def takes(tokens: Tensor, head_dim: int) -> bool:
    """Whether a step of `tokens` (batch, T) attends through `fused`: one token a row, on CUDA,
    a power-of-two head size. Decided once a step, so that the model gathers the rotary's rows
    and builds the mask only where this kernel does not take them."""
    return (
        ENABLED
        and triton is not None
        and tokens.is_cuda
        and tokens.shape[1] == 1
        and head_dim & (head_dim - 1) == 0
    )


def fused(
    qkv: Tensor, cos: Tensor, sin: Tensor, k: Tensor, v: Tensor, pos: Tensor, n_heads: int
) -> Tensor:
    """A decode step's attention (where `takes` holds) from its q/k/v projection qkv (batch, 1,
    (heads + 2 kv heads) × head_dim): the query and key rotated by row pos[-1] of the tables
    cos and sin (positions, head_dim), this step's key and value written into the cache k, v
    at pos[-1], the result (batch, 1, heads × head_dim)."""
    head_dim = k.shape[-1]
    assert qkv.is_contiguous() and cos.shape[-1] == head_dim and cos.is_contiguous()
    assert sin.is_contiguous() and k.stride(-1) == v.stride(-1) == 1
    counts = _counts(qkv.device, qkv.shape[0] * n_heads)
    return _decode_attention_new(qkv, cos, sin, k, v, pos, n_heads, counts)
