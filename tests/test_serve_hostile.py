"""`tradeoff serve` against hostile clients: every documented error status, with OpenAI's error
shape, and fuzzers (hypothesis) that find no 500 and no traceback.

The server under test runs as a real process (`python -m tradeoff serve`) in front of
benchmarks/fast_server.py, a canned upstream whose magic model names fail on purpose, so no
model runs and each request takes milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import fast_server, serve_process
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

KEY = "sekrit"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 4096
MAX_TOKENS = 256
MAX_CONCURRENCY = 4
SERVED = ["fast", "broken", "slow", "dropper", "garbage"]
FAILING = {"broken", "dropper", "garbage"}  # 502 (or, streamed after the start, an error event)
TIMING_OUT = {"slow"}  # 504 after the spec's timeout_s
ENDPOINTS = ["/v1/chat/completions", "/v1/completions"]
CHAT, COMPLETIONS = ENDPOINTS
MESSAGES = [{"role": "user", "content": "What is 6*7?"}]
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # leave no .hypothesis directory behind
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain"
)


def valid(endpoint: str, model: str = "fast", **fields: Any) -> dict[str, Any]:
    """A request that is valid for `endpoint` (a short answer), with `fields` set on top."""
    base: dict[str, Any] = {"model": model, "max_tokens": 4}
    if endpoint == CHAT:
        base["messages"] = [dict(m) for m in MESSAGES]
    else:
        base["prompt"] = "6*7="
    return {**base, **fields}


# --- the server -----------------------------------------------------------------------------


@contextlib.contextmanager
def upstream() -> Iterator[str]:
    """benchmarks/fast_server.py's base URL (conftest's fast_server, a generator or a context
    manager)."""
    made: Any = fast_server()
    if hasattr(made, "__enter__"):
        with made as url:
            yield url
        return
    url = next(made)
    try:
        yield url
    finally:
        made.close()


def write_spec(directory: Path, url: str) -> Path:
    spec = directory / "spec.yaml"
    models = {
        "fast": "fast",
        "broken": "fail-500",
        "slow": "hang",
        "dropper": "fail-drop",
        "garbage": "fail-garbage",
    }
    lines = ["models:"] + [f'  {alias}: "openai:{url}#{name}"' for alias, name in models.items()]
    spec.write_text("\n".join([*lines, "tasks: [arith]", "timeout_s: 1", ""]))
    return spec


class Server:
    """A running `tradeoff serve`; its stderr is read as it comes (a full pipe would block it)."""

    def __init__(self, served: Any, out: Path):
        self.served = served
        self.out = out
        self.url = served.url
        self.root = served.root
        self.code: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.served.proc.stderr:
            self.served.lines.append(line.rstrip("\n"))

    def stop(self) -> int:
        if self.code is None:
            proc = self.served.proc
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            self._reader.join(10)
            self.code = self.served.stop()  # the exit code; stderr is already read
        return self.code

    @property
    def lines(self) -> list[str]:
        return self.served.lines


@contextlib.contextmanager
def running(directory: Path, *flags: str) -> Iterator[Server]:
    with upstream() as url:
        spec = write_spec(directory, url)
        out = directory / "run"
        with serve_process("--spec", str(spec), "--out", str(out), *flags) as served:
            server = Server(served, out)
            try:
                yield server
            finally:
                server.stop()


LIMIT_FLAGS = (
    "--api-key", KEY,
    "--max-body-bytes", str(MAX_BODY),
    "--max-tokens-limit", str(MAX_TOKENS),
    "--max-concurrency", str(MAX_CONCURRENCY),
)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("serve"), *LIMIT_FLAGS) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.root, headers=AUTH, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def anonymous(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.root, timeout=30) as c:
        yield c


# --- checks ---------------------------------------------------------------------------------


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


SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def read_json(raw: bytes) -> tuple[bool, Any]:
    """(True, value) when `raw` is JSON (UTF-8, no BOM) as far as Python's json reads it; a
    lone surrogate escape ("\\ud800") counts as not JSON: RFC 8259 leaves it to the parser."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return False, None
    return (False, None) if has_surrogate(value) else (True, value)


