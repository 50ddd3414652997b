"""`tradeoff load`: each configuration driven at each load point of a profile, every request a
record that carries its load point, phase, scheduled and actual send times and queue delay.

A configuration is driven as a whole (a cascade's or a route's sub-calls hit their models as
they would in serving). In-process models (llama.cpp, torch) answer one request at a time: the
others wait inside the model's call, so their wait shows in their latencies. Load points that
ended are skipped by `--resume`; one that was cut short is measured again from its start. A
point is driven by `tradeoff.load.driver`, from several processes when its pace needs them
(`tradeoff.load.spread`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradeoff import eventloop
from tradeoff.analysis.load import point_stats
from tradeoff.config import (
    Config,
    RayExecutor,
    RunSpec,
    parse_spec,
    resolve_configs,
    with_absolute_paths,
)
from tradeoff.dispatch import share, unused_processes
from tradeoff.errors import RunFailed, UserError
from tradeoff.load.driver import PointDriver, PointProgress
from tradeoff.load.options import LoadOptions
from tradeoff.load.profiles import LoadPoint, Profile, sweep_rates
from tradeoff.load.scrape import NONE_KEPT, Scraper, scrape_urls
from tradeoff.load.spread import Spread, spreadable
from tradeoff.meters.host import host_info
from tradeoff.ray_run import Pool, RaySession, as_run, executor_of
from tradeoff.resumes import how_to_continue, not_profiled
from tradeoff.runner import (
    Stop,
    Writer,
    changed_items_said,
    changed_on_resume,
    check_configs,
    open_run_session,
)
from tradeoff.session import Session
from tradeoff.store import Store
from tradeoff.tasks import Task
from tradeoff.work import Plan, items_of, load_tasks


@dataclass
class PointResult:
    config: str
    label: str
    # "finished", "stopped" (Ctrl-C before its last send), "errors" (--max-errors /
    # --max-error-rate)
    status: str
    sent: int = 0
    done: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    achieved_rps: float | None = None  # completed measured requests per second (its window)
    served_rps: float | None = None  # every answer, warm-up's too (`analysis.load.served_rate`)
    saturated: bool = False
    saturation_reason: str | None = None
    processes: int = 1  # that sent its requests
    unsent: int = 0  # due within --max-seconds, not sent: its time ran out while they waited


@dataclass
class LoadResult:
    directory: Path
    status: str  # "finished", "stopped", "errors"
    points: list[PointResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "config @ point" stored by an earlier run
    # Each sweep that stopped early at a saturated rate: ("config @ point", why, rates not run).
    sweep_stops: list[tuple[str, str | None, int]] = field(default_factory=list)
    # Each sweep that ran fewer constant rates than asked for, and why.
    sweep_short: list[str] = field(default_factory=list)


Progress = Callable[[str, "PointProgress"], None]


@dataclass
class _Run:
    """What every load point of a run is driven with."""

    plan: Plan
    options: LoadOptions
    store: Store
    writer: Writer
    stop: Stop
    spread: Spread | None  # helper processes, where every model is behind a server
    on_progress: Progress | None
    pool: Pool | None = None  # on Ray: each model group's points driven by its worker
    scrapers: list[Scraper] = field(default_factory=list)  # stored as each point ends


async def _drive(
    spec: RunSpec,
    options: LoadOptions,
    tasks: list[Task],
    open_store: Callable[[], Store],
    *,
    api_key: str | None,
    on_progress: Progress | None,
    notify: Callable[[str], None],
    ray: RayExecutor | None = None,
    resumed: bool = False,
) -> LoadResult:
    profile = options.check()
    configs = resolve_configs(spec)
    # Checked before the models load and the store is made: a scrape URL that does not answer
    # leaves no run directory behind. What --scrape auto could not scrape is said once the
    # upstreams answered (one that does not stops the run, and that is the line to read).
    unscraped: list[str] = []
    scrapers = await _scrapers(options.scrape, configs, unscraped.append, resumed)
    stop = Stop(notify, "load")
    opened = open_run_session(
        spec, configs, open_store, stop, api_key=api_key, notify=notify, ray=ray
    )
    try:
        return await _drive_session(
            opened, spec, options, profile, configs, tasks, stop, scrapers,
            api_key=api_key, on_progress=on_progress, notify=notify, unscraped=unscraped,
        )  # fmt: skip
    finally:
        stop.uninstall()


def _over_cap(
    profile: Profile, options: LoadOptions, configs: list[Config], spread: Spread | None
) -> str | None:
    """`engines.openai.over_cap` of the most requests a process keeps in flight at any point:
    a rate's (a sweep's) up to --max-concurrency, a closed loop's its own, each process its
    share where a point is spread."""
    from tradeoff.engines.openai import over_cap

    points = [*profile.points, *([LoadPoint("throughput")] if profile.sweep else [])]
    most = 0
    for point in points:
        paced = point.paced or point.concurrency is None  # (throughput: --max-concurrency)
        in_flight = options.max_concurrency if paced else point.concurrency or 1
        most = max(most, share(in_flight, 0, spread.processes(point) if spread else 1))
    return over_cap(most, configs)


async def _drive_session(
    opened: AbstractAsyncContextManager[Session],
    spec: RunSpec,
    options: LoadOptions,
    profile: Profile,
    configs: list[Config],
    tasks: list[Task],
    stop: Stop,
    scrapers: list[Scraper],
    *,
    api_key: str | None,
    on_progress: Progress | None,
    notify: Callable[[str], None],
    unscraped: list[str],
) -> LoadResult:
    async with opened as session:
        for note in unscraped:
            notify(note)
        store = session.store
        stop.directory = store.directory
        for task in tasks:
            store.add_items(items_of(task, spec.limit), task.scorer)
        plan = Plan(spec, configs, tasks, session.meter)
        ended = {(p["config_id"], p["load_point"]) for p in store.load_points() if p["ended"]}
        result = LoadResult(store.directory, "finished")
        pool = session.pool if isinstance(session, RaySession) else None
        spread = Spread(spec, options, api_key, notify) if spreadable(configs) else None
        spread = None if pool else spread
        crowded = None if pool else _over_cap(profile, options, configs, spread)
        if crowded:
            notify(crowded)
        unused = unused_processes(spec, configs, on_ray=pool is not None)
        if unused:
            notify(unused)
        if options.rampup_s and profile.sweep is None and not any(p.paced for p in profile.points):
            notify(
                f"--rampup {options.rampup_s:g} is not used: it grows a rate, and closed-loop "
                f"points ({', '.join(p.label for p in profile.points)}) send each request as "
                "one ends"
            )
        if pool is not None and any(len(actors) > 1 for actors in pool.actors.values()):
            notify(
                "load drives each point from its model group's first Ray worker: the others "
                "(executor: {ray: {workers: N}}) stay idle"
            )
        run = _Run(plan, options, store, Writer(store), stop, spread, on_progress, pool, scrapers)
        for scraper in scrapers:
            scraper.start()
        run.stop.install()

        async def drive(group: list[Config]) -> None:
            for config in group:
                status = await _drive_config(run, config, profile, ended, result)
                if status != "finished":
                    if result.status == "finished":  # not another group's stop after its errors
                        result.status = status
                    break

        aborted = True
        try:
            if pool is None:
                await drive(configs)
            else:  # each model group's points on its worker, the groups side by side
                ids = pool.config_ids.values()
                await side_by_side([drive([c for c in configs if c.config_id in g]) for g in ids])
            aborted = False
        finally:
            run.writer.flush()
            run.stop.uninstall()
            if run.stop.requested:  # (a library call's second Ctrl-C leaves by KeyboardInterrupt)
                session.status = "stopped"
            if spread is not None:  # left by an exception (an abort): nothing takes their records
                spread.close(patience_s=0 if aborted else 10)
            for scraper in scrapers:
                await scraper.stop()
                store.add_scrapes(scraper.url, *scraper.take())
        run.writer.check()
        session.status = result.status
    return result


async def side_by_side(work: list[Coroutine[Any, Any, None]]) -> None:
    """Run `work` at once; the first to fail stops the others (awaited before its error is
    raised). With asyncio.gather the others ran on: the session closed, and Ray, shut down
    under a group still waiting for its worker, exited the process with 0, the error lost."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _scrapers(
    scrape: str, configs: list[Config], notify: Callable[[str], None], resumed: bool = False
) -> list[Scraper]:
    """The scrapers of the run, each checked: a URL given must answer Prometheus text (else the
    run stops before it starts; on a resume it is left unscraped, said); with "auto", each
    openai: upstream's /metrics that does."""
    if scrape == "off":
        return []
    if scrape != "auto":
        scraper = Scraper(scrape)
        try:
            servers = await scraper.check()
        except UserError as exc:
            if not resumed:
                raise
            # the run was started with it: a metrics endpoint gone since stops no resume
            notify(f"not scraped: {exc}".split("; give a server's")[0])
            return []
        if not servers:
            notify(f"{scrape}: {NONE_KEPT}; its samples will be empty")
        return [scraper]
    scrapers = []
    for url in sorted(set().union(*(scrape_urls(c.models) for c in configs))):
        scraper = Scraper(url)
        try:
            await scraper.check()
        except UserError as exc:
            notify(f"not scraped: {exc}".split("; give a server's")[0])
            continue
        scrapers.append(scraper)
    return scrapers


