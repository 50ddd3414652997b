"""`budget`: cap the output tokens; for models that reason inside <think>...</think>, cap the
thinking at `think_budget`, then close it and force the answer (budget forcing)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import model_validator

from tradeoff.config import Config, MaxTokenses, Sampling, StrategyParams, Temperatures
from tradeoff.engines.base import InProcessEngine
from tradeoff.engines.emit import StopHoldback, TextSink, Thought
from tradeoff.strategies.context import StrategyContext
from tradeoff.tasks.scorers import THINK_CLOSE, THINK_OPEN
from tradeoff.types import Item, Outcome, StopEarly


class Params(StrategyParams):
    strategy: Literal["budget"] = "budget"
    model: str
    temperature: Temperatures | None = None
    budget: MaxTokenses  # output tokens in all, thinking included
    think_budget: MaxTokenses | None = None  # thinking tokens before the answer is forced

    listable: ClassVar[tuple[str, ...]] = ("temperature", "budget", "think_budget")
    names_max_tokens: ClassVar[bool] = False  # the budget is in the name
    caps_max_tokens: ClassVar[bool] = True
    # Its answer only grows: the thinking, the close it forces, then the answer's continuation.
    streams: ClassVar[bool] = True

    def aliases(self) -> list[str]:
        return [self.model]

    @model_validator(mode="after")
    def _thinks_within_budget(self) -> Params:
        """Thinking before the answer is forced must leave the answer some of the budget; every
        pair a grid of lists would run is checked."""
        if self.think_budget is None:
            return self
        budgets = self.budget if isinstance(self.budget, list) else [self.budget]
        thinks = self.think_budget if isinstance(self.think_budget, list) else [self.think_budget]
        for budget, think in itertools.product(budgets, thinks):
            if think >= budget:
                raise ValueError(
                    f"think_budget {think} leaves none of budget {budget} (output tokens in all, "
                    "thinking included) for the answer: give one below budget"
                )
        return self

    def sampling(self, base: Sampling) -> Sampling:
        return super().sampling(base).model_copy(update={"max_tokens": self.budget})

    def base_name(self, config: Config) -> str:
        name = f"budget{self.budget}-{config.model}"
        return name if self.think_budget is None else f"{name}-think{self.think_budget}"


async def run(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    budget, think_budget = ctx.params["budget"], ctx.params.get("think_budget")
    alias = ctx.config.model
    if think_budget is None:
        call = await ctx.meter.call(alias, ctx.request_for(alias, item, sample), ctx.on_text)
        capped = call.generation.finish_reason == "length"
        return Outcome(call.generation.text, [call], {"cap_hit": capped, "forced": False})

    # Phase 1: think, at most think_budget tokens, stopping where the model closes its thinking.
    # The answer's stop strings are not the thinking's: a completion's one-line stop ended the
    # thinking at its first line break (`<think>\n`), so think_budget never took effect.
    # An answer that does not think is stopped at its own stop strings all the same, by the
    # sink that watches it (it would have run on, paid for, to think_budget); not a server's,
    # whose stream, closed early, would not report its input tokens.
    base = ctx.request_for(alias, item, sample)
    budget = min(budget, base.max_tokens)  # a served client may ask for fewer
    sink = _FirstCall(ctx.on_text, base.stop, StopEarly(ctx.cancel))
    thinking = ctx.request_for(
        alias, item, sample, max_tokens=min(think_budget, budget), stop=[THINK_CLOSE]
    )
    if isinstance(ctx.meter.engines[alias], InProcessEngine):
        thinking.cancel = sink.stop_early
    first = await ctx.meter.call(alias, thinking, sink)
    sink.finish()
    if sink.stopped and not ctx.cancelled:  # its own stop, not a cancel: the answer ended there
        done = replace(first.generation, error=None, finish_reason="stop")
        first = replace(first, generation=done)
    text = first.generation.text
    cut = first.generation.finish_reason == "length"  # at think_budget (or budget, the lower)
    if not text.lstrip().startswith(THINK_OPEN):  # an answer without thinking: its stops apply
        answer = _until_stop(text, base.stop)
        cut, text = cut and answer == text, answer
    if first.generation.error or not text.lstrip().startswith(THINK_OPEN):
        # Not a reasoning answer: what was generated is the answer, within the overall budget.
        if not cut or first.generation.error:
            return Outcome(text, [first], {"cap_hit": False, "forced": False})
        prefix, forced = text, False
    else:
        prefix, forced = text + ("\n" if cut else "") + THINK_CLOSE + "\n", cut
    left = budget - first.generation.output_tokens
    if left <= 0:
        return Outcome(text, [first], {"cap_hit": True, "forced": False})
    if ctx.on_text is not None and prefix != text:
        ctx.on_text(prefix[len(text) :])  # the close it forced, after the thinking sent
    second = await ctx.meter.call(
        alias, ctx.request_for(alias, item, sample, max_tokens=left, prefix=prefix), ctx.on_text
    )
    answer = prefix + second.generation.text
    # cap_hit: the answer ran into `budget` (the output tokens in all); `forced`: the thinking
    # was cut at think_budget and closed. (An answer cut at think_budget that then finished
    # well inside the budget read cap_hit.)
    capped = second.generation.finish_reason == "length"
    return Outcome(
        answer, [first, second], {"cap_hit": capped, "forced": forced},
        failed=second.generation.error,  # e.g. a chat endpoint cannot continue a prefix
    )  # fmt: skip


def _until_stop(text: str, stop: list[str]) -> str:
    """`text` up to the first of the `stop` strings in it."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(found)] if found else text


class _FirstCall:
    """The sink of the thinking call, which stops only at the thinking's close: once the answer
    shows it opens with <think>, its text is passed on as it comes; an answer that does not
    think is passed on up to its first stop string (held back while one could be forming), and
    ended there through `stop_early`, as its own stop strings would have ended it. An upstream's
    separate reasoning goes on as is. `sink` None: it only watches (a profile run)."""

    def __init__(self, sink: TextSink | None, stop: list[str], stop_early: StopEarly):
        self.sink = sink
        self.stop = [s for s in stop if s]
        self.stop_early = stop_early
        self.text = ""
        self.thinks: bool | None = None  # undecided until the answer's start shows it
        self.stopped = False  # an answer that does not think met its stop string
        self._emit: StopHoldback | None = None  # once decided, what passes the text on

    def __call__(self, piece: str) -> None:
        if isinstance(piece, Thought):
            if self.sink is not None:
                self.sink(piece)
            return
        self.text += piece
        self._send(final=False)

    def finish(self) -> None:
        self._send(final=True)

    def _send(self, final: bool) -> None:
        if self.thinks is None:
            start = self.text.lstrip()
            if not final and THINK_OPEN.startswith(start):
                return  # `<thi`: it may yet open the thinking
            self.thinks = start.startswith(THINK_OPEN)
            if self.sink is not None:
                self._emit = StopHoldback(self.sink, [] if self.thinks else self.stop)
        answer = self.text
        if not self.thinks:
            answer = _until_stop(self.text, self.stop)
            if answer != self.text and not self.stopped:
                self.stopped = True
                self.stop_early.set()
        if self._emit is not None:
            if final or self.stopped:
                self._emit.finish(answer)
            else:
                self._emit.update(answer)
