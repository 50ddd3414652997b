"""`single`: one sample from one model, the baseline every other strategy is compared with."""

from __future__ import annotations

from typing import ClassVar, Literal

from tradeoff.config import Config, MaxTokenses, StrategyParams, Temperatures
from tradeoff.strategies.context import StrategyContext
from tradeoff.types import Item, Outcome


class Params(StrategyParams):
    strategy: Literal["single"] = "single"
    model: str
    temperature: Temperatures | None = None
    max_tokens: MaxTokenses | None = None

    listable: ClassVar[tuple[str, ...]] = ("temperature", "max_tokens")
    streams: ClassVar[bool] = True

    def aliases(self) -> list[str]:
        return [self.model]

    def base_name(self, config: Config) -> str:
        return config.model


async def run(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    alias = ctx.config.model
    request = ctx.request_for(alias, item, sample)
    call = await ctx.meter.call(alias, request, ctx.on_text)
    return Outcome(output=call.generation.text, calls=[call])
