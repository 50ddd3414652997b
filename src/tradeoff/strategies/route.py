"""`route`: a fitted policy picks, per query, which of its configurations answers; that
configuration's strategy then runs as it would alone, and its calls are this record's cost."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from tradeoff.config import Config, policy_configs
from tradeoff.policy.features import prompt_text
from tradeoff.policy.fit import Policy
from tradeoff.strategies.context import StrategyContext
from tradeoff.types import Item, Outcome


@cache
def _load(path: str) -> tuple[Policy, dict[str, Config]]:
    return Policy.load(path), {c.name: c for c in policy_configs(path)}


async def run_route(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    from tradeoff.strategies import STRATEGIES

    policy, configs = _load(ctx.params["policy"])
    chosen = policy.choose([prompt_text(item.prompt)], [item.task])[0]
    sub = configs[chosen]
    outcome = await STRATEGIES[sub.strategy](replace(ctx, config=sub), item, sample)
    outcome.extra = {**outcome.extra, "routed_to": chosen}
    return outcome
