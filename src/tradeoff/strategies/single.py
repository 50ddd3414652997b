"""`single`: one sample from one model, the baseline every other strategy is compared with."""

from __future__ import annotations

from tradeoff.strategies.context import StrategyContext
from tradeoff.types import Item, Outcome


async def run_single(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    alias = ctx.config.model
    request = ctx.request_for(alias, item, sample)
    call = await ctx.meter.call(alias, request, ctx.on_text)
    return Outcome(output=call.generation.text, calls=[call])