async def _drive_config(
    run: _Run,
    config: Config,
    profile: Profile,
    ended: set[tuple[str, str]],
    result: LoadResult,
) -> str:
    """Every load point of `profile` for one configuration (a sweep's rates once its first two
    points are measured); the status that ends it."""
    points = list(profile.points)
    rates: dict[str, float | None] = {}
    i = 0
    while i < len(points):
        point = points[i]
        i += 1
        if (config.config_id, point.label) in ended:
            result.skipped.append(f"{config.name} @ {point.label}")
            summary = run.store.load_point_summary(config.config_id, point.label)
            rates[point.kind] = _sweep_end(point, summary.get("achieved_rps"),
                                           summary.get("served_rps"))  # fmt: skip
            saturated, why = bool(summary.get("saturated")), summary.get("saturation_reason")
        elif run.stop.requested or result.status != "finished":
            # as the point before ended, or another model group's on Ray (its error limit): no
            # new point is started
            return "stopped"
        else:
            outcome = await _drive_point(run, config, point)
            result.points.append(outcome)
            rates[point.kind] = _sweep_end(point, outcome.achieved_rps, outcome.served_rps)
            if outcome.status != "finished":
                return outcome.status
            saturated, why = outcome.saturated, outcome.saturation_reason
        if saturated and profile.sweep is not None and point.kind == "constant":
            if i < len(points):  # a sweep stops at its first saturated rate, resumed or not
                where = f"{config.name} @ {point.label}"
                result.sweep_stops.append((where, why, len(points) - i))
            return "finished"
        if profile.sweep is not None and i == len(profile.points):
            low, high = rates.get("synchronous"), rates.get("throughput")
            if not (low and high):
                unmeasured = " and ".join(
                    k for k, v in (("synchronous", low), ("throughput", high)) if not v
                )
                result.sweep_short.append(
                    f"sweep of {config.name}: 0 of {profile.sweep} rates run, {unmeasured} "
                    "measured no rate (no measured request completed): the rates lie between "
                    "the two; give the points more requests or seconds, or less --warmup"
                )
            else:
                between = sweep_rates(low, high, profile.sweep)
                points += [LoadPoint("constant", rate=r) for r in between]
                if len(between) < profile.sweep:
                    result.sweep_short.append(
                        f"sweep of {config.name}: {len(between)} of {profile.sweep} rates run, "
                        + (
                            f"throughput ({high:.3g} req/s) is no more than synchronous "
                            f"({low:.3g} req/s): the server answers no faster with requests "
                            "sent together, so no rate lies between them"
                            if high <= low
                            else f"the rest round alike between synchronous ({low:.3g} req/s) "
                            f"and throughput ({high:.3g} req/s)"
                        )
                    )
    return "finished"


