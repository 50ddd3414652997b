"""Server-sent events, as OpenAI-compatible servers stream answers: the `data:` payloads (and
llama.cpp's `error:` field) of a byte stream that arrives in pieces split anywhere."""

from __future__ import annotations


class SSEDecoder:
    """Feed it the body's bytes as they arrive; `feed` returns the payloads of the `data:` lines
    completed so far, stripped of the field name and surrounding whitespace.

    Lines end in LF or CRLF. Everything else a stream may hold (blank lines between events,
    `: keep-alive` comments, `event:` and `id:` fields) is skipped; each `data:` line is a payload
    of its own (OpenAI-compatible servers put one JSON object, or `[DONE]`, on one line). A last
    line without its line end is not an event yet, and is dropped if the stream ends there.

    `error` is the value of the last `error:` line fed (None before one comes). The SSE standard
    has no such field, but llama.cpp's llama-server reports a failure that comes after the
    response head this way (`error: {"code": ..., "message": ...}`, then `data: [DONE]`).
    """

    __slots__ = ("_rest", "error")

    def __init__(self) -> None:
        self._rest = b""  # an incomplete last line, waiting for the rest of its bytes
        self.error: bytes | None = None

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._rest + data if self._rest else data
        lines = buffer.split(b"\n")
        self._rest = lines.pop()
        if b"error:" in buffer:  # seldom true: the lines are looked through only then
            for line in lines:
                if line.startswith(b"error:"):
                    self.error = line[6:].strip()
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]
