"""The plain data that crosses tradeoff's seams: items, requests to engines, what engines return."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, str]
Prompt = str | list[Message]
PromptMode = Literal["chat", "completion"]


@dataclass
class Item:
    """One query of a task: the prompt, the reference answer, and free-form metadata."""

    id: str
    prompt: Prompt
    reference: str
    task: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    """One call to one engine. Exactly one of `messages` (chat) or `prompt` (completion) is set."""

    messages: list[Message] | None = None
    prompt: str | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    # Ask for the log-probability of each generated token and the entropy of the distribution it
    # was drawn from (nats). Engines that cannot give them leave the lists empty.
    logprobs: bool = False
    # Text the answer already starts with (generated earlier, or forced, e.g. "</think>"): the
    # model continues after it. The returned text is the continuation only.
    prefix: str = ""
    # Generate exactly `max_tokens` tokens, past the end-of-sequence token (synthetic load):
    # `openai:` upstreams are sent `ignore_eos` and `min_tokens` (vLLM and SGLang accept them);
    # in-process engines still stop at the end of sequence.
    exact_tokens: bool = False
    # Set when the answer is no longer wanted (the client went away): engines stop at the next
    # token and return what they have, with error CANCELLED.
    cancel: threading.Event | None = field(default=None, repr=False, compare=False)

    @property
    def mode(self) -> PromptMode:
        return "chat" if self.messages is not None else "completion"

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


CANCELLED = "cancelled: the answer was no longer wanted"


class StopEarly(threading.Event):
    """A call's own cancel, for a strategy that has what it wanted before the model ends (a
    `budget` answer that did not think, past its stop string), set too whenever the request's
    cancel `outer` is (a served client gone): engines check `is_set`, and stop at their next
    token either way. `root` is the cancel the request's others share."""

    def __init__(self, outer: threading.Event | None):
        super().__init__()
        self.outer = outer

    def is_set(self) -> bool:
        return super().is_set() or (self.outer is not None and self.outer.is_set())

    @property
    def root(self) -> threading.Event:
        return self.outer if self.outer is not None else self


# A served request's error where its client went away before the answer (HTTP 499): not a
# failure of the model or the server, and counted apart from the errors.
DISCONNECTED = "client disconnected"


@dataclass(frozen=True)
class Refusal:
    """A server's refusal of a request as invalid (HTTP 400, 413 or 422: a prompt past the
    model's context, a bad parameter), in OpenAI's error fields: `tradeoff serve` answers its
    client the same, where a 502 would have it retry what can never succeed."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None


@dataclass
class Generation:
    """What one engine call produced, with timings on the `time.perf_counter()` clock."""

    text: str
    input_tokens: int | None  # None when the server reports no usage (missing, not zero)
    output_tokens: int
    t_start: float
    t_first: float | None
    t_end: float
    finish_reason: str = "stop"
    mode: PromptMode = "chat"
    # Time at which each output token (or stream chunk, of one token or more) arrived.
    token_times: list[float] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    token_entropies: list[float] = field(default_factory=list)
    # "exact" when the engine tokenized; "usage" when the server reported; "chunks" when counted
    # from stream chunks.
    token_count_source: str = "exact"
    error: str | None = None
    refused: Refusal | None = None  # the error was the server's refusal of the request
    # The engine ran one pass more than its output tokens need: the one whose token ended the
    # sequence, which is no output token (in-process engines know; a server does not say).
    end_pass: bool = False

    @classmethod
    def failed(cls, mode: PromptMode, t_start: float, error: str) -> Generation:
        """A call that produced nothing, with why (its input tokens unknown)."""
        now = time.perf_counter()
        return cls("", None, 0, t_start, None, now, "error", mode, error=error)

    @classmethod
    def cancelled_before(cls, mode: PromptMode, t_start: float) -> Generation:
        """A call cancelled before its engine read a token of it: 0 input tokens (unknown, a
        record of a cancelled cascade or vote lost the input tokens of its calls that ran)."""
        gen = cls.failed(mode, t_start, CANCELLED)
        gen.input_tokens = 0
        return gen

    @property
    def ttft_s(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_start

    @property
    def e2e_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Output tokens after the first, divided by the time after the first token."""
        if self.t_first is None or self.output_tokens < 2 or self.t_end <= self.t_first:
            return None
        return (self.output_tokens - 1) / (self.t_end - self.t_first)

    @property
    def itl_s(self) -> float | None:
        """Mean gap between output tokens after the first: from the first token's arrival to the
        last's over the gaps between them, one fewer than the tokens. A server that streams
        several tokens a chunk (speculative decoding, a stream interval) sends some together,
        gaps of 0: over its chunks instead, the mean read the chunk's gap as each token's."""
        if len(self.token_times) < 2:
            return None
        gaps = max(self.output_tokens, len(self.token_times)) - 1
        return (self.token_times[-1] - self.token_times[0]) / gaps


