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
from tradeoff.errors import UserError
from tradeoff.meters.host import host_info
from tradeoff.records import outcome_record
from tradeoff.session import open_session
from tradeoff.store import Store
from tradeoff.strategies import STRATEGIES, StrategyContext
from tradeoff.tasks import Task, load_task
from tradeoff.types import Item, Outcome, Record


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
    t_begin = time.perf_counter()
    async with open_session(
        configs, open_store, timeout_s=spec.timeout_s, api_key=api_key, notify=notify, inline=True
    ) as session:
        store = session.store
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
        result = RunResult(store.directory, "failed", 0, skipped, 0, 0.0, 0.0, configs)
        contexts = {
            (c.config_id, t.name): StrategyContext(config=c, task=t, meter=session.meter)
            for c in configs
            for t in tasks
        }
        queue: Iterator[_Work] = iter(work)
        total = len(work)
        if on_progress:
            on_progress(0, total, skipped, 0)
        stop = _Stop(notify)
        stop.install()

        async def worker() -> None:
            for w in queue:
                if stop.requested:
                    return
                ctx = contexts[(w.config.config_id, w.task.name)]
                run = STRATEGIES[w.config.strategy].run
                t0 = time.perf_counter()
                outcome = await run(ctx, w.item, w.sample)
                t1 = time.perf_counter()
                record = _build_record(w, outcome, t0, t1, spec.prices)
                store.write_record(record)
                result.done += 1
                result.engine_s += sum(c.generation.e2e_s for c in outcome.calls)
                if record.error:
                    result.errors += 1
                if on_progress:
                    on_progress(result.done, total, skipped, result.errors)

        try:
            await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, max(total, 1)))))
        finally:
            stop.uninstall()
        result.status = "stopped" if stop.requested and result.done < total else "finished"
        session.status = result.status
    result.wall_s = time.perf_counter() - t_begin
    return result


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
    if resume is not None:
        existing = Store.open(resume)
        try:
            stored = existing.run()["spec"]
        finally:
            existing.close()
        if isinstance(stored, dict) and ("imported_from" in stored or "serve" in stored):
            what = "imported outcomes" if "imported_from" in stored else "served traffic"
            raise UserError(f"{resume} holds {what}, not a profile run: nothing to resume")
        spec = parse_spec(stored, f"{resume} (stored spec)")

        def open_store() -> Store:
            return Store.open(resume)

    else:
        if out is None:
            raise ValueError("profile needs `out` or `resume`")
        Store.ensure_free(out)
        spec = with_absolute_paths(spec)

        def open_store() -> Store:
            # Called once every model is loaded, so a bad model leaves no directory behind.
            return Store.create(out, spec.model_dump(mode="json"), host_info())

    return asyncio.run(
        _execute(spec, open_store, api_key=api_key, on_progress=on_progress, notify=say)
    )
