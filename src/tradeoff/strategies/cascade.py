"""`cascade`: the small model answers; a confidence signal decides whether to pay for the large.

Signals (an uncertainty u; escalate exactly when u > threshold):
- `logprob`: minus the mean log-probability of the small model's answer tokens (nats/token);
- `entropy`: the mean entropy of the distributions those tokens were drawn from (nats);
- `agreement`: 1 - the majority's share among `k` sampled answers of the small model.
An answer with no tokens has u = infinity (always escalates).
"""

from __future__ import annotations

import math

from tradeoff.strategies.context import StrategyContext
from tradeoff.strategies.vote import majority
from tradeoff.types import Call, Item, Outcome


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.inf


async def run_cascade(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    small, large = ctx.config.aliases
    signal, threshold = ctx.params["signal"], ctx.params["threshold"]
    calls: list[Call] = []
    if signal == "agreement":
        outputs, answers = [], []
        for draw in range(ctx.params["k"]):
            call = await ctx.meter.call(small, ctx.request_for(small, item, sample, draw))
            calls.append(call)
            outputs.append(call.generation.text)
            answers.append(None if call.generation.error else ctx.task.scorer.parse(outputs[-1]))
        output, _, share = majority(outputs, answers)
        uncertainty = 1.0 - share
    else:
        call = await ctx.meter.call(small, ctx.request_for(small, item, sample, logprobs=True))
        calls.append(call)
        output = call.generation.text
        g = call.generation
        logprob = signal == "logprob"
        uncertainty = -_mean(g.token_logprobs) if logprob else _mean(g.token_entropies)
    escalated = uncertainty > threshold
    if escalated:
        call = await ctx.meter.call(large, ctx.request_for(large, item, sample))
        calls.append(call)
        output = call.generation.text
    finite = uncertainty if math.isfinite(uncertainty) else None  # JSON has no infinity
    extra = {"signal": signal, "uncertainty": finite, "escalated": escalated}
    return Outcome(output=output, calls=calls, extra=extra)
