"""`tradeoff serve` on the bundled models: the official openai client, records one for one with
the requests, streaming from every kind of strategy, live reports, draining, store faults."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading

import httpx
import openai
import pytest
import yaml
from conftest import fast_server, fitted_policy, one_line_error, run_cli, serve_process
from serve_support import PATIENCE_S, metric, wait_for

from tradeoff.engines.emit import StopHoldback
from tradeoff.store import Store
from tradeoff.types import Request

SINGLE = "smollm2-135m"
CASCADE = "cascade-smollm2-135m-gemma3-270m-logprob0.5"
SWITCH = "switch-smollm2-135m-gemma3-270m-t1.5"
VOTE = "vote-n3a-smollm2-135m"
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo's configurations on the bundled models (no --spec: the default)."""
    out = tmp_path_factory.mktemp("serve") / "run"
    args = ["--out", str(out), "--api-key", "sekrit"]
    for name in (SINGLE, CASCADE, SWITCH, VOTE):
        args += ["--config", name]
    with serve_process(*args) as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url, api_key="sekrit", max_retries=0) as c:
        yield c


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=PATIENCE_S)


def _records(out) -> dict[str, dict]:
    store = Store.open(out)
    try:
        df = store.records()
        items = store.items()
    finally:
        store.close()
    prompts = dict(zip(items["item_id"], items["prompt"]))
    rows = {}
    for r in df.to_dict("records"):
        r["extra"] = json.loads(r["extra"])
        r["calls"] = json.loads(r["calls"])
        r["prompt"] = prompts.get(r["item_id"])
        rows[r["item_id"]] = r
    return rows


def _wait_stored(out, ids: set[str]) -> dict[str, dict]:
    """Records are written just after the answer is sent: wait for them."""

    def all_there() -> dict[str, dict] | None:
        rows = _records(out)
        return rows if ids <= set(rows) else None

    return wait_for(all_there, f"records {sorted(ids)} stored")


