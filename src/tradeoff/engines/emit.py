"""An answer as it grows token by token: its bytes decoded incrementally, cut at the first stop
string, and streamed without ever sending text a stop string will cut.

The engines that decode in this process (llama.cpp, torch, the `switch` loop) all build their
answers here. Work per token is proportional to the token, not to the answer so far: pieces are
decoded once, and a stop string is looked for only where it could have just been completed. The
tail that could still become a stop string is held back from the stream until the next token
decides it, so everything streamed is a prefix of the final answer.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Protocol

TextSink = Callable[[str], None]


class Thought(str):
    """A piece of reasoning a server streams apart from the answer (vLLM's and SGLang's
    `reasoning_content`), given to a sink as such: never part of the answer text, passed on by
    `tradeoff serve` to its client's stream in the same field."""


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


class AnswerText:
    """The answer's text, built from the bytes each token adds.

    `add(piece)` returns True once a stop string has ended the answer (the text is then cut
    before it); `finish()` gives the final text and sends the rest of it to the sink. Text that
    any of `stop` could still cut is held back from the sink; `add` may check other stop strings
    than `stop` (in `switch`, each model's own).
    """

    def __init__(self, stop: list[str], sink: TextSink | None = None):
        self.stop = [s for s in stop if s]
        self.text = ""
        self.stopped = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._emit = StopHoldback(sink, self.stop) if sink else None

    def add(self, piece: bytes, stop: list[str] | None = None) -> bool:
        if self.stopped:
            return True
        new = self._decoder.decode(piece)
        if not new:
            return False
        stops = self.stop if stop is None else [s for s in stop if s]
        # A stop string completed by this piece starts at most `longest - 1` characters before it.
        longest = max((len(s) for s in stops), default=0)
        start = max(0, len(self.text) - longest + 1)
        self.text += new
        if stops:
            window = self.text[start:]
            found = [i for i in (window.find(s) for s in stops) if i >= 0]
            if found:
                self.text = self.text[: start + min(found)]
                self.stopped = True
                return True
        if self._emit:
            self._emit.update(self.text)
        return False

    def holds(self, stop: list[str]) -> bool:
        """Whether the text so far holds one of `stop` (another model's stop strings)."""
        return any(s and s in self.text for s in stop)

    def finish(self) -> str:
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        if self._emit:
            self._emit.finish(self.text)
        return self.text


class PieceDecoder(Protocol):
    """A model's tokens to the bytes of text each adds, one token at a time. `context` feeds
    tokens that precede the next ones (a prompt, text another model wrote) without emitting
    them: some tokenizers render a token differently after others (a leading space)."""

    def context(self, tokens: list[int]) -> None: ...

    def add(self, token: int) -> bytes: ...