@dataclass
class Call:
    """One engine call made by a strategy, with its measured and analytic costs."""

    model: str
    generation: Generation
    energy_j: float | None = None
    energy_source: str | None = None
    energy_missing: str | None = None
    flops: float | None = None
    bytes: float | None = None  # analytic bytes moved (weights, KV cache)
    # Analytic least time on this device's peaks (tradeoff.meters.roofline), None when the
    # device's peaks or the model's weight bytes are unknown.
    roofline_s: float | None = None
    # Sampled while the call ran, where the meter samples them (NVML): mean power (W) and the
    # device's peak memory in use (bytes, all processes on the device).
    mean_power_w: float | None = None
    device_memory_bytes: int | None = None
    # The rows of the batch the call was one of (a vote's draws decoded together): its time is
    # the batch's, shared with the others.
    batch: int = 1
    # Energy still settling (`tradeoff serve` answers before NVML's counter steps): an awaitable
    # of its `tradeoff.meters.account.Settled`; `CallMeter.settle_calls` fills the fields above.
    pending: Any = field(default=None, repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        g = self.generation
        return {
            "model": self.model,
            "mode": g.mode,
            "input_tokens": g.input_tokens,
            "output_tokens": g.output_tokens,
            "token_count_source": g.token_count_source,
            "ttft_s": g.ttft_s,
            "e2e_s": g.e2e_s,
            "itl_s": g.itl_s,
            "finish_reason": g.finish_reason,
            "energy_j": self.energy_j,
            "energy_source": self.energy_source,
            "energy_missing": self.energy_missing,
            "flops": self.flops,
            "bytes": self.bytes,
            "roofline_s": self.roofline_s,
            "mean_power_w": self.mean_power_w,
            "device_memory_bytes": self.device_memory_bytes,
            "error": g.error,
        } | ({"batch": self.batch} if self.batch > 1 else {})


@dataclass
class Outcome:
    """A strategy's answer to one item, and every engine call it made to get there."""

    output: str
    calls: list[Call]
    extra: dict[str, Any] = field(default_factory=dict)
    # When the strategy knows it better than its calls do (e.g. `switch`, whose calls interleave):
    # the perf_counter times of the answer's first and last tokens.
    t_first: float | None = None
    t_last: float | None = None
    # A strategy that decides on whole answers (`vote`, `cascade`) streams none of them: its
    # answer is released whole once decided, at this perf_counter time, which is then the
    # caller's first token (its record's TTFT). Its calls' own times still give the decode rate.
    t_released: float | None = None
    # Why the answer is incomplete where a call after the first failed and the strategy keeps
    # what came before (`budget`'s forced answer): the record's error though its output is not
    # empty
    failed: str | None = None
    # The index in `calls` of the call whose text is the answer, where it is not the last one
    # (`vote`'s majority, a cascade's agreeing small answers).
    answered_by: int | None = None

    @property
    def error(self) -> str | None:
        """Why there is no answer, or no whole one: `failed`, else the error of the call whose
        text is the answer (a stream that broke after some text is no answer); a failed call
        the answer did not come from (a vote's other draw, a cascade's small answer before it
        escalated) is none."""
        if self.failed:
            return self.failed
        answer = self.answer_call
        return None if answer is None else answer.generation.error

    @property
    def answer_call(self) -> Call | None:
        """The call whose text is the answer (its error, its finish reason); None without any."""
        if not self.calls:
            return None
        return self.calls[-1 if self.answered_by is None else self.answered_by]


@dataclass
class Record:
    """One (configuration x item x sample) outcome with its costs: the unit of the run store."""

    config_id: str
    task: str
    item_id: str
    sample: int
    output: str
    score: float | None
    parsed: str | None
    error: str | None
    input_tokens: int | None
    output_tokens: int
    ttft_s: float | None
    e2e_s: float
    itl_s: float | None
    decode_tps: float | None
    energy_j: float | None
    energy_source: str | None
    energy_missing: str | None
    flops: float | None
    peak_rss_bytes: int | None
    cost_usd: float | None
    calls: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # Under load (`tradeoff load`): the load point ('' in a profile run), the phase ("warmup",
    # "measure", "cooldown"; statistics count "measure" only), when the request was scheduled and
    # actually sent (s from the start of its load point), and the difference (queue delay). In a
    # profile run the queue delay is the time a request waited for an in-process model behind
    # other requests, not in its TTFT and e2e (None for a model behind a server).
    load_point: str = ""
    phase: str | None = None
    scheduled_s: float | None = None
    sent_s: float | None = None
    queue_delay_s: float | None = None
