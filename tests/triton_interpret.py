"""Run under TRITON_INTERPRET=1 by tests/test_triton_kernels.py: the torch engine's CUDA kernels
(`decode_linear`, `decode_attention`, `decode_greedy`, `rms_norm`) on the CPU, in float32,
against the plain path each replaces. Prints one JSON line: the largest absolute difference of
each kernel."""

from __future__ import annotations

import itertools
import json
import os

assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1 before importing triton"

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from tradeoff.engines import decode_attention, decode_greedy, decode_linear, rms_norm  # noqa: E402
from tradeoff.engines.counters import counters  # noqa: E402
from tradeoff.engines.torch_model import RMSNorm, _rotate, rms_norm_ops  # noqa: E402


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest absolute difference, infinite where got holds a NaN (which `max` would
    otherwise pass over)."""
    return float((got - want).abs().nan_to_num(nan=float("inf")).max())


def linear_errors() -> dict[str, float]:
    """Every input kind, with and without bias and residual, batch 1 to 8, odd sizes, each
    block shape tuning may pick, and the untuned default; the worst error of each path (on the
    CUDA cores, on the tensor cores, swapped, swapped and split along K)."""
    worst: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    for rows, n, k, kind, bias, res in [
        (1, 96, 64, decode_linear.NORMED, False, False),
        (3, 40, 48, decode_linear.GATED, False, True),
        (8, 64, 128, decode_linear.PLAIN, True, True),
        (1, 33, 80, decode_linear.NORMED, True, False),
        (5, 48, 64, decode_linear.GATED, False, True),
        (2, 17, 200, decode_linear.PLAIN, False, False),
        (8, 30, 72, decode_linear.NORMED, True, True),
        (1, 24, 4096, decode_linear.GATED, False, True),  # several blocks along K, even
        (2, 20, 2200, decode_linear.NORMED, True, False),  # several, the last one ragged
    ]:
        x = torch.randn(rows, 1, 2 * k if kind == decode_linear.GATED else k, generator=gen)
        w = torch.randn(n, k, generator=gen) / k**0.5
        b = torch.randn(n, generator=gen) if bias else None
        r = torch.randn(rows, 1, n, generator=gen) if res else None
        norm = RMSNorm(k, 1e-5)
        norm.weight.data = torch.rand(k, generator=gen) + 0.5
        g = norm.weight.data if kind == decode_linear.NORMED else None
        h = norm(x) if kind == decode_linear.NORMED else x
        if kind == decode_linear.GATED:
            gate, up = x.chunk(2, dim=-1)
            h = F.silu(gate) * up
        want = F.linear(h, w, b) if r is None else r + F.linear(h, w, b)
        padded = decode_linear.pad(rows)
        for blocks in [*decode_linear.candidates(padded), decode_linear.default(padded)]:
            decode_linear.CHOICES[decode_linear._key(x, w, b, r, g, kind == 2)] = blocks
            counts = decode_linear._counters(blocks, n, x.device)
            gated = kind == decode_linear.GATED
            got = decode_linear._decode_linear(x, w, b, r, g, 1e-5, gated, counts)
            assert got.shape == want.shape
            assert counts is None or not counts.any(), counts  # back at 0 for the next launch
            path = "decode_linear" + (", tensor cores" if blocks.dot else "")
            path += (", swapped" if blocks.swap else "") + (", split" if counts is not None else "")
            worst[path] = max(worst.get(path, 0.0), _error(got, want))
    return worst


# batch, query heads, key/value heads, cache length, head size, position
ATTENTION_CASES = [
    (1, 8, 2, 96, 64, 0),
    (2, 8, 2, 96, 64, 37),
    (3, 4, 4, 130, 32, 129),
    (1, 14, 2, 64, 64, 63),
    (1, 4, 1, 200, 16, 150),
]


def attention_errors() -> float:
    """Grouped heads, one key/value head per query head, positions from the first to the
    cache's last, the query a transposed view (as the model passes it)."""
    worst = 0.0
    gen = torch.Generator().manual_seed(1)
    for b, heads, kv_heads, length, head_dim, pos in ATTENTION_CASES:
        q = torch.randn(b, 1, heads, head_dim, generator=gen).transpose(1, 2)
        k = torch.randn(b, kv_heads, length, head_dim, generator=gen)
        v = torch.randn(b, kv_heads, length, head_dim, generator=gen)
        at = torch.tensor([pos])
        mask = at[:, None] >= torch.arange(length)[None, :]
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        got = decode_attention.decode_attention(q, k, v, at)
        assert got.shape == want.shape
        worst = max(worst, _error(got, want))
    return worst


