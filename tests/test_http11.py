"""Http11Transport against real servers on loopback: benchmarks/fast_server.py (chunked SSE
streams, Content-Length JSON, its failure models), and small asyncio servers written here for the
framings and connection behaviours that server cannot produce."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import fast_server

from tradeoff.engines.http11 import Http11Transport

CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def fast_url() -> Iterator[str]:
    yield from fast_server()


def client(max_connections: int = 10, **kw: Any) -> httpx.AsyncClient:
    transport = Http11Transport(max_connections=max_connections, **kw)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=None))


class TinyServer:
    """An asyncio server on loopback running `handler` for each connection it accepts, counting
    them: `accepted` in all, `most_open` at once."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.open_now = 0
        self.most_open = 0
        self.url = ""

    async def __aenter__(self) -> TinyServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
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


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's head (its body is read and dropped); None once the client has gone."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


async def send_in_pieces(writer: asyncio.StreamWriter, data: bytes, size: int) -> None:
    """Write `data` `size` bytes at a time, letting the event loop run between writes so that
    the client sees many small reads."""
    for i in range(0, len(data), size):
        writer.write(data[i : i + size])
        await writer.drain()
        await asyncio.sleep(0)


def length_response(body: bytes, *headers: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def keep_alive_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await read_request(reader) is not None:
        await send_in_pieces(writer, length_response(b"hello, world"), 5)


# --- against benchmarks/fast_server.py -------------------------------------------------------


def test_sse_stream_and_json_from_the_fast_server(fast_url: str) -> None:
    async def go() -> tuple[list[str], dict[str, Any], int]:
        async with client() as c:
            async with c.stream("POST", f"{fast_url}/chat/completions", json=CHAT) as r:
                lines = [line async for line in r.aiter_lines() if line]
            models = (await c.get(f"{fast_url}/models")).json()
            missing = (await c.get(f"{fast_url}/nowhere")).status_code
        return lines, models, missing

    lines, models, missing = asyncio.run(go())
    assert lines[-1] == "data: [DONE]"
    words = [json.loads(x[5:])["choices"][0]["delta"]["content"] for x in lines[1:-1]]
    assert "".join(words) == "The answer is 42. Next we count again,The answer is 42. Next"
    assert models["data"][0]["id"] == "fast"
    assert missing == 404


def test_concurrent_streams_over_few_connections(fast_url: str) -> None:
    async def one(c: httpx.AsyncClient, n: int) -> int:
        body = {**CHAT, "max_tokens": n}
        async with c.stream("POST", f"{fast_url}/chat/completions", json=body) as r:
            lines = [line async for line in r.aiter_lines() if line.startswith("data: {")]
        return sum(1 for line in lines if json.loads(line[6:])["choices"])

    async def go() -> list[int]:
        async with client(max_connections=3) as c:
            return await asyncio.gather(*(one(c, 1 + i % 5) for i in range(30)))

    # Each answer: a role-only chunk, then one chunk per token.
    assert asyncio.run(go()) == [2 + i % 5 for i in range(30)]


def test_failure_models_of_the_fast_server(fast_url: str) -> None:
    async def go() -> None:
        async with client() as c:
            r = await c.post(f"{fast_url}/chat/completions", json={**CHAT, "model": "fail-500"})
            assert r.status_code == 500 and "fake failure" in r.text
            with pytest.raises(httpx.RemoteProtocolError):
                body = {**CHAT, "model": "fail-drop"}
                async with c.stream("POST", f"{fast_url}/chat/completions", json=body) as r:
                    async for _ in r.aiter_raw():
                        pass
            with pytest.raises(httpx.ReadTimeout):
                body = {**CHAT, "model": "hang"}
                await c.post(f"{fast_url}/chat/completions", json=body, timeout=0.2)
            # The pool still serves requests after all that.
            r = await c.post(f"{fast_url}/chat/completions", json=CHAT)
            assert r.text.endswith("data: [DONE]\n\n")

    asyncio.run(go())


# --- against small servers written here -------------------------------------------------------


def test_content_length_body_and_keep_alive_reuse() -> None:
    async def go() -> tuple[list[bytes], int]:
        async with TinyServer(keep_alive_server) as server, client() as c:
            bodies = [(await c.get(server.url)).content for _ in range(5)]
            bodies.append((await c.post(server.url, content=b"x" * 100_000)).content)
        return bodies, server.accepted

    bodies, accepted = asyncio.run(go())
    assert bodies == [b"hello, world"] * 6
    assert accepted == 1


@pytest.mark.parametrize("piece", [1, 2, 3, 7])
def test_chunked_body_split_across_many_small_writes(piece: int) -> None:
    # Upper-case hex, a chunk extension, and trailer fields, all of which must be skipped.
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n,\r\n1A\r\n" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n"
        b"0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n"
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await send_in_pieces(writer, response, piece)

    async def go() -> tuple[list[bytes], int]:
        async with TinyServer(handler) as server, client() as c:
            bodies = [(await c.get(server.url)).content for _ in range(3)]
        return bodies, server.accepted

    bodies, accepted = asyncio.run(go())
    assert bodies == [b"hello,abcdefghijklmnopqrstuvwxyz"] * 3
    assert accepted == 1  # the body's end was found exactly: the connection was reused


def test_chunks_reach_the_caller_as_they_arrive() -> None:
    # The server sends the second chunk only after the client has seen the first: a transport
    # that waited for more of the body would deadlock here.
    first_seen = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"d\r\ndata: first\n\n\r\n")
        await first_seen.wait()
        writer.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")

    async def go() -> list[str]:
        lines = []
        async with TinyServer(handler) as server, client() as c, c.stream("GET", server.url) as r:
            async for line in r.aiter_lines():
                lines.append(line)
                first_seen.set()
        return lines

    assert asyncio.run(asyncio.wait_for(go(), 5)) == ["data: first", "", "data: second", ""]


