"""A small HTTP/1.1 server for `tradeoff serve`: asyncio protocol, httptools' C parser.

Why not uvicorn: a proxy's added latency is the work it does per request, and on a small machine
whose caches the upstream model keeps evicting, every layer counts. This server hands the
application one parsed request and writes each response with as few system calls as it can
(status line, headers and the first body bytes in one write). It does what the server needs and
no more: keep-alive, pipelined requests answered in order, chunked request and response bodies,
`Expect: 100-continue`, HEAD, a body size limit enforced while reading, timeouts for idle and
slow clients, back-pressure on slow readers, and a graceful stop that finishes the requests in
flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import httptools

log = logging.getLogger("tradeoff.serve")

MAX_HEAD_BYTES = 64 * 1024  # request line and headers
IDLE_TIMEOUT_S = 75.0  # a kept-alive connection with no request
REQUEST_TIMEOUT_S = 60.0  # from the first byte of a request to its last
PIPELINE_DEPTH = 32  # requests read ahead of their answers on one connection


@dataclass
class HttpRequest:
    method: str
    path: str
    # Lower-case names, only those the server reads (authorization, content-length, expect); a
    # repeated header keeps its last value.
    headers: dict[str, bytes]
    body: bytes = b""
    # The body is larger than the limit: it was not read, and the connection closes after the
    # response.
    too_large: bool = False


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


_STATUS_LINES = {s.value: _status_line(s.value) for s in HTTPStatus}


class HttpResponse:
    """Writes one response. `send(status, headers, body)` for a whole one; `start(status,
    headers)` then `write(chunk)`... `end(chunk)` for a streamed one (chunked encoding)."""

    __slots__ = ("_conn", "_head", "_head_only", "_keep_alive", "started", "finished")

    def __init__(self, conn: _Connection, head_only: bool, keep_alive: bool):
        self._conn = conn
        self._head: bytes | None = None
        self._head_only = head_only
        self._keep_alive = keep_alive
        self.started = False
        self.finished = False

    def _head_bytes(self, status: int, headers: list[tuple[str, str]], extra: str) -> bytes:
        lines = [_STATUS_LINES.get(status) or _status_line(status)]
        lines += [f"{k}: {v}\r\n".encode("latin-1", "replace") for k, v in headers]
        if not self._keep_alive:
            extra += "connection: close\r\n"
        lines.append(f"{extra}\r\n".encode())
        return b"".join(lines)

    async def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """The whole response in one write."""
        self.started = self.finished = True
        head = self._head_bytes(status, headers, f"content-length: {len(body)}\r\n")
        await self._conn.write(head if self._head_only else head + body)
        self._conn.response_done(self._keep_alive)

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Begin a streamed response; the head goes out with the first chunk."""
        self.started = True
        self._head = self._head_bytes(status, headers, "transfer-encoding: chunked\r\n")

    async def write(self, chunk: bytes) -> None:
        data = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunk else b""
        if self._head is not None:
            data, self._head = self._head + data, None
        if data and not self._head_only:
            await self._conn.write(data)

    async def end(self, chunk: bytes = b"") -> None:
        data = (b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunk else b"") + b"0\r\n\r\n"
        if self._head is not None:
            data, self._head = self._head + data, None
        self.finished = True
        if not self._head_only:
            await self._conn.write(data)
        self._conn.response_done(self._keep_alive)


Handler = Callable[[HttpRequest, HttpResponse], Awaitable[None]]
_KEPT_HEADERS = {b"authorization", b"content-length", b"expect"}


