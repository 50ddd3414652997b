"""`tradeoff serve --policy`: each request runs as the configuration its policy routes it to,
with that configuration's own max_tokens and model options (the route's were its first
configuration's, and none), against benchmarks/fast_server.py, which logs the bodies it gets; a
route whose client leaves while it waits for its decision stops at once."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import fast_server, run_cli, serve_process
from serve_support import left_behind_a_prefill
from serve_support import stored as records

from tradeoff.serve.app import CANCEL_GRACE_S


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(a policy between `long` (7 tokens, the policy's first) and `short` (3 tokens, model
    options with a marker) that sends every query to `short`, the upstream's log of bodies)."""
    root = tmp_path_factory.mktemp("route")
    log = root / "bodies.jsonl"
    for url in fast_server("--log-requests", str(log)):
        spec = {
            "models": {"a": f"openai:{url}#m", "b": f"openai:{url}#m2"},
            "model_options": {"a": {"extra_body": {"marker": 1}}},
            "tasks": ["arith"],
            "limit": 12,
            "configs": [
                {"strategy": "single", "model": "a", "max_tokens": 3, "name": "short"},
                {"strategy": "single", "model": "b", "max_tokens": 7, "name": "long"},
            ],
        }
        (root / "spec.yaml").write_text(yaml.safe_dump(spec))
        run = root / "run"
        assert run_cli("profile", str(root / "spec.yaml"), "--out", str(run)).returncode == 0
        con = sqlite3.connect(run / "tradeoff.sqlite")  # long right, short wrong: as scored
        with con:
            con.execute(
                "UPDATE records SET score = config_id IN "
                "(SELECT config_id FROM configs WHERE name = 'long')"
            )
        con.close()
        policy = root / "p.json"
        fit = run_cli(
            "policy", "fit", str(run), "--configs", "long,short", "--strong-fraction", "0",
            "--cost", "tokens", "-o", str(policy),
        )  # fmt: skip
        assert fit.returncode == 0, fit.stderr
        yield policy, log


