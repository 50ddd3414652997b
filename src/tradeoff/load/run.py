"""`tradeoff load`: each configuration driven at each load point of a profile, every request a
record that carries its load point, phase, scheduled and actual send times and queue delay.

A configuration is driven as a whole (a cascade's or a route's sub-calls hit their models as
they would in serving). In-process models (llama.cpp, torch) answer one request at a time: the
others wait inside the model's call, so their wait shows in their latencies. Load points that
ended are skipped by `--resume`; one that was cut short is measured again from its start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tradeoff import eventloop
from tradeoff.analysis.load import point_stats
from tradeoff.config import Config, RunSpec, parse_spec, resolve_configs, with_absolute_paths
from tradeoff.engines import parse_openai_ref
from tradeoff.errors import UserError
from tradeoff.load.profiles import LoadPoint, Profile, parse_profile, send_times, sweep_rates
from tradeoff.load.scrape import Scraper, default_scrape_url
from tradeoff.meters.host import host_info
from tradeoff.runner import Stop, Writer
from tradeoff.session import open_session
from tradeoff.store import Store
from tradeoff.tasks import Task
from tradeoff.work import Plan, Work, load_tasks

# Errors are judged as a rate only once this many requests of a load point have ended.
MIN_FOR_ERROR_RATE = 10


@dataclass(frozen=True)
class Amount:
    """A number of requests, or of seconds ('10' or '10s')."""

    value: float
    seconds: bool

    @classmethod
    def parse(cls, text: str | None, flag: str) -> Amount | None:
        if text is None:
            return None
        body = text.strip()
        seconds = body.endswith("s")
        try:
            value = float(body.removesuffix("s"))
        except ValueError:
            value = -1.0
        if value < 0 or (not seconds and value != int(value)):
            raise UserError(
                f"{flag} {text!r}: give a number of requests (e.g. 10) or of seconds (e.g. 5s)"
            )
        return cls(value, seconds)


@dataclass(frozen=True)
class LoadOptions:
    """How each load point runs and when it stops. Stored with the run (`spec["load"]`)."""

    profile: str = "sweep"
    max_requests: int | None = None
    max_seconds: float | None = 30.0
    warmup: str | None = None
    cooldown: str | None = None
    rampup_s: float = 0.0
    slo: str | None = None
    max_concurrency: int = 256
    max_errors: int | None = None
    max_error_rate: float | None = None
    seed: int = 0
    # The upstreams' Prometheus metrics, sampled through the run: "auto" (each openai: model's
    # server's /metrics, where it answers Prometheus text), "off", or a URL (which must answer).
    scrape: str = "auto"

    def check(self) -> Profile:
        """The parsed profile; one line on any option that cannot work."""
        if self.max_requests is None and self.max_seconds is None:
            raise UserError("give --max-requests N and/or --max-seconds S: when a load point ends")
        for flag, value in (
            ("--max-requests", self.max_requests),
            ("--max-errors", self.max_errors),
        ):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be at least 1 (got {value})")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise UserError(f"--max-seconds must be above 0 (got {self.max_seconds})")
        if self.max_concurrency < 1:
            raise UserError(f"--max-concurrency must be at least 1 (got {self.max_concurrency})")
        if self.rampup_s < 0:
            raise UserError(f"--rampup must be 0 or more seconds (got {self.rampup_s})")
        if self.max_error_rate is not None and not 0 < self.max_error_rate <= 1:
            raise UserError(f"--max-error-rate must be in (0, 1] (got {self.max_error_rate})")
        for flag, text in (("--warmup", self.warmup), ("--cooldown", self.cooldown)):
            amount = Amount.parse(text, flag)
            if amount is None:
                continue
            bound = "--max-seconds" if amount.seconds else "--max-requests"
            if (self.max_seconds if amount.seconds else self.max_requests) is None:
                raise UserError(f"{flag} {text} needs {bound}: it is a share of the load point")
        if self.slo is not None:
            from tradeoff.analysis.load import parse_slo

            parse_slo(self.slo)
        if self.scrape not in ("auto", "off") and not self.scrape.startswith(
            ("http://", "https://")
        ):
            raise UserError(f"--scrape {self.scrape!r}: give auto, off, or an http(s):// URL")
        return parse_profile(self.profile, self.max_concurrency)

    @cached_property
    def _warmup(self) -> Amount | None:
        return Amount.parse(self.warmup, "--warmup")

    @cached_property
    def _cooldown(self) -> Amount | None:
        return Amount.parse(self.cooldown, "--cooldown")

    def phase(self, index: int, scheduled_s: float) -> str:
        """'warmup', 'measure' or 'cooldown' for the index-th request, due at `scheduled_s`."""
        warmup, cooldown = self._warmup, self._cooldown
        if warmup and (scheduled_s < warmup.value if warmup.seconds else index < warmup.value):
            return "warmup"
        if cooldown:
            if cooldown.seconds and self.max_seconds is not None:
                if scheduled_s >= self.max_seconds - cooldown.value:
                    return "cooldown"
            elif self.max_requests is not None and index >= self.max_requests - cooldown.value:
                return "cooldown"
        return "measure"


@dataclass
class PointResult:
    config: str
    label: str
    status: str  # "finished", "stopped" (Ctrl-C), "errors" (--max-errors / --max-error-rate)
    sent: int = 0
    done: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    achieved_rps: float | None = None  # completed measured requests per second (its window)
    saturated: bool = False
    saturation_reason: str | None = None


@dataclass
class LoadResult:
    directory: Path
    status: str  # "finished", "stopped", "errors"
    points: list[PointResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "config @ point" stored by an earlier run
    # Each sweep that stopped early at a saturated rate: ("config @ point", why, rates not run).
    sweep_stops: list[tuple[str, str | None, int]] = field(default_factory=list)


Progress = Callable[[str, "PointProgress"], None]


@dataclass
class PointProgress:
    """What the progress display shows for the running load point."""

    label: str
    total: int | None  # requests, when --max-requests bounds the point
    max_seconds: float | None
    sent: int = 0
    done: int = 0
    errors: int = 0
    in_flight: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


class _Point:
    """One configuration driven at one load point: requests handed out in the items' order
    (cycling, `sample` counting the cycles), each stamped and written as it ends."""

    def __init__(
        self,
        plan: Plan,
        config: Config,
        point: LoadPoint,
        options: LoadOptions,
        writer: Writer,
        stop: Stop,
        progress: PointProgress,
        on_progress: Callable[[PointProgress], None],
    ):
        self.plan, self.config, self.point, self.options = plan, config, point, options
        self.writer, self.stop, self.progress, self.on_progress = (
            writer,
            stop,
            progress,
            on_progress,
        )
        self.items = list(plan.items)
        self.t0 = 0.0
        self.status = "finished"

    def work(self, index: int) -> Work:
        task, item_id = self.items[index % len(self.items)]
        return (self.config.config_id, task, item_id, index // len(self.items))

    def more(self, index: int, scheduled_s: float) -> bool:
        """Whether the index-th request, due at `scheduled_s`, is still part of this point."""
        o = self.options
        if self.stop.requested or self.status == "errors":
            return False
        if o.max_requests is not None and index >= o.max_requests:
            return False
        return o.max_seconds is None or scheduled_s < o.max_seconds

    async def one(self, index: int, scheduled_s: float) -> None:
        sent_s = time.perf_counter() - self.t0
        self.progress.sent += 1
        self.progress.in_flight += 1
        record, _ = await self.plan.run(self.work(index))
        self.progress.in_flight -= 1
        phase = self.options.phase(index, scheduled_s)
        stamped = dataclasses.replace(
            record,
            load_point=self.point.label,
            phase=phase,
            scheduled_s=scheduled_s,
            sent_s=sent_s,
            queue_delay_s=max(sent_s - scheduled_s, 0.0),
        )
        await self.writer.write(stamped)
        self.progress.done += 1
        self.progress.errors += record.error is not None
        self._check_errors()
        self.on_progress(self.progress)

    def _check_errors(self) -> None:
        o, p = self.options, self.progress
        if (
            o.max_errors is not None
            and p.errors >= o.max_errors
            or (
                o.max_error_rate is not None
                and p.done >= MIN_FOR_ERROR_RATE
                and p.errors / p.done > o.max_error_rate
            )
        ):
            self.status = "errors"

    async def run(self) -> None:
        self.t0 = time.perf_counter()
        self.progress.started = self.t0
        if self.point.paced:
            await self._paced()
        else:
            workers = 1 if self.point.kind == "synchronous" else self.point.concurrency or 1
            await self._closed_loop(workers)

    async def _closed_loop(self, workers: int) -> None:
        """`workers` requests always in flight: each sent as soon as one ends (due then)."""
        counter = iter(range(sys.maxsize))

        async def worker() -> None:
            while True:
                due = time.perf_counter() - self.t0
                index = next(counter)
                if not self.more(index, due):
                    return
                await self.one(index, due)

        await asyncio.gather(*(worker() for _ in range(workers)))

    async def _paced(self) -> None:
        """Requests sent when due, however many are in flight up to --max-concurrency; past
        it, each waits for a slot, and the wait is its queue delay."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.options.max_concurrency)
        running: set[asyncio.Task[None]] = set()
        times: Iterator[float] = send_times(self.point, self.options.seed, self.options.rampup_s)
        start = loop.time()
        for index, due in enumerate(times):
            if not self.more(index, due):
                break
            delay = start + due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            task = asyncio.ensure_future(self.one(index, due))
            running.add(task)
            task.add_done_callback(running.discard)
            task.add_done_callback(lambda _: slots.release())
        if running:
            await asyncio.gather(*running)


