"""The SQLite run store: records unique per (configuration, item, sample), committed at once."""

import errno
import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tradeoff.errors import UserError
from tradeoff.store import LOCK_FILE, STORE_FILE, Store
from tradeoff.types import Item, Record


def record(item_id: str, sample: int = 0, score: float = 1.0) -> Record:
    return Record(
        config_id="c1",
        task="arith",
        item_id=item_id,
        sample=sample,
        output="4",
        score=score,
        parsed="4",
        error=None,
        input_tokens=10,
        output_tokens=2,
        ttft_s=0.1,
        e2e_s=0.2,
        itl_s=0.05,
        decode_tps=20.0,
        energy_j=None,
        energy_source=None,
        energy_missing="no RAPL",
        flops=1e6,
        peak_rss_bytes=1,
        cost_usd=None,
    )


def test_records_are_unique_and_visible_to_another_connection(tmp_path):
    store = Store.create(tmp_path / "run", {"x": 1}, {"host": "h"})
    store.add_configs([("c1", "small", {"strategy": "single"})])
    store.add_items([Item("a", "2+2?", "4", "arith")])
    store.write_record(record("a"))
    store.write_record(record("a"))  # the same key again replaces, never duplicates
    store.write_record(record("a", sample=1))
    # committed as written: a second connection sees them while the first is still open
    other = sqlite3.connect(tmp_path / "run" / STORE_FILE)
    assert other.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 2
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.done_keys() == {("c1", "arith", "a", 0), ("c1", "arith", "a", 1)}
    df = store.records()
    assert list(df["config"]) == ["small", "small"]
    store.close()


def test_create_refuses_an_existing_run_and_open_needs_one(tmp_path):
    Store.create(tmp_path, {}, {}).close()
    with pytest.raises(UserError, match="--resume"):
        Store.create(tmp_path, {}, {})
    with pytest.raises(UserError, match="elsewhere does not exist; give a run directory"):
        Store.open(tmp_path / "elsewhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no tradeoff run"):
        Store.open(tmp_path / "empty")


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"models": ["m"]}, "continue it with tradeoff profile --resume"),
        (
            {"models": ["m"], "load": {"profile": "sweep"}},
            "continue it with tradeoff load --resume",
        ),
        ("demo", "continue it with tradeoff demo --resume"),
        ({"imported_from": "x.csv"}, "already holds a run; choose another --out"),
    ],
)
def test_a_taken_directory_names_the_command_that_continues_its_run(tmp_path, spec, said):
    """Every run's refusal said `tradeoff profile --resume`: a demo or a load run needs its own
    command, and imported outcomes have nothing to continue."""
    from tradeoff.demo import demo_spec

    stored = demo_spec(3).model_dump(mode="json") if spec == "demo" else spec
    Store.create(tmp_path, stored, {}).close()
    with pytest.raises(UserError) as caught:
        Store.ensure_new(tmp_path)
    assert said in str(caught.value)
    if said.startswith("continue"):
        assert str(caught.value).endswith(f"--resume {tmp_path} or choose another --out")


def test_a_directory_another_process_writes_names_it_not_a_resume(tmp_path):
    """A run directory refused while another process wrote it said "continue it with tradeoff
    profile --resume DIR", which was then refused too ("being written"): it names the writer's
    pid; the --resume, once no process holds the directory."""
    code = (
        "import sys; from tradeoff.store import Store; "
        f"Store.create({str(tmp_path)!r}, {{'models': ['m']}}, {{}}); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        with pytest.raises(UserError) as caught:
            Store.ensure_new(tmp_path)
    finally:
        writer.communicate()  # its stdin closed, it ends
    assert str(caught.value) == (
        f"{tmp_path} is being written by another tradeoff process (pid {writer.pid}); wait for "
        "it to end, or write to another directory"
    )
    with pytest.raises(UserError, match="continue it with tradeoff profile --resume"):
        Store.ensure_new(tmp_path)


def test_a_writer_waits_out_a_reader_s_moment_on_the_directory_s_lock(tmp_path):
    """Every reader took the directory's lock, shared, for a moment on opening, and a writer
    starting in that moment (`profile --resume` beside `watch tradeoff report`) was refused,
    naming a pid that was not writing it. A writer tries again for a while (a reader of an old
    store still probes the lock); one held for the writer's whole run still refuses it."""
    directory = tmp_path / "run"
    Store.create(directory, {}, {}).close()
    probe = os.open(directory / LOCK_FILE, os.O_RDONLY)  # as `writer_pid` holds it, for longer
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.3, os.close, (probe,)).start()
    Store.open(directory, writer=True).close()
    holder = Store.open(directory, writer=True)
    try:
        with pytest.raises(UserError, match="being written by another tradeoff process"):
            Store.open(directory, writer=True)
    finally:
        holder.close()

    (tmp_path / STORE_FILE).write_text("not sqlite at all" * 100)
    with pytest.raises(UserError, match="not a readable tradeoff store"):
        Store.open(tmp_path)


