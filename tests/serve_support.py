"""What the test_serve_* files share: `tradeoff serve` in front of benchmarks/fast_server.py (a
canned upstream whose magic model names fail on purpose, so no model runs), valid requests,
checks of OpenAI's error shape and of SSE bodies, /metrics read as Prometheus text, and raw
connections for clients that misbehave, their answers parsed strictly by h11."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import h11
import httpx
import pandas as pd
from conftest import Served, fast_server, serve_process
from prometheus_client.parser import text_string_to_metric_families

from tradeoff.store import Store

KEY = "sekrit"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 4096
MAX_TOKENS = 256
MAX_CONCURRENCY = 4
LIMIT_FLAGS = (
    "--api-key", KEY,
    "--max-body-bytes", str(MAX_BODY),
    "--max-tokens-limit", str(MAX_TOKENS),
    "--max-concurrency", str(MAX_CONCURRENCY),
)  # fmt: skip
# What the spec serves, by the upstream's model name (see benchmarks/fast_server.py).
UPSTREAM_MODELS = {
    "fast": "fast",
    "broken": "fail-500",
    "slow": "hang",
    "dropper": "fail-drop",
    "garbage": "fail-garbage",
    "llamacpp": "fail-error-field",
    "refuser": "fail-400",  # 400 context_length_exceeded: passed on as it is, not a 502
}
SERVED = list(UPSTREAM_MODELS)
FAILING = {
    "broken",
    "dropper",
    "garbage",
    "llamacpp",
}  # 502 (or, streamed after the start, an error event)
TIMING_OUT = {"slow"}  # 504 after the spec's timeout_s
UPSTREAM_TIMEOUT_S = 1
ENDPOINTS = ["/v1/chat/completions", "/v1/completions"]
CHAT, COMPLETIONS = ENDPOINTS
MESSAGES = [{"role": "user", "content": "What is 6*7?"}]
# An upper bound on waiting for what normally takes milliseconds: a CPU-heavy process beside
# the suite makes everything several times slower.
PATIENCE_S = 60.0

T = TypeVar("T")


def valid(endpoint: str, model: str = "fast", **fields: Any) -> dict[str, Any]:
    """A request that is valid for `endpoint` (a short answer), with `fields` set on top."""
    base: dict[str, Any] = {"model": model, "max_tokens": 4}
    if endpoint == CHAT:
        base["messages"] = [dict(m) for m in MESSAGES]
    else:
        base["prompt"] = "6*7="
    return {**base, **fields}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def post(client: httpx.Client, endpoint: str, raw: bytes, **kw: Any) -> httpx.Response:
    return client.post(endpoint, content=raw, headers={"content-type": "application/json"}, **kw)


# --- servers ----------------------------------------------------------------------------------


def write_spec(directory: Path, url: str) -> Path:
    """A spec serving UPSTREAM_MODELS from the upstream at `url`."""
    spec = directory / "spec.yaml"
    lines = ["models:"] + [
        f'  {alias}: "openai:{url}#{name}"' for alias, name in UPSTREAM_MODELS.items()
    ]
    spec.write_text("\n".join([*lines, "tasks: [arith]", f"timeout_s: {UPSTREAM_TIMEOUT_S}", ""]))
    return spec


@contextlib.contextmanager
def running(directory: Path, *flags: str, upstream: tuple[str, ...] = ()) -> Iterator[Served]:
    """`tradeoff serve FLAGS` (records to DIRECTORY/run) in front of benchmarks/fast_server.py,
    started with the flags `upstream`."""
    with contextlib.contextmanager(fast_server)(*upstream) as url:
        spec = write_spec(directory, url)
        out = directory / "run"
        with serve_process("--spec", str(spec), "--out", str(out), *flags) as served:
            yield served


def stored(out: Path) -> pd.DataFrame:
    """The records in the run store `out`, `extra` parsed."""
    store = Store.open(out)
    try:
        records = store.records()
    finally:
        store.close()
    records["extra"] = [json.loads(e) for e in records["extra"]]
    return records


def assert_stopped_cleanly(served: Served) -> pd.DataFrame:
    """Stops `served`: it exits 0 without a traceback, its last line says it stored every request
    it served, and every record of a 5xx says what failed. Its records."""
    assert served.stop() == 0, served.lines
    text = "\n".join(served.lines)
    assert "Traceback" not in text and "Exception in ASGI" not in text, text
    match = re.search(r"stopped; (\d+) request\(s\) served, (\d+) stored", served.lines[-1])
    assert match and match.group(1) == match.group(2), served.lines[-3:]
    assert served.out is not None
    records = stored(served.out)
    assert len(records) == int(match.group(2))
    for error, extra in zip(records["error"], records["extra"]):
        if extra["http_status"] >= 500:
            assert isinstance(error, str) and error, extra
    return records


def wait_for(condition: Callable[[], T], what: str, timeout: float = PATIENCE_S) -> T:
    """Poll `condition` until it returns something true, and return that; fail after `timeout`
    seconds saying `what` never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.02)


def metric(root: str, name: str, **labels: str) -> float:
    """The sum of the server's /metrics samples called `name` whose labels include `labels`."""
    text = httpx.get(f"{root}/metrics", timeout=PATIENCE_S).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def in_flight(root: str) -> float:
    return metric(root, "tradeoff_in_flight")


# --- checks -----------------------------------------------------------------------------------


