"""`tradeoff serve`'s limits: the body size (413, also while the body is still arriving),
requests in flight (429), slow and idle clients (--request-timeout: the connection closed, or
408; kept-alive connections closed after KEEP_ALIVE_S), open connections (--max-connections:
503) and the model's context (400, on the bundled models). Raw sockets play the clients that
misbehave."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import Served, serve_process
from serve_support import (
    CHAT,
    COMPLETIONS,
    ENDPOINTS,
    MAX_BODY,
    MAX_CONCURRENCY,
    PATIENCE_S,
    RawConnection,
    assert_answer,
    assert_error,
    assert_stopped_cleanly,
    dumps,
    head,
    in_flight,
    metric,
    post,
    request,
    running,
    valid,
    wait_for,
)

from tradeoff.serve.server import KEEP_ALIVE_S

# --- 413 ------------------------------------------------------------------------------------


def padded(endpoint: str, size: int) -> bytes:
    """A valid request, padded with whitespace to exactly `size` bytes."""
    raw = dumps(valid(endpoint))
    assert len(raw) <= size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_body_at_the_limit_is_served_one_byte_more_is_413(client: httpx.Client, endpoint: str):
    assert_answer(post(client, endpoint, padded(endpoint, MAX_BODY)), endpoint, stream=False)
    error = assert_error(post(client, endpoint, padded(endpoint, MAX_BODY + 1)), 413)
    assert error["code"] == "too_large"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("size", [MAX_BODY + 1, 5 * MAX_BODY, 64 * MAX_BODY])
def test_chunked_body_over_the_limit_is_413(client: httpx.Client, endpoint: str, size: int):
    raw = padded(endpoint, size)

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    r = client.post(endpoint, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413)
    # and a chunked body within the limit is read whole and served
    small = padded(endpoint, MAX_BODY)
    r = client.post(endpoint, content=iter([small[:100], small[100:]]))
    assert_answer(r, endpoint, stream=False)


def test_declared_content_length_over_the_limit_is_413_before_the_body(canned_server: Served):
    """A client that declares a huge body gets 413 at once, without sending it, and the
    connection closes."""
    with RawConnection(canned_server.root) as conn:
        conn.send(head(f"Content-Length: {10**12}"))
        answer = conn.answer()
        assert answer.status == 413, answer
        assert answer.json()["error"]["code"] == "too_large"
        assert answer.headers["connection"] == "close"
        conn.wait_closed()


def test_a_chunked_body_over_the_limit_is_refused_while_it_is_still_arriving(
    canned_server: Served,
):
    """The limit is enforced while reading: the server answers 413 and closes while the client
    is still writing a body it could never take whole."""
    endless = 64 << 20  # what the client would send if nobody stopped it
    chunk = b"%x\r\n%s\r\n" % (1024, b" " * 1024)
    with RawConnection(canned_server.root) as conn:
        conn.send(head("Transfer-Encoding: chunked"))
        sent = 0
        while sent < endless and not conn.readable():
            try:
                conn.send(chunk)
            except (BrokenPipeError, ConnectionResetError):  # closed while the client wrote
                break
            sent += 1024
        assert sent < endless, "the server read the whole body before it answered"
        answer = conn.answer()
    assert answer.status == 413, answer
    assert answer.json()["error"]["code"] == "too_large"
    assert answer.headers["connection"] == "close"


# --- 429 ------------------------------------------------------------------------------------


def test_beyond_max_concurrency_is_429_with_retry_after(
    canned_server: Served, client: httpx.Client
):
    """Requests whose bodies are still arriving hold every slot (until their clients go away)."""
    body = dumps(valid(CHAT))
    holders = [RawConnection(canned_server.root) for _ in range(MAX_CONCURRENCY)]
    try:
        for conn in holders:
            conn.send(head(f"Content-Length: {len(body)}") + body[:10])
        wait_for(lambda: in_flight(canned_server.root) == MAX_CONCURRENCY, "the slots taken")
        for endpoint in ENDPOINTS:
            for stream in (False, True):
                r = client.post(endpoint, json=valid(endpoint, stream=stream))
                error = assert_error(r, 429)
                assert error["type"] == "rate_limit_error"
                assert int(r.headers["retry-after"]) >= 0, r.headers
        # 429 is decided before the body is read: even a huge one gets it
        assert_error(post(client, CHAT, b"x" * (MAX_BODY * 4)), 429)
        # /health and /metrics still answer while every slot is taken
        assert client.get("/health").status_code == 200
    finally:
        for conn in holders:
            conn.close()
    # the slots are given back: served again
    wait_for(lambda: in_flight(canned_server.root) == 0, "the slots given back")
    assert_answer(client.post(CHAT, json=valid(CHAT)), CHAT, stream=False)


# --- slow clients ---------------------------------------------------------------------------


REQUEST_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server that gives clients REQUEST_TIMEOUT_S to send a request's head, and its body."""
    directory = tmp_path_factory.mktemp("impatient")
    with running(directory, "--request-timeout", str(REQUEST_TIMEOUT_S)) as served:
        yield served
        # the slow clients did no harm
        r = httpx.post(f"{served.url}/chat/completions", json=valid(CHAT), timeout=PATIENCE_S)
        assert_answer(r, CHAT, stream=False)
        assert_stopped_cleanly(served)