def test_official_client_streamed_and_not_and_records_match_one_for_one(server, client):
    made: dict[str, dict] = {}
    whole = client.chat.completions.create(model=SINGLE, messages=ASK, max_tokens=12)
    assert whole.choices[0].message.content
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 0
    made[whole.id] = {"output": whole.choices[0].message.content, "stream": False,
                      "usage": whole.usage}  # fmt: skip

    chunks = list(
        client.chat.completions.create(
            model=SINGLE, messages=ASK, max_tokens=12, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # streamed
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    assert chunks[0].id == chunks[-1].id
    made[chunks[0].id] = {"output": text, "stream": True, "usage": usage}

    done = client.completions.create(
        model=SINGLE, prompt="The capital of France is", max_tokens=6, stop=["."]
    )
    made[done.id] = {"output": done.choices[0].text, "stream": False, "usage": done.usage}
    assert "." not in done.choices[0].text

    rows = _wait_stored(server.out, set(made))
    assert set(made) <= set(rows)
    for rid, want in made.items():
        row = rows[rid]
        assert row["output"] == want["output"]
        assert row["extra"]["stream"] is want["stream"]
        assert row["output_tokens"] == want["usage"].completion_tokens
        assert row["input_tokens"] == want["usage"].prompt_tokens
        assert row["error"] is None and row["score"] is None and row["task"] == "serve"
    assert rows[whole.id]["prompt"] == ASK


def test_tradeoff_headers_and_field_describe_what_ran(client):
    raw = client.chat.completions.with_raw_response.create(
        model=CASCADE, messages=ASK, max_tokens=10
    )
    completion = raw.parse()
    headers = raw.headers
    assert headers["x-tradeoff-config"] == CASCADE
    assert headers["x-tradeoff-strategy"] == "cascade"
    assert headers["x-tradeoff-request-id"] == completion.id
    assert headers["x-tradeoff-escalated"] in ("true", "false")
    assert float(headers["x-tradeoff-latency-ms"]) > 0
    assert "energy-j" in " ".join(headers) or headers["x-tradeoff-energy-missing"]
    extra = completion.model_extra["tradeoff"]
    assert extra["strategy"] == "cascade" and extra["config"] == CASCADE
    by_model = extra["tokens_by_model"]
    assert "smollm2-135m" in by_model
    assert ("gemma3-270m" in by_model) == extra["escalated"]
    assert sum(m["output"] for m in by_model.values()) == completion.usage.completion_tokens
    assert headers["x-tradeoff-tokens"].count("=") == len(by_model)


def test_text_parts_reach_the_model_on_lines_of_their_own(server, client):
    """A message's text parts were glued together ("three." and "Answer" read and stored as
    "three.Answer"): they are joined with a newline, as vLLM joins them."""
    parts = [{"type": "text", "text": "Count to three."}, {"type": "text", "text": "Answer."}]
    answers = [
        client.chat.completions.create(
            model=SINGLE, messages=[{"role": "user", "content": content}], max_tokens=1
        )
        for content in (parts, "Count to three.\nAnswer.", "Count to three.Answer.")
    ]
    parted, joined, glued = (a.usage.prompt_tokens for a in answers)
    assert parted == joined != glued, (parted, joined, glued)
    rows = _wait_stored(server.out, {answers[0].id})
    assert rows[answers[0].id]["prompt"] == [
        {"role": "user", "content": "Count to three.\nAnswer."}
    ]


@pytest.mark.parametrize("model", [CASCADE, SWITCH, VOTE])
def test_every_strategy_streams_the_answer_it_stores(server, client, model):
    chunks = list(
        client.chat.completions.create(model=model, messages=ASK, max_tokens=10, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1]
    assert final.choices[0].finish_reason in ("stop", "length")
    summary = final.model_extra["tradeoff"]
    assert summary["strategy"] == model.split("-")[0]
    rows = _wait_stored(server.out, {final.id})
    assert rows[final.id]["output"] == text
    if model == SWITCH:
        assert "switches" in summary and set(summary["tokens_by_model"]) <= {
            "smollm2-135m",
            "gemma3-270m",
        }
    if model == VOTE:
        assert 2 <= summary["samples_drawn"] <= 3


def test_models_health_metrics_and_live_reports(server, client):
    names = {m.id for m in client.models.list()}
    assert names == {SINGLE, CASCADE, SWITCH, VOTE}
    assert client.models.retrieve(CASCADE).id == CASCADE  # GET /v1/models/{model}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    assert httpx.get(f"{server.root}/health").json() == {"status": "ok"}

    client.chat.completions.create(model=SINGLE, messages=ASK, max_tokens=4)
    metrics = httpx.get(f"{server.root}/metrics").text
    assert "# TYPE tradeoff_request_duration_seconds histogram" in metrics
    # counted once the answer is out: wait for it
    tokens = {"model": SINGLE, "upstream": SINGLE, "kind": "output"}
    wait_for(lambda: metric(server.root, "tradeoff_tokens_total", **tokens) >= 4, "tokens counted")
    served = metric(server.root, "tradeoff_served_total")
    assert served >= 1
    wait_for(lambda: len(_records(server.out)) >= served, "every served request stored")

    # report and frontier read the store while the server writes to it
    report = run_cli("report", str(server.out), "--format", "json")
    assert report.returncode == 0, report.stderr
    summary = {r["config"]: r for r in json.loads(report.stdout)}
    assert summary[SINGLE]["n"] >= 1 and summary[SINGLE]["accuracy"] is None
    frontier = run_cli("frontier", str(server.out))
    assert frontier.returncode == 0, frontier.stderr
    assert "unscored" in frontier.stdout


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_then_exits(tmp_path):
    out = tmp_path / "run"
    streaming = threading.Event()
    chunks: list = []
    with serve_process("--out", str(out), "--config", SINGLE) as served:

        def ask() -> None:
            with _client(served.url) as c:
                for chunk in c.chat.completions.create(
                    model=SINGLE,
                    messages=[{"role": "user", "content": "Write a long story about a ship."}],
                    max_tokens=120, stream=True, stream_options={"include_usage": True},
                ):  # fmt: skip
                    chunks.append(chunk)
                    if chunk.choices and chunk.choices[0].delta.content:
                        streaming.set()

        thread = threading.Thread(target=ask)
        thread.start()
        assert streaming.wait(PATIENCE_S), "no token was streamed"
        assert served.stop(signal.SIGTERM) == 0
        thread.join(PATIENCE_S)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 20
    assert any("finishing 1 request(s) in flight" in line for line in served.lines)
    rows = _records(out)
    assert list(rows) == [chunks[0].id]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert rows[chunks[0].id]["output"] == text
    store = Store.open(out)
    assert store.run()["status"] == "stopped"
    store.close()


@pytest.mark.slow
def test_a_failed_store_write_loses_no_answer_and_the_server_keeps_serving(tmp_path):
    out = tmp_path / "run"
    with serve_process("--out", str(out), "--config", SINGLE) as served:
        with _client(served.url) as c:
            first = c.chat.completions.create(model=SINGLE, messages=ASK, max_tokens=3)
            assert first.id in _wait_stored(out, {first.id})
            conn = sqlite3.connect(out / "tradeoff.sqlite")
            conn.execute("DROP TABLE records")  # every later write fails
            conn.commit()
            conn.close()
            for _ in range(2):
                answer = c.chat.completions.create(model=SINGLE, messages=ASK, max_tokens=3)
                assert answer.choices[0].message.content
            # Records are written just after the answers, in batches: wait for the second.
            wait_for(
                lambda: metric(served.root, "tradeoff_store_errors_total") == 2,
                "both failed writes counted",
            )
            assert httpx.get(f"{served.root}/health").json() == {"status": "ok"}
        assert served.stop() == 0
    assert sum("could not store" in line for line in served.lines) == 2
    assert not any("Traceback" in line for line in served.lines)


@pytest.mark.slow
def test_restarting_on_the_same_directory_appends(tmp_path):
    out = tmp_path / "run"
    ids = []
    for _ in range(2):
        with (
            serve_process("--out", str(out), "--config", SINGLE) as served,
            _client(served.url) as c,
        ):
            ids.append(c.completions.create(model=SINGLE, prompt="1 + 1 =", max_tokens=2).id)
    assert set(_records(out)) == set(ids)
    store = Store.open(out)
    assert len(store.run()["sessions"]) == 2
    store.close()


def test_a_configuration_restarted_under_another_name_is_refused(tmp_path):
    """A spec entry renamed, then served again on the same --out, was served and counted under
    its new name while its records were stored under the old one: the report had no row for
    the name clients used, and nothing said so."""
    out, spec = tmp_path / "run", tmp_path / "spec.yaml"
    for url in fast_server():
        models = {"m": f"openai:{url}#fast"}
        spec.write_text(
            yaml.safe_dump({"models": models, "configs": [{"model": "m", "name": "first"}]})
        )
        with serve_process("--spec", str(spec), "--out", str(out)) as served:
            body = {"model": "first", "prompt": "1 + 1 =", "max_tokens": 2}
            assert httpx.post(f"{served.url}/completions", json=body).is_success
        spec.write_text(
            yaml.safe_dump({"models": models, "configs": [{"model": "m", "name": "second"}]})
        )
        # (served, it would run until killed)
        again = run_cli("serve", "--spec", str(spec), "--out", str(out), "--port", "0", timeout=60)
        one_line_error(
            again,
            f"{out} holds records of what 'second' runs, served as 'first'",
            "serve it as 'first', or give another --out",
        )
    assert [r["config"] for r in _records(out).values()] == ["first"]


def test_a_relative_model_path_served_again_from_elsewhere_is_another_configuration(
    tmp_path, monkeypatch
):
    """`serve --spec` kept `torch:tiny/config.json` as written: restarted on the same --out from
    another directory holding another model at that path, it served it under the same
    configuration, one report row mixing the two models' records. A directory served before,
    its path kept as written, still restarts, saying that its paths are taken as named from
    where it restarts (which files they named then cannot be told)."""
    from tradeoff.config import Config, with_id

    tiny = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 320, "max_position_embeddings": 512,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0}  # fmt: skip
    for where, size in [("proj", 64), ("other", 128)]:
        (tmp_path / where / "tiny").mkdir(parents=True)
        config = {**tiny, "hidden_size": size, "num_attention_heads": size // 16}
        (tmp_path / where / "tiny" / "config.json").write_text(json.dumps(config))
    entry = {"model": "m", "name": "mine", "max_tokens": 4}
    spec = {"models": {"m": "torch:tiny/config.json?random_weights=1"}, "configs": [entry]}
    (tmp_path / "proj" / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path / "proj")
    body = {"model": "mine", "prompt": "1 + 1 =", "max_tokens": 2}
    with serve_process("--spec", "spec.yaml", "--out", "live") as served:
        assert httpx.post(f"{served.url}/completions", json=body).is_success
    again = run_cli("serve", "--spec", "../proj/spec.yaml", "--out", "../proj/live",
                    "--port", "0", cwd=tmp_path / "other", timeout=60)  # fmt: skip
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
    said = again.stderr.strip().splitlines()[-1]  # after the model's preparing lines
    assert "already holds records served as 'mine' by another configuration" in said
    # as a directory served before stored it: the path as written, and the id of that
    with sqlite3.connect(tmp_path / "proj" / "live" / "tradeoff.sqlite") as con:
        (stored,) = con.execute("SELECT spec FROM configs").fetchone()
        content = {**json.loads(stored), "models": spec["models"]}
        legacy = with_id(Config(config_id="", name="mine", **content)).config_id
        con.execute("UPDATE configs SET config_id = ?, spec = ?", (legacy, json.dumps(content)))
        con.execute("UPDATE records SET config_id = ?", (legacy,))
    con.close()
    with serve_process("--spec", "spec.yaml", "--out", "live") as served:
        assert httpx.post(f"{served.url}/completions", json=body).is_success
    assert [r["config_id"] for r in _records(tmp_path / "proj" / "live").values()] == [legacy] * 2
    # which files such paths named cannot be told: it says it takes them as named from here
    assert any("model paths as written" in line for line in served.lines), served.lines


def test_a_sigterm_as_serve_says_it_serves_stops_it_cleanly(tmp_path):
    """A supervisor that stops the server as soon as it says it serves: the line came before
    the server's signal handlers, and a SIGTERM right after it killed the process (-15) in
    about one start of four."""
    import os
    import subprocess
    import sys

    spec = tmp_path / "spec.yaml"
    command = [sys.executable, "-m", "tradeoff", "serve", "--port", "0", "--spec", str(spec),
               "--out", str(tmp_path / "run")]  # fmt: skip
    for url in fast_server():
        spec.write_text(yaml.safe_dump({"models": {"m": f"openai:{url}#fast"}}))
        for _ in range(6):
            proc = subprocess.Popen(
                command, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith("serving "):
                    proc.send_signal(signal.SIGTERM)  # at once, as the line comes
                    break
            said = proc.stderr.read()
            assert proc.wait(60) == 0, said


def test_a_configuration_that_served_nothing_may_change_or_be_renamed_on_restart(tmp_path):
    """A server stopped before it served anything left its configuration in --out: a restart
    with another max_tokens was refused for records the directory "already holds", though it
    held none (`report` said so), and the directory was lost to it."""
    out, spec = tmp_path / "run", tmp_path / "spec.yaml"
    for url in fast_server():
        models = {"m": f"openai:{url}#fast"}
        for max_tokens, name in ((8, "first"), (9, "first"), (9, "second")):
            entry = {"model": "m", "name": name, "max_tokens": max_tokens}
            spec.write_text(yaml.safe_dump({"models": models, "configs": [entry]}))
            with serve_process("--spec", str(spec), "--out", str(out)) as served:
                # (answered once it serves: a SIGTERM before then is not yet its own to handle)
                assert httpx.get(f"{served.root}/health").is_success
                assert served.stop() == 0
        body = {"model": "second", "prompt": "1 + 1 =", "max_tokens": 2}
        with serve_process("--spec", str(spec), "--out", str(out)) as served:
            assert httpx.post(f"{served.url}/completions", json=body).is_success
    assert [r["config"] for r in _records(out).values()] == ["second"]
    store = Store.open(out)
    assert [(c["name"], c["spec"]["sampling"]["max_tokens"]) for c in store.configs()] == [
        ("second", 9)
    ]
    store.close()


@pytest.mark.slow
def test_serving_a_fitted_policy_routes_each_request(tmp_path):
    policy = fitted_policy(tmp_path, limit=12, max_tokens=8, cost="flops")
    out = tmp_path / "served"
    with (
        serve_process("--policy", str(policy), "--out", str(out)) as served,
        _client(served.url) as c,
    ):
        assert [m.id for m in c.models.list()] == ["router"]
        raw = c.chat.completions.with_raw_response.create(
            model="router", messages=[{"role": "user", "content": "What is 7 + 5?"}],
            max_tokens=8,
        )  # fmt: skip
        routed = raw.headers["x-tradeoff-routed-to"]
        assert routed in ("small", "large")
        wait_for(
            lambda: metric(served.root, "tradeoff_routes_total", model="router", route=routed),
            "the route counted",
        )
        assert metric(served.root, "tradeoff_routes_total") == 1
    (row,) = _records(out).values()
    assert row["extra"]["routed_to"] == routed
    assert [call["model"] for call in row["calls"]] == [routed]

    # Served again under another name, its records would be reported under the first one.
    one_line_error(
        run_cli("serve", "--policy", str(policy), "--name", "other", "--out", str(out),
                "--port", "0", timeout=120),
        "what 'other' runs, served as 'router'", "serve it with --name router",
    )  # fmt: skip
    # The policy fitted again (an embedding router) at the same path: its records would be
    # reported under one name with the first one's, so the same --out is refused.
    refit = run_cli("policy", "fit", str(tmp_path / "records"), "--strong-fraction", "0.5",
                    "--cost", "flops", "--router", "embed-lr", "-o", str(policy))  # fmt: skip
    assert refit.returncode == 0, refit.stderr
    one_line_error(
        run_cli("serve", "--policy", str(policy), "--out", str(out), "--port", "0"),
        "already holds records served as 'router' by another configuration",
    )
    # Served elsewhere, it stops in one line: the embedding router's torch brings nanobind
    # objects, which a frozen collector reported as some 35 lines of leaks.
    with serve_process("--policy", str(policy), "--out", str(tmp_path / "again")) as served:
        body = {"model": "router", "messages": ASK, "max_tokens": 4}
        assert httpx.post(f"{served.url}/chat/completions", json=body, timeout=120).is_success
        assert served.stop() == 0
    assert not [line for line in served.lines if "nanobind" in line], served.lines[-5:]


@pytest.mark.slow
def test_a_budget_caps_what_a_client_asks_and_a_base_model_answers_one_line(tmp_path):
    """A client's max_tokens above a `budget` configuration's cap gets the cap (it got what it
    asked, stored under the budget's name); a client's stop strings on a base model keep the
    end of its line (the model wrote on, the next "Question:" and its answer too). A budget's
    answer streams."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "models: {small: smollm2-135m, base: gemma3-270m}\n"
        "configs:\n"
        "  - {strategy: budget, model: small, budget: 6, name: capped}\n"
        "  - {strategy: single, model: base, name: base}\n"
        "  - {strategy: budget, model: small, budget: 10, think_budget: 3, name: think}\n"
    )
    out = tmp_path / "run"
    with serve_process("--spec", str(spec), "--out", str(out)) as served:
        client = _client(served.url)
        count = [{"role": "user", "content": "Count from 1 to 30, separated by commas."}]
        for stream in (False, True):
            if stream:
                chunks = list(client.chat.completions.create(
                    model="capped", messages=count, max_tokens=32, stream=True,
                    stream_options={"include_usage": True},
                ))  # fmt: skip
                usage = chunks[-1].usage
                finish = next(c.choices[0].finish_reason for c in chunks if c.choices and
                              c.choices[0].finish_reason)  # fmt: skip
                # streamed as generated (sent whole at the end, after the TTFT it recorded)
                pieces = [c.choices[0].delta.content for c in chunks if c.choices and
                          c.choices[0].delta.content]  # fmt: skip
                assert len(pieces) > 1, pieces
                streamed = "".join(pieces)
            else:
                whole = client.chat.completions.create(model="capped", messages=count,
                                                       max_tokens=32)  # fmt: skip
                usage, finish = whole.usage, whole.choices[0].finish_reason
            assert usage.completion_tokens == 6 and finish == "length", (usage, finish)
        fewer = client.chat.completions.create(model="capped", messages=count, max_tokens=3)
        assert fewer.usage.completion_tokens == 3
        answer = client.chat.completions.create(
            model="base", messages=ASK, max_tokens=24, stop=["zzz"]
        )
        assert "\n" not in answer.choices[0].message.content, answer.choices[0].message.content
        # cut at think_budget, then continued: both calls' text streamed, as stored
        chunks = list(client.chat.completions.create(model="think", messages=count, stream=True))
        continued = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    capped = [r for r in _records(out).values() if r["config"] == "capped"]
    assert sorted(r["output_tokens"] for r in capped) == [3, 6, 6]
    assert streamed in {r["output"] for r in capped if r["extra"]["stream"]}
    (thought,) = [r for r in _records(out).values() if r["config"] == "think"]
    assert len(thought["calls"]) == 2 and thought["output"] == continued, thought


def test_a_spec_without_tasks_is_served_but_not_profiled(tmp_path):
    """Serving scores nothing: a spec for it needs models, no tasks. Profiling does need them."""
    spec = tmp_path / "serve.yaml"
    spec.write_text("models:\n  small: smollm2-135m\n")
    with (
        serve_process("--spec", str(spec), "--out", str(tmp_path / "served")) as served,
        _client(served.url) as c,
    ):
        answer = c.chat.completions.create(model="small", messages=ASK, max_tokens=4)
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
    result = run_cli("profile", str(spec), "--out", str(tmp_path / "profiled"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "the spec has no tasks" in result.stderr
    assert not (tmp_path / "profiled").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--config", "nope"], "configuration 'nope' is not in the spec; its configurations:"),
        (["--policy", "missing.json"], "policy file missing.json does not exist"),
        (["--policy", "."], "policy file . is a directory"),  # it said "does not exist"
        (["--policy", "p.json", "--config", SINGLE], "either --policy or --spec/--config"),
        (["--name", "x"], "--name names a --policy"),
        (["--policy", "p.json", "--name", " "], "--name is empty"),  # it served as 'policy'
        (["--port", "70000"], "is not a port number"),
        (["--api-key", ""], "--api-key (or $TRADEOFF_API_KEY) is empty"),
        (["--request-timeout", "inf"], "--request-timeout must be a number of seconds"),
        (["--request-timeout", "nan"], "--request-timeout must be a number of seconds"),
        (["--max-concurrency", "0"], "--max-concurrency must be at least 1 (got 0)"),
    ],
)
def test_bad_options_fail_in_one_line(tmp_path, args, needle):
    result = run_cli("serve", "--out", str(tmp_path / "run"), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"port": -1}, "--port -1 is not a port number (0 to 65535)"),  # "--host: cannot resolve"
        ({"port": 70000}, "--port 70000 is not a port number (0 to 65535)"),  # served on 4464
        ({"limits": {"max_concurrency": 0}}, "--max-concurrency must be at least 1 (got 0)"),
        ({"limits": {"max_body_bytes": 0}}, "--max-body-bytes must be at least 1 (got 0)"),
        ({"limits": {"max_tokens": -5}}, "--max-tokens-limit must be at least 1 (got -5)"),
        ({"limits": {"max_connections": 0}}, "--max-connections must be at least 1 (got 0)"),
        (
            {"limits": {"request_timeout_s": 0.0}},
            "--request-timeout must be a number of seconds, 0.1 or more (got 0.0)",
        ),
    ],
)
def test_bad_options_of_a_library_call_are_refused_before_it_serves(tmp_path, options, needle):
    """`serve()` from Python checked none of its options, only the command line did: port -1 was
    refused as a --host it could not resolve, 70000 served on port 4464, and limits of 0 served
    (every request refused)."""
    import contextlib
    import re

    from tradeoff.config import parse_spec
    from tradeoff.errors import UserError
    from tradeoff.serve import Limits, ServeOptions, serve, served_configs

    options["limits"] = Limits(**options.get("limits", {}))
    stopped = threading.Event()
    stopped.set()  # were it to serve, it would stop at once
    with contextlib.contextmanager(fast_server)() as upstream:
        spec = parse_spec({"models": {"m": f"openai:{upstream}#fast"}})
        with pytest.raises(UserError, match=re.escape(needle)):
            serve(
                served_configs(spec, [], None, None), spec, tmp_path / "run", source={},
                options=ServeOptions(**options), notify=lambda m: None,
                stop=stopped,
            )  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_an_empty_key_in_the_environment_is_refused_not_taken_as_none(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEOFF_API_KEY", "")
    result = run_cli("serve", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "$TRADEOFF_API_KEY) is empty" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_port_refuses_connections_until_the_models_are_warm():
    """Bound at once (a port in use is said before the models load), listening only once they
    are ready: a health check during a long warm-up (a torch model's, 17 s on this CPU) is
    refused and tries again, where it had connected and then hung until the warm-up ended."""
    import socket

    from tradeoff.serve.server import _bind, _listen

    sock = _bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        _listen(sock)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        sock.close()


@pytest.mark.slow
def test_a_port_in_use_and_a_profile_directory_are_refused(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--out", str(tmp_path / "a"), "--port", str(port))
    assert result.returncode == 2 and "choose another --port" in result.stderr
    profiled = tmp_path / "profiled"
    assert run_cli("profile", "-m", SINGLE, "-t", "arith", "--limit", "1", "--max-tokens", "2",
                   "--out", str(profiled)).returncode == 0  # fmt: skip
    result = run_cli("serve", "--out", str(profiled), "--port", "0")
    assert result.returncode == 2 and "holds a profile run" in result.stderr


def test_stop_holdback_never_emits_text_a_stop_string_cuts():
    pieces: list[str] = []
    emit = StopHoldback(pieces.append, ["\n\n", "END"])
    text = ""
    for token in ["Hello", " wor", "ld", "E", "N"]:
        text += token
        emit.update(text)
    # "EN" could still become "END": held back
    assert "".join(pieces) == "Hello world"
    emit.finish("Hello world")  # the engine found no stop; the rest was cut differently
    assert "".join(pieces) == "Hello world"


def test_llama_engine_streams_pieces_that_join_to_its_answer(smollm):
    import asyncio

    pieces: list[str] = []
    request = Request(prompt="Count: 1, 2, 3,", max_tokens=12, stop=[", 7"])
    generation = asyncio.run(smollm.agenerate(request, pieces.append))
    assert len(pieces) >= 2
    assert "".join(pieces) == generation.text
    assert ", 7" not in "".join(pieces)


def test_metrics_parse_as_prometheus_text_with_one_label_set_per_metric():
    import math

    from prometheus_client.parser import text_string_to_metric_families

    from tradeoff.serve.metrics import ServerMetrics

    m = ServerMetrics()
    for value in (0.003, 0.2, 0.2, 100.0):
        m.latency.labels('a "quoted"\nname').observe(value)
    m.tokens.labels("a", "b", "output").inc(5)
    m.requests.labels("chat", "200").inc()
    m.requests.labels("other", "404").inc()
    m.observe_reports("a", {"escalated": True, "switches": 3, "routed_to": "small"})
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    for family in families.values():
        label_sets = {frozenset(k for k in s.labels if k != "le") for s in family.samples}
        assert len(label_sets) <= 1, (family.name, label_sets)
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in families["tradeoff_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    counts = [c for _, c in buckets]
    assert counts == sorted(counts) and buckets[-1] == (math.inf, 4)  # cumulative, +Inf = all
    assert dict(buckets)[0.005] == 1 and dict(buckets)[0.25] == 3
    [count] = [
        s
        for s in families["tradeoff_request_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert count.labels == {"model": 'a "quoted"\nname'} and count.value == 4
    reported = {
        name: [(s.labels, s.value) for s in families[name].samples]
        for name in ("tradeoff_escalations", "tradeoff_switches", "tradeoff_routes")
    }
    assert reported == {
        "tradeoff_escalations": [({"model": "a"}, 1.0)],
        "tradeoff_switches": [({"model": "a"}, 3.0)],
        "tradeoff_routes": [({"model": "a", "route": "small"}, 1.0)],
    }


def test_the_bearer_scheme_is_case_insensitive_the_key_is_not(server):
    def status(value: str) -> int:
        return httpx.get(f"{server.url}/models", headers={"authorization": value}).status_code

    assert status("bearer sekrit") == 200 and status("BEARER  sekrit") == 200
    assert status("Bearer SEKRIT") == 401 and status("Basic sekrit") == 401


def test_a_configuration_answering_past_the_token_limit_is_noted_and_its_422_says_why(tmp_path):
    """A configuration whose own max_tokens is above --max-tokens-limit: the server says so as
    it starts, and a request naming no max_tokens is refused for the configuration's length,
    not for a max_tokens its client never sent; one naming a length within the limit is served."""
    for url in fast_server():
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            yaml.safe_dump({"models": {"m": f"openai:{url}#fast"},
                            "configs": [{"model": "m", "max_tokens": 64, "name": "long"}]})
        )  # fmt: skip
        args = ("--spec", str(spec), "--max-tokens-limit", "8", "--out", str(tmp_path / "o"))
        with serve_process(*args) as s:
            unnamed = httpx.post(f"{s.url}/completions", json={"model": "long", "prompt": "x"})
            named = {"model": "long", "prompt": "x", "max_tokens": 8}
            assert httpx.post(f"{s.url}/completions", json=named).status_code == 200
        assert any("'long' answers with up to 64 tokens" in line for line in s.lines), s.lines
    assert unnamed.status_code == 422, unnamed.text
    message = unnamed.json()["error"]["message"]
    assert "answers with up to 64 tokens where a request names no max_tokens" in message, message


PRICES = {"small": {"input": 0.1, "output": 0.4}, "large": {"input": 1.0, "output": 4.0}}


def _dollar_policy(tmp_path, url):
    """A policy fitted on dollars over a run of two models of the fast server at `url`, priced
    as PRICES (and a third model, unused, priced too)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump({"models": {"small": f"openai:{url}#fast", "large": f"openai:{url}#big",
                                   "unused": f"openai:{url}#other"},
                        "tasks": ["arith"], "limit": 12, "sampling": {"max_tokens": 4},
                        "configs": [{"model": "small"}, {"model": "large"}],
                        "prices": {**PRICES, "unused": {"input": 9, "output": 9}}})
    )  # fmt: skip
    assert run_cli("profile", str(spec), "--out", str(tmp_path / "run")).returncode == 0
    policy = tmp_path / "router.json"
    fit = run_cli("policy", "fit", str(tmp_path / "run"), "--cost", "dollars",
                  "--target-accuracy", "0", "-o", str(policy))  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    return policy


def test_a_policy_fitted_on_dollars_prices_its_served_requests(tmp_path):
    """`serve --policy` takes no spec: the policy keeps the prices of the run it was fitted on
    (those of its own models), so served records are priced as the run's were."""
    for url in fast_server():
        policy = _dollar_policy(tmp_path, url)
        kept = json.loads(policy.read_text())["prices"]
        assert {alias: (p["input"], p["output"]) for alias, p in kept.items()} == {
            alias: (p["input"], p["output"]) for alias, p in PRICES.items()
        }
        out = tmp_path / "served"
        with serve_process("--policy", str(policy), "--out", str(out)) as served:
            body = {"model": "router", "prompt": "1 + 1 =", "max_tokens": 3}
            assert httpx.post(f"{served.url}/completions", json=body).is_success
    (row,) = _records(out).values()
    price = PRICES[row["extra"]["routed_to"]]
    (call,) = row["calls"]
    expected = (price["input"] * call["input_tokens"] + price["output"] * 3) / 1e6
    assert row["cost_usd"] == pytest.approx(expected)


def test_a_policy_file_that_keeps_no_prices_is_said_at_start_and_in_the_report(tmp_path):
    """A policy fitted before policies kept prices (format 2, say) served every request
    unpriced without a word, and report blamed "no prices in the spec", of a run with no spec."""
    for url in fast_server():
        data = json.loads(_dollar_policy(tmp_path, url).read_text())
        del data["prices"], data["served_lam"]
        old = tmp_path / "old.json"
        old.write_text(json.dumps({**data, "format": "tradeoff-policy/2"}))
        out = tmp_path / "served"
        with serve_process("--policy", str(old), "--out", str(out)) as served:
            body = {"model": "old", "prompt": "1 + 1 =", "max_tokens": 3}
            assert httpx.post(f"{served.url}/completions", json=body).is_success
    (said,) = [line for line in served.lines if "keeps no prices" in line]
    assert "old.json" in said and "fit it again" in said, said
    report = run_cli("report", str(out), "--format", "json")
    assert report.returncode == 0, report.stderr
    (row,) = json.loads(report.stdout)
    assert row["cost_usd"] is None, row
    assert "old.json keeps no prices" in row["cost_usd_missing"], row


def test_a_server_whose_stderr_reader_is_gone_still_stops_on_sigterm(tmp_path):
    """`serve ... | tee log` with tee gone: its notice of the signal raised BrokenPipeError in
    the loop's handler before the flags were set, and it served on, deaf to every signal."""
    import re
    import subprocess
    import sys

    out = tmp_path / "run"
    for url in fast_server():
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({"models": {"m": f"openai:{url}#fast"}}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tradeoff", "serve", "--spec", str(spec), "--out", str(out),
             "--port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            served = None
            while served is None:
                line = proc.stderr.readline()
                assert line, "serve exited before it listened"
                served = re.search(r" at (http://\S+/v1) ", line)
            proc.stderr.close()  # its reader goes away
            body = {"model": "m", "prompt": "1 + 1 =", "max_tokens": 2}
            assert httpx.post(f"{served.group(1)}/completions", json=body).is_success
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            proc.kill()
            proc.wait()
    assert len(_records(out)) == 1


@pytest.mark.parametrize("held", [False, True])
def test_a_second_ctrl_c_writes_the_records_of_requests_answered_unless_the_store_is_held(
    tmp_path, held
):
    """Requests answered just before a second Ctrl-C had their records queued for the store's
    thread, and the abort lost them though it said only the requests in flight were lost. Here
    another process holds the database locked as the requests are answered, so that they are
    still queued at the abort: let go as the abort begins, the records are written before the
    server exits; held on, the server exits all the same within seconds (not after the store's
    30 s wait for a lock) and says they may be lost."""
    import contextlib
    import time

    from tradeoff.store import STORE_FILE

    out = tmp_path / "run"
    with contextlib.contextmanager(fast_server)() as url:
        spec = tmp_path / "spec.yaml"
        models = {"m": f"openai:{url}#fast", "slow": f"openai:{url}#hang"}
        spec.write_text(yaml.safe_dump({"models": models, "timeout_s": 60}))
        with serve_process("--spec", str(spec), "--out", str(out)) as served:
            holder = sqlite3.connect(out / STORE_FILE, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # the store's write lock
            body = {"model": "m", "prompt": "1 + 1 =", "max_tokens": 2}
            for _ in range(2):
                assert httpx.post(f"{served.url}/completions", json=body).status_code == 200
            hung = {"model": "slow", "prompt": "1 + 1 =", "max_tokens": 2}

            def ask_hung() -> None:
                with contextlib.suppress(httpx.TransportError):  # closed unanswered
                    httpx.post(f"{served.url}/completions", json=hung, timeout=60)

            in_flight = threading.Thread(target=ask_hung)
            in_flight.start()  # keeps the server finishing after the first Ctrl-C
            wait_for(lambda: metric(served.root, "tradeoff_in_flight") == 1, "a request in flight")
            served.proc.send_signal(signal.SIGINT)
            wait_for(lambda: any("stopping" in line for line in served.lines), "stopping")
            served.proc.send_signal(signal.SIGINT)
            aborted = time.monotonic()
            wait_for(lambda: any("aborting" in line for line in served.lines), "aborting")
            if not held:
                holder.rollback()
            code = served.stop(timeout=PATIENCE_S)
            took = time.monotonic() - aborted
            holder.close()
            in_flight.join()
    assert code == 130, served.lines
    lost = [line for line in served.lines if "not stored" in line]
    if held:
        assert took < 15 and lost == [
            "up to 2 answered request(s) not stored: their records were not written within 2 s"
        ], (took, served.lines)
    else:
        assert not lost, served.lines
        assert [r["extra"]["http_status"] for r in _records(out).values()] == [200, 200]


# A host program's Ctrl-C pressed twice once its server has a request in flight; its `ask()`
# (which starts the presses once the server is up) goes on to send that request.
TWICE_WITH_A_REQUEST_IN_FLIGHT = """def interrupt():
    while httpx.get(f"{url}/metrics").text.count("tradeoff_in_flight 1.0") == 0:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C pressed twice with a request in flight
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGINT)


def ask():
    for _ in range(200):
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    threading.Thread(target=interrupt, daemon=True).start()
"""


SERVE_HOST = (
    """
import os, signal, subprocess, sys, threading, time
import httpx
from tradeoff.config import parse_spec
from tradeoff.serve.server import ServeOptions, serve, served_configs
from tradeoff.store import Store

child = subprocess.Popen(["sleep", "120"])  # the host's own, none of tradeoff's
body = {"models": ["smollm2-135m"], "tasks": [], "sampling": {"max_tokens": 200}}
spec, port = parse_spec(body), int(sys.argv[2])
url = f"http://127.0.0.1:{port}"
"""
    + TWICE_WITH_A_REQUEST_IN_FLIGHT
    + """    try:
        httpx.post(f"{url}/v1/completions", timeout=60,
                   json={"model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 200})
    except httpx.TransportError:
        pass


threading.Thread(target=ask, daemon=True).start()
try:
    serve(served_configs(spec, [], None, None), spec, sys.argv[1], source={"spec": body},
          options=ServeOptions(port=port), notify=lambda m: None)
except KeyboardInterrupt:
    print("interrupted")
print("child", "alive" if child.poll() is None else "killed")
handler = signal.getsignal(signal.SIGINT)
print("handler", "default" if handler is signal.default_int_handler else handler)
store = Store.open(sys.argv[1])
print("status", store.run()["status"])
child.kill()
"""
)


def test_a_second_ctrl_c_in_a_library_call_to_serve_raises_in_its_caller(tmp_path):
    """`serve()` called as a library: a second Ctrl-C with a request in flight raised nothing its
    caller could catch (os._exit(130)); KeyboardInterrupt now, the caller's processes untouched,
    SIGINT's handler its own again, the run stopped, and no traceback of the cancelled request."""
    from conftest import free_port

    host = tmp_path / "host.py"
    host.write_text(SERVE_HOST)
    ended = subprocess.run(
        [sys.executable, str(host), str(tmp_path / "served"), str(free_port())],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ended.returncode == 0, ended.stderr[-2000:]
    assert ended.stdout.splitlines() == [
        "interrupted", "child alive", "handler default", "status stopped"
    ]  # fmt: skip
    assert "Traceback" not in ended.stderr


def test_serve_called_in_a_thread_serves_until_its_stop_event_is_set(tmp_path):
    """`serve()` in a thread (as tradeoff's advice to a caller in a running event loop says)
    raised a bare ValueError once its models were loaded, setting signal handlers only the main
    thread may set. It serves now, and setting its `stop` event stops it as SIGTERM does."""
    import contextlib
    import re
    from concurrent.futures import ThreadPoolExecutor

    from serve_support import in_flight

    from tradeoff.config import parse_spec
    from tradeoff.serve import ServeOptions, serve, served_configs

    out, stop, lines = tmp_path / "run", threading.Event(), []

    def ready() -> str | None:  # the server's root URL, once it says it serves
        found = [m.group(1) for line in lines if (m := re.search(r" at (\S+)/v1 ", line))]
        return found[0] if found else None

    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    with (
        contextlib.contextmanager(fast_server)("--delay-ms", "100") as upstream,
        ThreadPoolExecutor(2) as pool,
    ):
        spec = parse_spec({"models": {"m": f"openai:{upstream}#fast"}})
        serving = pool.submit(
            serve, served_configs(spec, [], None, None), spec, out, source={},
            options=ServeOptions(port=0), notify=lines.append, stop=stop,
        )  # fmt: skip
        wait_for(lambda: serving.done() or ready(), "serve() says it serves")
        if serving.done():
            serving.result()  # what it raised
        root = ready()
        body = {"model": "m", "prompt": "1 + 1 =", "max_tokens": 5}
        asked = pool.submit(httpx.post, f"{root}/v1/completions", json=body, timeout=PATIENCE_S)
        wait_for(lambda: in_flight(root) == 1, "the request in flight")
        stop.set()
        assert serving.result(timeout=PATIENCE_S) is None
        assert asked.result().status_code == 200
    assert any("finishing 1 request(s) in flight" in line for line in lines), lines
    # its ready line names what stops it: in a thread, no signal does
    assert any("setting its stop event stops after" in line for line in lines), lines
    assert not any("Ctrl-C" in line for line in lines if " at http" in line), lines
    assert len(_records(out)) == 1
    store = Store.open(out)
    assert store.run()["status"] == "stopped"
    store.close()
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
    # a stop set before (or while) its models load: it never says it serves, nor listens
    lines.clear()
    stop.set()
    with contextlib.contextmanager(fast_server)() as upstream:
        spec = parse_spec({"models": {"m": f"openai:{upstream}#fast"}})
        serve(served_configs(spec, [], None, None), spec, tmp_path / "early", source={},
              options=ServeOptions(port=0), notify=lines.append, stop=stop)  # fmt: skip
    assert not any(" at http" in line for line in lines), lines
    assert any("not serving" in line for line in lines), lines


ABORTED_HOST = (
    """
import os, signal, sys, threading, time
import httpx
from tradeoff.config import parse_spec
from tradeoff.serve.server import ServeOptions, serve, served_configs

body = {"models": {"m": f"openai:{sys.argv[3]}#hang"}, "tasks": []}
spec, port = parse_spec(body), int(sys.argv[2])
url = f"http://127.0.0.1:{port}"
answers = []
"""
    + TWICE_WITH_A_REQUEST_IN_FLIGHT
    + """    try:
        r = httpx.post(f"{url}/v1/completions", timeout=60,
                       json={"model": "m", "prompt": "Once upon a time", "max_tokens": 5})
        answers.append(f"{r.status_code} {r.headers.get('content-type')} {r.text}")
    except httpx.TransportError:
        answers.append("connection closed")


asking = threading.Thread(target=ask)
asking.start()
try:
    serve(served_configs(spec, [], None, None), spec, sys.argv[1], source={"spec": body},
          options=ServeOptions(port=port), notify=lambda m: None)
except KeyboardInterrupt:
    print("interrupted")
asking.join()
print("answer", *answers)
"""
)


def test_a_second_ctrl_c_in_a_library_call_to_serve_answers_no_request_in_flight(tmp_path):
    """A library call's second Ctrl-C answered every request in flight 500 Internal Server Error
    in plain text (uvicorn's answer to a cancelled request), where the command line's closes its
    connection; they are closed now too, with no answer that was not the model's."""
    from conftest import free_port

    host = tmp_path / "host.py"
    host.write_text(ABORTED_HOST)
    for upstream in fast_server():
        ended = subprocess.run(
            [sys.executable, str(host), str(tmp_path / "served"), str(free_port()), upstream],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert ended.returncode == 0, ended.stderr[-2000:]
    assert ended.stdout.splitlines() == ["interrupted", "answer connection closed"]
    assert "Traceback" not in ended.stderr
