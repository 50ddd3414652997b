"""A small HTTP/1.1 transport for httpx over plain asyncio streams, for `http://` servers only.

Through httpx's default transport (httpcore + h11 + anyio) OpenAIEngine spent ~0.9 ms of client
CPU per streamed request, through this one ~0.33 ms (benchmarks/bench_openai_dispatch.py, 2 cores).
It parses the few framings an HTTP/1.1 server uses (Content-Length, chunked, read until close)
directly, and keeps a LIFO pool of keep-alive connections per (host, port).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import httpx

T = TypeVar("T")

READ_SIZE = 65536
# Longest response head (status line and headers) accepted, as h11's default.
MAX_HEAD = 65536
# Longest chunk-size or trailer line of a chunked body.
MAX_LINE = 8192


async def _within(timeout: float | None, awaitable: Awaitable[T]) -> T:
    """Await with a bound in seconds (None: unbounded); raises asyncio.TimeoutError."""
    if timeout is None:
        return await awaitable
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout)


class _Connection:
    __slots__ = ("reader", "writer", "buffer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""  # bytes read from the socket but not parsed yet
        self.idle_since = 0.0

    def reusable(self) -> bool:
        """False once the server closed its side, the socket failed, or bytes sit unparsed."""
        return not (
            self.buffer
            or self.reader.at_eof()
            or self.reader.exception() is not None
            or self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()


class _Pool:
    """The connections to one (host, port): `idle` ones, used LIFO, and `opened` counts all of
    them, in use and idle; `waiters` are requests queued for one."""

    __slots__ = ("host", "port", "idle", "opened", "waiters")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[_Connection] = []
        self.opened = 0
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()


class Http11Transport(httpx.AsyncBaseTransport):
    """An httpx transport speaking HTTP/1.1 over `asyncio.open_connection`, for `http://` URLs.

    At most `max_connections` connections per (host, port); a request finding all of them busy
    waits (bounded by the request's `pool` timeout). Connections idle for more than
    `keepalive_expiry` seconds are closed rather than reused, so that a server closing idle
    connections (uvicorn does after 5 s) is not raced. Request bodies are sent whole, with a
    Content-Length. Not supported: TLS, proxies, HTTP/2, upgrades, `Expect: 100-continue`.
    """

    def __init__(self, max_connections: int = 100, keepalive_expiry: float | None = 5.0) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"Http11Transport speaks plain http:// only, not {url.scheme}://; "
                "use httpx's default transport for https",
                request=request,
            )
        timeouts = request.extensions.get("timeout") or {}
        message = _request_bytes(request, await request.aread())
        status, reason, headers, stream = await self._exchange(
            request,
            message,
            pool_timeout=timeouts.get("pool"),
            connect_timeout=timeouts.get("connect"),
            write_timeout=timeouts.get("write"),
            read_timeout=timeouts.get("read"),
        )
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def post(
        self, request: httpx.Request, message: bytes, timeout: float | None
    ) -> tuple[int, _ResponseStream]:
        """Send `message` (a whole request: line, headers, body) to `request.url`'s server and
        read the response head, without building httpx objects: (status, body stream). The
        caller closes the stream (`aclose()`). `request` names the target and goes into errors
        only, so one can serve every call to a URL. Connect, write and read waits are bounded
        by `timeout`; waiting for a free connection is not."""
        status, _, _, stream = await self._exchange(
            request,
            message,
            pool_timeout=None,
            connect_timeout=timeout,
            write_timeout=timeout,
            read_timeout=timeout,
        )
        return status, stream

    async def _exchange(
        self,
        request: httpx.Request,
        message: bytes,
        *,
        pool_timeout: float | None,
        connect_timeout: float | None,
        write_timeout: float | None,
        read_timeout: float | None,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], _ResponseStream]:
        """Write `message` on a pooled connection to `request.url`'s server and read the
        response head: (status, reason, headers, body stream)."""
        if self._closed:
            raise RuntimeError("Http11Transport is closed; make a new one")
        url = request.url
        key = (url.host, url.port or 80)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(*key)
        conn = await self._acquire(pool, request, pool_timeout, connect_timeout)
        try:
            conn.writer.write(message)
            if conn.writer.transport.get_write_buffer_size():
                try:
                    await _within(write_timeout, conn.writer.drain())
                except asyncio.TimeoutError:
                    raise httpx.WriteTimeout(
                        "timed out sending the request", request=request
                    ) from None
                except OSError as exc:
                    raise httpx.WriteError(
                        str(exc) or type(exc).__name__, request=request
                    ) from None
            while True:
                status, reason, headers, close = await _read_head(conn, request, read_timeout)
                # 1xx answers (100 Continue, 103 Early Hints) come before the real one.
                if status >= 200 or status == 101:
                    break
            if status == 101:
                raise httpx.RemoteProtocolError(
                    "the server switched protocols (101), which Http11Transport does not support",
                    request=request,
                )
            framing, length = _framing(request.method, status, headers, request)
        except BaseException:
            self._discard(pool, conn)
            raise
        stream = _ResponseStream(self, pool, conn, request, read_timeout, framing, length, close)
        return status, reason, headers, stream

    async def aclose(self) -> None:
        """Close every idle connection now, and those in use as their responses are closed."""
        self._closed = True
        pools, self._pools = self._pools, {}
        closing = []
        for pool in pools.values():
            for conn in pool.idle:
                conn.close()
                closing.append(conn.writer)
            pool.idle.clear()
            for waiter in pool.waiters:
                if not waiter.done():
                    waiter.set_exception(RuntimeError("Http11Transport was closed"))
            pool.waiters.clear()
        for writer in closing:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _acquire(
        self,
        pool: _Pool,
        request: httpx.Request,
        pool_timeout: float | None,
        connect_timeout: float | None,
    ) -> _Connection:
        while True:
            idle = pool.idle
            if idle:
                expiry = self.keepalive_expiry
                oldest = time.monotonic() - expiry if expiry is not None else None
                while idle:
                    conn = idle.pop()
                    if conn.reusable() and (oldest is None or conn.idle_since >= oldest):
                        return conn
                    conn.close()
                    pool.opened -= 1
            if pool.opened < self.max_connections:
                pool.opened += 1
                try:
                    return await _connect(pool, request, connect_timeout)
                except BaseException:
                    pool.opened -= 1
                    self._wake(pool, None)
                    raise
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            pool.waiters.append(waiter)
            try:
                got = await _within(pool_timeout, waiter)
            except asyncio.TimeoutError:
                raise httpx.PoolTimeout(
                    f"no free connection to {pool.host}:{pool.port} within {pool_timeout:g} s "
                    f"(all {self.max_connections} busy); raise max_connections or send fewer "
                    "requests at once",
                    request=request,
                ) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection (or a free slot) just as we were cancelled: pass it on.
                    handed = waiter.result()
                    if handed is not None:
                        self._release(pool, handed)
                    else:
                        self._wake(pool, None)
                raise
            if got is not None:
                return got
            # A connection was discarded: its slot is free, so loop to open a new one.

    def _wake(self, pool: _Pool, conn: _Connection | None) -> bool:
        """Hand `conn` (or, with None, a free slot) to the first request still waiting."""
        waiters = pool.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _release(self, pool: _Pool, conn: _Connection) -> None:
        if self._closed or not conn.reusable():
            self._discard(pool, conn)
        elif not self._wake(pool, conn):
            conn.idle_since = time.monotonic()
            pool.idle.append(conn)

    def _discard(self, pool: _Pool, conn: _Connection) -> None:
        conn.close()
        pool.opened -= 1
        self._wake(pool, None)


async def _connect(pool: _Pool, request: httpx.Request, timeout: float | None) -> _Connection:
    where = f"{pool.host}:{pool.port}"
    try:
        reader, writer = await _within(
            timeout, asyncio.open_connection(pool.host, pool.port, limit=READ_SIZE)
        )
    except asyncio.TimeoutError:
        raise httpx.ConnectTimeout(
            f"no connection to {where} within {timeout:g} s", request=request
        ) from None
    except OSError as exc:
        raise httpx.ConnectError(
            f"cannot connect to {where}: {exc.strerror or exc}", request=request
        ) from None
    return _Connection(reader, writer)


def _request_bytes(request: httpx.Request, body: bytes) -> bytes:
    """Request line, headers and body as one buffer. httpx has already added Host and
    Content-Length (or Transfer-Encoding for a streamed body, replaced here by a length)."""
    url = request.url
    lines = [request.method.encode("ascii") + b" " + url.raw_path + b" HTTP/1.1"]
    has_host = has_length = False
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower == b"host":
            has_host = True
        elif lower == b"content-length":
            has_length = True
        elif lower == b"transfer-encoding":
            continue
        lines.append(name + b": " + value)
    if not has_host:
        lines.insert(1, b"Host: " + url.netloc)
    if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    head = b"\r\n".join(lines)
    if head.count(b"\n") != len(lines) - 1 or head.count(b"\r") != len(lines) - 1:
        raise httpx.LocalProtocolError(
            "a request header contains a line break; remove it", request=request
        )
    return head + b"\r\n\r\n" + body


async def _read_more(conn: _Connection, request: httpx.Request, timeout: float | None) -> bytes:
    """The next bytes from the server; b"" once it has closed the connection."""
    try:
        return await _within(timeout, conn.reader.read(READ_SIZE))
    except asyncio.TimeoutError:
        raise httpx.ReadTimeout(
            f"the server sent nothing for {timeout:g} s", request=request
        ) from None
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None


async def _read_head(
    conn: _Connection, request: httpx.Request, timeout: float | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool]:
    """Status, reason, headers and whether the server will close the connection afterwards."""
    data = conn.buffer
    end = data.find(b"\r\n\r\n")
    while end < 0:
        if len(data) > MAX_HEAD:
            raise httpx.RemoteProtocolError(
                f"response head longer than {MAX_HEAD} bytes", request=request
            )
        more = await _read_more(conn, request, timeout)
        if not more:
            raise httpx.RemoteProtocolError(
                "server disconnected without sending a response"
                if not data
                else "server disconnected in the middle of the response head",
                request=request,
            )
        # Search from just before the new bytes: the terminator may straddle the two.
        start = max(0, len(data) - 3)
        data += more
        end = data.find(b"\r\n\r\n", start)
    conn.buffer = data[end + 4 :]
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(
            f"not an HTTP/1.x status line: {lines[0][:100]!r}", request=request
        )
    status = int(parts[1])
    reason = parts[2] if len(parts) == 3 else b""
    headers: list[tuple[bytes, bytes]] = []
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[0] in b" \t":
            raise httpx.RemoteProtocolError(
                f"malformed response header line: {line[:100]!r}", request=request
            )
        value = value.strip()
        headers.append((name, value))
        if name.lower() == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
    return status, reason, headers, close


NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = range(4)


def _framing(
    method: str, status: int, headers: list[tuple[bytes, bytes]], request: httpx.Request
) -> tuple[int, int]:
    """How the body is delimited (RFC 9112, section 6.3) and, for LENGTH, its length."""
    if method == "HEAD" or status in (204, 304) or status < 200:
        return NO_BODY, 0
    lengths: set[bytes] = set()
    chunked = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            chunked = value.split(b",")[-1].strip().lower() == b"chunked"
            if not chunked:
                return UNTIL_CLOSE, 0
        elif lower == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
    if chunked:
        return CHUNKED, 0
    if not lengths:
        return UNTIL_CLOSE, 0
    if len(lengths) > 1 or not next(iter(lengths)).isdigit():
        raise httpx.RemoteProtocolError(
            f"bad Content-Length in the response: {sorted(lengths)!r}", request=request
        )
    return LENGTH, int(lengths.pop())


class _ResponseStream(httpx.AsyncByteStream):
    """The body of one response, yielded as it arrives. Closing it returns the connection to
    its pool if the body was read to the end and the server keeps the connection open."""

    def __init__(
        self,
        transport: Http11Transport,
        pool: _Pool,
        conn: _Connection,
        request: httpx.Request,
        read_timeout: float | None,
        framing: int,
        length: int,
        close: bool,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._conn: _Connection | None = conn
        self._request = request
        self._timeout = read_timeout
        self._framing = framing
        self._length = length
        self._close = close or framing == UNTIL_CLOSE
        self._complete = framing == NO_BODY

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        if self._framing == LENGTH:
            body = self._length_body(conn)
        elif self._framing == CHUNKED:
            body = self._chunked_body(conn)
        elif self._framing == UNTIL_CLOSE:
            body = self._until_close_body(conn)
        else:
            return
        async for data in body:
            yield data
        self._complete = True

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete and not self._close:
            self._transport._release(self._pool, conn)
        else:
            self._transport._discard(self._pool, conn)

    async def _length_body(self, conn: _Connection) -> AsyncIterator[bytes]:
        left = self._length
        data, conn.buffer = conn.buffer, b""
        while True:
            if len(data) > left:  # more than the body: leave the rest, so the pool drops conn
                data, conn.buffer = data[:left], data[left:]
            if data:
                left -= len(data)
                yield data
            if not left:
                return
            data = await _read_more(conn, self._request, self._timeout)
            if not data:
                raise httpx.RemoteProtocolError(
                    f"server closed the connection {left} bytes before the end of the body",
                    request=self._request,
                )

    async def _until_close_body(self, conn: _Connection) -> AsyncIterator[bytes]:
        data, conn.buffer = conn.buffer, b""
        while True:
            if data:
                yield data
            data = await _read_more(conn, self._request, self._timeout)
            if not data:
                return

    async def _chunked_body(self, conn: _Connection) -> AsyncIterator[bytes]:
        # Everything parsed from the bytes at hand goes out as one piece before waiting for
        # more, so a burst of small chunks (SSE events) costs one pass through httpx, and each
        # chunk still reaches the caller as soon as it arrives.
        data, conn.buffer = conn.buffer, b""
        pos = 0
        out: list[bytes] = []
        size = -1  # -1: at a chunk-size line; >0: data bytes left; 0: at the CRLF after data
        while True:
            if size < 0:
                eol = data.find(b"\r\n", pos)
                if eol >= 0:
                    field = data[pos:eol].split(b";", 1)[0].strip()
                    pos = eol + 2
                    try:
                        size = int(field, 16) if field.isalnum() else -1
                    except ValueError:
                        size = -1
                    if size < 0:
                        raise httpx.RemoteProtocolError(
                            f"bad chunk size line {field[:40]!r}", request=self._request
                        )
                    if size == 0:
                        break
                    continue
                if len(data) - pos > MAX_LINE:
                    raise httpx.RemoteProtocolError(
                        "chunk size line too long", request=self._request
                    )
            elif size > 0:
                if pos < len(data):
                    piece = data[pos : pos + size]
                    pos += len(piece)
                    size -= len(piece)
                    out.append(piece)
                    continue
            elif len(data) - pos >= 2:
                if data[pos : pos + 2] != b"\r\n":
                    raise httpx.RemoteProtocolError(
                        "chunk data longer than its size", request=self._request
                    )
                pos += 2
                size = -1
                continue
            # Nothing more to parse: send what we have, then wait for the server.
            if out:
                yield b"".join(out) if len(out) > 1 else out[0]
                out = []
            more = await _read_more(conn, self._request, self._timeout)
            if not more:
                raise httpx.RemoteProtocolError(
                    "server closed the connection in the middle of a chunked body",
                    request=self._request,
                )
            data = data[pos:] + more
            pos = 0
        if out:
            yield b"".join(out) if len(out) > 1 else out[0]
        # Trailer fields, ignored, up to the empty line that ends the body.
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                if len(data) - pos > MAX_LINE:
                    raise httpx.RemoteProtocolError("trailer line too long", request=self._request)
                more = await _read_more(conn, self._request, self._timeout)
                if not more:
                    raise httpx.RemoteProtocolError(
                        "server closed the connection before the end of a chunked body",
                        request=self._request,
                    )
                data = data[pos:] + more
                pos = 0
                continue
            line_empty = eol == pos
            pos = eol + 2
            if line_empty:
                break
        conn.buffer = data[pos:]
