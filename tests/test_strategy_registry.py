"""A strategy is one unit: its params model and its `run`, made known by one `register` line.
Here a toy strategy written in this test module is profiled from a YAML spec on the real
bundled model, with list expansion, derived names, bounds and batch sizes from its params."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar, Literal

import pytest

from tradeoff.config import Config, PositiveInts, StrategyParams, load_spec, resolve_configs
from tradeoff.errors import UserError
from tradeoff.runner import profile
from tradeoff.session import batch_sizes
from tradeoff.store import Store
from tradeoff.strategies import STRATEGIES, params_adapter, register
from tradeoff.strategies.context import StrategyContext
from tradeoff.types import Item, Outcome


class Twice(StrategyParams):
    """Ask the model twice with `cap` output tokens each; answer with the longer answer."""

    strategy: Literal["twice"] = "twice"
    model: str
    cap: PositiveInts = 2

    listable: ClassVar[tuple[str, ...]] = ("cap",)

    def aliases(self) -> list[str]:
        return [self.model]

    def base_name(self, config: Config) -> str:
        return f"twice{self.cap}-{config.model}"

    @classmethod
    def batch_sizes(cls, config: Config, alias: str) -> set[int]:
        return {2}


async def run_twice(ctx: StrategyContext, item: Item, sample: int) -> Outcome:
    alias = ctx.config.model
    cap = ctx.params["cap"]
    calls = [
        await ctx.meter.call(alias, ctx.request_for(alias, item, sample, draw, max_tokens=cap))
        for draw in range(2)
    ]
    answer = max((c.generation.text for c in calls), key=len)
    return Outcome(answer, calls, {"lengths": [c.generation.output_tokens for c in calls]})


@pytest.fixture
def twice() -> Iterator[None]:
    register(Twice, run_twice)
    yield
    STRATEGIES.pop("twice")
    params_adapter.cache_clear()


SPEC = """\
models: {small: smollm2-135m}
tasks: [arith]
limit: 2
sampling: {max_tokens: 8}
configs:
  - {strategy: twice, model: small, cap: [1, 3]}
"""


def test_an_unregistered_strategy_is_refused_naming_the_known_ones(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    with pytest.raises(UserError) as exc:
        load_spec(path)
    assert "'twice' is not a strategy" in str(exc.value) and "'switch'" in str(exc.value)


def test_a_toy_strategy_registered_in_one_line_is_profiled_from_yaml(tmp_path, twice):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    spec = load_spec(path)
    configs = resolve_configs(spec)
    assert [c.name for c in configs] == ["twice1-small", "twice3-small"]
    assert [c.params for c in configs] == [{"cap": 1}, {"cap": 3}]
    assert batch_sizes(configs, "small") == [1, 2]
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("cap: [1, 3]", "cap: 0"))
    with pytest.raises(UserError, match=r"strategy 'twice': cap must be at least 1"):
        load_spec(bad)
    bad.write_text(SPEC.replace("cap: [1, 3]", "cap: 1, n: 3"))
    with pytest.raises(UserError, match="strategy 'twice' takes no n; it takes: cap, model"):
        load_spec(bad)

    result = profile(spec, tmp_path / "run", notify=lambda m: None)
    assert (result.status, result.done, result.errors) == ("finished", 4, 0)
    store = Store.open(tmp_path / "run")
    try:
        records = store.records()
        stored = store.run()["spec"]
    finally:
        store.close()
    assert sorted(records["config"]) == ["twice1-small"] * 2 + ["twice3-small"] * 2
    for config, calls, extra in zip(records["config"], records["calls"], records["extra"]):
        cap = int(config[len("twice")])
        assert [c["model"] for c in json.loads(calls)] == ["small", "small"]  # both are its cost
        assert all(n <= cap for n in json.loads(extra)["lengths"])
    assert stored["configs"] == [{"strategy": "twice", "model": "small", "cap": [1, 3]}]