async def _drive(
    spec: RunSpec,
    options: LoadOptions,
    tasks: list[Task],
    open_store: Callable[[], Store],
    *,
    api_key: str | None,
    on_progress: Progress | None,
    notify: Callable[[str], None],
) -> LoadResult:
    profile = options.check()
    configs = resolve_configs(spec)
    async with open_session(
        configs, open_store, timeout_s=spec.timeout_s, api_key=api_key, notify=notify
    ) as session:
        store = session.store
        for task in tasks:
            store.add_items(task.items[: spec.limit] if spec.limit else task.items, task.scorer)
        plan = Plan(spec, configs, tasks, session.meter)
        ended = {(p["config_id"], p["load_point"]) for p in store.load_points() if p["ended"]}
        result = LoadResult(store.directory, "finished")
        stop = Stop(notify)
        writer = Writer(store)
        scrapers = await _scrapers(options.scrape, configs, notify)
        for scraper in scrapers:
            scraper.start()
        stop.install()
        try:
            for config in configs:
                status = await _drive_config(
                    plan, config, profile, options, store, writer, stop, ended, result, on_progress
                )
                if status != "finished":
                    result.status = status
                    break
        finally:
            writer.flush()
            stop.uninstall()
            for scraper in scrapers:
                await scraper.stop()
                store.add_scrapes(scraper.url, scraper.samples, scraper.gaps)
        writer.check()
        session.status = result.status
    return result


