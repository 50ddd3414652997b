"""OpenAIEngine against a real HTTP server on loopback: benchmarks/fast_server.py, a canned
streaming server (no model) that answers max_tokens words, one SSE chunk each."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Iterator

import pytest
from conftest import fast_server, one_line_error, run_cli

from tradeoff.engines.openai import OpenAIEngine, api_root, https_proxy, topk_entropy
from tradeoff.errors import UserError
from tradeoff.types import Generation, Request

# The server's canned answer and its top-5 probabilities for every token.
WORDS = ["The", " answer", " is", " 42", ".", " Next"]
TOP_PROBS = [0.6, 0.15, 0.1, 0.03, 0.02]
CHAT = [{"role": "user", "content": "What is six times seven?"}]


def _start(*flags: str) -> Iterator[str]:
    yield from fast_server(*flags)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    yield from _start()


@pytest.fixture(scope="module")
def url_no_usage() -> Iterator[str]:
    yield from _start("--no-usage")


@pytest.fixture(scope="module")
def url_slow() -> Iterator[str]:
    yield from _start("--delay-ms", "3")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def generate(engine: OpenAIEngine, request: Request) -> Generation:
    async def go() -> Generation:
        try:
            return await engine.agenerate(request)
        finally:
            await engine.aclose()

    return asyncio.run(go())


def test_chat_stream_text_counts_and_timings(url: str) -> None:
    g = generate(OpenAIEngine(url, "any-name"), Request(messages=CHAT, max_tokens=4))
    assert g.error is None
    assert g.text == "The answer is 42"
    assert (g.mode, g.finish_reason) == ("chat", "length")
    assert (g.output_tokens, g.input_tokens, g.token_count_source) == (4, 5, "usage")
    assert len(g.token_times) == 4
    assert g.t_first is not None and g.t_start < g.t_first <= g.t_end
    assert g.token_times[0] == g.t_first
    assert g.ttft_s is not None and g.ttft_s <= g.e2e_s


def test_a_reasoning_model_s_thinking_is_timed_and_counted_as_its_output(url_slow: str) -> None:
    """TTFT is the first generated token, a thought (`reasoning_content`) among them, and ITL
    spans the thinking too (GuideLLM's TTFT, not its time to the first answer token); the README
    called both "content" tokens, the answer's field. The answer text is the content alone."""
    g = generate(OpenAIEngine(url_slow, "reasoning"), Request(messages=CHAT, max_tokens=6))
    assert g.error is None and g.text == " 42. Next"  # 3 tokens of thinking, then the answer
    assert (g.output_tokens, len(g.token_times)) == (6, 6)
    assert g.t_first == g.token_times[0] < g.token_times[3]  # before the answer's first token


def test_completion_stream(url: str) -> None:
    g = generate(
        OpenAIEngine(url, "fast", prompt_mode="completion"),
        Request(prompt="Q: 6*7? A:", max_tokens=3),
    )
    assert g.error is None
    assert (g.text, g.mode, g.output_tokens, g.token_count_source) == (
        "The answer is",
        "completion",
        3,
        "usage",
    )


def test_token_times_follow_a_slow_stream(url_slow: str) -> None:
    g = generate(OpenAIEngine(url_slow, "fast"), Request(messages=CHAT, max_tokens=6))
    assert g.error is None and g.text == "".join(WORDS)
    times = g.token_times
    assert len(times) == 6
    assert all(a < b for a, b in zip(times, times[1:], strict=False))
    assert g.itl_s is not None and g.itl_s >= 0.002  # the server sleeps 3 ms before each chunk
    assert g.ttft_s is not None and g.ttft_s < g.e2e_s


def test_extra_body_reaches_the_server(url: str) -> None:
    engine = OpenAIEngine(url, "fast", extra_body={"max_tokens": 2, "stream": False})
    g = generate(engine, Request(messages=CHAT, max_tokens=6))
    assert g.error is None and g.text == "The answer"  # still streamed, with 2 tokens


def test_counts_chunks_when_server_sends_no_usage(url_no_usage: str) -> None:
    g = generate(OpenAIEngine(url_no_usage, "fast"), Request(messages=CHAT, max_tokens=5))
    assert g.error is None
    assert (g.output_tokens, g.input_tokens, g.token_count_source) == (
        5,
        None,
        "chunks; input unknown",
    )


def test_a_null_completion_count_in_usage_falls_back_to_counting_chunks(url: str) -> None:
    """`int(None)` raised out of agenerate and ended the whole run with a traceback."""
    g = generate(OpenAIEngine(url, "usage-null"), Request(messages=CHAT, max_tokens=5))
    assert (g.error, g.text) == (None, "The answer is 42.")
    assert (g.output_tokens, g.input_tokens, g.token_count_source) == (
        5,
        None,
        "chunks; input unknown",
    )


def test_a_prompt_count_in_usage_that_is_not_a_number_is_unknown(url: str) -> None:
    g = generate(OpenAIEngine(url, "usage-text"), Request(messages=CHAT, max_tokens=5))
    assert g.error is None
    assert (g.output_tokens, g.input_tokens, g.token_count_source) == (5, None, "usage")


def _asking_logprobs(chat: bool) -> Request:
    if chat:
        return Request(messages=CHAT, max_tokens=3, logprobs=True)
    return Request(prompt="Q:", max_tokens=3, logprobs=True)


@pytest.mark.parametrize("chat", [True, False])
def test_logprobs_and_topk_entropies(url_no_usage: str, chat: bool) -> None:
    g = generate(OpenAIEngine(url_no_usage, "fast"), _asking_logprobs(chat))
    assert g.error is None
    assert g.token_logprobs == pytest.approx([math.log(0.6)] * 3)
    # The five listed tokens plus the remaining 0.1 of probability as one outcome.
    expected = -sum(p * math.log(p) for p in TOP_PROBS) - 0.1 * math.log(0.1)
    assert g.token_entropies == pytest.approx([expected] * 3)
    assert (g.output_tokens, g.token_count_source) == (3, "logprobs; input unknown")


def test_topk_entropy_is_exact_for_a_complete_distribution() -> None:
    assert topk_entropy([math.log(0.5), math.log(0.5)]) == pytest.approx(math.log(2))
    assert topk_entropy([0.0]) == pytest.approx(0.0)


@pytest.mark.parametrize("chat", [True, False])
def test_an_alternative_of_probability_zero_adds_no_entropy(url_no_usage: str, chat: bool) -> None:
    """A listed log-probability of -Infinity (log 0) made 0 * -inf = NaN of the entropy: a
    cascade on it never escalated."""
    assert topk_entropy([-0.01, -5.0, -math.inf]) == pytest.approx(topk_entropy([-0.01, -5.0]))
    g = generate(OpenAIEngine(url_no_usage, "zero-alternative"), _asking_logprobs(chat))
    assert g.error is None
    expected = -sum(p * math.log(p) for p in TOP_PROBS) - 0.1 * math.log(0.1)
    assert g.token_entropies == pytest.approx([expected] * 3)


@pytest.mark.parametrize("chat", [True, False])
def test_a_null_log_probability_is_unknown_not_a_malformed_stream(
    url_no_usage: str, chat: bool
) -> None:
    """A chosen token's `logprob: null` failed the whole answer as malformed (float(None))."""
    g = generate(OpenAIEngine(url_no_usage, "null-logprob"), _asking_logprobs(chat))
    assert (g.error, g.text, g.output_tokens) == (None, "The answer is", 3)
    assert len(g.token_logprobs) == 3 and all(math.isnan(lp) for lp in g.token_logprobs)
    # a server that nulls it nulls it among the alternatives too: that entropy is unknown
    assert len(g.token_entropies) == 3 and all(math.isnan(e) for e in g.token_entropies)


def test_http_500_is_an_error_not_an_exception(url: str) -> None:
    g = generate(OpenAIEngine(url, "fail-500"), Request(messages=CHAT, max_tokens=4))
    assert g.error is not None and g.error.startswith("HTTP 500: ")
    assert "fake failure for tests" in g.error and "\n" not in g.error
    assert (g.text, g.t_first, g.finish_reason) == ("", None, "error")


@pytest.mark.parametrize("model", ["fail-garbage", "fail-drop", "fail-cut"])
def test_broken_stream_keeps_partial_text(url: str, model: str) -> None:
    g = generate(OpenAIEngine(url, model), Request(messages=CHAT, max_tokens=8))
    assert g.error is not None and "\n" not in g.error
    assert g.text == "The answer"
    assert len(g.token_times) == 2


@pytest.mark.parametrize("chat", [True, False])
def test_a_stream_cut_after_its_finish_reason_keeps_the_answer(url: str, chat: bool) -> None:
    """The connection dropped after the last chunk, its finish_reason and usage, before [DONE]:
    the answer was whole, yet the record failed (aiohttp's payload error)."""
    engine = OpenAIEngine(url, "cut-after-finish")
    request = Request(messages=CHAT, max_tokens=4) if chat else Request(prompt="Q:", max_tokens=4)
    g = generate(engine, request)
    assert (g.error, g.text, g.finish_reason) == (None, "The answer is 42", "length")
    assert (g.output_tokens, g.token_count_source) == (4, "usage")


def test_a_cut_stream_says_how_to_avoid_it(url: str) -> None:
    g = generate(OpenAIEngine(url, "fail-cut"), Request(messages=CHAT, max_tokens=8))
    assert g.error is not None and "--interrupt_requests False" in g.error


def test_an_error_field_in_the_stream_fails_the_request_with_its_message(url: str) -> None:
    """llama.cpp's llama-server reports a failure after the response head as an SSE `error:`
    field, then [DONE]: it was stored as a complete empty answer, finish_reason "stop"."""
    g = generate(OpenAIEngine(url, "fail-error-field"), Request(messages=CHAT, max_tokens=4))
    assert g.error == ("server error in stream: the request exceeds the available context size"), (
        g.error
    )
    assert (g.text, g.output_tokens, g.finish_reason) == ("", 0, "error")


def test_done_with_no_token_and_no_finish_reason_is_an_error(url: str) -> None:
    g = generate(OpenAIEngine(url, "fail-empty-done"), Request(messages=CHAT, max_tokens=4))
    assert g.error is not None and "[DONE] with no token and no finish_reason" in g.error
    assert g.finish_reason == "error"


def test_an_answer_without_a_finish_reason_is_kept_with_the_reason_unknown(url: str) -> None:
    g = generate(OpenAIEngine(url, "no-finish"), Request(messages=CHAT, max_tokens=4))
    assert (g.error, g.text, g.output_tokens) == (None, "The answer is 42", 4)
    assert g.finish_reason == "unknown"  # not made up as "stop"


def test_a_null_error_in_every_chunk_is_no_error(url: str) -> None:
    """Some gateways send `"error": null` on every chunk: each answer failed with "server error
    in stream: None"."""
    g = generate(OpenAIEngine(url, "error-null"), Request(messages=CHAT, max_tokens=4))
    assert (g.error, g.text, g.finish_reason) == (None, "The answer is 42", "length")


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("fail-json", ": model not loaded"),
        ("not-streamed", ' (does it ignore stream: true?): {"id": "fast", '),
    ],
)
def test_an_answer_that_is_no_event_stream_says_what_it_is(url: str, model: str, said: str) -> None:
    """A 200 with a JSON body read as an empty stream: "ended without [DONE] or a finish_reason",
    the server's own message hidden."""
    g = generate(OpenAIEngine(url, model), Request(messages=CHAT, max_tokens=4))
    assert g.error is not None and "\n" not in g.error
    assert g.error.startswith("the server answered application/json, not an event stream" + said)
    assert g.finish_reason == "error"


