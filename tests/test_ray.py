"""`tradeoff profile` on a real local Ray cluster of two nodes (ray.cluster_utils: a head and a
second node, each a set of real Ray processes on loopback): the store equals a local run's at
temperature 0, item for item; a killed worker's shard is redone and nothing stored twice; a run
killed at the driver resumes without Ray; a model no node can hold is one line, and so is an
address where no cluster answers (in seconds); Ray is not imported without --ray."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import fast_server, fitted_policy, one_line_error, run_cli

ray = pytest.importorskip("ray", reason="the Ray tests need pip install 'tradeoff[ray]'")

PROFILE = ("-m", "smollm2-135m", "-m", "gemma3-270m", "-t", "arith", "-t", "facts",
           "--limit", "4", "--max-tokens", "16", "--temperature", "0")  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # Two CPUs a node: `cascade` and `switch` load both models (one CPU each) in one worker.
    two = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    two.add_node(num_cpus=2)
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


def _spec(path, **fields) -> str:
    spec = {
        "models": {"small": "smollm2-135m", "big": "gemma3-270m"},
        "tasks": ["arith"],
        "limit": 20,
        "sampling": {"max_tokens": 16, "temperature": 0},
        "configs": [
            {"strategy": "single", "model": "small"},
            {"strategy": "single", "model": "big"},
            {"strategy": "cascade", "models": ["small", "big"], "threshold": 0.5},
            {"strategy": "switch", "models": ["small", "big"], "threshold": 1.5},
        ],
        **fields,
    }
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _run(run) -> dict:
    con = sqlite3.connect(run / "tradeoff.sqlite")
    try:
        host, summary = con.execute(
            "SELECT runs.host, meters.summary FROM runs JOIN meters ON meters.run_id = runs.id"
        ).fetchone()
        missing = {r[0] for r in con.execute("SELECT DISTINCT energy_missing FROM records")}
    finally:
        con.close()
    return {"host": json.loads(host), "meters": json.loads(summary), "energy_missing": missing}


@pytest.mark.slow
def test_a_ray_run_stores_what_a_local_run_does(cluster, tmp_path):
    """Two models x three strategies (single, cascade, switch) x 20 items, the cluster named by
    the spec's `executor:`; each model group's worker meters its own devices."""
    spec = _spec(tmp_path / "ray.yaml", executor={"ray": {"address": cluster}})
    on_ray = run_cli("profile", spec, "--out", str(tmp_path / "ray"))
    assert on_ray.returncode == 0, on_ray.stderr
    assert "ran on Ray" in on_ray.stderr and "3 worker(s)" in on_ray.stderr, on_ray.stderr
    local = run_cli("profile", spec, "--out", str(tmp_path / "local"), "--ray", "off")
    assert local.returncode == 0, local.stderr
    assert "ran on Ray" not in local.stderr
    stored, expected = _records(tmp_path / "ray"), _records(tmp_path / "local")
    assert len(expected) == 4 * 20 and stored == expected
    run = _run(tmp_path / "ray")
    nodes = run["host"]["nodes"]
    assert nodes and all(n["node_id"] and n["cpu_cores"] for n in nodes), nodes
    workers = run["meters"]["ray_workers"]
    assert sorted(tuple(w["models"]) for w in workers) == [("big",), ("big", "small"), ("small",)]
    assert {w["node_id"] for w in workers} <= {n["node_id"] for n in nodes}
    # Each worker says what it metered with, or why nothing: the records say the same.
    reasons = {w["energy_missing"] for w in workers if w["energy"] is None}
    assert run["energy_missing"] <= reasons | {None}, (run["energy_missing"], reasons)


def test_a_model_no_node_can_hold_is_one_line(cluster, tmp_path):
    spec = _spec(
        tmp_path / "gpu.yaml",
        models={"small": {"ref": "smollm2-135m", "resources": {"num_gpus": 1}}},
        configs=[{"strategy": "single", "model": "small"}],
    )
    bad = run_cli("profile", spec, "--out", str(tmp_path / "r"), "--ray", cluster)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, bad.stderr
    assert "model 'small'" in lines[0] and "GPU 1" in lines[0], lines[0]
    # the nodes as a person reads them: memory in GB, not Ray's own per-node keys
    assert " GB" in lines[0] and "node:" not in lines[0] and "e+" not in lines[0], lines[0]
    assert not (tmp_path / "r").exists()


def test_more_workers_than_the_cluster_holds_is_one_line(cluster, tmp_path):
    """Three workers each of two 1-CPU groups ask 6 CPUs of a 4-CPU cluster: they would wait for
    ever, since none starts until all can."""
    spec = _spec(
        tmp_path / "many.yaml",
        configs=[{"strategy": "single", "model": "small"}, {"strategy": "single", "model": "big"}],
        executor={"ray": {"address": cluster, "workers": 3}},
    )
    bad = run_cli("profile", spec, "--out", str(tmp_path / "r"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, bad.stderr
    assert "6 Ray worker(s) (3 per model group) ask for CPU 6 in all" in lines[0], lines[0]
    assert "workers: N" in lines[0] and not (tmp_path / "r").exists()
    # One worker a group already: what would fit is asking less of each, not fewer workers.
    two_cpus = {"num_cpus": 2}
    spec = _spec(
        tmp_path / "wide.yaml",
        models={name: {"ref": "smollm2-135m", "resources": two_cpus} for name in "abc"},
        configs=[{"strategy": "single", "model": name} for name in "abc"],
        executor={"ray": {"address": cluster}},
    )
    bad = run_cli("profile", spec, "--out", str(tmp_path / "r"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert "3 Ray worker(s) (1 per model group) ask for CPU 6 in all" in bad.stderr, bad.stderr
    assert "workers: N" not in bad.stderr and "num_cpus: 0.5" in bad.stderr, bad.stderr


@pytest.mark.parametrize("address", ["127.0.0.1:1", "bogus", "http://127.0.0.1:1"])
def test_no_cluster_at_the_address_or_no_address_is_one_line(tmp_path, address):
    bad = run_cli("profile", *PROFILE[:6], "--limit", "1", "--out", str(tmp_path / "r"),
                  "--ray", address)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"Ray address {address!r}" in lines[0], bad.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """A port that answers, but not as Ray: benchmarks/fast_server.py (OpenAI-compatible)."""
    yield from fast_server()


def test_a_port_that_is_not_ray_is_one_line_in_seconds_and_ctrl_c_stops_the_wait(web, tmp_path):
    """`--ray HOST:PORT` where a server listens that is no Ray cluster (here the model's own
    server): Ray itself retried for minutes, deaf to Ctrl-C and SIGTERM."""
    address = f"127.0.0.1:{urlsplit(web).port}"
    model = f"openai:{web}#fast"
    begun = time.monotonic()
    bad = run_cli("profile", "-m", model, "-t", "arith", "--limit", "1",
                  "--out", str(tmp_path / "r"), "--ray", address, timeout=60)  # fmt: skip
    assert time.monotonic() - begun < 30, bad.stderr
    one_line_error(bad, f"Ray address {address!r}: no Ray cluster answers there", "auto",
                   "local", "`ray start --head`")  # fmt: skip
    assert not (tmp_path / "r").exists()
    # A Ctrl-C while it waits for the answer stops the run there, as while workers load.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradeoff", "load", "-m", model, "-t", "arith", "--limit", "1",
         "--profile", "constant:1", "--max-requests", "1", "--scrape", "off",
         "--out", str(tmp_path / "l"), "--ray", address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted before the run began; nothing was written" in stderr, stderr
    assert not (tmp_path / "l").exists()


def test_auto_whose_recorded_cluster_is_gone_is_one_line_in_seconds(web, tmp_path, monkeypatch):
    """`--ray auto` reads the address `ray start` recorded on this machine, which outlives a
    cluster stopped without `ray stop`; where no Ray answers there any more, Ray retried for
    minutes, deaf to Ctrl-C. `auto` takes $RAY_ADDRESS before that file and before any cluster
    running here (this module's own, which it joined when only the file was stale): the address
    is given there, and Ray's temporary directory is this test's own (RAY_TMPDIR)."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{urlsplit(web).port}")
    begun = time.monotonic()
    bad = run_cli("profile", "-m", f"openai:{web}#fast", "-t", "arith", "--limit", "1",
                  "--out", str(tmp_path / "r"), "--ray", "auto", timeout=60)  # fmt: skip
    assert time.monotonic() - begun < 30, bad.stderr
    one_line_error(bad, "Ray address 'auto': no Ray cluster answers there", "`ray stop`")
    assert not (tmp_path / "r").exists()


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
def test_a_worker_that_dies_while_loading_its_models_is_one_line(cluster, tmp_path):
    """A worker killed as it loads its models (as an OOM kill or a lost node would), and again
    each time Ray restarts it: once Ray gives up, one line names its models and says it died
    loading them (it was Ray's ActorDiedError traceback)."""
    out = tmp_path / "run"
    # A server that takes connections and answers nothing: the model loads until it is killed.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradeoff", "profile", "-m", f"openai:{url}#m", "-t", "arith",
             "--limit", "1", "--timeout", "300", "--out", str(out), "--ray", cluster],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the run did not end"
            for pid in _worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
        _, stderr = proc.communicate()
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    assert "the Ray worker for m died while loading its models, 4 times" in stderr, stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_ray_run_killed_at_the_driver_resumes_without_ray(cluster, tmp_path):
    out = tmp_path / "run"
    proc = _start(cluster, out, 10)
    _wait_for(out, 4, proc)
    proc.kill()
    proc.communicate()
    kept = _count(out)
    # `--ray` is stored with the run, so a plain --resume would go on on that cluster
    con = sqlite3.connect(out / "tradeoff.sqlite")
    try:
        stored = json.loads(con.execute("SELECT spec FROM runs").fetchone()[0])
    finally:
        con.close()
    assert stored["executor"] == {"ray": {"address": cluster, "workers": 1}}, stored["executor"]
    resumed = run_cli("profile", "--resume", str(out), "--ray", "off")
    assert resumed.returncode == 0, resumed.stderr
    assert "ran on Ray" not in resumed.stderr
    assert kept < 20, "the driver was killed before the end"
    assert len(_records(out)) == 20


