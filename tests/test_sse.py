"""SSEDecoder over streams split at arbitrary byte boundaries: a real stream from
benchmarks/fast_server.py and a hand-written one with the framing details servers vary in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest
from conftest import fast_server

from tradeoff.engines.sse import SSEDecoder

# CRLF line ends, a comment, event and id fields, no space after the colon, blank-line runs,
# a "data:" line that is empty, and a last line without its line end (not an event yet).
HAND_WRITTEN = (
    b": keep-alive\r\n\r\n"
    b'event: message\r\nid: 1\r\ndata: {"a": 1}\r\n\r\n'
    b'data:{"b":"x:y"}\n\n\n'
    b"data:\n\n"
    b"retry: 10\n"
    b"data: [DONE]\n\n"
    b'data: {"never"'
)
HAND_WRITTEN_PAYLOADS = [b'{"a": 1}', b'{"b":"x:y"}', b"", b"[DONE]"]


async def fetch_stream(url: str) -> bytes:
    body = {
        "model": "fast",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 6,
        "logprobs": True,
        "top_logprobs": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/chat/completions", json=body) as response,
    ):
        assert response.status == 200
        return await response.read()


@pytest.fixture(scope="module")
def real_stream() -> Iterator[bytes]:
    """The body of one streamed chat answer with logprobs and usage, as the server sent it."""
    server = fast_server()
    try:
        yield asyncio.run(fetch_stream(next(server)))
    finally:
        server.close()


def decode(pieces: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    return [payload for piece in pieces for payload in decoder.feed(piece)]


def test_the_real_stream_decodes_to_its_events(real_stream: bytes) -> None:
    payloads = decode([real_stream])
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    # A role-only opening chunk, one chunk per token, then the usage chunk.
    assert len(chunks) == 1 + 6 + 1
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert "".join(words) == "The answer is 42. Next"
    assert chunks[-1]["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("name", ["real", "hand-written"])
def test_every_split_point_gives_the_same_payloads(real_stream: bytes, name: str) -> None:
    stream = real_stream if name == "real" else HAND_WRITTEN
    whole = decode([stream])
    if name == "hand-written":
        assert whole == HAND_WRITTEN_PAYLOADS
    for cut in range(len(stream) + 1):
        assert decode([stream[:cut], stream[cut:]]) == whole, cut
    assert decode([stream[i : i + 1] for i in range(len(stream))]) == whole
    for size in (2, 3, 7, 64):
        assert decode([stream[i : i + size] for i in range(0, len(stream), size)]) == whole


def test_payloads_come_out_as_soon_as_their_line_ends() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x"') == []
    assert decoder.feed(b": 1}") == []
    assert decoder.feed(b"\n") == [b'{"x": 1}']
    assert decoder.feed(b"\ndata: [DONE]\n") == [b"[DONE]"]


def test_an_error_field_is_kept_at_every_split_point() -> None:
    """llama.cpp's llama-server reports a failure as an `error:` field, then `data: [DONE]`."""
    stream = b'data: {"a": 1}\n\nerror: {"message": "too long"}\n\ndata: [DONE]\n\n'
    for cut in range(len(stream) + 1):
        decoder = SSEDecoder()
        payloads = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert (payloads, decoder.error) == ([b'{"a": 1}', b"[DONE]"], b'{"message": "too long"}')
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"text": "error: none"}\n\n') == [b'{"text": "error: none"}']
    assert decoder.error is None  # the word inside a payload is no error field