def expected_statuses(raw: bytes) -> tuple[set[int], dict[str, Any] | None]:
    """The statuses a body may get: 400 only when it is not a JSON object; 404, 413, 422 and
    200; the upstream's 502/504 only where the body names a model that fails."""
    allowed = {200, 404, 413, 422}
    is_json, parsed = read_json(raw)
    if not is_json or not isinstance(parsed, dict):
        return allowed | {400}, None
    model = parsed.get("model")
    if isinstance(model, str):
        if model in FAILING:
            allowed.add(502)
        if model in TIMING_OUT:
            allowed.add(504)
    return allowed, parsed


def check_any(r: httpx.Response, endpoint: str, raw: bytes) -> None:
    """What every answer to a fuzzed body must satisfy."""
    allowed, parsed = expected_statuses(raw)
    event(f"{endpoint} {r.status_code}")  # seen with --hypothesis-show-statistics
    assert r.status_code in allowed, (r.status_code, raw[:300], r.text[:500])
    assert "Traceback" not in r.text
    if r.status_code >= 400:
        error = assert_error_shape(r)
        if r.status_code == 413:
            assert len(raw) > MAX_BODY, raw
        elif len(raw) <= MAX_BODY and r.status_code in (404, 422):
            # the server read it as a JSON object, as Python does
            assert parsed is not None, (r.status_code, raw[:300], r.text[:500])
        if r.status_code == 404:
            assert error["code"] == "model_not_found", error
        if r.status_code == 422:
            assert isinstance(error["param"], str), error
        return
    assert parsed is not None, (raw[:300], r.text[:300])
    if r.headers["content-type"].startswith("text/event-stream"):
        assert parsed.get("stream") is True, raw[:300]
        sse_events(r.text)
    else:
        assert parsed.get("stream") is not True, raw[:300]
        assert_answer(r, endpoint, stream=False)


def post(client: httpx.Client, endpoint: str, raw: bytes, **kw: Any) -> httpx.Response:
    return client.post(endpoint, content=raw, headers={"content-type": "application/json"}, **kw)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --- 400 ------------------------------------------------------------------------------------


NOT_JSON = [b"", b"{", b"not json", b"{'model': 'fast'}", b'{"model": "fast",}', b"\xff\xfe{}",
            b'{"model": "fast"} trailing', b"\x00", b"[" * 3000]  # fmt: skip
NOT_AN_OBJECT = [b"[]", b'"x"', b"5", b"null", b"true", b"1.5", b'[{"model": "fast"}]']


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("raw", NOT_JSON + NOT_AN_OBJECT, ids=repr)
def test_not_json_or_not_an_object_is_400(client: httpx.Client, endpoint: str, raw: bytes):
    error = assert_error(post(client, endpoint, raw), 400)
    assert error["type"] == "invalid_request_error"


# --- 401 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"}, {"Authorization": KEY},
     {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"Basic {KEY}"},
     {"Authorization": f"Bearer {KEY[:-1]}"}, {"X-Api-Key": KEY}],
    ids=["none", "wrong", "empty", "no-scheme", "longer", "basic", "shorter", "other-header"],
)  # fmt: skip
def test_missing_or_wrong_api_key_is_401(anonymous: httpx.Client, headers: dict[str, str]):
    for endpoint in ENDPOINTS:
        r = anonymous.post(endpoint, json=valid(endpoint), headers=headers)
        error = assert_error(r, 401)
        assert error["type"] == "authentication_error"
        assert KEY not in r.text
    assert_error(anonymous.get("/v1/models", headers=headers), 401)


def test_health_metrics_and_openapi_need_no_key(anonymous: httpx.Client):
    assert anonymous.get("/health").json()["status"] == "ok"
    assert anonymous.get("/metrics").status_code == 200
    assert anonymous.get("/openapi.json").status_code == 200


def test_401_comes_before_reading_the_body(anonymous: httpx.Client):
    """An unauthenticated client learns nothing from the body: a huge or broken one is 401."""
    assert_error(anonymous.post(CHAT, content=b"x" * (MAX_BODY * 4)), 401)
    assert_error(anonymous.post(CHAT, content=b"[]"), 401)
    assert_error(anonymous.post(CHAT, json=valid(CHAT, model="nope")), 401)


# --- 404 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("model", ["nope", "FAST", "fast ", " fast", "fast\u0000", "gpt-4o",
                                   "\u202efast", "😀" * 50, "x" * 2000])  # fmt: skip