def _sweep_end(point: LoadPoint, achieved: float | None, served: float | None) -> float | None:
    """The rate a sweep's end point gives: synchronous, its measured rate; throughput, the pace
    the server kept over all its answers (the measured ones alone read low behind a warm-up's,
    and the sweep then stopped short of the server's capacity)."""
    if point.kind == "throughput" and served is not None:
        return max(served, achieved or 0.0)
    return achieved


async def _drive_point(run: _Run, config: Config, point: LoadPoint) -> PointResult:
    store, options, stop = run.store, run.options, run.stop
    store.start_load_point(config.config_id, point.label, point.spec)
    progress = PointProgress(
        f"{config.name} @ {point.label}", options.max_requests, options.max_seconds
    )

    def report(p: PointProgress) -> None:
        if run.on_progress:
            run.on_progress(config.name, p)

    processes = run.spread.processes(point) if run.spread else 1
    driver = PointDriver(
        run.plan, config, point, options, run.writer, stop, progress, report, (0, processes)
    )
    report(progress)
    failed: BaseException | None = None
    try:
        ended = await _drive_on(run, driver, processes)
    except RunFailed as exc:  # a helper process or a Ray worker lost: marked, then raised
        failed, ended = exc, "failed"
    except asyncio.CancelledError as exc:  # another model group's worker was lost (on Ray)
        failed, ended = exc, "stopped"
    run.writer.flush()
    report(progress)  # as it ended: what was not sent in time is counted once the sends stop
    status = ended  # "stopped" only where the stop came before its last send (as profile's)
    _mark_cooldown(run, config, point, progress, status)
    stats = point_stats(
        config.name, point.label, point.spec,
        store.records(config_id=config.config_id, load_point=point.label),
        None, {}, list(config.models),
    )  # fmt: skip
    achieved, saturated = stats["achieved_rate"], bool(stats["saturated"])
    summary = {
        "achieved_rps": achieved,
        "served_rps": stats["served_rate"],
        "saturated": saturated,
        "saturation_reason": stats["saturation_reason"],
        "sent": progress.sent,
        "done": progress.done,
        "errors": progress.errors,
        "elapsed_s": progress.elapsed_s,
        "processes": processes,
        "unsent": progress.unsent,
    }
    for scraper in run.scrapers:  # before the point is marked ended: a run killed keeps them
        store.add_scrapes(scraper.url, *scraper.take())
    store.end_load_point(config.config_id, point.label, status, summary)
    if failed is not None:
        raise failed
    return PointResult(
        config.name, point.label, status, progress.sent, progress.done, progress.errors,
        progress.elapsed_s, achieved, stats["served_rate"], saturated,
        stats["saturation_reason"], processes, progress.unsent,
    )  # fmt: skip