def test_workers_are_placed_together_whatever_the_order_they_come_in(cluster):
    """Two 2-CPU nodes, workers asking 1, 1 and 2 CPUs: placed one by one, the first two can
    take a CPU of each node and leave the third no room, for ever (CI saw it). Reserved
    together, the 2-CPU worker gets a node and the 1-CPU workers share the other; a worker that
    asks nothing (a model behind a server) needs no place."""
    from ray.util.placement_group import placement_group_table

    from tradeoff.ray_run import _Places

    ray.init(address=cluster, log_to_driver=False, include_dashboard=False)
    try:
        asks = [{"num_cpus": 1}, {"num_cpus": 1}, {"num_cpus": 2}, {}]
        places = _Places.reserve(asks, 1)
        assert places.strategy(3, 0) == "SPREAD"
        ray.get(places.group.ready(), timeout=60)
        nodes = placement_group_table(places.group)["bundles_to_node_id"]
        where = [nodes[places.strategy(g, 0).placement_group_bundle_index] for g in range(3)]
        assert where[0] == where[1] != where[2], where
        places.release()
        assert places.group is None
    finally:
        ray.shutdown()


def test_a_callers_own_ray_connection_is_used_where_named_and_left_to_it(cluster, tmp_path):
    """A library caller connected to Ray already: profile(ray=ADDRESS) runs there where ADDRESS
    is that cluster's, is refused where it is another's (the run went on the caller's cluster
    under the address given, and stored that one), and leaves the caller's connection and
    actors as they were (it ended them)."""
    from tradeoff.config import parse_spec
    from tradeoff.errors import UserError
    from tradeoff.runner import profile

    spec = parse_spec({"models": ["smollm2-135m"], "tasks": ["arith"], "limit": 1,
                       "sampling": {"max_tokens": 4, "temperature": 0}})  # fmt: skip
    ray.init(address=cluster, log_to_driver=False, include_dashboard=False)
    try:

        @ray.remote(num_cpus=0)
        class Kept:
            def ping(self) -> str:
                return "here"

        kept = Kept.remote()
        joined = ray.get_runtime_context().gcs_address
        says = f"this process is connected to the Ray cluster at {joined} already"
        with pytest.raises(UserError, match=re.escape(says)):
            profile(spec, tmp_path / "elsewhere", ray="10.255.255.1:6379", notify=lambda m: None)
        assert not (tmp_path / "elsewhere").exists()
        done = profile(spec, tmp_path / "run", ray=joined, notify=lambda m: None)
        assert (done.status, done.done) == ("finished", 1)
        assert ray.is_initialized() and ray.get(kept.ping.remote(), timeout=30) == "here"
        con = sqlite3.connect(tmp_path / "run" / "tradeoff.sqlite")
        try:
            stored = json.loads(con.execute("SELECT spec FROM runs").fetchone()[0])
        finally:
            con.close()
        assert stored["executor"] == {"ray": {"address": joined, "workers": 1}}
        # a spec's `address: auto` ran on the caller's cluster before addresses were checked
        auto = profile(spec, tmp_path / "auto", ray="auto", notify=lambda m: None)
        assert (auto.status, auto.done) == ("finished", 1)
        assert ray.is_initialized() and ray.get(kept.ping.remote(), timeout=30) == "here"
    finally:
        ray.shutdown()