def test_unknown_model_is_404_listing_the_served_names(
    client: httpx.Client, endpoint: str, model: str
):
    error = assert_error(client.post(endpoint, json=valid(endpoint, model=model)), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    for name in SERVED:
        assert name in error["message"], error


@pytest.mark.parametrize(
    "path", ["/v1/nope", "/nope", "/v1/chat/completions/x", "/v1/chat", "/v2/chat/completions",
             "/v1//chat/completions", "/v1/chat/completions%00", "/%ff", "/" + "a" * 3000],
)  # fmt: skip
def test_unknown_path_is_404(client: httpx.Client, path: str):
    for method in ("GET", "POST"):
        r = client.request(method, path, json=valid(CHAT))
        assert_error(r, 404)


# --- 405 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_wrong_method_is_405(client: httpx.Client, endpoint: str, method: str):
    r = client.request(method, endpoint)
    assert r.status_code == 405, (r.status_code, r.text)
    if method != "HEAD":  # HEAD answers have no body
        assert_error_shape(r)


def test_post_to_a_get_endpoint_is_405(client: httpx.Client):
    for path in ("/v1/models", "/health", "/metrics", "/openapi.json"):
        assert_error(client.post(path, json={}), 405)


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


def test_declared_content_length_over_the_limit_is_413_before_the_body(server: Server):
    """A client that declares a huge body gets 413 at once, without sending it."""
    host, port = server.root.removeprefix("http://").rsplit(":", 1)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "too_large"


# --- 422 ------------------------------------------------------------------------------------


BOTH: list[tuple[str, Any]] = [
    ("max_tokens", -1), ("max_tokens", 0), ("max_tokens", "5"), ("max_tokens", 5.0),
    ("max_tokens", 5.5), ("max_tokens", True), ("max_tokens", [5]), ("max_tokens", {}),
    ("max_tokens", MAX_TOKENS + 1), ("max_tokens", 10**30), ("max_tokens", -(10**30)),
    ("temperature", -0.01), ("temperature", 2.01), ("temperature", "1"), ("temperature", True),
    ("temperature", False), ("temperature", 1e300), ("temperature", []), ("temperature", -1e-300),
    ("n", 2), ("n", 0), ("n", -1), ("n", "1"), ("n", 1.0), ("n", True), ("n", 10**20),
    ("stream", "true"), ("stream", 1), ("stream", 0), ("stream", None), ("stream", "yes"),
    ("stream", {}),
    ("stop", ["a", "b", "c", "d", "e"]), ("stop", [""]), ("stop", ""), ("stop", ["a", ""]),
    ("stop", [1]), ("stop", 5), ("stop", [["a"]]), ("stop", {"a": 1}),
    ("seed", 2**63), ("seed", -(2**63) - 1), ("seed", 10**40), ("seed", "1"), ("seed", 1.5),
    ("seed", True),
    ("model", ""), ("model", 5), ("model", None), ("model", ["fast"]), ("model", {"id": "fast"}),
    ("stream_options", "x"), ("stream_options", {"include_usage": "yes"}),
    ("stream_options", []), ("stream_options", 5), ("stream_options", True),
]  # fmt: skip
CHAT_ONLY: list[tuple[str, Any]] = [
    ("messages", []), ("messages", "hi"), ("messages", None), ("messages", {"role": "user"}),
    ("messages", [5]), ("messages", [[]]), ("messages", [None]), ("messages", ["hi"]),
    ("messages", [{"role": "user", "content": [5]}]), ("messages", [{"content": "x"}]),
    ("messages", [{"role": "wizard", "content": "x"}]), ("messages", [{"role": "", "content": ""}]),
    ("messages", [{"role": "USER", "content": "x"}]), ("messages", [{"role": 1, "content": "x"}]),
    ("messages", [{"role": "user", "content": 5}]),
    ("messages", [{"role": "user", "content": {"text": "x"}}]),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
    ("messages", [{"role": "user", "content": [{"type": "text"}]}]),
    ("messages", [{"role": "user", "content": ["x"]}]),
    ("logprobs", True), ("logprobs", "false"),
    ("max_completion_tokens", 0), ("max_completion_tokens", "3"),
    ("max_completion_tokens", MAX_TOKENS + 1),
]  # fmt: skip
COMPLETIONS_ONLY: list[tuple[str, Any]] = [
    ("prompt", 5), ("prompt", []), ("prompt", ["a", "b"]), ("prompt", [1]), ("prompt", None),
    ("prompt", [[1, 2]]), ("prompt", {"text": "x"}),
    ("logprobs", 1), ("logprobs", 5), ("logprobs", True), ("echo", True), ("suffix", "x"),
]  # fmt: skip
CASES = (
    [(endpoint, f, v) for endpoint in ENDPOINTS for f, v in BOTH]
    + [(CHAT, f, v) for f, v in CHAT_ONLY]
    + [(COMPLETIONS, f, v) for f, v in COMPLETIONS_ONLY]
)


@pytest.mark.parametrize(("endpoint", "field", "value"), CASES, ids=repr)
def test_invalid_field_is_422_naming_it(client: httpx.Client, endpoint: str, field: str, value):
    for stream in (False, True):  # the same answer whether or not the client would stream
        body = valid(endpoint, **{field: value})
        if field != "stream":
            body["stream"] = stream
        error = assert_error(client.post(endpoint, json=body), 422)
        assert error["code"] == "invalid_value", error
        assert error["type"] == "invalid_request_error", error
        param = error["param"]
        assert isinstance(param, str), error
        assert param.split(".")[0] == field, error


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("missing", ["model", "messages/prompt"])
def test_missing_required_field_is_422(client: httpx.Client, endpoint: str, missing: str):
    body = valid(endpoint)
    for key in missing.split("/"):
        body.pop(key, None)
    assert_error(client.post(endpoint, json=body), 422)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "raw", [b'"temperature": NaN', b'"temperature": Infinity', b'"temperature": -Infinity',
            b'"temperature": 1e999', b'"max_tokens": 1e2', b'"max_tokens": 4.0',
            b'"seed": 99999999999999999999999999999999999999', b'"seed": -0.0'],
)  # fmt: skip
def test_non_standard_numbers_are_rejected(client: httpx.Client, endpoint: str, raw: bytes):
    field = raw.split(b'"')[1].decode()
    body = dumps({k: v for k, v in valid(endpoint).items() if k != field})[:-1] + b", " + raw + b"}"
    r = post(client, endpoint, body)
    assert r.status_code in (400, 422), (r.status_code, r.text)
    assert_error_shape(r)