def new_token_errors() -> float:
    """The kernel that also rotates this step's query and key and writes the key and value
    into the cache, from the q/k/v projection's rows, against `torch_model`'s op-by-op path:
    the attention and both caches afterwards."""
    worst = 0.0
    gen = torch.Generator().manual_seed(2)
    for b, heads, kv_heads, length, head_dim, pos in ATTENTION_CASES:
        qkv = torch.randn(b, 1, (heads + 2 * kv_heads) * head_dim, generator=gen)
        k = torch.randn(b, kv_heads, length, head_dim, generator=gen)
        v = torch.randn(b, kv_heads, length, head_dim, generator=gen)
        angles = torch.rand(length, head_dim // 2, generator=gen) * 6.0  # a row a position
        cos, sin = torch.cat((angles, angles), -1).cos(), torch.cat((angles, angles), -1).sin()
        at = torch.tensor([pos])
        rows = cos[at], sin[at]
        q, kn, vn = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
        q = _rotate(q.view(b, 1, heads, head_dim).transpose(1, 2), *rows)
        kn = _rotate(kn.view(b, 1, kv_heads, head_dim).transpose(1, 2), *rows)
        vn = vn.view(b, 1, kv_heads, head_dim).transpose(1, 2)
        k_want, v_want = k.clone().index_copy_(2, at, kn), v.clone().index_copy_(2, at, vn)
        mask = at[:, None] >= torch.arange(length)[None, :]
        want = F.scaled_dot_product_attention(q, k_want, v_want, attn_mask=mask, enable_gqa=True)
        want = want.transpose(1, 2).reshape(b, 1, heads * head_dim)
        counts = decode_attention._counts(qkv.device, b * heads)
        got = decode_attention._decode_attention_new(qkv, cos, sin, k, v, at, heads, counts)
        assert got.shape == want.shape
        assert counts is None or not counts.any(), counts  # back at 0 for the next step
        for a, e in ((got, want), (k, k_want), (v, v_want)):
            worst = max(worst, _error(a, e))
    return worst


def greedy_errors() -> float:
    """The greedy kernel's tokens against torch.argmax (0 where they agree, 1 where a row does
    not), with a row's largest logit repeated across blocks (the first one wins), a vocabulary
    that ends inside a block, one block, several rows, and bfloat16 logits; and the position
    moved on once."""
    worst = 0.0
    gen = torch.Generator().manual_seed(3)
    for rows, vocab, dtype in [
        (1, 151_936, torch.float32),
        (3, 10_000, torch.float32),
        (2, 4_096, torch.float32),
        (8, 9_000, torch.float32),
        (2, 10_000, torch.bfloat16),  # a decode step's logits, as the model leaves them
    ]:
        logits = torch.randn(rows, vocab, generator=gen).to(dtype)
        for r in range(rows):  # the row's maximum at two places, in different blocks
            a, b = sorted(torch.randint(0, vocab, (2,), generator=gen).tolist())
            logits[r, a] = logits[r, b] = logits[r].max() + 1
        tokens = torch.full((rows, 1), -1, dtype=torch.long)
        pos = torch.tensor([41])
        count = counters(logits.device, rows)
        assert count is not None
        decode_greedy.launch(logits, tokens, pos, count)
        want = logits.argmax(dim=-1, keepdim=True)
        worst = max(worst, float((tokens != want).any()), float(pos.item() != 42))
        assert not count.any(), count  # back at 0 for the next step
    return worst


def norm_errors() -> float:
    """The norm kernel against the ops, in float32: one row and many, widths that fill their
    block and widths that end inside it, rows further apart than their width."""
    worst = 0.0
    gen = torch.Generator().manual_seed(4)
    for rows, n in [(1, 896), (3, 80), (128, 64), (2, 4096), (5, 1000)]:
        x = torch.randn(rows, n + 16, generator=gen)[:, :n] * 3  # a row stride of n + 16
        w = torch.rand(n, generator=gen) + 0.5
        out = torch.empty(rows, n)
        rms_norm.launch(x, w, 1e-6, out)
        worst = max(worst, _error(out, rms_norm_ops(x, w, 1e-6)))
    return worst


def _poisoned(*args, **kwargs) -> torch.Tensor:
    """torch.empty, filled with NaN: memory a kernel reads before writing it shows in the result
    (a GPU's scratch memory holds whatever an earlier step left there)."""
    return _empty(*args, **kwargs).fill_(float("nan"))


_empty, torch.empty = torch.empty, _poisoned  # type: ignore[assignment]

if __name__ == "__main__":
    with torch.no_grad():
        errors = linear_errors()
        # the blocks past the last position skipped (`skip`'s rule chooses it for long caches
        # only); a program per query head, or per key/value head; a combine kernel, or the
        # last program of the split kernel combining
        decode_attention.SKIP = True
        for grouped, combined in itertools.product((False, True), (False, True)):
            decode_attention.GROUPED, decode_attention.COMBINED = grouped, combined
            how = (", grouped" if grouped else "") + (", combined" if combined else "")
            errors[f"decode_attention{how}"] = attention_errors()
            errors[f"decode_attention, new token{how}"] = new_token_errors()
        decode_attention.COMBINED = None  # below, combined as shipped: `combined`'s rule
        # the blocks of positions `block` may choose besides 64, on both paths
        for decode_attention.BLOCK, grouped in itertools.product((32, 128), (False, True)):
            decode_attention.GROUPED = grouped
            how = f", blocks of {decode_attention.BLOCK}" + (", grouped" if grouped else "")
            errors[f"decode_attention{how}"] = attention_errors()
            errors[f"decode_attention, new token{how}"] = new_token_errors()
        # every block of the cache attended to, those past the last position masked
        decode_attention.BLOCK, decode_attention.SKIP = None, False
        for grouped in (False, True):
            decode_attention.GROUPED = grouped
            how = ", every block" + (", grouped" if grouped else "")
            errors[f"decode_attention{how}"] = attention_errors()
            errors[f"decode_attention, new token{how}"] = new_token_errors()
        errors["decode_greedy"] = greedy_errors()
        errors["rms_norm"] = norm_errors()
        print(json.dumps(errors))
