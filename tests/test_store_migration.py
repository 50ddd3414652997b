"""Run store schema versions: a run directory written by an older tradeoff is migrated when opened,
then resumes and reports; one written by a newer tradeoff is refused in one line."""

import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli, run_cli_unable_to_write
from test_store import record

from tradeoff import store as store_module
from tradeoff.errors import UserError
from tradeoff.store import STORE_FILE, Store, schema_version
from tradeoff.types import Item, Record

# Written by the code before schema versioning (user_version 0): a profile run of three items,
# killed after two records. The file's first lines say how it was made.
STORE_V0 = Path(__file__).parent / "data" / "store_v0.sql"


def old_store(directory: Path) -> Path:
    directory.mkdir(parents=True)
    conn = sqlite3.connect(directory / STORE_FILE)
    conn.executescript(STORE_V0.read_text())
    conn.close()
    return directory


def stored_version(directory: Path) -> int:
    conn = sqlite3.connect(directory / STORE_FILE)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def tables(directory: Path) -> dict[str, str]:
    conn = sqlite3.connect(directory / STORE_FILE)
    try:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        return dict(rows.fetchall())
    finally:
        conn.close()


def test_a_new_store_has_the_current_schema_version(tmp_path):
    Store.create(tmp_path / "run", {}, {}).close()
    assert schema_version() >= 1
    assert stored_version(tmp_path / "run") == schema_version()


def test_a_store_from_before_versioning_is_migrated_to_the_tables_of_a_new_one(tmp_path):
    old = old_store(tmp_path / "old")
    assert stored_version(old) == 0
    store = Store.open(old)
    assert store.done_keys() == {
        ("c1a555531061", "arith", "arith-0000", 0),
        ("c1a555531061", "arith", "arith-0001", 0),
    }
    store.close()
    assert stored_version(old) == schema_version()
    Store.create(tmp_path / "new", {}, {}).close()
    assert tables(old) == tables(tmp_path / "new")


def test_a_store_from_before_versioning_resumes_and_reports(tmp_path):
    old = old_store(tmp_path / "old")
    result = run_cli("profile", "--resume", str(old))
    assert result.returncode == 0, result.stderr
    assert stored_version(old) == schema_version()
    store = Store.open(old)
    records = store.records()
    assert store.run()["status"] == "finished"
    store.close()
    assert sorted(records["item_id"]) == ["arith-0000", "arith-0001", "arith-0002"]
    report = run_cli("report", str(old))
    assert report.returncode == 0, report.stderr
    assert "smollm2-135m" in report.stdout
    frontier = run_cli("frontier", str(old))
    assert frontier.returncode == 0, frontier.stderr
    assert "smollm2-135m" in frontier.stdout


def test_an_old_store_is_read_where_its_directory_cannot_be_written(tmp_path):
    """A reader that cannot write the run directory (a read-only mount, another user's run) read
    an old store as it is and migrated it there: the first write failed, "not a readable tradeoff
    store". It reads a migrated copy of its own, and the file is left as it was."""
    old = old_store(tmp_path / "old")
    before = (old / STORE_FILE).read_bytes()
    for command in ("report", "frontier"):
        result = run_cli_unable_to_write(old, command, str(old))
        assert result.returncode == 0, result.stderr
        assert "smollm2-135m" in result.stdout
    assert (old / STORE_FILE).read_bytes() == before
    assert sorted(p.name for p in old.iterdir()) == [STORE_FILE]


def _back_to_schema_6(store: Store) -> None:
    """`store` as schema 6 left it: less the columns later steps add."""
    store.conn.execute("ALTER TABLE records DROP COLUMN counted_in_chunks")  # schema 10's
    store.conn.execute("ALTER TABLE records DROP COLUMN call_seconds")  # schema 8's
    store.conn.execute("PRAGMA user_version = 6")


