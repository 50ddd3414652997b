"""The runner: configurations x items x samples, scheduled with bounded concurrency, each record
written the moment it completes, resumable, and stopped cleanly by Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradeoff.config import Config, RunSpec, parse_spec, resolve_configs, with_absolute_paths
from tradeoff.engines import open_engine
from tradeoff.engines.base import Engine
from tradeoff.errors import UserError
from tradeoff.meters.account import EnergyAccount
from tradeoff.meters.energy import EnergyMeter, find_energy_meter
from tradeoff.meters.hardware import local_peaks
from tradeoff.meters.host import host_info
from tradeoff.meters.memory import peak_rss_bytes
from tradeoff.store import Store
from tradeoff.strategies import STRATEGIES, StrategyContext
from tradeoff.strategies.calls import CallMeter
from tradeoff.tasks import Task, load_task
from tradeoff.types import Call, Item, Outcome, Record

# Seconds of idle power measured before the first request when the energy counter is NVML's.
IDLE_S = 2.0


@dataclass
class RunResult:
    directory: Path
    status: str  # "finished", "stopped"
    done: int  # records written in this session
    skipped: int  # records already stored (resume)
    errors: int  # records with an error written in this session
    wall_s: float
    engine_s: float  # time inside engine calls, summed over this session's records
    configs: list[Config] = field(default_factory=list)


@dataclass
class _Work:
    config: Config
    task: Task
    item: Item
    sample: int


def load_tasks(spec: RunSpec) -> list[Task]:
    return [
        load_task(
            t.ref,
            seed=spec.sampling.seed,
            prompt_field=t.prompt_field,
            answer_field=t.answer_field,
            id_field=t.id_field,
            scorer=t.scorer,
            pattern=t.pattern,
        )
        for t in spec.tasks
    ]


def _items(task: Task, limit: int | None) -> list[Item]:
    return task.items[:limit] if limit else task.items


def _build_record(
    work: _Work, outcome: Outcome, t0: float, t1: float, prices: dict[str, Any]
) -> Record:
    error = outcome.error
    scorer = work.task.scorer
    return outcome_record(
        work.config.config_id,
        work.task.name,
        work.item.id,
        work.sample,
        outcome,
        t0,
        t1,
        prices,
        score=0.0 if error else scorer.score(outcome.output, work.item),
        parsed=None if error else scorer.parse(outcome.output),
    )


def energy_fields(calls: list[Call]) -> tuple[float | None, str | None, str | None]:
    """A record's energy from its calls': their sum, the source, or the first call's reason
    for missing it."""
    missing = next((c.energy_missing for c in calls if c.energy_j is None), None)
    if missing is not None or not calls:
        return None, None, missing
    return sum(c.energy_j or 0.0 for c in calls), calls[0].energy_source, None


def outcome_record(
    config_id: str,
    task: str,
    item_id: str,
    sample: int,
    outcome: Outcome,
    t0: float,
    t1: float,
    prices: dict[str, Any],
    *,
    score: float | None,
    parsed: str | None,
) -> Record:
    """The record of one outcome: its calls' tokens, latencies, energy, FLOPs and cost summed.
    `t0` and `t1` (perf_counter) bound the whole strategy call."""
    calls = outcome.calls
    gens = [c.generation for c in calls]
    if outcome.t_first is not None:
        firsts = [outcome.t_first]
        decode_s = t1 - outcome.t_first
        decode_tokens = max(sum(g.output_tokens for g in gens) - 1, 0)
    else:
        firsts = [g.t_first for g in gens if g.t_first is not None]
        decode_s = sum(g.t_end - g.t_first for g in gens if g.t_first is not None)
        decode_tokens = sum(max(g.output_tokens - 1, 0) for g in gens if g.t_first is not None)
    itls = [g.itl_s for g in gens if g.itl_s is not None]
    energy_j, energy_source, missing = energy_fields(calls)
    flops = [c.flops for c in calls]
    cost = 0.0
    priced = bool(calls)
    for c in calls:
        price = prices.get(c.model)
        if price is None:
            priced = False
            continue
        g = c.generation
        if g.input_tokens is None:
            priced = False
            continue
        cost += price.input * g.input_tokens / 1e6 + price.output * g.output_tokens / 1e6
        if price.per_hour is not None:
            cost += price.per_hour * g.e2e_s / 3600
    return Record(
        config_id=config_id,
        task=task,
        item_id=item_id,
        sample=sample,
        output=outcome.output,
        score=score,
        parsed=parsed,
        error=outcome.error,
        input_tokens=(
            None
            if any(g.input_tokens is None for g in gens)
            else sum(g.input_tokens or 0 for g in gens)
        ),
        output_tokens=sum(g.output_tokens for g in gens),
        ttft_s=(min(firsts) - t0) if firsts else None,
        e2e_s=t1 - t0,
        itl_s=sum(itls) / len(itls) if itls else None,
        decode_tps=decode_tokens / decode_s if decode_s > 0 and decode_tokens else None,
        energy_j=energy_j,
        energy_source=energy_source,
        energy_missing=missing,
        flops=None if any(f is None for f in flops) or not calls else sum(f or 0.0 for f in flops),
        peak_rss_bytes=peak_rss_bytes(),
        cost_usd=cost if priced else None,
        calls=[c.summary() for c in calls],
        extra=outcome.extra,
    )


class _Stop:
    """First Ctrl-C (or SIGTERM): finish what is in flight, start nothing new. Second: abort.

    A plain signal handler, not the event loop's: in-process engines may run inline on the
    loop's thread, and the flag must be seen between requests without the loop turning.
    """

    def __init__(self, notify: Callable[[str], None]):
        self.requested = False
        self.notify = notify
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.notify("aborting now; requests in flight are lost")
            os._exit(130)  # records written so far are committed; in-flight ones are lost
        self.requested = True
        self.notify("stopping: finishing requests in flight (Ctrl-C again to abort)")

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: the caller handles it
                self._previous[sig] = signal.signal(sig, self)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


async def open_engines(
    configs: list[Config], *, timeout_s: float, api_key: str | None
) -> dict[str, Engine]:
    """One engine per model alias the configurations use (a route configuration brings the
    models of its policy), with the configurations' `model_options`. Raises UserError for an
    unknown model or an alias used twice."""
    refs: dict[str, str] = {}
    extra_body: dict[str, Any] = {}
    for c in configs:
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
                ref, api_key=api_key, timeout_s=timeout_s, extra_body=extra_body.get(alias)
            )
        for c in configs:
            if c.strategy == "switch":
                for alias in c.aliases:
                    if not engines[alias].info.in_process:
                        raise UserError(
                            f"configuration '{c.name}': switch needs in-process models "
                            f"(a bundled name, gguf:PATH or torch:...); '{alias}' is {refs[alias]}"
                        )
    except BaseException:
        for engine in engines.values():
            await engine.aclose()
        raise
    return engines


async def warm_engines(
    engines: dict[str, Engine],
    configs: list[Config],
    notify: Callable[[str], None] | None = None,
) -> None:
    """Engines that build per-batch-size state (the torch engine's KV cache, compiled and
    captured decode step) build it now, on the thread their requests will run on, so that no
    request's time includes it."""
    for alias, engine in engines.items():
        warm = getattr(engine, "warm", None)
        if warm is not None:
            sizes = _batch_sizes(configs, alias)
            if notify:
                notify(f"preparing {alias} (batch {', '.join(map(str, sizes))}) ...")
            t0 = time.perf_counter()
            await engine.run_sync(lambda w=warm, b=sizes: w(b))  # type: ignore[attr-defined]
            if notify:
                notify(f"{alias} ready in {time.perf_counter() - t0:.1f} s")


