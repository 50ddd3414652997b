"""The runner: configurations x items x samples, scheduled with bounded concurrency, each record
committed in the event loop's turn it completes in, resumable, and stopped cleanly by Ctrl-C.
Requests to models behind servers can be dispatched by several processes (tradeoff.dispatch)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradeoff import dispatch, eventloop
from tradeoff.abort import abort
from tradeoff.config import (
    Config,
    RayExecutor,
    RunSpec,
    parse_spec,
    resolve_configs,
    same_but_where,
    with_absolute_paths,
)
from tradeoff.engines.openai import over_cap
from tradeoff.errors import RunFailed, UserError
from tradeoff.meters.host import host_info
from tradeoff.ray_run import RaySession, as_run, executor_of, open_ray_session, shard_size
from tradeoff.resumes import continued_by, how_to_continue, not_profiled, resume_command
from tradeoff.session import Session, open_session
from tradeoff.store import Store
from tradeoff.tasks import Task
from tradeoff.types import Item, Record
from tradeoff.work import PerTurn, Plan, handing_out, items_of, load_tasks, run_work, work_keys


@dataclass
class RunResult:
    directory: Path
    status: str  # "finished", "stopped"
    done: int  # records written in this session
    skipped: int  # records already stored (resume)
    errors: int  # records with an error written in this session
    wall_s: float  # from the first request to the last record (models loaded and warm before)
    engine_s: float  # time inside engine calls, summed over this session's records
    configs: list[Config] = field(default_factory=list)


class Writer(PerTurn[Record]):
    """Records committed once per turn of the event loop (one transaction for those that complete
    together), so a killed run still loses only the requests in flight."""

    def __init__(self, store: Store, inline: bool = False):
        super().__init__(store.write_records)
        # Engines run inline on the loop's thread: the next request's whole generation may run
        # before the turn ends (at --concurrency 2 a record waited out another request, and a
        # kill then lost it), and no two records complete in one turn to share a commit.
        self.inline = inline

    async def write(self, record: Record) -> None:
        """Queue `record`, yield the turn (an inline engine would otherwise never give the loop
        one), and return once it is committed; a failed commit is raised here."""
        self.add(record)
        if self.inline:
            self.flush()
        await asyncio.sleep(0)
        self.check()

    def check(self) -> None:
        if self.failed is not None:
            raise self.failed


class Stop:
    """First Ctrl-C (or SIGTERM): finish what is in flight, start nothing new. Second: abort.

    A plain signal handler, not the event loop's: in-process engines may run inline on the
    loop's thread, and the flag must be seen between requests without the loop turning.
    """

    def __init__(self, notify: Callable[[str], None], command: str = "profile"):
        self.requested = False
        self.notify = notify
        self.command = command  # the one that resumes the run
        self.directory: Path | None = None  # the run's, once its store is open: to resume
        self._previous: dict[int, Any] = {}

    @property
    def to_continue(self) -> str:
        """'; continue with: tradeoff CMD --resume DIR' once the run's store is open, else ''."""
        if self.directory is None:
            return ""
        return f"; continue with: {resume_command(self.command, self.directory)}"

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            with contextlib.suppress(OSError):  # a stderr whose reader is gone: abort all the same
                self.notify("aborting now; requests in flight are lost" + self.to_continue)
            abort()  # ends the command line's process; a library call's caller gets Ctrl-C
        self.requested = True
        with contextlib.suppress(OSError):  # (raised here, it would stop the run at any point)
            if self.directory is None:  # on Ray, while the workers load the models
                self.notify("stopping: the run will not begin (Ctrl-C again to abort)")
            else:
                self.notify("stopping: finishing requests in flight (Ctrl-C again to abort)")

    def install(self) -> None:
        if self._previous:  # installed already
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: the caller handles it
                self._previous[sig] = signal.signal(sig, self)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


