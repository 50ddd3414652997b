"""A profile run's work spread over a Ray cluster (`tradeoff profile --ray`, or `executor: {ray:
...}` in the spec).

The configurations are grouped by the models they use; each group gets `workers` Ray actors
(`ShardWorker`), each of which loads the group's models once, on a node with the resources
they ask for, meters the devices it uses, and runs shards of the group's work (a slice of its
(configuration, item, sample) keys). The driver loads no model: it hands shards out, at most two
in flight per actor, and writes each shard's records to the run store, whose only writer it is,
as the shard completes. The store's unique key makes a shard Ray retries after its worker died
harmless, and resume skips what is stored, as in a local run.

`tradeoff load` on Ray uses the same workers: each model group's load points are driven by its
first worker, one at a time, the groups side by side (`Pool.drive_point`).

Ray is imported only here, and only on Ray (`pip install 'tradeoff[ray]'`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from tradeoff.config import (
    NODE_RESOURCES,
    Config,
    Executor,
    RayExecutor,
    Resources,
    RunSpec,
    parse_spec,
)
from tradeoff.errors import RunFailed, UserError
from tradeoff.load.options import LoadOptions
from tradeoff.load.profiles import LoadPoint
from tradeoff.meters.conditions import HostSampler
from tradeoff.session import Session
from tradeoff.store import Store
from tradeoff.strategies.calls import CallMeter
from tradeoff.types import Record
from tradeoff.work import Plan, Work

RETRIES = 3  # Ray's own retries of a shard (and restarts of its actor) before the run fails
WAIT_NOTE_S = 30.0  # while workers get ready, a note this often on those that are not
IN_FLIGHT = 2  # shards handed to an actor at once: one running, one ready to start
# A Ray GCS answers `ray status` in about 1 s here, 3 s with every core busy; a port that has not
# answered as one in 10 s is not one (or one still starting: asked again, it answers).
PROBE_S = 10.0
SHARED_RAPL = (
    "RAPL measures the whole CPU package, which this Ray worker shares with other work on its "
    "node; give its model resources: {num_cpus: N} with N the node's CPUs to meter it"
)

Batch = list[tuple[Record, float]]
Group = tuple[str, ...]  # the model aliases a group's configurations use, sorted


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(
            "--ray needs Ray: pip install 'tradeoff[ray]' (or run without --ray)"
        ) from None
    return ray


def executor_of(spec: RunSpec, ray: str | None) -> RayExecutor | None:
    """Where the work runs: `--ray ADDRESS` over the spec's `executor: {ray: ...}`; `--ray off`
    (or neither) here, without Ray."""
    given = spec.executor.ray if spec.executor else None
    if ray is None:
        return given
    if ray == "off":
        return None
    return RayExecutor(address=ray, workers=given.workers if given else 1)


def as_run(spec: RunSpec, executor: RayExecutor | None) -> RunSpec:
    """The spec to store: its `executor` the one the run uses (`--ray` over the spec's), so that
    `--resume` goes on where the run began, whether Ray came from the spec or from `--ray`."""
    return spec.model_copy(update={"executor": Executor(ray=executor) if executor else None})


# --- what each model asks of a node ---------------------------------------------------------


def model_resources(spec: RunSpec, alias: str, ref: str) -> Resources:
    """What model `alias` (reference `ref`) asks of a Ray node: the spec's `resources` for it,
    else a torch model on CUDA one GPU, another in-process model (llama.cpp, torch on the CPU)
    one CPU (it runs as many threads as CPUs it is given), a model behind a server nothing (its
    worker waits on I/O)."""
    if alias in spec.resources:
        return spec.resources[alias]
    if ref.startswith("openai:"):
        return {}
    if ref.startswith("torch:") and "device=cpu" not in ref:
        return {"num_gpus": 1}
    return {"num_cpus": 1}


def group_resources(spec: RunSpec, configs: list[Config]) -> Resources:
    """A group's actor asks for the sum of what its models ask: the models its configurations
    use, a route's those its policy names (which need not be the spec's)."""
    refs = {alias: ref for config in configs for alias, ref in config.models.items()}
    total: dict[str, float] = {}
    for alias, ref in refs.items():
        for key, amount in model_resources(spec, alias, ref).items():
            total[key] = total.get(key, 0.0) + amount
    return total


def _actor_options(asked: Resources) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": asked.get("num_cpus", 0)}
    if asked.get("num_gpus"):
        options["num_gpus"] = asked["num_gpus"]
    if asked.get("memory"):
        options["memory"] = asked["memory"]
    custom = {k: v for k, v in asked.items() if k not in NODE_RESOURCES}
    if custom:
        options["resources"] = custom
    return options


def _bundle(asked: Resources) -> dict[str, float]:
    """What a worker asks of its node, in a placement group's keys (CPU, GPU, memory, custom)."""
    return {NODE_RESOURCES.get(k, k): float(v) for k, v in asked.items() if v}


