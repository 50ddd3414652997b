"""The run store: one SQLite file (WAL) per run directory holding the run, configs, items, records.

Each record is committed as soon as it is written, so a killed run loses at most the requests in
flight, and `--resume` skips what is stored. The file's `PRAGMA user_version` is its schema
version; opening an older store migrates it forward, so old run directories resume and report
(a reader of an old one that another process writes migrates a copy of its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from tradeoff.errors import UserError
from tradeoff.types import Item, Record

if TYPE_CHECKING:
    import pandas as pd  # imported where tables are read: writers need not load it

STORE_FILE = "tradeoff.sqlite"
# Held (flock, exclusive) by the one process that writes a run directory: profile, serve, import.
# Readers (report, frontier, policy) hold no lock: one opening a store of an older schema probes it
# for a moment (`writer_pid`), which a writer starting then waits out (LOCK_WAIT_S).
LOCK_FILE = "tradeoff.lock"
# How long a writer tries again for the directory's lock before it names the process that holds
# it: another writer holds it for its whole run, a reader's probe for a moment.
LOCK_WAIT_S = 1.5
# The files of a store: no output is written over one (`cli.output.check_writable`).
STORE_FILES = (STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm", LOCK_FILE)

# How long a connection waits for another process's write lock (a migration, a serving writer)
# before failing with "database is locked": generous, since a loaded machine can stall a writer.
LOCK_TIMEOUT_S = 30.0

# The tables of schema version 1. Stores written before versioning have exactly these, with
# user_version 0.
_TABLES_V1 = (
    """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    host TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS sessions (
    run_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT
)""",
    """CREATE TABLE IF NOT EXISTS meters (
    run_id TEXT NOT NULL,
    session_started_at REAL NOT NULL,
    summary TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS configs (
    run_id TEXT NOT NULL,
    config_id TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (run_id, config_id)
)""",
    """CREATE TABLE IF NOT EXISTS items (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    item_id TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (run_id, task, item_id)
)""",
    """CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL,
    config_id TEXT NOT NULL,
    task TEXT NOT NULL,
    item_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    output TEXT NOT NULL,
    score REAL,
    parsed TEXT,
    error TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER NOT NULL,
    ttft_s REAL,
    e2e_s REAL NOT NULL,
    itl_s REAL,
    decode_tps REAL,
    energy_j REAL,
    energy_source TEXT,
    energy_missing TEXT,
    flops REAL,
    peak_rss_bytes INTEGER,
    cost_usd REAL,
    calls TEXT NOT NULL,
    extra TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (run_id, config_id, task, item_id, sample)
)""",
)


def _create_tables(conn: sqlite3.Connection) -> None:
    """0 -> 1. A store written before versioning has these tables already: it is only stamped."""
    for statement in _TABLES_V1:
        conn.execute(statement)


Migration = Callable[[sqlite3.Connection], None]


def _item_hashes(conn: sqlite3.Connection) -> None:
    """1 -> 2. Each item's content hash (`item_hash`), so that resume finds items whose content
    changed since their records were written; NULL in old rows (their stored item is compared)."""
    conn.execute("ALTER TABLE items ADD COLUMN content_hash TEXT")


_RECORDS_V1 = _TABLES_V1[-1]
_LOAD_COLUMNS = """,
    load_point TEXT NOT NULL DEFAULT '',
    phase TEXT,
    scheduled_s REAL,
    sent_s REAL,
    queue_delay_s REAL,
    UNIQUE (run_id, config_id, task, item_id, sample, load_point)
)"""


def _load_points(conn: sqlite3.Connection) -> None:
    """2 -> 3. Load runs (`tradeoff load`): each record's load point ('' for a profile run's),
    its phase (warmup, measure, cooldown), scheduled and actual send times (s from the start of
    its load point) and queue delay; records are unique per load point too, so the table is
    rebuilt. Besides: the load points run, and time series of the host's conditions and of the
    upstreams' own metrics (scraped)."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(records)")]
    head, _, _ = _RECORDS_V1.rpartition(",\n    UNIQUE")
    conn.execute(head.replace("records (", "records_v3 (", 1) + _LOAD_COLUMNS)
    names = ", ".join(columns)
    conn.execute(f"INSERT INTO records_v3 ({names}) SELECT {names} FROM records ORDER BY rowid")
    conn.execute("DROP TABLE records")
    conn.execute("ALTER TABLE records_v3 RENAME TO records")
    conn.execute(
        """CREATE TABLE load_points (
    run_id TEXT NOT NULL,
    config_id TEXT NOT NULL,
    load_point TEXT NOT NULL,
    spec TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    summary TEXT,
    PRIMARY KEY (run_id, config_id, load_point)
)"""
    )
    conn.execute(
        "CREATE TABLE host_samples (run_id TEXT NOT NULL, t REAL NOT NULL, sample TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE scrapes (run_id TEXT NOT NULL, source TEXT NOT NULL, t REAL NOT NULL, "
        "sample TEXT NOT NULL)"
    )


def _evaluations(conn: sqlite3.Connection) -> None:
    """3 -> 4. Evaluations made on a run's records after it ran (`tradeoff policy eval`), kept
    with the run so that its report shows them: what was evaluated (`kind`, e.g. 'router') and
    the result as JSON."""
    conn.execute(
        "CREATE TABLE evaluations (run_id TEXT NOT NULL, created_at REAL NOT NULL, "
        "kind TEXT NOT NULL, result TEXT NOT NULL)"
    )


# What the analysis reads of each record's engine calls (`calls`), stored beside them so that
# summarizing a run decodes no JSON (issue 14: a million records in seconds): call_models, a
# JSON list of each call's model, in order; unreported_models, of the models of the calls that
# reported no input tokens (so were not priced), NULL where every call did; call_rooflines, each
# call's roofline_s and e2e_s in turn, as JSON writes them (float() reads them back exactly),
# separated by commas, NULL where a call lacks either; call_seconds, the seconds the calls took
# (their e2e_s summed, a batch's once: the time their energy was measured over, without the
# waits between), NULL where a call lacks it or there is none; counted_in_chunks, 1 where a call
# that answered had its output tokens counted in stream chunks (a server that sent no usage: a
# chunk may hold several tokens), else 0. `call_facts` computes them.
CALL_FACTS = (
    "call_models", "unreported_models", "call_rooflines", "call_seconds", "counted_in_chunks",
)  # fmt: skip
CALL_FACTS_V5 = CALL_FACTS[:3]  # those schema 5 added