def test_resources_in_the_spec_are_ray_s_and_leave_configuration_ids_alone():
    from tradeoff.config import parse_spec, resolve_configs
    from tradeoff.ray_run import executor_of, group_resources, groups_of

    plain = {"models": {"a": "smollm2-135m", "b": "openai:http://h:1/v1#m"}, "tasks": ["arith"]}
    plain["configs"] = [{"strategy": "cascade", "models": ["a", "b"], "threshold": 0.5}]
    asked = {**plain, "models": {"a": {"ref": "smollm2-135m", "resources": {"num_cpus": 4}},
                                 "b": "openai:http://h:1/v1#m"}}  # fmt: skip
    asked["executor"] = {"ray": {"address": "auto", "workers": 3}}
    spec, spec_plain = parse_spec(asked), parse_spec(plain)
    configs = resolve_configs(spec)
    assert [c.config_id for c in configs] == [c.config_id for c in resolve_configs(spec_plain)]
    ((group, grouped),) = groups_of(configs).items()
    assert group == ("a", "b") and group_resources(spec, grouped) == {"num_cpus": 4}
    assert group_resources(spec_plain, grouped) == {"num_cpus": 1}  # the openai model: nothing
    assert executor_of(spec, None).workers == 3 and executor_of(spec, "off") is None
    assert executor_of(spec, "10.0.0.1:6379").address == "10.0.0.1:6379"
    assert executor_of(spec_plain, None) is None
    assert parse_spec(spec.model_dump(mode="json")).resources == {"a": {"num_cpus": 4}}