@dataclass
class _Places:
    """Every worker's resources, reserved at once in one Ray placement group (SPREAD: over as
    many nodes as fit) before any worker starts. Ray places a group's bundles together, the
    largest first, so that workers asking one CPU each cannot take one CPU of each node while a
    worker asking two waits forever for a node they left no room on (seen on a cluster of two
    2-CPU nodes, where actors placed one by one raced). A worker that asks nothing (a model
    behind a server) needs no place and is only spread."""

    group: Any  # ray.util.placement_group.PlacementGroup, or None when no worker asks anything
    index: dict[tuple[int, int], int]  # (model group, worker) -> its bundle

    @classmethod
    def reserve(cls, asks: list[Resources], workers: int) -> _Places:
        """Places for `workers` workers of each model group, `asks` what each group's ask."""
        from ray.util.placement_group import placement_group

        keys = [(g, w) for g in range(len(asks)) for w in range(workers)]
        asking = [(key, _bundle(asks[key[0]])) for key in keys if _bundle(asks[key[0]])]
        if not asking:
            return cls(None, {})
        group = placement_group([bundle for _, bundle in asking], strategy="SPREAD")
        return cls(group, {key: i for i, (key, _) in enumerate(asking)})

    def strategy(self, group: int, worker: int) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = self.index.get((group, worker))
        if bundle is None:
            return "SPREAD"
        return PlacementGroupSchedulingStrategy(
            placement_group=self.group, placement_group_bundle_index=bundle
        )

    def release(self) -> None:
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):  # the cluster gone already: nothing to free
                remove_placement_group(self.group)
            self.group = None


def _describe(resources: Resources | dict[str, float]) -> str:
    """Resources as a person reads them: memory in GB, and without the ones Ray gives every node
    itself (`node:IP`, `node:__internal_head__`, the object store), which no spec asks for."""
    shown = {
        NODE_RESOURCES.get(k, k): v
        for k, v in resources.items()
        if v and not k.startswith("node:") and k != "object_store_memory"
    }
    return (
        ", ".join(
            f"memory {v / 1e9:.3g} GB" if k == "memory" else f"{k} {v:g}"
            for k, v in sorted(shown.items())
        )
        or "nothing"
    )


def check_resources(
    spec: RunSpec,
    groups: dict[Group, list[Config]],
    nodes: list[dict[str, float]],
    workers: int = 1,
) -> None:
    """Refuse, before any model loads, a group of models no node of the cluster can hold, and
    workers that together ask more than the whole cluster has (they start together or not at
    all)."""
    shown = "; ".join(_describe(n) for n in nodes)
    for group, configs in groups.items():
        asked = group_resources(spec, configs)
        if any(
            all(n.get(NODE_RESOURCES.get(k, k), 0.0) >= v for k, v in asked.items()) for n in nodes
        ):
            continue
        who = f"model '{group[0]}'" if len(group) == 1 else f"models {', '.join(group)} together"
        raise UserError(
            f"{who} ask(s) for {_describe(asked)}, which no node of the Ray cluster has "
            f"({len(nodes)} node(s): {shown}); add such a node, or change `resources:` in the spec"
        )
    total: dict[str, float] = {}
    for configs in groups.values():
        for key, amount in _bundle(group_resources(spec, configs)).items():
            total[key] = total.get(key, 0.0) + amount * workers
    if any(amount > sum(n.get(key, 0.0) for n in nodes) for key, amount in total.items()):
        fewer = "give fewer workers (executor: {ray: {workers: N}}), " if workers > 1 else ""
        raise UserError(
            f"the {len(groups) * workers} Ray worker(s) ({workers} per model group) ask for "
            f"{_describe(total)} in all, more than the Ray cluster has ({len(nodes)} node(s): "
            f"{shown}); {fewer}ask less of each (`resources:` of the models in the spec, e.g. "
            "num_cpus: 0.5), or add nodes"
        )


