"""`tradeoff serve` when its upstream fails: 502 (an error event once a stream has started), 504
after the spec's timeout, and every failed request stored with its error."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest
from serve_support import (
    AUTH,
    CHAT,
    ENDPOINTS,
    FAILING,
    KEY,
    PATIENCE_S,
    UPSTREAM_TIMEOUT_S,
    assert_error,
    assert_stopped_cleanly,
    metric,
    running,
    sse_events,
    valid,
)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("model", sorted(FAILING))
def test_upstream_failure_is_502(client: httpx.Client, endpoint: str, model: str):
    error = assert_error(client.post(endpoint, json=valid(endpoint, model)), 502)
    assert error["type"] == "upstream_error"
    if model == "llamacpp":  # an `error:` field's message: it was a complete empty answer
        stated = "server error in stream: the request exceeds the available context size"
        assert error["message"].endswith(stated), error
    r = client.post(endpoint, json=valid(endpoint, model, stream=True))
    if model in ("broken", "llamacpp"):  # fails before any text: an honest HTTP error
        assert_error(r, 502)
    else:  # fails after the answer started: a 200 stream that says so, then [DONE]
        assert r.status_code == 200, r.text
        payloads = sse_events(r.text)
        last = json.loads(payloads[-2])
        assert last["error"]["type"] == "upstream_error", last
        assert last["tradeoff"]["config"] == model, last  # what ran, as a finished stream says


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstreams_refusal_of_the_request_is_passed_on(
    client: httpx.Client, canned_server, endpoint: str, stream: bool
):
    """An upstream's 400 `context_length_exceeded` was answered 502 `upstream_error`, its code
    and param lost and its JSON cut mid-string: an OpenAI client retried it twice, three error
    records for one request. It is the upstream's 400, in its own fields, and no upstream
    failure in /metrics."""
    failures = metric(canned_server.root, "tradeoff_upstream_errors_total", model="refuser")
    r = client.post(endpoint, json=valid(endpoint, "refuser", stream=stream))
    error = assert_error(r, 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages", error
    assert error["type"] == "invalid_request_error", error
    assert error["message"].startswith("This model's maximum context length is 512"), error
    assert error["message"].endswith("the length of the messages or completion."), error
    after = metric(canned_server.root, "tradeoff_upstream_errors_total", model="refuser")
    assert after == failures


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(client: httpx.Client, endpoint: str, stream: bool):
    """The upstream never answers; the server gives up after the spec's timeout_s (and the client
    would give up after PATIENCE_S)."""
    t0 = time.monotonic()
    r = client.post(endpoint, json=valid(endpoint, "slow", stream=stream))
    error = assert_error(r, 504)
    assert error["type"] == "upstream_timeout"
    assert time.monotonic() - t0 >= 0.9 * UPSTREAM_TIMEOUT_S


@pytest.mark.slow
def test_failed_requests_are_stored_with_their_error(tmp_path: Path):
    """A 502 or 504 is still accounted for: a record with its error, once the server stops."""
    sent = {("broken", 502): 0, ("slow", 504): 0, ("dropper", 502): 0}
    ids = []  # a failure's answer names its record, as a success's does
    with (
        running(tmp_path, "--api-key", KEY) as server,
        httpx.Client(base_url=server.root, headers=AUTH, timeout=PATIENCE_S) as c,
    ):
        for model, status in sent:
            for endpoint in ENDPOINTS:
                stream = model == "dropper" and endpoint == CHAT
                r = c.post(endpoint, json=valid(endpoint, model, stream=stream))
                assert r.status_code == (200 if stream else status), r.text
                sent[(model, status)] += 1
                if not stream:
                    ids.append(r.headers["x-tradeoff-request-id"])
        assert c.post(CHAT, json=valid(CHAT)).status_code == 200
    records = assert_stopped_cleanly(server)
    for (model, status), count in sent.items():
        rows = records[records["config"] == model]
        assert len(rows) == count, (model, records.to_dict("records"))
        for error, extra in zip(rows["error"], rows["extra"]):
            assert isinstance(error, str) and error, (model, error)
            assert extra["http_status"] == status, (model, extra)
            if status == 504:
                assert "timeout" in error, error
    assert set(ids) <= set(records["item_id"]) and len(set(ids)) == len(ids), ids
    ok = records[records["config"] == "fast"]
    assert len(ok) == 1 and ok["error"].isna().all()


def test_an_upstreams_reasoning_reaches_a_chat_stream_as_reasoning(tmp_path: Path):
    """An upstream that streams its thinking in `reasoning_content` (vLLM's reasoning parsers):
    serve dropped it, so its client's first token came after the thinking while the record,
    the summary and /metrics gave the time of the first reasoning token (0.20 s where the client
    waited 0.71 s). The reasoning goes on in the same field; the answer is the content alone."""
    from conftest import fast_server, serve_process
    from serve_support import streamed_text

    delay_s, tokens = 0.05, 10  # the upstream thinks for 5 tokens, then answers 5
    with contextlib.contextmanager(fast_server)("--delay-ms", str(int(delay_s * 1e3))) as url:
        spec = tmp_path / "spec.yaml"
        spec.write_text(f'models:\n  thinker: "openai:{url}#reasoning"\ntasks: [arith]\n')
        with (
            serve_process("--spec", str(spec), "--out", str(tmp_path / "run")) as server,
            httpx.Client(base_url=server.root, timeout=PATIENCE_S) as c,
        ):
            ask = {"model": "thinker", "messages": [{"role": "user", "content": "6*7?"}]}
            t0 = time.perf_counter()
            with c.stream("POST", CHAT, json={**ask, "stream": True, "max_tokens": tokens}) as r:
                assert r.status_code == 200
                first_s, body = None, ""
                for text in r.iter_text():
                    if first_s is None and "reasoning_content" in text:
                        first_s = time.perf_counter() - t0
                    body += text
            payloads = sse_events(body)
            deltas = [
                json.loads(p)["choices"][0]["delta"]
                for p in payloads[:-1]
                if json.loads(p)["choices"]
            ]
            thought = "".join(d.get("reasoning_content", "") for d in deltas)
            assert thought == "The answer is 42.", deltas
            assert streamed_text(payloads) == " Next we count again,", deltas
            assert first_s is not None
            ttft_s = json.loads(payloads[-2])["tradeoff"]["ttft_s"]
            assert ttft_s <= first_s, (ttft_s, first_s)  # the client saw it no earlier
