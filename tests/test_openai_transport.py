"""The `openai` engine's HTTP behaviour against small asyncio servers on loopback written here:
the framings and connection behaviours that benchmarks/fast_server.py cannot produce (split
chunks, streaming without buffering, keep-alive and close, the connection cap, timeouts, broken
responses, https). Every failure must come back as a Generation's `error`, never an exception."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tradeoff.engines.openai import OpenAIEngine
from tradeoff.types import Generation, Request

CHAT = [{"role": "user", "content": "hi"}]
WORDS = ["The", " answer", " is", " 42"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TinyServer:
    """An asyncio server on loopback running `handler` for each connection it accepts, counting
    them: `accepted` in all, `most_open` at once; `requests` counts the requests read by
    `read_request`."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.accepted = 0
        self.open_now = 0
        self.most_open = 0
        self.url = ""

    async def __aenter__(self) -> TinyServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """One request's JSON body; None once the client has gone."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return dict(json.loads(await reader.readexactly(int(line.split(b":")[1]))))
    return {}


def sse_events(words: list[str] = WORDS) -> list[bytes]:
    """The SSE events of a chat answer of `words`, ending in [DONE]."""
    events = []
    for i, word in enumerate(words):
        finish = "stop" if i == len(words) - 1 else None
        chunk = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": finish}]}
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body, with an upper-case hex size and a chunk extension."""
    return b"%X;ext=1\r\n%b\r\n" % (len(data), data)


# The last chunk and trailer fields, which the client must read through to reuse the connection.
CHUNKED_END = b"0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n"


