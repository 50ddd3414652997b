"""One model's own context for token-level strategies (`switch`), whatever the engine.

The answer is shared as bytes of text; each model keeps its own tokens and KV cache and, when it
takes a turn, catches up on the text it has not seen with one batched pass. Every evaluation is
logged as (start position, tokens) for the analytic costs and reported to `on_pass` (energy
splitting). Engines supply the primitives: the prompt's tokens, tokenizing text, running a pass,
the last position's log-probabilities, and a decoder of generated tokens to text.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from tradeoff.engines.base import PassSink
from tradeoff.engines.emit import PieceDecoder
from tradeoff.types import Request

if TYPE_CHECKING:
    from tradeoff.engines.base import InProcessEngine


# Sampling at a temperature above 0, every engine's and `switch`'s, in llama.cpp's order: of the
# TOP_K likeliest tokens, the fewest that hold TOP_P of their probability, less those under MIN_P
# times the likeliest's; the temperature then reshapes what is left.
TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05


def candidates(logp: np.ndarray) -> np.ndarray:
    """The tokens a draw at a temperature above 0 chooses among, likeliest first, given the
    log-probabilities over the vocabulary."""
    k = min(TOP_K, len(logp))
    top = np.argpartition(-logp, k - 1)[:k]
    top = top[np.argsort(-logp[top], kind="stable")]
    p = np.exp(logp[top] - logp[top[0]])
    p /= p.sum()
    keep = (np.cumsum(p) - p < TOP_P) & (logp[top] >= logp[top[0]] + np.log(MIN_P))
    return top[keep]


def sample(logp: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token drawn from log-probabilities `logp` (the likeliest at temperature 0)."""
    if temperature <= 0:
        return int(np.argmax(logp))
    top = candidates(logp)
    # The likeliest taken off before dividing, so a temperature as small as 5e-324 leaves it at
    # 0 and the rest at -inf at worst: greedy. Divided first, all overflowed to -inf, then NaN.
    p = np.exp((logp[top] - logp[top].max()) / temperature)
    return int(top[rng.choice(len(top), p=p / p.sum())])


def entropy_of(logp: np.ndarray) -> float:
    """Entropy in nats of a distribution given as log-probabilities."""
    return float(-(np.exp(logp) * logp).sum())


class ContextFull(Exception):
    """A model's context has no room for what it must read: the answer ends there ("length").
    Each model's prompt and max_tokens fit (`TokenStream.fit`), but the other model's text,
    re-tokenized in this one's tokens, may take more positions than it wrote."""


class TokenStream(ABC):
    def __init__(self, engine: InProcessEngine, request: Request):
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
        self._prompt_ids: list[int] | None = None
        self._length = 0  # positions in the model's context
        self._decoder = self._pieces()

    # --- what an engine supplies -----------------------------------------------------------

    @abstractmethod
    def _prompt(self) -> list[int]:
        """The request's prompt tokens (the model's context starts empty)."""

    @abstractmethod
    def _refuse_overlong(self, prompt: int) -> None:
        """ValueError, the engine's own for a request, where a prompt of `prompt` tokens and the
        request's max_tokens do not fit the model's context."""

    @abstractmethod
    def _tokenize(self, text: bytes) -> list[int]: ...

    @abstractmethod
    def _run(self, tokens: list[int], start: int) -> None:
        """Evaluate `tokens` at positions from `start`."""

    @abstractmethod
    def _logprobs(self) -> np.ndarray:
        """Log-probabilities over the vocabulary after the last evaluation."""

    @abstractmethod
    def _pieces(self) -> PieceDecoder:
        """A decoder of this model's tokens to the bytes of text each adds."""

    # --- the shared protocol ---------------------------------------------------------------

    def _eval(self, tokens: list[int]) -> None:
        start = self._length
        if start + len(tokens) > self.engine.n_ctx:
            raise ContextFull(f"{start + len(tokens)} positions of {self.engine.n_ctx}")
        self.evals.append((start, len(tokens)))
        self._run(tokens, start)
        self._length += len(tokens)
        if self.on_pass is not None:
            self.on_pass(start, len(tokens), 1)

    def fit(self) -> list[int]:
        """Read the prompt; ValueError (the engine's, as its own request would fail) where it
        and max_tokens do not fit the model's context. `switch` checks every model before any
        generates: an answer cut short by a context that never had room for it is none."""
        self._prompt_ids = self._prompt()
        self._refuse_overlong(len(self._prompt_ids))
        return self._prompt_ids

    def next_distribution(self, answer: bytes) -> np.ndarray:
        """Bring this model up to date with `answer`, then give its next-token log-probabilities."""
        t0 = time.perf_counter()
        if not self.started:
            prompt = self.fit() if self._prompt_ids is None else self._prompt_ids
            self.prompt_tokens = len(prompt)
            self._decoder.context(prompt)
            self._eval(prompt)
            self.started = True
        missing = answer[self.seen :]
        catchup = self._tokenize(missing) if missing else []
        self._decoder.context(catchup)
        if self._unfed or catchup:
            self._eval(self._unfed + catchup)  # (ContextFull: not read, so not counted)
            self._unfed = []
        self.catchup_tokens += len(catchup)
        self.seen = len(answer)
        logp = self._logprobs()
        self.busy_s += time.perf_counter() - t0
        return logp

    def is_end(self, token: int) -> bool:
        return self.engine.is_end(token)

    def take(self, token: int) -> bytes:
        """Accept `token` as this model's output; the bytes of text it adds."""
        piece = self._decoder.add(token)
        self._unfed.append(token)
        self.generated += 1
        self.seen += len(piece)
        return piece