def groups_of(configs: list[Config]) -> dict[Group, list[Config]]:
    """Configurations by the models they use: one group's actors load those models once."""
    groups: dict[Group, list[Config]] = {}
    for config in configs:
        groups.setdefault(tuple(sorted(config.aliases)), []).append(config)
    return groups


# --- the worker -----------------------------------------------------------------------------


class ShardWorker:
    """A Ray actor: one group's models, loaded, warmed and metered on first use, and shards run.
    A restarted actor (its process died) sets them up again on its first shard."""

    def __init__(self, spec_data: dict[str, Any], api_key: str | None, group: Group):
        # A terminal's Ctrl-C reaches every process of its group, the workers of `--ray local`
        # included: the driver alone decides what a Ctrl-C stops (the shards in flight finish).
        with contextlib.suppress(ValueError):  # not the main thread: Ray delivers none there
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.spec_data = spec_data
        self.api_key = api_key
        self.group = group
        self.plan: Plan | None = None
        self.node: dict[str, Any] = {}
        self.account: Any = None
        self.engines: dict[str, Any] = {}
        self.setup: asyncio.Lock | None = None
        self.slots: asyncio.Semaphore | None = None
        self.stopping = _Stopping()

    async def _plan(self) -> Plan:
        self.setup = self.setup or asyncio.Lock()
        async with self.setup:
            if self.plan is None:
                self.plan = await self._open()
        return self.plan

    async def _open(self) -> Plan:
        import ray

        from tradeoff.config import resolve_configs
        from tradeoff.engines.llamacpp import THREADS_ENV
        from tradeoff.meters.energy import find_energy_meter
        from tradeoff.meters.hardware import local_peaks
        from tradeoff.meters.host import host_info
        from tradeoff.session import gpu_uuids, open_account, open_engines, warm_engines
        from tradeoff.work import load_tasks

        spec = parse_spec(self.spec_data)
        configs = [c for c in resolve_configs(spec) if tuple(sorted(c.aliases)) == self.group]
        context = ray.get_runtime_context()
        cpus = context.get_assigned_resources().get("CPU", 0.0)
        os.environ[THREADS_ENV] = str(max(1, int(cpus)))  # llama.cpp: the CPUs Ray gave it
        peaks = local_peaks()  # this node's; a broken calibration file stops it before a load
        self.engines = await open_engines(configs, timeout_s=spec.timeout_s, api_key=self.api_key)
        await warm_engines(self.engines, configs)
        gpus = gpu_uuids(self.engines)
        energy, missing = find_energy_meter(gpu_uuids=gpus)
        if energy is not None and not gpus and cpus < _node_cpus(ray, context.get_node_id()):
            energy, missing = None, SHARED_RAPL
        self.account = open_account(energy, lambda _msg: None)
        meter = CallMeter(
            self.engines, energy, missing, peaks=peaks, account=self.account, defer_settle=True
        )
        self.node = {
            "node_id": context.get_node_id(),
            **host_info(),
            "models": list(self.group),
            "energy": energy.source if energy is not None else None,
            "energy_missing": missing or None,
            "idle_w": self.account.idle_w if self.account is not None else None,
        }
        self.slots = asyncio.Semaphore(spec.concurrency)
        return Plan(spec, configs, load_tasks(spec), meter)

    async def ready(self) -> dict[str, Any]:
        """Load, warm and meter the models; what this worker runs on (its node, its meter)."""
        await self._plan()
        return self.node

    async def run(self, shard: list[Work]) -> Batch:
        plan = await self._plan()
        assert self.slots is not None

        async def one(work: Work) -> tuple[Record, float]:
            assert self.slots is not None
            async with self.slots:
                return await plan.run(work)

        return list(await asyncio.gather(*(one(w) for w in shard)))

    async def drive_point(
        self, config_id: str, point: LoadPoint, options: LoadOptions
    ) -> tuple[list[Record], str, dict[str, Any]]:
        """`tradeoff load` on Ray: drive one configuration at one load point here, as
        `load.run` does locally; its records, how it ended, and its progress counts."""
        from tradeoff.load.driver import PointDriver, PointProgress

        # Before the models are set up (a restarted worker's first point): a stop that comes
        # meanwhile is this point's (made after, it lost the stop and drove the point whole).
        self.stopping = stopping = _Stopping()
        plan = await self._plan()
        records: list[Record] = []

        class Collect:
            async def write(self, record: Record) -> None:
                records.append(record)

        progress = PointProgress(point.label, options.max_requests, options.max_seconds)
        config = plan.configs[config_id]
        driver = PointDriver(
            plan, config, point, options, Collect(), stopping, progress, lambda p: None
        )
        await driver.run()
        counts = {"sent": progress.sent, "done": progress.done, "errors": progress.errors,
                  "elapsed_s": progress.elapsed_s, "unsent": progress.unsent}  # fmt: skip
        return records, driver.status, counts

    async def stop_point(self) -> None:
        """Ctrl-C at the driver: the point being driven sends nothing more."""
        self.stopping.requested = True

    async def finish(self) -> dict[str, Any]:
        """Close the meter and the models; this worker's node and meter summary."""
        summary: dict[str, Any] = {}
        if self.account is not None:
            self.account.close()
            summary = self.account.summary()
        for engine in self.engines.values():
            await engine.aclose()
        return {**self.node, "meter": summary}