def _mark_cooldown(
    run: _Run, config: Config, point: LoadPoint, progress: PointProgress, status: str
) -> None:
    """The point's --cooldown, marked in its stored records once it has ended (its warm-up was
    marked as each request was sent: `LoadOptions.phase`), by when each request was sent: its
    last requests sent, or those sent in its last seconds, counted back from where it ended,
    whichever bound ended it: --max-seconds, or its last send where it ended sooner (on
    --max-requests, a stop, its error limit)."""
    options = run.options
    cooldown = options.cooldown_amount
    if cooldown is None or cooldown.value <= 0:  # (0s would take the last request, sent at the end)
        return
    if not cooldown.seconds:
        run.store.mark_cooldown(config.config_id, point.label, requests=int(cooldown.value))
        return
    on_time = status == "finished" and (
        options.max_requests is None or progress.sent < options.max_requests
    )
    end_s = options.max_seconds if on_time else None
    run.store.mark_cooldown(config.config_id, point.label, seconds=cooldown.value, end_s=end_s)


async def _drive_on(run: _Run, driver: PointDriver, processes: int) -> str:
    """Drive the point here, from `processes` processes, or on its Ray worker; how it ended."""
    if run.pool is None:
        if run.spread is not None and processes > 1:
            await run.spread.drive(driver, processes, run.writer, run.stop)
        else:
            await driver.run()
        return driver.status
    records, ended, counts = await run.pool.drive_point(
        driver.config, driver.point, run.options, lambda: run.stop.requested
    )
    for record in records:
        run.writer.add(record)
    progress = driver.progress
    progress.sent, progress.done, progress.errors = (counts[k] for k in ("sent", "done", "errors"))
    progress.unsent = int(counts.get("unsent", 0))
    if "elapsed_s" in counts:  # the worker's time, not Ray's round trips (or a restart)
        progress.started = time.perf_counter() - float(counts["elapsed_s"])
    return ended


