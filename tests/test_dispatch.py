"""A run dispatched from several processes (tradeoff.dispatch) against a real server on loopback
(benchmarks/fast_server.py): every request is stored exactly once, by the parent alone; Ctrl-C
stops the helpers too; a helper that dies fails the run without losing what was stored, and
`--resume` completes it. Beside a server, an in-process model's requests wait their turn, apart
from their latency."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fast_server, run_cli

from tradeoff.config import parse_spec
from tradeoff.runner import profile
from tradeoff.store import Store

ITEMS = 60  # arith's items


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    yield from fast_server()


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    yield from fast_server("--delay-ms", "20")


def spec_body(url: str, samples: int, processes: int | str = 2) -> dict:
    return {
        "models": {"fast": f"openai:{url}#fast"},
        "tasks": ["arith"],
        "samples": samples,
        "concurrency": 8,
        "processes": processes,
        "sampling": {"max_tokens": 4},
    }


def stored_keys(directory: Path) -> list[tuple]:
    """The stored records' keys; none before the run has made its store. Polling must not make
    it: connecting creates a missing file, and the run then refused its --out as one that
    "already holds a run" (a CI failure of test_a_helper_that_dies...)."""
    path = directory / "tradeoff.sqlite"
    if not path.exists():
        return []
    con = sqlite3.connect(path, timeout=10)
    try:
        return con.execute("SELECT config_id, task, item_id, sample FROM records").fetchall()
    finally:
        con.close()


def test_two_processes_store_every_request_once(tmp_path, slow_url):
    said: list[str] = []
    body = spec_body(slow_url, samples=5)
    result = profile(parse_spec(body), tmp_path / "run", notify=said.append)
    assert (result.status, result.done, result.errors) == ("finished", 5 * ITEMS, 0)
    keys = stored_keys(tmp_path / "run")
    assert len(keys) == len(set(keys)) == 5 * ITEMS
    [line] = [m for m in said if m.startswith("dispatched from 2 processes")]
    helped = int(re.search(r": (\d+) of", line).group(1))
    assert 0 < helped < 5 * ITEMS, line  # both processes did part of it
    store = Store.open(tmp_path / "run")
    try:
        records = store.records()
    finally:
        store.close()
    assert (records["output"] == "The answer is 42").all()
    assert records["score"].notna().all() and records["output_tokens"].eq(4).all()


def test_one_process_when_asked(tmp_path, url):
    said: list[str] = []
    result = profile(
        parse_spec(spec_body(url, samples=1, processes=1)), tmp_path / "run", notify=said.append
    )
    assert result.done == ITEMS and not [m for m in said if m.startswith("dispatched")]


def test_processes_keep_no_more_in_flight_than_the_concurrency(tmp_path):
    """--concurrency 3 over 2 processes: each kept 2 in flight, 4 in all. Against a server that
    streams 3 answers at a time (each 11 gaps of 30 ms), a 4th waited for one to end before its
    first token (a TTFT of a gap or two); split exactly (2 + 1), none waits."""
    body = {**spec_body("", samples=1), "concurrency": 3, "limit": 45}
    body["sampling"] = {"max_tokens": 8}
    said: list[str] = []
    with contextlib.contextmanager(fast_server)("--delay-ms", "30", "--max-concurrent", "3") as url:
        body["models"] = {"fast": f"openai:{url}#fast"}
        result = profile(parse_spec(body), tmp_path / "run", notify=said.append)
    assert (result.done, result.errors) == (45, 0)
    [line] = [m for m in said if m.startswith("dispatched from 2 processes")]
    assert int(re.search(r": (\d+) of", line).group(1)) > 0, line  # the helper sent some
    store = Store.open(tmp_path / "run")
    try:
        ttft = store.records()["ttft_s"]
    finally:
        store.close()
    assert ttft.max() < 0.09, sorted(ttft)[-5:]  # 3 gaps: none waited out another's stream


def test_an_in_process_model_beside_a_server_times_each_request_alone(tmp_path, url):
    """With an openai: model in the run, the in-process model's requests at --concurrency 3
    waited for its engine behind each other, the wait inside their TTFT and e2e (the third read
    about three times its own latency); the wait is their queue delay, apart."""
    body = {
        "models": {"small": "smollm2-135m?threads=1", "fast": f"openai:{url}#fast"},
        "tasks": ["arith"],
        "limit": 3,
        "concurrency": 3,
        "sampling": {"max_tokens": 8},
    }
    said: list[str] = []
    result = profile(parse_spec(body), tmp_path / "run", notify=said.append)
    assert (result.done, result.errors) == (6, 0)
    assert not [m for m in said if "one at a time" in m], said  # the server's are in flight
    store = Store.open(tmp_path / "run")
    try:
        records = store.records()
    finally:
        store.close()
    local = records[records["config"] == "small"]
    own = []
    for _, r in local.iterrows():
        (call,) = json.loads(r["calls"])
        own.append(call["e2e_s"])
        slack = 0.01 + call["e2e_s"] / 4  # the hops to the engine's thread and back
        assert call["e2e_s"] <= r["e2e_s"] < call["e2e_s"] + slack, (r["e2e_s"], call)
        assert call["ttft_s"] <= r["ttft_s"] < call["ttft_s"] + slack, (r["ttft_s"], call)
    assert local["queue_delay_s"].max() > min(own), list(local["queue_delay_s"])  # the third's
    assert records[records["config"] == "fast"]["queue_delay_s"].isna().all()  # a server's: none


def test_a_concurrency_over_in_process_models_alone_is_said_to_change_nothing(tmp_path):
    """With in-process models only, --concurrency 3 ran the requests one after another all the
    same, and nothing said so."""
    body = {"models": ["smollm2-135m"], "tasks": ["arith"], "limit": 2, "concurrency": 3}
    said: list[str] = []
    profile(
        parse_spec({**body, "sampling": {"max_tokens": 2}}), tmp_path / "run", notify=said.append
    )
    [note] = [m for m in said if "one at a time" in m]
    assert (
        note.startswith("note: concurrency 3 runs the requests one at a time") and "openai:" in note
    )


def _start(spec: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "profile", str(spec), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(out: Path, proc: subprocess.Popen[str], n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(stored_keys(out)) >= n:
                return
        except sqlite3.OperationalError:
            pass  # not created yet
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


def _helpers(parent: int) -> list[int]:
    """The pids of `parent`'s dispatch helpers (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"tradeoff.dispatch" in cmdline:
            found.append(int(entry.name))
    return found