@dataclass
class _Stopping:
    requested: bool = False


def _node_cpus(ray: Any, node_id: str) -> float:
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return float(node["Resources"].get("CPU", 0.0))
    return 0.0


# --- the driver -----------------------------------------------------------------------------


def connect(address: str, stopped: Callable[[], bool] = lambda: False) -> None:
    """Join the cluster at `address` ('auto': the one `ray start` began on this machine;
    'local': a new one here, for this run), before any model is loaded or anything stored: an
    address where no cluster answers is one line, in seconds (Ray itself would retry for
    minutes); a Ctrl-C meanwhile (`stopped()`) is a KeyboardInterrupt. A process connected
    already (a library caller's own ray.init) stays where it is: `address` must be that
    cluster's, the one the run is told and stored to be on, or 'auto' (a spec's usual address,
    which worked there before addresses were checked)."""
    ray = _import_ray()
    if ray.is_initialized():
        joined = ray.get_runtime_context().gcs_address
        if address not in (joined, "auto"):
            raise UserError(
                f"Ray address {address!r}: this process is connected to the Ray cluster at "
                f"{joined} already (ray.init was called); give {joined!r} (or auto) to run "
                "there, or call ray.shutdown() first"
            )
        return
    host, _, port = address.rpartition(":")
    scheme = address.partition("://")[0] if "://" in address else None
    if address not in ("auto", "local") and (scheme not in (None, "ray") or not port.isdigit()):
        raise UserError(
            f"Ray address {address!r}: not a cluster's address; give auto (the cluster `ray "
            "start` began on this machine), local (a new one for this run), HOST:PORT or "
            "ray://HOST:PORT (to run on this machine alone: --ray off, or no executor: in the spec)"
        )
    if address not in ("auto", "local") and "://" not in address:
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3.0).close()
        except OSError as exc:
            raise UserError(
                f"Ray address {address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
                "start one with `ray start --head`, or give --ray local for one on this machine"
            ) from None
        _check_gcs(address, stopped)
    if address == "auto":  # the cluster `ray start` recorded here may have stopped since
        _check_gcs(address, stopped)
    try:
        ray.init(
            address=address,  # "local": always a new cluster (None would join one running here)
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=False,
        )
    except ConnectionError as exc:
        if address in ("auto", "local") or "://" in address:
            raise UserError(
                f"Ray address {address!r}: no Ray cluster there ({exc}); start one with `ray start "
                "--head`, or give --ray local for one on this machine"
            ) from None
        raise UserError(  # the port answered (checked above), but not as a cluster Ray joins
            f"Ray address {address!r}: a server answers there but Ray could not join it as a "
            f"cluster ({exc}); give the address `ray start --head` printed, and check that this "
            "machine's Ray matches the cluster's (its version, and RAY_AUTH_TOKEN where the "
            "cluster requires a token)"
        ) from None
    except ValueError as exc:  # an address Ray cannot parse, e.g. a scheme it does not know
        raise UserError(
            f"Ray address {address!r}: {exc}; give auto, local, HOST:PORT or ray://HOST:PORT"
        ) from None