def test_a_connection_that_sends_nothing_is_closed(impatient: Served):
    with RawConnection(impatient.root) as conn:
        assert conn.wait_closed() >= 0.9 * REQUEST_TIMEOUT_S


def test_a_head_trickled_in_byte_by_byte_is_closed(impatient: Served):
    """Each byte comes well within the timeout, the whole head never does."""
    trickle = head("X-Padding: " + "x" * 10_000)
    with RawConnection(impatient.root) as conn:
        for i in range(len(trickle)):
            try:
                conn.send(trickle[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            # the pace of the trickle: a byte every 0.1 s, or sooner the server's close
            if conn.readable(wait_s=0.1):
                break
        assert i < len(trickle) - 1, "the whole head was sent"
        assert conn.wait_closed() >= 0.9 * REQUEST_TIMEOUT_S


def test_a_body_that_stops_arriving_is_408(impatient: Served):
    body = dumps(valid(CHAT))
    with RawConnection(impatient.root) as conn:
        conn.send(request(body)[:-10])
        answer = conn.answer()
        assert answer.status == 408, answer
        error = answer.json()["error"]
        assert error["code"] == "timeout" and "--request-timeout" in error["message"], error
        assert error["type"] == "invalid_request_error", error  # the client's, not the server's
        assert answer.headers["connection"] == "close"
        assert conn.wait_closed() >= 0.9 * REQUEST_TIMEOUT_S


@pytest.mark.slow
def test_a_kept_alive_connection_idle_after_its_answer_is_closed(canned_server: Served):
    with RawConnection(canned_server.root) as conn:
        conn.send(request(dumps(valid(CHAT))))
        assert conn.answer().status == 200
        answered = time.monotonic()
        conn.wait_closed()
        assert time.monotonic() - answered >= 0.9 * KEEP_ALIVE_S


# --- open connections -----------------------------------------------------------------------


def test_beyond_max_connections_a_completion_is_503(tmp_path: Path):
    """With 4 connections open (idle), a completion request on one more gets 503, and one on
    any of the 4 is served (it was refused too: the limit counted every open connection); once
    they close, requests are served again."""
    cap = 4
    # a long --request-timeout: the idle connections stay open for as long as the test needs
    with running(tmp_path, "--max-connections", str(cap), "--request-timeout", "600") as server:
        idle = [RawConnection(server.root) for _ in range(cap)]

        def refused() -> httpx.Response | None:
            r = httpx.post(f"{server.url}/chat/completions", json=valid(CHAT), timeout=PATIENCE_S)
            return r if r.status_code == 503 else None

        r = wait_for(refused, "a 503 with the connections open")
        error = assert_error(r, 503)
        assert error["code"] == "too_many_connections", error
        assert r.headers["connection"] == "close"
        # only completions are refused: /health still answers
        assert httpx.get(f"{server.root}/health", timeout=PATIENCE_S).status_code == 200
        within = RawConnection(server.root)  # one more, open while the 4 are
        for conn in (*idle, within):
            conn.send(request(dumps(valid(CHAT))))
        assert [conn.answer().status for conn in idle] == [200] * cap
        assert within.answer().status == 503
        within.close()
        for conn in idle:
            conn.close()

        def served() -> bool:
            r = httpx.post(f"{server.url}/chat/completions", json=valid(CHAT), timeout=PATIENCE_S)
            return r.status_code == 200

        wait_for(served, "a request served once the connections closed")
        assert_stopped_cleanly(server)


def test_a_forwarded_client_holds_no_connection_slot_after_it_leaves(tmp_path: Path):
    """uvicorn rewrites a request's client to the address X-Forwarded-For names (a proxy on
    loopback): counted by it, each request behind a proxy took a slot that its connection's
    close never gave back, and the third was refused with nothing open."""
    with running(tmp_path, "--max-connections", "2") as server:
        for i in range(4):
            with httpx.Client(timeout=PATIENCE_S) as client:
                forwarded = {"x-forwarded-for": f"10.0.0.{i}"}
                r = client.post(
                    f"{server.url}/chat/completions", json=valid(CHAT), headers=forwarded
                )
            assert r.status_code == 200, (i, r.text)
        assert_stopped_cleanly(server)


# --- the model's context (400) ----------------------------------------------------------------


SINGLE = "smollm2-135m"
CASCADE = "cascade-smollm2-135m-gemma3-270m-logprob0.5"
CONTEXT = 4096  # the bundled models' context (llama.cpp's n_ctx); also --max-tokens-limit's default
# OpenAI's words, which clients and libraries look for.
TOO_LONG = re.compile(
    r"This model's maximum context length is (\d+) tokens\. However, you requested (\d+) tokens "
    r"\((\d+) in the (messages|prompt), (\d+) in the completion\)\. Please reduce the length of "
    r"the (messages|prompt) or completion\."
)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The bundled llama.cpp models behind `tradeoff serve`, alone and in a cascade (gemma in
    completion form), at the default limits. Requests refused for their length are not stored:
    every record is of a request a model ran for (answered, or let go by its client)."""
    out = tmp_path_factory.mktemp("context") / "run"
    with serve_process("--config", SINGLE, "--config", CASCADE, "--out", str(out)) as served:
        yield served
        records = assert_stopped_cleanly(served)
        assert len(records) and {e["http_status"] for e in records["extra"]} <= {200, 499}


def too_long(r: httpx.Response, endpoint: str) -> tuple[int, int]:
    """A 400 context_length_exceeded, in OpenAI's words: (prompt tokens, completion tokens)."""
    error = assert_error(r, 400)
    what = "messages" if endpoint == CHAT else "prompt"
    assert error["type"] == "invalid_request_error", error
    assert error["code"] == "context_length_exceeded", error
    assert error["param"] == what, error
    match = TOO_LONG.fullmatch(error["message"])
    assert match, error["message"]
    context, requested, prompt, where, completion, again = match.groups()
    assert where == again == what, error["message"]
    assert int(context) == CONTEXT
    assert int(requested) == int(prompt) + int(completion) > CONTEXT
    return int(prompt), int(completion)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_of_the_whole_context_is_400_with_the_numbers(
    local: Served, endpoint: str, stream: bool
):
    """max_tokens 4096 is within --max-tokens-limit, but no prompt fits beside it: 400 saying
    how many tokens of each, not the model's failure (502, which clients retry)."""
    with httpx.Client(base_url=local.root, timeout=PATIENCE_S) as client:
        fits = client.post(endpoint, json=valid(endpoint, SINGLE, max_tokens=4))
        assert_answer(fits, endpoint, stream=False)
        prompt_tokens = fits.json()["usage"]["prompt_tokens"]
        r = client.post(endpoint, json=valid(endpoint, SINGLE, max_tokens=CONTEXT, stream=stream))
        assert too_long(r, endpoint) == (prompt_tokens, CONTEXT)
        # one token over is refused, and the numbers say so
        over = CONTEXT - prompt_tokens + 1
        r = client.post(endpoint, json=valid(endpoint, SINGLE, max_tokens=over, stream=stream))
        assert too_long(r, endpoint) == (prompt_tokens, over)


def test_a_request_naming_no_max_tokens_is_not_told_it_asked_for_the_configurations(tmp_path):
    """The configuration's max_tokens past a small context: the 400 said "you requested 202
    tokens (2 in the prompt, 200 in the completion)" to a request that named no max_tokens."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        'models: {small: "smollm2-135m?ctx=64"}\nsampling: {max_tokens: 200}\n'
        "configs: [{strategy: single, model: small, name: s}]\n"
    )
    with serve_process("--spec", str(spec), "--out", str(tmp_path / "run")) as served:
        body = {k: v for k, v in valid(COMPLETIONS, "s").items() if k != "max_tokens"}
        r = httpx.post(served.root + COMPLETIONS, json=body, timeout=PATIENCE_S)
    error = assert_error(r, 400)
    assert error["code"] == "context_length_exceeded" and "you requested" not in error["message"]
    said = "200 in the completion: configuration 's' answers with up to 200 where a request"
    assert said in error["message"] and "name a smaller max_tokens" in error["message"], error


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_prompt_and_max_tokens_of_exactly_the_context_are_served(local: Served, endpoint: str):
    """The answer starts (its stream is then let go: the model stops at its next token)."""
    with httpx.Client(base_url=local.root, timeout=PATIENCE_S) as client:
        fits = client.post(endpoint, json=valid(endpoint, SINGLE, max_tokens=4))
        assert_answer(fits, endpoint, stream=False)
        exactly = CONTEXT - fits.json()["usage"]["prompt_tokens"]
        request = valid(endpoint, SINGLE, max_tokens=exactly, stream=True)
        with client.stream("POST", endpoint, json=request) as r:
            assert r.status_code == 200
            assert next(r.iter_lines()).startswith("data: {")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("model", [SINGLE, CASCADE])
def test_a_480_kb_prompt_is_400_not_502(local: Served, endpoint: str, model: str):
    """Far beyond the context with a small max_tokens, for every model a configuration may
    call."""
    text = "The quick brown fox jumps over the lazy dog. " * 10_700  # 481.5 kB
    prompt = (
        {"messages": [{"role": "user", "content": text}]} if endpoint == CHAT else {"prompt": text}
    )
    request = valid(endpoint, model, max_tokens=16, **prompt)
    with httpx.Client(base_url=local.root, timeout=PATIENCE_S) as client:
        prompt, completion = too_long(client.post(endpoint, json=request), endpoint)
        assert prompt > 50_000 and completion == 16
        assert_answer(client.post(endpoint, json=valid(endpoint, model)), endpoint, stream=False)


@pytest.mark.parametrize("model", [SINGLE, CASCADE])
def test_an_empty_prompt_a_model_cannot_start_from_is_400_not_502(local: Served, model: str):
    """SmolLM2 adds no beginning-of-sequence token, so "" is no token at all for it: the client
    is told, before anything runs (llama.cpp would fail an assertion: a 502 blaming the model)."""
    with httpx.Client(base_url=local.root, timeout=PATIENCE_S) as client:
        for stream in (False, True):
            body = valid(COMPLETIONS, model, prompt="", max_tokens=2, stream=stream)
            error = assert_error(client.post(COMPLETIONS, json=body), 400)
            assert error["type"] == "invalid_request_error" and error["param"] == "prompt", error
            assert "the prompt is empty" in error["message"] and "smollm2" in error["message"]


def test_every_get_endpoint_answered_is_counted_by_endpoint(local: Served):
    """tradeoff_requests_total counts the GET endpoints' 200s too, each under its own name (it
    counted completions and refusals only); a scrape counts itself."""
    names = ["models", "model", "health", "openapi", "metrics"]
    before = {name: metric(local.root, "tradeoff_requests_total", endpoint=name) for name in names}
    with httpx.Client(base_url=local.root, timeout=PATIENCE_S) as client:
        for path in ["/v1/models", f"/v1/models/{SINGLE}", "/health", "/openapi.json"]:
            assert client.get(path).status_code == 200, path
    after = {name: metric(local.root, "tradeoff_requests_total", endpoint=name, code="200")
             for name in names}  # fmt: skip
    # each once; /metrics: the scrapes between the two reads of its count, the second one too
    assert {name: after[name] - before[name] for name in names} == {
        "models": 1, "model": 1, "health": 1, "openapi": 1, "metrics": len(names)
    }  # fmt: skip


def test_an_openai_client_is_told_once_and_nothing_is_stored(local: Served):
    """The official client does not retry a 400 (it retries 5xx twice); the refusal is counted
    by status in /metrics, as other refusals, and is no record."""
    served = metric(local.root, "tradeoff_served_total")
    refused = metric(local.root, "tradeoff_requests_total", code="400")
    with (
        openai.OpenAI(base_url=local.url, api_key="x", timeout=PATIENCE_S) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.chat.completions.create(
            model=SINGLE, messages=[{"role": "user", "content": "Hi"}], max_tokens=CONTEXT
        )
    assert caught.value.code == "context_length_exceeded"
    assert metric(local.root, "tradeoff_requests_total", code="400") == refused + 1
    assert metric(local.root, "tradeoff_rejected_total", reason="400") >= 1
    assert metric(local.root, "tradeoff_served_total") == served
