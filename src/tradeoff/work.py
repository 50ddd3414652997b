"""One run's requests: the key each has, how one runs to its scored record, and running many
with bounded concurrency. The runner does it in this process; dispatch helpers (tradeoff.dispatch)
do it in theirs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tradeoff.config import Config, RunSpec
from tradeoff.records import outcome_record
from tradeoff.strategies import STRATEGIES, StrategyContext
from tradeoff.strategies.calls import ENGINE_WAITS, CallMeter
from tradeoff.strategies.context import asked_length
from tradeoff.tasks import Task, load_task
from tradeoff.tasks.scorers import after_thinking
from tradeoff.types import Item, Outcome, Record

T = TypeVar("T")

# One request of a run: (config_id, task, item_id, sample), the key of its record.
Work = tuple[str, str, str, int]
# Where a finished request goes: its record, and the time its engine calls took.
Emit = Callable[[Record, float], Awaitable[None]]


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


def items_of(task: Task, limit: int | None) -> list[Item]:
    return task.items[:limit] if limit else task.items


def work_keys(spec: RunSpec, config_ids: list[str], items: list[tuple[str, str]]) -> list[Work]:
    """Every request of a run of `config_ids` on `items` ((task, item id) pairs), configuration
    by configuration: the keys its records are stored under."""
    return [
        (config_id, task, item_id, sample)
        for config_id in config_ids
        for task, item_id in items
        for sample in range(spec.samples)
    ]


@dataclass
class Answered:
    """A request's answer, the times it was sent and answered (time.perf_counter()), and the
    spans it waited for the in-process engines behind other requests (`ENGINE_WAITS`)."""

    work: Work
    outcome: Outcome
    t0: float
    t1: float
    waits: list[tuple[float, float]] = field(default_factory=list)

    @property
    def settling(self) -> bool:
        """Whether any of its calls' energies waits for a stepped counter's next step."""
        return any(c.pending is not None for c in self.outcome.calls)


class Plan:
    """What a run's work keys name: configurations, tasks and items, and a strategy context for
    each (configuration, task) whose calls go through `meter`."""

    def __init__(self, spec: RunSpec, configs: list[Config], tasks: list[Task], meter: CallMeter):
        self.spec = spec
        self.meter = meter
        self.configs = {c.config_id: c for c in configs}
        self.tasks = {t.name: t for t in tasks}
        self.items = {(t.name, i.id): i for t in tasks for i in items_of(t, spec.limit)}
        self.contexts = {
            (c.config_id, t.name): StrategyContext(config=c, task=t, meter=meter)
            for c in configs
            for t in tasks
        }

    def work(self) -> list[Work]:
        """Every request of the run, configuration by configuration."""
        return work_keys(self.spec, list(self.configs), list(self.items))

    async def run(self, work: Work) -> tuple[Record, float]:
        """Run one request: its record (scored) and the time its engine calls took. The record
        times the request alone: its waits for an in-process engine behind the others in flight
        are its queue delay, not part of its TTFT and e2e (under load they are, as a server's
        queue is: `tradeoff.load` records with `record`)."""
        return await self.record(await self.answer(work), waits_apart=True)

    async def answer(self, work: Work) -> Answered:
        """The request answered and timed; its energy may still be settling (`record` waits)."""
        config_id, task_name, item_id, sample = work
        item = self.items[(task_name, item_id)]
        waits: list[tuple[float, float]] = []
        kept = ENGINE_WAITS.set(waits)
        t0 = time.perf_counter()
        try:
            outcome = await STRATEGIES[self.configs[config_id].strategy].run(
                self.contexts[(config_id, task_name)], item, sample
            )
        finally:
            ENGINE_WAITS.reset(kept)
        return Answered(work, outcome, t0, time.perf_counter(), waits)

    async def record(self, answered: Answered, waits_apart: bool = False) -> tuple[Record, float]:
        """The answer's record (scored) and the time its engine calls took, once its energy has
        settled: a stepped counter's share of each call is known once it steps past the answer,
        which is not part of the answer's time. `waits_apart`: its waits for the in-process
        engines are its queue delay, not part of its TTFT and e2e (`outcome_record`)."""
        (config_id, task_name, item_id, sample), outcome = answered.work, answered.outcome
        config, task = self.configs[config_id], self.tasks[task_name]
        item = self.items[(task_name, item_id)]
        await self.meter.settle_calls(outcome.calls)
        score: float | None = None  # an unscored task's (synthetic load) records have none
        parsed = None
        if task.scored:
            answer = after_thinking(outcome.output)
            score = 0.0 if outcome.error else task.scorer.score(answer, item)
            parsed = None if outcome.error else task.scorer.parse(answer)
        record = outcome_record(
            config_id, task_name, item_id, sample, outcome, answered.t0, answered.t1,
            self.spec.prices, score=score, parsed=parsed,
            waits=answered.waits if waits_apart else (),
        )  # fmt: skip
        asked = asked_length(config, task, item)
        if asked is not None:  # asked of each call: a server that stops short shows
            record.extra = {**record.extra, "asked_output_tokens": asked}
        return record, sum(c.generation.e2e_s for c in outcome.calls)


async def run_work(
    plan: Plan,
    next_work: Callable[[], Awaitable[Work | None]],
    concurrency: int,
    stopped: Callable[[], bool],
    emit: Emit,
) -> None:
    """Run the work `next_work` hands out (None: no more) with at most `concurrency` requests
    in flight, each record to `emit`; once `stopped()`, start nothing new."""

    async def worker() -> None:
        while not stopped() and (w := await next_work()) is not None:
            await emit(*await plan.run(w))

    await asyncio.gather(*(worker() for _ in range(max(concurrency, 1))))


def handing_out(work: Iterable[Work]) -> Callable[[], Awaitable[Work | None]]:
    """`next_work` for `run_work` over a list (shareable: other takers may draw from the same)."""
    queue = iter(work)

    async def next_work() -> Work | None:
        return next(queue, None)

    return next_work


class PerTurn(Generic[T]):
    """Items gathered during one turn of the event loop and handed to `flush` together at its end:
    those that complete in the same turn (many, at a high concurrency) share one write, and none
    waits past the turn it completed in. A failed flush is kept in `failed` for the caller."""

    def __init__(self, flush: Callable[[list[T]], None]):
        self._flush = flush
        self.pending: list[T] = []
        self.handle: asyncio.Handle | None = None
        self.failed: BaseException | None = None

    def add(self, item: T) -> None:
        self.pending.append(item)
        if self.handle is None:
            self.handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.handle = None
        batch, self.pending = self.pending, []
        if batch:
            try:
                self._flush(batch)
            except BaseException as exc:  # raised to whoever waits on it
                self.failed = exc
