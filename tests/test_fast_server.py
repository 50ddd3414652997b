"""benchmarks/fast_server.py itself: a server that the load precision benchmarks time must not add
its own delays. Measured client-side with httpx on one kept-alive connection."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import fast_server

DELAY_S = 0.2  # large, so that one sleep too many stands out from a busy shared machine's noise


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    yield from fast_server("--delay-ms", str(DELAY_S * 1000))


def test_next_request_on_a_kept_alive_connection_is_not_delayed(slow_url: str) -> None:
    body = {"model": "fast", "prompt": "hi", "max_tokens": 2, "stream": True}
    with httpx.Client(base_url=slow_url, timeout=30) as client:
        with client.stream("POST", "/completions", json=body) as first:
            first_stream = first.extensions["network_stream"]
            chunks = list(first.iter_raw())
        ended = time.perf_counter()
        assert b"[DONE]" in b"".join(chunks)
        with client.stream("POST", "/completions", json=body) as second:
            reused = second.extensions["network_stream"] is first_stream
            pieces = second.iter_raw()
            next(pieces)
            gap = time.perf_counter() - ended
            rest = b"".join(pieces)
        assert b"[DONE]" in rest
    assert reused, "the second request did not reuse the first one's connection"
    # The first chunk of an answer goes out with its head; a sleep after the previous answer's
    # last chunk would hold it back a whole delay (200 ms).
    assert gap < DELAY_S * 0.9 + 0.005, f"first chunk {gap * 1000:.0f} ms after the previous answer"


def test_chunks_are_a_delay_apart(slow_url: str) -> None:
    """The delay still separates the chunks: 2 tokens, [DONE] and the body's end are 3 delays."""
    body = {"model": "fast", "prompt": "hi", "max_tokens": 2, "stream": True}
    start = time.perf_counter()
    with httpx.stream("POST", f"{slow_url}/completions", json=body, timeout=30) as response:
        b"".join(response.iter_raw())
    assert time.perf_counter() - start >= 3 * DELAY_S


def test_chat_answers_max_completion_tokens(slow_url: str) -> None:
    """Chat's newer max_completion_tokens (GuideLLM sends it, not max_tokens) sets the length."""
    messages = [{"role": "user", "content": "hi"}]
    body = {"model": "fast", "messages": messages, "max_completion_tokens": 3, "stream": False}
    answer = httpx.post(f"{slow_url}/chat/completions", json=body, timeout=30).json()
    assert answer["usage"]["completion_tokens"] == 3
    assert answer["choices"][0]["message"]["content"] == "The answer is"