def assert_error_shape(r: httpx.Response) -> dict[str, Any]:
    """OpenAI's error body: {"error": {"message": str, "type": str, "param": ..., "code": ...}}."""
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert "Traceback" not in r.text, r.text
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str) and error["type"], body
    assert error["param"] is None or isinstance(error["param"], str), body
    assert error["code"] is None or isinstance(error["code"], str), body
    return error


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    return assert_error_shape(r)


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of a whole SSE body, checked: each event is one data line, every
    payload but the last is JSON, and the last is [DONE]."""
    assert text.endswith("data: [DONE]\n\n"), text[-500:]
    events = [e for e in text.split("\n\n") if e]
    payloads = []
    for one in events:
        assert one.startswith("data: "), one
        payloads.append(one.removeprefix("data: "))
    assert payloads[-1] == "[DONE]"
    for payload in payloads[:-1]:
        assert isinstance(json.loads(payload), dict), payload
    return payloads


def streamed_text(payloads: list[str]) -> str:
    """The answer's text in the payloads of a chat or completion stream."""
    text = ""
    for payload in payloads[:-1]:
        for choice in json.loads(payload).get("choices", []):
            text += choice.get("delta", {}).get("content") or choice.get("text") or ""
    return text


def assert_answer(r: httpx.Response, endpoint: str, stream: bool) -> None:
    """A 200: a whole JSON answer, or an SSE stream that ends with data: [DONE]."""
    assert r.status_code == 200, r.text
    assert "Traceback" not in r.text
    if stream:
        assert r.headers["content-type"].startswith("text/event-stream"), r.headers
        sse_events(r.text)
        return
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["object"] == ("chat.completion" if endpoint == CHAT else "text_completion")
    assert len(body["choices"]) == 1, body
    assert body["usage"]["completion_tokens"] >= 0, body


# --- clients that write their own bytes -------------------------------------------------------


def head(*fields: str, path: str = CHAT) -> bytes:
    """The head of an authorized POST to `path`, with `fields` ("Name: value") added."""
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {KEY}",
             "Content-Type: application/json", *fields]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request(body: bytes, *fields: str, path: str = CHAT) -> bytes:
    """A whole POST to `path` with `body` (its Content-Length) and `fields`."""
    return head(f"Content-Length: {len(body)}", *fields, path=path) + body


@dataclass
class Answer:
    """One HTTP response: the interim (1xx) statuses before it, its status, headers and body."""

    interim: list[int]
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """A connection whose requests the test writes byte for byte (to pipeline them, or to
    misbehave); the answers are read in order and parsed strictly by h11, so a stray byte
    between or inside them fails the test."""

    def __init__(self, root: str, timeout: float = PATIENCE_S):
        host, port = root.removeprefix("http://").rsplit(":", 1)
        self.opened = time.monotonic()
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._http = h11.Connection(h11.CLIENT)
        self._told = False  # h11 knows of the request being answered
        self._closed = False  # the server has closed the connection
        self._received = 0  # bytes, all told

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readable(self, wait_s: float = 0.0) -> bool:
        """Whether the server has sent something (or closed), waiting at most `wait_s`."""
        return bool(select.select([self.sock], [], [], wait_s)[0])

    def interim(self) -> int:
        """The status of an interim (1xx) response, which must come next."""
        event = self._next()
        assert isinstance(event, h11.InformationalResponse), event
        return event.status_code

    def answer(self) -> Answer:
        """The answer to the next request written on this connection."""
        answer = self.answer_or_close()
        assert answer is not None, "the connection closed before an answer"
        return answer

    def answer_or_close(self) -> Answer | None:
        """The answer to the next request written on this connection, or None if the server
        closes the connection without one."""
        interim: list[int] = []
        response: h11.Response | None = None
        body = bytearray()
        received = self._received
        while True:
            try:
                event = self._next()
            except h11.RemoteProtocolError:
                if self._closed and self._received == received:
                    return None  # h11 calls a close before any answer a protocol error
                raise
            if isinstance(event, h11.InformationalResponse):
                interim.append(event.status_code)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"the connection ended in an answer: {event!r}")
        assert response is not None
        self._told = False
        if self._http.our_state is h11.DONE and self._http.their_state is h11.DONE:
            self._http.start_next_cycle()
        headers = {k.decode(): v.decode("latin-1") for k, v in response.headers}
        return Answer(interim, response.status_code, headers, bytes(body))

    def _next(self) -> Any:
        if not self._told:
            # h11 reads answers only to requests it knows of: tell it of the one the test wrote.
            self._http.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
            self._http.send(h11.EndOfMessage())
            self._told = True
        while True:
            event = self._http.next_event()
            if event is not h11.NEED_DATA:
                return event
            self._http.receive_data(self._recv())

    def wait_closed(self) -> float:
        """Wait for the server to close the connection, sending nothing first; the seconds since
        the connection opened."""
        data = self._recv()
        assert data == b"", data[:300]
        return time.monotonic() - self.opened

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:  # closed while bytes of ours were unread: closed all the same
            data = b""
        self._closed = not data
        self._received += len(data)
        return data


def left_behind_a_prefill(served: Served, ask: dict[str, Any]) -> tuple[dict, dict]:
    """Send `ask` (a completion) while model `small` prefills a long prompt, leave it after
    0.3 s, and stop the server cleanly: (the record of the request left, the long one's)."""
    long = {"model": "small", "prompt": "the cat sat on the mat " * 300, "max_tokens": 2}
    first = threading.Thread(
        target=lambda: httpx.post(f"{served.url}/completions", json=long, timeout=300)
    )
    first.start()
    time.sleep(0.3)  # the prefill has begun
    with (
        httpx.Client(base_url=served.url, timeout=0.3) as client,
        contextlib.suppress(httpx.TimeoutException),
    ):
        client.post("/completions", json=ask)
    first.join()
    records = assert_stopped_cleanly(served)
    waited, answered = sorted(records.to_dict("records"), key=lambda r: r["e2e_s"])
    return waited, answered
