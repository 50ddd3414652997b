"""`tradeoff profile --ray ADDRESS` on a real local Ray cluster of two nodes (ray.cluster_utils:
a head and a second node, each a set of real Ray processes on loopback): the store equals a
local run's at temperature 0, item for item; Ray is not imported without --ray."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

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
