"""`tradeoff profile --ray ADDRESS` on a real local Ray cluster of two nodes (ray.cluster_utils:
a head and a second node, each a set of real Ray processes on loopback): the store equals a
local run's at temperature 0, item for item; Ray is not imported without --ray."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import run_cli

ray = pytest.importorskip("ray", reason="the Ray tests need pip install 'tradeoff[ray]'")

PROFILE = ("-m", "smollm2-135m", "-m", "gemma3-270m", "-t", "arith", "-t", "facts",
           "--limit", "4", "--max-tokens", "16", "--temperature", "0")  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    two = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    two.add_node(num_cpus=1)
    two.wait_for_nodes()
    try:
        yield two.address
    finally:
        two.shutdown()


def _records(run) -> dict[tuple, tuple]:
    con = sqlite3.connect(run / "tradeoff.sqlite")
    try:
        rows = con.execute(
            "SELECT config_id, task, item_id, sample, output, output_tokens, input_tokens, score, "
            "error FROM records"
        ).fetchall()
    finally:
        con.close()
    return {r[:4]: r[4:] for r in rows}


@pytest.mark.slow
def test_a_ray_run_stores_what_a_local_run_does(cluster, tmp_path):
    on_ray = run_cli("profile", *PROFILE, "--out", str(tmp_path / "ray"), "--ray", cluster)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "ran on Ray" in on_ray.stderr and "2 actor(s)" in on_ray.stderr
    local = run_cli("profile", *PROFILE, "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    stored, expected = _records(tmp_path / "ray"), _records(tmp_path / "local")
    assert len(expected) == 16 and stored == expected


def test_no_cluster_at_the_address_is_one_line(tmp_path):
    bad = run_cli("profile", *PROFILE[:6], "--limit", "1", "--out", str(tmp_path / "r"),
                  "--ray", "127.0.0.1:1")  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--ray 127.0.0.1:1" in lines[0], bad.stderr


def test_ray_is_not_imported_without_the_flag():
    probe = "import sys, tradeoff.runner, tradeoff.cli; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def _count(run) -> int:
    store = run / "tradeoff.sqlite"
    if not store.exists():
        return 0
    con = sqlite3.connect(store)
    try:
        return con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0
    finally:
        con.close()


def _start(cluster, out, limit: int) -> subprocess.Popen:
    args = [*PROFILE[:6], "--limit", str(limit), "--max-tokens", "16", "--temperature", "0"]
    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "profile", *args, "--out", str(out), "--ray", cluster],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(run, n: int, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while _count(run) < n:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, f"fewer than {n} records after {timeout_s} s"
        time.sleep(0.2)


def _worker_pids() -> list[int]:
    """The processes of Ray workers running a ShardWorker actor (Ray names them for it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"ShardWorker" in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_nothing_is_stored_twice(cluster, tmp_path):
    out = tmp_path / "run"
    proc = _start(cluster, out, 10)
    _wait_for(out, 4, proc)
    pids = _worker_pids()
    assert pids, "no ShardWorker process found"
    os.kill(pids[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    keys = list(_records(out))
    assert len(keys) == len(set(keys)) == 2 * 10  # 2 models x 10 arith items, each once


@pytest.mark.slow
def test_a_ray_run_killed_at_the_driver_resumes_without_ray(cluster, tmp_path):
    out = tmp_path / "run"
    proc = _start(cluster, out, 10)
    _wait_for(out, 4, proc)
    proc.kill()
    proc.communicate()
    kept = _count(out)
    resumed = run_cli("profile", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert kept < 20, "the driver was killed before the end"
    assert len(_records(out)) == 20