def call_facts(calls: Any) -> tuple[str, str | None, str | None, float | None, int]:
    """A record's CALL_FACTS, from its calls (as stored: JSON text, or decoded)."""
    found = json.loads(calls) if isinstance(calls, str) else calls or []
    models = [c.get("model") for c in found]
    # a failed call reports no tokens because it failed, not because its model reports none
    unreported = [
        c.get("model") for c in found if c.get("input_tokens") is None and not c.get("error")
    ]
    timed = all(c.get("roofline_s") is not None and c.get("e2e_s") is not None for c in found)
    # a row of a batch of b: its share, 1/b of the batch's roofline time and of its time (each
    # row holds the whole batch's: a vote of 3 drawn as one batch read 3 batches' least time)
    times = (
        json.dumps(t / c.get("batch", 1)) for c in found for t in (c["roofline_s"], c["e2e_s"])
    )
    rooflines = ",".join(times) if timed else None
    spans = [c.get("e2e_s") for c in found]
    # a batch's rows each last the whole batch: its time counts once (one batch a record)
    batched = [s for c, s in zip(found, spans, strict=True) if c.get("batch", 1) > 1]
    alone = [s for c, s in zip(found, spans, strict=True) if c.get("batch", 1) <= 1]
    seconds = (
        None if not spans or None in spans else float(sum(alone)) + float(max(batched, default=0.0))
    )
    unreported_text = json.dumps(unreported) if unreported else None
    chunks = any(
        str(c.get("token_count_source", "")).startswith("chunks") and not c.get("error")
        for c in found
    )
    return json.dumps(models), unreported_text, rooflines, seconds, int(chunks)


def _call_fact_columns(conn: sqlite3.Connection) -> None:
    """4 -> 5. The CALL_FACTS of each record then (CALL_FACTS_V5), as columns of `records`:
    written with each record from now on, computed here for the records already stored."""
    for name in CALL_FACTS_V5:
        conn.execute(f"ALTER TABLE records ADD COLUMN {name} TEXT")
    _fill_call_facts(conn, CALL_FACTS_V5)


def _fill_call_facts(conn: sqlite3.Connection, names: tuple[str, ...]) -> None:
    """The CALL_FACTS `names` of every stored record, from its calls."""
    update = f"UPDATE records SET {', '.join(f'{n} = ?' for n in names)} WHERE rowid = ?"
    indices = [CALL_FACTS.index(name) for name in names]
    last = 0
    # a chunk at a time, so that a million records' calls are never decoded at once
    while rows := conn.execute(
        "SELECT rowid, calls FROM records WHERE rowid > ? ORDER BY rowid LIMIT 10000", (last,)
    ).fetchall():
        facts = [(call_facts(calls), rowid) for rowid, calls in rows]
        conn.executemany(update, [(*(f[i] for i in indices), rowid) for f, rowid in facts])
        last = rows[-1][0]


def _embeddings(conn: sqlite3.Connection) -> None:
    """5 -> 6. Sentence embeddings of the run's queries (`policy.embed`), by model and a digest
    of the text, so that refitting or re-evaluating a router embeds nothing twice; `vector` is
    float32, little-endian."""
    conn.execute(
        "CREATE TABLE embeddings (model TEXT NOT NULL, digest TEXT NOT NULL, "
        "vector BLOB NOT NULL, PRIMARY KEY (model, digest))"
    )


# A record that a vote or a cascade answered, told by what they write in its extra (as
# `analysis.costs.released_whole` tells it): a `route` record whose policy ran one among them
# (the configurations it ran are in the policy's file, not in the store).
_RAN_VOTE_OR_CASCADE = (
    "(json_type(extra, '$.samples_drawn') IS NOT NULL OR json_type(extra, '$.escalated') IS NOT "
    "NULL)"
)


def _run_by(*strategies: str) -> str:
    """Where a record's configuration runs one of `strategies`, in SQL."""
    names = ", ".join(f"'{name}'" for name in strategies)
    return (
        "EXISTS (SELECT 1 FROM configs c WHERE c.run_id = records.run_id AND c.config_id = "
        f"records.config_id AND json_extract(c.spec, '$.strategy') IN ({names}))"
    )


def _released_ttft(conn: sqlite3.Connection) -> None:
    """6 -> 7. A `vote` or `cascade` record's TTFT is when its chosen answer is released whole,
    after every call, as those strategies record it since 2f2e86d; stores written before held
    the first draw's first token, which no client saw (a run resumed after would mix the two).
    Their TTFT becomes the release's, the end of the strategy's work: the record's e2e. So does
    that of a `route` record whose policy ran one (`_RAN_VOTE_OR_CASCADE`)."""
    conn.execute(
        "UPDATE records SET ttft_s = e2e_s WHERE ttft_s IS NOT NULL AND "
        f"({_run_by('vote', 'cascade')} OR {_RAN_VOTE_OR_CASCADE})"
    )


def _call_seconds(conn: sqlite3.Connection) -> None:
    """7 -> 8. call_seconds (CALL_FACTS): the time a record's energy was measured over, for its
    mean power (a record's e2e counts its waits for the engine: under load, power read low)."""
    conn.execute("ALTER TABLE records ADD COLUMN call_seconds REAL")
    _fill_call_facts(conn, ("call_seconds",))


def _batch_shares(conn: sqlite3.Connection) -> None:
    """8 -> 9. call_rooflines and unreported_models (CALL_FACTS) as `call_facts` computes them
    since c0308d6: a batch's row its share of the batch's roofline time (each held the whole
    batch's: a vote of 3 drawn as one batch read 3 batches' least time), and a failed call no
    model that reports no tokens. Refilled, so that a resumed run does not mix the two."""
    _fill_call_facts(conn, ("unreported_models", "call_rooflines"))


