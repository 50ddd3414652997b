"""One model's own context for token-level strategies (`switch`), whatever the engine.

The answer is shared as bytes of text; each model keeps its own tokens and KV cache and, when it
takes a turn, catches up on the text it has not seen with one batched pass. Every evaluation is
logged as (start position, tokens) for the analytic FLOPs and reported to `on_pass` (energy
splitting). Engines supply the primitives: the prompt's tokens, tokenizing text, running a pass,
the last position's log-probabilities and a token's bytes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tradeoff.engines.base import PassSink
from tradeoff.types import Request


class TokenStream:
    def __init__(self, engine: Any, request: Request):
        self.engine = engine
        self.request = request
        self.evals: list[tuple[int, int]] = []
        self.prompt_tokens = 0
        self.catchup_tokens = 0
        self.generated = 0
        self.busy_s = 0.0
        self.seen = 0  # bytes of the answer already in (or queued for) this model's context
        self.started = False
        self.on_pass: PassSink | None = None
        self._unfed: list[int] = []
        self._context: list[int] = []

    # --- what an engine supplies -----------------------------------------------------------

    def _prompt(self) -> list[int]:
        """The request's prompt tokens (the model's context starts empty)."""
        raise NotImplementedError

    def _tokenize(self, text: bytes) -> list[int]:
        raise NotImplementedError

    def _run(self, tokens: list[int], start: int) -> None:
        """Evaluate `tokens` at positions from `start`."""
        raise NotImplementedError

    def _logprobs(self) -> np.ndarray:
        """Log-probabilities over the vocabulary after the last evaluation."""
        raise NotImplementedError

    def _piece(self, token: int, before: list[int]) -> bytes:
        """The bytes `token` adds after the tokens `before`."""
        raise NotImplementedError

    # --- the shared protocol ---------------------------------------------------------------

    def _eval(self, tokens: list[int]) -> None:
        start = len(self._context)
        self.evals.append((start, len(tokens)))
        self._run(tokens, start)
        self._context += tokens
        if self.on_pass is not None:
            self.on_pass(start, len(tokens), 1)

    def next_distribution(self, answer: bytes) -> np.ndarray:
        """Bring this model up to date with `answer`, then give its next-token log-probabilities."""
        t0 = time.perf_counter()
        if not self.started:
            prompt = self._prompt()
            self.prompt_tokens = len(prompt)
            self._eval(prompt)
            self.started = True
        missing = answer[self.seen :]
        catchup = self._tokenize(missing) if missing else []
        self.catchup_tokens += len(catchup)
        if self._unfed or catchup:
            self._eval(self._unfed + catchup)
            self._unfed = []
        self.seen = len(answer)
        logp = self._logprobs()
        self.busy_s += time.perf_counter() - t0
        return logp

    def take(self, token: int) -> bytes:
        """Accept `token` as this model's output; its bytes of text."""
        piece = self._piece(token, self._context + self._unfed)
        self._unfed.append(token)
        self.generated += 1
        self.seen += len(piece)
        return piece
