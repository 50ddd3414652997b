"""`vote`: self-consistency. Draw `n` answers at temperature > 0 and keep the majority of the
answers the task's scorer parses; `adaptive` stops once the remaining draws cannot change the
majority. On an engine that batches (torch), a non-adaptive vote draws all `n` answers as one
batch."""

from __future__ import annotations

import time
from collections import Counter
from typing import ClassVar, Literal

from pydantic import model_validator

from tradeoff.config import (
    Config,
    Drawses,
    MaxTokenses,
    RunSpec,
    StrategyParams,
    Temperatures,
)
from tradeoff.strategies.context import StrategyContext
from tradeoff.tasks.scorers import after_thinking
from tradeoff.types import Call, Item, Outcome


class Params(StrategyParams):
    strategy: Literal["vote"] = "vote"
    model: str
    temperature: Temperatures | None = None  # default: the spec's, or 0.7 where that is 0
    max_tokens: MaxTokenses | None = None
    n: Drawses = 5  # answers drawn
    adaptive: bool = False  # stop once the leader can no longer be overtaken

    listable: ClassVar[tuple[str, ...]] = ("temperature", "max_tokens", "n")
    names_temperature: ClassVar[bool] = False  # the vote's own temperature

    def aliases(self) -> list[str]:
        return [self.model]

    @model_validator(mode="after")
    def _several(self) -> Params:
        """A vote of one answer is `single` at a temperature: under another name, it would be
        taken for a vote."""
        for n in self.n if isinstance(self.n, list) else [self.n]:
            if n < 2:  # (a bound of 1 said "at least 1" for 0, then 1 was refused too)
                raise ValueError(
                    f"n {n} draws {'one answer' if n == 1 else 'no answers'}, no vote: give n "
                    "of 2 or more" + (", or use single" if n == 1 else "")
                )
        return self

    def samples_several(self) -> bool:
        return True

    def base_name(self, config: Config) -> str:
        return f"vote-n{self.n}{'a' if self.adaptive else ''}-{config.model}"

    def derived_name(self, config: Config, spec: RunSpec) -> str:
        """A temperature other than the vote's default is named (votes at 0.3 and 0.9 were
        `vote-n5-m` and `vote-n5-m-2`, and `compare` paired them across runs by name)."""
        name = super().derived_name(config, spec)
        default = self.model_copy(update={"temperature": None}).sampling(spec.sampling)
        t = config.sampling.temperature
        return name if t == default.temperature else f"{name}-t{t:g}"

    @classmethod
    def batch_sizes(cls, config: Config, alias: str) -> set[int]:
        """A vote that is not adaptive draws its `n` answers as one batch."""
        if alias == config.model and not config.params["adaptive"]:
            return {int(config.params["n"])}
        return set()


def decided(counts: Counter[str], remaining: int) -> bool:
    """True when the remaining draws cannot change the majority (`majority`'s rule: the most
    answers, a tie to the answer seen first; `counts` in the order answers were first seen): no
    other answer can overtake the leader, nor tie it having been seen before it. (A tie with an
    answer seen after it, or not yet seen, is the leader's: that draw was spared.)"""
    if not counts:
        return False
    best = max(counts.values())
    order = list(counts)
    leader = next(a for a in order if counts[a] == best)
    for answer in order:
        if answer == leader:
            continue
        reach = counts[answer] + remaining
        if reach > best or (reach == best and order.index(answer) < order.index(leader)):
            return False
    return remaining <= best  # an answer not seen yet ties at most, and is seen after


def majority(outputs: list[str], answers: list[str | None]) -> tuple[int, str | None, float]:
    """(the index of an output carrying the majority answer, that answer, its share of all
    the answers).

    An answer the scorer cannot read agrees with none: one readable answer of four is a share
    of 1/4, not the 1/1 that would make a cascade's `agreement` sure of a model that mostly
    wrote nothing usable. Ties go to the answer reached first; with no parsed answer at all,
    the first output."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0, None, 0.0
    best = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == best)
    return answers.index(winner), winner, best / len(answers)


async def run(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    n, adaptive = ctx.params["n"], ctx.params["adaptive"]
    alias = ctx.config.model
    calls: list[Call] = []
    outputs: list[str] = []
    answers: list[str | None] = []
    counts: Counter[str] = Counter()
    batched = not adaptive and ctx.meter.batches(alias)
    if batched:  # all draws as one batch (torch engine): one prompt, n rows
        requests = [ctx.request_for(alias, item, sample, draw) for draw in range(n)]
        drawn = iter(await ctx.meter.call_batch(alias, requests))
    for draw in range(n):
        if draw and ctx.cancelled and not batched:  # (the first is drawn: cancelled, at once;
            break  # a batch's draws all ran)
        call = (
            next(drawn)
            if batched
            else await ctx.meter.call(alias, ctx.request_for(alias, item, sample, draw))
        )
        calls.append(call)
        text = call.generation.text
        answer = None if call.generation.error else ctx.task.scorer.parse(after_thinking(text))
        outputs.append(text)
        answers.append(answer)
        if answer is not None:
            counts[answer] += 1
        if adaptive and decided(counts, n - draw - 1):
            break
    chosen, winner, share = majority(outputs, answers)
    extra = {"samples_drawn": len(calls), "answers": answers, "majority": winner, "share": share}
    return Outcome(
        output=outputs[chosen], calls=calls, extra=extra, t_released=time.perf_counter(),
        answered_by=chosen,
    )  # fmt: skip