def _counted_in_chunks(conn: sqlite3.Connection) -> None:
    """9 -> 10. counted_in_chunks (CALL_FACTS): the tables note answers whose tokens were counted
    in stream chunks, whatever the task (only a synthetic task's were, its calls decoded)."""
    conn.execute("ALTER TABLE records ADD COLUMN counted_in_chunks INTEGER")
    _fill_call_facts(conn, ("counted_in_chunks",))


def _released_ttft_of_routes(conn: sqlite3.Connection) -> None:
    """10 -> 11. Step 7's release TTFT for a `route` record whose policy ran a vote or a cascade,
    which step 7 gave only since b0e5dc0: a store an earlier tradeoff took past 7 kept such a
    record's first draw's first token. Records that say `released_whole` (written since b2996f2)
    hold their release already and are left as they are, and so is a store that step 7 took
    there with the routes (their TTFT is their e2e already); others written since 2f2e86d held
    their release, which their e2e replaces as step 7 replaced it."""
    conn.execute(
        "UPDATE records SET ttft_s = e2e_s WHERE ttft_s IS NOT NULL AND "
        f"{_run_by('route')} AND {_RAN_VOTE_OR_CASCADE} AND "
        "json_type(extra, '$.released_whole') IS NULL"
    )


# MIGRATIONS[k] takes a store from schema version k to k + 1, inside the transaction that bumps
# the version. A new store is an empty file taken through every step, so a new store and a
# migrated one have the same tables, columns in the same order. Adding a field to Record is one
# step here (e.g. `ALTER TABLE records ADD COLUMN cache_hit REAL`, NULL in old rows) plus the
# field, with a default, on Record.
MIGRATIONS: list[Migration] = [
    _create_tables,
    _item_hashes,
    _load_points,
    _evaluations,
    _call_fact_columns,
    _embeddings,
    _released_ttft,
    _call_seconds,
    _batch_shares,
    _counted_in_chunks,
    _released_ttft_of_routes,
]

# The Record fields stored as columns of `records`, in the order written; every field of Record.
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Record))
_JSON_FIELDS = {"calls", "extra"}


def json_text(value: Any) -> str:
    """`value` as JSON, its letters written as letters; escaped where a lone surrogate (as an
    upstream's broken error message may hold) could not be stored as UTF-8."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def schema_version() -> int:
    """The schema version this tradeoff writes, and the newest it reads."""
    return len(MIGRATIONS)


def _stored_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the store to `schema_version()`, one step per transaction. Each step takes the write
    lock first and re-reads the version under it, so of two processes opening an old store at
    once, one migrates and the other finds it done. The other waits as long as the version
    moves on: the migrating one takes the lock again at once after each step, so a migration
    longer than LOCK_TIMEOUT_S (a million records) would starve it."""
    target = schema_version()
    while (version := _stored_version(conn)) != target:
        if version > target:
            raise UserError(
                f"{path} was written by a newer tradeoff (schema {version}; this one reads up "
                f"to {target}); upgrade tradeoff"
            )
        with conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or _stored_version(conn) == version:
                    raise
                continue
            if _stored_version(conn) == version:
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")


def _busy(exc: sqlite3.Error) -> bool:
    """Whether `exc` is SQLite's "database is locked": another process held the lock longer than
    LOCK_TIMEOUT_S."""
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11 on; 3.10 has the message only
    return name.startswith("SQLITE_BUSY") or (not name and "database is locked" in str(exc))


