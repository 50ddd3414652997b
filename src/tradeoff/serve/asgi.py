"""The HTTP request and response of one ASGI call, as the application uses them: the headers it
reads, a body read within a size limit and a deadline, a watch for the client going away, and
answers sent whole or streamed. The protocol itself is uvicorn's (see tradeoff.serve.server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tradeoff.serve.schema import ApiError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[str, str]]


# The scope's key for the connection a request came on.
CONNECTION = "tradeoff.connection"


class HttpRequest:
    def __init__(self, scope: Scope, receive: Receive):
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        # Lower-case names; a repeated header keeps its last value.
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        # the connection it came on (`server._Protocol`): not its "client", which uvicorn's proxy
        # headers rewrite to the address a proxy forwards
        self.connection: object = scope.get(CONNECTION)
        self._receive = receive
        self.disconnected = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._when_gone: list[Callable[[], None]] = []

    def header(self, name: bytes) -> bytes:
        return self.headers.get(name, b"")

    async def body(self, limit: int, timeout_s: float) -> bytes:
        """The whole body, or ApiError: 413 as soon as it is known to exceed `limit` bytes (a
        declared Content-Length is checked before anything is read), 408 when the client has not
        sent it all within `timeout_s`. Either closes the connection after the answer."""
        declared = self.header(b"content-length")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(self._receive(), max(left, 0.0))
            except asyncio.TimeoutError:
                raise ApiError(
                    408,
                    f"the request body did not arrive within {timeout_s:g} s (--request-timeout)",
                    code="timeout",
                    headers={"connection": "close"},
                ) from None
            if message["type"] == "http.disconnect":
                self._gone()
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def watch_disconnect(self) -> asyncio.Event:
        """Once the body is read: an event set when the client goes away."""
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._wait_disconnect())
        return self.disconnected

    def when_gone(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on the event loop) when the client goes away."""
        self._when_gone.append(callback)

    async def _wait_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone()

    def _gone(self) -> None:
        self.disconnected.set()
        for callback in self._when_gone:
            callback()

    def close(self) -> None:
        """Stop watching (the answer is complete)."""
        if self._watch is not None:
            self._watch.cancel()


class ClientGone(Exception):
    """The client went away while sending its request."""


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is larger than {limit} bytes (--max-body-bytes)",
        code="too_large",
        headers={"connection": "close"},
    )


class HttpResponse:
    """Sends one response: `send(status, headers, body)` whole, or `start(status, headers)` then
    `write(chunk)`... `end(chunk)` streamed (chunked: uvicorn frames it)."""

    def __init__(self, send: Send):
        self._send = send
        self._head: Message | None = None
        self.started = False
        self.finished = False

    async def send(self, status: int, headers: Headers, body: bytes) -> None:
        self.started = True
        encoded = _encode([*headers, ("content-length", str(len(body)))])
        await self._send({"type": "http.response.start", "status": status, "headers": encoded})
        await self._send({"type": "http.response.body", "body": body})
        self.finished = True

    def start(self, status: int, headers: Headers) -> None:
        """Begin a streamed response; the head goes out with the first chunk."""
        self.started = True
        self._head = {"type": "http.response.start", "status": status, "headers": _encode(headers)}

    async def write(self, chunk: bytes) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            await self._send(head)
        if chunk:
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def end(self, chunk: bytes = b"") -> None:
        if self._head is not None:
            head, self._head = self._head, None
            await self._send(head)
        self.finished = True
        await self._send({"type": "http.response.body", "body": chunk})


def _encode(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers]
