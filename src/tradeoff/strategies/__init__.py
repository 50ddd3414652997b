"""Inference strategies: programs over one or more engines that return an answer and every call.

A strategy is `async def run(ctx, item, sample) -> Outcome`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tradeoff.strategies.context import StrategyContext
from tradeoff.strategies.single import run_single
from tradeoff.types import Item, Outcome

Strategy = Callable[[StrategyContext, Item, int], Awaitable[Outcome]]

STRATEGIES: dict[str, Strategy] = {"single": run_single}

__all__ = ["STRATEGIES", "Strategy", "StrategyContext"]