@pytest.mark.slow
def test_a_route_runs_on_ray_with_the_models_of_its_policy(cluster, tmp_path):
    """A route's models come from its policy, by the policy's aliases (here none of the spec's,
    which has no models at all): its worker asks for what those models ask, as a local run
    loads them; it stopped at KeyError before any worker started."""
    policy = fitted_policy(tmp_path, limit=10, max_tokens=4, cost="flops")
    spec = tmp_path / "route.yaml"
    spec.write_text(yaml.safe_dump({
        "tasks": ["arith"], "limit": 2, "sampling": {"max_tokens": 4, "temperature": 0},
        "configs": [{"strategy": "route", "policy": str(policy)}],
    }))  # fmt: skip
    on_ray = run_cli("profile", str(spec), "--out", str(tmp_path / "ray"), "--ray", cluster)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "ran on Ray" in on_ray.stderr and "1 worker(s)" in on_ray.stderr, on_ray.stderr
    local = run_cli("profile", str(spec), "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    stored, expected = _records(tmp_path / "ray"), _records(tmp_path / "local")
    assert len(expected) == 2 and stored == expected
    workers = _run(tmp_path / "ray")["meters"]["ray_workers"]
    assert [w["models"] for w in workers] == [["large", "small"]], workers


@pytest.mark.parametrize(
    "models, says",
    [
        ({"a": {"ref": "smollm2-135m", "size": 1}}, "models: a: give {ref: REF"),
        ({"a": {"resources": {}}}, "models: a: give {ref: REF"),
        (
            {"a": {"ref": "smollm2-135m", "resources": {"num_gpus": -1}}},
            "resources.a.num_gpus must be at least 0",
        ),
        # Ray's names for a node's own resources, which an actor may not ask for by
        (
            {"a": {"ref": "smollm2-135m", "resources": {"CPU": 1}}},
            "resources: a: give num_cpus: 1, not CPU: 1;",
        ),
        ({"a": {"ref": "smollm2-135m", "resources": {"GPU": 0}}}, "give num_gpus: 0, not GPU"),
    ],
)
def test_a_bad_model_entry_is_one_line(tmp_path, models, says):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"models": models, "tasks": ["arith"]}))
    bad = run_cli("profile", str(spec), "--out", str(tmp_path / "r"), "--ray", "local")
    one_line_error(bad, says)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_load_run_on_ray_drives_each_model_group_on_its_worker(cluster, tmp_path):
    out = tmp_path / "load"
    done = run_cli("load", "-m", "smollm2-135m", "-m", "gemma3-270m", "-t", "arith",
                   "--profile", "concurrent:1,2", "--max-requests", "4", "--max-tokens", "8",
                   "--scrape", "off", "--out", str(out), "--ray", cluster)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 worker(s) ready" in done.stderr, done.stderr
    con = sqlite3.connect(out / "tradeoff.sqlite")
    try:
        points = con.execute("SELECT config_id, load_point, status FROM load_points").fetchall()
        counts = con.execute(
            "SELECT config_id, load_point, COUNT(*) FROM records GROUP BY config_id, load_point"
        ).fetchall()
    finally:
        con.close()
    assert len(points) == 4 and {p[2] for p in points} == {"finished"}, points
    assert sorted(c[2] for c in counts) == [4, 4, 4, 4], counts
    assert _run(out)["host"]["nodes"]


