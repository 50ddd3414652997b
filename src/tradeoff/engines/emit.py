"""Streaming answer text as it is generated, without ever sending text a stop string will cut.

An engine that cuts stop strings itself (llama.cpp in process, the `switch` loop) sees the text
grow token by token; the tail that could still become a stop string is held back until the
next token decides it. Everything emitted is a prefix of the final answer.
"""

from __future__ import annotations

from collections.abc import Callable

TextSink = Callable[[str], None]


class StopHoldback:
    """Feeds a sink the new text of a growing answer, holding back a possible stop string."""

    def __init__(self, sink: TextSink, stop: list[str]):
        self.sink = sink
        self.hold = max((len(s) - 1 for s in stop), default=0)
        self.sent = 0

    def update(self, text: str) -> None:
        """`text` is the whole answer so far (stop strings not yet found in it)."""
        safe = len(text) - self.hold
        if safe > self.sent:
            self.sink(text[self.sent : safe])
            self.sent = safe

    def finish(self, text: str) -> None:
        """`text` is the final answer: send what is left of it."""
        if len(text) > self.sent:
            self.sink(text[self.sent :])
            self.sent = len(text)