def test_a_routed_request_runs_with_its_configuration_s_max_tokens_and_options(routed, tmp_path):
    policy, log = routed
    log.write_text("")
    with serve_process("--policy", str(policy), "--out", str(tmp_path / "served")) as s:
        ask = {"model": "p", "messages": [{"role": "user", "content": "What is 2+2?"}]}
        answer = httpx.post(f"{s.url}/chat/completions", json=ask, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-tradeoff-routed-to"] == "short"
    (body,) = [json.loads(line) for line in log.read_text().splitlines()]
    # short's 3 tokens, not long's 7 (the policy's first); a's options, not none
    assert (body["max_tokens"], body.get("marker")) == (3, 1), body
    (record,) = records(tmp_path / "served").to_dict("records")
    assert record["extra"]["max_tokens"] == 3  # what it was asked with


def test_a_route_in_a_spec_runs_with_the_spec_s_model_options(routed, tmp_path):
    """The spec's options for a route's model replace the policy's (they were ignored, though
    the spec's check tells a user to name the model under models: to give it options)."""
    policy, log = routed
    log.write_text("")
    models = [c["models"] for c in json.loads(policy.read_text())["config_specs"]]
    spec = {
        "models": {a: ref for m in models for a, ref in m.items()},
        "model_options": {"a": {"extra_body": {"marker": 2}}},
        "configs": [{"strategy": "route", "policy": str(policy), "name": "router"}],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with serve_process("--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "o")) as s:
        ask = {"model": "router", "messages": [{"role": "user", "content": "What is 2+2?"}]}
        answer = httpx.post(f"{s.url}/chat/completions", json=ask, timeout=60)
    assert answer.status_code == 200, answer.text
    (body,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert (body["max_tokens"], body.get("marker")) == (3, 2), body


def test_a_route_left_while_it_waits_for_its_decision_stops_at_once(routed, tmp_path):
    """The decision waits for the in-process engines (its time and energy are its own): behind
    a long prefill, a request whose client left sat out the server's backstop, and its record
    lost everything but the disconnect."""
    policy, _ = routed
    spec = {
        "models": {"small": "smollm2-135m"},
        "configs": [
            {"strategy": "single", "model": "small", "name": "small", "max_tokens": 2},
            {"strategy": "route", "policy": str(policy), "name": "router"},
        ],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with serve_process("--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "o")) as s:
        waited, answered = left_behind_a_prefill(
            s, {"model": "router", "prompt": "2+2=", "max_tokens": 2}
        )
    assert waited["config"] == "router" and waited["error"] == "client disconnected", waited
    assert json.loads(waited["calls"]) == [] and waited["e2e_s"] < answered["e2e_s"] / 2
    assert waited["e2e_s"] < CANCEL_GRACE_S, waited  # let go at once, not by the backstop


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda p: p["config_specs"][1].update(strategy="vote", params={"n": 1}), "n 1 draws one"),
        (lambda p: p["config_specs"][1].update(params={"bogus": 1}), "bogus: no such parameter"),
        (  # a vote at temperature 0 draws one answer n times
            lambda p: p["config_specs"][1].update(strategy="vote", params={"n": 3}),
            "samples several answers: it needs temperature > 0",
        ),
        (lambda p: p["config_specs"][1].update(model="nosuch"), "its model 'nosuch' is not one"),
        (lambda p: p["config_specs"][1].update(strategy="nosuch"), "strategy 'nosuch' is not one"),
        (lambda p: p.update(configs=["long", "long"]), "configs must name each configuration once"),
        (lambda p: p.update(configs=["long", " "]), "by a name that is not empty"),
        (lambda p: p.update(target=5), "target must be one of accuracy, budget or strong_fraction"),
        (lambda p: p.update(target={"strong_fraction": "half"}), "target must be one of"),
        (lambda p: p.update(calibration="accuracy"), "calibration must map its figures"),
        (lambda p: p.update(fitted_on=5), "fitted_on must list"),
        (lambda p: p.update(strong=True), "strong must be the index"),
        (lambda p: p["mean_costs"].__setitem__(0, -1), "none below 0"),
        (lambda p: p.update(tasks={"a": 0.5, "b": 0.9}), "share of the training queries"),
        (lambda p: p.update(target={"budget": -1}), "target budget -1 is out of its range"),
        (lambda p: p.update(target={"accuracy": 1.5}), "target accuracy 1.5 is out of its range"),
        (lambda p: p["router"]["weights"][0].__setitem__(0, float("nan")), "not finite"),
        (lambda p: p["router"]["weights"][0].__setitem__(0, 10**400), "not finite"),
    ],
)
def test_an_edited_policy_file_is_refused_in_one_line(routed, tmp_path, edit, says):
    """Each was served as it came (a vote of 1, every query to the first configuration on a
    NaN weight, a 502 on an alias it lacks), or was a traceback in `policy eval --policy`."""
    from tradeoff.config import policy_configs
    from tradeoff.errors import UserError

    policy, _ = routed
    data = json.loads(policy.read_text())
    edit(data)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(says)):
        policy_configs(str(edited))


def test_a_routed_request_that_fails_says_where_it_went(routed, tmp_path):
    """A route's 502 carried only its request id: which configuration failed was in the record
    alone (a 200 says it in x-tradeoff-routed-to)."""
    policy, _ = routed
    data = json.loads(policy.read_text())
    for url in fast_server("--fail-every", "1"):  # every generation fails
        for spec in data["config_specs"]:
            spec["models"] = {a: f"openai:{url}#m" for a in spec["models"]}
        failing = tmp_path / "failing.json"
        failing.write_text(json.dumps(data))
        with serve_process("--policy", str(failing), "--out", str(tmp_path / "served")) as s:
            ask = {"model": "failing", "prompt": "2+2=", "max_tokens": 2}
            answer = httpx.post(f"{s.url}/completions", json=ask, timeout=60)
    assert answer.status_code == 502, answer.text
    assert answer.headers["x-tradeoff-routed-to"] == "short", answer.headers
    assert "x-tradeoff-request-id" in answer.headers


def test_a_policy_moved_or_copied_appends_to_its_served_directory(routed, tmp_path):
    """A restart on the same --out with the same policy file at another path (deployed, or the
    project moved) appends, its records under one configuration id (it was refused as "another
    configuration": the id hashes the path); a policy fitted again is still refused."""
    policy, _ = routed
    copy = tmp_path / "deployed" / policy.name
    copy.parent.mkdir()
    copy.write_bytes(policy.read_bytes())
    out = tmp_path / "served"
    ask = {"model": "p", "prompt": "2+2=", "max_tokens": 2}
    for path in (policy, copy):
        with serve_process("--policy", str(path), "--out", str(out)) as s:
            assert httpx.post(f"{s.url}/completions", json=ask, timeout=60).status_code == 200
    assert records(out)["config_id"].nunique() == 1 and len(records(out)) == 2
    refitted = tmp_path / "refitted" / policy.name  # other bytes, as a policy fitted again has
    refitted.parent.mkdir()
    refitted.write_text(json.dumps(json.loads(policy.read_text()), indent=1))
    refused = run_cli("serve", "--policy", str(refitted), "--out", str(out), "--port", "0")
    assert refused.returncode == 2 and "by another configuration" in refused.stderr


def test_a_packed_router_array_that_is_not_finite_is_refused():
    """An embedding router's state is packed arrays, which the file's own numbers left unread:
    a NaN score there loaded, and every query's expected score was NaN."""
    import numpy as np

    from tradeoff.errors import UserError
    from tradeoff.policy.routers import _pack, load_router

    x, scores = np.ones((4, 384)), np.array([[np.nan, 1.0]] * 4)
    with pytest.raises(UserError, match="not finite"):
        load_router({"kind": "embed-knn", "x": _pack(x), "scores": _pack(scores)}, 2)


def test_a_route_warms_the_batches_its_configurations_ask_for(routed, tmp_path):
    """The warm-up asked the route itself, which declares no batch: a policy choosing a vote of
    five paid its model's batch-of-five set-up (compile, capture) inside the first routed vote."""
    from tradeoff.config import route_config
    from tradeoff.session import batch_sizes

    policy, _ = routed
    data = json.loads(policy.read_text())
    data["config_specs"][0].update(strategy="vote", params={"n": 5, "adaptive": False})
    data["config_specs"][0]["sampling"]["temperature"] = 0.7
    voting = tmp_path / "voting.json"
    voting.write_text(json.dumps(data))
    route = route_config(voting, "router")
    assert batch_sizes([route], "b") == [1, 5] and batch_sizes([route], "a") == [1]
