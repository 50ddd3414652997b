"""The in-process llama.cpp engine on the real bundled models."""

import math

from tradeoff.types import Request

CHAT = [{"role": "user", "content": "What is 12 times 3? Answer with just the number."}]


def test_chat_generation_counts_and_times_every_token(smollm):
    g = smollm.generate(Request(messages=CHAT, max_tokens=24))
    assert g.error is None
    assert g.mode == "chat"
    assert g.input_tokens == len(smollm.prompt_tokens(Request(messages=CHAT)))
    assert 0 < g.output_tokens <= 24
    assert len(g.token_times) == g.output_tokens
    assert g.t_start < g.t_first <= g.token_times[0] <= g.token_times[-1] <= g.t_end
    assert g.finish_reason in {"stop", "length"}
    # the text is exactly what the counted tokens detokenize to
    assert len(smollm.llm.tokenize(g.text.encode(), add_bos=False, special=False)) >= 1


def test_max_tokens_caps_output(smollm):
    g = smollm.generate(
        Request(messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=5)
    )
    assert g.output_tokens == 5 and g.finish_reason == "length"


def test_greedy_is_deterministic_and_sampling_follows_seed(smollm):
    req = Request(messages=CHAT, max_tokens=12)
    assert smollm.generate(req).text == smollm.generate(req).text
    story = [{"role": "user", "content": "Write one sentence about a cat."}]
    a = smollm.generate(Request(messages=story, max_tokens=16, temperature=1.0, seed=1))
    b = smollm.generate(Request(messages=story, max_tokens=16, temperature=1.0, seed=1))
    assert a.text == b.text


def test_logprobs_and_full_vocabulary_entropy(smollm):
    g = smollm.generate(Request(messages=CHAT, max_tokens=8, logprobs=True))
    assert len(g.token_logprobs) == len(g.token_entropies) == g.output_tokens
    ln_vocab = math.log(smollm.n_vocab)
    assert all(lp <= 0.0 for lp in g.token_logprobs)
    assert all(0.0 <= h <= ln_vocab + 1e-6 for h in g.token_entropies)
    # greedy picks the most likely token, whose probability is at least exp(-entropy)
    assert all(lp >= -h - 1e-6 for lp, h in zip(g.token_logprobs, g.token_entropies))


def test_completion_mode_with_stop_on_base_model(gemma):
    prompt = "Question: What is 2 plus 2?\nAnswer: 4\n\nQuestion: What is 5 plus 1?\nAnswer:"
    g = gemma.generate(Request(prompt=prompt, max_tokens=16, stop=["\n"]))
    assert g.error is None and g.mode == "completion"
    assert "\n" not in g.text
    assert g.output_tokens >= 1


def test_gguf_shape_read_from_metadata(smollm, gemma):
    s = smollm.info.shape
    assert (s.n_layers, s.d_model, s.n_heads, s.n_kv_heads, s.vocab) == (30, 576, 9, 3, 49152)
    assert 130e6 < s.n_params < 140e6
    g = gemma.info.shape
    assert (g.n_layers, g.d_model, g.head_dim, g.vocab) == (18, 640, 256, 262144)


def test_oversized_request_is_an_error_not_an_exception(smollm):
    g = smollm.generate(Request(prompt="hi", max_tokens=100000))
    assert g.error and "exceeds the context" in g.error
