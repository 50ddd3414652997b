"""Analytic FLOPs of a request from the model's shape (labelled "analytic" wherever shown).

Counted: every weight matrix multiply (2 FLOPs per multiply-add) over each position fed through
the model, attention scores and the weighted sum of values (2 x 2 x head_dim x n_heads FLOPs per
attended position per layer), and the output projection (d_model x vocab) only where logits are
needed: the last prompt position and each decode step. Not counted: norms, activations, softmax,
embeddings lookup (a gather). Sliding-window attention is not modelled: every position attends to
all before it, an upper bound past the window (`tradeoff roofline` says where a request is).
"""

from __future__ import annotations

from dataclasses import dataclass

from tradeoff.engines.base import ModelShape


@dataclass(frozen=True)
class RequestFlops:
    prefill: float
    decode: float

    @property
    def total(self) -> float:
        return self.prefill + self.decode


def layer_matmul_params(shape: ModelShape) -> int:
    """Weights multiplied per token in all transformer blocks (the LM head excluded)."""
    q_dim = shape.n_heads * shape.head_dim
    kv_dim = shape.n_kv_heads * shape.head_dim
    attention = shape.d_model * q_dim + 2 * shape.d_model * kv_dim + q_dim * shape.d_model
    ffn = (3 if shape.gated_ffn else 2) * shape.d_model * shape.d_ff
    return shape.n_layers * (attention + ffn)


def _positions_sum(first: int, last: int) -> int:
    """first + (first+1) + ... + last, 0 when empty."""
    if last < first:
        return 0
    return (first + last) * (last - first + 1) // 2


def eval_flops(shape: ModelShape, start: int, n_tokens: int) -> float:
    """FLOPs of one batched evaluation of `n_tokens` positions after `start` already in the
    context, with logits for the last position only (how llama.cpp evaluates)."""
    if n_tokens <= 0:
        return 0.0
    per_position = 2 * layer_matmul_params(shape)
    per_attended = 4 * shape.n_layers * shape.n_heads * shape.head_dim
    head = 2 * shape.d_model * shape.vocab
    attended = _positions_sum(start + 1, start + n_tokens)
    return float(per_position * n_tokens + per_attended * attended + head)


def request_flops(shape: ModelShape, input_tokens: int, output_tokens: int) -> RequestFlops:
    """FLOPs to prefill `input_tokens` and then decode `output_tokens` (the first output token
    comes from the prefill's last position, so decoding feeds output_tokens - 1 positions)."""
    per_position = 2 * layer_matmul_params(shape)
    per_attended = 4 * shape.n_layers * shape.n_heads * shape.head_dim
    head = 2 * shape.d_model * shape.vocab
    p = max(input_tokens, 0)
    prefill = per_position * p + per_attended * _positions_sum(1, p) + (head if p else 0)
    steps = max(output_tokens - 1, 0)
    decode = per_position * steps + per_attended * _positions_sum(p + 1, p + steps) + head * steps
    return RequestFlops(float(prefill), float(decode))