async def _execute(
    spec: RunSpec,
    tasks: list[Task],
    open_store: Callable[[], Store],
    *,
    api_key: str | None,
    on_progress: Callable[[int, int, int, int], None] | None,
    notify: Callable[[str], None],
    ray: RayExecutor | None = None,
    command: str = "profile",
) -> RunResult:
    configs = resolve_configs(spec)
    _warn_repeated_samples(spec, configs, notify)
    if not ray:  # (on Ray, each worker computes its own models' requests)
        _note_one_at_a_time(spec, configs, notify)
    unused = dispatch.unused_processes(spec, configs, on_ray=ray is not None)
    if unused:
        notify(unused)
    processes = 1 if ray else dispatch.processes_for(spec, configs)
    crowded = None if ray else over_cap(dispatch.share(spec.concurrency, 0, processes), configs)
    if crowded:
        notify(crowded)
    # Started first, so that they get ready while the models are checked and the store opened.
    helpers = dispatch.start_helpers(processes - 1)
    try:
        return await _run_session(
            spec, configs, tasks, open_store, helpers,
            api_key=api_key, on_progress=on_progress, notify=notify, ray=ray, command=command,
        )  # fmt: skip
    finally:
        for helper in helpers:  # those the run did not get to
            helper.close()


def open_run_session(
    spec: RunSpec,
    configs: list[Config],
    open_store: Callable[[], Store],
    stop: Stop,
    *,
    api_key: str | None,
    notify: Callable[[str], None],
    ray: RayExecutor | None,
    inline: bool = False,
) -> AbstractAsyncContextManager[Session | RaySession]:
    """The session a run drives: on Ray's workers, with `stop` installed first (the driver waits
    in the event loop while the workers load their models), or in this process."""
    if ray:
        stop.install()
        return open_ray_session(
            spec, configs, open_store, ray,
            api_key=api_key, notify=notify, stopped=lambda: stop.requested,
        )  # fmt: skip
    return open_session(
        configs, open_store, timeout_s=spec.timeout_s, api_key=api_key, notify=notify,
        inline=inline,
    )  # fmt: skip


async def _run_session(
    spec: RunSpec,
    configs: list[Config],
    tasks: list[Task],
    open_store: Callable[[], Store],
    helpers: list[dispatch.Helper],
    *,
    api_key: str | None,
    on_progress: Callable[[int, int, int, int], None] | None,
    notify: Callable[[str], None],
    ray: RayExecutor | None = None,
    command: str = "profile",
) -> RunResult:
    stop = Stop(notify, command)

    def store_opened() -> Store:
        store = open_store()
        stop.directory = store.directory  # from here, a failure names it to resume
        return store

    opened = open_run_session(
        spec, configs, store_opened, stop, api_key=api_key, notify=notify, ray=ray, inline=True
    )
    try:
        async with opened as session:
            store = session.store
            for task in tasks:
                store.add_items(items_of(task, spec.limit), task.scorer)
            plan = Plan(spec, configs, tasks, session.meter)
            done_keys = store.done_keys()
            work = [w for w in plan.work() if w not in done_keys]
            skipped = len(done_keys & set(plan.work()))
            result = RunResult(store.directory, "failed", 0, skipped, 0, 0.0, 0.0, configs)
            total = len(work)
            if on_progress:
                on_progress(0, total, skipped, 0)
            writer = Writer(store, session.meter.inline)

            def count(record: Record, engine_s: float) -> None:
                result.done += 1
                result.engine_s += engine_s
                result.errors += record.error is not None
                if on_progress:
                    on_progress(result.done, total, skipped, result.errors)

            async def emit(record: Record, engine_s: float) -> None:
                await writer.write(record)
                count(record, engine_s)

            def emit_batch(batch: list[tuple[Record, float]]) -> None:
                for record, engine_s in batch:
                    writer.add(record)
                    count(record, engine_s)

            stop.install()
            t_begin = time.perf_counter()
            try:
                with eventloop.steady():  # what was loaded, never garbage, is not scanned again
                    if isinstance(session, RaySession) and session.pool is not None:
                        pool = session.pool
                        await pool.run(work, shard_size(spec), lambda: stop.requested, emit_batch)
                        notify(
                            f"ran on Ray ({ray.address if ray else ''}): {pool.size} worker(s) for "
                            f"{len(pool.actors)} model group(s)"
                        )
                    elif helpers:
                        helped = await dispatch.run_in_processes(
                            plan, api_key, work, helpers, lambda: stop.requested, emit, emit_batch,
                            stop.to_continue,
                        )  # fmt: skip
                        notify(
                            f"dispatched from {len(helpers) + 1} processes: {helped} of "
                            f"{result.done} records by {len(helpers)} helper process(es)"
                        )
                    else:
                        concurrency = min(spec.concurrency, max(total, 1))
                        await run_work(
                            plan, handing_out(work), concurrency, lambda: stop.requested, emit
                        )
            finally:
                writer.flush()  # what completed as the run stopped
                result.wall_s = time.perf_counter() - t_begin
                stop.uninstall()
                if stop.requested:  # (a library call's second Ctrl-C leaves by KeyboardInterrupt)
                    session.status = "stopped"
            writer.check()
            result.status = "stopped" if stop.requested and result.done < total else "finished"
            session.status = result.status
    except sqlite3.Error as exc:  # the store could not be written (a full disk, say)
        where = stop.directory
        if where is None:  # (a store that cannot be made is a UserError of Store.create)
            raise RunFailed(f"the run store could not be written: {exc}") from None
        # by its primary code ("SQLITE_IOERR"): Python names the extended one ("..._WRITE")
        code = "_".join(str(getattr(exc, "sqlite_errorname", "")).split("_")[:2])
        mend = STORE_MENDS.get(code, "mend that")
        raise RunFailed(
            f"the run store in {where} could not be written: {exc}; the records committed are "
            f"kept: {mend}, then continue with {resume_command(command, where)}"
        ) from None
    finally:
        stop.uninstall()  # installed before the session opened, on Ray
    return result