def test_an_old_vote_or_cascade_record_s_ttft_becomes_its_release(tmp_path):
    """Before schema 7 a vote's or a cascade's TTFT was its first draw's first token; now the
    answer's release, which a resumed run's new records would otherwise be mixed with."""
    directory = tmp_path / "run"
    store = Store.create(directory, {}, {})
    store.add_configs([("c1", "vote-n3", {"strategy": "vote"}),
                       ("c2", "small", {"strategy": "single"})])  # fmt: skip
    store.add_items([Item("a", "2+2?", "4", "arith")])
    store.write_record(record("a"))
    store.write_record(replace(record("a"), config_id="c2"))
    store.write_record(replace(record("a", sample=1), ttft_s=None))
    _back_to_schema_6(store)
    store.close()
    store = Store.open(directory)
    found = store.records()
    store.close()
    ttft = {(c, s): t for c, s, t in zip(found["config_id"], found["sample"], found["ttft_s"])}
    assert ttft[("c1", 0)] == 0.2 and ttft[("c2", 0)] == 0.1  # the vote's e2e; single's as was
    assert pd.isna(ttft[("c1", 1)])  # none: still none
    assert stored_version(directory) == schema_version()


def test_an_old_route_record_that_ran_a_vote_or_cascade_gets_its_release_as_ttft(tmp_path):
    """The step to schema 7 gave the release's TTFT to records of vote and cascade
    configurations only: a route's that ran one kept its first draw's first token (0.15 s next
    to its vote's 1.8 s), though the route records the release now, as the vote does."""
    directory = tmp_path / "run"
    store = Store.create(directory, {}, {})
    store.add_configs([("c3", "route-pol", {"strategy": "route"})])
    store.add_items([Item(i, "2+2?", "4", "arith") for i in ("a", "b", "c")])
    ran = {
        "a": {"samples_drawn": 3, "majority": "4", "share": 1.0, "routed_to": "vote-n3"},
        "b": {"signal": "logprob", "uncertainty": 0.1, "escalated": False, "routed_to": "casc"},
        "c": {"routed_to": "small"},
    }
    for item_id, extra in ran.items():
        store.write_record(replace(record(item_id), config_id="c3", extra=extra))
    _back_to_schema_6(store)
    store.close()
    store = Store.open(directory)
    found = store.records()
    store.close()
    # the vote's and the cascade's release (the record's e2e); the single's first token as was
    assert dict(zip(found["item_id"], found["ttft_s"])) == {"a": 0.2, "b": 0.2, "c": 0.1}


def test_a_route_record_step_7_left_before_its_fix_gets_its_release_as_ttft(tmp_path):
    """The step to schema 7 gave the release's TTFT to route records that ran a vote or a
    cascade only from b0e5dc0 on: a store an earlier tradeoff had taken past 7 kept their first
    draw's first token for good. A later step gives it to them; it leaves records that hold
    their release already (`released_whole`), and those of a vote or a single."""
    directory = tmp_path / "run"
    store = Store.create(directory, {}, {})
    store.add_configs([("c1", "vote-n3", {"strategy": "vote"}),
                       ("c3", "route-pol", {"strategy": "route"})])  # fmt: skip
    store.add_items([Item(i, "2+2?", "4", "arith") for i in ("a", "b", "c", "d")])
    ran = {
        "a": ({"samples_drawn": 3, "majority": "4", "routed_to": "vote-n3"}, 0.1),
        "b": ({"signal": "logprob", "escalated": False, "routed_to": "casc"}, 0.1),
        "c": ({"routed_to": "small"}, 0.1),
        "d": ({"samples_drawn": 3, "released_whole": True, "routed_to": "vote-n3"}, 0.19),
    }
    for item_id, (extra, ttft) in ran.items():
        store.write_record(replace(record(item_id), config_id="c3", extra=extra, ttft_s=ttft))
    store.write_record(
        replace(record("a"), config_id="c1", extra={"samples_drawn": 3}, ttft_s=0.19)
    )
    store.conn.execute("PRAGMA user_version = 10")  # as a tradeoff before b0e5dc0 left it
    store.close()
    store = Store.open(directory)
    found = store.records()
    store.close()
    ttft = {(c, i): t for c, i, t in zip(found["config_id"], found["item_id"], found["ttft_s"])}
    assert ttft == {("c3", "a"): 0.2, ("c3", "b"): 0.2, ("c3", "c"): 0.1, ("c3", "d"): 0.19,
                    ("c1", "a"): 0.19}  # fmt: skip
    assert stored_version(directory) == schema_version()


