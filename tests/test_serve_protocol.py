"""What `tradeoff serve` promises about HTTP itself, checked on the wire against the real server:
pipelined requests answered in order, `Expect: 100-continue`, clients that hang up, draining on
SIGTERM, and a client that goes away cancelling its generation (on the bundled llama.cpp model
and on an `openai:` upstream)."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx
import pytest
from conftest import Served, serve_process
from serve_support import (
    CHAT,
    COMPLETIONS,
    MAX_BODY,
    MAX_TOKENS,
    PATIENCE_S,
    RawConnection,
    assert_answer,
    assert_stopped_cleanly,
    dumps,
    head,
    in_flight,
    metric,
    request,
    running,
    sse_events,
    streamed_text,
    valid,
    wait_for,
)

# --- pipelining and 100-continue ------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_each_whole(canned_server: Served):
    """A streamed request, a whole one, and one that expects 100-continue, written in one send:
    three complete answers in that order; a 100 Continue only before the third."""
    usage = {"stream_options": {"include_usage": True}}
    streamed = request(dumps(valid(CHAT, max_tokens=40, stream=True, **usage)))
    whole = request(dumps(valid(COMPLETIONS, max_tokens=5)), path=COMPLETIONS)
    expecting = request(dumps(valid(CHAT, max_tokens=3)), "Expect: 100-continue")
    with RawConnection(canned_server.root) as conn:
        conn.send(streamed + whole + expecting)
        first, second, third = conn.answer(), conn.answer(), conn.answer()

    assert (first.status, first.interim) == (200, []), first
    assert first.headers["content-type"].startswith("text/event-stream")
    payloads = sse_events(first.body.decode())
    assert json.loads(payloads[-2])["usage"]["completion_tokens"] == 40
    assert streamed_text(payloads)

    assert (second.status, second.interim) == (200, []), second
    assert second.json()["object"] == "text_completion"
    assert second.json()["usage"]["completion_tokens"] == 5

    assert third.status == 200 and third.interim in ([], [100]), third
    assert third.json()["object"] == "chat.completion"
    assert third.json()["usage"]["completion_tokens"] == 3


def test_expect_100_continue(canned_server: Served):
    """The client sends the head alone, waits for 100 Continue, then the body. Refused
    requests (a declared body over the limit, no API key) get their answer and no 100."""
    body = dumps(valid(CHAT))
    with RawConnection(canned_server.root) as conn:
        conn.send(head(f"Content-Length: {len(body)}", "Expect: 100-continue"))
        assert conn.interim() == 100
        conn.send(body)
        answer = conn.answer()
        assert (answer.status, answer.interim) == (200, []), answer
        assert answer.json()["choices"][0]["message"]["content"]

        # on the same connection: a body that would be too large is refused before it is sent
        conn.send(head(f"Content-Length: {MAX_BODY + 1}", "Expect: 100-continue"))
        answer = conn.answer()
        assert (answer.status, answer.interim) == (413, []), answer
        assert answer.json()["error"]["code"] == "too_large"
        conn.wait_closed()

    anonymous = head(f"Content-Length: {len(body)}", "Expect: 100-continue")
    anonymous = anonymous.replace(b"Authorization:", b"X-Not-Authorization:")
    with RawConnection(canned_server.root) as conn:
        conn.send(anonymous)
        answer = conn.answer()
        assert (answer.status, answer.interim) == (401, []), answer


# --- clients that hang up -------------------------------------------------------------------


def test_clients_that_hang_up_do_no_harm(canned_server: Served, client: httpx.Client):
    """Clients that go away mid-body, while waiting, half-closed, or mid-stream: the slots come
    back and the server goes on answering."""
    root = canned_server.root
    with RawConnection(root) as conn:  # mid-body
        conn.send(request(dumps(valid(CHAT)))[:-20])
    with RawConnection(root) as conn:  # waiting for an upstream that never answers
        conn.send(request(dumps(valid(CHAT, "slow", stream=True))))
    with RawConnection(root) as conn:  # half-closed while waiting
        conn.send(request(dumps(valid(CHAT, "slow"))))
        conn.sock.shutdown(socket.SHUT_WR)
    with RawConnection(root) as conn:  # mid-stream
        conn.send(request(dumps(valid(CHAT, max_tokens=MAX_TOKENS, stream=True))))
        assert conn.sock.recv(100)
    assert_answer(client.post(CHAT, json=valid(CHAT)), CHAT, stream=False)
    wait_for(lambda: in_flight(root) == 0, "every hung-up request gave back its slot")
    assert_answer(client.post(CHAT, json=valid(CHAT, stream=True)), CHAT, stream=True)


# --- draining -------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish_then_exits(tmp_path: Path):
    """SIGTERM while an answer streams (40 tokens, 50 ms apart): the answer completes, a new
    request is refused, the server exits 0, and what it stored is what it served."""
    with running(tmp_path, upstream=("--delay-ms", "50")) as server:
        with (
            RawConnection(server.root) as idle,
            httpx.Client(timeout=PATIENCE_S) as c,
            c.stream(
                "POST", f"{server.url}/chat/completions",
                json=valid(CHAT, max_tokens=40, stream=True),
            ) as r,
        ):  # fmt: skip
            chunks = r.iter_bytes()
            body = next(chunks)  # the answer has started
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: any("stopping" in line for line in server.lines), "draining")
            # a connection opened before: its request is refused, or it is closed unanswered
            try:
                idle.send(request(dumps(valid(CHAT))))
                late = idle.answer_or_close()
            except (BrokenPipeError, ConnectionResetError):
                late = None
            if late is not None:
                assert late.status == 503, late
                assert "shutting down" in late.json()["error"]["message"]
            body += b"".join(chunks)
        assert r.status_code == 200
        text = streamed_text(sse_events(body.decode()))
        assert server.proc.wait(PATIENCE_S) == 0
        records = assert_stopped_cleanly(server)
    assert any("finishing 1 request(s) in flight" in line for line in server.lines), server.lines
    assert "stopped; 1 request(s) served, 1 stored" in server.lines[-1]
    (record,) = records.to_dict("records")
    assert record["output"] == text and record["output_tokens"] == 40
    assert record["error"] is None and record["extra"]["http_status"] == 200


# --- a client that goes away cancels its generation -----------------------------------------


ASKED = 400  # tokens asked for: far more than are made before the client is gone
DISCONNECTED = "client disconnected"


def first_chunk(conn: RawConnection) -> None:
    """Read until the first chunk of a streamed answer has come."""
    received = b""
    while b"data: " not in received:
        data = conn.sock.recv(65536)
        assert data, received
        received += data
    assert received.startswith(b"HTTP/1.1 200"), received


def disconnects(root: str) -> float:
    return metric(root, "tradeoff_client_disconnects_total")


def leave_early(root: str, body: dict) -> None:
    """Two clients that go away: one after the first chunk of its streamed answer, one right
    after sending its request for a whole answer. Returns once both are accounted for."""
    before = disconnects(root)
    with RawConnection(root) as conn:
        conn.send(request(dumps({**body, "stream": True})))
        first_chunk(conn)
    wait_for(lambda: disconnects(root) == before + 1, "the first counted")
    with RawConnection(root) as conn:
        conn.send(request(dumps(body)))
    wait_for(lambda: disconnects(root) == before + 2, "the second counted")


def assert_cut_short(records, streamed: list[bool]) -> None:
    """The clients that left (streamed or not) are records that say so, with far fewer tokens
    than asked."""
    gone = records[records["error"] == DISCONNECTED]
    assert sorted(extra["stream"] for extra in gone["extra"]) == sorted(streamed), records
    for tokens, extra in zip(gone["output_tokens"], gone["extra"]):
        assert extra["http_status"] == 499, extra
        assert extra["max_tokens"] == ASKED
        assert tokens < ASKED / 4, (tokens, extra)


@pytest.mark.slow
def test_a_client_that_goes_away_frees_the_bundled_model(tmp_path: Path):
    """On the bundled llama.cpp model (the demo spec's smollm2-135m): the generation stops at
    its next token, so the model is free for the next request at once."""
    model = "smollm2-135m"
    ask = [{"role": "user", "content": "Write a very long story about a ship."}]
    story = {"model": model, "messages": ask, "max_tokens": ASKED}
    with serve_process("--out", str(tmp_path / "run"), "--config", model) as server:
        leave_early(server.root, story)
        r = httpx.post(
            f"{server.url}/chat/completions", json={**story, "max_tokens": 5}, timeout=PATIENCE_S
        )
        assert_answer(r, CHAT, stream=False)
        assert metric(server.root, "tradeoff_client_disconnects_total", model=model) == 2
        records = assert_stopped_cleanly(server)
    assert_cut_short(records, [False, True])
    assert len(records) == 3


def test_a_client_that_goes_away_stops_an_openai_upstream(tmp_path: Path):
    """Behind an `openai:` upstream (a token every 50 ms: 20 s for all of them), the call stops
    at the upstream's next chunk; also when the client had pipelined another request behind the
    one being answered."""
    with running(tmp_path, upstream=("--delay-ms", "50")) as server:
        body = valid(CHAT, max_tokens=ASKED)
        leave_early(server.root, body)
        with RawConnection(server.root) as conn:
            conn.send(request(dumps({**body, "stream": True})) + request(dumps(valid(CHAT))))
            first_chunk(conn)
        wait_for(lambda: disconnects(server.root) == 3, "the pipelining client counted")
        records = assert_stopped_cleanly(server)
    assert_cut_short(records, [False, True, True])
    assert len(records) == 3  # the request queued behind never started: nothing to store