def _resume_completes(out: Path, expected: int) -> None:
    resumed = run_cli("profile", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    keys = stored_keys(out)
    assert len(keys) == len(set(keys)) == expected


def test_ctrl_c_stops_the_helpers_and_resume_completes(tmp_path, slow_url):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_body(slow_url, samples=4)))
    out = tmp_path / "run"
    proc = _start(spec, out)
    _wait_for(out, proc, 30)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "continue with: tradeoff profile --resume" in err
    assert "Traceback" not in err
    stopped_at = len(stored_keys(out))
    assert stopped_at < 4 * ITEMS  # stopped early: the helpers did not run the rest
    _resume_completes(out, 4 * ITEMS)


def test_a_helper_that_dies_fails_the_run_and_resume_completes(tmp_path, slow_url):
    """The run ends with one line that says how to continue (it ended with a traceback of some
    60 lines, exit code 1 all the same)."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_body(slow_url, samples=4)))
    out = tmp_path / "run"
    proc = _start(spec, out)
    _wait_for(out, proc, 30)
    deadline = time.monotonic() + 60
    while not (helpers := _helpers(proc.pid)):
        assert time.monotonic() < deadline, "no helper process"
        time.sleep(0.05)
    os.kill(helpers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: a dispatch process failed (helper process exited with code -9")
    assert last.endswith(f"continue with: tradeoff profile --resume {out}"), last
    assert 0 < len(stored_keys(out)) < 4 * ITEMS
    _resume_completes(out, 4 * ITEMS)


def test_processes_the_run_cannot_use_are_named(url):
    """A number of processes given for in-process models, or on Ray, is said to be unused;
    `auto`, one process, and models all behind servers say nothing."""
    from tradeoff.config import resolve_configs
    from tradeoff.dispatch import unused_processes

    def note(models: dict[str, str], processes: int | str, on_ray: bool = False) -> str | None:
        spec = parse_spec({"models": models, "tasks": ["arith"], "processes": processes})
        return unused_processes(spec, resolve_configs(spec), on_ray)

    served = {"m": f"openai:{url}#m"}
    assert note(served, 2) is None and note(served, "auto") is None
    assert note({"m": "smollm2-135m"}, 1) is None and note({"m": "smollm2-135m"}, "auto") is None
    local = note({"small": "smollm2-135m", **served}, 3)
    assert local and local.startswith("--processes 3 is not used") and "llama.cpp" in local
    ray = note(served, 2, on_ray=True)
    assert ray and "on Ray the workers send the requests" in ray


ABORTING_HOST = """
import os, signal, sys, threading, time
from tradeoff.config import parse_spec
from tradeoff.store import Store

url, out, command = sys.argv[1:4]
spec = parse_spec({"models": {"m": f"openai:{url}#hang"}, "tasks": ["arith"], "limit": 50,
                   "processes": 3, "concurrency": 6, "sampling": {"max_tokens": 8}})
second = []


def interrupt():  # Ctrl-C twice while every request hangs
    while not (Path(out) / "tradeoff.sqlite").exists():
        time.sleep(0.05)
    time.sleep(1.5)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)
    second.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)


from pathlib import Path
threading.Thread(target=interrupt, daemon=True).start()
try:
    if command == "profile":
        from tradeoff.runner import profile
        profile(spec, out, notify=lambda m: None)
    else:
        from tradeoff.load.options import LoadOptions
        from tradeoff.load.run import load
        load(spec, LoadOptions(profile="concurrent:6", max_seconds=60, scrape="off"), out,
             notify=lambda m: None)
except KeyboardInterrupt:
    print(f"interrupted {time.monotonic() - second[0]:.1f} s after")
store = Store.open(out)
print("status", store.run()["status"])
"""


@pytest.mark.parametrize("command", ["profile", "load"])
def test_a_library_call_s_second_ctrl_c_ends_its_helper_processes_at_once(tmp_path, command):
    """A library call's abort (KeyboardInterrupt, not the command line's exit) waited 10 s for
    each helper process to finish requests that hung (20 s for two); a load read failed."""
    host = tmp_path / "host.py"
    host.write_text(ABORTING_HOST)
    for url in fast_server():
        ended = subprocess.run(
            [sys.executable, str(host), url, str(tmp_path / "run"), command],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert ended.returncode == 0, ended.stderr[-2000:]
    interrupted, status = ended.stdout.splitlines()
    assert float(interrupted.split()[1]) < 5 and status == "status stopped", ended.stdout