def test_timeout_is_an_error(url: str) -> None:
    g = generate(OpenAIEngine(url, "hang", timeout_s=0.3), Request(messages=CHAT))
    # aiohttp's read timeout: SocketTimeoutError (ServerTimeoutError before aiohttp 3.10)
    assert g.error is not None and g.error.startswith("timeout after 0.3 s (")
    assert "TimeoutError" in g.error
    assert g.e2e_s >= 0.3


def test_unreachable_server_is_an_error_for_generate() -> None:
    engine = OpenAIEngine(f"http://127.0.0.1:{_closed_port()}/v1", "fast")
    g = generate(engine, Request(messages=CHAT))
    assert g.error is not None and g.error.startswith("ClientConnectorError from ")
    assert "Cannot connect to host 127.0.0.1" in g.error


def test_check_accepts_a_live_server_with_any_model_name(url: str) -> None:
    engine = OpenAIEngine(url, "not-listed-by-the-server")
    asyncio.run(engine.check())  # returns without raising


def test_check_on_a_closed_port_raises_user_error() -> None:
    engine = OpenAIEngine(f"http://127.0.0.1:{_closed_port()}/v1", "fast")
    with pytest.raises(UserError) as caught:
        asyncio.run(engine.check())
    message = str(caught.value)
    assert "\n" not in message
    assert "is unreachable (ClientConnectorError" in message
    assert "start it or fix the URL" in message


