"""`switch`: token-level entropy-adaptive decoding between a small and a large model (EAD).

The small model generates. Before each token, the entropy of the generating model's next-token
distribution joins a rolling window of the last `window` entropies; when the window's mean exceeds
`threshold`, the large model generates (this token included) until the mean falls below
`threshold_low`, then the small model takes over again. Models hand over at the text level, so
they may have different tokenizers: each keeps its own context and KV cache and catches up on the
text it has not seen with one batched prefill, counted as that model's cost. Each model's stop
strings are checked on the text it adds; a model whose stop string the answer already holds does
not take the turn (in its prompt format the answer has ended: a few-shot model would write the
next question), so the answer ends there.

Runs on in-process models only (llama.cpp or torch: it needs every next-token distribution).
Energy by model: with a fine-grained counter, its difference across each model's turns; with a
stepped one (NVML), each model's passes are a request in the energy account, split by cost.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import model_validator

from tradeoff.config import (
    Config,
    MaxTokenses,
    Num,
    PositiveInts,
    Report,
    SmallLarge,
    StrategyParams,
)
from tradeoff.engines.emit import AnswerText, TextSink
from tradeoff.engines.stream import ContextFull, TokenStream, entropy_of, sample
from tradeoff.strategies.calls import Passes
from tradeoff.strategies.context import StrategyContext
from tradeoff.types import Generation, Item, Outcome, Request

DEFAULT_WINDOW = 4


class Params(StrategyParams):
    strategy: Literal["switch"] = "switch"
    models: SmallLarge
    max_tokens: MaxTokenses | None = None
    threshold: Num  # the large model takes over above this mean entropy (nats)
    threshold_low: Num | None = None  # and hands back below this one (default: threshold)
    window: PositiveInts = DEFAULT_WINDOW  # entropies in the rolling mean

    listable: ClassVar[tuple[str, ...]] = ("max_tokens", "threshold", "threshold_low", "window")
    streams: ClassVar[bool] = True
    reports: ClassVar[tuple[Report, ...]] = (
        Report("switches", "count", "tradeoff_switches_total", "switch hand-overs between models"),
    )

    def aliases(self) -> list[str]:
        return list(self.models)

    def strategy_params(self) -> dict[str, Any]:
        params = super().strategy_params()
        params.setdefault("threshold_low", params["threshold"])
        return params

    @model_validator(mode="after")
    def _hands_back_below(self) -> Params:
        """The large model hands back below threshold_low: above threshold it would take the turn
        and hand it back at once. Every pair a grid of lists would run is checked."""
        highs = self.threshold if isinstance(self.threshold, list) else [self.threshold]
        lows = self.threshold_low if isinstance(self.threshold_low, list) else [self.threshold_low]
        for high, low in itertools.product(highs, lows):
            if low is not None and low > high:
                raise ValueError(
                    f"threshold_low {low:g} is above threshold {high:g}; the large model hands "
                    "back below threshold_low, so give one at most threshold (in a grid, list "
                    "each pair as its own entry)"
                )
        return self

    def base_name(self, config: Config) -> str:
        small, large = config.aliases
        p = config.params
        name = f"switch-{small}-{large}-t{p['threshold']:g}"
        name = name if p["threshold_low"] == p["threshold"] else f"{name}-{p['threshold_low']:g}"
        return name if p["window"] == DEFAULT_WINDOW else f"{name}-w{p['window']}"


def run_switch_sync(
    small: TokenStream,
    large: TokenStream,
    *,
    max_tokens: int,
    threshold: float,
    threshold_low: float,
    window: int,
    temperature: float,
    seed: int,
    on_turn: Callable[[int], None] | None = None,
    on_text: TextSink | None = None,
) -> tuple[str, dict[str, object], tuple[float, float] | None]:
    """The decoding loop. Returns (answer, stats, the perf_counter times of its first and last
    tokens, None without any). `on_turn` hears of each
    hand-over (0: the small model generates from now on, 1: the large); `on_text` receives the
    answer's text as it is committed."""
    rng = np.random.default_rng(seed)
    answer = b""
    pieces: dict[int, bytes] = {0: b"", 1: b""}
    streams = (small, large)
    entropies: deque[float] = deque(maxlen=window)
    current, switches, by_model = 0, 0, [0, 0]
    t_first: float | None = None
    t_last = 0.0
    finish = "length"
    text = AnswerText(small.request.stop, on_text)

    def hand_over(to: int) -> bool:
        """Give `to` the turn; False where the answer holds one of its stop strings already:
        in that model's prompt format the answer has ended (a completion-mode model would go on
        to write the next few-shot question), so it ends here."""
        nonlocal current, switches
        if text.holds(streams[to].request.stop):
            return False
        current, switches = to, switches + 1
        if on_turn is not None:
            on_turn(to)
        return True

    try:
        while by_model[0] + by_model[1] < max_tokens:
            if small.request.cancelled:
                finish = "cancelled"
                break
            stream = streams[current]
            logp = stream.next_distribution(answer)
            entropies.append(entropy_of(logp))
            mean = sum(entropies) / len(entropies)
            if current == 0 and mean > threshold:
                if not hand_over(1):  # the large model produces this token
                    finish = "stop"
                    break
                stream = streams[current]
                logp = stream.next_distribution(answer)
                entropies[-1] = entropy_of(logp)
            token = sample(logp, temperature, rng)
            if stream.is_end(token):
                finish = "stop"
                break
            piece = stream.take(token)
            t_last = time.perf_counter()
            if t_first is None:
                t_first = t_last
            answer += piece
            pieces[current] += piece
            by_model[current] += 1
            if text.add(piece, stream.request.stop):
                finish = "stop"
                break
            mean = sum(entropies) / len(entropies)
            if current == 1 and mean < threshold_low and not hand_over(0):
                finish = "stop"
                break
    except ContextFull:  # a model's context is full: the answer ends there, as at max_tokens
        finish = "length"
    stats: dict[str, object] = {
        "tokens_small": by_model[0],
        "tokens_large": by_model[1],
        "large_token_share": by_model[1] / max(by_model[0] + by_model[1], 1),
        "switches": switches,
        "catchup_tokens_small": small.catchup_tokens,
        "catchup_tokens_large": large.catchup_tokens,
        "finish_reason": finish,
        "last_turn": ("small", "large")[current],
        "text_small": pieces[0].decode("utf-8", errors="replace"),
        "text_large": pieces[1].decode("utf-8", errors="replace"),
    }
    return text.finish(), stats, None if t_first is None else (t_first, t_last)


