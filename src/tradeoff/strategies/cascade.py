"""`cascade`: the small model answers; a confidence signal decides whether to pay for the large.

Signals (an uncertainty u; escalate exactly when u > threshold):
- `logprob`: minus the mean log-probability of the small model's answer tokens (nats/token);
- `entropy`: the mean entropy of the distributions those tokens were drawn from (nats);
- `agreement`: 1 - the majority's share among `k` sampled answers of the small model.
An answer with no tokens has u = infinity (always escalates).
"""

from __future__ import annotations

import math
import time
from typing import ClassVar, Literal

from pydantic import model_validator

from tradeoff.config import (
    Config,
    Drawses,
    MaxTokenses,
    Num,
    Report,
    RunSpec,
    SmallLarge,
    StrategyParams,
    Temperatures,
)
from tradeoff.strategies.context import StrategyContext
from tradeoff.strategies.vote import majority
from tradeoff.tasks.scorers import after_thinking
from tradeoff.types import Call, Item, Outcome

DEFAULT_K = 3


class Params(StrategyParams):
    strategy: Literal["cascade"] = "cascade"
    models: SmallLarge
    temperature: Temperatures | None = None
    max_tokens: MaxTokenses | None = None
    signal: Literal["agreement", "logprob", "entropy"] = "logprob"
    k: Drawses = DEFAULT_K  # sampled answers, for `agreement`
    threshold: Num  # escalate when the uncertainty exceeds it
    # The large model's temperature, where `agreement` raised the draws' (set by `resolve`):
    # the large model answered at the draws' 0.7 too, not at the spec's temperature.
    large_temperature: Temperatures | None = None

    listable: ClassVar[tuple[str, ...]] = (
        "temperature", "max_tokens", "k", "threshold", "large_temperature",
    )  # fmt: skip
    reports: ClassVar[tuple[Report, ...]] = (
        Report(
            "escalated", "flag", "tradeoff_escalations_total",
            "cascade requests that escalated to the large model",
        ),
    )  # fmt: skip

    def aliases(self) -> list[str]:
        return list(self.models)

    @model_validator(mode="after")
    def _k_for_agreement(self) -> Params:
        """`k` counts the answers `agreement` samples; another signal takes one answer, and a k
        given with it would name configurations that run alike as different ones. (Its default
        is stored with every cascade, so only another value is refused.)"""
        if self.k != DEFAULT_K and self.signal != "agreement":
            raise ValueError(
                f"k counts the sampled answers of signal agreement; signal {self.signal} reads "
                "one answer: leave k out"
            )
        if self.large_temperature is not None and self.signal != "agreement":
            raise ValueError(
                f"large_temperature is the large model's where signal agreement samples the "
                f"small one; with signal {self.signal} both answer at temperature: leave it out"
            )
        ks = self.k if isinstance(self.k, list) else [self.k]
        if self.signal == "agreement" and any(k < 2 for k in ks):
            raise ValueError(
                f"k {min(ks)} samples fewer than two answers, which agree with themselves: give "
                "k of 2 or more for signal agreement (as vote takes n of 2 or more)"
            )
        return self

    def samples_several(self) -> bool:
        return self.signal == "agreement"

    def resolve(self, spec: RunSpec) -> Config:
        """With `agreement` the small model's answers are sampled, at 0.7 where the entry and
        spec give temperature 0; the large model's one answer keeps the temperature given."""
        if self.signal == "agreement" and self.large_temperature is None:
            given = self._given_temperature(spec)
            if self.sampling(spec.sampling).temperature != given:
                return self.model_copy(update={"large_temperature": given}).resolve(spec)
        return super().resolve(spec)

    def _given_temperature(self, spec: RunSpec) -> float:
        """The temperature the (expanded) entry and the spec give: the large model's, unless
        set apart."""
        given = self.model_dump(include={"temperature"}, exclude_none=True)
        return spec.sampling.model_copy(update=given).temperature

    def base_name(self, config: Config) -> str:
        small, large = config.aliases
        name = f"cascade-{small}-{large}-{self.signal}{self.threshold:g}"
        return name if self.k == DEFAULT_K else f"{name}-k{self.k}"  # k [2, 4]: told apart

    def derived_name(self, config: Config, spec: RunSpec) -> str:
        """A large temperature other than the one given is named (large_temperature [0, 0.5]
        were `X-t0.7` and `X-t0.7-2`), as the draws' temperature is."""
        name = super().derived_name(config, spec)
        t = self.large_temperature
        return name if t is None or t == self._given_temperature(spec) else f"{name}-large-t{t:g}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.inf


async def run(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    small, large = ctx.config.aliases
    signal, threshold = ctx.params["signal"], ctx.params["threshold"]
    calls: list[Call] = []
    answered_by: int | None = None  # the last call's, unless the small answers agreed on one
    if signal == "agreement":
        outputs, answers = [], []
        for draw in range(ctx.params["k"]):
            if draw and ctx.cancelled:  # (the first is drawn: a cancelled one, at once)
                break
            call = await ctx.meter.call(small, ctx.request_for(small, item, sample, draw))
            calls.append(call)
            outputs.append(call.generation.text)
            answers.append(
                None
                if call.generation.error
                else ctx.task.scorer.parse(after_thinking(outputs[-1]))
            )
        chosen, _, share = majority(outputs, answers)
        output, answered_by = outputs[chosen], chosen
        uncertainty = 1.0 - share
    else:
        call = await ctx.meter.call(small, ctx.request_for(small, item, sample, logprobs=True))
        calls.append(call)
        output = call.generation.text
        g = call.generation
        logprob = signal == "logprob"
        values = g.token_logprobs if logprob else g.token_entropies
        # None (a failed call, an empty answer, a server that sends no log-probabilities):
        # infinitely uncertain. (-_mean of none was -inf: such answers never escalated.)
        uncertainty = math.inf if not values else -_mean(values) if logprob else _mean(values)
        if math.isnan(uncertainty):  # a server's NaN log-probability tells nothing: as none
            uncertainty = math.inf
    escalated = uncertainty > threshold and not ctx.cancelled
    if escalated:
        given = ctx.params.get("large_temperature")
        overrides = {} if given is None else {"temperature": given}
        call = await ctx.meter.call(large, ctx.request_for(large, item, sample, **overrides))
        calls.append(call)
        output, answered_by = call.generation.text, None
    finite = uncertainty if math.isfinite(uncertainty) else None  # JSON has no infinity
    extra = {"signal": signal, "uncertainty": finite, "escalated": escalated}
    return Outcome(
        output=output, calls=calls, extra=extra, t_released=time.perf_counter(),
        answered_by=answered_by,
    )  # fmt: skip
