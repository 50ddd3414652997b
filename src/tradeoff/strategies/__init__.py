"""Inference strategies: programs over one or more engines that return an answer and every call.

A strategy is `async def run(ctx, item, sample) -> Outcome`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tradeoff.strategies.budget import run_budget
from tradeoff.strategies.cascade import run_cascade
from tradeoff.strategies.context import StrategyContext
from tradeoff.strategies.route import run_route
from tradeoff.strategies.single import run_single
from tradeoff.strategies.switch import run_switch
from tradeoff.strategies.vote import run_vote
from tradeoff.types import Item, Outcome

Strategy = Callable[[StrategyContext, Item, int], Awaitable[Outcome]]

STRATEGIES: dict[str, Strategy] = {
    "single": run_single,
    "vote": run_vote,
    "budget": run_budget,
    "cascade": run_cascade,
    "switch": run_switch,
    "route": run_route,
}

__all__ = ["STRATEGIES", "Strategy", "StrategyContext"]
