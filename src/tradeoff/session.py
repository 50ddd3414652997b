"""A session: what profiling, serving and the demo need open while they run, opened in one order
and closed in the reverse. The engines (loaded, then warmed where their requests will run), the
run store's session, the energy meter (and, for a stepped counter, its account and idle
baseline), the sampler of the host's conditions, and the `CallMeter` every strategy calls
through."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tradeoff.config import Config
from tradeoff.engines import open_engine
from tradeoff.engines.base import Engine, InProcessEngine
from tradeoff.errors import UserError
from tradeoff.meters.account import EnergyAccount
from tradeoff.meters.conditions import HostSampler
from tradeoff.meters.energy import EnergyMeter, find_energy_meter
from tradeoff.meters.hardware import local_peaks
from tradeoff.store import Store
from tradeoff.strategies import STRATEGIES, choices
from tradeoff.strategies.calls import CallMeter

# Seconds of idle power measured before the first request when the energy counter is NVML's.
IDLE_S = 2.0

Notify = Callable[[str], None]


@dataclass
class Session:
    engines: dict[str, Engine]
    store: Store
    meter: CallMeter
    account: EnergyAccount | None
    started: float  # the store session's start (time.time())
    # How the session ended, stored with it: "finished", "stopped", or "failed" (an exception).
    status: str = "failed"


async def open_engines(
    configs: list[Config], *, timeout_s: float, api_key: str | None, check: bool = True
) -> dict[str, Engine]:
    """One engine per model alias the configurations use (a route configuration brings the
    models of its policy), with the configurations' `model_options`. Raises UserError for an
    unknown model, an alias used twice, or `switch` on a model behind a server."""
    refs: dict[str, str] = {}
    extra_body: dict[str, Any] = {}
    # A route's policy's configurations carry their models' options; the route's own (its
    # spec's), first, replace them.
    routed = [c for config in configs for c in choices(config)]
    for c in [*configs, *routed]:
        for alias, ref in c.models.items():
            if refs.setdefault(alias, ref) != ref:
                raise UserError(
                    f"model alias '{alias}' names both {refs[alias]} and {ref}; rename one"
                )
            body = c.model_options.get(alias, {}).get("extra_body")
            if body and alias not in extra_body:
                extra_body[alias] = body
    engines: dict[str, Engine] = {}
    try:
        for alias, ref in refs.items():
            engines[alias] = await open_engine(
                ref,
                api_key=api_key,
                timeout_s=timeout_s,
                extra_body=extra_body.get(alias),
                check=check,
            )
        for c in [*configs, *routed]:
            if c.strategy == "switch":
                for alias in c.aliases:
                    if not isinstance(engines[alias], InProcessEngine):
                        raise UserError(
                            f"configuration '{c.name}': switch needs in-process models "
                            f"(a bundled name, gguf:PATH or torch:...); '{alias}' is {refs[alias]}"
                        )
            remote = engines[c.model]
            chat = remote.info.prompt_mode == "chat" and not isinstance(remote, InProcessEngine)
            if c.strategy == "budget" and c.params.get("think_budget") is not None and chat:
                # every answer that thinks past think_budget failed, at its continuation
                raise UserError(
                    f"configuration '{c.name}': think_budget continues the answer after the "
                    f"thinking it cuts, which a chat endpoint cannot; '{c.model}' is "
                    f"{refs[c.model]}: use {refs[c.model]}@completion (the completions endpoint, "
                    "which continues a text), or leave think_budget out"
                )
    except BaseException:
        for engine in engines.values():
            await engine.aclose()
        raise
    return engines


def batch_sizes(configs: list[Config], alias: str) -> list[int]:
    """The batch sizes the configurations will ask of model `alias` (1, and those their
    strategies declare, e.g. a vote's `n` drawn as one batch)."""
    sizes = {1}
    for config in configs:  # a route's: those of the configurations it may run as
        for c in choices(config):
            sizes |= STRATEGIES[c.strategy].params.batch_sizes(c, alias)
    return sorted(sizes)


def _cancel_asked() -> Callable[[], bool]:
    """Whether the running task was asked to cancel (asyncio.run's Ctrl-C cancels the main task,
    which an inline warm-up, holding the loop, would hear of only once done). Python 3.10's
    asyncio.run raises KeyboardInterrupt in the warm-up itself: never asked there."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return lambda: cancelling is not None and cancelling() > 0


async def warm_engines(
    engines: dict[str, Engine], configs: list[Config], notify: Notify | None = None
) -> None:
    """In-process engines build their per-batch-size state (the torch engine's KV caches,
    compiled and captured decode steps) now, on the thread their requests will run on, and the
    strategies load what they need beside the models (a route's policy), so that no request's
    time includes it."""
    for alias, engine in engines.items():
        if not isinstance(engine, InProcessEngine):
            continue
        sizes = batch_sizes(configs, alias)
        say = notify if notify and engine.warm_takes_time else None
        if say:
            say(f"preparing {alias} (batch {', '.join(map(str, sizes))}) ...")
        t0 = time.perf_counter()
        await engine.run_sync(functools.partial(engine.warm, sizes, _cancel_asked()))
        # An inline warm-up holds the loop: a Ctrl-C meanwhile cancelled the run's task, which
        # hears of it at its next await. Here, before the next model or the store: a run that
        # never began left a run directory to resume.
        await asyncio.sleep(0)
        if say:
            say(f"{alias} ready in {time.perf_counter() - t0:.1f} s")
    for config in configs:
        STRATEGIES[config.strategy].params.prepare(config)
    await asyncio.sleep(0)  # (as above: a route's policy may take a while to load)


def gpu_uuids(engines: dict[str, Engine]) -> list[str]:
    """The GPUs the in-process models run on (torch engines on CUDA)."""
    found = (e.gpu_uuid for e in engines.values() if isinstance(e, InProcessEngine))
    return sorted({u for u in found if u})


def open_account(energy: EnergyMeter | None, notify: Notify) -> EnergyAccount | None:
    """For a stepped counter (NVML), the account that splits it among requests, opened after a
    measurement of the idle baseline; None for a fine-grained counter or none."""
    if energy is None or not energy.stepped:
        return None
    notify(f"measuring the idle baseline ({energy.source}, {IDLE_S:g} s)")
    account = EnergyAccount(energy, idle_s=IDLE_S).open()
    notify(f"idle baseline: {account.idle_w:.1f} W (reported apart, not subtracted)")
    return account


@asynccontextmanager
async def open_session(
    configs: list[Config],
    open_store: Callable[[], Store],
    *,
    timeout_s: float,
    api_key: str | None,
    notify: Notify,
    inline: bool = False,
) -> AsyncIterator[Session]:
    """Open everything a run of `configs` needs, yield it, close it in reverse.

    `open_store` is called once the models are loaded and warm, so that a bad model (or a bad
    calibration file, read before they load) leaves no run directory behind; the session closes
    the store. `inline`: run in-process models on the event loop's thread when every model is in
    process (nothing else needs the loop while they compute). Calls do not wait for a stepped
    counter's next step: their energy settles after the answer (`CallMeter.settle_calls`).
    Set `Session.status` before leaving; it is stored as the session's end.
    """
    peaks = local_peaks()  # a broken calibration file stops the run before a model loads
    engines = await open_engines(configs, timeout_s=timeout_s, api_key=api_key)
    try:
        in_process = [e for e in engines.values() if isinstance(e, InProcessEngine)]
        if inline and len(in_process) == len(engines):
            for model in in_process:
                model.inline = True
        await warm_engines(engines, configs, notify)
        store = open_store()
        try:
            store.add_configs([(c.config_id, c.name, c.content()) for c in configs])
            started = store.begin_session()
            gpus = gpu_uuids(engines)
            host = HostSampler(store.add_host_samples, gpus).start()
            session: Session | None = None
            meters: dict[str, Any] = {}
            try:
                energy, energy_missing = find_energy_meter(gpu_uuids=gpus)
                account = open_account(energy, notify)
                try:
                    meter = CallMeter(
                        engines,
                        energy,
                        energy_missing,
                        peaks=peaks,
                        account=account,
                        defer_settle=True,
                    )
                    session = Session(engines, store, meter, account, started)
                    yield session
                finally:
                    if account is not None:
                        account.close()
                        meters = account.summary()
            finally:
                conditions = host.stop()
                try:  # best effort: a store that cannot be written (a full disk) has said so
                    store.add_meter_summary(started, {**meters, "host_conditions": conditions})
                    store.end_session(started, session.status if session else "failed")
                except sqlite3.Error as exc:
                    notify(f"could not record the session's end in {store.directory}: {exc}")
        finally:
            store.close()
    finally:
        for engine in engines.values():
            await engine.aclose()
