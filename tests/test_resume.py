"""A run killed midway (SIGKILL) or stopped (Ctrl-C) loses at most what was in flight, and
`--resume` completes it with every (configuration, item, sample) exactly once."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import fast_server, one_line_error, records_so_far, run_cli

from tradeoff.store import Store

ARGS = [
    "--model",
    "smollm2-135m",
    "--task",
    "arith",
    "--limit",
    "12",
    "--samples",
    "2",
    "--max-tokens",
    "12",
]
EXPECTED = 12 * 2


def _start(out):
    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "profile", *ARGS, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_records(db, proc, n, timeout=120):
    deadline = time.time() + timeout
    while records_so_far(db.parent) < n:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline, "no progress"
        time.sleep(0.05)


def _keys_and_times(db):
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT config_id, task, item_id, sample, created_at FROM records"
        ).fetchall()
    finally:
        con.close()


def test_sigkill_then_resume_completes_exactly_once(tmp_path):
    out = tmp_path / "run"
    db = out / "tradeoff.sqlite"
    proc = _start(out)
    _wait_for_records(db, proc, 4)
    proc.kill()
    proc.wait()
    before = _keys_and_times(db)
    assert 4 <= len(before) < EXPECTED
    # Its report says that the run did not finish, and how to go on.
    shown = run_cli("report", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "its process died" in shown.stderr and f"--resume {out}" in shown.stderr

    result = run_cli("profile", "--resume", str(out))
    assert result.returncode == 0, result.stderr
    after = _keys_and_times(db)
    keys = [row[:4] for row in after]
    assert len(keys) == EXPECTED == len(set(keys))
    assert {(i, s) for _, _, i, s in keys} == {
        (f"arith-{i:04d}", s) for i in range(12) for s in (0, 1)
    }
    # what was stored before the kill was kept, not redone
    assert set(before) <= set(after)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    db = out / "tradeoff.sqlite"
    proc = _start(out)
    _wait_for_records(db, proc, 2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"--resume {out}" in stderr
    stored = records_so_far(db.parent)
    assert f"stopped after {stored} new records ({stored} stored in all)" in stderr
    assert 2 <= stored < EXPECTED
    con = sqlite3.connect(db)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "stopped"
    con.close()
    exports = (["report", "--format", "csv"], ["report", "--records", "--format", "json"])
    for command, *options in (["report"], ["frontier"], *exports):  # exports said nothing
        shown = run_cli(command, str(out), *options)
        assert shown.returncode == 0, shown.stderr
        assert f"note: the run stopped before it finished: {stored} records;" in shown.stderr
    result = run_cli("profile", "--resume", str(out))
    assert result.returncode == 0, result.stderr
    assert records_so_far(db.parent) == EXPECTED
    assert "note:" not in run_cli("report", str(out)).stderr  # finished now
    again = run_cli("profile", "--resume", str(out))  # nothing left: said, and no model loaded
    assert again.returncode == 0 and f"nothing to resume: {out} holds every record" in again.stderr
    assert "loading" not in again.stderr.lower() and records_so_far(db.parent) == EXPECTED


def test_a_second_ctrl_c_aborts_and_says_how_to_resume(tmp_path):
    """The run's own handler, in the command line's process: the second signal exits at once."""
    code = (
        "import signal; from pathlib import Path; from tradeoff.runner import Stop\n"
        "from tradeoff.abort import end_process; end_process()\n"
        "stop = Stop(lambda m: print(m, flush=True)); stop.directory = Path('runs/a')\n"
        "stop(signal.SIGINT, None); stop(signal.SIGINT, None)\n"
    )
    ended = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ended.returncode == 130, ended.stderr
    assert ended.stdout.splitlines()[-1] == (
        "aborting now; requests in flight are lost; continue with: tradeoff profile --resume runs/a"
    )


def test_signals_stop_and_abort_when_stderr_has_no_reader():
    """A notice to a stderr whose reader is gone raises BrokenPipeError: the first signal still
    asks the run to stop, the second still aborts."""
    code = (
        "import signal; from pathlib import Path; from tradeoff.runner import Stop\n"
        "from tradeoff.abort import end_process; end_process()\n"
        "def gone(message): raise BrokenPipeError(32, 'Broken pipe')\n"
        "stop = Stop(gone); stop.directory = Path('runs/a')\n"
        "stop(signal.SIGINT, None); assert stop.requested\n"
        "stop(signal.SIGINT, None)\n"
    )
    ended = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ended.returncode == 130, ended.stderr


HOST = """
import signal, subprocess, sys
from tradeoff.config import parse_spec
from tradeoff.runner import profile
from tradeoff.store import Store