def _check_items(
    store: Store, spec: RunSpec, tasks: list[Task], notify: Callable[[str], None]
) -> None:
    """Stop a resume whose tasks now hold other content under stored items' ids (a rewritten
    JSONL file): the points left would send the new prompts, recorded against the stored items,
    questions and references of the old. Items no longer in their task, or past the spec's
    limit now (never sent again, so a change to one stops nothing), are said."""
    found = changed_on_resume(store, tasks, spec.limit, notify, "load")
    changed = [f"{name}#{item.id}" for name, items in found.items() for item in items]
    if changed:
        raise UserError(
            changed_items_said(store, changed, "restore them, or load into a new --out")
        )


def load(
    spec: RunSpec | None,
    options: LoadOptions | None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    api_key: str | None = None,
    on_progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
    ray: str | None = None,
) -> LoadResult:
    """Drive every configuration of `spec` at the load points of `options.profile`, writing
    records to a run directory. With `resume`, the stored spec and options are used and the load
    points that ended are skipped. With `ray` (or the spec's `executor: {ray: ...}`), each model
    group's points are driven by its worker on a Ray cluster, the groups side by side (as in
    `runner.profile`, a process connected to Ray already must name that cluster, or 'auto')."""
    say = notify or (lambda msg: print(msg, file=sys.stderr))
    if resume is None:
        if spec is None or options is None or out is None:
            raise ValueError("load needs a spec, options and `out`, or `resume`")
        if not spec.tasks:
            raise UserError(
                "the spec has no tasks: a load run needs at least one (--task or --data)"
            )
        options.check()
        Store.ensure_new(out)
        executor = executor_of(spec, ray)
        spec = as_run(with_absolute_paths(spec), executor)
        tasks = load_tasks(spec)
        stored: dict[str, Any] = {
            **spec.model_dump(mode="json"),
            "load": dataclasses.asdict(options),
        }
        run_spec, run_options = spec, options

        def open_store() -> Store:
            return Store.create(out, stored, host_info())

        return eventloop.run(
            _drive(
                run_spec,
                run_options,
                tasks,
                open_store,
                api_key=api_key,
                on_progress=on_progress,
                notify=say,
                ray=executor,
            )  # fmt: skip
        )
    store = Store.open(resume, writer=True)
    try:
        data = store.run()["spec"]
        if not isinstance(data, dict) or "load" not in data:
            what = not_profiled(data)
            raise UserError(
                f"{resume} holds no load run: "
                + (f"it holds {what}, nothing to resume" if what else "a run of queries")
                + how_to_continue(data, resume)
            )
        saved = {k: v for k, v in data.items() if k != "load"}
        run_spec = parse_spec(saved, f"{resume} (stored spec)")
        run_options = LoadOptions(**data["load"])
        check_configs(store, resolve_configs(run_spec), "load")
        tasks = load_tasks(run_spec)
        _check_items(store, run_spec, tasks, say)
        run = _drive(
            run_spec, run_options, tasks, lambda: store, api_key=api_key,
            on_progress=on_progress, notify=say, ray=executor_of(run_spec, ray), resumed=True,
        )  # fmt: skip
        return eventloop.run(run)
    finally:
        store.close()