def _check_gcs(address: str, stopped: Callable[[], bool]) -> None:
    """Refuse HOST:PORT, a port something listens on, unless a Ray cluster's GCS answers there.

    Ray's own client, given a port that is not a GCS (a web server, say), retries for minutes
    inside its C++ code, logging each try, where neither Ctrl-C nor SIGTERM reaches it: ray.init
    cannot be given a deadline. So the question goes first to `ray status --address` (Ray's
    documented CLI; `ray.scripts.scripts` is what the `ray` command runs, here run by this
    interpreter, so with this Ray) in a process of its own, killed after PROBE_S or at a Ctrl-C
    (`stopped()`), its output kept. It connects as ray.init does: the same GCS client, the
    environment's token and TLS settings, and a check that the cluster's Ray version is this
    one; it exits 0 once the GCS has answered. For 'auto' (the address `ray start` recorded
    on this machine, which outlives a cluster stopped without `ray stop`) only the deadline is
    this check's: where `ray status` fails at once (no cluster recorded), ray.init says why."""
    command = [sys.executable, "-m", "ray.scripts.scripts", "status", "--address", address]
    deadline = time.monotonic() + PROBE_S
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,  # a terminal's Ctrl-C is this process's to handle
    ) as probe:  # fmt: skip
        try:
            while True:
                try:
                    _, said = probe.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if stopped():  # Ctrl-C: nothing started yet, nothing to finish
                        raise KeyboardInterrupt from None
                    if time.monotonic() > deadline:
                        where = (
                            "at the address `ray start` recorded on this machine: that cluster "
                            "may have stopped without `ray stop`"
                            if address == "auto"
                            else "though a server listens on that port"
                        )
                        raise UserError(
                            f"Ray address {address!r}: no Ray cluster answers there (no Ray GCS "
                            f"answered in {PROBE_S:g} s, {where}); "
                            "give auto (with `ray start --head` run on this machine), local (a "
                            "new cluster here, for this run), or the HOST:PORT of the head's GCS "
                            "(the address `ray start --head` prints)"
                        ) from None
        finally:
            probe.kill()  # nothing once it has exited
    if probe.returncode != 0 and address != "auto":
        lines = [line.strip() for line in said.splitlines() if line.strip()]
        raise UserError(
            f"Ray address {address!r}: `ray status` there failed "
            f"({lines[-1] if lines else f'exit code {probe.returncode}'}); give the address `ray "
            "start --head` printed, and check that this machine's Ray matches the cluster's"
        )


def _unwrap(ray: Any, exc: BaseException) -> BaseException:
    """The error a worker raised (a UserError for a bad model, say), out of Ray's wrapper."""
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc


@dataclass
class Pool:
    """The actors of a Ray run: `workers` per model group."""

    ray: Any
    actors: dict[Group, list[Any]]
    config_ids: dict[Group, set[str]]
    places: _Places | None = None
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        spec: RunSpec,
        configs: list[Config],
        executor: RayExecutor,
        api_key: str | None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> Pool:
        ray = _import_ray()
        connect(executor.address, stopped)
        groups = groups_of(configs)
        alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        check_resources(spec, groups, alive, executor.workers)
        remote = ray.remote(ShardWorker)
        spec_data = spec.model_dump(mode="json")
        asks = [group_resources(spec, cs) for cs in groups.values()]
        places = _Places.reserve(asks, executor.workers)
        actors = {
            group: [
                remote.options(
                    **_actor_options(asks[g]),
                    max_restarts=RETRIES,
                    max_task_retries=RETRIES,
                    max_concurrency=IN_FLIGHT + 2,
                    scheduling_strategy=places.strategy(g, w),
                ).remote(spec_data, api_key, group)
                for w in range(executor.workers)
            ]
            for g, group in enumerate(groups)
        }
        config_ids = {g: {c.config_id for c in cs} for g, cs in groups.items()}
        return cls(ray, actors, config_ids, places=places)

    @property
    def size(self) -> int:
        return sum(len(a) for a in self.actors.values())

    async def ready(
        self, notify: Callable[[str], None], stopped: Callable[[], bool]
    ) -> list[dict[str, Any]]:
        """Wait until every actor has its models loaded, saying every WAIT_NOTE_S which are not
        yet (none starts until the cluster has room for all of them: a node added, or work of
        another job finished); the nodes they run on."""
        refs = {a.ready.remote(): group for group, actors in self.actors.items() for a in actors}
        waiting, clock = dict(refs), asyncio.get_running_loop().time
        begun = noted = clock()
        wait = functools.partial(self.ray.wait, num_returns=1, timeout=1.0)
        while waiting:
            if stopped():  # Ctrl-C while they load: nothing stored yet, nothing to finish
                raise KeyboardInterrupt
            done, _ = await asyncio.to_thread(wait, list(waiting))
            for ref in done:  # a worker's error (a bad model, say) stops the run at once
                group = waiting.pop(ref)
                self._result(
                    ref, group,
                    f"died while loading its models, {RETRIES + 1} times",
                    "perhaps out of memory (ask for what they need: resources: {memory: "
                    "BYTES}); the run did not begin",
                )  # fmt: skip
            if waiting and clock() - noted >= WAIT_NOTE_S:
                noted = clock()
                late = sorted({", ".join(g) for g in waiting.values()})
                notify(
                    f"{len(waiting)} worker(s) not ready after {noted - begun:.0f} s (models "
                    f"{'; '.join(late)}): loading, or waiting until the cluster has room for "
                    "every worker at once"
                )
        if stopped():  # Ctrl-C as the last of them got ready: the run has not begun
            raise KeyboardInterrupt
        self.nodes = [self.ray.get(ref) for ref in refs]
        return self.nodes

    async def run(
        self,
        work: list[Work],
        shard_size: int,
        stopped: Callable[[], bool],
        emit_batch: Callable[[Batch], None],
    ) -> None:
        """Hand each group's work out to its actors in shards, at most IN_FLIGHT per actor, and
        emit each shard's records as it completes. Once `stopped()`, hand out nothing more and
        wait for the shards in flight."""
        queues: dict[Any, list[list[Work]]] = {}
        for group, config_ids in self.config_ids.items():
            mine = [w for w in work if w[0] in config_ids]
            shards = [mine[i : i + shard_size] for i in range(0, len(mine), shard_size)]
            queues[group] = shards[::-1]  # popped from the end: in order
        pending: dict[Any, Any] = {}  # object ref -> (group, actor)

        def hand_out(group: Group, actor: Any) -> None:
            if queues[group] and not stopped():
                pending[actor.run.remote(queues[group].pop())] = (group, actor)

        for group, actors in self.actors.items():
            for _ in range(IN_FLIGHT):
                for actor in actors:
                    hand_out(group, actor)
        while pending:
            ready = await asyncio.to_thread(self._completed, list(pending))
            for ref in ready:
                group, actor = pending.pop(ref)
                then = "what completed is stored: --resume continues"
                emit_batch(self._result(ref, group, f"was lost {RETRIES + 1} times", then))
                hand_out(group, actor)

    async def drive_point(
        self, config: Config, point: LoadPoint, options: LoadOptions, stopped: Callable[[], bool]
    ) -> tuple[list[Record], str, dict[str, Any]]:
        """`tradeoff load` on Ray: one load point of `config`, driven by the first worker of its
        model group (the others of a group, if any, stay idle: one point per group at a time);
        once `stopped()`, the worker is told to send nothing more, and told again as long as it
        drives (a worker that died with the stop is restarted, and drives the point again)."""
        group = next(g for g, ids in self.config_ids.items() if config.config_id in ids)
        worker = self.actors[group][0]
        ref = worker.drive_point.remote(config.config_id, point, options)
        try:
            while not (await asyncio.to_thread(self.ray.wait, [ref], timeout=0.2))[0]:
                if stopped():
                    worker.stop_point.remote()
        except asyncio.CancelledError:  # another group failed: the run ends
            worker.stop_point.remote()
            raise
        result: tuple[list[Record], str, dict[str, Any]] = self._result(
            ref, group, f"was lost driving {config.name} @ {point.label}",
            "--resume measures that point again",
        )  # fmt: skip
        return result

    def _result(self, ref: Any, group: Group, lost: str, then: str) -> Any:
        """What a worker's call returned; the worker's own error (a bad model, say) as it raised
        it; its process or node lost (for good, Ray's restarts spent), one line: the worker for
        `group` `lost` (how), `then` (what now)."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            raise _unwrap(self.ray, exc) from None
        except self.ray.exceptions.RayError as exc:
            raise RunFailed(
                f"the Ray worker for {', '.join(group)} {lost} ({type(exc).__name__}); {then}"
            ) from None

    def _completed(self, pending: list[Any]) -> list[Any]:
        """The shards completed: at least one, within 0.2 s, and every other done by then, so
        that what completed together is handled in one turn (and stored in one transaction)."""
        ready, rest = self.ray.wait(pending, num_returns=1, timeout=0.2)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return list(ready)

    async def finish(self) -> list[dict[str, Any]]:
        """Each actor's node and meter summary (what could be collected), then the actors gone."""
        refs = [a.finish.remote() for group in self.actors.values() for a in group]
        done: list[dict[str, Any]] = []
        for ref in refs:
            try:
                done.append(await asyncio.wait_for(asyncio.wrap_future(ref.future()), 30.0))
            except Exception:  # a worker that died at the end: its summary is missing
                continue
        self.kill()
        return done

    def kill(self) -> None:
        for group in self.actors.values():
            for actor in group:
                self.ray.kill(actor)
        if self.places is not None:
            self.places.release()


