"""`tradeoff serve` when a client goes away mid-answer: the answer so far is stored with its tokens
(a slow upstream's next token is not waited for), and stopping the server while a cancelled
in-process generation still runs on the model's thread ends cleanly (it freed the model under
that generation and crashed with a segfault)."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from conftest import fast_server, serve_process
from serve_support import assert_stopped_cleanly, left_behind_a_prefill, stored

from tradeoff.types import CANCELLED, Request


def _spec(path: Path, models: dict[str, str]) -> Path:
    spec = {
        "models": models,
        "sampling": {"max_tokens": 8},
        "configs": [{"strategy": "single", "model": alias, "name": alias} for alias in models],
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_stream_left_mid_answer_keeps_its_tokens_from_a_slow_upstream(tmp_path):
    """The upstream streams a token every 1.5 s: a gone client's request stops waiting for the
    next one at once, and the record still holds the tokens the client was sent."""
    out = tmp_path / "run"
    with contextlib.contextmanager(fast_server)("--delay-ms", "1500") as upstream:
        spec = _spec(tmp_path / "spec.yaml", {"slow": f"openai:{upstream}#slow"})
        with serve_process("--spec", str(spec), "--out", str(out)) as served:
            body = {
                "model": "slow",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 8,
                "stream": True,
            }
            received = []
            with (
                httpx.Client(base_url=served.url, timeout=60) as client,
                client.stream("POST", "/chat/completions", json=body) as r,
            ):
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        received += [delta["content"]] if delta.get("content") else []
                    if len(received) == 2:
                        break  # leaves: the connection closes
            t_left = time.monotonic()
            records = assert_stopped_cleanly(served)
    assert time.monotonic() - t_left < 30
    (record,) = records.to_dict("records")
    assert record["error"] == "client disconnected", record
    assert record["output_tokens"] >= 2 and record["ttft_s"] is not None, record
    assert record["output"].startswith("".join(received)), (record["output"], received)
    assert record["calls"] not in ("[]", None), record


@pytest.mark.slow
def test_stopping_while_a_cancelled_generation_runs_on_the_model_thread_is_clean(tmp_path):
    """A long prompt's prefill, its client gone after half a second: the request stops once
    llama.cpp is done with the prefill (it cannot stop inside it); a Ctrl-C meanwhile stops the
    server with exit 0 once that computation ends, and the request is stored with its call (a
    request still computing a second after its client left was cancelled outright, and stored
    with no call, no token)."""
    out = tmp_path / "run"
    spec = _spec(tmp_path / "spec.yaml", {"small": "smollm2-135m"})
    with serve_process("--spec", str(spec), "--out", str(out)) as served:
        body = {"model": "small", "prompt": "the cat sat on the mat " * 300, "max_tokens": 2}
        with (
            httpx.Client(base_url=served.url, timeout=0.5) as client,
            contextlib.suppress(httpx.TimeoutException),
        ):
            client.post("/completions", json=body)
        time.sleep(1.5)
        code = served.stop(signal.SIGINT)
        assert code == 0, served.lines
    assert "Segmentation fault" not in "\n".join(served.lines)
    (record,) = stored(out).to_dict("records")
    calls = json.loads(record["calls"])
    assert len(calls) == 1, (record, served.lines)
    assert record["error"] == "client disconnected" and calls[0]["input_tokens"] > 1000, calls


def test_a_cascade_or_vote_left_by_its_client_calls_no_further_model(tmp_path):
    """Left after half a second of a slow upstream's first answer: the cascade does not
    escalate (it did, and counted an escalation), the vote draws no more (it drew every draw);
    no TTFT (the answer, released whole, reached nobody)."""
    out = tmp_path / "run"
    with contextlib.contextmanager(fast_server)("--delay-ms", "1500") as upstream:
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({
            "models": {"small": f"openai:{upstream}#small", "large": f"openai:{upstream}#large"},
            "sampling": {"max_tokens": 8},
            "configs": [
                {"strategy": "cascade", "models": ["small", "large"], "signal": "logprob",
                 "threshold": 0.0, "name": "cascade"},
                {"strategy": "vote", "model": "small", "n": 3, "name": "vote"},
            ],
        }))  # fmt: skip
        with serve_process("--spec", str(spec), "--out", str(out)) as served:
            for model in ("cascade", "vote"):
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                with (
                    httpx.Client(base_url=served.url, timeout=0.5) as client,
                    contextlib.suppress(httpx.TimeoutException),
                ):
                    client.post("/chat/completions", json=body)
            records = assert_stopped_cleanly(served)
    by_config = {r["config"]: r for r in records.to_dict("records")}
    assert sorted(by_config) == ["cascade", "vote"]
    for record in by_config.values():
        assert record["error"] == "client disconnected", record
        assert len(json.loads(record["calls"])) == 1, record["calls"]
        assert pd.isna(record["ttft_s"]), record
    assert by_config["cascade"]["extra"]["escalated"] is False
    assert by_config["vote"]["extra"]["samples_drawn"] == 1


def test_a_call_cancelled_before_it_began_read_no_input_tokens(smollm):
    """0, not unknown: a record sums its calls' input tokens, and one unknown made the whole
    record's unknown (a cancelled vote's draws that ran were lost)."""
    cancel = threading.Event()
    cancel.set()
    gen = smollm.generate(Request(prompt="2+2=", max_tokens=4, cancel=cancel))
    assert (gen.error, gen.input_tokens, gen.output_tokens) == (CANCELLED, 0, 0)


def test_a_call_cancelled_mid_answer_counts_the_flops_it_computed(smollm):
    """Its prefill and tokens ran: a disconnected request's FLOPs read unknown, and blanked its
    configuration's FLOPs in the report."""
    import asyncio

    from tradeoff.strategies.calls import CallMeter

    cancel = threading.Event()
    seen: list[str] = []

    def on_text(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            cancel.set()

    request = Request(prompt="Count: 1, 2, 3,", max_tokens=32, cancel=cancel)
    meter = CallMeter({"small": smollm}, None, "no meter here")
    call = asyncio.run(meter.call("small", request, on_text))
    gen = call.generation
    assert gen.error == CANCELLED and 0 < gen.output_tokens < 32, gen
    assert call.flops is not None and call.flops > 0 and call.bytes, call
    whole = asyncio.run(meter.call("small", Request(prompt="Count: 1, 2, 3,", max_tokens=32)))
    assert whole.flops is not None and call.flops < whole.flops


def test_a_request_left_while_it_waited_for_the_engine_is_let_go_at_once(tmp_path):
    """Behind a long prefill, a request whose client left stops waiting for the model (it
    waited for the prefill to end, holding its place among the requests in flight): stored
    at once, its call not run."""
    out = tmp_path / "run"
    spec = _spec(tmp_path / "spec.yaml", {"small": "smollm2-135m"})
    with serve_process("--spec", str(spec), "--out", str(out)) as served:
        waited, answered = left_behind_a_prefill(
            served, {"model": "small", "prompt": "2+2=", "max_tokens": 2}
        )
    (call,) = json.loads(waited["calls"])
    assert waited["error"] == "client disconnected" and call["input_tokens"] == 0, waited
    assert (call["output_tokens"], call["error"]) == (0, CANCELLED) and pd.isna(answered["error"])
    # no energy spent: 0 J where a meter reads this machine (the record's was missing for it)
    assert call["energy_j"] == 0.0 or call["energy_missing"] == answered["energy_missing"], call
    assert waited["e2e_s"] < answered["e2e_s"] / 2, (waited["e2e_s"], answered["e2e_s"])


def test_a_switch_left_while_it_waited_for_the_engines_is_let_go_at_once(tmp_path):
    """`switch` takes both models' turns under one wait for the engines: a request whose client
    left during that wait stops at once, its call not run (it waited out the prefill ahead of
    it, and was cancelled only by the server's backstop a second after)."""
    out = tmp_path / "run"
    spec = {
        "models": {"small": "smollm2-135m", "large": "smollm2-135m"},
        "sampling": {"max_tokens": 8},
        "configs": [
            {"strategy": "single", "model": "small", "name": "small"},
            {"strategy": "switch", "models": ["small", "large"], "threshold": 2.0, "name": "sw"},
        ],
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with serve_process("--spec", str(tmp_path / "spec.yaml"), "--out", str(out)) as served:
        waited, answered = left_behind_a_prefill(
            served, {"model": "sw", "prompt": "2+2=", "max_tokens": 2}
        )
    assert waited["config"] == "sw" and waited["error"] == "client disconnected", waited
    (call,) = json.loads(waited["calls"])
    assert (call["output_tokens"], call["error"], call["input_tokens"]) == (0, CANCELLED, 0)
    assert waited["e2e_s"] < answered["e2e_s"] / 2, (waited["e2e_s"], answered["e2e_s"])


def test_a_vote_whose_other_draw_failed_answers(tmp_path):
    """The upstream fails every third request: one draw of a vote of three fails, the other
    two answer, and so does the vote (a 502 before, though it had its majority)."""
    out = tmp_path / "run"
    with contextlib.contextmanager(fast_server)("--fail-every", "3") as upstream:
        spec = tmp_path / "spec.yaml"
        spec.write_text(yaml.safe_dump({
            "models": {"flaky": f"openai:{upstream}#flaky"},
            "sampling": {"max_tokens": 4},
            "configs": [{"strategy": "vote", "model": "flaky", "n": 3, "name": "vote"}],
        }))  # fmt: skip
        with serve_process("--spec", str(spec), "--out", str(out)) as served:
            body = {"model": "vote", "messages": [{"role": "user", "content": "hi"}]}
            answer = httpx.post(f"{served.url}/chat/completions", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] == "The answer is 42"
            records = assert_stopped_cleanly(served)
    (record,) = records.to_dict("records")
    calls = json.loads(record["calls"])
    assert [bool(c["error"]) for c in calls] == [False, False, True], calls
    assert pd.isna(record["error"]) and record["extra"]["http_status"] == 200, record


def test_a_stream_left_as_its_strategy_finished_is_stored_and_counted_as_disconnected(tmp_path):
    """The client goes away while its first chunk is being written, and the strategy finishes
    before the server is back from that write: the request is a 499 as any whose client left,
    its record says `client disconnected` and /metrics counts a disconnect (it was stored with
    no error, an answer to `report`, and /metrics' 499s outnumbered its disconnects). Driven
    through the application's ASGI calls, so that the two happen in this order every time."""
    import asyncio

    from prometheus_client.parser import text_string_to_metric_families

    from tradeoff.config import parse_spec
    from tradeoff.meters.host import host_info
    from tradeoff.serve.accounting import RecordWriter
    from tradeoff.serve.app import Limits, ServeApp
    from tradeoff.serve.metrics import ServerMetrics
    from tradeoff.serve.server import served_configs
    from tradeoff.session import open_session
    from tradeoff.store import Store

    out = tmp_path / "run"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "stream": True}  # fmt: skip
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(b"content-type", b"application/json")]}  # fmt: skip

    async def serve_one(upstream: str) -> ServerMetrics:
        spec = parse_spec({"models": {"m": f"openai:{upstream}#m"}})
        served = served_configs(spec, [], None, None)
        metrics = ServerMetrics()
        left = asyncio.Event()
        messages = [{"type": "http.request", "body": json.dumps(body).encode()}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if b'"content":"' not in message.get("body", b"") or left.is_set():
                return
            left.set()  # the client leaves as its first word is written
            await asyncio.sleep(0)  # (the server hears of it)
            running = asyncio.all_tasks()
            strategy = [t for t in running if t.get_coro().__qualname__ == "_Run._execute"]
            await asyncio.wait(strategy)  # the answer ends before this write returns

        async with open_session(
            [s.config for s in served.values()],
            lambda: Store.create(out, {"serve": {}}, host_info()),
            timeout_s=30, api_key=None, notify=lambda m: None,
        ) as session:  # fmt: skip
            writer = RecordWriter(session.store, metrics)
            app = ServeApp(served, session.meter, writer, metrics, limits=Limits())
            await app(scope, receive, send)
            await writer.drain()
            writer.close()
        return metrics

    # chunks 50 ms apart: the answer is still going when the client leaves
    with contextlib.contextmanager(fast_server)("--delay-ms", "50") as upstream:
        metrics = asyncio.run(serve_one(upstream))
    (record,) = stored(out).to_dict("records")
    assert record["extra"]["http_status"] == 499 and record["output_tokens"] == 3, record
    assert record["error"] == "client disconnected", record
    samples = {
        (s.name, s.labels.get("code")): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert samples[("tradeoff_requests_total", "499")] == 1
    assert samples[("tradeoff_client_disconnects_total", None)] == 1