def _batch_sizes(configs: list[Config], alias: str) -> list[int]:
    """The batch sizes the configurations will ask of model `alias`: 1, and `n` for each
    non-adaptive vote (drawn as one batch)."""
    sizes = {1}
    for c in configs:
        if c.strategy == "vote" and c.model == alias and not c.params.get("adaptive"):
            sizes.add(int(c.params["n"]))
    return sorted(sizes)


async def _execute(
    spec: RunSpec,
    open_store: Callable[[], Store],
    *,
    api_key: str | None,
    on_progress: Callable[[int, int, int, int], None] | None,
    notify: Callable[[str], None],
) -> RunResult:
    configs = resolve_configs(spec)
    tasks = load_tasks(spec)
    engines = await open_engines(configs, timeout_s=spec.timeout_s, api_key=api_key)
    try:
        store = open_store()
    except BaseException:
        for engine in engines.values():
            await engine.aclose()
        raise
    store.add_configs([(c.config_id, c.name, c.content()) for c in configs])
    for task in tasks:
        store.add_items(_items(task, spec.limit))

    done_keys = store.done_keys()
    work: list[_Work] = []
    skipped = 0
    for config in configs:
        for task in tasks:
            for item in _items(task, spec.limit):
                for sample in range(spec.samples):
                    if (config.config_id, task.name, item.id, sample) in done_keys:
                        skipped += 1
                    else:
                        work.append(_Work(config, task, item, sample))

    started = store.begin_session()
    status = "failed"
    result = RunResult(store.directory, status, 0, skipped, 0, 0.0, 0.0, configs)
    t_begin = time.perf_counter()
    stop = _Stop(notify)
    if all(e.info.in_process for e in engines.values()):
        for engine in engines.values():
            if hasattr(engine, "inline"):
                engine.inline = True
    account = None
    try:
        await warm_engines(engines, configs, notify)
        energy, energy_missing = find_energy_meter(gpu_uuids=gpu_uuids(engines))
        account = open_account(energy, notify)
        meter = CallMeter(engines, energy, energy_missing, peaks=local_peaks(), account=account)
        contexts = {
            (c.config_id, t.name): StrategyContext(config=c, task=t, meter=meter)
            for c in configs
            for t in tasks
        }
        queue: Iterator[_Work] = iter(work)
        total = len(work)
        if on_progress:
            on_progress(0, total, skipped, 0)
        stop.install()

        async def worker() -> None:
            for w in queue:
                if stop.requested:
                    return
                ctx = contexts[(w.config.config_id, w.task.name)]
                strategy = STRATEGIES[w.config.strategy]
                t0 = time.perf_counter()
                outcome = await strategy(ctx, w.item, w.sample)
                t1 = time.perf_counter()
                record = _build_record(w, outcome, t0, t1, spec.prices)
                store.write_record(record)
                result.done += 1
                result.engine_s += sum(c.generation.e2e_s for c in outcome.calls)
                if record.error:
                    result.errors += 1
                if on_progress:
                    on_progress(result.done, total, skipped, result.errors)

        await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, max(total, 1)))))
        status = "stopped" if stop.requested and result.done < total else "finished"
    finally:
        stop.uninstall()
        if account is not None:
            account.close()
            store.add_meter_summary(started, account.summary())
        for engine in engines.values():
            await engine.aclose()
        result.wall_s = time.perf_counter() - t_begin
        result.status = status
        store.end_session(started, status)
    return result