def test_an_item_is_stored_with_every_field():
    import json
    from dataclasses import asdict

    from tradeoff.store import item_json
    from tradeoff.types import Item

    item = Item("a-1", [{"role": "user", "content": "hi"}], "ref", "serve", {"k": [1, 2]})
    assert json.loads(item_json(item)) == asdict(item)


def test_a_store_is_read_as_it_is_where_its_directory_cannot_be_written(tmp_path, monkeypatch):
    """A reader that cannot write the directory (a read-only file system; root can write any
    other) could not open a store in WAL mode ("not a readable tradeoff store"): it reads the
    file as it is. A name with a space and a # is no URI's query or fragment."""
    directory = tmp_path / "runs #1" / "a run"
    store = Store.create(directory, {}, {})
    store.add_configs([("c1", "small", {"strategy": "single"})])
    store.add_items([Item("a", "2+2?", "4", "arith")])
    store.write_record(record("a"))
    store.close()
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == directory else real(p, mode)
    )
    frozen = Store.open(directory)
    try:
        assert list(frozen.records()["item_id"]) == ["a"]
    finally:
        frozen.close()
    assert not (directory / "tradeoff.sqlite-shm").exists()
    with pytest.raises(UserError, match="cannot write to"):
        monkeypatch.setattr(os, "open", _read_only_open(os.open))
        Store.open(directory, writer=True)


def _read_only_open(real_open):
    """os.open as on a read-only file system: creating or writing fails with EROFS."""

    def refused(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    return refused


def test_a_machine_a_resumed_ray_run_ran_on_again_is_listed_once(tmp_path):
    """Each session's throwaway cluster (`--ray local`) gives the same machine another node id:
    it was listed once per session."""
    store = Store.create(tmp_path / "run", {}, {"hostname": "driver"})
    store.add_nodes([{"hostname": "vm", "node_id": "a1", "cpu_cores": 2},
                     {"hostname": "gone", "node_id": "g1", "cpu_cores": 4}])  # fmt: skip
    # the next session: vm again (a new node id), another machine, and two nodes on one machine
    store.add_nodes([{"hostname": "vm", "node_id": "b2", "cpu_cores": 2},
                     {"hostname": "big", "node_id": "c3", "cpu_cores": 8},
                     {"hostname": "big", "node_id": "c4", "cpu_cores": 8}])  # fmt: skip
    nodes = store.run()["host"]["nodes"]
    store.close()
    assert [(n["hostname"], n["node_id"]) for n in nodes] == [
        ("gone", "g1"), ("vm", "b2"), ("big", "c3"), ("big", "c4")
    ]  # fmt: skip


def test_a_store_whose_last_records_are_in_its_wal_is_not_read_as_it_is(tmp_path, monkeypatch):
    """Read as an immutable file, a store leaves out what its -wal holds (a run killed, or
    still being written): refused in one line, not read stale."""
    directory = tmp_path / "run"
    writer = Store.create(directory, {}, {})
    writer.add_configs([("c1", "small", {"strategy": "single"})])
    writer.add_items([Item("a", "2+2?", "4", "arith")])
    writer.write_record(record("a"))  # in the WAL while the writer has the store open
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == directory else real(p, mode)
    )
    try:
        with pytest.raises(UserError, match="the last records of its run are still in"):
            Store.open(directory)
    finally:
        writer.close()


