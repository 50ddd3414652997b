"""The analytic FLOPs model against a hand computation on a tiny shape."""

from tradeoff.engines.base import ModelShape
from tradeoff.meters.flops import layer_matmul_params, request_flops

TINY = ModelShape(
    n_params=0, n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, head_dim=4, d_ff=16, vocab=10
)


def test_layer_matmul_params_by_hand():
    # per layer: q 8x8 + k 8x4 + v 8x4 + o 8x8 = 192; gated FFN 3 x 8 x 16 = 384
    assert layer_matmul_params(TINY) == 2 * (192 + 384)


def test_request_flops_by_hand():
    # 3 prompt tokens, 2 output tokens: prefill feeds positions 1..3, decode feeds position 4.
    per_position = 2 * 1152
    per_attended = 4 * 2 * 2 * 4  # 4 x layers x heads x head_dim
    head = 2 * 8 * 10
    f = request_flops(TINY, 3, 2)
    assert f.prefill == 3 * per_position + per_attended * (1 + 2 + 3) + head
    assert f.decode == 1 * per_position + per_attended * 4 + head
    assert f.total == f.prefill + f.decode


def test_no_output_means_no_decode():
    assert request_flops(TINY, 5, 0).decode == 0
    assert request_flops(TINY, 5, 1).decode == 0
    assert request_flops(TINY, 0, 0).total == 0


def test_attention_grows_with_context():
    short = request_flops(TINY, 10, 10).decode
    long = request_flops(TINY, 1000, 10).decode
    assert long > short