# --- what must be accepted --------------------------------------------------------------------


ACCEPTED_BOTH = [
    {"max_tokens": MAX_TOKENS}, {"max_tokens": 1}, {"max_tokens": None},
    {"temperature": 0}, {"temperature": 0.0}, {"temperature": 2}, {"temperature": 1.5},
    {"temperature": None},
    {"seed": 2**63 - 1}, {"seed": -(2**63)}, {"seed": 0}, {"seed": None},
    {"stop": ["a", "b", "c", "d"]}, {"stop": "x"}, {"stop": None}, {"stop": []},
    {"stop": ["\u0000"]}, {"stop": ["😀"]},
    {"n": 1}, {"n": None}, {"stream": False},
    {"top_p": 0.5, "user": "u", "frequency_penalty": 0, "presence_penalty": 0,
     "tools": [{"junk": True}], "unknown": {"deep": [1, {"x": None}]}},
    {"stream_options": {"include_usage": True}}, {"stream_options": None},
]  # fmt: skip
ACCEPTED_CHAT = [
    {"logprobs": False}, {"logprobs": None}, {"max_completion_tokens": 3},
    {"max_completion_tokens": MAX_TOKENS, "max_tokens": MAX_TOKENS + 100},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
    {"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                  {"role": "tool", "content": "c"}, {"role": "user", "content": "d"}]},
    {"messages": [{"role": "user", "content": None}]},
    {"messages": [{"role": "user", "content": ""}]},
    {"messages": [{"role": "user", "content": []}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "text", "text": "b"}]}]},
    {"messages": [{"role": "user", "content": "\u0000\u202e😀\ufeff", "name": "x"}]},
]  # fmt: skip
ACCEPTED_COMPLETIONS = [
    {"prompt": ["one"]}, {"prompt": ""}, {"prompt": "😀\u0000"}, {"logprobs": 0},
    {"logprobs": None}, {"echo": False}, {"suffix": ""}, {"suffix": None},
]  # fmt: skip
ACCEPTED = (
    [(endpoint, f) for endpoint in ENDPOINTS for f in ACCEPTED_BOTH]
    + [(CHAT, f) for f in ACCEPTED_CHAT]
    + [(COMPLETIONS, f) for f in ACCEPTED_COMPLETIONS]
)