def chunked(events: list[bytes]) -> bytes:
    """A whole chunked body, one chunk per event."""
    return b"".join(chunk(e) for e in events) + CHUNKED_END


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def length_response(body: bytes, *headers: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: text/event-stream"]
    head += [b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def send_in_pieces(writer: asyncio.StreamWriter, data: bytes, size: int) -> None:
    """Write `data` `size` bytes at a time, letting the event loop run between writes so that
    the client sees many small reads."""
    for i in range(0, len(data), size):
        writer.write(data[i : i + size])
        await writer.drain()
        await asyncio.sleep(0)


def ask(engine: OpenAIEngine, **kw: Any) -> Awaitable[Generation]:
    return engine.agenerate(Request(messages=CHAT, max_tokens=8, **kw))


async def closing(engine: OpenAIEngine, work: Awaitable[Any]) -> Any:
    try:
        return await work
    finally:
        await engine.aclose()


def assert_answer(g: Generation) -> None:
    assert g.error is None, g.error
    assert (g.text, g.finish_reason, len(g.token_times)) == ("".join(WORDS), "stop", 4)


@pytest.mark.parametrize("piece", [1, 2, 3, 7])
def test_chunked_body_split_across_many_small_writes(piece: int) -> None:
    response = CHUNKED_HEAD + chunked(sse_events())

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await send_in_pieces(writer, response, piece)

    async def go() -> tuple[list[Generation], int]:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            answers = await closing(engine, _in_turn(engine, 3))
        return answers, server.accepted

    answers, accepted = asyncio.run(go())
    for g in answers:
        assert_answer(g)
    assert accepted == 1  # the body's end was found exactly: the connection was reused


def test_chunks_reach_the_caller_as_they_arrive() -> None:
    # The server sends the rest of the answer only after the caller has seen its first word: a
    # client that waited for more of the body before passing it on would time out here.
    first_seen = asyncio.Event()
    events = sse_events()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(events[0]))
        await first_seen.wait()
        writer.write(chunked(events[1:]))

    seen: list[str] = []

    def on_text(text: str) -> None:
        seen.append(text)
        first_seen.set()

    async def go() -> Generation:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m", timeout_s=60)
            return await closing(engine, engine.agenerate(Request(messages=CHAT), on_text))

    assert_answer(asyncio.run(go()))
    assert seen == WORDS


def test_keep_alive_reuses_one_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await send_in_pieces(writer, length_response(b"".join(sse_events())), 50)

    async def go() -> tuple[list[Generation], int]:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            answers = await closing(engine, _in_turn(engine, 5))
        return answers, server.accepted

    answers, accepted = asyncio.run(go())
    for g in answers:
        assert_answer(g)
    assert accepted == 1


async def _in_turn(engine: OpenAIEngine, n: int) -> list[Generation]:
    return [await ask(engine) for _ in range(n)]


def test_a_body_read_until_the_server_closes() -> None:
    # No Content-Length and not chunked: the body ends when the connection does.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
        await send_in_pieces(writer, head + b"".join(sse_events()), 7)

    async def go() -> tuple[list[Generation], int]:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            answers = await closing(engine, _in_turn(engine, 2))
        return answers, server.accepted

    answers, accepted = asyncio.run(go())
    for g in answers:
        assert_answer(g)
    assert accepted == 2


def test_connection_close_is_honoured() -> None:
    # The server says close but keeps the socket open: the client must not reuse it.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(length_response(b"".join(sse_events()), b"Connection: close"))

    async def go() -> tuple[list[Generation], int]:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            answers = await closing(engine, _in_turn(engine, 3))
        return answers, server.accepted

    answers, accepted = asyncio.run(go())
    for g in answers:
        assert_answer(g)
    assert accepted == 3


def test_a_pooled_connection_closed_by_the_server_is_replaced() -> None:
    # The server answers as if it kept the connection, then closes its side; the test goes on
    # once the client has seen that (its side closes too), and the next request must not be
    # written onto the dead connection.
    client_gone = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(length_response(b"".join(sse_events())))
        writer.write_eof()
        await reader.read()  # b"" once the client has closed its side
        client_gone.set()

    async def go() -> tuple[list[Generation], int]:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            answers = []
            try:
                for _ in range(3):
                    client_gone.clear()
                    answers.append(await ask(engine))
                    await client_gone.wait()
            finally:
                await engine.aclose()
        return answers, server.accepted

    answers, accepted = asyncio.run(go())
    for g in answers:
        assert_answer(g)
    assert accepted == 3


def test_a_silent_server_times_out_before_and_during_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_request(reader)
        if body and body["model"] == "partial":
            writer.write(CHUNKED_HEAD + chunk(sse_events()[0]))
        await asyncio.Event().wait()  # then nothing, until the test ends

    async def go() -> tuple[Generation, Generation]:
        async with TinyServer(handler) as server:
            silent = OpenAIEngine(server.url, "silent", timeout_s=0.2)
            partial = OpenAIEngine(server.url, "partial", timeout_s=0.2)
            return (
                await closing(silent, ask(silent)),
                await closing(partial, ask(partial)),
            )

    before, during = asyncio.run(go())
    for g in (before, during):
        assert g.error is not None and g.error.startswith("timeout after 0.2 s (")
        assert g.finish_reason == "error" and g.e2e_s >= 0.2
    assert (before.text, before.t_first) == ("", None)
    assert during.text == "The" and during.t_first is not None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("nothing", ("ServerDisconnectedError",)),  # closes without answering
        ("short", ("ClientPayloadError",)),  # ends before its Content-Length
        ("garbage", ("ClientResponseError",)),  # not HTTP
        # A chunk size that is not hex: a payload error, or a response error when it arrives in
        # the same read as the head.
        ("badchunk", ("ClientPayloadError", "ClientResponseError")),
        ("drop", ("ClientPayloadError",)),  # closes in the middle of a chunked body
    ],
)
def test_broken_responses_are_errors_in_the_generation(
    path: str, expected: tuple[str, ...]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if path == "short":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + sse_events()[0])
        elif path == "garbage":
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        elif path == "badchunk":
            writer.write(CHUNKED_HEAD + b"zz\r\n")
        elif path == "drop":
            writer.write(CHUNKED_HEAD + chunked(sse_events())[:100])
        await writer.drain()

    async def go() -> Generation:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            return await closing(engine, ask(engine))

    g = asyncio.run(go())
    assert g.error is not None and g.error.startswith(tuple(f"{e} from " for e in expected))
    assert "\n" not in g.error and g.finish_reason == "error"


def test_the_pool_never_opens_more_than_max_connections() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.01)  # keeps each connection busy, so requests queue for one
            writer.write(length_response(b"".join(sse_events())))

    async def go() -> tuple[list[Generation], int, int]:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m", max_connections=2)
            answers = await closing(engine, asyncio.gather(*(ask(engine) for _ in range(10))))
        return answers, server.accepted, server.most_open

    answers, accepted, most_open = asyncio.run(go())
    for g in answers:
        assert_answer(g)
    assert (accepted, most_open) == (2, 2)