def _load_points(out) -> list[tuple]:
    con = sqlite3.connect(out / "tradeoff.sqlite")
    try:
        return con.execute(
            "SELECT configs.name, load_point, status FROM load_points JOIN configs USING "
            "(config_id) ORDER BY 1, started_at"
        ).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_an_error_limit_on_ray_stops_every_model_group(cluster, tmp_path):
    """Each model group drives its points side by side: --max-errors stopped the group that
    failed, and the others went on to run every point of theirs to its end."""
    out, spec = tmp_path / "load", tmp_path / "spec.yaml"
    with contextlib.contextmanager(fast_server)("--delay-ms", "1") as url:
        models = {"bad": f"openai:{url}#fail-500", "good": f"openai:{url}#m"}
        spec.write_text(yaml.safe_dump({"models": models, "tasks": ["arith"], "limit": 4}))
        done = run_cli("load", str(spec), "--profile", "constant:10,20,30", "--max-seconds", "2",
                       "--max-errors", "5", "--max-tokens", "4", "--scrape", "off",
                       "--out", str(out), "--ray", cluster)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "too many failed requests" in done.stderr, done.stderr
    # the point `good` was driving as `bad` failed ends; no other is started
    assert _load_points(out) == [
        ("bad", "constant:10", "errors"),
        ("good", "constant:10", "finished"),
    ]