child = subprocess.Popen(["sleep", "120"])  # the host's own, none of tradeoff's
spec = parse_spec({"models": ["smollm2-135m"], "tasks": ["arith"], "limit": 6,
                   "sampling": {"max_tokens": 8}})


def interrupt(done, total, skipped, errors):
    if done == 1:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C pressed twice in a notebook
        signal.raise_signal(signal.SIGINT)


try:
    profile(spec, sys.argv[1], on_progress=interrupt, notify=lambda m: None)
except KeyboardInterrupt:
    print("interrupted")
print("child", "alive" if child.poll() is None else "killed")
store = Store.open(sys.argv[1])
print("status", store.run()["status"], len(store.done_keys()) >= 1)
store.close()
handler = signal.getsignal(signal.SIGINT)
print("handler", "default" if handler is signal.default_int_handler else handler)
result = profile(spec, resume=sys.argv[1], notify=lambda m: None)
print("resumed", result.status, result.done + result.skipped)
child.kill()
"""


def test_a_second_ctrl_c_in_a_library_call_raises_in_its_caller(tmp_path):
    """Called as a library (a notebook, an application), a second Ctrl-C neither ends the
    caller's process nor kills processes tradeoff did not start (both happened: the host's own
    child SIGKILLed, the host os._exit(130)): KeyboardInterrupt reaches the caller, the run reads
    stopped (not failed), SIGINT's
    handler is the one it had (a closed loop's was left installed), and the run resumes."""
    host, out = tmp_path / "host.py", tmp_path / "run"
    host.write_text(HOST)
    ended = subprocess.run(
        [sys.executable, str(host), str(out)], capture_output=True, text=True, timeout=300
    )
    assert ended.returncode == 0, ended.stderr[-2000:]
    assert ended.stdout.splitlines() == [
        "interrupted",
        "child alive",
        "status stopped True",
        "handler default",
        "resumed finished 6",
    ]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_an_item_edited_before_it_was_answered_is_asked_as_it_now_is(tmp_path):
    """Only answered items can disagree with their records: one edited while the run was stopped,
    before anything answered it, is asked anew (it was refused as "changed since its records
    were written"); an answered one edited is still refused."""
    data, out = tmp_path / "items.jsonl", tmp_path / "run"
    rows = [{"prompt": f"{i}+1?", "answer": str(i + 1)} for i in range(8)]
    _jsonl(data, rows)
    for url in fast_server("--delay-ms", "150"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradeoff", "profile", "-m", f"openai:{url}#fast",
             "-t", f"jsonl:{data}", "--max-tokens", "4", "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_for_records(out / "tradeoff.sqlite", proc, 2)
        proc.kill()
        proc.communicate()
        answered = {row[2] for row in _keys_and_times(out / "tradeoff.sqlite")}
        assert "8" not in answered, answered
        _jsonl(data, [*rows[:7], {"prompt": "100+1?", "answer": "101"}])
        resumed = run_cli("profile", "--resume", str(out))
        assert resumed.returncode == 0, resumed.stderr
        stored = Store.open(out)
        try:
            items = stored.items().set_index("item_id")
        finally:
            stored.close()
        assert (
            items.loc["8", "reference"] == "101"
            and len(_keys_and_times(out / "tradeoff.sqlite")) == 8
        )
        _jsonl(
            data,
            [
                {"prompt": "0+1?", "answer": "9"},
                *rows[1:7],
                {"prompt": "100+1?", "answer": "101"},
            ],
        )
        one_line_error(run_cli("profile", "--resume", str(out)), "1 stored item(s) changed")


def test_resume_refuses_items_whose_content_changed_and_redoes_them_when_asked(tmp_path):
    data, out = tmp_path / "grow.jsonl", tmp_path / "run"
    _jsonl(data, [{"prompt": "2+2?", "answer": "4"}, {"prompt": "5+5?", "answer": "10"}])
    args = ["--model", "smollm2-135m", "--task", f"jsonl:{data}", "--max-tokens", "6"]
    assert run_cli("profile", *args, "--out", str(out)).returncode == 0
    db = out / "tradeoff.sqlite"
    before = {row[2]: row for row in _keys_and_times(db)}
    # The first answer changes, the second question changes, a third item is added.
    _jsonl(
        data,
        [
            {"prompt": "2+2?", "answer": "5"},
            {"prompt": "Capital of France?", "answer": "Paris"},
            {"prompt": "7+7?", "answer": "14"},
        ],
    )
    refused = run_cli("profile", "--resume", str(out))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = refused.stderr.strip()
    assert "2 stored item(s) changed" in line and "#1" in line and "#2" in line, line
    assert "--rescore-changed" in line and "--out" in line
    assert _keys_and_times(db) == list(before.values()), "a refused resume must change nothing"

    redone = run_cli("profile", "--resume", str(out), "--rescore-changed")
    assert redone.returncode == 0, redone.stderr
    said = " ".join(redone.stderr.split())
    assert "2 changed item(s)" in said and "2 stored record(s) deleted" in said, said
    after = {row[2]: row for row in _keys_and_times(db)}
    assert sorted(after) == ["1", "2", "3"]
    assert all(after[i][4] > before[i][4] for i in ("1", "2")), "changed items were redone"
    con = sqlite3.connect(db)
    items = dict(con.execute("SELECT item_id, item FROM items").fetchall())
    con.close()
    assert json.loads(items["2"])["prompt"] == "Capital of France?"
    assert json.loads(items["1"])["reference"] == "5"
    # Now stored as they are: a further resume has nothing to refuse or redo.
    again = run_cli("profile", "--resume", str(out))
    assert again.returncode == 0 and "changed" not in again.stderr, again.stderr
    # An item taken out of the file: its records stay, and the resume says so.
    _jsonl(data, [{"prompt": "2+2?", "answer": "5"}, {"prompt": "Capital of France?",
                                                      "answer": "Paris"}])  # fmt: skip
    shrunk = run_cli("profile", "--resume", str(out))
    assert shrunk.returncode == 0, shrunk.stderr
    said = " ".join(shrunk.stderr.split())
    assert f"1 stored item(s) are no longer in their task (jsonl:{data}#3)" in said, said


def test_a_stored_item_past_the_limit_now_is_said_so_and_a_change_to_it_stops_nothing(tmp_path):
    """With `limit`, an item still in the task file but now past its first `limit` items (one
    added before it) is never asked again: its records answer what it was, so a change to it
    stopped the resume (offering --rescore-changed "to redo them", which deleted them, redoing
    nothing) though the same resume said they stay. It is said, with its change; the resume goes
    on; --rescore-changed deletes its records and says so."""
    data, out = tmp_path / "q.jsonl", tmp_path / "run"
    q1, q2 = {"id": "q1", "prompt": "1+1?", "answer": "2"}, {"id": "q2", "prompt": "2+2?",
                                                              "answer": "4"}  # fmt: skip
    q9 = {"id": "q9", "prompt": "9+9?", "answer": "18"}
    _jsonl(data, [q1, q2, {"id": "q3", "prompt": "3+3?", "answer": "6"}])
    past = "1 stored item(s) are now past their task's first 2 items, the spec's limit"
    for url in fast_server():
        args = ["-m", f"openai:{url}#fast", "-t", f"jsonl:{data}", "--limit", "2"]
        assert run_cli("profile", *args, "--max-tokens", "4", "--out", str(out)).returncode == 0
        _jsonl(data, [q9, q1, q2])
        resumed = run_cli("profile", "--resume", str(out))
        assert resumed.returncode == 0, resumed.stderr
        said = " ".join(resumed.stderr.split())
        assert "no longer in their task" not in said and "changed in the file" not in said, said
        assert (
            f"{past} (jsonl:{data}#q2): not asked again, their records stay in the run and its "
            "report as they were; profile into a new --out to leave them out" in said
        ), said
        _jsonl(data, [q9, q1, q2 | {"answer": "5"}])
        kept = run_cli("profile", "--resume", str(out))
        assert kept.returncode == 0, kept.stderr
        said = " ".join(kept.stderr.split())
        assert (
            f"{past} (jsonl:{data}#q2): not asked again, their records stay in the run and its "
            f"report as they were; profile into a new --out to leave them out; 1 of them changed "
            f"in the file since (jsonl:{data}#q2): their records are of the earlier content, and "
            "--rescore-changed deletes them" in said
        ), said
        answered = sorted(row[2] for row in _keys_and_times(out / "tradeoff.sqlite"))
        assert answered == ["q1", "q2", "q9"], answered
        deleted = run_cli("profile", "--resume", str(out), "--rescore-changed")
        assert deleted.returncode == 0, deleted.stderr
        said = " ".join(deleted.stderr.split())
        assert (
            f"1 stored item(s) now past their task's first 2 items, the spec's limit, changed in "
            f"the file since (jsonl:{data}#q2): 1 stored record(s) deleted; not asked again" in said
        ), said
        assert "stay" not in said and "redo" not in said, said
        again = run_cli("profile", "--resume", str(out))
        assert again.returncode == 0 and "q2" not in again.stderr, again.stderr
    assert sorted(row[2] for row in _keys_and_times(out / "tradeoff.sqlite")) == ["q1", "q9"]


def test_a_resume_that_deleted_changed_items_records_leaves_the_run_unfinished(tmp_path):
    """--rescore-changed deletes the changed items' records before the models load: a resume
    that stopped there (a model no longer reachable, a Ctrl-C) left the run "finished" with
    records missing, and report showed the rest with no note and no --resume."""
    data, out = tmp_path / "items.jsonl", tmp_path / "run"
    rows = [{"prompt": f"{i}+1?", "answer": str(i + 1)} for i in range(3)]
    _jsonl(data, rows)
    for url in fast_server():
        args = ["-m", f"openai:{url}#fast", "-t", f"jsonl:{data}", "--max-tokens", "4"]
        assert run_cli("profile", *args, "--out", str(out)).returncode == 0
    _jsonl(data, [rows[0], {"prompt": "1+1?", "answer": "3"}, {"prompt": "2+1?", "answer": "4"}])
    stopped = run_cli("profile", "--resume", str(out), "--rescore-changed")  # its server is gone
    assert stopped.returncode == 2, stopped.stderr
    assert "2 stored record(s) deleted" in stopped.stderr, stopped.stderr
    store = Store.open(out)
    try:
        assert store.run()["status"] != "finished" and len(store.done_keys()) == 1
    finally:
        store.close()
    report = run_cli("report", str(out))
    assert report.returncode == 0, report.stderr
    said = " ".join((report.stdout + report.stderr).split())
    assert "stopped before it finished: 1 record" in said, said
    assert f"continue with: tradeoff profile --resume {out}" in said, said


def test_a_second_writer_is_refused_while_a_run_is_written(tmp_path):
    out = tmp_path / "run"
    db = out / "tradeoff.sqlite"
    proc = _start(out)
    try:
        _wait_for_records(db, proc, 1)
        second = run_cli("profile", "--resume", str(out))
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert "being written by another tradeoff process" in second.stderr, second.stderr
        assert f"pid {proc.pid}" in second.stderr
        assert run_cli("report", str(out)).returncode == 0, "readers need no lock"
    finally:
        proc.kill()
        proc.wait()
    # The lock dies with its holder: the killed run resumes.
    assert run_cli("profile", "--resume", str(out)).returncode == 0
    assert records_so_far(db.parent) == EXPECTED


def test_ctrl_c_before_a_run_begins_writes_nothing_and_says_so_in_one_line(tmp_path):
    """Ctrl-C while the command line's modules load, or while the run's model is loaded (here
    an OpenAI-compatible server on loopback that accepts and never answers), for `profile` and
    for `load`: exit 130, one line, no traceback, no run directory."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []  # the server's side of each connection, kept open and never answered

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                held.append(listener.accept())

    threading.Thread(target=accept, daemon=True).start()
    model = f"openai:http://127.0.0.1:{listener.getsockname()[1]}/v1#silent"
    cases = [  # command, seconds before the Ctrl-C, what the line says
        ("profile", 0.2, "interrupted"),  # importing (or, on a fast machine, loading)
        ("profile", 4.0, "interrupted before the run began; nothing was written"),
        ("load", 4.0, "interrupted"),
    ]
    try:
        for command, delay_s, says in cases:
            out = tmp_path / f"{command}-{delay_s}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "tradeoff", command, "-m", model, "-t", "arith"]
                + ["--limit", "2", "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(delay_s)
            assert proc.poll() is None, proc.communicate()
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 130, (command, delay_s, stderr)
            assert "Traceback" not in stderr
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and says in lines[0], (command, delay_s, stderr)
            assert not out.exists()
    finally:
        listener.close()


def test_a_stopped_demo_names_its_own_resume_which_finishes_it_and_writes_its_page(tmp_path):
    """A Ctrl-C in `tradeoff demo` names `tradeoff demo --resume DIR`, which completes the run
    (nothing stored is redone) and, as a whole demo does, prints the tables and writes the
    page (`profile --resume` writes none)."""
    out = tmp_path / "demo"
    db = out / "tradeoff.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "demo", "--limit", "1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_records(db, proc, 2, timeout=300)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert f"continue with: tradeoff demo --resume {out}" in stderr, stderr
    before = _keys_and_times(db)
    assert not (out / "report.html").exists()
    # the report of the stopped run says the same (it named profile --resume, which writes none)
    noted = run_cli("report", str(out))
    assert f"continue with: tradeoff demo --resume {out}" in noted.stderr + noted.stdout, noted

    one_line_error(
        run_cli("demo", "--resume", str(out), "--limit", "3"), "give no --out or --limit"
    )
    (out / "report.html").mkdir()  # its page cannot be written: said before any work (a traceback)
    one_line_error(run_cli("demo", "--resume", str(out)), "report.html is a directory")
    assert _keys_and_times(db) == before
    (out / "report.html").rmdir()
    resumed = run_cli("demo", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "report.html").stat().st_size > 0 and f"report: {out}" in resumed.stdout
    after = _keys_and_times(db)
    assert set(before) < set(after) and len({row[:4] for row in after}) == len(after)
    said = f"({len(after) - len(before)} records in "  # the new ones, and those stored before
    assert said in resumed.stdout and f", {len(before)} stored before)" in resumed.stdout


def test_demo_resume_refuses_a_run_that_is_not_a_demo(tmp_path):
    """It continued a profile run's own spec, said `demo --resume` where `report` said
    `profile --resume`, and wrote a demo's page for it."""
    out = tmp_path / "profiled"
    made = run_cli("profile", "-m", "smollm2-135m", "-t", "arith", "--limit", "1",
                   "--max-tokens", "2", "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    one_line_error(
        run_cli("demo", "--resume", str(out)),
        f"holds a run of `tradeoff profile`, not a demo; continue with: tradeoff profile "
        f"--resume {out}",
    )
    assert not (out / "report.html").exists()


def test_a_record_is_committed_before_an_inline_engine_runs_the_next_request(tmp_path):
    """In-process models run inline on the event loop: at --concurrency 2 the other worker's
    whole request ran before the turn in which a record completed ended, and a kill meanwhile
    lost a record already complete."""
    from test_store import record

    from tradeoff.runner import Writer
    from tradeoff.store import Store
    from tradeoff.types import Item

    store = Store.create(tmp_path / "run", {}, {})
    store.add_configs([("c1", "small", {"strategy": "single"})])
    store.add_items([Item("a", "2+2?", "4", "arith")])
    seen: list[int] = []

    def committed() -> int:
        with contextlib.closing(sqlite3.connect(tmp_path / "run" / "tradeoff.sqlite")) as other:
            return other.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    async def next_request() -> None:  # ready as the record completes; blocks as inline work
        seen.append(committed())
        time.sleep(0.05)

    async def both() -> None:
        writer = Writer(store, inline=True)
        other = asyncio.ensure_future(next_request())
        await writer.write(record("a"))
        await other

    asyncio.run(both())
    store.close()
    assert seen == [1]


def test_a_ctrl_c_once_the_run_is_stored_says_where_it_is(tmp_path, capsys):
    """While the tables print or the page is written, the run is complete: it said
    "interrupted", or that nothing was written."""
    from tradeoff.cli.run import _stored

    with pytest.raises(SystemExit) as ended, _stored(tmp_path, "; see it so"):
        raise KeyboardInterrupt
    assert ended.value.code == 130
    assert f"interrupted; the run is stored in {tmp_path}; see it so" in capsys.readouterr().err


def test_each_kind_of_run_names_the_command_that_continues_it(tmp_path):
    """`profile --resume` of a load run read 'unknown field load' (a store gone bad, it
    seemed); `load --resume` sent a served or profile run to `profile --resume` alike; a
    report of a run stopped before its first record said nothing of going on; a store its
    user cannot write was found at the first record, after the models loaded, with 'make room'."""
    import shutil

    import httpx
    from conftest import fast_server, serve_process

    from tradeoff.store import Store

    with contextlib.contextmanager(fast_server)() as url:
        model = ("-m", f"openai:{url}#m", "-t", "arith", "--limit", "2", "--max-tokens", "4")
        load, done = tmp_path / "load", tmp_path / "done"
        made = run_cli("load", *model, "--max-requests", "2", "--scrape", "off", "--out", str(load))
        assert made.returncode == 0, made.stderr
        assert run_cli("profile", *model, "--out", str(done)).returncode == 0
        (tmp_path / "spec.yaml").write_text(f"models: {{m: 'openai:{url}#m'}}\n")
        with serve_process(
            "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "s")
        ) as s:
            ask = {"model": "m", "prompt": "2+2=", "max_tokens": 2}
            assert httpx.post(f"{s.url}/completions", json=ask, timeout=60).status_code == 200
        said = f"holds a load run; continue with: tradeoff load --resume {load}"
        one_line_error(run_cli("profile", "--resume", str(load)), said)
        one_line_error(run_cli("load", "--resume", str(done)),
                       f"continue with: tradeoff profile --resume {done}")  # fmt: skip
        one_line_error(run_cli("load", "--resume", str(tmp_path / "s")),
                       "holds served traffic, nothing to resume")  # fmt: skip
        # a store this user cannot write (as root: without the capability to override modes)
        locked = tmp_path / "locked"
        shutil.copytree(done, locked)
        (locked / "tradeoff.sqlite").chmod(0o444)
        drop = "-dac_override,-dac_read_search,-fowner"
        refused = subprocess.run(
            ["setpriv", "--bounding-set", drop, "--inh-caps", drop, sys.executable, "-m",
             "tradeoff", "profile", "--resume", str(locked)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        one_line_error(refused, f"cannot write {locked / 'tradeoff.sqlite'}: Permission denied")
    empty = tmp_path / "empty"
    Store.create(empty, {"models": {"m": "smollm2-135m"}, "tasks": ["arith"]}, {}).close()
    said = f"nothing to report; continue with: tradeoff profile --resume {empty}"
    one_line_error(run_cli("report", str(empty)), said)


def test_a_suggested_resume_of_a_directory_with_a_space_can_be_pasted(tmp_path):
    """The directory was pasted into "continue with: tradeoff profile --resume DIR" unquoted: for
    `runs/sp ace` the command as printed gave --resume an extra word, refused as "takes no spec,
    --model, --task or --out"."""
    import shlex

    with contextlib.contextmanager(fast_server)() as url:
        out = tmp_path / "sp ace"
        args = ["-m", f"openai:{url}#m", "-t", "arith", "--limit", "2", "--max-tokens", "4"]
        assert run_cli("profile", *args, "--out", str(out)).returncode == 0
        taken = run_cli("profile", *args, "--out", str(out))
        one_line_error(taken, f"continue it with tradeoff profile --resume '{out}' or")
        suggested = taken.stderr.split("continue it with ")[1].split(" or choose")[0]
        assert run_cli(*shlex.split(suggested)[1:]).returncode == 0
    empty = tmp_path / "st op"
    Store.create(empty, {"models": {"m": "smollm2-135m"}, "tasks": ["arith"]}, {}).close()
    said = f"nothing to report; continue with: tradeoff profile --resume '{empty}'"
    one_line_error(run_cli("report", str(empty)), said)


def test_a_store_the_disk_cannot_take_says_to_check_it(tmp_path):
    """SQLite names its errors by their extended codes (SQLITE_IOERR_WRITE): the advice looked
    up by the primary one found none and said 'mend that'."""
    from conftest import fast_server

    with contextlib.contextmanager(fast_server)() as url:
        command = (
            f"ulimit -f 400; {sys.executable} -m tradeoff profile -m openai:{url}#m -t arith "
            f"-t facts -t choice --max-tokens 64 --out {tmp_path / 'run'}"
        )
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "could not be written: disk I/O error" in done.stderr, done.stderr
    assert "kept: check the disk, then continue with" in done.stderr


def test_a_ctrl_c_while_generated_code_runs_ends_with_130_not_a_signal(tmp_path):
    """A Ctrl-C that lands while a dataclass makes its methods (source text run by `exec`) as the
    command line's modules load: one line and exit 130. Under `python -m` CPython ended the
    process by SIGINT (-2) instead, as if nothing had caught it (one Ctrl-C in six, early in a
    run). Here the interrupt is raised in such code as `tradeoff.cli` begins to load."""
    (tmp_path / "interrupted_loading.py").write_text(
        "import sys\n"
        "class Interrupting:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tradeoff.cli':\n"
        "            exec('raise KeyboardInterrupt', {})\n"
        "sys.meta_path.insert(0, Interrupting())\n"
        "sys.argv = ['tradeoff', 'tasks']\n"
        "from tradeoff.launch import main\n"
        "main()\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    done = subprocess.run(
        [sys.executable, "-m", "interrupted_loading"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr == "interrupted before the command began; nothing was written\n"


def test_records_scored_by_earlier_text_rules_are_found_on_resume(tmp_path):
    """A run stored before `normalize` kept a number's sign and point (its items hashed with
    the scorer's repr of then, without `rules`): a resume found nothing changed, so one run
    held records scored by two sets of rules ("4.2" against "42": right, then wrong)."""
    import hashlib

    from tradeoff.store import item_json
    from tradeoff.types import Item

    data, out = tmp_path / "q.jsonl", tmp_path / "run"
    _jsonl(data, [{"prompt": "Say Paris.", "answer": "Paris"}])
    args = ["--model", "smollm2-135m", "--task", f"jsonl:{data}", "--max-tokens", "2"]
    assert run_cli("profile", *args, "--out", str(out)).returncode == 0
    con = sqlite3.connect(out / "tradeoff.sqlite")
    with con:  # as the version before stored it
        for rowid, stored in con.execute("SELECT rowid, item FROM items").fetchall():
            item = Item(**json.loads(stored))
            old = f"{item_json(item)}\0ContainsScorer(name='contains', window=200)"
            digest = hashlib.sha256(old.encode()).hexdigest()[:16]
            con.execute("UPDATE items SET content_hash = ? WHERE rowid = ?", (digest, rowid))
    con.close()
    refused = run_cli("profile", "--resume", str(out))
    assert refused.returncode == 2, refused.stderr
    assert "1 stored item(s) changed" in refused.stderr and "the scorer" in refused.stderr
    redone = run_cli("profile", "--resume", str(out), "--rescore-changed")
    assert redone.returncode == 0 and "1 stored record(s) deleted" in " ".join(
        redone.stderr.split()
    ), redone.stderr
