"""Inference strategies: programs over one or more engines that return an answer and every call.

A strategy is one module: its parameters (a `tradeoff.config.StrategyParams` subclass tagged by
`strategy: Literal[NAME]`) beside `async def run(ctx, item, sample) -> Outcome`. It becomes
usable in specs, profiles and the server by one `register` line below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from tradeoff.config import Config, StrategyParams
from tradeoff.strategies import budget, cascade, route, single, switch, vote
from tradeoff.strategies.context import StrategyContext
from tradeoff.types import Item, Outcome

Run = Callable[[StrategyContext, Item, int], Awaitable[Outcome]]


@dataclass(frozen=True)
class Strategy:
    name: str
    params: type[StrategyParams]
    run: Run


STRATEGIES: dict[str, Strategy] = {}


def register(params: type[StrategyParams], run: Run) -> Strategy:
    """Make a strategy known by the name its params are tagged with."""
    name = params.model_fields["strategy"].default
    if not isinstance(name, str):
        raise TypeError(f"{params.__name__}.strategy needs a default: its Literal name")
    STRATEGIES[name] = Strategy(name, params, run)
    params_adapter.cache_clear()
    return STRATEGIES[name]


def choices(config: Config) -> list[Config]:
    """The configurations a query to `config` may run as: itself, or a route's policy's."""
    return STRATEGIES[config.strategy].params.choices(config)


@cache
def params_adapter() -> TypeAdapter[list[StrategyParams]]:
    """Validates `configs:` entries as the union of the registered strategies' params."""
    members = tuple(s.params for s in STRATEGIES.values())
    union = Union.__getitem__(members)  # known only at run time: registration is open
    entry: Any = Annotated[union, Field(discriminator="strategy")]
    return TypeAdapter(list[entry])


register(single.Params, single.run)
register(vote.Params, vote.run)
register(budget.Params, budget.run)
register(cascade.Params, cascade.run)
register(switch.Params, switch.run)
register(route.Params, route.run)

__all__ = ["STRATEGIES", "Strategy", "StrategyContext", "choices", "params_adapter", "register"]