def test_check_names_the_status_of_a_wrong_url(url: str) -> None:
    engine = OpenAIEngine(url + "/extra", "fast")
    with pytest.raises(UserError, match="HTTP 404"):
        asyncio.run(engine.check())


def _with_password(url: str) -> str:
    return url.replace("http://", "http://user:pw123@", 1)


@pytest.mark.parametrize("key", [("--api-key", "KEY"), ()])
def test_a_url_with_a_password_and_an_api_key_too_is_refused_in_one_line(
    url: str, key: tuple[str, ...], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both were sent: aiohttp refused them together in a traceback."""
    if not key:
        monkeypatch.setenv("OPENAI_API_KEY", "KEY")
    result = run_cli(
        "profile", "-m", f"openai:{_with_password(url)}#m", "-t", "arith", "--limit", "1",
        *key, "--out", str(tmp_path / "run"),
    )  # fmt: skip
    one_line_error(result, "user:***@", "give one of them")
    assert "pw123" not in result.stderr


def test_a_failed_request_names_its_url_without_the_password(url: str) -> None:
    """The message is kept with the record, and shown on the report page."""
    g = generate(OpenAIEngine(_with_password(url), "fail-cut"), Request(messages=CHAT))
    assert g.error is not None and "http://user:***@127.0.0.1" in g.error
    assert "pw123" not in g.error


def test_twenty_concurrent_requests_over_four_connections(url: str) -> None:
    engine = OpenAIEngine(url, "fast", max_connections=4)

    async def go() -> list[Generation]:
        try:
            return await asyncio.gather(
                *(engine.agenerate(Request(messages=CHAT, max_tokens=1 + i % 7)) for i in range(20))
            )
        finally:
            await engine.aclose()

    results = asyncio.run(go())
    assert [g.error for g in results] == [None] * 20
    assert [g.output_tokens for g in results] == [1 + i % 7 for i in range(20)]


def test_engine_survives_a_new_event_loop(url: str) -> None:
    engine = OpenAIEngine(url, "fast")
    asyncio.run(engine.check())
    first = asyncio.run(engine.agenerate(Request(messages=CHAT, max_tokens=2)))
    second = generate(engine, Request(messages=CHAT, max_tokens=2))
    assert (first.error, second.error) == (None, None)


def test_base_url_with_or_without_v1() -> None:
    roots = {api_root(u) for u in ("http://h:8000/v1", "http://h:8000/v1/", "http://h:8000")}
    assert roots == {"http://h:8000"}
    engine = OpenAIEngine("http://h:8000/v1", "m")
    assert (engine.info.ref, engine.info.kind, engine.info.in_process) == (
        "openai:http://h:8000/v1#m",
        "openai",
        False,
    )


def test_a_base_url_query_string_goes_with_every_request(url: str) -> None:
    """Azure-style `?api-version=`: the query follows the path, it is not a path of its own."""
    assert api_root("http://h:8000/v1/?api-version=2024") == "http://h:8000"
    engine = OpenAIEngine(f"{url}?api-version=2024-06-01", "fast")
    assert (engine.root, engine.query) == (url.removesuffix("/v1"), "?api-version=2024-06-01")
    asyncio.run(engine.check())
    g = generate(engine, Request(messages=CHAT, max_tokens=2))
    assert (g.error, g.text) == (None, "The answer")


def test_https_roots_take_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert https_proxy("https://api.example") == "http://proxy.example:3128"
    assert https_proxy("https://internal.example") is None
    assert https_proxy("http://127.0.0.1:8000") is None  # plain http: a server nearby, direct


def test_inter_token_latency_is_per_token_when_a_chunk_holds_several() -> None:
    """16 tokens in 4 chunks 40 ms apart (a server streaming 4 tokens a chunk): the tokens are
    8 ms apart on average (120 ms over 15 gaps); over the chunks, ITL read 40 ms, and TTFT +
    ITL x 15 was 4 times the answer's time."""
    from tradeoff.types import Generation

    times = [0.1, 0.14, 0.18, 0.22]
    g = Generation("x" * 16, 5, 16, 0.0, 0.1, 0.22, token_times=times, token_count_source="usage")
    assert g.itl_s == pytest.approx(0.12 / 15)
    assert g.ttft_s is not None and g.ttft_s + 15 * g.itl_s == pytest.approx(g.e2e_s)
    counted = Generation("x" * 4, None, 4, 0.0, 0.1, 0.22, token_times=times)  # one a chunk
    assert counted.itl_s == pytest.approx(0.04)


def test_a_refusal_without_a_body_still_says_what_happened():
    """An upstream's 413 with an empty body (a proxy's limit) gave its served client the
    message "": the refusal names its status instead."""
    from tradeoff.engines.openai import _http_failure

    error, refused = _http_failure(413, b"")
    assert refused is not None and refused.status == 413
    assert refused.message == "the server answered HTTP 413 with no message", refused
    error, refused = _http_failure(400, b'{"error": {"message": "bad", "code": "x"}}')
    assert (error, refused.message, refused.code) == ("HTTP 400: bad", "bad", "x")
    assert _http_failure(500, b"boom") == ("HTTP 500: boom", None)