# An older tradeoff writing a run: it holds the directory's lock, and inserts its next record
# when told, with the columns of `records` it knows; then says the store's version, as it reads
# it (a newer one than its own ended it: "written by a newer tradeoff").
OLDER_WRITER = """
import sqlite3, sys
from pathlib import Path
from tradeoff.store import STORE_FILE, _lock
directory = Path(sys.argv[1])
_lock(directory)
conn = sqlite3.connect(directory / STORE_FILE)
known = [row[1] for row in conn.execute("PRAGMA table_info(records)")]
print("ready", flush=True)
sys.stdin.readline()
values = ["'b'" if c == "item_id" else c for c in known]
conn.execute(f"INSERT INTO records ({', '.join(known)}) SELECT {', '.join(values)} FROM records")
conn.commit()
print(conn.execute("PRAGMA user_version").fetchone()[0], flush=True)
"""


def test_a_reader_leaves_an_old_store_to_the_older_tradeoff_writing_it(tmp_path):
    """`report` on a run an older tradeoff was still writing migrated its store in place: the
    writer went on inserting records without the new columns (its answers counted in stream
    chunks then read as not: "3 of 16"), and ended on "written by a newer tradeoff", exit 2. A
    reader reads a migrated copy while another process writes the directory; the file is
    migrated by the first to open it once that one ends."""
    directory = tmp_path / "run"
    store = Store.create(directory, {}, {})
    store.add_configs([("c1", "small", {"strategy": "single"})])
    store.add_items([Item("a", "2+2?", "4", "arith"), Item("b", "3+3?", "6", "arith")])
    chunks = {"model": "m", "input_tokens": 5, "e2e_s": 0.2, "token_count_source": "chunks"}
    store.write_record(replace(record("a"), calls=[chunks]))
    store.conn.execute("ALTER TABLE records DROP COLUMN counted_in_chunks")  # schema 10's
    store.conn.execute("PRAGMA user_version = 9")
    store.close()
    writer = subprocess.Popen(
        [sys.executable, "-c", OLDER_WRITER, str(directory)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        report = run_cli("report", str(directory))
        assert report.returncode == 0, report.stderr
        assert stored_version(directory) == 9
        read = Store.open(directory)
        try:
            assert list(read.records(columns=["counted_in_chunks"])["counted_in_chunks"]) == [1]
            assert not read.writable
            assert f"another tradeoff process (pid {writer.pid})" in str(read.not_kept)
        finally:
            read.close()
    finally:
        said, _ = writer.communicate("go\n")
    assert writer.returncode == 0 and said.strip() == "9"
    store = Store.open(directory)
    counted = store.records(columns=["counted_in_chunks"])["counted_in_chunks"]
    store.close()
    assert stored_version(directory) == schema_version() and list(counted) == [1, 1]


@dataclass
class CachedRecord(Record):
    """A Record with the field a later schema adds, as a later tradeoff would declare it."""

    prefix_cache_hit_s: float | None = None


def add_prefix_cache_hit(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE records ADD COLUMN prefix_cache_hit_s REAL")


def test_a_record_field_added_by_a_migration_reads_as_none_in_old_rows(tmp_path, monkeypatch):
    directory = tmp_path / "run"
    store = Store.create(directory, {}, {})
    store.add_configs([("c1", "small", {"strategy": "single"})])
    store.add_items([Item("a", "2+2?", "4", "arith"), Item("b", "3+3?", "6", "arith")])
    store.write_record(record("a"))
    store.close()

    later = [*store_module.MIGRATIONS, add_prefix_cache_hit]
    monkeypatch.setattr(store_module, "MIGRATIONS", later)
    monkeypatch.setattr(
        store_module, "RECORD_FIELDS", (*store_module.RECORD_FIELDS, "prefix_cache_hit_s")
    )
    store = Store.open(directory)
    assert stored_version(directory) == len(later)
    # The file now has created_at before prefix_cache_hit_s, the reverse of the order written in:
    # records are inserted by column name.
    store.write_record(CachedRecord(**vars(record("b")), prefix_cache_hit_s=0.25))
    df = store.records().set_index("item_id")
    store.close()
    assert pd.isna(df.loc["a", "prefix_cache_hit_s"])
    assert df.loc["b", "prefix_cache_hit_s"] == 0.25
    assert df.loc["a", "output"] == df.loc["b", "output"] == "4"


@pytest.mark.parametrize("command", [["report"], ["frontier"], ["profile", "--resume"]])
def test_a_store_from_a_newer_tradeoff_is_refused_in_one_line(tmp_path, command):
    directory = tmp_path / "run"
    Store.create(directory, {}, {}).close()
    newer = schema_version() + 1
    conn = sqlite3.connect(directory / STORE_FILE)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()

    result = run_cli(*command, str(directory))
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert (
        f"was written by a newer tradeoff (schema {newer}; this one reads up to "
        f"{schema_version()}); upgrade tradeoff" in lines[0]
    )
    assert stored_version(directory) == newer


def test_another_programs_sqlite_file_is_refused_and_left_untouched(tmp_path):
    conn = sqlite3.connect(tmp_path / STORE_FILE)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    before = (tmp_path / STORE_FILE).read_bytes()
    with pytest.raises(UserError, match="not a readable tradeoff store: it has no runs table"):
        Store.open(tmp_path)
    assert list(tables(tmp_path)) == ["notes"]
    assert stored_version(tmp_path) == 0
    # not even its journal mode (it was set to WAL, in the file, before the check)
    assert (tmp_path / STORE_FILE).read_bytes() == before
    assert not (tmp_path / f"{STORE_FILE}-wal").exists()


def test_two_connections_opening_an_old_store_at_once_migrate_it_once(tmp_path, monkeypatch):
    directory = tmp_path / "run"
    Store.create(directory, {}, {}).close()

    # Each connection's BEGIN IMMEDIATE is counted as it starts (before it waits for the lock).
    begun = threading.Semaphore(0)
    connect = Store._connect

    def traced_connect(
        path: Path, journal: bool = True, frozen: bool = False
    ) -> sqlite3.Connection:
        conn = connect(path, journal, frozen)
        conn.set_trace_callback(lambda sql: begun.release() if sql == "BEGIN IMMEDIATE" else None)
        return conn

    runs: list[int] = []

    def count_runs(conn: sqlite3.Connection) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            # The first run holds the write lock until the other opener has read the old version
            # and asked for the lock too: the race in which both would migrate.
            assert begun.acquire(timeout=600) and begun.acquire(timeout=600)
        conn.execute(f"CREATE TABLE migration_run_{len(runs)} (n INTEGER)")

    monkeypatch.setattr(Store, "_connect", staticmethod(traced_connect))
    later = [*store_module.MIGRATIONS, count_runs]
    monkeypatch.setattr(store_module, "MIGRATIONS", later)
    opened: list[Store] = []
    failed: list[BaseException] = []

    def open_store() -> None:
        try:
            opened.append(Store.open(directory))
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failed, failed
    assert len(opened) == 2 and opened[0].run_id == opened[1].run_id
    for store in opened:
        store.close()
    assert stored_version(directory) == len(later)
    assert runs == [0]
    assert "migration_run_1" in tables(directory)


def test_an_opener_waits_for_a_migration_longer_than_the_lock_timeout(tmp_path, monkeypatch):
    """A migration of steps longer together than the lock timeout (a store of a million records)
    starved a second opener of the write lock: it was told the store "is not a readable tradeoff
    store: database is locked". It waits while the version moves on; a lock held with the
    version still is said to be another process's, to wait for."""
    directory = tmp_path / "run"
    Store.create(directory, {}, {}).close()
    monkeypatch.setattr(store_module, "LOCK_TIMEOUT_S", 0.5)
    begun = threading.Event()

    def slow_step(conn: sqlite3.Connection) -> None:
        begun.set()
        time.sleep(0.2)

    later = [*store_module.MIGRATIONS, *[slow_step] * 10]  # 2 s of steps, each 0.2 s
    monkeypatch.setattr(store_module, "MIGRATIONS", later)
    migrated: list[Store] = []
    first = threading.Thread(target=lambda: migrated.append(Store.open(directory)))
    first.start()
    assert begun.wait(timeout=60)
    try:
        second = Store.open(directory)
    finally:
        first.join()
    assert second.run_id == migrated[0].run_id and stored_version(directory) == len(later)
    second.close()
    migrated[0].close()

    monkeypatch.setattr(store_module, "MIGRATIONS", [*later, slow_step])
    holder = sqlite3.connect(directory / STORE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write, at this version
    try:
        with pytest.raises(UserError, match="is locked by another process") as caught:
            Store.open(directory)
    finally:
        holder.close()
    assert "try again when it ends" in str(caught.value)
    assert "not a readable" not in str(caught.value)


def test_an_old_batched_record_s_roofline_becomes_its_share(tmp_path):
    """Before schema 9 each row of a batch held the batch's whole roofline time in the stored
    call_rooflines (and a failed call read as a model reporting no tokens): a resumed run mixed
    the two counts in one configuration."""
    directory = tmp_path / "run"
    store = Store.create(directory, {}, {})
    store.add_configs([("c1", "vote-n3", {"strategy": "vote"})])
    store.add_items([Item("a", "2+2?", "4", "arith")])
    row = {"model": "m", "input_tokens": 5, "roofline_s": 0.3, "e2e_s": 0.9, "batch": 3}
    failed = {"model": "m", "input_tokens": None, "error": "HTTP 500", "e2e_s": 0.1,
              "roofline_s": 0.0}  # fmt: skip
    store.write_record(replace(record("a"), calls=[row, row, row, failed]))
    old_facts = "UPDATE records SET call_rooflines = ?, unreported_models = ?"  # as written then
    store.conn.execute(old_facts, ("0.3,0.9,0.3,0.9,0.3,0.9,0.0,0.1", '["m"]'))
    store.conn.execute("ALTER TABLE records DROP COLUMN counted_in_chunks")  # schema 10's
    store.conn.execute("PRAGMA user_version = 8")
    store.close()
    store = Store.open(directory)
    rooflines, unreported = store.conn.execute(
        "SELECT call_rooflines, unreported_models FROM records"
    ).fetchone()
    store.close()
    times = [float(t) for t in rooflines.split(",")]
    assert sum(times[0:6:2]) == pytest.approx(0.3) and unreported is None
    assert stored_version(directory) == schema_version()


def test_a_lock_is_told_from_its_message_where_sqlite_names_no_error():
    """Python 3.10's sqlite3 errors carry no `sqlite_errorname` (3.11 on): there a migration
    holding the lock read as an unreadable store. The message tells it."""
    import sqlite3

    from tradeoff.store import _busy

    assert _busy(sqlite3.OperationalError("database is locked"))
    assert not _busy(sqlite3.OperationalError("no such table: runs"))