def test_a_request_cancelled_while_queued_leaves_the_pool_usable() -> None:
    release = asyncio.Event()
    got_first = asyncio.Event()
    seeds: list[int | None] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (body := await read_request(reader)) is not None:
            seeds.append(body.get("seed"))
            got_first.set()
            await release.wait()
            writer.write(length_response(b"".join(sse_events())))

    async def go() -> tuple[Generation, Generation, int]:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m", max_connections=1)
            try:
                first = asyncio.ensure_future(ask(engine))
                await got_first.wait()  # the only connection is busy from here on
                queued = asyncio.ensure_future(ask(engine, seed=2))
                for _ in range(5):  # let it reach the pool's queue (no I/O on the way)
                    await asyncio.sleep(0)
                queued.cancel()
                release.set()
                a = await first
                assert queued.cancelled()
                b = await ask(engine)
            finally:
                await engine.aclose()
        return a, b, server.accepted

    a, b, accepted = asyncio.run(go())
    assert_answer(a)
    assert_answer(b)
    assert accepted == 1
    assert seeds == [None, None]  # the cancelled request (seed 2) never reached the server


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_streams_through_the_same_code_and_verifies_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # straight to the server on loopback
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await send_in_pieces(writer, CHUNKED_HEAD + chunked(sse_events()), 13)

    async def go() -> tuple[list[Generation], int]:
        async with TinyServer(handler, context) as server:
            engine = OpenAIEngine(server.url, "m")
            answers = await closing(engine, _in_turn(engine, 3))
        return answers, server.accepted

    # Not trusted: the certificate is checked.
    untrusted, _ = asyncio.run(go())
    assert all(g.error and "certificate" in g.error.lower() for g in untrusted)
    # Trusted through the standard variable that OpenSSL reads for its CA bundle.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    answers, accepted = asyncio.run(go())
    for g in answers:
        assert_answer(g)
    assert accepted == 1


def test_timeout_bounds_each_wait_not_the_whole_answer() -> None:
    # Six words 0.25 s apart take longer than the 1 s timeout in all, but no wait reaches it.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        for event in sse_events(WORDS + [" and", " more"]):
            await asyncio.sleep(0.25)
            writer.write(chunk(event))
        writer.write(CHUNKED_END)

    async def go() -> Generation:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m", timeout_s=1.0)
            return await closing(engine, ask(engine))

    g = asyncio.run(go())
    assert g.error is None and g.text == "The answer is 42 and more"
    assert g.e2e_s > 1.0


def test_a_redirect_is_an_error_not_followed() -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while await read_request(reader) is not None:
            requests += 1
            writer.write(
                b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\n"
                b"Content-Length: 5\r\n\r\nmoved"
            )

    async def go() -> Generation:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            return await closing(engine, ask(engine))

    g = asyncio.run(go())
    assert (g.error, g.finish_reason, requests) == ("HTTP 307: moved", "error", 1)


def test_an_error_object_in_a_chunk_fails_the_answer_with_its_message() -> None:
    """vLLM's failure after the response head: a chunk holding an `error` object."""
    failure = {"error": {"object": "error", "message": "engine dead", "code": 500}}
    events = [sse_events()[0], b"data: " + json.dumps(failure).encode() + b"\n\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + chunked([*events, b"data: [DONE]\n\n"]))

    async def go() -> Generation:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            return await closing(engine, ask(engine))

    g = asyncio.run(go())
    assert (g.error, g.text, g.finish_reason) == (
        "server error in stream: engine dead",
        "The",
        "error",
    )


def test_a_stream_whose_response_names_no_content_type_is_still_read() -> None:
    """A 2xx of another content type is no stream (an error says which); one naming none is
    read as a stream, as a hand-written server that forgot the header sends it."""
    body = b"".join(sse_events())

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))

    async def go() -> Generation:
        async with TinyServer(handler) as server:
            engine = OpenAIEngine(server.url, "m")
            return await closing(engine, ask(engine))

    assert_answer(asyncio.run(go()))


def test_as_many_requests_are_open_at_the_server_as_the_caller_sends() -> None:
    """A fixed pool of 256 connections held the rest of 300 requests sent at once in this
    client, their wait counted as the server's time to first token; the caller's concurrency
    bounds them now."""
    sent = 300
    all_open = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if server.open_now == sent:
            all_open.set()
        with contextlib.suppress(asyncio.TimeoutError):  # (the pool's 256 never reached 300)
            await asyncio.wait_for(all_open.wait(), 10)
        writer.write(length_response(b"".join(sse_events())))
        await writer.drain()

    async def go() -> list[Generation]:
        engine = OpenAIEngine(server.url, "m")
        return await closing(engine, asyncio.gather(*(ask(engine) for _ in range(sent))))

    async def serving() -> list[Generation]:
        async with server:
            return await go()

    server = TinyServer(handler)
    answers = asyncio.run(serving())
    assert server.most_open == sent
    for g in answers:
        assert_answer(g)