# --- the session ----------------------------------------------------------------------------


@dataclass
class RaySession(Session):
    pool: Pool | None = None


def shard_size(spec: RunSpec) -> int:
    """Requests per shard: a worker's concurrency (so that, with IN_FLIGHT shards, it always has
    work), at least 4 and at most 64 (what a lost worker costs to redo)."""
    return min(64, max(4, spec.concurrency))


@asynccontextmanager
async def open_ray_session(
    spec: RunSpec,
    configs: list[Config],
    open_store: Callable[[], Store],
    executor: RayExecutor,
    *,
    api_key: str | None,
    notify: Callable[[str], None],
    stopped: Callable[[], bool],
) -> AsyncIterator[RaySession]:
    """`session.open_session` for a Ray run: the actors (models loaded and metered on the
    workers, none on the driver), then the store, with every worker's node in its host
    description, and each worker's meter (idle baseline, totals) in the session's summary.
    Ray is left at the end only where this run joined it: a library caller's own connection
    (and its cluster, its actors) is the caller's to end."""
    ray = _import_ray()
    theirs = ray.is_initialized()
    try:
        pool = Pool.start(spec, configs, executor, api_key, stopped)
    except BaseException:  # (an abort, a library call's second Ctrl-C, may come in ray.init)
        if not theirs:  # a cluster begun for this run stops with it: its processes ran on
            _leave(ray)
        raise
    try:
        notify(
            f"Ray ({executor.address}): starting {pool.size} worker(s), "
            f"{executor.workers} per model group; loading the models on them ..."
        )
        nodes = await pool.ready(notify, stopped)
        hosts = {n["node_id"] for n in nodes}
        notify(f"{pool.size} worker(s) ready on {len(hosts)} node(s)")
        store = open_store()
        try:
            store.add_configs([(c.config_id, c.name, c.content()) for c in configs])
            store.add_nodes([_host_of(n) for n in nodes])
            started = store.begin_session()
            meter = CallMeter({}, None, "metered on the Ray workers")
            session = RaySession({}, store, meter, None, started, pool=pool)
            workers: list[dict[str, Any]] = []
            # A cluster started for this run is on this machine: its conditions are the run's
            # (the cluster's processes are this one's children, so not counted as others)
            here = executor.address == "local"
            host = HostSampler(store.add_host_samples).start() if here else None
            try:
                yield session
                workers = await pool.finish()
            finally:
                summary: dict[str, Any] = {"ray_workers": workers}
                if host is not None:
                    summary["host_conditions"] = host.stop()
                store.add_meter_summary(started, summary)
                store.end_session(started, session.status)
        finally:
            store.close()
    finally:
        pool.kill()
        if not theirs:
            _leave(ray)


def _leave(ray: Any) -> None:
    """Leave the cluster now (one started for this run, `local`, stops with it), a Ctrl-C held
    off meanwhile (a second or two). Left to Ray's exit handler, a Ctrl-C then interrupted it
    with a traceback and left the local cluster's processes running."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to hold off
        ray.shutdown()
        return
    try:
        ray.shutdown()
    finally:
        signal.signal(signal.SIGINT, previous)


_WORKER_KEYS = ("models", "energy", "energy_missing", "idle_w")


def _host_of(node: dict[str, Any]) -> dict[str, Any]:
    """A worker's description without what belongs to the worker rather than its node."""
    return {k: v for k, v in node.items() if k not in _WORKER_KEYS}