def gpu_uuids(engines: dict[str, Engine]) -> list[str]:
    """The GPUs the in-process models run on (torch engines on CUDA)."""
    found = (getattr(e, "gpu_uuid", None) for e in engines.values() if e.info.in_process)
    return sorted({u for u in found if u})


def open_account(energy: EnergyMeter | None, notify: Callable[[str], None]) -> EnergyAccount | None:
    """For a stepped counter (NVML), the account that splits it among requests, opened after a
    measurement of the idle baseline; None for a fine-grained counter or none."""
    if energy is None or not getattr(energy, "stepped", False):
        return None
    notify(f"measuring the idle baseline ({energy.source}, {IDLE_S:g} s)")
    account = EnergyAccount(energy, idle_s=IDLE_S).open()  # type: ignore[arg-type]
    notify(f"idle baseline: {account.idle_w:.1f} W (reported apart, not subtracted)")
    return account


def profile(
    spec: RunSpec,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    api_key: str | None = None,
    on_progress: Callable[[int, int, int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunResult:
    """Profile every configuration of `spec` on its tasks, writing records to a run directory.

    With `resume`, the run directory's stored spec is used and stored records are skipped.
    """
    say = notify or (lambda msg: print(msg, file=sys.stderr))
    opened: list[Store] = []
    if resume is not None:
        existing = Store.open(resume)
        opened.append(existing)
        stored = existing.run()["spec"]
        if isinstance(stored, dict) and ("imported_from" in stored or "serve" in stored):
            existing.close()
            what = "imported outcomes" if "imported_from" in stored else "served traffic"
            raise UserError(f"{resume} holds {what}, not a profile run: nothing to resume")
        spec = parse_spec(stored, f"{resume} (stored spec)")

        def open_store() -> Store:
            return existing

    else:
        if out is None:
            raise ValueError("profile needs `out` or `resume`")
        Store.ensure_free(out)
        spec = with_absolute_paths(spec)

        def open_store() -> Store:
            # Created only once every model is loaded, so a bad model leaves no directory behind.
            opened.append(Store.create(out, spec.model_dump(mode="json"), host_info()))
            return opened[-1]

    try:
        return asyncio.run(
            _execute(spec, open_store, api_key=api_key, on_progress=on_progress, notify=say)
        )
    finally:
        for store in opened:
            store.close()