@pytest.mark.parametrize(("endpoint", "fields"), ACCEPTED, ids=repr)
def test_valid_edge_values_are_served(client: httpx.Client, endpoint: str, fields: dict):
    for stream in (False, True):
        body = {**valid(endpoint, **fields), "stream": stream}
        if "stream_options" in fields and not stream:
            continue
        r = client.post(endpoint, json=body)
        assert_answer(r, endpoint, stream)
        if stream and (fields.get("stream_options") or {}).get("include_usage"):
            usage = json.loads(sse_events(r.text)[-2])
            assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0, usage


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_escaped_unicode(client: httpx.Client, endpoint: str):
    """An escaped surrogate pair is a character; a lone surrogate is refused, not a crash."""
    text = "messages" if endpoint == CHAT else "prompt"
    for escaped, ok in ((rb"\ud83d\ude00 \u0000", True), (rb"\ud800", False),
                        (rb"\udfff\ud800", False)):  # fmt: skip
        body = dumps(valid(endpoint, stream=True))
        body = body.replace(b'"6*7' if text == "prompt" else b'"What', b'"' + escaped, 1)
        r = post(client, endpoint, body)
        if ok:
            assert_answer(r, endpoint, stream=True)
        else:
            assert r.status_code in (400, 422), (r.status_code, r.text)
            assert_error_shape(r)
        # the same in the model name: never served, never a crash
        r = post(client, endpoint, dumps(valid(endpoint))
                 .replace(b'"fast"', b'"fast' + escaped + b'"'))  # fmt: skip
        assert r.status_code in (400, 404, 422), (r.status_code, r.text)
        assert_error_shape(r)


def test_max_tokens_is_honoured(client: httpx.Client):
    r = client.post(CHAT, json=valid(CHAT, max_tokens=7))
    assert r.json()["usage"]["completion_tokens"] == 7


# --- 429 ------------------------------------------------------------------------------------


def in_flight(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    match = re.search(r"^tradeoff_in_flight(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def test_beyond_max_concurrency_is_429_with_retry_after(server: Server, client: httpx.Client):
    with ThreadPoolExecutor(MAX_CONCURRENCY) as pool:
        holders = [
            pool.submit(client.post, ENDPOINTS[i % 2], json=valid(ENDPOINTS[i % 2], "slow"))
            for i in range(MAX_CONCURRENCY)
        ]
        deadline = time.monotonic() + 5
        while in_flight(client) < MAX_CONCURRENCY:
            assert time.monotonic() < deadline, "the slow requests never took the slots"
            time.sleep(0.02)
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
        for future in holders:
            assert_error(future.result(), 504)
    # the slots are given back: served again
    deadline = time.monotonic() + 5
    while in_flight(client) > 0:
        assert time.monotonic() < deadline, "the slots were never given back"
        time.sleep(0.02)
    assert_answer(client.post(CHAT, json=valid(CHAT)), CHAT, stream=False)


# --- 502 and 504 ----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("model", sorted(FAILING))
def test_upstream_failure_is_502(client: httpx.Client, endpoint: str, model: str):
    error = assert_error(client.post(endpoint, json=valid(endpoint, model)), 502)
    assert error["type"] == "upstream_error"
    r = client.post(endpoint, json=valid(endpoint, model, stream=True))
    if model == "broken":  # fails before any text: an honest HTTP error
        assert_error(r, 502)
    else:  # fails after the answer started: a 200 stream that says so, then [DONE]
        assert r.status_code == 200, r.text
        payloads = sse_events(r.text)
        last = json.loads(payloads[-2])
        assert last["error"]["type"] == "upstream_error", last


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(client: httpx.Client, endpoint: str, stream: bool):
    t0 = time.monotonic()
    r = client.post(endpoint, json=valid(endpoint, "slow", stream=stream))
    error = assert_error(r, 504)
    assert error["type"] == "upstream_timeout"
    assert time.monotonic() - t0 < 10


def raw_request(server: Server, body: bytes, declared: int | None = None) -> socket.socket:
    """A connection that has sent a chat request (with `declared` as its Content-Length)."""
    host, port = server.root.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared or len(body)}\r\n\r\n"
        .encode() + body
    )  # fmt: skip
    return sock


