"""A profile run's work spread over a Ray cluster (`tradeoff profile --ray auto|ADDRESS`).

One Ray actor per configuration loads that configuration's models once and runs shards of its
work (a slice of its items and samples); each shard's records come back to the driver, the run
store's only writer, as the shard completes. The store's unique key (configuration, item,
sample) makes a retried shard harmless, and resume skips what is stored, as in a local run.
Ray is imported only here, and only with --ray (`pip install 'tradeoff[ray]'`).

First step of issue 15: the driver still opens the models itself (the session checks them);
workers do not meter energy yet (their records say so); one actor per configuration.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from tradeoff.config import Config, RunSpec
from tradeoff.errors import UserError
from tradeoff.types import Record
from tradeoff.work import Plan, Work

SHARD = 4  # requests per shard: small, so that a lost worker costs little to redo
RETRIES = 3  # Ray's own retries of a shard (and restarts of its actor) before the run fails
NOT_METERED = "not metered on a Ray worker yet (issue 15)"

Batch = list[tuple[Record, float]]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(
            "--ray needs Ray: pip install 'tradeoff[ray]' (or run without --ray)"
        ) from None
    return ray


def resources_of(config: Config) -> dict[str, float]:
    """What a configuration's actor asks of a node: a model on the GPU one GPU, an in-process
    CPU model one CPU, models behind servers nothing beyond a fraction of a CPU (I/O bound)."""
    refs = list(config.models.values())
    if any(ref.startswith("torch:") and "device=cpu" not in ref for ref in refs):
        return {"num_cpus": 1, "num_gpus": 1}
    if all(ref.startswith("openai:") for ref in refs):
        return {"num_cpus": 0.25}
    return {"num_cpus": 1}


class ShardWorker:
    """A Ray actor: the models of some configurations, loaded on first use, and shards run."""

    def __init__(self, spec_data: dict[str, Any], api_key: str | None, config_ids: list[str]):
        self.spec_data = spec_data
        self.api_key = api_key
        self.config_ids = config_ids
        self.plan: Plan | None = None
        self.ready: asyncio.Lock | None = None

    async def _plan(self) -> Plan:
        from tradeoff.config import parse_spec, resolve_configs
        from tradeoff.session import open_engines, warm_engines
        from tradeoff.strategies.calls import CallMeter
        from tradeoff.work import load_tasks

        self.ready = self.ready or asyncio.Lock()
        async with self.ready:
            if self.plan is None:
                spec = parse_spec(self.spec_data)
                configs = [c for c in resolve_configs(spec) if c.config_id in self.config_ids]
                engines = await open_engines(
                    configs, timeout_s=spec.timeout_s, api_key=self.api_key, check=False
                )
                await warm_engines(engines, configs)
                meter = CallMeter(engines, None, NOT_METERED)
                self.plan = Plan(spec, configs, load_tasks(spec), meter)
        return self.plan

    async def run(self, shard: list[Work]) -> Batch:
        plan = await self._plan()
        return list(await asyncio.gather(*(plan.run(w) for w in shard)))


def connect(address: str) -> None:
    """Join the cluster at `address` ('auto': the one `ray start` began on this machine;
    'local': a new one here, for this run), before any model is loaded or anything stored: an
    address where no cluster answers is one line (Ray itself would retry for minutes)."""
    ray = _import_ray()
    if ray.is_initialized():
        return
    host, _, port = address.rpartition(":")
    if address not in ("auto", "local") and "://" not in address and port.isdigit():
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3.0).close()
        except OSError as exc:
            raise UserError(
                f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                "one with `ray start --head`, or give --ray local for one on this machine"
            ) from None
    try:
        ray.init(
            address=None if address == "local" else address,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=False,
        )
    except ConnectionError as exc:
        raise UserError(
            f"--ray {address}: no Ray cluster there ({exc}); start one with `ray start --head`, "
            "or give --ray local for one on this machine"
        ) from None


def _check_resources(ray: Any, configs: list[Config]) -> None:
    """Refuse, before any work, a configuration that no node can place."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for config in configs:
        asked = resources_of(config)
        keys = {"num_cpus": "CPU", "num_gpus": "GPU"}
        if not any(all(node.get(keys[k], 0.0) >= v for k, v in asked.items()) for node in nodes):
            wants = ", ".join(f"{keys[k]} {v:g}" for k, v in asked.items())
            raise UserError(
                f"configuration '{config.name}' asks for {wants}, which no node of the Ray "
                f"cluster has ({len(nodes)} node(s)); add such a node or run without --ray"
            )


async def run_on_ray(
    plan: Plan,
    spec: RunSpec,
    address: str,
    api_key: str | None,
    work: list[Work],
    stopped: Callable[[], bool],
    emit_batch: Callable[[Batch], None],
) -> int:
    """Run `work` on the cluster at `address`; records to `emit_batch` as shards complete.
    Returns the number of actors used. Once `stopped()`, shards not yet done are cancelled."""
    ray = _import_ray()
    connect(address)
    configs = list(plan.configs.values())
    _check_resources(ray, configs)
    spec_data = spec.model_dump(mode="json")
    actor = ray.remote(ShardWorker)
    actors = {
        c.config_id: actor.options(
            **resources_of(c),
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
            max_concurrency=max(1, spec.concurrency),
        ).remote(spec_data, api_key, [c.config_id])
        for c in configs
    }
    pending: dict[Any, list[Work]] = {}
    for config_id, handle in actors.items():
        mine = [w for w in work if w[0] == config_id]
        for i in range(0, len(mine), SHARD):
            shard = mine[i : i + SHARD]
            pending[handle.run.remote(shard)] = shard
    try:
        while pending:
            if stopped():
                for ref in pending:
                    ray.cancel(ref)
                break
            ready, _ = await asyncio.to_thread(ray.wait, list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                del pending[ref]
                emit_batch(ray.get(ref))
    finally:
        for handle in actors.values():
            ray.kill(handle)
    return len(actors)