@pytest.mark.slow
def test_ctrl_c_while_a_killed_load_worker_restarts_stops_the_point(cluster, tmp_path):
    """The restarted worker drove its point again with a stop flag of its own, the Ctrl-C
    told only to the worker that died: the point ran whole, and read finished (exit 0)."""
    out = tmp_path / "load"
    with contextlib.contextmanager(fast_server)("--delay-ms", "1") as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradeoff", "load", "-m", f"openai:{url}#m", "-t", "arith",
             "--max-tokens", "4", "--profile", "constant:5", "--max-seconds", "20",
             "--scrape", "off", "--out", str(out), "--ray", cluster],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        _wait_for_line(proc, "ready on")
        time.sleep(1.5)  # the point is being driven
        os.kill(_worker_pids()[0], signal.SIGKILL)
        time.sleep(0.3)  # Ray restarts it, and drives the point there again
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert [p[1:] for p in _load_points(out)] == [("constant:5", "stopped")]


@pytest.mark.slow
def test_a_throwaway_cluster_samples_this_host(tmp_path):
    """`--ray local` runs on this machine: its conditions are sampled as a local run's are."""
    out = tmp_path / "run"
    # enough work to outlast a second of sampling on a fast host (two short items once took less)
    done = run_cli(*("profile", "-m", "smollm2-135m", "-t", "arith", "--limit", "12"),
                   *("--max-tokens", "32", "--ray", "local", "--out", str(out)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    con = sqlite3.connect(out / "tradeoff.sqlite")
    try:
        assert con.execute("SELECT COUNT(*) FROM host_samples").fetchone()[0] > 0
    finally:
        con.close()
    assert "sampled from /proc" in run_cli("report", str(out)).stdout


def _local_run(command: str, out, *extra: str) -> subprocess.Popen:
    """`tradeoff COMMAND ... --ray local` in a session of its own, as a terminal's foreground job
    is: a signal to its group reaches every process it started, the cluster's too."""
    args = ["-m", "smollm2-135m", "-t", "arith", "--max-tokens", "8", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "tradeoff", command, *args, "--ray", "local", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )  # fmt: skip


def _wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float = 180) -> str:
    """stderr up to the line holding `text` (the process still running)."""
    assert proc.stderr is not None
    seen, deadline = "", time.monotonic() + timeout_s
    while text not in seen:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, seen
        assert time.monotonic() < deadline, seen
        seen += line
    return seen


def _group_left(pgid: int) -> list[str]:
    """The processes of group `pgid` still alive (zombies aside), by their command lines."""
    left = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            if stat[0] != "Z" and int(stat[3]) == pgid:
                left.append(Path(f"/proc/{entry}/cmdline").read_text().replace("\0", " "))
        except (OSError, IndexError, ValueError):
            continue
    return left


@pytest.mark.slow
@pytest.mark.parametrize("command", ["profile", "load"])
def test_ctrl_c_while_ray_workers_load_stops_before_the_run_begins(tmp_path, command):
    """A Ctrl-C while the workers load the models stops there: no request is sent (`load` sent
    one), no directory is made, nothing of the cluster is left."""
    out = tmp_path / "run"
    extra = ["--limit", "4"] + (
        ["--profile", "constant:1", "--max-seconds", "4"] * (command == "load")
    )
    proc = _local_run(command, out, *extra)
    _wait_for_line(proc, "loading the models")
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "the run will not begin" in stderr, stderr
    assert "interrupted before the run began; nothing was written" in stderr, stderr
    assert not out.exists()
    time.sleep(2)
    assert not _group_left(proc.pid)


@pytest.mark.slow
def test_a_second_ctrl_c_on_a_throwaway_cluster_leaves_no_process_behind(tmp_path):
    """An abort (Ctrl-C twice) skips the shutdown that stops a `--ray local` cluster: its
    processes are killed with the run, and what was stored resumes."""
    out = tmp_path / "run"
    proc = _local_run("profile", out, "--limit", "40")
    _wait_for_line(proc, "ready on")
    _wait_for(out, 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert (
        f"aborting now; requests in flight are lost; continue with: tradeoff profile --resume {out}"
        in stderr
    )
    time.sleep(2)
    assert not _group_left(proc.pid)
    assert 1 <= _count(out) < 40