def test_clients_that_hang_up_do_no_harm(server: Server, client: httpx.Client):
    """Clients that go away mid-body, while waiting, or mid-stream: the slots come back and the
    server goes on answering."""
    half = dumps(valid(CHAT))
    sock = raw_request(server, half[:20], declared=len(half))  # mid-body
    sock.close()
    sock = raw_request(server, dumps(valid(CHAT, "slow", stream=True)))  # waiting
    sock.close()
    sock = raw_request(server, dumps(valid(CHAT, "slow")))
    sock.shutdown(socket.SHUT_WR)  # half-closed while waiting
    sock.close()
    sock = raw_request(server, dumps(valid(CHAT, max_tokens=MAX_TOKENS, stream=True)))
    sock.recv(100)  # mid-stream
    sock.close()
    assert_answer(client.post(CHAT, json=valid(CHAT)), CHAT, stream=False)
    deadline = time.monotonic() + 10
    while in_flight(client) > 0:
        assert time.monotonic() < deadline, "a hung-up request never gave back its slot"
        time.sleep(0.05)
    assert_answer(client.post(CHAT, json=valid(CHAT, stream=True)), CHAT, stream=True)


def test_failed_requests_are_stored_with_their_error(tmp_path: Path):
    """A 502 or 504 is still accounted for: a record with its error, once the server stops."""
    from tradeoff.store import Store

    sent = {("broken", 502): 0, ("slow", 504): 0, ("dropper", 502): 0}
    with (
        running(tmp_path, "--api-key", KEY) as server,
        httpx.Client(base_url=server.root, headers=AUTH, timeout=30) as c,
    ):
        for (model, status), _ in list(sent.items()):
            for endpoint in ENDPOINTS:
                stream = model == "dropper" and endpoint == CHAT
                r = c.post(endpoint, json=valid(endpoint, model, stream=stream))
                assert r.status_code == (200 if stream else status), r.text
                sent[(model, status)] += 1
        assert c.post(CHAT, json=valid(CHAT)).status_code == 200
        assert server.stop() == 0
    assert not [line for line in server.lines if "Traceback" in line], server.lines
    store = Store.open(server.out)
    try:
        records = store.records()
    finally:
        store.close()
    extras = [json.loads(e) for e in records["extra"]]
    for (model, status), count in sent.items():
        rows = [
            (error, extra)
            for config, error, extra in zip(records["config"], records["error"], extras)
            if config == model
        ]
        assert len(rows) == count, (model, records.to_dict("records"))
        for error, extra in rows:
            assert isinstance(error, str) and error, (model, error)
            assert extra["http_status"] == status, (model, extra)
            if status == 504:
                assert "timeout" in error, error
    ok = records[records["config"] == "fast"]
    assert len(ok) == 1 and ok["error"].isna().all()


# --- fuzzing --------------------------------------------------------------------------------


FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature",
          "seed", "stream", "stop", "n", "logprobs", "echo", "suffix", "stream_options", "top_p",
          "user", "tools", "frequency_penalty", "presence_penalty", "logit_bias", "response_format",
          "include_usage", "role", "content", ""]  # fmt: skip
HOSTILE_STRINGS = ["NaN", "Infinity", "-Infinity", "nan", "1e999", "-1", "0", "null", "true",
                   "fast", "broken", "dropper", "\u0000", "\u202e", "😀", "\ufeff", "\r\n",
                   "' OR 1=1 --", "{{7*7}}", "${jndi:x}", "%s%n", "\\", '"', "a" * 300,
                   "../../etc/passwd", "user", "system", "text", "Traceback"]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=300)
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**400, -(10**400)])
    | st.floats()  # NaN and ±Infinity become the non-standard JSON tokens
    | st.floats(min_value=-0.5, max_value=2.5)
    | st.text(max_size=20)
    | st.sampled_from(HOSTILE_STRINGS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=15,
)
models = st.sampled_from(["fast", "fast", "broken", "dropper", "garbage", "nope"])
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool"])
text_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)})
)
counts = st.integers(min_value=1, max_value=MAX_TOKENS) | st.none()
# per real field, a value valid at both endpoints (chat ignores prompt, completions messages)
plausible: dict[str, st.SearchStrategy[Any]] = {
    "model": models,
    "messages": st.lists(
        st.fixed_dictionaries(
            {"role": roles},
            optional={"content": st.text(max_size=30) | text_parts | st.none()},
        ),
        min_size=1,
        max_size=3,
    ),
    "prompt": st.text(max_size=40) | st.lists(st.text(max_size=10), min_size=1, max_size=1),
    "max_tokens": counts,
    "max_completion_tokens": counts,
    "temperature": st.floats(0, 2) | st.integers(0, 2) | st.none(),
    "seed": st.integers(-(2**63), 2**63 - 1) | st.none(),
    "stream": st.booleans(),
    "stop": st.none()
    | st.text(min_size=1, max_size=3)
    | st.lists(st.text(min_size=1, max_size=3), max_size=4),
    "n": st.sampled_from([1, None]),
    "logprobs": st.none(),
    "echo": st.sampled_from([None, False]),
    "suffix": st.sampled_from([None, ""]),
    "stream_options": st.none()
    | st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
}
REQUIRED = ("model", "messages", "prompt")
plausible_request = st.fixed_dictionaries(
    {name: plausible[name] for name in REQUIRED},
    optional={name: s for name, s in plausible.items() if name not in REQUIRED},
)
# what is then set on top: real fields (and a few others) with any JSON value
hostile_fields = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=4
)