async def _scrapers(
    scrape: str, configs: list[Config], notify: Callable[[str], None]
) -> list[Scraper]:
    """The scrapers of the run, each checked: a URL given must answer Prometheus text (else the
    run stops before it starts); with "auto", each openai: upstream's /metrics that does."""
    if scrape == "off":
        return []
    if scrape != "auto":
        scraper = Scraper(scrape)
        await scraper.check()
        return [scraper]
    bases = {
        parse_openai_ref(ref)[0]
        for c in configs
        for ref in c.models.values()
        if ref.startswith("openai:")
    }
    scrapers = []
    for base in sorted(bases):
        scraper = Scraper(default_scrape_url(base))
        try:
            await scraper.check()
        except UserError as exc:
            notify(f"not scraped: {exc}".split("; give a server's")[0])
            continue
        scrapers.append(scraper)
    return scrapers


async def _drive_config(
    plan: Plan,
    config: Config,
    profile: Profile,
    options: LoadOptions,
    store: Store,
    writer: Writer,
    stop: Stop,
    ended: set[tuple[str, str]],
    result: LoadResult,
    on_progress: Progress | None,
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
            summary = store.load_point_summary(config.config_id, point.label)
            rates[point.kind] = summary.get("achieved_rps")
            saturated, why = bool(summary.get("saturated")), summary.get("saturation_reason")
        else:
            outcome = await _drive_point(
                plan, config, point, options, store, writer, stop, on_progress
            )
            result.points.append(outcome)
            rates[point.kind] = outcome.achieved_rps
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
            if low and high:
                points += [
                    LoadPoint("constant", rate=r) for r in sweep_rates(low, high, profile.sweep)
                ]
    return "finished"


async def _drive_point(
    plan: Plan,
    config: Config,
    point: LoadPoint,
    options: LoadOptions,
    store: Store,
    writer: Writer,
    stop: Stop,
    on_progress: Progress | None,
) -> PointResult:
    store.start_load_point(config.config_id, point.label, point.spec)
    progress = PointProgress(
        f"{config.name} @ {point.label}", options.max_requests, options.max_seconds
    )

    def report(p: PointProgress) -> None:
        if on_progress:
            on_progress(config.name, p)

    driven = _Point(plan, config, point, options, writer, stop, progress, report)
    report(progress)
    await driven.run()
    writer.flush()
    status = "stopped" if stop.requested else driven.status
    stats = point_stats(
        config.name, point.label, point.spec,
        store.records(config_id=config.config_id, load_point=point.label),
        None, {}, list(config.models),
    )  # fmt: skip
    achieved, saturated = stats["achieved_rate"], bool(stats["saturated"])
    summary = {
        "achieved_rps": achieved,
        "saturated": saturated,
        "saturation_reason": stats["saturation_reason"],
        "sent": progress.sent,
        "done": progress.done,
        "errors": progress.errors,
        "elapsed_s": progress.elapsed_s,
    }
    store.end_load_point(config.config_id, point.label, status, summary)
    return PointResult(
        config.name, point.label, status, progress.sent, progress.done, progress.errors,
        progress.elapsed_s, achieved, saturated, stats["saturation_reason"],
    )  # fmt: skip


def load(
    spec: RunSpec | None,
    options: LoadOptions | None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    api_key: str | None = None,
    on_progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> LoadResult:
    """Drive every configuration of `spec` at the load points of `options.profile`, writing
    records to a run directory. With `resume`, the stored spec and options are used and the load
    points that ended are skipped."""
    say = notify or (lambda msg: print(msg, file=sys.stderr))
    if resume is None:
        if spec is None or options is None or out is None:
            raise ValueError("load needs a spec, options and `out`, or `resume`")
        if not spec.tasks:
            raise UserError(
                "the spec has no tasks: a load run needs at least one (--task or --data)"
            )
        options.check()
        Store.ensure_free(out)
        spec = with_absolute_paths(spec)
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
            )  # fmt: skip
        )
    store = Store.open(resume, writer=True)
    try:
        data = store.run()["spec"]
        if not isinstance(data, dict) or "load" not in data:
            raise UserError(
                f"{resume} holds no load run; continue a profile run with profile --resume"
            )
        saved = {k: v for k, v in data.items() if k != "load"}
        run_spec = parse_spec(saved, f"{resume} (stored spec)")
        run_options = LoadOptions(**data["load"])
        tasks = load_tasks(run_spec)
        run = _drive(
            run_spec, run_options, tasks, lambda: store, api_key=api_key,
            on_progress=on_progress, notify=say,
        )  # fmt: skip
        return eventloop.run(run)
    finally:
        store.close()