def test_call_facts_share_a_batch_and_tell_a_failed_call_from_unreported_tokens():
    """A row of a batch of 3 holds the batch's whole roofline and time: a vote drawn as one
    batch read three batches' least time a query. A failed call has no tokens because it
    failed, not because its model reports none (the cost's reason said the latter)."""
    from tradeoff.store import call_facts

    row = {"model": "m", "input_tokens": 5, "roofline_s": 0.3, "e2e_s": 0.9, "batch": 3}
    _, unreported, rooflines, seconds, _ = call_facts([row, row, row])
    times = [float(t) for t in rooflines.split(",")]
    assert sum(times[::2]) == pytest.approx(0.3) and sum(times[1::2]) == pytest.approx(0.9)
    assert seconds == pytest.approx(0.9) and unreported is None
    failed = {"model": "m", "input_tokens": None, "error": "HTTP 500", "e2e_s": 0.1}
    silent = {"model": "n", "input_tokens": None, "e2e_s": 0.1}
    assert call_facts([failed, silent])[1] == '["n"]'


def _damage_rows(directory: Path, table: str = "records") -> None:
    """Overwrite the second half of the page that holds the records, or another `table`'s rows
    (where their cells are), its header and the file's schema left intact: damage SQLite finds
    only on reading them."""
    path = directory / STORE_FILE
    conn = sqlite3.connect(path)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    at = (root - 1) * size
    data[at + size // 2 : at + size] = b"\xab" * (size - size // 2)
    path.write_bytes(bytes(data))


def test_a_store_damaged_where_its_records_are_is_refused_in_one_line(tmp_path):
    """A store whose header and schema read, but not the page of its records, opened, then
    failed on reading them with a traceback (exit 1) in report, frontier, compare and --resume:
    the line a file damaged at its start gets, exit 2."""
    from conftest import fast_server, one_line_error, run_cli

    run, good = tmp_path / "run", tmp_path / "good"
    for url in fast_server():
        made = run_cli("profile", "-m", f"openai:{url}#fast", "-t", "arith", "--limit", "2",
                       "--max-tokens", "4", "--out", str(run))  # fmt: skip
        assert made.returncode == 0, made.stderr
    shutil.copytree(run, good)
    _damage_rows(run)
    said = f"{run / STORE_FILE} is not a readable tradeoff store: database disk image is malformed"
    for command in (
        ["report", str(run)],
        ["report", str(run), "--format", "csv", "-o", str(tmp_path / "r.csv")],
        ["frontier", str(run)],
        ["compare", str(good), str(run)],
    ):
        one_line_error(run_cli(*command), said)
    # (the records it holds are all there, as far as their index says: nothing to resume)
    resumed = run_cli("profile", "--resume", str(run))
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr, resumed.stderr
    assert resumed.stderr.strip().splitlines()[-1] == f"error: {said}"


def test_a_store_damaged_where_its_items_sessions_or_meters_are_is_refused_in_one_line(tmp_path):
    """Only the records were read through the one line: a damaged page of the items (policy fit,
    --resume), the sessions (report) or the meters (frontier) still ended in a traceback, exit 1."""
    from conftest import fast_server, import_outcomes, one_line_error, run_cli

    run = tmp_path / "profiled"
    for url in fast_server():
        made = run_cli("profile", "-m", f"openai:{url}#fast", "-t", "arith", "--limit", "2",
                       "--max-tokens", "4", "--out", str(run))  # fmt: skip
        assert made.returncode == 0, made.stderr
    imported = import_outcomes(tmp_path, [(f"q{i}", i % 2, 1) for i in range(12)])
    for table, directory, command in (
        ("items", imported, ["policy", "fit", str(imported), "--strong-fraction", "0.5",
                             "-o", str(tmp_path / "p.json")]),
        ("items", run, ["profile", "--resume", str(run)]),
        ("sessions", run, ["report", str(run)]),
        ("meters", run, ["frontier", str(run)]),
    ):  # fmt: skip
        damaged = tmp_path / f"{directory.name}-{table}-{command[0]}"
        shutil.copytree(directory, damaged)
        _damage_rows(damaged, table)
        command = [damaged if part == str(directory) else part for part in command]
        said = f"{damaged / STORE_FILE} is not a readable tradeoff store: database disk image"
        one_line_error(run_cli(*map(str, command)), f"error: {said} is malformed")