def encode(obj: Any, data: st.DataObject) -> bytes:
    """JSON text as a client might send it: ASCII-escaped, or raw UTF-8."""
    if data.draw(st.booleans(), label="ascii"):
        return json.dumps(obj).encode()
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def send_both(client: httpx.Client, raw: bytes, headers: dict[str, Any] | None = None) -> None:
    for endpoint in ENDPOINTS:
        r = client.post(endpoint, content=raw, headers=headers or {})
        check_any(r, endpoint, raw)


@FUZZ
@given(data=st.data(), value=json_values)
def test_fuzz_arbitrary_json(client: httpx.Client, data: st.DataObject, value: Any):
    send_both(client, encode(value, data))


@FUZZ
@given(
    data=st.data(),
    body=plausible_request,
    hostile=hostile_fields,
    dropped=st.sets(st.sampled_from(REQUIRED)),
)
def test_fuzz_dicts_of_real_fields(
    client: httpx.Client, data: st.DataObject, body, hostile, dropped
):
    body = {**{k: v for k, v in body.items() if k not in dropped}, **hostile}
    send_both(client, encode(body, data))


@st.composite
def mutated_request(draw: st.DrawFn) -> tuple[str, bytes]:
    endpoint = draw(st.sampled_from(ENDPOINTS))
    model = draw(st.sampled_from(["fast", "fast", "broken", "dropper"]))
    body: Any = valid(endpoint, model, stream=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set", "set", "delete", "nested", "add", "wrap"]))
        keys = list(body) if isinstance(body, dict) else []
        if op == "set" and keys:
            body[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "delete" and keys:
            del body[draw(st.sampled_from(keys))]
        elif op == "add" and isinstance(body, dict):
            body[draw(st.sampled_from(FIELDS))] = draw(json_values)
        elif op == "nested" and isinstance(body, dict) and isinstance(body.get("messages"), list):
            msgs = body["messages"]
            if msgs and isinstance(msgs[0], dict):
                msgs[0][draw(st.sampled_from(["role", "content", "name", "x"]))] = draw(json_values)
            else:
                msgs.append(draw(json_values))
        elif op == "wrap":
            body = draw(st.sampled_from([[body], {"data": body}, {"model": model, "body": body}]))
    raw = json.dumps(body).encode()
    how = draw(st.sampled_from(["as is", "as is", "truncate", "flip", "insert", "duplicate"]))
    if how == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif how == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ (1 << draw(st.integers(0, 7)))]) + raw[i + 1 :]
    elif how == "insert":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.binary(min_size=1, max_size=8)) + raw[i:]
    elif how == "duplicate" and raw.startswith(b"{") and len(raw) > 2:
        raw = b"{" + raw[1:-1] + b"," + raw[1:-1] + b"}"  # every key twice
    return endpoint, raw


@FUZZ
@given(requests=st.lists(mutated_request(), min_size=1, max_size=3))
def test_fuzz_mutations_of_a_valid_request(client: httpx.Client, requests):
    for endpoint, raw in requests:
        r = post(client, endpoint, raw)
        check_any(r, endpoint, raw)


@FUZZ
@given(
    raw=st.binary(max_size=300)
    | st.builds(lambda b: b'{"model": "fast", ' + b, st.binary(max_size=100))
    | st.builds(lambda b: b"\xef\xbb\xbf" + b, st.sampled_from([b"{}", dumps(valid(CHAT))]))
    | st.builds(lambda n: b" " * n + b"{}", st.integers(MAX_BODY - 3, MAX_BODY + 3)),
    content_type=st.sampled_from([None, "application/json", "text/plain",
                                  "application/x-www-form-urlencoded", "multipart/form-data",
                                  "application/json; charset=latin-1", b"\xe9"]),
)  # fmt: skip
def test_fuzz_raw_bytes(client: httpx.Client, raw: bytes, content_type: Any):
    headers = {} if content_type is None else {"content-type": content_type}
    send_both(client, raw, headers)