def _journal(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """What SQLite fails to read of the store at `path` as one line: a damaged file (found at
    once, or only on reading the page that holds the damage), or one locked too long."""
    try:
        yield
    except Exception as exc:
        # pandas.read_sql_query raises its own DatabaseError, from SQLite's
        found = exc if isinstance(exc, sqlite3.DatabaseError) else exc.__cause__
        if not isinstance(found, sqlite3.DatabaseError):
            raise
        if _busy(found):  # busy, not unreadable: fine once the other process ends
            raise UserError(
                f"{path} is locked by another process (a tradeoff migrating it to schema "
                f"{schema_version()}, or writing it); try again when it ends"
            ) from None
        raise UserError(f"{path} is not a readable tradeoff store: {found}") from None


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _read(method: Callable[Concatenate[Store, _P], _T]) -> Callable[Concatenate[Store, _P], _T]:
    """A Store method that reads the store, what SQLite fails to read said as `_reading` says it:
    damage is found only on reading the page that holds it, whichever table's that is."""

    @functools.wraps(method)
    def reading(store: Store, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with _reading(store.directory / STORE_FILE):
            return method(store, *args, **kwargs)

    return reading


def _first_run(conn: sqlite3.Connection, path: Path) -> str:
    """The id of the store's run, once the store is migrated to the current schema."""
    with _reading(path):
        # Checked before migrating, so that another program's SQLite file is left untouched.
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
            raise UserError(f"{path} is not a readable tradeoff store: it has no runs table")
        _migrate(conn, path)
        row = conn.execute("SELECT id FROM runs ORDER BY created_at LIMIT 1").fetchone()
    if row is None:
        raise UserError(f"{path} holds no run")
    return str(row[0])


def _insert_record_sql(columns: list[str]) -> str:
    return (
        f"INSERT OR REPLACE INTO records ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )


def item_json(item: Item) -> str:
    """The item as stored: every field of Item, as JSON. (Not dataclasses.asdict, which
    deep-copies the prompt first: a cost per served request.)"""
    return json.dumps({f: getattr(item, f) for f in _ITEM_FIELDS})


_ITEM_FIELDS = [f.name for f in fields(Item)]


def item_hash(item: Item, scorer: object) -> str:
    """What an item's records depend on: the item (prompt, reference, metadata) and the scorer
    that checks it (its repr: name and settings), as a short hash."""
    return hashlib.sha256(f"{item_json(item)}\0{scorer!r}".encode()).hexdigest()[:16]


def _hash_or_none(item: Item, scorer: object) -> str | None:
    return None if scorer is None else item_hash(item, scorer)


def being_written(directory: str | Path, pid: str | None) -> UserError:
    """The refusal of a run directory another tradeoff process holds (its lock's pid)."""
    return UserError(
        f"{directory} is being written by another tradeoff process (pid {pid}); wait for it to "
        "end, or write to another directory"
    )


def _lock(directory: Path) -> int:
    """An exclusive lock on the run directory, held until the returned descriptor is closed."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only file system, a directory not ours to write
        raise UserError(f"cannot write to {directory}: {exc.strerror}") from None
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            holder = _holder(fd)
            os.close(fd)
            raise being_written(directory, holder) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _holder(fd: int) -> str:
    """The pid the directory's lock file `fd` holds: its writer's."""
    return os.read(fd, 32).decode(errors="replace").strip() or "unknown"


def writer_pid(directory: str | Path) -> str | None:
    """The pid of another process that writes `directory` (holds its lock) now, or None."""
    try:
        fd = os.open(Path(directory) / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no writer ever
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        # this process, under `Store.create`'s lock, is not another
        return None if holder == str(os.getpid()) else holder
    finally:
        os.close(fd)
    return None


def _check_writable(path: Path) -> None:
    """A writer's store file and its journal files can be opened for writing: before the run
    loads its models (SQLite said "attempt to write a readonly database" at the first record)."""
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        try:
            with open(file, "r+b"):
                pass
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UserError(
                f"cannot write {file}: {exc.strerror}; give this user write access to it"
            ) from None


def can_write(directory: str | Path) -> bool:
    """Whether this process can write `directory` and the store in it; a reader of a run it
    cannot write (a read-only file system, another user's run) reads the store as it is and
    adds nothing."""
    store = Path(directory) / STORE_FILE
    return os.access(directory, os.W_OK) and (not store.exists() or os.access(store, os.W_OK))


def _private_copy(conn: sqlite3.Connection) -> sqlite3.Connection:
    """A copy of the store `conn` reads, of this process's own, in place of `conn` (closed): a
    temporary file that SQLite deletes when the copy is closed (its name is "")."""
    copy = sqlite3.connect("", isolation_level=None, check_same_thread=False)
    try:
        conn.backup(copy)
    except BaseException:
        copy.close()
        raise
    finally:
        conn.close()
    return copy


def _continued(directory: str | Path) -> str:
    """'continue it with tradeoff CMD --resume DIR or ' for the run stored in `directory`, or ''
    where nothing continues it (imported outcomes, served traffic) or its store is unreadable."""
    from tradeoff.resumes import continued_by, resume_command

    try:
        store = Store.open(directory)
    except UserError:
        return ""
    try:
        command = continued_by(store.run()["spec"])
    except UserError:  # (unreadable)
        return ""
    finally:
        store.close()
    return "" if command is None else f"continue it with {resume_command(command, directory)} or "


class Store:
    """A run directory's SQLite store. One run per directory. Every method that reads it is
    `@_read`, so that a damaged page says so in one line whichever table holds it."""

    def __init__(
        self,
        directory: Path,
        conn: sqlite3.Connection,
        run_id: str,
        lock: int | None = None,
        not_kept: str | None = None,
    ):
        self.directory = directory
        self.conn = conn
        self.run_id = run_id
        self._lock = lock  # the directory's lock, held by a writer
        # Why what a reader adds after a run (evaluations, embeddings) is not kept, said after
        # the directory's name; None where it is. A store read as it is (`open` of a directory
        # this process cannot write), or through a migrated copy (another process writes it).
        self.not_kept = not_kept
        # Read once, so that a test may extend RECORD_FIELDS (with MIGRATIONS) before opening.
        self._record_fields = RECORD_FIELDS
        self._insert_record = _insert_record_sql(
            ["run_id", *RECORD_FIELDS, "created_at", *CALL_FACTS]
        )
        # Host samples come from the sampler's thread: written on a connection of their own, so
        # that they never join (or collide with) a transaction of the records' writer.
        self._samples_conn: sqlite3.Connection | None = None
        self._samples_lock = threading.Lock()

    @staticmethod
    def _connect(path: Path, journal: bool = True, frozen: bool = False) -> sqlite3.Connection:
        """A connection to the store; `journal`: in WAL mode (set in the file), which `open`
        sets only once the file is known to be a store (another program's is left as it was);
        `frozen`: read as an immutable file (a directory this process cannot write)."""
        where: str | Path = f"{path.resolve().as_uri()}?immutable=1" if frozen else path
        conn = sqlite3.connect(
            where, isolation_level=None, check_same_thread=False, timeout=LOCK_TIMEOUT_S,
            uri=frozen,
        )  # fmt: skip
        if journal:
            _journal(conn)
        return conn

    @staticmethod
    def ensure_free(directory: str | Path) -> None:
        """Raise if `directory` already holds a run, naming the process writing it, or else the
        command that continues it (read from its stored spec: `profile`, `demo` or `load
        --resume`; nothing for imported outcomes or served traffic)."""
        if not (Path(directory) / STORE_FILE).exists():
            return
        if (pid := writer_pid(directory)) is not None:  # a --resume would be refused
            raise being_written(directory, pid)
        raise UserError(
            f"{directory} already holds a run; {_continued(directory)}choose another --out"
        )

    @staticmethod
    def ensure_new(directory: str | Path) -> None:
        """Raise if `directory` already holds a run, or other files: a run directory is the
        run's alone (`--out .` in a project, or a folder of data, would mix them)."""
        Store.ensure_free(directory)
        path = Path(directory)
        if path.is_dir() and any(path.iterdir()):
            names = sorted(p.name for p in path.iterdir())
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise UserError(
                f"--out {directory}: the directory holds other files ({shown}); give a new or "
                "empty directory for the run"
            )
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {directory} is a file; give a new or empty directory")

    @classmethod
    def create(cls, directory: str | Path, spec: dict[str, Any], host: dict[str, Any]) -> Store:
        cls.ensure_free(directory)
        directory = Path(directory)
        path = directory / STORE_FILE
        made = not directory.exists()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run directory {directory}: {exc.strerror}") from None
        lock = _lock(directory)
        conn: sqlite3.Connection | None = None
        try:
            cls.ensure_free(directory)  # again, under the lock: another writer may have been first
        except BaseException:
            os.close(lock)
            raise
        try:
            conn = cls._connect(path)
            _migrate(conn, path)
            run_id = uuid.uuid4().hex[:12]
            conn.execute(
                "INSERT INTO runs (id, created_at, status, spec, host) "
                "VALUES (?, ?, 'running', ?, ?)",
                (run_id, time.time(), json.dumps(spec), json.dumps(host)),
            )
        except BaseException as exc:
            # A store half made (a full disk) would hold no run, and neither --resume nor a
            # new run could use its directory: none is left.
            if conn is not None:
                conn.close()
            for name in STORE_FILES:
                with contextlib.suppress(OSError):
                    (directory / name).unlink(missing_ok=True)
            os.close(lock)
            if made:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise UserError(f"cannot create the run store in {directory}: {exc}") from None
            raise
        return cls(directory, conn, run_id, lock)

    @classmethod
    def open(cls, directory: str | Path, *, writer: bool = False) -> Store:
        """The run stored in `directory`; a `writer` holds the directory's lock until `close`,
        and fails with a clear error where another process holds it (for LOCK_WAIT_S)."""
        directory = Path(directory)
        path = directory / STORE_FILE
        if directory.is_file():
            raise UserError(
                f"{directory} is a file; give the run's directory (it holds {STORE_FILE})"
            )
        if not directory.exists():
            raise UserError(f"{directory} does not exist; give a run directory")
        if not path.is_file():
            raise UserError(f"{directory} holds no tradeoff run ({STORE_FILE} not found)")
        lock = _lock(directory) if writer else None
        if lock is not None:
            try:
                _check_writable(path)
            except UserError:
                os.close(lock)
                raise
        # A reader of a directory it cannot write (a read-only file system, another user's
        # run) cannot make the files SQLite reads a store in WAL mode through: it reads the
        # file as it is, which no one can be changing there (an old one through a migrated
        # copy of its own).
        frozen = not writer and not can_write(directory)
        wal = directory / f"{STORE_FILE}-wal"
        if frozen and wal.exists() and wal.stat().st_size > 0:  # read as it is, it lacks them
            raise UserError(
                f"{directory} cannot be written, and the last records of its run are still in "
                f"{wal.name} (a run stopped hard, or still being written there): read a copy of "
                "the directory made where it can be written"
            )
        pid = None
        try:
            with _reading(path):
                conn = cls._connect(path, journal=False, frozen=frozen)
                old = _stored_version(conn) < schema_version()
                # Nor does a reader migrate an old store that another process writes (an older
                # tradeoff would go on inserting rows without the new columns, then fail at its
                # end on a store "written by a newer tradeoff"): it reads a migrated copy, as of
                # now. Only an old store is probed for a writer: a probe delays one (`_lock`).
                if old and not writer and not frozen:
                    pid = writer_pid(directory)
                copied = old and (frozen or pid is not None)
                if copied:
                    conn = _private_copy(conn)  # migrated there, the file left as it is
        except BaseException:
            if lock is not None:
                os.close(lock)
            raise
        try:
            run_id = _first_run(conn, path)
            if frozen:
                return cls(directory, conn, run_id, not_kept="cannot be written")
            if copied:
                written = f"is being written by another tradeoff process (pid {pid})"
                return cls(directory, conn, run_id, not_kept=f"{written}, read through a copy")
            _journal(conn)
            return cls(directory, conn, run_id, lock)
        except BaseException:
            conn.close()
            if lock is not None:
                os.close(lock)
            raise

    @property
    def writable(self) -> bool:
        """Whether what a reader adds after a run is kept in the run's store (`not_kept`)."""
        return self.not_kept is None

    def close(self) -> None:
        """Close the connection and release the directory's lock (twice is harmless)."""
        with self._samples_lock:
            if self._samples_conn is not None:
                self._samples_conn.close()
                self._samples_conn = None
        self.conn.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # --- run metadata -------------------------------------------------------------------------

    @_read
    def run(self) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT id, created_at, ended_at, status, spec, host FROM runs WHERE id = ?",
            (self.run_id,),
        ).fetchone()
        sessions = self.conn.execute(
            "SELECT started_at, ended_at, status FROM sessions "
            "WHERE run_id = ? ORDER BY started_at",
            (self.run_id,),
        ).fetchall()
        meters = self.conn.execute(
            "SELECT summary FROM meters WHERE run_id = ? ORDER BY session_started_at",
            (self.run_id,),
        ).fetchall()
        return {
            "meters": [json.loads(m[0]) for m in meters],
            "id": row[0],
            "created_at": row[1],
            "ended_at": row[2],
            "status": row[3],
            "spec": json.loads(row[4]),
            "host": json.loads(row[5]),
            "sessions": [{"started_at": s[0], "ended_at": s[1], "status": s[2]} for s in sessions],
        }

    def begin_session(self) -> float:
        started = time.time()
        self.conn.execute(
            "INSERT INTO sessions (run_id, started_at) VALUES (?, ?)", (self.run_id, started)
        )
        self.conn.execute("UPDATE runs SET status = 'running' WHERE id = ?", (self.run_id,))
        return started

    def add_meter_summary(self, started: float, summary: dict[str, Any]) -> None:
        """What the meters saw in the session begun at `started`: a stepped energy counter's idle
        baseline and totals, and the host's conditions (`meters.conditions.summarize`) under
        "host_conditions"."""
        self.conn.execute(
            "INSERT INTO meters (run_id, session_started_at, summary) VALUES (?, ?, ?)",
            (self.run_id, started, json.dumps(summary)),
        )

    def add_nodes(self, nodes: list[dict[str, Any]]) -> None:
        """The machines a Ray run's workers ran on (each a `host_info()` with its Ray `node_id`),
        this session's `nodes`, added to the run's host description under "nodes". A node an
        earlier session listed on a machine this one ran on again is replaced (a resumed run's
        new cluster, `--ray local`, gives the same machine another node id: it was listed once
        a session); this session's are kept, each (several nodes may share a machine)."""
        host = self.run()["host"]
        again = {n.get("hostname") for n in nodes}
        listed = {
            n.get("node_id"): n for n in host.get("nodes", []) if n.get("hostname") not in again
        }
        listed.update({n.get("node_id"): n for n in nodes})
        host["nodes"] = list(listed.values())
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET host = ? WHERE id = ?", (json.dumps(host), self.run_id)
            )

    def add_host_samples(self, samples: list[dict[str, Any]]) -> None:
        """Samples of the host's conditions (`meters.conditions`: dicts with their time `t`), in
        one transaction. Safe from any thread."""
        rows = [(self.run_id, s["t"], json.dumps(s)) for s in samples]
        with self._samples_lock:
            if self._samples_conn is None:
                self._samples_conn = self._connect(self.directory / STORE_FILE)
            with self._samples_conn:
                self._samples_conn.execute("BEGIN")
                self._samples_conn.executemany(
                    "INSERT INTO host_samples (run_id, t, sample) VALUES (?, ?, ?)", rows
                )

    @_read
    def host_samples(self) -> list[dict[str, Any]]:
        """Every sample of the host's conditions taken during the run, in time order."""
        rows = self.conn.execute(
            "SELECT sample FROM host_samples WHERE run_id = ? ORDER BY t", (self.run_id,)
        )
        return [json.loads(r[0]) for r in rows]

    def end_session(self, started: float, status: str) -> None:
        now = time.time()
        self.conn.execute(
            "UPDATE sessions SET ended_at = ?, status = ? WHERE run_id = ? AND started_at = ?",
            (now, status, self.run_id, started),
        )
        self.conn.execute(
            "UPDATE runs SET status = ?, ended_at = ? WHERE id = ?", (status, now, self.run_id)
        )

    # --- configs and items --------------------------------------------------------------------

    def add_configs(self, configs: list[tuple[str, str, dict[str, Any]]]) -> None:
        """(config_id, name, spec) triples; existing ones are kept."""
        self.conn.executemany(
            "INSERT OR IGNORE INTO configs (run_id, config_id, name, spec) VALUES (?, ?, ?, ?)",
            [(self.run_id, cid, name, json.dumps(spec)) for cid, name, spec in configs],
        )

    def forget_config(self, config_id: str) -> bool:
        """Delete a configuration that no record ran (a server's, stopped before it served), so
        that another may take its name or its id; False, and nothing deleted, where records ran
        it."""
        if self._ran(config_id):
            return False
        self.conn.execute(
            "DELETE FROM configs WHERE run_id = ? AND config_id = ?", (self.run_id, config_id)
        )
        return True

    @_read
    def _ran(self, config_id: str) -> bool:
        """Whether a record ran the configuration `config_id`."""
        (ran,) = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM records WHERE run_id = ? AND config_id = ?)",
            (self.run_id, config_id),
        ).fetchone()
        return bool(ran)

    @_read
    def configs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT config_id, name, spec FROM configs WHERE run_id = ? ORDER BY rowid",
            (self.run_id,),
        ).fetchall()
        return [{"config_id": r[0], "name": r[1], "spec": json.loads(r[2])} for r in rows]

    def add_items(self, items: list[Item], scorer: object = None) -> None:
        """Store items not stored yet, with their content hash when `scorer` is given (a task's
        items); a stored item is kept as it is (see `changed_items`)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR IGNORE INTO items (run_id, task, item_id, item, content_hash) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (self.run_id, it.task, it.id, item_json(it), _hash_or_none(it, scorer))
                    for it in items
                ],
            )

    @_read
    def item_ids(self, task: str) -> set[str]:
        """The ids of the items stored for `task`."""
        rows = self.conn.execute(
            "SELECT item_id FROM items WHERE run_id = ? AND task = ?", (self.run_id, task)
        )
        return {row[0] for row in rows}

    @_read
    def answered_ids(self, task: str) -> set[str]:
        """The ids of `task`'s items that have a record."""
        rows = self.conn.execute(
            "SELECT DISTINCT item_id FROM records WHERE run_id = ? AND task = ?",
            (self.run_id, task),
        )
        return {row[0] for row in rows}

    def renew_unanswered(self, items: list[Item], scorer: object) -> None:
        """Store `items` (of one task) that no record answers yet with their content now: a task
        file edited while the run was stopped is asked as it now is, where nothing was asked of
        the old (`changed_items` is about the answered ones)."""
        if not items:
            return
        answered = self.answered_ids(items[0].task)
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "UPDATE items SET item = ?, content_hash = ? "
                "WHERE run_id = ? AND task = ? AND item_id = ?",
                [
                    (item_json(it), item_hash(it, scorer), self.run_id, it.task, it.id)
                    for it in items
                    if it.id not in answered
                ],
            )

    @_read
    def changed_items(self, items: list[Item], scorer: object) -> list[Item]:
        """Those of `items` (of one task, checked by `scorer`) stored with other content that
        records answer: those records answer or score something else. Old stores kept no hash:
        there the stored item is compared, the scorer (from the same stored spec) taken as
        unchanged."""
        if not items:
            return []
        answered = self.answered_ids(items[0].task)
        stored = {
            row[0]: (row[1], row[2])
            for row in self.conn.execute(
                "SELECT item_id, item, content_hash FROM items WHERE run_id = ? AND task = ?",
                (self.run_id, items[0].task),
            )
        }
        changed = []
        for item in items:
            if item.id not in stored or item.id not in answered:
                continue
            old_item, old_hash = stored[item.id]
            same = (
                old_item == item_json(item)
                if old_hash is None
                else old_hash == item_hash(item, scorer)
            )
            if not same:
                changed.append(item)
        return changed

    def replace_items(self, items: list[Item], scorer: object) -> int:
        """Store `items` with their new content and delete their records, in one transaction, so
        that a resume redoes them; the number of records deleted. A finished run no longer is
        (until the resume finishes it): it reads as stopped while the resume loads its models, and
        after, where the resume stops before its session begins."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute(
                "UPDATE runs SET status = 'stopped' WHERE id = ? AND status = 'finished'",
                (self.run_id,),
            )
            deleted = 0
            for it in items:
                self.conn.execute(
                    "UPDATE items SET item = ?, content_hash = ? "
                    "WHERE run_id = ? AND task = ? AND item_id = ?",
                    (item_json(it), item_hash(it, scorer), self.run_id, it.task, it.id),
                )
                deleted += self.conn.execute(
                    "DELETE FROM records WHERE run_id = ? AND task = ? AND item_id = ?",
                    (self.run_id, it.task, it.id),
                ).rowcount
        return deleted

    @_read
    def items(self) -> pd.DataFrame:
        """Every item of the run: task, item_id, prompt (text or chat messages), reference,
        meta (a dict)."""
        import pandas as pd

        rows = self.conn.execute(
            "SELECT task, item_id, item FROM items WHERE run_id = ? ORDER BY rowid", (self.run_id,)
        ).fetchall()
        data = [json.loads(r[2]) for r in rows]
        return pd.DataFrame(
            {
                "task": [r[0] for r in rows],
                "item_id": [r[1] for r in rows],
                "prompt": [d.get("prompt") for d in data],
                "reference": [d.get("reference") for d in data],
                "meta": [d.get("meta") or {} for d in data],
            }
        )

    # --- records ------------------------------------------------------------------------------

    @_read
    def done_keys(self) -> set[tuple[str, str, str, int]]:
        """(config_id, task, item_id, sample) of every stored record of a profile run (load runs'
        records are keyed by their load point too)."""
        rows = self.conn.execute(
            "SELECT config_id, task, item_id, sample FROM records "
            "WHERE run_id = ? AND load_point = ''",
            (self.run_id,),
        )
        return {(r[0], r[1], r[2], int(r[3])) for r in rows}

    def _record_row(self, record: Record) -> list[Any]:
        row: list[Any] = [self.run_id]
        for name in self._record_fields:
            value = getattr(record, name)
            row.append(json_text(value) if name in _JSON_FIELDS else value)
        row.append(time.time())
        row.extend(call_facts(record.calls))
        return row

    def write_record(self, record: Record) -> None:
        """Insert (or replace) one record and commit it."""
        self.conn.execute(self._insert_record, self._record_row(record))

    def write_records(self, records: list[Record]) -> None:
        """Insert (or replace) records in one transaction: all of them, or none."""
        rows = [self._record_row(record) for record in records]
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(self._insert_record, rows)

    def prepare(self, record: Record, item: Item) -> tuple[list[Any], tuple[str, ...]]:
        """A record and its item as the rows `write_prepared` inserts (JSON encoded now, so that
        the thread that writes them runs no Python to speak of)."""
        return self._record_row(record), (self.run_id, item.task, item.id, item_json(item))

    def write_prepared(self, prepared: list[tuple[list[Any], tuple[str, ...]]]) -> None:
        """Insert rows from `prepare` in one transaction: all of them, or none."""
        rows = [row for row, _ in prepared]
        items = [item for _, item in prepared]
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR IGNORE INTO items (run_id, task, item_id, item) VALUES (?, ?, ?, ?)",
                items,
            )
            self.conn.executemany(self._insert_record, rows)

    # --- load points ---------------------------------------------------------------------------

    def start_load_point(self, config_id: str, label: str, spec: dict[str, Any]) -> None:
        """A load point begins: any records of an earlier, unfinished attempt at it are deleted
        (a load point is measured as a whole)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute(
                "DELETE FROM records WHERE run_id = ? AND config_id = ? AND load_point = ?",
                (self.run_id, config_id, label),
            )
            self.conn.execute(
                "INSERT OR REPLACE INTO load_points (run_id, config_id, load_point, spec, "
                "started_at, status) VALUES (?, ?, ?, ?, ?, 'running')",
                (self.run_id, config_id, label, json.dumps(spec), time.time()),
            )

    def end_load_point(
        self, config_id: str, label: str, status: str, summary: dict[str, Any]
    ) -> None:
        self.conn.execute(
            "UPDATE load_points SET ended_at = ?, status = ?, summary = ? "
            "WHERE run_id = ? AND config_id = ? AND load_point = ?",
            (time.time(), status, json.dumps(summary), self.run_id, config_id, label),
        )

    def mark_cooldown(
        self,
        config_id: str,
        label: str,
        requests: int | None = None,
        seconds: float | None = None,
        end_s: float | None = None,
    ) -> None:
        """Mark a load point's last requests as its cool-down: the last `requests` sent, or
        those sent in the `seconds` before `end_s` (None: its last send). Judged on when each
        was sent, not when it was due: one that waited for a slot (--max-concurrency) is in the
        window it went out in. A warm-up request stays one."""
        point = "run_id = ? AND config_id = ? AND load_point = ?"
        key = (self.run_id, config_id, label)
        params: tuple[Any, ...]
        if requests is not None:
            last = (
                f"SELECT rowid FROM records WHERE {point} ORDER BY sent_s DESC, rowid DESC LIMIT ?"
            )
            chosen, params = f"rowid IN ({last})", (*key, requests)
        else:
            end = f"coalesce(?, (SELECT max(sent_s) FROM records WHERE {point}))"
            chosen, params = f"sent_s >= {end} - ?", (end_s, *key, seconds)
        self.conn.execute(
            f"UPDATE records SET phase = 'cooldown' WHERE {point} AND phase = 'measure' "
            f"AND {chosen}",
            (*key, *params),
        )

    @_read
    def load_points(self) -> list[dict[str, Any]]:
        """The load points run, in the order they began: config_id, load_point (its label),
        spec, started_at, ended_at, status, summary, and `ended` (it finished: resume skips it)."""
        rows = self.conn.execute(
            "SELECT config_id, load_point, spec, started_at, ended_at, status, summary "
            "FROM load_points WHERE run_id = ? ORDER BY started_at",
            (self.run_id,),
        ).fetchall()
        return [
            {
                "config_id": r[0],
                "load_point": r[1],
                "spec": json.loads(r[2]),
                "started_at": r[3],
                "ended_at": r[4],
                "status": r[5],
                "summary": json.loads(r[6]) if r[6] else {},
                "ended": r[5] == "finished",
            }
            for r in rows
        ]

    def load_point_summary(self, config_id: str, label: str) -> dict[str, Any]:
        for point in self.load_points():
            if (point["config_id"], point["load_point"]) == (config_id, label):
                return dict(point["summary"])
        return {}

    @_read
    def records(
        self,
        *,
        columns: Sequence[str] | None = None,
        config_id: str | None = None,
        load_point: str | None = None,
        load_only: bool = False,
        measured: bool = False,
        items: Sequence[tuple[str, str]] | None = None,
    ) -> pd.DataFrame:
        """Every record joined with its configuration's name (`config`), one row per record, in
        the order written; or those of one configuration and/or load point, or (`load_only`)
        those of every load point; `measured`: without a load run's warm-up and cool-down
        requests (stored, never counted); `items`: only the records of these (task, item_id)
        pairs (a sample to show: a few hundred at most).

        With `columns`, only those beside `config`, read fast (`store_columns`; a summary of a
        million records in seconds): stored ones, CALL_FACTS among them, and `extra.KEY`.
        Without, every column of a Record, `calls` and `extra` as their JSON text."""
        import pandas as pd

        # With no configuration named, the table is scanned in rowid order (`+`: not through
        # the unique index, whose rows would then be sorted back into that order).
        where, params = ("r.run_id = ?" if config_id else "+r.run_id = ?"), [self.run_id]
        if config_id is not None:
            where, params = where + " AND r.config_id = ?", [*params, config_id]
        if load_point is not None:
            where, params = where + " AND r.load_point = ?", [*params, load_point]
        if load_only:
            where += " AND r.load_point != ''"
        if measured:
            where += " AND coalesce(r.phase, 'measure') = 'measure'"
        if items is not None:
            keys = list(items)
            rows = ", ".join(["(?, ?)"] * len(keys)) or "(NULL, NULL)"  # none: no record
            where += f" AND (r.task, r.item_id) IN (VALUES {rows})"
            params = [*params, *(value for key in keys for value in key)]
        if columns is not None:
            from tradeoff.store_columns import read_columns

            return read_columns(self.conn, columns, where, params)
        df = pd.read_sql_query(
            "SELECT c.name AS config, r.* FROM records r JOIN configs c "
            f"ON r.run_id = c.run_id AND r.config_id = c.config_id WHERE {where} "
            "ORDER BY r.rowid",
            self.conn,
            params=params,
        )
        return df.drop(columns=["run_id", *CALL_FACTS])

    @_read
    def unmeasured_count(self) -> int:
        """A load run's warm-up and cool-down records: stored, never counted."""
        (count,) = self.conn.execute(
            "SELECT COUNT(*) FROM records WHERE run_id = ? "
            "AND coalesce(phase, 'measure') != 'measure'",
            (self.run_id,),
        ).fetchone()
        return int(count)

    # --- evaluations made after the run ------------------------------------------------------

    def add_evaluation(self, kind: str, result: dict[str, Any]) -> None:
        """An evaluation of the run's records (plain JSON data); a reader may add one while a
        run is written (one small transaction)."""
        self.conn.execute(
            "INSERT INTO evaluations (run_id, created_at, kind, result) VALUES (?, ?, ?, ?)",
            (self.run_id, time.time(), kind, json.dumps(result, allow_nan=True)),
        )

    @_read
    def evaluations(self, kind: str) -> list[dict[str, Any]]:
        """The evaluations of one kind, oldest first, each with its `created_at`."""
        rows = self.conn.execute(
            "SELECT created_at, result FROM evaluations WHERE run_id = ? AND kind = ? "
            "ORDER BY created_at, rowid",
            (self.run_id, kind),
        ).fetchall()
        return [{**json.loads(text), "created_at": t} for t, text in rows]

    # --- embeddings of the queries (routers) ----------------------------------------------------

    @_read
    def embeddings(self, model: str, digests: list[str]) -> dict[str, bytes]:
        """The stored vectors of `model` among `digests`, by digest."""
        found: dict[str, bytes] = {}
        for at in range(0, len(digests), 500):  # SQLite's limit on bound parameters
            chunk = digests[at : at + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT digest, vector FROM embeddings WHERE model = ? AND digest IN ({marks})"
            found.update(self.conn.execute(sql, (model, *chunk)).fetchall())
        return found

    def add_embeddings(self, model: str, vectors: dict[str, bytes]) -> None:
        """Vectors of `model` by digest, in one transaction (a reader may add them)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR IGNORE INTO embeddings (model, digest, vector) VALUES (?, ?, ?)",
                [(model, d, v) for d, v in vectors.items()],
            )

    # --- scrapes of the upstreams' own metrics --------------------------------------------------

    def add_scrapes(
        self,
        source: str,
        rows: Iterable[tuple[float, dict[str, float]]],
        gaps: Iterable[tuple[float, str]] = (),
    ) -> None:
        """A time series scraped from `source` (a URL): rows of (time.time(), {series: value}),
        and the scrapes that failed as (time, why). Stored one scrape a row: `sample` is the JSON
        object of its series, or, for a failed one, the JSON string saying why."""
        entries = [(t, json.dumps(sample)) for t, sample in rows]
        entries += [(t, json.dumps(reason)) for t, reason in gaps]
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO scrapes (run_id, source, t, sample) VALUES (?, ?, ?, ?)",
                [(self.run_id, source, t, sample) for t, sample in sorted(entries)],
            )

    @_read
    def scrapes(self) -> pd.DataFrame:
        """Every scraped value, one row per (source, time, series): columns source, t, series,
        value, error. A failed scrape is one row with no series or value and `error` saying why."""
        import pandas as pd

        rows = self.conn.execute(
            "SELECT source, t, sample FROM scrapes WHERE run_id = ? ORDER BY t, rowid",
            (self.run_id,),
        ).fetchall()
        table: list[tuple[str, float, str | None, float | None, str | None]] = []
        for source, t, text in rows:
            sample = json.loads(text)
            if isinstance(sample, str):
                table.append((source, t, None, None, sample))
            else:
                table.extend((source, t, series, value, None) for series, value in sample.items())
        return pd.DataFrame(table, columns=["source", "t", "series", "value", "error"])