def _generation(stream: TokenStream, text: str, t_start: float, finish: str) -> Generation:
    """One model's part of the answer as a generation: its tokens in and out, and the time it
    computed (not wall time: the models' turns interleave). `finish`: the answer's, for the model
    whose turn was last; `switch` for the other, whose last turn a hand-over ended. No first
    token time: on the wall clock it counts the other model's turns, and it read beyond the
    call's computed time, or was given to a model that wrote no token (the answer's own TTFT
    is the record's)."""
    return Generation(
        text=text,
        input_tokens=stream.prompt_tokens + stream.catchup_tokens,
        output_tokens=stream.generated,
        t_start=t_start,
        t_first=None,
        t_end=t_start + stream.busy_s,
        finish_reason=finish,
        mode=stream.request.mode,
    )


def _refusal(streams: tuple[TokenStream, TokenStream]) -> tuple[int, str] | None:
    """The first model whose prompt and max_tokens do not fit its context, with the error its
    own request would have (`single`'s); None where both fit."""
    for i, stream in enumerate(streams):
        try:
            stream.fit()
        except ValueError as exc:
            return i, f"{type(exc).__name__}: {exc}"
    return None


async def run(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    aliases = ctx.config.aliases
    p = ctx.params
    requests: list[Request] = [ctx.request_for(a, item, sample) for a in aliases]
    async with ctx.meter.turns(aliases, requests[0]) as turns:
        if turns is None:  # its client left while it waited for the engines
            call = ctx.meter.not_run(aliases[0], requests[0])
            return Outcome("", [call], {"finish_reason": "cancelled", "switches": 0})
        small, large = (turns.engines[a].token_stream(r) for a, r in zip(aliases, requests))
        small.on_pass, large.on_pass = turns.sink(aliases[0]), turns.sink(aliases[1])
        t_start = time.perf_counter()  # not before: waiting for another request is not latency
        engine = turns.engines[aliases[0]]
        refused = await engine.run_sync(lambda: _refusal((small, large)))
        if refused is not None:  # no model generated: the record fails as `single`'s would
            index, error = refused
            gen = Generation.failed(requests[index].mode, t_start, error)
            failed: dict[str, tuple[Generation, Passes]] = {aliases[index]: (gen, [])}
        else:
            answer, stats, span = await engine.run_sync(
                lambda: run_switch_sync(
                    small,
                    large,
                    max_tokens=requests[0].max_tokens,
                    threshold=p["threshold"],
                    threshold_low=p["threshold_low"],
                    window=p["window"],
                    temperature=requests[0].temperature,
                    seed=requests[0].seed or 0,
                    on_turn=lambda i: turns.turn(aliases[i]),
                    on_text=ctx.on_text,
                )
            )
    if refused is not None:
        return Outcome("", await turns.calls(failed), {"finish_reason": "error", "switches": 0})
    done = {
        alias: (
            _generation(
                stream,
                str(stats[f"text_{key}"]),
                t_start,
                str(stats["finish_reason"]) if stats["last_turn"] == key else "switch",
            ),
            stream.evals,
        )
        for alias, stream, key in zip(aliases, (small, large), ("small", "large"))
        if stream.started  # never asked for a token: no cost
    }
    calls = await turns.calls(done)
    if span is None:
        return Outcome(answer, calls, stats)
    return Outcome(answer, calls, stats, t_first=span[0], t_last=span[1])