def profile(
    spec: RunSpec,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    rescore_changed: bool = False,
    api_key: str | None = None,
    on_progress: Callable[[int, int, int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
    ray: str | None = None,
    command: str = "profile",
) -> RunResult:
    """Profile every configuration of `spec` on its tasks, writing records to a run directory.
    With `ray` (an address, 'auto', or 'local'), or the spec's `executor: {ray: ...}`, the work
    runs on a Ray cluster (`ray_run`); `ray="off"` runs here whatever the spec says. In a process
    connected to Ray already (the caller's own ray.init), the address must be that cluster's
    (`ray.get_runtime_context().gcs_address`) or 'auto', and the connection is left as it was.

    With `resume`, the run directory's stored spec is used and stored records are skipped. Items
    it asks again whose content changed since their records were stored stop the resume, unless
    `rescore_changed`: then their records are deleted and redone (those of one changed past the
    spec's limit now, never asked again, deleted). `command` is the one a
    stopped run names to continue it (`tradeoff demo` runs this too).
    """
    say = notify or (lambda msg: print(msg, file=sys.stderr))
    if resume is None:
        if out is None:
            raise ValueError("profile needs `out` or `resume`")
        if not spec.tasks:  # a spec only served needs none
            raise UserError(
                "the spec has no tasks: profiling needs at least one (list them under `tasks:`; "
                "`tradeoff tasks` shows the built-in ones)"
            )
        Store.ensure_new(out)
        executor = executor_of(spec, ray)
        spec = as_run(with_absolute_paths(spec), executor)
        tasks = load_tasks(spec)

        def open_store() -> Store:
            # Called once every model is loaded, so a bad model leaves no directory behind.
            return Store.create(out, spec.model_dump(mode="json"), host_info())

        return eventloop.run(
            _execute(
                spec,
                tasks,
                open_store,
                api_key=api_key,
                on_progress=on_progress,
                notify=say,
                ray=executor,
                command=command,
            )  # fmt: skip
        )
    # The directory is locked from here, before any model loads: a second writer fails at once.
    store = Store.open(resume, writer=True)
    try:
        spec = _resumable_spec(store, resume)
        configs = resolve_configs(spec)
        check_configs(store, configs)
        tasks = load_tasks(spec)
        _check_items(store, spec, tasks, rescore_changed, say, command)
        if store.run()["status"] == "finished":
            items = [(t.name, i.id) for t in tasks for i in items_of(t, spec.limit)]
            stored = store.done_keys()
            if set(work_keys(spec, [c.config_id for c in configs], items)) <= stored:
                say(f"nothing to resume: {resume} holds every record its spec asks for")
                return RunResult(store.directory, "finished", 0, len(stored), 0, 0.0, 0.0, configs)
        run = _execute(
            spec, tasks, lambda: store,
            api_key=api_key, on_progress=on_progress, notify=say, ray=executor_of(spec, ray),
            command=command,
        )  # fmt: skip
        return eventloop.run(run)
    finally:
        store.close()  # done by the session once it opened it; again is harmless


# What to do about a store SQLite could not write, by its error (others: "mend that").
STORE_MENDS = {
    "SQLITE_FULL": "make room",
    "SQLITE_READONLY": "give this user write access to it",
    "SQLITE_IOERR": "check the disk",
}


def _resumable_spec(store: Store, resume: str | Path) -> RunSpec:
    stored = store.run()["spec"]
    if what := not_profiled(stored):
        raise UserError(f"{resume} holds {what}, not a profile run: nothing to resume")
    if continued_by(stored) == "load":
        raise UserError(f"{resume} holds a load run{how_to_continue(stored, resume)}")
    return parse_spec(stored, f"{resume} (stored spec)")


def check_configs(store: Store, configs: list[Config], command: str = "profile") -> None:
    """Each stored configuration still runs what its records ran (`configs`: the stored spec's,
    resolved now): a route's policy file fitted again at the same path is another configuration
    under the same name. `command` is the one that made the run."""
    stored = {c["name"]: c for c in store.configs()}
    for config in configs:
        before = stored.get(config.name)
        if before is None or before["config_id"] == config.config_id:
            continue
        if same_but_where(before["spec"], config):  # a run that kept the path as written
            what = (
                f"its policy is now {config.params['policy']}, of the same content as "
                f"{before['spec']['params']['policy']}, which its records ran; resume it from "
                "the directory it was started in"
            )
        elif config.strategy == "route":
            what = (
                f"its policy {config.params['policy']}, or the spec's model_options for its "
                "models, changed since; restore it"
            )
        else:
            what = "what it runs changed since (a file it reads, or tradeoff's version); restore it"
        raise UserError(
            f"{store.directory}: configuration '{config.name}' is not what its records ran: "
            f"{what}, or {command} into a new --out"
        )


def few(names: list[str]) -> str:
    """The first five names, and how many more."""
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def changed_items_said(store: Store, ids: list[str], then: str) -> str:
    """The one line that stops a resume over items stored with other content (`ids`), and
    what to do `then`."""
    return (
        f"{store.directory}: {len(ids)} stored item(s) changed since their records were written "
        f"({few(ids)}: their question or answer, or the scorer that checks them, chosen from the "
        f"answers or updated); {then}"
    )


def changed_on_resume(
    store: Store,
    tasks: list[Task],
    limit: int | None,
    notify: Callable[[str], None],
    command: str,
    rescore_changed: bool | None = None,
) -> dict[str, list[Item]]:
    """What a resume finds of its tasks' items now against the stored ones, by task: those it
    asks again (the first `limit` of each) stored with other content that records answer.
    Stored items no longer in their task, or answered and past its first `limit` items now, are
    said: nothing more is asked of them, so their records stay, and are reported, as they were
    (a change to one stops nothing: its records answer what it was). With `rescore_changed`
    the records of those changed past the limit are deleted (None: `command` has no
    --rescore-changed). Those no record answers yet are stored as they now are."""
    gone: list[str] = []
    past: list[str] = []
    outdated: dict[str, list[Item]] = {}
    for t in tasks:
        asked = {item.id for item in items_of(t, limit)}
        answered = store.answered_ids(t.name)
        gone += [f"{t.name}#{i}" for i in sorted(store.item_ids(t.name) - {i.id for i in t.items})]
        beyond = [item for item in t.items if item.id in answered and item.id not in asked]
        past += [f"{t.name}#{item.id}" for item in beyond]
        outdated[t.name] = store.changed_items(beyond, t.scorer)
    changed = [f"{name}#{item.id}" for name, items in outdated.items() for item in items]
    leave_out = f"{command} into a new --out to leave them out"
    if gone:
        notify(
            f"{len(gone)} stored item(s) are no longer in their task ({few(gone)}): their "
            f"records stay in the run and its report; {leave_out}"
        )
    past_limit = f"past their task's first {limit} items, the spec's limit"
    if rescore_changed and changed:
        deleted = sum(store.replace_items(outdated[t.name], t.scorer) for t in tasks)
        notify(
            f"{len(changed)} stored item(s) now {past_limit}, changed in the file since "
            f"({few(changed)}): {deleted} stored record(s) deleted; not asked again"
        )
        past = [name for name in past if name not in changed]
        changed = []
    if past:
        since = ""
        if changed:
            since = (
                f"; {len(changed)} of them changed in the file since ({few(changed)}): their "
                "records are of the earlier content"
                + (", and --rescore-changed deletes them" if rescore_changed is False else "")
            )
        notify(
            f"{len(past)} stored item(s) are now {past_limit} ({few(past)}): not asked again, "
            f"their records stay in the run and its report as they were; {leave_out}{since}"
        )
    for t in tasks:
        store.renew_unanswered(items_of(t, limit), t.scorer)
    return {t.name: store.changed_items(items_of(t, limit), t.scorer) for t in tasks}


def _check_items(
    store: Store,
    spec: RunSpec,
    tasks: list[Task],
    rescore_changed: bool,
    notify: Callable[[str], None],
    command: str = "profile",
) -> None:
    """Stop a resume whose tasks now hold other content under the ids of stored items it asks
    again (a rewritten JSONL file), since their records would score answers to other questions;
    or, with `rescore_changed`, delete those records so that they are redone."""
    changed = changed_on_resume(store, tasks, spec.limit, notify, command, rescore_changed)
    ids = [f"{name}#{item.id}" for name, items in changed.items() for item in items]
    if not ids:
        return
    if not rescore_changed:
        raise UserError(
            changed_items_said(store, ids, "profile into a new --out, or add --rescore-changed "
                               "to redo them")
        )  # fmt: skip
    deleted = sum(store.replace_items(changed[t.name], t.scorer) for t in tasks)
    notify(f"{len(ids)} changed item(s) ({few(ids)}): {deleted} stored record(s) deleted, to redo")


def _note_one_at_a_time(spec: RunSpec, configs: list[Config], say: Callable[[str], None]) -> None:
    """`concurrency` above 1 where every model is computed in this process: they answer one
    request at a time, so the requests run one after another all the same."""
    if spec.concurrency < 2:
        return
    if not any(ref.startswith("openai:") for c in configs for ref in c.models.values()):
        say(
            f"note: concurrency {spec.concurrency} runs the requests one at a time all the same: "
            "in-process models (llama.cpp, torch) answer one request at a time; it keeps several "
            "in flight to openai: servers"
        )


def _warn_repeated_samples(
    spec: RunSpec, configs: list[Config], say: Callable[[str], None]
) -> None:
    """`samples` above 1 where a configuration answers at temperature 0: its samples repeat one
    answer, computed again for nothing."""
    if spec.samples < 2:
        return
    greedy = [c.name for c in configs if c.sampling.temperature == 0]
    if greedy:
        say(
            f"note: samples {spec.samples} at temperature 0 ({', '.join(greedy)}): each item's "
            "samples repeat one answer (the 95% CI is over items, so nothing is gained); give a "
            "temperature above 0, or samples 1 to measure each item once"
        )