def test_body_read_until_the_server_closes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await send_in_pieces(writer, b"HTTP/1.1 200 OK\r\n\r\n" + b"0123456789" * 50, 7)

    async def go() -> tuple[list[bytes], int]:
        async with TinyServer(handler) as server, client() as c:
            bodies = [(await c.get(server.url)).content for _ in range(2)]
        return bodies, server.accepted

    bodies, accepted = asyncio.run(go())
    assert bodies == [b"0123456789" * 50] * 2
    assert accepted == 2


def test_connection_close_is_honoured() -> None:
    # The server says close but keeps the socket open: the client must not reuse it.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(length_response(b"bye", b"Connection: close"))

    async def go() -> tuple[list[bytes], int]:
        async with TinyServer(handler) as server, client() as c:
            bodies = [(await c.get(server.url)).content for _ in range(3)]
        return bodies, server.accepted

    assert asyncio.run(go()) == ([b"bye"] * 3, 3)


def test_a_pooled_connection_closed_by_the_server_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(length_response(b"once"))  # says keep-alive, then closes
        await writer.drain()

    async def go() -> tuple[list[bytes], int]:
        async with TinyServer(handler) as server, client() as c:
            bodies = []
            for _ in range(3):
                bodies.append((await c.get(server.url)).content)
                await asyncio.sleep(0.05)  # the close reaches the client's idle connection
        return bodies, server.accepted

    assert asyncio.run(go()) == ([b"once"] * 3, 3)


def test_idle_connections_expire() -> None:
    async def go() -> int:
        async with TinyServer(keep_alive_server) as server, client(keepalive_expiry=0.05) as c:
            await c.get(server.url)
            await c.get(server.url)  # reused
            await asyncio.sleep(0.1)
            await c.get(server.url)  # expired: a new connection
        return server.accepted

    assert asyncio.run(go()) == 2


def test_a_response_closed_before_its_end_does_not_return_its_connection() -> None:
    # The body follows its head late, so none of it has arrived when the response is closed:
    # a reused connection would then read that body where the next response should start.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            await asyncio.sleep(0.05)
            writer.write(b"later")

    async def go() -> tuple[bytes, int]:
        async with TinyServer(handler) as server, client() as c:
            async with c.stream("GET", server.url) as r:
                assert r.status_code == 200  # body left unread
            body = (await c.get(server.url)).content
        return body, server.accepted

    assert asyncio.run(go()) == (b"later", 2)


def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused

        async def go() -> None:
            async with client() as c:
                await c.get(f"http://127.0.0.1:{port}/")

        with pytest.raises(httpx.ConnectError):
            asyncio.run(go())


def test_silent_server_is_a_read_timeout_before_and_during_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        if head is not None and head.startswith(b"GET /partial "):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        await asyncio.sleep(3600)

    async def go() -> None:
        async with TinyServer(handler) as server, client() as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get(f"{server.url}/silent", timeout=0.2)
            async with c.stream("GET", f"{server.url}/partial", timeout=0.2) as r:
                assert r.status_code == 200
                with pytest.raises(httpx.ReadTimeout):
                    await r.aread()

    asyncio.run(go())


def test_server_errors_are_remote_protocol_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        if head is None or head.startswith(b"GET /nothing "):
            return  # closes without answering
        if head.startswith(b"GET /short "):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        elif head.startswith(b"GET /garbage "):
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        elif head.startswith(b"GET /badchunk "):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        await writer.drain()

    async def go() -> None:
        async with TinyServer(handler) as server, client() as c:
            for path in ("nothing", "short", "garbage", "badchunk"):
                with pytest.raises(httpx.RemoteProtocolError):
                    await c.get(f"{server.url}/{path}")

    asyncio.run(go())


def test_pool_never_opens_more_than_max_connections() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.01)
            writer.write(length_response(b"ok"))

    async def go() -> tuple[list[bytes], int, int]:
        async with TinyServer(handler) as server, client(max_connections=2) as c:
            responses = await asyncio.gather(*(c.get(server.url) for _ in range(10)))
        return [r.content for r in responses], server.accepted, server.most_open

    assert asyncio.run(go()) == ([b"ok"] * 10, 2, 2)


def test_a_request_cancelled_while_queued_leaves_the_pool_usable() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.05)
            writer.write(length_response(b"ok"))

    async def go() -> tuple[bytes, bytes, int]:
        async with TinyServer(handler) as server, client(max_connections=1) as c:
            first = asyncio.ensure_future(c.get(server.url))
            await asyncio.sleep(0.01)
            queued = asyncio.ensure_future(c.get(server.url))
            await asyncio.sleep(0.01)
            queued.cancel()
            a = (await first).content
            b = (await asyncio.wait_for(c.get(server.url), 2)).content
        return a, b, server.accepted

    assert asyncio.run(go()) == (b"ok", b"ok", 1)


def test_only_plain_http() -> None:
    async def go() -> None:
        async with client() as c:
            await c.get("https://127.0.0.1:1/")

    with pytest.raises(httpx.UnsupportedProtocol, match="http:// only"):
        asyncio.run(go())