# --- the OpenAPI document, and requests drawn from it ---------------------------------------


def test_openapi_document(anonymous: httpx.Client):
    r = anonymous.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path, schema in (("/v1/chat/completions", "ChatRequest"),
                         ("/v1/completions", "CompletionRequest")):  # fmt: skip
        op = doc["paths"][path]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{schema}"
        for code in ("200", "400", "401", "404", "413", "422", "429", "502", "504"):
            assert code in op["responses"], (path, code)
    schemas = doc["components"]["schemas"]
    assert set(schemas["ChatRequest"]["required"]) == {"model", "messages"}
    assert set(schemas["CompletionRequest"]["required"]) == {"model", "prompt"}
    # every $ref resolves
    refs = re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', r.text)
    assert refs and all(name in schemas for name in refs), refs
    # stable: the same document every time, whatever is asked before
    assert anonymous.get("/openapi.json").json() == doc


def from_schema(schema: dict[str, Any], schemas: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for JSON values that satisfy `schema` (the subset of JSON Schema that
    pydantic writes into the server's OpenAPI document)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: from_schema(schemas[name], schemas))
    if "anyOf" in schema:
        return st.one_of([from_schema(s, schemas) for s in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, schemas) for k in kind])
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=20)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | st.integers(
            None if lo is None else int(lo), None if hi is None else int(hi)
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(
            from_schema(schema["items"], schemas),
            min_size=schema.get("minItems", 0),
            max_size=schema.get("maxItems", 3),
        )
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, schemas) for k, v in props.items() if k in required},
            optional={k: from_schema(v, schemas) for k, v in props.items() if k not in required},
        )
    raise AssertionError(f"schema not understood: {schema}")


@pytest.fixture(scope="module")
def openapi_doc(anonymous: httpx.Client) -> dict[str, Any]:
    return anonymous.get("/openapi.json").json()


@FUZZ
@given(data=st.data())
def test_fuzz_requests_drawn_from_the_openapi_document(
    client: httpx.Client, openapi_doc: dict[str, Any], data: st.DataObject
):
    """A body valid by the server's own schema is served, or refused only for what the schema
    cannot say: an unknown model, max_tokens above the server's limit, an empty stop string."""
    schemas = openapi_doc["components"]["schemas"]
    endpoint = data.draw(st.sampled_from(ENDPOINTS), label="endpoint")
    ref = openapi_doc["paths"][endpoint]["post"]["requestBody"]["content"]["application/json"]
    body = data.draw(from_schema(ref["schema"], schemas), label="body")
    if data.draw(st.integers(0, 7), label="served model") > 0:
        body["model"] = data.draw(st.sampled_from(["fast", "fast", "broken", "dropper"]))
    raw = encode(body, data)
    r = post(client, endpoint, raw)
    check_any(r, endpoint, raw)
    if r.status_code == 422:
        param = r.json()["error"]["param"]
        assert param in ("max_tokens", "max_completion_tokens") or param.startswith("stop"), (
            body,
            r.text,
        )
    if r.status_code == 404:
        assert body["model"] not in SERVED, (body, r.text)
    assert r.status_code != 400, (body, r.text)


# --- last: the server survived all of it ----------------------------------------------------


def test_zz_server_stops_cleanly_without_a_traceback(server: Server, client: httpx.Client):
    """Runs last (file order): stops the module's server after everything above."""
    from tradeoff.store import Store

    assert client.get("/health").json()["status"] == "ok"  # still up after the fuzzers
    assert server.stop() == 0, server.lines
    assert not [line for line in server.lines if "Traceback" in line], "\n".join(server.lines)
    assert not [line for line in server.lines if "Exception in ASGI" in line], server.lines
    match = re.search(r"stopped; (\d+) request\(s\) served, (\d+) stored", server.lines[-1])
    assert match and match.group(1) == match.group(2), server.lines[-3:]
    store = Store.open(server.out)
    try:
        records = store.records()
    finally:
        store.close()
    assert len(records) == int(match.group(2))
    for error, extra in zip(records["error"], records["extra"]):
        if json.loads(extra)["http_status"] >= 500:
            assert isinstance(error, str) and error, extra
