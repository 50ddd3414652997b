"""A run killed midway (SIGKILL) or stopped (Ctrl-C) loses at most what was in flight, and
`--resume` completes it with every (configuration, item, sample) exactly once."""

import signal
import sqlite3
import subprocess
import sys
import time

from conftest import run_cli

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


def _count(db):
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def _start(out):
    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "profile", *ARGS, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_records(db, proc, n, timeout=120):
    deadline = time.time() + timeout
    while _count(db) < n:
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
    stored = _count(db)
    assert 2 <= stored < EXPECTED
    con = sqlite3.connect(db)
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "stopped"
    con.close()
    result = run_cli("profile", "--resume", str(out))
    assert result.returncode == 0, result.stderr
    assert _count(db) == EXPECTED
