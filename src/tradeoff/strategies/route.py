"""`route`: a fitted policy picks, per query, which of its configurations answers; that
configuration's strategy then runs as it would alone. The record's cost is its calls' and the
decision's own: its wall time (`extra.decision_s`, within the record's e2e latency) and its energy
where the session's counter meters it (`extra.decision_j`, within the record's energy; else
`extra.decision_energy_missing` says why; `CallMeter.measure`)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from tradeoff.config import Config, Report, StrategyParams, policy_configs, with_id
from tradeoff.errors import UserError
from tradeoff.paths import user_path
from tradeoff.strategies.context import StrategyContext
from tradeoff.types import CANCELLED, Item, Outcome

if TYPE_CHECKING:
    from tradeoff.policy.fit import Policy


class Params(StrategyParams):
    strategy: Literal["route"] = "route"
    policy: str  # a policy file from `tradeoff policy fit`

    streams: ClassVar[bool] = True  # when the configuration it picks streams
    reports: ClassVar[tuple[Report, ...]] = (
        Report(
            "routed_to", "label", "tradeoff_routes_total",
            "route requests, by the configuration the policy chose", label="route",
        ),
        Report(
            "decision_s", "seconds", "tradeoff_route_decision_seconds",
            "wall time of the policy's decision per route request (s)",
        ),
        Report(
            "decision_j", "count", "tradeoff_route_decision_joules_total",
            "energy of the policy's decisions, where metered (J; within tradeoff_energy_joules)",
        ),
        Report(
            "decision_energy_missing", "label", "tradeoff_route_decisions_unmetered_total",
            "route requests whose decision's energy was not measured, by why", label="reason",
        ),
    )  # fmt: skip
    names_max_tokens: ClassVar[bool] = False
    names_temperature: ClassVar[bool] = False

    def resolve(self, spec: Any = None) -> Config:
        """The models come from the policy's configurations, not from the spec; the spec's
        `model_options` for them are the route's own, over those the policy's configurations
        carry (its engines are opened with them first)."""
        path = str(user_path(self.policy).resolve())
        subs = policy_configs(path)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        models: dict[str, str] = {}
        for sub in subs:
            for alias, ref in sub.models.items():
                if models.setdefault(alias, ref) != ref:
                    raise UserError(f"policy {path}: alias '{alias}' names two different models")
        return with_id(
            Config(
                config_id="",
                name="",
                strategy="route",
                models=models,
                model=subs[0].model,
                sampling=subs[0].sampling,
                # the file's content too: a policy fitted again to the same path is another
                # configuration, which `--resume` refuses to mix with the first one's records
                params={"policy": path, "configs": [s.name for s in subs], "policy_sha256": digest},
                model_options={
                    a: spec.model_options[a].model_dump()
                    for a in models
                    if spec is not None and a in spec.model_options
                },
            )
        )

    def base_name(self, config: Config) -> str:
        return f"route-{Path(config.params['policy']).stem}"

    @classmethod
    def choices(cls, config: Config) -> list[Config]:
        return list(_load(config.params["policy"])[1].values())

    @classmethod
    def prepare(cls, config: Config) -> None:
        """Load the policy (and any model it holds), and decide once on an empty query, so that
        neither the load nor a first call's one-time costs fall in a request."""
        policy, _ = _load(config.params["policy"])
        policy.choose([""], [""])


@cache
def _load(path: str) -> tuple[Policy, dict[str, Config]]:
    """The policy in `path` and its configurations by name, loaded once per process."""
    from tradeoff.policy.fit import Policy  # with pandas: only once a policy is used

    return Policy.load(path), {c.name: c for c in policy_configs(path)}


async def run(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    from tradeoff.policy.features import prompt_text
    from tradeoff.strategies import STRATEGIES

    policy, configs = _load(ctx.params["policy"])
    text = prompt_text(item.prompt)
    decision = await ctx.meter.measure(lambda: policy.choose([text], [item.task])[0], ctx.cancel)
    if decision is None:  # its client left while it waited for the engines: nothing decided
        return Outcome(output="", calls=[], extra={"exception": CANCELLED})
    sub = configs[decision.value]
    outcome = await STRATEGIES[sub.strategy].run(replace(ctx, config=sub), item, sample)
    cost: dict[str, float | str | None] = {"decision_s": decision.seconds}
    if decision.energy_j is not None:
        cost["decision_j"] = decision.energy_j
    else:
        cost["decision_energy_missing"] = decision.energy_missing
    outcome.extra = {**outcome.extra, "routed_to": decision.value, **cost}
    return outcome