class _Parsing:
    """The request being read."""

    __slots__ = ("url", "headers", "head_bytes", "body", "body_bytes", "too_large", "dispatched")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, bytes] = {}
        self.head_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.too_large = False
        self.dispatched = False


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer):
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: _Parsing | None = None
        self.queue: deque[tuple[HttpRequest, bool]] = deque()
        self.busy = False  # a handler is answering a request
        self.pipeline_paused = False
        self.closed = False
        self._writable: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.server.connections.add(self)
        self._arm(IDLE_TIMEOUT_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = _Parsing()
        self._arm(REQUEST_TIMEOUT_S)

    def on_url(self, url: bytes) -> None:
        p = self.parsing
        assert p is not None
        p.url += url
        p.head_bytes += len(url)
        if p.head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("request line and headers are too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        p = self.parsing
        assert p is not None
        p.head_bytes += len(name) + len(value)
        if p.head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("request line and headers are too large")
        key = name.lower()
        if key in _KEPT_HEADERS:  # the others are not used: not worth a dict entry each
            p.headers[key.decode()] = value

    def on_headers_complete(self) -> None:
        p = self.parsing
        assert p is not None
        declared = p.headers.get("content-length", b"")
        if declared.isdigit() and int(declared) > self.server.max_body_bytes:
            self._dispatch_too_large()
            return
        if p.headers.get("expect", b"").lower() == b"100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        p = self.parsing
        if p is None or p.too_large:
            return
        p.body_bytes += len(body)
        if p.body_bytes > self.server.max_body_bytes:
            self._dispatch_too_large()
            return
        p.body.append(body)

    def on_message_complete(self) -> None:
        p, self.parsing = self.parsing, None
        if p is None or p.dispatched:
            return
        self._enqueue(p, self.parser.should_keep_alive())

    # --- requests -----------------------------------------------------------------------------

    def _request(self, p: _Parsing) -> HttpRequest:
        path = p.url.split(b"?", 1)[0].decode("latin-1")
        return HttpRequest(
            method=self.parser.get_method().decode("latin-1"),
            path=path,
            headers=p.headers,
            body=b"".join(p.body),
            too_large=p.too_large,
        )

    def _dispatch_too_large(self) -> None:
        """Answer now without reading the body, and close the connection afterwards."""
        p = self.parsing
        assert p is not None
        p.too_large = p.dispatched = True
        p.body = []
        if self.transport is not None:
            self.transport.pause_reading()
        self._enqueue(p, keep_alive=False)

    def _enqueue(self, p: _Parsing, keep_alive: bool) -> None:
        self.queue.append((self._request(p), keep_alive and not self.server.stopping))
        if len(self.queue) >= PIPELINE_DEPTH and self.transport is not None and keep_alive:
            self.transport.pause_reading()  # a client pipelining faster than it is answered
            self.pipeline_paused = True
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if self.closed or not self.queue:
            return
        request, keep_alive = self.queue.popleft()
        if self.pipeline_paused and not self.queue and self.transport is not None:
            self.pipeline_paused = False
            self.transport.resume_reading()
        self.busy = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        response = HttpResponse(self, request.method == "HEAD", keep_alive)
        task = self.loop.create_task(self._handle(request, response))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _handle(self, request: HttpRequest, response: HttpResponse) -> None:
        try:
            await self.server.handler(request, response)
        except Exception:
            log.error("request %s %s failed:\n%s", request.method, request.path,
                      traceback.format_exc())  # fmt: skip
            if not response.started:
                await response.send(
                    500,
                    [("content-type", "application/json")],
                    b'{"error":{"message":"internal server error","type":"server_error",'
                    b'"param":null,"code":null}}',
                )
            else:
                self.close()
                return
        if not response.finished:  # a handler that returned without answering
            self.close()

    def response_done(self, keep_alive: bool) -> None:
        self.busy = False
        if not keep_alive or self.server.stopping:
            self.close()
            return
        if self.queue:
            self._next()
        else:
            self._arm(IDLE_TIMEOUT_S)

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return  # the client went away: the answer is still accounted for by the caller
        self.transport.write(data)
        if self._writable is not None and not self._writable.done():
            await self._writable

    def _reject(self, status: int, message: str) -> None:
        """Answer a request that could not be parsed, then close."""
        if self.transport is None or self.transport.is_closing():
            return
        if not self.busy:
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
            body = json.dumps({"error": error}).encode()
            head = _STATUS_LINES[status] + (
                b"content-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % len(body)
            )
            self.transport.write(head + body)
        self.close()

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if not self.busy:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def close_if_idle(self) -> None:
        if not self.busy and not self.queue:
            self.close()


class HttpServer:
    """Serves `handler` on a listening socket until `stop()`; then finishes what is in flight."""

    def __init__(self, handler: Handler, *, max_body_bytes: int):
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self._stopped = self.loop.create_future()

    async def serve(self, sock: socket.socket) -> None:
        server = await self.loop.create_server(lambda: _Connection(self), sock=sock, backlog=2048)
        try:
            await self._stopped
        finally:
            server.close()
            for conn in list(self.connections):
                conn.close_if_idle()
            while self.tasks:  # the requests in flight finish and are answered
                await asyncio.gather(*self.tasks, return_exceptions=True)
            for conn in list(self.connections):
                conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    def stop(self) -> None:
        """Stop accepting; close idle connections; `serve` returns once in-flight requests end."""
        self.stopping = True
        for conn in list(self.connections):
            conn.close_if_idle()
        if not self._stopped.done():
            self._stopped.set_result(None)
